//! Performs the core's [`Action`]s against the API server: server-side apply for Service status,
//! the pool annotation, pool and L2Advertisement status, and events through the shared recorder
//! ([`ferrolb_runtime::events`]).
//!
//! Runs as its own task fed by a channel, so a slow API server never blocks decisions. A failed write is
//! reported back so the core decides again; nothing is lost. Leadership is checked before every write:
//! a replica that just lost the Lease stops writing even with actions still queued.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrolb_crds::{IPAddressPool, L2Advertisement, annotations};
use ferrolb_runtime::Metrics;
use ferrolb_runtime::events::{Event, EventType, Recorder, Reporter};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::core::{Action, Target};

/// Field manager of every ferrolb controller write.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

/// A write that takes longer is abandoned and reported failed (so it is retried): one hung
/// connection must not hold a writer slot, or the pool status, forever.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A write that failed, for the core to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// A Service's status or annotation.
    Service {
        /// Service namespace.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// A pool's status.
    PoolStatus,
    /// An L2Advertisement's status.
    L2Status,
    /// A BGPPeer's or BGPAdvertisement's status.
    BgpStatus,
}

impl Failed {
    /// What to retry for `action`, or `None` for an Event (informative, not retried).
    fn of(action: &Action) -> Option<Failed> {
        match action {
            Action::ServiceStatus {
                namespace, name, ..
            }
            | Action::ServiceAnnotation {
                namespace, name, ..
            } => Some(Failed::Service {
                namespace: namespace.clone(),
                name: name.clone(),
            }),
            Action::PoolStatus { .. } => Some(Failed::PoolStatus),
            Action::L2Status { .. } => Some(Failed::L2Status),
            Action::BgpPeerStatus { .. } | Action::BgpAdvertisementStatus { .. } => {
                Some(Failed::BgpStatus)
            }
            Action::Event { .. } => None,
        }
    }
}

/// Writes what the core decided.
#[derive(Clone)]
pub struct Writer {
    client: kube::Client,
    recorder: Recorder,
    /// Checked before a write starts.
    leader: Arc<AtomicBool>,
    /// Watched while a write is in flight: losing the lead abandons it.
    leadership: watch::Receiver<bool>,
    metrics: Metrics,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

fn ingress_json(ips: &[IpAddr], ip_mode: &str) -> serde_json::Value {
    json!(
        ips.iter()
            .map(|ip| json!({"ip": ip.to_string(), "ipMode": ip_mode}))
            .collect::<Vec<_>>()
    )
}

impl Writer {
    /// A writer acting as `identity`.
    pub fn new(
        client: kube::Client,
        identity: String,
        leader: Arc<AtomicBool>,
        leadership: watch::Receiver<bool>,
        metrics: Metrics,
    ) -> Writer {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity),
        };
        Writer {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            leader,
            leadership,
            metrics,
        }
    }

    /// Performs actions from `rx` (up to 16 at a time) until the channel closes.
    pub async fn run(
        self,
        rx: mpsc::UnboundedReceiver<Action>,
        failed: mpsc::UnboundedSender<Failed>,
    ) {
        tokio_stream_from(rx)
            .for_each_concurrent(16, |action| {
                let w = self.clone();
                let failed = failed.clone();
                async move {
                    if !w.leader.load(Ordering::Acquire) {
                        return;
                    }
                    let what = kind_of(&action);
                    let retry = Failed::of(&action);
                    let mut leadership = w.leadership.clone();
                    let result = tokio::select! {
                        r = tokio::time::timeout(WRITE_TIMEOUT, w.perform(action)) => match r {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
                        },
                        // A write still waiting when the lead is lost must not land under the next
                        // leader: drop it (the next leader decides afresh from the cluster).
                        _ = leadership.wait_for(|leading| !*leading) => {
                            tracing::debug!(kind = what, "write abandoned: leadership lost");
                            return;
                        }
                    };
                    match result {
                        Ok(()) => w.metrics.inc(
                            "ferrolb_controller_api_writes_total",
                            "API writes by kind",
                            &[("kind", what)],
                            1.0,
                        ),
                        Err(e) => {
                            w.metrics.inc(
                                "ferrolb_controller_api_write_errors_total",
                                "Failed API writes by kind",
                                &[("kind", what)],
                                1.0,
                            );
                            tracing::warn!(kind = what, error = %e, "write failed; will retry");
                            if let Some(f) = retry {
                                let _ = failed.send(f);
                            }
                        }
                    }
                }
            })
            .await;
    }

    async fn perform(&self, action: Action) -> Result<(), kube::Error> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match action {
            Action::ServiceStatus {
                namespace,
                name,
                ingress,
                condition,
                forwarder,
                ip_mode,
            } => {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
                let mut status = json!({});
                if !ingress.is_empty() {
                    status["loadBalancer"] = json!({"ingress": ingress_json(&ingress, ip_mode)});
                }
                let conditions: Vec<_> = condition.into_iter().chain(forwarder).collect();
                if !conditions.is_empty() {
                    status["conditions"] = json!(conditions);
                }
                let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "status": status});
                tracing::debug!(service = %format!("{namespace}/{name}"), ?ingress, "writing status");
                api.patch_status(&name, &pp, &Patch::Apply(body))
                    .await
                    .map(|_| ())
            }
            Action::ServiceAnnotation {
                namespace,
                name,
                pools,
            } => {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
                let mut meta = json!({"name": name});
                if let Some(p) = pools {
                    meta["annotations"] = json!({annotations::ALLOCATED_FROM_POOL: p});
                }
                let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": meta});
                api.patch(&name, &pp, &Patch::Apply(body)).await.map(|_| ())
            }
            Action::PoolStatus { name, status } => {
                self.apply_status::<IPAddressPool>(&name, json!(status), &pp)
                    .await
            }
            Action::L2Status { name, status } => {
                self.apply_status::<L2Advertisement>(&name, json!(status), &pp)
                    .await
            }
            Action::BgpPeerStatus { name, status } => {
                self.apply_status::<ferrolb_crds::bgp::BGPPeer>(&name, json!(status), &pp)
                    .await
            }
            Action::BgpAdvertisementStatus { name, status } => {
                self.apply_status::<ferrolb_crds::bgp::BGPAdvertisement>(&name, json!(status), &pp)
                    .await
            }
            Action::Event {
                target,
                warning,
                reason,
                note,
            } => {
                let reference = match target {
                    Target::Service {
                        namespace,
                        name,
                        uid,
                    } => ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Service".into()),
                        namespace: Some(namespace),
                        name: Some(name),
                        uid,
                        ..Default::default()
                    },
                    Target::Pool { name, uid } => cluster_reference::<IPAddressPool>(name, uid),
                    Target::L2Advertisement { name, uid } => {
                        cluster_reference::<L2Advertisement>(name, uid)
                    }
                };
                let ev = Event {
                    type_: if warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    action: "Allocate".into(),
                    reason,
                    note: Some(note),
                    secondary: None,
                };
                self.recorder.publish(&ev, &reference).await
            }
        }
    }
}

impl Writer {
    /// Server-side apply of the status of the cluster-scoped ferrolb object `name` of kind `K`.
    async fn apply_status<K>(
        &self,
        name: &str,
        status: serde_json::Value,
        pp: &PatchParams,
    ) -> Result<(), kube::Error>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let body = json!({
            "apiVersion": K::api_version(&()), "kind": K::kind(&()),
            "metadata": {"name": name}, "status": status,
        });
        api.patch_status(name, pp, &Patch::Apply(body))
            .await
            .map(|_| ())
    }
}

/// The reference of an event regarding the cluster-scoped ferrolb object `name` of kind `K`.
fn cluster_reference<K: kube::Resource<DynamicType = ()>>(
    name: String,
    uid: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name),
        uid,
        ..Default::default()
    }
}

fn kind_of(a: &Action) -> &'static str {
    match a {
        Action::ServiceStatus { .. } => "service_status",
        Action::ServiceAnnotation { .. } => "service_annotation",
        Action::PoolStatus { .. } => "pool_status",
        Action::L2Status { .. } => "l2advertisement_status",
        Action::BgpPeerStatus { .. } => "bgppeer_status",
        Action::BgpAdvertisementStatus { .. } => "bgpadvertisement_status",
        Action::Event { .. } => "event",
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
