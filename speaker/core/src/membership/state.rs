//! Members' claims/unable records: this speaker's own, versioned and cut into deltas, and each
//! peer's, rebuilt from deltas and whole-record parts.
//!
//! Owns the record arithmetic only. It must not decide who is alive or when to send: the state
//! machine feeds it items and asks it for deltas and parts.
//!
//! A record is two sorted sets of addresses (claims, unable) with a version. Version 0 of every
//! generation is the empty record, so a member learned of by gossip has a known record until it
//! changes. Each change becomes one or more [`Delta`]s of at most [`STATE_PART_IPS`] addresses,
//! each raising the version by one. A peer applies deltas in order, holding early ones back; a
//! gap it cannot close is filled by pulling the whole record in [`StatePart`]s (anti-entropy).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::codec::{Delta, STATE_PART_IPS, StatePart};

/// Deltas held back per member while an earlier one is missing.
const MAX_PENDING: usize = 64;

/// This speaker's advertised record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Own {
    pub(crate) version: u32,
    pub(crate) claims: Vec<IpAddr>,
    pub(crate) unable: Vec<IpAddr>,
}

impl Own {
    /// Moves the record to `claims`/`unable` (sorted, deduplicated), returning the deltas that
    /// take peers there. Empty when nothing changed.
    pub(crate) fn update(
        &mut self,
        name: &str,
        generation: u64,
        claims: Vec<IpAddr>,
        unable: Vec<IpAddr>,
    ) -> Vec<Delta> {
        let (add_c, del_c) = diff(&self.claims, &claims);
        let (add_u, del_u) = diff(&self.unable, &unable);
        self.claims = claims;
        self.unable = unable;
        let mut changes: Vec<(usize, IpAddr)> = Vec::new();
        for (list, ips) in [(0, add_c), (1, del_c), (2, add_u), (3, del_u)] {
            changes.extend(ips.into_iter().map(|ip| (list, ip)));
        }
        let mut out = Vec::new();
        for chunk in changes.chunks(STATE_PART_IPS) {
            self.version = self.version.wrapping_add(1).max(1);
            let mut d = Delta {
                name: name.to_string(),
                generation,
                state_version: self.version,
                add_claims: Vec::new(),
                del_claims: Vec::new(),
                add_unable: Vec::new(),
                del_unable: Vec::new(),
            };
            for &(list, ip) in chunk {
                match list {
                    0 => d.add_claims.push(ip),
                    1 => d.del_claims.push(ip),
                    2 => d.add_unable.push(ip),
                    _ => d.del_unable.push(ip),
                }
            }
            out.push(d);
        }
        out
    }

    /// Starts the record over at version 0 (a new generation): the next [`Own::update`] sends
    /// everything again.
    pub(crate) fn rebase(&mut self) {
        *self = Self::default();
    }
}

/// `(in b not a, in a not b)` for sorted slices.
fn diff(a: &[IpAddr], b: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let added = b
        .iter()
        .filter(|x| a.binary_search(x).is_err())
        .copied()
        .collect();
    let removed = a
        .iter()
        .filter(|x| b.binary_search(x).is_err())
        .copied()
        .collect();
    (added, removed)
}

/// Sorted, deduplicated copy.
pub(crate) fn canonical(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut v = ips.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// The parts of a whole record, from `first` on: [`STATE_PART_IPS`] addresses each, claims
/// then unable, so every member cuts one version identically.
pub(crate) fn parts(
    name: &str,
    generation: u64,
    version: u32,
    claims: &[IpAddr],
    unable: &[IpAddr],
    first: u16,
) -> Vec<StatePart> {
    let total = claims.len() + unable.len();
    let count = total.div_ceil(STATE_PART_IPS).max(1);
    let parts = u16::try_from(count).unwrap_or(u16::MAX);
    (first..parts)
        .map(|part| {
            let start = usize::from(part) * STATE_PART_IPS;
            let end = (start + STATE_PART_IPS).min(total);
            let pick = |from: usize, to: usize, list: &[IpAddr], offset: usize| -> Vec<IpAddr> {
                let lo = from.max(offset).min(offset + list.len()) - offset;
                let hi = to.max(offset).min(offset + list.len()) - offset;
                list.get(lo..hi).unwrap_or_default().to_vec()
            };
            StatePart {
                name: name.to_string(),
                generation,
                state_version: version,
                part,
                parts,
                claims: pick(start, end, claims, 0),
                unable: pick(start, end, unable, claims.len()),
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Partial {
    version: u32,
    parts: u16,
    got: BTreeMap<u16, (Vec<IpAddr>, Vec<IpAddr>)>,
}

/// What became of a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Already had it (or a later version).
    Old,
    /// Applied (and any held-back deltas that follow it).
    Now,
    /// Held back until the versions before it arrive.
    Held,
}

/// A peer's record as this speaker knows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerData {
    pub(crate) generation: u64,
    pub(crate) version: u32,
    pub(crate) claims: Vec<IpAddr>,
    pub(crate) unable: Vec<IpAddr>,
    pending: BTreeMap<u32, Delta>,
    partial: Option<Box<Partial>>,
}

impl PeerData {
    /// A new generation: version 0, the empty record.
    pub(crate) fn reset(&mut self, generation: u64) {
        *self = Self {
            generation,
            ..Self::default()
        };
    }

    /// Applies `d` (of this data's generation) or holds it back.
    pub(crate) fn apply_delta(&mut self, d: &Delta) -> Applied {
        if d.state_version <= self.version || self.pending.contains_key(&d.state_version) {
            return Applied::Old;
        }
        if d.state_version != self.version.wrapping_add(1) {
            if self.pending.len() >= MAX_PENDING {
                match self.pending.last_key_value() {
                    Some((&last, _)) if last > d.state_version => {
                        self.pending.remove(&last);
                    }
                    _ => return Applied::Old,
                }
            }
            self.pending.insert(d.state_version, d.clone());
            return Applied::Held;
        }
        self.apply_one(d);
        self.drain();
        Applied::Now
    }

    fn apply_one(&mut self, d: &Delta) {
        for ip in &d.del_claims {
            if let Ok(i) = self.claims.binary_search(ip) {
                self.claims.remove(i);
            }
        }
        for ip in &d.add_claims {
            if let Err(i) = self.claims.binary_search(ip) {
                self.claims.insert(i, *ip);
            }
        }
        for ip in &d.del_unable {
            if let Ok(i) = self.unable.binary_search(ip) {
                self.unable.remove(i);
            }
        }
        for ip in &d.add_unable {
            if let Err(i) = self.unable.binary_search(ip) {
                self.unable.insert(i, *ip);
            }
        }
        self.version = d.state_version;
    }

    fn drain(&mut self) {
        self.pending.retain(|v, _| *v > self.version);
        while let Some(d) = self.pending.remove(&self.version.wrapping_add(1)) {
            self.apply_one(&d);
        }
    }

    /// Stores one part of a whole record; true when it completed a version newer than the one
    /// held, which then replaces it.
    pub(crate) fn apply_part(&mut self, p: &StatePart) -> bool {
        if p.state_version <= self.version {
            return false;
        }
        let fresh = match &self.partial {
            Some(pa) => {
                if pa.version > p.state_version {
                    return false;
                }
                pa.version < p.state_version || pa.parts != p.parts
            }
            None => true,
        };
        if fresh {
            self.partial = Some(Box::new(Partial {
                version: p.state_version,
                parts: p.parts,
                got: BTreeMap::new(),
            }));
        }
        let Some(pa) = self.partial.as_mut() else {
            return false;
        };
        pa.got.insert(p.part, (p.claims.clone(), p.unable.clone()));
        if pa.got.len() < usize::from(pa.parts) {
            return false;
        }
        let Some(pa) = self.partial.take() else {
            return false;
        };
        let mut claims = Vec::new();
        let mut unable = Vec::new();
        for (c, u) in pa.got.into_values() {
            claims.extend(c);
            unable.extend(u);
        }
        self.claims = canonical(&claims);
        self.unable = canonical(&unable);
        self.version = pa.version;
        self.drain();
        true
    }

    /// The first part still missing of `version`'s whole record (0 if none is held).
    pub(crate) fn first_missing(&self, version: u32) -> u16 {
        match &self.partial {
            Some(pa) if pa.version == version => {
                (0..pa.parts).find(|i| !pa.got.contains_key(i)).unwrap_or(0)
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i))
    }

    #[test]
    fn deltas_rebuild_the_record_in_any_order() {
        let mut own = Own::default();
        let mut deltas = own.update("a", 1, (0..70).map(ip).collect(), vec![ip(500)]);
        // 71 changes: three deltas of at most 32 addresses.
        assert_eq!(deltas.len(), 3);
        deltas.extend(own.update("a", 1, (10..80).map(ip).collect(), vec![]));
        assert_eq!(own.version, deltas.len() as u32);
        let mut peer = PeerData::default();
        peer.reset(1);
        for d in deltas.iter().rev() {
            let _ = peer.apply_delta(d);
        }
        assert_eq!(peer.version, own.version);
        assert_eq!(peer.claims, own.claims);
        assert_eq!(peer.unable, own.unable);
        assert_eq!(peer.apply_delta(&deltas[0]), Applied::Old);
    }

    #[test]
    fn parts_cover_the_record_and_reassemble() {
        let claims: Vec<IpAddr> = (0..50).map(ip).collect();
        let unable: Vec<IpAddr> = (100..120).map(ip).collect();
        let ps = parts("a", 1, 9, &claims, &unable, 0);
        assert_eq!(ps.len(), 3);
        assert!(
            ps.iter()
                .all(|p| p.claims.len() + p.unable.len() <= STATE_PART_IPS)
        );
        let mut peer = PeerData::default();
        peer.reset(1);
        assert!(!peer.apply_part(&ps[2]));
        assert_eq!(peer.first_missing(9), 0);
        assert!(!peer.apply_part(&ps[0]));
        assert_eq!(peer.first_missing(9), 1);
        assert!(peer.apply_part(&ps[1]));
        assert_eq!(
            (peer.version, &peer.claims, &peer.unable),
            (9, &claims, &unable)
        );
        // An empty record is one empty part.
        let empty = parts("a", 1, 3, &[], &[], 0);
        assert_eq!(empty.len(), 1);
        assert_eq!((empty[0].part, empty[0].parts), (0, 1));
        // Resuming from a part.
        assert_eq!(parts("a", 1, 9, &claims, &unable, 2).len(), 1);
    }

    #[test]
    fn held_back_deltas_apply_after_a_whole_record() {
        let mut own = Own::default();
        let d1 = own.update("a", 1, vec![ip(1)], vec![]);
        let d2 = own.update("a", 1, vec![ip(1), ip(2)], vec![]);
        let d3 = own.update("a", 1, vec![ip(2)], vec![ip(9)]);
        let mut peer = PeerData::default();
        peer.reset(1);
        assert_eq!(peer.apply_delta(&d3[0]), Applied::Held);
        // Version 1 never arrives; the whole record at version 2 does.
        let _ = d1;
        let whole = parts("a", 1, 2, &[ip(1), ip(2)], &[], 0);
        assert!(peer.apply_part(&whole[0]));
        assert_eq!(peer.version, 3);
        assert_eq!(
            (peer.claims.as_slice(), peer.unable.as_slice()),
            (&[ip(2)][..], &[ip(9)][..])
        );
        let _ = d2;
    }
}
