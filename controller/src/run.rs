//! The controller's shell: watches Services, IPAddressPools, L2Advertisements and Namespaces, and
//! for forwarder mode Nodes, ForwarderNodes, the speaker pods and EndpointSlices; feeds the
//! [`Core`], hands its actions to the [`Writer`], follows leadership, and serves metrics and
//! probes.
//!
//! The loop owns the core; nothing else touches it. Watches are incremental (no polling): with nothing
//! changing in the cluster, the loop sleeps and makes no API request but the Lease renewal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferrolb_allocator::Family;
use ferrolb_crds::bgp::{BFDProfile, BGPAdvertisement, BGPPeer, BGPSessionState, Community};
use ferrolb_crds::{ForwarderNode, IPAddressPool, L2Advertisement};
use ferrolb_runtime::{self as runtime, Health, Metrics};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::{mpsc, watch};

use crate::bgp::{AdvView, BgpIndex, BgpPool, PeerView, StatusWrite};
use crate::config::Args;
use crate::config::Shadowing;
use crate::core::{Action, Core, CoreConfig, Kind};
use crate::forwarder::nodes::{self as fwd_nodes, NodeReport, NodeView};
use crate::l2adv::L2View;
use crate::pools::PoolView;
use crate::service::ServiceView;
use crate::writer::{Failed, Writer};

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Tracks a watch's (re)list so objects missing from a new list are removed.
#[derive(Debug, Default)]
struct Relist {
    seen: Option<BTreeSet<String>>,
}

impl Relist {
    fn start(&mut self) {
        self.seen = Some(BTreeSet::new());
    }
    fn saw(&mut self, key: String) {
        if let Some(s) = self.seen.as_mut() {
            s.insert(key);
        }
    }
    fn done(&mut self) -> BTreeSet<String> {
        self.seen.take().unwrap_or_default()
    }
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    runtime::init_tracing(&args.common.log_level, args.common.log_format);
    let client = runtime::kube_client(args.common.kubeconfig.as_ref()).await?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server (check --kubeconfig and the network)")?;
    tracing::info!(server = %version.git_version, lb_class = %args.common.lb_class, "ferrolb controller starting");

    let metrics = Metrics::default();
    let health = Health::default();
    let listener = runtime::bind(args.metrics_addr).await?;
    tokio::spawn(runtime::serve_http(
        listener,
        metrics.clone(),
        health.clone(),
    ));

    let identity = args.identity();
    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_elect);
    let leader_flag = Arc::new(AtomicBool::new(!args.leader_elect));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let election = if args.leader_elect {
        let ns = args.lease_namespace();
        tracing::info!(lease = %args.lease_name, namespace = %ns, identity = %identity, "leader election on");
        Some(tokio::spawn(crate::leader::run(
            Api::<Lease>::namespaced(client.clone(), &ns),
            args.lease_name.clone(),
            identity.clone(),
            Duration::from_secs(args.lease_duration.max(1)),
            leader_flag.clone(),
            leader_tx,
            shutdown_rx,
        )))
    } else {
        None
    };

    let (act_tx, act_rx) = mpsc::unbounded_channel();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let writer = Writer::new(
        client.clone(),
        identity,
        leader_flag.clone(),
        leader_rx.clone(),
        metrics.clone(),
    );
    tokio::spawn(writer.run(act_rx, fail_tx));

    let mut services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut pools = watcher(
        Api::<IPAddressPool>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut l2ads = watcher(
        Api::<L2Advertisement>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();

    let mut nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut reports = watcher(
        Api::<ForwarderNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let speaker_ns = args.speaker_namespace();
    let mut speaker_pods = watcher(
        Api::<Pod>::namespaced(client.clone(), &speaker_ns),
        watcher::Config::default().labels(&args.speaker_selector),
    )
    .default_backoff()
    .boxed();
    let mut slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();

    // BGP mode's objects, for the conditions `crate::bgp` reports on BGPPeers and
    // BGPAdvertisements; Secrets only by name, in the namespace the speakers read them in.
    let bgp_secret_ns = args.speaker_namespace();
    // Without --bgp the streams never yield: no request is made (and none refused by RBAC).
    fn bgp_watch<K>(
        on: bool,
        api: Api<K>,
    ) -> futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        if on {
            watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed()
        } else {
            futures::stream::pending().boxed()
        }
    }
    let mut bgp_peers = bgp_watch(args.bgp, Api::<BGPPeer>::all(client.clone()));
    let mut bgp_advs = bgp_watch(args.bgp, Api::<BGPAdvertisement>::all(client.clone()));
    let mut bgp_comms = bgp_watch(args.bgp, Api::<Community>::all(client.clone()));
    let mut bgp_bfd = bgp_watch(args.bgp, Api::<BFDProfile>::all(client.clone()));
    let mut bgp_secrets = bgp_watch(
        args.bgp,
        Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &bgp_secret_ns),
    );
    let mut bgp_states = bgp_watch(args.bgp, Api::<BGPSessionState>::all(client.clone()));
    let mut bgp = BgpIndex::new(bgp_secret_ns.clone());
    let mut bgp_relists: [Relist; 6] = Default::default();
    let mut bgp_synced = [false; 6];

    let mut core = Core::new(CoreConfig {
        lb_class: args.common.lb_class.clone(),
        ignore_classless: args.common.ignore_classless,
        block_node_port_shadowing: args.node_port_shadowing == Shadowing::Block,
    });
    core.set_leader(*leader_rx.borrow());
    let mut relists: [Relist; 8] = Default::default();
    let mut pool_tick = tokio::time::interval(Duration::from_millis(500));
    pool_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;

    loop {
        tokio::select! {
            Some(ev) = services.next() => match ev {
                Ok(Event::Init) => relists[0].start(),
                Ok(Event::InitApply(s)) | Ok(Event::Apply(s)) => {
                    if let Some(v) = ServiceView::from_service(&s) {
                        relists[0].saw(v.key().to_string());
                        core.upsert_service(v);
                    }
                }
                Ok(Event::Delete(s)) => {
                    if let Some(v) = ServiceView::from_service(&s) {
                        core.delete_service(v.key());
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[0].done();
                    core.resynced(Kind::Services, &seen);
                }
                Err(e) => tracing::warn!(error = %e, "Service watch error; retrying"),
            },
            Some(ev) = pools.next() => match ev {
                Ok(Event::Init) => relists[1].start(),
                Ok(Event::InitApply(p)) | Ok(Event::Apply(p)) => {
                    if let Some(name) = p.metadata.name.clone() {
                        let labels = p.metadata.labels.clone().unwrap_or_default();
                        bgp.upsert_pool(name, BgpPool::new(labels, &p.spec.addresses));
                    }
                    if let Some(v) = PoolView::from_pool(&p) {
                        relists[1].saw(v.name.clone());
                        if !v.bad_entries.is_empty() {
                            tracing::warn!(pool = %v.name, entries = ?v.bad_entries, "pool has entries that do not parse; they are ignored");
                        }
                        if !v.bad_selectors.is_empty() {
                            tracing::warn!(pool = %v.name, selectors = ?v.bad_selectors, "pool has malformed serviceAllocation selectors; they select nothing");
                        }
                        core.upsert_pool(v);
                    }
                }
                Ok(Event::Delete(p)) => {
                    if let Some(n) = p.metadata.name.as_deref() {
                        bgp.delete_pool(n);
                        core.delete_pool(n);
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[1].done();
                    bgp.resynced("pools", &seen);
                    core.resynced(Kind::Pools, &seen);
                }
                Err(e) => tracing::warn!(error = %e, "IPAddressPool watch error; retrying (are the CRDs installed?)"),
            },
            Some(ev) = l2ads.next() => match ev {
                Ok(Event::Init) => relists[3].start(),
                Ok(Event::InitApply(l)) | Ok(Event::Apply(l)) => {
                    if let Some(v) = L2View::from_l2(&l) {
                        relists[3].saw(v.name.clone());
                        if !v.bad_selectors.is_empty() {
                            tracing::warn!(l2advertisement = %v.name, selectors = ?v.bad_selectors, "L2Advertisement has malformed selectors; they select nothing");
                        }
                        core.upsert_l2(v);
                    }
                }
                Ok(Event::Delete(l)) => {
                    if let Some(n) = l.metadata.name.as_deref() {
                        core.delete_l2(n);
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[3].done();
                    core.resynced(Kind::L2Advertisements, &seen);
                }
                Err(e) => tracing::warn!(error = %e, "L2Advertisement watch error; retrying"),
            },
            Some(ev) = namespaces.next() => match ev {
                Ok(Event::Init) => relists[2].start(),
                Ok(Event::InitApply(n)) | Ok(Event::Apply(n)) => {
                    if let Some(name) = n.metadata.name.clone() {
                        relists[2].saw(name.clone());
                        core.upsert_namespace(name, n.metadata.labels.clone().unwrap_or_default());
                    }
                }
                Ok(Event::Delete(n)) => {
                    if let Some(name) = n.metadata.name.as_deref() {
                        core.delete_namespace(name);
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[2].done();
                    core.resynced(Kind::Namespaces, &seen);
                }
                Err(e) => tracing::warn!(error = %e, "Namespace watch error; retrying"),
            },
            Some(ev) = nodes.next() => match ev {
                Ok(Event::Init) => relists[4].start(),
                Ok(Event::InitApply(n)) | Ok(Event::Apply(n)) => {
                    if let Some(name) = n.metadata.name.clone() {
                        bgp.upsert_node(name, n.metadata.labels.clone().unwrap_or_default());
                    }
                    if let Some(v) = NodeView::from_node(&n) {
                        relists[4].saw(v.name.to_string());
                        core.upsert_node(v);
                    }
                }
                Ok(Event::Delete(n)) => {
                    if let Some(name) = n.metadata.name.as_deref() {
                        bgp.delete_node(name);
                        core.delete_node(name);
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[4].done();
                    bgp.resynced("nodes", &seen);
                    core.resynced(Kind::Nodes, &seen);
                }
                Err(e) => tracing::warn!(error = %e, "Node watch error; retrying"),
            },
            Some(ev) = reports.next() => match ev {
                Ok(Event::Init) => relists[5].start(),
                Ok(Event::InitApply(f)) | Ok(Event::Apply(f)) => {
                    if let Some((node, r)) = NodeReport::from_forwarder_node(&f) {
                        relists[5].saw(node.clone());
                        core.upsert_report(node, r);
                    }
                }
                Ok(Event::Delete(f)) => {
                    if let Some(name) = f.metadata.name.as_deref() {
                        core.delete_report(name);
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[5].done();
                    core.resynced(Kind::ForwarderNodes, &seen);
                }
                Err(e) => tracing::warn!(error = %e, "ForwarderNode watch error; retrying (are the CRDs installed?)"),
            },
            Some(ev) = speaker_pods.next() => match ev {
                Ok(Event::Init) => relists[6].start(),
                Ok(Event::InitApply(p)) | Ok(Event::Apply(p)) => {
                    if let Some((key, node, ready)) = fwd_nodes::speaker_pod(&p) {
                        relists[6].saw(key.clone());
                        core.upsert_speaker_pod(key, node, ready);
                    }
                }
                Ok(Event::Delete(p)) => {
                    if let (Some(ns), Some(name)) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()) {
                        core.delete_speaker_pod(&format!("{ns}/{name}"));
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[6].done();
                    core.resynced(Kind::SpeakerPods, &seen);
                }
                Err(e) => tracing::warn!(error = %e, namespace = %speaker_ns, "speaker pod watch error; retrying"),
            },
            Some(ev) = slices.next() => match ev {
                Ok(Event::Init) => relists[7].start(),
                Ok(Event::InitApply(s)) | Ok(Event::Apply(s)) => {
                    if let Some((key, svc, ready)) = fwd_nodes::endpoint_nodes(&s) {
                        relists[7].saw(key.clone());
                        core.upsert_slice(key, svc, ready);
                    }
                }
                Ok(Event::Delete(s)) => {
                    if let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()) {
                        core.delete_slice(&format!("{ns}/{name}"));
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relists[7].done();
                    core.resynced(Kind::EndpointSlices, &seen);
                }
                Err(e) => tracing::warn!(error = %e, "EndpointSlice watch error; retrying"),
            },
            Some(ev) = bgp_peers.next() => bgp_event(ev, &mut bgp, &mut bgp_relists[0], &mut bgp_synced[0], "BGPPeer",
                |b, p| { let v = PeerView::from_peer(p)?; let k = v.name.clone(); b.upsert_peer(v); Some(k) },
                |b, k| b.delete_peer(k), "peers", |p| p.metadata.name.clone()),
            Some(ev) = bgp_advs.next() => bgp_event(ev, &mut bgp, &mut bgp_relists[1], &mut bgp_synced[1], "BGPAdvertisement",
                |b, a| { let v = AdvView::from_adv(a)?; let k = v.name.clone(); b.upsert_adv(v); Some(k) },
                |b, k| b.delete_adv(k), "advs", |a| a.metadata.name.clone()),
            Some(ev) = bgp_comms.next() => bgp_event(ev, &mut bgp, &mut bgp_relists[2], &mut bgp_synced[2], "Community",
                |b, c| { b.upsert_community(c); c.metadata.name.clone() },
                |b, k| b.delete_community(k), "communities", |c| c.metadata.name.clone()),
            Some(ev) = bgp_bfd.next() => bgp_event(ev, &mut bgp, &mut bgp_relists[3], &mut bgp_synced[3], "BFDProfile",
                |b, p| { b.upsert_profile(p); p.metadata.name.clone() },
                |b, k| b.delete_profile(k), "profiles", |p| p.metadata.name.clone()),
            Some(ev) = bgp_secrets.next() => bgp_event(ev, &mut bgp, &mut bgp_relists[4], &mut bgp_synced[4], "Secret",
                |b, s| { let k = format!("{}/{}", s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?); b.upsert_secret(k.clone()); Some(k) },
                |b, k| b.delete_secret(k), "secrets",
                |s| Some(format!("{}/{}", s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?))),
            Some(ev) = bgp_states.next() => bgp_event(ev, &mut bgp, &mut bgp_relists[5], &mut bgp_synced[5], "BGPSessionState",
                |b, s| { b.upsert_session(s); s.metadata.name.clone() },
                |b, k| b.delete_session(k), "sessions", |s| s.metadata.name.clone()),
            Ok(()) = leader_rx.changed() => {
                let leading = *leader_rx.borrow();
                leader_flag.store(leading, Ordering::Release);
                core.set_leader(leading);
                metrics.set("ferrolb_controller_leader", "1 while this replica leads", &[], if leading { 1.0 } else { 0.0 });
            }
            Some(f) = fail_rx.recv() => match f {
                Failed::Service { namespace, name } => core.write_failed(&namespace, &name),
                Failed::PoolStatus => core.pool_write_failed(),
                Failed::L2Status => core.l2_write_failed(),
                Failed::BgpStatus => bgp.write_failed(),
            },
            _ = pool_tick.tick() => {
                if core.statuses_dirty() {
                    for a in core.object_statuses(&now()) {
                        let _ = act_tx.send(a);
                    }
                }
                export_pool_metrics(&core, &metrics);
                if *leader_rx.borrow() && core.ready() && bgp_synced.iter().all(|s| *s) && bgp.is_dirty() {
                    for w in bgp.statuses(&now()) {
                        let _ = act_tx.send(match w {
                            StatusWrite::Peer { name, status } => Action::BgpPeerStatus { name, status },
                            StatusWrite::Advertisement { name, status } => {
                                Action::BgpAdvertisementStatus { name, status }
                            }
                        });
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }

        let started = Instant::now();
        let actions = core.reconcile(&now());
        if !actions.is_empty() {
            let secs = started.elapsed().as_secs_f64();
            metrics.inc(
                "ferrolb_controller_reconcile_seconds_sum",
                "Time spent deciding, in seconds",
                &[],
                secs,
            );
            metrics.inc(
                "ferrolb_controller_reconcile_seconds_count",
                "Reconcile passes that produced writes",
                &[],
                1.0,
            );
        }
        for a in actions {
            let _ = act_tx.send(a);
        }
        health.set_ready(core.ready());
    }

    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    if let Some(e) = election {
        let _ = tokio::time::timeout(Duration::from_secs(3), e).await;
    }
    Ok(())
}

/// Feeds one watch event of a BGP kind into the index: `upsert` projects and stores an object
/// and returns its key, `delete` drops a key, relists drop what the new list lacks.
#[allow(clippy::too_many_arguments)]
fn bgp_event<K>(
    ev: Result<Event<K>, watcher::Error>,
    bgp: &mut BgpIndex,
    relist: &mut Relist,
    synced: &mut bool,
    what: &str,
    upsert: impl Fn(&mut BgpIndex, &K) -> Option<String>,
    delete: impl Fn(&mut BgpIndex, &str),
    kind: &str,
    key: impl Fn(&K) -> Option<String>,
) {
    match ev {
        Ok(Event::Init) => relist.start(),
        Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
            if let Some(k) = upsert(bgp, &o) {
                relist.saw(k);
            }
        }
        Ok(Event::Delete(o)) => {
            if let Some(k) = key(&o) {
                delete(bgp, &k);
            }
        }
        Ok(Event::InitDone) => {
            let seen = relist.done();
            bgp.resynced(kind, &seen);
            *synced = true;
        }
        Err(e) => {
            tracing::warn!(kind = what, error = %e, "watch error; retrying (are the BGP CRDs installed and the RBAC granted?)")
        }
    }
}

fn export_pool_metrics(core: &Core, metrics: &Metrics) {
    let stats = core.stats();
    metrics.set(
        "ferrolb_controller_services",
        "Services indexed: ferrolb's LoadBalancers and those still carrying its marks",
        &[],
        core.service_count() as f64,
    );
    metrics.set(
        "ferrolb_controller_allocations",
        "Allocations that changed a Service's IPs since start",
        &[],
        stats.allocations as f64,
    );
    for (reason, n) in &stats.failures {
        metrics.set(
            "ferrolb_controller_allocation_failures",
            "Failed allocations since start, by reason",
            &[("reason", reason)],
            *n as f64,
        );
    }
    metrics.set(
        "ferrolb_controller_forwarder_services",
        "Services of node pools (forwarder mode)",
        &[],
        stats.forwarder_services as f64,
    );
    metrics.clear("ferrolb_controller_forwarder_port_conflicts");
    for (reason, n) in &stats.forwarder_conflicts {
        metrics.set(
            "ferrolb_controller_forwarder_port_conflicts",
            "Forwarder-mode ports unavailable on a node, by reason",
            &[("reason", reason)],
            *n as f64,
        );
    }
    let alloc = core.allocator();
    metrics.clear("ferrolb_controller_pool_addresses");
    for pool in alloc.pool_names() {
        let Some(s) = alloc.pool_stats(pool) else {
            continue;
        };
        for (fam, name) in [(Family::V4, "IPv4"), (Family::V6, "IPv6")] {
            let f = s.family(fam);
            if f.total == 0 {
                continue;
            }
            for (state, v) in [
                ("total", f.total),
                ("assigned", f.assigned),
                ("available", f.available),
            ] {
                metrics.set(
                    "ferrolb_controller_pool_addresses",
                    "Pool addresses by family and state",
                    &[("pool", pool), ("family", name), ("state", state)],
                    v as f64,
                );
            }
        }
    }
}
