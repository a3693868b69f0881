//! One test (or a few) per promise documented on `Allocator`, through the public API only.

use std::net::IpAddr;

use ferrolb_allocator::{
    AllocError, Allocator, Assignment, Conflict, Family, FamilyPolicy, PoolConfig, Protocol,
    Reason, Request, ServiceKey, SharingKey, TrafficPolicy,
};

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
}

fn key(s: &str) -> ServiceKey {
    ServiceKey(s.to_string())
}

fn pool(name: &str, entries: &[&str]) -> PoolConfig {
    pool_with(name, entries, true, false)
}

fn pool_with(name: &str, entries: &[&str], auto: bool, avoid: bool) -> PoolConfig {
    PoolConfig::parse(name, entries.iter().copied(), auto, avoid)
        .unwrap_or_else(|e| panic!("bad test pool {name}: {e}"))
}

fn req(policy: FamilyPolicy, candidates: &[&str]) -> Request {
    let mut r = Request::new(policy);
    r.candidate_pools = candidates.iter().map(|c| c.to_string()).collect();
    r
}

fn v4(candidates: &[&str]) -> Request {
    req(FamilyPolicy::Single(Family::V4), candidates)
}

fn shared(mut r: Request, sharing: &str, ports: &[(Protocol, u16)]) -> Request {
    r.sharing = Some(SharingKey(sharing.to_string()));
    r.ports = ports.to_vec();
    r
}

fn ok(a: &mut Allocator, svc: &str, r: &Request) -> Assignment {
    a.assign(&key(svc), r)
        .unwrap_or_else(|e| panic!("assign {svc} failed: {e}"))
}

fn err(a: &mut Allocator, svc: &str, r: &Request) -> AllocError {
    let before = a.clone();
    match a.assign(&key(svc), r) {
        Ok(got) => panic!("assign {svc} unexpectedly gave {got:?}"),
        Err(e) => {
            assert_eq!(
                *a, before,
                "a failed assign must leave the state exactly as before"
            );
            e
        }
    }
}

fn ips(a: &Assignment) -> Vec<IpAddr> {
    a.addresses().collect()
}

fn with_current(mut r: Request, a: &Assignment) -> Request {
    r.current = ips(a);
    r
}

fn allocator(pools: Vec<PoolConfig>) -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(pools);
    a
}

// ---- 1. idempotence ----

#[test]
fn assign_is_idempotent() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28", "2001:db8::/124"])]);
    let r = req(
        FamilyPolicy::RequireDual([Family::V6, Family::V4]),
        &["blue"],
    );
    let first = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&first), vec![ip("2001:db8::"), ip("198.51.100.0")]);
    let snapshot = a.clone();
    assert_eq!(ok(&mut a, "ns/a", &r), first);
    assert_eq!(a, snapshot, "a repeated assign changes nothing");
    // Same once the shell has published the status.
    assert_eq!(ok(&mut a, "ns/a", &with_current(r, &first)), first);
    assert_eq!(a, snapshot);
}

// ---- 2. stability ----

#[test]
fn priority_changes_do_not_renumber() {
    let mut a = allocator(vec![
        pool("blue", &["198.51.100.0/28"]),
        pool("red", &["203.0.113.0/28"]),
    ]);
    let got = ok(&mut a, "ns/a", &v4(&["blue", "red"]));
    assert_eq!(ips(&got), vec![ip("198.51.100.0")]);
    // red now has priority, then blue leaves the candidate list entirely: the IP stays.
    let r = with_current(v4(&["red", "blue"]), &got);
    assert_eq!(ips(&ok(&mut a, "ns/a", &r)), vec![ip("198.51.100.0")]);
    let r = with_current(v4(&["red"]), &got);
    let kept = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&kept), vec![ip("198.51.100.0")]);
    assert_eq!(kept.ips[0].pool.as_deref(), Some("blue"));
    // A new Service follows the new priority.
    assert_eq!(
        ips(&ok(&mut a, "ns/b", &v4(&["red"]))),
        vec![ip("203.0.113.0")]
    );
}

#[test]
fn current_ips_are_reclaimed_first() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28"])]);
    let mut r = v4(&["blue"]);
    r.current = vec![ip("198.51.100.9")];
    assert_eq!(ips(&ok(&mut a, "ns/a", &r)), vec![ip("198.51.100.9")]);
    // A current IP held by an incompatible Service is not taken; the Service gets a new one.
    let mut r = v4(&["blue"]);
    r.current = vec![ip("198.51.100.9")];
    assert_eq!(ips(&ok(&mut a, "ns/b", &r)), vec![ip("198.51.100.0")]);
}

#[test]
fn restart_replays_current_ips_before_allocating() {
    let pools = vec![pool("blue", &["198.51.100.0/28"])];
    let mut a = allocator(pools.clone());
    let mut published = Vec::new();
    for svc in ["ns/a", "ns/b", "ns/c"] {
        published.push((svc, ok(&mut a, svc, &v4(&["blue"]))));
    }
    assert!(a.release(&key("ns/a")));
    published.remove(0);

    // Fresh process. A brand-new Service is replayed first in the second pass; it must not take
    // ns/c's address even though the shell handles it before ns/c.
    let mut b = allocator(pools);
    for (svc, got) in &published {
        let kept = b.restore(&key(svc), &with_current(v4(&["blue"]), got));
        assert_eq!(&kept, got);
    }
    assert_eq!(
        ips(&ok(&mut b, "ns/new", &v4(&["blue"]))),
        vec![ip("198.51.100.0")]
    );
    for (svc, got) in &published {
        assert_eq!(&ok(&mut b, svc, &with_current(v4(&["blue"]), got)), got);
    }
    assert_eq!(b.len(), 3);
}

#[test]
fn restore_keeps_only_what_it_may() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28"])]);
    let mut r = v4(&["blue"]);
    r.current = vec![ip("198.51.100.3"), ip("2001:db8::1"), ip("203.0.113.1")];
    let kept = a.restore(&key("ns/a"), &r);
    // First IPv4 only (Single V4), even though it is in a pool: pools are not required either.
    assert_eq!(ips(&kept), vec![ip("198.51.100.3")]);
    let mut r = v4(&["blue"]);
    r.current = vec![ip("198.51.100.3")];
    assert!(
        a.restore(&key("ns/b"), &r).ips.is_empty(),
        "conflicts are dropped"
    );
    assert!(a.assignment(&key("ns/b")).is_none());
    let mut r = v4(&[]);
    r.current = vec![ip("192.0.2.1")];
    let orphan = a.restore(&key("ns/c"), &r);
    assert_eq!(orphan.ips[0].pool, None);
    assert_eq!(a.orphaned().count(), 1);
}

#[test]
fn requested_change_moves_the_service() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28"])]);
    let mut r = v4(&["blue"]);
    r.requested = vec![ip("198.51.100.5")];
    let got = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&got), vec![ip("198.51.100.5")]);
    let mut r = with_current(r, &got);
    r.requested = vec![ip("198.51.100.7")];
    assert_eq!(ips(&ok(&mut a, "ns/a", &r)), vec![ip("198.51.100.7")]);
    assert_eq!(a.services_on(ip("198.51.100.5")).count(), 0, "old IP freed");
    // Dropping the request keeps the address (it is still valid).
    r.requested.clear();
    r.current = vec![ip("198.51.100.7")];
    assert_eq!(ips(&ok(&mut a, "ns/a", &r)), vec![ip("198.51.100.7")]);
}

#[test]
fn pin_change_moves_but_pool_edits_do_not() {
    let mut a = allocator(vec![
        pool("blue", &["198.51.100.0/28"]),
        pool_with("gold", &["203.0.113.0/28"], false, false),
        pool("wide", &["198.51.100.0/24"]),
    ]);
    let mut r = v4(&["blue"]);
    r.pool = Some("blue".into());
    let got = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&got), vec![ip("198.51.100.0")]);
    // blue shrinks away from the IP, which is still inside "wide": the pin did not change, so
    // the Service stays and is reported under wide.
    a.set_pools(vec![
        pool("blue", &["198.51.100.8/29"]),
        pool_with("gold", &["203.0.113.0/28"], false, false),
        pool("wide", &["198.51.100.0/24"]),
    ]);
    let kept = ok(&mut a, "ns/a", &with_current(r.clone(), &got));
    assert_eq!(ips(&kept), vec![ip("198.51.100.0")]);
    assert_eq!(kept.ips[0].pool.as_deref(), Some("wide"));
    // Re-pinning to gold (autoAssign=false is fine when pinned) moves it.
    r.pool = Some("gold".into());
    let moved = ok(&mut a, "ns/a", &with_current(r.clone(), &kept));
    assert_eq!(ips(&moved), vec![ip("203.0.113.0")]);
    assert_eq!(moved.ips[0].pool.as_deref(), Some("gold"));
}

/// Found by the model test: after a re-pin moved a Service, the stale published status (still
/// listing the old IP) must not bring the old IP back on the next call.
#[test]
fn stale_current_after_repin_is_idempotent() {
    let mut a = allocator(vec![
        pool("six", &["2001:db8::/127"]),
        pool("four", &["198.51.100.0/31"]),
    ]);
    let mut r = v4(&[]);
    r.pool = Some("four".into());
    let first = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&first), vec![ip("198.51.100.0")]);
    // Re-pinned to an IPv6-only pool with PreferDual: IPv4 must go, IPv6 comes.
    let mut r = with_current(
        req(FamilyPolicy::PreferDual([Family::V4, Family::V6]), &[]),
        &first,
    );
    r.pool = Some("six".into());
    let moved = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&moved), vec![ip("2001:db8::")]);
    let snapshot = a.clone();
    assert_eq!(
        ok(&mut a, "ns/a", &r),
        moved,
        "same request, status not yet updated"
    );
    assert_eq!(a, snapshot);
}

#[test]
fn family_set_changes() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28", "2001:db8::/124"])]);
    let got = ok(&mut a, "ns/a", &v4(&["blue"]));
    let dual = req(
        FamilyPolicy::RequireDual([Family::V4, Family::V6]),
        &["blue"],
    );
    let both = ok(&mut a, "ns/a", &with_current(dual, &got));
    assert_eq!(ips(&both), vec![ip("198.51.100.0"), ip("2001:db8::")]);
    let v6 = req(FamilyPolicy::Single(Family::V6), &["blue"]);
    let only6 = ok(&mut a, "ns/a", &with_current(v6, &both));
    assert_eq!(ips(&only6), vec![ip("2001:db8::")]);
    assert_eq!(a.services_on(ip("198.51.100.0")).count(), 0);
}

// ---- 3. orphans ----

#[test]
fn orphaned_ips_are_kept_reported_and_block_others() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/30"])]);
    let got = ok(&mut a, "ns/a", &v4(&["blue"]));
    a.set_pools(vec![pool("blue", &["198.51.100.1-198.51.100.3"])]);
    assert_eq!(
        a.assignment(&key("ns/a")).map(|x| x.ips[0].pool.clone()),
        Some(None)
    );
    assert_eq!(
        a.orphaned().collect::<Vec<_>>(),
        vec![(&key("ns/a"), ip("198.51.100.0"))]
    );
    let r = with_current(v4(&["blue"]), &got);
    let kept = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&kept), vec![ip("198.51.100.0")]);
    assert_eq!(kept.ips[0].pool, None);

    // The pool grows back: the address is free nowhere, and nobody else may take it.
    a.set_pools(vec![pool("blue", &["198.51.100.0/30"])]);
    assert_eq!(a.orphaned().count(), 0);
    assert_eq!(
        a.assignment(&key("ns/a")).map(|x| x.ips[0].pool.clone()),
        Some(Some("blue".into()))
    );
    a.set_pools(vec![]);
    let mut other = v4(&[]);
    other.requested = vec![ip("198.51.100.0")];
    assert_eq!(
        err(&mut a, "ns/b", &other).to_string(),
        "requested 198.51.100.0 is in no pool"
    );
    a.set_pools(vec![
        pool("blue", &["198.51.100.0/30"]),
        pool("red", &["198.51.100.0/31"]),
    ]);
    assert_eq!(a.orphaned().count(), 0);
    let mut other = v4(&["red"]);
    assert_eq!(ips(&ok(&mut a, "ns/b", &other)), vec![ip("198.51.100.1")]);
    other.requested = vec![ip("198.51.100.0")];
    let e = err(&mut a, "ns/c", &other);
    assert_eq!(
        e.to_string(),
        "requested 198.51.100.0 is used by ns/a and one of them has no sharing key"
    );
    assert_eq!(e.reason(), Reason::RequestedInUse);
}

#[test]
fn allow_ip_change_moves_orphans_when_possible() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/30"])]);
    let got = ok(&mut a, "ns/a", &v4(&["blue"]));
    a.set_pools(vec![pool("blue", &["198.51.100.2/32"])]);
    let mut r = with_current(v4(&["blue"]), &got);
    r.allow_ip_change = true;
    let moved = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&moved), vec![ip("198.51.100.2")]);
    assert_eq!(a.orphaned().count(), 0);
    // Orphaned again and the only pool is full: the Service keeps its orphan rather than
    // losing it.
    a.set_pools(vec![pool("blue", &["198.51.100.3/32"])]);
    assert_eq!(
        ips(&ok(&mut a, "ns/b", &v4(&["blue"]))),
        vec![ip("198.51.100.3")]
    );
    let mut r = with_current(v4(&["blue"]), &moved);
    r.allow_ip_change = true;
    let kept = ok(&mut a, "ns/a", &r);
    assert_eq!(ips(&kept), vec![ip("198.51.100.2")]);
    assert_eq!(kept.ips[0].pool, None);
}

#[test]
fn requested_orphan_is_kept() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28"])]);
    let mut r = v4(&["blue"]);
    r.requested = vec![ip("198.51.100.9")];
    let got = ok(&mut a, "ns/a", &r);
    a.set_pools(vec![]);
    let kept = ok(&mut a, "ns/a", &with_current(r, &got));
    assert_eq!(ips(&kept), vec![ip("198.51.100.9")]);
    assert_eq!(a.orphaned().count(), 1);
}

// ---- 4. sharing ----

#[test]
fn compatible_services_share_and_conflicts_are_named() {
    use Protocol::*;
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28"])]);
    let web = shared(v4(&["blue"]), "k", &[(Tcp, 80)]);
    let got = ok(&mut a, "ns/web", &web);
    assert_eq!(ips(&got), vec![ip("198.51.100.0")]);
    // Same key, other ports: reuses the shared IP instead of the next free one.
    let dns = shared(v4(&["blue"]), "k", &[(Udp, 53), (Tcp, 53)]);
    assert_eq!(ips(&ok(&mut a, "ns/dns", &dns)), vec![ip("198.51.100.0")]);
    let mut on: Vec<_> = a.services_on(ip("198.51.100.0")).cloned().collect();
    on.sort();
    assert_eq!(on, vec![key("ns/dns"), key("ns/web")]);
    assert_eq!(a.pool_stats("blue").map(|s| s.v4.assigned), Some(1));

    let ask = |mut r: Request| {
        r.requested = vec![ip("198.51.100.0")];
        r
    };
    let msg = |a: &mut Allocator, r: Request| err(a, "ns/x", &ask(r)).to_string();
    assert_eq!(
        msg(&mut a, shared(v4(&["blue"]), "other", &[(Tcp, 8080)])),
        "requested 198.51.100.0 is used by ns/dns and the sharing keys differ"
    );
    assert_eq!(
        msg(&mut a, shared(v4(&["blue"]), "k", &[(Tcp, 443), (Tcp, 80)])),
        "requested 198.51.100.0 is used by ns/web and ports overlap (TCP/80)"
    );
    let mut local = shared(v4(&["blue"]), "k", &[(Tcp, 8080)]);
    local.traffic = TrafficPolicy::Local {
        selector: "app=x".into(),
    };
    assert_eq!(
        msg(&mut a, local.clone()),
        "requested 198.51.100.0 is used by ns/dns and the external traffic policies differ (Local and Cluster)"
    );
    // A fresh allocation with an incompatible profile simply gets another address.
    assert_eq!(
        ips(&ok(&mut a, "ns/local", &local)),
        vec![ip("198.51.100.1")]
    );
    let mut local2 = shared(v4(&["blue"]), "k", &[(Tcp, 9090)]);
    local2.traffic = TrafficPolicy::Local {
        selector: "app=y".into(),
    };
    local2.requested = vec![ip("198.51.100.1")];
    let e = err(&mut a, "ns/local2", &local2);
    assert_eq!(
        e.to_string(),
        "requested 198.51.100.1 is used by ns/local and the pod selectors differ (traffic policy Local)"
    );
    assert!(matches!(
        e,
        AllocError::RequestedInUse {
            conflict: Conflict::SelectorsDiffer,
            ..
        }
    ));
    local2.traffic = local.traffic.clone();
    assert_eq!(
        ips(&ok(&mut a, "ns/local2", &local2)),
        vec![ip("198.51.100.1")]
    );

    // Releasing one sharer keeps the IP for the other.
    assert!(a.release(&key("ns/web")));
    assert!(!a.release(&key("ns/web")));
    assert_eq!(a.services_on(ip("198.51.100.0")).count(), 1);
    assert!(a.release(&key("ns/dns")));
    assert_eq!(a.services_on(ip("198.51.100.0")).count(), 0);
    assert_eq!(
        ips(&ok(&mut a, "ns/n", &v4(&["blue"]))),
        vec![ip("198.51.100.0")]
    );
}

#[test]
fn changing_ports_into_a_conflict_moves_the_service() {
    use Protocol::*;
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28"])]);
    ok(&mut a, "ns/a", &shared(v4(&["blue"]), "k", &[(Tcp, 80)]));
    let b = ok(&mut a, "ns/b", &shared(v4(&["blue"]), "k", &[(Tcp, 443)]));
    assert_eq!(ips(&b), vec![ip("198.51.100.0")]);
    let r = with_current(shared(v4(&["blue"]), "k", &[(Tcp, 80)]), &b);
    assert_eq!(ips(&ok(&mut a, "ns/b", &r)), vec![ip("198.51.100.1")]);
}

#[test]
fn sharing_only_reuses_ips_in_allowed_pools() {
    use Protocol::*;
    let mut a = allocator(vec![
        pool("blue", &["198.51.100.0/28"]),
        pool("red", &["203.0.113.0/28"]),
    ]);
    ok(&mut a, "ns/a", &shared(v4(&["blue"]), "k", &[(Tcp, 80)]));
    let b = ok(&mut a, "ns/b", &shared(v4(&["red"]), "k", &[(Tcp, 443)]));
    assert_eq!(ips(&b), vec![ip("203.0.113.0")]);
}

// ---- 5. allocation order ----

#[test]
fn lowest_free_of_first_pool_with_room() {
    let mut a = allocator(vec![
        pool("blue", &["198.51.100.0/31"]),
        pool("red", &["203.0.113.8-203.0.113.9"]),
    ]);
    let order = ["blue", "red"];
    let got: Vec<IpAddr> = ["ns/a", "ns/b", "ns/c", "ns/d"]
        .iter()
        .flat_map(|s| ips(&ok(&mut a, s, &v4(&order))))
        .collect();
    assert_eq!(
        got,
        vec![
            ip("198.51.100.0"),
            ip("198.51.100.1"),
            ip("203.0.113.8"),
            ip("203.0.113.9")
        ]
    );
    a.release(&key("ns/a"));
    assert_eq!(
        ips(&ok(&mut a, "ns/e", &v4(&order))),
        vec![ip("198.51.100.0")]
    );
    let e = err(&mut a, "ns/f", &v4(&order));
    assert_eq!(
        e.to_string(),
        "pools blue, red exhausted for IPv4 (0 of 4 free)"
    );
    assert_eq!(e.reason(), Reason::PoolExhausted);
}

#[test]
fn avoid_buggy_ips() {
    let mut a = allocator(vec![pool_with(
        "blue",
        &["198.51.100.254-198.51.101.1"],
        true,
        true,
    )]);
    let got: Vec<IpAddr> = ["ns/a", "ns/b"]
        .iter()
        .flat_map(|s| ips(&ok(&mut a, s, &v4(&["blue"]))))
        .collect();
    assert_eq!(got, vec![ip("198.51.100.254"), ip("198.51.101.1")]);
    let e = err(&mut a, "ns/c", &v4(&["blue"]));
    assert_eq!(e.to_string(), "pool blue exhausted (0 of 2 free)");
    let mut r = v4(&["blue"]);
    r.requested = vec![ip("198.51.100.255")];
    assert_eq!(
        err(&mut a, "ns/c", &r).to_string(),
        "requested 198.51.100.255 is in no pool"
    );
    let stats = a.pool_stats("blue").unwrap_or_default();
    assert_eq!(
        (stats.v4.total, stats.v4.assigned, stats.v4.available),
        (2, 2, 0)
    );
}

#[test]
fn overlapping_pools_never_hand_out_one_address_twice() {
    let mut a = allocator(vec![
        pool("blue", &["198.51.100.0/30"]),
        pool("red", &["198.51.100.2/31", "198.51.100.8/31"]),
    ]);
    let overlaps = a.overlaps();
    assert_eq!(overlaps.len(), 1);
    assert_eq!(
        (overlaps[0].a.as_str(), overlaps[0].b.as_str()),
        ("blue", "red")
    );
    assert_eq!(overlaps[0].range.to_string(), "198.51.100.2-198.51.100.3");
    for s in ["ns/a", "ns/b", "ns/c"] {
        ok(&mut a, s, &v4(&["blue"]));
    }
    assert_eq!(
        ips(&ok(&mut a, "ns/d", &v4(&["red"]))),
        vec![ip("198.51.100.3")]
    );
    assert_eq!(
        ips(&ok(&mut a, "ns/e", &v4(&["red"]))),
        vec![ip("198.51.100.8")]
    );
    let red = a.pool_stats("red").unwrap_or_default();
    assert_eq!((red.v4.total, red.v4.assigned, red.v4.available), (4, 3, 1));
    assert_eq!(a.pool_stats("blue").map(|s| s.v4.available), Some(0));
    assert_eq!(a.pool_stats("nope"), None);
}

#[test]
fn requested_ips_must_be_in_the_right_pool() {
    let mut a = allocator(vec![
        pool("blue", &["198.51.100.0/28"]),
        pool_with("gold", &["203.0.113.0/28"], false, false),
    ]);
    let mut r = v4(&["blue"]);
    r.requested = vec![ip("198.51.100.77")];
    let e = err(&mut a, "ns/a", &r);
    assert_eq!(e.to_string(), "requested 198.51.100.77 is in no pool");
    assert_eq!(e.reason().as_str(), "requested_not_in_pool");
    // Outside the candidates but inside an autoAssign=false pool: allowed without a pin.
    r.requested = vec![ip("203.0.113.5")];
    let got = ok(&mut a, "ns/a", &r);
    assert_eq!(got.ips[0].pool.as_deref(), Some("gold"));
    a.release(&key("ns/a"));
    r.pool = Some("blue".into());
    assert_eq!(
        err(&mut a, "ns/a", &r).to_string(),
        "requested 203.0.113.5 is not in pool blue"
    );
    r.pool = Some("nope".into());
    assert_eq!(
        err(&mut a, "ns/a", &r).to_string(),
        "pool nope does not exist"
    );
}

#[test]
fn request_validation_errors() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28", "2001:db8::/124"])]);
    let mut r = v4(&["blue"]);
    r.requested = vec![ip("198.51.100.1"), ip("198.51.100.2")];
    let e = err(&mut a, "ns/a", &r);
    assert_eq!(
        e.to_string(),
        "2 requested IPv4 addresses (198.51.100.1, 198.51.100.2); at most one per family"
    );
    assert_eq!(e.reason(), Reason::TooManyRequested);
    r.requested = vec![ip("2001:db8::1")];
    let e = err(&mut a, "ns/a", &r);
    assert_eq!(
        e.to_string(),
        "requested 2001:db8::1 is IPv6 but the Service asks only for IPv4"
    );
    assert_eq!(e.reason(), Reason::RequestedFamilyMismatch);
    let e = err(&mut a, "ns/a", &v4(&["nope"]));
    assert_eq!(
        e.to_string(),
        "no pool is available for automatic IPv4 assignment"
    );
    assert_eq!(e.reason().as_str(), "no_candidate_pools");
    let e = err(&mut a, "ns/a", &v4(&[]));
    assert_eq!(e.reason(), Reason::NoCandidatePools);
}

// ---- 6. families ----

#[test]
fn prefer_dual_falls_back_require_dual_rolls_back() {
    let mut a = allocator(vec![
        pool("blue", &["198.51.100.0/31"]),
        pool("six", &["2001:db8::/127"]),
    ]);
    let prefer = req(
        FamilyPolicy::PreferDual([Family::V6, Family::V4]),
        &["blue"],
    );
    let got = ok(&mut a, "ns/a", &prefer);
    assert_eq!(
        ips(&got),
        vec![ip("198.51.100.0")],
        "no IPv6 in blue: IPv4 only"
    );
    let both = req(
        FamilyPolicy::PreferDual([Family::V6, Family::V4]),
        &["blue", "six"],
    );
    let got = ok(&mut a, "ns/a", &with_current(both, &got));
    assert_eq!(
        ips(&got),
        vec![ip("2001:db8::"), ip("198.51.100.0")],
        "family order kept"
    );

    let require = req(
        FamilyPolicy::RequireDual([Family::V4, Family::V6]),
        &["blue"],
    );
    let e = err(&mut a, "ns/b", &require);
    assert_eq!(e.to_string(), "no IPv6 addresses in pool(s) blue");
    assert_eq!(e.reason(), Reason::NoPoolHasFamily);
    assert!(a.assignment(&key("ns/b")).is_none());

    // Fill IPv6, then RequireDual must fail without keeping its IPv4.
    let require = req(
        FamilyPolicy::RequireDual([Family::V4, Family::V6]),
        &["blue", "six"],
    );
    ok(
        &mut a,
        "ns/c",
        &req(FamilyPolicy::Single(Family::V6), &["six"]),
    );
    let e = err(&mut a, "ns/b", &require);
    assert_eq!(e.to_string(), "pool six exhausted (0 of 2 free)");
    assert_eq!(a.pool_stats("blue").map(|s| s.v4.available), Some(1));

    // PreferDual with nothing left anywhere fails with the first family's error.
    ok(&mut a, "ns/d", &v4(&["blue"]));
    let prefer = req(
        FamilyPolicy::PreferDual([Family::V4, Family::V6]),
        &["blue", "six"],
    );
    assert_eq!(
        err(&mut a, "ns/e", &prefer),
        AllocError::PoolExhausted {
            pool: "blue".into(),
            free: 0,
            total: 2
        }
    );
}

#[test]
fn prefer_dual_does_not_swallow_requested_errors() {
    let mut a = allocator(vec![pool("blue", &["198.51.100.0/28", "2001:db8::/124"])]);
    let mut r = req(
        FamilyPolicy::PreferDual([Family::V4, Family::V6]),
        &["blue"],
    );
    r.requested = vec![ip("2001:db8:1::1")];
    assert_eq!(err(&mut a, "ns/a", &r).reason(), Reason::RequestedNotInPool);
}

// ---- 8. scale ----

#[test]
fn huge_ipv6_pool_costs_nothing_per_address() {
    let mut a = allocator(vec![pool("big", &["2001:db8::/48"])]);
    let r = req(FamilyPolicy::Single(Family::V6), &["big"]);
    for i in 0..5000u32 {
        ok(&mut a, &format!("ns/s{i}"), &r);
    }
    let s = a.pool_stats("big").unwrap_or_default();
    assert_eq!((s.v6.total, s.v6.assigned), (1u128 << 80, 5000));
    assert_eq!(s.v6.available, (1u128 << 80) - 5000);
    assert_eq!(a.len(), 5000);
    assert_eq!(
        a.assignment(&key("ns/s4999")).map(ips),
        Some(vec![ip("2001:db8::1387")])
    );
}

#[test]
fn avoid_buggy_fill_across_many_blocks() {
    let mut a = allocator(vec![pool_with("wide", &["198.51.0.0/20"], true, true)]);
    let r = v4(&["wide"]);
    for i in 0..(254 * 16) {
        ok(&mut a, &format!("ns/s{i}"), &r);
    }
    let s = a.pool_stats("wide").unwrap_or_default();
    assert_eq!((s.v4.total, s.v4.assigned, s.v4.available), (4064, 4064, 0));
    assert_eq!(a.services_on(ip("198.51.15.254")).count(), 1);
    assert_eq!(err(&mut a, "ns/x", &r).reason(), Reason::PoolExhausted);
}
