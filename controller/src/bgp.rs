//! BGP mode, controller side: the `Ready` and `Supported` conditions of BGPPeers and
//! BGPAdvertisements, for what one object cannot check alone (the API server's CEL rules check
//! the rest): an unknown BFDProfile, a missing Secret or one outside the namespace the
//! speakers may read, community aliases that no Community defines, pools that do not exist,
//! aggregation lengths shorter than a pool's blocks, `localPref` values that conflict with
//! another advertisement for the same pool, peer and node, fields ferrolb accepts but does not
//! implement. A BGPPeer's status also counts its Established sessions, from the speakers'
//! BGPSessionStates, for `kubectl get bgppeers`.
//!
//! Pure: [`BgpIndex`] is fed projected objects and says which statuses differ from what the
//! objects show ([`BgpIndex::statuses`]). It must not do I/O; the speakers act on these
//! objects, the controller only reports on them, so a typo shows on the object instead of as
//! routes that never appear.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_allocator::{IpRange, parse_pool_entry};
use ferrolb_crds::bgp::{
    BFDProfile, BGPAdvertisement, BGPAdvertisementStatus, BGPPeer, BGPPeerStatus, BGPSessionState,
    Community, CommunityRef, PEER_LABEL, Unsupported, conditions, parse_community,
    parse_community_value,
};
use ferrolb_crds::selector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};

use crate::conditions::{condition, without_times};

/// Names listed in a condition message before "and N more".
const LISTED: usize = 10;

/// Why a BGPPeer or BGPAdvertisement is not Ready. `as_str()` is the condition reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotReady {
    /// A selector does not parse.
    InvalidSelectors,
    /// The BFDProfile it names does not exist.
    UnknownBFDProfile,
    /// The `passwordSecret` does not exist.
    MissingSecret,
    /// The `passwordSecret` is in a namespace the speakers may not read.
    SecretNamespace,
    /// Fields ferrolb accepts but does not implement keep the peer unused.
    Unsupported,
    /// Pools it names do not exist.
    UnknownPools,
    /// Peers it names do not exist.
    UnknownPeers,
    /// Community aliases it uses are defined by no Community.
    UnknownCommunities,
    /// An aggregation length is shorter than a block of a pool it covers.
    AggregationTooShort,
    /// Another advertisement sets a different `localPref` for the same pool, peer and node.
    ConflictingLocalPref,
}

impl NotReady {
    /// CamelCase, as condition reasons must be.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSelectors => "InvalidSelectors",
            Self::UnknownBFDProfile => "UnknownBFDProfile",
            Self::MissingSecret => "MissingSecret",
            Self::SecretNamespace => "SecretNamespace",
            Self::Unsupported => "Unsupported",
            Self::UnknownPools => "UnknownPools",
            Self::UnknownPeers => "UnknownPeers",
            Self::UnknownCommunities => "UnknownCommunities",
            Self::AggregationTooShort => "AggregationTooShort",
            Self::ConflictingLocalPref => "ConflictingLocalPref",
        }
    }
}

/// What the controller keeps of a BGPPeer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    /// Name.
    pub name: String,
    /// For `observedGeneration`.
    pub generation: Option<i64>,
    /// `bfdProfile`.
    pub bfd_profile: Option<String>,
    /// `passwordSecret` as `(namespace or None, name)`.
    pub secret: Option<(Option<String>, String)>,
    /// Fields set that ferrolb does not implement.
    pub unsupported: Vec<Unsupported>,
    /// Malformed selectors.
    pub bad_selectors: Vec<String>,
    /// `nodeSelectors`.
    pub node_selectors: Vec<LabelSelector>,
    /// The status as last observed.
    pub status: Option<BGPPeerStatus>,
}

impl PeerView {
    /// Projects a BGPPeer; `None` without a name.
    pub fn from_peer(p: &BGPPeer) -> Option<PeerView> {
        let s = &p.spec;
        Some(PeerView {
            name: p.metadata.name.clone()?,
            generation: p.metadata.generation,
            bfd_profile: s.bfd_profile.clone().filter(|b| !b.is_empty()),
            secret: s.password_secret.as_ref().and_then(|r| {
                Some((
                    r.namespace.clone().filter(|n| !n.is_empty()),
                    r.name.clone().filter(|n| !n.is_empty())?,
                ))
            }),
            unsupported: s.unsupported(),
            bad_selectors: bad_selectors(&[("nodeSelectors", &s.node_selectors)]),
            node_selectors: s.node_selectors.clone(),
            status: p.status.clone(),
        })
    }
}

/// What the controller keeps of a BGPAdvertisement.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvView {
    /// Name.
    pub name: String,
    /// For `observedGeneration`.
    pub generation: Option<i64>,
    /// IPv4 and IPv6 aggregation lengths.
    pub aggregation: (u8, u8),
    /// `localPref` (0 read as unset).
    pub local_pref: Option<u32>,
    /// `communities` as written.
    pub communities: Vec<String>,
    /// `ipAddressPools`.
    pub pools: Vec<String>,
    /// `ipAddressPoolSelectors`.
    pub pool_selectors: Vec<LabelSelector>,
    /// `nodeSelectors`.
    pub node_selectors: Vec<LabelSelector>,
    /// `peers`.
    pub peers: Vec<String>,
    /// Malformed selectors.
    pub bad_selectors: Vec<String>,
    /// The status as last observed.
    pub status: Option<BGPAdvertisementStatus>,
}

impl AdvView {
    /// Projects a BGPAdvertisement; `None` without a name.
    pub fn from_adv(a: &BGPAdvertisement) -> Option<AdvView> {
        let s = &a.spec;
        Some(AdvView {
            name: a.metadata.name.clone()?,
            generation: a.metadata.generation,
            aggregation: (s.aggregation_v4(), s.aggregation_v6()),
            local_pref: s.local_pref(),
            communities: s.communities.clone(),
            pools: s.ip_address_pools.clone(),
            pool_selectors: s.ip_address_pool_selectors.clone(),
            node_selectors: s.node_selectors.clone(),
            peers: s.peers.clone(),
            bad_selectors: bad_selectors(&[
                ("ipAddressPoolSelectors", &s.ip_address_pool_selectors),
                ("nodeSelectors", &s.node_selectors),
                ("serviceSelectors", &s.service_selectors),
            ]),
            status: a.status.clone(),
        })
    }

    fn covers(&self, pool: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.pools.is_empty() && self.pool_selectors.is_empty())
            || self.pools.iter().any(|p| p == pool)
            || self
                .pool_selectors
                .iter()
                .any(|s| selector::matches(s, labels).unwrap_or(false))
    }

    fn to_peer(&self, peer: &str) -> bool {
        self.peers.is_empty() || self.peers.iter().any(|p| p == peer)
    }
}

fn bad_selectors(fields: &[(&str, &Vec<LabelSelector>)]) -> Vec<String> {
    fields
        .iter()
        .flat_map(|(field, list)| {
            list.iter().enumerate().filter_map(move |(i, s)| {
                selector::validate(s)
                    .err()
                    .map(|e| format!("{field}[{i}]: {e}"))
            })
        })
        .collect()
}

/// A pool as BGP mode's checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BgpPool {
    /// Labels, for `ipAddressPoolSelectors`.
    pub labels: BTreeMap<String, String>,
    /// Its address ranges.
    pub ranges: Vec<IpRange>,
}

impl BgpPool {
    /// From a pool's labels and `addresses` (entries that do not parse are the pool's own
    /// condition's business and are skipped here).
    pub fn new(labels: BTreeMap<String, String>, addresses: &[String]) -> BgpPool {
        BgpPool {
            labels,
            ranges: addresses
                .iter()
                .filter_map(|a| parse_pool_entry(a).ok())
                .collect(),
        }
    }
}

/// Whether every address of `r` aggregates, at `len` bits, into a block inside `r`: the range
/// starts and ends on block boundaries (what MetalLB checks CIDR by CIDR).
pub fn aggregates_within(r: &IpRange, len: u8) -> bool {
    let (lo, hi) = r.bounds();
    let bits: u32 = if r.start().is_ipv4() { 32 } else { 128 };
    let len = u32::from(len).min(bits);
    let host = bits - len;
    let size_mask = 1u128
        .checked_shl(host)
        .map_or(u128::MAX, |v| v.wrapping_sub(1));
    lo & size_mask == 0 && hi & size_mask == size_mask
}

fn listing(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED {
        out.push_str(&format!(" and {} more", names.len() - LISTED));
    }
    out
}

/// Every input of the checks.
#[derive(Debug, Default)]
pub struct BgpIndex {
    /// The namespace the speakers read Secrets in (`passwordSecret` without a namespace
    /// defaults to it).
    pub secret_namespace: String,
    peers: BTreeMap<String, PeerView>,
    advs: BTreeMap<String, AdvView>,
    /// Community objects: their alias names and the aliases whose value does not parse.
    communities: BTreeMap<String, (Vec<String>, Vec<String>)>,
    profiles: BTreeMap<String, bool>,
    secrets: BTreeSet<String>,
    pools: BTreeMap<String, BgpPool>,
    nodes: BTreeMap<String, BTreeMap<String, String>>,
    /// BGPSessionStates: object name → (peer, Established).
    sessions: BTreeMap<String, (String, bool)>,
    dirty: bool,
}

/// A status to write.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusWrite {
    /// A BGPPeer's.
    Peer {
        /// Name.
        name: String,
        /// Status.
        status: BGPPeerStatus,
    },
    /// A BGPAdvertisement's.
    Advertisement {
        /// Name.
        name: String,
        /// Status.
        status: BGPAdvertisementStatus,
    },
}

impl BgpIndex {
    /// An empty index.
    pub fn new(secret_namespace: String) -> BgpIndex {
        BgpIndex {
            secret_namespace,
            ..Default::default()
        }
    }

    /// Statuses may need writing.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A write failed: decide again at the next tick.
    pub fn write_failed(&mut self) {
        self.dirty = true;
    }

    /// A BGPPeer was added or changed.
    pub fn upsert_peer(&mut self, v: PeerView) {
        self.dirty = true;
        self.peers.insert(v.name.clone(), v);
    }

    /// A BGPPeer was deleted.
    pub fn delete_peer(&mut self, name: &str) {
        self.dirty |= self.peers.remove(name).is_some();
    }

    /// A BGPAdvertisement was added or changed.
    pub fn upsert_adv(&mut self, v: AdvView) {
        self.dirty = true;
        self.advs.insert(v.name.clone(), v);
    }

    /// A BGPAdvertisement was deleted.
    pub fn delete_adv(&mut self, name: &str) {
        self.dirty |= self.advs.remove(name).is_some();
    }

    /// A Community was added or changed.
    pub fn upsert_community(&mut self, c: &Community) {
        let Some(name) = c.metadata.name.clone() else {
            return;
        };
        let aliases = c.spec.communities.iter().map(|a| a.name.clone()).collect();
        let bad = c
            .spec
            .communities
            .iter()
            .filter(|a| parse_community_value(&a.value).is_err())
            .map(|a| a.name.clone())
            .collect();
        self.dirty = true;
        self.communities.insert(name, (aliases, bad));
    }

    /// A Community was deleted.
    pub fn delete_community(&mut self, name: &str) {
        self.dirty |= self.communities.remove(name).is_some();
    }

    /// A BFDProfile was added or changed.
    pub fn upsert_profile(&mut self, p: &BFDProfile) {
        if let Some(name) = p.metadata.name.clone() {
            self.dirty = true;
            self.profiles.insert(name, p.spec.echo_mode == Some(true));
        }
    }

    /// A BFDProfile was deleted.
    pub fn delete_profile(&mut self, name: &str) {
        self.dirty |= self.profiles.remove(name).is_some();
    }

    /// A Secret `namespace/name` exists.
    pub fn upsert_secret(&mut self, key: String) {
        self.dirty |= self.secrets.insert(key);
    }

    /// A Secret is gone.
    pub fn delete_secret(&mut self, key: &str) {
        self.dirty |= self.secrets.remove(key);
    }

    /// A pool was added or changed.
    pub fn upsert_pool(&mut self, name: String, pool: BgpPool) {
        if self.pools.get(&name) != Some(&pool) {
            self.dirty = true;
            self.pools.insert(name, pool);
        }
    }

    /// A pool was deleted.
    pub fn delete_pool(&mut self, name: &str) {
        self.dirty |= self.pools.remove(name).is_some();
    }

    /// A Node's labels.
    pub fn upsert_node(&mut self, name: String, labels: BTreeMap<String, String>) {
        if self.nodes.get(&name) != Some(&labels) {
            self.dirty = true;
            self.nodes.insert(name, labels);
        }
    }

    /// A Node was deleted.
    pub fn delete_node(&mut self, name: &str) {
        self.dirty |= self.nodes.remove(name).is_some();
    }

    /// A BGPSessionState was added or changed.
    pub fn upsert_session(&mut self, s: &BGPSessionState) {
        let Some(name) = s.metadata.name.clone() else {
            return;
        };
        let peer = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(PEER_LABEL).cloned())
            .or_else(|| s.status.as_ref().map(|st| st.peer.clone()))
            .unwrap_or_default();
        let up = s
            .status
            .as_ref()
            .is_some_and(|st| st.bgp_state == "Established");
        let v = (peer, up);
        if self.sessions.get(&name) != Some(&v) {
            self.dirty = true;
            self.sessions.insert(name, v);
        }
    }

    /// A BGPSessionState was deleted.
    pub fn delete_session(&mut self, name: &str) {
        self.dirty |= self.sessions.remove(name).is_some();
    }

    /// Drops every object of a kind not in `seen` after a relist: `kind` is one of
    /// `peers`, `advs`, `communities`, `profiles`, `secrets`, `sessions`, `pools`, `nodes`.
    pub fn resynced(&mut self, kind: &str, seen: &BTreeSet<String>) {
        let before = self.len();
        match kind {
            "peers" => self.peers.retain(|k, _| seen.contains(k)),
            "advs" => self.advs.retain(|k, _| seen.contains(k)),
            "communities" => self.communities.retain(|k, _| seen.contains(k)),
            "profiles" => self.profiles.retain(|k, _| seen.contains(k)),
            "secrets" => self.secrets.retain(|k| seen.contains(k)),
            "sessions" => self.sessions.retain(|k, _| seen.contains(k)),
            "pools" => self.pools.retain(|k, _| seen.contains(k)),
            "nodes" => self.nodes.retain(|k, _| seen.contains(k)),
            _ => {}
        }
        self.dirty |= before != self.len();
    }

    fn len(&self) -> usize {
        self.peers.len()
            + self.advs.len()
            + self.communities.len()
            + self.profiles.len()
            + self.secrets.len()
            + self.sessions.len()
            + self.pools.len()
            + self.nodes.len()
    }

    /// The status `peer` should show.
    pub fn peer_status(&self, p: &PeerView, now: &Time) -> BGPPeerStatus {
        let prev = |t: &str| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
        };
        let mut problems: Vec<(NotReady, String)> = Vec::new();
        if !p.bad_selectors.is_empty() {
            problems.push((
                NotReady::InvalidSelectors,
                format!(
                    "selectors that do not parse: {}",
                    p.bad_selectors.join("; ")
                ),
            ));
        }
        let disabling: Vec<&Unsupported> =
            p.unsupported.iter().filter(|u| u.disables_peer()).collect();
        if !disabling.is_empty() {
            let words: Vec<&str> = disabling.iter().map(|u| u.describe()).collect();
            problems.push((NotReady::Unsupported, words.join("; ")));
        }
        if let Some(b) = &p.bfd_profile
            && !self.profiles.contains_key(b)
        {
            problems.push((
                NotReady::UnknownBFDProfile,
                format!("BFDProfile {b} does not exist: sessions run without BFD"),
            ));
        }
        if let Some((ns, name)) = &p.secret {
            let ns = ns.clone().unwrap_or_else(|| self.secret_namespace.clone());
            if ns != self.secret_namespace {
                problems.push((
                    NotReady::SecretNamespace,
                    format!(
                        "passwordSecret {ns}/{name} is outside {}, the only namespace the speakers read Secrets in: no session",
                        self.secret_namespace
                    ),
                ));
            } else if !self.secrets.contains(&format!("{ns}/{name}")) {
                problems.push((
                    NotReady::MissingSecret,
                    format!("Secret {ns}/{name} does not exist: no session until it does"),
                ));
            }
        }
        let ready = match problems.first() {
            None => condition(
                conditions::READY,
                true,
                "Valid",
                "references resolve".into(),
                p.generation,
                prev(conditions::READY),
                now,
            ),
            Some((reason, _)) => condition(
                conditions::READY,
                false,
                reason.as_str(),
                problems
                    .iter()
                    .map(|(_, m)| m.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                p.generation,
                prev(conditions::READY),
                now,
            ),
        };
        let mut unsupported: Vec<Unsupported> = p.unsupported.clone();
        if p.bfd_profile
            .as_ref()
            .and_then(|b| self.profiles.get(b))
            .copied()
            .unwrap_or(false)
        {
            unsupported.push(Unsupported::EchoMode);
        }
        let supported = if unsupported.is_empty() {
            condition(
                conditions::SUPPORTED,
                true,
                "AllFieldsSupported",
                "every field set is implemented".into(),
                p.generation,
                prev(conditions::SUPPORTED),
                now,
            )
        } else {
            let words: Vec<&str> = unsupported.iter().map(|u| u.describe()).collect();
            condition(
                conditions::SUPPORTED,
                false,
                "UnsupportedFields",
                words.join("; "),
                p.generation,
                prev(conditions::SUPPORTED),
                now,
            )
        };
        let (up, all) = self
            .sessions
            .values()
            .filter(|(peer, _)| *peer == p.name)
            .fold((0, 0), |(u, a), (_, e)| (u + usize::from(*e), a + 1));
        BGPPeerStatus {
            conditions: vec![ready, supported],
            sessions: Some(format!("{up}/{all} established")),
            observed_generation: p.generation,
        }
    }

    /// The nodes both advertisements' `nodeSelectors` select (all nodes for empty lists).
    fn share_a_node(&self, a: &AdvView, b: &AdvView) -> bool {
        self.nodes.values().any(|labels| {
            selector::any_matches(&a.node_selectors, labels).unwrap_or(false)
                && selector::any_matches(&b.node_selectors, labels).unwrap_or(false)
        })
    }

    /// The status `adv` should show.
    pub fn adv_status(&self, a: &AdvView, now: &Time) -> BGPAdvertisementStatus {
        let prev = a
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY));
        let mut problems: Vec<(NotReady, String)> = Vec::new();
        if !a.bad_selectors.is_empty() {
            problems.push((
                NotReady::InvalidSelectors,
                format!(
                    "selectors that do not parse: {}",
                    a.bad_selectors.join("; ")
                ),
            ));
        }
        let unknown_pools: Vec<String> = a
            .pools
            .iter()
            .filter(|p| !self.pools.contains_key(*p))
            .cloned()
            .collect();
        if !unknown_pools.is_empty() {
            problems.push((
                NotReady::UnknownPools,
                format!("pools that do not exist: {}", listing(&unknown_pools)),
            ));
        }
        let unknown_peers: Vec<String> = a
            .peers
            .iter()
            .filter(|p| !self.peers.contains_key(*p))
            .cloned()
            .collect();
        if !unknown_peers.is_empty() {
            problems.push((
                NotReady::UnknownPeers,
                format!("BGPPeers that do not exist: {}", listing(&unknown_peers)),
            ));
        }
        let defined: BTreeSet<&String> = self.communities.values().flat_map(|(n, _)| n).collect();
        let broken: BTreeSet<&String> = self.communities.values().flat_map(|(_, b)| b).collect();
        let mut unknown_aliases = Vec::new();
        for c in &a.communities {
            if let Ok(CommunityRef::Alias(name)) = parse_community(c)
                && (!defined.contains(&name) || broken.contains(&name))
            {
                unknown_aliases.push(name);
            }
        }
        if !unknown_aliases.is_empty() {
            problems.push((
                NotReady::UnknownCommunities,
                format!(
                    "community aliases no Community defines with a valid value (left out): {}",
                    listing(&unknown_aliases)
                ),
            ));
        }
        let covered: Vec<(&String, &BgpPool)> = self
            .pools
            .iter()
            .filter(|(n, p)| a.covers(n, &p.labels))
            .collect();
        let mut too_short = Vec::new();
        for (name, pool) in &covered {
            for r in &pool.ranges {
                let len = if r.start().is_ipv4() {
                    a.aggregation.0
                } else {
                    a.aggregation.1
                };
                if !aggregates_within(r, len) {
                    too_short.push(format!("{name} ({}-{} at /{len})", r.start(), r.end()));
                }
            }
        }
        if !too_short.is_empty() {
            problems.push((
                NotReady::AggregationTooShort,
                format!(
                    "aggregation would announce addresses outside the pool: {}",
                    listing(&too_short)
                ),
            ));
        }
        if let Some(lp) = a.local_pref {
            let mut conflicts = Vec::new();
            for b in self.advs.values().filter(|b| b.name != a.name) {
                let Some(other) = b.local_pref.filter(|o| *o != lp) else {
                    continue;
                };
                let same_pool = covered.iter().any(|(n, p)| b.covers(n, &p.labels));
                let same_peer = self.peers.keys().any(|p| a.to_peer(p) && b.to_peer(p))
                    || (a.peers.is_empty() && b.peers.is_empty());
                if same_pool && same_peer && self.share_a_node(a, b) {
                    conflicts.push(format!("{} ({other})", b.name));
                }
            }
            if !conflicts.is_empty() {
                problems.push((
                    NotReady::ConflictingLocalPref,
                    format!(
                        "localPref {lp} conflicts with {} for the same pool, peer and node (speakers use the highest)",
                        listing(&conflicts)
                    ),
                ));
            }
        }
        let ready = match problems.first() {
            None => {
                let names: Vec<String> = covered.iter().map(|(n, _)| (*n).clone()).collect();
                let msg = if names.is_empty() {
                    "announces no pool".to_string()
                } else {
                    format!("announces {}", listing(&names))
                };
                condition(
                    conditions::READY,
                    true,
                    "Valid",
                    msg,
                    a.generation,
                    prev,
                    now,
                )
            }
            Some((reason, _)) => condition(
                conditions::READY,
                false,
                reason.as_str(),
                problems
                    .iter()
                    .map(|(_, m)| m.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                a.generation,
                prev,
                now,
            ),
        };
        BGPAdvertisementStatus {
            conditions: vec![ready],
            observed_generation: a.generation,
        }
    }

    /// The statuses that differ from what the objects show (ignoring transition times).
    pub fn statuses(&mut self, now: &Time) -> Vec<StatusWrite> {
        self.dirty = false;
        let mut out = Vec::new();
        for p in self.peers.values() {
            let st = self.peer_status(p, now);
            if differs(&st.conditions, p.status.as_ref().map(|s| &s.conditions))
                || p.status.as_ref().map(|s| &s.sessions) != Some(&st.sessions)
            {
                out.push(StatusWrite::Peer {
                    name: p.name.clone(),
                    status: st,
                });
            }
        }
        for a in self.advs.values() {
            let st = self.adv_status(a, now);
            if differs(&st.conditions, a.status.as_ref().map(|s| &s.conditions)) {
                out.push(StatusWrite::Advertisement {
                    name: a.name.clone(),
                    status: st,
                });
            }
        }
        out
    }
}

fn differs(want: &[Condition], shown: Option<&Vec<Condition>>) -> bool {
    shown.is_none_or(|s| without_times(want) != without_times(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::bgp::{BFDProfileSpec, CommunityAlias, CommunitySpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"))
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            generation: Some(1),
            ..Default::default()
        }
    }

    fn peer(name: &str, json: &str) -> PeerView {
        PeerView::from_peer(&BGPPeer {
            metadata: meta(name),
            spec: serde_json::from_str(json).expect("peer"),
            status: None,
        })
        .expect("named")
    }

    fn adv(name: &str, json: &str) -> AdvView {
        AdvView::from_adv(&BGPAdvertisement {
            metadata: meta(name),
            spec: serde_json::from_str(json).expect("adv"),
            status: None,
        })
        .expect("named")
    }

    fn ready(c: &[Condition]) -> (String, String, String) {
        let r = c.iter().find(|c| c.type_ == "Ready").expect("Ready");
        (r.status.clone(), r.reason.clone(), r.message.clone())
    }

    fn index() -> BgpIndex {
        let mut i = BgpIndex::new("ferrolb-system".into());
        i.upsert_pool(
            "edge".into(),
            BgpPool::new(
                [("tier".to_string(), "edge".to_string())].into(),
                &[
                    "192.0.2.192/27".to_string(),
                    "2001:db8:100::/120".to_string(),
                ],
            ),
        );
        i.upsert_node("n1".into(), [("rack".to_string(), "a".to_string())].into());
        i.upsert_node("n2".into(), [("rack".to_string(), "b".to_string())].into());
        i
    }

    #[test]
    fn peers_report_missing_references_and_unsupported_fields() {
        let mut i = index();
        let p = peer(
            "tor",
            r#"{"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1", "bfdProfile": "fast",
                "passwordSecret": {"name": "md5"}}"#,
        );
        let st = i.peer_status(&p, &now());
        let (s, reason, msg) = ready(&st.conditions);
        assert_eq!(
            (s.as_str(), reason.as_str()),
            ("False", "UnknownBFDProfile")
        );
        assert!(msg.contains("BFDProfile fast does not exist"), "{msg}");
        assert!(
            msg.contains("Secret ferrolb-system/md5 does not exist"),
            "{msg}"
        );
        assert_eq!(st.sessions.as_deref(), Some("0/0 established"));

        i.upsert_profile(&BFDProfile {
            metadata: meta("fast"),
            spec: BFDProfileSpec {
                echo_mode: Some(true),
                ..Default::default()
            },
            status: None,
        });
        i.upsert_secret("ferrolb-system/md5".into());
        let st = i.peer_status(&p, &now());
        assert_eq!(ready(&st.conditions).0, "True");
        let sup = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Supported")
            .expect("Supported");
        assert_eq!(sup.status, "False");
        assert!(sup.message.contains("echo mode"), "{}", sup.message);

        let other_ns = peer(
            "x",
            r#"{"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1",
                "passwordSecret": {"name": "md5", "namespace": "metallb-system"}}"#,
        );
        assert_eq!(
            ready(&i.peer_status(&other_ns, &now()).conditions).1,
            "SecretNamespace"
        );

        let vrf = peer(
            "v",
            r#"{"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1", "vrf": "red"}"#,
        );
        let st = i.peer_status(&vrf, &now());
        assert_eq!(ready(&st.conditions).1, "Unsupported");
        assert!(ready(&st.conditions).2.contains("vrf is not implemented"));
    }

    #[test]
    fn advertisements_report_pools_peers_aliases_and_aggregation() {
        let mut i = index();
        let a = adv(
            "a",
            r#"{"ipAddressPools": ["edge", "gone"], "peers": ["nope"],
                "communities": ["65535:65281", "noadv"], "aggregationLength": 24}"#,
        );
        let (s, reason, msg) = ready(&i.adv_status(&a, &now()).conditions);
        assert_eq!((s.as_str(), reason.as_str()), ("False", "UnknownPools"));
        assert!(
            msg.contains("gone") && msg.contains("nope") && msg.contains("noadv"),
            "{msg}"
        );
        assert!(
            msg.contains("aggregation would announce addresses outside the pool"),
            "{msg}"
        );

        i.upsert_community(&Community {
            metadata: meta("c"),
            spec: CommunitySpec {
                communities: vec![CommunityAlias {
                    name: "noadv".into(),
                    value: "65535:65282".into(),
                }],
            },
            status: None,
        });
        let ok = adv(
            "ok",
            r#"{"ipAddressPools": ["edge"], "communities": ["noadv"], "aggregationLength": 27}"#,
        );
        let (s, reason, msg) = ready(&i.adv_status(&ok, &now()).conditions);
        assert_eq!(
            (s.as_str(), reason.as_str(), msg.as_str()),
            ("True", "Valid", "announces edge")
        );
    }

    #[test]
    fn aggregation_fits_blocks() {
        let r = parse_pool_entry("192.0.2.192/27").expect("cidr");
        assert!(aggregates_within(&r, 27));
        assert!(aggregates_within(&r, 32));
        assert!(!aggregates_within(&r, 26));
        let range = parse_pool_entry("192.0.2.10-192.0.2.20").expect("range");
        assert!(aggregates_within(&range, 32));
        assert!(!aggregates_within(&range, 30));
        let v6 = parse_pool_entry("2001:db8:100::/120").expect("cidr");
        assert!(aggregates_within(&v6, 128) && aggregates_within(&v6, 120));
        assert!(!aggregates_within(&v6, 64));
    }

    #[test]
    fn conflicting_local_pref_needs_a_shared_pool_peer_and_node() {
        let mut i = index();
        i.upsert_peer(peer(
            "tor",
            r#"{"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1"}"#,
        ));
        let a = adv("a", r#"{"ipAddressPools": ["edge"], "localPref": 100}"#);
        let b = adv("b", r#"{"ipAddressPools": ["edge"], "localPref": 200}"#);
        i.upsert_adv(a.clone());
        i.upsert_adv(b.clone());
        assert_eq!(
            ready(&i.adv_status(&a, &now()).conditions).1,
            "ConflictingLocalPref"
        );
        // On disjoint nodes they do not conflict.
        let a2 = adv(
            "a",
            r#"{"ipAddressPools": ["edge"], "localPref": 100, "nodeSelectors": [{"matchLabels": {"rack": "a"}}]}"#,
        );
        let b2 = adv(
            "b",
            r#"{"ipAddressPools": ["edge"], "localPref": 200, "nodeSelectors": [{"matchLabels": {"rack": "b"}}]}"#,
        );
        i.upsert_adv(a2.clone());
        i.upsert_adv(b2);
        assert_eq!(ready(&i.adv_status(&a2, &now()).conditions).0, "True");
        // Nor with the same localPref.
        let b3 = adv("b", r#"{"ipAddressPools": ["edge"], "localPref": 100}"#);
        i.upsert_adv(b3);
        i.upsert_adv(a.clone());
        assert_eq!(ready(&i.adv_status(&a, &now()).conditions).0, "True");
    }

    #[test]
    fn unchanged_statuses_write_nothing() {
        let mut i = index();
        let p = peer(
            "tor",
            r#"{"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1"}"#,
        );
        i.upsert_peer(p.clone());
        let writes = i.statuses(&now());
        assert_eq!(writes.len(), 1);
        assert!(!i.is_dirty());
        let StatusWrite::Peer { status, .. } = &writes[0] else {
            panic!("a peer status")
        };
        i.upsert_peer(PeerView {
            status: Some(status.clone()),
            ..p
        });
        assert!(i.statuses(&now()).is_empty());
    }
}
