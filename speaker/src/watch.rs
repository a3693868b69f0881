//! Keeps the [`Snapshot`] current from watches on Services, EndpointSlices, Nodes,
//! IPAddressPools and L2Advertisements, and publishes the resulting plan and peer list.
//!
//! Owns the watches and the projected objects; the decisions are [`crate::plan`]'s. Watches are
//! incremental (no polling). Nothing is published until every watch has listed once, so the
//! engine never acts on half a cluster; afterwards, during an API outage, the last known state
//! stays published while the watches retry with backoff (announcing continues unchanged).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::{IPAddressPool, L2Advertisement};
use ferrolb_runtime::Metrics;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::watch;

use crate::metrics as m;
use crate::objects::{L2AdvInfo, NodeInfo, PoolInfo, SERVICE_NAME_LABEL, ServiceInfo, SliceInfo};
use crate::plan::{self, Plan, PlanConfig, Problem, Snapshot};

/// What the watches publish for the engine.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The current plan.
    pub plan: Plan,
    /// Every other node's name and heartbeat address.
    pub peers: Vec<(String, SocketAddr)>,
    /// This node's InternalIPs (for the default interface).
    pub node_ips: Vec<IpAddr>,
    /// This node's ExternalIPs (forwarder mode checks ports on them too).
    pub node_external_ips: Vec<IpAddr>,
    /// This node's Node object exists.
    pub node_known: bool,
    /// This node's Node UID, for events regarding it.
    pub node_uid: Option<String>,
    /// The objects the plan was computed from, for modes that decide per node with inputs of
    /// their own (BGP mode: which of this node's routes go to which peer).
    pub snapshot: Arc<Snapshot>,
}

/// Objects of one kind, with relist bookkeeping so objects deleted during a watch outage are
/// dropped when the watch lists again.
#[derive(Debug)]
struct Store<V> {
    map: BTreeMap<String, V>,
    relist: Option<BTreeSet<String>>,
    synced: bool,
    what: &'static str,
}

impl<V: PartialEq> Store<V> {
    fn new(what: &'static str) -> Self {
        Store {
            map: BTreeMap::new(),
            relist: None,
            synced: false,
            what,
        }
    }

    /// Applies one watch event; true when the stored objects changed.
    fn apply<K>(
        &mut self,
        ev: Result<Event<K>, watcher::Error>,
        project: impl Fn(&K) -> Option<(String, V)>,
        key: impl Fn(&K) -> Option<String>,
        metrics: &Metrics,
    ) -> bool {
        match ev {
            Ok(Event::Init) => {
                metrics.inc(
                    m::API_REQUESTS,
                    m::API_REQUESTS_HELP,
                    &[("kind", "list")],
                    1.0,
                );
                self.relist = Some(BTreeSet::new());
                false
            }
            Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
                let Some((k, v)) = project(&o) else {
                    return false;
                };
                if let Some(seen) = self.relist.as_mut() {
                    seen.insert(k.clone());
                }
                if self.map.get(&k) == Some(&v) {
                    return false;
                }
                self.map.insert(k, v);
                true
            }
            Ok(Event::Delete(o)) => key(&o).is_some_and(|k| self.map.remove(&k).is_some()),
            Ok(Event::InitDone) => {
                let seen = self.relist.take().unwrap_or_default();
                let before = self.map.len();
                self.map.retain(|k, _| seen.contains(k));
                let first = !self.synced;
                self.synced = true;
                first || self.map.len() != before
            }
            Err(e) => {
                tracing::warn!(kind = self.what, error = %e, "watch error; retrying with backoff (last known state is kept)");
                false
            }
        }
    }
}

fn ns_name(meta: &kube::api::ObjectMeta) -> Option<String> {
    Some(format!(
        "{}/{}",
        meta.namespace.as_deref()?,
        meta.name.as_deref()?
    ))
}

fn stream<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, cfg).default_backoff().boxed()
}

/// Runs the watches forever, publishing into `tx` (at most every 10 ms while events flow).
pub async fn run(
    client: kube::Client,
    cfg: PlanConfig,
    port: u16,
    tx: watch::Sender<Option<Arc<Published>>>,
    metrics: Metrics,
) {
    let mut services = stream(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut slices = stream(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
    );
    let mut nodes = stream(Api::<Node>::all(client.clone()), watcher::Config::default());
    let mut pools = stream(
        Api::<IPAddressPool>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut advs = stream(
        Api::<L2Advertisement>::all(client),
        watcher::Config::default(),
    );

    let mut svc_store: Store<ServiceInfo> = Store::new("Service");
    let mut slice_store: Store<SliceInfo> = Store::new("EndpointSlice");
    let mut node_store: Store<NodeInfo> = Store::new("Node");
    let mut pool_store: Store<PoolInfo> = Store::new("IPAddressPool");
    let mut adv_store: Store<L2AdvInfo> = Store::new("L2Advertisement");
    let mut dirty = false;
    let mut reported: Vec<Problem> = Vec::new();
    let debounce = Duration::from_millis(10);

    loop {
        let changed = tokio::select! {
            Some(ev) = services.next() => svc_store.apply(ev, |s| {
                let v = ServiceInfo::from_service(s)?;
                if !v.bad.is_empty() {
                    tracing::warn!(service = %v.key(), entries = ?v.bad, "ingress entries that are not IPs are ignored");
                }
                Some((v.key(), v))
            }, |s| ns_name(&s.metadata), &metrics),
            Some(ev) = slices.next() => slice_store.apply(ev, |s| {
                Some((ns_name(&s.metadata)?, SliceInfo::from_slice(s)?))
            }, |s| ns_name(&s.metadata), &metrics),
            Some(ev) = nodes.next() => node_store.apply(ev, |n| {
                let v = NodeInfo::from_node(n)?;
                Some((v.name.clone(), v))
            }, |n| n.metadata.name.clone(), &metrics),
            Some(ev) = pools.next() => pool_store.apply(ev, |p| {
                let v = PoolInfo::from_pool(p)?;
                if !v.bad.is_empty() {
                    tracing::warn!(pool = %v.name, entries = ?v.bad, "pool entries that do not parse are ignored");
                }
                Some((v.name.clone(), v))
            }, |p| p.metadata.name.clone(), &metrics),
            Some(ev) = advs.next() => adv_store.apply(ev, |a| {
                let v = L2AdvInfo::from_l2adv(a)?;
                Some((v.name.clone(), v))
            }, |a| a.metadata.name.clone(), &metrics),
            _ = tokio::time::sleep(debounce), if dirty => {
                dirty = false;
                let synced = svc_store.synced && slice_store.synced && node_store.synced
                    && pool_store.synced && adv_store.synced;
                if synced {
                    let snap = Arc::new(Snapshot {
                        services: svc_store.map.clone(),
                        slices: slice_store.map.clone(),
                        nodes: node_store.map.clone(),
                        pools: pool_store.map.clone(),
                        l2advs: adv_store.map.clone(),
                    });
                    let plan = plan::compute(&snap, &cfg);
                    for p in plan.problems.iter().filter(|p| !reported.contains(p)) {
                        match p {
                            Problem::BadSelector { l2adv, error } => tracing::warn!(l2advertisement = %l2adv, %error, "selector cannot be evaluated; it matches nothing"),
                        }
                    }
                    reported = plan.problems.clone();
                    for (ip, p) in &plan.ips {
                        if p.disjoint_sharing {
                            tracing::warn!(%ip, services = ?p.services, "Services sharing this IP have no eligible node in common; announcing from any of them");
                        }
                    }
                    let me = snap.nodes.get(&cfg.self_node);
                    let published = Published {
                        peers: snap.nodes.values()
                            .filter_map(|n| Some((n.name.clone(), SocketAddr::new(n.heartbeat_ip()?, port))))
                            .collect(),
                        node_ips: me.map(|n| n.internal_ips.clone()).unwrap_or_default(),
                        node_external_ips: me.map(|n| n.external_ips.clone()).unwrap_or_default(),
                        node_known: me.is_some(),
                        node_uid: me.and_then(|n| n.uid.clone()),
                        plan,
                        snapshot: snap.clone(),
                    };
                    tx.send_replace(Some(Arc::new(published)));
                }
                false
            }
            else => break,
        };
        dirty |= changed;
    }
    tracing::error!("every watch stream ended");
}
