//! BGP mode's custom resources (group `ferrolb.io`, version `v1beta1`, cluster-scoped):
//! [`BGPPeer`], [`BGPAdvertisement`], [`Community`] and [`BFDProfile`], which a user writes with
//! MetalLB's field names (a MetalLB manifest applies with only `apiVersion` changed), and
//! [`BGPSessionState`], one per (node, peer), which speakers write so `kubectl get` shows every
//! session's live state.
//!
//! Owns the types, their CEL rules (everything one object can say about itself: ASN ranges,
//! exactly one of `peerASN`/`dynamicASN`, `password` xor `passwordSecret`, duration and interval
//! ranges, the form of communities, aggregation lengths) and what a field's text means, read
//! alike by the controller and the speakers: Go-style durations ([`parse_duration`]), community
//! values ([`parse_community`]), the BFD defaults, and which accepted fields ferrolb does not
//! implement ([`BGPPeerSpec::unsupported`], [`BFDProfileSpec::unsupported`]), so that both
//! report the same thing and neither silently ignores one.
//!
//! It must not decide anything that spans objects (an unknown BFDProfile, a missing Secret,
//! conflicting `localPref`): the controller reports those as conditions. No I/O.

use std::time::Duration;

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The BGP port, `peerPort`'s default.
pub const DEFAULT_PEER_PORT: u16 = 179;
/// `holdTime` when the peer does not set one (MetalLB's native default).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// BFD intervals when the profile does not set them, milliseconds.
pub const DEFAULT_BFD_INTERVAL_MS: u32 = 300;
/// BFD detect multiplier when the profile does not set it.
pub const DEFAULT_BFD_MULTIPLIER: u32 = 3;
/// Longest TCP MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_LEN: u32 = 80;
/// Label on a [`BGPSessionState`]: the node.
pub const NODE_LABEL: &str = "ferrolb.io/node";
/// Label on a [`BGPSessionState`]: the BGPPeer.
pub const PEER_LABEL: &str = "ferrolb.io/peer";

/// Condition types on BGPPeers and BGPAdvertisements.
pub mod conditions {
    /// The object's references resolve (BFDProfile, Secret, pools, peers, communities) and it
    /// conflicts with nothing; the message says what it does.
    pub const READY: &str = "Ready";
    /// Every field it sets is implemented; `False` names the ones ferrolb accepts but does not
    /// implement, and what happens instead.
    pub const SUPPORTED: &str = "Supported";
}

// ---------------------------------------------------------------------------------------------
// BGPPeer

/// A BGP router the speakers peer with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPPeer",
    plural = "bgppeers",
    category = "ferrolb",
    status = "BGPPeerStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"ASN","type":"string","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"My ASN","type":"string","jsonPath":".spec.myASN"}"#,
    printcolumn = r#"{"name":"BFD Profile","type":"string","jsonPath":".spec.bfdProfile"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Sessions","type":"string","jsonPath":".status.sessions"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = peer_rules()))]
pub struct BGPPeerSpec {
    /// Our AS number.
    #[serde(rename = "myASN")]
    #[schemars(schema_with = "asn_schema")]
    pub my_asn: u32,
    /// The peer's AS number. Exactly one of `peerASN` and `dynamicASN`.
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_asn_schema")]
    pub peer_asn: Option<u32>,
    /// `internal` (the peer's AS must be ours) or `external` (must not be).
    #[serde(
        rename = "dynamicASN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsn>,
    /// Accepted for MetalLB manifests; not implemented (the peer is not used, see the
    /// `Supported` condition).
    #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_asn_schema")]
    pub local_asn: Option<u32>,
    /// The router's address. Exactly one of `peerAddress` and `interface`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ip_schema")]
    pub peer_address: Option<String>,
    /// BGP unnumbered over this interface. Accepted for MetalLB manifests; not implemented (the
    /// peer is not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The local address to connect from; a node that lacks it does not open the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ip_schema")]
    pub source_address: Option<String>,
    /// The router's port (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "port_schema")]
    pub peer_port: Option<u16>,
    /// Hold time proposed in our OPEN, e.g. `90s` (default) or `9s`; `0s` or at least `3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "hold_time_schema")]
    pub hold_time: Option<String>,
    /// Keepalive interval; default a third of the negotiated hold time, never more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "keepalive_schema")]
    pub keepalive_time: Option<String>,
    /// The longest wait between connection attempts (the backoff's cap), whole seconds from
    /// `1s` to `65535s`; default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "connect_time_schema")]
    pub connect_time: Option<String>,
    /// Our BGP Identifier (an IPv4 address); default the session's local IPv4 address, else the
    /// node's first IPv4 InternalIP.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "router_id_schema")]
    pub router_id: Option<String>,
    /// Nodes that peer with this router. Empty: all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP MD5 key (RFC 2385). At most one of `password` and `passwordSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "password_schema")]
    pub password: Option<String>,
    /// A Secret of type `kubernetes.io/basic-auth` whose key `password` is the TCP MD5 key. It
    /// must live in ferrolb's namespace (the default when `namespace` is omitted): the speakers
    /// may read Secrets there only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// A BFDProfile's name: run BFD with the router and tear the session down when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    /// Offer graceful restart (RFC 4724): on a planned restart of a speaker the router keeps
    /// its routes while it is away. May be changed: the session restarts to apply it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_graceful_restart: bool,
    /// The router is not directly connected (eBGP multihop): TTL 255 instead of 1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ebgp_multi_hop: bool,
    /// A host VRF. Accepted for MetalLB manifests; not implemented (the peer is not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Deprecated in MetalLB in favour of `dualStackAddressFamily`; a session carries only its
    /// own family unless `dualStackAddressFamily` is set, which is what `disableMP` asked for.
    #[serde(
        rename = "disableMP",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_mp: bool,
    /// Announce both families on this session (IPv6 routes over an IPv4 session and the other
    /// way round), not only the session's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dual_stack_address_family: bool,
}

/// `dynamicASN`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsn {
    /// The peer's AS equals `myASN` (iBGP).
    Internal,
    /// The peer's AS differs from `myASN` (eBGP).
    External,
}

/// What the controller observed about a BGPPeer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerStatus {
    /// `Ready` (references resolve) and `Supported` (every field set is implemented).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Established sessions out of those the speakers reported, e.g. `2/3 established`, for
    /// `kubectl get` (the details are in the BGPSessionStates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<String>,
    /// The generation the conditions were computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A field of a BGPPeer or BFDProfile that ferrolb accepts (so MetalLB manifests apply) but
/// does not implement. `as_str()` is the field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unsupported {
    /// `localASN` (FRR's `local-as`).
    LocalAsn,
    /// `interface` (BGP unnumbered).
    Interface,
    /// `vrf`.
    Vrf,
    /// A BFDProfile's `echoMode: true`.
    EchoMode,
}

impl Unsupported {
    /// The field's name as written in the spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LocalAsn => "localASN",
            Self::Interface => "interface",
            Self::Vrf => "vrf",
            Self::EchoMode => "echoMode",
        }
    }

    /// Whether a peer using it cannot be used at all: the session it asks for is not the one
    /// ferrolb would open, so opening one would mislead the router.
    pub const fn disables_peer(self) -> bool {
        !matches!(self, Self::EchoMode)
    }

    /// In words: what ferrolb does about it.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::LocalAsn => "localASN is not implemented; the peer is not used",
            Self::Interface => {
                "interface (BGP unnumbered) is not implemented; the peer is not used"
            }
            Self::Vrf => "vrf is not implemented; the peer is not used",
            Self::EchoMode => {
                "BFD echo mode is not implemented; BFD runs with control packets only"
            }
        }
    }
}

impl BGPPeerSpec {
    /// The fields set that ferrolb does not implement, in a stable order.
    pub fn unsupported(&self) -> Vec<Unsupported> {
        let mut out = Vec::new();
        if self.local_asn.is_some() {
            out.push(Unsupported::LocalAsn);
        }
        if self.interface.as_deref().is_some_and(|s| !s.is_empty()) {
            out.push(Unsupported::Interface);
        }
        if self.vrf.as_deref().is_some_and(|s| !s.is_empty()) {
            out.push(Unsupported::Vrf);
        }
        out
    }

    /// `peerPort`, or 179.
    pub fn port(&self) -> u16 {
        self.peer_port
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_PEER_PORT)
    }
}

// ---------------------------------------------------------------------------------------------
// BGPAdvertisement

/// Which pools are announced over BGP, to which peers, from which nodes and with which
/// attributes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    shortname = "bgpadv",
    category = "ferrolb",
    status = "BGPAdvertisementStatus",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Communities","type":"string","jsonPath":".spec.communities"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = advertisement_rules()))]
pub struct BGPAdvertisementSpec {
    /// Announce IPv4 addresses as prefixes of this length (default 32): `24` rolls a pool's /32s
    /// up into /24s. Not shorter than the prefixes of the pools it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "aggregation_v4_schema")]
    pub aggregation_length: Option<i32>,
    /// The same for IPv6 (default 128).
    #[serde(
        rename = "aggregationLengthV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "aggregation_v6_schema")]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF on iBGP sessions (never sent on eBGP). 0 means unset, as in MetalLB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_u32_schema")]
    pub local_pref: Option<u32>,
    /// Communities: `65535:65282`, `large:1:2:3`, or the name of an alias in a Community.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "communities_schema")]
    pub communities: Vec<String>,
    /// Pools announced by name. With neither this nor `ipAddressPoolSelectors`, all pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools announced by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce (the next hops the router gets). Empty: all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// BGPPeers (by name) announced to. Empty: all peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Services announced. Empty: all. Only with the default aggregation lengths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

impl BGPAdvertisementSpec {
    /// `aggregationLength`, or 32.
    pub fn aggregation_v4(&self) -> u8 {
        self.aggregation_length
            .and_then(|l| u8::try_from(l).ok())
            .filter(|l| (1..=32).contains(l))
            .unwrap_or(32)
    }

    /// `aggregationLengthV6`, or 128.
    pub fn aggregation_v6(&self) -> u8 {
        self.aggregation_length_v6
            .and_then(|l| u8::try_from(l).ok())
            .filter(|l| (1..=128).contains(l))
            .unwrap_or(128)
    }

    /// `localPref`, with 0 read as unset (MetalLB's meaning).
    pub fn local_pref(&self) -> Option<u32> {
        self.local_pref.filter(|p| *p != 0)
    }
}

/// What the controller observed about a BGPAdvertisement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementStatus {
    /// `Ready`: the pools, peers and community aliases it names exist, its aggregation fits
    /// its pools and its localPref conflicts with no other advertisement's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions were computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Community

/// Named community values for BGPAdvertisements.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "Community",
    plural = "communities",
    category = "ferrolb",
    status = "CommunityStatus",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub communities: Vec<CommunityAlias>,
}

/// One named community.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunityAlias {
    /// The name BGPAdvertisements use.
    #[schemars(length(max = 63))]
    pub name: String,
    /// `65535:65282` or `large:1:2:3`.
    #[schemars(schema_with = "community_value_schema")]
    pub value: String,
}

/// A Community has no status: problems with an alias show on the BGPAdvertisements using it.
/// The subresource exists so every ferrolb kind is shaped alike.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CommunityStatus {}

// ---------------------------------------------------------------------------------------------
// BFDProfile

/// BFD settings for the BGPPeers that name this profile.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    category = "ferrolb",
    status = "BFDProfileStatus",
    printcolumn = r#"{"name":"Passive Mode","type":"boolean","jsonPath":".spec.passiveMode"}"#,
    printcolumn = r#"{"name":"Transmit Interval","type":"integer","jsonPath":".spec.transmitInterval"}"#,
    printcolumn = r#"{"name":"Receive Interval","type":"integer","jsonPath":".spec.receiveInterval"}"#,
    printcolumn = r#"{"name":"Multiplier","type":"integer","jsonPath":".spec.detectMultiplier"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// The slowest rate we want to receive control packets at, milliseconds (10–60000, default
    /// 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "interval_schema")]
    pub receive_interval: Option<u32>,
    /// The rate we want to send at, milliseconds (10–60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "interval_schema")]
    pub transmit_interval: Option<u32>,
    /// Packets missed before the session is declared down (2–255, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "multiplier_schema")]
    pub detect_multiplier: Option<u32>,
    /// Echo receive interval, milliseconds. Accepted; echo is not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "interval_schema")]
    pub echo_interval: Option<u32>,
    /// Echo mode. Accepted; not implemented (a condition on the BGPPeers using the profile
    /// says so), BFD runs with control packets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Do not send until the router is heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// Multihop only: the smallest TTL accepted on received packets (1–254).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "min_ttl_schema")]
    pub minimum_ttl: Option<u32>,
}

impl BFDProfileSpec {
    /// `transmitInterval` in force.
    pub fn transmit(&self) -> Duration {
        ms(self.transmit_interval)
    }

    /// `receiveInterval` in force.
    pub fn receive(&self) -> Duration {
        ms(self.receive_interval)
    }

    /// `detectMultiplier` in force.
    pub fn multiplier(&self) -> u8 {
        self.detect_multiplier
            .and_then(|m| u8::try_from(m).ok())
            .filter(|m| *m >= 2)
            .unwrap_or(DEFAULT_BFD_MULTIPLIER as u8)
    }

    /// The fields set that ferrolb does not implement.
    pub fn unsupported(&self) -> Vec<Unsupported> {
        if self.echo_mode == Some(true) {
            vec![Unsupported::EchoMode]
        } else {
            Vec::new()
        }
    }
}

fn ms(v: Option<u32>) -> Duration {
    Duration::from_millis(u64::from(
        v.filter(|v| (10..=60_000).contains(v))
            .unwrap_or(DEFAULT_BFD_INTERVAL_MS),
    ))
}

/// A BFDProfile has no status: problems show on the BGPPeers using it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BFDProfileStatus {}

// ---------------------------------------------------------------------------------------------
// BGPSessionState

/// The live state of one BGP session, one object per (node, BGPPeer), named
/// `<node>-<peer>` and written by that node's speaker. Nothing in it is configuration.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPSessionState",
    plural = "bgpsessionstates",
    shortname = "bgpss",
    category = "ferrolb",
    status = "BGPSessionStateStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"Peer","type":"string","jsonPath":".status.peer"}"#,
    printcolumn = r#"{"name":"BGP","type":"string","jsonPath":".status.bgpState"}"#,
    printcolumn = r#"{"name":"BFD","type":"string","jsonPath":".status.bfdState"}"#,
    printcolumn = r#"{"name":"Prefixes","type":"integer","jsonPath":".status.prefixesAdvertised"}"#,
    printcolumn = r#"{"name":"Established","type":"date","jsonPath":".status.establishedTime"}"#,
    printcolumn = r#"{"name":"Last Error","type":"string","jsonPath":".status.lastError"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStateSpec {}

/// A session as its speaker sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStateStatus {
    /// The node.
    #[serde(default)]
    pub node: String,
    /// The BGPPeer.
    #[serde(default)]
    pub peer: String,
    /// The router's address and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<String>,
    /// Our end of the TCP connection, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    #[serde(default)]
    pub bgp_state: String,
    /// BFD state (AdminDown, Down, Init, Up), or `N/A` without a BFDProfile.
    #[serde(default)]
    pub bfd_state: String,
    /// When the session last became Established (absent while it is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_time: Option<Time>,
    /// What the OPEN exchange agreed, while Established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiated: Option<NegotiatedCapabilities>,
    /// How many prefixes are announced to the router now.
    #[serde(default)]
    pub prefixes_advertised: i64,
    /// The prefixes announced (at most the first 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertised: Vec<String>,
    /// Desired prefixes not announced on this session, with why (e.g. `2001:db8::7/128:
    /// family not negotiated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_advertised: Vec<String>,
    /// The last failure in words, e.g. `received NOTIFICATION 2/2 (OPEN: bad peer AS)` or `TCP
    /// MD5 is not supported by this kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When `lastError` happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<Time>,
    /// Times the session left Established since the speaker started.
    #[serde(default)]
    pub flaps: i64,
}

/// What one session negotiated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NegotiatedCapabilities {
    /// The router's AS.
    #[serde(rename = "peerASN")]
    pub peer_asn: i64,
    /// The router's BGP Identifier.
    #[serde(rename = "peerRouterID")]
    pub peer_router_id: String,
    /// Negotiated hold time, seconds.
    pub hold_time_seconds: i64,
    /// Keepalive interval in use, seconds.
    pub keepalive_seconds: i64,
    /// 4-octet AS numbers (RFC 6793).
    #[serde(rename = "fourOctetASN")]
    pub four_octet_asn: bool,
    /// Both sides offered graceful restart.
    pub graceful_restart: bool,
    /// The router accepts ROUTE-REFRESH.
    pub route_refresh: bool,
    /// `IPv4 unicast`, `IPv6 unicast`.
    pub families: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// What fields mean

/// Why a field's text does not mean anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BgpFieldError {
    /// Not a Go duration such as `90s`, `1m30s` or `300ms`.
    #[error("{0:?} is not a duration (like 90s, 1m30s or 300ms)")]
    Duration(String),
    /// Not `a:b` with 16-bit halves, nor `large:a:b:c` with 32-bit parts, nor an alias name.
    #[error(
        "{0:?} is not a community (65535:65282), a large community (large:1:2:3) or an alias name"
    )]
    Community(String),
}

/// Parses a Go-style duration (`metav1.Duration`): one or more `<number><unit>` with units
/// `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; `0` alone is zero. Negative values are rejected.
pub fn parse_duration(text: &str) -> Result<Duration, BgpFieldError> {
    let bad = || BgpFieldError::Duration(text.to_string());
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, after) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = next;
    }
    // A year is far beyond any BGP timer; refusing more keeps the conversion finite.
    if !total.is_finite() || total > 365.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// A community value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommunityValue {
    /// RFC 1997: `high:low`, as one 32-bit value.
    Standard(u32),
    /// RFC 8092: `large:global:local1:local2`.
    Large(u32, u32, u32),
}

/// What a `communities` entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommunityRef {
    /// A literal value.
    Value(CommunityValue),
    /// The name of an alias defined in a Community.
    Alias(String),
}

/// Parses a community literal (`65535:65282`, `large:1:2:3`).
pub fn parse_community_value(text: &str) -> Result<CommunityValue, BgpFieldError> {
    let bad = || BgpFieldError::Community(text.to_string());
    let s = text.trim();
    if let Some(large) = s.strip_prefix("large:") {
        let parts: Vec<&str> = large.split(':').collect();
        let [a, b, c] = parts.as_slice() else {
            return Err(bad());
        };
        let p = |x: &str| -> Result<u32, BgpFieldError> {
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            x.parse().map_err(|_| bad())
        };
        return Ok(CommunityValue::Large(p(a)?, p(b)?, p(c)?));
    }
    let (hi, lo) = s.split_once(':').ok_or_else(bad)?;
    let p = |x: &str| -> Result<u16, BgpFieldError> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    Ok(CommunityValue::Standard(
        (u32::from(p(hi)?) << 16) | u32::from(p(lo)?),
    ))
}

/// Parses a `communities` entry: a literal, else an alias name (letters, digits, `-`, `_`,
/// `.`, starting with a letter).
pub fn parse_community(text: &str) -> Result<CommunityRef, BgpFieldError> {
    let s = text.trim();
    if s.contains(':') {
        return parse_community_value(s).map(CommunityRef::Value);
    }
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(CommunityRef::Alias(s.to_string()))
    } else {
        Err(BgpFieldError::Community(text.to_string()))
    }
}

impl std::fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
            Self::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas and CEL rules
//
// CEL cost estimates need bounded strings and lists; every string here has a maxLength.

/// Go-duration shape, checked before `duration()` so a malformed value fails with our message
/// rather than a CEL evaluation error.
const DURATION_RE: &str = "^([0-9]+(\\\\.[0-9]+)?(h|m|s|ms|us|µs|ns))+$";

fn asn_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": 4294967295u64,
        "x-kubernetes-validations": [
            {"rule": "self >= 1 && self <= 4294967295", "message": "an AS number is from 1 to 4294967295 (0 is reserved)", "reason": "FieldValueInvalid"},
            {"rule": "self != 23456", "message": "AS 23456 is AS_TRANS (RFC 6793) and cannot be configured", "reason": "FieldValueInvalid"}
        ]
    })
}

fn optional_asn_schema(g: &mut SchemaGenerator) -> Schema {
    let mut s = asn_schema(g);
    s.insert("nullable".into(), serde_json::Value::Bool(true));
    s
}

fn optional_u32_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "nullable": true,
        "minimum": 0,
        "maximum": 4294967295u64
    })
}

fn ip_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 45,
        "x-kubernetes-validations": [
            {"rule": "isIP(self)", "messageExpression": "'\"' + self + '\" is not an IP address'", "reason": "FieldValueInvalid"}
        ]
    })
}

fn router_id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 15,
        "x-kubernetes-validations": [
            {"rule": "isIP(self) && ip(self).family() == 4", "messageExpression": "'routerID \"' + self + '\" is not an IPv4 address'", "reason": "FieldValueInvalid"}
        ]
    })
}

fn port_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "nullable": true,
        "default": 179,
        "x-kubernetes-validations": [
            {"rule": "self >= 1 && self <= 65535", "message": "peerPort is from 1 to 65535", "reason": "FieldValueInvalid"}
        ]
    })
}

fn duration_rules(extra: serde_json::Value) -> serde_json::Value {
    let mut rules = vec![serde_json::json!({
        "rule": format!("self.matches('{DURATION_RE}')"),
        "messageExpression": "'\"' + self + '\" is not a duration (like 90s, 1m30s or 300ms)'",
        "reason": "FieldValueInvalid"
    })];
    if let serde_json::Value::Array(more) = extra {
        rules.extend(more);
    }
    serde_json::Value::Array(rules)
}

fn hold_time_schema(_: &mut SchemaGenerator) -> Schema {
    let guard = format!("!self.matches('{DURATION_RE}') || ");
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 32,
        "x-kubernetes-validations": duration_rules(serde_json::json!([
            {"rule": format!("{guard}duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))"),
             "message": "holdTime is 0s (no keepalives) or from 3s to 65535s (RFC 4271)", "reason": "FieldValueInvalid"}
        ]))
    })
}

fn keepalive_schema(_: &mut SchemaGenerator) -> Schema {
    let guard = format!("!self.matches('{DURATION_RE}') || ");
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 32,
        "x-kubernetes-validations": duration_rules(serde_json::json!([
            {"rule": format!("{guard}duration(self) >= duration('1s') && duration(self) <= duration('21845s')"),
             "message": "keepaliveTime is from 1s to 21845s (a third of the longest hold time)", "reason": "FieldValueInvalid"}
        ]))
    })
}

fn connect_time_schema(_: &mut SchemaGenerator) -> Schema {
    let guard = format!("!self.matches('{DURATION_RE}') || ");
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 32,
        "x-kubernetes-validations": duration_rules(serde_json::json!([
            {"rule": format!("{guard}duration(self) >= duration('1s') && duration(self) <= duration('65535s')"),
             "message": "connectTime is from 1s to 65535s", "reason": "FieldValueInvalid"},
            {"rule": format!("{guard}duration(self).getMilliseconds() % 1000 == 0"),
             "message": "connectTime is a whole number of seconds", "reason": "FieldValueInvalid"}
        ]))
    })
}

fn password_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": MAX_PASSWORD_LEN,
        "x-kubernetes-validations": [
            {"rule": "size(self) >= 1", "message": "password is empty; omit it for no TCP MD5", "reason": "FieldValueInvalid"}
        ]
    })
}

fn peer_rules() -> serde_json::Value {
    serde_json::json!([
        {"rule": "has(self.peerASN) != has(self.dynamicASN)",
         "message": "exactly one of peerASN and dynamicASN must be set", "reason": "FieldValueRequired"},
        {"rule": "has(self.peerAddress) != has(self.interface)",
         "message": "exactly one of peerAddress and interface must be set", "reason": "FieldValueRequired"},
        {"rule": "!(has(self.password) && has(self.passwordSecret))",
         "message": "password and passwordSecret exclude each other", "reason": "FieldValueForbidden"},
        {"rule": "!has(self.ebgpMultiHop) || !self.ebgpMultiHop || !((has(self.peerASN) && self.peerASN == self.myASN) || (has(self.dynamicASN) && self.dynamicASN == 'internal'))",
         "message": "ebgpMultiHop is for eBGP peers; this peer is iBGP (same AS)", "reason": "FieldValueForbidden"},
        {"rule": "!has(self.sourceAddress) || !has(self.peerAddress) || !isIP(self.sourceAddress) || !isIP(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",
         "message": "sourceAddress and peerAddress must be of one family", "reason": "FieldValueInvalid"},
        {"rule": format!("!has(self.keepaliveTime) || !has(self.holdTime) || !self.keepaliveTime.matches('{DURATION_RE}') || !self.holdTime.matches('{DURATION_RE}') || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) < duration(self.holdTime)"),
         "message": "keepaliveTime must be shorter than holdTime", "reason": "FieldValueInvalid"}
    ])
}

fn aggregation_v4_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "nullable": true,
        "default": 32,
        "x-kubernetes-validations": [
            {"rule": "self >= 1 && self <= 32", "message": "aggregationLength is from 1 to 32", "reason": "FieldValueInvalid"}
        ]
    })
}

fn aggregation_v6_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "nullable": true,
        "default": 128,
        "x-kubernetes-validations": [
            {"rule": "self >= 1 && self <= 128", "message": "aggregationLengthV6 is from 1 to 128", "reason": "FieldValueInvalid"}
        ]
    })
}

/// The rules on one community string: a literal in range, or an alias name.
fn community_item_rules(alias_ok: bool) -> serde_json::Value {
    let standard = "self.matches('^[0-9]{1,5}:[0-9]{1,5}$')";
    let large = "self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$')";
    let alias = "self.matches('^[A-Za-z][-A-Za-z0-9_.]*$')";
    let (form, message) = if alias_ok {
        (
            format!("{standard} || {large} || {alias}"),
            "'\"' + self + '\" is not a community (65535:65282), a large community (large:1:2:3) or the name of a Community alias'",
        )
    } else {
        (
            format!("{standard} || {large}"),
            "'\"' + self + '\" is not a community (65535:65282) or a large community (large:1:2:3)'",
        )
    };
    serde_json::json!([
        {"rule": form, "messageExpression": message, "reason": "FieldValueInvalid"},
        {"rule": format!("!{standard} || self.split(':').all(p, int(p) <= 65535)"),
         "messageExpression": "'community \"' + self + '\": each half is at most 65535'", "reason": "FieldValueInvalid"},
        {"rule": format!("!{large} || self.split(':').all(p, p == 'large' || int(p) <= 4294967295)"),
         "messageExpression": "'large community \"' + self + '\": each part is at most 4294967295'", "reason": "FieldValueInvalid"}
    ])
}

fn communities_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "maxLength": 64,
            "x-kubernetes-validations": community_item_rules(true)
        }
    })
}

fn community_value_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 40,
        "x-kubernetes-validations": community_item_rules(false)
    })
}

fn advertisement_rules() -> serde_json::Value {
    serde_json::json!([
        {"rule": "!has(self.serviceSelectors) || size(self.serviceSelectors) == 0 || ((!has(self.aggregationLength) || self.aggregationLength == 32) && (!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128))",
         "message": "serviceSelectors can only be used with the default aggregationLength (32) and aggregationLengthV6 (128)", "reason": "FieldValueForbidden"}
    ])
}

fn interval_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "nullable": true,
        "x-kubernetes-validations": [
            {"rule": "self >= 10 && self <= 60000", "message": "BFD intervals are from 10 to 60000 milliseconds", "reason": "FieldValueInvalid"}
        ]
    })
}

fn multiplier_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "nullable": true,
        "x-kubernetes-validations": [
            {"rule": "self >= 2 && self <= 255", "message": "detectMultiplier is from 2 to 255", "reason": "FieldValueInvalid"}
        ]
    })
}

fn min_ttl_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "nullable": true,
        "x-kubernetes-validations": [
            {"rule": "self >= 1 && self <= 254", "message": "minimumTtl is from 1 to 254", "reason": "FieldValueInvalid"}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_metallb_peer_reads_unchanged() {
        let yaml = r#"
myASN: 64512
peerASN: 64513
peerAddress: 198.51.100.1
sourceAddress: 198.51.100.11
peerPort: 1179
holdTime: 9s
keepaliveTime: 3s
connectTime: 5s
routerID: 10.0.0.1
nodeSelectors: [{matchLabels: {rack: a}}]
passwordSecret: {name: bgp-secret, namespace: metallb-system}
bfdProfile: fast
enableGracefulRestart: true
ebgpMultiHop: true
disableMP: false
dualStackAddressFamily: true
"#;
        let spec: BGPPeerSpec = serde_yaml::from_str(yaml).expect("MetalLB peer");
        assert_eq!(spec.my_asn, 64512);
        assert_eq!(spec.peer_asn, Some(64513));
        assert_eq!(spec.port(), 1179);
        assert_eq!(
            spec.password_secret
                .as_ref()
                .and_then(|s| s.name.as_deref()),
            Some("bgp-secret")
        );
        assert!(spec.enable_graceful_restart && spec.ebgp_multi_hop);
        assert!(spec.dual_stack_address_family);
        assert!(spec.unsupported().is_empty());
        // Serialises back under MetalLB's names.
        let json = serde_json::to_value(&spec).expect("json");
        for key in [
            "myASN",
            "peerASN",
            "routerID",
            "ebgpMultiHop",
            "passwordSecret",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
    }

    #[test]
    fn unsupported_fields_are_named() {
        let spec: BGPPeerSpec = serde_yaml::from_str(
            "{myASN: 1, dynamicASN: external, interface: eth1, localASN: 7, vrf: red}",
        )
        .expect("peer");
        assert_eq!(
            spec.unsupported(),
            [
                Unsupported::LocalAsn,
                Unsupported::Interface,
                Unsupported::Vrf
            ]
        );
        assert!(spec.unsupported().iter().all(|u| u.disables_peer()));
        let bfd: BFDProfileSpec = serde_yaml::from_str("{echoMode: true}").expect("bfd");
        assert_eq!(bfd.unsupported(), [Unsupported::EchoMode]);
        assert!(!Unsupported::EchoMode.disables_peer());
    }

    #[test]
    fn advertisement_defaults() {
        let adv: BGPAdvertisementSpec =
            serde_yaml::from_str("{localPref: 0, communities: [65535:65282, no-adv]}")
                .expect("adv");
        assert_eq!(adv.aggregation_v4(), 32);
        assert_eq!(adv.aggregation_v6(), 128);
        assert_eq!(adv.local_pref(), None, "0 is unset, as in MetalLB");
        let adv: BGPAdvertisementSpec =
            serde_yaml::from_str("{aggregationLength: 24, aggregationLengthV6: 64, localPref: 50}")
                .expect("adv");
        assert_eq!(
            (adv.aggregation_v4(), adv.aggregation_v6(), adv.local_pref()),
            (24, 64, Some(50))
        );
    }

    #[test]
    fn bfd_defaults_and_ranges() {
        let p = BFDProfileSpec::default();
        assert_eq!(p.transmit(), Duration::from_millis(300));
        assert_eq!(p.receive(), Duration::from_millis(300));
        assert_eq!(p.multiplier(), 3);
        let p = BFDProfileSpec {
            transmit_interval: Some(100),
            receive_interval: Some(5),
            detect_multiplier: Some(5),
            ..Default::default()
        };
        assert_eq!(p.transmit(), Duration::from_millis(100));
        assert_eq!(p.receive(), Duration::from_millis(300), "out of range");
        assert_eq!(p.multiplier(), 5);
    }

    #[test]
    fn durations_follow_go() {
        let d = |s| parse_duration(s);
        assert_eq!(d("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "90", "s", "-1s", "1d", "1s2", "9999999h", "1..2s"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn communities_parse() {
        assert_eq!(
            parse_community("65535:65282"),
            Ok(CommunityRef::Value(CommunityValue::Standard(0xffff_ff02)))
        );
        assert_eq!(
            parse_community("large:4200000000:1:2"),
            Ok(CommunityRef::Value(CommunityValue::Large(
                4_200_000_000,
                1,
                2
            )))
        );
        assert_eq!(
            parse_community("no-advertise"),
            Ok(CommunityRef::Alias("no-advertise".into()))
        );
        for bad in [
            "65536:1",
            "1:",
            ":1",
            "1:2:3",
            "large:1:2",
            "large:1:2:x",
            "-x",
            "",
            "a b",
            "large:4294967296:1:1",
        ] {
            assert!(parse_community(bad).is_err(), "{bad}");
        }
        assert_eq!(
            CommunityValue::Standard(0xffff_ff02).to_string(),
            "65535:65282"
        );
        assert!(parse_community_value("no-advertise").is_err());
    }

    #[test]
    fn schemas_carry_the_cel_rules() {
        let peer = serde_json::to_string(&BGPPeer::crd()).expect("json");
        for needle in [
            "exactly one of peerASN and dynamicASN",
            "password and passwordSecret exclude each other",
            "holdTime is 0s",
            "an AS number is from 1 to 4294967295",
            "keepaliveTime must be shorter than holdTime",
            "connectTime is a whole number of seconds",
        ] {
            assert!(peer.contains(needle), "BGPPeer lacks {needle}");
        }
        let adv = serde_json::to_string(&BGPAdvertisement::crd()).expect("json");
        for needle in [
            "aggregationLength is from 1 to 32",
            "serviceSelectors can only be used",
            "is not a community",
        ] {
            assert!(adv.contains(needle), "BGPAdvertisement lacks {needle}");
        }
        let bfd = serde_json::to_string(&BFDProfile::crd()).expect("json");
        assert!(bfd.contains("detectMultiplier is from 2 to 255"));
        let state = BGPSessionState::crd();
        assert_eq!(state.spec.scope, "Cluster");
    }
}
