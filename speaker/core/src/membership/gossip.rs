//! Infection-style dissemination: the queue of news piggybacked on every outgoing packet.
//!
//! Owns which [`Item`]s are still being spread and how often each was sent. It must not decide
//! what is news (the state machine pushes items) nor send anything itself. Each item is sent
//! at most `limit` times by this member ([`retransmit_limit`]); fresher items (fewer sends) go
//! first, so a burst of news reaches a few members quickly and then every member within about
//! `log n` protocol periods, as in SWIM. Newer news about a member's liveness replaces older
//! news about it, so the queue never holds more than a few items per member.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::codec::Item;

/// `λ · (⌊log10(n + 1)⌋ + 1)` sends per item for `n` members: SWIM's `λ log n` (memberlist
/// uses `⌈log10(n + 1)⌉`, one less at powers of ten). With λ = 3: 6 sends at 10 members, 9 at
/// 100, 12 at 1,000.
pub(crate) fn retransmit_limit(mult: u32, members: usize) -> u32 {
    let mut digits = 0u32;
    let mut n = members + 1;
    while n > 0 {
        digits += 1;
        n /= 10;
    }
    mult.saturating_mul(digits.max(1))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// Alive, Dead or Left about a member: only the newest is worth spreading.
    Live(String),
    /// A suspicion of a member: one is enough to spread (confirmations travel directly between
    /// accusers, see [`super::Membership`]), so a crowd of accusers does not multiply it.
    Suspect(String),
    /// One version of a member's record.
    Delta(String, u32),
}

fn key(item: &Item) -> Option<Key> {
    match item {
        Item::Alive { name, .. } | Item::Dead { name, .. } | Item::Left { name, .. } => {
            Some(Key::Live(name.clone()))
        }
        Item::Suspect { name, .. } => Some(Key::Suspect(name.clone())),
        Item::Delta(d) => Some(Key::Delta(d.name.clone(), d.state_version)),
        // Whole records travel by anti-entropy only: they are large and rarely news.
        Item::State(_) => None,
    }
}

/// Position in send order: fewest sends first, then newest first.
type Slot = (u32, Reverse<u64>);

#[derive(Debug, Clone)]
struct Queued {
    key: Key,
    item: Item,
    len: usize,
}

/// Items being disseminated. See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Queue {
    items: BTreeMap<Slot, Queued>,
    index: BTreeMap<Key, Slot>,
    next_order: u64,
}

/// Deltas kept per member at most: a member changing its record faster than gossip spreads it
/// is caught up by anti-entropy, not by an ever longer queue.
const MAX_DELTAS_PER_MEMBER: usize = 32;
/// Items kept at most (a partition of 1,000 members queues one liveness item per member).
const MAX_QUEUED: usize = 4_096;
/// Smallest item (a one-byte name Left): less room than this ends the search for a fit.
const MIN_ITEM: usize = 15;
/// Items looked at beyond those taken before giving up on filling the room.
const SCAN_SLACK: usize = 32;

impl Queue {
    fn remove(&mut self, key: &Key) {
        if let Some(slot) = self.index.remove(key) {
            self.items.remove(&slot);
        }
    }

    /// Starts spreading `item`, replacing older news it supersedes.
    pub(crate) fn push(&mut self, item: Item) {
        let Some(key) = key(&item) else {
            return;
        };
        self.remove(&key);
        match &key {
            Key::Live(name) => {
                // Liveness news makes a suspicion of the same member old news.
                self.remove(&Key::Suspect(name.clone()));
            }
            Key::Delta(name, _) => {
                let deltas = self
                    .index
                    .range(Key::Delta(name.clone(), 0)..=Key::Delta(name.clone(), u32::MAX))
                    .count();
                if deltas >= MAX_DELTAS_PER_MEMBER {
                    return;
                }
            }
            Key::Suspect(..) => {}
        }
        if self.items.len() >= MAX_QUEUED {
            // Drop the most-sent item: it has done most of its work.
            if let Some((_, q)) = self.items.pop_last() {
                self.index.remove(&q.key);
            }
        }
        self.next_order += 1;
        let slot = (0, Reverse(self.next_order));
        self.index.insert(key.clone(), slot);
        self.items.insert(
            slot,
            Queued {
                key,
                len: item.encoded_len(),
                item,
            },
        );
    }

    /// Another member sent us `item`, which we already knew: the news is spreading without
    /// us, so count it as one of our own sends (Demers et al.'s feedback rule for rumour
    /// mongering). This shortens the tail of a burst of news (a mass restart) without slowing
    /// a single rumour, whose duplicates only come back once most members have it.
    pub(crate) fn heard_again(&mut self, item: &Item, limit: u32) {
        let Some(key) = key(item) else {
            return;
        };
        let Some(slot) = self.index.get(&key).copied() else {
            return;
        };
        let Some(q) = self.items.remove(&slot) else {
            return;
        };
        let sent = slot.0 + 1;
        if sent >= limit {
            self.index.remove(&key);
        } else {
            let next = (sent, slot.1);
            self.index.insert(key, next);
            self.items.insert(next, q);
        }
    }

    /// Drops every queued item about `name` (it left the peer list).
    pub(crate) fn forget(&mut self, name: &str) {
        let gone: Vec<Key> = self
            .items
            .values()
            .filter(|q| q.item.subject() == name)
            .map(|q| q.key.clone())
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }

    /// Items for one packet: as many as fit in `room` bytes (and `max` items), least-sent
    /// first. Each is counted as sent once more and dropped after `limit` sends.
    pub(crate) fn take(&mut self, mut room: usize, max: usize, limit: u32) -> Vec<Item> {
        let mut picked: Vec<Slot> = Vec::new();
        for (scanned, (slot, q)) in self.items.iter().enumerate() {
            if picked.len() >= max || room < MIN_ITEM || scanned > picked.len() + SCAN_SLACK {
                break;
            }
            if q.len <= room {
                room -= q.len;
                picked.push(*slot);
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        for slot in picked {
            let Some(q) = self.items.remove(&slot) else {
                continue;
            };
            out.push(q.item.clone());
            let sent = slot.0 + 1;
            if sent >= limit {
                self.index.remove(&q.key);
            } else {
                let next = (sent, slot.1);
                self.index.insert(q.key.clone(), next);
                self.items.insert(next, q);
            }
        }
        out
    }

    /// Items still being spread.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(name: &str, inc: u32) -> Item {
        Item::Alive {
            name: name.into(),
            generation: 1,
            incarnation: inc,
            state_version: 0,
        }
    }

    fn suspect(name: &str, by: &str) -> Item {
        Item::Suspect {
            name: name.into(),
            generation: 1,
            incarnation: 0,
            accuser: by.into(),
        }
    }

    #[test]
    fn limit_grows_with_log_n() {
        assert_eq!(retransmit_limit(3, 0), 3);
        assert_eq!(retransmit_limit(3, 9), 6);
        assert_eq!(retransmit_limit(3, 99), 9);
        assert_eq!(retransmit_limit(3, 999), 12);
    }

    #[test]
    fn each_item_is_sent_limit_times_then_dropped() {
        let mut q = Queue::default();
        q.push(alive("a", 1));
        for _ in 0..3 {
            assert_eq!(q.take(1_000, 10, 3), vec![alive("a", 1)]);
        }
        assert!(q.take(1_000, 10, 3).is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn newer_liveness_replaces_older_and_clears_suspicions() {
        let mut q = Queue::default();
        q.push(suspect("a", "b"));
        q.push(suspect("a", "c"));
        // One suspicion per member spreads, the latest.
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(1_000, 10, 5), vec![suspect("a", "c")]);
        q.push(alive("a", 2));
        assert_eq!(q.take(1_000, 10, 5), vec![alive("a", 2)]);
    }

    #[test]
    fn least_sent_first_and_room_is_respected() {
        let mut q = Queue::default();
        q.push(alive("a", 1));
        let _ = q.take(1_000, 10, 5);
        q.push(alive("b", 1));
        let len = alive("b", 1).encoded_len();
        assert_eq!(q.take(len, 10, 5), vec![alive("b", 1)]);
        assert!(q.take(len - 1, 10, 5).is_empty());
        assert_eq!(q.take(1_000, 1, 5).len(), 1);
    }
}
