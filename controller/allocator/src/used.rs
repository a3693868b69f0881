//! The index of addresses in use, whoever holds them and whichever pool they came from.
//!
//! Owns three [`RunSet`]s: IPv4, IPv4 in "clean" indices (non-buggy addresses only, so runs merge
//! across `.255`/`.0` and avoidBuggyIPs searches stay O(log n)), and IPv6. Answers "lowest free
//! address in `[lo, hi]`" and "how many used in `[lo, hi]`". It must not know about holders,
//! pools or sharing: the allocator decides what "used" means and keeps this index in step.

use std::net::IpAddr;

use crate::runs::RunSet;
use ferrolb_addresses::Family;
use ferrolb_addresses::range::{clean_bounds, clean_index, from_bits, from_clean_index, to_bits};

/// Used addresses, per family, as merged runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UsedIndex {
    v4: RunSet,
    v4_clean: RunSet,
    v6: RunSet,
}

impl UsedIndex {
    /// Marks `ip` used.
    pub(crate) fn insert(&mut self, ip: IpAddr) {
        let bits = to_bits(ip);
        match Family::of(ip) {
            Family::V4 => {
                self.v4.insert(bits);
                if let Some(c) = clean_index(bits) {
                    self.v4_clean.insert(c);
                }
            }
            Family::V6 => self.v6.insert(bits),
        }
    }

    /// Marks `ip` free.
    pub(crate) fn remove(&mut self, ip: IpAddr) {
        let bits = to_bits(ip);
        match Family::of(ip) {
            Family::V4 => {
                self.v4.remove(bits);
                if let Some(c) = clean_index(bits) {
                    self.v4_clean.remove(c);
                }
            }
            Family::V6 => {
                self.v6.remove(bits);
            }
        }
    }

    /// The lowest unused address of `family` in `[lo, hi]`, skipping `.0`/`.255` when
    /// `avoid_buggy` is set. O(log n).
    pub(crate) fn first_free(
        &self,
        family: Family,
        lo: u128,
        hi: u128,
        avoid_buggy: bool,
    ) -> Option<IpAddr> {
        match family {
            Family::V4 if avoid_buggy => {
                let (clo, chi) = clean_bounds(lo, hi)?;
                let c = self.v4_clean.first_absent(clo, chi)?;
                from_bits(family, from_clean_index(c))
            }
            Family::V4 => from_bits(family, self.v4.first_absent(lo, hi)?),
            Family::V6 => from_bits(family, self.v6.first_absent(lo, hi)?),
        }
    }

    /// How many addresses of `family` in `[lo, hi]` are used, not counting `.0`/`.255` when
    /// `avoid_buggy` is set.
    pub(crate) fn count(&self, family: Family, lo: u128, hi: u128, avoid_buggy: bool) -> u128 {
        match family {
            Family::V4 if avoid_buggy => {
                clean_bounds(lo, hi).map_or(0, |(clo, chi)| self.v4_clean.count_in(clo, chi))
            }
            Family::V4 => self.v4.count_in(lo, hi),
            Family::V6 => self.v6.count_in(lo, hi),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
    }

    fn b(s: &str) -> u128 {
        to_bits(ip(s))
    }

    #[test]
    fn avoid_buggy_skips_over_full_blocks_and_edges() {
        let mut used = UsedIndex::default();
        // Fill 198.51.100.1..=254 and 198.51.101.1..=254: the clean set is one run, so the next
        // free non-buggy address is found with one lookup.
        for block in [100u8, 101] {
            for last in 1..=254u8 {
                used.insert(IpAddr::from([198, 51, block, last]));
            }
        }
        let (lo, hi) = (b("198.51.100.0"), b("198.51.102.255"));
        assert_eq!(
            used.first_free(Family::V4, lo, hi, true),
            Some(ip("198.51.102.1"))
        );
        assert_eq!(
            used.first_free(Family::V4, lo, hi, false),
            Some(ip("198.51.100.0"))
        );
        assert_eq!(used.count(Family::V4, lo, hi, true), 508);
        used.insert(ip("198.51.100.255"));
        assert_eq!(used.count(Family::V4, lo, hi, false), 509);
        assert_eq!(used.count(Family::V4, lo, hi, true), 508);
        used.remove(ip("198.51.101.7"));
        assert_eq!(
            used.first_free(Family::V4, lo, hi, true),
            Some(ip("198.51.101.7"))
        );
        // A range holding only buggy addresses has nothing to offer.
        let (lo, hi) = (b("198.51.100.255"), b("198.51.101.0"));
        assert_eq!(used.first_free(Family::V4, lo, hi, true), None);
        assert_eq!(used.count(Family::V4, lo, hi, true), 0);
    }

    #[test]
    fn families_are_separate() {
        let mut used = UsedIndex::default();
        used.insert(ip("2001:db8::1"));
        let (lo, hi) = (b("2001:db8::"), b("2001:db8::ff"));
        assert_eq!(
            used.first_free(Family::V6, lo, hi, true),
            Some(ip("2001:db8::"))
        );
        used.insert(ip("2001:db8::"));
        assert_eq!(
            used.first_free(Family::V6, lo, hi, false),
            Some(ip("2001:db8::2"))
        );
        assert_eq!(used.count(Family::V6, lo, hi, false), 2);
        assert_eq!(used.count(Family::V4, 0, u128::from(u32::MAX), false), 0);
    }
}
