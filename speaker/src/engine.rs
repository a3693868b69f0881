//! The speaker's engine: the one task that owns membership and drives the modes.
//!
//! Owns the [`Heartbeats`] (membership over UDP), the last published plan, the settled state
//! (membership settled and no recent stall), and the L2 mode's [`Announcer`], which it drives
//! through a narrow interface: the plan and the membership go in, the claims come back out for
//! the heartbeats. The engine decides nothing about IPs itself: the modes do, from the shared
//! plan ([`crate::plan`]) and the membership view ([`crate::membership::MemberView`]). It never
//! talks to the API server: plans arrive on a watch channel and status writes and Node events
//! leave on an mpsc channel, so an API outage changes nothing here.
//!
//! The loop wakes for a datagram, a plan or interface change, a takeover frame due, a receive
//! thread's report, or at least every [`TICK`], so a peer's death is noticed within
//! `dead_after + TICK`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_runtime::{Health, Metrics};
use ferrolb_speaker_core::membership;
use tokio::sync::{mpsc, watch};

use crate::l2::{Announcer, L2Config, L2Event};
use crate::membership::{Heartbeats, MembershipError};
use crate::metrics as m;
use crate::netif::IfaceTable;
use crate::objects::SvcKey;
use crate::status::Request;
use crate::watch::Published;

/// Longest sleep of the loop: the resolution of failure detection beyond `dead_after`.
pub const TICK: Duration = Duration::from_millis(5);
/// Longest graceful hand-over after SIGTERM.
pub const MAX_GRACE: Duration = Duration::from_secs(2);

/// Static settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node.
    pub node: String,
    /// `--memberlist-port`.
    pub port: u16,
    /// Heartbeat timing.
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
    published: Option<Arc<Published>>,
    l2: Announcer,
    settled: bool,
    /// After a stall: not announcing until then (see `stall_check`).
    quiet_until: Option<Instant>,
}

impl Engine {
    /// Recomputes who announces what and carries it out, through each mode.
    fn decide(&mut self, now: Instant) {
        if self.quiet_until.is_some_and(|t| now >= t) {
            self.quiet_until = None;
        }
        let settled = self.heartbeats.settled(now) && self.quiet_until.is_none();
        if settled != self.settled {
            self.settled = settled;
            self.metrics.set(
                m::SETTLED,
                m::SETTLED_HELP,
                &[],
                if settled { 1.0 } else { 0.0 },
            );
            if settled {
                tracing::info!(alive = ?self.heartbeats.alive(), "membership settled; announcing");
            }
        }
        let Some(published) = self.published.clone() else {
            return;
        };
        self.l2
            .decide(now, &published, &mut self.heartbeats, settled);
        self.metrics.set(
            m::PEERS_ALIVE,
            m::PEERS_ALIVE_HELP,
            &[],
            self.heartbeats.alive().len().saturating_sub(1) as f64,
        );
    }

    /// A new plan from the watches.
    fn on_plan(&mut self, p: Option<Arc<Published>>) {
        if let Some(p) = &p {
            self.heartbeats.set_peers(&p.peers, Instant::now());
            if !p.node_known && self.published.as_ref().is_none_or(|o| o.node_known) {
                tracing::warn!(node = %self.cfg.node, "no Node object with this name; this speaker is not eligible anywhere");
            }
            self.health.set_ready(true);
        }
        self.published = p;
    }

    /// After a stall longer than `dead_after` (frozen or starved), peers have declared this
    /// speaker dead and taken its IPs: give them up before the next heartbeat says otherwise,
    /// and stay quiet until peers' claims are heard again, so the resumed speaker does not
    /// snatch back (a second fail-over) what was just failed over.
    fn stall_check(&mut self, last_turn: Instant, now: Instant) {
        let gap = now.saturating_duration_since(last_turn);
        if gap <= self.cfg.membership.dead_after {
            return;
        }
        tracing::warn!(
            stalled_ms = gap.as_millis() as u64,
            ips = self.l2.claims().len(),
            "this speaker was stalled longer than dead_after; giving up its IPs and rejoining"
        );
        self.l2.give_up();
        self.quiet_until =
            Some(now + self.cfg.membership.dead_after + self.cfg.membership.interval);
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
    let heartbeats = Heartbeats::bind(
        cfg.node.clone(),
        cfg.port,
        cfg.membership,
        metrics.clone(),
        start,
    )
    .await?;
    let (l2, mut l2_rx) = Announcer::new(
        cfg.node.clone(),
        cfg.l2.clone(),
        &cfg.membership,
        metrics.clone(),
        ch.status.clone(),
        ch.ifaces.borrow().clone(),
        start,
    );
    let mut st = Engine {
        cfg,
        metrics,
        health,
        heartbeats,
        published: None,
        l2,
        settled: false,
        quiet_until: None,
    };
    st.metrics.set(m::SETTLED, m::SETTLED_HELP, &[], 0.0);
    let mut buf = vec![0u8; 65_536];
    let mut last_turn = Instant::now();
    loop {
        let now = Instant::now();
        st.stall_check(last_turn, now);
        st.l2.beat();
        last_turn = now;
        let mut wake = st.heartbeats.next_timeout().min(now + TICK);
        if let Some(p) = st.l2.next_wakeup(now) {
            wake = wake.min(p);
        }
        tokio::select! {
            r = st.heartbeats.recv(&mut buf) => {
                if let Ok((n, from)) = r {
                    st.heartbeats.on_datagram(buf.get(..n).unwrap_or_default(), from, Instant::now());
                }
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
        let now = Instant::now();
        st.stall_check(last_turn, now);
        st.l2.beat();
        last_turn = now;
        let claims: Vec<_> = st.l2.claims().iter().copied().collect();
        st.heartbeats.tick(now, &claims).await;
        st.decide(now);
    }
    hand_over(&mut st, &mut buf, &mut l2_rx).await;
    Ok(())
}

/// Graceful hand-over: tell peers we leave (they take over at once), keep answering ARP/NDP
/// until their heartbeats claim every IP we announced (or no peer is alive to take them), for
/// at least three heartbeat intervals and at most [`MAX_GRACE`].
async fn hand_over(st: &mut Engine, buf: &mut [u8], l2_rx: &mut mpsc::UnboundedReceiver<L2Event>) {
    let started = Instant::now();
    st.heartbeats.leave().await;
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
        let alive = st.heartbeats.alive();
        let taken = mine
            .iter()
            .all(|ip| alive.iter().any(|n| st.heartbeats.claims(n).contains(ip)));
        if elapsed >= min && (taken || alive.is_empty()) {
            break;
        }
        tokio::select! {
            r = st.heartbeats.recv(buf) => {
                if let Ok((n, from)) = r {
                    st.heartbeats.on_datagram(buf.get(..n).unwrap_or_default(), from, Instant::now());
                }
            }
            Some(ev) = l2_rx.recv() => st.l2.on_event(ev, Instant::now()),
            _ = tokio::time::sleep(TICK) => {}
        }
        // Liveness still advances (peers that die meanwhile stop counting); nothing is sent.
        st.heartbeats.tick_silently(Instant::now());
    }
    tracing::info!(
        after_ms = started.elapsed().as_millis() as u64,
        "handed over; exiting"
    );
    st.l2.stop();
}
