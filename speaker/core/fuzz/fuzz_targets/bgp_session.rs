//! Fuzzes a BGP session with arbitrary bytes from the peer, in OpenSent or (after a valid
//! handshake) in Established, delivered in chunks whose size the first byte picks. It must
//! never panic, and every message it sends must parse with the negotiated encoding.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ferrolb_speaker_core::bgp::{
    Action, Capability, Config, Encoding, Event, Family, Message, NextHops, Open, PeerAs, Session,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut s = Session::new(
        Config::new(64512, PeerAs::Exact(64513), Ipv4Addr::new(192, 0, 2, 1)),
        u64::from(mode),
    );
    let mut actions = s.handle(now, Event::Start);
    actions.extend(s.handle(
        now,
        Event::Connected(NextHops {
            ipv4: Some(Ipv4Addr::new(198, 51, 100, 1)),
            ..NextHops::default()
        }),
    ));
    if mode & 0x80 != 0 {
        let open = Message::Open(Open::new(
            64513,
            9,
            Ipv4Addr::new(192, 0, 2, 2),
            vec![
                Capability::Multiprotocol(Family::Ipv4Unicast.afi_safi()),
                Capability::Multiprotocol(Family::Ipv6Unicast.afi_safi()),
                Capability::RouteRefresh,
                Capability::FourOctetAs(64513),
            ],
        ));
        for m in [open, Message::Keepalive] {
            if let Ok(b) = m.emit(Encoding::FOUR_OCTET) {
                actions.extend(s.handle(now, Event::Received(&b)));
            }
        }
        actions.extend(s.handle(now, Event::Routes(Default::default())));
    }
    let chunk = usize::from(mode & 0x7f).max(1);
    for piece in rest.chunks(chunk) {
        actions.extend(s.handle(now, Event::Received(piece)));
    }
    actions.extend(s.handle(now + Duration::from_secs(10), Event::Timeout));
    let enc = s.negotiated().map_or(Encoding::FOUR_OCTET, |n| n.encoding);
    for a in actions {
        if let Action::Send { bytes, .. } = a {
            assert!(
                Message::parse(&bytes, enc).is_ok(),
                "we sent an invalid message"
            );
        }
    }
});
