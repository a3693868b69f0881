//! kube-proxy's rules as users paste them, parsed into one model: [`Ruleset`].
//!
//! Accepted input ([`parse`] detects which):
//! - whole `iptables-save` / `ip6tables-save` output (any tables; nat and filter are the ones walked),
//!   also several concatenated, also with `-c` counters;
//! - excerpts of `-A` lines (or `iptables -t nat -A ...` command lines) without table headers, the
//!   table of each rule then inferred from kube-proxy's conventions ([`Ruleset::inferred_tables`]);
//! - the listing format of `iptables -t nat -nL [CHAIN]`, with or without `-v`, `-x` and
//!   `--line-numbers` ([`listing`]);
//! - `nft -j list ruleset` JSON ([`nft`]).
//!
//! Parsing is total: any text gives a ruleset (possibly empty) and a list of [`Issue`]s. Nothing
//! is dropped silently: a match or target option that is not understood is kept as text in the
//! rule ([`Match::Unknown`], [`Target::Other`]) and reported as an issue; the walker treats it as
//! a condition it cannot decide.
//!
//! This module only reads text. It decides nothing about packets (that is [`crate::walk`]) and
//! performs no I/O.

pub mod listing;
pub mod nft;
pub mod save;
mod tokens;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

/// Inputs longer than this are refused: a real node's rules are a few MB at most.
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Why the input could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The input is larger than [`MAX_INPUT_BYTES`].
    #[error("the rules are {0} bytes; at most {MAX_INPUT_BYTES} are read")]
    TooLarge(usize),
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }

    /// "IPv4" or "IPv6".
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }
}

/// An address with a prefix length: `198.51.100.0/24`, `2001:db8::1/128`, or a bare address
/// (full length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    /// The address as written.
    pub addr: IpAddr,
    /// Prefix length (0–32 or 0–128).
    pub len: u8,
}

impl Net {
    /// Parses `ADDR`, `ADDR/LEN` or `ADDR/DOTTED-MASK` (iptables accepts `/255.255.255.0`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let a = a.trim_start_matches('[').trim_end_matches(']');
        let addr = IpAddr::from_str(a).ok()?;
        let max = match addr {
            IpAddr::V4(_) => 32u8,
            IpAddr::V6(_) => 128u8,
        };
        let len = match l {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                Ok(_) => return None,
                Err(_) => match (addr, IpAddr::from_str(l).ok()?) {
                    (IpAddr::V4(_), IpAddr::V4(m)) => mask_len(u128::from(u32::from(m)) << 96)?,
                    (IpAddr::V6(_), IpAddr::V6(m)) => mask_len(u128::from(m))?,
                    _ => return None,
                },
            },
        };
        Some(Self { addr, len })
    }

    /// The family of the address.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Whether `ip` lies in this network (never across families).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(
                u128::from(u32::from(n)),
                u128::from(u32::from(*i)),
                self.len,
                32,
            ),
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                prefix_eq(u128::from(n), u128::from(*i), self.len, 128)
            }
            _ => false,
        }
    }

    /// Whether two networks share any address.
    pub fn overlaps(&self, other: &Net) -> bool {
        if self.family() != other.family() {
            return false;
        }
        if self.len <= other.len {
            self.contains(&other.addr)
        } else {
            other.contains(&self.addr)
        }
    }

    /// Whether this is the whole address space (`0.0.0.0/0`, `::/0`).
    pub fn is_any(&self) -> bool {
        self.len == 0
    }
}

/// The prefix length of a contiguous mask given in the top bits of a u128, if contiguous.
fn mask_len(m: u128) -> Option<u8> {
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) == 0 {
        u8::try_from(ones).ok()
    } else {
        None
    }
}

/// Whether the first `len` of `width` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, len: u8, width: u32) -> bool {
    let len = u32::from(len).min(width);
    if len == 0 {
        return true;
    }
    let shift = width - len;
    (a >> shift) == (b >> shift)
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.len == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Ports as a match names them: one, a range `a:b`, or a list (multiport).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ports(pub Vec<(u16, u16)>);

impl Ports {
    /// Parses `80`, `30000:32767`, `80,443,8000:8080`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let a = if a.is_empty() { 0 } else { a.parse().ok()? };
            let b = if b.is_empty() {
                u16::MAX
            } else {
                b.parse().ok()?
            };
            out.push((a.min(b), a.max(b)));
        }
        (!out.is_empty()).then_some(Self(out))
    }

    /// Whether `p` is one of the ports.
    pub fn contains(&self, p: u16) -> bool {
        self.0.iter().any(|&(a, b)| a <= p && p <= b)
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}:{b}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A transport protocol as rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Proto {
    /// Parses a name or number (`tcp`, `TCP`, `6`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Some(Self::Tcp),
            "udp" | "17" => Some(Self::Udp),
            "sctp" | "132" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// Lower case, as iptables and nft write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// What a `-p` match names: a known transport protocol, "all", or something else (icmp, a
/// number), which no Service packet is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtoMatch {
    /// `all` or `0`.
    All,
    /// tcp, udp, sctp.
    Is(Proto),
    /// Anything else, as written.
    Other(String),
}

impl ProtoMatch {
    /// Parses `-p`'s value.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "all" | "0" => Self::All,
            other => Proto::parse(other).map_or_else(|| Self::Other(other.to_string()), Self::Is),
        }
    }
}

/// An address type of the `addrtype` match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrTypes {
    /// `!` before the types.
    pub negated: bool,
    /// Upper-case names: LOCAL, UNICAST, …
    pub types: Vec<String>,
}

/// How a `statistic` match chooses packets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum Statistic {
    /// `--mode random --probability p`.
    Random {
        /// The probability, 0..=1.
        probability: f64,
    },
    /// `--mode nth --every n [--packet p]`: one packet in `every`.
    Nth {
        /// The period.
        every: u32,
    },
}

impl Statistic {
    /// The fraction of the packets reaching the rule that the match selects.
    pub fn fraction(&self) -> f64 {
        match *self {
            Self::Random { probability } => probability.clamp(0.0, 1.0),
            Self::Nth { every } if every > 0 => 1.0 / f64::from(every),
            Self::Nth { .. } => 0.0,
        }
    }
}

/// What a `recent` match does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecentMode {
    /// `--set`: records the source (a side effect; always matches).
    Set,
    /// `--rcheck` / `--update`: matches sources seen recently (session affinity).
    Check,
    /// `--remove`.
    Remove,
}

/// One condition of an iptables rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Match {
    /// `[!] -s NET`.
    Source {
        /// `!`.
        negated: bool,
        /// The network.
        net: Net,
    },
    /// `[!] -d NET`.
    Destination {
        /// `!`.
        negated: bool,
        /// The network.
        net: Net,
    },
    /// `[!] -p PROTO`.
    Protocol {
        /// `!`.
        negated: bool,
        /// The protocol.
        proto: ProtoMatch,
    },
    /// `[!] -i IF` (incoming interface; `+` is a wildcard suffix).
    InInterface {
        /// `!`.
        negated: bool,
        /// The name.
        name: String,
    },
    /// `[!] -o IF`.
    OutInterface {
        /// `!`.
        negated: bool,
        /// The name.
        name: String,
    },
    /// `[!] --dport` / `--dports` (tcp, udp, sctp, multiport).
    DestinationPort {
        /// `!`.
        negated: bool,
        /// The ports.
        ports: Ports,
    },
    /// `[!] --sport` / `--sports`.
    SourcePort {
        /// `!`.
        negated: bool,
        /// The ports.
        ports: Ports,
    },
    /// `-m addrtype`.
    AddrType {
        /// `--src-type`.
        src: Option<AddrTypes>,
        /// `--dst-type`.
        dst: Option<AddrTypes>,
    },
    /// `-m statistic`.
    Statistic(Statistic),
    /// `-m mark [!] --mark VALUE[/MASK]`.
    Mark {
        /// `!`.
        negated: bool,
        /// The value.
        value: u32,
        /// The mask (all ones when absent).
        mask: u32,
    },
    /// `-m conntrack [!] --ctstate A,B` or `-m state [!] --state A,B`.
    CtState {
        /// `!`.
        negated: bool,
        /// Upper-case states.
        states: Vec<String>,
    },
    /// `-m recent`.
    Recent {
        /// What it does.
        mode: RecentMode,
        /// `--name`.
        name: Option<String>,
        /// `--seconds`.
        seconds: Option<u32>,
    },
    /// A match that is understood to always hold for a traced packet (`-m nfacct`,
    /// `-m tcp` alone), kept for display.
    Always(String),
    /// Not understood: kept as written; the walker cannot decide it.
    Unknown(String),
}

/// A MARK target's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum MarkOp {
    /// `--or-mark V`.
    Or {
        /// Bits.
        value: u32,
    },
    /// `--and-mark V`.
    And {
        /// Bits.
        value: u32,
    },
    /// `--xor-mark V`.
    Xor {
        /// Bits.
        value: u32,
    },
    /// `--set-xmark V/M`: zero the mask bits, then xor the value.
    SetXmark {
        /// Bits.
        value: u32,
        /// Mask.
        mask: u32,
    },
}

impl MarkOp {
    /// The mark after the operation.
    pub fn apply(self, mark: u32) -> u32 {
        match self {
            Self::Or { value } => mark | value,
            Self::And { value } => mark & value,
            Self::Xor { value } => mark ^ value,
            Self::SetXmark { value, mask } => (mark & !mask) ^ value,
        }
    }
}

/// What an iptables rule does when it matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Target {
    /// No `-j`: the rule only counts (or, in kube-proxy's KUBE-FW chains, only comments).
    None,
    /// `-j CHAIN`.
    Jump(String),
    /// `-g CHAIN`.
    Goto(String),
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j RETURN`.
    Return,
    /// `-j REJECT [--reject-with X]`.
    Reject(Option<String>),
    /// `-j DNAT --to-destination X`.
    Dnat(String),
    /// `-j SNAT --to-source X`.
    Snat(String),
    /// `-j MASQUERADE`.
    Masquerade,
    /// `-j MARK ...`.
    Mark(MarkOp),
    /// Any other target with its options, as written (LOG, CONNMARK, …); non-terminating.
    Other(String),
}

impl Target {
    /// The chain this target enters, if any.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Self::Jump(c) | Self::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// One rule of an iptables chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// 1-based line of the input it came from.
    pub line: usize,
    /// The rule as written in the input (trimmed).
    pub text: String,
    /// Its conditions, in order.
    pub matches: Vec<Match>,
    /// What it does.
    pub target: Target,
    /// The `--comment` (or `/* … */`), if any.
    pub comment: Option<String>,
    /// The family its addresses imply, if they imply one.
    pub family: Option<Family>,
}

/// An iptables chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Chain {
    /// Built-in chains have a policy (`ACCEPT`, `DROP`); user chains have none.
    pub policy: Option<String>,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// An iptables table name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableName {
    /// `nat`.
    Nat,
    /// `filter`.
    Filter,
    /// Anything else (`mangle`, `raw`, `security`): parsed, never walked.
    Other(String),
}

impl TableName {
    /// Parses a table name.
    pub fn parse(s: &str) -> Self {
        match s {
            "nat" => Self::Nat,
            "filter" => Self::Filter,
            other => Self::Other(other.to_string()),
        }
    }

    /// As iptables writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Nat => "nat",
            Self::Filter => "filter",
            Self::Other(s) => s,
        }
    }
}

/// One iptables table (from one `*table` section, or gathered from an excerpt).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// Which table.
    pub name: TableName,
    /// The family, when the input says (the `ip6tables-save` header) or its rules imply it.
    pub family: Option<Family>,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    /// An empty table.
    pub fn new(name: TableName, family: Option<Family>) -> Self {
        Self {
            name,
            family,
            chains: BTreeMap::new(),
        }
    }
}

/// The shape of the input, as detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `iptables-save` output with `*table` sections.
    IptablesSave,
    /// `-A` lines without table sections.
    Excerpt,
    /// `iptables -nL` listing.
    Listing,
    /// `nft -j list ruleset`.
    NftJson,
    /// Nothing recognisable.
    Empty,
}

impl Format {
    /// Words for the output.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::IptablesSave => "iptables-save output",
            Self::Excerpt => "an excerpt of -A rules",
            Self::Listing => "an iptables -L listing",
            Self::NftJson => "nft -j list ruleset output",
            Self::Empty => "no rules",
        }
    }
}

/// Something in the input that was not understood, kept and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// 1-based line (0 when the input has no lines, as JSON).
    pub line: usize,
    /// What was not understood.
    pub message: String,
}

/// Everything parsed from one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ruleset {
    /// What the input looked like.
    pub format: Format,
    /// iptables tables (empty for nft input).
    pub tables: Vec<Table>,
    /// nftables tables (empty for iptables input).
    pub nft: Vec<nft::NftTable>,
    /// Whether some rules' tables were guessed (no `*table` header).
    pub inferred_tables: bool,
    /// Lines, options and objects not understood.
    pub issues: Vec<Issue>,
}

impl Ruleset {
    fn empty(format: Format) -> Self {
        Self {
            format,
            tables: Vec::new(),
            nft: Vec::new(),
            inferred_tables: false,
            issues: Vec::new(),
        }
    }

    /// Number of rules, over every table.
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| t.chains.values())
            .map(|c| c.rules.len())
            .sum::<usize>()
            + self
                .nft
                .iter()
                .flat_map(|t| t.chains.values())
                .map(|c| c.rules.len())
                .sum::<usize>()
    }

    /// Whether the input may hold rules for `family`: a table of that family, or of unknown
    /// family (an excerpt whose addresses say nothing).
    pub fn has_family(&self, family: Family) -> bool {
        self.tables
            .iter()
            .any(|t| !t.chains.is_empty() && t.family.is_none_or(|f| f == family))
            || self.nft.iter().any(|t| {
                !t.chains.is_empty()
                    && match t.family.as_str() {
                        "ip" => family == Family::Ipv4,
                        "ip6" => family == Family::Ipv6,
                        "inet" => true,
                        _ => false,
                    }
            })
    }

    /// The iptables table of that name for `family` (a table of unknown family serves both).
    pub fn table(&self, name: &TableName, family: Family) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| &t.name == name && t.family == Some(family))
            .or_else(|| {
                self.tables
                    .iter()
                    .find(|t| &t.name == name && t.family.is_none())
            })
    }
}

/// Parses any accepted input (see the module docs). Never panics.
pub fn parse(text: &str) -> Result<Ruleset, RulesError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(RulesError::TooLarge(text.len()));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return Ok(nft::parse(text));
    }
    if listing::looks_like_listing(text) {
        return Ok(listing::parse(text));
    }
    Ok(save::parse(text))
}

/// The table a kube-proxy rule belongs in when the input does not say: kube-proxy's chain names
/// and targets tell nat from filter (KUBE-SERVICES and KUBE-NODEPORTS exist in both).
pub(crate) fn infer_table(chain: &str, matches: &[Match], target: &Target) -> TableName {
    const FILTER_CHAINS: [&str; 6] = [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FORWARD",
        "KUBE-FIREWALL",
        "KUBE-PROXY-CANARY",
        "KUBE-KUBELET-CANARY",
    ];
    if FILTER_CHAINS.contains(&chain) || matches!(chain, "INPUT" | "FORWARD") {
        return TableName::Filter;
    }
    if let Some(t) = target.chain()
        && FILTER_CHAINS.contains(&t)
    {
        return TableName::Filter;
    }
    if matches!(chain, "PREROUTING" | "POSTROUTING") {
        return TableName::Nat;
    }
    match target {
        Target::Accept | Target::Drop | Target::Reject(_) => return TableName::Filter,
        Target::Dnat(_) | Target::Snat(_) | Target::Masquerade | Target::Mark(_) => {
            return TableName::Nat;
        }
        _ => {}
    }
    if matches.iter().any(|m| matches!(m, Match::CtState { .. })) {
        return TableName::Filter;
    }
    TableName::Nat
}

/// The family a rule's addresses imply.
pub(crate) fn rule_family(matches: &[Match], target: &Target) -> Option<Family> {
    for m in matches {
        if let Match::Source { net, .. } | Match::Destination { net, .. } = m
            && !net.is_any()
        {
            return Some(net.family());
        }
    }
    if let Target::Dnat(to) | Target::Snat(to) = target {
        return dnat_addr(to).map(|(ip, _)| Family::of(&ip));
    }
    None
}

/// The address and port of a DNAT `--to-destination` value: `192.0.2.5:8080`,
/// `[2001:db8::5]:8080`, `192.0.2.5`. Ranges give their first address.
pub fn dnat_addr(to: &str) -> Option<(IpAddr, Option<u16>)> {
    let to = to.trim();
    if let Some(rest) = to.strip_prefix('[') {
        let (a, after) = rest.split_once(']')?;
        let ip = IpAddr::from_str(a).ok()?;
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.split(['-', ':']).next())
            .and_then(|p| p.parse().ok());
        return Some((ip, port));
    }
    if let Ok(ip) = IpAddr::from_str(to) {
        return Some((ip, None));
    }
    // IPv4 with a port, or a range `a-b[:p]`.
    let first = to.split('-').next().unwrap_or(to);
    match first.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => {
            let ip = IpAddr::from_str(a).ok()?;
            let port = p.parse().ok();
            let port = port.or_else(|| {
                to.rsplit_once(':')
                    .and_then(|(_, p)| p.split('-').next())
                    .and_then(|p| p.parse().ok())
            });
            Some((ip, port))
        }
        _ => IpAddr::from_str(first).ok().map(|ip| (ip, None)),
    }
}

/// Parses a number written in decimal or `0x` hex.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `VALUE[/MASK]`.
pub(crate) fn parse_mark(s: &str) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(s)?, u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_in_every_written_form() {
        let n = Net::parse("198.51.100.0/24").expect("cidr");
        assert!(n.contains(&"198.51.100.77".parse().expect("ip")));
        assert!(!n.contains(&"198.51.101.1".parse().expect("ip")));
        assert_eq!(Net::parse("198.51.100.7").map(|n| n.len), Some(32));
        assert_eq!(
            Net::parse("192.0.2.0/255.255.255.128").map(|n| n.len),
            Some(25)
        );
        assert_eq!(Net::parse("192.0.2.0/255.0.255.0"), None, "not contiguous");
        let v6 = Net::parse("2001:db8:1::/48").expect("v6");
        assert!(v6.contains(&"2001:db8:1:2::5".parse().expect("ip")));
        assert!(!v6.contains(&"198.51.100.1".parse().expect("ip")));
        assert!(Net::parse("::/0").expect("any").is_any());
        assert_eq!(Net::parse("198.51.100.0/33"), None);
        assert_eq!(Net::parse("nonsense"), None);
        assert_eq!(n.to_string(), "198.51.100.0/24");
        assert_eq!(
            Net::parse("198.51.100.7/32").map(|n| n.to_string()),
            Some("198.51.100.7".into())
        );
    }

    #[test]
    fn overlaps_are_symmetric_and_per_family() {
        let a = Net::parse("198.51.100.0/24").expect("a");
        let b = Net::parse("198.51.100.128/25").expect("b");
        let c = Net::parse("203.0.113.0/24").expect("c");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(!a.overlaps(&Net::parse("::/0").expect("v6")));
    }

    #[test]
    fn ports_and_dnat_targets() {
        let p = Ports::parse("80,8000:8080").expect("ports");
        assert!(p.contains(80) && p.contains(8001) && !p.contains(81));
        assert_eq!(
            dnat_addr("192.0.2.5:8080"),
            Some(("192.0.2.5".parse().expect("ip"), Some(8080)))
        );
        assert_eq!(
            dnat_addr("[2001:db8:1:1::5]:8080"),
            Some(("2001:db8:1:1::5".parse().expect("ip"), Some(8080)))
        );
        assert_eq!(
            dnat_addr("192.0.2.5"),
            Some(("192.0.2.5".parse().expect("ip"), None))
        );
        assert_eq!(dnat_addr("junk"), None);
    }

    #[test]
    fn families_held_by_the_input() {
        let v4 = parse("# Generated by iptables-save v1.8.9\n*nat\n-A KUBE-SERVICES -d 198.51.100.1/32 -j KUBE-SVC-A\nCOMMIT\n").expect("parses");
        assert!(v4.has_family(Family::Ipv4) && !v4.has_family(Family::Ipv6));
        let unknown = parse("-A KUBE-SVC-A -j KUBE-SEP-A\n").expect("parses");
        assert!(unknown.has_family(Family::Ipv4) && unknown.has_family(Family::Ipv6));
        let nft6 = parse(
            r#"{"nftables":[{"chain":{"family":"ip6","table":"kube-proxy","name":"services"}}]}"#,
        )
        .expect("parses");
        assert!(nft6.has_family(Family::Ipv6) && !nft6.has_family(Family::Ipv4));
    }

    #[test]
    fn marks_apply_like_the_kernel() {
        assert_eq!(MarkOp::Or { value: 0x4000 }.apply(0x1), 0x4001);
        assert_eq!(
            MarkOp::SetXmark {
                value: 0x4000,
                mask: 0x4000
            }
            .apply(0x1),
            0x4001
        );
        assert_eq!(MarkOp::Xor { value: 0x4000 }.apply(0x4001), 0x1);
        assert_eq!(parse_mark("0x4000/0x4000"), Some((0x4000, 0x4000)));
        assert_eq!(parse_u32("16384"), Some(0x4000));
    }
}
