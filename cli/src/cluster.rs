//! The plugin's only contact with the API server: fills a [`Snapshot`], reads MetalLB's objects
//! and Nodes for `migrate`, and applies converted objects (server-side apply, only when the user
//! asked with `--apply`). What cannot be read (a CRD not installed, a permission missing) is
//! recorded in [`Snapshot::gaps`] instead of failing the whole command. Decides nothing.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::snapshot::Snapshot;

/// The field manager of the plugin's writes.
pub const FIELD_MANAGER: &str = "kubectl-ferrolb";
/// Events listed for `status` at most.
const EVENT_LIMIT: u32 = 500;
/// How long one speaker's metrics may take through the pod proxy.
const METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot reach the cluster: {0}")]
    Connect(#[source] kube::Error),
    /// A request the command cannot do without failed.
    #[error("{what}: {source}")]
    Request {
        /// What was asked.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An object to apply has no kind or name.
    #[error("object without apiVersion, kind or name: {0}")]
    BadObject(String),
}

/// A client from the usual kubeconfig (KUBECONFIG, ~/.kube/config) or the pod's service account.
pub async fn client() -> Result<Client, ClusterError> {
    Client::try_default().await.map_err(ClusterError::Connect)
}

/// Lists `K` with `lp`, recording a gap (and returning nothing) on failure.
async fn list_or_gap<K>(api: Api<K>, lp: &ListParams, what: &str, gaps: &mut Vec<String>) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(lp).await {
        Ok(l) => l.items,
        Err(e) => {
            gaps.push(format!("{what} ({})", short(&e)));
            Vec::new()
        }
    }
}

/// Lists one of BGP mode's kinds. Failing, records why in `unread` and, unless the kind is
/// simply not installed, in `gaps`; returns nothing and lets the rest go on.
async fn list_bgp<K>(
    api: Api<K>,
    what: &str,
    unread: &mut Option<String>,
    gaps: &mut Vec<String>,
) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            let why = short(&e);
            if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                gaps.push(format!("{what} ({why})"));
            }
            *unread = Some(why);
            Vec::new()
        }
    }
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => "not installed".into(),
        kube::Error::Api(s) if s.code == 403 => format!("forbidden: {}", s.message),
        other => other.to_string(),
    }
}

/// Which Services a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (doctor, status).
    All,
    /// One Service (trace): only its EndpointSlices are read.
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

/// Reads the snapshot the checks need.
pub async fn snapshot(client: &Client, scope: &Scope) -> Result<Snapshot, ClusterError> {
    let mut s = Snapshot::default();
    let gaps = &mut s.gaps;
    let all = ListParams::default();
    match scope {
        Scope::All => {
            s.services = Api::<Service>::all(client.clone())
                .list(&all)
                .await
                .map_err(|source| ClusterError::Request {
                    what: "listing Services".into(),
                    source,
                })?
                .items;
            s.slices = list_or_gap(
                Api::<EndpointSlice>::all(client.clone()),
                &all,
                "EndpointSlices",
                gaps,
            )
            .await;
        }
        Scope::Service { namespace, name } => {
            let svc = Api::<Service>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(|source| ClusterError::Request {
                    what: format!("reading Service {namespace}/{name}"),
                    source,
                })?;
            s.services = vec![svc];
            s.slices = list_or_gap(
                Api::<EndpointSlice>::namespaced(client.clone(), namespace),
                &ListParams::default().labels(&format!("kubernetes.io/service-name={name}")),
                "EndpointSlices",
                gaps,
            )
            .await;
        }
    }
    s.nodes = list_or_gap(Api::<Node>::all(client.clone()), &all, "Nodes", gaps).await;
    s.pools = list_or_gap(
        Api::<ferrolb_crds::IPAddressPool>::all(client.clone()),
        &all,
        "ferrolb IPAddressPools",
        gaps,
    )
    .await;
    s.l2advs = list_or_gap(
        Api::<ferrolb_crds::L2Advertisement>::all(client.clone()),
        &all,
        "ferrolb L2Advertisements",
        gaps,
    )
    .await;
    // BGP mode's kinds came later than the rest and are optional: a cluster without them has
    // no BGP advertisement, which is recorded (trace says so where it matters) but is not a gap
    // in what the checks know; one the user may not read is a gap.
    let unread = &mut s.bgp_unread;
    s.bgp_advs = list_bgp(
        Api::<ferrolb_crds::bgp::BGPAdvertisement>::all(client.clone()),
        "ferrolb BGPAdvertisements",
        &mut unread.advertisements,
        gaps,
    )
    .await;
    s.bgp_peers = list_bgp(
        Api::<ferrolb_crds::bgp::BGPPeer>::all(client.clone()),
        "ferrolb BGPPeers",
        &mut unread.peers,
        gaps,
    )
    .await;
    s.bgp_sessions = list_bgp(
        Api::<ferrolb_crds::bgp::BGPSessionState>::all(client.clone()),
        "ferrolb BGPSessionStates",
        &mut unread.sessions,
        gaps,
    )
    .await;
    // What only doctor and status read; trace needs none of it (and no permission for it).
    let whole = *scope == Scope::All;
    if whole {
        s.service_cidrs = list_or_gap(
            Api::<ServiceCIDR>::all(client.clone()),
            &all,
            "ServiceCIDRs",
            gaps,
        )
        .await;
        s.kube_proxy_config = match Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get_opt("kube-proxy")
            .await
        {
            Ok(c) => c,
            Err(e) => {
                gaps.push(format!("ConfigMap kube-system/kube-proxy ({})", short(&e)));
                None
            }
        };
        s.daemonsets = list_or_gap(
            Api::<DaemonSet>::all(client.clone()),
            &all,
            "DaemonSets",
            gaps,
        )
        .await;
        s.deployments = list_or_gap(
            Api::<Deployment>::all(client.clone()),
            &all,
            "Deployments",
            gaps,
        )
        .await;
    }
    for sel in [
        "app.kubernetes.io/part-of=ferrolb,app.kubernetes.io/component=speaker",
        "svccontroller.k3s.cattle.io/svcname",
    ] {
        let pods = list_or_gap(
            Api::<Pod>::all(client.clone()),
            &ListParams::default().labels(sel),
            "Pods",
            gaps,
        )
        .await;
        s.pods.extend(pods);
    }
    let gaps = &mut s.gaps;
    if whole {
        s.events = list_or_gap(
            Api::<Event>::all(client.clone()),
            &ListParams::default().limit(EVENT_LIMIT),
            "Events",
            gaps,
        )
        .await;
        s.events.retain(|e| {
            e.reporting_controller
                .as_deref()
                .is_some_and(|c| c.starts_with("ferrolb"))
        });
    }
    Ok(s)
}

/// Reads each speaker pod's metrics through the API server's pod proxy into
/// [`Snapshot::speaker_metrics`] (`status` shows membership from them; it needs `get` on
/// `pods/proxy`). A speaker that does not answer is recorded in [`Snapshot::gaps`]. Only
/// `status` calls this: `doctor` and `trace` must not depend on a pod answering.
pub async fn speaker_metrics(client: &Client, s: &mut Snapshot) {
    let targets: Vec<(String, String, i32)> = crate::snapshot::speaker_pods(s)
        .into_iter()
        .filter_map(|p| {
            let port = p
                .spec
                .iter()
                .flat_map(|sp| sp.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some("metrics"))
                .map(|cp| cp.container_port)?;
            Some((
                p.metadata.namespace.clone()?,
                p.metadata.name.clone()?,
                port,
            ))
        })
        .collect();
    for (ns, name, port) in targets {
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/metrics");
        let req = match http::Request::get(&path).body(Vec::new()) {
            Ok(r) => r,
            Err(_) => continue,
        };
        match tokio::time::timeout(METRICS_TIMEOUT, client.request_text(req)).await {
            Ok(Ok(text)) => {
                s.speaker_metrics.insert(name, text);
            }
            Ok(Err(e)) => s
                .gaps
                .push(format!("metrics of speaker {name} ({})", short(&e))),
            Err(_) => s.gaps.push(format!(
                "metrics of speaker {name} (no answer within {METRICS_TIMEOUT:?})"
            )),
        }
    }
}

/// MetalLB's CRs and legacy ConfigMap in `ns`, as JSON, and what could not be read.
pub async fn metallb_objects(client: &Client, ns: &str) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut gaps = Vec::new();
    for (version, kinds) in [
        (
            "v1beta1",
            &[
                "IPAddressPool",
                "L2Advertisement",
                "BGPAdvertisement",
                "Community",
                "BFDProfile",
            ][..],
        ),
        ("v1beta2", &["BGPPeer"][..]),
    ] {
        for kind in kinds {
            let gvk = GroupVersionKind::gvk("metallb.io", version, kind);
            let ar = ApiResource::from_gvk(&gvk);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            match api.list(&ListParams::default()).await {
                Ok(l) => {
                    for mut o in l.items {
                        o.types = Some(kube::api::TypeMeta {
                            api_version: format!("metallb.io/{version}"),
                            kind: (*kind).to_string(),
                        });
                        o.metadata.managed_fields = None;
                        if let Ok(v) = serde_json::to_value(&o) {
                            out.push(v);
                        }
                    }
                }
                Err(e) => gaps.push(format!("metallb.io/{version} {kind} ({})", short(&e))),
            }
        }
    }
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("config")
        .await
    {
        Ok(Some(mut cm)) => {
            cm.metadata.managed_fields = None;
            if let Ok(mut v) = serde_json::to_value(&cm) {
                v["apiVersion"] = "v1".into();
                v["kind"] = "ConfigMap".into();
                out.push(v);
            }
        }
        Ok(None) => {}
        Err(e) => gaps.push(format!("ConfigMap {ns}/config ({})", short(&e))),
    }
    (out, gaps)
}

/// Every Node.
pub async fn nodes(client: &Client) -> Result<Vec<Node>, ClusterError> {
    Ok(Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| ClusterError::Request {
            what: "listing Nodes".into(),
            source,
        })?
        .items)
}

/// Server-side applies cluster-scoped objects; returns one line per object (applied, or why
/// not). Continues past failures so one missing CRD does not stop the rest.
pub async fn apply(client: &Client, objs: &[Value]) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    for o in objs {
        let (Some(api_version), Some(kind), Some(name)) = (
            o.get("apiVersion").and_then(Value::as_str),
            o.get("kind").and_then(Value::as_str),
            o.pointer("/metadata/name").and_then(Value::as_str),
        ) else {
            out.push(Err(ClusterError::BadObject(o.to_string()).to_string()));
            continue;
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let pp = PatchParams::apply(FIELD_MANAGER);
        match api.patch(name, &pp, &Patch::Apply(o)).await {
            Ok(_) => out.push(Ok(format!("{kind} {name} applied"))),
            Err(e) => out.push(Err(format!("{kind} {name} not applied: {}", short(&e)))),
        }
    }
    out
}
