//! Announcer election: which node answers ARP/NDP for each LoadBalancer IP.
//!
//! Owns the stable per-(node, IP) rank and the sticky ownership rule. It must not decide who is
//! alive or eligible (membership and the pool's node selectors do) and must not read anything
//! but its arguments, so that every speaker given the same view computes the same owner.
//!
//! # Wire-level contract
//!
//! [`rank`] is part of the protocol between speakers, exactly like the heartbeat format: during a
//! rolling upgrade old and new speakers must rank identically or two of them will announce the
//! same IP. Its definition is therefore fixed here and pinned by test vectors:
//!
//! ```text
//! key  = UTF-8 bytes of the node name, then 0x23 ('#'), then the IP's network-order octets
//!        (4 for IPv4, 16 for IPv6; an IPv4-mapped IPv6 address is a different key from the
//!        IPv4 address)
//! h    = FNV-1a 64 over key (offset basis 0xcbf29ce484222325, prime 0x100000001b3)
//! rank = splitmix64 finaliser of h:
//!        z = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9
//!        z = (z ^ (z >> 27)) * 0x94d049bb133111eb
//!        rank = z ^ (z >> 31)                      (wrapping 64-bit arithmetic)
//! ```
//!
//! std's `DefaultHasher` is deliberately not used: its algorithm is unspecified and may change
//! between Rust releases. The finaliser spreads FNV's weak high bits so that ranks of different
//! nodes for one IP compare like independent random numbers (rendezvous hashing).
//!
//! Higher rank is better. Equal ranks (a 64-bit collision) are broken by the lexicographically
//! smaller node name, so the order is total.

use std::net::IpAddr;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The node's preference for announcing `ip`; higher is better. See the module docs for the
/// exact, versioned definition; changing it is a breaking protocol change.
pub fn rank(node: &str, ip: IpAddr) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    feed(node.as_bytes());
    feed(b"#");
    match ip {
        IpAddr::V4(a) => feed(&a.octets()),
        IpAddr::V6(a) => feed(&a.octets()),
    }
    splitmix64(h)
}

fn splitmix64(h: u64) -> u64 {
    let mut z = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True when `a` is preferred over `b`: higher rank, then smaller name.
fn beats(a: (u64, &str), b: (u64, &str)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// The node that should announce `ip`, or `None` when no node is eligible and alive.
///
/// `eligible_alive` is every node that is alive (per membership, including this one) and
/// eligible for `ip` (pool node selectors, interfaces); duplicates are harmless. `claims(node)`
/// says whether that node currently announces `ip` (its heartbeat claims, or this node's own
/// state).
///
/// Sticky rule: if any eligible alive node claims `ip`, the best-ranked claimant keeps it;
/// otherwise the best-ranked eligible alive node gets it. Why sticky: a node that comes back
/// after a restart or partition does not snatch IPs back, so there is no second failover, no
/// flapping neighbour caches and no broken conntrack for established flows. Why still
/// deterministic: the answer depends only on the membership view (who is alive, who claims
/// what), so every speaker with the same view agrees. Two claimants (after a partition heals)
/// resolve to one: the lower-ranked one computes that it is not the owner and withdraws.
pub fn owner<'a, I, S>(
    ip: IpAddr,
    eligible_alive: I,
    claims: impl Fn(&str) -> bool,
) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    let mut best: Option<(u64, &'a str)> = None;
    let mut best_claimant: Option<(u64, &'a str)> = None;
    for node in eligible_alive {
        let name = node.as_ref();
        let candidate = (rank(name, ip), name);
        if best.is_none_or(|b| beats(candidate, b)) {
            best = Some(candidate);
        }
        if claims(name) && best_claimant.is_none_or(|b| beats(candidate, b)) {
            best_claimant = Some(candidate);
        }
    }
    best_claimant.or(best).map(|(_, name)| name)
}

/// All given nodes ordered from most to least preferred for `ip` by rank alone (claims
/// ignored), without duplicates: the fail-over order if the current owner dies and nobody
/// else claims the IP.
pub fn preference<'a, I, S>(ip: IpAddr, nodes: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    let mut ranked: Vec<(u64, &'a str)> = nodes
        .into_iter()
        .map(|n| (rank(n.as_ref(), ip), n.as_ref()))
        .collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    ranked.dedup();
    ranked.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn rank_matches_pinned_vectors() {
        // Computed independently (Python, from the definition in the module docs). If this test
        // fails, speakers of different versions would disagree on owners: do not update the
        // vectors without a protocol version bump.
        assert_eq!(splitmix64(0), 0);
        assert_eq!(splitmix64(FNV_OFFSET_BASIS), SPLITMIX_OF_BASIS);
        assert_eq!(rank("node-a", v4(198, 51, 100, 10)), RANK_A_V4);
        assert_eq!(rank("node-b", v4(198, 51, 100, 10)), RANK_B_V4);
        let v6: Ipv6Addr = "2001:db8::10".parse().expect("literal");
        assert_eq!(rank("node-a", IpAddr::V6(v6)), RANK_A_V6);
        assert_eq!(rank("", v4(0, 0, 0, 0)), RANK_EMPTY);
    }

    // From an independent Python implementation of the module-doc definition.
    const SPLITMIX_OF_BASIS: u64 = 0xf52a_15e9_a9b5_e89b;
    const RANK_A_V4: u64 = 0xe0c1_0cc3_5e75_a7d5;
    const RANK_B_V4: u64 = 0x8fe6_2791_dff3_1585;
    const RANK_A_V6: u64 = 0xa477_dedd_4251_a4b7;
    const RANK_EMPTY: u64 = 0x478a_b515_260d_f8e1;

    #[test]
    fn rank_separates_fields_and_families() {
        let ip = v4(198, 51, 100, 10);
        assert_ne!(rank("node-a", ip), rank("node-b", ip));
        assert_ne!(rank("node-a", ip), rank("node-a", v4(198, 51, 100, 11)));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 10).to_ipv6_mapped());
        assert_ne!(rank("node-a", ip), rank("node-a", mapped));
    }

    #[test]
    fn owner_is_deterministic_and_order_independent() {
        let nodes = ["node-a", "node-b", "node-c"];
        let reversed: Vec<&str> = nodes.iter().rev().copied().collect();
        let set: BTreeSet<String> = nodes.iter().map(|s| s.to_string()).collect();
        for i in 0..=255u8 {
            let ip = v4(203, 0, 113, i);
            let a = owner(ip, &nodes, |_| false);
            assert_eq!(a, owner(ip, &reversed, |_| false));
            assert_eq!(a, owner(ip, &set, |_| false));
            assert_eq!(a, preference(ip, &nodes).first().copied());
            assert!(a.is_some());
        }
    }

    #[test]
    fn distribution_is_roughly_balanced() {
        let nodes = ["worker-1", "worker-2", "worker-3"];
        let mut count: BTreeMap<&str, u32> = BTreeMap::new();
        for i in 0..1000u32 {
            let [_, _, c, d] = i.to_be_bytes();
            let ip = if i % 2 == 0 {
                v4(198, 51, c, d)
            } else {
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    u16::from(c),
                    u16::from(d),
                ))
            };
            if let Some(o) = owner(ip, &nodes, |_| false) {
                *count.entry(o).or_default() += 1;
            }
        }
        assert_eq!(count.values().sum::<u32>(), 1000);
        // Expected 333 each (binomial sd ~15); 270..=400 is over 4 sd either way.
        for (node, n) in &count {
            assert!((270..=400).contains(n), "{node} got {n} of 1000: {count:?}");
        }
    }

    #[test]
    fn returning_node_does_not_snatch() {
        let ip = v4(198, 51, 100, 7);
        let order = preference(ip, &["n1", "n2", "n3"]);
        let (best, second) = (order[0], order[1]);
        // The best node was away; the second-best took over and claims the IP.
        assert_eq!(owner(ip, &[second, order[2]], |_| false), Some(second));
        // The best node comes back: the claimant keeps the IP.
        assert_eq!(owner(ip, &order, |n| n == second), Some(second));
        // Once the claimant dies, the best alive node takes it.
        assert_eq!(owner(ip, &[best, order[2]], |_| false), Some(best));
    }

    #[test]
    fn two_claimants_resolve_to_the_better_ranked() {
        let ip = v4(198, 51, 100, 8);
        let order = preference(ip, &["n1", "n2", "n3"]);
        let claimants = [order[1], order[2]];
        let o = owner(ip, &order, |n| claimants.contains(&n));
        assert_eq!(o, Some(order[1]));
        // Both claimants compute the same answer from the same view; the loser withdraws.
        let o2 = owner(ip, &order, |n| n == order[2] || n == order[1]);
        assert_eq!(o, o2);
        // Claims by nodes that are not eligible/alive count for nothing.
        assert_eq!(owner(ip, &[order[2]], |n| n == order[0]), Some(order[2]));
    }

    #[test]
    fn empty_and_duplicate_inputs() {
        let ip = v4(198, 51, 100, 9);
        let none: [&str; 0] = [];
        assert_eq!(owner(ip, &none, |_| true), None);
        assert_eq!(owner(ip, &["x", "x"], |_| false), Some("x"));
        assert_eq!(preference(ip, &["x", "x", "y"]).len(), 2);
    }

    #[test]
    fn ties_break_by_smaller_name() {
        assert!(beats((5, "a"), (5, "b")));
        assert!(!beats((5, "b"), (5, "a")));
        assert!(beats((6, "z"), (5, "a")));
        assert!(!beats((5, "a"), (5, "a")));
    }
}
