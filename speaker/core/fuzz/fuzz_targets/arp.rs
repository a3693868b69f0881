//! Fuzzes the ARP responder with arbitrary frames: it must never panic, and any reply it makes
//! must itself parse as an ARP reply from the interface.
#![no_main]

use std::net::Ipv4Addr;

use ferrolb_speaker_core::wire::{self, Frame, Outcome, arp};
use libfuzzer_sys::fuzz_target;

const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fuzz_target!(|data: &[u8]| {
    // Own every address in 198.51.100.0/24 so that well-formed requests reach the reply path.
    let owns = |ip: Ipv4Addr| ip.octets()[..3] == [198, 51, 100];
    if let Outcome::Reply(bytes) = arp::respond(data, IFACE_MAC, owns) {
        match wire::parse(&bytes) {
            Ok(p) => assert!(matches!(p.frame, Frame::Arp(a) if a.sender_mac == IFACE_MAC)),
            Err(e) => panic!("our own reply does not parse: {e}"),
        }
    }
});
