//! The Services holding one IP: a sorted, exactly sized list of keys.
//!
//! Owns only the set representation. Nearly every IP has exactly one holder (sharing is opt-in
//! and limited by ports), and a `BTreeSet` would cost a whole B-tree leaf (about 280 bytes) for
//! that one key, per IP in use. A sorted boxed slice costs the key alone, and with the handful of
//! holders sharing allows, linear inserts are cheaper than tree nodes. It must not know what makes
//! holders compatible; the allocator decides who may be added.

use crate::request::ServiceKey;

/// Sorted, duplicate-free keys; iteration order is the keys' order, as a `BTreeSet` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Holders(Box<[ServiceKey]>);

impl Holders {
    /// Adds `svc`; false if it was already there.
    pub(crate) fn insert(&mut self, svc: &ServiceKey) -> bool {
        let Err(at) = self.0.binary_search(svc) else {
            return false;
        };
        // Rebuilt at exact size: a `Vec` would keep spare capacity for holders that rarely come.
        let mut keys = Vec::with_capacity(self.0.len() + 1);
        keys.extend_from_slice(&self.0[..at]);
        keys.push(svc.clone());
        keys.extend_from_slice(&self.0[at..]);
        self.0 = keys.into_boxed_slice();
        true
    }

    /// Removes `svc`; false if it was not there.
    pub(crate) fn remove(&mut self, svc: &ServiceKey) -> bool {
        let Ok(at) = self.0.binary_search(svc) else {
            return false;
        };
        let mut keys = std::mem::take(&mut self.0).into_vec();
        keys.remove(at);
        self.0 = keys.into_boxed_slice();
        true
    }

    /// Whether nobody holds the IP.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The holders, in key order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, ServiceKey> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Holders {
    type Item = &'a ServiceKey;
    type IntoIter = std::slice::Iter<'a, ServiceKey>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn key(s: &str) -> ServiceKey {
        ServiceKey(s.to_string())
    }

    #[test]
    fn behaves_like_a_btreeset() {
        let mut h = Holders::default();
        let mut model = BTreeSet::new();
        let ops = [
            (true, "ns/b"),
            (true, "ns/a"),
            (true, "ns/b"),
            (true, "ns/c"),
            (false, "ns/x"),
            (false, "ns/a"),
            (true, "a/z"),
            (false, "ns/a"),
            (false, "ns/b"),
            (false, "ns/c"),
            (false, "a/z"),
        ];
        for (insert, k) in ops {
            let (ours, want) = if insert {
                (h.insert(&key(k)), model.insert(key(k)))
            } else {
                (h.remove(&key(k)), model.remove(&key(k)))
            };
            assert_eq!(ours, want, "{insert} {k}");
            assert_eq!(
                h.iter().collect::<Vec<_>>(),
                model.iter().collect::<Vec<_>>()
            );
            assert_eq!(h.is_empty(), model.is_empty());
        }
    }
}
