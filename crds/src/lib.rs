//! ferrolb's custom resources: [`IPAddressPool`] and [`L2Advertisement`] (group `ferrolb.io`,
//! version `v1beta1`, cluster-scoped), and the well-known annotation and condition names.
//!
//! Field names follow MetalLB's, so a MetalLB user moves over by changing `apiVersion`.
//! Everything that can be checked on one object is checked by the API server itself, with CEL rules
//! in the schema ([`validation`]); there is no admission webhook that could block configuration.
//! Checks that span objects (overlapping pools) are reported by the controller as conditions.
//!
//! This crate holds types and schema only, with label-selector matching ([`selector`]): no I/O, no
//! allocation logic. What the binaries share at run time is `ferrolb-runtime`'s.

pub mod bgp;
pub mod selector;
pub mod validation;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every ferrolb resource.
pub const GROUP: &str = "ferrolb.io";
/// The served and stored version.
pub const VERSION: &str = "v1beta1";

/// Annotations ferrolb reads on Services, and the MetalLB names it also honours for migration.
pub mod annotations {
    /// Explicit IPs, comma separated, at most one per family.
    pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
    /// Pin the Service to one pool.
    pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
    /// Services with the same key may share an IP.
    pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
    /// Written by the controller: the pool each IP came from.
    pub const ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";
    /// Set to "true" to let the controller move an IP that fell out of every pool.
    pub const ALLOW_IP_CHANGE: &str = "ferrolb.io/allow-ip-change";
    /// The MetalLB prefixes honoured for migration, newest first.
    pub const METALLB_PREFIXES: [&str; 2] = ["metallb.io/", "metallb.universe.tf/"];
}

/// Condition types ferrolb writes.
pub mod conditions {
    /// On a Service: whether its IPs are allocated, and in words why not.
    pub const IP_ALLOCATED: &str = "ferrolb.io/IPAllocated";
    /// On a Service of a forwarder-mode pool: on which nodes it is published, and in words
    /// which nodes are left out and why.
    pub const FORWARDER_READY: &str = "ferrolb.io/ForwarderReady";
    /// On an IPAddressPool: the pool's addresses parse and it is in use.
    pub const POOL_READY: &str = "Ready";
    /// On an IPAddressPool: its addresses overlap another pool's.
    pub const POOL_OVERLAP: &str = "Overlapping";
    /// On an L2Advertisement: its selectors are valid and the pools it names exist.
    pub const L2_READY: &str = "Ready";
}

/// A pool of addresses from which the controller assigns LoadBalancer IPs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    shortname = "ippool",
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Assigned","type":"string","jsonPath":".status.assigned"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.available"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = validation::pool_kind_rules()))]
pub struct IPAddressPoolSpec {
    /// CIDRs (`198.51.100.0/24`, `2001:db8::/120`) or inclusive ranges
    /// (`198.51.100.10-198.51.100.20`), IPv4 and IPv6 alike. Exactly one of `addresses` and
    /// `nodeAddresses` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "validation::addresses_schema")]
    pub addresses: Vec<String>,

    /// Forwarder mode: instead of addresses of its own, the pool publishes the addresses of
    /// nodes, and kube-proxy forwards the Service's ports on them (no pod per Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_addresses: Option<NodeAddresses>,

    /// Whether Services that do not ask for this pool may get addresses from it.
    #[serde(default = "default_true")]
    pub auto_assign: bool,

    /// Skip addresses ending in .0 and .255, which some old clients mistake for broadcast addresses.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Which Services this pool is for, and with what priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

/// Which node addresses a forwarder-mode pool publishes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddresses {
    /// Which nodes may be published. Empty: all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Which of a node's addresses: `InternalIP` (default), `ExternalIP`, or
    /// `PreferExternalIP` (the ExternalIP where the node has one, else its InternalIP; decided
    /// per node).
    #[serde(default)]
    pub address_type: NodeAddressType,
    /// Publish only node addresses inside these prefixes (for nodes with several networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "validation::cidrs_schema")]
    pub cidrs: Vec<String>,
    /// Who forwards the Services' ports on the published addresses: `KubeProxy` (default; its
    /// rules, `ipMode: VIP`) or `Speaker` (a userspace proxy in the speaker, `ipMode: Proxy`:
    /// for kube-proxy in IPVS mode, and for ExternalIPs that a 1:1 NAT delivers to the node's
    /// InternalIP; the client's address is not kept).
    #[serde(default)]
    pub forwarding: NodeForwarding,
    /// Honour K3s servicelb's node labels: when any node carries
    /// `svccontroller.k3s.cattle.io/enablelb`, only nodes with `enablelb=true` are published,
    /// and a Service labelled `svccontroller.k3s.cattle.io/lbpool=<pool>` only on nodes with
    /// that `lbpool` label. For moving from K3s; selectors are the ferrolb way.
    #[serde(default, rename = "k3sServiceLBLabels")]
    pub k3s_servicelb_labels: bool,
}

/// Who forwards a node pool's Services on the published node addresses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NodeForwarding {
    /// kube-proxy's rules (ingress `ipMode: VIP`).
    #[default]
    KubeProxy,
    /// The speaker's userspace TCP/UDP proxy (ingress `ipMode: Proxy`).
    Speaker,
}

impl NodeForwarding {
    /// The `ipMode` of the ingress entries.
    pub fn ip_mode(self) -> &'static str {
        match self {
            NodeForwarding::KubeProxy => "VIP",
            NodeForwarding::Speaker => "Proxy",
        }
    }
}

/// Which address of a node a forwarder-mode pool publishes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NodeAddressType {
    /// The node's `InternalIP` addresses.
    #[default]
    InternalIP,
    /// The node's `ExternalIP` addresses; a node without one is not published.
    ExternalIP,
    /// The node's `ExternalIP` addresses where it has one, else its `InternalIP` addresses.
    PreferExternalIP,
}

impl NodeAddressType {
    /// The name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAddressType::InternalIP => "InternalIP",
            NodeAddressType::ExternalIP => "ExternalIP",
            NodeAddressType::PreferExternalIP => "PreferExternalIP",
        }
    }
}

/// Restricts a pool to some Services and orders pools that match the same Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are tried first; pools without a priority come after those with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "validation::priority_schema")]
    pub priority: Option<i32>,
    /// Namespaces whose Services the pool serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Label selectors of namespaces whose Services the pool serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Label selectors of the Services the pool serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller observed about a pool. Counts are per family; IPv6 counts are decimal
/// strings because a /64 pool holds 2^64 addresses, more than a JSON integer can carry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses in use.
    #[serde(default, rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    /// IPv4 addresses still free.
    #[serde(default, rename = "availableIPv4")]
    pub available_ipv4: i64,
    /// IPv6 addresses in use (decimal).
    #[serde(default, rename = "assignedIPv6")]
    pub assigned_ipv6: String,
    /// IPv6 addresses still free (decimal, exact up to 2^128 - 1).
    #[serde(default, rename = "availableIPv6")]
    pub available_ipv6: String,
    /// Human summary for `kubectl get`: in use, per family present.
    #[serde(default)]
    pub assigned: String,
    /// Human summary for `kubectl get`: free, per family present.
    #[serde(default)]
    pub available: String,
    /// For a forwarder-mode pool: the nodes it publishes now, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// `Ready`, `Overlapping`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation these counts were computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Selects which pools are announced in layer 2 mode, from which nodes and on which interfaces.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    shortname = "l2adv",
    category = "ferrolb",
    status = "L2AdvertisementStatus",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools announced by name. With neither this nor `ipAddressPoolSelectors`, all pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools announced by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce. Empty: all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on. Empty: the interface holding the node's InternalIP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "validation::interfaces_schema")]
    pub interfaces: Vec<String>,
    /// Services announced. Empty: all Services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller observed about an L2Advertisement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementStatus {
    /// `Ready`: its selectors are valid and the pools it names exist (`InvalidSelectors`,
    /// `UnknownPools`, `NoPools` otherwise); the message lists the pools it announces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a speaker found on its node for forwarder mode, one object per node (named after it),
/// written by that node's speaker and read by the controller: whether kube-proxy runs in IPVS
/// mode there, which Service ports it checked, and which of them are unavailable and why.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ForwarderNode",
    plural = "forwardernodes",
    category = "ferrolb",
    status = "ForwarderNodeStatus",
    printcolumn = r#"{"name":"IPVS","type":"boolean","jsonPath":".status.ipvs"}"#,
    printcolumn = r#"{"name":"Checked","type":"integer","jsonPath":".status.checkedCount"}"#,
    printcolumn = r#"{"name":"Unavailable","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ForwarderNodeSpec {}

/// A node's forwarder-mode report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwarderNodeStatus {
    /// kube-proxy runs in IPVS mode on this node (a `kube-ipvs0` interface exists): it would
    /// bind every published address on every node, so forwarder mode refuses to publish.
    #[serde(default)]
    pub ipvs: bool,
    /// Every `family/protocol/port` checked, e.g. `IPv4/TCP/443`, sorted. The controller
    /// publishes this node for a Service only once all of the Service's are here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<String>,
    /// How many entries `checked` has (for `kubectl get`).
    #[serde(default)]
    pub checked_count: i64,
    /// The checked ports that are unavailable on this node, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailablePort>,
    /// Human summary of `unavailable`, for `kubectl get`.
    #[serde(default)]
    pub summary: String,
}

/// A port that a forwarder-mode Service may not use on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnavailablePort {
    /// `IPv4` or `IPv6`.
    pub family: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port.
    pub port: i32,
    /// `HostSocket`, `HostPort` or `DenyList`.
    pub reason: String,
    /// In words, e.g. "a host process listens on 0.0.0.0:443".
    pub detail: String,
}

/// Every CRD ferrolb defines, in install order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        ForwarderNode::crd(),
        bgp::BGPPeer::crd(),
        bgp::BGPAdvertisement::crd(),
        bgp::Community::crd(),
        bgp::BFDProfile::crd(),
        bgp::BGPSessionState::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream: what `crdgen` prints and the chart ships.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out =
        String::from("# Generated by `cargo run -p ferrolb-crds --bin crdgen`. Do not edit.\n");
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_use_metallb_field_names() {
        let yaml = r#"
addresses: ["198.51.100.0/24", "198.51.100.10-198.51.100.20"]
avoidBuggyIPs: true
serviceAllocation:
  priority: 5
  namespaces: [blue]
"#;
        let spec: IPAddressPoolSpec = serde_yaml::from_str(yaml).expect("valid spec");
        assert_eq!(spec.addresses.len(), 2);
        assert!(spec.auto_assign, "autoAssign defaults to true");
        assert!(spec.avoid_buggy_ips);
        let alloc = spec.service_allocation.expect("serviceAllocation");
        assert_eq!(alloc.priority, Some(5));
        assert_eq!(alloc.namespaces, vec!["blue".to_string()]);
    }

    #[test]
    fn node_pools_read_their_fields_and_default_to_internal_ips() {
        let yaml = r#"
nodeAddresses:
  nodeSelector: {matchLabels: {edge: "true"}}
  cidrs: [198.51.100.0/24]
  k3sServiceLBLabels: true
"#;
        let spec: IPAddressPoolSpec = serde_yaml::from_str(yaml).expect("valid spec");
        assert!(spec.addresses.is_empty());
        let na = spec.node_addresses.expect("nodeAddresses");
        assert_eq!(na.address_type, NodeAddressType::InternalIP);
        assert_eq!(na.cidrs, ["198.51.100.0/24"]);
        assert!(na.k3s_servicelb_labels);
        let json = serde_json::to_value(IPAddressPoolSpec {
            node_addresses: Some(NodeAddresses {
                address_type: NodeAddressType::PreferExternalIP,
                ..Default::default()
            }),
            ..serde_yaml::from_str("{}").expect("empty spec")
        })
        .expect("json");
        assert_eq!(json["nodeAddresses"]["addressType"], "PreferExternalIP");
        assert!(json.get("addresses").is_none(), "{json}");
    }

    #[test]
    fn crds_are_cluster_scoped_and_served() {
        for crd in crds() {
            assert_eq!(crd.spec.scope, "Cluster", "{}", crd.spec.names.kind);
            assert_eq!(crd.spec.group, GROUP);
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(v.served && v.storage);
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
        }
    }

    #[test]
    fn pool_schema_carries_the_cel_rules() {
        let json = serde_json::to_string(&IPAddressPool::crd()).expect("serializable");
        for needle in [
            "x-kubernetes-validations",
            "isCIDR(self)",
            "mixes IPv4 and IPv6",
            "is backwards: its start is after its end",
            "at least one",
            "priority must be 0 or greater",
            "has(self.addresses) || has(self.nodeAddresses)",
            "is not a CIDR",
        ] {
            assert!(json.contains(needle), "CRD lacks {needle}");
        }
    }
}
