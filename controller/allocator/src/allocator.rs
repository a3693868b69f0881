//! The allocator: which Service holds which IP, and the rules for handing IPs out.
//!
//! Owns the allocation state (pools, per-Service records, holders per IP, the used-address index)
//! and every decision about it: stability, sharing, pinning, family policies, orphans. It is pure:
//! it never awaits, reads clocks, env or sockets, and knows nothing of Kubernetes objects. It must
//! not allocate per address of a pool: memory grows with Services and IPs in use, never with
//! pool size.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::error::{AllocError, Conflict};
use crate::holders::Holders;
use crate::pool::{Overlap, Pool, PoolConfig, PoolStats};
use crate::request::{
    AssignedIp, Assignment, FamilyPolicy, Profile, Request, ServiceKey, SharingKey,
};
use crate::used::UsedIndex;
use ferrolb_addresses::Family;

/// What the allocator remembers about one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    assignment: Assignment,
    /// Sharing-relevant parts of the request the assignment was made for.
    profile: Profile,
    /// The pinned pool at that time; a change of pin is what makes a Service leave a pool.
    pin: Option<String>,
}

/// Whether planning may hand out new addresses ([`Allocator::assign`]) or only keep existing ones
/// ([`Allocator::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Assign,
    Restore,
}

/// What to do with an IP a Service already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Orphaned and the user allows a change: move if an address is available, else keep.
    KeepUnlessMoved,
    Move,
}

/// Everything planning needs about the Service being assigned.
struct Ctx<'a> {
    svc: &'a ServiceKey,
    req: &'a Request,
    profile: &'a Profile,
    prev: Option<&'a Record>,
}

impl Ctx<'_> {
    /// IPs of `family` the Service already has, without duplicates. With no record (a restart)
    /// that is `current`, the published status. With a record, what the allocator holds comes
    /// first: it is the newer decision, and the published status may lag behind it.
    fn existing(&self, family: Family) -> Vec<IpAddr> {
        let held: Vec<IpAddr> = self
            .prev
            .into_iter()
            .flat_map(|r| r.assignment.addresses())
            .collect();
        let mut out = Vec::new();
        for ip in held.into_iter().chain(self.req.current.iter().copied()) {
            if Family::of(ip) == family && !out.contains(&ip) {
                out.push(ip);
            }
        }
        out
    }

    /// Whether `ip` may stay outside the pinned pool: it was accepted under this same pin and
    /// only pool edits moved it out (or there is no record to compare with, after a restart,
    /// where keeping is the conservative choice). An IP from a stale `current`, or one held
    /// under another pin, is not vouched for: a re-pinned Service must live in its new pool.
    fn vouched(&self, ip: IpAddr) -> bool {
        match self.prev {
            None => true,
            Some(r) => r.pin == self.req.pool && r.assignment.addresses().any(|a| a == ip),
        }
    }
}

/// The first of `preferred` pools that contains `ip`, else the first pool by name that does.
fn pool_name_for<'a>(
    pools: &BTreeMap<String, Pool>,
    ip: IpAddr,
    preferred: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    for name in preferred {
        if pools.get(name).is_some_and(|p| p.contains(ip)) {
            return Some(name.to_string());
        }
    }
    pools
        .values()
        .find(|p| p.contains(ip))
        .map(|p| p.name.clone())
}

/// Assigns LoadBalancer IPs from pools to Services.
///
/// The product's promises, each tested in `tests/promises.rs` and by the model test:
///
/// 1. **Idempotent**: [`assign`](Self::assign) again with the same request returns the same IPs
///    and changes nothing.
/// 2. **Stable**: a Service keeps the IPs it has (`Request::current`, or what the allocator holds
///    for it) while they remain valid: family still requested, still in *some* pool (any pool,
///    even one outside its candidates, so priority changes never renumber), no conflict with the
///    other holders. It moves when its request changes so that an IP no longer satisfies it: a
///    different requested IP, a new pin whose pool does not contain it, sharing attributes that
///    now conflict. (An IP outside the pinned pool is kept only if it was accepted under that
///    same pin and pool edits moved it out.) [`set_pools`](Self::set_pools) never renumbers
///    anybody.
/// 3. **Orphans**: an IP that falls out of every pool is kept (its `AssignedIp::pool` is `None`,
///    it is listed by [`orphaned`](Self::orphaned), and it still blocks other Services) unless
///    `allow_ip_change` is set, in which case `assign` moves it when an address is available.
/// 4. **Sharing**: two Services hold one IP only if compatible: same sharing key, same traffic
///    policy (and selector for Local), no common (protocol, port).
/// 5. **Order**: requested IPs must be in some pool (in the pinned pool when pinned). Otherwise
///    the pinned pool, else `candidate_pools` in order; with a sharing key an IP already held by
///    a compatible Service with the same key is reused first; then the lowest free address of
///    the first pool that has one (skipping `.0`/`.255` in avoidBuggyIPs pools). An address is
///    free only if nobody holds it, whichever pool it came from.
/// 6. **Families**: Single gives one IP; PreferDual one per family when possible, else whichever
///    succeeded; RequireDual both or an error. Any error leaves the state exactly as before.
///
/// Cost: O(P + log n) per `assign` for n IPs in use and P pools (P for "is this IP in some
/// pool"), O(log n) to find a free address in a range, memory O(n + ranges). A restart replays
/// every Service with [`restore`](Self::restore) and then [`assign`](Self::assign): O(n log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocator {
    pools: BTreeMap<String, Pool>,
    /// Boxed because B-tree nodes keep 11 values inline and are typically a third empty: an
    /// empty slot then costs a pointer, not a whole record.
    services: BTreeMap<ServiceKey, Box<Record>>,
    /// Who holds each IP in use; never an empty set.
    holders: BTreeMap<IpAddr, Holders>,
    /// Services per sharing key, to find a shareable IP without scanning everyone.
    by_sharing: BTreeMap<SharingKey, BTreeSet<ServiceKey>>,
    /// Exactly the keys of `holders`, as merged runs for free-address search.
    used: UsedIndex,
}

impl Allocator {
    /// An allocator with no pools and no Services.
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// Replaces the pool set. Never renumbers anybody: held IPs stay held; only their
    /// `AssignedIp::pool` is recomputed (the same pool if it still contains the IP, else another
    /// pool containing it, else `None` = orphaned). On duplicate names the last config wins.
    pub fn set_pools(&mut self, pools: Vec<PoolConfig>) {
        self.pools = pools
            .into_iter()
            .map(|c| (c.name.clone(), Pool::from_config(c)))
            .collect();
        let pools = &self.pools;
        for record in self.services.values_mut() {
            for a in &mut record.assignment.ips {
                let preferred = a.pool.as_deref().into_iter().chain(record.pin.as_deref());
                let name = pool_name_for(pools, a.ip, preferred);
                a.pool = name;
            }
        }
    }

    /// Gives `svc` the IPs its request calls for, keeping what it has whenever still valid (see
    /// the promises on [`Allocator`]). Idempotent. On error nothing changes.
    ///
    /// PreferDual tolerates a capacity error ([`AllocError::is_capacity`]) for one family; errors
    /// about requested IPs or an unknown pinned pool always fail the whole request. When both
    /// families fail, the first family's error is returned.
    pub fn assign(&mut self, svc: &ServiceKey, req: &Request) -> Result<Assignment, AllocError> {
        let profile = Profile::of(req);
        let planned = self.plan(svc, req, &profile, Mode::Assign)?;
        Ok(self.commit(svc, planned, profile, req.pool.clone()))
    }

    /// Re-registers what `svc` already has, for a restart: keeps, per requested family, the
    /// first IP of `req.current` (after anything already held) and that does not conflict with the
    /// holders restored so far, wherever it lies (in a pool or not). Never hands out a new IP,
    /// never fails, ignores `requested`. Feed every Service through `restore` first, then
    /// through [`assign`](Self::assign), so no fresh allocation can take an IP another Service
    /// has published. If two published statuses conflict, the Service restored first keeps
    /// the IP. Returns what is now held (possibly nothing, in which case no record is kept).
    pub fn restore(&mut self, svc: &ServiceKey, req: &Request) -> Assignment {
        let profile = Profile::of(req);
        // Restore mode only keeps IPs, and keeping cannot fail.
        let planned = self
            .plan(svc, req, &profile, Mode::Restore)
            .unwrap_or_default();
        self.commit(svc, planned, profile, req.pool.clone())
    }

    /// Forgets `svc` and frees its IPs (shared IPs stay with their other holders). False if it
    /// held nothing.
    pub fn release(&mut self, svc: &ServiceKey) -> bool {
        self.forget(svc)
    }

    /// What `svc` holds.
    pub fn assignment(&self, svc: &ServiceKey) -> Option<&Assignment> {
        self.services.get(svc).map(|r| &r.assignment)
    }

    /// Every Service with its assignment, by key.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.services.iter().map(|(k, r)| (k, &r.assignment))
    }

    /// Counters of `pool` per family; `assigned` counts addresses of the pool held by anybody,
    /// whichever pool they were handed out from. O(ranges · (log n + runs inside)).
    pub fn pool_stats(&self, pool: &str) -> Option<PoolStats> {
        let p = self.pools.get(pool)?;
        Some(PoolStats {
            v4: p.stats(&self.used, Family::V4),
            v6: p.stats(&self.used, Family::V6),
        })
    }

    /// Every pair of pools sharing addresses, with each maximal shared range (raw ranges, before
    /// avoidBuggyIPs). Sorted by pool names. O(P² · ranges).
    pub fn overlaps(&self) -> Vec<Overlap> {
        let pools: Vec<&Pool> = self.pools.values().collect();
        let mut out = Vec::new();
        for (i, a) in pools.iter().enumerate() {
            for b in pools.iter().skip(i + 1) {
                for range in a.overlaps_with(b) {
                    out.push(Overlap {
                        a: a.name.clone(),
                        b: b.name.clone(),
                        range,
                    });
                }
            }
        }
        out
    }

    /// The Services holding `ip` (several when shared), by key.
    pub fn services_on(&self, ip: IpAddr) -> impl Iterator<Item = &ServiceKey> {
        self.holders.get(&ip).into_iter().flatten()
    }

    /// IPs held although they are in no pool any more, with their Service. O(Services).
    pub fn orphaned(&self) -> impl Iterator<Item = (&ServiceKey, IpAddr)> {
        self.services.iter().flat_map(|(k, r)| {
            r.assignment
                .ips
                .iter()
                .filter(|a| a.pool.is_none())
                .map(move |a| (k, a.ip))
        })
    }

    /// Number of distinct IPs in use.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    /// True when no IP is in use.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// Number of Services holding at least one IP.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Names of the current pools, sorted.
    pub fn pool_names(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }

    /// Names of the autoAssign pools, sorted, for shells that build `candidate_pools` from the
    /// allocator's view of the pools.
    pub fn auto_assign_pools(&self) -> impl Iterator<Item = &str> {
        self.pools
            .values()
            .filter(|p| p.auto_assign)
            .map(|p| p.name.as_str())
    }

    // ---- planning (read-only) ----

    /// Decides the IPs for `svc` without changing anything, so a failure needs no rollback.
    fn plan(
        &self,
        svc: &ServiceKey,
        req: &Request,
        profile: &Profile,
        mode: Mode,
    ) -> Result<Vec<AssignedIp>, AllocError> {
        if mode == Mode::Assign {
            validate_requested(req)?;
        }
        let ctx = Ctx {
            svc,
            req,
            profile,
            prev: self.services.get(svc).map(|r| &**r),
        };
        let mut planned = Vec::new();
        let mut tolerated = None;
        for family in req.families.families() {
            match self.plan_family(&ctx, family, mode) {
                Ok(Some(a)) => planned.push(a),
                Ok(None) => {}
                Err(e)
                    if matches!(req.families, FamilyPolicy::PreferDual(_)) && e.is_capacity() =>
                {
                    tolerated.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match tolerated {
            Some(e) if planned.is_empty() => Err(e),
            _ => Ok(planned),
        }
    }

    /// The IP of one family: the requested one, else a still-valid existing one, else a fresh one.
    /// `Ok(None)` only in restore mode (nothing to keep).
    fn plan_family(
        &self,
        ctx: &Ctx<'_>,
        family: Family,
        mode: Mode,
    ) -> Result<Option<AssignedIp>, AllocError> {
        let existing = ctx.existing(family);
        let requested = match mode {
            Mode::Assign => ctx
                .req
                .requested
                .iter()
                .copied()
                .find(|ip| Family::of(*ip) == family),
            Mode::Restore => None,
        };
        if let Some(ip) = requested {
            // Already ours and still acceptable: keep it even if orphaned, since the user asked
            // for exactly this address there is nowhere else to move it.
            if existing.contains(&ip) && self.verdict(ctx, ip) != Verdict::Move {
                return Ok(Some(self.named(ctx, ip)));
            }
            return self.take_requested(ctx, ip).map(Some);
        }
        let mut orphan = None;
        for ip in existing {
            match self.verdict(ctx, ip) {
                Verdict::Keep => return Ok(Some(self.named(ctx, ip))),
                Verdict::KeepUnlessMoved => {
                    orphan.get_or_insert(ip);
                }
                Verdict::Move => {}
            }
        }
        if mode == Mode::Restore {
            return Ok(orphan.map(|ip| self.named(ctx, ip)));
        }
        match (self.fresh(ctx, family), orphan) {
            (Ok(a), _) => Ok(Some(a)),
            // allow_ip_change permits a move, it does not demand one: with nowhere to go, stay.
            (Err(_), Some(ip)) => Ok(Some(self.named(ctx, ip))),
            (Err(e), None) => Err(e),
        }
    }

    /// Whether an IP the Service already has may stay with it.
    fn verdict(&self, ctx: &Ctx<'_>, ip: IpAddr) -> Verdict {
        if self.conflict(ctx.svc, ip, ctx.profile).is_some() {
            return Verdict::Move;
        }
        if let Some(pin) = &ctx.req.pool
            && !ctx.vouched(ip)
        {
            return if self.pools.get(pin).is_some_and(|p| p.contains(ip)) {
                Verdict::Keep
            } else {
                Verdict::Move
            };
        }
        if self.pools.values().any(|p| p.contains(ip)) {
            Verdict::Keep
        } else if ctx.req.allow_ip_change {
            Verdict::KeepUnlessMoved
        } else {
            Verdict::Keep
        }
    }

    /// A requested IP the Service does not already hold (or may not keep as is).
    fn take_requested(&self, ctx: &Ctx<'_>, ip: IpAddr) -> Result<AssignedIp, AllocError> {
        let assigned = match &ctx.req.pool {
            Some(pin) => {
                let pool = self
                    .pools
                    .get(pin)
                    .ok_or_else(|| AllocError::UnknownPool { pool: pin.clone() })?;
                if !pool.contains(ip) {
                    return Err(AllocError::RequestedNotInPool {
                        ip,
                        pool: Some(pin.clone()),
                    });
                }
                AssignedIp {
                    ip,
                    pool: Some(pin.clone()),
                }
            }
            None => {
                let named = self.named(ctx, ip);
                if named.pool.is_none() {
                    return Err(AllocError::RequestedNotInPool { ip, pool: None });
                }
                named
            }
        };
        if let Some((holder, conflict)) = self.conflict(ctx.svc, ip, ctx.profile) {
            return Err(AllocError::RequestedInUse {
                ip,
                holder,
                conflict,
            });
        }
        Ok(assigned)
    }

    /// A new IP of `family` from the pinned pool or the candidate pools.
    fn fresh(&self, ctx: &Ctx<'_>, family: Family) -> Result<AssignedIp, AllocError> {
        let allowed: Vec<&Pool> = match &ctx.req.pool {
            Some(pin) => vec![
                self.pools
                    .get(pin)
                    .ok_or_else(|| AllocError::UnknownPool { pool: pin.clone() })?,
            ],
            None => {
                // Unknown candidates are skipped: the shell's list may be a moment out of date.
                let mut seen = BTreeSet::new();
                ctx.req
                    .candidate_pools
                    .iter()
                    .filter(|n| seen.insert(n.as_str()))
                    .filter_map(|n| self.pools.get(n))
                    .collect()
            }
        };
        if allowed.is_empty() {
            return Err(AllocError::NoCandidatePools { family });
        }
        let with_family: Vec<&Pool> = allowed
            .iter()
            .copied()
            .filter(|p| p.has_family(family))
            .collect();
        if with_family.is_empty() {
            return Err(AllocError::NoPoolHasFamily {
                family,
                pools: allowed.iter().map(|p| p.name.clone()).collect(),
            });
        }
        if let Some(key) = &ctx.profile.sharing
            && let Some(shared) = self.shareable(ctx, key, family, &with_family)
        {
            return Ok(shared);
        }
        for pool in &with_family {
            if let Some(ip) = pool.lowest_free(&self.used, family) {
                return Ok(AssignedIp {
                    ip,
                    pool: Some(pool.name.clone()),
                });
            }
        }
        // Every allowed pool answered "no free address", so nothing is free: free is 0.
        Err(match with_family.as_slice() {
            [pool] => AllocError::PoolExhausted {
                pool: pool.name.clone(),
                free: 0,
                total: pool.total(family),
            },
            pools => AllocError::PoolsExhausted {
                family,
                pools: pools.iter().map(|p| p.name.clone()).collect(),
                free: 0,
                total: pools
                    .iter()
                    .fold(0u128, |acc, p| acc.saturating_add(p.total(family))),
            },
        })
    }

    /// An IP of `family` held by another Service with the same sharing key, compatible with all
    /// its holders and inside one of `pools` (earlier pools first, then lowest address).
    fn shareable(
        &self,
        ctx: &Ctx<'_>,
        key: &SharingKey,
        family: Family,
        pools: &[&Pool],
    ) -> Option<AssignedIp> {
        let candidates: BTreeSet<IpAddr> = self
            .by_sharing
            .get(key)?
            .iter()
            .filter(|s| *s != ctx.svc)
            .filter_map(|s| self.services.get(s))
            .flat_map(|r| r.assignment.addresses())
            .filter(|ip| Family::of(*ip) == family)
            .collect();
        pools.iter().find_map(|pool| {
            candidates
                .iter()
                .find(|ip| {
                    pool.contains(**ip) && self.conflict(ctx.svc, **ip, ctx.profile).is_none()
                })
                .map(|ip| AssignedIp {
                    ip: *ip,
                    pool: Some(pool.name.clone()),
                })
        })
    }

    /// The first holder of `ip` other than `svc` that `profile` may not share with.
    fn conflict(
        &self,
        svc: &ServiceKey,
        ip: IpAddr,
        profile: &Profile,
    ) -> Option<(ServiceKey, Conflict)> {
        self.holders.get(&ip)?.iter().find_map(|holder| {
            if holder == svc {
                return None;
            }
            let record = self.services.get(holder)?;
            profile
                .conflict_with(&record.profile)
                .map(|c| (holder.clone(), c))
        })
    }

    /// `ip` with the pool to report: the one it was in before, the pin, a candidate, any pool.
    fn named(&self, ctx: &Ctx<'_>, ip: IpAddr) -> AssignedIp {
        let before = ctx
            .prev
            .and_then(|r| r.assignment.ips.iter().find(|a| a.ip == ip))
            .and_then(|a| a.pool.as_deref());
        let preferred = before
            .into_iter()
            .chain(ctx.req.pool.as_deref())
            .chain(ctx.req.candidate_pools.iter().map(String::as_str));
        AssignedIp {
            ip,
            pool: pool_name_for(&self.pools, ip, preferred),
        }
    }

    // ---- state changes ----

    /// Replaces `svc`'s record with `ips` (none = forget it).
    fn commit(
        &mut self,
        svc: &ServiceKey,
        ips: Vec<AssignedIp>,
        profile: Profile,
        pin: Option<String>,
    ) -> Assignment {
        self.forget(svc);
        let assignment = Assignment { ips };
        if assignment.ips.is_empty() {
            return assignment;
        }
        for ip in assignment.addresses() {
            let holders = self.holders.entry(ip).or_default();
            if holders.is_empty() {
                self.used.insert(ip);
            }
            holders.insert(svc);
        }
        if let Some(key) = &profile.sharing {
            self.by_sharing
                .entry(key.clone())
                .or_default()
                .insert(svc.clone());
        }
        self.services.insert(
            svc.clone(),
            Box::new(Record {
                assignment: assignment.clone(),
                profile,
                pin,
            }),
        );
        assignment
    }

    /// Drops `svc`'s record and frees IPs nobody else holds.
    fn forget(&mut self, svc: &ServiceKey) -> bool {
        let Some(record) = self.services.remove(svc) else {
            return false;
        };
        for ip in record.assignment.addresses() {
            if let Some(holders) = self.holders.get_mut(&ip) {
                holders.remove(svc);
                if holders.is_empty() {
                    self.holders.remove(&ip);
                    self.used.remove(ip);
                }
            }
        }
        if let Some(key) = &record.profile.sharing
            && let Some(set) = self.by_sharing.get_mut(key)
        {
            set.remove(svc);
            if set.is_empty() {
                self.by_sharing.remove(key);
            }
        }
        true
    }
}

/// Requested IPs: each of a requested family, at most one per family.
fn validate_requested(req: &Request) -> Result<(), AllocError> {
    let families = req.families.families();
    if let Some(ip) = req
        .requested
        .iter()
        .find(|ip| !families.contains(&Family::of(**ip)))
    {
        return Err(AllocError::RequestedFamilyMismatch { ip: *ip, families });
    }
    for family in Family::ALL {
        let ips: Vec<IpAddr> = req
            .requested
            .iter()
            .copied()
            .filter(|ip| Family::of(*ip) == family)
            .collect();
        if ips.len() > 1 {
            return Err(AllocError::TooManyRequested { family, ips });
        }
    }
    Ok(())
}
