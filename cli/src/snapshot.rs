//! A snapshot of the cluster objects the checks look at, and small pure queries over it (which
//! pool holds an IP, which endpoints a Service has, which nodes an advertisement selects). The
//! checks in [`crate::doctor`], [`crate::status`] and [`crate::service`] take a snapshot; only
//! [`crate::cluster`] fills one from the API server, so tests build snapshots by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_addresses::{IpRange, parse_pool_entry};
use ferrolb_crds::bgp::{BGPAdvertisement, BGPPeer, BGPSessionState};
use ferrolb_crds::{IPAddressPool, L2Advertisement};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use serde::Serialize;

use crate::walk::check::SliceEndpoint;

/// Label of the chart's speaker pods.
pub const SPEAKER_COMPONENT: &str = "speaker";
/// Label excluding a node from load balancers (honoured by the speaker).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The condition the speaker writes on Services (L2 mode). Named here because ferrolb-crds
/// does not export it; the speaker's own constant is `ANNOUNCED_CONDITION` in its `objects`.
pub const ANNOUNCED: &str = "ferrolb.io/Announced";
/// The class ferrolb answers by default.
pub const DEFAULT_CLASS: &str = "ferrolb.io/lb";

/// What the checks see of a cluster.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Services (all namespaces, or the one traced).
    pub services: Vec<Service>,
    /// EndpointSlices of those Services.
    pub slices: Vec<EndpointSlice>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// ferrolb pools.
    pub pools: Vec<IPAddressPool>,
    /// ferrolb L2 advertisements.
    pub l2advs: Vec<L2Advertisement>,
    /// ferrolb BGP advertisements (BGP mode): a pool one covers needs no L2Advertisement.
    pub bgp_advs: Vec<BGPAdvertisement>,
    /// ferrolb BGP peers.
    pub bgp_peers: Vec<BGPPeer>,
    /// BGP sessions as the speakers report them, one per (node, BGPPeer).
    pub bgp_sessions: Vec<BGPSessionState>,
    /// Which of BGP mode's kinds could not be read, and why.
    pub bgp_unread: BgpUnread,
    /// `networking.k8s.io/v1` ServiceCIDRs.
    pub service_cidrs: Vec<ServiceCIDR>,
    /// `kube-system/kube-proxy`, when present.
    pub kube_proxy_config: Option<ConfigMap>,
    /// DaemonSets (all namespaces): speakers, MetalLB, K3s servicelb.
    pub daemonsets: Vec<DaemonSet>,
    /// Deployments (all namespaces): MetalLB's controller.
    pub deployments: Vec<Deployment>,
    /// Pods of interest: ferrolb speakers, MetalLB, K3s svclb.
    pub pods: Vec<Pod>,
    /// Recent events reported by ferrolb.
    pub events: Vec<Event>,
    /// Each speaker pod's metrics text (Prometheus format), by pod name, where it could be read
    /// through the API server's pod proxy.
    pub speaker_metrics: BTreeMap<String, String>,
    /// What could not be read, and why (a missing CRD, no permission).
    pub gaps: Vec<String>,
}

/// Why BGP mode's objects could not be read (`not installed`, `forbidden: …`); `None` where
/// they were read, or the snapshot was built by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpUnread {
    /// BGPAdvertisements.
    pub advertisements: Option<String>,
    /// BGPPeers.
    pub peers: Option<String>,
    /// BGPSessionStates.
    pub sessions: Option<String>,
}

/// A Service's `namespace/name`.
pub fn key(s: &Service) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or("")
    )
}

/// A condition of a Service's status.
pub fn service_condition<'a>(s: &'a Service, type_: &str) -> Option<&'a Condition> {
    s.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The IPs in a Service's `status.loadBalancer.ingress`.
pub fn ingress_ips(s: &Service) -> Vec<IpAddr> {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// Whether ferrolb (default class) answers the Service: type LoadBalancer, class unset or ours.
pub fn is_ours(s: &Service) -> bool {
    let Some(spec) = &s.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == DEFAULT_CLASS)
}

/// A pool's parsed entries (entries that do not parse are skipped; the controller reports them).
pub fn pool_ranges(p: &IPAddressPool) -> Vec<IpRange> {
    p.spec
        .addresses
        .iter()
        .filter_map(|a| parse_pool_entry(a).ok())
        .collect()
}

/// The pool holding `ip`, if any.
pub fn pool_of(pools: &[IPAddressPool], ip: IpAddr) -> Option<&IPAddressPool> {
    pools
        .iter()
        .find(|p| pool_ranges(p).iter().any(|r| r.contains(ip)))
}

/// Whether a pool publishes the nodes' own addresses (forwarder mode) instead of addresses of
/// its own.
pub fn is_node_pool(p: &IPAddressPool) -> bool {
    p.spec.node_addresses.is_some()
}

/// The node that holds `ip` in its status, and the address's type (`InternalIP`,
/// `ExternalIP`).
pub fn node_with_address(snap: &Snapshot, ip: IpAddr) -> Option<(String, String)> {
    snap.nodes.iter().find_map(|n| {
        n.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .find(|a| a.address.parse::<IpAddr>().is_ok_and(|a| a == ip))
            .map(|a| (name_of(n), a.type_.clone()))
    })
}

/// Where one of a Service's external IPs comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpSource {
    /// The pool: the address pool holding the IP, or the node pool that published it.
    pub pool: Option<String>,
    /// Forwarder mode: the node whose own address the IP is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Forwarder mode: the type of that node address (`InternalIP`, `ExternalIP`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
}

/// Whether the Service's IPs come from a forwarder-mode pool: the controller wrote the
/// `ForwarderReady` condition, or its `ip-allocated-from-pool` annotation names a node pool.
pub fn is_forwarded(snap: &Snapshot, svc: &Service) -> bool {
    service_condition(svc, ferrolb_crds::conditions::FORWARDER_READY).is_some()
        || allocated_from(svc).is_some_and(|name| {
            snap.pools
                .iter()
                .any(|p| is_node_pool(p) && name_of(p) == name)
        })
}

/// The pool the controller says the Service's IPs came from (`ferrolb.io/ip-allocated-from-pool`).
pub fn allocated_from(svc: &Service) -> Option<&str> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(ferrolb_crds::annotations::ALLOCATED_FROM_POOL)
        .map(String::as_str)
}

/// Where `ip`, one of `svc`'s external IPs, comes from: an address pool's range, or, in
/// forwarder mode, a node's own address published by a node pool.
pub fn ip_source(snap: &Snapshot, svc: &Service, ip: IpAddr) -> IpSource {
    if let Some(p) = pool_of(&snap.pools, ip) {
        return IpSource {
            pool: Some(name_of(p)),
            ..IpSource::default()
        };
    }
    if !is_forwarded(snap, svc) {
        return IpSource::default();
    }
    let (node, address_type) = node_with_address(snap, ip).unzip();
    IpSource {
        pool: allocated_from(svc)
            .filter(|name| snap.pools.iter().any(|p| name_of(p) == *name))
            .map(str::to_string),
        node,
        address_type,
    }
}

/// The `ipMode` the Service's status gives `ip` (`VIP`, `Proxy`), when set.
pub fn ip_mode(svc: &Service, ip: IpAddr) -> Option<&str> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find(|i| i.ip.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) == Some(ip))?
        .ip_mode
        .as_deref()
}

/// A pool's name.
pub fn name_of<K: kube::Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

/// The endpoints of a Service's EndpointSlices for the target port named `port_name` (or
/// numbered), as the walker's cross-check wants them.
pub fn endpoints(snap: &Snapshot, svc: &Service, port_name: Option<&str>) -> Vec<SliceEndpoint> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let mine: Vec<&EndpointSlice> = snap
        .slices
        .iter()
        .filter(|sl| {
            sl.metadata.namespace.as_deref().unwrap_or("default") == ns
                && sl
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(name)
        })
        .collect();
    slice_endpoints(&mine, port_name)
}

/// The endpoints in `slices` for the port named `port_name` (`None`: each slice's first port;
/// a number also selects by port number).
pub fn slice_endpoints(slices: &[&EndpointSlice], port_name: Option<&str>) -> Vec<SliceEndpoint> {
    let mut out = Vec::new();
    for sl in slices {
        let port = sl.ports.iter().flatten().find(|p| {
            port_name.is_none_or(|n| {
                p.name.as_deref().unwrap_or("") == n || p.port.is_some_and(|x| x.to_string() == n)
            })
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in sl.endpoints.iter().flatten() {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for a in &e.addresses {
                if let Ok(ip) = a.parse() {
                    out.push(SliceEndpoint {
                        ip,
                        port,
                        ready,
                        serving,
                        terminating,
                        node: e.node_name.clone(),
                    });
                }
            }
        }
    }
    out.sort_by_key(|e| (e.ip, e.port));
    out.dedup();
    out
}

/// A node's labels.
pub fn labels(n: &Node) -> BTreeMap<String, String> {
    n.metadata.labels.clone().unwrap_or_default()
}

/// Whether a node is Ready.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Nodes an L2Advertisement selects (its node selectors; not the exclusion label).
pub fn selected_nodes<'a>(snap: &'a Snapshot, adv: &L2Advertisement) -> Vec<&'a Node> {
    snap.nodes
        .iter()
        .filter(|n| {
            !labels(n).contains_key(EXCLUDE_LABEL)
                && ferrolb_crds::selector::any_matches(&adv.spec.node_selectors, &labels(n))
                    .unwrap_or(false)
        })
        .collect()
}

/// Nodes a node pool (forwarder mode) may publish: its `nodeSelector` (all nodes without one),
/// minus nodes labelled to be excluded from load balancers.
pub fn node_pool_nodes<'a>(snap: &'a Snapshot, pool: &IPAddressPool) -> Vec<&'a Node> {
    let Some(na) = &pool.spec.node_addresses else {
        return Vec::new();
    };
    snap.nodes
        .iter()
        .filter(|n| {
            !labels(n).contains_key(EXCLUDE_LABEL)
                && na.node_selector.as_ref().is_none_or(|sel| {
                    ferrolb_crds::selector::matches(sel, &labels(n)).unwrap_or(false)
                })
        })
        .collect()
}

/// Whether an L2Advertisement covers a pool (by name, by selector, or all when it names none).
pub fn adv_covers(adv: &L2Advertisement, pool: &IPAddressPool) -> bool {
    covers(
        &adv.spec.ip_address_pools,
        &adv.spec.ip_address_pool_selectors,
        pool,
    )
}

/// Whether a BGPAdvertisement covers a pool (the same rules as for L2).
pub fn bgp_adv_covers(adv: &BGPAdvertisement, pool: &IPAddressPool) -> bool {
    covers(
        &adv.spec.ip_address_pools,
        &adv.spec.ip_address_pool_selectors,
        pool,
    )
}

/// Whether a BGPAdvertisement covers `svc`'s IPs from `pool`: it covers the pool, and its
/// `serviceSelectors` (none: all Services) select the Service.
pub fn bgp_adv_covers_service(adv: &BGPAdvertisement, pool: &IPAddressPool, svc: &Service) -> bool {
    bgp_adv_covers(adv, pool)
        && ferrolb_crds::selector::any_matches(
            &adv.spec.service_selectors,
            &svc.metadata.labels.clone().unwrap_or_default(),
        )
        .unwrap_or(false)
}

/// Nodes a BGPAdvertisement lets announce (its node selectors; not the exclusion label).
pub fn bgp_selected_nodes<'a>(snap: &'a Snapshot, adv: &BGPAdvertisement) -> Vec<&'a Node> {
    snap.nodes
        .iter()
        .filter(|n| {
            !labels(n).contains_key(EXCLUDE_LABEL)
                && ferrolb_crds::selector::any_matches(&adv.spec.node_selectors, &labels(n))
                    .unwrap_or(false)
        })
        .collect()
}

/// One BGP session's part in announcing an IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpSessionView {
    /// The node whose speaker runs it.
    pub node: String,
    /// The BGPPeer.
    pub peer: String,
    /// RFC 4271 state (`Established`, `Connect`, …).
    pub bgp_state: String,
    /// BFD state (`Up`, `Down`, …), `N/A` without a BFDProfile.
    pub bfd_state: String,
    /// The prefix holding the IP that the session announces, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
    /// Why the speaker does not announce the IP's prefix on this session, when it lists it
    /// among the desired prefixes it does not announce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_announced: Option<String>,
    /// The status lists only part of the session's prefixes (the speaker writes at most 64),
    /// and not the IP's: whether it is announced cannot be told.
    pub truncated: bool,
    /// The session's last error, in the speaker's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl BgpSessionView {
    /// Whether the session is Established.
    pub fn established(&self) -> bool {
        self.bgp_state == "Established"
    }
}

/// The BGP side of one external IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpView {
    /// The IP.
    pub ip: IpAddr,
    /// The BGPAdvertisements that cover its pool and the Service.
    pub advertisements: Vec<String>,
    /// The peers they announce to; empty: every peer.
    pub peers: Vec<String>,
    /// The nodes they let announce (node selectors, minus excluded nodes).
    pub selected_nodes: Vec<String>,
    /// The sessions with those peers, as the speakers report them.
    pub sessions: Vec<BgpSessionView>,
    /// The nodes that announce the IP on at least one session.
    pub advertising_nodes: Vec<String>,
}

/// The words for a reason a speaker gives in `notAdvertised` (its labels, snake case, or words
/// already).
pub fn bgp_reason_words(why: &str) -> String {
    match why.trim() {
        "family_not_negotiated" => "the router did not negotiate the address family".into(),
        "no_next_hop" => {
            "the session has no local address of the prefix's family to give as next hop".into()
        }
        "next_hop_family" => {
            "the next hop is of the other address family (RFC 8950 is not supported)".into()
        }
        "unencodable" => "the route's attributes cannot be encoded in one UPDATE".into(),
        other => other.to_string(),
    }
}

/// The BGP side of `ip`, one of `svc`'s external IPs: `None` when no BGPAdvertisement covers
/// its pool and the Service. Reads the BGPSessionStates: a session announces the IP when its
/// `advertised` list holds a prefix containing it, and does not, with the speaker's reason, when
/// its `notAdvertised` list does.
pub fn bgp_view(snap: &Snapshot, svc: &Service, ip: IpAddr) -> Option<BgpView> {
    let pool = pool_of(&snap.pools, ip).filter(|p| !is_node_pool(p))?;
    let advs: Vec<&BGPAdvertisement> = snap
        .bgp_advs
        .iter()
        .filter(|a| bgp_adv_covers_service(a, pool, svc))
        .collect();
    if advs.is_empty() {
        return None;
    }
    let mut peers: Vec<String> = Vec::new();
    if advs.iter().all(|a| !a.spec.peers.is_empty()) {
        peers = advs.iter().flat_map(|a| a.spec.peers.clone()).collect();
        peers.sort();
        peers.dedup();
    }
    let mut selected_nodes: Vec<String> = advs
        .iter()
        .flat_map(|a| bgp_selected_nodes(snap, a))
        .map(name_of)
        .collect();
    selected_nodes.sort();
    selected_nodes.dedup();
    let mut sessions = Vec::new();
    for st in snap.bgp_sessions.iter().filter_map(|s| s.status.as_ref()) {
        if !peers.is_empty() && !peers.contains(&st.peer) {
            continue;
        }
        let announced = st
            .advertised
            .iter()
            .filter_map(|p| {
                crate::rules::Net::parse(p)
                    .filter(|n| n.contains(&ip))
                    .map(|n| (n.len, p))
            })
            .max()
            .map(|(_, p)| p.clone());
        let not_announced = if announced.is_some() {
            None
        } else {
            st.not_advertised.iter().find_map(|entry| {
                let (prefix, why) = entry.split_once(": ").unwrap_or((entry.as_str(), ""));
                crate::rules::Net::parse(prefix)
                    .filter(|n| n.contains(&ip))
                    .map(|_| format!("{prefix}: {}", bgp_reason_words(why)))
            })
        };
        let listed = i64::try_from(st.advertised.len()).unwrap_or(i64::MAX);
        sessions.push(BgpSessionView {
            node: st.node.clone(),
            peer: st.peer.clone(),
            bgp_state: if st.bgp_state.is_empty() {
                "Idle".into()
            } else {
                st.bgp_state.clone()
            },
            bfd_state: if st.bfd_state.is_empty() {
                "N/A".into()
            } else {
                st.bfd_state.clone()
            },
            truncated: announced.is_none()
                && not_announced.is_none()
                && st.prefixes_advertised > listed,
            announced,
            not_announced,
            last_error: st.last_error.clone().filter(|e| !e.is_empty()),
        });
    }
    sessions.sort_by(|a, b| (&a.node, &a.peer).cmp(&(&b.node, &b.peer)));
    let mut advertising_nodes: Vec<String> = sessions
        .iter()
        .filter(|s| s.announced.is_some())
        .map(|s| s.node.clone())
        .collect();
    advertising_nodes.dedup();
    Some(BgpView {
        ip,
        advertisements: advs.iter().map(|a| name_of(*a)).collect(),
        peers,
        selected_nodes,
        sessions,
        advertising_nodes,
    })
}

fn covers(
    names: &[String],
    selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    pool: &IPAddressPool,
) -> bool {
    if names.is_empty() && selectors.is_empty() {
        return true;
    }
    let name = name_of(pool);
    names.contains(&name)
        || selectors.iter().any(|sel| {
            ferrolb_crds::selector::matches(sel, &pool.metadata.labels.clone().unwrap_or_default())
                .unwrap_or(false)
        })
}

/// The node a pod runs on and whether it is ready.
pub fn pod_node_ready(p: &Pod) -> (Option<String>, bool) {
    let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    (node, ready)
}

/// ferrolb's speaker pods.
pub fn speaker_pods(snap: &Snapshot) -> Vec<&Pod> {
    snap.pods
        .iter()
        .filter(|p| {
            let l = p.metadata.labels.clone().unwrap_or_default();
            l.get("app.kubernetes.io/component").map(String::as_str) == Some(SPEAKER_COMPONENT)
                && l.get("app.kubernetes.io/part-of").map(String::as_str) == Some("ferrolb")
        })
        .collect()
}

/// The node named in an `Announced` condition message ("announced by node-2 on eth0").
pub fn announcer(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in message.split(';') {
        if let Some((_, rest)) = part.split_once("announced by ") {
            if part.contains("not announced") {
                continue;
            }
            let node = rest.split([' ', ',', ';']).next().unwrap_or("").to_string();
            if !node.is_empty() && !out.contains(&node) {
                out.push(node);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcers_are_read_from_the_condition() {
        assert_eq!(announcer("announced by node-2 on eth0"), ["node-2"]);
        assert_eq!(announcer("announced by node-2"), ["node-2"]);
        assert_eq!(
            announcer(
                "198.51.100.70 announced by n1; 2001:db8::70 not announced: no eligible speaker is alive"
            ),
            ["n1"]
        );
        assert!(announcer("not announced: the Service has no serving endpoint").is_empty());
    }
}
