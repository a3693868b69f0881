//! The membership shell around `ferrolb_speaker_core::membership`: a dedicated OS thread that
//! owns the UDP socket and the [`Membership`] state machine, the [`Heartbeats`] handle the
//! engine talks to it through, the [`Snapshot`] (with the [`MemberView`] every mode decides
//! from) it publishes, and the [`Beat`] that tells L2's receive threads whether their answer
//! sets may still be trusted.
//!
//! Why a thread of its own: a peer judges this speaker by how fast it answers probes, so the
//! receiving side must not wait behind Kubernetes watches, status writes or a busy tokio
//! runtime. The thread blocks in `poll(2)` on the socket and a wake-up pipe, with a timeout
//! set from [`Membership::next_timeout`]; every turn it drains the received datagrams (any
//! version, fed to [`Membership::on_datagram`]) *before* calling [`Membership::tick`], so an
//! answer that arrived while it was descheduled counts before a timer is judged. Nothing else
//! runs on it, and it never awaits.
//!
//! The thread owns the socket, the state machine, this node's claims and unable IPs as last
//! given, and the membership metrics (packets and bytes by kind, local health, suspects,
//! declarations, detection times, stalls). It publishes a [`Snapshot`] on a watch channel only
//! when something in it changed. The engine sends the peer list (from the watches), this node's
//! unable IPs and its claims through [`Heartbeats`]. Who is alive, who claims what and who is
//! unable is the state machine's to decide; this module never decides who announces an IP (the
//! modes do, from the [`MemberView`]) and never talks to the API server.
//!
//! **Stalls.** If the thread itself did not run for longer than [`Config::declare_after`] (the
//! shortest silence after which a peer may declare this speaker dead), its IPs may already have
//! moved. It then stops advertising its claims before anything else goes out, blocks the
//! [`Beat`] (receive threads stop answering), and reports the stall in the snapshot; the engine
//! gives the IPs up, acknowledges the stall and stays quiet for a while. A busy tokio runtime is
//! no stall: peers still get their answers, and the receive threads keep answering from sets
//! that agree with the claims peers see.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::membership::{
    self, Action, Config, DownReason, Event, Membership, SwimStats,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::watch;

use crate::metrics as m;

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The membership port could not be bound.
    #[error("cannot bind the memberlist UDP port {port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// The socket or the wake-up pipe could not be set up.
    #[error("cannot set up the membership socket: {0}")]
    Setup(std::io::Error),
    /// The membership thread could not be started.
    #[error("cannot start the membership thread: {0}")]
    Thread(std::io::Error),
}

/// The membership view the decisions need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberView {
    /// Alive speakers, this one included.
    pub alive: BTreeSet<String>,
    /// What each alive speaker announces (peers' as advertised; ours as last given).
    pub claims: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Peers that came up very recently (see [`crate::l2::decide::owners`]).
    pub young: BTreeSet<String>,
    /// What each alive speaker reported it cannot announce, for lack of a usable interface
    /// (peers' as advertised; ours as last given).
    pub unable: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl MemberView {
    /// Whether `node` reported that it cannot announce `ip`.
    pub fn is_unable(&self, node: &str, ip: &IpAddr) -> bool {
        self.unable.get(node).is_some_and(|u| u.contains(ip))
    }
}

/// What the membership thread publishes, each time any of it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Who is alive, claims and unable IPs, young peers.
    pub view: MemberView,
    /// Whether this speaker may announce ([`Membership::settled`]).
    pub settled: bool,
    /// Local health score (0 = healthy; see [`Membership::health`]).
    pub health: u32,
    /// Peers currently suspected (still alive for the election).
    pub suspects: BTreeSet<String>,
    /// Stalls of the membership thread so far (see the module docs); the engine acknowledges
    /// each with [`Heartbeats::acknowledge_stall`].
    pub stalls: u64,
    /// This speaker left ([`Heartbeats::leave`] was carried out).
    pub left: bool,
}

/// The membership thread's proof of life, checked by L2's receive threads before every answer.
///
/// Why: if the process stalls (frozen with SIGSTOP, or starved of CPU), peers declare this
/// speaker dead and take its IPs; when it resumes, the receive threads would answer requests
/// queued in their sockets from a stale answer set before anything else caught up, poisoning
/// clients' caches. So they answer only while the membership thread (what peers judge this
/// speaker by) ran within `max_silence`, and no stall it detected is still unacknowledged by
/// the engine (which gives the IPs up first).
#[derive(Debug, Clone)]
pub struct Beat {
    inner: Arc<BeatInner>,
}

#[derive(Debug)]
struct BeatInner {
    base: Instant,
    last_ms: AtomicU64,
    stalls: AtomicU64,
    acknowledged: AtomicU64,
    max_silence: Duration,
}

impl Beat {
    /// A beat that counts as stale after `max_silence` without [`Self::beat`]; fresh now.
    pub fn new(max_silence: Duration) -> Beat {
        let b = Beat {
            inner: Arc::new(BeatInner {
                base: Instant::now(),
                last_ms: AtomicU64::new(0),
                stalls: AtomicU64::new(0),
                acknowledged: AtomicU64::new(0),
                max_silence,
            }),
        };
        b.beat();
        b
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The membership thread is running now.
    pub fn beat(&self) {
        self.inner.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// The membership thread detected its `stalls`-th stall: not fresh until acknowledged.
    fn stalled(&self, stalls: u64) {
        self.inner.stalls.store(stalls, Ordering::Release);
    }

    /// The engine gave up its IPs after stall number `stalls`.
    fn acknowledge(&self, stalls: u64) {
        self.inner.acknowledged.store(stalls, Ordering::Release);
    }

    /// Whether answer sets may be trusted: the membership thread ran recently and every stall
    /// it saw was handled.
    pub fn fresh(&self) -> bool {
        let silence = self
            .now_ms()
            .saturating_sub(self.inner.last_ms.load(Ordering::Acquire));
        u128::from(silence) <= self.inner.max_silence.as_millis()
            && self.inner.stalls.load(Ordering::Acquire)
                <= self.inner.acknowledged.load(Ordering::Acquire)
    }
}

/// What the engine asks of the membership thread.
#[derive(Debug)]
enum Command {
    /// A new peer list (names and membership addresses of the other nodes).
    Peers(Vec<(String, SocketAddr)>),
    /// This node's unable IPs.
    Unable(Vec<IpAddr>),
    /// This node's claims, given knowing `stalls` stalls (claims sent before the engine saw the
    /// latest stall are stale and ignored).
    Claims { ips: Vec<IpAddr>, stalls: u64 },
    /// Leave gracefully.
    Leave,
    /// Exit the thread.
    Stop,
}

/// The kind of a membership datagram, read from its header (layout in
/// `ferrolb_speaker_core::membership::codec`), for metrics. `as_str()` values are stable
/// metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Version 3 probe.
    Ping,
    /// Version 3 probe answer (direct or relayed).
    Ack,
    /// Version 3 indirect probe request.
    PingReq,
    /// Version 3 "could not reach the target" answer to a PingReq.
    Nack,
    /// Version 3 items only (direct notifications, pushes).
    Notice,
    /// Version 3 anti-entropy bucket hashes.
    SyncReq,
    /// Version 3 anti-entropy records of differing buckets.
    SyncDigest,
    /// Version 3 whole-record pull.
    SyncPull,
    /// Version 1/2 heartbeat (legacy peers).
    Heartbeat,
    /// Version 1/2 leave (legacy peers).
    Leave,
    /// Anything else (does not decode).
    Other,
}

impl Kind {
    /// Every kind, in metric order.
    pub const ALL: [Kind; 11] = [
        Kind::Ping,
        Kind::Ack,
        Kind::PingReq,
        Kind::Nack,
        Kind::Notice,
        Kind::SyncReq,
        Kind::SyncDigest,
        Kind::SyncPull,
        Kind::Heartbeat,
        Kind::Leave,
        Kind::Other,
    ];

    /// Stable snake_case label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Ack => "ack",
            Kind::PingReq => "ping_req",
            Kind::Nack => "nack",
            Kind::Notice => "notice",
            Kind::SyncReq => "sync_req",
            Kind::SyncDigest => "sync_digest",
            Kind::SyncPull => "sync_pull",
            Kind::Heartbeat => "heartbeat",
            Kind::Leave => "leave",
            Kind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The kind of `bytes`: `"FL" | version | kind | ...` for every version.
    pub fn of(bytes: &[u8]) -> Kind {
        let (Some(magic), Some(&version), Some(&kind)) =
            (bytes.get(..2), bytes.get(2), bytes.get(3))
        else {
            return Kind::Other;
        };
        if magic != membership::codec::MAGIC {
            return Kind::Other;
        }
        match (version, kind) {
            (membership::codec::VERSION, 1) => Kind::Ping,
            (membership::codec::VERSION, 2) => Kind::Ack,
            (membership::codec::VERSION, 3) => Kind::PingReq,
            (membership::codec::VERSION, 4) => Kind::Nack,
            (membership::codec::VERSION, 5) => Kind::Notice,
            (membership::codec::VERSION, 6) => Kind::SyncReq,
            (membership::codec::VERSION, 7) => Kind::SyncDigest,
            (membership::codec::VERSION, 8) => Kind::SyncPull,
            (1 | 2, 1) => Kind::Heartbeat,
            (1 | 2, 2) => Kind::Leave,
            _ => Kind::Other,
        }
    }
}

/// The sender's name in a membership datagram of any version (`"FL" | version | kind | name`),
/// for detection times; `None` if it is not there. Identity for membership itself comes from
/// the state machine's full decode.
pub fn sender_of(bytes: &[u8]) -> Option<&str> {
    let len = usize::from(*bytes.get(4)?);
    std::str::from_utf8(bytes.get(5..5 + len)?).ok()
}

/// Whether the IPs of `given` are exactly `known`.
fn same_ips(given: &[IpAddr], known: Option<&BTreeSet<IpAddr>>) -> bool {
    match known {
        None => given.is_empty(),
        Some(k) => given.len() == k.len() && given.iter().all(|ip| k.contains(ip)),
    }
}

/// Peers that came up less than `young_for` ago and are alive.
fn young(
    up_since: &BTreeMap<String, Instant>,
    alive: &BTreeSet<String>,
    now: Instant,
    young_for: Duration,
) -> BTreeSet<String> {
    up_since
        .iter()
        .filter(|(n, at)| alive.contains(*n) && now.saturating_duration_since(**at) < young_for)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Each of `alive` with its IPs as `of` lists them.
fn records_of<'a>(
    alive: &BTreeSet<String>,
    of: impl Fn(&str) -> &'a [IpAddr],
) -> BTreeMap<String, BTreeSet<IpAddr>> {
    alive
        .iter()
        .map(|n| (n.clone(), of(n).iter().copied().collect()))
        .collect()
}

/// The poll timeout that wakes at `until` or just after it (rounded up to whole milliseconds:
/// rounding down would wake early and spin until the deadline).
fn poll_timeout(now: Instant, until: Instant) -> PollTimeout {
    let us = until.saturating_duration_since(now).as_micros();
    let ms = us.div_ceil(1000).min(u128::from(u16::MAX));
    PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn bind(port: u16) -> Result<UdpSocket, MembershipError> {
    // Dual-stack first, so peers of either family reach us; IPv4 only if IPv6 is disabled.
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(s) => Ok(s),
        Err(_) => UdpSocket::bind(("0.0.0.0", port))
            .map_err(|source| MembershipError::Bind { port, source }),
    }
}

/// How long peers that came up count as young: a ghost (delayed datagrams of a dead instance)
/// is declared dead again before its claims could count, and a healed partition resolves to
/// one announcer within about this long.
pub fn young_for(cfg: &Config) -> Duration {
    cfg.declare_after() + cfg.interval
}

/// Longest sleep of the membership thread: its [`Beat`] must stay well within its
/// `max_silence` (half of `declare_after`), and the stall measure overestimates by at most this.
fn max_sleep(cfg: &Config) -> Duration {
    (cfg.declare_after() / 8).max(Duration::from_millis(1))
}

/// Datagrams handled per turn at most, so a flood on the port cannot hold off ticks and
/// commands.
const MAX_BATCH: usize = 1024;
/// How often counters go to the metrics registry (one lock per family instead of one per
/// packet).
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The engine's handle on the membership thread. See the module docs.
#[derive(Debug)]
pub struct Heartbeats {
    cfg: Config,
    node: String,
    commands: mpsc::Sender<Command>,
    wake: UnixStream,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    beat: Beat,
    /// The socket's port (the flag's, or the one the OS chose for port 0).
    port: u16,
    /// The peer list as last sent (`None` before the first).
    peers: Option<Vec<(String, SocketAddr)>>,
    /// This node's unable IPs as last sent.
    unable: BTreeSet<IpAddr>,
    /// This node's claims as last sent.
    claims: BTreeSet<IpAddr>,
    /// Stalls acknowledged.
    stalls: u64,
}

impl Heartbeats {
    /// Binds the membership port and starts the membership thread.
    pub fn spawn(
        node: String,
        port: u16,
        cfg: Config,
        metrics: Metrics,
    ) -> Result<Heartbeats, MembershipError> {
        let sock = bind(port)?;
        let local_port = sock.local_addr().map_err(MembershipError::Setup)?.port();
        sock.set_nonblocking(true).map_err(MembershipError::Setup)?;
        let (wake, wake_rx) = UnixStream::pair().map_err(MembershipError::Setup)?;
        wake.set_nonblocking(true).map_err(MembershipError::Setup)?;
        wake_rx
            .set_nonblocking(true)
            .map_err(MembershipError::Setup)?;
        // Gauges exist from the start, so a dashboard shows 0 rather than nothing.
        metrics.set(m::MEMBERSHIP_HEALTH, m::MEMBERSHIP_HEALTH_HELP, &[], 0.0);
        metrics.set(
            m::MEMBERSHIP_SUSPECTS,
            m::MEMBERSHIP_SUSPECTS_HELP,
            &[],
            0.0,
        );
        let (commands, commands_rx) = mpsc::channel();
        let (snap_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let beat = Beat::new(cfg.declare_after() / 2);
        let now = Instant::now();
        let worker = Worker {
            membership: Membership::new(node.clone(), now_ms(), cfg, now),
            node: node.clone(),
            cfg,
            sock,
            wake: wake_rx,
            commands: commands_rx,
            snapshots: snap_tx,
            metrics,
            beat: beat.clone(),
            peer_names: BTreeSet::new(),
            peers_at: None,
            claims: Vec::new(),
            unable: Vec::new(),
            state_dirty: false,
            view_stale: true,
            stalls: 0,
            left: false,
            last_heard: BTreeMap::new(),
            up_since: BTreeMap::new(),
            snapshot: Snapshot::default(),
            counters: Counters::default(),
            flushed: Counters::default(),
            flushed_stats: SwimStats::default(),
            last_flush: now,
        };
        std::thread::Builder::new()
            .name("membership".into())
            .spawn(move || worker.run())
            .map_err(MembershipError::Thread)?;
        Ok(Heartbeats {
            cfg,
            node,
            commands,
            wake,
            snapshots,
            beat,
            port: local_port,
            peers: None,
            unable: BTreeSet::new(),
            claims: BTreeSet::new(),
            stalls: 0,
        })
    }

    /// A receiver of the snapshots the thread publishes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// The beat L2's receive threads check.
    pub fn beat(&self) -> Beat {
        self.beat.clone()
    }

    /// The UDP port membership listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configuration the thread runs.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn send(&self, c: Command) {
        // The thread only exits on Stop; a send error means it is gone already.
        let _ = self.commands.send(c);
        // A full pipe means a wake-up is pending anyway.
        let _ = (&self.wake).write(&[1]);
    }

    /// A new peer list from the watches (only a change is passed on). The first one restarts
    /// the state machine (same generation): the join grace counts from when peers are known,
    /// not from process start, because with a slow API server the first peer list can arrive
    /// after the grace, and a speaker that never heard its peers' claims would snatch every IP.
    pub fn set_peers(&mut self, peers: &[(String, SocketAddr)]) {
        if self.peers.as_deref() != Some(peers) {
            self.peers = Some(peers.to_vec());
            self.send(Command::Peers(peers.to_vec()));
        }
    }

    /// Sets the IPs this node is eligible for but cannot place, advertised to peers (only a
    /// change is passed on).
    pub fn set_unable(&mut self, unable: BTreeSet<IpAddr>) {
        if unable != self.unable {
            self.send(Command::Unable(unable.iter().copied().collect()));
            self.unable = unable;
        }
    }

    /// Sets the IPs this node announces, advertised to peers (only a change is passed on).
    pub fn set_claims(&mut self, claims: &BTreeSet<IpAddr>) {
        if *claims != self.claims {
            self.claims = claims.clone();
            self.send(Command::Claims {
                ips: claims.iter().copied().collect(),
                stalls: self.stalls,
            });
        }
    }

    /// The engine gave up every IP after the thread's stall number `stalls`: its claims (none)
    /// count again, and the receive threads may answer again once the engine sets new answer
    /// sets.
    pub fn acknowledge_stall(&mut self, stalls: u64) {
        if stalls <= self.stalls {
            return;
        }
        self.stalls = stalls;
        self.claims.clear();
        self.send(Command::Claims {
            ips: Vec::new(),
            stalls,
        });
        self.beat.acknowledge(stalls);
    }

    /// Tells every peer this node leaves, so they take over at once (the thread sends it twice:
    /// a single lost datagram would otherwise cost peers a failure detection). The thread keeps
    /// receiving afterwards, so the engine sees peers take the IPs over.
    pub fn leave(&mut self) {
        self.send(Command::Leave);
    }

    /// The view from `snapshot`, with this node's claims and unable IPs as last set here (not
    /// as last advertised): what the engine just decided is what its next decision builds on.
    pub fn view(&self, snapshot: &Snapshot) -> MemberView {
        let mut v = snapshot.view.clone();
        if v.alive.contains(&self.node) {
            v.claims.insert(self.node.clone(), self.claims.clone());
            v.unable.insert(self.node.clone(), self.unable.clone());
        }
        v
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.send(Command::Stop);
    }
}

/// Packets and bytes by direction (0 received, 1 sent) and [`Kind`].
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    packets: [[u64; Kind::ALL.len()]; 2],
    bytes: [[u64; Kind::ALL.len()]; 2],
    send_errors: u64,
}

const RECEIVED: usize = 0;
const SENT: usize = 1;

impl Counters {
    fn count(&mut self, dir: usize, bytes: &[u8]) {
        let k = Kind::of(bytes).index();
        if let (Some(p), Some(b)) = (
            self.packets.get_mut(dir).and_then(|d| d.get_mut(k)),
            self.bytes.get_mut(dir).and_then(|d| d.get_mut(k)),
        ) {
            *p += 1;
            *b += bytes.len() as u64;
        }
    }
}

/// The membership thread: see the module docs.
struct Worker {
    node: String,
    cfg: Config,
    sock: UdpSocket,
    wake: UnixStream,
    commands: mpsc::Receiver<Command>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    membership: Membership,
    metrics: Metrics,
    beat: Beat,
    /// Names in the peer list, for detection-time bookkeeping.
    peer_names: BTreeSet<String>,
    /// When the first peer list arrived (the join grace counts from then).
    peers_at: Option<Instant>,
    /// This node's claims as advertised (empty after a stall until the engine acknowledges).
    claims: Vec<IpAddr>,
    /// This node's unable IPs as given.
    unable: Vec<IpAddr>,
    /// Claims or unable IPs changed since the last tick: tick now, so the delta goes out with
    /// the next packet.
    state_dirty: bool,
    /// The published view must be rebuilt (at start).
    view_stale: bool,
    stalls: u64,
    left: bool,
    /// When each peer was last heard directly, for detection-time metrics.
    last_heard: BTreeMap<String, Instant>,
    /// When each peer last came up (see [`crate::l2::decide::owners`] on young claimants).
    up_since: BTreeMap<String, Instant>,
    /// As last published.
    snapshot: Snapshot,
    counters: Counters,
    flushed: Counters,
    flushed_stats: SwimStats,
    last_flush: Instant,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Worker {
    fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        let mut last_turn = Instant::now();
        loop {
            let now = Instant::now();
            // How long since the last turn ended: an upper bound of how long a peer's probe
            // may have waited for us (it cannot have arrived before), overestimated by at most
            // one planned sleep (`max_sleep`).
            let gap = now.saturating_duration_since(last_turn);
            if gap > self.cfg.declare_after() && !self.left {
                self.on_stall(gap);
            }
            self.beat.beat();
            let mut changed = false;
            if !self.commands(now, &mut changed) {
                break;
            }
            self.receive(&mut buf, &mut changed);
            let now = Instant::now();
            // Awake anyway: a deadline within the slack (the next probe) is taken now rather
            // than with a wake-up of its own (the core keeps the probe schedule).
            if !self.left && (self.state_dirty || self.membership.tick_due(now)) {
                self.state_dirty = false;
                let actions = self.membership.tick(now, &self.claims);
                changed |= self.perform(actions, now);
            }
            self.publish(now, changed);
            self.flush(now);
            let end = Instant::now();
            last_turn = end;
            let until = self.next_wake(end);
            self.wait(end, until);
        }
        tracing::debug!("membership thread stopped");
    }

    fn on_stall(&mut self, gap: Duration) {
        self.stalls += 1;
        // First: receive threads must not answer from their old sets from now on.
        self.beat.stalled(self.stalls);
        tracing::warn!(
            stalled_ms = gap.as_millis() as u64,
            ips = self.claims.len(),
            declare_after_ms = self.cfg.declare_after().as_millis() as u64,
            "this speaker was stalled longer than peers need to declare it dead; giving up its IPs and rejoining"
        );
        // Peers may have taken the IPs over: stop advertising them before anything is sent.
        if !self.claims.is_empty() {
            self.claims.clear();
            self.state_dirty = true;
        }
        self.metrics
            .inc(m::MEMBERSHIP_STALLS, m::MEMBERSHIP_STALLS_HELP, &[], 1.0);
    }

    /// Carries out the engine's commands; false on Stop (or when the engine is gone).
    fn commands(&mut self, now: Instant, changed: &mut bool) -> bool {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        loop {
            match self.commands.try_recv() {
                Ok(Command::Peers(peers)) => {
                    if self.peers_at.is_none() {
                        self.peers_at = Some(now);
                        self.membership = Membership::new(
                            self.node.clone(),
                            self.membership.incarnation(),
                            self.cfg,
                            now,
                        );
                        self.membership.set_unable(self.unable.clone());
                        self.state_dirty = true;
                    }
                    self.peer_names = peers.iter().map(|(n, _)| n.clone()).collect();
                    self.last_heard.retain(|n, _| self.peer_names.contains(n));
                    let events = self.membership.set_peers(peers);
                    *changed = true;
                    for e in events {
                        self.on_event(e, now);
                    }
                }
                Ok(Command::Unable(ips)) => {
                    self.membership.set_unable(ips.clone());
                    self.unable = ips;
                    self.state_dirty = true;
                    *changed = true;
                }
                Ok(Command::Claims { ips, stalls }) => {
                    if stalls == self.stalls {
                        self.claims = ips;
                        self.state_dirty = true;
                        *changed = true;
                    }
                }
                Ok(Command::Leave) => {
                    if !self.left {
                        let actions = self.membership.leave();
                        self.perform(actions.clone(), now);
                        self.perform(actions, now);
                        self.left = true;
                        self.claims.clear();
                        *changed = true;
                    }
                }
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Drains the socket (at most [`MAX_BATCH`] datagrams).
    fn receive(&mut self, buf: &mut [u8], changed: &mut bool) {
        for _ in 0..MAX_BATCH {
            let (n, from) = match self.sock.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Queued ICMP errors and the like: nothing to do but go on.
                    tracing::debug!(error = %e, "membership receive error");
                    return;
                }
            };
            let bytes = buf.get(..n).unwrap_or_default();
            let now = Instant::now();
            self.counters.count(RECEIVED, bytes);
            if let Some(name) = sender_of(bytes) {
                if let Some(t) = self.last_heard.get_mut(name) {
                    *t = now;
                } else if self.peer_names.contains(name) {
                    self.last_heard.insert(name.to_string(), now);
                }
            }
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            match self.membership.on_datagram(from, bytes, now) {
                Ok(actions) => *changed |= self.perform(actions, now),
                Err(e) => self.metrics.inc(
                    m::MEMBERSHIP_BAD,
                    m::MEMBERSHIP_BAD_HELP,
                    &[("reason", e.as_str())],
                    1.0,
                ),
            }
        }
    }

    /// Sends and logs; true if an event (a peer up or down) may have changed the view.
    fn perform(&mut self, actions: Vec<Action>, now: Instant) -> bool {
        let mut events = false;
        for a in actions {
            match a {
                Action::Send { to, bytes } => {
                    self.counters.count(SENT, &bytes);
                    // UDP to a dead peer may fail (unreachable); membership is best effort.
                    if self.sock.send_to(&bytes, to).is_err() {
                        self.counters.send_errors += 1;
                    }
                }
                Action::Event(e) => {
                    events = true;
                    self.on_event(e, now);
                }
            }
        }
        events
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
                self.up_since.remove(&peer);
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
                    "more IPs than membership carries; peers may contest the rest"
                );
            }
            Event::UnableTruncated { kept, dropped } => {
                tracing::warn!(
                    kept,
                    dropped,
                    "more IPs without a usable interface than membership carries; peers may elect this node for the rest"
                );
            }
        }
    }

    /// Whether the claims or unable IPs the state machine holds differ from the snapshot's.
    fn records_changed(&self) -> bool {
        let v = &self.snapshot.view;
        v.alive.iter().any(|n| {
            !same_ips(self.membership.claims(n), v.claims.get(n))
                || !same_ips(self.membership.unable(n), v.unable.get(n))
        })
    }

    /// Publishes a new snapshot if anything in it changed. `events` says whether a peer came up
    /// or went down, or the peer list or this node's records changed (the view is rebuilt).
    ///
    /// Called every turn, so an unchanged snapshot must cost no allocation of the view and wake
    /// nobody: the engine runs on another thread and every publish wakes it.
    fn publish(&mut self, now: Instant, events: bool) {
        let rebuild = events || std::mem::take(&mut self.view_stale) || self.records_changed();
        let yf = young_for(&self.cfg);
        self.up_since
            .retain(|_, at| now.saturating_duration_since(*at) < yf);
        let settled = !self.left && self.membership.settled(now);
        let health = self.membership.health();
        let suspects = self.membership.suspects();
        let view = if rebuild {
            let alive = self.membership.alive();
            let claims = records_of(&alive, |n| self.membership.claims(n));
            let unable = records_of(&alive, |n| self.membership.unable(n));
            let young = young(&self.up_since, &alive, now, yf);
            let view = MemberView {
                young,
                alive,
                claims,
                unable,
            };
            (view != self.snapshot.view).then_some(view)
        } else {
            // Only the young set can change without a rebuild.
            let young = young(&self.up_since, &self.snapshot.view.alive, now, yf);
            (young != self.snapshot.view.young).then(|| MemberView {
                young,
                ..self.snapshot.view.clone()
            })
        };
        let s = &self.snapshot;
        let same = view.is_none()
            && settled == s.settled
            && health == s.health
            && suspects == s.suspects
            && self.stalls == s.stalls
            && self.left == s.left;
        if same {
            return;
        }
        if health != s.health {
            self.metrics.set(
                m::MEMBERSHIP_HEALTH,
                m::MEMBERSHIP_HEALTH_HELP,
                &[],
                f64::from(health),
            );
        }
        if suspects.len() != s.suspects.len() {
            self.metrics.set(
                m::MEMBERSHIP_SUSPECTS,
                m::MEMBERSHIP_SUSPECTS_HELP,
                &[],
                suspects.len() as f64,
            );
        }
        self.snapshot = Snapshot {
            view: view.unwrap_or_else(|| std::mem::take(&mut self.snapshot.view)),
            settled,
            health,
            suspects,
            stalls: self.stalls,
            left: self.left,
        };
        self.snapshots.send_replace(Arc::new(self.snapshot.clone()));
    }

    /// Moves the counters to the metrics registry, at most every [`FLUSH_EVERY`].
    fn flush(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_flush) < FLUSH_EVERY {
            return;
        }
        self.last_flush = now;
        for (dir, label) in [(RECEIVED, "received"), (SENT, "sent")] {
            for k in Kind::ALL {
                let i = k.index();
                let p = self.counters.packets[dir][i] - self.flushed.packets[dir][i];
                let b = self.counters.bytes[dir][i] - self.flushed.bytes[dir][i];
                if p > 0 {
                    let l = [("direction", label), ("kind", k.as_str())];
                    self.metrics.inc(
                        m::MEMBERSHIP_PACKETS,
                        m::MEMBERSHIP_PACKETS_HELP,
                        &l,
                        p as f64,
                    );
                    self.metrics
                        .inc(m::MEMBERSHIP_BYTES, m::MEMBERSHIP_BYTES_HELP, &l, b as f64);
                }
            }
        }
        let errors = self.counters.send_errors - self.flushed.send_errors;
        if errors > 0 {
            self.metrics.inc(
                m::SEND_ERRORS,
                m::SEND_ERRORS_HELP,
                &[("kind", "membership")],
                errors as f64,
            );
        }
        self.flushed = self.counters;
        let s = self.membership.swim_stats();
        let was = self.flushed_stats;
        if s.declared_dead > was.declared_dead {
            self.metrics.inc(
                m::MEMBERSHIP_DECLARED_DEAD,
                m::MEMBERSHIP_DECLARED_DEAD_HELP,
                &[],
                (s.declared_dead - was.declared_dead) as f64,
            );
        }
        for (what, now_v, was_v) in [
            ("probes", s.probes, was.probes),
            ("indirect_probes", s.indirect, was.indirect),
            ("accusations", s.accusations, was.accusations),
            ("refutations", s.refutations, was.refutations),
            ("late_ticks", s.late_ticks, was.late_ticks),
            ("syncs", s.syncs, was.syncs),
            ("pulls", s.pulls, was.pulls),
            (
                "legacy_heartbeats",
                s.legacy_heartbeats,
                was.legacy_heartbeats,
            ),
        ] {
            if now_v > was_v {
                self.metrics.inc(
                    m::MEMBERSHIP_SWIM,
                    m::MEMBERSHIP_SWIM_HELP,
                    &[("event", what)],
                    (now_v - was_v) as f64,
                );
            }
        }
        self.flushed_stats = s;
    }

    /// When the next turn is due without any datagram or command.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut until = now + max_sleep(&self.cfg);
        if !self.left {
            until = until.min(self.membership.next_timeout());
        }
        // The join grace running out settles this speaker: publish it then.
        if !self.snapshot.settled
            && !self.left
            && let Some(at) = self.peers_at
        {
            let grace_end = at + self.cfg.join_grace;
            if grace_end > now {
                until = until.min(grace_end);
            }
        }
        // A peer stops being young: publish it then.
        let yf = young_for(&self.cfg);
        for at in self.up_since.values() {
            let end = *at + yf;
            if end > now {
                until = until.min(end);
            }
        }
        until
    }

    /// Sleeps until `until`, a datagram or a command.
    fn wait(&self, now: Instant, until: Instant) {
        if until <= now {
            return;
        }
        let mut fds = [
            PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
        ];
        // EINTR or any other error: the loop simply turns again.
        let _ = poll(&mut fds, poll_timeout(now, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_speaker_core::membership::codec::{Body, Packet};
    use ferrolb_speaker_core::membership::{Heartbeat, Message};

    fn packet(body: Body) -> Vec<u8> {
        Packet {
            from: "node-1".into(),
            generation: 7,
            incarnation: 1,
            state_version: 2,
            body,
            items: Vec::new(),
        }
        .encode()
    }

    #[test]
    fn kinds_are_read_from_the_header_of_every_version() {
        let cases = [
            (packet(Body::Ping { seq: 1 }), Kind::Ping),
            (packet(Body::Ack { seq: 1 }), Kind::Ack),
            (
                packet(Body::PingReq {
                    seq: 1,
                    target: "node-2".into(),
                }),
                Kind::PingReq,
            ),
            (packet(Body::Nack { seq: 1 }), Kind::Nack),
            (packet(Body::Notice), Kind::Notice),
            (
                packet(Body::SyncReq {
                    hashes: vec![0; membership::codec::SYNC_BUCKETS],
                }),
                Kind::SyncReq,
            ),
            (
                packet(Body::SyncDigest {
                    entries: Vec::new(),
                }),
                Kind::SyncDigest,
            ),
            (packet(Body::SyncPull { wants: Vec::new() }), Kind::SyncPull),
            (
                Message::Heartbeat(Heartbeat {
                    from: "node-1".into(),
                    incarnation: 7,
                    seq: 1,
                    uptime_ms: 5,
                    claims: Vec::new(),
                    heard: Vec::new(),
                    unable: Vec::new(),
                })
                .encode(),
                Kind::Heartbeat,
            ),
            (
                Message::Leave {
                    from: "node-1".into(),
                    incarnation: 7,
                }
                .encode(),
                Kind::Leave,
            ),
        ];
        for (bytes, kind) in cases {
            assert_eq!(Kind::of(&bytes), kind, "{bytes:?}");
            // Every kind the core sends decodes, and names its sender where we look.
            assert!(membership::codec::decode(&bytes).is_ok());
            assert_eq!(sender_of(&bytes), Some("node-1"));
        }
        for junk in [&b""[..], b"FL", b"XX\x03\x01", b"FL\x09\x01", b"FL\x03\x63"] {
            assert_eq!(Kind::of(junk), Kind::Other);
        }
        assert_eq!(
            sender_of(b"FL\x03\x01\x09abc"),
            None,
            "name runs past the end"
        );
        let labels: BTreeSet<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), Kind::ALL.len());
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn counters_split_by_direction_and_kind() {
        let mut c = Counters::default();
        let ping = packet(Body::Ping { seq: 1 });
        c.count(SENT, &ping);
        c.count(SENT, &ping);
        c.count(RECEIVED, b"junk");
        assert_eq!(c.packets[SENT][Kind::Ping.index()], 2);
        assert_eq!(c.bytes[SENT][Kind::Ping.index()], 2 * ping.len() as u64);
        assert_eq!(c.packets[RECEIVED][Kind::Other.index()], 1);
        assert_eq!(c.packets[RECEIVED][Kind::Ping.index()], 0);
    }

    #[test]
    fn poll_timeouts_round_up() {
        let now = Instant::now();
        assert_eq!(poll_timeout(now, now), PollTimeout::ZERO);
        assert_eq!(
            poll_timeout(now, now - Duration::from_millis(3)),
            PollTimeout::ZERO
        );
        assert_eq!(
            poll_timeout(now, now + Duration::from_micros(200)),
            PollTimeout::from(1u16)
        );
        assert_eq!(
            poll_timeout(now, now + Duration::from_micros(25_001)),
            PollTimeout::from(26u16)
        );
        assert_eq!(
            poll_timeout(now, now + Duration::from_secs(3600)),
            PollTimeout::from(u16::MAX)
        );
    }

    #[test]
    fn young_peers_are_alive_and_recent() {
        let t0 = Instant::now();
        let up: BTreeMap<String, Instant> = [
            ("a".to_string(), t0),
            ("b".to_string(), t0 + Duration::from_millis(300)),
        ]
        .into();
        let alive: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let yf = Duration::from_millis(375);
        let at = t0 + Duration::from_millis(400);
        assert_eq!(young(&up, &alive, at, yf), ["b".to_string()].into());
        let only_a: BTreeSet<String> = ["a".to_string()].into();
        assert!(young(&up, &only_a, at, yf).is_empty());
    }

    #[test]
    fn beat_goes_stale_after_silence_or_an_unacknowledged_stall() {
        let b = Beat::new(Duration::from_millis(50));
        assert!(b.fresh());
        b.stalled(1);
        assert!(!b.fresh(), "a stall blocks answers until acknowledged");
        b.beat();
        assert!(!b.fresh(), "beating does not clear a stall");
        b.acknowledge(1);
        assert!(b.fresh());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!b.fresh(), "silence longer than max_silence");
        b.beat();
        assert!(b.fresh());
    }

    #[test]
    fn same_ips_compares_as_sets() {
        let a: IpAddr = "198.51.100.1".parse().expect("ip");
        let b: IpAddr = "198.51.100.2".parse().expect("ip");
        assert!(same_ips(&[], None));
        assert!(!same_ips(&[a], None));
        assert!(same_ips(&[b, a], Some(&[a, b].into())));
        assert!(!same_ips(&[a], Some(&[a, b].into())));
    }

    /// Waits (at most 5 s) until `check` holds for `h`'s latest snapshot.
    fn wait_for(h: &Heartbeats, what: &str, check: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = h.subscribe().borrow().clone();
            if check(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: last snapshot {s:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    /// Two membership threads `a` and `b` on loopback, each given the other as its peer.
    fn pair(cfg: Config) -> (Heartbeats, Heartbeats) {
        let mut a = Heartbeats::spawn("a".into(), 0, cfg, Metrics::default()).expect("a");
        let mut b = Heartbeats::spawn("b".into(), 0, cfg, Metrics::default()).expect("b");
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        a.set_peers(&[("b".into(), loopback(b.port()))]);
        b.set_peers(&[("a".into(), loopback(a.port()))]);
        (a, b)
    }

    /// A settled pair with nothing changing publishes (and so wakes the engine) next to never:
    /// a snapshot goes out only when something in it changed, not every turn.
    #[test]
    fn a_settled_pair_publishes_only_changes() {
        let cfg = Config::default();
        let (a, _b) = pair(cfg);
        wait_for(&a, "a settled", |s| s.settled && s.view.alive.len() == 2);
        // Past the young period, which ends with one more publish.
        std::thread::sleep(young_for(&cfg) + cfg.interval * 4);
        let mut rx = a.subscribe();
        rx.borrow_and_update();
        let (mut publishes, window) = (0, Duration::from_millis(500));
        let t0 = Instant::now();
        while t0.elapsed() < window {
            if rx.has_changed().expect("membership thread alive") {
                rx.borrow_and_update();
                publishes += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Twenty intervals; a publish per turn would be 20 or more. A lost probe on a loaded
        // machine may change the health score (and back) once or twice.
        assert!(
            publishes <= 4,
            "{publishes} snapshots in {window:?} without a change"
        );
        assert!(rx.borrow().settled);
    }

    /// Two membership threads on loopback, with the default SWIM timings: they find each
    /// other, settle, carry claims and unable IPs both ways, and when one thread stops without
    /// leaving (as a killed process would) the other declares it dead within the failure
    /// detection bound; a graceful leave is seen as such.
    #[test]
    fn two_threads_find_each_other_and_detect_a_death() {
        let cfg = Config::default();
        let (mut a, mut b) = pair(cfg);
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        wait_for(&a, "a sees b", |s| s.view.alive == both && s.settled);
        wait_for(&b, "b sees a", |s| s.view.alive == both && s.settled);

        a.set_claims(&ips(&["198.51.100.7"]));
        a.set_unable(ips(&["2001:db8::9"]));
        let s = wait_for(&b, "a's claims at b", |s| {
            s.view.claims.get("a") == Some(&ips(&["198.51.100.7"]))
        });
        assert_eq!(s.view.unable.get("a"), Some(&ips(&["2001:db8::9"])));
        // b's view of itself carries what b's engine set, not a's.
        assert_eq!(b.view(&s).claims.get("b"), Some(&BTreeSet::new()));
        assert!(a.beat().fresh() && b.beat().fresh());

        // a stops dead: b declares it (two members: no confirmation needed) within the bound.
        let t0 = Instant::now();
        drop(a);
        let s = wait_for(&b, "a declared dead", |s| !s.view.alive.contains("a"));
        let took = t0.elapsed();
        assert!(
            took >= cfg.declare_after() && took < Duration::from_millis(1500),
            "declared dead after {took:?}"
        );
        assert!(
            !s.view.claims.contains_key("a"),
            "a dead node's claims do not count"
        );

        // A third speaker that leaves gracefully is gone at once.
        let mut c = Heartbeats::spawn("c".into(), 0, cfg, Metrics::default()).expect("c");
        c.set_peers(&[("b".into(), loopback(b.port()))]);
        b.set_peers(&[("c".into(), loopback(c.port()))]);
        wait_for(&b, "b sees c", |s| s.view.alive.contains("c"));
        c.leave();
        let t1 = Instant::now();
        wait_for(&c, "c left", |s| {
            s.left && !s.settled && !s.view.alive.contains("c")
        });
        wait_for(&b, "c gone at b", |s| !s.view.alive.contains("c"));
        assert!(
            t1.elapsed() < cfg.declare_after(),
            "leave took {:?}",
            t1.elapsed()
        );
    }
}
