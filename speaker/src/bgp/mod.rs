//! The BGP mode: each node peers with the routers its BGPPeers name and announces the Service
//! IPs the BGPAdvertisements cover; routers spread traffic over the announcing nodes (ECMP).
//!
//! Reads the shared plan's snapshot ([`crate::watch::Published::snapshot`]) and its notions
//! (pools, the exclusion label, endpoints: [`crate::plan`]), and owns everything else it
//! needs:
//!
//! - pure: [`decide`] (which sessions, which routes per session, whether the node is
//!   leaving), [`objects`] (projections), [`state`]'s status builder;
//! - shells: [`watch`] (BGP objects, Secrets, this Node), [`session`] (one task per session
//!   around the core state machine), [`socket`] (TCP MD5, TTL, `TCP_USER_TIMEOUT`), [`bfd`]
//!   (one OS thread for every BFD session), [`state`]'s writer (`BGPSessionState`), and
//!   [`run`], the manager below, which carries decisions out.
//!
//! It never reaches into another mode; no other mode reaches into it. The heartbeats are not
//! used: every node speaks for itself, and BFD is what makes a router drop a dead node fast.
//!
//! # The manager
//!
//! One task. Whenever the snapshot, the BGP inputs or the interfaces change it decides again
//! and reconciles: new sessions start (the first after a process start offers graceful
//! restart with the R bit, so the router keeps our routes until our End-of-RIB), changed
//! routes go to their session, a session whose spec changed is de-configured and started
//! anew once the old one has closed, sessions no longer wanted withdraw, drain and close with
//! Cease 6/3 (peer de-configured). BFD sessions follow the BGP sessions; a BFD failure tears
//! its BGP session down at once.
//!
//! **Leaving and stopping.** When the Node is leaving ([`objects::Leaving`]) every session
//! withdraws (after GRACEFUL_SHUTDOWN if configured), drains and closes with Cease 6/2, and
//! none starts until it no longer is. On SIGTERM: if the node is leaving (or
//! `--bgp-on-term=shutdown`) the same, then BFD goes AdminDown; otherwise a planned restart:
//! BFD AdminDown is sent for a detection time first (so the router does not read the coming
//! silence as a failure), then the sessions close without a NOTIFICATION where graceful
//! restart was negotiated, and the router keeps the routes until the next speaker's
//! End-of-RIB.

pub mod bfd;
pub mod config;
pub mod decide;
pub mod metrics;
pub mod objects;
pub mod session;
pub mod socket;
pub mod state;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::bfd::{BfdState, Hops};
use ferrolb_speaker_core::bgp::{Prefix, RouteAttrs, Stop};
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio::task::JoinHandle;

pub use config::{BgpArgs, OnTerm};

use self::decide::{BgpInputs, DecideConfig, Decision, SessionSpec};
use self::session::{Command, NextHopSource, Report};
use self::state::{StateInputs, Update};
use crate::netif::IfaceTable;
use crate::plan::PlanConfig;
use crate::watch::Published;

/// Longest wait for BFD AdminDown to be seen before a planned restart closes the sessions.
pub const ADMIN_DOWN_WAIT: Duration = Duration::from_secs(5);
/// Slack beyond the configured delays when waiting for sessions to close.
pub const CLOSE_SLACK: Duration = Duration::from_secs(3);

/// Static settings.
#[derive(Debug, Clone)]
pub struct BgpConfig {
    /// This node.
    pub node: String,
    /// The shared plan's settings.
    pub plan: PlanConfig,
    /// The mode's flags.
    pub args: BgpArgs,
}

struct Running {
    spec: SessionSpec,
    tx: mpsc::UnboundedSender<Command>,
    routes: Option<BTreeMap<Prefix, RouteAttrs>>,
    report: Report,
    stopping: bool,
    _join: JoinHandle<()>,
}

struct Manager {
    cfg: BgpConfig,
    metrics: Metrics,
    /// This node's InternalIPs as last published (next hops of the other family).
    node_ips: Vec<IpAddr>,
    ifaces: tokio_watch::Receiver<IfaceTable>,
    reports_tx: mpsc::UnboundedSender<(String, Report)>,
    running: BTreeMap<String, Running>,
    /// Sessions waiting for their predecessor to close.
    pending: BTreeMap<String, decide::SessionPlan>,
    /// Peers that had a session since the process started (the first one sets the R bit).
    started_once: BTreeSet<String>,
    bfd: Option<bfd::Handle>,
    /// BFD state per peer, as last reported.
    bfd_state: BTreeMap<String, BfdState>,
    /// Peers with a BFD session in the thread.
    bfd_peers: BTreeSet<String>,
    states: mpsc::UnboundedSender<Update>,
    decision: Option<Decision>,
    retained: bool,
    seed: u64,
}

fn local_addrs(t: &IfaceTable) -> BTreeSet<IpAddr> {
    t.values()
        .flat_map(|i| i.addrs.iter().map(|(a, _)| *a))
        .collect()
}

/// Runs BGP mode until `shutdown` turns true and the graceful stop is done.
pub async fn run(
    client: kube::Client,
    cfg: BgpConfig,
    mut published: tokio_watch::Receiver<Option<Arc<Published>>>,
    mut ifaces: tokio_watch::Receiver<IfaceTable>,
    mut shutdown: tokio_watch::Receiver<bool>,
    metrics: Metrics,
) {
    let (inputs_tx, mut inputs) = tokio_watch::channel(None);
    tokio::spawn(watch::run(
        client.clone(),
        cfg.node.clone(),
        cfg.args.secret_namespace(),
        inputs_tx,
    ));
    let (states_tx, states_rx) = mpsc::unbounded_channel();
    tokio::spawn(state::run(
        client.clone(),
        cfg.node.clone(),
        states_rx,
        metrics.clone(),
    ));
    let (bfd_tx, mut bfd_rx) = mpsc::unbounded_channel();
    let bfd = match bfd::spawn(cfg.args.bfd_port, bfd_tx, metrics.clone()) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "BFD is not available; sessions run without it");
            None
        }
    };
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
        ^ u64::from(std::process::id());
    let mut mgr = Manager {
        cfg,
        metrics,
        node_ips: Vec::new(),
        ifaces: ifaces.clone(),
        reports_tx,
        running: BTreeMap::new(),
        pending: BTreeMap::new(),
        started_once: BTreeSet::new(),
        bfd,
        bfd_state: BTreeMap::new(),
        bfd_peers: BTreeSet::new(),
        states: states_tx,
        decision: None,
        retained: false,
        seed,
    };
    tracing::info!(node = %mgr.cfg.node, "BGP mode on");
    loop {
        tokio::select! {
            r = published.changed() => if r.is_err() { break },
            r = inputs.changed() => if r.is_err() { break },
            r = ifaces.changed() => if r.is_err() { break },
            Some((peer, report)) = reports_rx.recv() => {
                mgr.on_report(peer, report);
                continue;
            }
            Some(b) = bfd_rx.recv() => {
                mgr.on_bfd(b);
                continue;
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        }
        let p = published.borrow().clone();
        let i = inputs.borrow().clone();
        if let (Some(p), Some(i)) = (p, i) {
            mgr.reconcile(&p, &i);
        }
    }
    mgr.stop(&mut reports_rx, &mut bfd_rx).await;
}

impl Manager {
    fn decide_cfg(&self) -> DecideConfig {
        DecideConfig {
            plan: self.cfg.plan.clone(),
            withdraw_on_cordon: self.cfg.args.withdraw_on_cordon,
            restart_time: self.cfg.args.restart_time.min(4095),
        }
    }

    fn shutdown_stop(&self, why: &str) -> Stop {
        Stop::Shutdown {
            message: format!("ferrolb: {why}"),
            graceful_shutdown: self.cfg.args.graceful_shutdown,
            drain: self.cfg.args.drain_delay,
        }
    }

    fn reconcile(&mut self, p: &Published, inputs: &BgpInputs) {
        let addrs = local_addrs(&self.ifaces.borrow());
        let d = decide::decide(&p.snapshot, inputs, &self.decide_cfg(), &addrs);
        self.node_ips = p.node_ips.clone();
        let node_ips = self.node_ips.clone();
        if let Some(why) = d.leaving {
            for (peer, r) in self.running.iter_mut() {
                if !r.stopping {
                    tracing::info!(peer = %peer, reason = why.as_str(), "node leaving: withdrawing, draining, closing");
                    let _ = r.tx.send(Command::Stop(Stop::Shutdown {
                        message: format!("ferrolb: {}", why.as_str()),
                        graceful_shutdown: self.cfg.args.graceful_shutdown,
                        drain: self.cfg.args.drain_delay,
                    }));
                    r.stopping = true;
                }
            }
            self.pending.clear();
        } else {
            // Sessions no longer wanted, or whose spec changed.
            for (peer, r) in self.running.iter_mut() {
                if r.stopping {
                    continue;
                }
                match d.sessions.get(peer) {
                    None => {
                        tracing::info!(peer = %peer, "peer no longer applies to this node: withdrawing, then Cease 6/3");
                        let _ = r.tx.send(Command::Stop(Stop::Deconfigured {
                            drain: self.cfg.args.drain_delay,
                        }));
                        r.stopping = true;
                    }
                    Some(plan) if plan.spec != r.spec => {
                        tracing::info!(peer = %peer, "peer configuration changed: closing the session to open a new one");
                        let _ = r.tx.send(Command::Stop(Stop::Deconfigured {
                            drain: Duration::ZERO,
                        }));
                        r.stopping = true;
                    }
                    Some(_) => {}
                }
            }
            self.pending.clear();
            for (peer, plan) in &d.sessions {
                match self.running.get_mut(peer) {
                    Some(r) if !r.stopping => {
                        if r.routes.as_ref() != Some(&plan.routes) {
                            let _ = r.tx.send(Command::Routes(plan.routes.clone()));
                            r.routes = Some(plan.routes.clone());
                        }
                    }
                    Some(_) => {
                        self.pending.insert(peer.clone(), plan.clone());
                    }
                    None => self.start(plan.clone(), &node_ips),
                }
            }
        }
        self.sync_bfd(&d);
        self.metrics.clear(metrics::SKIPPED);
        for (_, skip) in d.skipped.values() {
            self.metrics.inc(
                metrics::SKIPPED,
                metrics::SKIPPED_HELP,
                &[("reason", skip.as_str())],
                1.0,
            );
        }
        if !self.retained {
            self.retained = true;
            let keep = d.sessions.keys().chain(d.skipped.keys()).cloned().collect();
            let _ = self.states.send(Update::Retain(keep));
        }
        let old = self.decision.replace(d);
        self.publish_states(old.as_ref());
    }

    fn start(&mut self, plan: decide::SessionPlan, node_ips: &[IpAddr]) {
        let peer = plan.spec.peer.clone();
        let restarting = self.started_once.insert(peer.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Command::Routes(plan.routes.clone()));
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let join = tokio::spawn(session::run(
            plan.spec.clone(),
            restarting,
            self.seed,
            rx,
            self.reports_tx.clone(),
            NextHopSource {
                ifaces: self.ifaces.clone(),
                node_ips: node_ips.to_vec(),
            },
            self.metrics.clone(),
        ));
        tracing::info!(peer = %peer, address = %plan.spec.address, graceful_restart = plan.spec.graceful_restart.is_some(), bfd = plan.spec.bfd.is_some(), "BGP session starting");
        self.running.insert(
            peer,
            Running {
                spec: plan.spec,
                tx,
                routes: Some(plan.routes),
                report: Report::default(),
                stopping: false,
                _join: join,
            },
        );
    }

    fn sync_bfd(&mut self, d: &Decision) {
        let Some(bfd) = self.bfd.as_ref() else {
            return;
        };
        let leaving = d.leaving.is_some();
        let mut want = BTreeSet::new();
        if !leaving {
            for (peer, plan) in &d.sessions {
                let Some(b) = plan.spec.bfd else { continue };
                want.insert(peer.clone());
                let config = ferrolb_speaker_core::bfd::Config {
                    desired_min_tx: b.profile.transmit,
                    required_min_rx: b.profile.receive,
                    detect_mult: b.profile.multiplier,
                    passive: b.profile.passive,
                    hops: if b.multihop {
                        Hops::Multi {
                            min_ttl: b.profile.minimum_ttl.unwrap_or(254),
                        }
                    } else {
                        Hops::Single
                    },
                };
                bfd.send(bfd::Command::Add {
                    peer: peer.clone(),
                    remote: plan.spec.address.ip(),
                    config,
                });
            }
        }
        let gone: Vec<String> = self.bfd_peers.difference(&want).cloned().collect();
        for gone in &gone {
            // While a node leaves, BFD stays up until the sessions closed (see `stop`), so
            // the router does not flush routes before the drain ends.
            if leaving && self.running.contains_key(gone) {
                want.insert(gone.clone());
                continue;
            }
            bfd.send(bfd::Command::Remove { peer: gone.clone() });
            self.bfd_state.remove(gone);
        }
        self.bfd_peers = want;
    }

    fn on_report(&mut self, peer: String, report: Report) {
        let ended = report.ended;
        if let Some(r) = self.running.get_mut(&peer) {
            r.report = report;
        }
        if ended {
            self.running.remove(&peer);
            if let Some(plan) = self.pending.remove(&peer) {
                let ips = self.node_ips.clone();
                self.start(plan, &ips);
            }
        }
        self.publish_states(None);
    }

    fn on_bfd(&mut self, b: bfd::Report) {
        if let bfd::Report::State {
            peer,
            state,
            failure,
            ..
        } = b
        {
            self.bfd_state.insert(peer.clone(), state);
            if failure && let Some(r) = self.running.get(&peer) {
                tracing::warn!(peer = %peer, "BFD down: closing the BGP session");
                let _ = r.tx.send(Command::BfdDown);
            }
            self.publish_states(None);
        }
    }

    /// Sends every session's state to the writer (the writer skips what did not change).
    fn publish_states(&mut self, old: Option<&Decision>) {
        let Some(d) = self.decision.as_ref() else {
            return;
        };
        let node = self.cfg.node.clone();
        let mut present = BTreeSet::new();
        for (peer, plan) in &d.sessions {
            present.insert(peer.clone());
            let report = self.running.get(peer).map(|r| &r.report);
            let not_carried: Vec<String> = plan
                .not_carried
                .iter()
                .map(|p| format!("{}/{}", p.addr(), p.len()))
                .collect();
            let st = state::status_of(&StateInputs {
                node: &node,
                peer,
                address: Some(plan.spec.address),
                report,
                bfd: plan
                    .spec
                    .bfd
                    .map(|_| self.bfd_state.get(peer).copied().unwrap_or(BfdState::Down)),
                not_started: None,
                warnings: &plan.warnings,
                not_carried: &not_carried,
            });
            let _ = self.states.send(Update::Put {
                peer: peer.clone(),
                peer_uid: plan.spec.peer_uid.clone(),
                status: Box::new(st),
            });
        }
        for (peer, (uid, skip)) in &d.skipped {
            present.insert(peer.clone());
            let st = state::status_of(&StateInputs {
                node: &node,
                peer,
                address: None,
                report: None,
                bfd: None,
                not_started: Some(skip.to_string()),
                warnings: &[],
                not_carried: &[],
            });
            let _ = self.states.send(Update::Put {
                peer: peer.clone(),
                peer_uid: uid.clone(),
                status: Box::new(st),
            });
        }
        if let Some(old) = old {
            for peer in old.sessions.keys().chain(old.skipped.keys()) {
                if !present.contains(peer) {
                    let _ = self.states.send(Update::Delete { peer: peer.clone() });
                }
            }
        }
    }

    /// The graceful stop on SIGTERM (see the module docs). Every wait is bounded.
    async fn stop(
        &mut self,
        reports: &mut mpsc::UnboundedReceiver<(String, Report)>,
        bfd_reports: &mut mpsc::UnboundedReceiver<bfd::Report>,
    ) {
        let leaving = self.decision.as_ref().and_then(|d| d.leaving);
        let shutdown = match self.cfg.args.on_term {
            OnTerm::Shutdown => true,
            OnTerm::Restart => false,
            OnTerm::Auto => leaving.is_some(),
        };
        let started = Instant::now();
        tracing::info!(shutdown, sessions = self.running.len(), "BGP mode stopping");
        if shutdown {
            let why = leaving.map(|l| l.as_str()).unwrap_or("speaker stopping");
            let stop = self.shutdown_stop(why);
            for r in self.running.values_mut().filter(|r| !r.stopping) {
                let _ = r.tx.send(Command::Stop(stop.clone()));
                r.stopping = true;
            }
            let wait = self.cfg.args.drain_delay
                + self.cfg.args.graceful_shutdown.unwrap_or_default()
                + CLOSE_SLACK;
            self.wait_sessions(reports, wait).await;
            self.admin_down_bfd(bfd_reports).await;
        } else {
            self.admin_down_bfd(bfd_reports).await;
            for r in self.running.values_mut() {
                let _ = r.tx.send(Command::Stop(Stop::Restart {
                    message: "ferrolb speaker restarting".into(),
                }));
                r.stopping = true;
            }
            self.wait_sessions(reports, CLOSE_SLACK).await;
        }
        tracing::info!(elapsed = ?started.elapsed(), left = self.running.len(), "BGP mode stopped");
    }

    async fn wait_sessions(
        &mut self,
        reports: &mut mpsc::UnboundedReceiver<(String, Report)>,
        wait: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some((peer, report))) => {
                    if report.ended {
                        self.running.remove(&peer);
                    } else if let Some(r) = self.running.get_mut(&peer) {
                        r.report = report;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    async fn admin_down_bfd(&mut self, bfd_reports: &mut mpsc::UnboundedReceiver<bfd::Report>) {
        let Some(bfd) = self.bfd.as_ref() else { return };
        if self.bfd_peers.is_empty() {
            return;
        }
        bfd.send(bfd::Command::AdminDownAll);
        let deadline = tokio::time::Instant::now() + ADMIN_DOWN_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, bfd_reports.recv()).await {
                Ok(Some(bfd::Report::AdminDownDone)) | Ok(None) | Err(_) => break,
                Ok(Some(_)) => {}
            }
        }
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("node", &self.cfg.node)
            .field("sessions", &self.running.len())
            .finish_non_exhaustive()
    }
}
