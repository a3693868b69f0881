//! Forwarder mode: the Services of a node pool (an `IPAddressPool` with `nodeAddresses`) are
//! published on the nodes' own addresses, and kube-proxy forwards their ports there (with
//! `ipMode: VIP` it turns every ingress address into a DNAT rule that runs before any hostPort
//! rule). No pod per Service: what K3s's servicelb shows as a Pending pod, this module turns
//! into a condition in words.
//!
//! [`decide`] takes every input at once and answers, per Service, which addresses to publish,
//! which selected nodes were left out and why, and what the `ferrolb.io/ForwarderReady`
//! condition says. Pure and deterministic: projections in ([`nodes`]), an [`Outcome`] per
//! Service out; no clock, no I/O, the same answer for the same inputs in any order.
//!
//! The rules:
//! - **Which nodes.** Those the pool's `nodeSelector` selects (with `k3sServiceLBLabels`, also
//!   K3s servicelb's `enablelb`/`lbpool` labels), minus nodes that are being deleted, not Ready,
//!   labelled out of external load balancers, tainted for removal by the autoscaler, or without
//!   a Ready speaker pod; for `externalTrafficPolicy: Local`, minus nodes without a ready
//!   endpoint (kube-proxy would drop there).
//! - **Which addresses.** Per node and family, the `addressType` addresses (`PreferExternalIP`:
//!   ExternalIP where the node has one of that family, else InternalIP), inside `cidrs` when
//!   given; listed in `spec.ipFamilies` order, sorted, without duplicates. A node with no
//!   address of one family contributes the other.
//! - **Ports, checked before publishing.** A node is published for a Service only once its
//!   speaker has checked every `family/protocol/port` the Service would use there and found it
//!   free (no host socket, no hostPort pod, not deny-listed). Cluster-wide, an address and port
//!   already held — by an older forwarder Service, by a Service's `externalIPs`, or by another
//!   LoadBalancer's ingress — is not taken again: the node is left out of the younger Service.
//!   A port equal to another Service's nodePort shadows that NodePort on these addresses: a
//!   warning, or a conflict with `block_node_port_shadowing`.
//! - **IPVS.** kube-proxy in IPVS mode binds every `ipMode: VIP` ingress address to
//!   `kube-ipvs0` on every node, so node addresses would be claimed by every node: if any
//!   speaker reports IPVS, nothing of a kube-proxy-forwarded pool is published at all. Pools
//!   forwarded by the speaker (`ipMode: Proxy`, which kube-proxy leaves alone) are unaffected.
//!
//! A conflicted node is left out of that Service only; the Service keeps its other nodes.

pub mod nodes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_allocator::{Family, IpRange, Protocol};
use ferrolb_crds::NodeAddressType;
use ferrolb_crds::selector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::service::SvcKey;
use crate::strmap::StrMap;
pub use nodes::{NodeReport, NodeView, PortKey};

/// A node pool, as forwarder mode reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePool {
    /// Pool name.
    pub name: String,
    /// `nodeAddresses.nodeSelector` (`None`: every node).
    pub selector: Option<LabelSelector>,
    /// `nodeAddresses.addressType`.
    pub address_type: NodeAddressType,
    /// `nodeAddresses.cidrs`, parsed (entries that do not parse are reported by the pool).
    pub cidrs: Vec<IpRange>,
    /// `nodeAddresses.k3sServiceLBLabels`.
    pub k3s_labels: bool,
    /// `nodeAddresses.forwarding`: kube-proxy (`ipMode: VIP`) or the speaker (`Proxy`).
    pub forwarding: ferrolb_crds::NodeForwarding,
}

/// A Service published by a node pool.
#[derive(Debug, Clone, PartialEq)]
pub struct FwdService {
    /// `namespace/name`.
    pub key: SvcKey,
    /// Creation time in seconds (older Services keep contested ports); `None` sorts first.
    pub created: Option<i64>,
    /// The node pool.
    pub pool: String,
    /// `(protocol, port)` of every Service port.
    pub ports: Vec<(Protocol, u16)>,
    /// Families to publish, in `spec.ipFamilies` order (one, or both for dual stack).
    pub families: Vec<Family>,
    /// `ipFamilyPolicy: RequireDualStack`.
    pub require_dual: bool,
    /// `externalTrafficPolicy: Local`.
    pub etp_local: bool,
    /// The Service's labels (for K3s's `lbpool`).
    pub labels: StrMap,
}

/// A Service that holds addresses and ports forwarder mode does not decide: its
/// `externalIPs`, or the ingress of a LoadBalancer that is not forwarder mode's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `namespace/name`.
    pub key: SvcKey,
    /// The addresses it holds.
    pub ips: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<(Protocol, u16)>,
}

/// Everything [`decide`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Every Node, by name.
    pub nodes: &'a BTreeMap<String, NodeView>,
    /// Speaker reports, by node name.
    pub reports: &'a BTreeMap<String, NodeReport>,
    /// Nodes with a Ready speaker pod.
    pub speakers: &'a BTreeSet<String>,
    /// Node pools, by name.
    pub pools: &'a BTreeMap<String, NodePool>,
    /// The Services of node pools.
    pub services: &'a [FwdService],
    /// For `externalTrafficPolicy: Local` Services: nodes with a ready endpoint.
    pub endpoints: &'a BTreeMap<SvcKey, BTreeSet<String>>,
    /// Addresses and ports held by other Services.
    pub holders: &'a [Holder],
    /// nodePorts in use: `(protocol, nodePort)` → Services.
    pub node_ports: &'a BTreeMap<(Protocol, u16), BTreeSet<SvcKey>>,
    /// Treat a port equal to another Service's nodePort as a conflict instead of a warning.
    pub block_node_port_shadowing: bool,
}

/// What holds a port a Service wanted on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Culprit {
    /// The node's speaker found it unavailable (`HostSocket`, `HostPort`, `DenyList`), with the
    /// detail in words.
    Node {
        /// The speaker's reason.
        reason: String,
        /// In words.
        detail: String,
    },
    /// Another Service holds the address and port.
    Service(SvcKey),
    /// Another Service's nodePort (with `block_node_port_shadowing`).
    NodePort(SvcKey),
}

/// One port a Service could not have on one node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortConflict {
    /// The node.
    pub node: String,
    /// The port.
    pub port: PortKey,
    /// Who holds it.
    pub culprit: Culprit,
}

impl PortConflict {
    /// The reason label for metrics: `HostSocket`, `HostPort`, `DenyList`, `Service`,
    /// `NodePort`.
    pub fn reason(&self) -> &str {
        match &self.culprit {
            Culprit::Node { reason, .. } => reason,
            Culprit::Service(_) => "Service",
            Culprit::NodePort(_) => "NodePort",
        }
    }
}

/// Why a selected node is not published for a Service. Ordered: a node is reported with the
/// first that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftOut {
    /// The Node is being deleted.
    Deleting,
    /// The Node is not Ready.
    NotReady,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    Excluded,
    /// Tainted `ToBeDeletedByClusterAutoscaler`.
    ToBeDeleted,
    /// No Ready speaker pod runs there.
    NoSpeaker,
    /// K3s's `enablelb`/`lbpool` labels leave it out.
    K3sLabels,
    /// It has no address of the pool's type (inside its `cidrs`) in the Service's families.
    NoAddress,
    /// `externalTrafficPolicy: Local` and no ready endpoint there.
    NoLocalEndpoint,
    /// Its speaker has not checked these ports yet.
    Pending(Vec<PortKey>),
    /// Ports unavailable there.
    Conflict(Vec<PortConflict>),
}

impl LeftOut {
    /// In words, for the condition message.
    pub fn words(&self) -> String {
        match self {
            LeftOut::Deleting => "being deleted".into(),
            LeftOut::NotReady => "not Ready".into(),
            LeftOut::Excluded => {
                "labelled node.kubernetes.io/exclude-from-external-load-balancers".into()
            }
            LeftOut::ToBeDeleted => "about to be removed by the cluster autoscaler".into(),
            LeftOut::NoSpeaker => "no ferrolb speaker is ready there".into(),
            LeftOut::K3sLabels => "left out by K3s servicelb labels".into(),
            LeftOut::NoAddress => "no address of the pool's type in the Service's families".into(),
            LeftOut::NoLocalEndpoint => {
                "no ready endpoint there (externalTrafficPolicy: Local)".into()
            }
            LeftOut::Pending(ports) => format!(
                "port check pending for {}",
                ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LeftOut::Conflict(cs) => {
                let mut parts: Vec<String> = cs
                    .iter()
                    .map(|c| {
                        let who = match &c.culprit {
                            Culprit::Node { detail, .. } => detail.clone(),
                            Culprit::Service(k) => format!("Service {k} holds it"),
                            Culprit::NodePort(k) => format!("it is the nodePort of Service {k}"),
                        };
                        format!("port {} unavailable: {who}", c.port)
                    })
                    .collect();
                parts.dedup();
                parts.join("; ")
            }
        }
    }

    /// Whether this is something the user would want to fix (it makes a Service partially
    /// available), rather than a node that is simply not serving.
    fn degrades(&self) -> bool {
        matches!(
            self,
            LeftOut::NoSpeaker | LeftOut::Pending(_) | LeftOut::Conflict(_)
        )
    }
}

/// The `ferrolb.io/ForwarderReady` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Published on every selected node that serves.
    AllNodes,
    /// Published, but some nodes are left out for a reason worth fixing, or a family is missing.
    PartiallyAvailable,
    /// Not published anywhere: every eligible node has a port conflict.
    PortConflict,
    /// Not published anywhere: no node is eligible (or checks are pending).
    NoEligibleNodes,
    /// kube-proxy runs in IPVS mode: nothing is published.
    UnsupportedProxyMode,
}

impl Reason {
    /// The condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AllNodes => "AllNodes",
            Reason::PartiallyAvailable => "PartiallyAvailable",
            Reason::PortConflict => "PortConflict",
            Reason::NoEligibleNodes => "NoEligibleNodes",
            Reason::UnsupportedProxyMode => "UnsupportedProxyMode",
        }
    }

    /// The condition status.
    pub fn status(self) -> bool {
        matches!(self, Reason::AllNodes | Reason::PartiallyAvailable)
    }
}

/// What one Service publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Addresses to publish, in family order, sorted, without duplicates.
    pub ingress: Vec<IpAddr>,
    /// Their `ipMode`: `VIP` (kube-proxy forwards) or `Proxy` (the speaker does).
    pub ip_mode: &'static str,
    /// Nodes published.
    pub published: Vec<String>,
    /// Selected nodes not published, and why.
    pub left_out: Vec<(String, LeftOut)>,
    /// Families the Service wants that no published node has.
    pub missing_families: Vec<Family>,
    /// Ports equal to another Service's nodePort (shadowed on these addresses), as warnings.
    pub shadowed: Vec<(PortKey, SvcKey)>,
    /// The condition's reason.
    pub reason: Reason,
    /// The condition's message.
    pub message: String,
}

impl Outcome {
    /// Every port conflict behind this outcome.
    pub fn conflicts(&self) -> impl Iterator<Item = &PortConflict> {
        self.left_out.iter().flat_map(|(_, l)| match l {
            LeftOut::Conflict(cs) => cs.as_slice(),
            _ => &[],
        })
    }
}

/// The addresses of `node` a pool publishes in `family`.
pub fn node_addresses(node: &NodeView, pool: &NodePool, family: Family) -> Vec<IpAddr> {
    let of = |list: &[IpAddr]| -> Vec<IpAddr> {
        list.iter()
            .copied()
            .filter(|ip| Family::of(*ip) == family)
            .collect()
    };
    let chosen = match pool.address_type {
        NodeAddressType::InternalIP => of(&node.internal),
        NodeAddressType::ExternalIP => of(&node.external),
        NodeAddressType::PreferExternalIP => {
            let ext = of(&node.external);
            if ext.is_empty() {
                of(&node.internal)
            } else {
                ext
            }
        }
    };
    chosen
        .into_iter()
        .filter(|ip| pool.cidrs.is_empty() || pool.cidrs.iter().any(|c| c.contains(*ip)))
        .collect()
}

/// Whether the pool's `nodeSelector` selects `node` (a malformed selector selects nothing; the
/// pool's status says so).
fn selects(pool: &NodePool, node: &NodeView) -> bool {
    pool.selector
        .as_ref()
        .is_none_or(|s| selector::matches(s, &node.labels).unwrap_or(false))
}

/// K3s servicelb's rule: in allow-list mode (any node labelled `enablelb`), a node serves only
/// with `enablelb=true`, and a Service labelled `lbpool=<p>` only on nodes labelled the same.
fn k3s_allows(svc: &FwdService, node: &NodeView, allow_list: bool) -> bool {
    if !allow_list {
        return true;
    }
    if node.labels.get(nodes::K3S_ENABLELB) != Some("true") {
        return false;
    }
    match svc.labels.get(nodes::K3S_LBPOOL) {
        Some(p) => node.labels.get(nodes::K3S_LBPOOL) == Some(p),
        None => true,
    }
}

/// Decides every forwarder Service. Services are taken oldest first, so an older Service keeps
/// an address and port that a younger one also wants.
pub fn decide(inp: Inputs<'_>) -> BTreeMap<SvcKey, Outcome> {
    let mut out = BTreeMap::new();
    let ipvs: Vec<&str> = inp
        .reports
        .iter()
        .filter(|(_, r)| r.ipvs)
        .map(|(n, _)| n.as_str())
        .collect();
    let k3s_allow_list = inp
        .nodes
        .values()
        .any(|n| n.labels.contains_key(nodes::K3S_ENABLELB));

    // Addresses and ports already held: others first, then each forwarder Service in turn.
    let mut taken: BTreeMap<(IpAddr, Protocol, u16), SvcKey> = BTreeMap::new();
    for h in inp.holders {
        for ip in &h.ips {
            for (proto, port) in &h.ports {
                taken
                    .entry((*ip, *proto, *port))
                    .or_insert_with(|| h.key.clone());
            }
        }
    }

    let mut order: Vec<&FwdService> = inp.services.iter().collect();
    order.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));

    for svc in order {
        let shadowed: Vec<(PortKey, SvcKey)> = svc
            .families
            .first()
            .map(|f| {
                svc.ports
                    .iter()
                    .flat_map(|(proto, port)| {
                        inp.node_ports
                            .get(&(*proto, *port))
                            .into_iter()
                            .flatten()
                            .filter(|k| **k != svc.key)
                            .map(move |k| {
                                (
                                    PortKey {
                                        family: *f,
                                        protocol: *proto,
                                        port: *port,
                                    },
                                    k.clone(),
                                )
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();

        let kube_proxy_forwards = inp
            .pools
            .get(&svc.pool)
            .is_none_or(|p| p.forwarding == ferrolb_crds::NodeForwarding::KubeProxy);
        if !ipvs.is_empty() && kube_proxy_forwards {
            let message = format!(
                "kube-proxy runs in IPVS mode (kube-ipvs0 on {}): it would bind every published node address on every node; forwarder mode needs kube-proxy in iptables or nftables mode, or an address pool",
                ipvs.join(", ")
            );
            out.insert(
                svc.key.clone(),
                Outcome {
                    ingress: Vec::new(),
                    ip_mode: "VIP",
                    published: Vec::new(),
                    left_out: Vec::new(),
                    missing_families: Vec::new(),
                    shadowed,
                    reason: Reason::UnsupportedProxyMode,
                    message,
                },
            );
            continue;
        }
        let Some(pool) = inp.pools.get(&svc.pool) else {
            out.insert(
                svc.key.clone(),
                Outcome {
                    ingress: Vec::new(),
                    ip_mode: "VIP",
                    published: Vec::new(),
                    left_out: Vec::new(),
                    missing_families: Vec::new(),
                    shadowed,
                    reason: Reason::NoEligibleNodes,
                    message: format!("node pool {} does not exist", svc.pool),
                },
            );
            continue;
        };

        let mut published = Vec::new();
        let mut left_out = Vec::new();
        let mut addrs: BTreeMap<Family, BTreeSet<IpAddr>> = BTreeMap::new();
        for node in inp.nodes.values().filter(|n| selects(pool, n)) {
            let name = node.name.to_string();
            let health = if node.deleting {
                Some(LeftOut::Deleting)
            } else if !node.ready {
                Some(LeftOut::NotReady)
            } else if node.excluded() {
                Some(LeftOut::Excluded)
            } else if node.to_be_deleted {
                Some(LeftOut::ToBeDeleted)
            } else if !inp.speakers.contains(&name) {
                Some(LeftOut::NoSpeaker)
            } else if pool.k3s_labels && !k3s_allows(svc, node, k3s_allow_list) {
                Some(LeftOut::K3sLabels)
            } else {
                None
            };
            if let Some(h) = health {
                left_out.push((name, h));
                continue;
            }
            let per_family: Vec<(Family, Vec<IpAddr>)> = svc
                .families
                .iter()
                .map(|f| (*f, node_addresses(node, pool, *f)))
                .filter(|(_, a)| !a.is_empty())
                .collect();
            if per_family.is_empty() {
                left_out.push((name, LeftOut::NoAddress));
                continue;
            }
            if svc.etp_local
                && !inp
                    .endpoints
                    .get(&svc.key)
                    .is_some_and(|e| e.contains(&name))
            {
                left_out.push((name, LeftOut::NoLocalEndpoint));
                continue;
            }
            let report = inp.reports.get(&name);
            let mut pending = Vec::new();
            let mut conflicts = Vec::new();
            for (family, ips) in &per_family {
                for (proto, port) in &svc.ports {
                    let key = PortKey {
                        family: *family,
                        protocol: *proto,
                        port: *port,
                    };
                    match report {
                        Some(r) if r.checked.contains(&key) => {
                            if let Some((reason, detail)) = r.unavailable.get(&key) {
                                conflicts.push(PortConflict {
                                    node: name.clone(),
                                    port: key,
                                    culprit: Culprit::Node {
                                        reason: reason.clone(),
                                        detail: detail.clone(),
                                    },
                                });
                            }
                        }
                        _ => pending.push(key),
                    }
                    for ip in ips {
                        if let Some(holder) =
                            taken.get(&(*ip, *proto, *port)).filter(|h| **h != svc.key)
                        {
                            conflicts.push(PortConflict {
                                node: name.clone(),
                                port: key,
                                culprit: Culprit::Service(holder.clone()),
                            });
                        }
                    }
                    if inp.block_node_port_shadowing {
                        for other in inp
                            .node_ports
                            .get(&(*proto, *port))
                            .into_iter()
                            .flatten()
                            .filter(|k| **k != svc.key)
                        {
                            conflicts.push(PortConflict {
                                node: name.clone(),
                                port: key,
                                culprit: Culprit::NodePort(other.clone()),
                            });
                        }
                    }
                }
            }
            conflicts.sort();
            conflicts.dedup();
            if !conflicts.is_empty() {
                left_out.push((name, LeftOut::Conflict(conflicts)));
            } else if !pending.is_empty() {
                left_out.push((name, LeftOut::Pending(pending)));
            } else {
                for (family, ips) in per_family {
                    for ip in ips {
                        for (proto, port) in &svc.ports {
                            taken.insert((ip, *proto, *port), svc.key.clone());
                        }
                        addrs.entry(family).or_default().insert(ip);
                    }
                }
                published.push(name);
            }
        }

        let ingress: Vec<IpAddr> = svc
            .families
            .iter()
            .flat_map(|f| addrs.get(f).into_iter().flatten().copied())
            .collect();
        let missing_families: Vec<Family> = if published.is_empty() {
            Vec::new()
        } else {
            svc.families
                .iter()
                .filter(|f| !addrs.contains_key(f))
                .copied()
                .collect()
        };
        let reason = if published.is_empty() {
            if left_out
                .iter()
                .any(|(_, l)| matches!(l, LeftOut::Conflict(_)))
            {
                Reason::PortConflict
            } else {
                Reason::NoEligibleNodes
            }
        } else if left_out.iter().any(|(_, l)| l.degrades())
            || (svc.require_dual && !missing_families.is_empty())
        {
            Reason::PartiallyAvailable
        } else {
            Reason::AllNodes
        };
        let mut o = Outcome {
            ingress,
            ip_mode: pool.forwarding.ip_mode(),
            published,
            left_out,
            missing_families,
            shadowed,
            reason,
            message: String::new(),
        };
        o.message = message(&o, pool);
        out.insert(svc.key.clone(), o);
    }
    out
}

/// The condition message: where the Service is published, and every left-out node with why.
fn message(o: &Outcome, pool: &NodePool) -> String {
    let mut parts = Vec::new();
    if o.published.is_empty() {
        parts.push(format!("published on no node of pool {}", pool.name));
    } else {
        let by = match pool.forwarding {
            ferrolb_crds::NodeForwarding::KubeProxy => "",
            ferrolb_crds::NodeForwarding::Speaker => ", forwarded by the speakers",
        };
        parts.push(format!(
            "published on {} ({}{by})",
            o.published.join(", "),
            pool.address_type.as_str()
        ));
    }
    if !o.missing_families.is_empty() {
        let fams: Vec<&str> = o.missing_families.iter().map(|f| f.as_str()).collect();
        parts.push(format!(
            "no published node has an {} address",
            fams.join(" or ")
        ));
    }
    if !o.left_out.is_empty() {
        let nodes: Vec<String> = o
            .left_out
            .iter()
            .map(|(n, why)| format!("{n} ({})", why.words()))
            .collect();
        parts.push(format!("left out: {}", nodes.join(", ")));
    }
    if !o.shadowed.is_empty() {
        let s: BTreeSet<String> = o
            .shadowed
            .iter()
            .map(|(p, k)| format!("port {p} is also the nodePort of Service {k}, which it shadows on these addresses"))
            .collect();
        parts.push(s.into_iter().collect::<Vec<_>>().join("; "));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests;
