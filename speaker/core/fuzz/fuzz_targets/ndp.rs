//! Fuzzes the NDP responder with arbitrary frames: it must never panic, and any reply it makes
//! must itself parse as a valid Neighbor Advertisement for the solicited target.
#![no_main]

use std::net::Ipv6Addr;

use ferrolb_speaker_core::wire::{self, Frame, Outcome, ndp};
use libfuzzer_sys::fuzz_target;

const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const IFACE_SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 0x0b);

fuzz_target!(|data: &[u8]| {
    // Own every address in 2001:db8::/32 so that well-formed solicitations reach the reply path.
    let owns = |ip: Ipv6Addr| ip.segments()[..2] == [0x2001, 0x0db8];
    if let Outcome::Reply(bytes) = ndp::respond(data, IFACE_MAC, IFACE_SRC, owns) {
        match wire::parse(&bytes) {
            Ok(p) => assert!(matches!(p.frame, Frame::NeighborAdvert(na) if owns(na.target))),
            Err(e) => panic!("our own advertisement does not parse: {e}"),
        }
    }
});
