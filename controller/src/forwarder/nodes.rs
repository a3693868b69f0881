//! What forwarder mode keeps of Nodes, of the speakers' per-node reports (`ForwarderNode`), of
//! the speaker pods and of EndpointSlices: small projections, built once per watch event.
//!
//! Pure: objects in, plain data out; nothing here panics on what the API server sends (a port
//! out of range or an unknown family is dropped, never trusted).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_allocator::{Family, Protocol};
use ferrolb_crds::ForwarderNode;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::strmap::StrMap;

/// The label that keeps a node out of external load balancers (well known, KEP-1143).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The taint the cluster autoscaler puts on a node it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// K3s servicelb's node label: when any node has it, only nodes with `true` serve.
pub const K3S_ENABLELB: &str = "svccontroller.k3s.cattle.io/enablelb";
/// K3s servicelb's pool label, on nodes and on the Services that want them.
pub const K3S_LBPOOL: &str = "svccontroller.k3s.cattle.io/lbpool";

/// One `family/protocol/port`, as speakers check and report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// Address family.
    pub family: Family,
    /// Protocol.
    pub protocol: Protocol,
    /// Port.
    pub port: u16,
}

impl PortKey {
    /// `IPv4/TCP/443`, the form of `ForwarderNode.status.checked`.
    pub fn text(&self) -> String {
        format!(
            "{}/{}/{}",
            self.family.as_str(),
            self.protocol.as_str(),
            self.port
        )
    }

    /// Parses [`PortKey::text`]'s form.
    pub fn parse(s: &str) -> Option<PortKey> {
        let mut it = s.split('/');
        let family = family_of(it.next()?)?;
        let protocol = protocol_of(it.next()?)?;
        let port = it.next()?.parse().ok()?;
        it.next().is_none().then_some(PortKey {
            family,
            protocol,
            port,
        })
    }
}

impl std::fmt::Display for PortKey {
    /// `443/TCP`, as users read ports (the family is said separately when it matters).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

/// `IPv4` or `IPv6`.
pub fn family_of(s: &str) -> Option<Family> {
    match s {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

/// `TCP`, `UDP` or `SCTP`.
pub fn protocol_of(s: &str) -> Option<Protocol> {
    match s {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The parts of a Node forwarder mode decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: Arc<str>,
    /// `InternalIP` addresses, in the Node's order.
    pub internal: Vec<IpAddr>,
    /// `ExternalIP` addresses, in the Node's order.
    pub external: Vec<IpAddr>,
    /// Labels, for pool node selectors and K3s labels.
    pub labels: StrMap,
    /// Condition `Ready=True`.
    pub ready: bool,
    /// Has a deletion timestamp.
    pub deleting: bool,
    /// Tainted `ToBeDeletedByClusterAutoscaler`.
    pub to_be_deleted: bool,
}

impl NodeView {
    /// Projects a Node. `None` without a name.
    pub fn from_node(node: &Node) -> Option<NodeView> {
        let name: Arc<str> = node.metadata.name.as_deref()?.into();
        let status = node.status.as_ref();
        let addrs = |kind: &str| -> Vec<IpAddr> {
            status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == kind)
                .filter_map(|a| a.address.parse().ok())
                .collect()
        };
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let to_be_deleted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|t| t.key == TO_BE_DELETED_TAINT);
        Some(NodeView {
            name,
            internal: addrs("InternalIP"),
            external: addrs("ExternalIP"),
            labels: node
                .metadata
                .labels
                .as_ref()
                .map(StrMap::from)
                .unwrap_or_default(),
            ready,
            deleting: node.metadata.deletion_timestamp.is_some(),
            to_be_deleted,
        })
    }

    /// Whether the node is labelled out of external load balancers.
    pub fn excluded(&self) -> bool {
        self.labels.contains_key(EXCLUDE_LABEL)
    }
}

/// What a node's speaker reported (`ForwarderNode.status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// kube-proxy runs in IPVS mode there.
    pub ipvs: bool,
    /// Ports the speaker has checked.
    pub checked: BTreeSet<PortKey>,
    /// Checked ports that are unavailable: `(reason, detail)`.
    pub unavailable: BTreeMap<PortKey, (String, String)>,
}

impl NodeReport {
    /// Projects a `ForwarderNode` (named after its node). Entries that do not parse are dropped:
    /// an unparsable `checked` entry only delays publishing, an unparsable conflict cannot be
    /// matched to a port anyway.
    pub fn from_forwarder_node(f: &ForwarderNode) -> Option<(String, NodeReport)> {
        let name = f.metadata.name.clone()?;
        let Some(st) = &f.status else {
            return Some((name, NodeReport::default()));
        };
        let checked = st
            .checked
            .iter()
            .filter_map(|s| PortKey::parse(s))
            .collect();
        let unavailable = st
            .unavailable
            .iter()
            .filter_map(|u| {
                let key = PortKey {
                    family: family_of(&u.family)?,
                    protocol: protocol_of(&u.protocol)?,
                    port: u16::try_from(u.port).ok()?,
                };
                Some((key, (u.reason.clone(), u.detail.clone())))
            })
            .collect();
        Some((
            name,
            NodeReport {
                ipvs: st.ipvs,
                checked,
                unavailable,
            },
        ))
    }
}

/// A speaker pod: `(namespace/name, node, ready)`. `None` for a pod without a name or not yet
/// scheduled.
pub fn speaker_pod(pod: &Pod) -> Option<(String, String, bool)> {
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref()?,
        pod.metadata.name.as_deref()?
    );
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let ready = pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    Some((key, node, ready))
}

/// An EndpointSlice: `(namespace/name of the slice, namespace/name of its Service, nodes with a
/// ready endpoint)`. `None` without the `kubernetes.io/service-name` label.
pub fn endpoint_nodes(slice: &EndpointSlice) -> Option<(String, String, BTreeSet<String>)> {
    let ns = slice.metadata.namespace.as_deref()?;
    let name = slice.metadata.name.as_deref()?;
    let svc = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    let nodes = slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| {
            // Kubernetes reads a missing `ready` as ready.
            e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
        })
        .filter_map(|e| e.node_name.clone())
        .collect();
    Some((format!("{ns}/{name}"), format!("{ns}/{svc}"), nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_keys_round_trip_and_reject_garbage() {
        let k = PortKey {
            family: Family::V6,
            protocol: Protocol::Udp,
            port: 53,
        };
        assert_eq!(k.text(), "IPv6/UDP/53");
        assert_eq!(PortKey::parse("IPv6/UDP/53"), Some(k));
        assert_eq!(k.to_string(), "53/UDP");
        for bad in [
            "",
            "IPv4",
            "IPv4/TCP",
            "IPv4/TCP/70000",
            "IPv5/TCP/1",
            "IPv4/ICMP/1",
            "IPv4/TCP/1/2",
        ] {
            assert_eq!(PortKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn nodes_project_addresses_readiness_and_taints() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {EXCLUDE_LABEL: ""}},
            "spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "effect": "NoSchedule"}]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "198.51.100.11"},
                    {"type": "InternalIP", "address": "2001:db8::11"},
                    {"type": "ExternalIP", "address": "203.0.113.9"},
                    {"type": "InternalIP", "address": "not-an-ip"},
                    {"type": "Hostname", "address": "n1"}
                ],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .expect("node");
        let v = NodeView::from_node(&node).expect("named");
        assert_eq!(&*v.name, "n1");
        assert_eq!(v.internal.len(), 2);
        assert_eq!(v.external, ["203.0.113.9".parse::<IpAddr>().expect("ip")]);
        assert!(v.ready && v.to_be_deleted && v.excluded() && !v.deleting);
    }

    #[test]
    fn reports_keep_what_parses() {
        let f: ForwarderNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "ForwarderNode",
            "metadata": {"name": "n2"},
            "spec": {},
            "status": {
                "ipvs": false,
                "checked": ["IPv4/TCP/443", "garbage"],
                "unavailable": [
                    {"family": "IPv4", "protocol": "TCP", "port": 443, "reason": "HostSocket", "detail": "a host process listens on 0.0.0.0:443"},
                    {"family": "IPv4", "protocol": "TCP", "port": 99999, "reason": "HostSocket", "detail": "x"}
                ]
            }
        }))
        .expect("forwarder node");
        let (name, r) = NodeReport::from_forwarder_node(&f).expect("named");
        assert_eq!(name, "n2");
        assert_eq!(r.checked.len(), 1);
        assert_eq!(r.unavailable.len(), 1);
    }

    #[test]
    fn endpoint_slices_give_ready_nodes_of_their_service() {
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["192.0.2.2"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["192.0.2.3"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["192.0.2.4"], "nodeName": "n3"},
                {"addresses": ["192.0.2.5"]}
            ]
        }))
        .expect("slice");
        let (key, svc, nodes) = endpoint_nodes(&s).expect("labelled");
        assert_eq!(key, "shop/web-abc");
        assert_eq!(svc, "shop/web");
        assert_eq!(nodes, BTreeSet::from(["n1".to_string(), "n3".to_string()]));
    }
}
