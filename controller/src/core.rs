//! The controller's state and decisions: an index of Services, pools, L2Advertisements and
//! namespaces fed by watch events, the allocator, forwarder mode's inputs (Nodes, speaker reports
//! and pods, EndpointSlices) and outcomes, and the reconcile step that turns changes into
//! [`Action`]s.
//!
//! Synchronous and free of I/O: the shell (`run.rs`) feeds it events and performs the actions it
//! returns. One task owns it. It never writes what the cluster already shows, so a resync or a restart
//! with nothing changed produces no action at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::Arc;

use ferrolb_allocator::{Allocator, Assignment, Family, Protocol, Request, ServiceKey};
use ferrolb_crds::{IPAddressPoolStatus, L2AdvertisementStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::forwarder::{self, FwdService, Holder, NodeReport, NodeView, Outcome};
use crate::l2adv::{self, L2View};
use crate::pools::{self, PoolView};
use crate::service::{self, ObservedCondition, ServiceView, SvcKey};

/// Settings that decide which Services are ours.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// `spec.loadBalancerClass` we serve.
    pub lb_class: String,
    /// Leave Services without a class to another load balancer.
    pub ignore_classless: bool,
    /// Forwarder mode: a port equal to another Service's nodePort leaves the node out (instead
    /// of a warning).
    pub block_node_port_shadowing: bool,
}

/// Which object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Service.
    Service {
        namespace: String,
        name: String,
        uid: Option<String>,
    },
    /// An IPAddressPool.
    Pool { name: String, uid: Option<String> },
    /// An L2Advertisement.
    L2Advertisement { name: String, uid: Option<String> },
}

/// Something the shell must do against the API server.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Server-side apply of the Service's `status.loadBalancer.ingress` and our conditions. An
    /// empty `ingress` and no condition remove what ferrolb owned.
    ServiceStatus {
        namespace: String,
        name: String,
        ingress: Vec<IpAddr>,
        /// `ferrolb.io/IPAllocated`.
        condition: Option<Condition>,
        /// `ferrolb.io/ForwarderReady` (forwarder mode only).
        forwarder: Option<Condition>,
        /// The ingress entries' `ipMode`.
        ip_mode: &'static str,
    },
    /// Server-side apply of the `ip-allocated-from-pool` annotation (`None` removes it).
    ServiceAnnotation {
        namespace: String,
        name: String,
        pools: Option<String>,
    },
    /// Server-side apply of a pool's status.
    PoolStatus {
        name: String,
        status: IPAddressPoolStatus,
    },
    /// Server-side apply of an L2Advertisement's status.
    L2Status {
        name: String,
        status: L2AdvertisementStatus,
    },
    /// Server-side apply of a BGPPeer's status (BGP mode: `crate::bgp`).
    BgpPeerStatus {
        name: String,
        status: ferrolb_crds::bgp::BGPPeerStatus,
    },
    /// Server-side apply of a BGPAdvertisement's status (BGP mode: `crate::bgp`).
    BgpAdvertisementStatus {
        name: String,
        status: ferrolb_crds::bgp::BGPAdvertisementStatus,
    },
    /// A Kubernetes event.
    Event {
        target: Target,
        warning: bool,
        reason: String,
        note: String,
    },
}

/// What ferrolb wants a Service to show.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Desired {
    ingress: Vec<String>,
    /// The ingress entries' `ipMode`: `VIP`, or `Proxy` for a pool the speakers forward.
    ip_mode: &'static str,
    /// (status, reason, message) of our condition; `None` removes it.
    condition: Option<(String, String, String)>,
    /// The same for `ferrolb.io/ForwarderReady`.
    forwarder: Option<(String, String, String)>,
    pools: Option<String>,
}

/// Counters the shell exports as metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Successful allocations that changed a Service's IPs.
    pub allocations: u64,
    /// Failed allocations by reason.
    pub failures: BTreeMap<String, u64>,
    /// Forwarder mode: Services of node pools.
    pub forwarder_services: u64,
    /// Forwarder mode: current port conflicts by reason.
    pub forwarder_conflicts: BTreeMap<String, u64>,
}

/// The controller's in-memory world.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    /// Keyed by the view's own `key` (one allocation for both). Boxed because B-tree nodes keep
    /// 11 values inline and are typically a third empty: an empty slot then costs a pointer, not
    /// a whole view.
    services: BTreeMap<SvcKey, Box<ServiceView>>,
    pools: BTreeMap<String, PoolView>,
    l2ads: BTreeMap<String, L2View>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    alloc: Allocator,
    synced: [bool; KINDS],
    leader: bool,
    /// Whether the allocator reflects the cluster (rebuilt since we last became ready and leader).
    built: bool,
    dirty: BTreeSet<SvcKey>,
    /// Services whose allocation failed: retried whenever addresses may have been freed.
    pending: BTreeSet<SvcKey>,
    /// What we wrote and the watch has not echoed yet: suppresses duplicate writes.
    in_flight: HashMap<SvcKey, Desired>,
    pools_dirty: bool,
    /// L2Advertisement statuses may need a write (one changed, or a pool did).
    l2_dirty: bool,
    stats: Stats,
    /// Forwarder mode's inputs and results (see [`Forwarding`]).
    fwd: Forwarding,
}

/// What forwarder mode decides from, and what it decided last.
#[derive(Debug, Default)]
struct Forwarding {
    /// Nodes, by name.
    nodes: BTreeMap<String, NodeView>,
    /// Speaker reports (`ForwarderNode`), by node.
    reports: BTreeMap<String, NodeReport>,
    /// Speaker pods: `namespace/name` → (node, Ready).
    pods: BTreeMap<String, (String, bool)>,
    /// EndpointSlices with a ready endpoint: `namespace/name` → its Service and those nodes.
    /// A slice without one is not kept: it adds no node, and a cluster's Services mostly have
    /// slices, so keeping them all would cost every Service.
    slices: BTreeMap<Box<str>, Slice>,
    /// The node names `slices` hold, each kept once however many slices name it.
    slice_nodes: BTreeSet<Arc<str>>,
    /// Every Service's nodePorts (not only ours): by Service, and by port.
    node_ports_of: BTreeMap<SvcKey, Box<[(Protocol, u16)]>>,
    node_ports: BTreeMap<(Protocol, u16), BTreeSet<SvcKey>>,
    /// The Services on a node pool, and which pool.
    members: BTreeMap<SvcKey, String>,
    /// The last decision, per member.
    outcomes: BTreeMap<SvcKey, Outcome>,
    /// An input changed since the last decision.
    dirty: bool,
    /// Events from the last decision, for the next reconcile to emit.
    events: Vec<Action>,
    /// Node pools whose K3s servicelb labels are in effect (an event said so once).
    k3s_noted: BTreeSet<String>,
}

/// What forwarder mode keeps of an EndpointSlice with a ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slice {
    /// `namespace/name` of its Service.
    service: Box<str>,
    /// Nodes with a ready endpoint, sorted, shared through `Forwarding::slice_nodes`.
    nodes: Box<[Arc<str>]>,
}

impl Forwarding {
    /// Drops a slice that left the index, and the node names no other slice holds.
    fn forget_slice_nodes(&mut self, old: Slice) {
        for n in old.nodes.iter() {
            // Held by this slice and by `slice_nodes` alone.
            if Arc::strong_count(n) == 2 {
                self.slice_nodes.remove(n);
            }
        }
    }
}

/// The addresses and ports `view` holds for forwarder mode (`externalIPs` and LoadBalancer
/// ingress), if any. Derived from the index when needed rather than kept beside it: every
/// Service with an IP would otherwise pay for a second copy.
fn holder_of(view: &ServiceView) -> Option<Holder> {
    let ips: Vec<IpAddr> = view
        .external_ips
        .iter()
        .copied()
        .chain(view.current_ips())
        .collect();
    (!ips.is_empty()).then(|| Holder {
        key: view.key().clone(),
        ips,
        ports: view.ports.to_vec(),
    })
}

/// Index into `Core::synced`.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Services.
    Services = 0,
    /// IPAddressPools.
    Pools = 1,
    /// Namespaces.
    Namespaces = 2,
    /// L2Advertisements.
    L2Advertisements = 3,
    /// Nodes (forwarder mode).
    Nodes = 4,
    /// ForwarderNodes (speaker reports).
    ForwarderNodes = 5,
    /// Speaker pods.
    SpeakerPods = 6,
    /// EndpointSlices.
    EndpointSlices = 7,
}

/// How many kinds of object the core watches.
const KINDS: usize = 8;

/// Entries of the in-flight table kept allocated however few writes are in flight (a few
/// hundred kilobytes at most).
const IN_FLIGHT_KEPT: usize = 1024;

fn camel(reason: &str) -> String {
    reason
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

impl Core {
    /// An empty core; nothing is decided until every kind has synced and we lead.
    pub fn new(cfg: CoreConfig) -> Core {
        Core {
            cfg,
            services: BTreeMap::new(),
            pools: BTreeMap::new(),
            l2ads: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            alloc: Allocator::new(),
            synced: [false; KINDS],
            leader: false,
            built: false,
            dirty: BTreeSet::new(),
            pending: BTreeSet::new(),
            in_flight: HashMap::new(),
            pools_dirty: false,
            l2_dirty: false,
            stats: Stats::default(),
            fwd: Forwarding::default(),
        }
    }

    /// A Service was added or changed.
    pub fn upsert_service(&mut self, view: ServiceView) {
        // Forwarder mode decides again when the addresses a Service holds change; only while
        // it has members, as before.
        let held = if self.fwd.members.is_empty() {
            None
        } else {
            Some(self.services.get(&view.key).and_then(|v| holder_of(v)))
        };
        let key = view.key.clone();
        self.index_for_forwarding(&view);
        self.upsert_indexed(view);
        if let Some(before) = held
            && before != self.services.get(&key).and_then(|v| holder_of(v))
        {
            self.fwd.dirty = true;
        }
    }

    fn upsert_indexed(&mut self, mut view: ServiceView) {
        // A Service that is not ours and carries nothing ferrolb wrote needs no place in the index
        // (most of a cluster's Services are ClusterIP): it is forgotten, releasing whatever it
        // held, and its next watch event brings it back should it become ours.
        if !view.is_ours(&self.cfg.lb_class, self.cfg.ignore_classless) && !view.has_our_marks() {
            self.delete_service(&view.key);
            return;
        }
        match self.services.get_mut(&view.key) {
            Some(old) if **old == view => {}
            Some(old) => {
                // Keep the key the index (and maybe the work sets) already hold, not a copy.
                view.key = old.key.clone();
                **old = view;
                self.dirty.insert(old.key.clone());
            }
            None => {
                let key = view.key.clone();
                self.services.insert(key.clone(), Box::new(view));
                self.dirty.insert(key);
            }
        }
    }

    /// A Service is gone.
    pub fn delete_service(&mut self, key: &str) {
        self.unindex_for_forwarding(key);
        if let Some(view) = self.services.remove(key) {
            if !self.fwd.members.is_empty() && holder_of(&view).is_some() {
                self.fwd.dirty = true;
            }
            self.dirty.insert(view.key);
        } else if self.alloc.assignment(&ServiceKey(key.into())).is_some() {
            self.dirty.insert(key.into());
        }
    }

    /// A pool was added or changed.
    pub fn upsert_pool(&mut self, view: PoolView) {
        let config_changed = self.pools.get(&view.name).is_none_or(|old| {
            old.config != view.config
                || old.allocation != view.allocation
                || old.bad_entries != view.bad_entries
                || old.bad_selectors != view.bad_selectors
        });
        self.pools.insert(view.name.clone(), view);
        self.pools_dirty = true;
        self.l2_dirty = true;
        if config_changed {
            self.pools_changed();
        }
    }

    /// A pool is gone.
    pub fn delete_pool(&mut self, name: &str) {
        if self.pools.remove(name).is_some() {
            self.l2_dirty = true;
            self.pools_changed();
        }
    }

    /// An L2Advertisement was added or changed.
    pub fn upsert_l2(&mut self, view: L2View) {
        if self.l2ads.get(&view.name) != Some(&view) {
            self.l2ads.insert(view.name.clone(), view);
            self.l2_dirty = true;
        }
    }

    /// An L2Advertisement is gone.
    pub fn delete_l2(&mut self, name: &str) {
        self.l2ads.remove(name);
    }

    /// A namespace's labels changed (for `namespaceSelectors`).
    pub fn upsert_namespace(&mut self, name: String, labels: BTreeMap<String, String>) {
        if self.namespaces.get(&name) != Some(&labels) {
            self.namespaces.insert(name.clone(), labels);
            let prefix = format!("{name}/");
            let keys: Vec<_> = self
                .services
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            self.dirty.extend(keys);
        }
    }

    /// A namespace is gone.
    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// What every Service (ours or not) means to forwarder mode: its nodePorts. (The
    /// addresses it holds are read from the index, see [`holder_of`].)
    fn index_for_forwarding(&mut self, view: &ServiceView) {
        let key = view.key().clone();
        let f = &mut self.fwd;
        if f.node_ports_of.get(&key).map(|p| &**p) != Some(&*view.node_ports) {
            self.unindex_node_ports(&key);
            let f = &mut self.fwd;
            if !view.node_ports.is_empty() {
                for p in view.node_ports.iter() {
                    f.node_ports.entry(*p).or_default().insert(key.clone());
                }
                f.node_ports_of.insert(key.clone(), view.node_ports.clone());
            }
            self.fwd.dirty |= !self.fwd.members.is_empty();
        }
        if self.fwd.members.contains_key(&key) {
            self.fwd.dirty = true;
        }
    }

    fn unindex_node_ports(&mut self, key: &SvcKey) {
        let f = &mut self.fwd;
        if let Some(old) = f.node_ports_of.remove(key) {
            for p in old.iter() {
                if let Some(set) = f.node_ports.get_mut(p) {
                    set.remove(key);
                    if set.is_empty() {
                        f.node_ports.remove(p);
                    }
                }
            }
        }
    }

    fn unindex_for_forwarding(&mut self, key: &str) {
        let key: SvcKey = key.into();
        self.unindex_node_ports(&key);
    }

    /// Whether any pool is a node pool (forwarder mode is in use).
    fn forwarding(&self) -> bool {
        self.pools.values().any(PoolView::is_node_pool)
    }

    /// A Node was added or changed.
    pub fn upsert_node(&mut self, view: NodeView) {
        if self.fwd.nodes.get(&*view.name) != Some(&view) {
            self.fwd.nodes.insert(view.name.to_string(), view);
            self.fwd.dirty |= self.forwarding();
            self.pools_dirty |= self.forwarding();
        }
    }

    /// A Node is gone.
    pub fn delete_node(&mut self, name: &str) {
        if self.fwd.nodes.remove(name).is_some() {
            self.fwd.dirty |= self.forwarding();
            self.pools_dirty |= self.forwarding();
        }
    }

    /// A speaker's report (`ForwarderNode`) was added or changed.
    pub fn upsert_report(&mut self, node: String, report: NodeReport) {
        if self.fwd.reports.get(&node) != Some(&report) {
            self.fwd.reports.insert(node, report);
            self.fwd.dirty |= self.forwarding();
        }
    }

    /// A speaker's report is gone.
    pub fn delete_report(&mut self, node: &str) {
        if self.fwd.reports.remove(node).is_some() {
            self.fwd.dirty |= self.forwarding();
        }
    }

    /// A speaker pod was added or changed: `(namespace/name, node, Ready)`.
    pub fn upsert_speaker_pod(&mut self, key: String, node: String, ready: bool) {
        if self.fwd.pods.get(&key) != Some(&(node.clone(), ready)) {
            self.fwd.pods.insert(key, (node, ready));
            self.fwd.dirty |= self.forwarding();
        }
    }

    /// A speaker pod is gone.
    pub fn delete_speaker_pod(&mut self, key: &str) {
        if self.fwd.pods.remove(key).is_some() {
            self.fwd.dirty |= self.forwarding();
        }
    }

    /// An EndpointSlice was added or changed: `(namespace/name, its Service, ready nodes)`.
    pub fn upsert_slice(&mut self, key: String, service: String, nodes: BTreeSet<String>) {
        let relevant = self.fwd.members.contains_key(service.as_str());
        if nodes.is_empty() {
            // No ready endpoint: the slice adds no node, so it is not kept.
            if let Some(old) = self.fwd.slices.remove(key.as_str()) {
                self.fwd.forget_slice_nodes(old);
                self.fwd.dirty |= relevant;
            }
            return;
        }
        let same = self.fwd.slices.get(key.as_str()).is_some_and(|old| {
            *old.service == *service
                && old
                    .nodes
                    .iter()
                    .map(|n| &**n)
                    .eq(nodes.iter().map(String::as_str))
        });
        if same {
            return;
        }
        let nodes: Box<[Arc<str>]> = nodes
            .into_iter()
            .map(|n| match self.fwd.slice_nodes.get(n.as_str()) {
                Some(shared) => shared.clone(),
                None => {
                    let shared: Arc<str> = n.into();
                    self.fwd.slice_nodes.insert(shared.clone());
                    shared
                }
            })
            .collect();
        let entry = Slice {
            service: service.into(),
            nodes,
        };
        if let Some(old) = self.fwd.slices.insert(key.into(), entry) {
            self.fwd.forget_slice_nodes(old);
        }
        self.fwd.dirty |= relevant;
    }

    /// An EndpointSlice is gone.
    pub fn delete_slice(&mut self, key: &str) {
        if let Some(old) = self.fwd.slices.remove(key) {
            self.fwd.dirty |= self.fwd.members.contains_key(&*old.service);
            self.fwd.forget_slice_nodes(old);
        }
    }

    /// After a (re)list: drop every object of `kind` not seen in it, then mark the kind synced.
    pub fn resynced(&mut self, kind: Kind, seen: &BTreeSet<String>) {
        match kind {
            Kind::Services => {
                let gone: Vec<_> = self
                    .services
                    .keys()
                    .filter(|k| !seen.contains::<str>(k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.delete_service(&k);
                }
            }
            Kind::Pools => {
                let gone: Vec<_> = self
                    .pools
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.delete_pool(&k);
                }
            }
            Kind::Namespaces => self.namespaces.retain(|k, _| seen.contains(k)),
            Kind::L2Advertisements => self.l2ads.retain(|k, _| seen.contains(k)),
            Kind::Nodes => {
                self.fwd.nodes.retain(|k, _| seen.contains(k));
                self.fwd.dirty = true;
            }
            Kind::ForwarderNodes => {
                self.fwd.reports.retain(|k, _| seen.contains(k));
                self.fwd.dirty = true;
            }
            Kind::SpeakerPods => {
                self.fwd.pods.retain(|k, _| seen.contains(k));
                self.fwd.dirty = true;
            }
            Kind::EndpointSlices => {
                let gone: Vec<Box<str>> = self
                    .fwd
                    .slices
                    .keys()
                    .filter(|k| !seen.contains::<str>(k))
                    .cloned()
                    .collect();
                for k in gone {
                    if let Some(old) = self.fwd.slices.remove(&k) {
                        self.fwd.forget_slice_nodes(old);
                    }
                }
                self.fwd.dirty = true;
            }
        }
        self.synced[kind as usize] = true;
    }

    /// Leadership changed. A new leader rebuilds from the cluster's truth before deciding anything.
    pub fn set_leader(&mut self, leader: bool) {
        if leader != self.leader {
            self.leader = leader;
            self.built = false;
            self.in_flight.clear();
        }
    }

    /// Whether every watch has delivered its initial list.
    pub fn ready(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The allocator, for pool metrics.
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    /// Number of Services indexed.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// A write failed: forget it was in flight and try again on the next reconcile.
    pub fn write_failed(&mut self, namespace: &str, name: &str) {
        let key = format!("{namespace}/{name}");
        self.in_flight.remove(key.as_str());
        let key = match self.services.get_key_value(key.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        self.dirty.insert(key);
    }

    /// A pool status write failed: compare and write pool statuses again on the next tick.
    pub fn pool_write_failed(&mut self) {
        self.pools_dirty = true;
    }

    /// An L2Advertisement status write failed: compare and write them again on the next tick.
    pub fn l2_write_failed(&mut self) {
        self.l2_dirty = true;
    }

    /// Whether pool or L2Advertisement statuses may need a write.
    pub fn statuses_dirty(&self) -> bool {
        self.pools_dirty || self.l2_dirty
    }

    /// The allocator's pools: every pool but the node pools, which have no addresses of their own.
    fn address_pools(&self) -> Vec<ferrolb_allocator::PoolConfig> {
        self.pools
            .values()
            .filter(|p| !p.is_node_pool())
            .map(|p| p.config.clone())
            .collect()
    }

    fn pools_changed(&mut self) {
        self.alloc.set_pools(self.address_pools());
        self.pools_dirty = true;
        self.fwd.dirty = true;
        // A pool edit may free or add room for any Service, and may orphan IPs: look at all of them.
        self.dirty.extend(self.services.keys().cloned());
    }

    /// The pools a Service may get addresses from, in order, node pools included.
    fn all_candidates(&self, view: &ServiceView) -> Vec<String> {
        pools::candidates(
            self.pools.values(),
            view.namespace(),
            self.namespaces.get(view.namespace()),
            &view.labels,
        )
    }

    fn is_node_pool(&self, name: &str) -> bool {
        self.pools.get(name).is_some_and(PoolView::is_node_pool)
    }

    /// The address pools tried before the first node pool: what the allocator is offered.
    fn candidate_pools(&self, view: &ServiceView) -> Vec<String> {
        self.all_candidates(view)
            .into_iter()
            .take_while(|p| !self.is_node_pool(p))
            .collect()
    }

    /// The node pool a Service is published by, if any: the pool it pins, else the one it is
    /// on already (a Service stays on its pool, as it keeps its IPs), else the first candidate
    /// when that is a node pool. A Service holding allocator addresses stays on them.
    /// (When only the address pools before a node pool are exhausted, `reconcile_one` moves the
    /// Service to the node pool.)
    fn node_pool_for(&self, view: &ServiceView, req: &Request) -> Option<String> {
        if let Some(pinned) = &req.pool {
            return self.is_node_pool(pinned).then(|| pinned.clone());
        }
        if self
            .alloc
            .assignment(&ServiceKey(view.key().to_string()))
            .is_some_and(|a| !a.ips.is_empty())
        {
            return None;
        }
        let candidates = self.all_candidates(view);
        if let Some(on) = view
            .annotations
            .get(ferrolb_crds::annotations::ALLOCATED_FROM_POOL)
            .filter(|p| self.is_node_pool(p) && candidates.iter().any(|c| c == p))
        {
            return Some(on.to_string());
        }
        candidates.first().filter(|p| self.is_node_pool(p)).cloned()
    }

    /// The first node pool among a Service's candidates (after the address pools it was
    /// offered failed).
    fn fallback_node_pool(&self, view: &ServiceView) -> Option<String> {
        self.all_candidates(view)
            .into_iter()
            .find(|p| self.is_node_pool(p))
    }

    /// A request for restoring published IPs even when the Service's annotations are broken.
    fn restore_request(&self, view: &ServiceView) -> Request {
        let mut req = match service::build_request(view) {
            Ok(b) => b.request,
            Err(_) => {
                let fams: Vec<_> = view
                    .current_ips()
                    .into_iter()
                    .map(ferrolb_allocator::Family::of)
                    .collect();
                let policy = match fams.as_slice() {
                    [a, b] if a != b => ferrolb_allocator::FamilyPolicy::PreferDual([*a, *b]),
                    [a, ..] => ferrolb_allocator::FamilyPolicy::Single(*a),
                    [] => ferrolb_allocator::FamilyPolicy::Single(ferrolb_allocator::Family::V4),
                };
                let mut r = Request::new(policy);
                r.current = view.current_ips();
                r
            }
        };
        req.candidate_pools = self.candidate_pools(view);
        req
    }

    /// Rebuilds the allocator from what the cluster publishes: every Service we own keeps the IPs in
    /// its status (the older Service wins a conflict), and only then is anything new allocated.
    fn rebuild(&mut self) {
        self.alloc = Allocator::new();
        self.alloc.set_pools(self.address_pools());
        let mut published: Vec<&ServiceView> = self
            .services
            .values()
            .map(|v| &**v)
            .filter(|v| {
                v.is_ours(&self.cfg.lb_class, self.cfg.ignore_classless) && !v.ingress.is_empty()
            })
            .collect();
        published.sort_by(|a, b| {
            let t = |v: &ServiceView| v.created.as_ref().map(|t| t.0);
            t(a).cmp(&t(b)).then_with(|| a.key().cmp(b.key()))
        });
        let requests: Vec<(SvcKey, Request)> = published
            .iter()
            .map(|v| (v.key().clone(), self.restore_request(v)))
            .collect();
        for (key, req) in requests {
            self.alloc.restore(&ServiceKey(key.to_string()), &req);
        }
        self.dirty.extend(self.services.keys().cloned());
        self.pools_dirty = true;
        self.l2_dirty = true;
        self.built = true;
    }

    /// Decides every changed Service. Returns nothing until all watches synced and we lead.
    pub fn reconcile(&mut self, now: &Time) -> Vec<Action> {
        if !self.ready() || !self.leader {
            return Vec::new();
        }
        if !self.built {
            self.rebuild();
        }
        let mut actions = Vec::new();
        // Loop because a release can make room for a pending Service, and a Service joining or
        // leaving a node pool changes what the others there get.
        for _ in 0..3 {
            if self.fwd.dirty {
                self.decide_forwarding();
            }
            if self.dirty.is_empty() {
                break;
            }
            let mut batch: Vec<SvcKey> = std::mem::take(&mut self.dirty).into_iter().collect();
            batch.sort_by(|a, b| {
                let t = |k: &SvcKey| {
                    self.services
                        .get(k)
                        .and_then(|v| v.created.as_ref().map(|t| t.0))
                };
                t(a).cmp(&t(b)).then_with(|| a.cmp(b))
            });
            for key in batch {
                self.reconcile_one(&key, now, &mut actions);
            }
        }
        actions.append(&mut self.fwd.events);
        // A burst of writes (a first start among many Services, a pool edit) leaves the
        // in-flight table at its peak size once the echoes have emptied it: give that back.
        let cap = self.in_flight.capacity();
        if cap > IN_FLIGHT_KEPT && self.in_flight.len() * 4 < cap {
            self.in_flight
                .shrink_to((self.in_flight.len() * 2).max(IN_FLIGHT_KEPT));
        }
        actions
    }

    /// Decides forwarder mode for every member again, marks the Services whose outcome changed,
    /// and queues a Warning event for every new port conflict (on both Services when the
    /// culprit is one).
    fn decide_forwarding(&mut self) {
        self.fwd.dirty = false;
        let node_pools: BTreeMap<String, forwarder::NodePool> = self
            .pools
            .values()
            .filter_map(|p| p.node.clone().map(|n| (p.name.clone(), n)))
            .collect();
        let speakers: BTreeSet<String> = self
            .fwd
            .pods
            .values()
            .filter(|(_, ready)| *ready)
            .map(|(node, _)| node.clone())
            .collect();
        let mut endpoints: BTreeMap<SvcKey, BTreeSet<String>> = BTreeMap::new();
        for slice in self.fwd.slices.values() {
            if let Some((k, _)) = self.fwd.members.get_key_value(&*slice.service) {
                endpoints
                    .entry(k.clone())
                    .or_default()
                    .extend(slice.nodes.iter().map(|n| n.to_string()));
            }
        }
        let services: Vec<FwdService> = self
            .fwd
            .members
            .iter()
            .filter_map(|(key, pool)| {
                let v = self.services.get(key)?;
                Some(fwd_service(v, pool))
            })
            .collect();
        // In key order, as forwarder mode reads them (the first holder of an address keeps it).
        let holders: Vec<Holder> = self
            .services
            .values()
            .filter(|v| !self.fwd.members.contains_key(v.key()))
            .filter_map(|v| holder_of(v))
            .collect();
        let outcomes = forwarder::decide(forwarder::Inputs {
            nodes: &self.fwd.nodes,
            reports: &self.fwd.reports,
            speakers: &speakers,
            pools: &node_pools,
            services: &services,
            endpoints: &endpoints,
            holders: &holders,
            node_ports: &self.fwd.node_ports,
            block_node_port_shadowing: self.cfg.block_node_port_shadowing,
        });
        for (key, o) in &outcomes {
            let before = self.fwd.outcomes.get(key);
            if before != Some(o) {
                self.dirty.insert(key.clone());
            }
            let old: BTreeSet<&forwarder::PortConflict> =
                before.map(|b| b.conflicts().collect()).unwrap_or_default();
            for c in o.conflicts().filter(|c| !old.contains(c)) {
                let who = match &c.culprit {
                    forwarder::Culprit::Node { detail, .. } => detail.clone(),
                    forwarder::Culprit::Service(k) => format!("Service {k} holds it"),
                    forwarder::Culprit::NodePort(k) => format!("it is the nodePort of Service {k}"),
                };
                let note = format!(
                    "port {} ({}) unavailable on {}: {who}; that node is left out",
                    c.port,
                    c.port.family.as_str(),
                    c.node,
                );
                if let Some(v) = self.services.get(key) {
                    self.fwd.events.push(Action::Event {
                        target: service_target(v),
                        warning: true,
                        reason: "PortConflict".into(),
                        note: note.clone(),
                    });
                }
                if let forwarder::Culprit::Service(other) = &c.culprit
                    && let Some(v) = self.services.get(other)
                {
                    self.fwd.events.push(Action::Event {
                        target: service_target(v),
                        warning: true,
                        reason: "PortConflict".into(),
                        note: format!(
                            "Service {key} also wants port {} on {}; this Service keeps it",
                            c.port, c.node
                        ),
                    });
                }
            }
            let old_shadow: BTreeSet<&(forwarder::PortKey, SvcKey)> = before
                .map(|b| b.shadowed.iter().collect())
                .unwrap_or_default();
            for (port, other) in o.shadowed.iter().filter(|s| !old_shadow.contains(s)) {
                if let Some(v) = self.services.get(key) {
                    self.fwd.events.push(Action::Event {
                        target: service_target(v),
                        warning: true,
                        reason: "NodePortShadowed".into(),
                        note: format!(
                            "port {port} is also the nodePort of Service {other}; on the published node addresses this Service's rule wins"
                        ),
                    });
                }
            }
        }
        // Node pools that honour K3s servicelb's labels, while the labels are in use: say once
        // what they do and what the ferrolb way is.
        let allow_list = self
            .fwd
            .nodes
            .values()
            .any(|n| n.labels.contains_key(forwarder::nodes::K3S_ENABLELB));
        for pool in self.pools.values() {
            let honours = pool.node.as_ref().is_some_and(|n| n.k3s_labels);
            let active = honours && allow_list;
            if active && self.fwd.k3s_noted.insert(pool.name.clone()) {
                self.fwd.events.push(Action::Event {
                    target: Target::Pool {
                        name: pool.name.clone(),
                        uid: pool.uid.clone(),
                    },
                    warning: false,
                    reason: "K3sServiceLBLabels".into(),
                    note: format!(
                        "nodes carry {}: only nodes labelled true are published, and Services labelled {} only on nodes with the same label. The ferrolb way: nodeAddresses.nodeSelector on the pool, and one pool per group of nodes",
                        forwarder::nodes::K3S_ENABLELB,
                        forwarder::nodes::K3S_LBPOOL
                    ),
                });
            } else if !active {
                self.fwd.k3s_noted.remove(&pool.name);
            }
        }
        self.stats.forwarder_services = outcomes.len() as u64;
        self.stats.forwarder_conflicts.clear();
        for o in outcomes.values() {
            for c in o.conflicts() {
                *self
                    .stats
                    .forwarder_conflicts
                    .entry(c.reason().to_string())
                    .or_default() += 1;
            }
        }
        self.fwd.outcomes = outcomes;
        self.pools_dirty = true;
    }

    fn freed(&mut self) {
        self.pools_dirty = true;
        let pending = std::mem::take(&mut self.pending);
        self.dirty.extend(pending);
    }

    fn reconcile_one(&mut self, key: &SvcKey, now: &Time, actions: &mut Vec<Action>) {
        let skey = ServiceKey(key.to_string());
        let Some(view) = self.services.get(key).map(|v| (**v).clone()) else {
            self.pending.remove(key);
            self.in_flight.remove(key);
            self.leave_forwarding(key);
            if self.alloc.release(&skey) {
                self.freed();
            }
            return;
        };
        if !view.is_ours(&self.cfg.lb_class, self.cfg.ignore_classless) {
            self.pending.remove(key);
            self.leave_forwarding(key);
            let had = self.alloc.release(&skey);
            if had {
                self.freed();
            }
            if view.has_our_marks() {
                let desired = Desired {
                    ingress: Vec::new(),
                    ip_mode: "VIP",
                    condition: None,
                    forwarder: None,
                    pools: None,
                };
                let emitted = self.publish(&view, desired, None, now, actions);
                if emitted && had {
                    actions.push(Action::Event {
                        target: service_target(&view),
                        warning: false,
                        reason: "IPReleased".into(),
                        note:
                            "the Service is no longer a ferrolb LoadBalancer; its IPs were released"
                                .into(),
                    });
                }
            }
            return;
        }

        let built = service::build_request(&view);
        let (desired, deprecated, failure): (Desired, Vec<(String, String)>, Option<String>) =
            match built {
                Err(e) => {
                    let kept = self.alloc.assignment(&skey).cloned();
                    let d = self.desired_for(
                        kept.as_ref(),
                        Some(("False", e.reason().to_string(), e.to_string())),
                    );
                    (d, Vec::new(), Some(e.reason().to_string()))
                }
                Ok(b) => {
                    if let Some(pool) = self.node_pool_for(&view, &b.request) {
                        match self.forwarder_desired(key, &b.request, pool) {
                            Some(d) => (d, b.deprecated, None),
                            // Not decided yet: the next round decides it, then publishes.
                            None => return,
                        }
                    } else {
                        self.leave_forwarding(key);
                        let mut req = b.request;
                        req.candidate_pools = self.candidate_pools(&view);
                        let before = self.alloc.assignment(&skey).cloned();
                        match self.alloc.assign(&skey, &req) {
                            Ok(a) => {
                                self.pending.remove(key);
                                if before
                                    .as_ref()
                                    .is_some_and(|old| old.ips.iter().any(|ip| !a.ips.contains(ip)))
                                {
                                    self.freed();
                                }
                                if before.as_ref() != Some(&a) {
                                    self.pools_dirty = true;
                                }
                                (self.desired_for(Some(&a), None), b.deprecated, None)
                            }
                            Err(_)
                                if req.pool.is_none()
                                    && req.requested.is_empty()
                                    && let Some(pool) = self.fallback_node_pool(&view) =>
                            {
                                // The address pools offered first are full: the node pool
                                // after them serves.
                                match self.forwarder_desired(key, &req, pool) {
                                    Some(d) => (d, b.deprecated, None),
                                    None => return,
                                }
                            }
                            Err(e) => {
                                self.pending.insert(key.clone());
                                let kept = self.alloc.assignment(&skey).cloned();
                                let reason = camel(e.reason().as_str());
                                (
                                    self.desired_for(
                                        kept.as_ref(),
                                        Some(("False", reason.clone(), e.to_string())),
                                    ),
                                    b.deprecated,
                                    Some(reason),
                                )
                            }
                        }
                    }
                }
            };
        let previous_ingress = view.ingress.clone();
        let previous_condition = view.condition.as_deref().cloned();
        let ingress = desired.ingress.clone();
        let cond = desired.condition.clone();
        if self.publish(&view, desired, previous_condition.as_ref(), now, actions) {
            let target = service_target(&view);
            if !same_texts(&ingress, &previous_ingress) && !ingress.is_empty() {
                self.stats.allocations += 1;
                let from = cond.as_ref().map(|c| c.2.clone()).unwrap_or_default();
                actions.push(Action::Event {
                    target: target.clone(),
                    warning: false,
                    reason: "IPAllocated".into(),
                    note: from,
                });
            }
            if let Some((status, reason, message)) = &cond {
                let changed = previous_condition
                    .as_ref()
                    .is_none_or(|c| &*c.reason != reason || &*c.message != message);
                if changed && (status == "False" || reason == "NotInAnyPool") {
                    actions.push(Action::Event {
                        target: target.clone(),
                        warning: true,
                        reason: reason.clone(),
                        note: message.clone(),
                    });
                }
            }
            if let Some(reason) = failure {
                *self.stats.failures.entry(reason).or_default() += 1;
            }
            for (old, new) in deprecated {
                actions.push(Action::Event {
                    target: target.clone(),
                    warning: true,
                    reason: "DeprecatedAnnotation".into(),
                    note: format!("{old} is honoured for migration; use {new} instead"),
                });
            }
        }
    }

    /// Takes `key` out of forwarder mode, if it was in.
    fn leave_forwarding(&mut self, key: &SvcKey) {
        if self.fwd.members.remove(key).is_some() {
            self.fwd.outcomes.remove(key);
            self.fwd.dirty = true;
        }
    }

    /// What a Service of node pool `pool` should show: the addresses forwarder mode decided,
    /// `IPAllocated` saying where they come from, and `ForwarderReady` saying where they are
    /// published and why not elsewhere. `None` while the Service is not decided yet.
    fn forwarder_desired(&mut self, key: &SvcKey, req: &Request, pool: String) -> Option<Desired> {
        let skey = ServiceKey(key.to_string());
        self.pending.remove(key);
        if self.alloc.release(&skey) {
            // It moved here from an address pool.
            self.freed();
        }
        if self.fwd.members.get(key) != Some(&pool) {
            self.fwd.members.insert(key.clone(), pool.clone());
            self.fwd.outcomes.remove(key);
            self.fwd.dirty = true;
        }
        if !req.requested.is_empty() {
            let ips: Vec<String> = req.requested.iter().map(|i| i.to_string()).collect();
            return Some(Desired {
                ingress: Vec::new(),
                ip_mode: "VIP",
                condition: Some((
                    "False".into(),
                    "RequestedIPsNotForNodePools".into(),
                    format!(
                        "pool {pool} publishes the nodes' own addresses, so {} cannot be requested; remove the request or use an address pool",
                        ips.join(", ")
                    ),
                )),
                forwarder: None,
                pools: Some(pool),
            });
        }
        let o = self.fwd.outcomes.get(key)?;
        Some(Desired {
            ingress: o.ingress.iter().map(|i| i.to_string()).collect(),
            ip_mode: o.ip_mode,
            condition: Some((
                "True".into(),
                "NodeAddresses".into(),
                format!(
                    "node pool {pool} publishes node addresses (forwarder mode); see condition {}",
                    ferrolb_crds::conditions::FORWARDER_READY
                ),
            )),
            forwarder: Some((
                if o.reason.status() { "True" } else { "False" }.into(),
                o.reason.as_str().into(),
                o.message.clone(),
            )),
            pools: Some(pool),
        })
    }

    fn desired_for(
        &self,
        a: Option<&Assignment>,
        failure: Option<(&str, String, String)>,
    ) -> Desired {
        let ips: Vec<String> = a
            .map(|a| a.ips.iter().map(|i| i.ip.to_string()).collect())
            .unwrap_or_default();
        let mut pools: Vec<String> = a
            .map(|a| a.ips.iter().filter_map(|i| i.pool.clone()).collect())
            .unwrap_or_default();
        pools.dedup();
        let orphans: Vec<String> = a
            .map(|a| {
                a.ips
                    .iter()
                    .filter(|i| i.pool.is_none())
                    .map(|i| i.ip.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let condition = match failure {
            Some((s, r, m)) => Some((s.to_string(), r, m)),
            None if !orphans.is_empty() => Some((
                "True".into(),
                "NotInAnyPool".into(),
                format!(
                    "{} is in no IPAddressPool any more; the Service keeps it. Add it back to a pool, or annotate the Service ferrolb.io/allow-ip-change=true to move it to a new IP",
                    orphans.join(", ")
                ),
            )),
            None => {
                let parts: Vec<String> = a
                    .map(|a| {
                        a.ips
                            .iter()
                            .map(|i| {
                                format!("{} from pool {}", i.ip, i.pool.as_deref().unwrap_or("-"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(("True".into(), "Allocated".into(), parts.join(", ")))
            }
        };
        Desired {
            ingress: ips,
            ip_mode: "VIP",
            condition,
            forwarder: None,
            pools: if pools.is_empty() {
                None
            } else {
                Some(pools.join(","))
            },
        }
    }

    /// Emits the writes that make `view` show `desired`. Returns whether anything was written.
    fn publish(
        &mut self,
        view: &ServiceView,
        desired: Desired,
        previous: Option<&ObservedCondition>,
        now: &Time,
        actions: &mut Vec<Action>,
    ) -> bool {
        let key = view.key().clone();
        // Entries without one `ipMode` never equal what we want, so they are rewritten; with no
        // entries the mode means nothing.
        let shown_mode = match view.ingress_mode.as_deref() {
            _ if view.ingress.is_empty() => desired.ip_mode,
            Some("VIP") => "VIP",
            Some("Proxy") => "Proxy",
            _ => "<mixed or no ipMode>",
        };
        let observed = Desired {
            ingress: view.ingress.iter().map(|s| s.to_string()).collect(),
            ip_mode: shown_mode,
            condition: view.condition.as_ref().map(|c| {
                (
                    c.status.to_string(),
                    c.reason.to_string(),
                    c.message.to_string(),
                )
            }),
            forwarder: view.forwarder.as_ref().map(|c| {
                (
                    c.status.to_string(),
                    c.reason.to_string(),
                    c.message.to_string(),
                )
            }),
            pools: view
                .annotations
                .get(ferrolb_crds::annotations::ALLOCATED_FROM_POOL)
                .map(String::from),
        };
        if observed == desired {
            self.in_flight.remove(&key);
            return false;
        }
        if self.in_flight.get(&key) == Some(&desired) {
            return false;
        }
        let mut wrote = false;
        if observed.ingress != desired.ingress
            || observed.ip_mode != desired.ip_mode
            || observed.condition != desired.condition
            || observed.forwarder != desired.forwarder
        {
            let build = |type_: &str,
                         want: &Option<(String, String, String)>,
                         previous: Option<&ObservedCondition>| {
                want.as_ref().map(|(s, r, m)| Condition {
                    type_: type_.into(),
                    status: s.clone(),
                    reason: r.clone(),
                    message: m.clone(),
                    observed_generation: view.generation,
                    last_transition_time: previous
                        .filter(|p| &*p.status == s)
                        .map(|p| p.last_transition_time.clone())
                        .unwrap_or_else(|| now.clone()),
                })
            };
            let condition = build(
                ferrolb_crds::conditions::IP_ALLOCATED,
                &desired.condition,
                previous,
            );
            let forwarder = build(
                ferrolb_crds::conditions::FORWARDER_READY,
                &desired.forwarder,
                view.forwarder.as_deref(),
            );
            actions.push(Action::ServiceStatus {
                namespace: view.namespace().to_string(),
                name: view.name().to_string(),
                ingress: desired
                    .ingress
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                condition,
                forwarder,
                ip_mode: desired.ip_mode,
            });
            wrote = true;
        }
        if observed.pools != desired.pools {
            actions.push(Action::ServiceAnnotation {
                namespace: view.namespace().to_string(),
                name: view.name().to_string(),
                pools: desired.pools.clone(),
            });
            wrote = true;
        }
        self.in_flight.insert(key, desired);
        wrote
    }

    /// Pool and L2Advertisement statuses that differ from what the objects show, with a Warning
    /// event for each condition that turns bad or says something new while bad.
    pub fn object_statuses(&mut self, now: &Time) -> Vec<Action> {
        if !self.ready() || !self.leader || !self.built {
            return Vec::new();
        }
        let mut out = Vec::new();
        if std::mem::take(&mut self.pools_dirty) {
            out.extend(self.ip_pool_statuses(now));
        }
        if std::mem::take(&mut self.l2_dirty) {
            out.extend(self.l2_statuses(now));
        }
        out
    }

    fn l2_statuses(&self, now: &Time) -> Vec<Action> {
        let mut out = Vec::new();
        for l2 in self.l2ads.values() {
            let status = l2adv::desired_status(l2, &self.pools, now);
            if !l2adv::status_differs(&status, l2.status.as_ref()) {
                continue;
            }
            let target = Target::L2Advertisement {
                name: l2.name.clone(),
                uid: l2.uid.clone(),
            };
            let was = l2.status.as_ref().map(|s| s.conditions.as_slice());
            out.extend(warning(
                &target,
                was,
                &status.conditions,
                &[(ferrolb_crds::conditions::L2_READY, "False")],
            ));
            out.push(Action::L2Status {
                name: l2.name.clone(),
                status,
            });
        }
        out
    }

    fn ip_pool_statuses(&self, now: &Time) -> Vec<Action> {
        let overlaps = self.alloc.overlaps();
        let mut out = Vec::new();
        for pool in self.pools.values() {
            let status = if pool.is_node_pool() {
                let services = self
                    .fwd
                    .members
                    .values()
                    .filter(|p| **p == pool.name)
                    .count();
                let mut nodes: BTreeSet<&str> = BTreeSet::new();
                for (k, o) in &self.fwd.outcomes {
                    if self.fwd.members.get(k) == Some(&pool.name) {
                        nodes.extend(o.published.iter().map(String::as_str));
                    }
                }
                let nodes: Vec<String> = nodes.into_iter().map(String::from).collect();
                pools::desired_node_pool_status(pool, services, &nodes, now)
            } else {
                let Some(stats) = self.alloc.pool_stats(&pool.name) else {
                    continue;
                };
                pools::desired_status(pool, stats, &overlaps, now)
            };
            if pools::status_differs(&status, pool.status.as_ref()) {
                let target = Target::Pool {
                    name: pool.name.clone(),
                    uid: pool.uid.clone(),
                };
                let was = pool.status.as_ref().map(|s| s.conditions.as_slice());
                let bad_when = [
                    (ferrolb_crds::conditions::POOL_OVERLAP, "True"),
                    (ferrolb_crds::conditions::POOL_READY, "False"),
                ];
                out.extend(warning(&target, was, &status.conditions, &bad_when));
                out.push(Action::PoolStatus {
                    name: pool.name.clone(),
                    status,
                });
            }
        }
        out
    }
}

/// Warning events for the conditions of `now` that are bad (`(type, bad status)` in `bad_when`)
/// and were not already bad with the same message in `was`.
fn warning(
    target: &Target,
    was: Option<&[Condition]>,
    now: &[Condition],
    bad_when: &[(&str, &str)],
) -> Vec<Action> {
    let find = |conds: &[Condition], type_: &str, bad: &str| {
        conds
            .iter()
            .find(|c| c.type_ == type_ && c.status == bad)
            .cloned()
    };
    bad_when
        .iter()
        .filter_map(|(type_, bad)| {
            let c = find(now, type_, bad)?;
            let before = was.and_then(|w| find(w, type_, bad));
            (before.map(|b| b.message).as_deref() != Some(c.message.as_str())).then(|| {
                Action::Event {
                    target: target.clone(),
                    warning: true,
                    reason: c.reason.clone(),
                    note: c.message.clone(),
                }
            })
        })
        .collect()
}

/// What forwarder mode reads of a Service of node pool `pool`.
fn fwd_service(v: &ServiceView, pool: &str) -> FwdService {
    let fams: Vec<Family> = v
        .ip_families
        .iter()
        .filter_map(|f| forwarder::nodes::family_of(f))
        .collect();
    let first = fams.first().copied().unwrap_or(Family::V4);
    let other = match first {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    };
    let policy = v.ip_family_policy.as_deref();
    let families = match policy {
        Some("RequireDualStack") | Some("PreferDualStack") => vec![first, other],
        _ => vec![first],
    };
    FwdService {
        key: v.key().clone(),
        created: v.created.as_ref().map(|t| t.0.as_second()),
        pool: pool.to_string(),
        ports: v.ports.to_vec(),
        families,
        require_dual: policy == Some("RequireDualStack"),
        etp_local: v.etp_local,
        labels: v.labels.clone(),
    }
}

fn service_target(view: &ServiceView) -> Target {
    Target::Service {
        namespace: view.namespace().to_string(),
        name: view.name().to_string(),
        uid: view.uid.as_deref().map(String::from),
    }
}

/// Whether the IPs we want are, as text, the ones the Service shows.
fn same_texts(want: &[String], shown: &[Box<str>]) -> bool {
    want.len() == shown.len() && want.iter().zip(shown).all(|(a, b)| a.as_str() == &**b)
}

#[cfg(test)]
mod tests {
    //! The forwarder-mode indexes: EndpointSlices kept compactly, and the addresses other
    //! Services hold, read from the index. The core's behaviour at large is tested in
    //! `tests/core.rs`.

    use super::*;
    use ferrolb_crds::IPAddressPool;
    use k8s_openapi::api::core::v1::{Node, Service};
    use serde_json::json;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pool(spec: serde_json::Value, name: &str) -> PoolView {
        let p: IPAddressPool =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
                .expect("pool");
        PoolView::from_pool(&p).expect("named")
    }

    /// A LoadBalancer Service on port 80 in namespace `shop`, pinned to `pool`.
    fn service(name: &str, created: i64, pool: &str, spec: serde_json::Value) -> ServiceView {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                         "annotations": {"ferrolb.io/address-pool": pool}},
            "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"], "ports": [{"port": 80}]},
        }))
        .expect("service");
        s.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).expect("time"),
        ));
        if let (Some(have), Ok(extra)) = (
            s.spec.as_mut(),
            serde_json::from_value::<k8s_openapi::api::core::v1::ServiceSpec>(spec),
        ) {
            have.external_ips = extra.external_ips.or(have.external_ips.take());
            have.external_traffic_policy = extra.external_traffic_policy;
        }
        ServiceView::from_service(&s).expect("named")
    }

    /// Two ready nodes with ready speakers whose reports say port 80 is free, a node pool
    /// `edge` and an address pool `blue`, synced and leading.
    fn cluster() -> Core {
        let mut c = Core::new(CoreConfig {
            lb_class: "ferrolb.io/lb".into(),
            ignore_classless: false,
            block_node_port_shadowing: false,
        });
        c.upsert_pool(pool(json!({"nodeAddresses": {}}), "edge"));
        c.upsert_pool(pool(json!({"addresses": ["203.0.113.0/28"]}), "blue"));
        for k in 1..=2 {
            let n: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("node-{k}")},
                "status": {"addresses": [{"type": "InternalIP", "address": format!("198.51.100.1{k}")}],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .expect("node");
            c.upsert_node(NodeView::from_node(&n).expect("named"));
            c.upsert_speaker_pod(
                format!("ferrolb-system/speaker-{k}"),
                format!("node-{k}"),
                true,
            );
            let mut r = NodeReport::default();
            r.checked.insert(forwarder::PortKey {
                family: Family::V4,
                protocol: Protocol::Tcp,
                port: 80,
            });
            c.upsert_report(format!("node-{k}"), r);
        }
        c.resynced(Kind::Pools, &names(&["edge", "blue"]));
        for kind in [
            Kind::Services,
            Kind::Namespaces,
            Kind::L2Advertisements,
            Kind::Nodes,
            Kind::ForwarderNodes,
            Kind::SpeakerPods,
            Kind::EndpointSlices,
        ] {
            let seen = match kind {
                Kind::Nodes | Kind::ForwarderNodes => names(&["node-1", "node-2"]),
                Kind::SpeakerPods => {
                    names(&["ferrolb-system/speaker-1", "ferrolb-system/speaker-2"])
                }
                _ => BTreeSet::new(),
            };
            c.resynced(kind, &seen);
        }
        c.set_leader(true);
        c
    }

    /// The ingress the last status write of `name` in `actions` asks for.
    fn ingress(actions: &[Action], name: &str) -> Option<Vec<String>> {
        actions.iter().rev().find_map(|a| match a {
            Action::ServiceStatus {
                name: n, ingress, ..
            } if n == name => Some(ingress.iter().map(|i| i.to_string()).collect()),
            _ => None,
        })
    }

    #[test]
    fn the_in_flight_table_shrinks_after_a_burst() {
        let mut c = cluster();
        c.upsert_pool(pool(json!({"addresses": ["203.0.113.0/20"]}), "blue"));
        for i in 0..3000 {
            c.upsert_service(service(&format!("s{i}"), i, "blue", json!({})));
        }
        let actions = c.reconcile(&now());
        assert_eq!(ingress(&actions, "s2999").map(|i| i.len()), Some(1));
        assert_eq!(
            c.in_flight.len(),
            3000,
            "every status write awaits its echo"
        );
        let peak = c.in_flight.capacity();
        for i in 0..3000 {
            c.delete_service(&format!("shop/s{i}"));
        }
        c.reconcile(&now());
        assert!(c.in_flight.is_empty());
        assert!(
            c.in_flight.capacity() <= 2 * IN_FLIGHT_KEPT && c.in_flight.capacity() < peak,
            "{} of {peak} kept",
            c.in_flight.capacity()
        );
    }

    #[test]
    fn slices_without_ready_endpoints_are_not_kept_and_node_names_are_shared() {
        let mut c = cluster();
        c.upsert_slice(
            "shop/web-a".into(),
            "shop/web".into(),
            names(&["node-1", "node-2"]),
        );
        c.upsert_slice("shop/web-b".into(), "shop/web".into(), names(&["node-1"]));
        c.upsert_slice("shop/db-a".into(), "shop/db".into(), names(&[]));
        let keys = |c: &Core| {
            c.fwd
                .slices
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
        };
        let shared = |c: &Core| {
            c.fwd
                .slice_nodes
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&c), ["shop/web-a", "shop/web-b"]);
        assert_eq!(shared(&c), ["node-1", "node-2"]);
        assert!(
            Arc::ptr_eq(
                &c.fwd.slices["shop/web-a"].nodes[0],
                &c.fwd.slices["shop/web-b"].nodes[0]
            ),
            "one copy of a node name for every slice naming it"
        );
        // web-a loses its ready endpoints: it leaves, and node-2 with it.
        c.upsert_slice("shop/web-a".into(), "shop/web".into(), names(&[]));
        assert_eq!(keys(&c), ["shop/web-b"]);
        assert_eq!(shared(&c), ["node-1"]);
        c.delete_slice("shop/web-b");
        assert!(c.fwd.slices.is_empty() && c.fwd.slice_nodes.is_empty());
        // A relist drops what it no longer has, names included.
        c.upsert_slice("shop/web-c".into(), "shop/web".into(), names(&["node-2"]));
        c.resynced(Kind::EndpointSlices, &BTreeSet::new());
        assert!(c.fwd.slices.is_empty() && c.fwd.slice_nodes.is_empty());
    }

    #[test]
    fn local_service_follows_its_ready_endpoints() {
        let mut c = cluster();
        let web = service("web", 1, "edge", json!({"externalTrafficPolicy": "Local"}));
        c.upsert_service(web);
        c.upsert_slice("shop/web-a".into(), "shop/web".into(), names(&["node-1"]));
        let actions = c.reconcile(&now());
        assert_eq!(
            ingress(&actions, "web"),
            Some(vec!["198.51.100.11".to_string()])
        );
        // The endpoint is no longer ready: the slice leaves the index, and with it the node.
        c.upsert_slice("shop/web-a".into(), "shop/web".into(), names(&[]));
        let actions = c.reconcile(&now());
        assert_eq!(ingress(&actions, "web"), Some(vec![]));
        c.upsert_slice("shop/web-a".into(), "shop/web".into(), names(&["node-2"]));
        let actions = c.reconcile(&now());
        assert_eq!(
            ingress(&actions, "web"),
            Some(vec!["198.51.100.12".to_string()])
        );
    }

    #[test]
    fn addresses_other_services_hold_are_read_from_the_index() {
        let mut c = cluster();
        // An address-pool Service that also holds node-1's address on port 80.
        let holder = service(
            "holder",
            1,
            "blue",
            json!({"externalIPs": ["198.51.100.11"]}),
        );
        c.upsert_service(holder);
        c.upsert_service(service("web", 2, "edge", json!({})));
        let actions = c.reconcile(&now());
        assert_eq!(
            ingress(&actions, "web"),
            Some(vec!["198.51.100.12".to_string()])
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Event { reason, note, .. }
                if reason == "PortConflict" && note.contains("Service shop/holder holds it"))),
            "{actions:?}"
        );
        // It gives the address up: forwarder mode decides again, and node-1 is published too.
        c.upsert_service(service("holder", 1, "blue", json!({})));
        let actions = c.reconcile(&now());
        assert_eq!(
            ingress(&actions, "web"),
            Some(vec![
                "198.51.100.11".to_string(),
                "198.51.100.12".to_string()
            ])
        );
        // And when it takes it again, node-1 leaves again.
        c.upsert_service(service(
            "holder",
            1,
            "blue",
            json!({"externalIPs": ["198.51.100.11"]}),
        ));
        let actions = c.reconcile(&now());
        assert_eq!(
            ingress(&actions, "web"),
            Some(vec!["198.51.100.12".to_string()])
        );
        // A deleted holder frees it.
        c.delete_service("shop/holder");
        let actions = c.reconcile(&now());
        assert_eq!(
            ingress(&actions, "web"),
            Some(vec![
                "198.51.100.11".to_string(),
                "198.51.100.12".to_string()
            ])
        );
    }
}
