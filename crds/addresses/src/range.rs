//! Address ranges: parsing pool entries (CIDR or `a-b`), exact counting and overlap.
//!
//! Owns the address arithmetic pools rely on: the mapping of addresses to integers (which the
//! allocator's interval sets use), the inclusive [`IpRange`], and the "buggy" IPv4 addresses
//! (`.0`/`.255`). It must not know about pools, Services or allocation state, and it never walks
//! addresses one by one: every count is arithmetic so an IPv6 /48 costs the same as a /30.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// "IPv4" or "IPv6", as Kubernetes spells them in `spec.ipFamilies`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// Number of address bits.
    fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address as an integer (IPv4 in the low 32 bits). Families are kept apart by callers.
pub fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Inverse of [`to_bits`]; `None` when `bits` does not fit the family (never for valid input,
/// but returning an option keeps this panic-free whatever the arithmetic upstream did).
pub fn from_bits(family: Family, bits: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(bits)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        Family::V6 => Some(IpAddr::V6(Ipv6Addr::from(bits))),
    }
}

/// True for IPv4 addresses ending in `.0` or `.255`, which some old client stacks treat as
/// network/broadcast addresses even inside a larger prefix (MetalLB's `avoidBuggyIPs`).
/// Always false for IPv6.
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// Number of addresses in the inclusive integer interval `[lo, hi]`, saturating at u128::MAX
/// (only `::/0` has 2^128 addresses, one more than u128 can hold).
pub fn span(lo: u128, hi: u128) -> u128 {
    hi.saturating_sub(lo).saturating_add(1)
}

/// Number of `x <= n` with `x % 256 == rem`.
fn count_le_with_low_byte(n: u128, rem: u128) -> u128 {
    if n < rem { 0 } else { (n - rem) / 256 + 1 }
}

// "Clean" IPv4 indices number the non-buggy addresses densely: x.y.z.1 ..= x.y.z.254 of each
// /24 map to 254 consecutive integers. An interval set over clean indices merges runs across
// the .255/.0 gaps, which is what lets avoidBuggyIPs pools find their lowest free address with
// one range lookup instead of hopping over every fully used /24.

/// Clean index of the IPv4 address `bits`, or `None` if it is buggy.
pub fn clean_index(bits: u128) -> Option<u128> {
    let low = bits & 0xff;
    if low == 0 || low == 255 {
        None
    } else {
        Some((bits >> 8) * 254 + (low - 1))
    }
}

/// IPv4 address bits of a clean index.
pub fn from_clean_index(index: u128) -> u128 {
    ((index / 254) << 8) | (index % 254 + 1)
}

/// The clean indices of the non-buggy addresses inside IPv4 `[lo, hi]`, if there are any.
pub fn clean_bounds(lo: u128, hi: u128) -> Option<(u128, u128)> {
    let first = match lo & 0xff {
        0 => lo + 1,
        255 => lo + 2,
        _ => lo,
    };
    let last = match hi & 0xff {
        255 => hi - 1,
        0 => hi.checked_sub(2)?,
        _ => hi,
    };
    if first > last {
        return None;
    }
    Some((clean_index(first)?, clean_index(last)?))
}

/// An inclusive range of addresses of one family. Always non-empty (`start <= end`).
///
/// Fields are private so the invariants (same family, ordered) cannot be broken; build one with
/// [`IpRange::new`], [`IpRange::cidr`], [`IpRange::single`] or [`parse_pool_entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

// A range is never empty, so an `is_empty` would only ever say false.
#[allow(clippy::len_without_is_empty)]
impl IpRange {
    /// The inclusive range `start..=end`; both ends must be the same family and ordered.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<IpRange, RangeError> {
        let entry = || format!("{start}-{end}");
        if Family::of(start) != Family::of(end) {
            return Err(RangeError::MixedFamilies { entry: entry() });
        }
        if to_bits(start) > to_bits(end) {
            return Err(RangeError::StartAfterEnd { entry: entry() });
        }
        Ok(IpRange { start, end })
    }

    /// The one-address range `ip..=ip`.
    pub fn single(ip: IpAddr) -> IpRange {
        IpRange { start: ip, end: ip }
    }

    /// The prefix `ip/prefix`; host bits set in `ip` are masked off, as MetalLB does.
    pub fn cidr(ip: IpAddr, prefix: u8) -> Result<IpRange, RangeError> {
        let family = Family::of(ip);
        let bits = family.bits();
        if u32::from(prefix) > bits {
            return Err(RangeError::BadPrefix {
                entry: format!("{ip}/{prefix}"),
                prefix: prefix.to_string(),
                family,
            });
        }
        let host_bits = bits - u32::from(prefix);
        // All-ones over the host bits; checked_shl because shifting by the full width panics.
        let host_mask = 1u128
            .checked_shl(host_bits)
            .map_or(u128::MAX, |v| v.wrapping_sub(1));
        let start = to_bits(ip) & !host_mask;
        let end = start | host_mask;
        let build = |v| from_bits(family, v);
        match (build(start), build(end)) {
            (Some(start), Some(end)) => Ok(IpRange { start, end }),
            // Unreachable for a valid prefix; reported rather than panicking.
            _ => Err(RangeError::BadPrefix {
                entry: format!("{ip}/{prefix}"),
                prefix: prefix.to_string(),
                family,
            }),
        }
    }

    /// First address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// Last address (inclusive).
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// The range's family.
    pub fn family(&self) -> Family {
        Family::of(self.start)
    }

    /// Exact number of addresses, saturating at u128::MAX (only for `::/0`).
    pub fn len(&self) -> u128 {
        span(to_bits(self.start), to_bits(self.end))
    }

    /// Whether `ip` lies inside the range (false for the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family()
            && (to_bits(self.start)..=to_bits(self.end)).contains(&to_bits(ip))
    }

    /// The addresses shared with `other`, if any (none across families).
    pub fn overlap(&self, other: &IpRange) -> Option<IpRange> {
        if self.family() != other.family() {
            return None;
        }
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start <= end).then_some(IpRange { start, end })
    }

    /// Exact number of buggy (`.0`/`.255`) addresses inside, computed arithmetically.
    pub fn buggy_count(&self) -> u128 {
        if self.family() != Family::V4 {
            return 0;
        }
        let (lo, hi) = (to_bits(self.start), to_bits(self.end));
        [0u128, 255]
            .into_iter()
            .map(|rem| {
                let upto_hi = count_le_with_low_byte(hi, rem);
                let below_lo = lo
                    .checked_sub(1)
                    .map_or(0, |p| count_le_with_low_byte(p, rem));
                upto_hi - below_lo
            })
            .sum()
    }

    /// Addresses a pool can hand out from this range: all of them, or all but the buggy ones.
    pub fn usable_len(&self, avoid_buggy_ips: bool) -> u128 {
        if avoid_buggy_ips {
            self.len() - self.buggy_count()
        } else {
            self.len()
        }
    }

    /// Integer bounds, for the interval structures.
    pub fn bounds(&self) -> (u128, u128) {
        (to_bits(self.start), to_bits(self.end))
    }

    /// Range from integer bounds known to be valid for `family` and ordered.
    pub fn from_bounds(family: Family, lo: u128, hi: u128) -> Option<IpRange> {
        let start = from_bits(family, lo)?;
        let end = from_bits(family, hi)?;
        (lo <= hi).then_some(IpRange { start, end })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for IpRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_pool_entry(s)
    }
}

/// Parse one `IPAddressPool.spec.addresses` entry: a CIDR (`198.51.100.0/24`, `2001:db8::/120`,
/// host bits masked) or an inclusive range (`198.51.100.10-198.51.100.20`, spaces around `-`
/// tolerated). A bare address is rejected, as in MetalLB (write `/32` or `/128`).
pub fn parse_pool_entry(entry: &str) -> Result<IpRange, RangeError> {
    let trimmed = entry.trim();
    let owned = || trimmed.to_string();
    let parse_addr = |part: &str| {
        IpAddr::from_str(part.trim()).map_err(|_| RangeError::BadAddress {
            entry: owned(),
            part: part.trim().to_string(),
        })
    };
    // IPv6 addresses never contain '-', so '-' always means a range.
    if let Some((a, b)) = trimmed.split_once('-') {
        let start = parse_addr(a)?;
        let end = parse_addr(b)?;
        if Family::of(start) != Family::of(end) {
            return Err(RangeError::MixedFamilies { entry: owned() });
        }
        if to_bits(start) > to_bits(end) {
            return Err(RangeError::StartAfterEnd { entry: owned() });
        }
        return Ok(IpRange { start, end });
    }
    if let Some((addr, prefix)) = trimmed.split_once('/') {
        let ip = parse_addr(addr)?;
        let family = Family::of(ip);
        let prefix_str = prefix.trim();
        let bad_prefix = || RangeError::BadPrefix {
            entry: owned(),
            prefix: prefix_str.to_string(),
            family,
        };
        // Digits only: u8::from_str would also accept "+24".
        if prefix_str.is_empty() || !prefix_str.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_prefix());
        }
        let prefix = u8::from_str(prefix_str).map_err(|_| bad_prefix())?;
        return IpRange::cidr(ip, prefix).map_err(|_| bad_prefix());
    }
    Err(RangeError::Malformed { entry: owned() })
}

/// Why a pool entry or range is invalid. Messages start with the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Neither `addr/prefix` nor `start-end`.
    #[error("{entry}: not a CIDR or range")]
    Malformed {
        /// The entry as given (trimmed).
        entry: String,
    },
    /// One side does not parse as an IP address.
    #[error("{entry}: {part:?} is not an IP address")]
    BadAddress {
        /// The entry as given (trimmed).
        entry: String,
        /// The part that failed to parse.
        part: String,
    },
    /// The prefix length is not a number in range for the family.
    #[error("{entry}: prefix length {prefix:?} is not valid for {family} (0-{max})", max = family.bits())]
    BadPrefix {
        /// The entry as given (trimmed).
        entry: String,
        /// The prefix text.
        prefix: String,
        /// Family of the address part.
        family: Family,
    },
    /// One end IPv4, the other IPv6.
    #[error("{entry}: mixes IPv4 and IPv6")]
    MixedFamilies {
        /// The entry as given (trimmed).
        entry: String,
    },
    /// `start-end` with `start > end`.
    #[error("{entry}: start is after end")]
    StartAfterEnd {
        /// The entry as given (trimmed).
        entry: String,
    },
}

impl RangeError {
    /// Stable label for metrics and conditions.
    pub fn reason(&self) -> RangeReason {
        match self {
            RangeError::Malformed { .. } => RangeReason::MalformedEntry,
            RangeError::BadAddress { .. } => RangeReason::BadAddress,
            RangeError::BadPrefix { .. } => RangeReason::BadPrefix,
            RangeError::MixedFamilies { .. } => RangeReason::MixedFamilies,
            RangeError::StartAfterEnd { .. } => RangeReason::StartAfterEnd,
        }
    }
}

/// Why a pool entry is invalid, as a stable label for metrics and conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RangeReason {
    /// A pool entry is neither a CIDR nor a range.
    MalformedEntry,
    /// A pool entry has an unparsable address.
    BadAddress,
    /// A pool entry has an invalid prefix length.
    BadPrefix,
    /// A pool range mixes IPv4 and IPv6.
    MixedFamilies,
    /// A pool range starts after it ends.
    StartAfterEnd,
}

impl RangeReason {
    /// snake_case label, stable across releases.
    pub fn as_str(self) -> &'static str {
        match self {
            RangeReason::MalformedEntry => "malformed_entry",
            RangeReason::BadAddress => "bad_address",
            RangeReason::BadPrefix => "bad_prefix",
            RangeReason::MixedFamilies => "mixed_families",
            RangeReason::StartAfterEnd => "start_after_end",
        }
    }
}

impl fmt::Display for RangeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
    }

    fn range(s: &str) -> IpRange {
        parse_pool_entry(s).unwrap_or_else(|e| panic!("bad test range {s}: {e}"))
    }

    #[test]
    fn parses_cidrs_and_masks_host_bits() {
        let r = range("198.51.100.77/24");
        assert_eq!(
            (r.start(), r.end()),
            (ip("198.51.100.0"), ip("198.51.100.255"))
        );
        let r = range("2001:db8::1234/120");
        assert_eq!(
            (r.start(), r.end()),
            (ip("2001:db8::1200"), ip("2001:db8::12ff"))
        );
        let r = range("203.0.113.9/32");
        assert_eq!((r.start(), r.end()), (ip("203.0.113.9"), ip("203.0.113.9")));
        let r = range("0.0.0.0/0");
        assert_eq!(r.len(), 1 << 32);
        let r = range("::/0");
        assert_eq!(r.end(), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    }

    #[test]
    fn parses_ranges_with_spaces() {
        let r = range("198.51.100.10-198.51.100.20");
        assert_eq!(
            (r.start(), r.end()),
            (ip("198.51.100.10"), ip("198.51.100.20"))
        );
        let r = range(" 198.51.100.10 - 198.51.100.20 ");
        assert_eq!(r.len(), 11);
        let r = range("2001:db8::1-2001:db8::ff");
        assert_eq!(r.len(), 255);
        assert_eq!(
            "198.51.100.5-198.51.100.5"
                .parse::<IpRange>()
                .map(|r| r.len()),
            Ok(1)
        );
    }

    #[test]
    fn rejects_bad_entries_in_words() {
        let msg = |s: &str| match parse_pool_entry(s) {
            Ok(r) => panic!("{s} parsed as {r}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            msg("198.51.100.20-198.51.100.10"),
            "198.51.100.20-198.51.100.10: start is after end"
        );
        assert_eq!(
            msg("198.51.100.1-2001:db8::1"),
            "198.51.100.1-2001:db8::1: mixes IPv4 and IPv6"
        );
        assert_eq!(msg("198.51.100.1"), "198.51.100.1: not a CIDR or range");
        assert_eq!(msg(""), ": not a CIDR or range");
        assert_eq!(msg("blue"), "blue: not a CIDR or range");
        assert_eq!(
            msg("198.51.100.0/33"),
            "198.51.100.0/33: prefix length \"33\" is not valid for IPv4 (0-32)"
        );
        assert_eq!(
            msg("2001:db8::/129"),
            "2001:db8::/129: prefix length \"129\" is not valid for IPv6 (0-128)"
        );
        assert!(msg("198.51.100.0/+24").contains("prefix length"));
        assert!(msg("198.51.100.0/").contains("prefix length"));
        assert!(msg("198.51.100.0/999999999999").contains("prefix length"));
        assert_eq!(
            msg("198.51.100.1-198.51.100.x"),
            "198.51.100.1-198.51.100.x: \"198.51.100.x\" is not an IP address"
        );
        assert!(msg("198.51.100.1-198.51.100.2-198.51.100.3").contains("not an IP address"));
        assert_eq!(
            parse_pool_entry("198.51.100.9-198.51.100.1").map_err(|e| e.reason().as_str()),
            Err("start_after_end")
        );
    }

    #[test]
    fn counts_are_exact_for_large_ipv6() {
        assert_eq!(range("2001:db8::/64").len(), 1u128 << 64);
        assert_eq!(range("2001:db8::/48").len(), 1u128 << 80);
        assert_eq!(range("2001:db8::/32").len(), 1u128 << 96);
        assert_eq!(range("::/1").len(), 1u128 << 127);
        assert_eq!(
            range("::/0").len(),
            u128::MAX,
            "saturates for the whole space"
        );
        assert_eq!(range("2001:db8::/64").buggy_count(), 0);
        assert_eq!(range("2001:db8::/64").usable_len(true), 1u128 << 64);
    }

    #[test]
    fn buggy_counts_are_exact() {
        assert_eq!(range("198.51.100.0/24").buggy_count(), 2);
        assert_eq!(range("198.51.100.0/24").usable_len(true), 254);
        assert_eq!(range("198.51.100.1-198.51.100.254").buggy_count(), 0);
        // Crossing .255/.0: 198.51.100.250..=198.51.101.5 holds .255 and .0.
        let r = range("198.51.100.250-198.51.101.5");
        assert_eq!((r.len(), r.buggy_count(), r.usable_len(true)), (12, 2, 10));
        assert_eq!(range("198.51.100.255/32").buggy_count(), 1);
        assert_eq!(range("0.0.0.0/32").buggy_count(), 1);
        assert_eq!(range("255.255.255.255/32").buggy_count(), 1);
        assert_eq!(range("0.0.0.0/0").buggy_count(), 2 * (1 << 24));
        assert_eq!(range("198.51.0.0/16").buggy_count(), 512);
    }

    /// Brute force over small ranges: the arithmetic must agree with walking the addresses, and
    /// the clean-index mapping must count the same non-buggy addresses.
    #[test]
    fn buggy_count_matches_brute_force() {
        let base = to_bits(ip("198.51.99.250"));
        for lo in 0..600u128 {
            for width in [0u128, 1, 4, 5, 6, 255, 256, 300] {
                let (a, b) = (base + lo, base + lo + width);
                let Some(r) = IpRange::from_bounds(Family::V4, a, b) else {
                    panic!("bounds")
                };
                let brute = (a..=b).filter(|v| matches!(v & 0xff, 0 | 255)).count() as u128;
                assert_eq!(r.buggy_count(), brute, "{r}");
                let clean = clean_bounds(a, b).map_or(0, |(x, y)| y - x + 1);
                assert_eq!(clean, r.usable_len(true), "{r}");
                for v in a..=b {
                    if let Some(c) = clean_index(v) {
                        assert_eq!(from_clean_index(c), v);
                    }
                }
            }
        }
    }

    #[test]
    fn overlap_and_contains() {
        let a = range("198.51.100.0/28");
        let b = range("198.51.100.8-198.51.100.40");
        assert_eq!(a.overlap(&b), Some(range("198.51.100.8-198.51.100.15")));
        assert_eq!(b.overlap(&a), a.overlap(&b));
        assert_eq!(a.overlap(&range("198.51.100.16/28")), None);
        assert_eq!(a.overlap(&range("2001:db8::/120")), None);
        assert!(a.contains(ip("198.51.100.15")));
        assert!(!a.contains(ip("198.51.100.16")));
        assert!(!a.contains(ip("::c633:6400")));
        assert_eq!(a.to_string(), "198.51.100.0-198.51.100.15");
    }

    #[test]
    fn constructors_check_invariants() {
        assert!(matches!(
            IpRange::new(ip("198.51.100.2"), ip("198.51.100.1")),
            Err(RangeError::StartAfterEnd { .. })
        ));
        assert!(matches!(
            IpRange::new(ip("198.51.100.2"), ip("2001:db8::1")),
            Err(RangeError::MixedFamilies { .. })
        ));
        assert_eq!(IpRange::single(ip("2001:db8::5")).len(), 1);
        assert_eq!(
            IpRange::cidr(ip("2001:db8::ff"), 128).map(|r| r.len()),
            Ok(1)
        );
        assert!(IpRange::cidr(ip("198.51.100.1"), 33).is_err());
        assert!(is_buggy(ip("198.51.100.0")) && is_buggy(ip("198.51.100.255")));
        assert!(!is_buggy(ip("198.51.100.1")) && !is_buggy(ip("2001:db8::ff")));
    }
}
