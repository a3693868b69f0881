//! The L2 mode's shell: from the shared plan and the membership view to ports, answer sets,
//! takeover announcements and the `ferrolb.io/Announced` condition.
//!
//! Owns what only L2 needs: the interface table as last seen, the IPs this node announces and
//! where, the packet [`Ports`], the [`Pacer`], the [`StatusTracker`], the interfaces this node
//! cannot use, and the ports that failed to open. Every decision is delegated to the pure
//! modules ([`super::decide`], [`super::interfaces`], `speaker-core`'s election); this module
//! carries them out. It runs inside the engine's task, which holds the membership handle and
//! calls it through a narrow interface ([`Announcer::decide`], [`Announcer::on_event`], ...), so
//! nothing is shared but the answer sets of the receive threads and the membership [`Beat`]
//! they check. It never talks to the API server:
//! status writes and Node events leave on the status task's channel.
//!
//! Each decision resolves, per IP, the interfaces to announce on and which this node lacks: the
//! IPs it cannot place go out in its heartbeats (so peers elect someone else) and to a gauge,
//! and a change of the set of unusable interfaces becomes one event on this node's Node object.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::membership;
use tokio::sync::mpsc;

use super::decide::{self, StatusTracker, Unusable};
use super::interfaces::{interface_usable, resolve_interfaces};
use super::pacer::Pacer;
use super::packet::{L2Event, Ports};
use crate::membership::{Beat, Heartbeats, Snapshot};
use crate::metrics as m;
use crate::netif::{Iface, IfaceTable};
use crate::status::Request;
use crate::watch::Published;

/// How long an interface whose packet socket could not be opened is left out.
const BROKEN_RETRY: Duration = Duration::from_secs(5);

/// The L2 mode's flags.
#[derive(Debug, Clone)]
pub struct L2Config {
    /// `--garp-burst`.
    pub garp_burst: u32,
    /// `--garp-rate`.
    pub garp_rate: u32,
    /// `--interfaces`: the only interfaces this speaker may use (empty: any).
    pub allowed_interfaces: Vec<String>,
}

/// The L2 mode of one speaker. See the module docs.
#[derive(Debug)]
pub struct Announcer {
    node: String,
    cfg: L2Config,
    metrics: Metrics,
    status: mpsc::UnboundedSender<Request>,
    table: IfaceTable,
    /// The interface table has arrived: until then every interface looks missing, and saying
    /// so (to peers, in events) would be false.
    table_known: bool,
    owned: BTreeSet<IpAddr>,
    /// Interfaces each owned IP is announced on.
    placed: BTreeMap<IpAddr, Vec<String>>,
    pacer: Pacer,
    ports: Ports,
    tracker: StatusTracker,
    /// Wanted interfaces this node cannot use, as last reported (log, Node event): only a
    /// change of its keys is reported again.
    unusable: Unusable,
    l2_failed_reported: BTreeSet<String>,
    last_conflict_log: Option<Instant>,
    /// Interfaces whose port could not be opened, left out until the given time.
    broken: BTreeMap<String, Instant>,
}

impl Announcer {
    /// An announcer that announces nothing yet. `heartbeat` gives the pacing of takeover
    /// repeats (one interval apart); the receive threads answer only while `beat` is fresh
    /// (see [`Beat`]); `table` is the interface table as known at start (not yet trusted, see
    /// [`Self::on_interfaces`]). Receive threads report on the returned channel, whose events
    /// go back to [`Self::on_event`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        cfg: L2Config,
        heartbeat: &membership::Config,
        beat: Beat,
        metrics: Metrics,
        status: mpsc::UnboundedSender<Request>,
        table: IfaceTable,
        start: Instant,
    ) -> (Announcer, mpsc::UnboundedReceiver<L2Event>) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let announcer = Announcer {
            pacer: Pacer::new(cfg.garp_rate, cfg.garp_burst, heartbeat.interval, start),
            ports: Ports::new(metrics.clone(), events_tx, beat),
            node,
            cfg,
            metrics,
            status,
            table,
            table_known: false,
            owned: BTreeSet::new(),
            placed: BTreeMap::new(),
            tracker: StatusTracker::default(),
            unusable: Unusable::new(),
            l2_failed_reported: BTreeSet::new(),
            last_conflict_log: None,
            broken: BTreeMap::new(),
        };
        (announcer, events_rx)
    }

    /// A new interface table from rtnetlink.
    pub fn on_interfaces(&mut self, table: IfaceTable) {
        self.table = table;
        self.table_known = true;
        // Re-apply ports (an interface may have come back or changed index).
        self.placed.clear();
    }

    /// The IPs this node announces (its claims in the heartbeats).
    pub fn claims(&self) -> &BTreeSet<IpAddr> {
        &self.owned
    }

    /// When a decision is next due without any event: a takeover frame, a status write's
    /// retry or trust running out, an interface whose port failed coming back into use.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        [
            self.pacer.next_wakeup(now),
            self.tracker.next_due(now),
            self.broken.values().filter(|t| **t > now).min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A status write for `svc` failed: back off before writing it again.
    pub fn status_failed(&mut self, svc: &str, now: Instant) {
        self.tracker.failed(svc, now);
    }

    /// Recomputes ownership and carries out the changes: ports and answer sets, takeover
    /// announcements, and the status writes this node is responsible for. Gives `heartbeats`
    /// the IPs this node cannot place and reads the membership view from `members` through it.
    /// Announces only when `settled`.
    pub fn decide(
        &mut self,
        now: Instant,
        published: &Published,
        heartbeats: &mut Heartbeats,
        members: &Snapshot,
        settled: bool,
    ) {
        self.broken.retain(|_, until| *until > now);
        let plan = &published.plan;
        // Where this node could announce each IP it is eligible for, and what it lacks.
        let mut placement: BTreeMap<IpAddr, Vec<&Iface>> = BTreeMap::new();
        let mut unusable = Unusable::new();
        let mut unable = BTreeSet::new();
        for (ip, p) in &plan.ips {
            if !p.eligible.contains(&self.node) {
                continue;
            }
            let r = resolve_interfaces(
                *ip,
                &p.interfaces,
                &self.table,
                &published.node_ips,
                &self.cfg.allowed_interfaces,
            );
            for w in r.unusable {
                unusable.entry(w).or_default().insert(*ip);
            }
            let mut ifs = r.usable;
            // A port that failed to open counts as no interface for peers (they must take
            // over), but is no news for the Node's events: it is logged, and retried soon.
            ifs.retain(|i| !self.broken.contains_key(&i.name));
            if ifs.is_empty() {
                unable.insert(*ip);
            }
            placement.insert(*ip, ifs);
        }
        if !self.table_known {
            unusable.clear();
            unable.clear();
        }
        // Only a change of the set of unusable interfaces is news (not a replan, a resync or
        // a restarted watch, which give the same set).
        let events = decide::interface_events(&self.unusable, &unusable, |w, ips| {
            interface_usable(
                w,
                ips,
                &self.table,
                &published.node_ips,
                &self.cfg.allowed_interfaces,
            )
        });
        self.unusable = unusable;
        for e in events {
            if e.change.is_warning() {
                tracing::warn!(interface = %e.interface, note = %e.note, "interface unusable; not announcing its IPs on it from this node");
            } else {
                tracing::info!(interface = %e.interface, note = %e.note, reason = e.change.as_str(), "interface no longer unusable");
            }
            let _ = self.status.send(Request::Node {
                event: e,
                uid: published.node_uid.clone(),
            });
        }
        let without_interface = unable.len();
        heartbeats.set_unable(unable);
        self.metrics.set(
            m::IPS_WITHOUT_INTERFACE,
            m::IPS_WITHOUT_INTERFACE_HELP,
            &[],
            without_interface as f64,
        );
        let view = heartbeats.view(members);
        let node = self.node.clone();
        let owners = decide::owners(plan, &view, &node, |ip| {
            settled && placement.get(&ip).is_some_and(|v| !v.is_empty())
        });
        // Who writes conditions: the same from every node's view (see `decide`).
        let writers = decide::writers(plan, &view, &node, |ip| {
            settled && placement.get(&ip).is_some_and(|v| !v.is_empty())
        });
        let mine = decide::mine(&owners, &node);
        let (acquired, released) = decide::diff(&self.owned, &mine);
        let placed: BTreeMap<IpAddr, Vec<String>> = mine
            .iter()
            .map(|ip| {
                let names = placement
                    .get(ip)
                    .map(|v| v.iter().map(|i| i.name.clone()).collect())
                    .unwrap_or_default();
                (*ip, names)
            })
            .collect();
        if placed != self.placed || !acquired.is_empty() || !released.is_empty() {
            let mut want: BTreeMap<String, (Iface, BTreeSet<IpAddr>)> = BTreeMap::new();
            for (ip, ifs) in &placement {
                if !mine.contains(ip) {
                    continue;
                }
                for i in ifs {
                    want.entry(i.name.clone())
                        .or_insert_with(|| ((*i).clone(), BTreeSet::new()))
                        .1
                        .insert(*ip);
                }
            }
            for (iface, e) in self.ports.apply(&want) {
                let key = e.to_string();
                if self.l2_failed_reported.insert(key) {
                    tracing::error!(error = %e, "cannot announce on interface; stepping aside for its IPs (retry in 5 s)");
                }
                // Claiming IPs it cannot answer for would black-hole them: the next decision
                // leaves this node out for them, and peers take over.
                self.broken.insert(iface, now + BROKEN_RETRY);
            }
            // IPs moved to a new interface are announced there too.
            for (ip, names) in &placed {
                if self.placed.get(ip).is_some_and(|old| old != names) && !acquired.contains(ip) {
                    self.pacer.takeover(*ip, now);
                }
            }
            self.placed = placed;
        }
        for ip in &acquired {
            tracing::info!(%ip, on = ?self.placed.get(ip), "announcing");
            self.pacer.takeover(*ip, now);
            self.metrics.inc(
                m::OWNERSHIP_CHANGES,
                m::OWNERSHIP_CHANGES_HELP,
                &[("change", "acquired")],
                1.0,
            );
        }
        for ip in &released {
            tracing::info!(%ip, owner = ?owners.get(ip).cloned().flatten(), "withdrawing");
            self.pacer.cancel(*ip);
            self.metrics.inc(
                m::OWNERSHIP_CHANGES,
                m::OWNERSHIP_CHANGES_HELP,
                &[("change", "released")],
                1.0,
            );
        }
        self.owned = mine;
        self.metrics.set(
            m::IPS_ANNOUNCED,
            m::IPS_ANNOUNCED_HELP,
            &[],
            self.owned.len() as f64,
        );
        self.send_due(now);
        if settled {
            let desired = decide::desired_conditions(plan, &writers, &view, &node, &self.placed);
            for w in self.tracker.writes(&desired, plan, now) {
                let _ = self.status.send(Request::Condition(w));
            }
            let stale = decide::stale_conditions(plan, &view, &node);
            for r in self.tracker.removals(&stale, plan, now) {
                tracing::info!(service = %r.service, why = r.why.as_str(), "removing the Announced condition of a Service that is no longer ours");
                let _ = self.status.send(Request::Remove(r));
            }
        }
    }

    fn send_due(&mut self, now: Instant) {
        for d in self.pacer.due(now) {
            if !self.owned.contains(&d.ip) {
                continue;
            }
            for iface in self.placed.get(&d.ip).cloned().unwrap_or_default() {
                if let Err(e) = self.ports.announce(&iface, d.ip, d.index) {
                    tracing::warn!(ip = %d.ip, error = %e, "takeover announcement not sent");
                }
            }
        }
    }

    /// After a stall (see [`crate::membership`]): gives up every IP at once and closes the
    /// ports.
    pub fn give_up(&mut self) {
        for ip in std::mem::take(&mut self.owned) {
            self.pacer.cancel(ip);
            self.metrics.inc(
                m::OWNERSHIP_CHANGES,
                m::OWNERSHIP_CHANGES_HELP,
                &[("change", "released")],
                1.0,
            );
        }
        self.placed.clear();
        let _ = self.ports.apply(&BTreeMap::new());
    }

    /// Stops answering anywhere (the end of the hand-over).
    pub fn stop(&mut self) {
        let _ = self.ports.apply(&BTreeMap::new());
    }

    /// Handles what a receive thread reported.
    pub fn on_event(&mut self, ev: L2Event, now: Instant) {
        match ev {
            L2Event::PortFailed { iface, error } => {
                tracing::warn!(%iface, %error, "packet channel failed; reopening when the interface is usable");
                self.ports.close(&iface);
                // Force the next decision to re-apply ports.
                self.placed.clear();
            }
            L2Event::Conflict { iface, from } => {
                self.metrics.inc(m::CONFLICTS, m::CONFLICTS_HELP, &[], 1.0);
                if self
                    .last_conflict_log
                    .is_none_or(|t| now.duration_since(t) > Duration::from_secs(5))
                {
                    self.last_conflict_log = Some(now);
                    let mac: Vec<String> = from.iter().map(|b| format!("{b:02x}")).collect();
                    tracing::warn!(%iface, from = %mac.join(":"), "another host announces an address this speaker announces");
                }
            }
        }
    }
}
