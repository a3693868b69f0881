//! Refutation around a broken path (issue 11): when the accuser and the suspect cannot reach
//! each other (in the lab, a shared kernel's full neighbour table drops datagrams between some
//! pairs of node namespaces), the suspect's direct answer is lost too; it also goes through
//! random relays, which tell the accuser.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{packet, sends};
use ferrolb_speaker_core::membership::codec::{Body, Item};
use ferrolb_speaker_core::membership::sim::{Net, Sim, addr, name};
use ferrolb_speaker_core::membership::{Config, DownReason, Event, Membership};

#[test]
fn a_suspect_answers_its_accuser_directly_and_through_relays() {
    let t0 = Instant::now();
    let mut m = Membership::new(name(0), 1, Config::default(), t0);
    let _ = m.set_peers((1..8).map(|i| (name(i), addr(i))).collect());
    for i in 1..8 {
        let _ = m.on_datagram(
            addr(i),
            &packet(&name(i), 3, 0, Body::Ping { seq: 1 }, vec![]),
            t0,
        );
    }
    // Member 1 accuses us of incarnation 0; we hear it from member 2 (1 cannot reach us).
    let accusation = Item::Suspect {
        name: name(0),
        generation: 1,
        incarnation: 0,
        accuser: name(1),
    };
    let a = m
        .on_datagram(
            addr(2),
            &packet(&name(2), 3, 0, Body::Notice, vec![accusation.clone()]),
            t0,
        )
        .expect("valid");
    let out = sends(&a);
    assert_eq!(m.swim_stats().refutations, 1);
    // Directly to the accuser, as before.
    assert!(out.iter().any(|(to, p)| {
        *to == addr(1)
            && p.items
                .iter()
                .any(|i| matches!(i, Item::Alive { incarnation: 1, .. }))
    }));
    // And the accusation back to `indirect_probes` (3) other members, each from incarnation 1.
    let relays: BTreeSet<SocketAddr> = out
        .iter()
        .filter(|(to, p)| *to != addr(1) && p.incarnation == 1 && p.items == [accusation.clone()])
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(relays.len(), 3, "{out:?}");
    // Once per accuser and incarnation.
    let a = m
        .on_datagram(
            addr(3),
            &packet(&name(3), 3, 0, Body::Notice, vec![accusation]),
            t0,
        )
        .expect("valid");
    assert!(
        sends(&a).iter().all(|(to, _)| *to == addr(3)),
        "{:?}",
        sends(&a)
    );
}

#[test]
fn a_relay_tells_the_accuser_of_the_refutation() {
    let t0 = Instant::now();
    // Member 5 relays for member 0, accused of incarnation 0 by member 1.
    let mut r = Membership::new(name(5), 3, Config::default(), t0);
    let _ = r.set_peers(vec![(name(0), addr(0)), (name(1), addr(1))]);
    let _ = r.on_datagram(
        addr(0),
        &packet(&name(0), 1, 0, Body::Ping { seq: 1 }, vec![]),
        t0,
    );
    let ask = Item::Suspect {
        name: name(0),
        generation: 1,
        incarnation: 0,
        accuser: name(1),
    };
    let a = r
        .on_datagram(
            addr(0),
            &packet(&name(0), 1, 1, Body::Notice, vec![ask]),
            t0,
        )
        .expect("valid");
    let out = sends(&a);
    assert!(
        out.iter().any(|(to, p)| *to == addr(1)
            && p.items
                == [Item::Alive {
                    name: name(0),
                    generation: 1,
                    incarnation: 1,
                    state_version: 0
                }]),
        "{out:?}"
    );
    // The relay does not take the old accusation for news.
    assert!(r.suspects().is_empty());
}

/// Timeout deaths reported in `s` (every member runs: each one is false).
fn false_deaths(s: &Sim) -> usize {
    s.log()
        .iter()
        .filter(|l| matches!(l.event, Event::Down(_, DownReason::Timeout)))
        .count()
}

#[test]
fn a_tenth_of_the_paths_broken_is_no_death() {
    // 50 members; every 5 s a new random tenth of the member pairs cannot exchange anything.
    // Without the relays of refutations this run reports 12 timeout deaths.
    let n = 50;
    let mut s = Sim::new(n, Config::default(), Net::default(), 7, Instant::now());
    s.run_for(Duration::from_secs(3));
    s.clear_log();
    let mut x: u64 = 42;
    for _ in 0..6 {
        s.blocked.clear();
        for a in 0..n {
            for b in (a + 1)..n {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                if (z ^ (z >> 31)).is_multiple_of(10) {
                    s.blocked.insert((a, b));
                    s.blocked.insert((b, a));
                }
            }
        }
        s.run_for(Duration::from_secs(5));
    }
    let accusations: u64 = (0..n).map(|i| s.member(i).swim_stats().accusations).sum();
    // The broken paths do cause accusations: the test exercises refutation, not luck.
    assert!(accusations >= 10, "{accusations}");
    assert_eq!(false_deaths(&s), 0);
}
