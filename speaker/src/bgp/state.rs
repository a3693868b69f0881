//! `BGPSessionState`: what each (node, peer) session shows to `kubectl get bgpsessionstates`.
//!
//! Owns the object's name and the status built from a session's [`Report`] (pure:
//! [`status_of`], [`object_name`]) and the writer task ([`run`]): server-side apply, at most
//! one write per object per [`MIN_INTERVAL`] (later changes coalesce into the next write), a
//! retry after a failure, deletion of this node's objects for peers it no longer has. Each
//! object is owned by its BGPPeer (an owner reference), so deleting the peer removes it.
//! Nothing here decides about sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use ferrolb_crds::bgp::{
    BGPSessionState, BGPSessionStateStatus, NODE_LABEL, NegotiatedCapabilities, PEER_LABEL,
};
use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::bfd::BfdState;
use ferrolb_speaker_core::bgp::Family;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc;

use super::metrics as m;
use super::session::Report;
use crate::objects::FIELD_MANAGER;

/// Fewest time between two writes of one object.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Wait after a failed write before the next try.
pub const RETRY: Duration = Duration::from_secs(2);
/// Prefixes listed in `status.advertised`.
pub const LISTED: usize = 64;

/// The object's name: `<node>-<peer>`, shortened with a hash when it would pass the 253
/// characters a name may have.
pub fn object_name(node: &str, peer: &str) -> String {
    let name = format!("{node}-{peer}");
    if name.len() <= 253 {
        return name;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut short: String = name.chars().take(236).collect();
    while short.ends_with(['-', '.']) {
        short.pop();
    }
    format!("{short}-{h:016x}")
}

fn time(t: SystemTime) -> Option<Time> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let ts = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(d.as_secs()).ok()?).ok()?;
    Some(Time(ts))
}

fn family_words(f: Family) -> &'static str {
    match f {
        Family::Ipv4Unicast => "IPv4 unicast",
        Family::Ipv6Unicast => "IPv6 unicast",
    }
}

/// What a session's object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInputs<'a> {
    /// This node.
    pub node: &'a str,
    /// The BGPPeer.
    pub peer: &'a str,
    /// Its address.
    pub address: Option<SocketAddr>,
    /// The session's last report (`None` for a peer that gets no session).
    pub report: Option<&'a Report>,
    /// BFD state, `None` without BFD.
    pub bfd: Option<BfdState>,
    /// Why there is no session, in words.
    pub not_started: Option<String>,
    /// Things the session runs without (a missing BFDProfile).
    pub warnings: &'a [String],
    /// Prefixes of a family the session does not carry.
    pub not_carried: &'a [String],
}

/// The status for one session.
pub fn status_of(i: &StateInputs<'_>) -> BGPSessionStateStatus {
    let mut st = BGPSessionStateStatus {
        node: i.node.to_string(),
        peer: i.peer.to_string(),
        peer_address: i.address.map(|a| a.to_string()),
        bgp_state: "Idle".into(),
        bfd_state: i
            .bfd
            .map(|b| b.as_str().to_string())
            .unwrap_or_else(|| "N/A".into()),
        ..Default::default()
    };
    if let Some(r) = i.report {
        st.bgp_state = r.state.map(|s| s.as_str()).unwrap_or("Idle").to_string();
        st.local_address = r.local.map(|a| a.to_string());
        st.established_time = r.established.and_then(time);
        st.negotiated = r.negotiated.as_ref().map(|n| NegotiatedCapabilities {
            peer_asn: i64::from(n.peer_as),
            peer_router_id: n.peer_id.to_string(),
            hold_time_seconds: i64::from(n.hold_time),
            keepalive_seconds: i64::from(n.keepalive),
            four_octet_asn: n.encoding.four_octet_as,
            graceful_restart: n.graceful_restart,
            route_refresh: n.route_refresh,
            families: n.families.iter().map(|f| family_words(*f).into()).collect(),
        });
        st.prefixes_advertised = i64::try_from(r.advertised.len()).unwrap_or(i64::MAX);
        st.advertised = r
            .advertised
            .iter()
            .take(LISTED)
            .map(|p| format!("{}/{}", p.addr(), p.len()))
            .collect();
        st.not_advertised = r
            .unannounced
            .iter()
            .take(LISTED)
            .map(|(p, why)| format!("{}/{}: {}", p.addr(), p.len(), why.as_str()))
            .collect();
        if let Some((e, at)) = &r.last_error {
            st.last_error = Some(e.clone());
            st.last_error_time = time(*at);
        }
        st.flaps = i64::try_from(r.flaps).unwrap_or(i64::MAX);
    }
    for p in i.not_carried.iter().take(LISTED) {
        st.not_advertised.push(format!(
            "{p}: family not carried on this session (set dualStackAddressFamily)"
        ));
    }
    if let Some(why) = &i.not_started {
        st.last_error = Some(why.clone());
    } else if st.last_error.is_none() && !i.warnings.is_empty() {
        st.last_error = Some(i.warnings.join("; "));
    }
    st
}

/// What the manager asks of the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// This session's status (`peer_uid` for the owner reference).
    Put {
        /// The BGPPeer.
        peer: String,
        /// Its UID.
        peer_uid: Option<String>,
        /// The status.
        status: Box<BGPSessionStateStatus>,
    },
    /// This node has no session with `peer` any more.
    Delete {
        /// The BGPPeer.
        peer: String,
    },
    /// Every peer this node has now: objects of this node for other peers are deleted (sent
    /// once the first decision is made, for objects left from before a restart).
    Retain(BTreeSet<String>),
}

struct Slot {
    uid: Option<String>,
    want: Option<BGPSessionStateStatus>,
    written: Option<BGPSessionStateStatus>,
    meta_written: bool,
    next_at: Instant,
}

/// Runs the writer until `rx` closes.
pub async fn run(
    client: kube::Client,
    node: String,
    mut rx: mpsc::UnboundedReceiver<Update>,
    metrics: Metrics,
) {
    let api: Api<BGPSessionState> = Api::all(client);
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    let mut deletes: BTreeSet<String> = BTreeSet::new();
    let mut retain: Option<BTreeSet<String>> = None;
    loop {
        // Deletions first, then the writes that are due.
        for peer in std::mem::take(&mut deletes) {
            let name = object_name(&node, &peer);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(object = %name, error = %e, "cannot delete BGPSessionState")
                }
            }
        }
        if let Some(keep) = retain.take() {
            let lp = ListParams::default().labels(&format!("{NODE_LABEL}={node}"));
            match api.list_metadata(&lp).await {
                Ok(list) => {
                    for o in list.items {
                        let peer = o
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(PEER_LABEL))
                            .cloned()
                            .unwrap_or_default();
                        if keep.contains(&peer) {
                            continue;
                        }
                        if let Some(name) = o.metadata.name.as_deref() {
                            let _ = api.delete(name, &DeleteParams::default()).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list this node's BGPSessionStates"),
            }
        }
        let now = Instant::now();
        for (peer, s) in slots.iter_mut() {
            let Some(want) = s.want.clone() else { continue };
            if s.written.as_ref() == Some(&want) || s.next_at > now {
                continue;
            }
            let name = object_name(&node, peer);
            let result = write(&api, &name, &node, peer, s, &want).await;
            metrics.inc(
                m::STATE_WRITES,
                m::STATE_WRITES_HELP,
                &[("result", if result.is_ok() { "ok" } else { "error" })],
                1.0,
            );
            match result {
                Ok(()) => {
                    s.written = Some(want);
                    s.next_at = now + MIN_INTERVAL;
                }
                Err(e) => {
                    tracing::warn!(object = %name, error = %e, "cannot write BGPSessionState; retrying");
                    s.meta_written = false;
                    s.next_at = now + RETRY;
                }
            }
        }
        let due = slots
            .values()
            .filter(|s| s.want.is_some() && s.want != s.written)
            .map(|s| s.next_at)
            .min();
        let sleep = async {
            match due {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            u = rx.recv() => match u {
                Some(Update::Put { peer, peer_uid, status }) => {
                    deletes.remove(&peer);
                    let s = slots.entry(peer).or_insert(Slot {
                        uid: None,
                        want: None,
                        written: None,
                        meta_written: false,
                        next_at: Instant::now(),
                    });
                    if s.uid != peer_uid {
                        s.uid = peer_uid;
                        s.meta_written = false;
                    }
                    s.want = Some(*status);
                }
                Some(Update::Delete { peer }) => {
                    if slots.remove(&peer).is_some() {
                        deletes.insert(peer);
                    }
                }
                Some(Update::Retain(keep)) => retain = Some(keep),
                None => return,
            },
            _ = sleep => {}
        }
    }
}

async fn write(
    api: &Api<BGPSessionState>,
    name: &str,
    node: &str,
    peer: &str,
    s: &mut Slot,
    status: &BGPSessionStateStatus,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if !s.meta_written {
        let mut meta = json!({
            "name": name,
            "labels": {NODE_LABEL: node, PEER_LABEL: peer},
        });
        if let Some(uid) = &s.uid {
            meta["ownerReferences"] = json!([{
                "apiVersion": "ferrolb.io/v1beta1",
                "kind": "BGPPeer",
                "name": peer,
                "uid": uid,
            }]);
        }
        let body = json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "BGPSessionState",
            "metadata": meta,
            "spec": {},
        });
        api.patch(name, &pp, &Patch::Apply(&body)).await?;
        s.meta_written = true;
    }
    let body = json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "BGPSessionState",
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(name, &pp, &Patch::Apply(&body)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_speaker_core::bgp::{Encoding, Negotiated, Prefix, State};

    #[test]
    fn names_fit() {
        assert_eq!(object_name("node-1", "tor"), "node-1-tor");
        let long = object_name(&"n".repeat(200), &"p".repeat(200));
        assert!(long.len() <= 253, "{}", long.len());
        assert_ne!(long, object_name(&"n".repeat(200), &"q".repeat(200)));
    }

    #[test]
    fn status_says_what_the_session_does() {
        let report = Report {
            state: Some(State::Established),
            local: Some("198.51.100.11:40000".parse().expect("addr")),
            established: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            negotiated: Some(Negotiated {
                peer_as: 64513,
                peer_id: "198.51.100.1".parse().expect("ip"),
                hold_time: 9,
                keepalive: 3,
                encoding: Encoding {
                    four_octet_as: true,
                },
                families: vec![Family::Ipv4Unicast],
                route_refresh: true,
                graceful_restart: true,
                peer_restart_time: Some(120),
                internal: false,
            }),
            advertised: vec![Prefix::host("203.0.113.10".parse().expect("ip"))],
            last_error: Some(("received NOTIFICATION 6/2".into(), SystemTime::UNIX_EPOCH)),
            flaps: 2,
            ..Default::default()
        };
        let st = status_of(&StateInputs {
            node: "node-1",
            peer: "tor",
            address: Some("198.51.100.1:179".parse().expect("addr")),
            report: Some(&report),
            bfd: Some(BfdState::Up),
            not_started: None,
            warnings: &[],
            not_carried: &["2001:db8:100::10/128".to_string()],
        });
        assert_eq!(st.bgp_state, "Established");
        assert_eq!(st.bfd_state, "Up");
        assert_eq!(st.prefixes_advertised, 1);
        assert_eq!(st.advertised, ["203.0.113.10/32"]);
        let n = st.negotiated.expect("negotiated");
        assert!(n.graceful_restart && n.four_octet_asn);
        assert_eq!(n.families, ["IPv4 unicast"]);
        assert_eq!(st.flaps, 2);
        assert!(st.established_time.is_some());
        assert!(st.not_advertised[0].contains("dualStackAddressFamily"));

        let idle = status_of(&StateInputs {
            node: "node-1",
            peer: "vrf-peer",
            address: None,
            report: None,
            bfd: None,
            not_started: Some("not started: vrf is not implemented".into()),
            warnings: &[],
            not_carried: &[],
        });
        assert_eq!(
            (idle.bgp_state.as_str(), idle.bfd_state.as_str()),
            ("Idle", "N/A")
        );
        assert!(idle.last_error.expect("why").contains("vrf"));
    }
}
