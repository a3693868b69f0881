//! Model test: random sequences of pool edits, assigns, releases and restarts against small pools
//! (so exhaustion, orphans and overlaps happen), checking the allocator's invariants after every
//! step against brute-force recomputation:
//!
//! (a) no IP is held by two incompatible Services;
//! (b) a Service never loses an IP it held while that IP was inside some pool and its request
//!     did not change (across other Services' operations, pool edits, its own repeated assign,
//!     and restarts);
//! (c) assign is idempotent, and a failed assign leaves the state exactly as before;
//! (d) pool stats equal a brute-force recount;
//! plus: orphans are exactly the held IPs in no pool, reported pools contain their IPs, holder
//! indexes agree with assignments, and successful assignments honour families and requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_allocator::{
    Allocator, Family, FamilyPolicy, IpRange, PoolConfig, Protocol, Request, ServiceKey,
    SharingKey, TrafficPolicy, is_buggy,
};
use proptest::prelude::*;

const SERVICES: usize = 8;
const SLOTS: usize = 4;
/// Addresses per family window.
const WIDTH: u8 = 12;

/// IPv4 window 198.51.100.250..=198.51.101.5: crosses .255 and .0, so avoidBuggyIPs matters.
fn v4_at(i: u8) -> IpAddr {
    let base = u32::from(std::net::Ipv4Addr::new(198, 51, 100, 250));
    IpAddr::V4((base + u32::from(i)).into())
}

/// IPv6 window 2001:db8::..=2001:db8::b.
fn v6_at(i: u8) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        0,
        u16::from(i),
    ))
}

/// Every address any pool of this test can contain.
fn universe() -> Vec<IpAddr> {
    (0..WIDTH).map(v4_at).chain((0..WIDTH).map(v6_at)).collect()
}

fn slot_name(slot: usize) -> String {
    format!("p{slot}")
}

fn svc_key(i: usize) -> ServiceKey {
    ServiceKey(format!("ns/s{i}"))
}

#[derive(Debug, Clone)]
struct PoolGen {
    v4: Vec<(u8, u8)>,
    v6: Vec<(u8, u8)>,
    auto: bool,
    avoid: bool,
}

#[derive(Debug, Clone)]
struct ReqGen {
    policy: u8,
    requested: Option<(bool, u8)>,
    pin: Option<usize>,
    candidates: Vec<usize>,
    sharing: Option<u8>,
    ports: u8,
    traffic: u8,
    allow: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Assign { svc: usize, new: Option<ReqGen> },
    Release { svc: usize },
    EditPool { slot: usize, pool: Option<PoolGen> },
    Restart,
}

fn pool_gen() -> impl Strategy<Value = PoolGen> {
    // Small ranges (1 to 4 addresses) so a few Services exhaust a pool.
    let ranges = || {
        proptest::collection::vec(
            (0..WIDTH, 0u8..4).prop_map(|(a, len)| (a, (a + len).min(WIDTH - 1))),
            0..3,
        )
    };
    (ranges(), ranges(), any::<bool>(), any::<bool>()).prop_map(|(v4, v6, auto, avoid)| PoolGen {
        v4,
        v6,
        auto,
        avoid,
    })
}

fn req_gen() -> impl Strategy<Value = ReqGen> {
    (
        0u8..6,
        // Requested IPs: often in the crowded low corner, sometimes anywhere (WIDTH = no pool).
        prop_oneof![
            2 => Just(None),
            1 => (any::<bool>(), 0u8..3).prop_map(Some),
            1 => (any::<bool>(), 0..WIDTH + 1).prop_map(Some),
        ],
        prop_oneof![3 => Just(None), 1 => (0..SLOTS).prop_map(Some)],
        proptest::collection::vec(0..SLOTS, 1..4),
        prop_oneof![1 => Just(None), 2 => (0u8..2).prop_map(Some)],
        0u8..8,
        prop_oneof![2 => Just(0u8), 1 => 1u8..3],
        any::<bool>(),
    )
        .prop_map(
            |(policy, requested, pin, candidates, sharing, ports, traffic, allow)| ReqGen {
                policy,
                requested,
                pin,
                candidates,
                sharing,
                ports,
                traffic,
                allow,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SERVICES, req_gen()).prop_map(|(svc, r)| Op::Assign { svc, new: Some(r) }),
        3 => (0..SERVICES).prop_map(|svc| Op::Assign { svc, new: None }),
        1 => (0..SERVICES).prop_map(|svc| Op::Release { svc }),
        2 => (0..SLOTS, proptest::option::weighted(0.8, pool_gen()))
            .prop_map(|(slot, pool)| Op::EditPool { slot, pool }),
        1 => Just(Op::Restart),
    ]
}

fn build_pool(slot: usize, g: &PoolGen) -> PoolConfig {
    let mut ranges = Vec::new();
    for (at, pairs) in [(v4_at as fn(u8) -> IpAddr, &g.v4), (v6_at, &g.v6)] {
        for &(a, b) in pairs {
            // Through the parser, so pool entries written as ranges are exercised too.
            let text = format!("{} - {}", at(a.min(b)), at(a.max(b)));
            match text.parse::<IpRange>() {
                Ok(r) => ranges.push(r),
                Err(e) => panic!("generated range {text} rejected: {e}"),
            }
        }
    }
    PoolConfig {
        name: slot_name(slot),
        ranges,
        auto_assign: g.auto,
        avoid_buggy_ips: g.avoid,
    }
}

fn build_request(g: &ReqGen) -> Request {
    use Family::*;
    let families = match g.policy {
        0 => FamilyPolicy::Single(V4),
        1 => FamilyPolicy::Single(V6),
        2 => FamilyPolicy::PreferDual([V4, V6]),
        3 => FamilyPolicy::PreferDual([V6, V4]),
        4 => FamilyPolicy::RequireDual([V4, V6]),
        _ => FamilyPolicy::RequireDual([V6, V4]),
    };
    let mut r = Request::new(families);
    r.requested = match g.requested {
        // Index WIDTH is outside every pool.
        Some((false, i)) => vec![v4_at(i)],
        Some((true, i)) => vec![v6_at(i)],
        None => vec![],
    };
    r.pool = g.pin.map(slot_name);
    r.candidate_pools = g.candidates.iter().map(|s| slot_name(*s)).collect();
    r.sharing = g.sharing.map(|k| SharingKey(format!("k{k}")));
    let all_ports = [
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 443),
        (Protocol::Udp, 53),
    ];
    r.ports = all_ports
        .iter()
        .enumerate()
        .filter(|(i, _)| g.ports & (1 << i) != 0)
        .map(|(_, p)| *p)
        .collect();
    r.traffic = match g.traffic {
        0 => TrafficPolicy::Cluster,
        1 => TrafficPolicy::Local {
            selector: "app=a".into(),
        },
        _ => TrafficPolicy::Local {
            selector: "app=b".into(),
        },
    };
    r.allow_ip_change = g.allow;
    r
}

/// Independent statement of the sharing rule.
fn compatible(a: &Request, b: &Request) -> bool {
    let keys = matches!((&a.sharing, &b.sharing), (Some(x), Some(y)) if x == y);
    let traffic = a.traffic == b.traffic;
    let ports = a.ports.iter().all(|p| !b.ports.contains(p));
    keys && traffic && ports
}

/// `req` as the shell sends it: with the published status as `current`.
fn with_current(req: &Request, current: Vec<IpAddr>) -> Request {
    let mut r = req.clone();
    r.current = current;
    r
}

fn in_pool(p: &PoolConfig, ip: IpAddr) -> bool {
    p.ranges.iter().any(|r| r.contains(ip)) && !(p.avoid_buggy_ips && is_buggy(ip))
}

/// What the generated runs exercised; asserted at the end so the test cannot silently become
/// vacuous (e.g. if a generator change stopped producing shared IPs or orphans).
#[derive(Debug, Default)]
struct Coverage {
    assigned: usize,
    failed: BTreeMap<&'static str, usize>,
    stable_checks: usize,
    shared_ips: usize,
    orphans: usize,
    restarts_with_ips: usize,
    restart_checks: usize,
    dual: usize,
}

struct Harness {
    cov: Coverage,
    alloc: Allocator,
    slots: Vec<Option<PoolConfig>>,
    /// The Service's spec as the shell currently sees it.
    latest: BTreeMap<usize, Request>,
    /// The request whose sharing profile the allocator's record holds (last successful assign,
    /// or the spec it was restored with).
    committed: BTreeMap<usize, Request>,
    /// The request of the last successful assign: the held IPs were chosen for it, so repeating
    /// it must keep them (b).
    last_ok: BTreeMap<usize, Request>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            cov: Coverage::default(),
            alloc: Allocator::new(),
            slots: vec![None; SLOTS],
            latest: BTreeMap::new(),
            committed: BTreeMap::new(),
            last_ok: BTreeMap::new(),
        }
    }

    fn pools(&self) -> Vec<PoolConfig> {
        self.slots.iter().flatten().cloned().collect()
    }

    fn in_some_pool(&self, ip: IpAddr) -> bool {
        self.slots.iter().flatten().any(|p| in_pool(p, ip))
    }

    fn held(&self, svc: usize) -> Vec<IpAddr> {
        self.alloc
            .assignment(&svc_key(svc))
            .map(|a| a.addresses().collect())
            .unwrap_or_default()
    }

    fn all_held(&self) -> BTreeMap<usize, Vec<IpAddr>> {
        (0..SERVICES)
            .map(|s| (s, self.held(s)))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    fn clean(&self, svc: usize) -> bool {
        self.latest.contains_key(&svc) && self.latest.get(&svc) == self.last_ok.get(&svc)
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.all_held();
        match op {
            Op::Assign { svc, new } => {
                let req = match new {
                    Some(g) => build_request(g),
                    None => match self.latest.get(svc) {
                        Some(r) => r.clone(),
                        None => return Ok(()),
                    },
                };
                self.assign(*svc, req, &before)?;
                self.check_others_unchanged(&before, Some(*svc))?;
            }
            Op::Release { svc } => {
                let had = self.alloc.assignment(&svc_key(*svc)).is_some();
                prop_assert_eq!(self.alloc.release(&svc_key(*svc)), had);
                prop_assert!(self.alloc.assignment(&svc_key(*svc)).is_none());
                self.latest.remove(svc);
                self.committed.remove(svc);
                self.last_ok.remove(svc);
                self.check_others_unchanged(&before, Some(*svc))?;
            }
            Op::EditPool { slot, pool } => {
                self.slots[*slot] = pool.as_ref().map(|g| build_pool(*slot, g));
                self.alloc.set_pools(self.pools());
                // Pool edits never renumber anybody.
                self.check_others_unchanged(&before, None)?;
            }
            Op::Restart => self.restart(&before)?,
        }
        self.check_invariants()
    }

    fn assign(
        &mut self,
        svc: usize,
        req: Request,
        before: &BTreeMap<usize, Vec<IpAddr>>,
    ) -> Result<(), TestCaseError> {
        let key = svc_key(svc);
        let held_before = before.get(&svc).cloned().unwrap_or_default();
        let full = with_current(&req, held_before.clone());
        let clean = self.last_ok.get(&svc) == Some(&req);
        let snapshot = self.alloc.clone();
        let result = self.alloc.assign(&key, &full);
        self.latest.insert(svc, req.clone());
        match &result {
            Err(e) => {
                *self.cov.failed.entry(e.reason().as_str()).or_default() += 1;
                // (c) a failure changes nothing, and fails the same way again.
                prop_assert!(self.alloc == snapshot, "failed assign changed state: {}", e);
                let again = self.alloc.assign(&key, &full);
                prop_assert_eq!(again.as_ref().err(), Some(e));
                prop_assert!(self.alloc == snapshot);
            }
            Ok(got) => {
                self.cov.assigned += 1;
                if got.ips.len() == 2 {
                    self.cov.dual += 1;
                }
                self.committed.insert(svc, req.clone());
                self.last_ok.insert(svc, req.clone());
                prop_assert_eq!(self.alloc.assignment(&key), Some(got));
                // (c) idempotent, with the old and with the newly published status.
                let after = self.alloc.clone();
                let again = self.alloc.assign(&key, &full);
                prop_assert_eq!(again.as_ref().ok(), Some(got), "repeat with old current");
                prop_assert!(self.alloc == after, "repeat changed state");
                let published = with_current(&req, got.addresses().collect());
                let again = self.alloc.assign(&key, &published);
                prop_assert_eq!(again.as_ref().ok(), Some(got), "repeat with new current");
                prop_assert!(self.alloc == after, "repeat changed state");
                self.check_honours_request(&req, got.addresses().collect())?;
            }
        }
        // (b) same request as the one the held IPs were committed for: IPs inside some pool stay.
        if clean {
            let now = self.held(svc);
            for ip in &held_before {
                if self.in_some_pool(*ip) {
                    self.cov.stable_checks += 1;
                    prop_assert!(
                        now.contains(ip),
                        "{} lost {} (still in a pool) on an unchanged request; now {:?}, result {:?}",
                        key,
                        ip,
                        now,
                        result
                    );
                }
            }
        }
        Ok(())
    }

    fn restart(&mut self, before: &BTreeMap<usize, Vec<IpAddr>>) -> Result<(), TestCaseError> {
        if !before.is_empty() {
            self.cov.restarts_with_ips += 1;
        }
        let mut fresh = Allocator::new();
        fresh.set_pools(self.pools());
        let clean: BTreeSet<usize> = (0..SERVICES).filter(|s| self.clean(*s)).collect();
        // Pass 1: every Service with a published status re-registers it.
        for (svc, req) in &self.latest {
            let status = before.get(svc).cloned().unwrap_or_default();
            if status.is_empty() {
                continue;
            }
            let kept = fresh.restore(&svc_key(*svc), &with_current(req, status.clone()));
            for ip in kept.addresses() {
                prop_assert!(status.contains(&ip), "restore invented {}", ip);
            }
        }
        // Pass 2: every Service is reconciled.
        let mut succeeded = BTreeSet::new();
        for (svc, req) in &self.latest {
            let status = before.get(svc).cloned().unwrap_or_default();
            if fresh
                .assign(&svc_key(*svc), &with_current(req, status))
                .is_ok()
            {
                succeeded.insert(*svc);
            }
        }
        self.alloc = fresh;
        self.committed = self
            .latest
            .iter()
            .filter(|(svc, _)| self.alloc.assignment(&svc_key(**svc)).is_some())
            .map(|(svc, r)| (*svc, r.clone()))
            .collect();
        self.last_ok = self
            .latest
            .iter()
            .filter(|(svc, _)| succeeded.contains(*svc))
            .map(|(svc, r)| (*svc, r.clone()))
            .collect();
        // (b) across a restart. If some holder of an IP had a pending (failed) spec change, the
        // published statuses may conflict and the first restored wins: excluded, documented on
        // `Allocator::restore`.
        let holders_of = |ip: IpAddr| {
            before
                .iter()
                .filter(move |(_, v)| v.contains(&ip))
                .map(|(s, _)| *s)
        };
        for (svc, ips) in before {
            if !clean.contains(svc) {
                continue;
            }
            let now = self.held(*svc);
            for ip in ips {
                let uncontested = holders_of(*ip).all(|h| clean.contains(&h));
                if uncontested && self.in_some_pool(*ip) {
                    self.cov.restart_checks += 1;
                    prop_assert!(now.contains(ip), "restart lost {} of ns/s{}", ip, svc);
                }
            }
        }
        Ok(())
    }

    fn check_others_unchanged(
        &self,
        before: &BTreeMap<usize, Vec<IpAddr>>,
        except: Option<usize>,
    ) -> Result<(), TestCaseError> {
        let now = self.all_held();
        for s in 0..SERVICES {
            if Some(s) != except {
                prop_assert_eq!(before.get(&s), now.get(&s), "ns/s{} was renumbered", s);
            }
        }
        Ok(())
    }

    fn check_honours_request(&self, req: &Request, ips: Vec<IpAddr>) -> Result<(), TestCaseError> {
        let families = req.families.families();
        let got: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
        // In family order, each family at most once.
        let expected_order: Vec<Family> = families
            .iter()
            .copied()
            .filter(|f| got.contains(f))
            .collect();
        prop_assert_eq!(&got, &expected_order);
        prop_assert!(!got.is_empty());
        match req.families {
            FamilyPolicy::Single(_) => prop_assert_eq!(got.len(), 1),
            FamilyPolicy::RequireDual(_) => prop_assert_eq!(got.len(), families.len()),
            FamilyPolicy::PreferDual(_) => {}
        }
        for want in &req.requested {
            prop_assert!(
                ips.contains(want),
                "requested {} not given: {:?}",
                want,
                ips
            );
        }
        Ok(())
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        let held = self.all_held();
        // Records exist exactly for committed Services.
        let with_records: BTreeSet<usize> = held.keys().copied().collect();
        let committed: BTreeSet<usize> = self.committed.keys().copied().collect();
        prop_assert_eq!(&with_records, &committed);

        // (a) holders of one IP are pairwise compatible, by the committed requests.
        let mut by_ip: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (svc, ips) in &held {
            let fams: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
            prop_assert!(fams.len() <= 2 && (fams.len() < 2 || fams[0] != fams[1]));
            for ip in ips {
                by_ip.entry(*ip).or_default().push(*svc);
            }
        }
        self.cov.shared_ips += by_ip.values().filter(|v| v.len() > 1).count();
        for (ip, svcs) in &by_ip {
            for (i, a) in svcs.iter().enumerate() {
                for b in &svcs[i + 1..] {
                    let (ra, rb) = (&self.committed[a], &self.committed[b]);
                    prop_assert!(
                        compatible(ra, rb),
                        "{} shared by incompatible ns/s{} and ns/s{}",
                        ip,
                        a,
                        b
                    );
                }
            }
            let mut on: Vec<ServiceKey> = self.alloc.services_on(*ip).cloned().collect();
            on.sort();
            let want: Vec<ServiceKey> = svcs.iter().map(|s| svc_key(*s)).collect();
            prop_assert_eq!(on, want);
        }
        prop_assert_eq!(self.alloc.len(), by_ip.len());
        prop_assert_eq!(self.alloc.service_count(), held.len());

        // Orphans and reported pools, by brute force.
        let mut orphans = BTreeSet::new();
        for (svc, a) in self.alloc.services() {
            for x in &a.ips {
                match &x.pool {
                    None => {
                        prop_assert!(
                            !self.in_some_pool(x.ip),
                            "{} reported orphaned but is in a pool",
                            x.ip
                        );
                        orphans.insert((svc.clone(), x.ip));
                    }
                    Some(name) => {
                        let p = self.slots.iter().flatten().find(|p| &p.name == name);
                        prop_assert!(
                            p.is_some_and(|p| in_pool(p, x.ip)),
                            "{} not in reported pool {}",
                            x.ip,
                            name
                        );
                    }
                }
            }
        }
        let reported: BTreeSet<(ServiceKey, IpAddr)> = self
            .alloc
            .orphaned()
            .map(|(k, ip)| (k.clone(), ip))
            .collect();
        self.cov.orphans += orphans.len();
        prop_assert_eq!(reported, orphans);

        // (d) pool stats equal a recount over every address of the small windows.
        let used: BTreeSet<IpAddr> = by_ip.keys().copied().collect();
        for p in self.slots.iter().flatten() {
            let Some(stats) = self.alloc.pool_stats(&p.name) else {
                return Err(TestCaseError::fail(format!("no stats for {}", p.name)));
            };
            for family in Family::ALL {
                let members: Vec<IpAddr> = universe()
                    .into_iter()
                    .filter(|ip| Family::of(*ip) == family && in_pool(p, *ip))
                    .collect();
                let total = members.len() as u128;
                let assigned = members.iter().filter(|ip| used.contains(ip)).count() as u128;
                let s = stats.family(family);
                prop_assert_eq!(
                    (s.total, s.assigned, s.available),
                    (total, assigned, total - assigned),
                    "{} {}",
                    p.name,
                    family
                );
            }
        }
        Ok(())
    }
}

/// Default 256 cases (about a second); `PROPTEST_CASES=20000` for a longer soak.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[test]
fn allocator_keeps_its_promises() {
    use proptest::test_runner::{Config, TestRunner};
    let config = Config {
        cases: cases(),
        // Integration tests have no lib.rs next to them for the default persistence file.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let total = std::cell::RefCell::new(Coverage::default());
    let initial_pools =
        proptest::collection::vec(proptest::option::weighted(0.9, pool_gen()), SLOTS);
    let strategy = (initial_pools, proptest::collection::vec(op(), 1..40));
    let result = runner.run(&strategy, |(initial, ops)| {
        let mut h = Harness::new();
        for (slot, pool) in initial.into_iter().enumerate() {
            h.step(&Op::EditPool { slot, pool })?;
        }
        for op in &ops {
            h.step(op)?;
        }
        let mut t = total.borrow_mut();
        t.assigned += h.cov.assigned;
        t.stable_checks += h.cov.stable_checks;
        t.shared_ips += h.cov.shared_ips;
        t.orphans += h.cov.orphans;
        t.restarts_with_ips += h.cov.restarts_with_ips;
        t.restart_checks += h.cov.restart_checks;
        t.dual += h.cov.dual;
        for (k, v) in h.cov.failed {
            *t.failed.entry(k).or_default() += v;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = total.into_inner();
    eprintln!("coverage: {t:?}");
    let cases = cases() as usize;
    // Each behaviour must show up in a fair share of the runs (thresholds far below what the
    // default 256 cases produce, so they are not flaky, but far above zero).
    for (what, n) in [
        ("successful assigns", t.assigned),
        ("stability checks", t.stable_checks),
        ("shared IPs", t.shared_ips),
        ("orphans", t.orphans),
        ("restarts with IPs", t.restarts_with_ips),
        ("restart stability checks", t.restart_checks),
        ("dual-stack assignments", t.dual),
    ] {
        assert!(
            n >= cases / 8,
            "model test too weak: only {n} {what} in {cases} cases: {t:?}"
        );
    }
    for reason in [
        "pool_exhausted",
        "requested_in_use",
        "unknown_pool",
        "requested_not_in_pool",
    ] {
        let n = t.failed.get(reason).copied().unwrap_or(0);
        assert!(
            n >= cases / 16,
            "model test too weak: only {n} {reason} errors: {t:?}"
        );
    }
}
