//! Property tests for BGP: valid messages survive emit → parse unchanged, no byte string makes
//! the parser or the session panic, and whatever the session sends parses. The fuzz targets in
//! `fuzz/` (`bgp_message`, `bgp_session`) explore the same entry points with coverage guidance.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_speaker_core::bgp::{
    Action, AfiSafi, AsPath, AsSegment, Capability, Config, Encoding, Event, Family,
    GracefulRestart, GracefulRestartConfig, LargeCommunity, Message, MpNextHop, MpReach, MpUnreach,
    NextHops, Notification, NotificationCode, Open, Origin, PathAttribute, PeerAs, Prefix,
    RouteAttrs, RouteRefresh, SegmentType, Session, State, Stop, Update, frame_len,
};
use proptest::prelude::*;

fn prefix4() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32).prop_filter_map("valid", |(a, l)| {
        Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), l)
    })
}

fn prefix6() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0u8..=128).prop_filter_map("valid", |(a, l)| {
        Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), l)
    })
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        (any::<u16>(), any::<u8>())
            .prop_map(|(afi, safi)| Capability::Multiprotocol(AfiSafi { afi, safi })),
        Just(Capability::RouteRefresh),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            prop::collection::vec((any::<u16>(), any::<u8>(), any::<bool>()), 0..4)
        )
            .prop_map(|(r, n, t, f)| Capability::GracefulRestart(GracefulRestart {
                restarting: r,
                notification: n,
                restart_time: t,
                families: f
                    .into_iter()
                    .map(|(afi, safi, fw)| (AfiSafi { afi, safi }, fw))
                    .collect(),
            })),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<u8>().prop_filter("not modelled", |c| !matches!(c, 1 | 2 | 64 | 65)),
            prop::collection::vec(any::<u8>(), 0..12)
        )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(capability(), 0..8),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

fn as_path(four: bool) -> impl Strategy<Value = AsPath> {
    let asn = if four {
        any::<u32>().boxed()
    } else {
        (0u32..=65535).boxed()
    };
    prop::collection::vec(
        (
            prop::sample::select(vec![
                SegmentType::Set,
                SegmentType::Sequence,
                SegmentType::ConfedSequence,
                SegmentType::ConfedSet,
            ]),
            prop::collection::vec(asn, 1..6),
        ),
        0..3,
    )
    .prop_map(|segs| AsPath {
        segments: segs
            .into_iter()
            .map(|(kind, asns)| AsSegment { kind, asns })
            .collect(),
    })
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (any::<u32>(), prop::collection::vec(prefix4(), 0..20)).prop_map(|(nh, nlri)| MpReach {
            family: Family::Ipv4Unicast,
            next_hop: MpNextHop::V4(Ipv4Addr::from(nh)),
            nlri,
        }),
        (
            any::<u128>(),
            proptest::option::of(any::<u128>()),
            prop::collection::vec(prefix6(), 0..20)
        )
            .prop_map(|(g, l, nlri)| MpReach {
                family: Family::Ipv6Unicast,
                next_hop: MpNextHop::V6 {
                    global: Ipv6Addr::from(g),
                    link_local: l.map(Ipv6Addr::from),
                },
                nlri,
            }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        prop::collection::vec(prefix4(), 0..20).prop_map(|withdrawn| MpUnreach {
            family: Family::Ipv4Unicast,
            withdrawn
        }),
        prop::collection::vec(prefix6(), 0..20).prop_map(|withdrawn| MpUnreach {
            family: Family::Ipv6Unicast,
            withdrawn
        }),
    ]
}

/// A valid UPDATE for `enc`: distinct attributes, mandatory ones whenever something is
/// announced, unknown attributes optional and of type codes the codec does not model.
fn update(four: bool) -> impl Strategy<Value = Update> {
    let optional = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        any::<bool>(),
        proptest::option::of(prop::collection::vec(any::<u32>(), 0..10)),
        proptest::option::of(mp_reach()),
        proptest::option::of(mp_unreach()),
        proptest::option::of(as_path(true)),
        proptest::option::of(prop::collection::vec(
            any::<(u32, u32, u32)>().prop_map(|(global, local1, local2)| LargeCommunity {
                global,
                local1,
                local2,
            }),
            0..5,
        )),
        proptest::option::of((
            prop::sample::select(vec![7u8, 9, 10, 16, 99, 200, 255]),
            prop::sample::select(vec![0x80u8, 0xc0, 0xe0, 0xd0, 0x90]),
            prop::collection::vec(any::<u8>(), 0..40),
        )),
    );
    (
        prop::collection::vec(prefix4(), 0..20),
        prop::collection::vec(prefix4(), 0..20),
        prop::sample::select(vec![Origin::Igp, Origin::Egp, Origin::Incomplete]),
        as_path(four),
        any::<u32>(),
        optional,
    )
        .prop_map(
            |(
                withdrawn,
                nlri,
                origin,
                path,
                nh,
                (med, lp, atomic, comm, reach, unreach, as4, large, unknown),
            )| {
                let mut attributes = Vec::new();
                if let Some(r) = reach {
                    attributes.push(PathAttribute::MpReach(r));
                }
                attributes.push(PathAttribute::Origin(origin));
                attributes.push(PathAttribute::AsPath(path));
                if !nlri.is_empty() {
                    attributes.push(PathAttribute::NextHop(Ipv4Addr::from(nh)));
                }
                attributes.extend(med.map(PathAttribute::MultiExitDisc));
                attributes.extend(lp.map(PathAttribute::LocalPref));
                if atomic {
                    attributes.push(PathAttribute::AtomicAggregate);
                }
                attributes.extend(comm.map(PathAttribute::Communities));
                attributes.extend(unreach.map(PathAttribute::MpUnreach));
                attributes.extend(as4.map(PathAttribute::As4Path));
                attributes.extend(large.map(PathAttribute::LargeCommunities));
                if let Some((type_code, flags, value)) = unknown {
                    attributes.push(PathAttribute::Unknown {
                        flags,
                        type_code,
                        value,
                    });
                }
                Update {
                    withdrawn,
                    attributes,
                    nlri,
                }
            },
        )
}

fn message(four: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(four).prop_map(Message::Update),
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..60)
        )
            .prop_map(
                |(code, subcode, data)| Message::Notification(Notification::new(
                    NotificationCode { code, subcode },
                    data
                ))
            ),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(afi, subtype, safi)| {
            Message::RouteRefresh(RouteRefresh {
                afi_safi: AfiSafi { afi, safi },
                subtype,
            })
        }),
    ]
}

fn enc(four: bool) -> Encoding {
    Encoding {
        four_octet_as: four,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn emit_then_parse_is_identity(
        (four, m) in any::<bool>().prop_flat_map(|four| (Just(four), message(four)))
    ) {
        let e = enc(four);
        let bytes = m.emit(e).expect("generated messages are encodable");
        prop_assert!(bytes.len() <= 4096);
        prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
        prop_assert_eq!(Message::parse(&bytes, e), Ok(m));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = frame_len(&bytes);
        for e in [Encoding::TWO_OCTET, Encoding::FOUR_OCTET] {
            if let Ok(m) = Message::parse(&bytes, e) {
                // Whatever parses re-emits to something that parses to the same message.
                let again = m.emit(e).expect("a parsed message emits");
                prop_assert_eq!(Message::parse(&again, e), Ok(m));
            }
        }
    }

    /// Valid messages with a few bytes changed: the hard cases for the length checks.
    #[test]
    fn parse_never_panics_on_mutated_messages(
        m in message(true),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let Ok(mut bytes) = m.emit(Encoding::FOUR_OCTET) else { return Ok(()); };
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = Message::parse(&bytes, Encoding::FOUR_OCTET);
        let _ = Message::parse(&bytes, Encoding::TWO_OCTET);
        let n = cut.index(bytes.len() + 1);
        let _ = Message::parse(&bytes[..n], Encoding::FOUR_OCTET);
        let _ = frame_len(&bytes[..n]);
    }
}

/// One step of a session fuzz run.
#[derive(Debug, Clone)]
enum Step {
    Start,
    Connected,
    /// Start and connect if needed, then the router's OPEN and KEEPALIVE.
    Handshake,
    ConnectFailed,
    Closed,
    /// A message from a small pool of router messages, cut into chunks.
    Router(usize, usize),
    Garbage(Vec<u8>),
    Wait(u64),
    BfdDown,
    Routes(u8),
    Stop(u8),
}

fn step() -> impl Strategy<Value = Step> {
    // Weighted towards the handshake so that most runs reach Established and exercise
    // UPDATEs, keepalives, refreshes and stops there, not only connect failures.
    prop_oneof![
        2 => Just(Step::Start),
        3 => Just(Step::Connected),
        1 => Just(Step::ConnectFailed),
        1 => Just(Step::Closed),
        3 => Just(Step::Handshake),
        6 => (0usize..8, 1usize..40).prop_map(|(m, c)| Step::Router(m, c)),
        1 => prop::collection::vec(any::<u8>(), 0..60).prop_map(Step::Garbage),
        4 => (0u64..4_000).prop_map(Step::Wait),
        1 => (0u64..300_000).prop_map(Step::Wait),
        1 => Just(Step::BfdDown),
        3 => any::<u8>().prop_map(Step::Routes),
        1 => (0u8..3).prop_map(Step::Stop),
    ]
}

fn router_messages() -> Vec<Vec<u8>> {
    let caps = vec![
        Capability::Multiprotocol(Family::Ipv4Unicast.afi_safi()),
        Capability::Multiprotocol(Family::Ipv6Unicast.afi_safi()),
        Capability::RouteRefresh,
        Capability::FourOctetAs(64513),
        Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            notification: false,
            restart_time: 90,
            families: vec![],
        }),
    ];
    let e = Encoding::FOUR_OCTET;
    let ok = |m: Message| m.emit(e).expect("emits");
    vec![
        ok(Message::Open(Open::new(
            64513,
            9,
            Ipv4Addr::new(192, 0, 2, 9),
            caps.clone(),
        ))),
        ok(Message::Open(Open::new(
            64513,
            0,
            Ipv4Addr::new(192, 0, 2, 9),
            vec![],
        ))),
        ok(Message::Open(Open::new(
            65000,
            9,
            Ipv4Addr::new(192, 0, 2, 9),
            caps,
        ))),
        ok(Message::Keepalive),
        ok(Message::Update(Update::end_of_rib(Family::Ipv6Unicast))),
        ok(Message::Notification(Notification::cease(2, "bye"))),
        ok(Message::RouteRefresh(RouteRefresh {
            afi_safi: Family::Ipv4Unicast.afi_safi(),
            subtype: 0,
        })),
        ok(Message::Update(Update {
            withdrawn: vec![],
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::sequence(vec![64513])),
                PathAttribute::NextHop(Ipv4Addr::new(198, 51, 100, 9)),
            ],
            nlri: vec![Prefix::host(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)))],
        })),
    ]
}

fn routes(seed: u8) -> BTreeMap<Prefix, RouteAttrs> {
    (0..seed % 8)
        .map(|i| {
            let p = if i % 3 == 0 {
                Prefix::host(IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::from(i),
                )))
            } else {
                Prefix::host(IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
            };
            (
                p,
                RouteAttrs {
                    communities: vec![u32::from(seed)],
                    ..RouteAttrs::default()
                },
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of events: no panic, every message sent parses with the session's
    /// encoding, Established implies negotiated parameters, and after a Timeout no deadline
    /// is left in the past (the shell would spin).
    #[test]
    fn sessions_never_panic_and_only_send_valid_messages(
        steps in prop::collection::vec(step(), 1..80),
        gr in any::<bool>(),
        dynamic in any::<bool>(),
    ) {
        let mut c = Config::new(64512, if dynamic { PeerAs::External } else { PeerAs::Exact(64513) }, Ipv4Addr::new(192, 0, 2, 1));
        c.hold_time = 9;
        if gr {
            c.graceful_restart = Some(GracefulRestartConfig { restart_time: 120, restarting: true });
        }
        let mut s = Session::new(c, 42);
        let pool = router_messages();
        let mut now = Instant::now();
        let nh = NextHops {
            ipv4: Some(Ipv4Addr::new(198, 51, 100, 1)),
            ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            ipv6_link_local: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        };
        for st in steps {
            let mut actions = Vec::new();
            match st {
                Step::Start => actions = s.handle(now, Event::Start),
                Step::Connected => actions = s.handle(now, Event::Connected(nh)),
                Step::Handshake => {
                    actions.extend(s.handle(now, Event::Start));
                    if s.state() == State::Connect {
                        actions.extend(s.handle(now, Event::Connected(nh)));
                    }
                    actions.extend(s.handle(now, Event::Received(&pool[0])));
                    actions.extend(s.handle(now, Event::Received(&pool[3])));
                }
                Step::ConnectFailed => actions = s.handle(now, Event::ConnectFailed),
                Step::Closed => actions = s.handle(now, Event::Closed),
                Step::Router(m, chunk) => {
                    let bytes = &pool[m % pool.len()];
                    for piece in bytes.chunks(chunk) {
                        actions.extend(s.handle(now, Event::Received(piece)));
                    }
                }
                Step::Garbage(b) => actions = s.handle(now, Event::Received(&b)),
                Step::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    // Deliver every deadline up to `now`, as the shell's sleep would.
                    for _ in 0..1000 {
                        match s.poll_timeout() {
                            Some(t) if t <= now => {
                                actions.extend(s.handle(t, Event::Timeout));
                                if let Some(next) = s.poll_timeout() {
                                    prop_assert!(next > t, "deadline {next:?} not after {t:?}");
                                }
                            }
                            _ => break,
                        }
                    }
                }
                Step::BfdDown => actions = s.handle(now, Event::BfdDown),
                Step::Routes(seed) => actions = s.handle(now, Event::Routes(routes(seed))),
                Step::Stop(k) => {
                    let stop = match k {
                        0 => Stop::Shutdown { message: "bye".into(), graceful_shutdown: Some(Duration::from_secs(2)), drain: Duration::from_secs(1) },
                        1 => Stop::Deconfigured { drain: Duration::ZERO },
                        _ => Stop::Restart { message: "restart".into() },
                    };
                    actions = s.handle(now, Event::Stop(stop));
                }
            }
            let e = s.negotiated().map_or(Encoding::FOUR_OCTET, |n| n.encoding);
            for a in &actions {
                if let Action::Send { kind, bytes } = a {
                    let m = Message::parse(bytes, e);
                    prop_assert!(m.is_ok(), "{kind:?} does not parse: {m:?}");
                }
            }
            if s.state() == State::Established {
                prop_assert!(s.negotiated().is_some());
            }
        }
    }
}
