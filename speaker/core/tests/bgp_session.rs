//! The BGP session state machine in virtual time: scripted peers (wrong AS, bad hold time,
//! bad identifier, NOTIFICATIONs, garbage, a silent router), and two of our sessions talking
//! over a simulated TCP connection (establishment, keepalives, graceful restart, shutdown).
//! Nothing here reads a clock: time is `T0 + offset`, advanced by the harness.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrolb_speaker_core::bgp::{
    Action, Capability, CloseReason, Config, Encoding, Event, Family, GRACEFUL_SHUTDOWN,
    GracefulRestartConfig, Message, MessageType, NextHops, Notification, NotificationCode, Open,
    PathAttribute, PeerAs, Prefix, RouteAttrs, RouteRefresh, Session, State, Stop, Update,
    session::Unannounced,
};

fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const LOCAL_AS: u32 = 64512;
const PEER_AS: u32 = 64513;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

fn config() -> Config {
    let mut c = Config::new(LOCAL_AS, PeerAs::Exact(PEER_AS), ROUTER_ID);
    c.hold_time = 9;
    c
}

fn next_hops() -> NextHops {
    NextHops {
        ipv4: Some(Ipv4Addr::new(198, 51, 100, 1)),
        ipv6: Some("2001:db8::1".parse().expect("literal")),
        ipv6_link_local: None,
    }
}

/// The OPEN a router would send.
fn router_open(asn: u32, hold: u16, id: Ipv4Addr, caps: Vec<Capability>) -> Vec<u8> {
    Message::Open(Open::new(asn, hold, id, caps))
        .emit(Encoding::FOUR_OCTET)
        .expect("emits")
}

fn full_caps(asn: u32) -> Vec<Capability> {
    vec![
        Capability::Multiprotocol(Family::Ipv4Unicast.afi_safi()),
        Capability::Multiprotocol(Family::Ipv6Unicast.afi_safi()),
        Capability::RouteRefresh,
        Capability::FourOctetAs(asn),
    ]
}

fn keepalive() -> Vec<u8> {
    Message::Keepalive
        .emit(Encoding::FOUR_OCTET)
        .expect("emits")
}

fn routes(n: u32) -> BTreeMap<Prefix, RouteAttrs> {
    (0..n)
        .map(|i| {
            (
                Prefix::host(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + i as u8))),
                RouteAttrs {
                    communities: vec![(64512 << 16) | 100],
                    ..RouteAttrs::default()
                },
            )
        })
        .collect()
}

/// One session driven by a test that plays the router.
struct Scripted {
    s: Session,
    now: Instant,
    /// Every action with the time it was returned.
    log: Vec<(Duration, Action)>,
}

impl Scripted {
    fn new(config: Config) -> Self {
        Self {
            s: Session::new(config, 7),
            now: t0(),
            log: Vec::new(),
        }
    }

    fn ev(&mut self, e: Event<'_>) -> Vec<Action> {
        let a = self.s.handle(self.now, e);
        let at = self.now - t0();
        self.log.extend(a.iter().cloned().map(|x| (at, x)));
        a
    }

    /// Advances to `T0 + to`, delivering every timeout on the way at its deadline.
    fn at(&mut self, to: Duration) -> Vec<Action> {
        let end = t0() + to;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match self.s.poll_timeout() {
                Some(d) if d <= end => {
                    assert!(d >= self.now, "deadline in the past");
                    self.now = d;
                    out.extend(self.ev(Event::Timeout));
                }
                _ => break,
            }
        }
        self.now = end;
        out
    }

    /// Start, connect, exchange OPEN and KEEPALIVE with a router sending `open`.
    fn establish(&mut self, open: &[u8]) -> Vec<Action> {
        assert_eq!(self.ev(Event::Start), vec![Action::Connect]);
        let a = self.ev(Event::Connected(next_hops()));
        assert!(matches!(&sent(&a)[..], [Message::Open(_)]));
        assert_eq!(self.s.state(), State::OpenSent);
        let a = self.ev(Event::Received(open));
        assert!(matches!(&sent(&a)[..], [Message::Keepalive]), "{a:?}");
        assert_eq!(
            self.s.state(),
            State::OpenConfirm,
            "waits for the peer's KEEPALIVE"
        );
        self.ev(Event::Received(&keepalive()))
    }
}

/// The messages in the Send actions, parsed back.
fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => {
                Some(Message::parse(bytes, Encoding::FOUR_OCTET).expect("we send valid bytes"))
            }
            _ => None,
        })
        .collect()
}

fn closed(actions: &[Action]) -> Option<&ferrolb_speaker_core::bgp::Closed> {
    actions.iter().find_map(|a| match a {
        Action::Closed(c) => Some(c),
        _ => None,
    })
}

fn notification(actions: &[Action]) -> Option<Notification> {
    sent(actions).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some(n),
        _ => None,
    })
}

/// The peer's OPEN is rejected with `code`, the connection closed and the reason recorded.
fn rejected_open(open: Vec<u8>, code: NotificationCode, peer_as: PeerAs) -> String {
    let mut c = config();
    c.peer_as = peer_as;
    let mut h = Scripted::new(c);
    h.ev(Event::Start);
    h.ev(Event::Connected(next_hops()));
    let a = h.ev(Event::Received(&open));
    assert_eq!(notification(&a).map(|n| n.code), Some(code), "{a:?}");
    assert!(a.contains(&Action::Close));
    let c = closed(&a).expect("closed reported");
    assert!(!c.was_established);
    assert_eq!(h.s.state(), State::Idle);
    // It will try again after a backoff.
    assert!(h.s.poll_timeout().is_some());
    c.to_string()
}

#[test]
fn open_validation_sends_the_right_notification() {
    let words = rejected_open(
        router_open(65001, 9, PEER_ID, full_caps(65001)),
        NotificationCode::BAD_PEER_AS,
        PeerAs::Exact(PEER_AS),
    );
    assert_eq!(
        words,
        "sent NOTIFICATION 2/2 bad peer AS: peer AS 65001, expected 64513"
    );
    rejected_open(
        router_open(PEER_AS, 2, PEER_ID, full_caps(PEER_AS)),
        NotificationCode::UNACCEPTABLE_HOLD_TIME,
        PeerAs::Exact(PEER_AS),
    );
    rejected_open(
        router_open(PEER_AS, 9, Ipv4Addr::UNSPECIFIED, full_caps(PEER_AS)),
        NotificationCode::BAD_BGP_IDENTIFIER,
        PeerAs::Exact(PEER_AS),
    );
    // iBGP peer with our own identifier (RFC 6286 §2.1).
    rejected_open(
        router_open(LOCAL_AS, 9, ROUTER_ID, full_caps(LOCAL_AS)),
        NotificationCode::BAD_BGP_IDENTIFIER,
        PeerAs::Internal,
    );
    // dynamicASN: internal refuses an external AS, external refuses ours.
    rejected_open(
        router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)),
        NotificationCode::BAD_PEER_AS,
        PeerAs::Internal,
    );
    rejected_open(
        router_open(LOCAL_AS, 9, PEER_ID, full_caps(LOCAL_AS)),
        NotificationCode::BAD_PEER_AS,
        PeerAs::External,
    );
    // A peer offering only a family we do not speak.
    rejected_open(
        router_open(
            PEER_AS,
            9,
            PEER_ID,
            vec![Capability::Multiprotocol(
                ferrolb_speaker_core::bgp::AfiSafi { afi: 25, safi: 70 },
            )],
        ),
        NotificationCode::UNSUPPORTED_CAPABILITY,
        PeerAs::Exact(PEER_AS),
    );
    // Version 3: the codec rejects it with 2/1.
    let mut v3 = router_open(PEER_AS, 9, PEER_ID, vec![]);
    v3[19] = 3;
    rejected_open(
        v3,
        NotificationCode::UNSUPPORTED_VERSION,
        PeerAs::Exact(PEER_AS),
    );
}

#[test]
fn dynamic_asn_accepts_what_it_should() {
    for (peer_as, asn) in [(PeerAs::Internal, LOCAL_AS), (PeerAs::External, 65010)] {
        let mut c = config();
        c.peer_as = peer_as;
        let mut h = Scripted::new(c);
        let a = h.establish(&router_open(asn, 9, PEER_ID, full_caps(asn)));
        let Some(Action::Established(n)) = a.first() else {
            panic!("not established: {a:?}");
        };
        assert_eq!(n.peer_as, asn);
        assert_eq!(n.internal, asn == LOCAL_AS);
    }
}

#[test]
fn negotiation_and_keepalives_every_third_of_hold() {
    let mut h = Scripted::new(config());
    // The router proposes 30 s, we 9 s: 9 s wins, keepalive every 3 s.
    let a = h.establish(&router_open(PEER_AS, 30, PEER_ID, full_caps(PEER_AS)));
    let Some(Action::Established(n)) = a.first() else {
        panic!("not established: {a:?}");
    };
    assert_eq!((n.hold_time, n.keepalive), (9, 3));
    assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
    assert!(n.encoding.four_octet_as && n.route_refresh && !n.graceful_restart);

    // The router keeps talking every 3 s for a minute: we send a KEEPALIVE every 3 s.
    let mut ours = Vec::new();
    for k in 1..=20 {
        let a = h.at(secs(3 * k));
        ours.extend(sent(&a));
        h.ev(Event::Received(&keepalive()));
    }
    assert_eq!(h.s.state(), State::Established);
    assert_eq!(ours.len(), 20);
    assert!(ours.iter().all(|m| *m == Message::Keepalive));
}

#[test]
fn configured_keepalive_never_exceeds_a_third_of_hold() {
    let mut c = config();
    c.hold_time = 90;
    c.keepalive = Some(30);
    let mut h = Scripted::new(c);
    // The router wants 9 s: a 30 s keepalive would let it expire us, so 3 s is used.
    let a = h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    assert!(matches!(a.first(), Some(Action::Established(n)) if n.keepalive == 3));
}

#[test]
fn a_silent_router_is_torn_down_at_the_hold_time() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    // Last word from the router at 1 s.
    h.at(secs(1));
    h.ev(Event::Received(&keepalive()));
    let before = h.at(Duration::from_millis(9_999));
    assert!(closed(&before).is_none(), "not before 9 s of silence");
    let a = h.at(secs(10));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::HOLD_TIMER_EXPIRED)
    );
    let c = closed(&a).expect("closed");
    assert_eq!(c.reason, CloseReason::HoldTimerExpired);
    assert!(c.was_established);
    assert_eq!(
        h.log
            .iter()
            .filter(|(t, a)| *t == secs(10) && *a == Action::Close)
            .count(),
        1
    );
    assert_eq!(h.s.state(), State::Idle);
}

#[test]
fn a_router_that_never_sends_open_is_dropped_after_the_open_hold_time() {
    let mut h = Scripted::new(config());
    h.ev(Event::Start);
    h.ev(Event::Connected(next_hops()));
    let a = h.at(secs(240));
    assert_eq!(
        closed(&a).map(|c| &c.reason),
        Some(&CloseReason::HoldTimerExpired)
    );
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
    let mut h = Scripted::new(config());
    let a = h.establish(&router_open(PEER_AS, 0, PEER_ID, full_caps(PEER_AS)));
    assert!(
        matches!(a.first(), Some(Action::Established(n)) if n.hold_time == 0 && n.keepalive == 0)
    );
    assert_eq!(h.s.poll_timeout(), None);
    assert!(sent(&h.at(secs(3600))).is_empty());
    assert_eq!(h.s.state(), State::Established);
}

#[test]
fn routes_then_end_of_rib_and_incremental_updates() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    let mut r = routes(3);
    r.insert(
        Prefix::host("2001:db8:100::1".parse().expect("literal")),
        RouteAttrs::default(),
    );
    let a = h.ev(Event::Routes(r.clone()));
    let msgs = sent(&a);
    // One IPv4 UPDATE with three NLRI, one IPv6 UPDATE, then End-of-RIB for both families.
    let Message::Update(u4) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(u4.nlri.len(), 3);
    assert_eq!(u4.attribute(2).map(|_| ()), Some(()));
    let Message::Update(u6) = &msgs[1] else {
        panic!("{msgs:?}")
    };
    assert!(matches!(
        u6.attributes.first(),
        Some(PathAttribute::MpReach(_))
    ));
    assert_eq!(
        msgs[2],
        Message::Update(Update::end_of_rib(Family::Ipv4Unicast))
    );
    assert_eq!(
        msgs[3],
        Message::Update(Update::end_of_rib(Family::Ipv6Unicast))
    );
    assert_eq!(msgs.len(), 4);
    // eBGP: AS_PATH [64512], no LOCAL_PREF.
    assert!(u4.attribute(5).is_none());

    // Removing one route sends exactly one withdrawal, nothing else.
    let gone = *r.keys().next().expect("non-empty");
    r.remove(&gone);
    let msgs = sent(&h.ev(Event::Routes(r.clone())));
    assert_eq!(
        msgs,
        vec![Message::Update(Update {
            withdrawn: vec![gone],
            ..Update::default()
        })]
    );
    // The same set again sends nothing.
    assert!(sent(&h.ev(Event::Routes(r))).is_empty());
    assert_eq!(h.s.adj_rib_out().len(), 3);
}

#[test]
fn no_end_of_rib_until_the_plan_is_ready() {
    let mut h = Scripted::new(config());
    let a = h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    assert!(
        sent(&a).is_empty(),
        "nothing is sent before the first Routes event"
    );
    let msgs = sent(&h.ev(Event::Routes(BTreeMap::new())));
    assert_eq!(
        msgs,
        vec![
            Message::Update(Update::end_of_rib(Family::Ipv4Unicast)),
            Message::Update(Update::end_of_rib(Family::Ipv6Unicast)),
        ]
    );
}

#[test]
fn routes_of_a_family_the_peer_lacks_are_reported() {
    let mut h = Scripted::new(config());
    let caps = vec![Capability::FourOctetAs(PEER_AS)]; // no MP: IPv4 unicast only
    h.establish(&router_open(PEER_AS, 9, PEER_ID, caps));
    let mut r = routes(1);
    let v6 = Prefix::host("2001:db8:100::1".parse().expect("literal"));
    r.insert(v6, RouteAttrs::default());
    let msgs = sent(&h.ev(Event::Routes(r)));
    assert_eq!(
        msgs.len(),
        2,
        "one IPv4 UPDATE and the IPv4 End-of-RIB: {msgs:?}"
    );
    assert_eq!(h.s.unannounced(), &[(v6, Unannounced::FamilyNotNegotiated)]);
}

#[test]
fn ibgp_sends_local_pref_and_an_empty_as_path() {
    let mut c = config();
    c.peer_as = PeerAs::Internal;
    let mut h = Scripted::new(c);
    h.establish(&router_open(LOCAL_AS, 9, PEER_ID, full_caps(LOCAL_AS)));
    let mut r = routes(1);
    r.values_mut().for_each(|a| a.local_pref = Some(200));
    r.extend(routes(2).into_iter().skip(1)); // second route without localPref: 100
    let msgs = sent(&h.ev(Event::Routes(r)));
    let prefs: Vec<Option<&PathAttribute>> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) if !u.nlri.is_empty() => Some(u.attribute(5)),
            _ => None,
        })
        .collect();
    assert!(prefs.contains(&Some(&PathAttribute::LocalPref(200))));
    assert!(prefs.contains(&Some(&PathAttribute::LocalPref(100))));
    for m in &msgs {
        if let Message::Update(u) = m
            && !u.nlri.is_empty()
        {
            assert_eq!(
                u.attribute(2),
                Some(&PathAttribute::AsPath(Default::default()))
            );
        }
    }
}

#[test]
fn a_two_octet_router_gets_as_trans_and_as4_path() {
    let mut c = config();
    c.local_as = 4_200_000_000;
    let mut h = Scripted::new(c);
    // The router sends no 4-octet AS capability.
    let caps = vec![Capability::Multiprotocol(Family::Ipv4Unicast.afi_safi())];
    let a = h.establish(&router_open(PEER_AS, 9, PEER_ID, caps));
    assert!(matches!(a.first(), Some(Action::Established(n)) if !n.encoding.four_octet_as));
    let a = h.ev(Event::Routes(routes(1)));
    let Some(Action::Send { bytes, .. }) = a.first() else {
        panic!("{a:?}")
    };
    let Ok(Message::Update(u)) = Message::parse(bytes, Encoding::TWO_OCTET) else {
        panic!("2-octet UPDATE");
    };
    assert_eq!(
        u.attribute(2),
        Some(&PathAttribute::AsPath(
            ferrolb_speaker_core::bgp::AsPath::sequence(vec![23456])
        ))
    );
    assert_eq!(
        u.attribute(17),
        Some(&PathAttribute::As4Path(
            ferrolb_speaker_core::bgp::AsPath::sequence(vec![4_200_000_000])
        ))
    );
}

#[test]
fn a_notification_from_the_router_closes_and_reconnects_with_backoff() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    let n = Message::Notification(Notification::cease(2, "maintenance"))
        .emit(Encoding::FOUR_OCTET)
        .expect("emits");
    let a = h.ev(Event::Received(&n));
    assert!(sent(&a).is_empty(), "no NOTIFICATION in reply to one");
    let c = closed(&a).expect("closed");
    assert_eq!(
        c.to_string(),
        "received NOTIFICATION 6/2 administrative shutdown: \"maintenance\": maintenance"
    );
    assert_eq!(c.reason.as_str(), "notification_received");
    // First retry after 0.5–1 s.
    let retry = h.s.poll_timeout().expect("retry scheduled") - h.now;
    assert!(
        (Duration::from_millis(500)..=secs(1)).contains(&retry),
        "{retry:?}"
    );
    let a = h.at(secs(1));
    assert_eq!(a, vec![Action::Connect]);
}

#[test]
fn reconnect_backoff_doubles_with_jitter_up_to_the_cap() {
    let mut h = Scripted::new(config());
    h.ev(Event::Start);
    let mut delays = Vec::new();
    for _ in 0..10 {
        let a = h.ev(Event::ConnectFailed);
        assert_eq!(
            closed(&a).map(|c| &c.reason),
            Some(&CloseReason::ConnectFailed)
        );
        assert_eq!(h.s.state(), State::Active);
        let d = h.s.poll_timeout().expect("retry") - h.now;
        delays.push(d);
        let a = h.at(h.now - t0() + d);
        assert_eq!(a, vec![Action::Connect]);
    }
    // Nominal 1, 2, 4, 8, 16, 30, 30... s; each drawn from the upper half.
    let nominal = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30];
    for (d, n) in delays.iter().zip(nominal) {
        assert!(
            *d >= secs(n) / 2 && *d <= secs(n),
            "{d:?} outside [{}/2, {n}] s",
            n
        );
    }
    // Jitter: not all capped delays are equal.
    assert!(delays[5..].windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn absurd_durations_do_not_overflow() {
    let mut c = config();
    c.connect_timeout = Duration::MAX;
    c.open_hold_time = Duration::MAX;
    c.backoff_initial = Duration::MAX;
    c.backoff_max = Duration::MAX;
    let mut h = Scripted::new(c);
    h.ev(Event::Start);
    h.ev(Event::ConnectFailed);
    let retry = h.s.poll_timeout().expect("a retry far away") - h.now;
    assert!(retry >= secs(100 * 24 * 3600), "{retry:?}");
    h.ev(Event::Start);
    h.ev(Event::Stop(Stop::Shutdown {
        message: String::new(),
        graceful_shutdown: Some(Duration::MAX),
        drain: Duration::MAX,
    }));
}

#[test]
fn a_connect_that_hangs_is_abandoned() {
    let mut h = Scripted::new(config());
    h.ev(Event::Start);
    let a = h.at(secs(10));
    assert!(a.contains(&Action::Close));
    assert_eq!(
        closed(&a).map(|c| &c.reason),
        Some(&CloseReason::ConnectTimeout)
    );
    // A late completion is closed, not used.
    assert_eq!(h.ev(Event::Connected(next_hops())), vec![Action::Close]);
}

#[test]
fn protocol_errors_from_the_router() {
    // A KEEPALIVE before the OPEN: 5/1.
    let mut h = Scripted::new(config());
    h.ev(Event::Start);
    h.ev(Event::Connected(next_hops()));
    let a = h.ev(Event::Received(&keepalive()));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::FSM_UNEXPECTED_IN_OPENSENT)
    );

    // An OPEN while Established: 5/3.
    let mut h = Scripted::new(config());
    let open = router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS));
    h.establish(&open);
    let a = h.ev(Event::Received(&open));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::FSM_UNEXPECTED_IN_ESTABLISHED)
    );

    // Garbage: a broken marker is 1/1.
    let mut h = Scripted::new(config());
    h.establish(&open);
    let a = h.ev(Event::Received(&[0x42; 40]));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::CONNECTION_NOT_SYNCHRONIZED)
    );
    assert_eq!(h.s.state(), State::Idle);
}

#[test]
fn malformed_updates_reset_only_when_rfc7606_says_so() {
    let marker = [0xffu8; 16];
    let update = |attrs: &[u8], nlri: &[u8]| {
        let mut m = marker.to_vec();
        let len = u16::try_from(23 + attrs.len() + nlri.len()).expect("short");
        m.extend_from_slice(&len.to_be_bytes());
        m.push(2);
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&u16::try_from(attrs.len()).expect("short").to_be_bytes());
        m.extend_from_slice(attrs);
        m.extend_from_slice(nlri);
        m
    };
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    // ORIGIN 7: treat-as-withdraw. We keep no routes from the router: nothing to do.
    let bad_origin = update(
        &[0x40, 1, 1, 7, 0x40, 2, 0, 0x40, 3, 4, 198, 51, 100, 9],
        &[32, 203, 0, 113, 99],
    );
    let a = h.ev(Event::Received(&bad_origin));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(h.s.state(), State::Established);
    assert_eq!(h.s.stats().updates_malformed, 1);
    // An NLRI field that cannot be parsed: session reset with 3/10.
    let bad_nlri = update(
        &[0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 198, 51, 100, 9],
        &[40, 1],
    );
    let a = h.ev(Event::Received(&bad_nlri));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::INVALID_NETWORK_FIELD)
    );
    assert_eq!(h.s.state(), State::Idle);
}

#[test]
fn messages_split_at_any_byte_are_reassembled() {
    let mut h = Scripted::new(config());
    h.ev(Event::Start);
    h.ev(Event::Connected(next_hops()));
    let mut stream = router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS));
    stream.extend(keepalive());
    stream.extend(keepalive());
    let mut established = 0;
    for b in &stream {
        for a in h.ev(Event::Received(std::slice::from_ref(b))) {
            if matches!(a, Action::Established(_)) {
                established += 1;
            }
        }
    }
    assert_eq!(established, 1);
    assert_eq!(h.s.state(), State::Established);
}

#[test]
fn route_refresh_resends_the_family() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    h.ev(Event::Routes(routes(5)));
    let rr = Message::RouteRefresh(RouteRefresh {
        afi_safi: Family::Ipv4Unicast.afi_safi(),
        subtype: 0,
    })
    .emit(Encoding::FOUR_OCTET)
    .expect("emits");
    let msgs = sent(&h.ev(Event::Received(&rr)));
    assert!(
        matches!(&msgs[..], [Message::Update(u)] if u.nlri.len() == 5),
        "{msgs:?}"
    );
}

#[test]
fn bfd_down_tears_the_session_down_with_cease_6_10() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    let a = h.ev(Event::BfdDown);
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::BFD_DOWN)
    );
    assert_eq!(closed(&a).map(|c| &c.reason), Some(&CloseReason::BfdDown));
    assert!(h.s.poll_timeout().is_some(), "reconnects");
}

#[test]
fn node_shutdown_graceful_shutdown_community_then_withdraw_then_cease() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    h.ev(Event::Routes(routes(2)));
    h.at(secs(1));
    let a = h.ev(Event::Stop(Stop::Shutdown {
        message: "ferrolb: node shutting down".into(),
        graceful_shutdown: Some(secs(5)),
        drain: secs(3),
    }));
    // 1. Re-announced with GRACEFUL_SHUTDOWN 65535:0 added.
    let msgs = sent(&a);
    let [Message::Update(u)] = &msgs[..] else {
        panic!("{msgs:?}")
    };
    assert_eq!(u.nlri.len(), 2);
    assert_eq!(
        u.attribute(8),
        Some(&PathAttribute::Communities(vec![
            (64512 << 16) | 100,
            GRACEFUL_SHUTDOWN
        ]))
    );
    // The router keeps talking; keepalives continue meanwhile.
    for t in [3, 5] {
        h.at(secs(t));
        h.ev(Event::Received(&keepalive()));
    }
    // 2. At 1 + 5 s: everything withdrawn.
    let a = h.at(secs(6));
    let withdrawn: Vec<Message> = sent(&a)
        .into_iter()
        .filter(|m| matches!(m, Message::Update(_)))
        .collect();
    assert!(
        matches!(&withdrawn[..], [Message::Update(u)] if u.withdrawn.len() == 2),
        "{withdrawn:?}"
    );
    assert_eq!(h.s.state(), State::Established);
    h.ev(Event::Received(&keepalive()));
    // 3. At 6 + 3 s: Cease 6/2 with the message, close, and no reconnect.
    assert!(closed(&h.at(Duration::from_millis(8_999))).is_none());
    let a = h.at(secs(9));
    let n = notification(&a).expect("cease");
    assert_eq!(n.code, NotificationCode::ADMIN_SHUTDOWN);
    assert_eq!(
        n.shutdown_message().as_deref(),
        Some("ferrolb: node shutting down")
    );
    assert_eq!(
        closed(&a).map(|c| &c.reason),
        Some(&CloseReason::AdminShutdown)
    );
    assert_eq!(h.s.poll_timeout(), None);
    assert!(h.at(secs(600)).is_empty());
    // Start brings it back.
    assert_eq!(h.ev(Event::Start), vec![Action::Connect]);
}

#[test]
fn peer_deconfigured_withdraws_then_cease_6_3() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    h.ev(Event::Routes(routes(2)));
    let a = h.ev(Event::Stop(Stop::Deconfigured { drain: secs(2) }));
    assert!(matches!(&sent(&a)[..], [Message::Update(u)] if u.withdrawn.len() == 2));
    let a = h.at(secs(2));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::PEER_DECONFIGURED)
    );
    assert_eq!(
        closed(&a).map(|c| &c.reason),
        Some(&CloseReason::Deconfigured)
    );
}

#[test]
fn a_peer_closing_during_the_drain_ends_the_stop_without_reconnecting() {
    let mut h = Scripted::new(config());
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    h.ev(Event::Routes(routes(2)));
    h.ev(Event::Stop(Stop::Shutdown {
        message: "bye".into(),
        graceful_shutdown: None,
        drain: secs(5),
    }));
    let n = Message::Notification(Notification::cease(2, "router going down too"))
        .emit(Encoding::FOUR_OCTET)
        .expect("emits");
    let a = h.ev(Event::Received(&n));
    assert!(matches!(
        closed(&a).map(|c| &c.reason),
        Some(CloseReason::NotificationReceived(_))
    ));
    assert_eq!(h.s.poll_timeout(), None, "stopped: no reconnect");
    assert!(h.at(secs(600)).is_empty());
}

#[test]
fn stop_before_established_ceases_at_once() {
    let mut h = Scripted::new(config());
    h.ev(Event::Start);
    h.ev(Event::Connected(next_hops()));
    let a = h.ev(Event::Stop(Stop::Deconfigured { drain: secs(2) }));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::PEER_DECONFIGURED)
    );
    let mut h = Scripted::new(config());
    h.ev(Event::Start);
    h.ev(Event::ConnectFailed);
    assert!(
        h.ev(Event::Stop(Stop::Deconfigured { drain: secs(2) }))
            .is_empty()
    );
    assert_eq!(h.s.poll_timeout(), None, "no reconnect after a stop");
}

fn gr_config(restarting: bool) -> Config {
    let mut c = config();
    c.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting,
    });
    c
}

fn gr_caps() -> Vec<Capability> {
    let mut caps = full_caps(PEER_AS);
    caps.push(Capability::GracefulRestart(
        ferrolb_speaker_core::bgp::GracefulRestart {
            restarting: false,
            notification: false,
            restart_time: 120,
            families: vec![],
        },
    ));
    caps
}

#[test]
fn planned_restart_with_graceful_restart_closes_without_a_cease() {
    let mut h = Scripted::new(gr_config(false));
    let a = h.establish(&router_open(PEER_AS, 9, PEER_ID, gr_caps()));
    assert!(matches!(a.first(), Some(Action::Established(n)) if n.graceful_restart));
    h.ev(Event::Routes(routes(2)));
    let a = h.ev(Event::Stop(Stop::Restart {
        message: "restarting".into(),
    }));
    assert!(sent(&a).is_empty(), "no NOTIFICATION, no withdrawal: {a:?}");
    assert_eq!(a[0], Action::Close);
    assert_eq!(closed(&a).map(|c| &c.reason), Some(&CloseReason::Restart));
    assert_eq!(h.s.poll_timeout(), None);

    // Without graceful restart negotiated, a restart is announced with Cease 6/4.
    let mut h = Scripted::new(gr_config(false));
    h.establish(&router_open(PEER_AS, 9, PEER_ID, full_caps(PEER_AS)));
    let a = h.ev(Event::Stop(Stop::Restart {
        message: "restarting".into(),
    }));
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(NotificationCode::ADMIN_RESET)
    );
}

#[test]
fn the_restarted_speaker_sets_r_until_its_first_session() {
    let mut h = Scripted::new(gr_config(true));
    h.ev(Event::Start);
    let a = h.ev(Event::Connected(next_hops()));
    let [Message::Open(open)] = &sent(&a)[..] else {
        panic!("{a:?}")
    };
    let gr = open.graceful_restart().expect("GR capability");
    assert!(gr.restarting, "R bit");
    assert_eq!(gr.restart_time, 120);
    assert!(
        gr.families.iter().all(|(_, f)| *f),
        "F bit: forwarding preserved"
    );
    h.ev(Event::Received(&router_open(
        PEER_AS,
        9,
        PEER_ID,
        gr_caps(),
    )));
    h.ev(Event::Received(&keepalive()));
    assert_eq!(h.s.state(), State::Established);
    // The session drops; the next OPEN no longer claims a restart.
    h.ev(Event::Closed);
    let d = h.s.poll_timeout().expect("retry");
    let a = h.at(d - t0());
    assert_eq!(a, vec![Action::Connect]);
    let a = h.ev(Event::Connected(next_hops()));
    let [Message::Open(open)] = &sent(&a)[..] else {
        panic!("{a:?}")
    };
    assert!(!open.graceful_restart().expect("GR").restarting);
}

// ---------------------------------------------------------------------------------------
// Two of our sessions over a simulated TCP connection.

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    Connected,
    Bytes(Vec<u8>),
    Closed,
}

/// Two sessions and a network with 1 ms latency. A connection forms when both sides ask for
/// one (each is active-only; the pair stands in for one side accepting).
struct Pair {
    s: [Session; 2],
    now: Instant,
    queue: BinaryHeap<Reverse<(Instant, u64, usize, Delivery)>>,
    seq: u64,
    wants: [bool; 2],
    up: bool,
    /// (time, side, action) for every action.
    log: Vec<(Duration, usize, Action)>,
}

const LATENCY: Duration = Duration::from_millis(1);

impl Pair {
    fn new(a: Config, b: Config) -> Self {
        Self {
            s: [Session::new(a, 1), Session::new(b, 2)],
            now: t0(),
            queue: BinaryHeap::new(),
            seq: 0,
            wants: [false; 2],
            up: false,
            log: Vec::new(),
        }
    }

    fn push(&mut self, side: usize, d: Delivery) {
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + LATENCY, self.seq, side, d)));
    }

    fn ev(&mut self, side: usize, e: Event<'_>) {
        let actions = self.s[side].handle(self.now, e);
        let at = self.now - t0();
        for a in actions {
            self.log.push((at, side, a.clone()));
            match a {
                Action::Connect => {
                    self.wants[side] = true;
                    if self.wants[1 - side] {
                        self.wants = [false; 2];
                        self.up = true;
                        self.push(0, Delivery::Connected);
                        self.push(1, Delivery::Connected);
                    }
                }
                Action::Send { bytes, .. } if self.up => {
                    self.push(1 - side, Delivery::Bytes(bytes));
                }
                Action::Close => {
                    self.wants[side] = false;
                    if self.up {
                        self.up = false;
                        self.push(1 - side, Delivery::Closed);
                    }
                }
                _ => {}
            }
        }
    }

    fn run(&mut self, until: Duration) {
        let end = t0() + until;
        for _ in 0..100_000 {
            let net = self.queue.peek().map(|Reverse((t, ..))| *t);
            let timers = [0, 1].map(|i| self.s[i].poll_timeout().map(|t| (t, i)));
            let timer = timers.into_iter().flatten().min();
            let next = match (net, timer) {
                (Some(n), Some((t, _))) if n <= t => Some((n, None)),
                (Some(n), None) => Some((n, None)),
                (_, Some((t, i))) => Some((t, Some(i))),
                (None, None) => None,
            };
            let Some((t, which)) = next.filter(|(t, _)| *t <= end) else {
                self.now = end;
                return;
            };
            self.now = t.max(self.now);
            match which {
                Some(i) => self.ev(i, Event::Timeout),
                None => {
                    let Some(Reverse((_, _, side, d))) = self.queue.pop() else {
                        continue;
                    };
                    match d {
                        Delivery::Connected => self.ev(side, Event::Connected(next_hops())),
                        Delivery::Bytes(b) => self.ev(side, Event::Received(&b)),
                        Delivery::Closed => self.ev(side, Event::Closed),
                    }
                }
            }
        }
        panic!("simulation did not settle");
    }

    fn established_at(&self, side: usize) -> Vec<Duration> {
        self.log
            .iter()
            .filter(|(_, s, a)| *s == side && matches!(a, Action::Established(_)))
            .map(|(t, ..)| *t)
            .collect()
    }
}

fn pair_configs() -> (Config, Config) {
    let a = config();
    let mut b = Config::new(PEER_AS, PeerAs::Exact(LOCAL_AS), PEER_ID);
    b.hold_time = 9;
    (a, b)
}

#[test]
fn two_speakers_establish_and_stay_up() {
    let (a, b) = pair_configs();
    let mut p = Pair::new(a, b);
    p.ev(0, Event::Start);
    p.ev(1, Event::Start);
    p.ev(0, Event::Routes(routes(3)));
    p.ev(1, Event::Routes(BTreeMap::new()));
    p.run(secs(120));
    // Connected at 1 ms, OPENs at 2 ms, KEEPALIVEs at 3 ms.
    assert_eq!(p.established_at(0), vec![Duration::from_millis(3)]);
    assert_eq!(p.established_at(1), vec![Duration::from_millis(3)]);
    assert_eq!(p.s[0].state(), State::Established);
    assert_eq!(p.s[1].state(), State::Established);
    assert_eq!(p.s[0].adj_rib_out().len(), 3);
    // B received A's UPDATE and two End-of-RIBs.
    assert_eq!(p.s[1].stats().updates_received, 3);
    // Two minutes with keepalives every 3 s: about 40 each way, nothing else.
    let kas = p
        .log
        .iter()
        .filter(|(_, s, a)| {
            *s == 0
                && matches!(
                    a,
                    Action::Send {
                        kind: MessageType::Keepalive,
                        ..
                    }
                )
        })
        .count();
    assert!((39..=41).contains(&kas), "{kas} keepalives");
    assert!(
        p.log
            .iter()
            .all(|(_, _, a)| !matches!(a, Action::Closed(_)))
    );
}

#[test]
fn graceful_restart_between_two_speakers() {
    let (mut a, mut b) = pair_configs();
    a.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: false,
    });
    b.graceful_restart = a.graceful_restart;
    let mut p = Pair::new(a.clone(), b);
    p.ev(0, Event::Start);
    p.ev(1, Event::Start);
    p.ev(0, Event::Routes(routes(2)));
    p.ev(1, Event::Routes(BTreeMap::new()));
    p.run(secs(5));
    assert_eq!(p.s[0].state(), State::Established);

    // A restarts: closes without a Cease, B sees the connection drop (no NOTIFICATION).
    p.ev(
        0,
        Event::Stop(Stop::Restart {
            message: "restart".into(),
        }),
    );
    p.run(secs(6));
    let b_closed: Vec<&CloseReason> = p
        .log
        .iter()
        .filter_map(|(_, s, a)| match a {
            Action::Closed(c) if *s == 1 => Some(&c.reason),
            _ => None,
        })
        .collect();
    assert_eq!(b_closed, vec![&CloseReason::ConnectionLost]);

    // The new process: R bit set, routes again, then End-of-RIB.
    a.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: true,
    });
    p.s[0] = Session::new(a, 3);
    let from = p.log.len();
    p.ev(0, Event::Start);
    p.ev(0, Event::Routes(routes(2)));
    p.run(secs(60));
    assert_eq!(p.s[0].state(), State::Established);
    assert_eq!(p.s[1].state(), State::Established);
    let opens: Vec<bool> = p.log[from..]
        .iter()
        .filter_map(|(_, s, a)| match a {
            Action::Send {
                kind: MessageType::Open,
                bytes,
            } if *s == 0 => match Message::parse(bytes, Encoding::FOUR_OCTET) {
                Ok(Message::Open(o)) => o.graceful_restart().map(|g| g.restarting),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(opens, vec![true]);
    let updates: Vec<Update> = p.log[from..]
        .iter()
        .filter_map(|(_, s, a)| match a {
            Action::Send {
                kind: MessageType::Update,
                bytes,
            } if *s == 0 => match Message::parse(bytes, Encoding::FOUR_OCTET) {
                Ok(Message::Update(u)) => Some(u),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        updates.len(),
        3,
        "routes, then End-of-RIB for both families"
    );
    assert_eq!(updates[0].nlri.len(), 2);
    assert!(updates[1].is_end_of_rib().is_some() && updates[2].is_end_of_rib().is_some());
}

#[test]
fn a_dead_peer_is_detected_by_the_hold_timer_on_both_sides() {
    let (a, b) = pair_configs();
    let mut p = Pair::new(a, b);
    p.ev(0, Event::Start);
    p.ev(1, Event::Start);
    p.run(secs(5));
    assert_eq!(p.s[0].state(), State::Established);
    // The network dies silently at 5 s: nothing is delivered any more.
    p.up = false;
    p.queue.clear();
    p.run(secs(30));
    let expiries: Vec<(Duration, usize)> = p
        .log
        .iter()
        .filter_map(|(t, s, a)| match a {
            Action::Closed(c) if c.reason == CloseReason::HoldTimerExpired => Some((*t, *s)),
            _ => None,
        })
        .collect();
    // Each side expires exactly one hold time (9 s) after the last message it received.
    assert_eq!(expiries.len(), 2, "{expiries:?}");
    for (t, side) in expiries {
        let last_sent_by_peer = p
            .log
            .iter()
            .filter(|(at, s, a)| {
                *s == 1 - side && *at < secs(5) && matches!(a, Action::Send { .. })
            })
            .map(|(at, ..)| *at)
            .max()
            .expect("the peer sent something");
        assert_eq!(t, last_sent_by_peer + LATENCY + secs(9));
    }
}
