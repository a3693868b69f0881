//! `status`: what ferrolb is doing, read from what its components already publish: pool usage
//! and conditions, the node announcing each Service IP (the `ferrolb.io/Announced` condition),
//! the speakers per node, the latest announcer changes (the speakers' events), Services
//! without an IP with the controller's reason, and BGP mode's sessions (the BGPSessionStates)
//! with the nodes advertising each IP over BGP. Pure over a [`Snapshot`].

use std::fmt::Write as _;

use serde::Serialize;

use crate::snapshot::{
    ANNOUNCED, Snapshot, bgp_view, ingress_ips, ip_source, is_ours, key, name_of, node_ready,
    pod_node_ready, service_condition, speaker_pods,
};

/// How many announcer changes are shown.
pub const RECENT_EVENTS: usize = 10;

/// One pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolLine {
    /// Name.
    pub name: String,
    /// `spec.addresses`.
    pub addresses: Vec<String>,
    /// `status.assigned` as the controller wrote it.
    pub assigned: String,
    /// `status.available`.
    pub available: String,
    /// Conditions that are not fine (`Ready` false, `Overlapping` true), as "type: message".
    pub problems: Vec<String>,
}

/// One Service IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpLine {
    /// `namespace/name`.
    pub service: String,
    /// The IP.
    pub ip: String,
    /// Its pool (for a node address, the node pool that published it).
    pub pool: Option<String>,
    /// Forwarder mode: the node whose own address it is.
    pub node: Option<String>,
    /// The `Announced` condition (L2), or the `ForwarderReady` condition (forwarder mode):
    /// status and message.
    pub announced: Option<(String, String)>,
    /// BGP mode: the nodes advertising it on at least one session, when a BGPAdvertisement
    /// covers its pool (`None` when none does).
    pub bgp_advertisers: Option<Vec<String>>,
}

/// One BGP session, as its speaker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpSessionLine {
    /// Node.
    pub node: String,
    /// BGPPeer.
    pub peer: String,
    /// RFC 4271 state.
    pub bgp_state: String,
    /// BFD state, `N/A` without BFD.
    pub bfd_state: String,
    /// Prefixes announced.
    pub prefixes: i64,
    /// The last error, in words.
    pub last_error: Option<String>,
}

/// A speaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpeakerLine {
    /// Node.
    pub node: String,
    /// Pod.
    pub pod: String,
    /// Pod ready.
    pub ready: bool,
    /// Node ready.
    pub node_ready: bool,
    /// Peers it considers alive (`ferrolb_speaker_peers_alive`), when its metrics were read.
    pub peers_alive: Option<u64>,
    /// Peers it declared down so far (`ferrolb_speaker_peer_down_total`, all reasons).
    pub peer_downs: Option<u64>,
}

/// The sum of every series of metric `name` in Prometheus text, if it appears.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `name{...} v` or `name v`.
        let rest = match rest.chars().next() {
            Some('{') => rest.split_once('}').map_or("", |(_, r)| r),
            Some(c) if c.is_whitespace() => rest,
            _ => continue,
        };
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A Service without an IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// `namespace/name`.
    pub service: String,
    /// Why, from the `ferrolb.io/IPAllocated` condition.
    pub why: String,
}

/// An announcer change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// When (RFC 3339).
    pub time: String,
    /// `namespace/name`.
    pub service: String,
    /// The event's note.
    pub note: String,
}

/// The status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Pools.
    pub pools: Vec<PoolLine>,
    /// Service IPs.
    pub ips: Vec<IpLine>,
    /// Speakers.
    pub speakers: Vec<SpeakerLine>,
    /// Latest announcer changes, newest first.
    pub changes: Vec<Change>,
    /// Services without an IP.
    pub pending: Vec<Pending>,
    /// BGP sessions (empty without BGP mode).
    pub bgp_sessions: Vec<BgpSessionLine>,
    /// Whether BGP mode is configured (a BGPAdvertisement or BGPPeer exists): the text then
    /// lists the sessions even when there are none.
    pub bgp_configured: bool,
    /// What could not be read.
    pub gaps: Vec<String>,
}

/// Builds the status.
pub fn build(snap: &Snapshot) -> Status {
    let pools = snap
        .pools
        .iter()
        .map(|p| {
            let st = p.status.clone().unwrap_or_default();
            let problems = st
                .conditions
                .iter()
                .filter(|c| {
                    (c.type_ == ferrolb_crds::conditions::POOL_READY && c.status != "True")
                        || (c.type_ == ferrolb_crds::conditions::POOL_OVERLAP && c.status == "True")
                })
                .map(|c| format!("{}: {}", c.type_, c.message))
                .collect();
            PoolLine {
                name: name_of(p),
                addresses: p.spec.addresses.clone(),
                assigned: st.assigned,
                available: st.available,
                problems,
            }
        })
        .collect();
    let mut ips = Vec::new();
    let mut pending = Vec::new();
    for s in snap.services.iter().filter(|s| is_ours(s)) {
        let list = ingress_ips(s);
        if list.is_empty() {
            pending.push(Pending {
                service: key(s),
                why: service_condition(s, ferrolb_crds::conditions::IP_ALLOCATED).map_or_else(
                    || "no condition yet: the controller has not seen it".into(),
                    |c| format!("{}: {}", c.reason, c.message),
                ),
            });
            continue;
        }
        let ann = service_condition(s, ANNOUNCED)
            .or_else(|| service_condition(s, ferrolb_crds::conditions::FORWARDER_READY))
            .map(|c| (c.status.clone(), c.message.clone()));
        for ip in list {
            let src = ip_source(snap, s, ip);
            let bgp_advertisers = if src.node.is_none() {
                bgp_view(snap, s, ip).map(|v| v.advertising_nodes)
            } else {
                None
            };
            ips.push(IpLine {
                service: key(s),
                ip: ip.to_string(),
                pool: src.pool,
                node: src.node,
                announced: ann.clone(),
                bgp_advertisers,
            });
        }
    }
    let speakers = speaker_pods(snap)
        .into_iter()
        .map(|p| {
            let (node, ready) = pod_node_ready(p);
            let node = node.unwrap_or_default();
            let m = snap.speaker_metrics.get(&name_of(p));
            let count = |n: &str| {
                m.and_then(|t| metric(t, n))
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| v.round() as u64)
            };
            SpeakerLine {
                peers_alive: count("ferrolb_speaker_peers_alive"),
                peer_downs: count("ferrolb_speaker_peer_down_total"),
                node_ready: snap
                    .nodes
                    .iter()
                    .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
                    .is_some_and(node_ready),
                node,
                pod: name_of(p),
                ready,
            }
        })
        .collect();
    let mut changes: Vec<Change> = snap
        .events
        .iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some("ferrolb-speaker")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Service")
        })
        .map(|e| {
            let r = e.regarding.clone().unwrap_or_default();
            Change {
                // A repeated event is folded into a series: its last occurrence is the
                // series's, not the first one's eventTime.
                time: e
                    .series
                    .as_ref()
                    .map(|s| s.last_observed_time.0.to_string())
                    .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                    .or_else(|| {
                        e.deprecated_last_timestamp
                            .as_ref()
                            .map(|t| t.0.to_string())
                    })
                    .or_else(|| {
                        e.metadata
                            .creation_timestamp
                            .as_ref()
                            .map(|t| t.0.to_string())
                    })
                    .unwrap_or_default(),
                service: format!(
                    "{}/{}",
                    r.namespace.unwrap_or_default(),
                    r.name.unwrap_or_default()
                ),
                note: e.note.clone().unwrap_or_default(),
            }
        })
        .collect();
    changes.sort_by(|a, b| b.time.cmp(&a.time));
    changes.truncate(RECENT_EVENTS);
    let mut bgp_sessions: Vec<BgpSessionLine> = snap
        .bgp_sessions
        .iter()
        .filter_map(|x| x.status.as_ref())
        .map(|st| BgpSessionLine {
            node: st.node.clone(),
            peer: st.peer.clone(),
            bgp_state: st.bgp_state.clone(),
            bfd_state: st.bfd_state.clone(),
            prefixes: st.prefixes_advertised,
            last_error: st.last_error.clone().filter(|e| !e.is_empty()),
        })
        .collect();
    bgp_sessions.sort_by(|a, b| (&a.node, &a.peer).cmp(&(&b.node, &b.peer)));
    Status {
        bgp_configured: !snap.bgp_advs.is_empty() || !snap.bgp_peers.is_empty(),
        bgp_sessions,
        pools,
        ips,
        speakers,
        changes,
        pending,
        gaps: snap.gaps.clone(),
    }
}

/// The status as text.
pub fn text(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Pools:");
    if s.pools.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    let name_width = s.pools.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let addr_width = s
        .pools
        .iter()
        .map(|p| p.addresses.join(",").len())
        .max()
        .unwrap_or(0);
    for p in &s.pools {
        let _ = writeln!(
            o,
            "  {:<name_width$}  {:<addr_width$}  assigned {}  available {}",
            p.name,
            p.addresses.join(","),
            if p.assigned.is_empty() {
                "-"
            } else {
                &p.assigned
            },
            if p.available.is_empty() {
                "-"
            } else {
                &p.available
            }
        );
        for pr in &p.problems {
            let _ = writeln!(o, "    ! {pr}");
        }
    }
    let _ = writeln!(o, "\nService IPs:");
    if s.ips.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for i in &s.ips {
        let ann = match (&i.announced, &i.node) {
            (Some((st, m)), None) if st == "True" => m.clone(),
            (Some((_, m)), None) => format!(
                "NOT ANNOUNCED: {}",
                m.strip_prefix("not announced: ").unwrap_or(m)
            ),
            (Some((st, m)), Some(n)) if st == "True" => format!("{n}'s address; {m}"),
            (Some((_, m)), Some(n)) => format!("{n}'s address; NOT PUBLISHED: {m}"),
            (None, Some(n)) => format!("{n}'s address; no ForwarderReady condition"),
            (None, None) if i.bgp_advertisers.is_some() => String::new(),
            (None, None) => "no announcement condition".into(),
        };
        let ann = match (&i.bgp_advertisers, ann.is_empty()) {
            (None, _) => ann,
            (Some(by), empty) => {
                let bgp = if by.is_empty() {
                    "NOT ADVERTISED over BGP (kubectl ferrolb trace says why)".to_string()
                } else {
                    format!("advertised over BGP by {}", by.join(", "))
                };
                if empty { bgp } else { format!("{ann}; {bgp}") }
            }
        };
        let _ = writeln!(
            o,
            "  {:<18} {:<28} pool {:<12} {ann}",
            i.ip,
            i.service,
            i.pool.as_deref().unwrap_or("(none)")
        );
    }
    let _ = writeln!(o, "\nSpeakers:");
    if s.speakers.is_empty() {
        let _ = writeln!(
            o,
            "  (no speaker pods found; speakers run outside Kubernetes are not visible here)"
        );
    }
    let ready = s.speakers.iter().filter(|sp| sp.ready).count() as u64;
    for sp in &s.speakers {
        let membership = match (sp.peers_alive, sp.peer_downs) {
            (Some(a), downs) => {
                let mut t = format!(", sees {a} peer(s) alive");
                if let Some(d) = downs {
                    t.push_str(&format!(", {d} peer-down event(s) so far"));
                }
                if sp.ready && a + 1 < ready {
                    t.push_str(&format!(
                        " — FEWER than the {} other ready speakers: a partition, or UDP heartbeats (port 7946) blocked",
                        ready - 1
                    ));
                }
                t
            }
            (None, _) => ", metrics not read".into(),
        };
        let _ = writeln!(
            o,
            "  {:<12} {:<32} {}{}{membership}",
            sp.node,
            sp.pod,
            if sp.ready { "ready" } else { "NOT READY" },
            if sp.node_ready {
                ""
            } else {
                " (node not Ready)"
            }
        );
    }
    if s.bgp_configured || !s.bgp_sessions.is_empty() {
        let _ = writeln!(o, "\nBGP sessions:");
        if s.bgp_sessions.is_empty() {
            let _ = writeln!(
                o,
                "  (none: the speakers do not run with --bgp, or no BGPPeer selects a node)"
            );
        }
        let node_width = s
            .bgp_sessions
            .iter()
            .map(|b| b.node.len())
            .max()
            .unwrap_or(0);
        let peer_width = s
            .bgp_sessions
            .iter()
            .map(|b| b.peer.len())
            .max()
            .unwrap_or(0);
        for b in &s.bgp_sessions {
            let _ = writeln!(
                o,
                "  {:<node_width$} -> {:<peer_width$}  {:<11}  BFD {:<9}  {} prefix(es){}",
                b.node,
                b.peer,
                b.bgp_state,
                b.bfd_state,
                b.prefixes,
                b.last_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("  last error: {e}"))
            );
        }
    }
    let _ = writeln!(o, "\nRecent announcer changes:");
    if s.changes.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for c in &s.changes {
        let _ = writeln!(o, "  {}  {}  {}", c.time, c.service, c.note);
    }
    let _ = writeln!(o, "\nServices without an IP:");
    if s.pending.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for p in &s.pending {
        let _ = writeln!(o, "  {}: {}", p.service, p.why);
    }
    for g in &s.gaps {
        let _ = writeln!(o, "\nnote: could not read {g}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{base_snapshot, speaker, svc};
    use serde_json::json;

    #[test]
    fn membership_from_speaker_metrics() {
        let metrics = "# HELP ferrolb_speaker_peers_alive x\n# TYPE ferrolb_speaker_peers_alive gauge\nferrolb_speaker_peers_alive 1\nferrolb_speaker_peer_down_total{reason=\"timeout\"} 2\nferrolb_speaker_peer_down_total{reason=\"left\"} 1\nferrolb_speaker_peers_alive_other 9\n";
        assert_eq!(metric(metrics, "ferrolb_speaker_peers_alive"), Some(1.0));
        assert_eq!(
            metric(metrics, "ferrolb_speaker_peer_down_total"),
            Some(3.0)
        );
        assert_eq!(metric(metrics, "nothing"), None);
        let mut s = base_snapshot();
        // base_snapshot has speakers on node-1 and node-2.
        s.pods.push(speaker("node-3"));
        s.speaker_metrics
            .insert("speaker-node-1".into(), metrics.into());
        let st = build(&s);
        assert_eq!(st.speakers[0].peers_alive, Some(1));
        assert_eq!(st.speakers[0].peer_downs, Some(3));
        let t = text(&st);
        assert!(t.contains("sees 1 peer(s) alive, 3 peer-down event(s) so far — FEWER than the 2 other ready speakers"), "{t}");
        assert!(
            t.contains("speaker-node-2") && t.contains("metrics not read"),
            "{t}"
        );
    }

    #[test]
    fn ips_announcers_and_pending() {
        let mut s = base_snapshot();
        s.services.push(svc(json!({
            "metadata": {"name": "big", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"conditions": [{"type": "ferrolb.io/IPAllocated", "status": "False", "reason": "PoolExhausted", "message": "pool default exhausted (0 of 50 free)", "lastTransitionTime": "2026-12-07T08:00:00Z"}]}
        })));
        s.events.push(
            serde_json::from_value(json!({
                "metadata": {"name": "e1", "namespace": "default"},
                "eventTime": "2026-12-07T08:01:00.000000Z",
                "reportingController": "ferrolb-speaker", "reportingInstance": "node-2",
                "action": "Announce", "reason": "Announced", "note": "announced by node-2 on eth0",
                "regarding": {"kind": "Service", "namespace": "default", "name": "web"}
            }))
            .expect("event"),
        );
        // The same note again, folded into a series: it counts as its last occurrence.
        s.events.push(
            serde_json::from_value(json!({
                "metadata": {"name": "e0", "namespace": "default"},
                "eventTime": "2026-12-07T07:00:00.000000Z",
                "series": {"count": 2, "lastObservedTime": "2026-12-07T08:05:00.000000Z"},
                "reportingController": "ferrolb-speaker", "reportingInstance": "node-1",
                "action": "Announce", "reason": "Announced", "note": "announced by node-1 on eth0",
                "regarding": {"kind": "Service", "namespace": "default", "name": "web"}
            }))
            .expect("event"),
        );
        let st = build(&s);
        assert_eq!(
            st.changes[0].note, "announced by node-1 on eth0",
            "{:?}",
            st.changes
        );
        s.events.pop();
        let st = build(&s);
        assert_eq!(st.ips.len(), 1);
        assert_eq!(st.ips[0].pool.as_deref(), Some("default"));
        assert_eq!(st.pending[0].service, "shop/big");
        assert!(st.pending[0].why.contains("exhausted"));
        assert_eq!(st.changes.len(), 1);
        let t = text(&st);
        assert!(t.contains("announced by node-2 on eth0"), "{t}");
        assert!(t.contains("shop/big: PoolExhausted"), "{t}");
    }

    #[test]
    fn forwarder_ips_name_their_node() {
        let mut s = base_snapshot();
        s.pools.push(
            serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "nodes"}, "spec": {"nodeAddresses": {}}
            }))
            .expect("pool"),
        );
        s.services.push(svc(json!({
            "metadata": {"name": "edge", "namespace": "shop",
                         "annotations": {"ferrolb.io/ip-allocated-from-pool": "nodes"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.12", "ipMode": "VIP"}]},
                       "conditions": [{"type": "ferrolb.io/ForwarderReady", "status": "True", "reason": "PartiallyAvailable",
                                       "message": "published on node-2 (InternalIP); left out: node-1 (not Ready)",
                                       "lastTransitionTime": "2026-12-07T08:00:00Z"}]}
        })));
        let st = build(&s);
        let edge = st
            .ips
            .iter()
            .find(|i| i.service == "shop/edge")
            .expect("edge");
        assert_eq!(edge.pool.as_deref(), Some("nodes"));
        assert_eq!(edge.node.as_deref(), Some("node-2"));
        let t = text(&st);
        assert!(
            t.contains(
                "node-2's address; published on node-2 (InternalIP); left out: node-1 (not Ready)"
            ),
            "{t}"
        );
    }

    #[test]
    fn bgp_sessions_and_advertisers() {
        let mut s = crate::service::tests::bgp_snapshot();
        if let Some(st) = s.bgp_sessions[1].status.as_mut() {
            st.last_error = Some("received NOTIFICATION 6/2 administrative shutdown".into());
        }
        let st = build(&s);
        assert_eq!(
            st.ips[0].bgp_advertisers.as_deref(),
            Some(&["node-1".to_string(), "node-2".to_string()][..])
        );
        assert_eq!(st.bgp_sessions.len(), 2);
        assert_eq!(st.bgp_sessions[0].bgp_state, "Established");
        let t = text(&st);
        assert!(t.contains("advertised over BGP by node-1, node-2"), "{t}");
        assert!(!t.contains("no announcement condition"), "{t}");
        assert!(t.contains("BGP sessions:"), "{t}");
        assert!(
            t.contains("node-2 -> tor  Established  BFD Up         1 prefix(es)  last error: received NOTIFICATION 6/2 administrative shutdown"),
            "{t}"
        );
        // No session state at all while BGP is configured: said, not left blank.
        s.bgp_sessions.clear();
        let t = text(&build(&s));
        assert!(t.contains("NOT ADVERTISED over BGP"), "{t}");
        assert!(
            t.contains("(none: the speakers do not run with --bgp"),
            "{t}"
        );
        // Without BGP mode, no BGP section.
        let t = text(&build(&base_snapshot()));
        assert!(!t.contains("BGP sessions:"), "{t}");
    }
}
