//! Projections of the Kubernetes objects the speaker reads (Services, EndpointSlices, Nodes,
//! IPAddressPools, L2Advertisements) into the plain data [`crate::plan`] decides on.
//!
//! Pure: objects in, values out. It must not do I/O. Malformed content never panics: an object
//! without a name projects to `None`, an unparsable IP or pool entry is collected in the
//! projection's `bad` list for the shell to log, and the rest of the object is still used.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_addresses::{IpRange, parse_pool_entry};
use ferrolb_crds::{IPAddressPool, L2Advertisement, annotations};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// The condition type the announcing speaker writes on a Service.
pub const ANNOUNCED_CONDITION: &str = "ferrolb.io/Announced";
/// Field manager of every speaker write. Every speaker uses the same one, so ownership of the
/// condition moves between announcers without conflicts, and `managedFields` tell whether the
/// condition is the speakers'.
pub const FIELD_MANAGER: &str = "ferrolb-speaker";
/// Nodes with this label (any value) never announce (Kubernetes' well-known label).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name`.
pub type SvcKey = String;

/// What the speaker needs of a Node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// `metadata.uid`, for events regarding the Node (so `kubectl describe node` finds them).
    pub uid: Option<String>,
    /// Labels, for L2Advertisement `nodeSelectors` and the exclude label.
    pub labels: BTreeMap<String, String>,
    /// `InternalIP` addresses in the order the Node lists them.
    pub internal_ips: Vec<IpAddr>,
    /// `ExternalIP` addresses (forwarder mode checks ports on these too).
    pub external_ips: Vec<IpAddr>,
    /// `NetworkUnavailable` condition is `True`.
    pub network_unavailable: bool,
}

impl NodeInfo {
    /// Projects a Node; `None` without a name. Unparsable addresses are skipped.
    pub fn from_node(node: &Node) -> Option<NodeInfo> {
        let name = node.metadata.name.clone()?;
        let status = node.status.as_ref();
        let addrs = |kind: &str| -> Vec<IpAddr> {
            status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == kind)
                .filter_map(|a| a.address.trim().parse().ok())
                .collect()
        };
        let internal_ips = addrs("InternalIP");
        let external_ips = addrs("ExternalIP");
        let network_unavailable = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True");
        Some(NodeInfo {
            name,
            uid: node.metadata.uid.clone(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            internal_ips,
            external_ips,
            network_unavailable,
        })
    }

    /// The address the speakers' heartbeats go to: the first IPv4 InternalIP, else the first
    /// InternalIP. Every speaker picks the same way, so peers agree on the family.
    pub fn heartbeat_ip(&self) -> Option<IpAddr> {
        self.internal_ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .or_else(|| self.internal_ips.first())
            .copied()
    }
}

/// The condition this speaker family last wrote on a Service, as observed through the watch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedCondition {
    /// `True` or `False`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Human message ("announced by node-2 on eth0").
    pub message: String,
    /// The speakers' field manager ([`FIELD_MANAGER`]) owns it, per `managedFields`. Only such
    /// a condition is removed when the Service stops being ours; after the removal it no
    /// longer is, so nothing is written again, even if someone else keeps a copy.
    pub by_speaker: bool,
}

/// Whether `manager` owns the `type: ty` entry of `status.conditions` (a list-map keyed by
/// `type`, so its FieldsV1 key is `k:{"type":"<ty>"}`). Anything unexpected reads as not owned.
fn owns_condition(meta: &ObjectMeta, manager: &str, ty: &str) -> bool {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|e| e.manager.as_deref() == Some(manager))
        .filter_map(|e| e.fields_v1.as_ref())
        .filter_map(|f| f.0.get("f:status")?.get("f:conditions")?.as_object())
        .flat_map(|conditions| conditions.keys())
        .filter_map(|k| k.strip_prefix("k:"))
        .filter_map(|k| serde_json::from_str::<serde_json::Value>(k).ok())
        .any(|k| k.get("type").and_then(serde_json::Value::as_str) == Some(ty))
}

/// What the speaker needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// For events.
    pub uid: Option<String>,
    /// `metadata.generation`, for the condition's `observedGeneration`.
    pub generation: Option<i64>,
    /// Labels, for L2Advertisement `serviceSelectors`.
    pub labels: BTreeMap<String, String>,
    /// `spec.type`.
    pub type_: String,
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// `externalTrafficPolicy: Local`.
    pub etp_local: bool,
    /// Parsed `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
    /// Pools from the `ferrolb.io/ip-allocated-from-pool` annotation.
    pub pools: Vec<String>,
    /// Our condition as currently published.
    pub announced: Option<ObservedCondition>,
    /// Ingress entries that are not IP addresses (logged, skipped).
    pub bad: Vec<String>,
    /// `(protocol, port)` of every Service port (`TCP`, `UDP`, `SCTP`), for forwarder mode's
    /// port checks.
    pub ports: Vec<(String, u16)>,
    /// `(protocol, port, nodePort)` of the ports with a nodePort (the speaker's proxy forwards
    /// `externalTrafficPolicy: Local` Services to the nodePort on its own node).
    pub node_ports: Vec<(String, u16, u16)>,
    /// `spec.clusterIPs` (the speaker's proxy forwards Cluster Services there).
    pub cluster_ips: Vec<IpAddr>,
}

impl ServiceInfo {
    /// Projects a Service; `None` without name or namespace.
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let meta = &svc.metadata;
        let spec = svc.spec.as_ref();
        let status = svc.status.as_ref();
        let mut ips = Vec::new();
        let mut bad = Vec::new();
        for ing in status
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
        {
            match ing.ip.as_deref().map(|s| s.trim().parse::<IpAddr>()) {
                Some(Ok(ip)) if !ips.contains(&ip) => ips.push(ip),
                Some(Ok(_)) | None => {}
                Some(Err(_)) => bad.push(ing.ip.clone().unwrap_or_default()),
            }
        }
        let pools = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotations::ALLOCATED_FROM_POOL))
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let announced = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == ANNOUNCED_CONDITION)
            .map(|c| ObservedCondition {
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                by_speaker: owns_condition(meta, FIELD_MANAGER, ANNOUNCED_CONDITION),
            });
        Some(ServiceInfo {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone(),
            generation: meta.generation,
            labels: meta.labels.clone().unwrap_or_default(),
            type_: spec
                .and_then(|s| s.type_.clone())
                .unwrap_or_else(|| "ClusterIP".into()),
            class: spec.and_then(|s| s.load_balancer_class.clone()),
            etp_local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            ips,
            pools,
            announced,
            bad,
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    Some((proto, u16::try_from(p.port).ok()?))
                })
                .collect(),
            node_ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    Some((
                        proto,
                        u16::try_from(p.port).ok()?,
                        u16::try_from(p.node_port?).ok()?,
                    ))
                })
                .collect(),
            cluster_ips: spec
                .and_then(|s| s.cluster_ips.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|a| a.parse().ok())
                .collect(),
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> SvcKey {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether ferrolb serves this Service: type LoadBalancer and our class (or no class,
    /// unless classless Services are ignored).
    pub fn is_ours(&self, lb_class: &str, ignore_classless: bool) -> bool {
        self.type_ == "LoadBalancer"
            && match self.class.as_deref() {
                None => !ignore_classless,
                Some(c) => c == lb_class,
            }
    }
}

/// One endpoint of an EndpointSlice, reduced to where it runs and whether it takes traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// `nodeName`, if the endpoint says.
    pub node: Option<String>,
    /// Ready (a missing `ready` counts as ready, as the EndpointSlice API says), or serving
    /// (terminating endpoints that still serve).
    pub serving: bool,
}

/// What the speaker needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// `namespace/service-name` from the `kubernetes.io/service-name` label.
    pub service: SvcKey,
    /// The endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

impl SliceInfo {
    /// Projects an EndpointSlice; `None` without namespace or service-name label.
    pub fn from_slice(slice: &EndpointSlice) -> Option<SliceInfo> {
        let ns = slice.metadata.namespace.as_deref()?;
        let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| {
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                EndpointInfo {
                    node: e.node_name.clone(),
                    serving: ready || serving,
                }
            })
            .collect();
        Some(SliceInfo {
            service: format!("{ns}/{svc}"),
            endpoints,
        })
    }
}

/// What the speaker needs of an IPAddressPool.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// Labels, for `ipAddressPoolSelectors`.
    pub labels: BTreeMap<String, String>,
    /// Parsed address entries.
    pub ranges: Vec<IpRange>,
    /// Entries that do not parse (logged, skipped).
    pub bad: Vec<String>,
    /// A forwarder-mode pool (`spec.nodeAddresses`): its Services are published on node
    /// addresses, never announced with ARP/NDP. `Some(selector)`, where `None` inside selects
    /// every node.
    pub node_selector: Option<Option<LabelSelector>>,
    /// A node pool whose Services the speakers forward themselves (`forwarding: Speaker`).
    pub speaker_forwards: bool,
}

impl PoolInfo {
    /// Projects a pool; `None` without a name.
    pub fn from_pool(pool: &IPAddressPool) -> Option<PoolInfo> {
        let mut ranges = Vec::new();
        let mut bad = Vec::new();
        for entry in &pool.spec.addresses {
            match parse_pool_entry(entry) {
                Ok(r) => ranges.push(r),
                Err(_) => bad.push(entry.clone()),
            }
        }
        Some(PoolInfo {
            name: pool.metadata.name.clone()?,
            labels: pool.metadata.labels.clone().unwrap_or_default(),
            ranges,
            bad,
            node_selector: pool
                .spec
                .node_addresses
                .as_ref()
                .map(|n| n.node_selector.clone()),
            speaker_forwards: pool
                .spec
                .node_addresses
                .as_ref()
                .is_some_and(|n| n.forwarding == ferrolb_crds::NodeForwarding::Speaker),
        })
    }

    /// Whether `ip` is in one of the pool's ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

/// What the speaker needs of an L2Advertisement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct L2AdvInfo {
    /// Name, for logs and conditions.
    pub name: String,
    /// `ipAddressPools`.
    pub pools: Vec<String>,
    /// `ipAddressPoolSelectors`.
    pub pool_selectors: Vec<LabelSelector>,
    /// `nodeSelectors`.
    pub node_selectors: Vec<LabelSelector>,
    /// `interfaces`.
    pub interfaces: Vec<String>,
    /// `serviceSelectors`.
    pub service_selectors: Vec<LabelSelector>,
}

impl L2AdvInfo {
    /// Projects an L2Advertisement; `None` without a name.
    pub fn from_l2adv(adv: &L2Advertisement) -> Option<L2AdvInfo> {
        Some(L2AdvInfo {
            name: adv.metadata.name.clone()?,
            pools: adv.spec.ip_address_pools.clone(),
            pool_selectors: adv.spec.ip_address_pool_selectors.clone(),
            node_selectors: adv.spec.node_selectors.clone(),
            interfaces: adv.spec.interfaces.clone(),
            service_selectors: adv.spec.service_selectors.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeCondition, NodeStatus,
        ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    #[test]
    fn service_projection_skips_bad_ips_and_reads_pools() {
        let svc = Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web".into()),
                annotations: Some(
                    [(
                        annotations::ALLOCATED_FROM_POOL.to_string(),
                        "pool-a, pool-b6".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                external_traffic_policy: Some("Local".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![
                        LoadBalancerIngress {
                            ip: Some("198.51.100.50".into()),
                            ..Default::default()
                        },
                        LoadBalancerIngress {
                            ip: Some("not-an-ip".into()),
                            ..Default::default()
                        },
                        LoadBalancerIngress {
                            hostname: Some("lb.example".into()),
                            ..Default::default()
                        },
                    ]),
                }),
                conditions: None,
            }),
        };
        let v = ServiceInfo::from_service(&svc).expect("named");
        assert_eq!(v.key(), "ns/web");
        assert_eq!(v.ips, vec!["198.51.100.50".parse::<IpAddr>().expect("ip")]);
        assert_eq!(v.bad, ["not-an-ip"]);
        assert_eq!(v.pools, ["pool-a", "pool-b6"]);
        assert!(v.etp_local);
        assert!(v.is_ours("ferrolb.io/lb", false));
        assert!(!v.is_ours("ferrolb.io/lb", true));
        assert!(ServiceInfo::from_service(&Service::default()).is_none());
    }

    #[test]
    fn class_rules() {
        let mut v = ServiceInfo {
            type_: "LoadBalancer".into(),
            class: Some("other".into()),
            ..Default::default()
        };
        assert!(!v.is_ours("ferrolb.io/lb", false));
        v.class = Some("ferrolb.io/lb".into());
        assert!(v.is_ours("ferrolb.io/lb", true));
        v.type_ = "NodePort".into();
        assert!(!v.is_ours("ferrolb.io/lb", false));
    }

    #[test]
    fn node_projection() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "2001:db8::11".into(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "n1".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "198.51.100.11".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "garbage".into(),
                    },
                ]),
                conditions: Some(vec![NodeCondition {
                    type_: "NetworkUnavailable".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let n = NodeInfo::from_node(&node).expect("named");
        assert_eq!(n.internal_ips.len(), 2);
        assert_eq!(n.heartbeat_ip(), "198.51.100.11".parse().ok());
        assert!(n.network_unavailable);
    }

    #[test]
    fn endpoint_conditions_follow_the_api_defaults() {
        let ep = |ready: Option<bool>, serving: Option<bool>| Endpoint {
            addresses: vec!["198.51.100.11".into()],
            node_name: Some("n1".into()),
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating: None,
            }),
            ..Default::default()
        };
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web-abc".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                ep(None, None),
                ep(Some(false), None),
                ep(Some(false), Some(true)),
            ]),
            ports: None,
        };
        let s = SliceInfo::from_slice(&slice).expect("labelled");
        assert_eq!(s.service, "ns/web");
        let serving: Vec<bool> = s.endpoints.iter().map(|e| e.serving).collect();
        assert_eq!(serving, [true, false, true]);
    }
    #[test]
    fn the_condition_is_the_speakers_when_their_manager_owns_it() {
        use k8s_openapi::api::core::v1::ServiceStatus;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let entry = |manager: &str, ty: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            subresource: Some("status".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:status": {"f:conditions": {
                    format!("k:{{\"type\":\"{ty}\"}}"): {".": {}, "f:message": {}, "f:status": {}},
                }},
            }))),
            ..Default::default()
        };
        let svc = |managed: Vec<ManagedFieldsEntry>| Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web".into()),
                managed_fields: Some(managed),
                ..Default::default()
            },
            status: Some(ServiceStatus {
                conditions: Some(vec![Condition {
                    type_: ANNOUNCED_CONDITION.into(),
                    status: "True".into(),
                    reason: "Announced".into(),
                    message: "announced by n1".into(),
                    last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ),
                    observed_generation: None,
                }]),
                load_balancer: None,
            }),
            spec: None,
        };
        let by_speaker = |managed| {
            ServiceInfo::from_service(&svc(managed))
                .and_then(|v| v.announced)
                .map(|c| c.by_speaker)
        };
        assert_eq!(
            by_speaker(vec![entry(FIELD_MANAGER, ANNOUNCED_CONDITION)]),
            Some(true)
        );
        // Another manager's copy, or our manager owning another condition: not ours.
        assert_eq!(
            by_speaker(vec![
                entry("kubectl", ANNOUNCED_CONDITION),
                entry(FIELD_MANAGER, "ferrolb.io/IPAllocated"),
            ]),
            Some(false)
        );
        assert_eq!(by_speaker(vec![]), Some(false));
        // Malformed managedFields never panic and read as not owned.
        let mut odd = entry(FIELD_MANAGER, ANNOUNCED_CONDITION);
        odd.fields_v1 = Some(FieldsV1(serde_json::json!({
            "f:status": {"f:conditions": {"k:{not json": {}, "v:1": {}}}
        })));
        let mut list = entry(FIELD_MANAGER, ANNOUNCED_CONDITION);
        list.fields_v1 = Some(FieldsV1(serde_json::json!({"f:status": []})));
        assert_eq!(by_speaker(vec![odd, list]), Some(false));
    }
}
