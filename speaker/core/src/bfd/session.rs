//! One BFD session in Asynchronous mode (RFC 5880 §6), single hop (RFC 5881) or multihop
//! (RFC 5883), as `(state, event, now) -> (state, actions)`.
//!
//! Owns the state variables of §6.8.1, the AdminDown/Down/Init/Up machine of §6.8.6, the
//! negotiated intervals and detection time (§6.8.4), Poll/Final sequences for timer changes
//! (§6.8.3), transmission with jitter (§6.8.7), passive mode (§6.1) and administrative
//! control (§6.8.16). It must not do I/O, read a clock or draw randomness: the shell passes
//! received packets with their TTL and `now`, sends the bytes in [`Action::Send`] to the peer,
//! and seeds the jitter at construction.
//!
//! Not implemented, by design: authentication (packets with the A bit are discarded, as
//! §6.8.6 requires of a session without it), Demand mode for ourselves (we honour a peer's)
//! and the Echo function (we advertise Required Min Echo RX 0).
//!
//! **AdminDown for a planned restart.** [`Event::AdminDown`] keeps transmitting AdminDown at
//! the rate in use for one of the peer's detection times before slowing to the ≥ 1 s idle
//! rate, so a single lost packet cannot make the peer declare a failure (§6.8.16 asks for at
//! least a Detection Time; FRR PR 22643 shows why one packet is not enough).
//! [`Session::admin_down_complete_at`] says when the shell may stop sending and exit.

use std::time::{Duration, Instant};

use super::packet::{BfdState, ControlPacket, Diagnostic};

/// Transmit rate floor while the session is not Up (RFC 5880 §6.8.3).
pub const IDLE_TX: Duration = Duration::from_secs(1);

/// How TTLs of received packets are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hops {
    /// RFC 5881 §5: only TTL/Hop Limit 255 is accepted.
    Single,
    /// RFC 5883 §5: at least this TTL (the BFDProfile's `minimumTtl`).
    Multi {
        /// Smallest accepted TTL.
        min_ttl: u8,
    },
}

/// Session parameters (MetalLB's BFDProfile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// bfd.DesiredMinTxInterval once Up (`transmitInterval`, default 300 ms).
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval (`receiveInterval`, default 300 ms).
    pub required_min_rx: Duration,
    /// bfd.DetectMult (`detectMultiplier`, default 3).
    pub detect_mult: u8,
    /// Do not transmit until the peer has been heard (`passiveMode`).
    pub passive: bool,
    /// TTL checks.
    pub hops: Hops,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            passive: false,
            hops: Hops::Single,
        }
    }
}

/// An input to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A UDP payload received from the peer, with its IP TTL / Hop Limit.
    Received {
        /// The payload.
        bytes: &'a [u8],
        /// IP TTL or IPv6 Hop Limit as received.
        ttl: u8,
    },
    /// The deadline from [`Session::poll_timeout`] has passed.
    Timeout,
    /// Take the session administratively down with this diagnostic (usually
    /// [`Diagnostic::ADMINISTRATIVELY_DOWN`]).
    AdminDown(Diagnostic),
    /// Bring an AdminDown session back to Down.
    Enable,
    /// New intervals or multiplier; a Poll Sequence tells the peer if the session is Up.
    Reconfigure(Config),
}

/// A state change, for clients and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// Previous state.
    pub from: BfdState,
    /// New state.
    pub to: BfdState,
    /// bfd.LocalDiag after the change.
    pub diag: Diagnostic,
    /// The peer said AdminDown: not a path failure (RFC 5882 §3.2).
    pub peer_admin_down: bool,
}

impl Transition {
    /// Whether clients (BGP) should treat this as a failure of the path: an Up session went
    /// Down, and not because the peer took it down administratively.
    pub const fn is_failure(&self) -> bool {
        matches!(self.from, BfdState::Up)
            && matches!(self.to, BfdState::Down)
            && !self.peer_admin_down
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this UDP payload to the peer (TTL 255).
    Send(Vec<u8>),
    /// The session changed state.
    StateChanged(Transition),
}

/// Why a received packet was discarded. `as_str()` values are stable metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// The packet does not parse or fails §6.8.6's stateless checks.
    Malformed(super::BfdError),
    /// TTL below what the hop mode accepts (RFC 5881 §5, RFC 5883 §5).
    Ttl,
    /// Your Discriminator is not ours.
    WrongDiscriminator,
    /// Authentication present; we run none (RFC 5880 §6.8.6).
    Authenticated,
    /// We are AdminDown (§6.8.6).
    AdminDown,
}

impl Discard {
    /// Stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed(e) => e.as_str(),
            Self::Ttl => "ttl",
            Self::WrongDiscriminator => "wrong_discriminator",
            Self::Authenticated => "authenticated",
            Self::AdminDown => "admin_down",
        }
    }
}

/// A Poll Sequence in progress, with the values that stay in force until its Final (§6.8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Poll {
    /// The Desired Min TX that paces transmission until the Final: the old, shorter one if
    /// DesiredMinTx grew (or the rate in use when AdminDown began); `None` uses the new one.
    tx_in_use: Option<Duration>,
    /// RequiredMinRx for the detection time until the Final (the old one, if it shrank).
    rx_for_detection: Duration,
}

/// One BFD session. See the module docs.
#[derive(Debug, Clone)]
pub struct Session {
    config: Config,
    state: BfdState,
    local_discr: u32,
    remote_discr: u32,
    remote_state: BfdState,
    local_diag: Diagnostic,
    /// bfd.RemoteMinRxInterval; 1 µs until heard (§6.8.1).
    remote_min_rx: Duration,
    /// The peer's last Desired Min TX.
    remote_desired_tx: Duration,
    remote_detect_mult: u8,
    remote_demand: bool,
    /// bfd.DesiredMinTxInterval as advertised now.
    desired_tx: Duration,
    poll: Option<Poll>,
    /// A Final is owed to the peer.
    final_due: bool,
    next_tx: Option<Instant>,
    /// When the peer's silence takes the session down (Init/Up) or forgets it.
    detect_deadline: Option<Instant>,
    /// AdminDown: keep the fast rate until then.
    admin_fast_until: Option<Instant>,
    rng: u64,
    discards: u64,
}

impl Session {
    /// A session in Down with local discriminator `local_discr` (non-zero and unique among the
    /// shell's sessions; 0 is replaced by 1). Unless passive, the first packet goes out at
    /// `now`. `seed` feeds the transmit jitter.
    pub fn new(config: Config, local_discr: u32, now: Instant, seed: u64) -> Self {
        let mut s = Self {
            config,
            state: BfdState::Down,
            local_discr: local_discr.max(1),
            remote_discr: 0,
            remote_state: BfdState::Down,
            local_diag: Diagnostic::NONE,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            desired_tx: config.desired_min_tx.max(IDLE_TX),
            poll: None,
            final_due: false,
            next_tx: None,
            detect_deadline: None,
            admin_fast_until: None,
            rng: seed,
            discards: 0,
        };
        if s.may_transmit() {
            s.next_tx = Some(now);
        }
        s
    }

    /// bfd.SessionState.
    pub fn state(&self) -> BfdState {
        self.state
    }

    /// bfd.LocalDiag.
    pub fn diag(&self) -> Diagnostic {
        self.local_diag
    }

    /// bfd.LocalDiscr: the shell demultiplexes received packets by it.
    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    /// bfd.RemoteDiscr (0 until the peer is heard, and again after a detection time of
    /// silence).
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Packets discarded so far.
    pub fn discards(&self) -> u64 {
        self.discards
    }

    /// Our detection time: the peer's Detect Mult times the larger of our RequiredMinRx and
    /// its Desired Min TX (§6.8.4). `None` before the peer is heard.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let rx = self
            .poll
            .map_or(self.config.required_min_rx, |p| p.rx_for_detection);
        Some(
            rx.max(self.remote_desired_tx)
                .saturating_mul(u32::from(self.remote_detect_mult)),
        )
    }

    /// The peer's detection time for us: our Detect Mult times the interval we transmit at.
    pub fn peer_detection_time(&self) -> Duration {
        self.tx_interval()
            .saturating_mul(u32::from(self.config.detect_mult))
    }

    /// After [`Event::AdminDown`], when AdminDown has been sent at the fast rate for the peer's
    /// detection time: from then on the shell may stop the session and exit.
    pub fn admin_down_complete_at(&self) -> Option<Instant> {
        if self.state == BfdState::AdminDown {
            self.admin_fast_until
        } else {
            None
        }
    }

    /// The earliest deadline at which [`Event::Timeout`] must be delivered.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_tx, self.detect_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds one event; returns what to do. Received packets that are discarded are counted
    /// and produce no actions; [`Session::receive`] says why.
    pub fn handle(&mut self, now: Instant, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Received { bytes, ttl } => {
                if self.receive(now, bytes, ttl, &mut out).is_err() {
                    self.discards += 1;
                }
            }
            Event::Timeout => self.on_timeout(now, &mut out),
            Event::AdminDown(diag) => {
                if self.state != BfdState::AdminDown {
                    // Keep the peer's view of our rate for one of its detection times.
                    let fast = self.tx_interval();
                    let window = self.peer_detection_time();
                    self.local_diag = diag;
                    self.set_state(BfdState::AdminDown, false, &mut out);
                    self.poll = Some(Poll {
                        tx_in_use: Some(fast),
                        rx_for_detection: self.config.required_min_rx,
                    });
                    self.admin_fast_until = now.checked_add(window);
                    if self.may_transmit() {
                        self.next_tx = Some(now);
                    }
                }
            }
            Event::Enable => {
                if self.state == BfdState::AdminDown {
                    self.admin_fast_until = None;
                    self.poll = None;
                    self.set_state(BfdState::Down, false, &mut out);
                    if self.next_tx.is_none() && self.may_transmit() {
                        self.next_tx = Some(now);
                    }
                }
            }
            Event::Reconfigure(config) => self.reconfigure(config),
        }
        out
    }

    /// The reception procedure of §6.8.6 for one UDP payload; `Err` says why it was discarded.
    pub fn receive(
        &mut self,
        now: Instant,
        bytes: &[u8],
        ttl: u8,
        out: &mut Vec<Action>,
    ) -> Result<(), Discard> {
        let p = ControlPacket::parse(bytes).map_err(Discard::Malformed)?;
        let ttl_ok = match self.config.hops {
            Hops::Single => ttl == 255,
            Hops::Multi { min_ttl } => ttl >= min_ttl,
        };
        if !ttl_ok {
            return Err(Discard::Ttl);
        }
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            return Err(Discard::WrongDiscriminator);
        }
        if p.auth.is_some() {
            return Err(Discard::Authenticated);
        }
        let was_transmitting = self.may_transmit();
        let before = self.state;
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx));
        self.remote_desired_tx = Duration::from_micros(u64::from(p.desired_min_tx));
        self.remote_detect_mult = p.detect_mult;
        if p.final_ && self.poll.is_some() && self.state != BfdState::AdminDown {
            self.poll = None;
        }
        self.detect_deadline = self.detection_time().and_then(|d| now.checked_add(d));
        if self.state == BfdState::AdminDown {
            return Err(Discard::AdminDown);
        }
        if p.state == BfdState::AdminDown {
            if self.state != BfdState::Down {
                self.local_diag = Diagnostic::NEIGHBOR_SIGNALED_DOWN;
                self.set_state(BfdState::Down, true, out);
            }
        } else {
            match (self.state, p.state) {
                (BfdState::Down, BfdState::Down) => self.set_state(BfdState::Init, false, out),
                (BfdState::Down, BfdState::Init) => self.set_state(BfdState::Up, false, out),
                (BfdState::Init, BfdState::Init | BfdState::Up) => {
                    self.set_state(BfdState::Up, false, out)
                }
                (BfdState::Up, BfdState::Down) => {
                    self.local_diag = Diagnostic::NEIGHBOR_SIGNALED_DOWN;
                    self.set_state(BfdState::Down, false, out);
                }
                _ => {}
            }
        }
        if p.poll {
            // A Final goes out at once, regardless of the transmit timer (§6.8.7).
            self.final_due = true;
            self.transmit(now, out);
            self.final_due = false;
        }
        if !was_transmitting && self.may_transmit() && self.next_tx.is_none() {
            // Passive side: the peer is heard, start transmitting.
            self.next_tx = Some(now);
        }
        if before != BfdState::Up && self.state == BfdState::Up && self.may_transmit() {
            // The configured (faster) rate applies at once: bring the next packet forward.
            let gap = self.jittered(self.tx_interval());
            let soon = now.checked_add(gap);
            self.next_tx = match (self.next_tx, soon) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if !self.may_transmit() {
            self.next_tx = None;
        }
        Ok(())
    }

    fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.detect_deadline.is_some_and(|t| t <= now) {
            self.detect_deadline = None;
            if matches!(self.state, BfdState::Init | BfdState::Up) {
                self.local_diag = Diagnostic::CONTROL_DETECTION_TIME_EXPIRED;
                self.set_state(BfdState::Down, false, out);
            }
            // A detection time of silence forgets the peer (§6.8.1, §6.8.18).
            self.remote_discr = 0;
            self.remote_min_rx = Duration::from_micros(1);
            self.remote_demand = false;
            self.remote_detect_mult = 0;
            if !self.may_transmit() {
                self.next_tx = None;
            }
        }
        if self.state == BfdState::AdminDown && self.admin_fast_until.is_some_and(|t| t <= now) {
            // The fast window is over: the idle rate applies from now on.
            self.poll = None;
        }
        if self.next_tx.is_some_and(|t| t <= now) {
            self.transmit(now, out);
        }
    }

    fn reconfigure(&mut self, config: Config) {
        let old = self.config;
        self.config = config;
        if self.state == BfdState::Up {
            let new_tx = config.desired_min_tx;
            // §6.8.3: a longer TX interval and a shorter RX interval take effect only after
            // the Final; the other directions are safe at once.
            self.poll = Some(Poll {
                tx_in_use: (new_tx > self.desired_tx).then_some(self.desired_tx),
                rx_for_detection: old.required_min_rx.max(config.required_min_rx),
            });
            self.desired_tx = new_tx;
        } else {
            self.desired_tx = config.desired_min_tx.max(IDLE_TX);
        }
    }

    fn set_state(&mut self, to: BfdState, peer_admin_down: bool, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        if to == BfdState::Up {
            // Leave the ≥ 1 s idle rate: the faster configured rate takes effect at once and
            // a Poll Sequence announces it (§6.8.3).
            self.desired_tx = self.config.desired_min_tx;
            self.poll = Some(Poll {
                tx_in_use: None,
                rx_for_detection: self.config.required_min_rx,
            });
        } else if to != BfdState::AdminDown {
            self.desired_tx = self.config.desired_min_tx.max(IDLE_TX);
            self.poll = None;
        }
        out.push(Action::StateChanged(Transition {
            from,
            to,
            diag: self.local_diag,
            peer_admin_down,
        }));
    }

    /// Whether periodic transmission is allowed (§6.8.7).
    fn may_transmit(&self) -> bool {
        if self.config.passive && self.remote_discr == 0 {
            return false;
        }
        if self.remote_min_rx.is_zero() {
            return false;
        }
        // The peer runs Demand mode with both sides Up: no periodic packets (§6.6).
        !(self.remote_demand && self.state == BfdState::Up && self.remote_state == BfdState::Up)
    }

    /// The transmit interval before jitter: the larger of the Desired Min TX in use and what
    /// the peer accepts (§6.8.7).
    fn tx_interval(&self) -> Duration {
        let desired = self
            .poll
            .and_then(|p| p.tx_in_use)
            .unwrap_or(self.desired_tx);
        desired.max(self.remote_min_rx)
    }

    fn transmit(&mut self, now: Instant, out: &mut Vec<Action>) {
        let packet = ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll: self.poll.is_some() && !self.final_due && self.state != BfdState::AdminDown,
            final_: self.final_due,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.config.detect_mult.max(1),
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx: micros(self.desired_tx),
            required_min_rx: micros(self.config.required_min_rx),
            required_min_echo_rx: 0,
            auth: None,
        };
        if let Ok(bytes) = packet.emit() {
            out.push(Action::Send(bytes));
        }
        if self.final_due {
            // A Final is extra; it does not move the periodic schedule.
            return;
        }
        if self.state == BfdState::AdminDown && self.poll.is_none() {
            self.desired_tx = self.config.desired_min_tx.max(IDLE_TX);
        }
        self.next_tx = if self.may_transmit() {
            let gap = self.jittered(self.tx_interval());
            now.checked_add(gap)
        } else {
            None
        };
    }

    /// §6.8.7: 0–25 % less than the interval, 10–25 % less with Detect Mult 1.
    fn jittered(&mut self, interval: Duration) -> Duration {
        let r = self.next_random();
        let span: u128 = if self.config.detect_mult <= 1 { 15 } else { 25 };
        // Intervals beyond the 32-bit µs wire field are clamped, so nothing below overflows.
        let nanos = interval.as_nanos().min(u128::from(u32::MAX) * 1000);
        // A fraction in [75 %, 75 % + span) of the interval, with 2^-64 resolution.
        let extra = (u128::from(r) * (nanos * span / 100)) >> 64;
        let base = nanos * 75 / 100;
        Duration::from_nanos(u64::try_from(base + extra).unwrap_or(u64::MAX))
    }

    /// SplitMix64 over the caller's seed.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A duration in whole microseconds, saturating at the 32-bit field.
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
