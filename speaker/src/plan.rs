//! The per-IP plan every mode reads: which Service IPs exist, which nodes may announce each,
//! and why an IP is not announced; plus the interfaces the L2Advertisements wish for.
//!
//! Pure: a [`Snapshot`] of projected objects in, a [`Plan`] out. It must not do I/O, read clocks
//! or decide liveness (membership does) or the announcer (each mode does, the L2 mode by
//! election); it only narrows the candidates every speaker then ranks identically. It must not
//! know about a mode's shell (sockets, interfaces present on a node).
//!
//! # Rules
//!
//! For every IP in a Service's `status.loadBalancer.ingress` (Services that are ours only):
//!
//! 1. **Pool**: the one the controller's `ferrolb.io/ip-allocated-from-pool` annotation names
//!    for the IP (with two pools, the one containing it; with one, that one). Without the
//!    annotation, the known pool containing the IP. None: not announced ([`NotAnnounced::NoPool`]).
//! 2. **L2Advertisements covering it**: `ipAddressPools` names the pool, or an
//!    `ipAddressPoolSelectors` entry matches the pool's labels, or both are empty (all pools);
//!    and `serviceSelectors` match the Service (empty: all). None: not announced.
//! 3. **Nodes**: selected by a covering advertisement's `nodeSelectors` (empty: all nodes),
//!    minus nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers` and nodes
//!    whose `NetworkUnavailable` condition is `True`.
//! 4. **Endpoints**: `externalTrafficPolicy: Local` keeps only nodes running a ready or serving
//!    endpoint of the Service (EndpointSlice `nodeName`); `Cluster` keeps all, but only while
//!    the Service has at least one serving endpoint anywhere.
//!
//! # Services sharing an IP
//!
//! The IP's eligible nodes are the **intersection** of the sharing Services' eligible sets, so
//! that the announcer serves every one of them locally (this matters for `Local` policy). Services
//! that are not announceable on their own (no endpoints, no advertisement) are left out of the
//! intersection rather than emptying it, and if the announceable Services' sets are disjoint,
//! the **union** is used: partial reachability beats none, and the conflict is reported.
//!
//! # Interfaces
//!
//! The L2 mode's part of the plan. It stays here because the same L2Advertisements that make a
//! node eligible (rule 3) name the interfaces, in the same pass; the plan only records the
//! wishes, and resolving them is the L2 mode's ([`crate::l2::interfaces`]).
//!
//! For this node, the interfaces are the union of the `interfaces` of the covering
//! advertisements that select it; an advertisement without `interfaces` means the default
//! choice ([`WantedInterface::Default`]), which each speaker resolves for itself
//! ([`crate::l2::interfaces::resolve_interfaces`]: its `--interfaces` list if given, else the
//! interface holding its InternalIP plus those on the IP's subnet). Whether they exist on a
//! node is not the plan's to know: each speaker resolves its own and reports those it cannot
//! use in its heartbeats. For messages about that, [`IpPlan::wanted`] is the union over every
//! eligible node, the same on every node.
//!
//! # Services that stopped being ours
//!
//! A Service that is not planned (no longer `type: LoadBalancer`, another `loadBalancerClass`,
//! or no ingress IPs left) but still carries the speakers' `ferrolb.io/Announced` condition is
//! listed in [`Plan::stale`] with the reason ([`Unplanned`]), so that one speaker removes the
//! condition instead of "announced by ..." staying up forever.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ferrolb_crds::selector::{SelectorError, any_matches};

use crate::objects::{
    EXCLUDE_LABEL, L2AdvInfo, NodeInfo, ObservedCondition, PoolInfo, ServiceInfo, SliceInfo, SvcKey,
};

/// Everything the plan is computed from; the shell keeps it current from watches.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Services by `namespace/name`.
    pub services: BTreeMap<SvcKey, ServiceInfo>,
    /// EndpointSlices by `namespace/name` of the slice.
    pub slices: BTreeMap<String, SliceInfo>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// IPAddressPools by name.
    pub pools: BTreeMap<String, PoolInfo>,
    /// L2Advertisements by name.
    pub l2advs: BTreeMap<String, L2AdvInfo>,
}

/// The knobs of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    /// `--lb-class`.
    pub lb_class: String,
    /// `--ignore-classless`.
    pub ignore_classless: bool,
    /// This node's name (whose interfaces the plan resolves).
    pub self_node: String,
    /// BGP mode runs (`--bgp`): a Service no L2Advertisement covers at all is BGP's, not left
    /// unannounced, so L2 writes no condition about it (BGP mode reports in BGPSessionState).
    pub bgp: bool,
}

/// Why an IP of a Service is not announced. `as_str()` is the condition reason and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotAnnounced {
    /// No known pool holds the IP.
    NoPool,
    /// No L2Advertisement covers the IP's pool and the Service.
    NoL2Advertisement,
    /// `Cluster` policy and no serving endpoint anywhere, or `Local` and none on any node.
    NoEndpoints,
    /// Advertisements cover it, but every node they select is excluded or lacks an endpoint.
    NoEligibleNode,
}

impl NotAnnounced {
    /// CamelCase, as condition reasons must be.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoPool => "NoPool",
            Self::NoL2Advertisement => "NoL2Advertisement",
            Self::NoEndpoints => "NoEndpoints",
            Self::NoEligibleNode => "NoEligibleNode",
        }
    }

    /// A sentence for the condition message.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::NoPool => "no IPAddressPool holds the IP",
            Self::NoL2Advertisement => "no L2Advertisement covers its pool and the Service",
            Self::NoEndpoints => "the Service has no serving endpoint",
            Self::NoEligibleNode => {
                "no node is eligible (node selectors, exclusion label, NetworkUnavailable, local endpoints)"
            }
        }
    }
}

/// Why a Service is not planned at all. `as_str()` is for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unplanned {
    /// `spec.type` is not `LoadBalancer`.
    NotLoadBalancer,
    /// `spec.loadBalancerClass` is another implementation's (or unset while classless
    /// Services are ignored).
    OtherClass,
    /// No IP in `status.loadBalancer.ingress` (the controller released them, or has not
    /// assigned any).
    NoIps,
    /// Its pool publishes node addresses (forwarder mode): kube-proxy forwards them on the
    /// nodes that own them; answering ARP/NDP for them would steal other nodes' addresses.
    NodePool,
    /// With BGP mode on, no L2Advertisement covers any of its IPs: it is BGP's to announce.
    NotLayer2,
}

impl Unplanned {
    /// CamelCase, like the condition reasons.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotLoadBalancer => "NotLoadBalancer",
            Self::OtherClass => "OtherClass",
            Self::NoIps => "NoIPs",
            Self::NodePool => "NodePool",
            Self::NotLayer2 => "NotLayer2",
        }
    }

    /// A sentence for the event that accompanies the removal of the condition.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::NotLoadBalancer => "the Service is no longer of type LoadBalancer",
            Self::OtherClass => "the Service's loadBalancerClass is not ferrolb's",
            Self::NoIps => "the Service has no load-balancer IP",
            Self::NodePool => "the Service is published on node addresses (forwarder mode)",
            Self::NotLayer2 => {
                "no L2Advertisement covers the Service; BGP mode announces it (see BGPSessionState)"
            }
        }
    }

    /// Why `svc` is not planned; `None` when it is ours, has IPs and is not on a node pool.
    pub fn of(
        svc: &ServiceInfo,
        pools: &BTreeMap<String, PoolInfo>,
        cfg: &PlanConfig,
    ) -> Option<Unplanned> {
        if svc.type_ != "LoadBalancer" {
            Some(Self::NotLoadBalancer)
        } else if !svc.is_ours(&cfg.lb_class, cfg.ignore_classless) {
            Some(Self::OtherClass)
        } else if svc
            .pools
            .iter()
            .any(|p| pools.get(p).is_some_and(|i| i.node_selector.is_some()))
        {
            Some(Self::NodePool)
        } else if svc.ips.is_empty() {
            Some(Self::NoIps)
        } else {
            None
        }
    }
}

/// A Service that is not planned but still carries the speakers' condition (see the module
/// docs): the responsible speaker removes the condition once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// Why it is not planned.
    pub why: Unplanned,
    /// For the event.
    pub uid: Option<String>,
    /// The condition as published (so a removal overtaken by a late write is repeated).
    pub observed: Option<ObservedCondition>,
}

/// One interface an L2Advertisement asks a node to announce on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WantedInterface {
    /// The default choice (an advertisement without `interfaces`): the speaker's
    /// `--interfaces` when given, else the interface holding the node's InternalIP plus those
    /// on the IP's subnet.
    Default,
    /// An interface named in an advertisement's `interfaces`.
    Named(String),
}

impl fmt::Display for WantedInterface {
    /// The words for messages: the name, or "the default interfaces".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the default interfaces"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

/// Interfaces a node announces an IP on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interfaces {
    /// The default choice is wanted (see [`WantedInterface::Default`]).
    pub default: bool,
    /// Named interfaces from advertisements.
    pub named: BTreeSet<String>,
}

impl Interfaces {
    fn merge(&mut self, other: &Interfaces) {
        self.default |= other.default;
        self.named.extend(other.named.iter().cloned());
    }

    /// No interface at all (this node is selected by no covering advertisement).
    pub fn is_empty(&self) -> bool {
        !self.default && self.named.is_empty()
    }

    /// Each wanted interface, the default first.
    pub fn iter(&self) -> impl Iterator<Item = WantedInterface> + '_ {
        self.default
            .then_some(WantedInterface::Default)
            .into_iter()
            .chain(self.named.iter().cloned().map(WantedInterface::Named))
    }

    /// For messages: "eth9", "the default interfaces", "the default interfaces, eth9".
    pub fn describe(&self) -> String {
        let words: Vec<String> = self.iter().map(|w| w.to_string()).collect();
        if words.is_empty() {
            "no interface".to_string()
        } else {
            words.join(", ")
        }
    }
}

/// How one IP is announced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpPlan {
    /// The Services using the IP, sorted.
    pub services: Vec<SvcKey>,
    /// Nodes that may announce it (before liveness).
    pub eligible: BTreeSet<String>,
    /// This node's interfaces for it (empty when this node is not eligible).
    pub interfaces: Interfaces,
    /// The interfaces any eligible node is asked to announce it on (for messages; the same on
    /// every node, unlike `interfaces`).
    pub wanted: Interfaces,
    /// The sharing Services' eligible sets were disjoint and the union is used.
    pub disjoint_sharing: bool,
}

/// One Service's part of the plan (every Service of ours with ingress IPs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServicePlan {
    /// Its IPs.
    pub ips: Vec<IpAddr>,
    /// IPs not announced and why.
    pub not_announced: BTreeMap<IpAddr, NotAnnounced>,
    /// For events.
    pub uid: Option<String>,
    /// For `observedGeneration`.
    pub generation: Option<i64>,
    /// The condition currently published.
    pub observed: Option<ObservedCondition>,
}

/// Something wrong in the configuration, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A selector of an L2Advertisement cannot be evaluated; it matches nothing.
    BadSelector {
        /// The advertisement.
        l2adv: String,
        /// What is wrong.
        error: SelectorError,
    },
}

/// The result: per-IP candidates and per-Service status inputs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Announceable IPs.
    pub ips: BTreeMap<IpAddr, IpPlan>,
    /// Every Service of ours with ingress IPs.
    pub services: BTreeMap<SvcKey, ServicePlan>,
    /// Services not planned whose `ferrolb.io/Announced` condition the speakers' field manager
    /// still owns.
    pub stale: BTreeMap<SvcKey, Stale>,
    /// Configuration problems found (deduplicated).
    pub problems: Vec<Problem>,
    /// Forwarder mode: `(protocol, port)` of every Service of a node pool that selects this
    /// node, whose ports this node's speaker checks (see `crate::forwarder`).
    pub forwarded_ports: BTreeSet<(String, u16)>,
    /// Forwarder mode with `forwarding: Speaker`: the Services published on this node's
    /// addresses, which this node's speaker forwards.
    pub proxied: Vec<Proxied>,
}

/// A Service this node's speaker forwards (forwarder mode, `forwarding: Speaker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// `namespace/name`.
    pub key: SvcKey,
    /// This node's addresses among the Service's published ones.
    pub addrs: Vec<IpAddr>,
    /// `(protocol, port)` of its ports.
    pub ports: Vec<(String, u16)>,
    /// `(protocol, port, nodePort)`.
    pub node_ports: Vec<(String, u16, u16)>,
    /// `spec.clusterIPs`.
    pub cluster_ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`.
    pub etp_local: bool,
}

/// Selector evaluation that records errors instead of failing: a broken selector matches nothing.
struct Matcher<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Matcher<'_> {
    fn any(
        &mut self,
        adv: &L2AdvInfo,
        sel: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
        labels: &BTreeMap<String, String>,
    ) -> bool {
        match any_matches(sel, labels) {
            Ok(m) => m,
            Err(error) => {
                let p = Problem::BadSelector {
                    l2adv: adv.name.clone(),
                    error,
                };
                if !self.problems.contains(&p) {
                    self.problems.push(p);
                }
                false
            }
        }
    }
}

/// The pool an IP of `svc` comes from.
pub fn pool_of<'a>(
    snap: &'a Snapshot,
    svc: &'a ServiceInfo,
    ip: IpAddr,
) -> Option<(&'a str, Option<&'a PoolInfo>)> {
    match svc.pools.as_slice() {
        [] => snap
            .pools
            .values()
            .find(|p| p.contains(ip))
            .map(|p| (p.name.as_str(), Some(p))),
        [only] => Some((only.as_str(), snap.pools.get(only))),
        many => many
            .iter()
            .filter_map(|n| snap.pools.get(n))
            .find(|p| p.contains(ip))
            .map(|p| (p.name.as_str(), Some(p))),
    }
}

fn adv_covers_pool(
    m: &mut Matcher<'_>,
    adv: &L2AdvInfo,
    pool: &str,
    info: Option<&PoolInfo>,
) -> bool {
    if adv.pools.is_empty() && adv.pool_selectors.is_empty() {
        return true;
    }
    if adv.pools.iter().any(|p| p == pool) {
        return true;
    }
    let empty = BTreeMap::new();
    let labels = info.map(|p| &p.labels).unwrap_or(&empty);
    !adv.pool_selectors.is_empty() && m.any(adv, &adv.pool_selectors, labels)
}

/// Whether a node may announce at all: not labelled with [`EXCLUDE_LABEL`] and its network
/// is not unavailable. Shared by every mode.
pub fn node_usable(n: &NodeInfo) -> bool {
    !n.labels.contains_key(EXCLUDE_LABEL) && !n.network_unavailable
}

/// Eligible nodes, each with the interfaces it is asked to announce on.
type NodeInterfaces = BTreeMap<String, Interfaces>;

/// Computes the plan. Deterministic: the same snapshot gives the same plan on every node (except
/// `interfaces`, which are this node's).
pub fn compute(snap: &Snapshot, cfg: &PlanConfig) -> Plan {
    let mut problems = Vec::new();
    let mut m = Matcher {
        problems: &mut problems,
    };
    // Serving endpoints per Service: the nodes they run on, and whether any exists.
    let mut endpoint_nodes: BTreeMap<&str, (bool, BTreeSet<&str>)> = BTreeMap::new();
    for slice in snap.slices.values() {
        let e = endpoint_nodes.entry(slice.service.as_str()).or_default();
        for ep in slice.endpoints.iter().filter(|e| e.serving) {
            e.0 = true;
            if let Some(n) = ep.node.as_deref() {
                e.1.insert(n);
            }
        }
    }
    let mut services = BTreeMap::new();
    let mut stale = BTreeMap::new();
    // Per IP: each announceable Service's eligible nodes with the interfaces each is asked for.
    let mut per_ip: BTreeMap<IpAddr, Vec<(SvcKey, NodeInterfaces)>> = BTreeMap::new();
    for (key, svc) in &snap.services {
        if let Some(why) = Unplanned::of(svc, &snap.pools, cfg) {
            // Only a condition the speakers' field manager owns: one written by someone else
            // is not ours to remove, and once ours is removed the Service drops out of here,
            // so the removal happens once.
            if svc.announced.as_ref().is_some_and(|c| c.by_speaker) {
                stale.insert(
                    key.clone(),
                    Stale {
                        why,
                        uid: svc.uid.clone(),
                        observed: svc.announced.clone(),
                    },
                );
            }
            continue;
        }
        let mut sp = ServicePlan {
            ips: svc.ips.clone(),
            uid: svc.uid.clone(),
            generation: svc.generation,
            observed: svc.announced.clone(),
            ..Default::default()
        };
        let (has_endpoint, ep_nodes) = endpoint_nodes
            .get(key.as_str())
            .cloned()
            .unwrap_or_default();
        let mut uncovered = 0usize;
        for &ip in &svc.ips {
            let Some((pool, pool_info)) = pool_of(snap, svc, ip) else {
                sp.not_announced.insert(ip, NotAnnounced::NoPool);
                continue;
            };
            let covering: Vec<&L2AdvInfo> = snap
                .l2advs
                .values()
                .filter(|a| {
                    adv_covers_pool(&mut m, a, pool, pool_info)
                        && m.any(a, &a.service_selectors, &svc.labels)
                })
                .collect();
            if covering.is_empty() {
                uncovered += 1;
                sp.not_announced.insert(ip, NotAnnounced::NoL2Advertisement);
                continue;
            }
            if !has_endpoint {
                sp.not_announced.insert(ip, NotAnnounced::NoEndpoints);
                continue;
            }
            let mut eligible: BTreeMap<String, Interfaces> = BTreeMap::new();
            for node in snap.nodes.values().filter(|n| node_usable(n)) {
                if svc.etp_local && !ep_nodes.contains(node.name.as_str()) {
                    continue;
                }
                let mut wanted: Option<Interfaces> = None;
                for adv in &covering {
                    if m.any(adv, &adv.node_selectors, &node.labels) {
                        wanted.get_or_insert_default().merge(&Interfaces {
                            default: adv.interfaces.is_empty(),
                            named: adv.interfaces.iter().cloned().collect(),
                        });
                    }
                }
                if let Some(w) = wanted {
                    eligible.insert(node.name.clone(), w);
                }
            }
            if eligible.is_empty() {
                sp.not_announced.insert(ip, NotAnnounced::NoEligibleNode);
                continue;
            }
            per_ip.entry(ip).or_default().push((key.clone(), eligible));
        }
        if cfg.bgp && uncovered == svc.ips.len() {
            // BGP's, not L2's: no condition of L2's, and one left from L2 days goes.
            if svc.announced.as_ref().is_some_and(|c| c.by_speaker) {
                stale.insert(
                    key.clone(),
                    Stale {
                        why: Unplanned::NotLayer2,
                        uid: svc.uid.clone(),
                        observed: svc.announced.clone(),
                    },
                );
            }
            continue;
        }
        services.insert(key.clone(), sp);
    }
    let mut ips = BTreeMap::new();
    for (ip, users) in per_ip {
        let mut inter: Option<BTreeSet<String>> = None;
        let mut union = BTreeSet::new();
        let mut names = Vec::new();
        for (svc, nodes) in &users {
            names.push(svc.clone());
            union.extend(nodes.keys().cloned());
            inter = Some(match inter {
                None => nodes.keys().cloned().collect(),
                Some(i) => i.into_iter().filter(|n| nodes.contains_key(n)).collect(),
            });
        }
        let inter = inter.unwrap_or_default();
        let disjoint = inter.is_empty();
        let eligible = if disjoint { union } else { inter };
        // Only what eligible nodes are asked for: a node the intersection dropped never
        // announces the IP, so its interfaces mean nothing for it.
        let mut interfaces = Interfaces::default();
        let mut wanted = Interfaces::default();
        for (_, nodes) in &users {
            for (node, ifs) in nodes.iter().filter(|(n, _)| eligible.contains(*n)) {
                wanted.merge(ifs);
                if *node == cfg.self_node {
                    interfaces.merge(ifs);
                }
            }
        }
        names.sort();
        ips.insert(
            ip,
            IpPlan {
                services: names,
                eligible,
                interfaces,
                wanted,
                disjoint_sharing: disjoint,
            },
        );
    }
    Plan {
        ips,
        services,
        stale,
        problems,
        forwarded_ports: forwarded_ports(snap, cfg),
        proxied: proxied(snap, cfg),
    }
}

/// The Services of speaker-forwarded node pools published on this node's addresses.
fn proxied(snap: &Snapshot, cfg: &PlanConfig) -> Vec<Proxied> {
    let Some(me) = snap.nodes.get(&cfg.self_node) else {
        return Vec::new();
    };
    let mine: BTreeSet<IpAddr> = me
        .internal_ips
        .iter()
        .chain(&me.external_ips)
        .copied()
        .collect();
    snap.services
        .iter()
        .filter(|(_, s)| s.is_ours(&cfg.lb_class, cfg.ignore_classless))
        .filter(|(_, s)| {
            s.pools
                .iter()
                .any(|p| snap.pools.get(p).is_some_and(|i| i.speaker_forwards))
        })
        .filter_map(|(key, s)| {
            let addrs: Vec<IpAddr> = s.ips.iter().copied().filter(|a| mine.contains(a)).collect();
            (!addrs.is_empty()).then(|| Proxied {
                key: key.clone(),
                addrs,
                ports: s.ports.clone(),
                node_ports: s.node_ports.clone(),
                cluster_ips: s.cluster_ips.clone(),
                etp_local: s.etp_local,
            })
        })
        .collect()
}

/// The ports of the node pools' Services that this node may be published for: the Service is
/// ours and names a node pool (the controller's annotation, written before anything is
/// published) whose `nodeSelector` selects this node. Health and conflicts are the controller's
/// to weigh; the speaker checks every port it could be asked for.
fn forwarded_ports(snap: &Snapshot, cfg: &PlanConfig) -> BTreeSet<(String, u16)> {
    let Some(me) = snap.nodes.get(&cfg.self_node) else {
        return BTreeSet::new();
    };
    let selects_me = |pool: &PoolInfo| match &pool.node_selector {
        Some(None) => true,
        Some(Some(sel)) => ferrolb_crds::selector::matches(sel, &me.labels).unwrap_or(false),
        None => false,
    };
    snap.services
        .values()
        .filter(|s| s.type_ == "LoadBalancer" && s.is_ours(&cfg.lb_class, cfg.ignore_classless))
        .filter(|s| {
            s.pools
                .iter()
                .any(|p| snap.pools.get(p).is_some_and(selects_me))
        })
        .flat_map(|s| s.ports.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::EndpointInfo;
    use ferrolb_addresses::parse_pool_entry;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(pairs)),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal ip")
    }

    fn cfg() -> PlanConfig {
        PlanConfig {
            lb_class: "ferrolb.io/lb".into(),
            ignore_classless: false,
            self_node: "n1".into(),
            bgp: false,
        }
    }

    /// Three nodes, one pool (v4 + v6), one catch-all advertisement, one Cluster Service with
    /// an endpoint on n3.
    fn base() -> Snapshot {
        let mut s = Snapshot::default();
        for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
            s.nodes.insert(
                n.to_string(),
                NodeInfo {
                    name: n.to_string(),
                    uid: None,
                    labels: labels(&[("zone", if i == 0 { "a" } else { "b" })]),
                    internal_ips: vec![ip(&format!("198.51.100.{}", 11 + i))],
                    external_ips: Vec::new(),
                    network_unavailable: false,
                },
            );
        }
        s.pools.insert(
            "pool".into(),
            PoolInfo {
                name: "pool".into(),
                labels: labels(&[("tier", "front")]),
                ranges: vec![
                    parse_pool_entry("198.51.100.64/27").expect("cidr"),
                    parse_pool_entry("2001:db8::100/120").expect("cidr"),
                ],
                bad: vec![],
                node_selector: None,
                speaker_forwards: false,
            },
        );
        s.l2advs.insert(
            "all".into(),
            L2AdvInfo {
                name: "all".into(),
                ..Default::default()
            },
        );
        add_service(&mut s, "web", &["198.51.100.70"], false, &[("n3", true)]);
        s
    }

    fn add_service(s: &mut Snapshot, name: &str, ips: &[&str], local: bool, eps: &[(&str, bool)]) {
        let key = format!("ns/{name}");
        s.services.insert(
            key.clone(),
            ServiceInfo {
                namespace: "ns".into(),
                name: name.into(),
                type_: "LoadBalancer".into(),
                etp_local: local,
                ips: ips.iter().map(|i| ip(i)).collect(),
                pools: vec!["pool".into()],
                labels: labels(&[("app", name)]),
                ..Default::default()
            },
        );
        s.slices.insert(
            format!("ns/{name}-x"),
            SliceInfo {
                service: key,
                endpoints: eps
                    .iter()
                    .map(|(n, ok)| EndpointInfo {
                        node: Some(n.to_string()),
                        serving: *ok,
                    })
                    .collect(),
            },
        );
    }

    fn eligible(p: &Plan, a: &str) -> Vec<String> {
        p.ips
            .get(&ip(a))
            .map(|x| x.eligible.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn cluster_policy_uses_every_usable_node() {
        let p = compute(&base(), &cfg());
        assert_eq!(eligible(&p, "198.51.100.70"), ["n1", "n2", "n3"]);
        let ifs = &p.ips[&ip("198.51.100.70")].interfaces;
        assert!(ifs.default && ifs.named.is_empty());
        assert!(p.services["ns/web"].not_announced.is_empty());
    }

    #[test]
    fn cluster_policy_needs_a_serving_endpoint_somewhere() {
        let mut s = base();
        add_service(&mut s, "idle", &["198.51.100.71"], false, &[("n1", false)]);
        add_service(&mut s, "none", &["198.51.100.72"], false, &[]);
        let p = compute(&s, &cfg());
        assert!(!p.ips.contains_key(&ip("198.51.100.71")));
        assert!(!p.ips.contains_key(&ip("198.51.100.72")));
        assert_eq!(
            p.services["ns/idle"].not_announced[&ip("198.51.100.71")],
            NotAnnounced::NoEndpoints
        );
    }

    #[test]
    fn local_policy_follows_the_endpoints() {
        let mut s = base();
        add_service(
            &mut s,
            "loc",
            &["198.51.100.73"],
            true,
            &[("n2", true), ("n3", false)],
        );
        let p = compute(&s, &cfg());
        assert_eq!(eligible(&p, "198.51.100.73"), ["n2"]);
        // This node (n1) is not eligible, so it has no interface for it.
        assert!(p.ips[&ip("198.51.100.73")].interfaces.is_empty());
        // The endpoint moves to n1.
        add_service(&mut s, "loc", &["198.51.100.73"], true, &[("n1", true)]);
        let p = compute(&s, &cfg());
        assert_eq!(eligible(&p, "198.51.100.73"), ["n1"]);
        // An endpoint without nodeName counts for Cluster but places nothing for Local.
        s.slices.insert(
            "ns/loc-x".into(),
            SliceInfo {
                service: "ns/loc".into(),
                endpoints: vec![EndpointInfo {
                    node: None,
                    serving: true,
                }],
            },
        );
        let p = compute(&s, &cfg());
        assert_eq!(
            p.services["ns/loc"].not_announced[&ip("198.51.100.73")],
            NotAnnounced::NoEligibleNode
        );
    }

    #[test]
    fn exclusion_label_and_network_unavailable_withdraw_nodes() {
        let mut s = base();
        s.nodes
            .get_mut("n2")
            .expect("n2")
            .labels
            .insert(EXCLUDE_LABEL.into(), String::new());
        s.nodes.get_mut("n3").expect("n3").network_unavailable = true;
        let p = compute(&s, &cfg());
        assert_eq!(eligible(&p, "198.51.100.70"), ["n1"]);
    }

    #[test]
    fn node_selectors_and_interfaces() {
        let mut s = base();
        s.l2advs.clear();
        s.l2advs.insert(
            "zone-b".into(),
            L2AdvInfo {
                name: "zone-b".into(),
                node_selectors: vec![sel(&[("zone", "b")])],
                ..Default::default()
            },
        );
        s.l2advs.insert(
            "zone-a-vlan".into(),
            L2AdvInfo {
                name: "zone-a-vlan".into(),
                node_selectors: vec![sel(&[("zone", "a")])],
                interfaces: vec!["vlan10".into()],
                ..Default::default()
            },
        );
        let p = compute(&s, &cfg());
        assert_eq!(eligible(&p, "198.51.100.70"), ["n1", "n2", "n3"]);
        let ifs = &p.ips[&ip("198.51.100.70")].interfaces;
        assert!(!ifs.default);
        assert_eq!(ifs.named.iter().collect::<Vec<_>>(), ["vlan10"]);
        // What any eligible node is asked for: n1's vlan10, n2's and n3's default.
        let wanted = &p.ips[&ip("198.51.100.70")].wanted;
        assert_eq!(wanted.describe(), "the default interfaces, vlan10");
        s.l2advs.remove("zone-a-vlan");
        let p = compute(&s, &cfg());
        assert_eq!(eligible(&p, "198.51.100.70"), ["n2", "n3"]);
        assert!(p.ips[&ip("198.51.100.70")].interfaces.is_empty());
        assert_eq!(
            p.ips[&ip("198.51.100.70")]
                .wanted
                .iter()
                .collect::<Vec<_>>(),
            [WantedInterface::Default]
        );
    }

    #[test]
    fn pool_and_service_selection() {
        let mut s = base();
        s.l2advs.clear();
        s.l2advs.insert(
            "other-pool".into(),
            L2AdvInfo {
                name: "other-pool".into(),
                pools: vec!["elsewhere".into()],
                ..Default::default()
            },
        );
        let p = compute(&s, &cfg());
        assert!(p.ips.is_empty());
        assert_eq!(
            p.services["ns/web"].not_announced[&ip("198.51.100.70")],
            NotAnnounced::NoL2Advertisement
        );
        s.l2advs.insert(
            "by-label".into(),
            L2AdvInfo {
                name: "by-label".into(),
                pool_selectors: vec![sel(&[("tier", "front")])],
                service_selectors: vec![sel(&[("app", "web")])],
                ..Default::default()
            },
        );
        let p = compute(&s, &cfg());
        assert_eq!(eligible(&p, "198.51.100.70"), ["n1", "n2", "n3"]);
        s.services.get_mut("ns/web").expect("web").labels = labels(&[("app", "api")]);
        assert!(compute(&s, &cfg()).ips.is_empty());
    }

    #[test]
    fn broken_selectors_match_nothing_and_are_reported() {
        let mut s = base();
        s.l2advs.insert(
            "all".into(),
            L2AdvInfo {
                name: "all".into(),
                node_selectors: vec![LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "zone".into(),
                        operator: "Near".into(),
                        values: None,
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let p = compute(&s, &cfg());
        assert!(p.ips.is_empty());
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
    }

    #[test]
    fn pools_from_annotation_or_by_address() {
        let mut s = base();
        // Dual-stack with two pools named: each IP maps to the pool containing it.
        s.pools.insert(
            "v6".into(),
            PoolInfo {
                name: "v6".into(),
                ranges: vec![parse_pool_entry("2001:db8::200/120").expect("cidr")],
                ..Default::default()
            },
        );
        s.l2advs.clear();
        s.l2advs.insert(
            "v6-only".into(),
            L2AdvInfo {
                name: "v6-only".into(),
                pools: vec!["v6".into()],
                ..Default::default()
            },
        );
        add_service(
            &mut s,
            "dual",
            &["198.51.100.74", "2001:db8::201"],
            false,
            &[("n1", true)],
        );
        s.services.get_mut("ns/dual").expect("dual").pools = vec!["pool".into(), "v6".into()];
        let p = compute(&s, &cfg());
        assert!(p.ips.contains_key(&ip("2001:db8::201")));
        assert!(!p.ips.contains_key(&ip("198.51.100.74")));
        // No annotation: found by address. Not in any pool: NoPool.
        s.services.get_mut("ns/dual").expect("dual").pools.clear();
        s.services
            .get_mut("ns/dual")
            .expect("dual")
            .ips
            .push(ip("198.51.100.250"));
        let p = compute(&s, &cfg());
        assert!(p.ips.contains_key(&ip("2001:db8::201")));
        assert_eq!(
            p.services["ns/dual"].not_announced[&ip("198.51.100.250")],
            NotAnnounced::NoPool
        );
    }

    #[test]
    fn shared_ip_uses_intersection_then_union() {
        let mut s = base();
        add_service(
            &mut s,
            "a",
            &["198.51.100.80"],
            true,
            &[("n1", true), ("n2", true)],
        );
        add_service(
            &mut s,
            "b",
            &["198.51.100.80"],
            true,
            &[("n2", true), ("n3", true)],
        );
        // n1 alone is asked for eth9; the intersection drops n1, so eth9 is wanted by nobody.
        s.l2advs.insert(
            "n1-eth9".into(),
            L2AdvInfo {
                name: "n1-eth9".into(),
                node_selectors: vec![sel(&[("zone", "a")])],
                interfaces: vec!["eth9".into()],
                ..Default::default()
            },
        );
        let p = compute(&s, &cfg());
        let plan = &p.ips[&ip("198.51.100.80")];
        assert_eq!(eligible(&p, "198.51.100.80"), ["n2"]);
        assert_eq!(plan.wanted.describe(), "the default interfaces");
        assert!(plan.interfaces.is_empty());
        assert_eq!(plan.services, ["ns/a", "ns/b"]);
        assert!(!plan.disjoint_sharing);
        // A sharing Service without endpoints does not withdraw the IP from the others.
        add_service(&mut s, "c", &["198.51.100.80"], true, &[]);
        assert_eq!(eligible(&compute(&s, &cfg()), "198.51.100.80"), ["n2"]);
        // Disjoint: union, flagged.
        add_service(&mut s, "b", &["198.51.100.80"], true, &[("n3", true)]);
        let p = compute(&s, &cfg());
        assert_eq!(eligible(&p, "198.51.100.80"), ["n1", "n2", "n3"]);
        assert!(p.ips[&ip("198.51.100.80")].disjoint_sharing);
    }

    #[test]
    fn services_not_ours_are_ignored() {
        let mut s = base();
        s.services.get_mut("ns/web").expect("web").class = Some("other".into());
        let p = compute(&s, &cfg());
        assert!(p.ips.is_empty() && p.services.is_empty() && p.stale.is_empty());
    }

    #[test]
    fn services_that_stopped_being_ours_with_our_condition_are_stale() {
        let ours = ObservedCondition {
            status: "True".into(),
            reason: "Announced".into(),
            message: "announced by n1 on eth0".into(),
            by_speaker: true,
        };
        let why = |edit: &dyn Fn(&mut ServiceInfo)| {
            let mut s = base();
            let web = s.services.get_mut("ns/web").expect("web");
            web.uid = Some("u-web".into());
            web.announced = Some(ours.clone());
            edit(web);
            let p = compute(&s, &cfg());
            assert!(p.ips.is_empty() && p.services.is_empty());
            p.stale.get("ns/web").map(|x| (x.why, x.uid.clone()))
        };
        let stale = |w: Unplanned| Some((w, Some("u-web".to_string())));
        assert_eq!(
            why(&|w| w.type_ = "ClusterIP".into()),
            stale(Unplanned::NotLoadBalancer)
        );
        assert_eq!(
            why(&|w| w.class = Some("other".into())),
            stale(Unplanned::OtherClass)
        );
        assert_eq!(why(&|w| w.ips.clear()), stale(Unplanned::NoIps));
        // Gone, or set by another field manager: nothing to remove.
        assert_eq!(
            why(&|w| {
                w.type_ = "ClusterIP".into();
                w.announced = None;
            }),
            None
        );
        assert_eq!(
            why(&|w| {
                w.type_ = "ClusterIP".into();
                if let Some(c) = w.announced.as_mut() {
                    c.by_speaker = false;
                }
            }),
            None
        );
        // A planned Service is never stale.
        let mut s = base();
        s.services.get_mut("ns/web").expect("web").announced = Some(ours.clone());
        let p = compute(&s, &cfg());
        assert!(p.stale.is_empty() && p.services.contains_key("ns/web"));

        // Moved to a node pool: never announced (its IPs are nodes' own addresses), and the
        // condition of its L2 days is removed.
        let mut s = base();
        s.pools.insert(
            "edge".into(),
            PoolInfo {
                name: "edge".into(),
                node_selector: Some(None),
                ..Default::default()
            },
        );
        let web = s.services.get_mut("ns/web").expect("web");
        web.pools = vec!["edge".into()];
        web.ips = vec![ip("198.51.100.11")];
        web.announced = Some(ours.clone());
        web.ports = vec![("TCP".into(), 443), ("UDP".into(), 443)];
        let p = compute(&s, &cfg());
        assert!(
            p.ips.is_empty(),
            "node addresses are never announced: {:?}",
            p.ips
        );
        assert_eq!(
            p.stale.get("ns/web").map(|x| x.why),
            Some(Unplanned::NodePool)
        );
        // ...and this node's speaker checks its ports, unless the pool does not select it.
        assert_eq!(
            p.forwarded_ports,
            BTreeSet::from([("TCP".to_string(), 443), ("UDP".to_string(), 443)])
        );
        s.pools.get_mut("edge").expect("edge").node_selector = Some(Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("zone".to_string(), "b".to_string())])),
            ..Default::default()
        }));
        assert!(
            compute(&s, &cfg()).forwarded_ports.is_empty(),
            "n1 is in zone a"
        );

        // With BGP mode on, a Service no L2Advertisement covers is BGP's: L2 writes no
        // condition about it, and removes one it wrote before.
        let mut s = base();
        s.l2advs.clear();
        s.services.get_mut("ns/web").expect("web").announced = Some(ours);
        let plain = compute(&s, &cfg());
        assert!(
            plain.services.contains_key("ns/web"),
            "without BGP: L2 says why not"
        );
        let p = compute(&s, &PlanConfig { bgp: true, ..cfg() });
        assert!(!p.services.contains_key("ns/web"));
        assert_eq!(
            p.stale.get("ns/web").map(|x| x.why),
            Some(Unplanned::NotLayer2)
        );
    }
}
