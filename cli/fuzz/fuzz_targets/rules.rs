//! Fuzzes the rule parsers (every input format) and the walker: neither may panic on any text,
//! and every walk's shares stay between 0 and 1.
#![no_main]

use ferrolb_cli::rules::{self, Proto};
use ferrolb_cli::walk::{self, Packet, WalkOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(rs) = rules::parse(&text) else { return };
    for (dst, port) in [
        ("198.51.100.100", 80),
        ("2001:db8::100", 80),
        ("203.0.113.10", 53),
    ] {
        let Ok(ip) = dst.parse() else { return };
        let p = Packet::to(ip, port, Proto::Tcp);
        if let Ok(t) = walk::walk(&rs, &p, &WalkOptions::default()) {
            for o in &t.outcomes {
                assert!((0.0..=1.0 + 1e-9).contains(&o.share), "share {}", o.share);
            }
            let _ = walk::render::text(&t);
        }
    }
});
