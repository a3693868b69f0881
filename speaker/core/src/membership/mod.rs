//! Speaker membership: which speakers are alive, what each one announces and which IPs each one
//! cannot announce.
//!
//! Owns a deterministic state machine in the style of quinn-proto: the shell feeds it received
//! datagrams ([`Membership::on_datagram`]) and the passage of time ([`Membership::tick`]) and
//! carries out the returned [`Action`]s (send these bytes to this address, log/measure this
//! event). It must not open sockets, read clocks, sleep or draw OS randomness: `now` always comes
//! from the caller and randomness from a seeded generator, so tests and the simulator
//! ([`sim`]) replay exactly. Bytes are defined in [`codec`].
//!
//! Two protocols share the API ([`Protocol`]):
//!
//! - **SWIM** (version 3, [`Config::default`]): failure detection by probing one member per
//!   protocol period, state by gossip and anti-entropy. Per-member traffic does not grow with
//!   the cluster.
//! - **Legacy** (version 2, [`Config::new`]): every speaker heartbeats every peer every
//!   `interval` with its claims and unable IPs, and a peer is dead after `dead_after` of
//!   silence unless a directly-alive peer vouches for it (see `legacy`). O(n²) packets; kept
//!   for speakers that predate SWIM, and so a shell that has not moved to
//!   [`Membership::on_datagram`] keeps working unchanged.
//!
//! # SWIM with Lifeguard
//!
//! Every protocol period `T` (`interval`) a member pings one other member. Periods cycle through
//! the member's first and second successors on a ring (members ordered by a hash of their
//! names; members it already accuses are skipped, so the ring closes over a dead one at once)
//! and the next member of its own shuffled round-robin list. So each member is watched by its
//! two ring predecessors, each every third period, and by random probers on top. If no Ack
//! comes within the ping timeout the prober asks `k` random members to ping the target
//! (PingReq); each answers with the target's Ack or, at its own timeout, a Nack. With no Ack by
//! the probe timeout the prober *accuses* the target: the target becomes Suspect (still alive
//! for the election: its claims still count, no IP moves), the suspicion is gossiped, sent
//! straight to the target, to the target's ring predecessor and to the accusers known, and the
//! accuser pings the suspect again every period.
//!
//! A suspect refutes by raising its incarnation: it learns of the suspicion from any packet
//! (items about a member are put first in packets to it), answers every accuser it knows of
//! directly and through `k` random relays (each gets the accusation back from the suspect and,
//! holding it for stale, tells the accuser: the path between accuser and suspect may be the
//! broken one, as the failed probe suggests) and gossips its new incarnation; an Ack carries
//! the incarnation too, so the accuser's next ping also clears it. Only an accuser runs a suspicion timer (its own failed
//! probe is the evidence); when it expires the accuser declares the member Dead, sends that to
//! every member directly (the next announcer of each of the dead member's IPs learns at once)
//! and gossips it. A Dead of an older incarnation is ignored; a member that hears itself
//! declared dead refutes, and is alive again wherever the refutation arrives.
//!
//! **Dynamic suspicion (Lifeguard), confirmed by peers.** The timer of an accuser with `C`
//! independent confirmations is `max(min, max − (max − min) · ln(C + 1) / ln(K + 1))`, with
//! `K` = `suspicion_confirmations` limited to `members − 2` ([`Config::suspicion_timeout`]).
//! Confirmations are the other accusers of the same incarnation it heard of and the helpers
//! that answered its failed probe with a Nack (each pinged the target itself and got no
//! answer). An accuser with no confirmation at all never declares death (unless the cluster
//! has two members, where nobody could confirm): it may be the one cut off, and one member's
//! view must not move IPs. Accusers send their suspicion to the target's ring predecessor and
//! to the accusers they know of, so confirmations meet within a period instead of a gossip
//! round. A crashed member typically gets `k` Nacks on the first failed probe: `C = K`, the
//! timer is `min`.
//!
//! **Local health (Lifeguard's LHM).** A score `0..=max_health` rises by one when this member's
//! own `tick` comes more than a period late (it was stalled), when it has to refute a
//! suspicion of itself, and by the number of missing Nacks when a probe fails (no Nack from a
//! helper means the helpers did not hear from this member, so the fault is likely here). It
//! falls by one on every successful probe. Probe interval and timeouts are multiplied by
//! `1 + score`: a member that is itself slow probes less and accuses later. A phase that
//! expired while this member was not running is not judged: its indirect probes go out
//! when it runs again, with a fresh window.
//!
//! **Dissemination.** Liveness news and record deltas ride as items on every packet, least-sent
//! first, each sent `λ · (⌊log10(n + 1)⌋ + 1)` times (`retransmit_mult` = λ). A packet never
//! exceeds `max_datagram` bytes.
//!
//! **Records and anti-entropy.** A member's claims and unable IPs form a versioned record;
//! changes travel as deltas of at most 32 addresses (see `state`), gossiped like liveness news
//! and kept even when they arrive before the member's liveness record. Every `sync_interval`
//! (every period while not settled) a member sends one random member the hashes of 64 buckets
//! of liveness records (about 300 bytes); the other answers only if a bucket differs, with its
//! digest entries for those buckets (at most two datagrams), the first pulls the whole records
//! it lacks (at most 24 members per pull, answered in at most eight datagrams of 32-address
//! parts) and pushes back newer liveness it holds. A joiner that lacks a quarter of the records
//! asks for the whole digest instead (at most 32 datagrams, and a member answers at most one
//! such request per period). A member more than four periods behind a peer's record pulls it
//! from that peer. Measured in the simulator: 1,000 members started at once each know every
//! record 0.9 s later.
//!
//! # Timings (defaults) and the arithmetic behind them
//!
//! `T` = 25 ms, ping timeout 10 ms, probe timeout 25 ms (indirect window 15 ms), `k` = 3,
//! suspicion 325..400 ms with `K` = 3, λ = 3, LHM up to 8, sync every 200 ms, 1,200-byte
//! datagrams.
//!
//! - *Traffic.* A member sends one Ping per period and answers on average one (each member is
//!   the target of one probe per period on average): 80 packets/s sent and 80 received, plus
//!   5 bucket-hash requests/s, whatever the cluster size; an idle packet is about 40 bytes of
//!   payload, a bucket-hash request about 300. The legacy protocol sends `40 · (n − 1)`
//!   packets/s: 360 at 10 members, 39,960 at 1,000. Events cost extra, bounded per event: a
//!   death costs its declarer one datagram per member, a refutation `1 + 2k` per accuser.
//! - *No false death from a 300 ms stall.* A suspicion starts at the earliest one probe timeout
//!   (25 ms) after the unanswered Ping left, and an accuser waits at least `suspicion_min`
//!   (325 ms): nobody can declare a member dead before 350 ms of silence toward the Ping that
//!   started it. A member stalled 300 ms runs again at most 300 ms after that Ping arrived, reads
//!   the suspicion that was sent to it, and answers every accuser directly (one packet each):
//!   50 ms of margin for two one-way latencies and its own catch-up work.
//!   [`Config::declare_after`] is this bound (350 ms); the shell's own stall check must use it.
//! - *Failover p99 ≤ 500 ms.* After a death, each of its two ring predecessors probes it within
//!   3T = 75 ms (both running: about 38 ms on average; one stalled or dead: the other still
//!   within 75 ms; random probers arrive on top). The probe fails 25 ms later with, normally,
//!   `k` Nacks, so `C = K` and the accuser waits `min` = 325 ms: dead within
//!   75 + 25 + 325 = 425 ms. With a single confirmation it waits 362 ms (462 ms). Dead goes to
//!   every member directly, so the next announcer of each IP knows one one-way latency later.
//! - *Refutation beats gossip.* Gossip of an item reaches all of 1,000 members in ≈ 6–10
//!   periods (150–250 ms), too slow to race a 325 ms timer after a 300 ms stall; hence the
//!   direct answer to accusers, the per-period re-ping, and the rule that only accusers declare.
//!
//! # Rolling upgrades
//!
//! A SWIM member that receives a version 2 heartbeat from a peer treats that peer by the legacy
//! rule and heartbeats it (version 2, every `interval`, with claims, unable IPs and the peers
//! it heard directly) until the peer comes back with a newer generation speaking version 3. It
//! never probes a legacy peer, never asks one to help, and never gossips about one: each member
//! judges legacy peers by their own heartbeats. Old speakers therefore see new ones as before;
//! during the upgrade the old ones keep their 200 ms rule (and their false failovers under
//! load), and a death is noticed by old speakers after 200 ms and by new ones after ≈ 400 ms.
//!
//! # How the shell uses it
//!
//! The owner of an IP is `election::owner(ip, candidates, |n| claims(n).contains(&ip))` where the
//! candidates are `eligible ∩ alive()` minus the nodes whose [`Membership::unable`] lists the IP.
//! A speaker announces only while [`Membership::settled`] is true: a fresh speaker first learns
//! its peers' claims, so it never snatches an IP another speaker holds. The shell reports this
//! speaker's own unable IPs with [`Membership::set_unable`] and its claims with every
//! [`Membership::tick`]. For SWIM the shell must feed every datagram (any version) to
//! [`Membership::on_datagram`] and drain what it has received before calling `tick`, so an
//! answer that arrived while the process was stalled counts before a timer is judged.

pub mod codec;
mod gossip;
mod legacy;
mod rng;
pub mod sim;
mod state;
mod swim;
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use codec::{
    CodecError, Datagram, Heartbeat, MAX_CLAIMS, MAX_HEARD, MAX_STATE_IPS, Message, Packet, Status,
};

use codec::Item;
use legacy::LegacyState;
use rng::Rng;
use state::{Own, PeerData};

/// Which protocol this speaker speaks. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Version 2 heartbeats to every peer; every peer judged by the legacy rule.
    Legacy,
    /// Version 3 SWIM; version 2 only toward peers heard speaking it.
    Swim,
}

/// Timing and sizes. Defaults and their arithmetic are in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Which protocol to speak.
    pub protocol: Protocol,
    /// SWIM protocol period `T`, and the heartbeat period toward legacy peers. Default 25 ms.
    pub interval: Duration,
    /// Legacy rule: silence after which a legacy peer is dead absent vouching. Default 200 ms.
    pub dead_after: Duration,
    /// How long after start a speaker waits to learn every known peer before it announces
    /// anyway. Default `2 * dead_after` (legacy) or 1 s (SWIM).
    pub join_grace: Duration,
    /// SWIM: how long a direct Ping waits for its Ack before PingReqs go out. Default 10 ms.
    pub ping_timeout: Duration,
    /// SWIM: how long after the Ping a probe without any Ack fails (at most `interval`).
    /// Default 25 ms.
    pub probe_timeout: Duration,
    /// SWIM: members asked to ping the target when the direct Ping times out (`k`). Default 3.
    pub indirect_probes: usize,
    /// SWIM: shortest suspicion before an accuser declares death. Default 325 ms.
    pub suspicion_min: Duration,
    /// SWIM: the suspicion formula's value at no confirmation (an accuser alone never declares;
    /// with one of `K` = 3 confirmations it waits 362 ms). Default 400 ms.
    pub suspicion_max: Duration,
    /// SWIM: confirmations that bring the suspicion down to `suspicion_min` (`K`). Default 3.
    pub suspicion_confirmations: u32,
    /// SWIM: λ of the gossip retransmit limit. Default 3.
    pub retransmit_mult: u32,
    /// SWIM: highest local-health score; timeouts scale by up to `1 + max_health`. Default 8.
    pub max_health: u32,
    /// SWIM: largest datagram sent; raised to [`codec::MIN_DATAGRAM`] if smaller (a full delta
    /// or record part must fit). Default 1,200 bytes.
    pub max_datagram: usize,
    /// SWIM: anti-entropy period once settled. Default 200 ms.
    pub sync_interval: Duration,
    /// SWIM: suspects this member re-pings per period (those it accuses). Default 2.
    pub reprobe_suspects: usize,
    /// SWIM: how early a probe may start when [`Membership::tick`] is called before it is due
    /// (a shell awake for a datagram anyway), saving the wake-up of its own; the probe schedule
    /// is kept. Zero starts probes only when due. Default 10 ms.
    pub probe_slack: Duration,
}

impl Config {
    /// The legacy (version 2, all-to-all) protocol with these timings and
    /// `join_grace = 2 * dead_after`: what speakers ran before SWIM. A shell that decodes with
    /// [`Message::decode`] and feeds [`Membership::on_message`] must use this.
    pub fn new(interval: Duration, dead_after: Duration) -> Self {
        Self {
            protocol: Protocol::Legacy,
            interval,
            dead_after,
            join_grace: dead_after.saturating_mul(2),
            ..Self::default()
        }
    }

    /// Lifeguard's dynamic suspicion timeout of an accuser with `confirmations` (other accusers
    /// it heard of, helpers that Nacked its probe), in a cluster of `members` live members:
    /// `max(min, max − (max − min) · ln(C + 1) / ln(K + 1))` with
    /// `K = min(suspicion_confirmations, members − 2)` (`min` when `K` is 0).
    pub fn suspicion_timeout(&self, confirmations: usize, members: usize) -> Duration {
        let min = self.suspicion_min;
        let max = self.suspicion_max.max(min);
        let k = (self.suspicion_confirmations as usize).min(members.saturating_sub(2));
        if k == 0 {
            return min;
        }
        let c = confirmations.min(k);
        let frac = ((c + 1) as f64).ln() / ((k + 1) as f64).ln();
        let t = max.as_secs_f64() - (max - min).as_secs_f64() * frac;
        // Rounded to whole microseconds so the result does not depend on the last float bit.
        let us = (t * 1e6).round().max(min.as_micros() as f64);
        Duration::from_micros(us as u64).max(min)
    }

    /// The shortest silence after which a peer may declare this speaker dead: for SWIM the
    /// probe timeout plus the minimum suspicion (350 ms by default), for legacy `dead_after`.
    /// A shell that finds itself stalled longer must assume its IPs were taken over.
    pub fn declare_after(&self) -> Duration {
        match self.protocol {
            Protocol::Legacy => self.dead_after,
            Protocol::Swim => self.probe_timeout + self.suspicion_min,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocol: Protocol::Swim,
            interval: Duration::from_millis(25),
            dead_after: Duration::from_millis(200),
            join_grace: Duration::from_secs(1),
            ping_timeout: Duration::from_millis(10),
            probe_timeout: Duration::from_millis(25),
            indirect_probes: 3,
            suspicion_min: Duration::from_millis(325),
            suspicion_max: Duration::from_millis(400),
            suspicion_confirmations: 3,
            retransmit_mult: 3,
            max_health: 8,
            max_datagram: codec::MIN_DATAGRAM,
            sync_interval: Duration::from_millis(200),
            reprobe_suspects: 2,
            probe_slack: Duration::from_millis(10),
        }
    }
}

/// Why a peer stopped being alive. `as_str()` values are stable metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownReason {
    /// Legacy: neither heard directly nor vouched for within `dead_after`. SWIM: declared dead
    /// after a suspicion that was not refuted in time.
    Timeout,
    /// It left gracefully.
    Left,
    /// Another instance (generation) replaced it: the old instance is gone.
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
    /// This speaker was given more claims than it can advertise ([`MAX_CLAIMS`] for legacy,
    /// [`MAX_STATE_IPS`] for SWIM); only the first ones are advertised, so peers may contest
    /// the rest. Reported when the number of dropped claims changes.
    ClaimsTruncated {
        /// Claims advertised.
        kept: usize,
        /// Claims not advertised.
        dropped: usize,
    },
    /// The unable IPs did not fit in what the claims leave of the limit; only the first ones
    /// are advertised, so peers may elect this speaker for the rest, which it never claims:
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
        /// Encoded [`Packet`] or [`Message`].
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
    /// Repeated, reordered or superseded messages (old seq, generation or incarnation,
    /// heartbeat after Leave).
    pub stale: u64,
    /// Accepted messages whose source IP differs from the peer's configured address
    /// (multi-homed nodes may legitimately do this).
    pub unexpected_addr: u64,
    /// Version 3 packets received while speaking [`Protocol::Legacy`].
    pub wrong_protocol: u64,
}

/// What the SWIM machinery did, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwimStats {
    /// Probes started (one per period).
    pub probes: u64,
    /// Probes whose direct Ping timed out (PingReqs sent).
    pub indirect: u64,
    /// Probes that failed: this speaker accused the target.
    pub accusations: u64,
    /// Members this speaker declared dead.
    pub declared_dead: u64,
    /// Times this speaker refuted a suspicion or death of itself.
    pub refutations: u64,
    /// Ticks that came more than a period late (this speaker was stalled).
    pub late_ticks: u64,
    /// Anti-entropy requests sent.
    pub syncs: u64,
    /// Whole-record pulls sent.
    pub pulls: u64,
    /// Version 2 heartbeats sent (to legacy peers).
    pub legacy_heartbeats: u64,
}

/// A member's liveness record (SWIM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    generation: u64,
    incarnation: u32,
    status: Status,
    /// Newest version of its claims/unable record known to exist.
    version: u32,
}

/// An open suspicion of a member's incarnation.
#[derive(Debug, Clone)]
struct Suspicion {
    generation: u64,
    incarnation: u32,
    /// Distinct accusers heard of (this speaker included when it accuses), at most
    /// [`MAX_ACCUSERS`].
    accusers: Vec<String>,
    /// When this speaker accused (its own probe failed): only then does it run a timer.
    mine: Option<Instant>,
    /// Helpers that answered this speaker's failed probe with a Nack: they tried the suspect
    /// themselves and got no answer either, so each is an independent confirmation.
    witnesses: usize,
    /// Last time this speaker re-pinged the suspect.
    last_reping: Option<Instant>,
}

const MAX_ACCUSERS: usize = 8;

#[derive(Debug, Clone)]
struct Peer {
    name: String,
    addr: SocketAddr,
    /// Position on the ring and anti-entropy bucket.
    key: u64,
    /// Alive as last reported to the shell (an Up with no Down since).
    reported: bool,
    /// Set while the peer speaks version 1/2 (see [`Peer::speaks_legacy`]).
    legacy: Option<Box<LegacyState>>,
    rec: Option<Record>,
    data: PeerData,
    susp: Option<Box<Suspicion>>,
    /// Last datagram received from it (any version), for legacy `heard` lists.
    last_direct: Option<Instant>,
    /// Last correction sent to it (its header showed it does not know what we know of it).
    last_correction: Option<Instant>,
    last_pull: Option<Instant>,
    /// This record's share of its anti-entropy bucket hash.
    hash: u32,
}

impl Peer {
    fn new(name: String, addr: SocketAddr) -> Self {
        Self {
            key: rng::name_hash(&name),
            name,
            addr,
            reported: false,
            legacy: None,
            rec: None,
            data: PeerData::default(),
            susp: None,
            last_direct: None,
            last_correction: None,
            last_pull: None,
            hash: 0,
        }
    }

    /// Whether version 1/2 is what this peer speaks now: its legacy instance is newer than any
    /// version 3 record of it.
    fn speaks_legacy(&self) -> bool {
        match (&self.legacy, &self.rec) {
            (Some(l), Some(r)) => l.incarnation > r.generation,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    fn is_alive(&self) -> bool {
        if self.speaks_legacy() {
            return self.legacy.as_ref().is_some_and(|l| l.alive);
        }
        self.rec
            .is_some_and(|r| matches!(r.status, Status::Alive | Status::Suspect))
    }

    /// SWIM may probe it: not legacy and not known dead or gone.
    fn probeable(&self) -> bool {
        !self.speaks_legacy()
            && !self
                .rec
                .is_some_and(|r| matches!(r.status, Status::Dead | Status::Left))
    }

    /// Whether this speaker accuses it (its own probe of it failed).
    fn accused(&self) -> bool {
        self.susp.as_ref().is_some_and(|s| s.mine.is_some())
    }

    /// Whether its whole record at the newest known version is held (or it is known not to
    /// announce anything: dead, left).
    fn known(&self) -> bool {
        if self.speaks_legacy() {
            return true;
        }
        match self.rec {
            None => false,
            Some(r) => {
                matches!(r.status, Status::Dead | Status::Left)
                    || (self.data.generation == r.generation && self.data.version >= r.version)
            }
        }
    }
}

/// The membership state machine of one speaker. See the module docs.
#[derive(Debug, Clone)]
pub struct Membership {
    name: String,
    /// Restart identity: the shell's start time in ms, raised above any older generation of
    /// this name heard of.
    generation: u64,
    incarnation: u32,
    config: Config,
    started: Instant,
    left: bool,
    peers_known: bool,
    /// Sorted by name.
    peers: Vec<Peer>,
    /// Peer indexes in ring order (by key).
    ring: Vec<usize>,
    /// `(key, index)` of every peer, sorted: the lookup table of [`Membership::find`].
    by_key: Vec<(u64, usize)>,
    my_key: u64,
    /// Claims as given to the last tick (legacy heartbeats and [`Membership::claims`]).
    my_claims: Vec<IpAddr>,
    claims_dropped: usize,
    /// As given to [`Membership::set_unable`].
    my_unable: Vec<IpAddr>,
    unable_dropped: usize,
    /// The SWIM record advertised.
    own: Own,
    /// Claims or unable IPs changed since the record was last brought up to date.
    state_dirty: bool,
    /// Every peer's record was known once (see [`Membership::settled`]).
    settled_latch: bool,
    my_hash: u32,
    buckets: [u32; codec::SYNC_BUCKETS],
    /// Peer indexes per anti-entropy bucket (answers touch only the buckets they send).
    bucket_members: Vec<Vec<usize>>,
    legacy_seq: u64,
    next_legacy: Instant,
    /// Peers that speak version 1/2 (cached: asked at every `next_timeout`).
    legacy_peers: usize,
    swim: swim::Swim,
    stats: Stats,
}

impl Membership {
    /// A speaker named `self_name` started at `now`. `generation` must differ between restarts
    /// and should grow: the shell passes its start time in ms since the Unix epoch (this crate
    /// reads no clocks). Randomness is seeded from the name and generation; see
    /// [`Membership::with_seed`]. The first heartbeat or probe is due at once.
    pub fn new(
        self_name: impl Into<String>,
        generation: u64,
        config: Config,
        now: Instant,
    ) -> Self {
        let name = self_name.into();
        let seed = rng::mix(rng::name_hash(&name) ^ generation);
        Self::with_seed(name, generation, config, now, seed)
    }

    /// As [`Membership::new`] with an explicit random seed (a simulation passes its own).
    pub fn with_seed(
        self_name: impl Into<String>,
        generation: u64,
        config: Config,
        now: Instant,
        seed: u64,
    ) -> Self {
        let name = self_name.into();
        let mut config = config;
        config.max_datagram = config.max_datagram.max(codec::MIN_DATAGRAM);
        let mut m = Self {
            my_key: rng::name_hash(&name),
            name,
            generation,
            incarnation: 0,
            config,
            started: now,
            left: false,
            peers_known: false,
            peers: Vec::new(),
            ring: Vec::new(),
            by_key: Vec::new(),
            my_claims: Vec::new(),
            claims_dropped: 0,
            my_unable: Vec::new(),
            unable_dropped: 0,
            own: Own::default(),
            state_dirty: false,
            settled_latch: false,
            my_hash: 0,
            buckets: [0; codec::SYNC_BUCKETS],
            bucket_members: vec![Vec::new(); codec::SYNC_BUCKETS],
            legacy_seq: 0,
            next_legacy: now,
            legacy_peers: 0,
            swim: swim::Swim::new(Rng::new(seed), now),
            stats: Stats::default(),
        };
        m.refresh_own_hash();
        m
    }

    /// This speaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This speaker's generation (the `generation` given to [`Membership::new`], unless a
    /// newer one of this name was heard of and this speaker moved above it).
    pub fn incarnation(&self) -> u64 {
        self.generation
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters of ignored messages.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// What SWIM did so far.
    pub fn swim_stats(&self) -> SwimStats {
        self.swim.stats
    }

    /// The local-health score (0 = healthy; timeouts scale by `1 + score`).
    pub fn health(&self) -> u32 {
        self.swim.health
    }

    /// Peers currently suspected (still alive; see the module docs).
    pub fn suspects(&self) -> BTreeSet<String> {
        self.peers
            .iter()
            .filter(|p| !p.speaks_legacy() && p.rec.is_some_and(|r| r.status == Status::Suspect))
            .map(|p| p.name.clone())
            .collect()
    }

    /// Whether a shell awake at `now` anyway (a datagram came in) should call
    /// [`Membership::tick`]: a deadline is due within [`Config::probe_slack`], so the probe it
    /// may be rides on this wake-up instead of one of its own.
    pub fn tick_due(&self, now: Instant) -> bool {
        now + self.config.probe_slack >= self.next_timeout()
    }

    /// The latest time the shell should call [`Membership::tick`].
    pub fn next_timeout(&self) -> Instant {
        match self.config.protocol {
            Protocol::Legacy => self.next_legacy,
            Protocol::Swim => {
                let t = self.swim_next_timeout();
                if self.sends_legacy() {
                    t.min(self.next_legacy)
                } else {
                    t
                }
            }
        }
    }

    fn sends_legacy(&self) -> bool {
        match self.config.protocol {
            Protocol::Legacy => true,
            Protocol::Swim => self.legacy_peers > 0,
        }
    }

    /// Recounts the live peers that speak version 1/2 (after anything that may change it).
    /// Only those get heartbeats: one that died and comes back heartbeats us first.
    fn recount_legacy(&mut self) {
        self.legacy_peers = self
            .peers
            .iter()
            .filter(|p| p.speaks_legacy() && p.legacy.as_ref().is_some_and(|l| l.alive))
            .count();
    }

    /// Replaces the peer list (speakers' names and addresses, from Node objects). This
    /// speaker's own name is skipped; for duplicate names the last entry wins. Peers that
    /// remain keep their state; removed peers that were alive are reported down.
    pub fn set_peers(&mut self, peers: Vec<(String, SocketAddr)>) -> Vec<Event> {
        self.peers_known = true;
        let mut wanted: BTreeMap<String, SocketAddr> = BTreeMap::new();
        for (name, addr) in peers {
            if name != self.name {
                wanted.insert(name, addr);
            }
        }
        let mut old: BTreeMap<String, Peer> = std::mem::take(&mut self.peers)
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let mut next = Vec::with_capacity(wanted.len());
        for (name, addr) in wanted {
            let mut p = old
                .remove(&name)
                .unwrap_or_else(|| Peer::new(name.clone(), addr));
            p.addr = addr;
            next.push(p);
        }
        let mut events = Vec::new();
        for (name, p) in old {
            self.buckets[sync::bucket(p.key)] ^= p.hash;
            self.swim.forget(&name);
            if p.reported {
                events.push(Event::Down(name, DownReason::Removed));
            }
        }
        self.peers = next;
        let mut ring: Vec<usize> = (0..self.peers.len()).collect();
        ring.sort_by_key(|&i| (self.peers[i].key, i));
        self.by_key = ring.iter().map(|&i| (self.peers[i].key, i)).collect();
        self.ring = ring;
        let mut members = vec![Vec::new(); codec::SYNC_BUCKETS];
        for (i, p) in self.peers.iter().enumerate() {
            members[sync::bucket(p.key)].push(i);
        }
        self.bucket_members = members;
        self.swim.reset_order();
        self.recount_legacy();
        events
    }

    /// The index of peer `name`: a binary search over name hashes (16-byte entries, so a
    /// lookup among 1,000 peers stays in cache), then one name comparison.
    fn find(&self, name: &str) -> Option<usize> {
        let key = rng::name_hash(name);
        let start = self.by_key.partition_point(|&(k, _)| k < key);
        self.by_key
            .get(start..)?
            .iter()
            .take_while(|&&(k, _)| k == key)
            .map(|&(_, i)| i)
            .find(|&i| self.peers.get(i).is_some_and(|p| p.name == name))
    }

    /// Feeds one received datagram of any version. `from_addr` is its source, used only for
    /// [`Stats::unexpected_addr`]: identity comes from the sender name inside. Returns what to
    /// send in answer (Acks, relayed probes, anti-entropy) and events; an error says why the
    /// bytes were not a message (for a metric), and changes nothing.
    pub fn on_datagram(
        &mut self,
        from_addr: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Vec<Action>, CodecError> {
        match codec::decode(bytes)? {
            Datagram::Legacy(m) => Ok(self.on_legacy(from_addr, m, now)),
            Datagram::Packet(p) => Ok(self.on_packet(from_addr, p, now)),
        }
    }

    /// Feeds one received version 1/2 message (see [`Membership::on_datagram`], which calls
    /// this). In SWIM, the sender is from now on treated as a legacy peer (see the module docs).
    pub fn on_message(
        &mut self,
        from_addr: SocketAddr,
        message: Message,
        now: Instant,
    ) -> Vec<Event> {
        self.on_legacy(from_addr, message, now)
            .into_iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e),
                Action::Send { .. } => None,
            })
            .collect()
    }

    fn on_legacy(&mut self, from_addr: SocketAddr, message: Message, now: Instant) -> Vec<Action> {
        let name = message.from().to_string();
        if name == self.name {
            self.stats.from_self += 1;
            return Vec::new();
        }
        let Some(idx) = self.find(&name) else {
            self.stats.unknown_sender += 1;
            return Vec::new();
        };
        if self.peers[idx].addr.ip() != from_addr.ip() {
            self.stats.unexpected_addr += 1;
        }
        let swim = self.config.protocol == Protocol::Swim;
        if swim
            && let Message::Heartbeat(hb) = &message
            && hb.uptime_ms & codec::FROM_V3 != 0
        {
            // A SWIM speaker that takes us for a legacy one (its peer list still holds our
            // previous instance): it is not legacy, and a version 3 packet sets it right.
            self.peers[idx].last_direct = Some(now);
            let mut out = Vec::new();
            if self.peers[idx]
                .last_correction
                .is_none_or(|t| now >= t + self.config.interval)
            {
                self.peers[idx].last_correction = Some(now);
                let me = self.my_alive();
                self.notice(idx, vec![me], &mut out);
            }
            return out;
        }
        if swim
            && let Message::Leave { incarnation, .. } = &message
            && self.peers[idx]
                .rec
                .is_some_and(|r| r.generation == *incarnation)
        {
            // A SWIM speaker leaving, that took us for a legacy one.
            let item = codec::Item::Left {
                name: name.clone(),
                generation: *incarnation,
                incarnation: self.peers[idx].rec.map_or(0, |r| r.incarnation),
            };
            let mut out = Vec::new();
            self.apply_item(item, Some(idx), now, &mut out);
            return out;
        }
        let mut events = Vec::new();
        let was_legacy = self.peers[idx].speaks_legacy();
        // In SWIM, a version 3 instance at least as new makes this message a leftover.
        let newer_v3 = |p: &Peer, inc: u64| {
            self.config.protocol == Protocol::Swim && p.rec.is_some_and(|r| r.generation >= inc)
        };
        match message {
            Message::Heartbeat(hb) => {
                if newer_v3(&self.peers[idx], hb.incarnation) {
                    self.stats.stale += 1;
                    return Vec::new();
                }
                let p = &mut self.peers[idx];
                match legacy::on_heartbeat(&mut p.legacy, hb, now) {
                    legacy::Heard::Stale => self.stats.stale += 1,
                    legacy::Heard::Fresh => {
                        p.last_direct = Some(now);
                        if !was_legacy && p.reported {
                            // A version 3 instance was replaced by a legacy one.
                            events.push(Event::Down(name.clone(), DownReason::Restarted));
                            p.reported = false;
                        }
                    }
                    legacy::Heard::Restarted => {
                        p.last_direct = Some(now);
                        if p.reported {
                            events.push(Event::Down(name.clone(), DownReason::Restarted));
                            p.reported = false;
                        }
                    }
                }
            }
            Message::Leave { incarnation, .. } => {
                if newer_v3(&self.peers[idx], incarnation) {
                    self.stats.stale += 1;
                    return Vec::new();
                }
                let p = &mut self.peers[idx];
                if !legacy::on_leave(&mut p.legacy, incarnation, now) {
                    self.stats.stale += 1;
                } else {
                    self.swim.note_leaver(&name, now);
                }
            }
        }
        self.report(idx, DownReason::Left, &mut events);
        self.recount_legacy();
        events.into_iter().map(Action::Event).collect()
    }

    /// Sets the IPs this speaker is eligible for but cannot announce (no usable interface).
    /// They go out from the next [`Membership::tick`] on, after the claims, in what the claims
    /// leave of the limit. A setter rather than a `tick` argument because it changes only with
    /// interfaces and plans, not with every decision.
    pub fn set_unable(&mut self, unable: Vec<IpAddr>) {
        if unable != self.my_unable {
            self.my_unable = unable;
            self.state_dirty = true;
        }
    }

    /// Advances time: updates liveness (reporting changes), runs due probes, suspicion timers,
    /// anti-entropy and heartbeats to legacy peers, and advertises `my_claims` (the IPs this
    /// speaker announces now) and the IPs given to [`Membership::set_unable`]. Does nothing
    /// after [`Membership::leave`].
    pub fn tick(&mut self, now: Instant, my_claims: &[IpAddr]) -> Vec<Action> {
        if self.left {
            return Vec::new();
        }
        // The earliest deadline pending before this tick: how late the shell is.
        let due = self.next_timeout();
        let mut actions = Vec::new();
        let limit = match self.config.protocol {
            Protocol::Legacy => MAX_CLAIMS,
            Protocol::Swim => MAX_STATE_IPS,
        };
        let kept = my_claims.len().min(limit);
        let given = my_claims.get(..kept).unwrap_or(my_claims);
        if given != self.my_claims.as_slice() {
            self.my_claims = given.to_vec();
            self.state_dirty = true;
        }
        let dropped = my_claims.len() - kept;
        if dropped != self.claims_dropped {
            self.claims_dropped = dropped;
            if dropped > 0 {
                actions.push(Action::Event(Event::ClaimsTruncated { kept, dropped }));
            }
        }
        let unable_kept = self.my_unable.len().min(limit - kept);
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
        let mut events = Vec::new();
        self.legacy_liveness(now, &mut events);
        actions.extend(events.into_iter().map(Action::Event));
        if self.config.protocol == Protocol::Swim {
            self.advertise(now, &mut actions);
            self.swim_tick(now, due, &mut actions);
        }
        if self.sends_legacy() && now >= self.next_legacy {
            self.legacy_heartbeats(now, &mut actions);
            // Keep the cadence without bursts: if the shell was late by more than one
            // interval, restart the schedule from now instead of catching up.
            let next = self
                .next_legacy
                .checked_add(self.config.interval)
                .unwrap_or(now);
            self.next_legacy = if next > now {
                next
            } else {
                now.checked_add(self.config.interval).unwrap_or(now)
            };
        }
        if self.config.protocol == Protocol::Swim {
            self.latch_settled();
        }
        actions
    }

    /// Graceful shutdown: a Leave for every peer (version 2 to legacy peers, a version 3
    /// notice to the others). Afterwards this speaker is not alive, not settled, [`Membership::tick`]
    /// sends nothing, and received packets only update what it knows of peers (so it can see
    /// them take its IPs over).
    pub fn leave(&mut self) -> Vec<Action> {
        self.left = true;
        let legacy_bytes = Message::Leave {
            from: self.name.clone(),
            incarnation: self.generation,
        }
        .encode();
        let left = Item::Left {
            name: self.name.clone(),
            generation: self.generation,
            incarnation: self.incarnation,
        };
        let mut out = Vec::new();
        for idx in 0..self.peers.len() {
            let p = &self.peers[idx];
            if self.config.protocol == Protocol::Legacy || p.speaks_legacy() {
                out.push(Action::Send {
                    to: p.addr,
                    bytes: legacy_bytes.clone(),
                });
            } else if p.probeable() {
                self.notice(idx, vec![left.clone()], &mut out);
            }
        }
        out
    }

    /// Alive speakers, this one included (until it leaves), as of the last call.
    pub fn alive(&self) -> BTreeSet<String> {
        let mut alive: BTreeSet<String> = self
            .peers
            .iter()
            .filter(|p| p.reported)
            .map(|p| p.name.clone())
            .collect();
        if !self.left {
            alive.insert(self.name.clone());
        }
        alive
    }

    /// The IPs `node` announces: what it last advertised if it is alive, this speaker's claims
    /// from the last [`Membership::tick`] if `node` is this speaker, otherwise none (claims of
    /// dead speakers do not count).
    pub fn claims(&self, node: &str) -> &[IpAddr] {
        if node == self.name {
            return if self.left { &[] } else { &self.my_claims };
        }
        match self.find(node).map(|i| &self.peers[i]) {
            Some(p) if p.reported => {
                if p.speaks_legacy() {
                    p.legacy.as_ref().map_or(&[], |l| &l.claims)
                } else if p.rec.is_some_and(|r| r.generation == p.data.generation) {
                    &p.data.claims
                } else {
                    &[]
                }
            }
            _ => &[],
        }
    }

    /// The IPs `node` reported it cannot announce: its last advertised list if it is alive,
    /// what was given to [`Membership::set_unable`] if `node` is this speaker, otherwise none.
    pub fn unable(&self, node: &str) -> &[IpAddr] {
        if node == self.name {
            return if self.left { &[] } else { &self.my_unable };
        }
        match self.find(node).map(|i| &self.peers[i]) {
            Some(p) if p.reported => {
                if p.speaks_legacy() {
                    p.legacy.as_ref().map_or(&[], |l| &l.unable)
                } else if p.rec.is_some_and(|r| r.generation == p.data.generation) {
                    &p.data.unable
                } else {
                    &[]
                }
            }
            _ => &[],
        }
    }

    /// Whether this speaker may announce: true once every known peer's record is known (it was
    /// heard from, or its claims were learned, or it is known dead or gone), or once
    /// `join_grace` has passed since start (peers that stay unknown that long are not running).
    /// False before the peer list was first set (unless the grace has passed) and after
    /// [`Membership::leave`].
    pub fn settled(&self, now: Instant) -> bool {
        if self.left {
            return false;
        }
        if self.settled_latch
            || now.saturating_duration_since(self.started) >= self.config.join_grace
        {
            return true;
        }
        self.all_known()
    }

    /// Whether every peer's record is known: the condition to settle before `join_grace`.
    pub fn knows_every_peer(&self) -> bool {
        self.all_known()
    }

    fn all_known(&self) -> bool {
        self.peers_known
            && self.peers.iter().all(|p| match self.config.protocol {
                Protocol::Legacy => p.legacy.is_some(),
                Protocol::Swim => p.known(),
            })
    }

    /// Once settled, a speaker stays settled: a peer's record being a delta behind for a few
    /// milliseconds (normal while claims change) must not make it stop announcing.
    fn latch_settled(&mut self) {
        if !self.settled_latch && self.all_known() {
            self.settled_latch = true;
        }
    }

    /// Emits Up/Down for peer `idx` if its aliveness differs from what was last reported;
    /// `reason` is used for a Down.
    fn report(&mut self, idx: usize, reason: DownReason, events: &mut Vec<Event>) {
        let p = &mut self.peers[idx];
        let alive = p.is_alive();
        if alive != p.reported {
            p.reported = alive;
            events.push(if alive {
                Event::Up(p.name.clone())
            } else {
                Event::Down(p.name.clone(), reason)
            });
        }
    }

    fn legacy_liveness(&mut self, now: Instant, events: &mut Vec<Event>) {
        if !self.sends_legacy() {
            // No legacy peer: nothing to judge (and no O(n) walk per tick).
            return;
        }
        let legacy_mode = self.config.protocol == Protocol::Legacy;
        let dead_after = self.config.dead_after;
        let states = self.peers.iter_mut().filter_map(|p| {
            let include = legacy_mode || p.speaks_legacy();
            let name = p.name.as_str();
            p.legacy
                .as_deref_mut()
                .filter(|_| include)
                .map(|l| (name, l))
        });
        legacy::update_liveness(states, now, dead_after);
        for idx in 0..self.peers.len() {
            if legacy_mode || self.peers[idx].speaks_legacy() {
                self.report(idx, DownReason::Timeout, events);
            }
        }
        self.recount_legacy();
    }

    fn legacy_heartbeats(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.legacy_seq += 1;
        // Report only direct hearing, freshest first, and only what can still help a receiver
        // (older than dead_after is no evidence at all); the cut keeps the freshest.
        let mut heard: Vec<(String, u32)> = self
            .peers
            .iter()
            .filter_map(|p| {
                let last = match &p.legacy {
                    Some(l) if p.speaks_legacy() => (!l.left).then_some(l.last_heard),
                    _ => p.last_direct,
                }?;
                let age = now.saturating_duration_since(last);
                (age < self.config.dead_after).then(|| {
                    (
                        p.name.clone(),
                        u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
                    )
                })
            })
            .collect();
        heard.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        heard.truncate(MAX_HEARD);
        let claims: Vec<IpAddr> = self.my_claims.iter().take(MAX_CLAIMS).copied().collect();
        let uptime = u64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX)
            & !codec::FROM_V3;
        let hb = Heartbeat {
            from: self.name.clone(),
            incarnation: self.generation,
            seq: self.legacy_seq,
            // A SWIM speaker says so where older speakers do not look (see `codec::FROM_V3`).
            uptime_ms: if self.config.protocol == Protocol::Swim {
                uptime | codec::FROM_V3
            } else {
                uptime
            },
            heard,
            // Cut here, not in the setter: the room depends on the claims of this tick.
            unable: self
                .my_unable
                .iter()
                .take(MAX_CLAIMS - claims.len())
                .copied()
                .collect(),
            claims,
        };
        let bytes = Message::Heartbeat(hb).encode();
        let all = self.config.protocol == Protocol::Legacy;
        for p in &self.peers {
            if all || (p.speaks_legacy() && p.legacy.as_ref().is_some_and(|l| l.alive)) {
                self.swim.stats.legacy_heartbeats += 1;
                out.push(Action::Send {
                    to: p.addr,
                    bytes: bytes.clone(),
                });
            }
        }
    }
}
