//! `status`: what ferrolb is doing, read from what its components already publish: pool usage
//! and conditions, the node announcing each Service IP (the `ferrolb.io/Announced` condition),
//! the speakers per node, the latest announcer changes (the speakers' events), and Services
//! without an IP with the controller's reason. Pure over a [`Snapshot`].

use std::fmt::Write as _;

use serde::Serialize;

use crate::snapshot::{
    ANNOUNCED, Snapshot, ingress_ips, is_ours, key, name_of, node_ready, pod_node_ready, pool_of,
    service_condition, speaker_pods,
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
    /// Its pool.
    pub pool: Option<String>,
    /// The `Announced` condition: status and message.
    pub announced: Option<(String, String)>,
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
        let ann = service_condition(s, ANNOUNCED).map(|c| (c.status.clone(), c.message.clone()));
        for ip in list {
            ips.push(IpLine {
                service: key(s),
                ip: ip.to_string(),
                pool: pool_of(&snap.pools, ip).map(name_of),
                announced: ann.clone(),
            });
        }
    }
    let speakers = speaker_pods(snap)
        .into_iter()
        .map(|p| {
            let (node, ready) = pod_node_ready(p);
            let node = node.unwrap_or_default();
            SpeakerLine {
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
                time: e
                    .event_time
                    .as_ref()
                    .map(|t| t.0.to_string())
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
    Status {
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
    for p in &s.pools {
        let _ = writeln!(
            o,
            "  {}  {}  assigned {}  available {}",
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
        let ann = match &i.announced {
            Some((st, m)) if st == "True" => m.clone(),
            Some((_, m)) => format!("NOT ANNOUNCED: {m}"),
            None => "no announcement condition".into(),
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
    for sp in &s.speakers {
        let _ = writeln!(
            o,
            "  {:<12} {:<32} {}{}",
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
    let _ = writeln!(
        o,
        "  (which peers each speaker sees alive or suspects is in its metrics: ferrolb_speaker_peers_alive, ferrolb_speaker_peer_down_total)"
    );
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
    use crate::service::tests::{base_snapshot, svc};
    use serde_json::json;

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
}
