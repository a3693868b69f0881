//! Performs [`StatusWrite`]s: server-side apply of the `ferrolb.io/Announced` condition on a
//! Service's status (field manager `ferrolb-speaker`, forced, so the new announcer takes the
//! field over from the old one) and one Normal event per change of announcer.
//!
//! Runs as its own task fed by a channel so a slow or absent API server never delays ARP,
//! membership or failover. Failed writes are reported back for [`crate::decide::StatusTracker`]
//! to retry with backoff. Decides nothing itself.

use std::time::Duration;

use ferrolb_crds::runtime::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::mpsc;

use crate::decide::StatusWrite;
use crate::metrics as m;
use crate::objects::{ANNOUNCED_CONDITION, SvcKey};

/// Field manager of every speaker write.
pub const FIELD_MANAGER: &str = "ferrolb-speaker";
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

/// The condition body for a write, as server-side apply wants it.
pub fn condition_json(w: &StatusWrite, now: &str) -> serde_json::Value {
    let mut c = json!({
        "type": ANNOUNCED_CONDITION,
        "status": if w.desired.announced { "True" } else { "False" },
        "reason": w.desired.reason,
        "message": w.desired.message,
        "lastTransitionTime": now,
    });
    if let Some(g) = w.generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

/// Writes status from `rx`, one at a time so two writes for one Service never land out of
/// order, until the channel closes; failures go to `failed`.
pub async fn run(
    client: kube::Client,
    node: String,
    metrics: Metrics,
    rx: mpsc::UnboundedReceiver<StatusWrite>,
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
        .for_each(|w| {
            let client = client.clone();
            let recorder = recorder.clone();
            let metrics = metrics.clone();
            let failed = failed.clone();
            async move {
                let svc = w.service.clone();
                match tokio::time::timeout(WRITE_TIMEOUT, write(&client, &recorder, &metrics, &w)).await {
                    Ok(Ok(())) => {
                        tracing::info!(service = %svc, message = %w.desired.message, "condition written");
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

async fn write(
    client: &kube::Client,
    recorder: &Recorder,
    metrics: &Metrics,
    w: &StatusWrite,
) -> Result<(), StatusError> {
    let (ns, name) = w
        .service
        .split_once('/')
        .ok_or_else(|| StatusError::BadKey(w.service.clone()))?;
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
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: w.uid.clone(),
            ..Default::default()
        };
        let ev = Event {
            type_: EventType::Normal,
            reason: if w.desired.announced {
                "Announced".into()
            } else {
                "Withdrawn".into()
            },
            note: Some(w.desired.message.chars().take(1000).collect()),
            action: "Announce".into(),
            secondary: None,
        };
        metrics.inc(
            m::API_REQUESTS,
            m::API_REQUESTS_HELP,
            &[("kind", "event")],
            1.0,
        );
        // An event is informative; its failure does not make the status write fail.
        if let Err(e) = recorder.publish(&ev, &reference).await {
            metrics.inc(m::API_ERRORS, m::API_ERRORS_HELP, &[("kind", "event")], 1.0);
            tracing::debug!(error = %e, "event not recorded");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Desired;

    #[test]
    fn condition_has_every_required_field() {
        let w = StatusWrite {
            service: "ns/web".into(),
            desired: Desired {
                announced: true,
                reason: "Announced".into(),
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
    }
}
