//! Speaker membership: which speakers are alive, what each one announces and which IPs each one
//! cannot announce, learned from the speakers' own UDP heartbeats.
//!
//! Owns a deterministic state machine in the style of quinn-proto: the shell feeds it received
//! messages ([`Membership::on_message`]) and the passage of time ([`Membership::tick`]) and
//! carries out the returned [`Action`]s (send these bytes, log/measure this event). It must not
//! open sockets, read clocks or sleep; `now` always comes from the caller, so tests run on a
//! virtual clock. Heartbeat bytes are defined in [`codec`].
//!
//! # Failure detection
//!
//! A peer is dead when nothing was heard from it directly for `dead_after` **and** no peer that
//! is itself directly alive reports (in its heartbeat's `heard` list, with the report's own age
//! added) having heard it within `dead_after`. The indirect evidence avoids a false fail-over
//! when only the path between this speaker and the peer is slow or lossy: if the others still
//! hear it, it still announces, and taking its IPs would create a conflict. Only direct hearing
//! is ever reported, and only directly-alive reporters count, so a dead peer cannot be kept
//! alive by rumours circulating between the living. A peer only ever vouched for keeps the
//! claims of the last heartbeat heard from it directly, and a peer never heard directly is not
//! alive at all (its claims are unknown).
//!
//! A [`Message::Leave`] marks its sender dead at once (graceful hand-over on SIGTERM); later
//! heartbeats of the same incarnation are ignored. A heartbeat with a newer incarnation means
//! the peer restarted: its old state, including its claims, is dropped. While a peer is dead, a
//! heartbeat with any other incarnation is also taken as a new instance, so a restart whose
//! clock went backwards recovers once the old instance is declared dead.
//!
//! # How the shell uses it
//!
//! The owner of an IP is `election::owner(ip, candidates, |n| claims(n).contains(&ip))` where the
//! candidates are `eligible ∩ alive()` minus the nodes whose [`Membership::unable`] lists the IP
//! (a node without a usable interface for it must not be elected: nobody would answer).
//! A speaker announces only while [`Membership::settled`] is true: a fresh speaker first hears
//! its peers' claims, so it never snatches an IP another speaker holds. The shell reports this
//! speaker's own unable IPs with [`Membership::set_unable`]; they go out with every heartbeat.

pub mod codec;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use codec::{CodecError, Heartbeat, MAX_CLAIMS, MAX_HEARD, Message};

/// Timing of heartbeats and failure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Heartbeat period. Default 25 ms.
    pub interval: Duration,
    /// Silence after which a peer is declared dead (absent indirect evidence). Default 200 ms.
    pub dead_after: Duration,
    /// How long after start a speaker waits to hear every known peer before it announces
    /// anyway. Default `2 * dead_after`.
    pub join_grace: Duration,
}

impl Config {
    /// A config with the given timings and `join_grace = 2 * dead_after`.
    pub fn new(interval: Duration, dead_after: Duration) -> Self {
        Self {
            interval,
            dead_after,
            join_grace: dead_after.saturating_mul(2),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(Duration::from_millis(25), Duration::from_millis(200))
    }
}

/// Why a peer stopped being alive. `as_str()` values are stable metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownReason {
    /// Neither heard directly nor vouched for by another peer within `dead_after`.
    Timeout,
    /// It sent a Leave.
    Left,
    /// A heartbeat with another incarnation arrived: the old instance is gone.
    Restarted,
    /// It disappeared from the peer list given to [`Membership::set_peers`].
    Removed,
}

impl DownReason {
    /// Stable snake_case label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Left => "left",
            Self::Restarted => "restarted",
            Self::Removed => "removed",
        }
    }
}

/// Something the shell should log or measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer became alive.
    Up(String),
    /// The peer stopped being alive; its claims no longer count.
    Down(String, DownReason),
    /// This speaker was given more claims than one heartbeat can carry ([`MAX_CLAIMS`]); only
    /// the first ones are advertised, so peers may contest the rest. Reported when the number
    /// of dropped claims changes.
    ClaimsTruncated {
        /// Claims advertised.
        kept: usize,
        /// Claims not advertised.
        dropped: usize,
    },
    /// The unable IPs did not fit in what the claims leave of [`MAX_CLAIMS`]; only the first
    /// ones are advertised, so peers may elect this speaker for the rest, which it never claims:
    /// an IP it ranks first for stays unannounced for as long as the truncation lasts. Reported
    /// when the number of dropped entries changes.
    UnableTruncated {
        /// Unable IPs advertised.
        kept: usize,
        /// Unable IPs not advertised.
        dropped: usize,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one UDP datagram.
    Send {
        /// Destination.
        to: SocketAddr,
        /// Encoded [`Message`].
        bytes: Vec<u8>,
    },
    /// Log or measure an event.
    Event(Event),
}

/// Counters of messages that were ignored, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages from names not in the peer list.
    pub unknown_sender: u64,
    /// Messages carrying this speaker's own name (a looped packet or a duplicate node name).
    pub from_self: u64,
    /// Repeated, reordered or superseded messages (old seq or incarnation, heartbeat after Leave).
    pub stale: u64,
    /// Accepted messages whose source IP differs from the peer's configured address
    /// (multi-homed nodes may legitimately do this).
    pub unexpected_addr: u64,
}

#[derive(Debug, Clone)]
struct PeerState {
    incarnation: u64,
    seq: u64,
    /// Last direct heartbeat of this incarnation.
    last_heard: Instant,
    claims: Vec<IpAddr>,
    /// IPs the peer reported it cannot announce (last heartbeat).
    unable: Vec<IpAddr>,
    /// The peer's last report of whom it heard and how long before `last_heard`.
    heard: Vec<(String, u32)>,
    alive: bool,
    left: bool,
}

#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    /// `None` until the first message from this peer.
    state: Option<PeerState>,
}

/// The membership state machine of one speaker. See the module docs.
#[derive(Debug, Clone)]
pub struct Membership {
    name: String,
    incarnation: u64,
    config: Config,
    started: Instant,
    seq: u64,
    next_send: Instant,
    left: bool,
    peers_known: bool,
    peers: BTreeMap<String, Peer>,
    my_claims: Vec<IpAddr>,
    claims_dropped: usize,
    /// As given to [`Self::set_unable`].
    my_unable: Vec<IpAddr>,
    /// How many of `my_unable` the last heartbeat could not carry.
    unable_dropped: usize,
    stats: Stats,
}

impl Membership {
    /// A speaker named `self_name` started at `now`. `incarnation` must differ between restarts
    /// and should grow: the shell passes its start time in ms since the Unix epoch (this crate
    /// reads no clocks). The first heartbeat is due at once.
    pub fn new(
        self_name: impl Into<String>,
        incarnation: u64,
        config: Config,
        now: Instant,
    ) -> Self {
        Self {
            name: self_name.into(),
            incarnation,
            config,
            started: now,
            seq: 0,
            next_send: now,
            left: false,
            peers_known: false,
            peers: BTreeMap::new(),
            my_claims: Vec::new(),
            claims_dropped: 0,
            my_unable: Vec::new(),
            unable_dropped: 0,
            stats: Stats::default(),
        }
    }

    /// This speaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This speaker's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Counters of ignored messages.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// When the next heartbeat is due: the latest time the shell should call [`Self::tick`].
    pub fn next_timeout(&self) -> Instant {
        self.next_send
    }

    /// Replaces the peer list (speakers' names and heartbeat addresses, from Node objects).
    /// This speaker's own name is skipped; for duplicate names the last entry wins. Peers that
    /// remain keep their state; removed peers that were alive are reported down.
    pub fn set_peers(&mut self, peers: Vec<(String, SocketAddr)>) -> Vec<Event> {
        self.peers_known = true;
        let mut next: BTreeMap<String, Peer> = BTreeMap::new();
        for (name, addr) in peers {
            if name == self.name {
                continue;
            }
            let state = match next.remove(&name) {
                Some(p) => p.state,
                None => self.peers.remove(&name).and_then(|p| p.state),
            };
            next.insert(name, Peer { addr, state });
        }
        let events = std::mem::take(&mut self.peers)
            .into_iter()
            .filter(|(_, p)| p.state.as_ref().is_some_and(|s| s.alive))
            .map(|(name, _)| Event::Down(name, DownReason::Removed))
            .collect();
        self.peers = next;
        events
    }

    /// Feeds one received message. `from_addr` is the datagram's source, used only for
    /// [`Stats::unexpected_addr`]: identity comes from the message's name.
    pub fn on_message(
        &mut self,
        from_addr: SocketAddr,
        message: Message,
        now: Instant,
    ) -> Vec<Event> {
        let name = message.from();
        if name == self.name {
            self.stats.from_self += 1;
            return Vec::new();
        }
        let Some(peer) = self.peers.get_mut(name) else {
            self.stats.unknown_sender += 1;
            return Vec::new();
        };
        if peer.addr.ip() != from_addr.ip() {
            self.stats.unexpected_addr += 1;
        }
        let mut events = Vec::new();
        match message {
            Message::Heartbeat(hb) => {
                let fresh = PeerState {
                    incarnation: hb.incarnation,
                    seq: hb.seq,
                    last_heard: now,
                    claims: hb.claims,
                    unable: hb.unable,
                    heard: hb.heard,
                    alive: true,
                    left: false,
                };
                match &mut peer.state {
                    None => {
                        peer.state = Some(fresh);
                        events.push(Event::Up(hb.from));
                    }
                    Some(s) if hb.incarnation == s.incarnation => {
                        if s.left || hb.seq <= s.seq {
                            self.stats.stale += 1;
                        } else {
                            if !s.alive {
                                events.push(Event::Up(hb.from));
                            }
                            *s = fresh;
                        }
                    }
                    // A newer instance, or any other instance once the known one is dead.
                    Some(s) if hb.incarnation > s.incarnation || !s.alive => {
                        if s.alive {
                            events.push(Event::Down(hb.from.clone(), DownReason::Restarted));
                        }
                        *s = fresh;
                        events.push(Event::Up(hb.from));
                    }
                    Some(_) => self.stats.stale += 1,
                }
            }
            Message::Leave { from, incarnation } => match &mut peer.state {
                Some(s) if incarnation < s.incarnation && s.alive => self.stats.stale += 1,
                state => {
                    if state.as_ref().is_some_and(|s| s.alive) {
                        events.push(Event::Down(from, DownReason::Left));
                    }
                    *state = Some(PeerState {
                        incarnation,
                        seq: 0,
                        last_heard: now,
                        claims: Vec::new(),
                        unable: Vec::new(),
                        heard: Vec::new(),
                        alive: false,
                        left: true,
                    });
                }
            },
        }
        events
    }

    /// Sets the IPs this speaker is eligible for but cannot announce (no usable interface).
    /// Every heartbeat from now on carries them, after the claims, in what the claims leave of
    /// [`MAX_CLAIMS`]. A setter rather than a [`Self::tick`] argument because it changes only
    /// with interfaces and plans, not with every decision.
    pub fn set_unable(&mut self, unable: Vec<IpAddr>) {
        self.my_unable = unable;
    }

    /// Advances time: updates liveness (reporting changes) and, when due, heartbeats every peer
    /// with `my_claims` (the IPs this speaker announces now) and the IPs given to
    /// [`Self::set_unable`]. Does nothing after [`Self::leave`].
    pub fn tick(&mut self, now: Instant, my_claims: &[IpAddr]) -> Vec<Action> {
        if self.left {
            return Vec::new();
        }
        let mut actions = Vec::new();
        let kept = my_claims.len().min(MAX_CLAIMS);
        self.my_claims = my_claims.get(..kept).unwrap_or(my_claims).to_vec();
        let dropped = my_claims.len() - kept;
        if dropped != self.claims_dropped {
            self.claims_dropped = dropped;
            if dropped > 0 {
                actions.push(Action::Event(Event::ClaimsTruncated { kept, dropped }));
            }
        }
        let unable_kept = self.my_unable.len().min(MAX_CLAIMS - kept);
        let unable_dropped = self.my_unable.len() - unable_kept;
        if unable_dropped != self.unable_dropped {
            self.unable_dropped = unable_dropped;
            if unable_dropped > 0 {
                actions.push(Action::Event(Event::UnableTruncated {
                    kept: unable_kept,
                    dropped: unable_dropped,
                }));
            }
        }
        actions.extend(self.update_liveness(now).into_iter().map(Action::Event));
        if now >= self.next_send {
            self.seq += 1;
            let bytes = Message::Heartbeat(self.heartbeat(now)).encode();
            for peer in self.peers.values() {
                actions.push(Action::Send {
                    to: peer.addr,
                    bytes: bytes.clone(),
                });
            }
            // Keep the cadence without bursts: if the shell was late by more than one
            // interval, restart the schedule from now instead of catching up.
            let next = self
                .next_send
                .checked_add(self.config.interval)
                .unwrap_or(now);
            self.next_send = if next > now {
                next
            } else {
                now.checked_add(self.config.interval).unwrap_or(now)
            };
        }
        actions
    }

    /// Graceful shutdown: a Leave for every peer. Afterwards this speaker is not alive, not
    /// settled, and [`Self::tick`] sends nothing.
    pub fn leave(&mut self) -> Vec<Action> {
        self.left = true;
        let bytes = Message::Leave {
            from: self.name.clone(),
            incarnation: self.incarnation,
        }
        .encode();
        self.peers
            .values()
            .map(|p| Action::Send {
                to: p.addr,
                bytes: bytes.clone(),
            })
            .collect()
    }

    /// Alive speakers, this one included (until it leaves), as of the last call.
    pub fn alive(&self) -> BTreeSet<String> {
        let mut alive: BTreeSet<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.state.as_ref().is_some_and(|s| s.alive))
            .map(|(n, _)| n.clone())
            .collect();
        if !self.left {
            alive.insert(self.name.clone());
        }
        alive
    }

    /// The IPs `node` announces: its last heartbeat's claims if it is alive, this speaker's
    /// claims from the last [`Self::tick`] if `node` is this speaker, otherwise none (claims
    /// of dead speakers do not count).
    pub fn claims(&self, node: &str) -> &[IpAddr] {
        if node == self.name {
            return if self.left { &[] } else { &self.my_claims };
        }
        match self.peers.get(node).and_then(|p| p.state.as_ref()) {
            Some(s) if s.alive => &s.claims,
            _ => &[],
        }
    }

    /// The IPs `node` reported it cannot announce: its last heartbeat's `unable` list if it is
    /// alive, what was given to [`Self::set_unable`] if `node` is this speaker, otherwise none.
    pub fn unable(&self, node: &str) -> &[IpAddr] {
        if node == self.name {
            return if self.left { &[] } else { &self.my_unable };
        }
        match self.peers.get(node).and_then(|p| p.state.as_ref()) {
            Some(s) if s.alive => &s.unable,
            _ => &[],
        }
    }

    /// Whether this speaker may announce: true once every known peer has been heard from
    /// (so their claims are known), or once `join_grace` has passed since start (peers that
    /// stay silent that long are dead). False before the peer list was first set (unless the
    /// grace has passed) and after [`Self::leave`].
    pub fn settled(&self, now: Instant) -> bool {
        if self.left {
            return false;
        }
        if now.saturating_duration_since(self.started) >= self.config.join_grace {
            return true;
        }
        self.peers_known && self.peers.values().all(|p| p.state.is_some())
    }

    fn update_liveness(&mut self, now: Instant) -> Vec<Event> {
        let dead_after = self.config.dead_after;
        // Ages of the evidence each peer is alive: direct, then vouched for by reporters that
        // are themselves directly alive.
        let mut best: BTreeMap<&str, Duration> = BTreeMap::new();
        for (name, peer) in &self.peers {
            if let Some(s) = peer.state.as_ref().filter(|s| !s.left) {
                best.insert(name, now.saturating_duration_since(s.last_heard));
            }
        }
        for (reporter, peer) in &self.peers {
            let Some(s) = peer.state.as_ref().filter(|s| !s.left) else {
                continue;
            };
            let report_age = now.saturating_duration_since(s.last_heard);
            if report_age >= dead_after {
                continue;
            }
            for (subject, age_ms) in &s.heard {
                if subject == reporter {
                    continue;
                }
                if let Some(b) = best.get_mut(subject.as_str()) {
                    let age = report_age.saturating_add(Duration::from_millis(u64::from(*age_ms)));
                    *b = (*b).min(age);
                }
            }
        }
        let verdicts: Vec<(String, bool)> = best
            .into_iter()
            .map(|(name, age)| (name.to_owned(), age < dead_after))
            .collect();
        let mut events = Vec::new();
        for (name, alive) in verdicts {
            if let Some(s) = self.peers.get_mut(&name).and_then(|p| p.state.as_mut()) {
                if s.alive && !alive {
                    events.push(Event::Down(name, DownReason::Timeout));
                } else if !s.alive && alive {
                    events.push(Event::Up(name));
                }
                s.alive = alive;
            }
        }
        events
    }

    fn heartbeat(&self, now: Instant) -> Heartbeat {
        // Report only direct hearing, freshest first, and only what can still help a receiver
        // (older than dead_after is no evidence at all); the cut keeps the freshest.
        let mut heard: Vec<(String, u32)> = self
            .peers
            .iter()
            .filter_map(|(name, p)| {
                let s = p.state.as_ref().filter(|s| !s.left)?;
                let age = now.saturating_duration_since(s.last_heard);
                (age < self.config.dead_after).then(|| {
                    (
                        name.clone(),
                        u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
                    )
                })
            })
            .collect();
        heard.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        heard.truncate(MAX_HEARD);
        Heartbeat {
            from: self.name.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            uptime_ms: u64::try_from(now.saturating_duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX),
            heard,
            claims: self.my_claims.clone(),
            // Cut here, not in the setter: the room depends on the claims of this tick.
            unable: self
                .my_unable
                .iter()
                .take(MAX_CLAIMS - self.my_claims.len())
                .copied()
                .collect(),
        }
    }
}
