//! A deterministic virtual-time network of [`Membership`] instances, for tests and the
//! `membership_bench` example.
//!
//! Owns a simulated clock, a queue of datagrams in flight and the faults injected into it: per
//! link latency and jitter, random loss, one-way blocks, partitions, members that crash, stall
//! (process nothing for a while, then everything queued at once, as a starved process does) or
//! restart. It must not read clocks or OS randomness: the caller passes a base [`Instant`]
//! (virtual time is an offset from it) and a seed, so every run with the same inputs is
//! identical. Shell behaviour it reproduces: datagrams received while stalled are handed over
//! before the next tick, each with the time it is processed (no kernel timestamps).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::rng::Rng;
use super::{Action, Config, Event, Membership};
use crate::election;

/// UDP and IPv4 header bytes added to every payload when counting bytes on the wire.
pub const WIRE_OVERHEAD: u64 = 28;

/// How the network treats every datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// Smallest one-way latency.
    pub latency: Duration,
    /// Per-link extra latency, fixed per ordered pair: uniform in `0..link_spread`.
    pub link_spread: Duration,
    /// Per-datagram extra latency: uniform in `0..jitter`.
    pub jitter: Duration,
    /// Datagrams lost, per million.
    pub loss_ppm: u32,
}

impl Default for Net {
    /// A LAN: 200 µs plus up to 300 µs per link and up to 500 µs per datagram, no loss.
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(200),
            link_spread: Duration::from_micros(300),
            jitter: Duration::from_micros(500),
            loss_ppm: 0,
        }
    }
}

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Running.
    Up,
    /// Crashed: receives and sends nothing.
    Down,
    /// Not running until the given virtual time; datagrams queue up.
    Stalled(Duration),
}

/// How a member chooses the IPs it claims at each tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claims {
    /// The list set with [`Sim::set_claims`] (default empty).
    Static,
    /// Once settled, the IPs of this list it owns by [`election::owner`] over its own view
    /// (every member eligible, unable IPs excluded), like the speaker's shell.
    Elect(Vec<IpAddr>),
}

/// Bytes and datagrams one member sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams sent.
    pub sent_packets: u64,
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Datagrams delivered to it.
    pub recv_packets: u64,
    /// Payload bytes delivered to it.
    pub recv_bytes: u64,
}

/// One event a member reported, with when and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Virtual time.
    pub at: Duration,
    /// The member that reported it.
    pub node: usize,
    /// What it reported.
    pub event: Event,
}

#[derive(Debug, Clone)]
struct Node {
    m: Membership,
    life: Life,
    inbox: Vec<(usize, Vec<u8>)>,
    claims: Vec<IpAddr>,
    /// Token of the wake-up that counts (older queued ones are ignored).
    wake: u64,
    wake_at: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Wake {
        node: usize,
        token: u64,
    },
    Resume {
        node: usize,
    },
}

/// The simulated cluster. See the module docs. Cloning it forks the run (same state, same
/// random sequence), so several scenarios can start from one warmed-up cluster.
#[derive(Debug, Clone)]
pub struct Sim {
    t0: Instant,
    now: Duration,
    rng: Rng,
    seed: u64,
    /// Network behaviour; may be changed between runs.
    pub net: Net,
    /// Configuration of members started or restarted from now on.
    pub config: Config,
    /// How members choose their claims.
    pub claims: Claims,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Duration, u64, Ev)>>,
    order: u64,
    groups: Option<Vec<u32>>,
    /// One-way blocks `(from, to)`.
    pub blocked: BTreeSet<(usize, usize)>,
    log: Vec<Logged>,
    traffic: Vec<Traffic>,
    generation: u64,
    spins: u64,
    /// Whether to count sent datagrams by kind (costs a decode per datagram).
    pub classify: bool,
    by_kind: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

/// The kind of a datagram, for [`Sim::traffic_by_kind`].
fn kind_of(bytes: &[u8]) -> &'static str {
    use super::codec::{Body, Datagram, Item};
    match super::codec::decode(bytes) {
        Ok(Datagram::Packet(p)) => match p.body {
            Body::Ping { .. } => "ping",
            Body::Ack { .. } => "ack",
            Body::PingReq { .. } => "ping-req",
            Body::Nack { .. } => "nack",
            Body::Notice => match p.items.first() {
                Some(Item::Dead { .. }) => "notice dead",
                Some(Item::Suspect { .. }) => "notice suspect",
                Some(Item::Alive { .. }) => "notice alive",
                Some(Item::Left { .. }) => "notice left",
                Some(Item::Delta(_)) => "notice delta",
                Some(Item::State(_)) => "notice state",
                None => "notice",
            },
            Body::SyncReq { ref hashes } if hashes.is_empty() => "sync-req bulk",
            Body::SyncReq { .. } => "sync-req",
            Body::SyncDigest { .. } => "sync-digest",
            Body::SyncPull { .. } => "sync-pull",
        },
        Ok(Datagram::Legacy(_)) => "v2 heartbeat",
        Err(_) => "invalid",
    }
}

/// Name of member `i`.
pub fn name(i: usize) -> String {
    format!("node-{i:04}")
}

/// Address of member `i` (2001:db8::/32, the documentation prefix).
pub fn addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    let ip = Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        u16::try_from(i >> 16).unwrap_or(0),
        u16::try_from(i & 0xffff).unwrap_or(0),
    );
    SocketAddr::new(IpAddr::V6(ip), 7946)
}

/// Member index of address `a` (inverse of [`addr`]).
pub fn index_of(a: SocketAddr) -> Option<usize> {
    match a.ip() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] == 0x2001 && s[1] == 0xdb8).then(|| (usize::from(s[6]) << 16) | usize::from(s[7]))
        }
        IpAddr::V4(_) => None,
    }
}

impl Sim {
    /// `n` members with `config`, all started at virtual time 0, each knowing every other from
    /// the start. `t0` is the real instant virtual time 0 maps to (taken once by the caller;
    /// this crate reads no clock).
    pub fn new(n: usize, config: Config, net: Net, seed: u64, t0: Instant) -> Self {
        let mut sim = Self {
            t0,
            now: Duration::ZERO,
            rng: Rng::new(seed),
            seed,
            net,
            config,
            claims: Claims::Static,
            nodes: Vec::with_capacity(n),
            queue: BinaryHeap::new(),
            order: 0,
            groups: None,
            blocked: BTreeSet::new(),
            log: Vec::new(),
            traffic: vec![Traffic::default(); n],
            generation: 1_000,
            spins: 0,
            classify: false,
            by_kind: std::collections::BTreeMap::new(),
        };
        for i in 0..n {
            let m = sim.fresh(i);
            sim.nodes.push(Node {
                m,
                life: Life::Up,
                inbox: Vec::new(),
                claims: Vec::new(),
                wake: 0,
                wake_at: None,
            });
            sim.schedule(i);
        }
        sim
    }

    fn fresh(&mut self, i: usize) -> Membership {
        self.generation += 1;
        let seed =
            super::rng::mix(self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9) ^ self.generation);
        let mut m = Membership::with_seed(
            name(i),
            self.generation,
            self.config,
            self.at(self.now),
            seed,
        );
        let n = self.traffic.len();
        let _ = m.set_peers((0..n).map(|j| (name(j), addr(j))).collect());
        m
    }

    /// The real instant of virtual time `t`.
    pub fn at(&self, t: Duration) -> Instant {
        self.t0 + t
    }

    /// Current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Member `i`'s state machine.
    pub fn member(&self, i: usize) -> &Membership {
        &self.nodes[i].m
    }

    /// Member `i`'s state machine, to call it directly (its actions are then the caller's).
    pub fn member_mut(&mut self, i: usize) -> &mut Membership {
        &mut self.nodes[i].m
    }

    /// Member `i`'s life.
    pub fn life(&self, i: usize) -> Life {
        self.nodes[i].life
    }

    /// Ticks after which a member's next deadline was still not in the future (a bug: the
    /// simulator would spin at one instant; it moves such a member on by 1 ms instead).
    pub fn spins(&self) -> u64 {
        self.spins
    }

    /// Everything the members reported so far.
    pub fn log(&self) -> &[Logged] {
        &self.log
    }

    /// Forgets the log (long runs).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// Member `i`'s traffic so far.
    pub fn traffic(&self, i: usize) -> Traffic {
        self.traffic[i]
    }

    /// Resets every traffic counter.
    pub fn reset_traffic(&mut self) {
        for t in &mut self.traffic {
            *t = Traffic::default();
        }
        self.by_kind.clear();
    }

    /// Datagrams and payload bytes sent by all members, by kind, since the last reset (only
    /// while [`Sim::classify`] is set).
    pub fn traffic_by_kind(&self) -> &std::collections::BTreeMap<&'static str, (u64, u64)> {
        &self.by_kind
    }

    /// Sets the IPs member `i` claims at each tick (with [`Claims::Static`]).
    pub fn set_claims(&mut self, i: usize, claims: Vec<IpAddr>) {
        self.nodes[i].claims = claims;
    }

    /// The claims member `i` passes to its ticks.
    pub fn claims_of(&self, i: usize) -> &[IpAddr] {
        &self.nodes[i].claims
    }

    /// Crashes member `i`: it stops at once, says nothing.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].life = Life::Down;
        self.nodes[i].inbox.clear();
    }

    /// Stalls member `i` for `d`: it processes nothing, then everything queued at once.
    pub fn stall(&mut self, i: usize, d: Duration) {
        if self.nodes[i].life == Life::Down {
            return;
        }
        let until = self.now + d;
        self.nodes[i].life = Life::Stalled(until);
        self.push(until, Ev::Resume { node: i });
    }

    /// Restarts member `i` as a new instance (new generation, empty state).
    pub fn restart(&mut self, i: usize) {
        let m = self.fresh(i);
        let n = &mut self.nodes[i];
        n.m = m;
        n.life = Life::Up;
        n.inbox.clear();
        n.wake_at = None;
        self.schedule(i);
    }

    /// Restarts member `i` as a new instance with its own configuration (a member of another
    /// protocol, e.g. [`super::Protocol::Legacy`] for a rolling upgrade).
    pub fn set_config(&mut self, i: usize, config: Config) {
        let saved = std::mem::replace(&mut self.config, config);
        self.restart(i);
        self.config = saved;
    }

    /// Member `i` leaves gracefully (and keeps running, as the shell does during hand-over).
    pub fn leave(&mut self, i: usize) {
        let actions = self.nodes[i].m.leave();
        self.handle(i, actions);
    }

    /// Splits the network: members only reach members of the same group.
    pub fn partition(&mut self, groups: Vec<u32>) {
        self.groups = Some(groups);
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, ev)));
    }

    fn schedule(&mut self, i: usize) {
        let next = self.nodes[i].m.next_timeout();
        let at = next.saturating_duration_since(self.t0).max(self.now);
        if self.nodes[i].wake_at == Some(at) {
            return;
        }
        self.nodes[i].wake += 1;
        self.nodes[i].wake_at = Some(at);
        let token = self.nodes[i].wake;
        self.push(at, Ev::Wake { node: i, token });
    }

    fn link_latency(&mut self, from: usize, to: usize) -> Duration {
        let spread = self.net.link_spread.as_micros() as u64;
        let jitter = self.net.jitter.as_micros() as u64;
        let link = if spread == 0 {
            0
        } else {
            super::rng::mix((from as u64) << 32 | to as u64) % spread
        };
        let j = if jitter == 0 {
            0
        } else {
            self.rng.next_u64() % jitter
        };
        self.net.latency + Duration::from_micros(link + j)
    }

    fn handle(&mut self, from: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, bytes } => {
                    let Some(to) = index_of(to).filter(|&t| t < self.nodes.len()) else {
                        continue;
                    };
                    let t = &mut self.traffic[from];
                    t.sent_packets += 1;
                    t.sent_bytes += bytes.len() as u64;
                    if self.classify {
                        let kind = kind_of(&bytes);
                        let e = self.by_kind.entry(kind).or_default();
                        e.0 += 1;
                        e.1 += bytes.len() as u64;
                    }
                    if self.blocked.contains(&(from, to)) {
                        continue;
                    }
                    if let Some(g) = &self.groups
                        && g.get(from) != g.get(to)
                    {
                        continue;
                    }
                    if self.net.loss_ppm > 0 && self.rng.chance_ppm(self.net.loss_ppm) {
                        continue;
                    }
                    let at = self.now + self.link_latency(from, to);
                    self.push(at, Ev::Deliver { from, to, bytes });
                }
                Action::Event(event) => self.log.push(Logged {
                    at: self.now,
                    node: from,
                    event,
                }),
            }
        }
    }

    fn claims_for(&self, i: usize, now: Instant) -> Vec<IpAddr> {
        let node = &self.nodes[i];
        match &self.claims {
            Claims::Static => node.claims.clone(),
            Claims::Elect(ips) => {
                let m = &node.m;
                if !m.settled(now) {
                    return Vec::new();
                }
                let alive = m.alive();
                let me = m.name().to_string();
                ips.iter()
                    .copied()
                    .filter(|ip| {
                        let candidates = alive.iter().filter(|n| !m.unable(n).contains(ip));
                        election::owner(*ip, candidates, |n| m.claims(n).contains(ip))
                            == Some(me.as_str())
                    })
                    .collect()
            }
        }
    }

    fn tick(&mut self, i: usize) {
        let now = self.at(self.now);
        let claims = self.claims_for(i, now);
        if matches!(self.claims, Claims::Elect(_)) {
            self.nodes[i].claims = claims.clone();
        }
        let actions = self.nodes[i].m.tick(now, &claims);
        self.handle(i, actions);
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let now = self.at(self.now);
        let t = &mut self.traffic[to];
        t.recv_packets += 1;
        t.recv_bytes += bytes.len() as u64;
        // Every sender emits valid datagrams; a decode error would be a bug worth seeing.
        match self.nodes[to].m.on_datagram(addr(from), bytes, now) {
            Ok(actions) => self.handle(to, actions),
            Err(e) => self.log.push(Logged {
                at: self.now,
                node: to,
                event: Event::Down(format!("decode error: {e}"), super::DownReason::Removed),
            }),
        }
    }

    /// Runs until virtual time `end`.
    pub fn run_until(&mut self, end: Duration) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > end {
                break;
            }
            let Some(Reverse((at, _, ev))) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            match ev {
                Ev::Deliver { from, to, bytes } => match self.nodes[to].life {
                    Life::Down => {}
                    Life::Stalled(_) => self.nodes[to].inbox.push((from, bytes)),
                    Life::Up => {
                        self.deliver(from, to, &bytes);
                        // As the speaker's thread does: awake anyway, it ticks when a deadline
                        // (a probe) is due within the slack.
                        if self.nodes[to].m.tick_due(self.at(self.now)) {
                            self.tick(to);
                        }
                        self.schedule(to);
                    }
                },
                Ev::Wake { node, token } => {
                    if token != self.nodes[node].wake || self.nodes[node].life != Life::Up {
                        continue;
                    }
                    self.nodes[node].wake_at = None;
                    self.tick(node);
                    if self.nodes[node].m.next_timeout() <= self.at(self.now) {
                        // A tick that leaves its own deadline in the past would spin forever
                        // at one instant: count it (tests require none) and move on.
                        self.spins += 1;
                        let token = self.nodes[node].wake + 1;
                        self.nodes[node].wake = token;
                        let at = self.now + Duration::from_millis(1);
                        self.nodes[node].wake_at = Some(at);
                        self.push(at, Ev::Wake { node, token });
                        continue;
                    }
                    self.schedule(node);
                }
                Ev::Resume { node } => {
                    if self.nodes[node].life != Life::Stalled(self.now) {
                        continue;
                    }
                    self.nodes[node].life = Life::Up;
                    for (from, bytes) in std::mem::take(&mut self.nodes[node].inbox) {
                        self.deliver(from, node, &bytes);
                    }
                    self.nodes[node].wake_at = None;
                    self.tick(node);
                    self.schedule(node);
                }
            }
        }
        self.now = self.now.max(end);
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }
}
