//! The speaker's engine: membership over UDP, the announcer decisions, and carrying them out on
//! the wire and in Service status.
//!
//! Owns the [`Membership`] state machine, the UDP socket, the [`L2`] ports, the [`Pacer`] and
//! the [`StatusTracker`]; every decision is delegated to the pure modules ([`crate::decide`],
//! [`crate::plan`], `speaker-core`). One task runs it, so nothing is shared but the answer sets
//! of the receive threads. It never talks to the API server itself: plans arrive on a watch
//! channel and status writes and Node events leave on an mpsc channel, so an API outage changes
//! nothing here.
//!
//! Each decision also resolves, per IP, the interfaces to announce on ([`resolve_interfaces`])
//! and which this node lacks: the IPs it cannot place go out in its heartbeats (so peers elect
//! someone else) and to a gauge, and a change of the set of unusable interfaces becomes one
//! event on this node's Node object.
//!
//! The loop wakes for a datagram, a plan or interface change, a pacer deadline, or at least
//! every [`TICK`], so a peer's death is noticed within `dead_after + TICK`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrolb_runtime::{Health, Metrics};
use ferrolb_speaker_core::membership::{self, Action, DownReason, Event, Membership, Message};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::decide::{self, MemberView, StatusTracker, Unusable};
use crate::l2::{EngineBeat, L2, L2Event};
use crate::metrics as m;
use crate::netif::{self, Iface, IfaceTable};
use crate::objects::SvcKey;
use crate::pacer::Pacer;
use crate::plan::WantedInterface;
use crate::status::Request;
use crate::watch::Published;

/// Longest sleep of the loop: the resolution of failure detection beyond `dead_after`.
pub const TICK: Duration = Duration::from_millis(5);
/// How long an interface whose packet socket could not be opened is left out.
const BROKEN_RETRY: Duration = Duration::from_secs(5);
/// Longest graceful hand-over after SIGTERM.
pub const MAX_GRACE: Duration = Duration::from_secs(2);

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The heartbeat port could not be bound.
    #[error("cannot bind the memberlist UDP port {port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Static settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node.
    pub node: String,
    /// `--memberlist-port`.
    pub port: u16,
    /// Heartbeat timing.
    pub membership: membership::Config,
    /// `--garp-burst`.
    pub garp_burst: u32,
    /// `--garp-rate`.
    pub garp_rate: u32,
    /// `--interfaces`: the only interfaces this speaker may use (empty: any).
    pub allowed_interfaces: Vec<String>,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where one IP can be announced from this node.
#[derive(Debug, Default)]
pub struct Resolved<'a> {
    /// The usable interfaces, each once (the default choice first).
    pub usable: Vec<&'a Iface>,
    /// The wanted interfaces that resolve to nothing usable: missing, down, or not in
    /// `--interfaces`.
    pub unusable: Vec<WantedInterface>,
}

/// Resolves, for `ip`, which this node may announce, the interfaces to announce it on and those
/// it cannot use. Pure: the plan's interface choice, the table, the node's InternalIPs and
/// `--interfaces` (`allowed`).
///
/// - **An advertisement without `interfaces`** ([`crate::plan::Interfaces::default`]) means
///   the `--interfaces` list when one is given: the flag chooses, so a speaker told
///   `--interfaces=bond0.100` announces there. Without the flag it means the interface holding
///   the node's InternalIP plus every interface whose subnet contains `ip`
///   ([`netif::on_subnet`]), so an IP whose subnet lives on a second NIC or VLAN is answered
///   there. Unlike MetalLB, which answers on every interface, other interfaces (CNI bridges,
///   veths) never answer: a neighbour that is not on the IP's subnet has no business asking.
/// - **Named interfaces** are used when present, and `--interfaces` restricts them.
///
/// Every interface must be up and have a MAC. A wanted entry that yields no interface at all is
/// unusable.
pub fn resolve_interfaces<'a>(
    ip: IpAddr,
    wanted: &crate::plan::Interfaces,
    table: &'a IfaceTable,
    node_ips: &[IpAddr],
    allowed: &[String],
) -> Resolved<'a> {
    let mut out = Resolved::default();
    let up_with_mac = |i: &&Iface| i.up && i.mac.is_some();
    let add = |out: &mut Resolved<'a>, i: &'a Iface| {
        if out.usable.iter().all(|o| o.index != i.index) {
            out.usable.push(i);
        }
    };
    if wanted.default {
        let before = out.usable.len();
        if allowed.is_empty() {
            let chosen = netif::default_interface(table, node_ips)
                .into_iter()
                .chain(netif::on_subnet(table, ip));
            for i in chosen.filter(up_with_mac) {
                add(&mut out, i);
            }
        } else {
            for i in allowed
                .iter()
                .filter_map(|n| table.get(n))
                .filter(up_with_mac)
            {
                add(&mut out, i);
            }
        }
        if out.usable.len() == before {
            out.unusable.push(WantedInterface::Default);
        }
    }
    for name in &wanted.named {
        let found = table
            .get(name)
            .filter(up_with_mac)
            .filter(|i| allowed.is_empty() || allowed.contains(&i.name));
        match found {
            Some(i) => add(&mut out, i),
            None => out.unusable.push(WantedInterface::Named(name.clone())),
        }
    }
    out
}

/// Whether one wanted interface resolves to a usable one for any of `ips` (see
/// [`resolve_interfaces`]; the default choice depends on the IP).
fn interface_usable(
    w: &WantedInterface,
    ips: &BTreeSet<IpAddr>,
    table: &IfaceTable,
    node_ips: &[IpAddr],
    allowed: &[String],
) -> bool {
    let one = match w {
        WantedInterface::Default => crate::plan::Interfaces {
            default: true,
            named: BTreeSet::new(),
        },
        WantedInterface::Named(n) => crate::plan::Interfaces {
            default: false,
            named: [n.clone()].into(),
        },
    };
    ips.iter().any(|ip| {
        resolve_interfaces(*ip, &one, table, node_ips, allowed)
            .unusable
            .is_empty()
    })
}

struct State {
    cfg: EngineConfig,
    metrics: Metrics,
    health: Health,
    membership: Membership,
    published: Option<Arc<Published>>,
    table: IfaceTable,
    owned: BTreeSet<IpAddr>,
    /// Interfaces each owned IP is announced on.
    placed: BTreeMap<IpAddr, Vec<String>>,
    pacer: Pacer,
    l2: L2,
    tracker: StatusTracker,
    status: mpsc::UnboundedSender<Request>,
    /// When each peer was last heard directly, for detection-time metrics.
    last_heard: BTreeMap<String, Instant>,
    /// When each peer last came up (see `decide::owners` on young claimants).
    up_since: BTreeMap<String, Instant>,
    /// Wanted interfaces this node cannot use, as last reported (log, Node event): only a
    /// change of its keys is reported again.
    unusable: Unusable,
    /// IPs this node is eligible for but cannot place, as last given to membership.
    unable: BTreeSet<IpAddr>,
    /// The interface table has arrived: until then every interface looks missing, and saying
    /// so (to peers, in events) would be false.
    table_known: bool,
    l2_failed_reported: BTreeSet<String>,
    last_conflict_log: Option<Instant>,
    settled: bool,
    /// After a stall: not announcing until then (see `stall_check`).
    quiet_until: Option<Instant>,
    /// Interfaces whose port could not be opened, left out until the given time.
    broken: BTreeMap<String, Instant>,
}

impl State {
    async fn send_all(&mut self, sock: &UdpSocket, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, bytes } => {
                    // UDP to a dead peer may fail (unreachable); heartbeats are best effort.
                    let _ = sock.send_to(&bytes, to).await;
                }
                Action::Event(e) => self.on_event(e, Instant::now()),
            }
        }
    }

    fn on_event(&mut self, e: Event, now: Instant) {
        match e {
            Event::Up(peer) => {
                tracing::info!(%peer, "peer up");
                self.up_since.insert(peer, now);
            }
            Event::Down(peer, reason) => {
                self.metrics.inc(
                    m::PEER_DOWN,
                    m::PEER_DOWN_HELP,
                    &[("reason", reason.as_str())],
                    1.0,
                );
                if reason == DownReason::Timeout
                    && let Some(at) = self.last_heard.get(&peer)
                {
                    let secs = now.saturating_duration_since(*at).as_secs_f64();
                    self.metrics
                        .inc(m::DETECTION_SUM, m::DETECTION_SUM_HELP, &[], secs);
                    self.metrics
                        .inc(m::DETECTION_COUNT, m::DETECTION_COUNT_HELP, &[], 1.0);
                    self.metrics
                        .set(m::DETECTION_LAST, m::DETECTION_LAST_HELP, &[], secs);
                    tracing::warn!(%peer, reason = reason.as_str(), detection_ms = secs * 1000.0, "peer down");
                } else {
                    tracing::warn!(%peer, reason = reason.as_str(), "peer down");
                }
            }
            Event::ClaimsTruncated { kept, dropped } => {
                tracing::warn!(
                    kept,
                    dropped,
                    "more IPs than one heartbeat carries; peers may contest the rest"
                );
            }
            Event::UnableTruncated { kept, dropped } => {
                tracing::warn!(
                    kept,
                    dropped,
                    "more IPs without a usable interface than one heartbeat carries; peers may elect this node for the rest"
                );
            }
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        match Message::decode(bytes) {
            Ok(msg) => {
                let name = msg.from().to_string();
                let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                let events = self.membership.on_message(from, msg, now);
                if self
                    .published
                    .as_ref()
                    .is_some_and(|p| p.peers.iter().any(|(n, _)| *n == name))
                {
                    self.last_heard.insert(name, now);
                }
                for e in events {
                    self.on_event(e, now);
                }
            }
            Err(e) => self.metrics.inc(
                m::MEMBERSHIP_BAD,
                m::MEMBERSHIP_BAD_HELP,
                &[("reason", e.as_str())],
                1.0,
            ),
        }
    }

    /// The membership view, with this node's unable set as just computed (`self.unable`), not
    /// as last sent.
    fn view(&self, now: Instant) -> MemberView {
        let alive = self.membership.alive();
        let claims = alive
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    self.membership.claims(n).iter().copied().collect(),
                )
            })
            .collect();
        // Young for `dead_after` plus a heartbeat: a ghost (delayed datagrams of a dead
        // instance) is declared dead again before its claims could count, while a healed
        // partition resolves to one announcer within about a quarter of a second.
        let young_for = self.cfg.membership.dead_after + self.cfg.membership.interval;
        let young = self
            .up_since
            .iter()
            .filter(|(n, at)| alive.contains(*n) && now.saturating_duration_since(**at) < young_for)
            .map(|(n, _)| n.clone())
            .collect();
        let mut unable: BTreeMap<String, BTreeSet<IpAddr>> = alive
            .iter()
            .filter(|n| **n != self.cfg.node)
            .map(|n| {
                (
                    n.clone(),
                    self.membership.unable(n).iter().copied().collect(),
                )
            })
            .collect();
        unable.insert(self.cfg.node.clone(), self.unable.clone());
        MemberView {
            alive,
            claims,
            young,
            unable,
        }
    }

    /// Recomputes ownership and carries out the changes: ports and answer sets, takeover
    /// announcements, and the status writes this node is responsible for.
    fn decide(&mut self, now: Instant) {
        if self.quiet_until.is_some_and(|t| now >= t) {
            self.quiet_until = None;
        }
        self.broken.retain(|_, until| *until > now);
        let settled = self.membership.settled(now) && self.quiet_until.is_none();
        if settled != self.settled {
            self.settled = settled;
            self.metrics.set(
                m::SETTLED,
                m::SETTLED_HELP,
                &[],
                if settled { 1.0 } else { 0.0 },
            );
            if settled {
                tracing::info!(alive = ?self.membership.alive(), "membership settled; announcing");
            }
        }
        let Some(published) = self.published.clone() else {
            return;
        };
        let plan = &published.plan;
        // Where this node could announce each IP it is eligible for, and what it lacks.
        let mut placement: BTreeMap<IpAddr, Vec<&Iface>> = BTreeMap::new();
        let mut unusable = Unusable::new();
        let mut unable = BTreeSet::new();
        for (ip, p) in &plan.ips {
            if !p.eligible.contains(&self.cfg.node) {
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
        if unable != self.unable {
            self.membership.set_unable(unable.iter().copied().collect());
            self.unable = unable;
        }
        self.metrics.set(
            m::IPS_WITHOUT_INTERFACE,
            m::IPS_WITHOUT_INTERFACE_HELP,
            &[],
            self.unable.len() as f64,
        );
        let view = self.view(now);
        let node = self.cfg.node.clone();
        let owners = decide::owners(plan, &view, &node, |ip| {
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
            for (iface, e) in self.l2.apply(&want) {
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
        self.metrics.set(
            m::PEERS_ALIVE,
            m::PEERS_ALIVE_HELP,
            &[],
            view.alive.len().saturating_sub(1) as f64,
        );
        self.send_due(now);
        if settled {
            let desired = decide::desired_conditions(plan, &owners, &view, &node, &self.placed);
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
                if let Err(e) = self.l2.announce(&iface, d.ip, d.index) {
                    tracing::warn!(ip = %d.ip, error = %e, "takeover announcement not sent");
                }
            }
        }
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
            ips = self.owned.len(),
            "this speaker was stalled longer than dead_after; giving up its IPs and rejoining"
        );
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
        let _ = self.l2.apply(&BTreeMap::new());
        self.quiet_until =
            Some(now + self.cfg.membership.dead_after + self.cfg.membership.interval);
    }

    fn on_l2_event(&mut self, ev: L2Event, now: Instant) {
        match ev {
            L2Event::PortFailed { iface, error } => {
                tracing::warn!(%iface, %error, "packet channel failed; reopening when the interface is usable");
                self.l2.close(&iface);
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

async fn bind(port: u16) -> Result<UdpSocket, EngineError> {
    // Dual-stack first, so peers of either family reach us; IPv4 only if IPv6 is disabled.
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(s) => Ok(s),
        Err(_) => UdpSocket::bind(("0.0.0.0", port))
            .await
            .map_err(|source| EngineError::Bind { port, source }),
    }
}

/// Runs until shutdown, then hands over gracefully (see [`MAX_GRACE`]).
pub async fn run(
    cfg: EngineConfig,
    mut ch: Channels,
    metrics: Metrics,
    health: Health,
) -> Result<(), EngineError> {
    let sock = bind(cfg.port).await?;
    let start = Instant::now();
    let (l2_tx, mut l2_rx) = mpsc::unbounded_channel();
    // Answers are trusted for half the failure-detection time: peers cannot have taken over
    // within that, so a speaker that was frozen longer stops answering before anyone notices.
    let beat = EngineBeat::new(cfg.membership.dead_after / 2);
    beat.beat();
    let mut st = State {
        membership: Membership::new(cfg.node.clone(), now_ms(), cfg.membership, start),
        pacer: Pacer::new(
            cfg.garp_rate,
            cfg.garp_burst,
            cfg.membership.interval,
            start,
        ),
        l2: L2::new(metrics.clone(), l2_tx, beat.clone()),
        cfg,
        metrics,
        health,
        published: None,
        table: ch.ifaces.borrow().clone(),
        owned: BTreeSet::new(),
        placed: BTreeMap::new(),
        tracker: StatusTracker::default(),
        status: ch.status.clone(),
        last_heard: BTreeMap::new(),
        up_since: BTreeMap::new(),
        unusable: Unusable::new(),
        unable: BTreeSet::new(),
        table_known: false,
        l2_failed_reported: BTreeSet::new(),
        last_conflict_log: None,
        settled: false,
        quiet_until: None,
        broken: BTreeMap::new(),
    };
    st.metrics.set(m::SETTLED, m::SETTLED_HELP, &[], 0.0);
    let mut buf = vec![0u8; 65_536];
    let mut last_turn = Instant::now();
    loop {
        let now = Instant::now();
        st.stall_check(last_turn, now);
        beat.beat();
        last_turn = now;
        let mut wake = st.membership.next_timeout().min(now + TICK);
        if let Some(p) = st.pacer.next_wakeup(now) {
            wake = wake.min(p);
        }
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    st.on_datagram(buf.get(..n).unwrap_or_default(), from, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            Ok(()) = ch.plans.changed() => {
                let p = ch.plans.borrow_and_update().clone();
                if st.published.is_none() && p.is_some() {
                    // The join grace counts from when peers are known, not from process start:
                    // with a slow API server the first peer list can arrive after the grace,
                    // and a speaker that never heard its peers' claims would snatch every IP.
                    st.membership = Membership::new(
                        st.cfg.node.clone(),
                        st.membership.incarnation(),
                        st.cfg.membership,
                        Instant::now(),
                    );
                }
                if let Some(p) = &p {
                    let old = st.published.as_ref().map(|o| &o.peers);
                    if old != Some(&p.peers) {
                        for e in st.membership.set_peers(p.peers.clone()) {
                            st.on_event(e, Instant::now());
                        }
                    }
                    if !p.node_known && st.published.as_ref().is_none_or(|o| o.node_known) {
                        tracing::warn!(node = %st.cfg.node, "no Node object with this name; this speaker is not eligible anywhere");
                    }
                    st.health.set_ready(true);
                }
                st.published = p;
            }
            Ok(()) = ch.ifaces.changed() => {
                st.table = ch.ifaces.borrow_and_update().clone();
                st.table_known = true;
                // Re-apply ports (an interface may have come back or changed index).
                st.placed.clear();
            }
            Some(svc) = ch.status_failed.recv() => st.tracker.failed(&svc, Instant::now()),
            Some(ev) = l2_rx.recv() => st.on_l2_event(ev, Instant::now()),
            Ok(()) = ch.shutdown.changed() => {
                if *ch.shutdown.borrow() {
                    break;
                }
            }
        }
        let now = Instant::now();
        st.stall_check(last_turn, now);
        beat.beat();
        last_turn = now;
        let claims: Vec<IpAddr> = st.owned.iter().copied().collect();
        let actions = st.membership.tick(now, &claims);
        st.send_all(&sock, actions).await;
        st.decide(now);
    }
    hand_over(&mut st, &sock, &mut buf, &mut l2_rx).await;
    Ok(())
}

/// Graceful hand-over: tell peers we leave (they take over at once), keep answering ARP/NDP
/// until their heartbeats claim every IP we announced (or no peer is alive to take them), for
/// at least three heartbeat intervals and at most [`MAX_GRACE`].
async fn hand_over(
    st: &mut State,
    sock: &UdpSocket,
    buf: &mut [u8],
    l2_rx: &mut mpsc::UnboundedReceiver<L2Event>,
) {
    let started = Instant::now();
    let leave = st.membership.leave();
    // Sent twice: a single lost datagram would otherwise cost peers a full dead_after.
    st.send_all(sock, leave.clone()).await;
    st.send_all(sock, leave).await;
    st.health.set_ready(false);
    let mine = st.owned.clone();
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
        let alive = st.membership.alive();
        let taken = mine
            .iter()
            .all(|ip| alive.iter().any(|n| st.membership.claims(n).contains(ip)));
        if elapsed >= min && (taken || alive.is_empty()) {
            break;
        }
        tokio::select! {
            r = sock.recv_from(buf) => {
                if let Ok((n, from)) = r {
                    st.on_datagram(buf.get(..n).unwrap_or_default(), from, Instant::now());
                }
            }
            Some(ev) = l2_rx.recv() => st.on_l2_event(ev, Instant::now()),
            _ = tokio::time::sleep(TICK) => {}
        }
        // Liveness still advances (peers that die meanwhile stop counting); nothing is sent.
        let _ = st.membership.tick(Instant::now(), &[]);
    }
    tracing::info!(
        after_ms = started.elapsed().as_millis() as u64,
        "handed over; exiting"
    );
    let _ = st.l2.apply(&BTreeMap::new());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Interfaces;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    /// eth0 holds the InternalIP (198.51.100.11, 2001:db8::11); eth1 is a second NIC on
    /// 203.0.113.0/24 and 2001:db8:2::/64; eth2 is down; cni0 is a CNI bridge and veth1 one of
    /// its ports (no address).
    fn table() -> IfaceTable {
        let mk = |name: &str, index: u32, up: bool, addrs: &[(&str, u8)]| Iface {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            up,
            addrs: addrs.iter().map(|(a, p)| (ip(a), *p)).collect(),
        };
        [
            mk(
                "eth0",
                2,
                true,
                &[
                    ("198.51.100.11", 24),
                    ("2001:db8::11", 64),
                    ("fe80::11", 64),
                ],
            ),
            mk(
                "eth1",
                3,
                true,
                &[("203.0.113.11", 24), ("2001:db8:2::11", 64)],
            ),
            mk("eth2", 4, false, &[("192.0.2.11", 24)]),
            mk("cni0", 5, true, &[("10.244.0.1", 24)]),
            mk("veth1", 6, true, &[]),
        ]
        .into_iter()
        .map(|i| (i.name.clone(), i))
        .collect()
    }

    fn node_ips() -> Vec<IpAddr> {
        vec![ip("198.51.100.11"), ip("2001:db8::11")]
    }

    fn want(default: bool, named: &[&str]) -> Interfaces {
        Interfaces {
            default,
            named: named.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(r: &Resolved<'_>) -> Vec<String> {
        r.usable.iter().map(|i| i.name.clone()).collect()
    }

    fn allowed(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_is_the_internal_ip_interface_plus_the_ips_subnet() {
        let t = table();
        let r = |a: &str| resolve_interfaces(ip(a), &want(true, &[]), &t, &node_ips(), &[]);
        // An IP on the InternalIP's subnet: eth0 alone.
        assert_eq!(names(&r("198.51.100.70")), ["eth0"]);
        // An IP on the second NIC's subnet: eth1 too, for IPv4 and IPv6.
        assert_eq!(names(&r("203.0.113.70")), ["eth0", "eth1"]);
        assert_eq!(names(&r("2001:db8:2::70")), ["eth0", "eth1"]);
        // The other family's subnet of eth1 does not count.
        assert_eq!(names(&r("2001:db8::1:70")), ["eth0"]);
        // Nothing else answers: not a down interface on the IP's subnet (eth2), not the CNI
        // bridge or its veths; the bridge only for an IP of its own subnet (no pool should
        // hold one), as the rule says.
        assert_eq!(names(&r("192.0.2.70")), ["eth0"]);
        assert_eq!(names(&r("10.244.0.70")), ["eth0", "cni0"]);
        for a in ["198.51.100.70", "203.0.113.70", "2001:db8:2::70"] {
            assert!(r(a).unusable.is_empty(), "{a}");
        }
    }

    #[test]
    fn the_subnet_rule_carries_an_ip_when_the_internal_ip_interface_is_unusable() {
        let mut t = table();
        if let Some(i) = t.get_mut("eth0") {
            i.up = false;
        }
        let w = want(true, &[]);
        let r = resolve_interfaces(ip("203.0.113.70"), &w, &t, &node_ips(), &[]);
        assert_eq!((names(&r), r.unusable.len()), (vec!["eth1".to_string()], 0));
        let r = resolve_interfaces(ip("198.51.100.70"), &w, &t, &node_ips(), &[]);
        assert!(r.usable.is_empty());
        assert_eq!(r.unusable, [WantedInterface::Default]);
        // The InternalIP is on down eth2's subnet: the IP's own subnet still finds eth0; an
        // IP on eth2's subnet has no usable interface.
        let t = table();
        let other = [ip("192.0.2.200")];
        let r = resolve_interfaces(ip("198.51.100.70"), &w, &t, &other, &[]);
        assert_eq!(names(&r), ["eth0"]);
        let r = resolve_interfaces(ip("192.0.2.70"), &w, &t, &other, &[]);
        assert_eq!(
            (r.usable.len(), r.unusable),
            (0, vec![WantedInterface::Default])
        );
    }

    #[test]
    fn the_flag_chooses_when_the_advertisement_names_no_interface() {
        let t = table();
        let w = want(true, &[]);
        // Whatever the IP's subnet, the flag's interfaces, in the flag's order.
        for a in ["198.51.100.70", "203.0.113.70", "2001:db8::1:70"] {
            let r = resolve_interfaces(ip(a), &w, &t, &node_ips(), &allowed(&["eth1"]));
            assert_eq!(names(&r), ["eth1"], "{a}");
            assert!(r.unusable.is_empty());
        }
        let r = resolve_interfaces(
            ip("198.51.100.70"),
            &w,
            &t,
            &node_ips(),
            &allowed(&["eth1", "eth0", "eth1"]),
        );
        assert_eq!(names(&r), ["eth1", "eth0"]);
        // Flag interfaces that are missing or down are skipped; none left: unusable.
        let r = resolve_interfaces(
            ip("198.51.100.70"),
            &w,
            &t,
            &node_ips(),
            &allowed(&["bond0.100", "eth2", "eth1"]),
        );
        assert_eq!(names(&r), ["eth1"]);
        let r = resolve_interfaces(
            ip("198.51.100.70"),
            &w,
            &t,
            &node_ips(),
            &allowed(&["bond0.100", "eth2"]),
        );
        assert!(r.usable.is_empty());
        assert_eq!(r.unusable, [WantedInterface::Default]);
    }

    #[test]
    fn the_flag_restricts_named_interfaces() {
        let t = table();
        let a = ip("198.51.100.70");
        let r = resolve_interfaces(a, &want(false, &["eth1", "eth0"]), &t, &node_ips(), &[]);
        assert_eq!(names(&r), ["eth0", "eth1"]);
        let r = resolve_interfaces(
            a,
            &want(false, &["eth1", "eth0"]),
            &t,
            &node_ips(),
            &allowed(&["eth1"]),
        );
        assert_eq!(names(&r), ["eth1"]);
        assert_eq!(r.unusable, [WantedInterface::Named("eth0".into())]);
        // Down or missing named interfaces are not used, and are reported.
        let r = resolve_interfaces(a, &want(false, &["eth2", "nope"]), &t, &node_ips(), &[]);
        assert!(r.usable.is_empty());
        assert_eq!(
            r.unusable,
            [
                WantedInterface::Named("eth2".into()),
                WantedInterface::Named("nope".into())
            ]
        );
        // The default and a name together (two advertisements): each interface once, the
        // default first.
        let r = resolve_interfaces(
            ip("203.0.113.70"),
            &want(true, &["eth1", "eth0"]),
            &t,
            &node_ips(),
            &[],
        );
        assert_eq!(names(&r), ["eth0", "eth1"]);
        assert!(r.unusable.is_empty());
    }

    #[test]
    fn usable_again_depends_on_the_ips_that_wanted_it() {
        let t = table();
        let ips = |a: &[&str]| a.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
        let d = WantedInterface::Default;
        assert!(interface_usable(&d, &ips(&["203.0.113.70"]), &t, &[], &[]));
        assert!(!interface_usable(&d, &ips(&["192.0.2.70"]), &t, &[], &[]));
        let eth2 = WantedInterface::Named("eth2".into());
        assert!(!interface_usable(
            &eth2,
            &ips(&["192.0.2.70"]),
            &t,
            &[],
            &[]
        ));
        let eth1 = WantedInterface::Named("eth1".into());
        assert!(interface_usable(&eth1, &ips(&["192.0.2.70"]), &t, &[], &[]));
    }
}
