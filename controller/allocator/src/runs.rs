//! A set of integers stored as merged, inclusive runs in a `BTreeMap<start, end>`.
//!
//! Owns the interval arithmetic behind pools (their address ranges) and the used-address index:
//! membership, insert/remove of one value, "lowest absent value in `[lo, hi]`" and counting, each
//! a couple of O(log n) map lookups. Memory is proportional to the number of runs, never to the
//! number of values covered. It must not know what the integers mean (families, pools, buggy
//! addresses); callers keep each family in its own set.

use std::collections::BTreeMap;

use ferrolb_addresses::range::span;

/// Merged inclusive runs. Invariant: runs are disjoint and never adjacent (`end + 1 < next start`),
/// so the representation of a given set is unique and the value after a run is always absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunSet {
    runs: BTreeMap<u128, u128>,
}

impl RunSet {
    /// Adds every value of `[lo, hi]`, merging with overlapping or adjacent runs.
    pub(crate) fn insert_range(&mut self, lo: u128, hi: u128) {
        let (mut new_lo, mut new_hi) = (lo.min(hi), lo.max(hi));
        if let Some((&s, &e)) = self.runs.range(..=new_lo).next_back()
            && e.saturating_add(1) >= new_lo
        {
            self.runs.remove(&s);
            new_lo = s;
            new_hi = new_hi.max(e);
        }
        // Each pass removes one run, so this ends after at most `runs.len()` passes.
        while let Some((&s, &e)) = self.runs.range(new_lo..=new_hi.saturating_add(1)).next() {
            self.runs.remove(&s);
            new_hi = new_hi.max(e);
        }
        self.runs.insert(new_lo, new_hi);
    }

    /// Adds one value.
    pub(crate) fn insert(&mut self, value: u128) {
        self.insert_range(value, value);
    }

    /// Removes one value; false if it was absent.
    pub(crate) fn remove(&mut self, value: u128) -> bool {
        let Some((&s, &e)) = self.runs.range(..=value).next_back() else {
            return false;
        };
        if e < value {
            return false;
        }
        self.runs.remove(&s);
        if s < value {
            self.runs.insert(s, value - 1);
        }
        if value < e {
            self.runs.insert(value + 1, e);
        }
        true
    }

    /// Whether `value` is in the set.
    pub(crate) fn contains(&self, value: u128) -> bool {
        self.runs
            .range(..=value)
            .next_back()
            .is_some_and(|(_, &e)| e >= value)
    }

    /// The lowest value in `[lo, hi]` that is not in the set. O(log n): runs are merged, so the
    /// value right after the run covering `lo` is absent.
    pub(crate) fn first_absent(&self, lo: u128, hi: u128) -> Option<u128> {
        let mut candidate = lo;
        if let Some((_, &e)) = self.runs.range(..=lo).next_back()
            && e >= lo
        {
            candidate = e.checked_add(1)?;
        }
        (candidate <= hi).then_some(candidate)
    }

    /// How many values of `[lo, hi]` are in the set (saturating). O(log n + runs inside).
    pub(crate) fn count_in(&self, lo: u128, hi: u128) -> u128 {
        if lo > hi {
            return 0;
        }
        let mut total = 0u128;
        if let Some((_, &e)) = self.runs.range(..lo).next_back()
            && e >= lo
        {
            total = span(lo, e.min(hi));
        }
        for (&s, &e) in self.runs.range(lo..=hi) {
            total = total.saturating_add(span(s, e.min(hi)));
        }
        total
    }

    /// Total number of values (saturating); only the tests need it.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u128 {
        self.runs
            .iter()
            .fold(0u128, |acc, (&s, &e)| acc.saturating_add(span(s, e)))
    }

    /// The runs in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.runs.iter().map(|(&s, &e)| (s, e))
    }

    /// True when no value is in the set.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs of the intersection with `other`, in increasing order (a linear merge).
    pub(crate) fn intersection(&self, other: &RunSet) -> Vec<(u128, u128)> {
        let mut out = Vec::new();
        let mut a = self.iter().peekable();
        let mut b = other.iter().peekable();
        while let (Some(&(s1, e1)), Some(&(s2, e2))) = (a.peek(), b.peek()) {
            let (lo, hi) = (s1.max(s2), e1.min(e2));
            if lo <= hi {
                out.push((lo, hi));
            }
            // Advance whichever run ends first; both when they end together.
            if e1 <= e2 {
                a.next();
            }
            if e2 <= e1 {
                b.next();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut s = RunSet::default();
        s.insert(5);
        s.insert(7);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(5, 5), (7, 7)]);
        s.insert(6);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(5, 7)]);
        s.insert_range(0, 20);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 20)]);
        s.insert_range(u128::MAX - 1, u128::MAX);
        s.insert(21);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![(0, 21), (u128::MAX - 1, u128::MAX)]
        );
        assert_eq!(s.first_absent(u128::MAX - 1, u128::MAX), None);
        assert_eq!(s.count_in(0, u128::MAX), 24);
    }

    #[test]
    fn remove_splits_runs() {
        let mut s = RunSet::default();
        s.insert_range(10, 20);
        assert!(s.remove(15));
        assert!(!s.remove(15));
        assert!(!s.remove(99));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(10, 14), (16, 20)]);
        assert_eq!(s.first_absent(10, 20), Some(15));
        assert_eq!(s.first_absent(16, 20), None);
        assert_eq!(s.first_absent(16, 21), Some(21));
        assert!(s.remove(10) && s.remove(20));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(11, 14), (16, 19)]);
        assert_eq!(s.count_in(12, 17), 5);
    }

    #[test]
    fn huge_ranges_count_without_overflow() {
        let mut s = RunSet::default();
        s.insert_range(0, u128::MAX);
        assert_eq!(s.total(), u128::MAX);
        assert_eq!(s.count_in(0, u128::MAX), u128::MAX);
        assert_eq!(s.first_absent(0, u128::MAX), None);
        assert!(s.remove(0));
        assert_eq!(s.total(), u128::MAX);
        assert_eq!(s.first_absent(0, u128::MAX), Some(0));
    }

    proptest! {
        /// The run set behaves exactly like a BTreeSet of the same values.
        #[test]
        fn matches_a_plain_set(ops in proptest::collection::vec((0u8..4, 0u128..64, 0u128..8), 0..80)) {
            let mut runs = RunSet::default();
            let mut model = BTreeSet::new();
            for (op, v, w) in ops {
                match op {
                    0 => { runs.insert(v); model.insert(v); }
                    1 => { prop_assert_eq!(runs.remove(v), model.remove(&v)); }
                    2 => { runs.insert_range(v, v + w); model.extend(v..=v + w); }
                    _ => {
                        let other: BTreeSet<u128> = (v..=v + w * 4).step_by(3).collect();
                        let mut other_runs = RunSet::default();
                        for x in &other { other_runs.insert(*x); }
                        let got: BTreeSet<u128> = runs
                            .intersection(&other_runs)
                            .into_iter()
                            .flat_map(|(a, b)| a..=b)
                            .collect();
                        let want: BTreeSet<u128> = model.intersection(&other).copied().collect();
                        prop_assert_eq!(got, want);
                    }
                }
                // Canonical form: disjoint, non-adjacent runs.
                let v: Vec<_> = runs.iter().collect();
                for pair in v.windows(2) {
                    prop_assert!(pair[0].1 + 1 < pair[1].0, "{:?}", v);
                }
                prop_assert_eq!(runs.total(), model.len() as u128);
                for lo in 0u128..72 {
                    prop_assert_eq!(runs.contains(lo), model.contains(&lo));
                    let hi = lo + w;
                    let absent = (lo..=hi).find(|x| !model.contains(x));
                    prop_assert_eq!(runs.first_absent(lo, hi), absent);
                    prop_assert_eq!(runs.count_in(lo, hi), model.range(lo..=hi).count() as u128);
                }
            }
        }
    }
}
