//! The legacy (version 2, all-to-all heartbeat) protocol of the membership state machine, on a
//! virtual clock: a base `Instant` plus millisecond offsets, no sleeping. A small simulator
//! delivers encoded heartbeats between speakers through links that can be blocked or delayed,
//! and ticks each speaker when its heartbeat is due, as the shell does.
//!
//! These tests pin [`Protocol::Legacy`] (what `Config::new` selects and what speakers before
//! SWIM ran): it is still what a SWIM speaker applies to peers that speak version 2 during a
//! rolling upgrade, and what the shell runs until it feeds `on_datagram`. The SWIM protocol's
//! tests with the same intents are in `membership_swim.rs`.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ferrolb_speaker_core::election;
use ferrolb_speaker_core::membership::{
    Action, Config, DownReason, Event, Heartbeat, MAX_CLAIMS, Membership, Message, Protocol,
};

const DEAD_AFTER: u64 = 200;
const INTERVAL: u64 = 25;

/// The legacy protocol with the timings these tests were written for (25 ms, 200 ms).
fn legacy() -> Config {
    let c = Config::new(
        Duration::from_millis(INTERVAL),
        Duration::from_millis(DEAD_AFTER),
    );
    assert_eq!(c.protocol, Protocol::Legacy);
    c
}

fn name(i: usize) -> String {
    format!("node-{i}")
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + i as u8)), 7946)
}

fn index_of(a: SocketAddr) -> usize {
    match a.ip() {
        IpAddr::V4(v4) => usize::from(v4.octets()[3] - 10),
        IpAddr::V6(_) => usize::MAX,
    }
}

struct Node {
    m: Membership,
    up: bool,
    /// Whether this node runs the election and claims what it owns.
    elect: bool,
}

struct Sim {
    size: usize,
    t0: Instant,
    now: u64,
    nodes: Vec<Node>,
    blocked: BTreeSet<(usize, usize)>,
    delay: u64,
    queue: VecDeque<(u64, usize, usize, Vec<u8>)>,
    log: Vec<(u64, usize, Event)>,
    ips: Vec<IpAddr>,
}

impl Sim {
    fn new(n: usize) -> Self {
        let t0 = Instant::now();
        let mut sim = Sim {
            size: n,
            t0,
            now: 0,
            nodes: Vec::new(),
            blocked: BTreeSet::new(),
            delay: 1,
            queue: VecDeque::new(),
            log: Vec::new(),
            ips: (1..=30)
                .map(|d| IpAddr::V4(Ipv4Addr::new(203, 0, 113, d)))
                .collect(),
        };
        for i in 0..n {
            let node = sim.fresh(i, 1_000 + i as u64);
            sim.nodes.push(node);
        }
        sim
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn fresh(&self, i: usize, incarnation: u64) -> Node {
        let mut m = Membership::new(name(i), incarnation, legacy(), self.at(self.now));
        let peers = (0..self.size).map(|j| (name(j), addr(j))).collect();
        let _ = m.set_peers(peers);
        Node {
            m,
            up: true,
            elect: true,
        }
    }

    fn claims_for(&self, i: usize, now: Instant) -> Vec<IpAddr> {
        let node = &self.nodes[i];
        let m = &node.m;
        if !node.elect || !m.settled(now) {
            return Vec::new();
        }
        let alive = m.alive();
        let me = name(i);
        self.ips
            .iter()
            .copied()
            .filter(|ip| {
                election::owner(*ip, &alive, |n| m.claims(n).contains(ip)) == Some(me.as_str())
            })
            .collect()
    }

    fn run_until(&mut self, end: u64) {
        assert!(end <= 60_000, "bounded simulation");
        while self.now < end {
            self.now += 1;
            let now = self.at(self.now);
            while self.queue.front().is_some_and(|q| q.0 <= self.now) {
                let Some((_, from, to, bytes)) = self.queue.pop_front() else {
                    break;
                };
                if !self.nodes[to].up {
                    continue;
                }
                let msg = Message::decode(&bytes).expect("speakers emit valid messages");
                for e in self.nodes[to].m.on_message(addr(from), msg, now) {
                    self.log.push((self.now, to, e));
                }
            }
            for i in 0..self.nodes.len() {
                if !self.nodes[i].up || now < self.nodes[i].m.next_timeout() {
                    continue;
                }
                let claims = self.claims_for(i, now);
                for action in self.nodes[i].m.tick(now, &claims) {
                    self.handle(i, action);
                }
            }
        }
    }

    fn handle(&mut self, from: usize, action: Action) {
        match action {
            Action::Send { to, bytes } => {
                let to = index_of(to);
                if to < self.nodes.len() && !self.blocked.contains(&(from, to)) {
                    self.queue
                        .push_back((self.now + self.delay, from, to, bytes));
                }
            }
            Action::Event(e) => self.log.push((self.now, from, e)),
        }
    }

    fn events_at(&self, node: usize) -> Vec<(u64, Event)> {
        self.log
            .iter()
            .filter(|(_, n, _)| *n == node)
            .map(|(t, _, e)| (*t, e.clone()))
            .collect()
    }

    fn down_time(&self, observer: usize, peer: usize) -> Option<(u64, DownReason)> {
        self.log.iter().find_map(|(t, n, e)| match e {
            Event::Down(p, r) if *n == observer && *p == name(peer) => Some((*t, *r)),
            _ => None,
        })
    }

    fn all_names(&self) -> BTreeSet<String> {
        (0..self.nodes.len()).map(name).collect()
    }

    /// Every IP is claimed by exactly one up node.
    fn assert_single_owner(&self) {
        for ip in &self.ips {
            let claimants: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].up && self.nodes[i].m.claims(&name(i)).contains(ip))
                .collect();
            assert_eq!(
                claimants.len(),
                1,
                "{ip} claimed by {claimants:?} at {}",
                self.now
            );
        }
    }
}

#[test]
fn cluster_converges_and_settles_before_grace() {
    let mut sim = Sim::new(3);
    sim.run_until(60);
    for i in 0..3 {
        assert_eq!(sim.nodes[i].m.alive(), sim.all_names());
        // Every peer was heard long before join_grace (400 ms).
        assert!(sim.nodes[i].m.settled(sim.at(60)));
    }
    sim.run_until(300);
    sim.assert_single_owner();
    let per_node: Vec<usize> = (0..3)
        .map(|i| sim.nodes[i].m.claims(&name(i)).len())
        .collect();
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    // Peers see each other's claims as the claimants do.
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(
                sim.nodes[i].m.claims(&name(j)),
                sim.nodes[j].m.claims(&name(j))
            );
        }
    }
}

#[test]
fn death_detected_within_dead_after_plus_interval() {
    let mut sim = Sim::new(3);
    sim.run_until(500);
    let killed_at = sim.now;
    sim.nodes[2].up = false;
    sim.run_until(1_500);
    for observer in 0..2 {
        let (t, reason) = sim.down_time(observer, 2).expect("node-2 declared dead");
        assert_eq!(reason, DownReason::Timeout);
        let latency = t - killed_at;
        // Its last heartbeat left at most one interval before the kill.
        assert!(latency + INTERVAL >= DEAD_AFTER, "too early: {latency} ms");
        assert!(latency <= DEAD_AFTER + INTERVAL, "too late: {latency} ms");
        assert!(!sim.nodes[observer].m.alive().contains(&name(2)));
        assert!(sim.nodes[observer].m.claims(&name(2)).is_empty());
    }
    // Its IPs moved to exactly one survivor each.
    sim.assert_single_owner();
    assert_eq!(
        (0..2)
            .map(|i| sim.nodes[i].m.claims(&name(i)).len())
            .sum::<usize>(),
        sim.ips.len()
    );
}

#[test]
fn late_heartbeats_within_dead_after_are_not_death() {
    // Precise boundary, no simulator: heartbeats 199 ms apart never kill the peer.
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut m = Membership::new("node-0", 1, legacy(), at(0));
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let hb = |seq: u64| {
        Message::Heartbeat(Heartbeat {
            from: name(1),
            incarnation: 7,
            seq,
            uptime_ms: 0,
            heard: vec![],
            claims: vec![],
            unable: vec![],
        })
    };
    assert_eq!(
        m.on_message(addr(1), hb(1), at(0)),
        vec![Event::Up(name(1))]
    );
    for t in 1..=199 {
        assert!(downs(&m.tick(at(t), &[])).is_empty(), "false death at {t}");
    }
    assert!(m.on_message(addr(1), hb(2), at(199)).is_empty());
    for t in 200..=398 {
        assert!(downs(&m.tick(at(t), &[])).is_empty(), "false death at {t}");
    }
    // ...and the 200th silent millisecond does.
    assert_eq!(
        downs(&m.tick(at(399), &[])),
        vec![Event::Down(name(1), DownReason::Timeout)]
    );
    // A heartbeat of the same incarnation brings it back.
    assert_eq!(
        m.on_message(addr(1), hb(3), at(400)),
        vec![Event::Up(name(1))]
    );

    // In the simulator: a 150 ms stall of one speaker (e.g. CPU starvation) and a link that
    // adds 150 ms of latency both pass without a fail-over.
    let mut sim = Sim::new(3);
    sim.run_until(300);
    sim.nodes[2].up = false;
    sim.run_until(450);
    sim.nodes[2].up = true;
    sim.run_until(800);
    sim.delay = 150;
    sim.run_until(1_500);
    assert!(
        sim.log
            .iter()
            .all(|(_, _, e)| !matches!(e, Event::Down(..))),
        "{:?}",
        sim.log
    );
    sim.assert_single_owner();
}

fn downs(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e @ Event::Down(..)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn indirect_evidence_keeps_peer_alive_when_one_path_is_silent() {
    let mut sim = Sim::new(3);
    sim.run_until(300);
    sim.blocked.insert((2, 0)); // node-0 stops hearing node-2; node-1 still does.
    sim.run_until(1_300);
    assert_eq!(sim.down_time(0, 2), None, "{:?}", sim.events_at(0));
    assert!(sim.nodes[0].m.alive().contains(&name(2)));
    sim.assert_single_owner();

    // When node-2 really dies, node-0 still detects it in time: the vouching ages too.
    let killed_at = sim.now;
    sim.nodes[2].up = false;
    sim.run_until(2_300);
    let (t, reason) = sim.down_time(0, 2).expect("node-2 declared dead");
    assert_eq!(reason, DownReason::Timeout);
    assert!(
        t - killed_at <= DEAD_AFTER + 2 * INTERVAL,
        "{} ms",
        t - killed_at
    );
}

#[test]
fn without_a_witness_a_silent_path_is_death() {
    // The control for the test above: the same silent path with no third speaker to vouch.
    let mut sim = Sim::new(2);
    sim.run_until(300);
    sim.blocked.insert((1, 0));
    sim.run_until(800);
    assert_eq!(sim.down_time(0, 1).map(|d| d.1), Some(DownReason::Timeout));
}

#[test]
fn leave_is_immediate_and_not_undone_by_reports() {
    let mut sim = Sim::new(3);
    sim.run_until(300);
    let left_at = sim.now;
    let actions = sim.nodes[2].m.leave();
    assert_eq!(actions.len(), 2);
    for a in actions {
        sim.handle(2, a);
    }
    let later = sim.at(sim.now + 100);
    assert!(sim.nodes[2].m.tick(later, &[]).is_empty());
    assert!(!sim.nodes[2].m.alive().contains(&name(2)));
    assert!(!sim.nodes[2].m.settled(sim.at(sim.now)));
    sim.nodes[2].up = false;
    sim.run_until(left_at + 2);
    for observer in 0..2 {
        assert_eq!(
            sim.down_time(observer, 2),
            Some((left_at + 1, DownReason::Left))
        );
    }
    // node-1's heartbeats still list node-2 as recently heard for a while; that must not
    // resurrect it at node-0.
    sim.run_until(left_at + 150);
    assert!(!sim.nodes[0].m.alive().contains(&name(2)));
    let ups_after: Vec<_> = sim
        .log
        .iter()
        .filter(|(t, _, e)| *t > left_at && matches!(e, Event::Up(_)))
        .collect();
    assert!(ups_after.is_empty(), "{ups_after:?}");
    sim.run_until(left_at + 100 + 2 * INTERVAL);
    sim.assert_single_owner();
}

#[test]
fn late_heartbeat_after_leave_is_stale() {
    let t0 = Instant::now();
    let mut m = Membership::new("node-0", 1, legacy(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let hb = |seq| {
        Message::Heartbeat(Heartbeat {
            from: name(1),
            incarnation: 5,
            seq,
            uptime_ms: 0,
            heard: vec![],
            claims: vec![],
            unable: vec![],
        })
    };
    let _ = m.on_message(addr(1), hb(1), t0);
    let leave = Message::Leave {
        from: name(1),
        incarnation: 5,
    };
    assert_eq!(
        m.on_message(addr(1), leave, t0),
        vec![Event::Down(name(1), DownReason::Left)]
    );
    assert!(m.on_message(addr(1), hb(2), t0).is_empty());
    assert_eq!(m.stats().stale, 1);
    assert!(!m.alive().contains(&name(1)));
}

#[test]
fn restart_is_told_by_incarnation_and_does_not_snatch() {
    let mut sim = Sim::new(3);
    sim.run_until(400);
    sim.assert_single_owner();
    let before: Vec<IpAddr> = sim.nodes[2].m.claims(&name(2)).to_vec();
    assert!(!before.is_empty());

    // node-2 crashes and is back 50 ms later with a new incarnation, before anyone times out.
    sim.nodes[2].up = false;
    sim.run_until(sim.now + 50);
    let restart_at = sim.now;
    sim.nodes[2] = sim.fresh(2, 5_000);
    // Hold the new instance's election back so that its claims stay empty for a moment.
    sim.nodes[2].elect = false;
    sim.run_until(restart_at + 10);
    for observer in 0..2 {
        let ev = sim.events_at(observer);
        let tail: Vec<&Event> = ev
            .iter()
            .filter(|(t, _)| *t > restart_at)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(
            tail,
            vec![
                &Event::Down(name(2), DownReason::Restarted),
                &Event::Up(name(2))
            ]
        );
        // The new instance's claims (none yet) replaced the old ones.
        assert!(
            sim.nodes[observer].m.claims(&name(2)).is_empty(),
            "{:?} {:?}",
            sim.nodes[observer].m.claims(&name(2)),
            sim.log
        );
    }
    // The old instance's IPs became unclaimed; each ends up with exactly one node.
    sim.nodes[2].elect = true;
    sim.run_until(restart_at + 1_000);
    sim.assert_single_owner();

    // A late packet of the old incarnation is ignored while the new one is alive.
    let stale = Message::Heartbeat(Heartbeat {
        from: name(2),
        incarnation: 1_002,
        seq: 1_000_000,
        uptime_ms: 0,
        heard: vec![],
        claims: before.clone(),
        unable: vec![],
    });
    let stale_before = sim.nodes[0].m.stats().stale;
    let now = sim.at(sim.now);
    assert!(sim.nodes[0].m.on_message(addr(2), stale, now).is_empty());
    assert_eq!(sim.nodes[0].m.stats().stale, stale_before + 1);
}

#[test]
fn fresh_speaker_does_not_snatch_from_claimants() {
    // node-0 and node-1 run alone long enough to own everything; then node-2 joins. Whatever it
    // ranks best for, it must end up owning nothing, because every IP is already claimed.
    let mut sim = Sim::new(3);
    sim.nodes[2].up = false;
    sim.run_until(1_000);
    sim.nodes[2] = sim.fresh(2, 9_000);
    sim.run_until(2_000);
    sim.assert_single_owner();
    assert!(sim.nodes[2].m.claims(&name(2)).is_empty());
    assert!(sim.nodes[2].m.alive().len() == 3);
}

#[test]
fn settled_waits_for_peers_or_grace() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let m = Membership::new("node-0", 1, legacy(), at(0));
    // No peer list yet: not settled until the grace (2 * 200 ms) passes.
    assert!(!m.settled(at(0)));
    assert!(!m.settled(at(399)));
    assert!(m.settled(at(400)));

    let mut m = Membership::new("node-0", 1, legacy(), at(0));
    let _ = m.set_peers(vec![
        (name(1), addr(1)),
        (name(2), addr(2)),
        (name(0), addr(0)),
    ]);
    assert!(!m.settled(at(10)));
    let _ = m.on_message(
        addr(1),
        Message::Heartbeat(Heartbeat {
            from: name(1),
            incarnation: 1,
            seq: 1,
            uptime_ms: 1,
            heard: vec![],
            claims: vec![],
            unable: vec![],
        }),
        at(10),
    );
    assert!(!m.settled(at(20)));
    // A Leave counts as heard: that peer is known not to announce.
    let _ = m.on_message(
        addr(2),
        Message::Leave {
            from: name(2),
            incarnation: 1,
        },
        at(20),
    );
    assert!(m.settled(at(20)));
}

#[test]
fn unknown_and_self_senders_are_ignored_and_counted() {
    let t0 = Instant::now();
    let mut m = Membership::new("node-0", 1, legacy(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let hb = |from: String| {
        Message::Heartbeat(Heartbeat {
            from,
            incarnation: 1,
            seq: 1,
            uptime_ms: 1,
            heard: vec![],
            claims: vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))],
            unable: vec![],
        })
    };
    assert!(m.on_message(addr(9), hb("intruder".into()), t0).is_empty());
    assert!(m.on_message(addr(0), hb(name(0)), t0).is_empty());
    assert_eq!((m.stats().unknown_sender, m.stats().from_self), (1, 1));
    assert_eq!(m.alive().len(), 1);
    assert!(m.claims("intruder").is_empty());
    // A known name from an unexpected address is accepted but counted.
    assert_eq!(
        m.on_message(addr(5), hb(name(1)), t0),
        vec![Event::Up(name(1))]
    );
    assert_eq!(m.stats().unexpected_addr, 1);
}

#[test]
fn removed_peer_is_reported_down() {
    let t0 = Instant::now();
    let mut m = Membership::new("node-0", 1, legacy(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1)), (name(2), addr(2))]);
    let hb = Message::Heartbeat(Heartbeat {
        from: name(1),
        incarnation: 1,
        seq: 1,
        uptime_ms: 1,
        heard: vec![],
        claims: vec![],
        unable: vec![],
    });
    let _ = m.on_message(addr(1), hb, t0);
    assert_eq!(
        m.set_peers(vec![(name(2), addr(2))]),
        vec![Event::Down(name(1), DownReason::Removed)]
    );
    assert!(!m.alive().contains(&name(1)));
    // Heartbeats now go to node-2 only.
    let sends: Vec<SocketAddr> = m
        .tick(t0, &[])
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { to, .. } => Some(to),
            Action::Event(_) => None,
        })
        .collect();
    assert_eq!(sends, vec![addr(2)]);
}

#[test]
fn heartbeat_cadence_and_content() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut m = Membership::new("node-0", 77, legacy(), at(0));
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let claims = [IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))];
    let mut sent = Vec::new();
    for t in 0..100 {
        for a in m.tick(at(t), &claims) {
            if let Action::Send { bytes, .. } = a {
                sent.push((t, Message::decode(&bytes).expect("valid")));
            }
        }
    }
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![0, 25, 50, 75]);
    let Some((_, Message::Heartbeat(last))) = sent.last() else {
        panic!("no heartbeat");
    };
    assert_eq!((last.incarnation, last.seq, last.uptime_ms), (77, 4, 75));
    assert_eq!(last.claims, claims);
    // A late shell does not get a burst of catch-up heartbeats.
    let burst = m.tick(at(500), &claims).len() + m.tick(at(501), &claims).len();
    assert_eq!(burst, 1);
    assert_eq!(m.next_timeout(), at(525));
}

#[test]
fn too_many_claims_are_reported_once() {
    let t0 = Instant::now();
    let mut m = Membership::new("node-0", 1, legacy(), t0);
    let claims: Vec<IpAddr> = (0..MAX_CLAIMS as u32 + 5)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)))
        .collect();
    let ev = |a: Vec<Action>| -> Vec<Event> {
        a.into_iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e),
                Action::Send { .. } => None,
            })
            .collect()
    };
    assert_eq!(
        ev(m.tick(t0, &claims)),
        vec![Event::ClaimsTruncated {
            kept: MAX_CLAIMS,
            dropped: 5
        }]
    );
    assert!(ev(m.tick(t0, &claims)).is_empty());
    assert_eq!(m.claims("node-0").len(), MAX_CLAIMS);
}

#[test]
fn unable_sets_travel_with_heartbeats_and_die_with_the_peer() {
    let mut sim = Sim::new(3);
    let unable = vec![
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200)),
        "2001:db8::200".parse().expect("literal"),
    ];
    sim.nodes[1].m.set_unable(unable.clone());
    sim.run_until(300);
    for observer in [0, 2] {
        assert_eq!(sim.nodes[observer].m.unable(&name(1)), unable.as_slice());
        assert!(sim.nodes[observer].m.unable(&name(2)).is_empty());
    }
    assert_eq!(sim.nodes[1].m.unable(&name(1)), unable.as_slice());
    // Recovered: the next heartbeat clears it.
    sim.nodes[1].m.set_unable(vec![]);
    sim.run_until(400);
    assert!(sim.nodes[0].m.unable(&name(1)).is_empty());
    // Dead: its report no longer counts.
    sim.nodes[1].m.set_unable(unable.clone());
    sim.run_until(500);
    assert_eq!(sim.nodes[0].m.unable(&name(1)), unable.as_slice());
    sim.nodes[1].up = false;
    sim.run_until(1_000);
    assert!(!sim.nodes[0].m.alive().contains(&name(1)));
    assert!(sim.nodes[0].m.unable(&name(1)).is_empty());
    // Restarted: the new instance's (empty) report replaces the old one.
    sim.nodes[1] = sim.fresh(1, 7_000);
    sim.run_until(1_200);
    assert!(sim.nodes[0].m.alive().contains(&name(1)));
    assert!(sim.nodes[0].m.unable(&name(1)).is_empty());
    // Left: gone at once.
    sim.nodes[2].m.set_unable(unable.clone());
    sim.run_until(1_300);
    assert_eq!(sim.nodes[0].m.unable(&name(2)), unable.as_slice());
    for a in sim.nodes[2].m.leave() {
        sim.handle(2, a);
    }
    sim.run_until(1_310);
    assert!(sim.nodes[0].m.unable(&name(2)).is_empty());
}

#[test]
fn unable_ips_share_the_claims_budget_and_are_reported_once() {
    let t0 = Instant::now();
    let mut m = Membership::new("node-0", 1, legacy(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i));
    let claims: Vec<IpAddr> = (0..1000).map(ip).collect();
    m.set_unable((1000..1100).map(ip).collect());
    let split = |a: Vec<Action>| -> (Vec<Event>, Vec<Heartbeat>) {
        let mut events = Vec::new();
        let mut sent = Vec::new();
        for a in a {
            match a {
                Action::Event(e) => events.push(e),
                Action::Send { bytes, .. } => match Message::decode(&bytes) {
                    Ok(Message::Heartbeat(h)) => sent.push(h),
                    other => panic!("not a heartbeat: {other:?}"),
                },
            }
        }
        (events, sent)
    };
    let (events, sent) = split(m.tick(t0, &claims));
    assert_eq!(
        events,
        vec![Event::UnableTruncated {
            kept: MAX_CLAIMS - 1000,
            dropped: 1100 - MAX_CLAIMS
        }]
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].claims.len(), 1000);
    assert_eq!(
        sent[0].unable,
        (1000..MAX_CLAIMS as u32).map(ip).collect::<Vec<_>>()
    );
    // Same numbers: not reported again. Fewer claims: everything fits, silently.
    let (events, _) = split(m.tick(t0 + Duration::from_millis(25), &claims));
    assert!(events.is_empty());
    let (events, sent) = split(m.tick(t0 + Duration::from_millis(50), &claims[..900]));
    assert!(events.is_empty());
    assert_eq!(sent[0].unable.len(), 100);
}
