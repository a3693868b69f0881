//! Fuzzes the membership decoder of every version: it must never panic, and whatever it accepts
//! must have exactly one encoding. A version 3 packet and a version 2 heartbeat re-encode to the
//! same bytes; an accepted version 1 heartbeat re-encodes as version 2, which must decode to
//! the same message. Accepted packets are then fed to a state machine, which must not panic.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrolb_speaker_core::membership::codec::{self, Datagram, LEGACY_VERSION, Message};
use ferrolb_speaker_core::membership::{Config, Membership};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match codec::decode(data) {
        Ok(Datagram::Packet(p)) => {
            assert_eq!(p.encode(), data);
            let t0 = Instant::now();
            let mut m = Membership::new("fuzz", 1, Config::default(), t0);
            let from = SocketAddr::from(([198, 51, 100, 1], 7946));
            let _ = m.set_peers(vec![(p.from.clone(), from)]);
            let _ = m.on_datagram(from, data, t0);
            let _ = m.tick(t0 + Duration::from_millis(30), &[]);
        }
        Ok(Datagram::Legacy(message)) => {
            let bytes = message.encode();
            if data.get(2) == Some(&LEGACY_VERSION) {
                assert_eq!(bytes, data);
            } else {
                assert_eq!(Message::decode(&bytes), Ok(message));
            }
        }
        Err(_) => {}
    }
});
