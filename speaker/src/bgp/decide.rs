//! BGP mode's decision: which sessions this node opens and which routes each announces.
//!
//! Pure: the shared [`Snapshot`] (Services, EndpointSlices, Nodes, pools) and BGP mode's own
//! objects ([`BgpInputs`]) in, a [`Decision`] out. It must not do I/O, read clocks or know about
//! sockets; the addresses this node has are an input.
//!
//! # Rules
//!
//! **Sessions.** A BGPPeer gets a session on this node when its `nodeSelectors` select the
//! node (empty: all), it uses no field ferrolb does not implement (`localASN`, `interface`,
//! `vrf`: [`Skip::Unsupported`]), its fields parse, its MD5 Secret exists
//! ([`Skip::SecretMissing`]) and its `sourceAddress`, if any, is on this node. Everything a
//! session is configured with is in its [`SessionSpec`]; a change of the spec means a new
//! session. A missing BFDProfile leaves the session without BFD and says so
//! ([`SessionPlan::warnings`]): tearing a working session down over a deleted profile would
//! cut traffic for a configuration slip.
//!
//! **Routes.** For every IP in a Service's `status.loadBalancer.ingress` (Services that are
//! ours, not of a node pool: [`crate::plan::Unplanned`]):
//!
//! 1. the IP's pool, as the shared plan finds it ([`crate::plan::pool_of`]);
//! 2. the BGPAdvertisements covering it: `ipAddressPools` names the pool, or an
//!    `ipAddressPoolSelectors` entry matches its labels, or both are empty; `serviceSelectors`
//!    match the Service; `nodeSelectors` select this node;
//! 3. this node is usable ([`crate::plan::node_usable`]: not excluded, network available);
//! 4. endpoints: `externalTrafficPolicy: Local` needs a serving endpoint on this node,
//!    `Cluster` one anywhere;
//! 5. per peer: each covering advertisement whose `peers` is empty or names it contributes the
//!    prefix `ip/aggregationLength` (`aggregationLengthV6` for IPv6) with its communities
//!    (aliases resolved through the Communities; unknown ones are left out, the controller
//!    reports them) and LOCAL_PREF. Advertisements giving the same prefix merge: the union of
//!    communities, the highest LOCAL_PREF (the controller flags the conflict).
//!
//! A session carries the family of its peer's address, and the other one too with
//! `dualStackAddressFamily`; routes of a family it does not carry are listed in
//! [`SessionPlan::not_carried`] so the state object can say why they are missing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferrolb_crds::bgp::{CommunityValue, Unsupported};
use ferrolb_crds::selector::any_matches;
use ferrolb_speaker_core::bgp::{Family, LargeCommunity, PeerAs, Prefix, RouteAttrs};

use super::objects::{
    AdvInfo, BfdProfileInfo, Leaving, Password, PeerInfo, SelfNode, resolve_community,
};
use crate::plan::{PlanConfig, Snapshot, Unplanned, node_usable, pool_of};

/// BGP mode's own objects, as the watches keep them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BgpInputs {
    /// BGPPeers by name.
    pub peers: BTreeMap<String, PeerInfo>,
    /// BGPAdvertisements by name.
    pub advs: BTreeMap<String, AdvInfo>,
    /// Community aliases by name (from every Community; the first object by name wins a
    /// name defined twice).
    pub aliases: BTreeMap<String, CommunityValue>,
    /// BFDProfiles by name.
    pub bfd_profiles: BTreeMap<String, BfdProfileInfo>,
    /// MD5 passwords of the Secrets in the Secret namespace, by `namespace/name` (`None`: the
    /// Secret has no `password`).
    pub secrets: BTreeMap<String, Option<String>>,
    /// This node's Node, beyond the shared snapshot; `None` while it is not known.
    pub node: Option<SelfNode>,
}

/// The knobs of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecideConfig {
    /// The shared plan's settings (class, this node).
    pub plan: PlanConfig,
    /// `--bgp-withdraw-on-cordon`.
    pub withdraw_on_cordon: bool,
    /// `--bgp-restart-time`.
    pub restart_time: u16,
}

/// BFD for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdSpec {
    /// The profile's settings.
    pub profile: BfdProfileInfo,
    /// Multihop (the peer is `ebgpMultiHop`): port 4784 and `minimumTtl`.
    pub multihop: bool,
}

/// Everything one session is configured with. Two sessions with equal specs are the same
/// session; any change means closing the old one and opening a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// The BGPPeer.
    pub peer: String,
    /// Its UID, for the BGPSessionState's owner reference.
    pub peer_uid: Option<String>,
    /// Where to connect.
    pub address: SocketAddr,
    /// Address to bind before connecting.
    pub source: Option<IpAddr>,
    /// Our AS.
    pub local_as: u32,
    /// The peer's AS.
    pub peer_as: PeerAs,
    /// Our BGP Identifier.
    pub router_id: Ipv4Addr,
    /// Hold time proposed, seconds.
    pub hold_time: u16,
    /// Keepalive, seconds.
    pub keepalive: Option<u16>,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// TCP MD5 key.
    pub password: Option<String>,
    /// Offer graceful restart with this restart time.
    pub graceful_restart: Option<u16>,
    /// Not directly connected: TTL 255, no link-local next hop.
    pub multihop: bool,
    /// Families carried.
    pub families: Vec<Family>,
    /// BFD, if the peer names a profile that exists.
    pub bfd: Option<BfdSpec>,
}

/// A session this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    /// Its configuration.
    pub spec: SessionSpec,
    /// The routes it should announce.
    pub routes: BTreeMap<Prefix, RouteAttrs>,
    /// Desired prefixes of a family the session does not carry.
    pub not_carried: Vec<Prefix>,
    /// Things the session runs without, in words (a missing BFDProfile, echo mode).
    pub warnings: Vec<String>,
}

/// Why a BGPPeer that selects this node gets no session. `Display` gives the words for the
/// BGPSessionState; `as_str()` a metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It sets fields ferrolb does not implement.
    Unsupported(Vec<Unsupported>),
    /// Fields that do not parse.
    Invalid(Vec<String>),
    /// The `passwordSecret` does not exist or has no `password`.
    SecretMissing(String),
    /// `sourceAddress` is not an address of this node.
    NoSourceAddress(IpAddr),
}

impl Skip {
    /// Stable label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported",
            Self::Invalid(_) => "invalid",
            Self::SecretMissing(_) => "secret_missing",
            Self::NoSourceAddress(_) => "no_source_address",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsupported(u) => {
                let words: Vec<&str> = u.iter().map(|x| x.describe()).collect();
                write!(f, "not started: {}", words.join("; "))
            }
            Self::Invalid(p) => write!(f, "not started: {}", p.join("; ")),
            Self::SecretMissing(s) => write!(
                f,
                "not started: Secret {s} does not exist or has no key \"password\""
            ),
            Self::NoSourceAddress(a) => {
                write!(
                    f,
                    "not started: sourceAddress {a} is not an address of this node"
                )
            }
        }
    }
}

/// The result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Sessions by BGPPeer name.
    pub sessions: BTreeMap<String, SessionPlan>,
    /// Peers that select this node but get no session, and why.
    pub skipped: BTreeMap<String, (Option<String>, Skip)>,
    /// The node is leaving: sessions should withdraw, drain and close, and none start.
    pub leaving: Option<Leaving>,
}

/// A router ID for a node without IPv4: a stable 32-bit hash of its name (FNV-1a), never
/// 0.0.0.0.
fn hashed_router_id(node: &str) -> Ipv4Addr {
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    Ipv4Addr::from(h.max(1))
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }
}

fn merge(into: &mut RouteAttrs, adv: &AdvInfo, aliases: &BTreeMap<String, CommunityValue>) {
    if let Some(lp) = adv.local_pref {
        into.local_pref = Some(into.local_pref.map_or(lp, |x| x.max(lp)));
    }
    for c in adv
        .communities
        .iter()
        .filter_map(|e| resolve_community(e, aliases))
    {
        match c {
            CommunityValue::Standard(v) => {
                if !into.communities.contains(&v) {
                    into.communities.push(v);
                }
            }
            CommunityValue::Large(global, local1, local2) => {
                let l = LargeCommunity {
                    global,
                    local1,
                    local2,
                };
                if !into.large_communities.contains(&l) {
                    into.large_communities.push(l);
                }
            }
        }
    }
    into.communities.sort_unstable();
    into.large_communities
        .sort_unstable_by_key(|l| (l.global, l.local1, l.local2));
}

fn adv_covers_pool(adv: &AdvInfo, pool: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
    if adv.pools.is_empty() && adv.pool_selectors.is_empty() {
        return true;
    }
    if adv.pools.iter().any(|p| p == pool) {
        return true;
    }
    let empty = BTreeMap::new();
    !adv.pool_selectors.is_empty()
        && any_matches(&adv.pool_selectors, labels.unwrap_or(&empty)).unwrap_or(false)
}

/// Decides. `local_addrs` are this node's interface addresses (for `sourceAddress`).
pub fn decide(
    snap: &Snapshot,
    bgp: &BgpInputs,
    cfg: &DecideConfig,
    local_addrs: &BTreeSet<IpAddr>,
) -> Decision {
    let me_name = cfg.plan.self_node.as_str();
    let Some(me) = snap.nodes.get(me_name) else {
        // Without our Node we are eligible nowhere; a Node that vanished is a node leaving.
        return Decision {
            leaving: Some(Leaving::Deleted),
            ..Default::default()
        };
    };
    let leaving = bgp
        .node
        .as_ref()
        .and_then(|n| n.leaving(cfg.withdraw_on_cordon));

    // Peers that select this node, then which of them get a session.
    let mut sessions: BTreeMap<String, SessionPlan> = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for peer in bgp.peers.values() {
        if !any_matches(&peer.node_selectors, &me.labels).unwrap_or(false) {
            continue;
        }
        let skip = |s: Skip| (peer.uid.clone(), s);
        let disabling: Vec<Unsupported> = peer
            .unsupported
            .iter()
            .copied()
            .filter(|u| u.disables_peer())
            .collect();
        if !disabling.is_empty() {
            skipped.insert(peer.name.clone(), skip(Skip::Unsupported(disabling)));
            continue;
        }
        let Some(address) = peer.address.filter(|_| peer.problems.is_empty()) else {
            skipped.insert(
                peer.name.clone(),
                skip(Skip::Invalid(peer.problems.clone())),
            );
            continue;
        };
        let password = match &peer.password {
            Password::None => None,
            Password::Inline(p) => Some(p.clone()),
            Password::Secret { namespace, name } => {
                let key = format!("{namespace}/{name}");
                match bgp.secrets.get(&key) {
                    Some(Some(p)) => Some(p.clone()),
                    _ => {
                        skipped.insert(peer.name.clone(), skip(Skip::SecretMissing(key)));
                        continue;
                    }
                }
            }
        };
        if let Some(src) = peer.source
            && !local_addrs.contains(&src)
        {
            skipped.insert(peer.name.clone(), skip(Skip::NoSourceAddress(src)));
            continue;
        }
        let mut warnings = Vec::new();
        let bfd = match &peer.bfd_profile {
            None => None,
            Some(name) => match bgp.bfd_profiles.get(name) {
                Some(profile) => Some(BfdSpec {
                    profile: *profile,
                    multihop: peer.multihop,
                }),
                None => {
                    warnings.push(format!(
                        "BFDProfile {name} does not exist: running without BFD"
                    ));
                    None
                }
            },
        };
        let router_id = peer
            .router_id
            .or(match peer.source {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            })
            .or_else(|| {
                me.internal_ips.iter().find_map(|ip| match ip {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
            })
            .unwrap_or_else(|| hashed_router_id(me_name));
        let own = family_of(address);
        let mut families = vec![own];
        if peer.dual_stack {
            families = Family::ALL.to_vec();
        }
        let spec = SessionSpec {
            peer: peer.name.clone(),
            peer_uid: peer.uid.clone(),
            address: SocketAddr::new(address, peer.port),
            source: peer.source,
            local_as: peer.local_as,
            peer_as: peer.peer_as,
            router_id,
            hold_time: peer.hold_time,
            keepalive: peer.keepalive,
            backoff_max: peer.connect_time.unwrap_or(Duration::from_secs(30)),
            password,
            graceful_restart: peer.graceful_restart.then_some(cfg.restart_time),
            multihop: peer.multihop,
            families,
            bfd,
        };
        sessions.insert(
            peer.name.clone(),
            SessionPlan {
                spec,
                routes: BTreeMap::new(),
                not_carried: Vec::new(),
                warnings,
            },
        );
    }

    // Routes.
    if node_usable(me) && !sessions.is_empty() {
        let mut endpoints: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
        for slice in snap.slices.values() {
            let e = endpoints.entry(slice.service.as_str()).or_default();
            for ep in slice.endpoints.iter().filter(|e| e.serving) {
                e.0 = true;
                e.1 |= ep.node.as_deref() == Some(me_name);
            }
        }
        let covering_me: Vec<&AdvInfo> = bgp
            .advs
            .values()
            .filter(|a| any_matches(&a.node_selectors, &me.labels).unwrap_or(false))
            .collect();
        for (key, svc) in &snap.services {
            if Unplanned::of(svc, &snap.pools, &cfg.plan).is_some() {
                continue;
            }
            let (anywhere, here) = endpoints.get(key.as_str()).copied().unwrap_or_default();
            if !(if svc.etp_local { here } else { anywhere }) {
                continue;
            }
            for &ip in &svc.ips {
                let Some((pool, info)) = pool_of(snap, svc, ip) else {
                    continue;
                };
                for adv in &covering_me {
                    if !adv_covers_pool(adv, pool, info.map(|p| &p.labels))
                        || !any_matches(&adv.service_selectors, &svc.labels).unwrap_or(false)
                    {
                        continue;
                    }
                    let len = if ip.is_ipv4() {
                        adv.aggregation_v4
                    } else {
                        adv.aggregation_v6
                    };
                    let Some(prefix) = Prefix::new(ip, len) else {
                        continue;
                    };
                    for (peer, plan) in sessions.iter_mut() {
                        if !adv.peers.is_empty() && !adv.peers.iter().any(|p| p == peer) {
                            continue;
                        }
                        if !plan.spec.families.contains(&family_of(ip)) {
                            if !plan.not_carried.contains(&prefix) {
                                plan.not_carried.push(prefix);
                            }
                            continue;
                        }
                        merge(plan.routes.entry(prefix).or_default(), adv, &bgp.aliases);
                    }
                }
            }
        }
    }
    Decision {
        sessions,
        skipped,
        leaving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{EXCLUDE_LABEL, EndpointInfo, NodeInfo, PoolInfo, ServiceInfo, SliceInfo};
    use ferrolb_addresses::parse_pool_entry;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal ip")
    }

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

    fn cfg() -> DecideConfig {
        DecideConfig {
            plan: PlanConfig {
                lb_class: "ferrolb.io/lb".into(),
                ignore_classless: false,
                self_node: "n1".into(),
                bgp: true,
            },
            withdraw_on_cordon: false,
            restart_time: 120,
        }
    }

    fn peer(name: &str, addr: &str) -> PeerInfo {
        PeerInfo {
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            local_as: 64512,
            peer_as: PeerAs::Exact(64513),
            address: Some(ip(addr)),
            port: 179,
            source: None,
            hold_time: 90,
            keepalive: None,
            connect_time: None,
            router_id: None,
            node_selectors: vec![],
            password: Password::None,
            bfd_profile: None,
            graceful_restart: false,
            multihop: false,
            dual_stack: false,
            unsupported: vec![],
            problems: vec![],
        }
    }

    fn adv(name: &str) -> AdvInfo {
        AdvInfo {
            name: name.into(),
            aggregation_v4: 32,
            aggregation_v6: 128,
            ..Default::default()
        }
    }

    fn add_service(s: &mut Snapshot, name: &str, ips: &[&str], local: bool, eps: &[&str]) {
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
                    .map(|n| EndpointInfo {
                        node: Some(n.to_string()),
                        serving: true,
                    })
                    .collect(),
            },
        );
    }

    /// Two nodes, a dual-stack pool, a v4 and a v6 peer, one catch-all advertisement, one
    /// Cluster Service with an endpoint on n2.
    fn base() -> (Snapshot, BgpInputs) {
        let mut s = Snapshot::default();
        for (i, n) in ["n1", "n2"].iter().enumerate() {
            s.nodes.insert(
                n.to_string(),
                NodeInfo {
                    name: n.to_string(),
                    labels: labels(&[("rack", if i == 0 { "a" } else { "b" })]),
                    internal_ips: vec![ip(&format!("198.51.100.{}", 11 + i))],
                    ..Default::default()
                },
            );
        }
        s.pools.insert(
            "pool".into(),
            PoolInfo {
                name: "pool".into(),
                labels: labels(&[("tier", "edge")]),
                ranges: vec![
                    parse_pool_entry("203.0.113.0/26").expect("cidr"),
                    parse_pool_entry("2001:db8:100::/120").expect("cidr"),
                ],
                ..Default::default()
            },
        );
        add_service(
            &mut s,
            "web",
            &["203.0.113.10", "2001:db8:100::10"],
            false,
            &["n2"],
        );
        let mut b = BgpInputs {
            node: Some(SelfNode::default()),
            ..Default::default()
        };
        b.peers.insert("tor".into(), peer("tor", "198.51.100.1"));
        b.peers.insert("tor6".into(), peer("tor6", "2001:db8::1"));
        b.advs.insert("all".into(), adv("all"));
        (s, b)
    }

    fn prefixes(d: &Decision, peer: &str) -> Vec<String> {
        d.sessions
            .get(peer)
            .map(|p| {
                p.routes
                    .keys()
                    .map(|k| format!("{}/{}", k.addr(), k.len()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn every_family_goes_to_its_own_peer() {
        let (s, b) = base();
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(prefixes(&d, "tor"), ["203.0.113.10/32"]);
        assert_eq!(prefixes(&d, "tor6"), ["2001:db8:100::10/128"]);
        let tor = &d.sessions["tor"];
        assert_eq!(tor.spec.router_id, Ipv4Addr::new(198, 51, 100, 11));
        assert_eq!(tor.spec.families, [Family::Ipv4Unicast]);
        assert_eq!(tor.not_carried.len(), 1, "the v6 route is not carried");
        assert_eq!(d.leaving, None);
    }

    #[test]
    fn dual_stack_peers_carry_both() {
        let (s, mut b) = base();
        b.peers.get_mut("tor").expect("tor").dual_stack = true;
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(
            prefixes(&d, "tor"),
            ["203.0.113.10/32", "2001:db8:100::10/128"]
        );
    }

    #[test]
    fn local_policy_needs_an_endpoint_here() {
        let (mut s, b) = base();
        add_service(&mut s, "loc", &["203.0.113.11"], true, &["n2"]);
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(prefixes(&d, "tor"), ["203.0.113.10/32"]);
        add_service(&mut s, "loc", &["203.0.113.11"], true, &["n1", "n2"]);
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(prefixes(&d, "tor"), ["203.0.113.10/32", "203.0.113.11/32"]);
        // Cluster without any endpoint: nothing.
        add_service(&mut s, "idle", &["203.0.113.12"], false, &[]);
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert!(!prefixes(&d, "tor").contains(&"203.0.113.12/32".to_string()));
    }

    #[test]
    fn selectors_peers_and_exclusion() {
        let (s, mut b) = base();
        b.advs.insert(
            "all".into(),
            AdvInfo {
                peers: vec!["tor6".into()],
                ..adv("all")
            },
        );
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert!(prefixes(&d, "tor").is_empty());
        assert_eq!(prefixes(&d, "tor6"), ["2001:db8:100::10/128"]);

        let (s, mut b) = base();
        b.advs.insert(
            "all".into(),
            AdvInfo {
                node_selectors: vec![sel(&[("rack", "b")])],
                ..adv("all")
            },
        );
        assert!(prefixes(&decide(&s, &b, &cfg(), &BTreeSet::new()), "tor").is_empty());

        let (mut s, mut b) = base();
        b.peers.get_mut("tor6").expect("tor6").node_selectors = vec![sel(&[("rack", "b")])];
        s.nodes
            .get_mut("n1")
            .expect("n1")
            .labels
            .insert(EXCLUDE_LABEL.into(), String::new());
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert!(!d.sessions.contains_key("tor6"), "peer selects n2 only");
        assert!(d.sessions.contains_key("tor"), "the session stays up");
        assert!(
            prefixes(&d, "tor").is_empty(),
            "excluded nodes announce nothing"
        );

        let (s, mut b) = base();
        b.advs.insert(
            "all".into(),
            AdvInfo {
                pool_selectors: vec![sel(&[("tier", "core")])],
                ..adv("all")
            },
        );
        assert!(prefixes(&decide(&s, &b, &cfg(), &BTreeSet::new()), "tor").is_empty());
    }

    #[test]
    fn node_pools_are_never_announced() {
        let (mut s, b) = base();
        s.pools.insert(
            "nodes".into(),
            PoolInfo {
                name: "nodes".into(),
                node_selector: Some(None),
                ..Default::default()
            },
        );
        add_service(&mut s, "fwd", &["198.51.100.11"], false, &["n1"]);
        s.services.get_mut("ns/fwd").expect("fwd").pools = vec!["nodes".into()];
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(prefixes(&d, "tor"), ["203.0.113.10/32"]);
    }

    #[test]
    fn attributes_merge_and_aggregate() {
        let (s, mut b) = base();
        b.aliases
            .insert("noexport".into(), CommunityValue::Standard(0xffff_ff01));
        b.advs.insert(
            "all".into(),
            AdvInfo {
                local_pref: Some(100),
                communities: vec!["64512:1".into(), "noexport".into(), "missing".into()],
                ..adv("all")
            },
        );
        b.advs.insert(
            "agg".into(),
            AdvInfo {
                aggregation_v4: 24,
                local_pref: Some(200),
                communities: vec!["large:64512:1:2".into(), "64512:1".into()],
                ..adv("agg")
            },
        );
        b.advs.insert(
            "again".into(),
            AdvInfo {
                local_pref: Some(50),
                ..adv("again")
            },
        );
        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(prefixes(&d, "tor"), ["203.0.113.0/24", "203.0.113.10/32"]);
        let routes = &d.sessions["tor"].routes;
        let host = &routes[&Prefix::host(ip("203.0.113.10"))];
        assert_eq!(host.local_pref, Some(100), "the highest of 100 and 50");
        assert_eq!(host.communities, [(64512 << 16) | 1, 0xffff_ff01]);
        let agg = &routes[&Prefix::new(ip("203.0.113.0"), 24).expect("prefix")];
        assert_eq!(agg.local_pref, Some(200));
        assert_eq!(agg.large_communities.len(), 1);
    }

    #[test]
    fn peers_that_cannot_run_are_skipped_with_why() {
        let (s, mut b) = base();
        let p = b.peers.get_mut("tor").expect("tor");
        p.password = Password::Secret {
            namespace: "lb".into(),
            name: "md5".into(),
        };
        p.source = Some(ip("198.51.100.11"));
        p.bfd_profile = Some("fast".into());
        b.peers.get_mut("tor6").expect("tor6").unsupported = vec![Unsupported::Vrf];
        let addrs: BTreeSet<IpAddr> = [ip("198.51.100.11")].into();
        let d = decide(&s, &b, &cfg(), &addrs);
        assert_eq!(d.skipped["tor"].1, Skip::SecretMissing("lb/md5".into()));
        assert!(matches!(d.skipped["tor6"].1, Skip::Unsupported(_)));
        assert!(d.skipped["tor6"].1.to_string().contains("vrf"));

        b.secrets.insert("lb/md5".into(), Some("s3cret".into()));
        let d = decide(&s, &b, &cfg(), &addrs);
        let tor = &d.sessions["tor"];
        assert_eq!(tor.spec.password.as_deref(), Some("s3cret"));
        assert_eq!(tor.spec.bfd, None);
        assert!(tor.warnings[0].contains("BFDProfile fast does not exist"));

        let d = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(
            d.skipped["tor"].1,
            Skip::NoSourceAddress(ip("198.51.100.11"))
        );
    }

    #[test]
    fn leaving_nodes_and_router_ids() {
        let (mut s, mut b) = base();
        b.node = Some(SelfNode {
            cordoned: true,
            ..Default::default()
        });
        assert_eq!(decide(&s, &b, &cfg(), &BTreeSet::new()).leaving, None);
        let mut c = cfg();
        c.withdraw_on_cordon = true;
        assert_eq!(
            decide(&s, &b, &c, &BTreeSet::new()).leaving,
            Some(Leaving::Cordoned)
        );
        // An IPv6-only node gets a stable hashed router ID.
        s.nodes.get_mut("n1").expect("n1").internal_ips = vec![ip("2001:db8::11")];
        let a = decide(&s, &b, &cfg(), &BTreeSet::new());
        let id = a.sessions["tor"].spec.router_id;
        assert_ne!(id, Ipv4Addr::UNSPECIFIED);
        assert_eq!(id, hashed_router_id("n1"));
        s.nodes.remove("n1");
        let gone = decide(&s, &b, &cfg(), &BTreeSet::new());
        assert_eq!(gone.leaving, Some(Leaving::Deleted));
        assert!(gone.sessions.is_empty());
    }
}
