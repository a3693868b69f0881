//! The heartbeat shell around `ferrolb_speaker_core::membership`: the UDP socket, the
//! [`Membership`] state machine it feeds, and the [`MemberView`] every mode decides from.
//!
//! Owns the socket, the state machine, this node's *unable* set as last given to it (the IPs it
//! is eligible for but cannot announce, which travel in its heartbeats), and the bookkeeping
//! of membership metrics (peers going down, detection times, undecodable datagrams). Who is
//! alive, who claims what and who is unable is the state machine's to decide; this module only
//! carries datagrams in and out, logs and counts. It must not decide who announces an IP (the
//! modes do, from the [`MemberView`]) and never talks to the API server: the peer list arrives
//! from the watches through the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::membership::{self, Action, DownReason, Event, Membership, Message};
use tokio::net::UdpSocket;

use crate::metrics as m;

/// Why the heartbeats could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The heartbeat port could not be bound.
    #[error("cannot bind the memberlist UDP port {port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The membership view the decisions need.
#[derive(Debug, Clone, Default)]
pub struct MemberView {
    /// Alive speakers, this one included.
    pub alive: BTreeSet<String>,
    /// What each alive speaker announces (its heartbeat claims; ours from the last tick).
    pub claims: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Peers that came up very recently (see [`crate::l2::decide::owners`]).
    pub young: BTreeSet<String>,
    /// What each alive speaker reported it cannot announce, for lack of a usable interface
    /// (peers' from their heartbeats; ours as just computed).
    pub unable: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl MemberView {
    /// Whether `node` reported that it cannot announce `ip`.
    pub fn is_unable(&self, node: &str, ip: &IpAddr) -> bool {
        self.unable.get(node).is_some_and(|u| u.contains(ip))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn bind(port: u16) -> Result<UdpSocket, MembershipError> {
    // Dual-stack first, so peers of either family reach us; IPv4 only if IPv6 is disabled.
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(s) => Ok(s),
        Err(_) => UdpSocket::bind(("0.0.0.0", port))
            .await
            .map_err(|source| MembershipError::Bind { port, source }),
    }
}

/// This speaker's heartbeats: the socket and the membership state machine. See the module
/// docs.
#[derive(Debug)]
pub struct Heartbeats {
    node: String,
    cfg: membership::Config,
    sock: UdpSocket,
    membership: Membership,
    metrics: Metrics,
    /// Every other node's name and heartbeat address, as last given; `None` until the first
    /// peer list arrived.
    peers: Option<Vec<(String, SocketAddr)>>,
    /// When each peer was last heard directly, for detection-time metrics.
    last_heard: BTreeMap<String, Instant>,
    /// When each peer last came up (see [`crate::l2::decide::owners`] on young claimants).
    up_since: BTreeMap<String, Instant>,
    /// IPs this node is eligible for but cannot place, as last given to membership.
    unable: BTreeSet<IpAddr>,
}

impl Heartbeats {
    /// Binds the heartbeat port and starts the state machine at `start`.
    pub async fn bind(
        node: String,
        port: u16,
        cfg: membership::Config,
        metrics: Metrics,
        start: Instant,
    ) -> Result<Heartbeats, MembershipError> {
        let sock = bind(port).await?;
        Ok(Heartbeats {
            membership: Membership::new(node.clone(), now_ms(), cfg, start),
            node,
            cfg,
            sock,
            metrics,
            peers: None,
            last_heard: BTreeMap::new(),
            up_since: BTreeMap::new(),
            unable: BTreeSet::new(),
        })
    }

    /// Receives one datagram into `buf` (for [`Self::on_datagram`]).
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf).await
    }

    /// When the state machine next needs a [`Self::tick`].
    pub fn next_timeout(&self) -> Instant {
        self.membership.next_timeout()
    }

    /// A new peer list from the watches. The first one restarts the state machine (same
    /// incarnation) at `now`: the join grace counts from when peers are known, not from process
    /// start, because with a slow API server the first peer list can arrive after the grace, and
    /// a speaker that never heard its peers' claims would snatch every IP.
    pub fn set_peers(&mut self, peers: &[(String, SocketAddr)], now: Instant) {
        if self.peers.is_none() {
            self.membership = Membership::new(
                self.node.clone(),
                self.membership.incarnation(),
                self.cfg,
                now,
            );
        }
        if self.peers.as_deref() != Some(peers) {
            for e in self.membership.set_peers(peers.to_vec()) {
                self.on_event(e, now);
            }
            self.peers = Some(peers.to_vec());
        }
    }

    /// Handles one received datagram.
    pub fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        match Message::decode(bytes) {
            Ok(msg) => {
                let name = msg.from().to_string();
                let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                let events = self.membership.on_message(from, msg, now);
                if self
                    .peers
                    .as_ref()
                    .is_some_and(|p| p.iter().any(|(n, _)| *n == name))
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

    /// Advances liveness and sends the heartbeats due, carrying `claims` (what this node
    /// announces).
    pub async fn tick(&mut self, now: Instant, claims: &[IpAddr]) {
        let actions = self.membership.tick(now, claims);
        self.send_all(actions).await;
    }

    /// Advances liveness only (peers that die meanwhile stop counting); nothing is sent. For
    /// the hand-over, when this node no longer heartbeats.
    pub fn tick_silently(&mut self, now: Instant) {
        let _ = self.membership.tick(now, &[]);
    }

    /// Tells every peer this node leaves, so they take over at once. Sent twice: a single lost
    /// datagram would otherwise cost peers a full `dead_after`.
    pub async fn leave(&mut self) {
        let leave = self.membership.leave();
        self.send_all(leave.clone()).await;
        self.send_all(leave).await;
    }

    /// Whether this node has heard its peers long enough to announce.
    pub fn settled(&self, now: Instant) -> bool {
        self.membership.settled(now)
    }

    /// Alive speakers, this one included.
    pub fn alive(&self) -> BTreeSet<String> {
        self.membership.alive()
    }

    /// What `node` claims in its heartbeats.
    pub fn claims(&self, node: &str) -> &[IpAddr] {
        self.membership.claims(node)
    }

    /// Sets the IPs this node is eligible for but cannot place, carried in its next heartbeats
    /// (only a change is passed on to the state machine).
    pub fn set_unable(&mut self, unable: BTreeSet<IpAddr>) {
        if unable != self.unable {
            self.membership.set_unable(unable.iter().copied().collect());
            self.unable = unable;
        }
    }

    /// The membership view, with this node's unable set as just set ([`Self::set_unable`]),
    /// not as last sent.
    pub fn view(&self, now: Instant) -> MemberView {
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
        let young_for = self.cfg.dead_after + self.cfg.interval;
        let young = self
            .up_since
            .iter()
            .filter(|(n, at)| alive.contains(*n) && now.saturating_duration_since(**at) < young_for)
            .map(|(n, _)| n.clone())
            .collect();
        let mut unable: BTreeMap<String, BTreeSet<IpAddr>> = alive
            .iter()
            .filter(|n| **n != self.node)
            .map(|n| {
                (
                    n.clone(),
                    self.membership.unable(n).iter().copied().collect(),
                )
            })
            .collect();
        unable.insert(self.node.clone(), self.unable.clone());
        MemberView {
            alive,
            claims,
            young,
            unable,
        }
    }

    async fn send_all(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, bytes } => {
                    // UDP to a dead peer may fail (unreachable); heartbeats are best effort.
                    let _ = self.sock.send_to(&bytes, to).await;
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
}
