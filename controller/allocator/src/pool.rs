//! Address pools: their configuration, their normalised address sets, and statistics.
//!
//! Owns what a pool *is*: the union of its ranges per family (merged, so overlapping entries in
//! one pool count once), minus `.0`/`.255` when avoidBuggyIPs is set. Answers membership, size,
//! "lowest free address" against a [`UsedIndex`], and pairwise overlaps. It must not decide who
//! gets which address or hold any per-Service state; memory is per range, never per address.

use std::net::IpAddr;

use crate::runs::RunSet;
use crate::used::UsedIndex;
use ferrolb_addresses::range::to_bits;
use ferrolb_addresses::{Family, IpRange, RangeError, is_buggy, parse_pool_entry};

/// One `IPAddressPool`, as the shell translated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pool's name (unique; on duplicates the last one given wins).
    pub name: String,
    /// Its ranges, possibly overlapping each other and of both families.
    pub ranges: Vec<IpRange>,
    /// `spec.autoAssign`. Carried for the shell, which uses it to build
    /// `Request::candidate_pools`; the allocator itself does not filter on it.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`: never hand out, count or accept IPv4 `.0`/`.255` from this pool.
    pub avoid_buggy_ips: bool,
}

impl PoolConfig {
    /// Builds a config from `spec.addresses` strings; the first bad entry is the error.
    pub fn parse<'a>(
        name: &str,
        entries: impl IntoIterator<Item = &'a str>,
        auto_assign: bool,
        avoid_buggy_ips: bool,
    ) -> Result<PoolConfig, RangeError> {
        let ranges = entries
            .into_iter()
            .map(parse_pool_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PoolConfig {
            name: name.to_string(),
            ranges,
            auto_assign,
            avoid_buggy_ips,
        })
    }
}

/// Per-family counters of one pool. All exact (u128), saturating only for `::/0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyStats {
    /// Addresses the pool can hand out (buggy ones excluded when avoidBuggyIPs).
    pub total: u128,
    /// Of those, how many are held by some Service (from this pool or an overlapping one).
    pub assigned: u128,
    /// `total - assigned`.
    pub available: u128,
}

/// Statistics of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// IPv4 counters.
    pub v4: FamilyStats,
    /// IPv6 counters.
    pub v6: FamilyStats,
}

impl PoolStats {
    /// The counters of `family`.
    pub fn family(&self, family: Family) -> &FamilyStats {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// Two pools sharing addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// First pool (by name).
    pub a: String,
    /// Second pool (by name).
    pub b: String,
    /// One maximal shared range (a pair with several disjoint shared ranges appears once per range).
    pub range: IpRange,
}

/// A pool normalised for allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) auto_assign: bool,
    pub(crate) avoid_buggy: bool,
    v4: RunSet,
    v6: RunSet,
    total_v4: u128,
    total_v6: u128,
}

impl Pool {
    pub(crate) fn from_config(config: PoolConfig) -> Pool {
        let (mut v4, mut v6) = (RunSet::default(), RunSet::default());
        for range in &config.ranges {
            let (lo, hi) = range.bounds();
            match range.family() {
                Family::V4 => v4.insert_range(lo, hi),
                Family::V6 => v6.insert_range(lo, hi),
            }
        }
        let total = |family: Family, runs: &RunSet| {
            runs.iter()
                .filter_map(|(lo, hi)| IpRange::from_bounds(family, lo, hi))
                .fold(0u128, |acc, r| {
                    acc.saturating_add(r.usable_len(config.avoid_buggy_ips))
                })
        };
        let (total_v4, total_v6) = (total(Family::V4, &v4), total(Family::V6, &v6));
        Pool {
            name: config.name,
            auto_assign: config.auto_assign,
            avoid_buggy: config.avoid_buggy_ips,
            v4,
            v6,
            total_v4,
            total_v6,
        }
    }

    fn runs(&self, family: Family) -> &RunSet {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Whether the pool can hand out `ip` (inside a range, and not buggy if it avoids those).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.runs(Family::of(ip)).contains(to_bits(ip)) && !(self.avoid_buggy && is_buggy(ip))
    }

    /// Whether the pool has any range of `family` (even one made only of buggy addresses).
    pub(crate) fn has_family(&self, family: Family) -> bool {
        !self.runs(family).is_empty()
    }

    /// Addresses of `family` the pool can hand out.
    pub(crate) fn total(&self, family: Family) -> u128 {
        match family {
            Family::V4 => self.total_v4,
            Family::V6 => self.total_v6,
        }
    }

    /// The lowest address of `family` in the pool that nobody holds. O(ranges · log n).
    pub(crate) fn lowest_free(&self, used: &UsedIndex, family: Family) -> Option<IpAddr> {
        self.runs(family)
            .iter()
            .find_map(|(lo, hi)| used.first_free(family, lo, hi, self.avoid_buggy))
    }

    /// Counters of `family` against the used index.
    pub(crate) fn stats(&self, used: &UsedIndex, family: Family) -> FamilyStats {
        let total = self.total(family);
        let assigned = self.runs(family).iter().fold(0u128, |acc, (lo, hi)| {
            acc.saturating_add(used.count(family, lo, hi, self.avoid_buggy))
        });
        FamilyStats {
            total,
            assigned,
            available: total.saturating_sub(assigned),
        }
    }

    /// Maximal ranges shared with `other`, IPv4 first.
    pub(crate) fn overlaps_with(&self, other: &Pool) -> Vec<IpRange> {
        Family::ALL
            .into_iter()
            .flat_map(|family| {
                self.runs(family)
                    .intersection(other.runs(family))
                    .into_iter()
                    .filter_map(move |(lo, hi)| IpRange::from_bounds(family, lo, hi))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(entries: &[&str], avoid: bool) -> Pool {
        match PoolConfig::parse("p", entries.iter().copied(), true, avoid) {
            Ok(c) => Pool::from_config(c),
            Err(e) => panic!("bad test pool: {e}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
    }

    #[test]
    fn overlapping_entries_count_once() {
        let p = pool(
            &[
                "198.51.100.0/24",
                "198.51.100.10-198.51.100.20",
                "198.51.101.0/30",
            ],
            false,
        );
        assert_eq!(p.total(Family::V4), 256 + 4);
        let p = pool(&["198.51.100.0/24", "198.51.101.0/24"], true);
        assert_eq!(p.total(Family::V4), 508);
        assert!(!p.contains(ip("198.51.100.255")) && !p.contains(ip("198.51.101.0")));
        assert!(p.contains(ip("198.51.100.254")));
        assert_eq!(p.total(Family::V6), 0);
        assert!(!p.has_family(Family::V6));
    }

    #[test]
    fn huge_ipv6_pools_are_exact_and_cheap() {
        let p = pool(&["2001:db8::/48", "2001:db8:0:1::/64"], false);
        assert_eq!(
            p.total(Family::V6),
            1u128 << 80,
            "the /64 lies inside the /48"
        );
        let mut used = UsedIndex::default();
        assert_eq!(p.lowest_free(&used, Family::V6), Some(ip("2001:db8::")));
        used.insert(ip("2001:db8::"));
        assert_eq!(p.lowest_free(&used, Family::V6), Some(ip("2001:db8::1")));
        let s = p.stats(&used, Family::V6);
        assert_eq!(
            (s.total, s.assigned, s.available),
            (1 << 80, 1, (1 << 80) - 1)
        );
        let everything = pool(&["::/0"], false);
        assert_eq!(everything.total(Family::V6), u128::MAX);
    }

    #[test]
    fn overlaps_are_maximal_ranges() {
        let a = pool(
            &["198.51.100.0/28", "198.51.100.32/28", "2001:db8::/124"],
            false,
        );
        let b = pool(&["198.51.100.8-198.51.100.40", "2001:db8::8/125"], false);
        let got: Vec<String> = a.overlaps_with(&b).iter().map(|r| r.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "198.51.100.8-198.51.100.15",
                "198.51.100.32-198.51.100.40",
                "2001:db8::8-2001:db8::f"
            ]
        );
    }
}
