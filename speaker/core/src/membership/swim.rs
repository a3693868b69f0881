//! SWIM failure detection with Lifeguard's refinements: probes, indirect probes, suspicion,
//! refutation, local health and the packet plumbing they share.
//!
//! Owns the per-speaker probe schedule, the open probe and helper requests, the gossip queue and
//! the local-health score. It must not decide what the claims are (that is `state`) nor read
//! clocks: every deadline is computed from the `now` the shell passes. See the module docs of
//! [`super`] for the protocol and the timing arithmetic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::codec::{Body, Item, MAX_ITEMS, Packet, Status};
use super::gossip::{self, Queue};
use super::rng::Rng;
use super::{Action, DownReason, Event, Membership, Protocol, Record, Suspicion, SwimStats};

/// Helper requests served at once; more are ignored (the requester counts a missing Nack,
/// which is right: this speaker is overloaded).
const MAX_HELPING: usize = 64;
/// Accusers told directly of a refutation, per incarnation.
const MAX_REFUTED_TO: usize = 32;
/// How long a member that left keeps getting this speaker's record changes directly, so its
/// hand-over can see its IPs taken.
const LEAVER_WATCH: Duration = Duration::from_secs(2);
/// Whole-record pulls per tick.
const PULLS_PER_TICK: usize = 2;

#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) target: String,
    pub(crate) seq: u32,
    pub(crate) ping_deadline: Instant,
    pub(crate) probe_deadline: Instant,
    pub(crate) indirect_sent: bool,
    pub(crate) helpers: usize,
    /// Helpers that sent a Nack.
    pub(crate) nackers: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Help {
    my_seq: u32,
    requester: String,
    req_seq: u32,
    deadline: Instant,
}

/// SWIM state of one speaker.
#[derive(Debug, Clone)]
pub(crate) struct Swim {
    pub(crate) rng: Rng,
    seq: u32,
    /// Lifeguard local-health score.
    pub(crate) health: u32,
    pub(crate) next_probe: Instant,
    pub(crate) probe: Option<Probe>,
    probes_started: u64,
    /// Shuffled round-robin order (peer indexes), rebuilt when used up or the peers change.
    rr: Vec<usize>,
    rr_pos: usize,
    helping: Vec<Help>,
    pub(crate) next_sync: Instant,
    pub(crate) queue: Queue,
    /// Accusers already told of the current incarnation.
    refuted_to: Vec<String>,
    /// Members that left recently, and until when they get our deltas directly.
    pub(crate) leavers: Vec<(String, Instant)>,
    /// Members this speaker accuses (runs a suspicion timer for).
    pub(crate) accusing: Vec<String>,
    /// Members whose record we hold at an older version than exists, since when.
    pub(crate) behind: BTreeMap<String, Instant>,
    announced: bool,
    /// When this speaker last answered a joiner with a bulk digest.
    pub(crate) last_bulk: Option<Instant>,
    pub(crate) stats: SwimStats,
}

impl Swim {
    pub(super) fn new(rng: Rng, now: Instant) -> Self {
        Self {
            rng,
            seq: 0,
            health: 0,
            next_probe: now,
            probe: None,
            probes_started: 0,
            rr: Vec::new(),
            rr_pos: 0,
            helping: Vec::new(),
            next_sync: now,
            queue: Queue::default(),
            refuted_to: Vec::new(),
            leavers: Vec::new(),
            accusing: Vec::new(),
            behind: BTreeMap::new(),
            announced: false,
            last_bulk: None,
            stats: SwimStats::default(),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Peer indexes changed.
    pub(super) fn reset_order(&mut self) {
        self.rr.clear();
        self.rr_pos = 0;
    }

    /// A peer left the peer list.
    pub(super) fn forget(&mut self, name: &str) {
        self.queue.forget(name);
        self.accusing.retain(|n| n != name);
        self.behind.remove(name);
        self.leavers.retain(|(n, _)| n != name);
        self.helping.retain(|h| h.requester != name);
        if self.probe.as_ref().is_some_and(|p| p.target == name) {
            self.probe = None;
        }
    }

    pub(super) fn note_leaver(&mut self, name: &str, now: Instant) {
        self.leavers.retain(|(n, _)| n != name);
        self.leavers.push((name.to_string(), now + LEAVER_WATCH));
    }
}

/// How a record merge went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// Older than what is known.
    Stale,
    /// Nothing new.
    Same,
    /// The record changed.
    Changed,
    /// A new accuser of the known suspicion.
    Confirmed,
}

/// Whether `a` is a newer record than `b` (generation, then Left, then incarnation, then
/// status).
pub(crate) fn newer(a: &Record, b: &Record) -> bool {
    if a.generation != b.generation {
        return a.generation > b.generation;
    }
    if b.status == Status::Left {
        return false;
    }
    if a.status == Status::Left {
        return true;
    }
    (a.incarnation, a.status) > (b.incarnation, b.status)
}

impl Membership {
    fn mult(&self) -> u32 {
        1 + self.swim.health
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.saturating_mul(self.mult())
    }

    fn raise_health(&mut self, by: u32) {
        self.swim.health = self
            .swim
            .health
            .saturating_add(by)
            .min(self.config.max_health);
    }

    fn limit(&self) -> u32 {
        gossip::retransmit_limit(self.config.retransmit_mult, self.peers.len() + 1)
    }

    pub(super) fn header(&self, body: Body) -> Packet {
        Packet {
            from: self.name.clone(),
            generation: self.generation,
            incarnation: self.incarnation,
            state_version: self.own.version,
            body,
            items: Vec::new(),
        }
    }

    /// What this speaker believes of peer `idx` that the peer must hear first: that it is
    /// suspected or dead.
    fn correction(&self, idx: usize) -> Option<Item> {
        let p = &self.peers[idx];
        let r = p.rec?;
        match r.status {
            Status::Suspect => Some(Item::Suspect {
                name: p.name.clone(),
                generation: r.generation,
                incarnation: r.incarnation,
                accuser: p
                    .susp
                    .as_ref()
                    .and_then(|s| s.accusers.first().cloned())
                    .unwrap_or_else(|| self.name.clone()),
            }),
            Status::Dead => Some(Item::Dead {
                name: p.name.clone(),
                generation: r.generation,
                incarnation: r.incarnation,
                declarer: self.name.clone(),
            }),
            Status::Alive | Status::Left => None,
        }
    }

    pub(super) fn live_item(&self, idx: usize) -> Option<Item> {
        let p = &self.peers[idx];
        let r = p.rec?;
        Some(match r.status {
            Status::Alive => Item::Alive {
                name: p.name.clone(),
                generation: r.generation,
                incarnation: r.incarnation,
                state_version: r.version,
            },
            Status::Suspect => self.correction(idx)?,
            Status::Dead => Item::Dead {
                name: p.name.clone(),
                generation: r.generation,
                incarnation: r.incarnation,
                declarer: self.name.clone(),
            },
            Status::Left => Item::Left {
                name: p.name.clone(),
                generation: r.generation,
                incarnation: r.incarnation,
            },
        })
    }

    pub(super) fn my_alive(&self) -> Item {
        Item::Alive {
            name: self.name.clone(),
            generation: self.generation,
            incarnation: self.incarnation,
            state_version: self.own.version,
        }
    }

    /// Sends `body` to peer `idx`, filling the datagram with corrections about the peer and
    /// then gossip.
    pub(super) fn send(&mut self, idx: usize, body: Body, out: &mut Vec<Action>) {
        let mut packet = self.header(body);
        let mut room = self.config.max_datagram.saturating_sub(packet.head_len());
        if let Some(c) = self.correction(idx) {
            let len = c.encoded_len();
            if len <= room {
                room -= len;
                packet.items.push(c);
            }
        }
        let limit = self.limit();
        let more = self
            .swim
            .queue
            .take(room, MAX_ITEMS - packet.items.len(), limit);
        packet.items.extend(more);
        out.push(Action::Send {
            to: self.peers[idx].addr,
            bytes: packet.encode(),
        });
    }

    /// Sends exactly `items` to peer `idx` (a direct notification), in as many datagrams as
    /// the budget needs.
    pub(super) fn notice(&mut self, idx: usize, items: Vec<Item>, out: &mut Vec<Action>) {
        let head = self.header(Body::Notice);
        let room = self.config.max_datagram.saturating_sub(head.head_len());
        let mut packet = head.clone();
        let mut used = 0;
        for item in items {
            let len = item.encoded_len();
            if !packet.items.is_empty() && (used + len > room || packet.items.len() >= MAX_ITEMS) {
                out.push(Action::Send {
                    to: self.peers[idx].addr,
                    bytes: packet.encode(),
                });
                packet = head.clone();
                used = 0;
            }
            used += len;
            packet.items.push(item);
        }
        if !packet.items.is_empty() {
            out.push(Action::Send {
                to: self.peers[idx].addr,
                bytes: packet.encode(),
            });
        }
    }

    fn push_events(&mut self, events: Vec<Event>, out: &mut Vec<Action>) {
        out.extend(events.into_iter().map(Action::Event));
    }

    fn report_to(&mut self, idx: usize, reason: DownReason, out: &mut Vec<Action>) {
        let mut events = Vec::new();
        self.report(idx, reason, &mut events);
        self.push_events(events, out);
    }

    /// Merges what someone says of peer `idx`. `accuser` names who suspects it (Suspect).
    pub(super) fn merge(
        &mut self,
        idx: usize,
        incoming: Record,
        accuser: Option<&str>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Merge {
        let p = &self.peers[idx];
        if let Some(l) = p.legacy.as_ref().filter(|_| p.speaks_legacy())
            && incoming.generation <= l.incarnation
        {
            return Merge::Stale;
        }
        let cur = p.rec;
        let accept = match cur {
            None => true,
            Some(c) if incoming.generation != c.generation => incoming.generation > c.generation,
            Some(c) => {
                if c.status == Status::Left {
                    // Final for its generation: anything later of it is a leftover.
                    return if incoming.status == Status::Left {
                        Merge::Same
                    } else {
                        Merge::Stale
                    };
                } else if incoming.status == Status::Left {
                    true
                } else if incoming.incarnation != c.incarnation {
                    if incoming.incarnation < c.incarnation {
                        return Merge::Stale;
                    }
                    true
                } else if incoming.status > c.status {
                    true
                } else if incoming.status == c.status {
                    if incoming.status == Status::Suspect
                        && let Some(a) = accuser
                    {
                        return self.confirm(idx, a);
                    }
                    if incoming.version > c.version {
                        let mut r = c;
                        r.version = incoming.version;
                        self.set_rec(idx, Some(r));
                        self.update_behind(idx, now);
                        return Merge::Changed;
                    }
                    return Merge::Same;
                } else {
                    // A lower status at the same incarnation: the member has not heard of the
                    // suspicion yet; nothing to learn.
                    return Merge::Same;
                }
            }
        };
        if !accept {
            return if cur.is_some_and(|c| incoming.generation < c.generation) {
                Merge::Stale
            } else {
                Merge::Same
            };
        }
        let was_legacy = self.peers[idx].speaks_legacy();
        let new_gen = cur.is_none_or(|c| c.generation != incoming.generation);
        let mut rec = incoming;
        if let Some(c) = cur.filter(|_| !new_gen) {
            rec.version = rec.version.max(c.version);
        }
        let name = self.peers[idx].name.clone();
        if new_gen {
            let p = &mut self.peers[idx];
            if p.reported && (cur.is_some() || was_legacy) {
                p.reported = false;
                out.push(Action::Event(Event::Down(
                    name.clone(),
                    DownReason::Restarted,
                )));
            }
            // Deltas may have come ahead of the record (see `apply_delta`): keep them.
            if p.data.generation != incoming.generation {
                p.data.reset(incoming.generation);
            }
            self.swim.behind.remove(&name);
        }
        let p = &mut self.peers[idx];
        if rec.status == Status::Suspect {
            let same = p.susp.as_ref().is_some_and(|s| {
                s.generation == rec.generation && s.incarnation == rec.incarnation
            });
            if !same {
                p.susp = Some(Box::new(Suspicion {
                    generation: rec.generation,
                    incarnation: rec.incarnation,
                    accusers: Vec::new(),
                    mine: None,
                    witnesses: 0,
                    last_reping: None,
                }));
                self.swim.accusing.retain(|n| *n != name);
            }
            if let (Some(a), Some(s)) = (accuser, p.susp.as_mut())
                && !s.accusers.iter().any(|x| x == a)
                && s.accusers.len() < super::MAX_ACCUSERS
            {
                s.accusers.push(a.to_string());
            }
        } else {
            p.susp = None;
            self.swim.accusing.retain(|n| *n != name);
        }
        self.set_rec(idx, Some(rec));
        if was_legacy {
            self.recount_legacy();
        }
        let reason = match rec.status {
            Status::Left => DownReason::Left,
            _ => DownReason::Timeout,
        };
        if rec.status == Status::Left {
            self.swim.note_leaver(&name, now);
        }
        self.report_to(idx, reason, out);
        self.update_behind(idx, now);
        Merge::Changed
    }

    fn confirm(&mut self, idx: usize, accuser: &str) -> Merge {
        let Some(s) = self.peers[idx].susp.as_mut() else {
            return Merge::Same;
        };
        if s.accusers.iter().any(|x| x == accuser) || s.accusers.len() >= super::MAX_ACCUSERS {
            return Merge::Same;
        }
        s.accusers.push(accuser.to_string());
        Merge::Confirmed
    }

    /// Keeps [`Swim::behind`] current for peer `idx`.
    pub(super) fn update_behind(&mut self, idx: usize, now: Instant) {
        let p = &self.peers[idx];
        let behind = p.is_alive()
            && !p.speaks_legacy()
            && p.rec
                .is_some_and(|r| r.generation == p.data.generation && p.data.version < r.version);
        if behind {
            self.swim.behind.entry(p.name.clone()).or_insert(now);
        } else {
            self.swim.behind.remove(&p.name);
        }
    }

    /// Handles one version 3 packet.
    pub(super) fn on_packet(
        &mut self,
        from_addr: std::net::SocketAddr,
        packet: Packet,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if packet.from == self.name {
            self.stats.from_self += 1;
            return out;
        }
        let Some(idx) = self.find(&packet.from) else {
            self.stats.unknown_sender += 1;
            return out;
        };
        if self.config.protocol == Protocol::Legacy {
            self.stats.wrong_protocol += 1;
            return out;
        }
        if self.peers[idx].addr.ip() != from_addr.ip() {
            self.stats.unexpected_addr += 1;
        }
        let header = Record {
            generation: packet.generation,
            incarnation: packet.incarnation,
            status: Status::Alive,
            version: packet.state_version,
        };
        if self.merge(idx, header, None, now, &mut out) == Merge::Stale {
            // A late packet of an older instance, or a restart whose clock went backwards:
            // tell it what we know of its name (it moves above it), and ignore the rest.
            self.stats.stale += 1;
            self.correct(idx, true, now, &mut out);
            return out;
        }
        self.peers[idx].last_direct = Some(now);
        for item in packet.items {
            self.apply_item(item, Some(idx), now, &mut out);
        }
        if self.left {
            if matches!(packet.body, Body::Ping { .. }) {
                let left = Item::Left {
                    name: self.name.clone(),
                    generation: self.generation,
                    incarnation: self.incarnation,
                };
                self.notice(idx, vec![left], &mut out);
            }
            return out;
        }
        let answered = match packet.body {
            Body::Ping { seq } => {
                self.send(idx, Body::Ack { seq }, &mut out);
                true
            }
            Body::Ack { seq } => {
                self.on_ack(seq, &mut out);
                false
            }
            Body::PingReq { seq, target } => {
                self.on_ping_req(idx, seq, &target, now, &mut out);
                true
            }
            Body::Nack { seq } => {
                let from = &self.peers[idx].name;
                if let Some(p) = self.swim.probe.as_mut().filter(|p| p.seq == seq)
                    && p.nackers.len() < p.helpers
                    && !p.nackers.contains(from)
                {
                    p.nackers.push(from.clone());
                }
                false
            }
            Body::Notice => false,
            Body::SyncReq { hashes } => {
                self.on_sync_req(idx, &hashes, now, &mut out);
                false
            }
            Body::SyncDigest { entries } => {
                self.on_sync_digest(idx, entries, now, &mut out);
                false
            }
            Body::SyncPull { wants } => {
                self.on_sync_pull(idx, &wants, &mut out);
                true
            }
        };
        if !answered {
            self.correct(idx, false, now, &mut out);
        }
        out
    }

    /// Tells peer `idx` (at most once a period) what it must know of itself: that it is
    /// suspected or dead (it spoke with the incarnation we suspect), or, when its header was
    /// `stale`, the newer record of its name we hold (a restart whose clock went backwards then
    /// moves above it).
    fn correct(&mut self, idx: usize, stale: bool, now: Instant, out: &mut Vec<Action>) {
        let p = &self.peers[idx];
        let Some(r) = p.rec else {
            return;
        };
        if p.last_correction
            .is_some_and(|t| now < t + self.config.interval)
        {
            return;
        }
        let item = match r.status {
            Status::Suspect | Status::Dead => self.correction(idx),
            Status::Alive | Status::Left if stale => self.live_item(idx),
            Status::Alive | Status::Left => None,
        };
        if let Some(item) = item {
            self.peers[idx].last_correction = Some(now);
            self.notice(idx, vec![item], out);
        }
    }

    /// Applies one piggybacked or notified item.
    /// `from` is the peer the item came from when it came in one of its packets.
    pub(super) fn apply_item(
        &mut self,
        item: Item,
        from: Option<usize>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if item.subject() == self.name {
            self.about_me(item, now, out);
            return;
        }
        let Some(idx) = self.find(item.subject()) else {
            return;
        };
        if self.peers[idx].speaks_legacy() {
            return;
        }
        match &item {
            Item::Alive {
                generation,
                incarnation,
                state_version,
                ..
            } => {
                let r = Record {
                    generation: *generation,
                    incarnation: *incarnation,
                    status: Status::Alive,
                    version: *state_version,
                };
                match self.merge(idx, r, None, now, out) {
                    Merge::Changed => self.swim.queue.push(item),
                    Merge::Same => self.swim.queue.heard_again(&item, self.limit()),
                    Merge::Stale | Merge::Confirmed => {}
                }
            }
            Item::Suspect {
                generation,
                incarnation,
                accuser,
                ..
            } => {
                let r = Record {
                    generation: *generation,
                    incarnation: *incarnation,
                    status: Status::Suspect,
                    version: 0,
                };
                let accuser = accuser.clone();
                match self.merge(idx, r, Some(&accuser), now, out) {
                    Merge::Changed => self.swim.queue.push(item),
                    Merge::Confirmed => {}
                    // Only when the accuser itself tells us, or the suspect asks us to (see
                    // `tell_refuted`): every member relaying its old suspicion by gossip
                    // answering it would make a crowd.
                    Merge::Stale | Merge::Same
                        if from.is_some_and(|f| f == idx || self.peers[f].name == accuser) =>
                    {
                        self.help_refute(idx, &r, &accuser, out)
                    }
                    Merge::Stale | Merge::Same => {}
                }
            }
            Item::Dead {
                generation,
                incarnation,
                ..
            } => {
                let r = Record {
                    generation: *generation,
                    incarnation: *incarnation,
                    status: Status::Dead,
                    version: 0,
                };
                // A stale Dead needs no help: the member itself refutes to its declarer.
                if self.merge(idx, r, None, now, out) == Merge::Changed {
                    self.swim.queue.push(item);
                }
            }
            Item::Left {
                generation,
                incarnation,
                ..
            } => {
                let r = Record {
                    generation: *generation,
                    incarnation: *incarnation,
                    status: Status::Left,
                    version: 0,
                };
                if self.merge(idx, r, None, now, out) == Merge::Changed {
                    self.swim.queue.push(item);
                }
            }
            Item::Delta(d) => {
                if self.apply_delta(idx, d, now) {
                    self.swim.queue.push(item);
                } else {
                    self.swim.queue.heard_again(&item, self.limit());
                }
            }
            Item::State(part) => self.apply_part(idx, part, now),
        }
    }

    /// Someone accuses peer `idx` of an incarnation we know it has already refuted: tell the
    /// accuser directly, so its timer stops before gossip would get there.
    fn help_refute(&mut self, idx: usize, claim: &Record, accuser: &str, out: &mut Vec<Action>) {
        let Some(r) = self.peers[idx].rec else {
            return;
        };
        if r.status != Status::Alive || !newer(&r, claim) || accuser == self.name {
            return;
        }
        let Some(a) = self.find(accuser) else {
            return;
        };
        if let Some(item) = self.live_item(idx) {
            self.notice(a, vec![item], out);
        }
    }

    /// An item about this speaker: refute suspicion and death, move above older generations.
    fn about_me(&mut self, item: Item, now: Instant, out: &mut Vec<Action>) {
        let (generation, incarnation, status, by) = match &item {
            Item::Alive {
                generation,
                incarnation,
                ..
            } => (*generation, *incarnation, Status::Alive, None),
            Item::Suspect {
                generation,
                incarnation,
                accuser,
                ..
            } => (
                *generation,
                *incarnation,
                Status::Suspect,
                Some(accuser.clone()),
            ),
            Item::Dead {
                generation,
                incarnation,
                declarer,
                ..
            } => (
                *generation,
                *incarnation,
                Status::Dead,
                Some(declarer.clone()),
            ),
            Item::Left {
                generation,
                incarnation,
                ..
            } => (*generation, *incarnation, Status::Left, None),
            Item::Delta(d) => (d.generation, 0, Status::Alive, None),
            Item::State(s) => (s.generation, 0, Status::Alive, None),
        };
        if self.left {
            return;
        }
        if generation > self.generation {
            self.new_generation(generation.saturating_add(1));
            return;
        }
        if generation < self.generation {
            return;
        }
        match status {
            Status::Suspect | Status::Dead => {
                if incarnation >= self.incarnation {
                    self.refute(incarnation, now);
                }
                if let Some(by) = by {
                    self.tell_refuted(&by, generation, incarnation, out);
                }
            }
            Status::Alive => {
                if incarnation > self.incarnation {
                    self.incarnation = incarnation.saturating_add(1);
                    self.refresh_own_hash();
                    let me = self.my_alive();
                    self.swim.queue.push(me);
                }
            }
            Status::Left => self.new_generation(self.generation.saturating_add(1)),
        }
    }

    fn refute(&mut self, seen: u32, _now: Instant) {
        self.incarnation = seen.saturating_add(1);
        self.raise_health(1);
        self.swim.stats.refutations += 1;
        self.swim.refuted_to.clear();
        self.refresh_own_hash();
        let me = self.my_alive();
        self.swim.queue.push(me);
    }

    /// Answers accuser `to`, which suspects (or declared dead) this speaker's `incarnation`:
    /// directly, and through `indirect_probes` random members, in case the path between the
    /// accuser and this speaker is what fails (its probes did). Each relay gets the accusation
    /// back from its subject: its header already carries the newer incarnation, so the relay
    /// holds the accusation for stale and tells the accuser (`help_refute`), as the helpers of
    /// an indirect probe carry an Ack around a broken path.
    fn tell_refuted(&mut self, to: &str, generation: u64, incarnation: u32, out: &mut Vec<Action>) {
        if to == self.name || self.swim.refuted_to.iter().any(|n| n == to) {
            return;
        }
        let Some(idx) = self.find(to) else {
            return;
        };
        if self.swim.refuted_to.len() < MAX_REFUTED_TO {
            self.swim.refuted_to.push(to.to_string());
        }
        let me = self.my_alive();
        self.notice(idx, vec![me], out);
        let n = self.peers.len();
        let mut relays: Vec<usize> = Vec::new();
        for _ in 0..self.config.indirect_probes.saturating_mul(4) {
            if relays.len() >= self.config.indirect_probes || n == 0 {
                break;
            }
            let i = self.swim.rng.below(n);
            let p = &self.peers[i];
            if i != idx
                && !relays.contains(&i)
                && !p.speaks_legacy()
                && p.rec.is_some_and(|r| r.status == Status::Alive)
            {
                relays.push(i);
            }
        }
        let ask = Item::Suspect {
            name: self.name.clone(),
            generation,
            incarnation,
            accuser: to.to_string(),
        };
        for r in relays {
            self.notice(r, vec![ask.clone()], out);
        }
    }

    /// Moves this speaker to generation `g`: peers take it for a new instance.
    fn new_generation(&mut self, g: u64) {
        self.generation = g;
        self.incarnation = 0;
        self.own.rebase();
        self.state_dirty = true;
        self.swim.refuted_to.clear();
        self.refresh_own_hash();
        let me = self.my_alive();
        self.swim.queue.push(me);
    }

    fn on_ack(&mut self, seq: u32, out: &mut Vec<Action>) {
        if self.swim.probe.as_ref().is_some_and(|p| p.seq == seq) {
            self.swim.probe = None;
            self.swim.health = self.swim.health.saturating_sub(1);
            return;
        }
        if let Some(pos) = self.swim.helping.iter().position(|h| h.my_seq == seq) {
            let h = self.swim.helping.swap_remove(pos);
            if let Some(r) = self.find(&h.requester) {
                self.send(r, Body::Ack { seq: h.req_seq }, out);
            }
        }
    }

    fn on_ping_req(
        &mut self,
        requester: usize,
        seq: u32,
        target: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if target == self.name {
            self.send(requester, Body::Ack { seq }, out);
            return;
        }
        let Some(t) = self
            .find(target)
            .filter(|&t| !self.peers[t].speaks_legacy())
        else {
            self.send(requester, Body::Nack { seq }, out);
            return;
        };
        if self.swim.helping.len() >= MAX_HELPING {
            return;
        }
        let my_seq = self.swim.next_seq();
        self.send(t, Body::Ping { seq: my_seq }, out);
        let deadline = now + self.scaled(self.config.ping_timeout);
        self.swim.helping.push(Help {
            my_seq,
            requester: self.peers[requester].name.clone(),
            req_seq: seq,
            deadline,
        });
    }

    /// The SWIM part of [`Membership::tick`]; `due` is the earliest deadline that was pending.
    pub(super) fn swim_tick(&mut self, now: Instant, due: Instant, out: &mut Vec<Action>) {
        if now > due + self.config.interval {
            // A deadline passed more than a period ago without a tick: this speaker did not
            // run when it should have, it is the slow one.
            self.raise_health(1);
            self.swim.stats.late_ticks += 1;
        }
        if !self.swim.announced {
            self.swim.announced = true;
            let me = self.my_alive();
            self.swim.queue.push(me);
        }
        // Helper requests that timed out: Nack.
        let mut expired = Vec::new();
        self.swim.helping.retain(|h| {
            if h.deadline <= now {
                expired.push(h.clone());
                false
            } else {
                true
            }
        });
        for h in expired {
            if let Some(r) = self.find(&h.requester) {
                self.send(r, Body::Nack { seq: h.req_seq }, out);
            }
        }
        self.probe_phases(now, out);
        self.suspicion_timers(now, out);
        // A probe due within `probe_slack` starts now: the shell ticks early only when it is
        // awake anyway (a datagram came in), so the ping rides on that wake-up instead of one of
        // its own. The schedule is kept: the next probe is due an interval after this one was.
        let planned = self.swim.next_probe;
        if self.swim.probe.is_none() && now + self.config.probe_slack >= planned {
            self.start_probe(now, out);
            if planned > now {
                self.swim.next_probe = planned + self.scaled(self.config.interval);
            }
            self.repings(now, out);
        }
        self.sync_tick(now, out);
        self.pulls(now, out);
        self.swim.leavers.retain(|(_, until)| *until > now);
    }

    fn probe_phases(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(p) = self.swim.probe.clone() else {
            return;
        };
        if !p.indirect_sent && now >= p.ping_deadline {
            self.send_ping_reqs(now, out);
        }
        let Some(p) = self.swim.probe.clone() else {
            return;
        };
        if p.indirect_sent && now >= p.probe_deadline {
            self.swim.probe = None;
            let missed = if p.helpers > 0 {
                p.helpers.saturating_sub(p.nackers.len())
            } else {
                1
            };
            self.raise_health(u32::try_from(missed).unwrap_or(u32::MAX));
            if let Some(idx) = self.find(&p.target) {
                self.accuse(idx, p.nackers.len(), now, out);
            }
        }
    }

    fn send_ping_reqs(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(target) = self.swim.probe.as_ref().map(|p| p.target.clone()) else {
            return;
        };
        let seq = self.swim.probe.as_ref().map_or(0, |p| p.seq);
        let mut helpers: Vec<usize> = Vec::new();
        let n = self.peers.len();
        for _ in 0..self.config.indirect_probes.saturating_mul(4) {
            if helpers.len() >= self.config.indirect_probes || n == 0 {
                break;
            }
            let i = self.swim.rng.below(n);
            let p = &self.peers[i];
            if p.name != target
                && !helpers.contains(&i)
                && !p.speaks_legacy()
                && p.rec.is_some_and(|r| r.status == Status::Alive)
            {
                helpers.push(i);
            }
        }
        for &h in &helpers {
            self.send(
                h,
                Body::PingReq {
                    seq,
                    target: target.clone(),
                },
                out,
            );
        }
        self.swim.stats.indirect += 1;
        let window = self.scaled(
            self.config
                .probe_timeout
                .saturating_sub(self.config.ping_timeout),
        );
        if let Some(p) = self.swim.probe.as_mut() {
            p.indirect_sent = true;
            p.helpers = helpers.len();
            // Re-timed from now: if this speaker was stalled past the ping timeout, the helpers
            // still get their full window.
            p.probe_deadline = p.probe_deadline.max(now + window);
        }
    }

    /// This speaker's probe of peer `idx` failed, `witnesses` helpers confirming: suspect it,
    /// tell it and the member that watches it, and start a suspicion timer.
    fn accuse(&mut self, idx: usize, witnesses: usize, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = self.peers[idx].rec else {
            return;
        };
        if !matches!(r.status, Status::Alive | Status::Suspect) || self.peers[idx].speaks_legacy() {
            return;
        }
        if let Some(s) = self.peers[idx].susp.as_mut()
            && s.mine.is_some()
            && (s.generation, s.incarnation) == (r.generation, r.incarnation)
        {
            // Already accused (a re-probe failed again): only the confirmations can grow.
            s.witnesses = s.witnesses.max(witnesses);
            return;
        }
        self.swim.stats.accusations += 1;
        let me = self.name.clone();
        let claim = Record {
            generation: r.generation,
            incarnation: r.incarnation,
            status: Status::Suspect,
            version: 0,
        };
        let _ = self.merge(idx, claim, Some(&me), now, out);
        let name = self.peers[idx].name.clone();
        if let Some(s) = self.peers[idx].susp.as_mut() {
            if s.mine.is_none() {
                s.mine = Some(now);
            }
            s.witnesses = s.witnesses.max(witnesses);
            s.last_reping = Some(now);
        }
        if !self.swim.accusing.contains(&name) {
            self.swim.accusing.push(name.clone());
        }
        let item = Item::Suspect {
            name: name.clone(),
            generation: r.generation,
            incarnation: r.incarnation,
            accuser: me.clone(),
        };
        self.swim.queue.push(item.clone());
        // Ping it now: the packet leads with the suspicion, so a live target refutes at once.
        let seq = self.swim.next_seq();
        self.send(idx, Body::Ping { seq }, out);
        let mut tell: Vec<usize> = self.peers[idx]
            .susp
            .as_ref()
            .map(|s| {
                s.accusers
                    .iter()
                    .filter(|a| **a != me)
                    .take(3)
                    .filter_map(|a| self.find(a))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(pred) = self.ring_predecessor(idx)
            && !tell.contains(&pred)
        {
            tell.push(pred);
        }
        for t in tell {
            self.notice(t, vec![item.clone()], out);
        }
    }

    /// The alive member just before peer `idx` on the ring, unless that is this speaker.
    fn ring_predecessor(&self, idx: usize) -> Option<usize> {
        let target = self.peers[idx].key;
        let mut best = target.wrapping_sub(self.my_key);
        let mut who = None;
        for (i, p) in self.peers.iter().enumerate() {
            if i == idx || p.speaks_legacy() || p.rec.is_none_or(|r| r.status != Status::Alive) {
                continue;
            }
            let d = target.wrapping_sub(p.key);
            if d != 0 && (d < best || best == 0) {
                best = d;
                who = Some(i);
            }
        }
        who
    }

    fn my_deadline(&self, name: &str) -> Option<Instant> {
        let idx = self.find(name)?;
        if self.peers[idx]
            .rec
            .is_none_or(|r| r.status != Status::Suspect)
        {
            return None;
        }
        let s = self.peers[idx].susp.as_ref()?;
        let since = s.mine?;
        let others = s.accusers.iter().filter(|a| **a != self.name).count();
        let confirmations = others + s.witnesses;
        let members = self.peers.iter().filter(|p| p.reported).count() + 1;
        if confirmations == 0 && members > 2 {
            // Confirmed by peers before an IP moves: an accuser alone (no helper failed to
            // reach the suspect too, no other accuser) may be the one cut off, and waits.
            return None;
        }
        Some(since + self.config.suspicion_timeout(confirmations, members))
    }

    fn suspicion_timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        for name in self.swim.accusing.clone() {
            if self.my_deadline(&name).is_none_or(|d| now >= d) {
                if let Some(idx) = self.find(&name)
                    && self.my_deadline(&name).is_some()
                {
                    self.declare_dead(idx, now, out);
                }
                self.swim.accusing.retain(|n| *n != name);
            }
        }
    }

    fn declare_dead(&mut self, idx: usize, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = self.peers[idx].rec else {
            return;
        };
        self.swim.stats.declared_dead += 1;
        let claim = Record {
            generation: r.generation,
            incarnation: r.incarnation,
            status: Status::Dead,
            version: 0,
        };
        let _ = self.merge(idx, claim, None, now, out);
        let item = Item::Dead {
            name: self.peers[idx].name.clone(),
            generation: r.generation,
            incarnation: r.incarnation,
            declarer: self.name.clone(),
        };
        self.swim.queue.push(item.clone());
        // Everyone directly: the next announcer of each of its IPs must know now, not after a
        // gossip round. One datagram per member, once per death.
        for j in 0..self.peers.len() {
            if j == idx || self.peers[j].probeable() {
                self.notice(j, vec![item.clone()], out);
            }
        }
    }

    fn start_probe(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(idx) = self.choose_target() else {
            self.swim.next_probe = now + self.config.interval;
            return;
        };
        let seq = self.swim.next_seq();
        self.swim.stats.probes += 1;
        self.send(idx, Body::Ping { seq }, out);
        self.swim.probe = Some(Probe {
            target: self.peers[idx].name.clone(),
            seq,
            ping_deadline: now + self.scaled(self.config.ping_timeout),
            probe_deadline: now + self.scaled(self.config.probe_timeout),
            indirect_sent: false,
            helpers: 0,
            nackers: Vec::new(),
        });
        self.swim.next_probe = now + self.scaled(self.config.interval);
    }

    /// Pings the suspects this speaker accuses (oldest ping first): each ping leads with the
    /// suspicion, and the Ack of a refuted suspect carries its new incarnation.
    fn repings(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut due: Vec<(Instant, usize)> = self
            .swim
            .accusing
            .iter()
            .filter_map(|n| {
                let idx = self.find(n)?;
                let last = self.peers[idx].susp.as_ref()?.last_reping?;
                (now >= last + self.config.interval).then_some((last, idx))
            })
            .collect();
        due.sort();
        for (_, idx) in due.into_iter().take(self.config.reprobe_suspects) {
            if let Some(s) = self.peers[idx].susp.as_mut() {
                s.last_reping = Some(now);
            }
            let seq = self.swim.next_seq();
            self.send(idx, Body::Ping { seq }, out);
        }
    }

    /// Alternates the ring successor and the shuffled round-robin (see the module docs).
    fn choose_target(&mut self) -> Option<usize> {
        self.swim.probes_started += 1;
        // Periods cycle: first ring successor, second ring successor, round-robin. Every
        // member is so watched by its two ring predecessors, each every third period.
        let ring = match self.swim.probes_started % 3 {
            0 => Some(0),
            1 => Some(1),
            _ => None,
        };
        if let Some(nth) = ring
            && let Some(i) = self.ring_successor(nth)
        {
            return Some(i);
        }
        for _ in 0..2 {
            while self.swim.rr_pos < self.swim.rr.len() {
                let i = self.swim.rr[self.swim.rr_pos];
                self.swim.rr_pos += 1;
                if self
                    .peers
                    .get(i)
                    .is_some_and(|p| p.probeable() && !p.accused())
                {
                    return Some(i);
                }
            }
            let mut order: Vec<usize> = (0..self.peers.len())
                .filter(|&i| self.peers[i].probeable())
                .collect();
            if order.is_empty() {
                return None;
            }
            self.swim.rng.shuffle(&mut order);
            self.swim.rr = order;
            self.swim.rr_pos = 0;
        }
        None
    }

    /// The `nth` (from 0) live member after this speaker on the ring.
    fn ring_successor(&self, nth: usize) -> Option<usize> {
        let start = self
            .ring
            .partition_point(|&i| self.peers[i].key <= self.my_key);
        let n = self.ring.len();
        (0..n)
            .map(|k| self.ring[(start + k) % n])
            .filter(|&i| {
                // A member this speaker accuses is re-pinged anyway; the ring watch moves on to the
                // next one, which has lost its own watcher if the accused is dead.
                let p = &self.peers[i];
                !p.speaks_legacy()
                    && !p.accused()
                    && p.rec
                        .is_some_and(|r| matches!(r.status, Status::Alive | Status::Suspect))
            })
            .nth(nth)
    }

    /// The earliest SWIM deadline.
    pub(super) fn swim_next_timeout(&self) -> Instant {
        let mut t = self.swim.next_sync;
        // The next probe starts only once the open one is over.
        t = t.min(match &self.swim.probe {
            Some(p) if p.indirect_sent => p.probe_deadline,
            Some(p) => p.ping_deadline,
            None => self.swim.next_probe,
        });
        for h in &self.swim.helping {
            t = t.min(h.deadline);
        }
        for n in &self.swim.accusing {
            if let Some(d) = self.my_deadline(n) {
                t = t.min(d);
            }
        }
        t
    }

    /// Sends this speaker's record changes (from the last tick's claims and unable IPs).
    pub(super) fn advertise(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !std::mem::take(&mut self.state_dirty) {
            return;
        }
        let claims = super::state::canonical(&self.my_claims);
        let room = super::MAX_STATE_IPS.saturating_sub(self.my_claims.len());
        let unable_given = self
            .my_unable
            .get(..room.min(self.my_unable.len()))
            .unwrap_or_default();
        let unable = super::state::canonical(unable_given);
        if claims == self.own.claims && unable == self.own.unable {
            return;
        }
        let (name, generation) = (self.name.clone(), self.generation);
        let deltas = self.own.update(&name, generation, claims, unable);
        self.refresh_own_hash();
        let leavers: Vec<usize> = self
            .swim
            .leavers
            .iter()
            .filter(|(_, until)| *until > now)
            .filter_map(|(n, _)| self.find(n))
            .collect();
        for d in deltas {
            let item = Item::Delta(d);
            self.swim.queue.push(item.clone());
            for &l in &leavers {
                self.notice(l, vec![item.clone()], out);
            }
        }
    }

    fn pulls(&mut self, now: Instant, out: &mut Vec<Action>) {
        let wait = self.config.interval.saturating_mul(4);
        let again = self.config.interval.saturating_mul(8);
        let candidates: Vec<String> = self
            .swim
            .behind
            .iter()
            .filter(|(_, since)| now >= **since + wait)
            .map(|(n, _)| n.clone())
            .collect();
        let mut sent = 0;
        for name in candidates {
            if sent >= PULLS_PER_TICK {
                break;
            }
            let Some(idx) = self.find(&name) else {
                continue;
            };
            let p = &self.peers[idx];
            if p.last_pull.is_some_and(|t| now < t + again) || !p.is_alive() {
                continue;
            }
            let Some(r) = p.rec else {
                continue;
            };
            let first = p.data.first_missing(r.version);
            self.peers[idx].last_pull = Some(now);
            self.swim.stats.pulls += 1;
            sent += 1;
            self.send(
                idx,
                Body::SyncPull {
                    wants: vec![(name, first)],
                },
                out,
            );
        }
    }
}
