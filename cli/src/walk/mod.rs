//! The rule walker: a packet in, a tree of the paths it takes through kube-proxy's rules out, each
//! with its share of the traffic, and the list of where each path ends ([`Outcome`]).
//!
//! It follows the kernel's order: for traffic arriving at the node, nat PREROUTING then filter
//! INPUT or FORWARD (by whether the destination, after DNAT, is an address of the node); for
//! traffic the node itself sends, nat OUTPUT then filter OUTPUT. In nftables mode, every base
//! chain of those hooks in the input, by priority (kube-proxy's `filter-prerouting-pre-dnat`
//! runs before `nat-prerouting`). Filter stages that only let the packet pass are left out of
//! the tree. For an excerpt without the built-in chains, it starts at the first kube-proxy
//! chain that matches the packet ([`start`]).
//!
//! Conditions it cannot decide (an unknown source address, an unknown `--dst-type LOCAL`, a match
//! it did not understand) fork the path: each branch names what it assumes, and shares are of
//! the traffic meeting those assumptions. A masquerade mark under such a condition does not fork;
//! it is reported as conditional ([`Snat::If`]). Sequential `statistic random` probabilities and
//! `numgen random mod N` become the effective shares of each branch.
//!
//! Pure: no I/O, no clock. The walk is bounded ([`MAX_DEPTH`], [`MAX_VISITS`]); a cut path is
//! an outcome of its own, never silently lost.

pub mod check;
mod engine;
mod iptables;
mod nft;
pub mod render;
pub mod start;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

use crate::rules::{Family, Proto, Ruleset};

/// Deepest chain nesting followed; kube-proxy needs 6.
pub const MAX_DEPTH: usize = 32;
/// Most chain visits in one walk; a real node's rules need a few dozen per packet.
pub const MAX_VISITS: usize = 20_000;

/// Why a walk could not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalkError {
    /// The input holds no rules at all.
    #[error("the input holds no rules")]
    NoRules,
    /// The input has rules, but none of kube-proxy's chains match the packet and there is no
    /// built-in chain to start from.
    #[error("no chain to start from: {0}")]
    NoStart(String),
    /// `--chain` names a chain the input does not have.
    #[error("chain {0} is not in the input")]
    UnknownChain(String),
    /// `--to` is not `IP:PORT[/PROTO]`.
    #[error("{0:?} is not IP:PORT[/PROTO] (like 198.51.100.100:80/tcp or [2001:db8::100]:80/udp)")]
    BadDestination(String),
}

/// Where the traced packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// It arrives at the node from the network (a client, another node, or a pod on this node):
    /// PREROUTING.
    Outside,
    /// A process on the node sends it: OUTPUT.
    Node,
}

impl Origin {
    /// Words for the output.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Outside => "arriving at the node",
            Self::Node => "sent by a process on the node",
        }
    }
}

/// The packet to trace: the first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Source address, when known (`--from`).
    pub src: Option<IpAddr>,
    /// Where it comes from.
    pub origin: Origin,
    /// Whether the destination is an address of the node; `None`: unknown, and conditions on it
    /// fork.
    pub dst_local: Option<bool>,
}

impl Packet {
    /// A packet from outside to `dst:port/proto`, source and locality unknown.
    pub fn to(dst: IpAddr, port: u16, proto: Proto) -> Self {
        Self {
            dst,
            port,
            proto,
            src: None,
            origin: Origin::Outside,
            dst_local: None,
        }
    }

    /// The destination's family.
    pub fn family(&self) -> Family {
        Family::of(&self.dst)
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = match self.dst {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        };
        write!(f, "{} to {dst}", self.proto.as_str().to_ascii_uppercase())?;
        match self.src {
            Some(s) => write!(f, " from {s}")?,
            None => f.write_str(" from an unknown source")?,
        }
        write!(f, ", {}", self.origin.describe())?;
        match self.dst_local {
            Some(true) => f.write_str("; the destination is an address of this node"),
            Some(false) => f.write_str("; the destination is not an address of this node"),
            None => Ok(()),
        }
    }
}

/// Parses `IP:PORT[/PROTO]` (`198.51.100.100:80/tcp`, `[2001:db8::100]:443`); the protocol
/// defaults to TCP.
pub fn parse_destination(s: &str) -> Result<(IpAddr, u16, Proto), WalkError> {
    let err = || WalkError::BadDestination(s.to_string());
    let (addr, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, Proto::parse(p).ok_or_else(err)?),
        None => (s, Proto::Tcp),
    };
    let (ip, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or_else(err)?;
        (ip, port)
    } else {
        let (ip, port) = addr.rsplit_once(':').ok_or_else(err)?;
        if ip.contains(':') {
            return Err(err());
        }
        (ip, port)
    };
    let ip = IpAddr::from_str(ip).map_err(|_| err())?;
    let port = port.parse::<u16>().map_err(|_| err())?;
    Ok((ip, port, proto))
}

/// Whether the source will be rewritten (masqueraded) on the way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "snat", content = "when")]
pub enum Snat {
    /// No masquerade mark: the endpoint sees the client's address.
    No,
    /// Marked for masquerade: the endpoint sees the node's address.
    Yes,
    /// Marked only when these conditions hold (the walker could not decide them).
    If(Vec<String>),
}

impl Snat {
    /// Words for the output.
    pub fn describe(&self) -> String {
        match self {
            Self::No => "source kept".into(),
            Self::Yes => "SNAT (masquerade)".into(),
            Self::If(c) => format!("SNAT if {}", c.join(", or if ")),
        }
    }
}

/// A DNAT destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// As written in the rule.
    pub written: String,
    /// The address, when it parses.
    pub ip: Option<IpAddr>,
    /// The port, when given.
    pub port: Option<u16>,
}

impl Endpoint {
    /// From a DNAT target as written.
    pub fn parse(written: &str) -> Self {
        let (ip, port) =
            crate::rules::dnat_addr(written).map_or((None, None), |(i, p)| (Some(i), p));
        Self {
            written: written.to_string(),
            ip,
            port,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (Some(IpAddr::V6(a)), Some(p)) => write!(f, "[{a}]:{p}"),
            (Some(a), Some(p)) => write!(f, "{a}:{p}"),
            (Some(a), None) => write!(f, "{a}"),
            _ => f.write_str(&self.written),
        }
    }
}

/// Where a path ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fate")]
pub enum Fate {
    /// Translated to an endpoint and let through.
    Delivered {
        /// The DNAT destination.
        to: Endpoint,
    },
    /// No kube-proxy rule translated it and nothing dropped it: it goes on to its original
    /// destination (for a Service address, that means nothing answers for it here).
    NotTranslated,
    /// Dropped.
    Dropped {
        /// The chain that dropped it.
        chain: String,
        /// The rule's comment, when it has one (kube-proxy says why there).
        reason: Option<String>,
    },
    /// Rejected (the client gets an ICMP error or a reset).
    Rejected {
        /// The chain that rejected it.
        chain: String,
        /// The rule's comment, when it has one.
        reason: Option<String>,
    },
    /// A chain the rules enter is not in the input: what happens there is unknown.
    MissingChain {
        /// Its name.
        chain: String,
        /// The endpoint kube-proxy's comment on the jump names, if any (`ns/svc:port -> ip:port`).
        hint: Option<String>,
    },
    /// The walk was cut (too deep, a loop, or too many paths).
    Cut {
        /// Why.
        why: String,
    },
}

/// One end of the packet's journey through the rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Fraction (0..=1) of the traffic meeting [`Outcome::assuming`] that ends here.
    pub share: f64,
    /// What the walker assumed on the way (empty: nothing).
    pub assuming: Vec<String>,
    /// The chains entered, in order.
    pub path: Vec<String>,
    /// Where it ends.
    pub fate: Fate,
    /// Whether its source will be masqueraded.
    pub snat: Snat,
}

/// What a matching rule did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "to")]
pub enum Action {
    /// Entered a chain and comes back.
    Jump(String),
    /// Entered a chain and does not come back.
    Goto(String),
    /// Marked for masquerade (KUBE-MARK-MASQ, `meta mark set mark or 0x4000`).
    MarkMasq,
    /// Marked for masquerade only if these conditions, which the walker cannot decide, hold.
    MarkMasqIf(Vec<String>),
    /// Changed the packet mark otherwise.
    Mark(String),
    /// Rewrote the destination.
    Dnat(String),
    /// Accepted (ends the table or base chain).
    Accept,
    /// Dropped.
    Drop,
    /// Rejected.
    Reject,
    /// Returned to the calling chain.
    Return,
    /// Matched and did nothing that changes the path (a counter, a comment-only rule, LOG).
    Nothing,
    /// Source NAT in a nat chain the walker passes (never in kube-proxy's prerouting).
    Snat,
}

/// A rule that matched (part of the traffic), and what followed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Share of the traced traffic (meeting the branch's assumptions) taking this rule.
    pub share: f64,
    /// What this branch assumes, beyond its parents.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assuming: Vec<String>,
    /// How the branch was chosen (`statistic random 0.33333`, `numgen 1 of 3`), if by chance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance: Option<String>,
    /// The rule as written (iptables) or rendered (nft).
    pub rule: String,
    /// The conditions that matched, in the rule's own syntax (`-d 198.51.100.100/32 -p tcp
    /// --dport 80`, `ip daddr . meta l4proto . th dport 198.51.100.100 . tcp . 80 in
    /// @service-ips`); empty when the rule has none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub matched: String,
    /// Its comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// What it did.
    #[serde(flatten)]
    pub action: Action,
    /// The chain it entered, walked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub into: Option<Box<Visit>>,
    /// Where the paths leaving the table here went next (later hooks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Visit>,
    /// Indexes into [`Trace::outcomes`] of the paths that ended here, or in later stages left
    /// out of the tree.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<usize>,
}

/// A walk through one chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    /// `nat`, `filter`, or the nft table (`ip kube-proxy`).
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The rules that matched, in order.
    pub hits: Vec<Hit>,
    /// Traffic that reached the end of the chain (policy for built-in chains, back to the caller
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    /// Remarks (session affinity, a lookup that found nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Traffic falling off the end of a chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct End {
    /// Its share.
    pub share: f64,
    /// What happens: `policy ACCEPT`, `returns to the caller`.
    pub what: String,
    /// Later hooks, as in [`Hit::then`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Visit>,
    /// As in [`Hit::outcomes`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<usize>,
}

/// The result of a walk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The packet.
    pub packet: Packet,
    /// Where the walk started and why there.
    pub start: String,
    /// The walk, one tree per starting chain.
    pub tree: Vec<Visit>,
    /// Every end, referenced from the tree.
    pub outcomes: Vec<Outcome>,
    /// Things to know about the walk (skipped unknown matches, missing chains, assumptions).
    pub notes: Vec<String>,
}

impl Trace {
    /// The DNAT destinations with their total shares, in first-seen order.
    pub fn endpoints(&self) -> Vec<(Endpoint, f64)> {
        let mut out: Vec<(Endpoint, f64)> = Vec::new();
        for o in &self.outcomes {
            if let Fate::Delivered { to } = &o.fate {
                match out.iter_mut().find(|(e, _)| e == to) {
                    Some((_, s)) => *s += o.share,
                    None => out.push((to.clone(), o.share)),
                }
            }
        }
        out
    }

    /// Chains entered but missing from the input, with their total shares.
    pub fn missing_chains(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for o in &self.outcomes {
            if let Fate::MissingChain { chain, .. } = &o.fate {
                match out.iter_mut().find(|(c, _)| c == chain) {
                    Some((_, s)) => *s += o.share,
                    None => out.push((chain.clone(), o.share)),
                }
            }
        }
        out
    }
}

/// Options of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkOptions {
    /// Start at this chain instead of the built-in one or the guessed one.
    pub chain: Option<String>,
}

/// Walks `rules` for `packet`.
pub fn walk(rules: &Ruleset, packet: &Packet, opts: &WalkOptions) -> Result<Trace, WalkError> {
    if rules.rule_count() == 0
        && rules.tables.iter().all(|t| t.chains.is_empty())
        && rules.nft.is_empty()
    {
        return Err(WalkError::NoRules);
    }
    if rules.nft.iter().any(|t| !t.chains.is_empty()) {
        nft::walk(rules, packet, opts)
    } else {
        iptables::walk(rules, packet, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        assert_eq!(
            parse_destination("198.51.100.100:80/tcp"),
            Ok(("198.51.100.100".parse().expect("ip"), 80, Proto::Tcp))
        );
        assert_eq!(
            parse_destination("[2001:db8::100]:53/UDP"),
            Ok(("2001:db8::100".parse().expect("ip"), 53, Proto::Udp))
        );
        assert_eq!(
            parse_destination("198.51.100.100:443"),
            Ok(("198.51.100.100".parse().expect("ip"), 443, Proto::Tcp))
        );
        assert!(parse_destination("2001:db8::100:80").is_err());
        assert!(parse_destination("198.51.100.100").is_err());
        assert!(parse_destination("198.51.100.100:80/icmp").is_err());
        assert!(parse_destination("198.51.100.100:99999").is_err());
    }
}
