//! One BGP session's RFC 4271 §8 state machine, as `(state, event, now) -> (state, actions)`:
//! [`Session::handle`] takes an [`Event`] and the current time and returns [`Action`]s, and
//! [`Session::poll_timeout`] says when to call it again with [`Event::Timeout`].
//!
//! Owns the session's states (Idle, Connect, Active, OpenSent, OpenConfirm, Established), its
//! timers as deadlines (connect, hold, keepalive, reconnect backoff, drain), validation of the
//! peer's OPEN, capability negotiation, the receive buffer, the Adj-RIB-Out (through
//! [`AdjRibOut`]) and the graceful behaviours: graceful restart as the restarting speaker
//! (RFC 4724), administrative shutdown with an RFC 8203 message after withdrawing and draining,
//! de-configuration (Cease 6/3), and BFD-driven teardown (Cease 6/10, RFC 9384).
//!
//! It must not do I/O, read a clock or draw randomness: the shell opens and closes the TCP
//! connection (with MD5, TTL and `TCP_USER_TIMEOUT`), passes received bytes and `now`, and
//! seeds the reconnect jitter at construction. It is active-only (it never listens), so
//! connection collisions (RFC 4271 §6.8) cannot happen and are not handled.
//!
//! Unlike MetalLB's native speaker, the received hold timer is enforced: a peer that falls
//! silent is torn down after the negotiated hold time with NOTIFICATION 4/0, and the session
//! is Established only after the peer's KEEPALIVE in OpenConfirm.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::notification::{Notification, NotificationCode};
use super::open::{Capability, GracefulRestart, Open};
use super::rib::{AdjRibOut, Attributes, GRACEFUL_SHUTDOWN, RejectReason};
use super::update::{LargeCommunity, MpNextHop, Origin, Prefix, Update};
use super::wire::{self, Encoding, Family, Handling, Message, MessageType};

/// The peer AS we accept (MetalLB's `peerASN` or `dynamicASN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerAs {
    /// Exactly this AS.
    Exact(u32),
    /// Any AS equal to ours (`dynamicASN: internal`).
    Internal,
    /// Any AS other than ours (`dynamicASN: external`).
    External,
}

/// Graceful restart (RFC 4724) as the restarting speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GracefulRestartConfig {
    /// Seconds the peer should keep our routes while we restart (at most 4095).
    pub restart_time: u16,
    /// This process restarted while the peer may hold our routes: set the R bit in OPENs until
    /// the first session is Established.
    pub restarting: bool,
}

/// Session configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our AS (`myASN`).
    pub local_as: u32,
    /// The peer's AS.
    pub peer_as: PeerAs,
    /// Our BGP Identifier (`routerID`, default the node's IPv4 address).
    pub router_id: Ipv4Addr,
    /// Hold time we propose, seconds: 0 (no keepalives) or at least 3. MetalLB's default is 90.
    pub hold_time: u16,
    /// Keepalive interval, seconds; `None` = a third of the negotiated hold time. Never more
    /// than a third of the negotiated hold time is used.
    pub keepalive: Option<u16>,
    /// Families we offer (MP-BGP capabilities).
    pub families: Vec<Family>,
    /// Send the graceful restart capability.
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// How long a TCP connect may take before it is abandoned.
    pub connect_timeout: Duration,
    /// How long to wait for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
    pub open_hold_time: Duration,
    /// First reconnect delay after a failure.
    pub backoff_initial: Duration,
    /// Largest reconnect delay. A session that stayed Established this long restarts the
    /// backoff from `backoff_initial`.
    pub backoff_max: Duration,
}

impl Config {
    /// A configuration with ferrolb's defaults: hold 90 s, keepalive a third of it, IPv4 and
    /// IPv6 unicast, no graceful restart, connect timeout 10 s, backoff 1 s doubling to 30 s.
    pub fn new(local_as: u32, peer_as: PeerAs, router_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            peer_as,
            router_id,
            hold_time: 90,
            keepalive: None,
            families: Family::ALL.to_vec(),
            graceful_restart: None,
            connect_timeout: Duration::from_secs(10),
            open_hold_time: Duration::from_secs(240),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// RFC 4271 §8.2.2 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Stopped, or waiting for the reconnect deadline after an error.
    Idle,
    /// TCP connect in progress.
    Connect,
    /// Waiting for the reconnect deadline after a TCP connect failure.
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Routes flow.
    Established,
}

impl State {
    /// Stable label for metrics and status (RFC 4271 names).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Connect => "Connect",
            Self::Active => "Active",
            Self::OpenSent => "OpenSent",
            Self::OpenConfirm => "OpenConfirm",
            Self::Established => "Established",
        }
    }
}

/// Next-hop addresses for this connection, from the shell's view of the socket and interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NextHops {
    /// For IPv4 routes: the session's local IPv4 address (or the node's, for a v6 session).
    pub ipv4: Option<Ipv4Addr>,
    /// For IPv6 routes: a global address of the node.
    pub ipv6: Option<Ipv6Addr>,
    /// For IPv6 routes to a directly connected peer: our link-local address on that link.
    pub ipv6_link_local: Option<Ipv6Addr>,
}

/// What the shell wants announced for one prefix, beyond what the session derives (ORIGIN,
/// AS_PATH and next hop).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAttrs {
    /// LOCAL_PREF for iBGP peers (default 100); never sent to eBGP peers.
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// Standard communities.
    pub communities: Vec<u32>,
    /// Large communities.
    pub large_communities: Vec<LargeCommunity>,
}

/// An administrative stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The node leaves (shutdown, drain): optionally re-announce everything with
    /// GRACEFUL_SHUTDOWN (65535:0) and wait, withdraw everything, wait `drain`, then send
    /// Cease 6/2 with `message` (RFC 8203) and close.
    Shutdown {
        /// Shutdown Communication, at most 128 bytes are sent.
        message: String,
        /// How long to announce with GRACEFUL_SHUTDOWN first; `None` skips that step.
        graceful_shutdown: Option<Duration>,
        /// How long to wait between withdrawing and closing.
        drain: Duration,
    },
    /// The peer was removed from configuration: withdraw, wait `drain`, Cease 6/3, close.
    Deconfigured {
        /// How long to wait between withdrawing and closing.
        drain: Duration,
    },
    /// A planned restart of this speaker. With graceful restart negotiated the connection is
    /// closed without a NOTIFICATION, so the peer keeps our routes as stale until we are back
    /// (a Cease would make it flush them, RFC 4724 §4.2 without RFC 8538). Without graceful
    /// restart, Cease 6/4 (Administrative Reset) with `message`.
    Restart {
        /// Shutdown Communication for the no-graceful-restart case.
        message: String,
    },
}

/// An input to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Start (or restart after a [`Stop`]): connect now.
    Start,
    /// The TCP connection asked for with [`Action::Connect`] is up.
    Connected(NextHops),
    /// The TCP connect failed (refused, unreachable, MD5 not supported…).
    ConnectFailed,
    /// The connection was closed by the peer or failed after connecting.
    Closed,
    /// Bytes read from the connection, in order; any split is fine.
    Received(&'a [u8]),
    /// The deadline from [`Session::poll_timeout`] has passed.
    Timeout,
    /// BFD detected a failure of the path to the peer (not an AdminDown from the peer).
    BfdDown,
    /// The complete set of routes this session should announce. The first one also says the
    /// speaker's plan is ready: End-of-RIB follows the first full table.
    Routes(BTreeMap<Prefix, RouteAttrs>),
    /// An administrative stop.
    Stop(Stop),
}

/// What was agreed in the OPEN exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Negotiated {
    /// The peer's AS.
    pub peer_as: u32,
    /// The peer's BGP Identifier.
    pub peer_id: Ipv4Addr,
    /// Negotiated hold time, seconds (0: no hold timer). The shell sets `TCP_USER_TIMEOUT` to
    /// it, so a half-open connection cannot outlive it either.
    pub hold_time: u16,
    /// Keepalive interval in use, seconds (0 with hold time 0).
    pub keepalive: u16,
    /// ASN width on this session.
    pub encoding: Encoding,
    /// Families both sides offered.
    pub families: Vec<Family>,
    /// The peer accepts ROUTE-REFRESH.
    pub route_refresh: bool,
    /// Both sides sent the graceful restart capability.
    pub graceful_restart: bool,
    /// The peer's advertised restart time, if it sent the capability.
    pub peer_restart_time: Option<u16>,
    /// The peer is in our AS.
    pub internal: bool,
}

/// Why a connection ended. `as_str()` is a stable metric label; `Display` gives words for
/// status conditions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The TCP connect failed.
    ConnectFailed,
    /// The TCP connect did not complete within `connect_timeout`.
    ConnectTimeout,
    /// The peer closed the connection, or it failed, without a NOTIFICATION.
    ConnectionLost,
    /// Nothing heard from the peer for the hold time; we sent 4/0.
    HoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The peer broke the protocol; we sent this NOTIFICATION.
    NotificationSent(Notification),
    /// BFD declared the path down; we sent 6/10.
    BfdDown,
    /// [`Stop::Shutdown`] completed (6/2 sent).
    AdminShutdown,
    /// [`Stop::Deconfigured`] completed (6/3 sent).
    Deconfigured,
    /// [`Stop::Restart`]: closed for a planned restart.
    Restart,
}

impl CloseReason {
    /// Stable snake_case label for metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::ConnectFailed => "connect_failed",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectionLost => "connection_lost",
            Self::HoldTimerExpired => "hold_timer_expired",
            Self::NotificationReceived(_) => "notification_received",
            Self::NotificationSent(_) => "notification_sent",
            Self::BfdDown => "bfd_down",
            Self::AdminShutdown => "admin_shutdown",
            Self::Deconfigured => "deconfigured",
            Self::Restart => "restart",
        }
    }

    /// Whether this was our deliberate choice rather than a failure.
    pub const fn is_administrative(&self) -> bool {
        matches!(
            self,
            Self::AdminShutdown | Self::Deconfigured | Self::Restart
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConnectFailed => f.write_str("TCP connect failed"),
            Self::ConnectTimeout => f.write_str("TCP connect timed out"),
            Self::ConnectionLost => f.write_str("connection closed by peer"),
            Self::HoldTimerExpired => f.write_str("hold timer expired (sent NOTIFICATION 4/0)"),
            Self::NotificationReceived(n) => write!(f, "received {n}"),
            Self::NotificationSent(n) => write!(f, "sent {n}"),
            Self::BfdDown => f.write_str("BFD down (sent NOTIFICATION 6/10)"),
            Self::AdminShutdown => f.write_str("administrative shutdown (sent NOTIFICATION 6/2)"),
            Self::Deconfigured => f.write_str("peer de-configured (sent NOTIFICATION 6/3)"),
            Self::Restart => f.write_str("closed for a planned restart"),
        }
    }
}

/// A connection that ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Closed {
    /// Why.
    pub reason: CloseReason,
    /// Details in words (e.g. "peer AS 65001, expected 64512"); may be empty.
    pub detail: String,
    /// The session was Established: routes were lost (or are stale, with graceful restart).
    pub was_established: bool,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer, then report [`Event::Connected`] or
    /// [`Event::ConnectFailed`].
    Connect,
    /// Write one whole message.
    Send {
        /// Its type, for metrics.
        kind: MessageType,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close the TCP connection once the writes before it are flushed (or abort a connect in
    /// progress).
    Close,
    /// The session is Established.
    Established(Negotiated),
    /// A connection ended (or a connect failed).
    Closed(Closed),
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// UPDATEs sent.
    pub updates_sent: u64,
    /// UPDATEs received (we discard their routes).
    pub updates_received: u64,
    /// Malformed UPDATEs ignored under RFC 7606 (no session reset).
    pub updates_malformed: u64,
    /// Times the session reached Established.
    pub established: u64,
}

/// Closing phases after a [`Stop::Shutdown`] or [`Stop::Deconfigured`] while Established.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Closing {
    /// Routes re-sent with GRACEFUL_SHUTDOWN until the deadline.
    GracefulShutdown {
        until: Instant,
        drain: Duration,
        code: NotificationCode,
        message: String,
    },
    /// Everything withdrawn; the Cease goes out at the deadline.
    Draining {
        until: Instant,
        code: NotificationCode,
        message: String,
    },
}

/// One BGP session. See the module docs.
#[derive(Debug, Clone)]
pub struct Session {
    config: Config,
    state: State,
    /// SplitMix64 state, seeded by the caller; used only for backoff jitter.
    rng: u64,
    /// Administratively stopped: no reconnects until [`Event::Start`].
    stopped: bool,
    /// Idle/Active: when to connect next.
    retry_at: Option<Instant>,
    /// Connect: when to give up.
    connect_deadline: Option<Instant>,
    /// OpenSent/OpenConfirm/Established: when the peer's silence ends the session.
    hold_deadline: Option<Instant>,
    /// OpenConfirm/Established: when to send the next KEEPALIVE.
    keepalive_at: Option<Instant>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    established_at: Option<Instant>,
    /// R bit still to be sent: no session has been Established since this process started.
    restarting: bool,
    negotiated: Option<Negotiated>,
    next_hops: NextHops,
    /// Received bytes not yet forming a whole message.
    rx: Vec<u8>,
    desired: BTreeMap<Prefix, RouteAttrs>,
    /// The shell has sent at least one [`Event::Routes`].
    routes_ready: bool,
    /// The initial table and End-of-RIB went out on this connection.
    initial_sent: bool,
    rib: AdjRibOut,
    /// Desired routes not announced on this connection, with why.
    unannounced: Vec<(Prefix, Unannounced)>,
    closing: Option<Closing>,
    stats: Stats,
}

/// Why a desired route is not announced on this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unannounced {
    /// The peer did not negotiate the route's family.
    FamilyNotNegotiated,
    /// The shell gave no next hop of the route's family.
    NoNextHop,
    /// Rejected by the Adj-RIB-Out.
    Rejected(RejectReason),
}

impl Unannounced {
    /// Stable label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FamilyNotNegotiated => "family_not_negotiated",
            Self::NoNextHop => "no_next_hop",
            Self::Rejected(r) => r.as_str(),
        }
    }
}

impl Session {
    /// A session in Idle. Nothing happens until [`Event::Start`]. `seed` feeds the reconnect
    /// jitter; the shell passes a random number, tests a constant.
    pub fn new(config: Config, seed: u64) -> Self {
        let restarting = config.graceful_restart.is_some_and(|g| g.restarting);
        Self {
            config,
            state: State::Idle,
            rng: seed,
            stopped: true,
            retry_at: None,
            connect_deadline: None,
            hold_deadline: None,
            keepalive_at: None,
            failures: 0,
            established_at: None,
            restarting,
            negotiated: None,
            next_hops: NextHops::default(),
            rx: Vec::new(),
            desired: BTreeMap::new(),
            routes_ready: false,
            initial_sent: false,
            rib: AdjRibOut::new(),
            unannounced: Vec::new(),
            closing: None,
            stats: Stats::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What was negotiated, while OpenConfirm or Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// When the session became Established, while it is.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// Routes announced to the peer.
    pub fn adj_rib_out(&self) -> &AdjRibOut {
        &self.rib
    }

    /// Desired routes that are not announced on this connection, with why.
    pub fn unannounced(&self) -> &[(Prefix, Unannounced)] {
        &self.unannounced
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether a [`Stop`] is in progress or done.
    pub fn is_stopping(&self) -> bool {
        self.stopped || self.closing.is_some()
    }

    /// The earliest deadline at which [`Event::Timeout`] must be delivered, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut ds = Vec::with_capacity(4);
        match self.state {
            State::Idle | State::Active => {
                if !self.stopped {
                    ds.push(self.retry_at);
                }
            }
            State::Connect => ds.push(self.connect_deadline),
            State::OpenSent | State::OpenConfirm | State::Established => {
                ds.push(self.hold_deadline);
                ds.push(self.keepalive_at);
                ds.push(match &self.closing {
                    Some(
                        Closing::GracefulShutdown { until, .. } | Closing::Draining { until, .. },
                    ) => Some(*until),
                    None => None,
                });
            }
        }
        ds.into_iter().flatten().min()
    }

    /// Feeds one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.on_start(now, &mut out),
            Event::Connected(nh) => self.on_connected(now, nh, &mut out),
            Event::ConnectFailed => {
                if self.state == State::Connect {
                    self.fail_connect(now, CloseReason::ConnectFailed, &mut out);
                }
            }
            Event::Closed => match self.state {
                State::Connect => self.fail_connect(now, CloseReason::ConnectFailed, &mut out),
                State::OpenSent | State::OpenConfirm | State::Established => self.drop_connection(
                    now,
                    CloseReason::ConnectionLost,
                    String::new(),
                    false,
                    &mut out,
                ),
                State::Idle | State::Active => {}
            },
            Event::Received(bytes) => self.on_bytes(now, bytes, &mut out),
            Event::Timeout => self.on_timeout(now, &mut out),
            Event::BfdDown => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.send_notification(
                        Notification::new(NotificationCode::BFD_DOWN, Vec::new()),
                        &mut out,
                    );
                    self.drop_connection(now, CloseReason::BfdDown, String::new(), true, &mut out);
                }
            }
            Event::Routes(routes) => {
                self.desired = routes;
                self.routes_ready = true;
                self.sync_routes(now, &mut out);
            }
            Event::Stop(stop) => self.on_stop(now, stop, &mut out),
        }
        out
    }

    fn on_start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.stopped {
            return;
        }
        self.stopped = false;
        self.closing = None;
        if matches!(self.state, State::Idle | State::Active) {
            match self.retry_at {
                Some(t) if t > now => {}
                _ => self.connect(now, out),
            }
        }
    }

    fn connect(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.state = State::Connect;
        self.retry_at = None;
        self.connect_deadline = Some(later(now, self.config.connect_timeout));
        out.push(Action::Connect);
    }

    fn on_connected(&mut self, now: Instant, nh: NextHops, out: &mut Vec<Action>) {
        if self.state != State::Connect {
            // A connect we gave up on completed after all: not wanted.
            out.push(Action::Close);
            return;
        }
        self.connect_deadline = None;
        self.next_hops = nh;
        self.rx.clear();
        let open = self.our_open();
        self.send(&Message::Open(open), Encoding::FOUR_OCTET, out);
        self.state = State::OpenSent;
        self.hold_deadline = Some(later(now, self.config.open_hold_time));
    }

    fn our_open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .config
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(f.afi_safi()))
            .collect();
        caps.push(Capability::RouteRefresh);
        if let Some(gr) = self.config.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restarting: self.restarting,
                notification: false,
                restart_time: gr.restart_time.min(0x0fff),
                // Forwarding is kube-proxy's and survives a speaker restart: F set.
                families: self
                    .config
                    .families
                    .iter()
                    .map(|f| (f.afi_safi(), true))
                    .collect(),
            }));
        }
        caps.push(Capability::FourOctetAs(self.config.local_as));
        Open::new(
            self.config.local_as,
            self.config.hold_time,
            self.config.router_id,
            caps,
        )
    }

    fn fail_connect(&mut self, now: Instant, reason: CloseReason, out: &mut Vec<Action>) {
        if reason == CloseReason::ConnectTimeout {
            out.push(Action::Close);
        }
        self.connect_deadline = None;
        self.state = State::Active;
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(later(now, self.backoff()));
        out.push(Action::Closed(Closed {
            reason,
            detail: String::new(),
            was_established: false,
        }));
    }

    /// Ends the current connection: optional Close action, state reset, backoff (unless
    /// stopped), and the Closed report.
    fn drop_connection(
        &mut self,
        now: Instant,
        reason: CloseReason,
        detail: String,
        close: bool,
        out: &mut Vec<Action>,
    ) {
        if close {
            out.push(Action::Close);
        }
        let was_established = self.state == State::Established;
        if let Some(since) = self.established_at
            && now.saturating_duration_since(since) >= self.config.backoff_max
        {
            self.failures = 0;
        }
        self.state = State::Idle;
        self.hold_deadline = None;
        self.keepalive_at = None;
        self.established_at = None;
        self.negotiated = None;
        self.rx.clear();
        self.rib.clear();
        self.initial_sent = false;
        self.unannounced.clear();
        // A connection that ends while a Stop drains (the peer closed first, or the hold
        // timer fired) ends the stop early: no reconnect either way.
        let stopping = self.closing.take().is_some();
        if reason.is_administrative() || stopping {
            self.stopped = true;
            self.retry_at = None;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.retry_at = Some(later(now, self.backoff()));
        }
        out.push(Action::Closed(Closed {
            reason,
            detail,
            was_established,
        }));
    }

    /// Capped exponential backoff with jitter: the delay is drawn uniformly from the upper
    /// half of `min(max, initial * 2^(failures-1))`, so sessions of many nodes that failed
    /// together spread out, and the cap is never exceeded.
    fn backoff(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        let base = self
            .config
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.config.backoff_max)
            // A year is plenty, and keeps the product below from overflowing.
            .min(Duration::from_secs(365 * 24 * 3600));
        let r = self.next_random();
        // r / 2^64 in [0, 1): the fraction of the lower half to add.
        let half = base / 2;
        let extra_nanos = (u128::from(r) * half.as_nanos()) >> 64;
        half + Duration::from_nanos(u64::try_from(extra_nanos).unwrap_or(u64::MAX))
    }

    /// SplitMix64: a tiny deterministic generator over the caller's seed.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn encoding(&self) -> Encoding {
        self.negotiated
            .as_ref()
            .map_or(Encoding::FOUR_OCTET, |n| n.encoding)
    }

    fn send(&mut self, msg: &Message, enc: Encoding, out: &mut Vec<Action>) {
        // Our own messages are built to fit; a failure here is a bug, and sending nothing is
        // safer than sending garbage.
        if let Ok(bytes) = msg.emit(enc) {
            if msg.kind() == MessageType::Update {
                self.stats.updates_sent += 1;
            }
            out.push(Action::Send {
                kind: msg.kind(),
                bytes,
            });
        }
    }

    fn send_notification(&mut self, n: Notification, out: &mut Vec<Action>) {
        self.send(&Message::Notification(n), Encoding::FOUR_OCTET, out);
    }

    /// Sends `n`, closes, and reports it as a protocol error we detected.
    fn protocol_error(
        &mut self,
        now: Instant,
        n: Notification,
        detail: String,
        out: &mut Vec<Action>,
    ) {
        self.send_notification(n.clone(), out);
        self.drop_connection(now, CloseReason::NotificationSent(n), detail, true, out);
    }

    fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Idle | State::Active => {
                if !self.stopped && self.retry_at.is_some_and(|t| t <= now) {
                    self.connect(now, out);
                }
            }
            State::Connect => {
                if self.connect_deadline.is_some_and(|t| t <= now) {
                    self.fail_connect(now, CloseReason::ConnectTimeout, out);
                }
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                if self.hold_deadline.is_some_and(|t| t <= now) {
                    self.send_notification(
                        Notification::new(NotificationCode::HOLD_TIMER_EXPIRED, Vec::new()),
                        out,
                    );
                    let detail = self
                        .negotiated
                        .as_ref()
                        .map(|n| format!("nothing received for {} s", n.hold_time))
                        .unwrap_or_else(|| "no OPEN received".to_string());
                    self.drop_connection(now, CloseReason::HoldTimerExpired, detail, true, out);
                    return;
                }
                if self.keepalive_at.is_some_and(|t| t <= now) {
                    self.send(&Message::Keepalive, Encoding::FOUR_OCTET, out);
                    self.restart_keepalive(now);
                }
                self.advance_closing(now, out);
            }
        }
    }

    fn restart_keepalive(&mut self, now: Instant) {
        self.keepalive_at = match &self.negotiated {
            Some(n) if n.keepalive > 0 => {
                Some(later(now, Duration::from_secs(u64::from(n.keepalive))))
            }
            _ => None,
        };
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold_deadline = match &self.negotiated {
            Some(n) if n.hold_time > 0 => {
                Some(later(now, Duration::from_secs(u64::from(n.hold_time))))
            }
            _ => None,
        };
    }

    fn on_bytes(&mut self, now: Instant, bytes: &[u8], out: &mut Vec<Action>) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.rx.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            let rest = self.rx.get(used..).unwrap_or_default();
            let len = match wire::frame_len(rest) {
                Ok(Some(len)) if rest.len() >= len => len,
                Ok(_) => break,
                Err(e) => {
                    let detail = e.to_string();
                    self.protocol_error(now, e.notification(), detail, out);
                    return;
                }
            };
            let msg = rest.get(..len).map(|m| Message::parse(m, self.encoding()));
            used += len;
            match msg {
                Some(Ok(m)) => self.on_message(now, m, out),
                Some(Err(e)) => self.on_parse_error(now, e, out),
                None => break,
            }
            if !matches!(
                self.state,
                State::OpenSent | State::OpenConfirm | State::Established
            ) {
                // The connection ended; whatever followed is moot.
                return;
            }
        }
        self.rx.drain(..used.min(self.rx.len()));
    }

    fn on_parse_error(&mut self, now: Instant, e: wire::WireError, out: &mut Vec<Action>) {
        let in_update = matches!(
            e,
            wire::WireError::MalformedAttributeList
                | wire::WireError::DuplicateAttribute { .. }
                | wire::WireError::UnrecognizedWellKnown { .. }
                | wire::WireError::MissingWellKnown { .. }
                | wire::WireError::AttributeFlags { .. }
                | wire::WireError::AttributeLength { .. }
                | wire::WireError::InvalidOrigin { .. }
                | wire::WireError::InvalidNextHop { .. }
                | wire::WireError::UnsupportedAfiSafi { .. }
                | wire::WireError::MalformedMpAttribute { .. }
                | wire::WireError::InvalidNetworkField
                | wire::WireError::MalformedAsPath { .. }
        );
        // We never install received routes, so every RFC 7606 remedy short of a session reset
        // (treat-as-withdraw, attribute discard, AFI/SAFI disable) leaves us nothing to do.
        if in_update && self.state == State::Established && e.handling() != Handling::SessionReset {
            self.stats.updates_received += 1;
            self.stats.updates_malformed += 1;
            self.restart_hold(now);
            return;
        }
        if in_update && self.state != State::Established {
            let code = if self.state == State::OpenSent {
                NotificationCode::FSM_UNEXPECTED_IN_OPENSENT
            } else {
                NotificationCode::FSM_UNEXPECTED_IN_OPENCONFIRM
            };
            self.protocol_error(
                now,
                Notification::new(code, Vec::new()),
                "UPDATE before Established".into(),
                out,
            );
            return;
        }
        let detail = e.to_string();
        self.protocol_error(now, e.notification(), detail, out);
    }

    fn on_message(&mut self, now: Instant, msg: Message, out: &mut Vec<Action>) {
        if let Message::Notification(n) = msg {
            let detail = n.shutdown_message().unwrap_or_default();
            // No NOTIFICATION is ever sent in reply to one (RFC 4271 §6.4).
            self.drop_connection(now, CloseReason::NotificationReceived(n), detail, true, out);
            return;
        }
        match (self.state, msg) {
            (State::OpenSent, Message::Open(open)) => self.on_open(now, &open, out),
            (State::OpenSent, m) => self.fsm_error(
                now,
                NotificationCode::FSM_UNEXPECTED_IN_OPENSENT,
                m.kind(),
                out,
            ),
            (State::OpenConfirm, Message::Keepalive) => self.on_established(now, out),
            (State::OpenConfirm, m) => self.fsm_error(
                now,
                NotificationCode::FSM_UNEXPECTED_IN_OPENCONFIRM,
                m.kind(),
                out,
            ),
            (State::Established, Message::Open(_)) => self.fsm_error(
                now,
                NotificationCode::FSM_UNEXPECTED_IN_ESTABLISHED,
                MessageType::Open,
                out,
            ),
            (State::Established, m) => {
                self.restart_hold(now);
                match m {
                    Message::Update(_) => self.stats.updates_received += 1,
                    Message::RouteRefresh(rr) => self.on_route_refresh(now, rr, out),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn fsm_error(
        &mut self,
        now: Instant,
        code: NotificationCode,
        got: MessageType,
        out: &mut Vec<Action>,
    ) {
        self.protocol_error(
            now,
            Notification::new(code, Vec::new()),
            format!("unexpected {}", got.as_str()),
            out,
        );
    }

    /// Validates the peer's OPEN (RFC 4271 §6.2, RFC 6286, RFC 5492) and negotiates.
    fn on_open(&mut self, now: Instant, open: &Open, out: &mut Vec<Action>) {
        let peer_as = open.asn();
        if open.hold_time == 1 || open.hold_time == 2 {
            return self.protocol_error(
                now,
                Notification::new(NotificationCode::UNACCEPTABLE_HOLD_TIME, Vec::new()),
                format!("peer proposed hold time {} s", open.hold_time),
                out,
            );
        }
        let local = self.config.local_as;
        let (as_ok, expected) = match self.config.peer_as {
            PeerAs::Exact(a) => (peer_as == a, format!("expected {a}")),
            PeerAs::Internal => (peer_as == local, format!("expected internal ({local})")),
            PeerAs::External => (peer_as != local, format!("expected external (not {local})")),
        };
        if !as_ok || peer_as == 0 {
            return self.protocol_error(
                now,
                Notification::new(NotificationCode::BAD_PEER_AS, Vec::new()),
                format!("peer AS {peer_as}, {expected}"),
                out,
            );
        }
        let internal = peer_as == local;
        if open.bgp_id.is_unspecified() || (internal && open.bgp_id == self.config.router_id) {
            return self.protocol_error(
                now,
                Notification::new(NotificationCode::BAD_BGP_IDENTIFIER, Vec::new()),
                format!("peer BGP identifier {}", open.bgp_id),
                out,
            );
        }
        let theirs = open.afi_safis();
        let families: Vec<Family> = self
            .config
            .families
            .iter()
            .copied()
            .filter(|f| theirs.contains(&f.afi_safi()))
            .collect();
        if families.is_empty() {
            // Data: the capabilities we need and the peer lacks (RFC 5492 §5).
            let mut data = Vec::new();
            for f in &self.config.families {
                let a = f.afi_safi();
                data.extend_from_slice(&[1, 4]);
                data.extend_from_slice(&a.afi.to_be_bytes());
                data.extend_from_slice(&[0, a.safi]);
            }
            return self.protocol_error(
                now,
                Notification::new(NotificationCode::UNSUPPORTED_CAPABILITY, data),
                "no address family in common".into(),
                out,
            );
        }
        let hold = self.config.hold_time.min(open.hold_time);
        let keepalive = if hold == 0 {
            0
        } else {
            self.config
                .keepalive
                .map_or(hold / 3, |k| k.min(hold / 3))
                .max(1)
        };
        let peer_gr = open.graceful_restart();
        self.negotiated = Some(Negotiated {
            peer_as,
            peer_id: open.bgp_id,
            hold_time: hold,
            keepalive,
            encoding: Encoding {
                four_octet_as: open.four_octet_as().is_some(),
            },
            families,
            route_refresh: open.route_refresh(),
            graceful_restart: self.config.graceful_restart.is_some() && peer_gr.is_some(),
            peer_restart_time: peer_gr.map(|g| g.restart_time),
            internal,
        });
        self.send(&Message::Keepalive, Encoding::FOUR_OCTET, out);
        self.state = State::OpenConfirm;
        self.restart_hold(now);
        self.restart_keepalive(now);
    }

    fn on_established(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.state = State::Established;
        self.established_at = Some(now);
        self.restarting = false;
        self.stats.established += 1;
        self.restart_hold(now);
        self.rib.clear();
        self.initial_sent = false;
        if let Some(n) = &self.negotiated {
            out.push(Action::Established(n.clone()));
        }
        self.sync_routes(now, out);
    }

    fn on_route_refresh(&mut self, now: Instant, rr: wire::RouteRefresh, out: &mut Vec<Action>) {
        let Some(family) = Family::from_afi_safi(rr.afi_safi) else {
            return;
        };
        let Some(n) = &self.negotiated else { return };
        // RFC 2918 §4: ignore a refresh for a family not negotiated; RFC 7313 BoRR/EoRR
        // subtypes are ignored too (we never receive routes).
        if rr.subtype != 0 || !n.families.contains(&family) || !self.initial_sent {
            return;
        }
        let enc = n.encoding;
        for u in self.rib.refresh(family, enc) {
            self.send(&Message::Update(u), enc, out);
        }
        self.restart_keepalive(now);
    }

    /// The complete attributes for each desired route on this connection.
    fn full_routes(&mut self, graceful_shutdown: bool) -> BTreeMap<Prefix, Attributes> {
        let mut full = BTreeMap::new();
        self.unannounced.clear();
        let Some(n) = &self.negotiated else {
            return full;
        };
        for (p, r) in &self.desired {
            if !n.families.contains(&p.family()) {
                self.unannounced
                    .push((*p, Unannounced::FamilyNotNegotiated));
                continue;
            }
            let next_hop = match p.family() {
                Family::Ipv4Unicast => self.next_hops.ipv4.map(MpNextHop::V4),
                Family::Ipv6Unicast => self.next_hops.ipv6.map(|global| MpNextHop::V6 {
                    global,
                    link_local: self.next_hops.ipv6_link_local,
                }),
            };
            let Some(next_hop) = next_hop else {
                self.unannounced.push((*p, Unannounced::NoNextHop));
                continue;
            };
            let mut communities = r.communities.clone();
            if graceful_shutdown && !communities.contains(&GRACEFUL_SHUTDOWN) {
                communities.push(GRACEFUL_SHUTDOWN);
            }
            full.insert(
                *p,
                Attributes {
                    origin: Origin::Igp,
                    as_path: if n.internal {
                        Vec::new()
                    } else {
                        vec![self.config.local_as]
                    },
                    next_hop,
                    med: r.med,
                    local_pref: if n.internal {
                        Some(r.local_pref.unwrap_or(100))
                    } else {
                        None
                    },
                    communities,
                    large_communities: r.large_communities.clone(),
                },
            );
        }
        full
    }

    /// Sends what changed, or the initial table and End-of-RIB once the routes are ready.
    fn sync_routes(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Established || !self.routes_ready {
            return;
        }
        let full = match &self.closing {
            Some(Closing::Draining { .. }) => BTreeMap::new(),
            Some(Closing::GracefulShutdown { .. }) => self.full_routes(true),
            None => self.full_routes(false),
        };
        self.apply(now, &full, out);
    }

    fn apply(&mut self, now: Instant, full: &BTreeMap<Prefix, Attributes>, out: &mut Vec<Action>) {
        let Some(n) = &self.negotiated else { return };
        let (families, enc) = (n.families.clone(), n.encoding);
        let diff = self.rib.diff(full, &families, enc);
        self.unannounced.extend(
            diff.rejected
                .iter()
                .map(|(p, r)| (*p, Unannounced::Rejected(*r))),
        );
        let sent_any = !diff.updates.is_empty();
        for u in diff.updates {
            self.send(&Message::Update(u), enc, out);
        }
        if !self.initial_sent {
            self.initial_sent = true;
            for f in &families {
                self.send(&Message::Update(Update::end_of_rib(*f)), enc, out);
            }
            self.restart_keepalive(now);
        } else if sent_any {
            self.restart_keepalive(now);
        }
    }

    fn on_stop(&mut self, now: Instant, stop: Stop, out: &mut Vec<Action>) {
        if self.stopped {
            return;
        }
        let (code, message, gshut, drain) = match stop {
            Stop::Shutdown {
                message,
                graceful_shutdown,
                drain,
            } => (
                NotificationCode::ADMIN_SHUTDOWN,
                message,
                graceful_shutdown,
                drain,
            ),
            Stop::Deconfigured { drain } => (
                NotificationCode::PEER_DECONFIGURED,
                String::new(),
                None,
                drain,
            ),
            Stop::Restart { message } => {
                self.stop_for_restart(now, message, out);
                return;
            }
        };
        match self.state {
            State::Established => {
                if self.closing.is_some() {
                    return;
                }
                let announced = self.initial_sent && !self.rib.is_empty();
                self.closing = Some(match gshut {
                    Some(d) if announced => Closing::GracefulShutdown {
                        until: later(now, d),
                        drain,
                        code,
                        message,
                    },
                    _ => Closing::Draining {
                        until: later(now, drain),
                        code,
                        message,
                    },
                });
                self.sync_routes(now, out);
                self.advance_closing(now, out);
            }
            _ => self.cease_now(now, code, &message, out),
        }
    }

    /// Stops without draining: Cease if a connection exists, else just stop reconnecting.
    fn cease_now(
        &mut self,
        now: Instant,
        code: NotificationCode,
        message: &str,
        out: &mut Vec<Action>,
    ) {
        let reason = if code == NotificationCode::PEER_DECONFIGURED {
            CloseReason::Deconfigured
        } else if code == NotificationCode::ADMIN_SHUTDOWN {
            CloseReason::AdminShutdown
        } else {
            CloseReason::Restart
        };
        match self.state {
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.send_notification(Notification::cease(code.subcode, message), out);
                self.drop_connection(now, reason, message.to_string(), true, out);
            }
            State::Connect => {
                out.push(Action::Close);
                self.connect_deadline = None;
                self.state = State::Idle;
                self.stopped = true;
                self.retry_at = None;
            }
            State::Idle | State::Active => {
                self.state = State::Idle;
                self.stopped = true;
                self.retry_at = None;
            }
        }
    }

    fn stop_for_restart(&mut self, now: Instant, message: String, out: &mut Vec<Action>) {
        let graceful = self.negotiated.as_ref().is_some_and(|n| n.graceful_restart);
        if self.state == State::Established && graceful {
            self.drop_connection(now, CloseReason::Restart, String::new(), true, out);
        } else {
            self.cease_now(now, NotificationCode::ADMIN_RESET, &message, out);
        }
    }

    fn advance_closing(&mut self, now: Instant, out: &mut Vec<Action>) {
        loop {
            match self.closing.clone() {
                Some(Closing::GracefulShutdown {
                    until,
                    drain,
                    code,
                    message,
                }) if until <= now => {
                    self.closing = Some(Closing::Draining {
                        until: later(now, drain),
                        code,
                        message,
                    });
                    self.sync_routes(now, out);
                }
                Some(Closing::Draining {
                    until,
                    code,
                    message,
                }) if until <= now => {
                    self.closing = None;
                    self.cease_now(now, code, &message, out);
                    return;
                }
                _ => return,
            }
        }
    }
}

/// `now + d`, saturating at a year ahead: configured durations are trusted to be sane, but an
/// absurd one must not overflow `Instant` and panic.
fn later(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(d.min(FAR)).unwrap_or(now)
}
