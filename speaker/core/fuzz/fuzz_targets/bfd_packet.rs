//! Fuzzes the BFD Control packet parser and a session's reception with arbitrary datagrams:
//! no panic, accepted packets emit to bytes that parse to the same packet (not always the same
//! bytes: RFC 5880 sets only a minimum Length, and we write the exact one), and every packet
//! the session sends parses.
#![no_main]

use std::time::Instant;

use ferrolb_speaker_core::bfd::{Action, Config, ControlPacket, Event, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::parse(data) {
        let bytes = match p.emit() {
            Ok(b) => b,
            Err(e) => panic!("accepted packet does not emit: {e}"),
        };
        assert_eq!(ControlPacket::parse(&bytes), Ok(p));
    }
    let now = Instant::now();
    let mut s = Session::new(Config::default(), 7, now, 1);
    for a in s.handle(
        now,
        Event::Received {
            bytes: data,
            ttl: 255,
        },
    ) {
        if let Action::Send(b) = a {
            assert!(
                ControlPacket::parse(&b).is_ok(),
                "we sent an invalid packet"
            );
        }
    }
});
