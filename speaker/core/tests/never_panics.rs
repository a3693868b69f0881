//! Property tests: no parser or state machine panics on any input, and valid representations
//! survive emit → parse unchanged. These run in plain `cargo test`; the fuzz targets in
//! `fuzz/` explore the same entry points with coverage guidance.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ferrolb_speaker_core::membership::codec::VERSION;
use ferrolb_speaker_core::membership::{Config, Heartbeat, Membership, Message};
use ferrolb_speaker_core::wire::{
    self, ArpOperation, ArpRepr, EthernetRepr, Frame, Ipv6Repr, NeighborAdvertRepr,
    NeighborSolicitRepr, Packet, VlanTag, arp, ndp,
};
use proptest::prelude::*;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];

/// A real `ndisc6` solicitation, used as a seed for mutation.
const NS: [u8; 86] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x86, 0xdd, 0x60, 0x0b,
    0xb8, 0x62, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xfe, 0x00, 0x00, 0x0a, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0xff, 0x00, 0x00, 0x02, 0x87, 0x00, 0x4c, 0x4d, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x01,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
];

/// Independent ICMPv6 checksum (pseudo-header as bytes, then 16-bit one's complement sum).
fn reseal(frame: &mut [u8]) {
    if frame.len() < 58 {
        return;
    }
    let len = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    if frame.len() < 54 + len || len < 4 {
        return;
    }
    frame[56] = 0;
    frame[57] = 0;
    let mut data = frame[22..54].to_vec();
    data.extend_from_slice(&(len as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(&frame[54..54 + len]);
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(w[0]) << 8 | u32::from(w[1]))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[56..58].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

fn run_all_parsers(bytes: &[u8]) {
    let _ = wire::parse(bytes);
    let _ = arp::respond(bytes, MAC, |_| true);
    let _ = arp::respond(bytes, MAC, |_| false);
    let _ = ndp::respond(bytes, MAC, Ipv6Addr::LOCALHOST, |_| true);
    let _ = Message::decode(bytes);
}

fn mac() -> impl Strategy<Value = [u8; 6]> {
    // Unicast only: group source addresses are rejected by design.
    any::<[u8; 6]>().prop_map(|mut m| {
        m[0] &= 0xfe;
        m
    })
}

fn vlan() -> impl Strategy<Value = Option<VlanTag>> {
    proptest::option::of(any::<u16>().prop_map(VlanTag::from_tci))
}

fn unicast6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(|v| Ipv6Addr::from(v & !(0xff << 120)))
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    let arp = (
        any::<bool>(),
        mac(),
        any::<u32>(),
        any::<[u8; 6]>(),
        any::<u32>(),
    )
        .prop_map(|(req, sm, si, tm, ti)| {
            Frame::Arp(ArpRepr {
                operation: if req {
                    ArpOperation::Request
                } else {
                    ArpOperation::Reply
                },
                sender_mac: sm,
                sender_ip: Ipv4Addr::from(si),
                target_mac: tm,
                target_ip: Ipv4Addr::from(ti),
            })
        });
    let ns = (
        unicast6(),
        unicast6(),
        any::<u8>(),
        0u32..(1 << 20),
        proptest::option::of(any::<[u8; 6]>()),
        proptest::option::of(any::<[u8; 6]>()),
    )
        .prop_map(|(src, target, tc, fl, smac, nonce)| {
            // A non-DAD solicitation to the target's solicited-node group.
            let src = if src.is_unspecified() {
                Ipv6Addr::LOCALHOST
            } else {
                src
            };
            Frame::NeighborSolicit(NeighborSolicitRepr {
                ip: Ipv6Repr {
                    src,
                    dst: ndp::solicited_node(target),
                    traffic_class: tc,
                    flow_label: fl,
                },
                target,
                source_mac: smac,
                nonce,
            })
        });
    let na = (
        unicast6(),
        unicast6(),
        unicast6(),
        any::<[bool; 3]>(),
        proptest::option::of(any::<[u8; 6]>()),
    )
        .prop_map(|(src, dst, target, [r, s, o], tmac)| {
            Frame::NeighborAdvert(NeighborAdvertRepr {
                ip: Ipv6Repr::new(src, dst),
                router: r,
                solicited: s,
                override_: o,
                target,
                target_mac: tmac,
            })
        });
    prop_oneof![arp, ns, na]
}

fn message() -> impl Strategy<Value = Message> {
    let name = "[a-z0-9.-]{1,20}";
    let hb = (
        name,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec((name, any::<u32>()), 0..8),
        proptest::collection::vec(ip(), 0..8),
        proptest::collection::vec(ip(), 0..8),
    )
        .prop_map(
            |(from, incarnation, seq, uptime_ms, heard, claims, unable)| {
                Message::Heartbeat(Heartbeat {
                    from,
                    incarnation,
                    seq,
                    uptime_ms,
                    heard,
                    claims,
                    unable,
                })
            },
        );
    let leave =
        (name, any::<u64>()).prop_map(|(from, incarnation)| Message::Leave { from, incarnation });
    prop_oneof![hb, leave]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        run_all_parsers(&bytes);
    }

    #[test]
    fn parsers_never_panic_on_mutated_real_frames(
        edits in proptest::collection::vec((0usize..86, any::<u8>()), 0..6),
        cut in 0usize..=86,
        extra in proptest::collection::vec(any::<u8>(), 0..40),
        seal in any::<bool>(),
    ) {
        let mut f = NS.to_vec();
        for (i, v) in edits {
            f[i] = v;
        }
        f.truncate(cut);
        f.extend_from_slice(&extra);
        if seal {
            reseal(&mut f);
        }
        run_all_parsers(&f);
    }

    #[test]
    fn options_region_never_panics_with_valid_checksum(opts in proptest::collection::vec(any::<u8>(), 0..64)) {
        // Reach the option walker past the checksum check: random options, correct checksum.
        let mut f = NS[..78].to_vec();
        f.extend_from_slice(&opts);
        let len = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&len.to_be_bytes());
        reseal(&mut f);
        run_all_parsers(&f);
    }

    #[test]
    fn valid_reprs_round_trip(src in mac(), dst in any::<[u8; 6]>(), vlan in vlan(), frame in frame()) {
        let packet = Packet { ethernet: EthernetRepr { dst, src, vlan }, frame };
        let bytes = packet.emit();
        prop_assert_eq!(wire::parse(&bytes), Ok(packet));
    }

    #[test]
    fn codec_round_trips(m in message()) {
        prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn codec_never_panics_on_mutated_messages(
        m in message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = m.encode();
        for (i, v) in edits {
            let i = i.index(b.len());
            b[i] = v;
        }
        b.truncate(cut.index(b.len() + 1));
        // Whatever is accepted in the current version has exactly this encoding: one wire form
        // per message. An edit can turn the version byte into 1: such a message re-encodes as
        // the current version, and that decodes to the same message.
        if let Ok(decoded) = Message::decode(&b) {
            if b.get(2) == Some(&VERSION) {
                prop_assert_eq!(decoded.encode(), b);
            } else {
                prop_assert_eq!(Message::decode(&decoded.encode()), Ok(decoded));
            }
        }
    }

    #[test]
    fn membership_never_panics_and_keeps_invariants(
        ops in proptest::collection::vec(
            (0u8..5, 0usize..4, message(), -50i64..300, proptest::collection::vec(ip(), 0..3)),
            1..60,
        ),
    ) {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let names = ["a", "b", "c", "d"];
        let addr = |i: usize| SocketAddr::from(([198, 51, 100, i as u8], 7946));
        let mut m = Membership::new("a", 1, Config::default(), t0);
        let mut clock: i64 = 0;
        for (op, who, mut msg, dt, claims) in ops {
            // Time mostly moves forward but sometimes goes backwards: the machine must cope.
            clock = (clock + dt).max(-1_000);
            let now = if clock >= 0 {
                t0 + Duration::from_millis(clock as u64)
            } else {
                t0 - Duration::from_millis(clock.unsigned_abs())
            };
            match op {
                0 => {
                    let peers = names.iter().take(who + 1).enumerate()
                        .map(|(i, n)| (n.to_string(), addr(i))).collect();
                    let _ = m.set_peers(peers);
                }
                1 => {
                    // Make the message come from a plausible peer most of the time.
                    match &mut msg {
                        Message::Heartbeat(h) => h.from = names[who].to_string(),
                        Message::Leave { from, .. } => *from = names[who].to_string(),
                    }
                    let _ = m.on_message(addr(who), msg, now);
                }
                2 => { let _ = m.on_message(addr(who), msg, now); }
                3 => m.set_unable(claims),
                _ => { let _ = m.tick(now, &claims); }
            }
            let alive = m.alive();
            prop_assert!(alive.contains("a"));
            for n in names.iter().skip(1) {
                if !alive.contains(*n) {
                    prop_assert!(m.claims(n).is_empty());
                    prop_assert!(m.unable(n).is_empty());
                }
            }
            let _ = m.settled(now);
        }
        let _ = m.leave();
        prop_assert!(!m.alive().contains("a"));
        prop_assert!(m.tick(t0, &[]).is_empty());
    }
}
