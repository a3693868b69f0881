//! A small, immutable string map for what the controller keeps of every Service: its labels and
//! the annotations ferrolb reads.
//!
//! Owns only the representation. A `BTreeMap<String, String>` costs a 544-byte leaf node plus one
//! allocation per key and per value, per Service, even for two labels; this map keeps every key and
//! value, sorted by key, in one string separated by NULs, so a Service's labels cost one small
//! allocation. Labels never hold a NUL (the API server allows letters, digits and `-_./` only);
//! should a key or value hold one anyway, the map keeps their boundaries in a slice beside the
//! string instead. Lookups scan the few pairs a Service has. It is built once per watch event and
//! never edited in place. It must not interpret keys or values.

use std::collections::BTreeMap;
use std::fmt;

use ferrolb_crds::selector::Labels;

/// Separates keys and values in [`StrMap`]'s text.
const SEP: char = '\0';

/// Sorted, duplicate-free `(key, value)` pairs. With `ends` empty, `text` is `k0 NUL v0 NUL k1 NUL
/// v1 …` (empty for no pair); otherwise (a NUL in some key or value) `text` is `k0 v0 k1 v1 …`
/// concatenated, `ends[2i]` is where key `i` ends and `ends[2i + 1]` where its value ends. The
/// form follows from the pairs alone, so equal maps have equal fields.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StrMap {
    text: Box<str>,
    ends: Box<[usize]>,
}

impl StrMap {
    /// Builds a map from pairs; on a repeated key the last value wins, as in a `BTreeMap`.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> StrMap {
        let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        // Stable, so among equal keys the input order is kept and the last one can be chosen.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut unique: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match unique.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => unique.push((k, v)),
            }
        }
        let bytes: usize = unique.iter().map(|(k, v)| k.len() + v.len()).sum();
        if !unique
            .iter()
            .any(|(k, v)| k.contains(SEP) || v.contains(SEP))
        {
            let mut text = String::with_capacity(bytes + 2 * unique.len());
            for (i, (k, v)) in unique.into_iter().enumerate() {
                if i > 0 {
                    text.push(SEP);
                }
                text.push_str(k);
                text.push(SEP);
                text.push_str(v);
            }
            return StrMap {
                text: text.into_boxed_str(),
                ends: Box::default(),
            };
        }
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(unique.len() * 2);
        for (k, v) in unique {
            text.push_str(k);
            ends.push(text.len());
            text.push_str(v);
            ends.push(text.len());
        }
        StrMap {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Whether `text` holds NUL-separated pairs (rather than boundaries in `ends`).
    fn separated(&self) -> bool {
        self.ends.is_empty()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        match self.separated() {
            true if self.text.is_empty() => 0,
            true => self.text.matches(SEP).count().div_ceil(2),
            false => self.ends.len() / 2,
        }
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.ends.is_empty()
    }

    /// The value of `key`: a scan of the separated form (a Service has a few labels), a
    /// binary search of the other.
    pub fn get(&self, key: &str) -> Option<&str> {
        if self.separated() {
            return self
                .iter()
                .take_while(|(k, _)| *k <= key)
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v);
        }
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, v) = self.pair(mid);
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut parts = (self.separated() && !self.text.is_empty()).then(|| self.text.split(SEP));
        let mut bounded = 0..if self.separated() { 0 } else { self.len() };
        std::iter::from_fn(move || match parts.as_mut() {
            // The separated form always has an even number of parts.
            Some(p) => Some((p.next()?, p.next()?)),
            None => bounded.next().map(|i| self.pair(i)),
        })
    }

    /// Pair `i` (< `len()`) of the form with boundaries. The bounds come from construction and
    /// always fall on the joins between the strings pushed, so the slicing cannot fail; `get`
    /// keeps that free of panics.
    fn pair(&self, i: usize) -> (&str, &str) {
        let start = match i {
            0 => 0,
            _ => self.ends.get(2 * i - 1).copied().unwrap_or_default(),
        };
        let key_end = self.ends.get(2 * i).copied().unwrap_or(start);
        let value_end = self.ends.get(2 * i + 1).copied().unwrap_or(key_end);
        (
            self.text.get(start..key_end).unwrap_or_default(),
            self.text.get(key_end..value_end).unwrap_or_default(),
        )
    }
}

impl From<&BTreeMap<String, String>> for StrMap {
    fn from(map: &BTreeMap<String, String>) -> StrMap {
        StrMap::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl Labels for StrMap {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl fmt::Debug for StrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn answers_like_the_btreemap_it_came_from() {
        let cases: [&[(&str, &str)]; 4] = [
            &[],
            &[("app", "web")],
            &[
                ("tier", "t3"),
                ("app", "bench"),
                ("", "empty key"),
                ("e", ""),
            ],
            &[("ferrolb.io/ip-allocated-from-pool", "blue"), ("a", "ü/é")],
        ];
        let with_nul: [&[(&str, &str)]; 3] = [
            &[("note", "a\0b")],
            &[("a", ""), ("b\0", "x"), ("c", "\0")],
            &[("", "")],
        ];
        for pairs in cases.into_iter().chain(with_nul) {
            let m = map(pairs);
            let s = StrMap::from(&m);
            assert_eq!(s.len(), m.len());
            assert_eq!(s.is_empty(), m.is_empty());
            assert_eq!(
                s.iter().collect::<Vec<_>>(),
                m.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>()
            );
            for (k, v) in &m {
                assert_eq!(s.get(k), Some(v.as_str()), "{k}");
                assert!(s.contains_key(k));
            }
            for absent in ["zzz", "ap", "appx", "0", "ferrolb.io/"] {
                assert_eq!(s.get(absent), m.get(absent).map(String::as_str), "{absent}");
            }
        }
    }

    #[test]
    fn labels_cost_one_allocation_and_a_nul_keeps_boundaries() {
        let labels = StrMap::from_pairs([("tier", "web"), ("app", "shop")]);
        assert_eq!(
            (&*labels.text, labels.ends.len()),
            ("app\0shop\0tier\0web", 0)
        );
        let odd = StrMap::from_pairs([("app", "a\0b")]);
        assert_eq!((&*odd.text, &*odd.ends), ("appa\0b", &[3, 6][..]));
        assert_eq!(odd.get("app"), Some("a\0b"));
        assert_ne!(StrMap::from_pairs([("", "")]), StrMap::default());
        assert_eq!(StrMap::from_pairs([("", "")]).len(), 1);
    }

    #[test]
    fn the_last_of_repeated_keys_wins_and_equal_maps_are_equal() {
        let s = StrMap::from_pairs([("b", "1"), ("a", "x"), ("b", "2")]);
        assert_eq!(s.get("b"), Some("2"));
        assert_eq!(s, StrMap::from_pairs([("a", "x"), ("b", "2")]));
        assert_ne!(s, StrMap::from_pairs([("a", "x"), ("b", "3")]));
        // The boundaries, not just the text, tell maps apart.
        assert_ne!(
            StrMap::from_pairs([("ab", "c")]),
            StrMap::from_pairs([("a", "bc")])
        );
        assert_eq!(format!("{s:?}"), r#"{"a": "x", "b": "2"}"#);
    }
}
