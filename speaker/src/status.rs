//! Performs [`Request`]s: [`StatusWrite`]s, i.e. server-side apply of the `ferrolb.io/Announced`
//! condition on a Service's status (field manager `ferrolb-speaker`, forced, so the new
//! announcer takes the field over from the old one) and one Normal event per change of
//! announcer; [`Removal`]s of the condition from a Service that stopped being ours (the same
//! field manager applies a status without it: `status.conditions` is a list-map keyed by
//! `type`, so the entry only that manager owned is deleted, and nobody else's conditions are
//! touched); and [`NodeEvent`]s, events regarding this speaker's own Node when one of its
//! interfaces becomes unusable or stops being so.
//!
//! Runs as its own task fed by a channel so a slow or absent API server never delays ARP,
//! membership or failover; it is shared by the modes, which each send it what they decided
//! (today the L2 mode's requests, built by [`crate::l2::decide`]). Failed status writes are
//! reported back for [`crate::l2::decide::StatusTracker`] to retry with backoff; a failed Node
//! event is only counted and logged (it is informative, and the condition carries the lasting
//! truth). Decides nothing itself.

use std::time::Duration;

use ferrolb_runtime::Metrics;
use ferrolb_runtime::events::{Event, EventType, Recorder, Reporter, truncate_note};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc;

use crate::l2::decide::{NodeEvent, Removal, StatusWrite};
use crate::metrics as m;
pub use crate::objects::FIELD_MANAGER;
use crate::objects::{ANNOUNCED_CONDITION, SvcKey};
/// A write that takes longer is abandoned and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The Service key is not `namespace/name`.
    #[error("bad Service key {0:?}")]
    BadKey(String),
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What the modes ask of this task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Write a Service's condition (and maybe its event).
    Condition(StatusWrite),
    /// Remove the condition from a Service that is no longer ours (and record one event).
    Remove(Removal),
    /// Record an event regarding this speaker's Node.
    Node {
        /// The event.
        event: NodeEvent,
        /// The Node's UID, when known.
        uid: Option<String>,
    },
}

/// The reference of an event regarding Node `name`. Cluster-scoped: the recorder puts such
/// events in the `default` namespace, where `kubectl describe node` looks for them.
pub fn node_reference(name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid,
        ..Default::default()
    }
}

/// The event for a [`NodeEvent`].
pub fn node_event(e: &NodeEvent) -> Event {
    Event {
        type_: if e.change.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: e.change.as_str().into(),
        note: Some(truncate_note(&e.note)),
        action: "Announce".into(),
        secondary: None,
    }
}

/// The condition body for a write, as server-side apply wants it.
pub fn condition_json(w: &StatusWrite, now: &str) -> serde_json::Value {
    let mut c = json!({
        "type": ANNOUNCED_CONDITION,
        "status": if w.desired.announced { "True" } else { "False" },
        "reason": w.desired.reason.as_str(),
        "message": w.desired.message,
        "lastTransitionTime": now,
    });
    if let Some(g) = w.generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

/// The body that removes the speakers' condition: the Service with a status that names no
/// field, so everything the field manager owned in the status (the condition) is released and,
/// owned by nobody else, deleted.
pub fn removal_json(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "status": {},
    })
}

/// The event that accompanies a removal: its own reason and action, since it says something other
/// than a `Withdrawn` condition write does.
pub fn removal_event(r: &Removal) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "ConditionRemoved".into(),
        note: Some(format!(
            "no longer announced: {}; condition {ANNOUNCED_CONDITION} removed",
            r.why.describe()
        )),
        action: "RemoveCondition".into(),
        secondary: None,
    }
}

/// Performs requests from `rx`, one at a time so two writes for one Service never land out of
/// order, until the channel closes; failed status writes go to `failed`.
pub async fn run(
    client: kube::Client,
    node: String,
    metrics: Metrics,
    rx: mpsc::UnboundedReceiver<Request>,
    failed: mpsc::UnboundedSender<SvcKey>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(node.clone()),
        },
    );
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) });
    stream
        .for_each(|req| {
            let client = client.clone();
            let recorder = recorder.clone();
            let metrics = metrics.clone();
            let failed = failed.clone();
            let node = node.clone();
            async move {
                let (svc, what, done) = match req {
                    Request::Condition(w) => {
                        let svc = w.service.clone();
                        let r = tokio::time::timeout(WRITE_TIMEOUT, write(&client, &recorder, &metrics, &w)).await;
                        (svc, r, w.desired.message)
                    }
                    Request::Remove(r) => {
                        let svc = r.service.clone();
                        let res = tokio::time::timeout(WRITE_TIMEOUT, remove(&client, &recorder, &metrics, &r)).await;
                        (svc, res, format!("removed: {}", r.why.describe()))
                    }
                    Request::Node { event, uid } => {
                        record_node_event(&recorder, &metrics, &node, event, uid).await;
                        return;
                    }
                };
                match what {
                    Ok(Ok(())) => {
                        tracing::info!(service = %svc, message = %done, "condition written");
                    }
                    Ok(Err(e)) => {
                        metrics.inc(m::API_ERRORS, m::API_ERRORS_HELP, &[("kind", "status")], 1.0);
                        tracing::warn!(service = %svc, error = %e, "status write failed; will retry");
                        let _ = failed.send(svc);
                    }
                    Err(_) => {
                        metrics.inc(m::API_ERRORS, m::API_ERRORS_HELP, &[("kind", "status")], 1.0);
                        tracing::warn!(service = %svc, error = %StatusError::Timeout(WRITE_TIMEOUT), "status write failed; will retry");
                        let _ = failed.send(svc);
                    }
                }
            }
        })
        .await;
}

/// Records one event regarding this Node; failures are counted and logged, not retried.
async fn record_node_event(
    recorder: &Recorder,
    metrics: &Metrics,
    node: &str,
    event: NodeEvent,
    uid: Option<String>,
) {
    metrics.inc(
        m::API_REQUESTS,
        m::API_REQUESTS_HELP,
        &[("kind", "event")],
        1.0,
    );
    let ev = node_event(&event);
    let reference = node_reference(node, uid);
    match tokio::time::timeout(WRITE_TIMEOUT, recorder.publish(&ev, &reference)).await {
        Ok(Ok(())) => {
            tracing::info!(reason = event.change.as_str(), interface = %event.interface, "node event recorded");
        }
        Ok(Err(e)) => {
            metrics.inc(m::API_ERRORS, m::API_ERRORS_HELP, &[("kind", "event")], 1.0);
            tracing::warn!(reason = event.change.as_str(), error = %e, "node event not recorded");
        }
        Err(_) => {
            metrics.inc(m::API_ERRORS, m::API_ERRORS_HELP, &[("kind", "event")], 1.0);
            tracing::warn!(reason = event.change.as_str(), error = %StatusError::Timeout(WRITE_TIMEOUT), "node event not recorded");
        }
    }
}

/// `namespace` and `name` of a Service key.
fn split_key(key: &str) -> Result<(&str, &str), StatusError> {
    key.split_once('/')
        .ok_or_else(|| StatusError::BadKey(key.to_string()))
}

/// The reference of an event regarding Service `ns/name`.
fn service_reference(ns: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid,
        ..Default::default()
    }
}

/// Publishes an event that accompanies a status write, counting it. Events are informative: a
/// failure is counted and logged, and does not make the write fail.
async fn record_service_event(
    recorder: &Recorder,
    metrics: &Metrics,
    ev: &Event,
    reference: &ObjectReference,
) {
    metrics.inc(
        m::API_REQUESTS,
        m::API_REQUESTS_HELP,
        &[("kind", "event")],
        1.0,
    );
    if let Err(e) = recorder.publish(ev, reference).await {
        metrics.inc(m::API_ERRORS, m::API_ERRORS_HELP, &[("kind", "event")], 1.0);
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// Removes the condition (see [`removal_json`]) and records one event.
async fn remove(
    client: &kube::Client,
    recorder: &Recorder,
    metrics: &Metrics,
    r: &Removal,
) -> Result<(), StatusError> {
    let (ns, name) = split_key(&r.service)?;
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    metrics.inc(
        m::API_REQUESTS,
        m::API_REQUESTS_HELP,
        &[("kind", "status")],
        1.0,
    );
    // Not forced: applying no field cannot conflict with anyone.
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(removal_json(ns, name)),
    )
    .await?;
    let reference = service_reference(ns, name, r.uid.clone());
    record_service_event(recorder, metrics, &removal_event(r), &reference).await;
    Ok(())
}

async fn write(
    client: &kube::Client,
    recorder: &Recorder,
    metrics: &Metrics,
    w: &StatusWrite,
) -> Result<(), StatusError> {
    let (ns, name) = split_key(&w.service)?;
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let body = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "status": {"conditions": [condition_json(w, &now)]},
    });
    metrics.inc(
        m::API_REQUESTS,
        m::API_REQUESTS_HELP,
        &[("kind", "status")],
        1.0,
    );
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    if w.event {
        let reference = service_reference(ns, name, w.uid.clone());
        let ev = Event {
            type_: EventType::Normal,
            reason: if w.desired.announced {
                "Announced".into()
            } else {
                "Withdrawn".into()
            },
            note: Some(w.desired.message.clone()),
            action: "Announce".into(),
            secondary: None,
        };
        record_service_event(recorder, metrics, &ev, &reference).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::decide::{Desired, InterfaceChange, Reason};
    use crate::plan::WantedInterface;

    #[test]
    fn condition_has_every_required_field() {
        let w = StatusWrite {
            service: "ns/web".into(),
            desired: Desired {
                announced: true,
                reason: Reason::Announced,
                message: "announced by node-2 on eth0".into(),
            },
            uid: None,
            generation: Some(3),
            event: true,
        };
        let c = condition_json(&w, "2026-01-01T00:00:00Z");
        assert_eq!(c["type"], ANNOUNCED_CONDITION);
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "Announced");
        assert_eq!(c["message"], "announced by node-2 on eth0");
        assert_eq!(c["observedGeneration"], 3);
        assert_eq!(c["lastTransitionTime"], "2026-01-01T00:00:00Z");
        let w = StatusWrite {
            desired: Desired {
                announced: false,
                reason: Reason::NoUsableInterface,
                message: "not announced: no usable interface on node-1".into(),
            },
            ..w
        };
        let c = condition_json(&w, "2026-01-01T00:00:00Z");
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("NoUsableInterface"))
        );
    }

    #[test]
    fn a_removal_names_no_status_field_and_says_why() {
        let body = removal_json("ns", "web");
        assert_eq!(body["metadata"]["name"], "web");
        assert_eq!(body["metadata"]["namespace"], "ns");
        assert_eq!(body["status"], json!({}));
        let ev = removal_event(&Removal {
            service: "ns/web".into(),
            why: crate::plan::Unplanned::NotLoadBalancer,
            uid: None,
        });
        assert_eq!(
            (ev.type_, ev.reason.as_str(), ev.action.as_str()),
            (EventType::Normal, "ConditionRemoved", "RemoveCondition")
        );
        assert_eq!(
            ev.note.as_deref(),
            Some(
                "no longer announced: the Service is no longer of type LoadBalancer; condition ferrolb.io/Announced removed"
            )
        );
    }

    /// The longest note the API server accepts.
    const MAX_NOTE: usize = ferrolb_runtime::events::NOTE_MAX;

    #[test]
    fn node_events_regard_the_node_and_say_what_changed() {
        let e = NodeEvent {
            change: InterfaceChange::Unusable,
            interface: WantedInterface::Named("eth9".into()),
            note: "x".repeat(5000),
        };
        let ev = node_event(&e);
        assert_eq!(ev.type_, EventType::Warning);
        assert_eq!(ev.reason, "InterfaceUnusable");
        assert_eq!(ev.note.map(|n| n.len()), Some(MAX_NOTE));
        let back = node_event(&NodeEvent {
            change: InterfaceChange::Usable,
            ..e
        });
        assert_eq!(
            (back.type_, back.reason.as_str()),
            (EventType::Normal, "InterfaceUsable")
        );
        let r = node_reference("node-1", Some("u-1".into()));
        assert_eq!(
            (
                r.kind.as_deref(),
                r.name.as_deref(),
                r.uid.as_deref(),
                r.namespace
            ),
            (Some("Node"), Some("node-1"), Some("u-1"), None)
        );
    }
}
