//! Anti-entropy: bucket hashes of member records, digests of the buckets that differ, and pulls
//! of whole claims/unable records.
//!
//! Owns the exchange that lets a joiner learn every member's record and that repairs anything
//! gossip missed. It must not judge liveness itself: records it learns go through the same merge
//! as gossip. Steady-state cost is one request of [`SYNC_BUCKETS`] four-byte hashes per
//! `sync_interval`, answered only when a bucket differs.

use std::time::Instant;

use super::codec::{Body, Delta, Digest, Item, MAX_ITEMS, SYNC_BUCKETS, StatePart, Status};
use super::rng::{FNV_BASIS, fnv, mix};
use super::state::{self, Applied};
use super::swim::{Merge, newer};
use super::{Action, Membership, Record};

/// Datagrams of digest entries per request answered.
const DIGEST_DATAGRAMS: usize = 2;
/// Datagrams of digest entries for a joiner's request (the whole view of 1,000 members with
/// 20-byte names fits in 32).
const BULK_DATAGRAMS: usize = 32;
/// Datagrams of whole records per pull answered.
const PULL_DATAGRAMS: usize = 8;
/// Members asked for per pull: what one answer can usually carry (a liveness item and one part
/// of up to 32 addresses each, 8 datagrams); the rest are asked of the next digest's sender.
const PULL_WANTS: usize = 24;

/// The anti-entropy bucket of a member (from its name hash).
pub(crate) fn bucket(key: u64) -> usize {
    usize::try_from(key >> 40).unwrap_or(0) % SYNC_BUCKETS
}

/// A record's share of its bucket hash (XOR-combined, so order does not matter).
fn record_hash(key: u64, r: &Record) -> u32 {
    let mut h = fnv(FNV_BASIS, &key.to_be_bytes());
    h = fnv(h, &r.generation.to_be_bytes());
    h = fnv(h, &r.incarnation.to_be_bytes());
    h = fnv(h, &[r.status.to_u8()]);
    h = fnv(h, &r.version.to_be_bytes());
    u32::try_from(mix(h) >> 32).unwrap_or(1) | 1
}

impl Membership {
    /// Replaces peer `idx`'s record, keeping the bucket hashes current.
    pub(super) fn set_rec(&mut self, idx: usize, rec: Option<Record>) {
        let p = &mut self.peers[idx];
        p.rec = rec;
        let h = rec.map_or(0, |r| record_hash(p.key, &r));
        self.buckets[bucket(p.key)] ^= p.hash ^ h;
        p.hash = h;
    }

    /// This speaker's own record changed (generation, incarnation, version, left).
    pub(super) fn refresh_own_hash(&mut self) {
        let r = Record {
            generation: self.generation,
            incarnation: self.incarnation,
            status: if self.left {
                Status::Left
            } else {
                Status::Alive
            },
            version: self.own.version,
        };
        let h = record_hash(self.my_key, &r);
        self.buckets[bucket(self.my_key)] ^= self.my_hash ^ h;
        self.my_hash = h;
    }

    fn my_digest(&self) -> Digest {
        Digest {
            name: self.name.clone(),
            generation: self.generation,
            incarnation: self.incarnation,
            status: Status::Alive,
            state_version: self.own.version,
        }
    }

    /// Starts an exchange when due: every period until settled, then every `sync_interval`;
    /// every fourth one goes to a member believed dead, so a healed partition finds its way
    /// back.
    pub(super) fn sync_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if now < self.swim.next_sync {
            return;
        }
        let joining = !self.settled(now);
        let every = if joining {
            self.config.interval
        } else {
            self.config.sync_interval
        };
        self.swim.next_sync = now + every;
        self.swim.stats.syncs += 1;
        let to_dead = !joining && self.swim.stats.syncs.is_multiple_of(4);
        let n = self.peers.len();
        let mut partner = None;
        for _ in 0..16 {
            if n == 0 {
                break;
            }
            let i = self.swim.rng.below(n);
            let p = &self.peers[i];
            if p.speaks_legacy() {
                continue;
            }
            let ok = match p.rec.map(|r| r.status) {
                Some(Status::Dead) => to_dead,
                Some(Status::Left) => false,
                _ => !to_dead,
            };
            if ok {
                partner = Some(i);
                break;
            }
        }
        if let Some(i) = partner {
            // A joiner that lacks the records of a quarter of its peers asks for everything
            // (empty hashes, see `on_sync_req`); once it has most, the bucket hashes find the
            // rest at a fraction of the cost.
            let unknown = if joining {
                self.peers
                    .iter()
                    .filter(|p| p.rec.is_none() && !p.speaks_legacy())
                    .count()
            } else {
                0
            };
            let hashes = if joining && unknown * 4 >= self.peers.len() {
                Vec::new()
            } else {
                self.buckets.to_vec()
            };
            self.send(i, Body::SyncReq { hashes }, out);
        }
    }

    /// Answers a request: digest entries of the buckets whose hashes differ, from a random
    /// bucket on, in at most [`DIGEST_DATAGRAMS`] datagrams. An empty hash list is a joiner's:
    /// every bucket differs and the answer may take [`BULK_DATAGRAMS`] (at most one such answer
    /// per period, so a crowd of joiners cannot make a member send more than that).
    pub(super) fn on_sync_req(
        &mut self,
        idx: usize,
        hashes: &[u32],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let bulk = hashes.is_empty();
        if !bulk && hashes.len() != SYNC_BUCKETS {
            return;
        }
        let mut differs = [bulk; SYNC_BUCKETS];
        if !bulk {
            for (b, d) in differs.iter_mut().enumerate() {
                *d = hashes.get(b) != self.buckets.get(b);
            }
        }
        if !differs.contains(&true) {
            return;
        }
        let datagrams = if bulk
            && self
                .swim
                .last_bulk
                .is_none_or(|t| now >= t + self.config.interval)
        {
            self.swim.last_bulk = Some(now);
            BULK_DATAGRAMS
        } else {
            DIGEST_DATAGRAMS
        };
        let start = self.swim.rng.below(SYNC_BUCKETS);
        let head = self
            .header(Body::SyncDigest {
                entries: Vec::new(),
            })
            .head_len();
        let room = self.config.max_datagram.saturating_sub(head);
        let my_bucket = bucket(self.my_key);
        let mut batch: Vec<Digest> = Vec::new();
        let mut used = 0;
        let mut sent = 0;
        'buckets: for k in 0..SYNC_BUCKETS {
            let b = (start + k) % SYNC_BUCKETS;
            if !differs[b] {
                continue;
            }
            let mine = (b == my_bucket).then(|| self.my_digest());
            let members = self.bucket_members.get(b).cloned().unwrap_or_default();
            let theirs = members.into_iter().filter_map(|i| {
                let p = self.peers.get(i)?;
                let r = p.rec.filter(|_| !p.speaks_legacy())?;
                Some(Digest {
                    name: p.name.clone(),
                    generation: r.generation,
                    incarnation: r.incarnation,
                    status: r.status,
                    state_version: r.version,
                })
            });
            let entries: Vec<Digest> = mine.into_iter().chain(theirs).collect();
            for e in entries {
                let len = e.name.len() + 1 + 8 + 4 + 1 + 4;
                if used + len > room && !batch.is_empty() {
                    let entries = std::mem::take(&mut batch);
                    self.send(idx, Body::SyncDigest { entries }, out);
                    sent += 1;
                    used = 0;
                    if sent >= datagrams {
                        break 'buckets;
                    }
                }
                used += len;
                batch.push(e);
            }
        }
        if !batch.is_empty() && sent < datagrams {
            self.send(idx, Body::SyncDigest { entries: batch }, out);
        }
    }

    pub(super) fn on_sync_digest(
        &mut self,
        idx: usize,
        entries: Vec<Digest>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let mut wants: Vec<(String, u16)> = Vec::new();
        let mut pushes: Vec<Item> = Vec::new();
        for e in entries {
            let incoming = Record {
                generation: e.generation,
                incarnation: e.incarnation,
                status: e.status,
                version: e.state_version,
            };
            if e.name == self.name {
                let mine = Record {
                    generation: self.generation,
                    incarnation: self.incarnation,
                    status: Status::Alive,
                    version: self.own.version,
                };
                match e.status {
                    Status::Suspect | Status::Dead | Status::Left => {
                        let item = if e.status == Status::Left {
                            Item::Left {
                                name: e.name,
                                generation: e.generation,
                                incarnation: e.incarnation,
                            }
                        } else {
                            Item::Dead {
                                name: e.name,
                                generation: e.generation,
                                incarnation: e.incarnation,
                                declarer: self.peers[idx].name.clone(),
                            }
                        };
                        self.apply_item(item, None, now, out);
                    }
                    Status::Alive if e.generation > self.generation => {
                        self.apply_item(
                            Item::Alive {
                                name: e.name,
                                generation: e.generation,
                                incarnation: e.incarnation,
                                state_version: e.state_version,
                            },
                            None,
                            now,
                            out,
                        );
                    }
                    Status::Alive => {}
                }
                if newer(&mine, &incoming) || mine.version > incoming.version {
                    pushes.push(self.my_alive());
                }
                continue;
            }
            let Some(j) = self.find(&e.name) else {
                continue;
            };
            if self.peers[j].speaks_legacy() {
                continue;
            }
            // Deaths and departures found by anti-entropy are news worth spreading; records
            // that are merely new to this speaker are not (every member syncs on its own, and
            // re-gossiping a joiner's whole view would flood the cluster at a mass restart).
            if self.merge(j, incoming, None, now, out) == Merge::Changed
                && matches!(incoming.status, Status::Dead | Status::Left)
                && let Some(item) = self.live_item(j)
            {
                self.swim.queue.push(item);
            }
            let p = &self.peers[j];
            let Some(r) = p.rec else {
                continue;
            };
            if newer(&r, &incoming)
                && let Some(item) = self.live_item(j)
            {
                pushes.push(item);
            }
            // Pull what we lack, unless a pull of it is already under way (several digests
            // arrive in one period while joining).
            if r.generation == e.generation
                && p.data.generation == r.generation
                && e.state_version > p.data.version
                && !matches!(r.status, Status::Dead | Status::Left)
                && p.last_pull
                    .is_none_or(|t| now >= t + self.config.interval.saturating_mul(4))
            {
                wants.push((e.name.clone(), p.data.first_missing(e.state_version)));
            }
        }
        if !wants.is_empty() {
            let head = self.header(Body::SyncPull { wants: Vec::new() }).head_len();
            let mut room = self.config.max_datagram.saturating_sub(head);
            let mut fit = Vec::new();
            for (n, part) in wants.into_iter().take(PULL_WANTS) {
                let len = n.len() + 3;
                if len > room {
                    break;
                }
                room -= len;
                if let Some(j) = self.find(&n) {
                    self.peers[j].last_pull = Some(now);
                }
                fit.push((n, part));
            }
            self.swim.stats.pulls += 1;
            self.send(idx, Body::SyncPull { wants: fit }, out);
        }
        if !pushes.is_empty() {
            pushes.truncate(MAX_ITEMS);
            self.notice(idx, pushes, out);
        }
    }

    pub(super) fn on_sync_pull(
        &mut self,
        idx: usize,
        wants: &[(String, u16)],
        out: &mut Vec<Action>,
    ) {
        let mut items: Vec<Item> = Vec::new();
        for (name, first) in wants {
            if *name == self.name {
                items.push(self.my_alive());
                items.extend(
                    state::parts(
                        &self.name,
                        self.generation,
                        self.own.version,
                        &self.own.claims,
                        &self.own.unable,
                        *first,
                    )
                    .into_iter()
                    .map(Item::State),
                );
                continue;
            }
            let Some(j) = self.find(name) else {
                continue;
            };
            let p = &self.peers[j];
            let Some(r) = p.rec else {
                continue;
            };
            if let Some(item) = self.live_item(j) {
                items.push(item);
            }
            if p.data.generation == r.generation && !matches!(r.status, Status::Dead | Status::Left)
            {
                items.extend(
                    state::parts(
                        &p.name,
                        r.generation,
                        p.data.version,
                        &p.data.claims,
                        &p.data.unable,
                        *first,
                    )
                    .into_iter()
                    .map(Item::State),
                );
            }
        }
        // Bounded answer: at most PULL_DATAGRAMS datagrams; the puller asks again from the
        // first part it still misses.
        let head = self.header(Body::Notice).head_len();
        let room = self.config.max_datagram.saturating_sub(head);
        let mut used = 0;
        let mut datagrams = 1;
        let mut keep = Vec::new();
        for item in items {
            let len = item.encoded_len();
            if used + len > room || keep.len() >= MAX_ITEMS {
                if datagrams >= PULL_DATAGRAMS {
                    break;
                }
                datagrams += 1;
                used = 0;
            }
            used += len;
            keep.push(item);
        }
        self.notice(idx, keep, out);
    }

    /// Applies a delta of peer `idx`'s record; true when it was news (to be gossiped on).
    ///
    /// A delta may arrive before the member's liveness record (at a mass start, deltas and
    /// records spread at once): it is kept against the delta's generation, and the record,
    /// when it comes with that generation, finds it.
    pub(super) fn apply_delta(&mut self, idx: usize, d: &Delta, now: Instant) -> bool {
        let rec = self.peers[idx].rec;
        let generation = rec.map_or(d.generation, |r| r.generation);
        if d.generation != generation
            || rec.is_none() && d.generation < self.peers[idx].data.generation
        {
            return false;
        }
        if self.peers[idx].data.generation != generation {
            self.peers[idx].data.reset(generation);
        }
        let outcome = self.peers[idx].data.apply_delta(d);
        if let Some(mut r) = rec
            && d.state_version > r.version
        {
            r.version = d.state_version;
            self.set_rec(idx, Some(r));
        }
        self.update_behind(idx, now);
        outcome != Applied::Old
    }

    /// Stores a part of peer `idx`'s whole record.
    pub(super) fn apply_part(&mut self, idx: usize, part: &StatePart, now: Instant) {
        let rec = self.peers[idx].rec;
        let generation = rec.map_or(part.generation, |r| r.generation);
        if part.generation != generation
            || rec.is_none() && part.generation < self.peers[idx].data.generation
        {
            return;
        }
        if self.peers[idx].data.generation != generation {
            self.peers[idx].data.reset(generation);
        }
        let _ = self.peers[idx].data.apply_part(part);
        if let Some(mut r) = rec
            && part.state_version > r.version
        {
            r.version = part.state_version;
            self.set_rec(idx, Some(r));
        }
        self.update_behind(idx, now);
    }
}
