//! BFD: Control packet fixtures (RFC 5880 §4.1) and two endpoints in virtual time over a
//! simulated link: the three-packet handshake, detection after Detect Mult × interval, Poll/
//! Final on timer changes, passive mode, TTL checks, and AdminDown for a planned restart not
//! being taken for a failure even when packets are lost.
//!
//! Two fixtures are decoded in tcpdump's test suite (`tests/bfd-lag-v.out`,
//! `tests/bfd-raw-auth-sha1-v.out`): the bytes below are the unique encoding of the fields
//! tcpdump prints for them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrolb_speaker_core::bfd::{
    Action, BfdError, BfdState, Config, ControlPacket, Diagnostic, Discard, Event, Hops, Session,
    Transition,
};
use proptest::prelude::*;

fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

const fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn hex(s: &str) -> Vec<u8> {
    let d: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..d.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&d[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn down_with_poll_fixture() {
    // State Down, Flags [Poll], diag 0, mult 3, length 24, My 0x0de60837, Your 0,
    // Desired Min TX 1000 ms, Required Min RX 300 ms, Required Min Echo 300 ms.
    let bytes = hex("20 60 03 18 0de60837 00000000 000f4240 000493e0 000493e0");
    let p = ControlPacket::parse(&bytes).expect("parses");
    let want = ControlPacket {
        diag: Diagnostic::NONE,
        state: BfdState::Down,
        poll: true,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 0x0de6_0837,
        your_discriminator: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 300_000,
        auth: None,
    };
    assert_eq!(p, want);
    assert_eq!(p.emit().expect("emits"), bytes);
}

#[test]
fn authenticated_fixture_parses_and_is_discarded_by_a_session() {
    // State Down, [Authentication Present], mult 5, length 52, My 1, Your 0, 1000/1000/0 ms,
    // Meticulous Keyed SHA1 (5), auth length 28, key id 2, sequence 5, 20-byte hash.
    let bytes = hex("20 44 05 34 00000001 00000000 000f4240 000f4240 00000000
         05 1c 02 00 00000005 010203040506070809101112131415161718191a");
    let p = ControlPacket::parse(&bytes).expect("parses");
    let auth = p.auth.as_ref().expect("auth section");
    assert_eq!(auth.auth_type, 5);
    assert_eq!(auth.data.len(), 26);
    assert_eq!(p.emit().expect("emits"), bytes);
    let mut s = Session::new(Config::default(), 7, t0(), 1);
    let mut out = Vec::new();
    assert_eq!(
        s.receive(t0(), &bytes, 255, &mut out),
        Err(Discard::Authenticated)
    );
}

#[test]
fn malformed_packets_are_rejected_per_rfc5880_6_8_6() {
    let good = hex("20 c0 03 18 00000001 00000002 000493e0 000493e0 00000000");
    assert!(ControlPacket::parse(&good).is_ok());
    type Mutation = fn(&mut Vec<u8>);
    let cases: [(Mutation, BfdError); 7] = [
        (|b| b.truncate(23), BfdError::Truncated),
        (|b| b[0] = 0x40, BfdError::BadVersion),
        (|b| b[3] = 23, BfdError::BadLength),
        (|b| b[3] = 25, BfdError::BadLength),
        (|b| b[2] = 0, BfdError::ZeroDetectMult),
        (|b| b[1] |= 1, BfdError::Multipoint),
        (
            |b| b[4..8].copy_from_slice(&[0; 4]),
            BfdError::ZeroMyDiscriminator,
        ),
    ];
    for (mutate, want) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        assert_eq!(ControlPacket::parse(&b), Err(want));
    }
    // Your Discriminator 0 is fine from a Down sender, not from an Up one.
    let mut b = good.clone();
    b[8..12].copy_from_slice(&[0; 4]);
    assert_eq!(
        ControlPacket::parse(&b),
        Err(BfdError::ZeroYourDiscriminator)
    );
    b[1] = 0x40;
    assert!(ControlPacket::parse(&b).is_ok());
    // RFC 5880 sets only a minimum Length: 44 without authentication is accepted, the bytes
    // after the mandatory section ignored, and the packet re-emitted with Length 24 (found
    // by the bfd_packet fuzz target, which had assumed byte identity).
    let mut b = good.clone();
    b[3] = 44;
    b.extend_from_slice(&[0x55; 20]);
    let p = ControlPacket::parse(&b).expect("a longer Length is valid");
    assert_eq!(p.emit().expect("emits"), good);
    // Trailing bytes after Length are ignored.
    let mut b = good.clone();
    b.extend_from_slice(&[0xaa; 8]);
    assert_eq!(ControlPacket::parse(&b), ControlPacket::parse(&good));
}

/// A packet on the link: arrival time, sequence (for a stable order), receiver, bytes.
type InFlight = (Instant, u64, usize, Vec<u8>);

/// Two sessions joined by a link with 100 µs latency.
struct Link {
    s: [Session; 2],
    now: Instant,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// From this time on, packets sent by side i are lost.
    cut: [Option<Instant>; 2],
    /// Drop the next n packets sent by side i.
    drop_next: [usize; 2],
    /// Packets delivered: (time, to, packet).
    delivered: Vec<(Duration, usize, ControlPacket)>,
    /// Packets sent: (time, from, packet).
    sent: Vec<(Duration, usize, ControlPacket)>,
    transitions: Vec<(Duration, usize, Transition)>,
}

const LATENCY: Duration = Duration::from_micros(100);

impl Link {
    fn new(a: Config, b: Config) -> Self {
        Self {
            s: [
                Session::new(a, 0x1111, t0(), 11),
                Session::new(b, 0x2222, t0(), 22),
            ],
            now: t0(),
            queue: BinaryHeap::new(),
            seq: 0,
            cut: [None; 2],
            drop_next: [0; 2],
            delivered: Vec::new(),
            sent: Vec::new(),
            transitions: Vec::new(),
        }
    }

    fn apply(&mut self, side: usize, actions: Vec<Action>) {
        let at = self.now - t0();
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    let p = ControlPacket::parse(&bytes).expect("we send valid packets");
                    self.sent.push((at, side, p));
                    if self.cut[side].is_some_and(|t| self.now >= t) {
                        continue;
                    }
                    if self.drop_next[side] > 0 {
                        self.drop_next[side] -= 1;
                        continue;
                    }
                    self.seq += 1;
                    self.queue
                        .push(Reverse((self.now + LATENCY, self.seq, 1 - side, bytes)));
                }
                Action::StateChanged(t) => self.transitions.push((at, side, t)),
            }
        }
    }

    fn ev(&mut self, side: usize, e: Event<'_>) {
        let a = self.s[side].handle(self.now, e);
        self.apply(side, a);
    }

    fn run(&mut self, until: Duration) {
        let end = t0() + until;
        for _ in 0..1_000_000 {
            let net = self.queue.peek().map(|Reverse((t, ..))| *t);
            let timer = [0, 1]
                .into_iter()
                .filter_map(|i| self.s[i].poll_timeout().map(|t| (t, i)))
                .min();
            let (t, which) = match (net, timer) {
                (Some(n), Some((t, _))) if n <= t => (n, None),
                (Some(n), None) => (n, None),
                (_, Some((t, i))) => (t, Some(i)),
                (None, None) => break,
            };
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            match which {
                Some(i) => self.ev(i, Event::Timeout),
                None => {
                    let Some(Reverse((_, _, to, bytes))) = self.queue.pop() else {
                        continue;
                    };
                    let p = ControlPacket::parse(&bytes).expect("valid");
                    self.delivered.push((self.now - t0(), to, p));
                    self.ev(
                        to,
                        Event::Received {
                            bytes: &bytes,
                            ttl: 255,
                        },
                    );
                }
            }
        }
        self.now = end;
    }

    fn first_up(&self, side: usize) -> Option<Duration> {
        self.transitions
            .iter()
            .find(|(_, s, t)| *s == side && t.to == BfdState::Up)
            .map(|(at, ..)| *at)
    }
}

#[test]
fn up_after_a_three_packet_exchange() {
    // The router is passive (a common configuration): our Down, its Init, our Up.
    let passive = Config {
        passive: true,
        ..Config::default()
    };
    let mut l = Link::new(Config::default(), passive);
    l.run(Duration::from_secs(5));
    let a_up = l.first_up(0).expect("A up");
    let b_up = l.first_up(1).expect("B up");
    let before_both_up: Vec<(usize, BfdState)> = l
        .delivered
        .iter()
        .filter(|(t, ..)| *t <= a_up.max(b_up))
        .map(|(_, to, p)| (*to, p.state))
        .collect();
    assert_eq!(
        before_both_up,
        vec![(1, BfdState::Down), (0, BfdState::Init), (1, BfdState::Up)]
    );
    assert_eq!(l.s[0].state(), BfdState::Up);
    assert_eq!(l.s[1].state(), BfdState::Up);
    // While not Up, packets advertise the 1 s idle rate; once Up, 300 ms with a Poll, which
    // the peer answers with a Final at once.
    assert_eq!(l.delivered[0].2.desired_min_tx, 1_000_000);
    let polls = l.sent.iter().filter(|(_, _, p)| p.poll).count();
    let finals = l.sent.iter().filter(|(_, _, p)| p.final_).count();
    assert!(polls >= 2 && finals >= 2, "polls {polls}, finals {finals}");
    assert!(l.sent.iter().all(|(_, _, p)| !(p.poll && p.final_)));

    // Both active and starting together: the Downs cross, both go Init, and two more
    // packets (an Init one way, then Init or Up the other) bring both Up.
    let mut l = Link::new(Config::default(), Config::default());
    l.run(Duration::from_secs(5));
    let both_up = l
        .first_up(0)
        .expect("A up")
        .max(l.first_up(1).expect("B up"));
    let states: Vec<BfdState> = l
        .delivered
        .iter()
        .filter(|(t, ..)| *t <= both_up)
        .map(|(_, _, p)| p.state)
        .collect();
    assert_eq!(states.len(), 4, "{states:?}");
    assert_eq!(
        states[..3],
        [BfdState::Down, BfdState::Down, BfdState::Init]
    );
}

#[test]
fn steady_state_interval_is_jittered_between_75_and_100_percent() {
    let mut l = Link::new(Config::default(), Config::default());
    l.run(Duration::from_secs(30));
    let times: Vec<Duration> = l
        .sent
        .iter()
        .filter(|(t, s, p)| *s == 0 && *t > Duration::from_secs(10) && !p.final_)
        .map(|(t, ..)| *t)
        .collect();
    assert!(times.len() > 60);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| (ms(225)..=ms(300)).contains(g)),
        "{gaps:?}"
    );
    let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).expect("small");
    assert!((ms(250)..=ms(275)).contains(&mean), "mean {mean:?}");
    // Steady state: no Poll outstanding once the Finals arrived.
    assert!(
        l.sent
            .iter()
            .filter(|(t, ..)| *t > Duration::from_secs(10))
            .all(|(_, _, p)| !p.poll)
    );
}

#[test]
fn detect_mult_one_jitters_between_75_and_90_percent() {
    let c = Config {
        detect_mult: 1,
        ..Config::default()
    };
    let mut l = Link::new(c, Config::default());
    l.run(Duration::from_secs(30));
    let times: Vec<Duration> = l
        .sent
        .iter()
        .filter(|(t, s, p)| *s == 0 && *t > Duration::from_secs(10) && !p.final_)
        .map(|(t, ..)| *t)
        .collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| (ms(225)..=ms(270)).contains(g)),
        "{gaps:?}"
    );
}

#[test]
fn a_silent_peer_is_detected_after_multiplier_times_interval() {
    let mut l = Link::new(Config::default(), Config::default());
    l.run(Duration::from_secs(10));
    // A dies: nothing it sends arrives from 10 s on.
    l.cut[0] = Some(l.now);
    l.run(Duration::from_secs(20));
    let (t_down, _, tr) = *l
        .transitions
        .iter()
        .find(|(_, s, t)| *s == 1 && t.to == BfdState::Down)
        .expect("B detected A's failure");
    let last_rx = l
        .delivered
        .iter()
        .filter(|(_, to, _)| *to == 1)
        .map(|(t, ..)| *t)
        .max()
        .expect("B heard A");
    // 3 × max(300 ms RequiredMinRx, A's 300 ms Desired Min TX).
    assert_eq!(t_down - last_rx, ms(900));
    assert!(t_down - Duration::from_secs(10) <= ms(900));
    assert_eq!(tr.diag, Diagnostic::CONTROL_DETECTION_TIME_EXPIRED);
    assert!(tr.is_failure());
    assert_eq!(
        l.s[1].remote_discriminator(),
        0,
        "a silent peer is forgotten"
    );
}

#[test]
fn admin_down_for_a_restart_is_not_a_failure_even_with_losses() {
    let mut l = Link::new(Config::default(), Config::default());
    l.run(Duration::from_secs(10));
    // The first two AdminDown packets are lost: the third, sent within the peer's detection
    // time, must still arrive before B would time A out.
    l.drop_next[0] = 2;
    l.ev(0, Event::AdminDown(Diagnostic::ADMINISTRATIVELY_DOWN));
    let start = l.now - t0();
    let done = l.s[0].admin_down_complete_at().expect("window") - t0();
    assert_eq!(
        done - start,
        ms(900),
        "one detection time of the peer: 3 × 300 ms"
    );
    l.run(done);
    let admin_sent = l
        .sent
        .iter()
        .filter(|(t, s, p)| *s == 0 && *t >= start && p.state == BfdState::AdminDown)
        .count();
    assert!(
        admin_sent >= 4,
        "AdminDown repeated at the fast rate: {admin_sent}"
    );
    let (_, _, tr) = *l
        .transitions
        .iter()
        .find(|(_, s, t)| *s == 1 && t.to == BfdState::Down)
        .expect("B went down");
    assert!(tr.peer_admin_down);
    assert!(!tr.is_failure(), "AdminDown is not a path failure");
    assert_eq!(tr.diag, Diagnostic::NEIGHBOR_SIGNALED_DOWN);
    assert!(
        l.transitions
            .iter()
            .all(|(_, _, t)| t.diag != Diagnostic::CONTROL_DETECTION_TIME_EXPIRED)
    );
    // Every AdminDown packet says diag 7.
    assert!(
        l.sent
            .iter()
            .filter(|(_, s, p)| *s == 0 && p.state == BfdState::AdminDown)
            .all(|(_, _, p)| p.diag == Diagnostic::ADMINISTRATIVELY_DOWN)
    );
    // After the window A slows to the idle rate (≥ 1 s less jitter) but keeps telling B.
    l.run(done + Duration::from_secs(10));
    let late: Vec<Duration> = l
        .sent
        .iter()
        .filter(|(t, s, _)| *s == 0 && *t > done + ms(1000))
        .map(|(t, ..)| *t)
        .collect();
    assert!(late.windows(2).all(|w| w[1] - w[0] >= ms(750)));
    assert!(!late.is_empty());
    assert_eq!(l.s[1].state(), BfdState::Down, "B stays Down, no flap");
}

#[test]
fn passive_side_waits_for_the_peer() {
    let passive = Config {
        passive: true,
        ..Config::default()
    };
    let mut l = Link::new(passive, passive);
    l.run(Duration::from_secs(10));
    assert!(l.sent.is_empty(), "two passive ends never speak");
    let mut l = Link::new(passive, Config::default());
    l.run(Duration::from_secs(10));
    let first_a = l.sent.iter().find(|(_, s, _)| *s == 0).map(|(t, ..)| *t);
    let first_rx_a = l
        .delivered
        .iter()
        .find(|(_, to, _)| *to == 0)
        .map(|(t, ..)| *t);
    assert_eq!(
        first_a, first_rx_a,
        "the passive side answers at the first packet heard"
    );
    assert_eq!(l.s[0].state(), BfdState::Up);
}

#[test]
fn ttl_is_checked_per_hop_mode() {
    let mut b = Session::new(Config::default(), 2, t0(), 1);
    let pkt = ControlPacket {
        diag: Diagnostic::NONE,
        state: BfdState::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 1,
        your_discriminator: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
        auth: None,
    }
    .emit()
    .expect("emits");
    let mut out = Vec::new();
    assert_eq!(b.receive(t0(), &pkt, 254, &mut out), Err(Discard::Ttl));
    assert_eq!(b.receive(t0(), &pkt, 255, &mut out), Ok(()));
    assert_eq!(b.state(), BfdState::Init);
    let mut m = Session::new(
        Config {
            hops: Hops::Multi { min_ttl: 250 },
            ..Config::default()
        },
        3,
        t0(),
        1,
    );
    assert_eq!(m.receive(t0(), &pkt, 249, &mut out), Err(Discard::Ttl));
    assert_eq!(m.receive(t0(), &pkt, 250, &mut out), Ok(()));
    // Another session's discriminator.
    let mut other = ControlPacket::parse(&pkt).expect("valid");
    other.your_discriminator = 99;
    let other = other.emit().expect("emits");
    assert_eq!(
        b.receive(t0(), &other, 255, &mut out),
        Err(Discard::WrongDiscriminator)
    );
}

#[test]
fn slower_tx_takes_effect_only_after_the_final() {
    let mut l = Link::new(Config::default(), Config::default());
    l.run(Duration::from_secs(10));
    // Lose A's next two packets (a third would be a detection time) so its Poll goes
    // unanswered for a while.
    l.drop_next[0] = 2;
    let slower = Config {
        desired_min_tx: ms(1000),
        ..Config::default()
    };
    l.ev(0, Event::Reconfigure(slower));
    let t = l.now - t0();
    l.run(Duration::from_secs(20));
    let a_sent: Vec<(Duration, ControlPacket)> = l
        .sent
        .iter()
        .filter(|(at, s, p)| *s == 0 && *at >= t && !p.final_)
        .map(|(at, _, p)| (*at, p.clone()))
        .collect();
    // The first two (lost) and the third carry P and the new value, at the old 300 ms rate;
    // the third is answered at once.
    assert!(
        a_sent[..3]
            .iter()
            .all(|(_, p)| p.poll && p.desired_min_tx == 1_000_000)
    );
    assert!(a_sent[..3].windows(2).all(|w| w[1].0 - w[0].0 <= ms(300)));
    // After the Final: no more P and, from the next scheduled packet on, gaps of 750–1000 ms.
    assert!(a_sent[3..].iter().all(|(_, p)| !p.poll));
    let after: Vec<Duration> = a_sent[4..].iter().map(|(at, _)| *at).collect();
    assert!(after.len() > 5);
    assert!(
        after
            .windows(2)
            .all(|w| (ms(750)..=ms(1000)).contains(&(w[1] - w[0])))
    );
    // B's detection time of A grew to 3 s and nothing flapped.
    assert_eq!(l.s[1].detection_time(), Some(ms(3000)));
    assert!(
        l.transitions
            .iter()
            .all(|(_, _, t)| t.to == BfdState::Up || t.to == BfdState::Init)
    );
}

#[test]
fn a_peer_asking_for_no_packets_gets_none() {
    let mut l = Link::new(Config::default(), Config::default());
    l.run(Duration::from_secs(5));
    let n = l.sent.len();
    // B now says Required Min RX 0: A must stop periodic transmission.
    let mut out = Vec::new();
    let p = ControlPacket {
        diag: Diagnostic::NONE,
        state: BfdState::Up,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: l.s[1].local_discriminator(),
        your_discriminator: l.s[0].local_discriminator(),
        desired_min_tx: 300_000,
        required_min_rx: 0,
        required_min_echo_rx: 0,
        auth: None,
    };
    let now = l.now;
    l.s[0]
        .receive(now, &p.emit().expect("emits"), 255, &mut out)
        .expect("accepted");
    assert!(
        l.s[0].poll_timeout().is_some(),
        "the detection timer still runs"
    );
    let before = l.sent.iter().filter(|(_, s, _)| *s == 0).count();
    l.cut[1] = Some(l.now); // B silent from now on, as it asked
    l.run(Duration::from_secs(5) + ms(500));
    let after = l.sent.iter().filter(|(_, s, _)| *s == 0).count();
    assert_eq!(before, after, "A stayed silent");
    assert!(l.sent.len() >= n);
}

fn arb_packet() -> impl Strategy<Value = ControlPacket> {
    (
        0u8..32,
        prop::sample::select(vec![
            BfdState::AdminDown,
            BfdState::Down,
            BfdState::Init,
            BfdState::Up,
        ]),
        any::<[bool; 4]>(),
        1u8..=255,
        1u32..,
        any::<u32>(),
        any::<[u32; 3]>(),
        proptest::option::of((any::<u8>(), prop::collection::vec(any::<u8>(), 0..40))),
    )
        .prop_map(|(diag, state, f, mult, my, your, iv, auth)| ControlPacket {
            diag: Diagnostic::new(diag),
            state,
            poll: f[0],
            final_: f[1],
            control_plane_independent: f[2],
            demand: f[3],
            detect_mult: mult,
            my_discriminator: my,
            your_discriminator: if matches!(state, BfdState::Up | BfdState::Init) {
                your.max(1)
            } else {
                your
            },
            desired_min_tx: iv[0],
            required_min_rx: iv[1],
            required_min_echo_rx: iv[2],
            auth: auth.map(
                |(auth_type, data)| ferrolb_speaker_core::bfd::packet::AuthSection {
                    auth_type,
                    data,
                },
            ),
        })
}

proptest! {
    #[test]
    fn emit_then_parse_is_identity(p in arb_packet()) {
        let bytes = p.emit().expect("emits");
        prop_assert_eq!(ControlPacket::parse(&bytes), Ok(p));
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = ControlPacket::parse(&bytes);
    }

    /// Arbitrary packets, TTLs and events at arbitrary times: no panic, and what the session
    /// sends always parses.
    #[test]
    fn sessions_never_panic(
        steps in prop::collection::vec((0u64..2_000_000, 0u8..6, arb_packet(), any::<u8>()), 1..60),
        passive in any::<bool>(),
        mult in 1u8..5,
    ) {
        let c = Config { passive, detect_mult: mult, ..Config::default() };
        let mut s = Session::new(c, 5, t0(), 3);
        let mut now = t0();
        for (dt, kind, p, ttl) in steps {
            now += Duration::from_micros(dt);
            let mut bytes = p.emit().expect("emits");
            if kind == 0 { bytes.truncate(usize::from(ttl) % 30); }
            let actions = match kind {
                0 | 1 => s.handle(now, Event::Received { bytes: &bytes, ttl: if kind == 1 { 255 } else { ttl } }),
                2 => s.handle(now, Event::Timeout),
                3 => s.handle(now, Event::AdminDown(Diagnostic::ADMINISTRATIVELY_DOWN)),
                4 => s.handle(now, Event::Enable),
                _ => s.handle(now, Event::Reconfigure(Config {
                    desired_min_tx: Duration::from_micros(u64::from(p.desired_min_tx)),
                    required_min_rx: Duration::from_micros(u64::from(p.required_min_rx)),
                    detect_mult: p.detect_mult,
                    passive,
                    hops: Hops::Single,
                })),
            };
            for a in actions {
                if let Action::Send(b) = a {
                    prop_assert!(ControlPacket::parse(&b).is_ok());
                }
            }
        }
    }
}
