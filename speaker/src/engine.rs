//! The speaker's engine: the one task that holds the membership handle and drives the modes.
//!
//! Owns the [`Heartbeats`] handle (membership itself runs on its own thread, see
//! [`crate::membership`]), the last published plan, the last membership [`Snapshot`], the
//! settled state (membership settled and no stall being waited out), and the L2 mode's
//! [`Announcer`], which it drives through a narrow interface: the plan and the membership go
//! in, the claims come back out for membership. The engine decides nothing about IPs itself:
//! the modes do, from the shared plan ([`crate::plan`]) and the membership view
//! ([`crate::membership::MemberView`]). It never talks to the API server: plans arrive on a
//! watch channel and status writes and Node events leave on an mpsc channel, so an API outage
//! changes nothing here.
//!
//! The loop sleeps until something happens: a new membership snapshot, a plan or interface
//! change, a receive thread's report, a failed status write, or the next deadline of its own
//! (a takeover frame due, a status write's retry, the end of a quiet period), and at most
//! [`HOUSEKEEPING`]. There is no fixed tick: failure detection is membership's, on its own
//! thread, so an idle speaker costs next to nothing here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_runtime::{Health, Metrics};
use ferrolb_speaker_core::membership;
use tokio::sync::{mpsc, watch};

use crate::l2::{Announcer, L2Config, L2Event};
use crate::membership::{Heartbeats, MembershipError, Snapshot};
use crate::metrics as m;
use crate::netif::IfaceTable;
use crate::objects::SvcKey;
use crate::status::Request;
use crate::watch::Published;

/// Longest sleep of the loop without any event or deadline: a bound on how late a deadline the
/// modes did not report (they report every one they know of) can be acted on.
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Longest graceful hand-over after SIGTERM.
pub const MAX_GRACE: Duration = Duration::from_secs(2);

/// Static settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node.
    pub node: String,
    /// `--memberlist-port`.
    pub port: u16,
    /// Membership protocol and timing.
    pub membership: membership::Config,
    /// The L2 mode's flags.
    pub l2: L2Config,
}

/// The engine's inputs and outputs.
#[derive(Debug)]
pub struct Channels {
    /// Plans from the watches (`None` until every watch has listed once).
    pub plans: watch::Receiver<Option<Arc<Published>>>,
    /// Interface tables from rtnetlink.
    pub ifaces: watch::Receiver<IfaceTable>,
    /// Status writes and Node events to perform.
    pub status: mpsc::UnboundedSender<Request>,
    /// Status writes that failed.
    pub status_failed: mpsc::UnboundedReceiver<SvcKey>,
    /// Becomes true on SIGTERM/SIGINT.
    pub shutdown: watch::Receiver<bool>,
}

struct Engine {
    cfg: EngineConfig,
    metrics: Metrics,
    health: Health,
    heartbeats: Heartbeats,
    /// The membership thread's last snapshot.
    members: Arc<Snapshot>,
    published: Option<Arc<Published>>,
    l2: Announcer,
    settled: bool,
    /// After a stall: not announcing until then (see [`Engine::on_members`]).
    quiet_until: Option<Instant>,
}

impl Engine {
    /// Recomputes who announces what and carries it out, through each mode, then tells
    /// membership what this node now claims.
    fn decide(&mut self, now: Instant) {
        if self.quiet_until.is_some_and(|t| now >= t) {
            self.quiet_until = None;
        }
        let settled = self.members.settled && self.quiet_until.is_none();
        if settled != self.settled {
            self.settled = settled;
            self.metrics.set(
                m::SETTLED,
                m::SETTLED_HELP,
                &[],
                if settled { 1.0 } else { 0.0 },
            );
            if settled {
                tracing::info!(alive = ?self.members.view.alive, "membership settled; announcing");
            }
        }
        let Some(published) = self.published.clone() else {
            return;
        };
        let members = self.members.clone();
        self.l2
            .decide(now, &published, &mut self.heartbeats, &members, settled);
        self.heartbeats.set_claims(self.l2.claims());
        self.metrics.set(
            m::PEERS_ALIVE,
            m::PEERS_ALIVE_HELP,
            &[],
            self.members.view.alive.len().saturating_sub(1) as f64,
        );
    }

    /// A new plan from the watches.
    fn on_plan(&mut self, p: Option<Arc<Published>>) {
        if let Some(p) = &p {
            self.heartbeats.set_peers(&p.peers);
            if !p.node_known && self.published.as_ref().is_none_or(|o| o.node_known) {
                tracing::warn!(node = %self.cfg.node, "no Node object with this name; this speaker is not eligible anywhere");
            }
            self.health.set_ready(true);
        }
        self.published = p;
    }

    /// A new membership snapshot. Returns whether a decision is needed (the local health and
    /// the suspects alone change nothing here).
    ///
    /// After a stall of the membership thread longer than peers need to declare this speaker
    /// dead, they may have taken its IPs over: give them up at once (membership already stopped
    /// advertising them) and stay quiet until peers' claims are heard again, so the resumed
    /// speaker does not snatch back (a second fail-over) what was just failed over.
    fn on_members(&mut self, s: Arc<Snapshot>, now: Instant) -> bool {
        if s.stalls > self.members.stalls {
            self.l2.give_up();
            let cfg = self.heartbeats.config();
            self.quiet_until = Some(now + cfg.declare_after() + cfg.interval);
            self.heartbeats.acknowledge_stall(s.stalls);
        }
        let old = std::mem::replace(&mut self.members, s);
        let s = &self.members;
        old.view != s.view
            || old.settled != s.settled
            || old.stalls != s.stalls
            || old.left != s.left
    }

    /// When the loop must wake without any event.
    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut wake = now + HOUSEKEEPING;
        if let Some(t) = self.l2.next_wakeup(now) {
            wake = wake.min(t);
        }
        if let Some(t) = self.quiet_until {
            wake = wake.min(t);
        }
        wake
    }
}

/// Runs until shutdown, then hands over gracefully (see [`MAX_GRACE`]).
pub async fn run(
    cfg: EngineConfig,
    mut ch: Channels,
    metrics: Metrics,
    health: Health,
) -> Result<(), MembershipError> {
    let start = Instant::now();
    let heartbeats =
        Heartbeats::spawn(cfg.node.clone(), cfg.port, cfg.membership, metrics.clone())?;
    let mut members_rx = heartbeats.subscribe();
    let (l2, mut l2_rx) = Announcer::new(
        cfg.node.clone(),
        cfg.l2.clone(),
        &cfg.membership,
        heartbeats.beat(),
        metrics.clone(),
        ch.status.clone(),
        ch.ifaces.borrow().clone(),
        start,
    );
    let members = members_rx.borrow_and_update().clone();
    let mut st = Engine {
        cfg,
        metrics,
        health,
        heartbeats,
        members,
        published: None,
        l2,
        settled: false,
        quiet_until: None,
    };
    st.metrics.set(m::SETTLED, m::SETTLED_HELP, &[], 0.0);
    loop {
        let wake = st.next_wakeup(Instant::now());
        let mut decide = true;
        tokio::select! {
            Ok(()) = members_rx.changed() => {
                let s = members_rx.borrow_and_update().clone();
                decide = st.on_members(s, Instant::now());
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            Ok(()) = ch.plans.changed() => {
                let p = ch.plans.borrow_and_update().clone();
                st.on_plan(p);
            }
            Ok(()) = ch.ifaces.changed() => {
                let table = ch.ifaces.borrow_and_update().clone();
                st.l2.on_interfaces(table);
            }
            Some(svc) = ch.status_failed.recv() => st.l2.status_failed(&svc, Instant::now()),
            Some(ev) = l2_rx.recv() => st.l2.on_event(ev, Instant::now()),
            Ok(()) = ch.shutdown.changed() => {
                if *ch.shutdown.borrow() {
                    break;
                }
            }
        }
        if decide {
            st.decide(Instant::now());
        }
    }
    hand_over(&mut st, &mut members_rx, &mut l2_rx).await;
    Ok(())
}

/// Graceful hand-over: tell peers we leave (they take over at once), keep answering ARP/NDP
/// until their claims cover every IP we announced (or no peer is alive to take them), for at
/// least three membership intervals and at most [`MAX_GRACE`].
async fn hand_over(
    st: &mut Engine,
    members_rx: &mut watch::Receiver<Arc<Snapshot>>,
    l2_rx: &mut mpsc::UnboundedReceiver<L2Event>,
) {
    let started = Instant::now();
    st.heartbeats.leave();
    st.health.set_ready(false);
    let mine = st.l2.claims().clone();
    tracing::info!(
        ips = mine.len(),
        "leaving: peers told, answering until they have taken over"
    );
    let min = st.cfg.membership.interval.saturating_mul(3).min(MAX_GRACE);
    loop {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(started);
        if elapsed >= MAX_GRACE {
            tracing::warn!("hand-over grace over before every IP was claimed elsewhere");
            break;
        }
        let s = members_rx.borrow_and_update().clone();
        // Until membership has carried the leave out, its view still counts this node alive,
        // claiming its own IPs.
        let taken = s.left
            && mine.iter().all(|ip| {
                s.view
                    .alive
                    .iter()
                    .any(|n| s.view.claims.get(n).is_some_and(|c| c.contains(ip)))
            });
        if elapsed >= min && s.left && (taken || s.view.alive.is_empty()) {
            break;
        }
        let wake = if elapsed < min {
            started + min
        } else {
            started + MAX_GRACE
        };
        tokio::select! {
            Ok(()) = members_rx.changed() => {}
            Some(ev) = l2_rx.recv() => st.l2.on_event(ev, Instant::now()),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    tracing::info!(
        after_ms = started.elapsed().as_millis() as u64,
        "handed over; exiting"
    );
    st.l2.stop();
}
