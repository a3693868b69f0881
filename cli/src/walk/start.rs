//! Where a walk starts when the input lacks the built-in chains (an excerpt pasted from a
//! ticket): KUBE-SERVICES if present, else the first kube-proxy chain nothing else jumps to that
//! names the packet's destination, else the only such chain. Pure.

use std::collections::BTreeSet;

use super::{Packet, WalkError};
use crate::rules::{Match, ProtoMatch, Rule, Table};

/// The chosen start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The chain.
    pub chain: String,
    /// Why there, in words.
    pub why: String,
}

/// kube-proxy's chain prefixes, in the order a packet meets them.
const ORDER: [&str; 7] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-FW-",
    "KUBE-EXT-",
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
];

fn rank(chain: &str) -> usize {
    ORDER
        .iter()
        .position(|p| chain.starts_with(p))
        .unwrap_or(ORDER.len())
}

/// Whether a rule names the packet's destination (address, or port in KUBE-NODEPORTS).
pub fn names_packet(chain: &str, rule: &Rule, p: &Packet) -> bool {
    let proto_ok = rule.matches.iter().all(|m| match m {
        Match::Protocol {
            negated: false,
            proto: ProtoMatch::Is(x),
        } => *x == p.proto,
        _ => true,
    });
    let port_ok = rule.matches.iter().all(|m| match m {
        Match::DestinationPort {
            negated: false,
            ports,
        } => ports.contains(p.port),
        _ => true,
    });
    let has_port = rule
        .matches
        .iter()
        .any(|m| matches!(m, Match::DestinationPort { negated: false, .. }));
    let dst = rule.matches.iter().any(|m| {
        matches!(m, Match::Destination { negated: false, net } if !net.is_any() && net.contains(&p.dst))
    });
    proto_ok && port_ok && (dst || (chain == "KUBE-NODEPORTS" && has_port))
}

/// The start in an iptables nat table without the built-in chain for the packet.
pub fn iptables(nat: &Table, p: &Packet) -> Result<Start, WalkError> {
    if nat.chains.contains_key("KUBE-SERVICES") {
        return Ok(Start {
            chain: "KUBE-SERVICES".into(),
            why: "the input has no PREROUTING/OUTPUT chain; starting at KUBE-SERVICES".into(),
        });
    }
    let targeted: BTreeSet<&str> = nat
        .chains
        .values()
        .flat_map(|c| c.rules.iter().filter_map(|r| r.target.chain()))
        .collect();
    let mut roots: Vec<&str> = nat
        .chains
        .iter()
        .filter(|(name, c)| !targeted.contains(name.as_str()) && !c.rules.is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    roots.sort_by_key(|c| (rank(c), *c));
    let naming: Vec<&str> = roots
        .iter()
        .copied()
        .filter(|c| {
            nat.chains
                .get(*c)
                .is_some_and(|ch| ch.rules.iter().any(|r| names_packet(c, r, p)))
        })
        .collect();
    if let Some(first) = naming.first() {
        return Ok(Start {
            chain: (*first).to_string(),
            why: format!(
                "the input has no PREROUTING/OUTPUT or KUBE-SERVICES; starting at {first}, the first chain that names {}",
                p.dst
            ),
        });
    }
    match roots.as_slice() {
        [only] => Ok(Start {
            chain: (*only).to_string(),
            why: format!(
                "the input has no PREROUTING/OUTPUT or KUBE-SERVICES and nothing names {}; starting at {only}, the only chain nothing jumps to",
                p.dst
            ),
        }),
        [] => Err(WalkError::NoStart(
            "no chain in the input is a starting point (every chain is jumped to from another)"
                .into(),
        )),
        many => Err(WalkError::NoStart(format!(
            "nothing in the input names {}; chains nothing jumps to: {} (pass --chain to start at one)",
            p.dst,
            many.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;
    use crate::rules::{Family, Proto, TableName};

    fn nat(text: &str) -> Table {
        rules::parse(text)
            .expect("parses")
            .table(&TableName::Nat, Family::Ipv4)
            .expect("nat")
            .clone()
    }

    fn pkt() -> Packet {
        Packet::to("198.51.100.100".parse().expect("ip"), 80, Proto::Tcp)
    }

    #[test]
    fn kube_services_first() {
        let t = nat(
            "-A KUBE-SERVICES -d 198.51.100.100/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-A\n-A KUBE-EXT-A -j KUBE-SVC-A\n",
        );
        assert_eq!(
            iptables(&t, &pkt()).map(|s| s.chain),
            Ok("KUBE-SERVICES".into())
        );
    }

    #[test]
    fn the_root_naming_the_destination() {
        let t = nat(
            "-A KUBE-FW-A -s 198.51.100.192/26 -j KUBE-EXT-A\n-A KUBE-SVC-B -d 203.0.113.11/32 -p tcp -m tcp --dport 80 ! -s 192.0.2.0/25 -j KUBE-MARK-MASQ\n-A KUBE-SVC-C -d 198.51.100.100/32 -p tcp -m tcp --dport 80 ! -s 192.0.2.0/25 -j KUBE-MARK-MASQ\n-A KUBE-SVC-C -j KUBE-SEP-C\n",
        );
        let s = iptables(&t, &pkt()).expect("start");
        assert_eq!(s.chain, "KUBE-SVC-C");
        assert!(s.why.contains("names 198.51.100.100"), "{}", s.why);
    }

    #[test]
    fn a_single_root_or_an_explanation() {
        let t = nat(
            "-A KUBE-SVC-A -j KUBE-SEP-A\n-A KUBE-SEP-A -p tcp -j DNAT --to-destination 192.0.2.2:8080\n",
        );
        assert_eq!(
            iptables(&t, &pkt()).map(|s| s.chain),
            Ok("KUBE-SVC-A".into())
        );
        let t = nat("-A KUBE-SVC-A -j KUBE-SEP-A\n-A KUBE-SVC-B -j KUBE-SEP-B\n");
        match iptables(&t, &pkt()) {
            Err(WalkError::NoStart(m)) => {
                assert!(
                    m.contains("KUBE-SVC-A, KUBE-SVC-B") && m.contains("--chain"),
                    "{m}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
