//! The SWIM protocol (version 3) of the membership state machine, in the deterministic
//! simulator (`membership::sim`: virtual time, seeded randomness) and with crafted packets.
//!
//! Each legacy test in `membership.rs` has a counterpart here with the same intent; on top,
//! property tests: no false death without loss or stalls beyond the bounds, every death detected
//! within the bound, claims converge, and the version 3 codec round-trips and never panics.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{packet, sends};
use ferrolb_speaker_core::membership::codec::{self, Body, Datagram, Item, Packet, Status};
use ferrolb_speaker_core::membership::sim::{self, Claims, Life, Net, Sim, addr, name};
use ferrolb_speaker_core::membership::{
    Action, Config, DownReason, Event, MAX_STATE_IPS, Membership, Protocol,
};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The longest a death may take to reach every member with default timings and no loss: the
/// ring predecessor probes within two periods (50 ms), the probe fails 25 ms later, an accuser
/// without confirmation waits 400 ms, then one direct notification (< 2 ms here).
const DETECT_BOUND: Duration = Duration::from_millis(50 + 25 + 400 + 5);

fn ips(n: u8) -> Vec<IpAddr> {
    (1..=n)
        .map(|d| IpAddr::V4(Ipv4Addr::new(203, 0, 113, d)))
        .collect()
}

fn sim_with(n: usize, seed: u64) -> Sim {
    Sim::new(n, Config::default(), Net::default(), seed, Instant::now())
}

fn downs_of(s: &Sim, subject: usize) -> Vec<(Duration, usize, DownReason)> {
    s.log()
        .iter()
        .filter_map(|l| match &l.event {
            Event::Down(p, r) if *p == name(subject) => Some((l.at, l.node, *r)),
            _ => None,
        })
        .collect()
}

fn any_timeout(s: &Sim) -> Vec<(Duration, usize, String)> {
    s.log()
        .iter()
        .filter_map(|l| match &l.event {
            Event::Down(p, DownReason::Timeout) => Some((l.at, l.node, p.clone())),
            _ => None,
        })
        .collect()
}

/// Every IP is claimed by exactly one running member.
fn assert_single_owner(s: &Sim, ips: &[IpAddr]) {
    for ip in ips {
        let claimants: Vec<usize> = (0..s.len())
            .filter(|&i| s.life(i) != Life::Down && s.claims_of(i).contains(ip))
            .collect();
        assert_eq!(
            claimants.len(),
            1,
            "{ip} claimed by {claimants:?} at {:?}",
            s.now()
        );
    }
}

fn all_names(n: usize) -> BTreeSet<String> {
    (0..n).map(name).collect()
}

#[test]
fn cluster_converges_settles_and_elects_one_owner_per_ip() {
    for n in [3, 25] {
        let mut s = sim_with(n, 7);
        let list = ips(30);
        s.claims = Claims::Elect(list.clone());
        s.run_until(ms(300));
        let now = s.at(s.now());
        for i in 0..n {
            assert_eq!(s.member(i).alive(), all_names(n), "member {i} of {n}");
            // Every record was learned long before the join grace (1 s).
            assert!(s.member(i).settled(now), "member {i} of {n} not settled");
        }
        s.run_until(ms(1_500));
        assert_single_owner(&s, &list);
        let owned: usize = (0..n).map(|i| s.claims_of(i).len()).sum();
        assert_eq!(owned, list.len());
        // Every member sees each member's claims as the claimant advertises them.
        for i in 0..n {
            for j in 0..n {
                let mut seen = s.member(i).claims(&name(j)).to_vec();
                let mut own = s.member(j).claims(&name(j)).to_vec();
                seen.sort();
                own.sort();
                assert_eq!(seen, own, "{i} sees {j}");
            }
        }
        assert!(any_timeout(&s).is_empty());
        assert_eq!(s.spins(), 0);
    }
}

#[test]
fn death_is_detected_within_the_bound_and_its_ips_move_once() {
    for (n, seed) in [(2, 1), (3, 2), (10, 3), (30, 4)] {
        let mut s = sim_with(n, seed);
        let list = ips(20);
        s.claims = Claims::Elect(list.clone());
        s.run_until(ms(2_000));
        let victim = n - 1;
        let killed = s.now();
        s.kill(victim);
        s.run_until(killed + ms(1_500));
        for o in 0..n - 1 {
            let d = downs_of(&s, victim);
            let (at, _, reason) = d
                .iter()
                .find(|(_, node, _)| *node == o)
                .copied()
                .unwrap_or_else(|| panic!("{o} of {n} never declared {victim} dead"));
            assert_eq!(reason, DownReason::Timeout);
            let latency = at - killed;
            // Nobody may declare death sooner than probe timeout + minimum suspicion after
            // the unanswered ping (which may have left up to one latency before the crash).
            let floor = Config::default().declare_after() - ms(2);
            assert!(latency >= floor, "{o} of {n}: too early, {latency:?}");
            assert!(latency <= DETECT_BOUND, "{o} of {n}: too late, {latency:?}");
            assert!(!s.member(o).alive().contains(&name(victim)));
            assert!(s.member(o).claims(&name(victim)).is_empty());
        }
        assert_single_owner(&s, &list);
        assert_eq!(s.spins(), 0);
    }
}

#[test]
fn stalls_up_to_300_ms_and_slow_links_are_not_death() {
    let mut s = sim_with(10, 11);
    let list = ips(30);
    s.claims = Claims::Elect(list.clone());
    s.run_until(ms(1_500));
    // Member 4 stalls 300 ms, runs 60..260 ms, stalls again, 15 times; member 7 too, offset.
    let mut t = s.now();
    for k in 0..15u64 {
        s.run_until(t);
        s.stall(4, ms(300));
        s.run_until(t + ms(150));
        s.stall(7, ms(300));
        t += ms(360 + 13 * (k % 16));
    }
    s.run_until(t + ms(1_000));
    assert!(any_timeout(&s).is_empty(), "{:?}", any_timeout(&s));
    assert_single_owner(&s, &list);
    // Refutations happened (the stalls were seen as suspicions): the test is not vacuous.
    assert!(s.member(4).swim_stats().refutations > 0);

    // A network-wide latency spike of 100 ms one way for a second: probes fail, suspicions
    // follow, refutations arrive in time.
    s.net.latency = ms(100);
    let spike = s.now();
    s.run_until(spike + ms(1_000));
    s.net.latency = Net::default().latency;
    s.run_until(spike + ms(3_000));
    assert!(any_timeout(&s).is_empty(), "{:?}", any_timeout(&s));
    assert_eq!(s.spins(), 0);
}

#[test]
fn local_health_rises_when_this_member_is_slow_and_recovers() {
    let mut s = sim_with(5, 13);
    s.run_until(ms(1_000));
    assert_eq!(s.member(0).health(), 0);
    let before = s.member(0).swim_stats();
    // Stalled twice for 300 ms: its ticks come late and it has to refute suspicions.
    s.stall(0, ms(300));
    s.run_for(ms(320));
    let stalled = s.member(0).health();
    s.stall(0, ms(300));
    s.run_for(ms(301));
    assert!(
        s.member(0).health() >= stalled.max(1),
        "{}",
        s.member(0).health()
    );
    let after = s.member(0).swim_stats();
    assert!(after.late_ticks > before.late_ticks);
    assert!(after.refutations > before.refutations);
    // While unhealthy it probes less often: timeouts and period scale by 1 + score.
    let probes = after.probes;
    s.run_for(ms(100));
    assert!(s.member(0).swim_stats().probes - probes < 4);
    // Healthy again, every successful probe lowers the score back to zero.
    s.run_for(ms(3_000));
    assert_eq!(s.member(0).health(), 0);
    assert!(any_timeout(&s).is_empty());
}

#[test]
fn indirect_probes_keep_a_member_alive_when_one_path_is_silent() {
    let mut s = sim_with(3, 5);
    s.run_until(ms(500));
    // Member 0 stops hearing member 2; member 1 still does.
    s.blocked.insert((2, 0));
    let blocked_at = s.now();
    s.run_until(blocked_at + ms(2_000));
    assert!(downs_of(&s, 2).is_empty(), "{:?}", downs_of(&s, 2));
    assert!(s.member(0).alive().contains(&name(2)));
    // Not even suspected: the helper's relayed Ack answers every probe.
    assert!(s.member(0).swim_stats().indirect > 0);
    assert_eq!(s.member(0).swim_stats().accusations, 0);
    // A real death is still found through the helper.
    let killed = s.now();
    s.kill(2);
    s.run_until(killed + ms(1_000));
    let d = downs_of(&s, 2);
    let at0 = d
        .iter()
        .find(|(_, o, _)| *o == 0)
        .map(|(t, _, _)| *t - killed);
    assert!(at0.is_some_and(|l| l <= DETECT_BOUND), "{at0:?}");
}

#[test]
fn without_a_witness_a_silent_path_is_death() {
    // The control: the same silent path with nobody to ask.
    let mut s = sim_with(2, 5);
    s.run_until(ms(500));
    s.blocked.insert((1, 0));
    s.run_until(ms(1_500));
    let d = downs_of(&s, 1);
    assert_eq!(
        d.first().map(|x| (x.1, x.2)),
        Some((0, DownReason::Timeout))
    );
}

#[test]
fn leave_is_immediate_and_not_undone() {
    let mut s = sim_with(3, 9);
    let list = ips(12);
    s.claims = Claims::Elect(list.clone());
    s.run_until(ms(1_000));
    let left_at = s.now();
    s.leave(2);
    let later = s.at(left_at + ms(100));
    assert!(s.member_mut(2).tick(later, &[]).is_empty());
    assert!(!s.member(2).alive().contains(&name(2)));
    assert!(!s.member(2).settled(later));
    s.run_until(left_at + ms(3));
    for o in 0..2 {
        let d = downs_of(&s, 2);
        let seen = d.iter().find(|(_, n, _)| *n == o).copied();
        assert!(
            seen.is_some_and(|(t, _, r)| r == DownReason::Left && t - left_at <= ms(2)),
            "{o}: {seen:?}"
        );
    }
    s.run_until(left_at + ms(1_000));
    assert!(!s.member(0).alive().contains(&name(2)));
    let ups: Vec<_> = s
        .log()
        .iter()
        .filter(|l| l.at > left_at && l.event == Event::Up(name(2)))
        .collect();
    assert!(ups.is_empty(), "{ups:?}");
    // The leaver (still running for its hand-over) saw its IPs taken over.
    let taken: BTreeSet<IpAddr> = (0..2)
        .flat_map(|i| s.member(2).claims(&name(i)).to_vec())
        .collect();
    assert_eq!(taken.len(), list.len());
}

fn events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.clone()),
            Action::Send { .. } => None,
        })
        .collect()
}

fn pings(actions: &[Action]) -> Vec<u32> {
    sends(actions)
        .into_iter()
        .filter_map(|(_, p)| match p.body {
            Body::Ping { seq } => Some(seq),
            _ => None,
        })
        .collect()
}

/// A probe due within `probe_slack` starts when the shell ticks early (it is awake for a
/// datagram anyway), and the schedule is kept: the next probe is due one interval after the
/// planned time, not after the early start, so probing is no more frequent than without slack.
#[test]
fn a_probe_due_within_the_slack_starts_early_and_keeps_the_schedule() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut m = Membership::new(name(0), 1, cfg, t0);
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let hello = packet(&name(1), 5, 0, Body::Ping { seq: 1 }, vec![]);
    m.on_datagram(addr(1), &hello, t0).expect("valid");
    let ack = |seq| packet(&name(1), 5, 0, Body::Ack { seq }, vec![]);

    let t = m.next_timeout().max(t0);
    let first = pings(&m.tick(t, &[]));
    assert_eq!(first.len(), 1, "the first probe");
    m.on_datagram(addr(1), &ack(first[0]), t + MS)
        .expect("valid");
    let due = t + cfg.interval;

    let early = due - cfg.probe_slack - MS;
    assert!(
        !m.tick_due(early),
        "a shell ticks early only within the slack"
    );
    assert!(
        pings(&m.tick(early, &[])).is_empty(),
        "earlier than the slack"
    );
    let within = due - cfg.probe_slack + MS;
    assert!(m.tick_due(within));
    let second = pings(&m.tick(within, &[]));
    assert_eq!(second.len(), 1, "within the slack: the probe starts now");
    m.on_datagram(addr(1), &ack(second[0]), within + MS)
        .expect("valid");

    let next_due = due + cfg.interval;
    assert!(
        pings(&m.tick(next_due - cfg.probe_slack - MS, &[])).is_empty(),
        "the next probe is planned from the due time, not from the early start"
    );
    assert_eq!(pings(&m.tick(next_due, &[])).len(), 1);
}

#[test]
fn late_packet_after_leave_is_stale() {
    let t0 = Instant::now();
    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let ping = packet(&name(1), 5, 0, Body::Ping { seq: 1 }, vec![]);
    let a = m.on_datagram(addr(1), &ping, t0).expect("valid");
    assert_eq!(events(&a), vec![Event::Up(name(1))]);
    let left = packet(
        &name(1),
        5,
        0,
        Body::Notice,
        vec![Item::Left {
            name: name(1),
            generation: 5,
            incarnation: 0,
        }],
    );
    let a = m.on_datagram(addr(1), &left, t0).expect("valid");
    assert_eq!(events(&a), vec![Event::Down(name(1), DownReason::Left)]);
    let a = m.on_datagram(addr(1), &ping, t0).expect("valid");
    assert!(events(&a).is_empty());
    assert_eq!(m.stats().stale, 1);
    assert!(!m.alive().contains(&name(1)));
}

#[test]
fn restart_is_told_by_generation_and_does_not_snatch() {
    let mut s = sim_with(3, 21);
    let list = ips(12);
    s.claims = Claims::Elect(list.clone());
    s.run_until(ms(1_000));
    assert_single_owner(&s, &list);
    let before = s.claims_of(2).to_vec();
    assert!(!before.is_empty());
    let old_generation = s.member(2).incarnation();
    // Member 2 crashes and is back 50 ms later as a new instance, before anyone declares it.
    s.kill(2);
    s.run_for(ms(50));
    let restart_at = s.now();
    s.restart(2);
    s.run_until(restart_at + ms(100));
    for o in 0..2 {
        let tail: Vec<Event> = s
            .log()
            .iter()
            .filter(|l| l.node == o && l.at > restart_at)
            .map(|l| l.event.clone())
            .collect();
        assert_eq!(
            tail,
            vec![
                Event::Down(name(2), DownReason::Restarted),
                Event::Up(name(2))
            ],
            "observer {o}"
        );
    }
    s.run_until(restart_at + ms(1_500));
    assert_single_owner(&s, &list);
    // A late packet of the old instance is ignored and counted.
    let stale_before = s.member(0).stats().stale;
    let late = packet(&name(2), old_generation, 9, Body::Ping { seq: 7 }, vec![]);
    let now = s.at(s.now());
    let a = s
        .member_mut(0)
        .on_datagram(addr(2), &late, now)
        .expect("valid");
    assert!(events(&a).is_empty());
    assert_eq!(s.member(0).stats().stale, stale_before + 1);
}

#[test]
fn fresh_speaker_does_not_snatch_from_claimants() {
    let mut s = sim_with(3, 31);
    let list = ips(30);
    s.claims = Claims::Elect(list.clone());
    s.kill(2);
    s.run_until(ms(2_000));
    s.restart(2);
    s.run_until(ms(4_000));
    assert_single_owner(&s, &list);
    assert!(s.claims_of(2).is_empty(), "{:?}", s.claims_of(2));
    assert_eq!(s.member(2).alive(), all_names(3));
}

#[test]
fn settled_waits_for_records_or_grace() {
    let t0 = Instant::now();
    let at = |n: u64| t0 + ms(n);
    let grace = Config::default().join_grace;
    let m = Membership::new(name(0), 1, Config::default(), t0);
    assert!(!m.settled(at(0)));
    assert!(!m.settled(t0 + grace - MS));
    assert!(m.settled(t0 + grace));

    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let _ = m.set_peers(vec![
        (name(1), addr(1)),
        (name(2), addr(2)),
        (name(0), addr(0)),
    ]);
    assert!(!m.settled(at(10)));
    // A packet's header is a record at version 0: the empty record, known.
    let _ = m.on_datagram(
        addr(1),
        &packet(&name(1), 1, 0, Body::Ping { seq: 1 }, vec![]),
        at(10),
    );
    assert!(!m.settled(at(20)));
    // A peer whose record exists at a newer version is not known until that record arrives.
    let mut hdr = Packet {
        from: name(2),
        generation: 1,
        incarnation: 0,
        state_version: 2,
        body: Body::Notice,
        items: vec![],
    };
    let _ = m.on_datagram(addr(2), &hdr.encode(), at(20));
    assert!(!m.settled(at(20)));
    hdr.items = codec_parts(&name(2), 1, 2);
    let _ = m.on_datagram(addr(2), &hdr.encode(), at(20));
    assert!(m.settled(at(20)));
    assert_eq!(
        m.claims(&name(2)),
        &[IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2))][..]
    );
}

/// The whole record of `who` at `version`: one claim, 203.0.113.2.
fn codec_parts(who: &str, generation: u64, version: u32) -> Vec<Item> {
    vec![Item::State(codec::StatePart {
        name: who.into(),
        generation,
        state_version: version,
        part: 0,
        parts: 1,
        claims: vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2))],
        unable: vec![],
    })]
}

#[test]
fn unknown_and_self_senders_are_ignored_and_counted() {
    let t0 = Instant::now();
    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1))]);
    let ping = |from: &str| packet(from, 1, 0, Body::Ping { seq: 1 }, vec![]);
    assert!(
        m.on_datagram(addr(9), &ping("intruder"), t0)
            .expect("valid")
            .is_empty()
    );
    assert!(
        m.on_datagram(addr(0), &ping(&name(0)), t0)
            .expect("valid")
            .is_empty()
    );
    assert_eq!((m.stats().unknown_sender, m.stats().from_self), (1, 1));
    assert_eq!(m.alive().len(), 1);
    // A known name from an unexpected address is accepted, answered and counted.
    let a = m.on_datagram(addr(5), &ping(&name(1)), t0).expect("valid");
    assert_eq!(events(&a), vec![Event::Up(name(1))]);
    assert_eq!(sends(&a).len(), 1);
    assert_eq!(m.stats().unexpected_addr, 1);
    // Garbage is an error, not a panic, and changes nothing.
    assert!(m.on_datagram(addr(1), b"FL\x03\x01", t0).is_err());
}

#[test]
fn removed_peer_is_reported_down_and_no_longer_probed() {
    let t0 = Instant::now();
    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1)), (name(2), addr(2))]);
    let _ = m.on_datagram(
        addr(1),
        &packet(&name(1), 1, 0, Body::Ping { seq: 1 }, vec![]),
        t0,
    );
    assert_eq!(
        m.set_peers(vec![(name(2), addr(2))]),
        vec![Event::Down(name(1), DownReason::Removed)]
    );
    assert!(!m.alive().contains(&name(1)));
    let mut to = BTreeSet::new();
    for k in 0..200 {
        for (a, _) in sends(&m.tick(t0 + ms(k), &[])) {
            to.insert(a);
        }
    }
    assert_eq!(to, BTreeSet::from([addr(2)]));
}

#[test]
fn traffic_per_member_does_not_grow_with_the_peer_list() {
    // One member, ticked every millisecond for a second, answering nothing: what it sends on
    // its own with 10 and with 1,000 peers known.
    let count = |peers: usize| -> usize {
        let t0 = Instant::now();
        let mut m = Membership::new(name(0), 1, Config::default(), t0);
        let _ = m.set_peers((0..peers).map(|i| (name(i), addr(i))).collect());
        let mut n = 0;
        for k in 0..1_000 {
            let a = m.tick(t0 + ms(k), &[]);
            for (_, p) in sends(&a) {
                assert!(p.encode().len() <= Config::default().max_datagram);
                n += 1;
            }
        }
        n
    };
    let (small, large) = (count(10), count(1_000));
    // 40 probes and up to 40 joining syncs a second, whatever the cluster size.
    assert!(small <= 90 && large <= 90, "{small} {large}");
    assert_eq!(small, large);
    // A late shell gets no burst of catch-up probes.
    let t0 = Instant::now();
    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let _ = m.set_peers((1..10).map(|i| (name(i), addr(i))).collect());
    let _ = m.tick(t0, &[]);
    let burst = sends(&m.tick(t0 + ms(500), &[])).len() + sends(&m.tick(t0 + ms(501), &[])).len();
    assert!(burst <= 3, "{burst}");
    assert!(m.next_timeout() > t0 + ms(501));
    // ...and it noticed it was late: local health rose.
    assert!(m.health() > 0);
}

#[test]
fn too_many_claims_are_reported_once() {
    let t0 = Instant::now();
    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let claims: Vec<IpAddr> = (0..MAX_STATE_IPS as u128 + 5)
        .map(|i| {
            IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0000_0000_0000_0000_0000_0000 + i,
            ))
        })
        .collect();
    assert_eq!(
        events(&m.tick(t0, &claims)),
        vec![Event::ClaimsTruncated {
            kept: MAX_STATE_IPS,
            dropped: 5
        }]
    );
    assert!(events(&m.tick(t0, &claims)).is_empty());
    assert_eq!(m.claims(&name(0)).len(), MAX_STATE_IPS);
}

#[test]
fn unable_sets_travel_and_die_with_the_peer() {
    let mut s = sim_with(3, 41);
    let unable = vec![
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200)),
        "2001:db8::200".parse().expect("literal"),
    ];
    let mut sorted = unable.clone();
    sorted.sort();
    s.member_mut(1).set_unable(unable.clone());
    s.run_until(ms(600));
    for observer in [0, 2] {
        assert_eq!(s.member(observer).unable(&name(1)), sorted.as_slice());
        assert!(s.member(observer).unable(&name(2)).is_empty());
    }
    assert_eq!(s.member(1).unable(&name(1)), unable.as_slice());
    // Recovered: the next delta clears it.
    s.member_mut(1).set_unable(vec![]);
    s.run_until(ms(1_200));
    assert!(s.member(0).unable(&name(1)).is_empty());
    // Dead: its report no longer counts.
    s.member_mut(1).set_unable(unable.clone());
    s.run_until(ms(1_800));
    assert_eq!(s.member(0).unable(&name(1)), sorted.as_slice());
    s.kill(1);
    s.run_until(ms(2_500));
    assert!(!s.member(0).alive().contains(&name(1)));
    assert!(s.member(0).unable(&name(1)).is_empty());
    // Restarted: the new instance's (empty) record replaces the old one.
    s.restart(1);
    s.run_until(ms(3_000));
    assert!(s.member(0).alive().contains(&name(1)));
    assert!(s.member(0).unable(&name(1)).is_empty());
    // Left: gone at once.
    s.member_mut(2).set_unable(unable.clone());
    s.run_until(ms(3_600));
    assert_eq!(s.member(0).unable(&name(2)), sorted.as_slice());
    s.leave(2);
    s.run_for(ms(5));
    assert!(s.member(0).unable(&name(2)).is_empty());
}

#[test]
fn large_records_cross_in_many_datagrams() {
    // 600 claims and 300 unable IPs on one member: deltas of at most 32 addresses, every
    // datagram within the budget, and a member that joins late pulls the whole record.
    let mut s = sim_with(4, 51);
    let claims: Vec<IpAddr> = (0..600u32)
        .map(|i| IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i))))
        .collect();
    let unable: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)))
        .collect();
    s.set_claims(1, claims.clone());
    s.member_mut(1).set_unable(unable.clone());
    s.kill(3);
    s.run_until(ms(2_000));
    s.restart(3);
    s.run_until(ms(3_500));
    let mut want_c = claims.clone();
    want_c.sort();
    let mut want_u = unable.clone();
    want_u.sort();
    for o in [0, 2, 3] {
        assert_eq!(
            s.member(o).claims(&name(1)),
            want_c.as_slice(),
            "observer {o}"
        );
        assert_eq!(
            s.member(o).unable(&name(1)),
            want_u.as_slice(),
            "observer {o}"
        );
    }
    assert!(s.member(3).swim_stats().pulls > 0);
}

#[test]
fn suspicion_is_refuted_by_a_higher_incarnation() {
    let t0 = Instant::now();
    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let _ = m.set_peers(vec![(name(1), addr(1)), (name(2), addr(2))]);
    let _ = m.on_datagram(
        addr(2),
        &packet(&name(2), 3, 0, Body::Ping { seq: 1 }, vec![]),
        t0,
    );
    // Member 1 accuses us of incarnation 0.
    let accuse = Item::Suspect {
        name: name(0),
        generation: 1,
        incarnation: 0,
        accuser: name(1),
    };
    let a = m
        .on_datagram(
            addr(1),
            &packet(&name(1), 3, 0, Body::Ping { seq: 9 }, vec![accuse]),
            t0,
        )
        .expect("valid");
    let out = sends(&a);
    // Refuted: every packet now says incarnation 1; the accuser is told directly, and the Ack
    // (same incarnation) answers its ping.
    assert!(out.iter().all(|(_, p)| p.incarnation == 1), "{out:?}");
    assert!(out.iter().any(|(to, p)| *to == addr(1)
        && p.items.contains(&Item::Alive {
            name: name(0),
            generation: 1,
            incarnation: 1,
            state_version: 0
        })));
    assert!(
        out.iter()
            .any(|(to, p)| *to == addr(1) && p.body == Body::Ack { seq: 9 })
    );
    assert_eq!(m.swim_stats().refutations, 1);
    assert!(m.health() >= 1);
    // A repeat of the same (old) accusation is answered again, not refuted again.
    let again = Item::Suspect {
        name: name(0),
        generation: 1,
        incarnation: 0,
        accuser: name(2),
    };
    let a = m
        .on_datagram(
            addr(2),
            &packet(&name(2), 3, 0, Body::Notice, vec![again]),
            t0,
        )
        .expect("valid");
    assert_eq!(m.swim_stats().refutations, 1);
    assert!(sends(&a).iter().any(|(to, _)| *to == addr(2)));
    // Seen from another member: a suspicion is cleared by the higher incarnation.
    let mut o = Membership::new(name(2), 3, Config::default(), t0);
    let _ = o.set_peers(vec![(name(0), addr(0)), (name(1), addr(1))]);
    let _ = o.on_datagram(
        addr(0),
        &packet(&name(0), 1, 0, Body::Ping { seq: 1 }, vec![]),
        t0,
    );
    let susp = Item::Suspect {
        name: name(0),
        generation: 1,
        incarnation: 0,
        accuser: name(1),
    };
    let _ = o.on_datagram(
        addr(1),
        &packet(&name(1), 3, 0, Body::Notice, vec![susp]),
        t0,
    );
    assert!(o.suspects().contains(&name(0)));
    assert!(
        o.alive().contains(&name(0)),
        "a suspect still counts as alive"
    );
    let _ = o.on_datagram(addr(0), &packet(&name(0), 1, 1, Body::Notice, vec![]), t0);
    assert!(o.suspects().is_empty());
}

#[test]
fn dead_members_come_back_after_a_partition_heals() {
    let mut s = sim_with(8, 61);
    let list = ips(24);
    s.claims = Claims::Elect(list.clone());
    s.run_until(ms(1_000));
    s.partition((0..8).map(|i| u32::from(i >= 4)).collect());
    s.run_until(ms(3_000));
    for i in 0..8 {
        assert_eq!(
            s.member(i).alive().len(),
            4,
            "member {i} during the partition"
        );
    }
    s.heal();
    s.run_until(ms(6_000));
    for i in 0..8 {
        assert_eq!(
            s.member(i).alive(),
            all_names(8),
            "member {i} after the heal"
        );
    }
    assert_single_owner(&s, &list);
    assert_eq!(s.spins(), 0);
}

#[test]
fn rolling_upgrade_legacy_and_swim_see_each_other() {
    // Members 0 and 1 run the version 2 protocol (an older release); 2..5 run SWIM.
    let mut s = sim_with(6, 71);
    let legacy = Config::new(ms(25), ms(200));
    for i in 0..2 {
        s.set_config(i, legacy);
    }
    let list = ips(24);
    s.claims = Claims::Elect(list.clone());
    s.run_until(ms(1_500));
    for i in 0..6 {
        assert_eq!(s.member(i).alive(), all_names(6), "member {i}");
    }
    assert_single_owner(&s, &list);
    // Every member sees every member's claims as the claimant advertises them.
    for i in 0..6 {
        for j in 0..6 {
            let mut seen = s.member(i).claims(&name(j)).to_vec();
            let mut own = s.claims_of(j).to_vec();
            seen.sort();
            own.sort();
            assert_eq!(seen, own, "{i} sees {j}");
        }
    }
    assert!(s.member(3).swim_stats().legacy_heartbeats > 0);
    // A legacy member dies: SWIM members judge it by the legacy rule (about 200 ms).
    let t = s.now();
    s.kill(0);
    s.run_until(t + ms(600));
    for o in 1..6 {
        let d = downs_of(&s, 0);
        let at = d.iter().find(|(_, n, _)| *n == o).map(|(a, _, _)| *a - t);
        assert!(at.is_some_and(|l| l <= ms(260)), "{o}: {at:?}");
    }
    // A SWIM member dies: the other legacy member sees it after 200 ms, SWIM members within
    // their bound.
    let t = s.now();
    s.kill(5);
    s.run_until(t + ms(1_000));
    for o in 1..5 {
        let d = downs_of(&s, 5);
        let at = d.iter().find(|(_, n, _)| *n == o).map(|(a, _, _)| *a - t);
        assert!(at.is_some_and(|l| l <= DETECT_BOUND), "{o}: {at:?}");
    }
    assert_single_owner(&s, &list);
    // Upgrading member 1 (restart as SWIM): it stops being treated as legacy.
    s.set_config(1, Config::default());
    s.run_until(s.now() + ms(1_000));
    for i in 1..5 {
        assert_eq!(s.member(i).alive().len(), 4, "member {i}");
    }
    let before = s.member(2).swim_stats().legacy_heartbeats;
    s.run_until(s.now() + ms(500));
    assert_eq!(s.member(2).swim_stats().legacy_heartbeats, before);
    assert!(
        any_timeout(&s)
            .iter()
            .all(|(_, _, p)| *p == name(0) || *p == name(5))
    );
}

#[test]
fn the_lifeguard_suspicion_timeout_shrinks_with_confirmations() {
    let c = Config::default();
    // K = 3 confirmations expected (members - 2 when fewer).
    assert_eq!(c.suspicion_timeout(0, 100), ms(400));
    assert_eq!(c.suspicion_timeout(3, 100), ms(325));
    assert_eq!(c.suspicion_timeout(9, 100), ms(325));
    let one = c.suspicion_timeout(1, 100);
    let two = c.suspicion_timeout(2, 100);
    assert!(
        ms(400) > one && one > two && two > ms(325),
        "{one:?} {two:?}"
    );
    // Two members: nobody can confirm, so no reason to wait longer than the minimum.
    assert_eq!(c.suspicion_timeout(0, 2), ms(325));
    // Three members: one confirmation is all there can be.
    assert_eq!(c.suspicion_timeout(1, 3), ms(325));
    assert_eq!(c.declare_after(), ms(350));
    assert_eq!(Config::new(ms(25), ms(200)).declare_after(), ms(200));
    assert_eq!(Config::default().protocol, Protocol::Swim);
}

// ------------------------------------------------------------------------------------------
// Property tests
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Without loss, with any LAN latency and any stalls of at most 300 ms (separated by at
    /// least 20 ms of running), no member is ever declared dead.
    #[test]
    fn no_false_death_within_the_bounds(
        n in 2usize..10,
        seed in any::<u64>(),
        jitter_us in 0u64..3_000,
        stalls in proptest::collection::vec((0usize..10, 20u64..300, 20u64..400), 0..25),
    ) {
        let net = Net { jitter: Duration::from_micros(jitter_us), ..Net::default() };
        let mut s = Sim::new(n, Config::default(), net, seed, Instant::now());
        s.claims = Claims::Elect(ips(16));
        s.run_until(ms(800));
        for (who, stall, gap) in stalls {
            let who = who % n;
            if s.life(who) == Life::Up {
                s.stall(who, ms(stall));
            }
            let t = s.now() + ms(gap);
            s.run_until(t);
        }
        s.run_for(ms(1_500));
        prop_assert!(any_timeout(&s).is_empty(), "{:?}", any_timeout(&s));
        prop_assert_eq!(s.spins(), 0);
    }

    /// A crashed member is declared dead by every running member within the bound, and no
    /// sooner than the suspicion floor.
    #[test]
    fn a_dead_member_is_always_detected_within_the_bound(
        n in 2usize..14,
        seed in any::<u64>(),
        victim in any::<prop::sample::Index>(),
        after in 500u64..3_000,
    ) {
        let mut s = sim_with(n, seed);
        s.run_until(ms(after));
        let v = victim.index(n);
        let t = s.now();
        s.kill(v);
        s.run_until(t + ms(1_200));
        let d = downs_of(&s, v);
        for o in (0..n).filter(|&o| o != v) {
            let at = d.iter().find(|(_, node, _)| *node == o).map(|(a, _, r)| (*a - t, *r));
            prop_assert!(
                at.is_some_and(|(l, r)| r == DownReason::Timeout
                    && l <= DETECT_BOUND
                    && l + ms(2) >= Config::default().declare_after()),
                "observer {} of {}: {:?}", o, n, at
            );
        }
        prop_assert!(any_timeout(&s).iter().all(|(_, _, p)| *p == name(v)));
    }

    /// Whatever members claim and cannot announce, through loss of up to 5% and a member that
    /// joins late, every member ends up with every other member's record as advertised.
    #[test]
    fn claims_converge(
        n in 2usize..8,
        seed in any::<u64>(),
        loss_ppm in 0u32..50_000,
        rounds in proptest::collection::vec(
            proptest::collection::vec((0usize..8, 0u32..200, 0u32..80), 1..6),
            1..5,
        ),
    ) {
        let net = Net { loss_ppm, ..Net::default() };
        let mut s = Sim::new(n, Config::default(), net, seed, Instant::now());
        let late = n - 1;
        s.kill(late);
        s.run_until(ms(500));
        let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + i));
        for round in rounds {
            for (who, count, unable) in round {
                let who = who % n;
                let base = u32::try_from(who).unwrap_or(0) * 1_000;
                s.set_claims(who, (0..count).map(|k| ip(base + k)).collect());
                s.member_mut(who).set_unable((0..unable).map(|k| ip(base + 500 + k)).collect());
            }
            s.run_for(ms(300));
        }
        s.restart(late);
        s.net.loss_ppm = 0;
        s.run_for(ms(3_000));
        for o in 0..n {
            for j in 0..n {
                let mut want_c = s.claims_of(j).to_vec();
                want_c.sort();
                want_c.dedup();
                let mut seen = s.member(o).claims(&name(j)).to_vec();
                seen.sort();
                prop_assert_eq!(&seen, &want_c, "{} sees {} claims", o, j);
                let mut want_u = s.member(j).unable(&name(j)).to_vec();
                want_u.sort();
                want_u.dedup();
                let mut seen_u = s.member(o).unable(&name(j)).to_vec();
                seen_u.sort();
                prop_assert_eq!(&seen_u, &want_u, "{} sees {} unable", o, j);
            }
        }
    }
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let name = "[a-z0-9.-]{1,20}";
    let ips = || proptest::collection::vec(any_ip(), 0..8);
    prop_oneof![
        (name, any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(n, g, i, v)| Item::Alive {
            name: n,
            generation: g,
            incarnation: i,
            state_version: v
        }),
        (name, any::<u64>(), any::<u32>(), name).prop_map(|(n, g, i, a)| Item::Suspect {
            name: n,
            generation: g,
            incarnation: i,
            accuser: a
        }),
        (name, any::<u64>(), any::<u32>(), name).prop_map(|(n, g, i, d)| Item::Dead {
            name: n,
            generation: g,
            incarnation: i,
            declarer: d
        }),
        (name, any::<u64>(), any::<u32>()).prop_map(|(n, g, i)| Item::Left {
            name: n,
            generation: g,
            incarnation: i
        }),
        (name, any::<u64>(), 1u32.., ips(), ips(), ips(), ips()).prop_map(
            |(n, g, v, a, b, c, d)| Item::Delta(codec::Delta {
                name: n,
                generation: g,
                state_version: v,
                add_claims: a,
                del_claims: b,
                add_unable: c,
                del_unable: d,
            })
        ),
        (name, any::<u64>(), any::<u32>(), 1u16..20, ips(), ips()).prop_map(
            |(n, g, v, parts, c, u)| Item::State(codec::StatePart {
                name: n,
                generation: g,
                state_version: v,
                part: parts - 1,
                parts,
                claims: c,
                unable: u,
            })
        ),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    let name = "[a-z0-9.-]{1,20}";
    let status = prop_oneof![
        Just(Status::Alive),
        Just(Status::Suspect),
        Just(Status::Dead),
        Just(Status::Left)
    ];
    prop_oneof![
        any::<u32>().prop_map(|seq| Body::Ping { seq }),
        any::<u32>().prop_map(|seq| Body::Ack { seq }),
        (any::<u32>(), name).prop_map(|(seq, target)| Body::PingReq { seq, target }),
        any::<u32>().prop_map(|seq| Body::Nack { seq }),
        Just(Body::Notice),
        proptest::collection::vec(any::<u32>(), 0..70).prop_map(|hashes| Body::SyncReq { hashes }),
        proptest::collection::vec(
            (name, any::<u64>(), any::<u32>(), status, any::<u32>()),
            0..8
        )
        .prop_map(|e| Body::SyncDigest {
            entries: e
                .into_iter()
                .map(
                    |(name, generation, incarnation, status, state_version)| codec::Digest {
                        name,
                        generation,
                        incarnation,
                        status,
                        state_version
                    }
                )
                .collect()
        }),
        proptest::collection::vec((name, any::<u16>()), 0..8)
            .prop_map(|wants| Body::SyncPull { wants }),
    ]
}

fn packet_strategy() -> impl Strategy<Value = Packet> {
    (
        "[a-z0-9.-]{1,20}",
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        body(),
        proptest::collection::vec(item(), 0..6),
    )
        .prop_map(
            |(from, generation, incarnation, state_version, body, items)| Packet {
                from,
                generation,
                incarnation,
                state_version,
                body,
                items,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn v3_codec_round_trips(p in packet_strategy()) {
        let bytes = p.encode();
        prop_assert_eq!(bytes.len(), p.encoded_len());
        prop_assert_eq!(codec::decode(&bytes), Ok(Datagram::Packet(p)));
    }

    #[test]
    fn v3_codec_never_panics_and_has_one_encoding(
        p in packet_strategy(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = p.encode();
        for (i, v) in edits {
            let i = i.index(b.len());
            b[i] = v;
        }
        b.truncate(cut.index(b.len() + 1));
        if let Ok(Datagram::Packet(q)) = codec::decode(&b) {
            prop_assert_eq!(q.encode(), b);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of datagrams (valid, mutated, from peers or strangers), peer-list changes
    /// and ticks with a clock that sometimes goes backwards: no panic, no deadline left in the
    /// past after a tick, and dead members announce nothing.
    #[test]
    fn membership_never_panics_and_keeps_invariants(
        ops in proptest::collection::vec(
            (0u8..5, 0usize..4, packet_strategy(), -50i64..300, any::<prop::sample::Index>(), any::<u8>()),
            1..60,
        ),
    ) {
        let t0 = Instant::now() + Duration::from_secs(3_600);
        let names = ["a", "b", "c", "d"];
        let paddr = |i: usize| SocketAddr::from(([198, 51, 100, i as u8], 7946));
        let mut m = Membership::new("a", 1, Config::default(), t0);
        let mut clock: i64 = 0;
        for (op, who, mut p, dt, at, v) in ops {
            clock = (clock + dt).max(-1_000);
            let now = if clock >= 0 {
                t0 + ms(clock.unsigned_abs())
            } else {
                t0 - ms(clock.unsigned_abs())
            };
            match op {
                0 => {
                    let peers = names.iter().take(who + 1).enumerate()
                        .map(|(i, n)| (n.to_string(), paddr(i))).collect();
                    let _ = m.set_peers(peers);
                }
                1 => {
                    p.from = names[who].to_string();
                    for it in &mut p.items {
                        if let Item::Alive { name, .. } | Item::Suspect { name, .. }
                            | Item::Dead { name, .. } | Item::Left { name, .. } = it {
                            *name = names[(who + 1) % 4].to_string();
                        }
                    }
                    let _ = m.on_datagram(paddr(who), &p.encode(), now);
                }
                2 => {
                    let mut b = p.encode();
                    let i = at.index(b.len());
                    b[i] = v;
                    let _ = m.on_datagram(paddr(who), &b, now);
                }
                3 => m.set_unable(vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, v))]),
                _ => {
                    let _ = m.tick(now, &[IpAddr::V4(Ipv4Addr::new(203, 0, 113, v))]);
                    prop_assert!(m.next_timeout() > now);
                }
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

#[test]
fn simulator_addresses_round_trip() {
    for i in [0, 1, 999, 70_000] {
        assert_eq!(sim::index_of(addr(i)), Some(i));
    }
}
