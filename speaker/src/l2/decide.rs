//! The L2 mode's decisions from the shared plan and the membership view: who announces each IP,
//! which IPs this node announces, which Service conditions this node must write, and which
//! events about this node's interfaces to record.
//!
//! Pure: data and `now` in, values out. It must not do I/O, await or read clocks; the shell
//! ([`super::announcer`]) feeds it and carries out the result.
//!
//! # Who writes a Service's condition
//!
//! Exactly one speaker is *responsible* for a Service's `ferrolb.io/Announced` condition: the
//! announcer of the Service's first announced IP (in `status.loadBalancer.ingress` order), or,
//! when no IP of it is announced, the alive speaker with the smallest name. The announcer here
//! is the one [`writers`] computes: [`owners`] without its exception for young claimants, which
//! depends on what the computing node claims itself. Every speaker thus computes the same answer
//! from the same view, so there is one writer, and it writes only when the published condition
//! differs from the desired one: zero writes in steady state. (When a partition heals, both
//! sides claim the IP and each sees the other as young for a moment: both keep answering, but
//! only the one that will keep the IP writes, instead of the two overwriting each other.)
//!
//! # Nodes that cannot announce
//!
//! A node eligible for an IP but without a usable interface for it (missing, down, or not in
//! `--interfaces`) says so in its heartbeats ([`MemberView::unable`]), and every node leaves it
//! out of the candidates. When that leaves no candidate, the IP has no owner, the first alive
//! speaker is responsible, and the condition says `False/NoUsableInterface` naming those nodes,
//! instead of the last announcer's words staying up while nobody answers.
//!
//! # Services that stop being ours
//!
//! A Service that is no longer planned (its type or class changed, or the controller removed
//! its IPs) but still carries the speakers' condition ([`Plan::stale`]) gets its condition
//! removed by the alive speaker with the smallest name, the same one that writes for
//! unannounced Services ([`stale_conditions`], [`StatusTracker::removals`]). The removal drops
//! the condition from the speakers' field manager, so the Service leaves `Plan::stale` and
//! nothing is written again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb_speaker_core::election;

use crate::membership::MemberView;
use crate::objects::{ObservedCondition, SvcKey};
use crate::plan::{NotAnnounced, Plan, Unplanned, WantedInterface};

/// The announcer of every announceable IP (`None`: no eligible alive node can announce it).
///
/// `self_capable(ip)` says whether this node can announce `ip` right now (settled, and an
/// interface to announce on exists). When it cannot, this node leaves itself out of the
/// candidates. Peers that reported the IP in their unable set are left out too; a peer that
/// cannot announce for another reason (not settled yet) may still be counted in by the others,
/// but they see it does not claim the IP, and the sticky rule hands the IP to the claimant they
/// elect instead, so every view converges on one announcer within a heartbeat.
///
/// A claim by a *young* peer (one that came up moments ago) does not make this node give up an
/// IP it claims itself. Why: heartbeats a dead speaker sent while its link was down can be
/// delivered when the link returns (the kernel queues them while resolving the neighbour), and
/// look exactly like a higher-ranked claimant coming back; honouring them at once would make
/// the current announcer withdraw and the restarted node snatch the IP. A real partition heal
/// still resolves to the better-ranked claimant once the peer is no longer young. Young claims
/// still count for IPs this node does not claim, so a freshly started speaker never snatches.
pub fn owners(
    plan: &Plan,
    view: &MemberView,
    self_node: &str,
    self_capable: impl Fn(IpAddr) -> bool,
) -> BTreeMap<IpAddr, Option<String>> {
    elect(plan, view, self_node, self_capable, true)
}

/// The owners every node agrees on from the same view: [`owners`] with every young claim
/// honoured, so what this node claims itself changes nothing. The writers of Service conditions
/// are computed from these (see the module docs).
pub fn writers(
    plan: &Plan,
    view: &MemberView,
    self_node: &str,
    self_capable: impl Fn(IpAddr) -> bool,
) -> BTreeMap<IpAddr, Option<String>> {
    elect(plan, view, self_node, self_capable, false)
}

fn elect(
    plan: &Plan,
    view: &MemberView,
    self_node: &str,
    self_capable: impl Fn(IpAddr) -> bool,
    keep_against_young: bool,
) -> BTreeMap<IpAddr, Option<String>> {
    plan.ips
        .iter()
        .map(|(&ip, p)| {
            let candidates: Vec<&String> = p
                .eligible
                .iter()
                .filter(|n| view.alive.contains(*n))
                .filter(|n| {
                    if n.as_str() == self_node {
                        self_capable(ip)
                    } else {
                        !view.is_unable(n, &ip)
                    }
                })
                .collect();
            let i_claim =
                keep_against_young && view.claims.get(self_node).is_some_and(|c| c.contains(&ip));
            let owner = election::owner(ip, candidates.iter().copied(), |n| {
                view.claims.get(n).is_some_and(|c| c.contains(&ip))
                    && !(i_claim && n != self_node && view.young.contains(n))
            });
            (ip, owner.map(str::to_string))
        })
        .collect()
}

/// The IPs `self_node` announces.
pub fn mine(owners: &BTreeMap<IpAddr, Option<String>>, self_node: &str) -> BTreeSet<IpAddr> {
    owners
        .iter()
        .filter(|(_, o)| o.as_deref() == Some(self_node))
        .map(|(ip, _)| *ip)
        .collect()
}

/// IPs gained and lost between two sets.
pub fn diff(before: &BTreeSet<IpAddr>, after: &BTreeSet<IpAddr>) -> (Vec<IpAddr>, Vec<IpAddr>) {
    (
        after.difference(before).copied().collect(),
        before.difference(after).copied().collect(),
    )
}

/// The reason of a Service's `ferrolb.io/Announced` condition. `as_str()` is the condition
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Every IP is announced.
    Announced,
    /// Some IPs are announced, some not.
    PartiallyAnnounced,
    /// The plan leaves the (first unannounced) IP out.
    Plan(NotAnnounced),
    /// Nodes are eligible, but none of them is alive.
    NoAliveNode,
    /// The alive eligible nodes reported no usable interface for the IP.
    NoUsableInterface,
}

impl Reason {
    /// CamelCase, as condition reasons must be.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Announced => "Announced",
            Self::PartiallyAnnounced => "PartiallyAnnounced",
            Self::Plan(r) => r.as_str(),
            Self::NoAliveNode => "NoAliveNode",
            Self::NoUsableInterface => "NoUsableInterface",
        }
    }
}

/// The condition a Service should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Any IP announced.
    pub announced: bool,
    /// Why (or why not).
    pub reason: Reason,
    /// "announced by node-2 on eth0".
    pub message: String,
}

impl Desired {
    /// Whether the published condition already says this.
    pub fn matches(&self, o: &ObservedCondition) -> bool {
        o.status == if self.announced { "True" } else { "False" }
            && o.reason == self.reason.as_str()
            && o.message == self.message
    }
}

/// Most node names one condition message lists before "and N more": a message names the nodes
/// to look at, it is not an inventory (and a condition message is limited to 32 KiB).
const MAX_NAMED_NODES: usize = 5;

/// "node-1, node-2", or "node-1, …, node-5 and 3 more".
fn name_list(names: &[&str]) -> String {
    let shown = names.get(..MAX_NAMED_NODES).unwrap_or(names).join(", ");
    match names.len().saturating_sub(MAX_NAMED_NODES) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Why an IP the plan announces has no owner, in words for the condition.
fn unowned(plan: &Plan, view: &MemberView, ip: &IpAddr) -> (Reason, String) {
    let unable: Vec<&str> = plan
        .ips
        .get(ip)
        .into_iter()
        .flat_map(|p| p.eligible.iter())
        .filter(|n| view.alive.contains(*n) && view.is_unable(n, ip))
        .map(String::as_str)
        .collect();
    match plan.ips.get(ip) {
        Some(p) if !unable.is_empty() => (
            Reason::NoUsableInterface,
            format!(
                "not announced: no usable interface on {} (wanted {}; missing, down or not in --interfaces)",
                name_list(&unable),
                p.wanted.describe()
            ),
        ),
        _ => (
            Reason::NoAliveNode,
            "not announced: no eligible speaker is alive".to_string(),
        ),
    }
}

/// The conditions this node is responsible for (see the module docs), by Service.
/// `my_interfaces` names the interfaces this node announces each of its IPs on.
pub fn desired_conditions(
    plan: &Plan,
    owners: &BTreeMap<IpAddr, Option<String>>,
    view: &MemberView,
    self_node: &str,
    my_interfaces: &BTreeMap<IpAddr, Vec<String>>,
) -> BTreeMap<SvcKey, Desired> {
    let first_alive = view.alive.iter().next().map(String::as_str);
    let mut out = BTreeMap::new();
    for (key, sp) in &plan.services {
        let owner_of = |ip: &IpAddr| owners.get(ip).cloned().flatten();
        let responsible = sp
            .ips
            .iter()
            .find_map(owner_of)
            .or_else(|| first_alive.map(str::to_string));
        if responsible.as_deref() != Some(self_node) {
            continue;
        }
        let mut parts = Vec::new();
        let mut announced = 0usize;
        let mut first_reason: Option<Reason> = None;
        for ip in &sp.ips {
            let text = if let Some(o) = owner_of(ip) {
                announced += 1;
                match my_interfaces.get(ip).filter(|_| o == self_node) {
                    Some(ifs) if !ifs.is_empty() => {
                        format!("announced by {o} on {}", ifs.join(","))
                    }
                    _ => format!("announced by {o}"),
                }
            } else if let Some(r) = sp.not_announced.get(ip) {
                first_reason.get_or_insert(Reason::Plan(*r));
                format!("not announced: {}", r.describe())
            } else {
                let (reason, text) = unowned(plan, view, ip);
                first_reason.get_or_insert(reason);
                text
            };
            parts.push(if sp.ips.len() == 1 {
                text
            } else {
                format!("{ip} {text}")
            });
        }
        let reason = if announced == sp.ips.len() {
            Reason::Announced
        } else if announced > 0 {
            Reason::PartiallyAnnounced
        } else {
            first_reason.unwrap_or(Reason::NoAliveNode)
        };
        out.insert(
            key.clone(),
            Desired {
                announced: announced > 0,
                reason,
                message: parts.join("; "),
            },
        );
    }
    out
}

/// The stale conditions (see the module docs) this node must remove, with why: all of them on
/// the alive speaker with the smallest name, none elsewhere.
pub fn stale_conditions(
    plan: &Plan,
    view: &MemberView,
    self_node: &str,
) -> BTreeMap<SvcKey, Unplanned> {
    if view.alive.iter().next().map(String::as_str) != Some(self_node) {
        return BTreeMap::new();
    }
    plan.stale
        .iter()
        .map(|(k, st)| (k.clone(), st.why))
        .collect()
}

/// This node's wanted interfaces that resolve to nothing usable (missing, down, or not in
/// `--interfaces`), each with the IPs this node is eligible for that want it.
pub type Unusable = BTreeMap<WantedInterface, BTreeSet<IpAddr>>;

/// Why an event regarding this node's Node object is recorded. `as_str()` is the event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceChange {
    /// An interface IPs want became unusable (a Warning).
    Unusable,
    /// It is usable again.
    Usable,
    /// No IP wants it any more, though it is still unusable: the warning no longer applies.
    NotNeeded,
}

impl InterfaceChange {
    /// CamelCase, as event reasons must be.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unusable => "InterfaceUnusable",
            Self::Usable => "InterfaceUsable",
            Self::NotNeeded => "InterfaceNotNeeded",
        }
    }

    /// Whether the event is a Warning (else Normal).
    pub const fn is_warning(self) -> bool {
        matches!(self, Self::Unusable)
    }
}

/// An event about one of this node's interfaces, to record regarding its Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// What changed.
    pub change: InterfaceChange,
    /// The interface.
    pub interface: WantedInterface,
    /// The event's note: the interface and the IPs affected, at most [`MAX_LISTED_IPS`] named.
    pub note: String,
}

/// Most IPs one event note lists before "and N more" (an event note is limited to 1 KiB).
pub const MAX_LISTED_IPS: usize = 10;

fn ip_list(ips: &BTreeSet<IpAddr>) -> String {
    let shown: Vec<String> = ips
        .iter()
        .take(MAX_LISTED_IPS)
        .map(|ip| ip.to_string())
        .collect();
    match ips.len().saturating_sub(MAX_LISTED_IPS) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// The events for a change of this node's unusable interfaces: one per interface that became
/// unusable or stopped being so, none for a change of only the IPs that want an interface (so a
/// replan, a resync or an endpoint moving between IPs is silent). `usable_now(interface, ips)`
/// tells an interface that recovered for the IPs that wanted it from one that is merely no
/// longer wanted (the default choice depends on the IP).
pub fn interface_events(
    before: &Unusable,
    after: &Unusable,
    usable_now: impl Fn(&WantedInterface, &BTreeSet<IpAddr>) -> bool,
) -> Vec<NodeEvent> {
    let mut out = Vec::new();
    for (iface, ips) in after.iter().filter(|(i, _)| !before.contains_key(*i)) {
        let n = ips.len();
        out.push(NodeEvent {
            change: InterfaceChange::Unusable,
            interface: iface.clone(),
            note: format!(
                "this node cannot announce {} {} on {iface} (missing, down or not in --interfaces): {}",
                n,
                if n == 1 { "IP" } else { "IPs" },
                ip_list(ips)
            ),
        });
    }
    for (iface, ips) in before.iter().filter(|(i, _)| !after.contains_key(*i)) {
        let (change, note) = if usable_now(iface, ips) {
            (
                InterfaceChange::Usable,
                format!("this node can announce on {iface} again: {}", ip_list(ips)),
            )
        } else {
            (
                InterfaceChange::NotNeeded,
                format!(
                    "no IP wants {iface} on this node any more (still missing, down or not in --interfaces)"
                ),
            )
        };
        out.push(NodeEvent {
            change,
            interface: iface.clone(),
            note,
        });
    }
    out
}

/// A condition write (and its event) the shell must perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusWrite {
    /// The Service.
    pub service: SvcKey,
    /// What to write.
    pub desired: Desired,
    /// The Service's UID, for the event.
    pub uid: Option<String>,
    /// `observedGeneration`.
    pub generation: Option<i64>,
    /// Emit one event for this change (the message changed, i.e. a new announcer or
    /// interface, or a withdrawal).
    pub event: bool,
}

/// A removal of a stale condition (see the module docs) the shell must perform: server-side
/// apply of no condition by the speakers' field manager, and one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The Service.
    pub service: SvcKey,
    /// Why it is no longer ours, for the event.
    pub why: Unplanned,
    /// The Service's UID, for the event.
    pub uid: Option<String>,
}

/// How long a write is trusted to be in flight before it is repeated if its effect is not
/// observed (a lost watch event or an outage).
const WRITE_TRUST: Duration = Duration::from_secs(30);
/// Retry delays after failed writes: doubling from the first, capped at the last.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Turns desired conditions into writes without repeating itself: a Service is written when its
/// published condition differs from the desired one, and not again while that write is in
/// flight or backing off after a failure.
#[derive(Debug, Default)]
pub struct StatusTracker {
    /// What was written, when, and what was published at that time.
    written: BTreeMap<SvcKey, (Desired, Instant, Option<ObservedCondition>)>,
    /// Removals in flight: when sent, and what was published at that time.
    removing: BTreeMap<SvcKey, (Instant, Option<ObservedCondition>)>,
    /// Services whose last write failed: when to try again, and the delay used.
    retry: BTreeMap<SvcKey, (Instant, Duration)>,
}

/// Whether a write sent at `at`, when `seen` was published, is still trusted to be in flight:
/// nothing newer was published since (a newer publication means it lost a race and must be
/// repeated) and it is not too old.
fn still_trusted(
    at: Instant,
    seen: &Option<ObservedCondition>,
    observed: &Option<ObservedCondition>,
    now: Instant,
) -> bool {
    seen == observed && now.saturating_duration_since(at) < WRITE_TRUST
}

impl StatusTracker {
    /// Whether `svc`'s last write failed and its backoff has not run out.
    fn backing_off(&self, svc: &str, now: Instant) -> bool {
        self.retry.get(svc).is_some_and(|(at, _)| *at > now)
    }

    /// The writes to perform now.
    pub fn writes(
        &mut self,
        desired: &BTreeMap<SvcKey, Desired>,
        plan: &Plan,
        now: Instant,
    ) -> Vec<StatusWrite> {
        self.written.retain(|k, _| desired.contains_key(k));
        let mut out = Vec::new();
        for (svc, d) in desired {
            let Some(sp) = plan.services.get(svc) else {
                continue;
            };
            if sp.observed.as_ref().is_some_and(|o| d.matches(o)) {
                self.written.remove(svc);
                self.retry.remove(svc);
                continue;
            }
            // In flight: same content, nothing newer published since (a newer publication that
            // still differs means our write lost a race and must be repeated), not too old.
            if let Some((w, at, seen)) = self.written.get(svc)
                && w == d
                && still_trusted(*at, seen, &sp.observed, now)
            {
                continue;
            }
            if self.backing_off(svc, now) {
                continue;
            }
            self.written
                .insert(svc.clone(), (d.clone(), now, sp.observed.clone()));
            out.push(StatusWrite {
                service: svc.clone(),
                desired: d.clone(),
                uid: sp.uid.clone(),
                generation: sp.generation,
                event: sp.observed.as_ref().is_none_or(|o| o.message != d.message),
            });
        }
        out
    }

    /// The removals to perform now, given the stale conditions this node must remove
    /// ([`stale_conditions`]). A removal is sent once and not repeated while in flight (the
    /// same trust and backoff as [`StatusTracker::writes`]); its effect is observed when the
    /// Service leaves [`Plan::stale`], after which nothing more is sent.
    pub fn removals(
        &mut self,
        stale: &BTreeMap<SvcKey, Unplanned>,
        plan: &Plan,
        now: Instant,
    ) -> Vec<Removal> {
        self.removing.retain(|k, _| stale.contains_key(k));
        // Backoffs of Services that are neither planned nor stale any more (deleted, or their
        // condition is gone) are of no use.
        self.retry
            .retain(|k, _| plan.services.contains_key(k) || plan.stale.contains_key(k));
        let mut out = Vec::new();
        for (svc, why) in stale {
            let Some(st) = plan.stale.get(svc) else {
                continue;
            };
            // In flight, unless something newer was published since (a late write of another
            // speaker put the condition back): then the removal is repeated at once.
            if let Some((at, seen)) = self.removing.get(svc)
                && still_trusted(*at, seen, &st.observed, now)
            {
                continue;
            }
            if self.backing_off(svc, now) {
                continue;
            }
            self.removing
                .insert(svc.clone(), (now, st.observed.clone()));
            out.push(Removal {
                service: svc.clone(),
                why: *why,
                uid: st.uid.clone(),
            });
        }
        out
    }

    /// The next instant after `now` at which [`StatusTracker::writes`] or
    /// [`StatusTracker::removals`] may act without any new input: a backoff ending, or a write
    /// in flight losing the trust it gets. Instants already past are left out: they changed
    /// nothing at the last call and change nothing by themselves.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        let retries = self.retry.values().map(|(at, _)| *at);
        let written = self.written.values().map(|(_, at, _)| *at + WRITE_TRUST);
        let removing = self.removing.values().map(|(at, _)| *at + WRITE_TRUST);
        retries
            .chain(written)
            .chain(removing)
            .filter(|t| *t > now)
            .min()
    }

    /// A write failed: forget it and back off before the next try.
    pub fn failed(&mut self, svc: &str, now: Instant) {
        self.written.remove(svc);
        self.removing.remove(svc);
        let delay = self
            .retry
            .get(svc)
            .map(|(_, d)| d.saturating_mul(2).min(RETRY_MAX))
            .unwrap_or(RETRY_FIRST);
        self.retry.insert(svc.to_string(), (now + delay, delay));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Interfaces, IpPlan, ServicePlan, Stale};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal ip")
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn plan_one(addr: &str, eligible: &[&str]) -> Plan {
        let mut p = Plan::default();
        p.ips.insert(
            ip(addr),
            IpPlan {
                services: vec!["ns/web".into()],
                eligible: set(eligible),
                ..Default::default()
            },
        );
        p.services.insert(
            "ns/web".into(),
            ServicePlan {
                ips: vec![ip(addr)],
                ..Default::default()
            },
        );
        p
    }

    fn view(alive: &[&str], claims: &[(&str, &str)]) -> MemberView {
        let mut v = MemberView {
            alive: set(alive),
            ..Default::default()
        };
        for (n, a) in claims {
            v.claims.entry(n.to_string()).or_default().insert(ip(a));
        }
        v
    }

    #[test]
    fn after_a_partition_heals_only_the_keeper_writes_the_condition() {
        let a = ip("198.51.100.70");
        let order = election::preference(a, &["n1", "n2"]);
        let (best, second) = (order[0], order[1]);
        let p = plan_one("198.51.100.70", &["n1", "n2"]);
        let both = [(best, "198.51.100.70"), (second, "198.51.100.70")];
        // Each side announced alone; now each sees the other come back, young, claiming it.
        let mut at_best = view(&["n1", "n2"], &both);
        at_best.young = set(&[second]);
        let mut at_second = view(&["n1", "n2"], &both);
        at_second.young = set(&[best]);
        // Both keep answering for the moment...
        assert_eq!(
            owners(&p, &at_best, best, |_| true)[&a].as_deref(),
            Some(best)
        );
        assert_eq!(
            owners(&p, &at_second, second, |_| true)[&a].as_deref(),
            Some(second)
        );
        // ...but both name the same writer: the one that keeps the IP.
        let w_best = writers(&p, &at_best, best, |_| true);
        let w_second = writers(&p, &at_second, second, |_| true);
        assert_eq!(w_best, w_second);
        assert_eq!(w_best[&a].as_deref(), Some(best));
        let none = BTreeMap::new();
        let d_best = desired_conditions(&p, &w_best, &at_best, best, &none);
        let d_second = desired_conditions(&p, &w_second, &at_second, second, &none);
        assert_eq!(d_best.len(), 1);
        assert!(d_second.is_empty(), "{d_second:?}");
        // Without young peers, writers and owners agree.
        let plain = view(&["n1", "n2"], &both);
        assert_eq!(
            writers(&p, &plain, second, |_| true),
            owners(&p, &plain, second, |_| true)
        );
    }

    #[test]
    fn every_node_computes_the_same_owner() {
        let p = plan_one("198.51.100.70", &["n1", "n2", "n3"]);
        let v = view(&["n1", "n2", "n3"], &[]);
        let a = owners(&p, &v, "n1", |_| true);
        let b = owners(&p, &v, "n2", |_| true);
        assert_eq!(a, b);
        let o = a[&ip("198.51.100.70")].clone().expect("an owner");
        assert_eq!(mine(&a, &o).len(), 1);
    }

    #[test]
    fn dead_and_ineligible_nodes_never_own() {
        let p = plan_one("198.51.100.70", &["n1", "n2"]);
        let v = view(&["n2", "n3"], &[("n3", "198.51.100.70")]);
        let o = owners(&p, &v, "n3", |_| true);
        assert_eq!(o[&ip("198.51.100.70")].as_deref(), Some("n2"));
        let none = owners(&p, &view(&["n3"], &[]), "n3", |_| true);
        assert_eq!(none[&ip("198.51.100.70")], None);
    }

    #[test]
    fn an_incapable_self_steps_aside_and_views_converge() {
        let p = plan_one("198.51.100.70", &["n1", "n2"]);
        let a = ip("198.51.100.70");
        let best = election::preference(a, &["n1", "n2"])[0].to_string();
        let other = if best == "n1" { "n2" } else { "n1" };
        // `best` cannot announce (no interface): it elects `other`.
        let v = view(&["n1", "n2"], &[]);
        let from_best = owners(&p, &v, &best, |_| false);
        assert_eq!(from_best[&a].as_deref(), Some(other));
        // `other` still thinks `best` owns it until a heartbeat shows nobody claims it...
        let from_other = owners(&p, &v, other, |_| true);
        assert_eq!(from_other[&a].as_deref(), Some(best.as_str()));
        // ...but once `other` claims it (as `best` computed), every view agrees.
        let v2 = view(&["n1", "n2"], &[(other, "198.51.100.70")]);
        assert_eq!(owners(&p, &v2, other, |_| true)[&a].as_deref(), Some(other));
        assert_eq!(
            owners(&p, &v2, &best, |_| false)[&a].as_deref(),
            Some(other)
        );
    }

    #[test]
    fn a_young_claimant_cannot_make_the_announcer_withdraw() {
        let a = ip("198.51.100.70");
        let order = election::preference(a, &["n1", "n2", "n3"]);
        let (best, second, third) = (order[0], order[1], order[2]);
        let p = plan_one("198.51.100.70", &["n1", "n2", "n3"]);
        // `second` announces; a delayed heartbeat of `best`'s dead instance claims the IP.
        let mut v = view(
            &["n1", "n2", "n3"],
            &[(second, "198.51.100.70"), (best, "198.51.100.70")],
        );
        v.young.insert(best.to_string());
        assert_eq!(
            owners(&p, &v, second, |_| true)[&a].as_deref(),
            Some(second)
        );
        // A node that does not claim the IP still honours the young claim (it never announces
        // because of it).
        assert_eq!(owners(&p, &v, third, |_| true)[&a].as_deref(), Some(best));
        // Once `best` is no longer young (a real partition heal), the better claimant wins.
        v.young.clear();
        assert_eq!(owners(&p, &v, second, |_| true)[&a].as_deref(), Some(best));
        // A fresh speaker (everyone young to it, claiming nothing) never snatches.
        let mut fresh = view(&["n1", "n2", "n3"], &[(second, "198.51.100.70")]);
        fresh.young = set(&["n1", "n2", "n3"]);
        assert_eq!(
            owners(&p, &fresh, best, |_| true)[&a].as_deref(),
            Some(second)
        );
    }

    #[test]
    fn diff_reports_gains_and_losses() {
        let a: BTreeSet<IpAddr> = [ip("198.51.100.1"), ip("198.51.100.2")].into();
        let b: BTreeSet<IpAddr> = [ip("198.51.100.2"), ip("198.51.100.3")].into();
        assert_eq!(
            diff(&a, &b),
            (vec![ip("198.51.100.3")], vec![ip("198.51.100.1")])
        );
    }

    #[test]
    fn only_the_announcer_writes_and_says_where() {
        let p = plan_one("198.51.100.70", &["n1", "n2"]);
        let mut o = BTreeMap::new();
        o.insert(ip("198.51.100.70"), Some("n2".to_string()));
        let v = view(&["n1", "n2"], &[]);
        let ifs: BTreeMap<IpAddr, Vec<String>> =
            [(ip("198.51.100.70"), vec!["eth0".to_string()])].into();
        assert!(desired_conditions(&p, &o, &v, "n1", &BTreeMap::new()).is_empty());
        let d = desired_conditions(&p, &o, &v, "n2", &ifs);
        assert_eq!(
            d["ns/web"],
            Desired {
                announced: true,
                reason: Reason::Announced,
                message: "announced by n2 on eth0".into()
            }
        );
    }

    #[test]
    fn unannounced_services_are_written_by_the_first_alive_node() {
        let mut p = plan_one("198.51.100.70", &["n1"]);
        p.ips.clear();
        p.services
            .get_mut("ns/web")
            .expect("web")
            .not_announced
            .insert(ip("198.51.100.70"), NotAnnounced::NoEndpoints);
        let v = view(&["n2", "n3"], &[]);
        assert!(desired_conditions(&p, &BTreeMap::new(), &v, "n3", &BTreeMap::new()).is_empty());
        let d = desired_conditions(&p, &BTreeMap::new(), &v, "n2", &BTreeMap::new());
        assert!(!d["ns/web"].announced);
        assert_eq!(d["ns/web"].reason, Reason::Plan(NotAnnounced::NoEndpoints));
    }

    #[test]
    fn dual_stack_messages_name_each_ip() {
        let mut p = plan_one("198.51.100.70", &["n1"]);
        let sp = p.services.get_mut("ns/web").expect("web");
        sp.ips.push(ip("2001:db8::70"));
        sp.not_announced
            .insert(ip("2001:db8::70"), NotAnnounced::NoL2Advertisement);
        let o: BTreeMap<IpAddr, Option<String>> =
            [(ip("198.51.100.70"), Some("n1".to_string()))].into();
        let d = desired_conditions(&p, &o, &view(&["n1"], &[]), "n1", &BTreeMap::new());
        assert_eq!(d["ns/web"].reason, Reason::PartiallyAnnounced);
        assert!(
            d["ns/web"]
                .message
                .starts_with("198.51.100.70 announced by n1; 2001:db8::70 not announced")
        );
    }

    #[test]
    fn tracker_writes_once_per_change_and_backs_off() {
        let mut p = plan_one("198.51.100.70", &["n1"]);
        let d: BTreeMap<SvcKey, Desired> = [(
            "ns/web".to_string(),
            Desired {
                announced: true,
                reason: Reason::Announced,
                message: "announced by n1 on eth0".into(),
            },
        )]
        .into();
        let t0 = Instant::now();
        let mut t = StatusTracker::default();
        let w = t.writes(&d, &p, t0);
        assert_eq!(w.len(), 1);
        assert!(w[0].event);
        // In flight: not repeated.
        assert!(t.writes(&d, &p, t0 + Duration::from_millis(5)).is_empty());
        // Failed: backs off, then retries.
        t.failed("ns/web", t0 + Duration::from_millis(10));
        assert!(t.writes(&d, &p, t0 + Duration::from_millis(20)).is_empty());
        assert_eq!(t.writes(&d, &p, t0 + Duration::from_secs(1)).len(), 1);
        // Observed: steady state, zero writes.
        p.services.get_mut("ns/web").expect("web").observed = Some(ObservedCondition {
            status: "True".into(),
            reason: "Announced".into(),
            message: "announced by n1 on eth0".into(),
            by_speaker: true,
        });
        for s in 2..100 {
            assert!(t.writes(&d, &p, t0 + Duration::from_secs(s)).is_empty());
        }
        // Same announcer with a reason-only change: written, but no new event.
        let mut d2 = d.clone();
        if let Some(x) = d2.get_mut("ns/web") {
            x.reason = Reason::PartiallyAnnounced;
        }
        let w = t.writes(&d2, &p, t0 + Duration::from_secs(200));
        assert_eq!(w.len(), 1);
        assert!(!w[0].event);
    }

    #[test]
    fn a_write_overtaken_by_another_publication_is_repeated() {
        let mut p = plan_one("198.51.100.70", &["n1"]);
        let d: BTreeMap<SvcKey, Desired> = [(
            "ns/web".to_string(),
            Desired {
                announced: true,
                reason: Reason::Announced,
                message: "announced by n1".into(),
            },
        )]
        .into();
        let t0 = Instant::now();
        let mut t = StatusTracker::default();
        assert_eq!(t.writes(&d, &p, t0).len(), 1);
        // Another (stale) value gets published after our write: write again at once.
        p.services.get_mut("ns/web").expect("web").observed = Some(ObservedCondition {
            status: "True".into(),
            reason: "Announced".into(),
            message: "announced by n2".into(),
            by_speaker: true,
        });
        assert_eq!(t.writes(&d, &p, t0 + Duration::from_millis(50)).len(), 1);
        assert!(t.writes(&d, &p, t0 + Duration::from_millis(60)).is_empty());
    }

    #[test]
    fn a_write_whose_echo_is_lost_is_repeated_later() {
        let p = plan_one("198.51.100.70", &["n1"]);
        let d: BTreeMap<SvcKey, Desired> = [(
            "ns/web".to_string(),
            Desired {
                announced: true,
                reason: Reason::Announced,
                message: "announced by n1".into(),
            },
        )]
        .into();
        let t0 = Instant::now();
        let mut t = StatusTracker::default();
        assert_eq!(t.writes(&d, &p, t0).len(), 1);
        assert!(t.writes(&d, &p, t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(t.writes(&d, &p, t0 + Duration::from_secs(31)).len(), 1);
    }

    /// `plan_one` whose eligible nodes are all asked for `eth9` alone.
    fn plan_eth9(addr: &str, eligible: &[&str]) -> Plan {
        let mut p = plan_one(addr, eligible);
        let wanted = Interfaces {
            default: false,
            named: ["eth9".to_string()].into(),
        };
        if let Some(x) = p.ips.get_mut(&ip(addr)) {
            x.wanted = wanted.clone();
            x.interfaces = wanted;
        }
        p
    }

    fn unable(v: &mut MemberView, nodes: &[&str], addr: &str) {
        for n in nodes {
            v.unable.entry(n.to_string()).or_default().insert(ip(addr));
        }
    }

    #[test]
    fn when_every_node_is_unable_nobody_owns_and_one_node_says_why() {
        let all = ["n1", "n2", "n3"];
        let a = ip("198.51.100.70");
        let mut p = plan_eth9("198.51.100.70", &all);
        // What the last announcer left behind.
        p.services.get_mut("ns/web").expect("web").observed = Some(ObservedCondition {
            status: "True".into(),
            reason: "Announced".into(),
            message: "announced by n1 on eth0".into(),
            by_speaker: true,
        });
        let mut v = view(&all, &[]);
        unable(&mut v, &all, "198.51.100.70");
        let want = Desired {
            announced: false,
            reason: Reason::NoUsableInterface,
            message: "not announced: no usable interface on n1, n2, n3 (wanted eth9; missing, down or not in --interfaces)".into(),
        };
        let mut writers = Vec::new();
        for me in all {
            // Each node cannot place it itself either.
            let o = owners(&p, &v, me, |_| false);
            assert_eq!(o[&a], None, "seen from {me}");
            let d = desired_conditions(&p, &o, &v, me, &BTreeMap::new());
            if let Some(d) = d.get("ns/web") {
                assert_eq!(*d, want);
                writers.push(me);
            }
        }
        assert_eq!(writers, ["n1"], "exactly the first alive node writes");
        // The stale True condition is replaced, with an event (the message changed).
        let d: BTreeMap<SvcKey, Desired> = [("ns/web".to_string(), want)].into();
        let w = StatusTracker::default().writes(&d, &p, Instant::now());
        assert_eq!(w.len(), 1);
        assert!(!w[0].desired.announced && w[0].event);
    }

    #[test]
    fn one_capable_node_owns_what_the_others_cannot_place() {
        let all = ["n1", "n2", "n3"];
        let a = ip("198.51.100.70");
        let p = plan_eth9("198.51.100.70", &all);
        // However the hash ranks them, the one node with the interface is elected by all.
        for capable in all {
            let others: Vec<&str> = all.iter().copied().filter(|n| *n != capable).collect();
            let mut v = view(&all, &[]);
            unable(&mut v, &others, "198.51.100.70");
            for me in all {
                let o = owners(&p, &v, me, |_| me == capable);
                assert_eq!(
                    o[&a].as_deref(),
                    Some(capable),
                    "{me} with {capable} capable"
                );
            }
            // It writes the condition, and says where.
            let o = owners(&p, &v, capable, |_| true);
            let ifs: BTreeMap<IpAddr, Vec<String>> = [(a, vec!["eth9".to_string()])].into();
            let d = desired_conditions(&p, &o, &v, capable, &ifs);
            assert_eq!(d["ns/web"].reason, Reason::Announced);
            assert_eq!(
                d["ns/web"].message,
                format!("announced by {capable} on eth9")
            );
        }
    }

    #[test]
    fn unable_reports_of_dead_or_ineligible_nodes_do_not_count() {
        let a = ip("198.51.100.70");
        let p = plan_eth9("198.51.100.70", &["n1"]);
        // n1, the only eligible node, is dead: whatever n2 and n3 report, it is NoAliveNode.
        let mut v = view(&["n2", "n3"], &[]);
        unable(&mut v, &["n1", "n2", "n3"], "198.51.100.70");
        let o = owners(&p, &v, "n2", |_| true);
        assert_eq!(o[&a], None);
        let d = desired_conditions(&p, &o, &v, "n2", &BTreeMap::new());
        assert_eq!(d["ns/web"].reason, Reason::NoAliveNode);
        assert_eq!(
            d["ns/web"].message,
            "not announced: no eligible speaker is alive"
        );
    }

    #[test]
    fn long_node_lists_are_cut_and_the_default_interface_is_named() {
        let names = ["n1", "n2", "n3", "n4", "n5", "n6", "n7"];
        let p = plan_one("198.51.100.70", &names);
        let mut p = p;
        if let Some(x) = p.ips.get_mut(&ip("198.51.100.70")) {
            x.wanted.default = true;
        }
        let mut v = view(&names, &[]);
        unable(&mut v, &names, "198.51.100.70");
        let o = owners(&p, &v, "n1", |_| false);
        let d = desired_conditions(&p, &o, &v, "n1", &BTreeMap::new());
        assert_eq!(
            d["ns/web"].message,
            "not announced: no usable interface on n1, n2, n3, n4, n5 and 2 more (wanted the default interfaces; missing, down or not in --interfaces)"
        );
    }

    #[test]
    fn interface_events_only_on_changes_of_the_interface_set() {
        let eth9 = WantedInterface::Named("eth9".into());
        let one: Unusable = [(eth9.clone(), [ip("198.51.100.70")].into())].into();
        let two: Unusable = [(
            eth9.clone(),
            [ip("198.51.100.70"), ip("198.51.100.71")].into(),
        )]
        .into();
        let none = Unusable::new();
        let ev = interface_events(&none, &one, |_, _| false);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].change.as_str(), "InterfaceUnusable");
        assert!(ev[0].change.is_warning());
        assert_eq!(
            ev[0].note,
            "this node cannot announce 1 IP on eth9 (missing, down or not in --interfaces): 198.51.100.70"
        );
        // The same set again (a resync), or more IPs wanting it: silent.
        assert!(interface_events(&one, &one, |_, _| false).is_empty());
        assert!(interface_events(&one, &two, |_, _| false).is_empty());
        // Recovered (asked about the IPs that wanted it), or no longer wanted.
        let back = interface_events(&two, &none, |i, ips| *i == eth9 && ips.len() == 2);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].change, InterfaceChange::Usable);
        assert!(!back[0].change.is_warning());
        assert_eq!(
            back[0].note,
            "this node can announce on eth9 again: 198.51.100.70, 198.51.100.71"
        );
        let gone = interface_events(&two, &none, |_, _| false);
        assert_eq!(gone[0].change, InterfaceChange::NotNeeded);
        // Notes stay short however many IPs are affected.
        let many: Unusable = [(
            WantedInterface::Default,
            (0..200u8)
                .map(|i| IpAddr::from([198, 51, 100, i]))
                .collect(),
        )]
        .into();
        let ev = interface_events(&none, &many, |_, _| false);
        assert!(
            ev[0]
                .note
                .starts_with("this node cannot announce 200 IPs on the default interfaces (")
        );
        assert!(
            ev[0].note.ends_with("198.51.100.9 and 190 more"),
            "{}",
            ev[0].note
        );
        assert!(ev[0].note.len() < 400);
    }
    /// A plan where `ns/web` is stale (type changed) and `ns/api` is planned and unannounced.
    fn plan_with_stale() -> Plan {
        let mut p = plan_one("198.51.100.70", &["n1"]);
        p.ips.clear();
        p.services
            .get_mut("ns/web")
            .expect("web")
            .not_announced
            .insert(ip("198.51.100.70"), NotAnnounced::NoEndpoints);
        let web = p.services.remove("ns/web").expect("web");
        p.services.insert("ns/api".into(), web);
        p.stale.insert(
            "ns/web".into(),
            Stale {
                why: Unplanned::NotLoadBalancer,
                uid: Some("u-web".into()),
                observed: Some(ObservedCondition {
                    status: "True".into(),
                    reason: "Announced".into(),
                    message: "announced by n2 on eth0".into(),
                    by_speaker: true,
                }),
            },
        );
        p
    }

    #[test]
    fn a_stale_condition_is_removed_by_the_first_alive_node_only() {
        let p = plan_with_stale();
        let v = view(&["n2", "n3"], &[]);
        // n1 (dead) and n3 do nothing; n2, the first alive, removes it.
        assert!(stale_conditions(&p, &v, "n3").is_empty());
        assert!(stale_conditions(&p, &v, "n1").is_empty());
        let mine = stale_conditions(&p, &v, "n2");
        assert_eq!(
            mine.into_iter().collect::<Vec<_>>(),
            [("ns/web".to_string(), Unplanned::NotLoadBalancer)]
        );
        // The same node writes the planned, unannounced Service's condition; the stale one is
        // no desired condition anywhere.
        let d = desired_conditions(&p, &BTreeMap::new(), &v, "n2", &BTreeMap::new());
        assert_eq!(d.keys().collect::<Vec<_>>(), ["ns/api"]);
    }

    #[test]
    fn a_stale_condition_is_removed_once() {
        let mut p = plan_with_stale();
        let v = view(&["n1", "n2"], &[]);
        let stale = stale_conditions(&p, &v, "n1");
        let t0 = Instant::now();
        let mut t = StatusTracker::default();
        let r = t.removals(&stale, &p, t0);
        assert_eq!(
            r,
            [Removal {
                service: "ns/web".into(),
                why: Unplanned::NotLoadBalancer,
                uid: Some("u-web".into()),
            }]
        );
        // In flight: not repeated on the next decisions.
        for ms in 1..100 {
            assert!(
                t.removals(&stale, &p, t0 + Duration::from_millis(ms))
                    .is_empty()
            );
        }
        // Its echo: the condition is gone (or no longer the speakers'), so the Service is no
        // longer stale, and nothing more is ever written.
        p.stale.clear();
        let stale = stale_conditions(&p, &v, "n1");
        for s in 1..200 {
            assert!(
                t.removals(&stale, &p, t0 + Duration::from_secs(s))
                    .is_empty()
            );
            assert!(
                t.writes(&BTreeMap::new(), &p, t0 + Duration::from_secs(s))
                    .is_empty()
            );
        }
    }

    #[test]
    fn a_failed_or_overtaken_removal_is_repeated() {
        let mut p = plan_with_stale();
        let v = view(&["n1"], &[]);
        let stale = stale_conditions(&p, &v, "n1");
        let t0 = Instant::now();
        let mut t = StatusTracker::default();
        assert_eq!(t.removals(&stale, &p, t0).len(), 1);
        // Failed: backs off, then retries once.
        t.failed("ns/web", t0 + Duration::from_millis(10));
        assert!(
            t.removals(&stale, &p, t0 + Duration::from_millis(20))
                .is_empty()
        );
        assert_eq!(t.removals(&stale, &p, t0 + Duration::from_secs(1)).len(), 1);
        assert!(
            t.removals(&stale, &p, t0 + Duration::from_secs(2))
                .is_empty()
        );
        // A late write of the old announcer puts another condition back: removed again at once.
        if let Some(st) = p.stale.get_mut("ns/web") {
            st.observed = Some(ObservedCondition {
                status: "True".into(),
                reason: "Announced".into(),
                message: "announced by n3 on eth0".into(),
                by_speaker: true,
            });
        }
        assert_eq!(t.removals(&stale, &p, t0 + Duration::from_secs(3)).len(), 1);
        // A lost echo: repeated after the trust period, not before.
        assert!(
            t.removals(&stale, &p, t0 + Duration::from_secs(32))
                .is_empty()
        );
        assert_eq!(
            t.removals(&stale, &p, t0 + Duration::from_secs(34)).len(),
            1
        );
    }

    #[test]
    fn a_service_coming_back_is_written_again() {
        // Removed while stale, then ours again: the tracker writes its condition as usual.
        let mut p = plan_with_stale();
        let v = view(&["n1"], &[]);
        let t0 = Instant::now();
        let mut t = StatusTracker::default();
        assert_eq!(t.removals(&stale_conditions(&p, &v, "n1"), &p, t0).len(), 1);
        p.stale.clear();
        let back = plan_one("198.51.100.70", &["n1"]);
        p.ips = back.ips;
        p.services = back.services;
        let o: BTreeMap<IpAddr, Option<String>> =
            [(ip("198.51.100.70"), Some("n1".to_string()))].into();
        let d = desired_conditions(&p, &o, &v, "n1", &BTreeMap::new());
        assert!(
            t.removals(&stale_conditions(&p, &v, "n1"), &p, t0)
                .is_empty()
        );
        let w = t.writes(&d, &p, t0 + Duration::from_millis(5));
        assert_eq!(w.len(), 1);
        assert!(w[0].desired.announced && w[0].event);
    }
}
