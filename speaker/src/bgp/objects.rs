//! Projections of BGP mode's objects (BGPPeer, BGPAdvertisement, Community, BFDProfile, the
//! peers' Secrets and this node's Node) into the plain data [`super::decide`] decides on.
//!
//! Pure: objects in, values out; no I/O. Malformed content never panics: a field that does not
//! parse is recorded in the projection's `problems` (in words) and the peer is not used, so
//! nothing is silently ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ferrolb_crds::bgp::{
    self as crd, BFDProfile, BGPAdvertisement, BGPPeer, Community, CommunityRef, CommunityValue,
    DynamicAsn, Unsupported,
};
use ferrolb_speaker_core::bgp::PeerAs;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The taint that says a node is out of service (Kubernetes' non-graceful node shutdown).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
/// The Secret key holding the TCP MD5 password (MetalLB's `kubernetes.io/basic-auth` layout).
pub const PASSWORD_KEY: &str = "password";

/// Where a peer's TCP MD5 key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// No MD5.
    None,
    /// `password`.
    Inline(String),
    /// `passwordSecret`: `namespace/name`.
    Secret {
        /// Namespace (defaulted to the speaker's Secret namespace when omitted).
        namespace: String,
        /// Name.
        name: String,
    },
}

/// What the speaker needs of a BGPPeer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// Object name.
    pub name: String,
    /// For the BGPSessionState's owner reference.
    pub uid: Option<String>,
    /// `myASN`.
    pub local_as: u32,
    /// `peerASN` or `dynamicASN`.
    pub peer_as: PeerAs,
    /// `peerAddress`.
    pub address: Option<IpAddr>,
    /// `peerPort`.
    pub port: u16,
    /// `sourceAddress`.
    pub source: Option<IpAddr>,
    /// `holdTime`, seconds.
    pub hold_time: u16,
    /// `keepaliveTime`, seconds.
    pub keepalive: Option<u16>,
    /// `connectTime`: the backoff's cap.
    pub connect_time: Option<Duration>,
    /// `routerID`.
    pub router_id: Option<Ipv4Addr>,
    /// `nodeSelectors`.
    pub node_selectors: Vec<LabelSelector>,
    /// MD5 key source.
    pub password: Password,
    /// `bfdProfile`.
    pub bfd_profile: Option<String>,
    /// `enableGracefulRestart`.
    pub graceful_restart: bool,
    /// `ebgpMultiHop`.
    pub multihop: bool,
    /// `dualStackAddressFamily`.
    pub dual_stack: bool,
    /// Fields accepted but not implemented.
    pub unsupported: Vec<Unsupported>,
    /// Fields whose text means nothing, in words (the API server's CEL rules normally reject
    /// them; an object stored before a rule existed can still carry one).
    pub problems: Vec<String>,
}

fn seconds(field: &str, text: Option<&str>, problems: &mut Vec<String>) -> Option<Duration> {
    let t = text?;
    match crd::parse_duration(t) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(format!("{field}: {e}"));
            None
        }
    }
}

impl PeerInfo {
    /// Projects a BGPPeer; `None` without a name. `secret_namespace` is where a
    /// `passwordSecret` without a namespace lives.
    pub fn from_peer(p: &BGPPeer, secret_namespace: &str) -> Option<PeerInfo> {
        let s = &p.spec;
        let mut problems = Vec::new();
        let peer_as = match (s.peer_asn, s.dynamic_asn) {
            (Some(a), None) => PeerAs::Exact(a),
            (None, Some(DynamicAsn::Internal)) => PeerAs::Internal,
            (None, Some(DynamicAsn::External)) => PeerAs::External,
            _ => {
                problems.push("exactly one of peerASN and dynamicASN must be set".into());
                PeerAs::Exact(0)
            }
        };
        let ip = |field: &str, v: Option<&String>, problems: &mut Vec<String>| {
            let t = v?;
            match t.trim().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(format!("{field}: {t:?} is not an IP address"));
                    None
                }
            }
        };
        let address = ip("peerAddress", s.peer_address.as_ref(), &mut problems);
        if address.is_none() && !s.unsupported().contains(&Unsupported::Interface) {
            problems.push("peerAddress is missing".into());
        }
        let source = ip("sourceAddress", s.source_address.as_ref(), &mut problems);
        let hold = seconds("holdTime", s.hold_time.as_deref(), &mut problems)
            .unwrap_or(crd::DEFAULT_HOLD_TIME);
        let hold_time = u16::try_from(hold.as_secs()).unwrap_or(u16::MAX);
        if hold_time == 1 || hold_time == 2 {
            problems.push("holdTime: 0s or at least 3s".into());
        }
        let keepalive = seconds("keepaliveTime", s.keepalive_time.as_deref(), &mut problems)
            .map(|d| u16::try_from(d.as_secs().max(1)).unwrap_or(u16::MAX));
        let connect_time = seconds("connectTime", s.connect_time.as_deref(), &mut problems)
            .filter(|d| *d >= Duration::from_secs(1));
        let router_id = match s.router_id.as_deref() {
            None => None,
            Some(t) => match t.trim().parse::<Ipv4Addr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    problems.push(format!("routerID: {t:?} is not an IPv4 address"));
                    None
                }
            },
        };
        let password = match (&s.password, &s.password_secret) {
            (Some(pw), None) => Password::Inline(pw.clone()),
            (None, Some(r)) => match r.name.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => Password::Secret {
                    namespace: r
                        .namespace
                        .clone()
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| secret_namespace.to_string()),
                    name: name.to_string(),
                },
                None => {
                    problems.push("passwordSecret has no name".into());
                    Password::None
                }
            },
            (Some(_), Some(_)) => {
                problems.push("password and passwordSecret exclude each other".into());
                Password::None
            }
            (None, None) => Password::None,
        };
        Some(PeerInfo {
            name: p.metadata.name.clone()?,
            uid: p.metadata.uid.clone(),
            local_as: s.my_asn,
            peer_as,
            address,
            port: s.port(),
            source,
            hold_time,
            keepalive,
            connect_time,
            router_id,
            node_selectors: s.node_selectors.clone(),
            password,
            bfd_profile: s.bfd_profile.clone().filter(|b| !b.is_empty()),
            graceful_restart: s.enable_graceful_restart,
            multihop: s.ebgp_multi_hop,
            dual_stack: s.dual_stack_address_family,
            unsupported: s.unsupported(),
            problems,
        })
    }
}

/// What the speaker needs of a BGPAdvertisement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdvInfo {
    /// Object name.
    pub name: String,
    /// IPv4 prefix length announced.
    pub aggregation_v4: u8,
    /// IPv6 prefix length announced.
    pub aggregation_v6: u8,
    /// LOCAL_PREF (iBGP).
    pub local_pref: Option<u32>,
    /// Community entries as written (literals or alias names).
    pub communities: Vec<String>,
    /// `ipAddressPools`.
    pub pools: Vec<String>,
    /// `ipAddressPoolSelectors`.
    pub pool_selectors: Vec<LabelSelector>,
    /// `nodeSelectors`.
    pub node_selectors: Vec<LabelSelector>,
    /// `peers`.
    pub peers: Vec<String>,
    /// `serviceSelectors`.
    pub service_selectors: Vec<LabelSelector>,
}

impl AdvInfo {
    /// Projects a BGPAdvertisement; `None` without a name.
    pub fn from_adv(a: &BGPAdvertisement) -> Option<AdvInfo> {
        let s = &a.spec;
        Some(AdvInfo {
            name: a.metadata.name.clone()?,
            aggregation_v4: s.aggregation_v4(),
            aggregation_v6: s.aggregation_v6(),
            local_pref: s.local_pref(),
            communities: s.communities.clone(),
            pools: s.ip_address_pools.clone(),
            pool_selectors: s.ip_address_pool_selectors.clone(),
            node_selectors: s.node_selectors.clone(),
            peers: s.peers.clone(),
            service_selectors: s.service_selectors.clone(),
        })
    }
}

/// The aliases of one Community object: `(name, value)`; aliases whose value does not parse
/// are left out (the controller reports them on the advertisements using them).
pub fn aliases(c: &Community) -> Vec<(String, CommunityValue)> {
    c.spec
        .communities
        .iter()
        .filter_map(|a| Some((a.name.clone(), crd::parse_community_value(&a.value).ok()?)))
        .collect()
}

/// A community entry resolved against the aliases; `None` when it names no alias or does not
/// parse.
pub fn resolve_community(
    entry: &str,
    aliases: &BTreeMap<String, CommunityValue>,
) -> Option<CommunityValue> {
    match crd::parse_community(entry).ok()? {
        CommunityRef::Value(v) => Some(v),
        CommunityRef::Alias(name) => aliases.get(&name).copied(),
    }
}

/// What the speaker needs of a BFDProfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdProfileInfo {
    /// Desired Min TX.
    pub transmit: Duration,
    /// Required Min RX.
    pub receive: Duration,
    /// Detect Mult.
    pub multiplier: u8,
    /// Wait for the peer before sending.
    pub passive: bool,
    /// Multihop only: smallest TTL accepted.
    pub minimum_ttl: Option<u8>,
}

impl BfdProfileInfo {
    /// Projects a BFDProfile.
    pub fn from_profile(p: &BFDProfile) -> BfdProfileInfo {
        let s = &p.spec;
        BfdProfileInfo {
            transmit: s.transmit(),
            receive: s.receive(),
            multiplier: s.multiplier(),
            passive: s.passive_mode == Some(true),
            minimum_ttl: s
                .minimum_ttl
                .and_then(|t| u8::try_from(t).ok())
                .filter(|t| (1..=254).contains(t)),
        }
    }
}

/// The MD5 password a Secret carries (key `password`), if any. `None` for a Secret without
/// it, which counts as missing.
pub fn secret_password(s: &Secret) -> Option<String> {
    let data = s.data.as_ref()?.get(PASSWORD_KEY)?;
    String::from_utf8(data.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

/// Why this node is leaving, the cue for withdrawing before it goes. `as_str()` is for logs,
/// metric labels and the RFC 8203 shutdown message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leaving {
    /// The Node object is being deleted.
    Deleted,
    /// The kubelet reports a graceful node shutdown in progress.
    ShuttingDown,
    /// `node.kubernetes.io/out-of-service` taint.
    OutOfService,
    /// Cordoned (`spec.unschedulable`), counted only with `--bgp-withdraw-on-cordon`.
    Cordoned,
}

impl Leaving {
    /// Stable label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "node deleted",
            Self::ShuttingDown => "node shutting down",
            Self::OutOfService => "node out of service",
            Self::Cordoned => "node cordoned",
        }
    }
}

/// What the speaker needs of its own Node beyond the shared snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelfNode {
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The Ready condition says the node is shutting down (kubelet's graceful node shutdown).
    pub shutting_down: bool,
    /// The out-of-service taint is present.
    pub out_of_service: bool,
    /// `spec.unschedulable`.
    pub cordoned: bool,
}

impl SelfNode {
    /// Projects a Node.
    pub fn from_node(n: &Node) -> SelfNode {
        let spec = n.spec.as_ref();
        let shutting_down = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "Ready"
                    && c.status != "True"
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.to_ascii_lowercase().contains("shutting down"))
            });
        SelfNode {
            deleting: n.metadata.deletion_timestamp.is_some(),
            shutting_down,
            out_of_service: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .any(|t| t.key == OUT_OF_SERVICE_TAINT),
            cordoned: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        }
    }

    /// Why the node is leaving, if it is; cordon counts only when `cordon_counts`.
    pub fn leaving(&self, cordon_counts: bool) -> Option<Leaving> {
        if self.deleting {
            Some(Leaving::Deleted)
        } else if self.shutting_down {
            Some(Leaving::ShuttingDown)
        } else if self.out_of_service {
            Some(Leaving::OutOfService)
        } else if cordon_counts && self.cordoned {
            Some(Leaving::Cordoned)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn peer(yaml: &str) -> BGPPeer {
        BGPPeer {
            metadata: ObjectMeta {
                name: Some("tor".into()),
                ..Default::default()
            },
            spec: serde_yaml::from_str(yaml).expect("spec"),
            status: None,
        }
    }

    #[test]
    fn peers_project_with_defaults_and_problems() {
        let p = PeerInfo::from_peer(
            &peer("{myASN: 64512, peerASN: 64513, peerAddress: 198.51.100.1}"),
            "ferrolb-system",
        )
        .expect("named");
        assert_eq!(p.peer_as, PeerAs::Exact(64513));
        assert_eq!((p.port, p.hold_time, p.keepalive), (179, 90, None));
        assert!(p.problems.is_empty() && p.unsupported.is_empty());
        assert_eq!(p.password, Password::None);

        let p = PeerInfo::from_peer(
            &peer(
                "{myASN: 1, dynamicASN: internal, peerAddress: '2001:db8::1', holdTime: 9s, \
                 keepaliveTime: 3s, passwordSecret: {name: md5}, routerID: nope}",
            ),
            "lb",
        )
        .expect("named");
        assert_eq!(p.peer_as, PeerAs::Internal);
        assert_eq!((p.hold_time, p.keepalive), (9, Some(3)));
        assert_eq!(
            p.password,
            Password::Secret {
                namespace: "lb".into(),
                name: "md5".into()
            }
        );
        assert_eq!(p.problems, ["routerID: \"nope\" is not an IPv4 address"]);

        let p = PeerInfo::from_peer(&peer("{myASN: 1, peerASN: 2, holdTime: 1x}"), "lb")
            .expect("named");
        assert!(p.problems.iter().any(|m| m.contains("holdTime")), "{p:?}");
        assert!(
            p.problems
                .iter()
                .any(|m| m.contains("peerAddress is missing"))
        );
    }

    #[test]
    fn communities_resolve_through_aliases() {
        let aliases: BTreeMap<String, CommunityValue> =
            [("noadv".to_string(), CommunityValue::Standard(0xffff_ff02))].into();
        assert_eq!(
            resolve_community("noadv", &aliases),
            Some(CommunityValue::Standard(0xffff_ff02))
        );
        assert_eq!(
            resolve_community("64512:7", &aliases),
            Some(CommunityValue::Standard((64512 << 16) | 7))
        );
        assert_eq!(resolve_community("unknown", &aliases), None);
        assert_eq!(resolve_community("70000:1", &aliases), None);
    }

    #[test]
    fn leaving_reasons() {
        let mut n = Node::default();
        assert_eq!(SelfNode::from_node(&n).leaving(true), None);
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert_eq!(SelfNode::from_node(&n).leaving(false), None);
        assert_eq!(
            SelfNode::from_node(&n).leaving(true),
            Some(Leaving::Cordoned)
        );
        n.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: OUT_OF_SERVICE_TAINT.into(),
                effect: "NoExecute".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            SelfNode::from_node(&n).leaving(false),
            Some(Leaving::OutOfService)
        );
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "False".into(),
                message: Some("node is shutting down".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            SelfNode::from_node(&n).leaving(false),
            Some(Leaving::ShuttingDown)
        );
    }
}
