//! A tiny deterministic pseudo-random generator and the hashes membership agrees on.
//!
//! Owns randomness for probe order, helper choice and anti-entropy partners. It must not read
//! OS randomness or clocks: a [`Rng`] is seeded by the caller, so a simulation with the same seed
//! replays exactly. Not cryptographic, and nothing here needs to be: a peer that could predict
//! the order gains nothing it could not get by sending packets.

/// splitmix64 (Steele, Lea, Flood 2014): one 64-bit state, full period, good enough statistics
/// for choosing members. Ten lines do not justify a dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0). Lemire's multiply-shift: the bias is below 2^-32
    /// for the member counts used here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let r = self.next_u64() >> 32;
        usize::try_from((r * (n & 0xffff_ffff)) >> 32).unwrap_or(0)
    }

    /// True with probability `ppm` per million.
    pub(crate) fn chance_ppm(&mut self, ppm: u32) -> bool {
        self.below(1_000_000) < ppm as usize
    }

    /// Fisher–Yates.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The splitmix64 finaliser.
pub(crate) fn mix(h: u64) -> u64 {
    let mut z = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a 64 over `bytes`, continued from `h` (start with [`FNV_BASIS`]).
pub(crate) fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// A member name's position on the probe ring and its anti-entropy bucket. Every speaker must
/// compute the same value (the ring and the buckets are shared), so it is defined here and not
/// by std's unspecified hasher.
pub(crate) fn name_hash(name: &str) -> u64 {
    mix(fnv(FNV_BASIS, name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for n in 1..200 {
            let x = a.below(n);
            assert_eq!(x, b.below(n));
            assert!(x < n);
        }
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn roughly_uniform() {
        let mut r = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10)] += 1;
        }
        // Expected 10,000 each (sd ~95); 9,500..10,500 is over 5 sd either way.
        assert!(
            counts.iter().all(|c| (9_500..10_500).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(3);
        let mut v: Vec<u32> = (0..100).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn name_hash_is_pinned() {
        // Part of the protocol (ring order, sync buckets): a change splits old and new speakers.
        assert_eq!(name_hash(""), mix(FNV_BASIS));
        assert_eq!(name_hash("node-a"), NODE_A);
    }

    // Computed from the definition (FNV-1a 64, then the splitmix64 finaliser).
    const NODE_A: u64 = 0x8299_5e46_723a_0e5f;
}
