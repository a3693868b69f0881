//! Cross-checks a [`Trace`] against the endpoints the EndpointSlices list: endpoints kube-proxy
//! has not programmed, DNAT targets that are no endpoint (stale rules, or another node's dump),
//! chains missing from the input, and splits that are not even. Pure.

use std::net::IpAddr;

use super::{Endpoint, Fate, Trace};
use crate::findings::{Finding, Severity};

/// An endpoint as the EndpointSlices list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SliceEndpoint {
    /// Address.
    pub ip: IpAddr,
    /// The target port for the traced Service port.
    pub port: u16,
    /// `conditions.ready` (unset counts as ready, as in the API).
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// `nodeName`.
    pub node: Option<String>,
}

fn same(e: &Endpoint, s: &SliceEndpoint) -> bool {
    e.ip == Some(s.ip) && e.port.is_none_or(|p| p == s.port)
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Findings of the cross-check. `expected` are the endpoints kube-proxy should use for this path
/// (for `externalTrafficPolicy: Local` from outside, the node's own; the caller decides).
pub fn cross_check(trace: &Trace, expected: &[SliceEndpoint]) -> Vec<Finding> {
    let mut out = Vec::new();
    let targets = trace.endpoints();
    let missing = trace.missing_chains();
    // Hints: kube-proxy's comment on a jump to a missing endpoint chain names the endpoint.
    let hinted: Vec<String> = trace
        .outcomes
        .iter()
        .filter_map(|o| match &o.fate {
            Fate::MissingChain { hint: Some(h), .. } => Some(h.clone()),
            _ => None,
        })
        .collect();
    let usable: Vec<&SliceEndpoint> = {
        let ready: Vec<&SliceEndpoint> = expected.iter().filter(|e| e.ready).collect();
        if ready.is_empty() {
            // kube-proxy falls back to serving, terminating endpoints when none is ready.
            expected
                .iter()
                .filter(|e| e.serving && e.terminating)
                .collect()
        } else {
            ready
        }
    };
    for e in &usable {
        let programmed = targets.iter().any(|(t, _)| same(t, e));
        let hinted_here = hinted.iter().any(|h| Endpoint::parse(h).ip == Some(e.ip));
        if programmed {
            continue;
        }
        let where_ = e
            .node
            .as_deref()
            .map_or(String::new(), |n| format!(" on {n}"));
        if hinted_here {
            out.push(
                Finding::new(
                    Severity::Info,
                    "endpoint-chain-missing",
                    format!(
                        "endpoint {}:{}{where_} is jumped to, but its chain is not in the input",
                        e.ip, e.port
                    ),
                )
                .because("the rules that DNAT to it were not part of what was pasted")
                .fix("paste the whole iptables-save (or nft list ruleset) of the node to check it"),
            );
        } else {
            out.push(
                Finding::new(
                    Severity::Error,
                    "endpoint-not-programmed",
                    format!("endpoint {}:{}{where_} is ready but no rule sends traffic to it", e.ip, e.port),
                )
                .because("kube-proxy on this node has not programmed it: it is behind, failing to sync, or the dump is older than the endpoint")
                .fix("check kube-proxy's log on the node (sync errors), compare the dump's time with the endpoint's, and take a fresh dump"),
            );
        }
    }
    for (t, share) in &targets {
        if expected.iter().any(|e| same(t, e) && e.ready) {
            continue;
        }
        if let Some(e) = expected.iter().find(|e| same(t, e)) {
            let state = if e.serving && e.terminating {
                "terminating but still serving"
            } else {
                "not ready"
            };
            let sev = if usable.iter().any(|u| same(t, u)) {
                Severity::Info
            } else {
                Severity::Warning
            };
            out.push(
                Finding::new(
                    sev,
                    "dnat-to-unready-endpoint",
                    format!("{} of the traffic goes to {t}, an endpoint that is {state}", pct(*share)),
                )
                .because("kube-proxy uses such endpoints only when no endpoint is ready; otherwise the rules are older than the endpoint's state")
                .fix("check the pod's readiness probe and whether kube-proxy on this node is syncing"),
            );
        } else {
            out.push(
                Finding::new(
                    Severity::Error,
                    "dnat-to-non-endpoint",
                    format!("{} of the traffic is sent to {t}, which is no endpoint of the Service", pct(*share)),
                )
                .because("the rules are stale (kube-proxy has not synced since the endpoint went away) or the dump comes from another cluster or node")
                .fix("take a fresh dump on the node; if it persists, restart kube-proxy there and read its log"),
            );
        }
    }
    // Paths that end before an endpoint, grouped by where and why.
    let mut ends: Vec<(String, f64, Severity, Option<String>)> = Vec::new();
    for o in &trace.outcomes {
        let (what, fix) = match &o.fate {
            Fate::Dropped { chain, reason } | Fate::Rejected { chain, reason } => {
                let verb = if matches!(o.fate, Fate::Rejected { .. }) { "rejected" } else { "dropped" };
                let r = reason.as_deref().unwrap_or("");
                let fix = if r.contains("no local endpoints") {
                    "externalTrafficPolicy Local and no ready endpoint on this node: the IP must be announced from a node with one (check the Announced condition), or use policy Cluster"
                } else if r.contains("no endpoints") {
                    "the Service has no ready endpoint: make its pods ready"
                } else if r.contains("loadBalancerSourceRanges") || chain.starts_with("KUBE-PROXY-FIREWALL") || chain.starts_with("firewall-") {
                    "the client is not in the Service's loadBalancerSourceRanges: add its range, or check --from"
                } else {
                    "read the rule that matched; it is not one of kube-proxy's usual ones"
                };
                (
                    format!("{verb} in {chain}{}", reason.as_deref().map_or(String::new(), |r| format!(": {r}"))),
                    Some(fix.to_string()),
                )
            }
            Fate::NotTranslated => (
                format!("not translated: no kube-proxy rule on this node takes {}:{}", trace.packet.dst, trace.packet.port),
                Some("kube-proxy has not programmed the Service here (not synced, or crashing), or the rules come from another node or cluster: take a fresh dump and read kube-proxy's log".to_string()),
            ),
            _ => continue,
        };
        let what = if o.assuming.is_empty() {
            what
        } else {
            format!("{what} (if {})", o.assuming.join("; "))
        };
        match ends.iter_mut().find(|(w, ..)| *w == what) {
            Some((_, s, ..)) => *s += o.share,
            None => ends.push((what, o.share, Severity::Error, fix)),
        }
    }
    for (what, share, sev, fix) in ends {
        let mut f = Finding::new(
            sev,
            "traffic-stopped",
            format!("{} of the traffic is {what}", pct(share)),
        );
        if let Some(x) = fix {
            f = f.fix(x);
        }
        out.push(f);
    }
    for (chain, share) in &missing {
        out.push(
            Finding::new(
                Severity::Warning,
                "chain-missing",
                format!(
                    "{} of the traffic enters {chain}, which is not in the input",
                    pct(*share)
                ),
            )
            .because("what happens to that traffic cannot be traced from this input")
            .fix("include that chain (or the whole table) in the rules"),
        );
    }
    if targets.len() > 1 {
        let total: f64 = targets.iter().map(|(_, s)| s).sum();
        let even = total / targets.len() as f64;
        if targets.iter().any(|(_, s)| (s - even).abs() > 0.01) {
            let parts: Vec<String> = targets
                .iter()
                .map(|(t, s)| format!("{t} {}", pct(*s)))
                .collect();
            out.push(
                Finding::new(
                    Severity::Warning,
                    "uneven-split",
                    format!("the split across endpoints is uneven: {}", parts.join(", ")),
                )
                .because("kube-proxy always splits evenly; uneven shares mean rules edited by hand or written by something else"),
            );
        }
    }
    if out.is_empty() && !expected.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            "rules-match-endpoints",
            format!(
                "the rules send traffic to exactly the {} usable endpoint(s)",
                usable.len()
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{self, Proto};
    use crate::walk::{Packet, WalkOptions, walk};

    const RULES: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 198.51.100.100/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A -m comment --comment "default/web:http -> 192.0.2.2:8080" -m statistic --mode random --probability 0.5 -j KUBE-SEP-1
-A KUBE-SVC-A -m comment --comment "default/web:http -> 192.0.2.9:8080" -j KUBE-SEP-2
-A KUBE-SEP-1 -p tcp -j DNAT --to-destination 192.0.2.2:8080
-A KUBE-SEP-2 -p tcp -j DNAT --to-destination 192.0.2.9:8080
COMMIT
"#;

    fn ep(ip: &str, ready: bool) -> SliceEndpoint {
        SliceEndpoint {
            ip: ip.parse().expect("ip"),
            port: 8080,
            ready,
            serving: ready,
            terminating: false,
            node: Some("node-1".into()),
        }
    }

    fn trace() -> Trace {
        let rs = rules::parse(RULES).expect("parse");
        walk(
            &rs,
            &Packet::to("198.51.100.100".parse().expect("ip"), 80, Proto::Tcp),
            &WalkOptions::default(),
        )
        .expect("walk")
    }

    #[test]
    fn stale_targets_and_unprogrammed_endpoints_are_named() {
        let f = cross_check(&trace(), &[ep("192.0.2.2", true), ep("192.0.2.3", true)]);
        let checks: Vec<&str> = f.iter().map(|f| f.check.as_str()).collect();
        assert!(checks.contains(&"endpoint-not-programmed"), "{f:?}");
        assert!(checks.contains(&"dnat-to-non-endpoint"), "{f:?}");
        let stale = f
            .iter()
            .find(|f| f.check == "dnat-to-non-endpoint")
            .expect("stale");
        assert!(
            stale.title.contains("50.0%") && stale.title.contains("192.0.2.9:8080"),
            "{}",
            stale.title
        );
        let unprog = f
            .iter()
            .find(|f| f.check == "endpoint-not-programmed")
            .expect("unprogrammed");
        assert!(unprog.title.contains("192.0.2.3:8080"));
    }

    #[test]
    fn matching_rules_say_so() {
        let f = cross_check(&trace(), &[ep("192.0.2.2", true), ep("192.0.2.9", true)]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Ok);
    }

    #[test]
    fn drops_and_untranslated_traffic_are_errors() {
        let rs = rules::parse("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j KUBE-EXTERNAL-SERVICES\n-A KUBE-EXTERNAL-SERVICES -d 198.51.100.105/32 -p tcp -m comment --comment \"default/remote:http has no local endpoints\" -m tcp --dport 80 -j DROP\nCOMMIT\n").expect("parse");
        let t = walk(
            &rs,
            &Packet::to("198.51.100.105".parse().expect("ip"), 80, Proto::Tcp),
            &WalkOptions::default(),
        )
        .expect("walk");
        let f = cross_check(&t, &[]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].check, "traffic-stopped");
        assert_eq!(
            f[0].title,
            "100.0% of the traffic is dropped in KUBE-EXTERNAL-SERVICES: default/remote:http has no local endpoints"
        );
        assert!(
            f[0].fix
                .as_deref()
                .is_some_and(|x| x.contains("externalTrafficPolicy Local"))
        );
        let t = walk(
            &rs,
            &Packet::to("198.51.100.99".parse().expect("ip"), 80, Proto::Tcp),
            &WalkOptions::default(),
        )
        .expect("walk");
        let f = cross_check(&t, &[]);
        assert!(f[0].title.contains("not translated"), "{f:?}");
    }

    #[test]
    fn unready_targets_warn() {
        let f = cross_check(&trace(), &[ep("192.0.2.2", true), ep("192.0.2.9", false)]);
        assert!(
            f.iter()
                .any(|f| f.check == "dnat-to-unready-endpoint" && f.severity == Severity::Warning),
            "{f:?}"
        );
    }
}
