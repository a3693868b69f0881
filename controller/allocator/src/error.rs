//! Allocation errors, sharing conflicts and the stable reason labels for both.
//!
//! Owns the words users read in Service events ("pool blue exhausted (0 of 254 free)") and the
//! snake_case labels metrics use. It must not decide anything: the allocator builds these values.

use std::fmt;
use std::net::IpAddr;

use crate::request::{Protocol, ServiceKey};
use ferrolb_addresses::Family;

/// Why an allocation failed, as a stable label for metrics and conditions. (Why a pool entry is
/// invalid is [`ferrolb_addresses::RangeReason`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The pinned pool does not exist.
    UnknownPool,
    /// No pinned pool and no candidate pool exists.
    NoCandidatePools,
    /// None of the allowed pools has addresses of the family.
    NoPoolHasFamily,
    /// Every allowed pool of the family is full.
    PoolExhausted,
    /// A requested IP lies outside every (or the pinned) pool.
    RequestedNotInPool,
    /// A requested IP is held by an incompatible Service.
    RequestedInUse,
    /// More than one requested IP of a family.
    TooManyRequested,
    /// A requested IP's family is not among the Service's families.
    RequestedFamilyMismatch,
}

impl Reason {
    /// snake_case label, stable across releases.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownPool => "unknown_pool",
            Reason::NoCandidatePools => "no_candidate_pools",
            Reason::NoPoolHasFamily => "no_pool_has_family",
            Reason::PoolExhausted => "pool_exhausted",
            Reason::RequestedNotInPool => "requested_not_in_pool",
            Reason::RequestedInUse => "requested_in_use",
            Reason::TooManyRequested => "too_many_requested",
            Reason::RequestedFamilyMismatch => "requested_family_mismatch",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why two Services may not share an IP. Displays as the tail of
/// "198.51.100.9 is used by ns/other and …".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conflict {
    /// At least one of them has no sharing key.
    NotShared,
    /// Both have sharing keys, but different ones.
    SharingKeysDiffer,
    /// Both expose the same protocol and port.
    PortsOverlap {
        /// Protocol of the first shared port.
        protocol: Protocol,
        /// The first shared port.
        port: u16,
    },
    /// One uses externalTrafficPolicy Local, the other Cluster.
    TrafficPoliciesDiffer,
    /// Both use Local, with different pod selectors.
    SelectorsDiffer,
}

impl Conflict {
    /// snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Conflict::NotShared => "not_shared",
            Conflict::SharingKeysDiffer => "sharing_keys_differ",
            Conflict::PortsOverlap { .. } => "ports_overlap",
            Conflict::TrafficPoliciesDiffer => "traffic_policies_differ",
            Conflict::SelectorsDiffer => "selectors_differ",
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::NotShared => f.write_str("one of them has no sharing key"),
            Conflict::SharingKeysDiffer => f.write_str("the sharing keys differ"),
            Conflict::PortsOverlap { protocol, port } => {
                write!(f, "ports overlap ({protocol}/{port})")
            }
            Conflict::TrafficPoliciesDiffer => {
                f.write_str("the external traffic policies differ (Local and Cluster)")
            }
            Conflict::SelectorsDiffer => {
                f.write_str("the pod selectors differ (traffic policy Local)")
            }
        }
    }
}

/// Comma-separated pool names for messages.
struct Names<'a>(&'a [String]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// "not in pool blue" / "in no pool", for [`AllocError::RequestedNotInPool`].
fn pool_scope(pool: &Option<String>) -> String {
    match pool {
        Some(p) => format!("not in pool {p}"),
        None => "in no pool".to_string(),
    }
}

/// Why `assign` could not satisfy a request. A failed `assign` changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The pinned pool does not exist (only reported when it is actually needed).
    #[error("pool {pool} does not exist")]
    UnknownPool {
        /// The pinned name.
        pool: String,
    },
    /// No pool is pinned and none of the candidate pools exists.
    #[error("no pool is available for automatic {family} assignment")]
    NoCandidatePools {
        /// The family being allocated.
        family: Family,
    },
    /// The allowed pools exist but none has addresses of the family.
    #[error("no {family} addresses in pool(s) {}", Names(pools))]
    NoPoolHasFamily {
        /// The family being allocated.
        family: Family,
        /// The allowed pools, in try order.
        pools: Vec<String>,
    },
    /// The only allowed pool is full.
    #[error("pool {pool} exhausted ({free} of {total} free)")]
    PoolExhausted {
        /// The pool.
        pool: String,
        /// Free addresses (0).
        free: u128,
        /// Addresses of the family the pool can hand out.
        total: u128,
    },
    /// Several pools were allowed and all are full.
    #[error(
        "pools {} exhausted for {family} ({free} of {total} free)",
        Names(pools)
    )]
    PoolsExhausted {
        /// The family being allocated.
        family: Family,
        /// The allowed pools with addresses of the family, in try order.
        pools: Vec<String>,
        /// Free addresses (0).
        free: u128,
        /// Sum of their sizes (overlapping addresses counted per pool).
        total: u128,
    },
    /// A requested IP is outside the pinned pool, or outside every pool.
    #[error("requested {ip} is {}", pool_scope(pool))]
    RequestedNotInPool {
        /// The requested IP.
        ip: IpAddr,
        /// The pinned pool it had to be in, if any.
        pool: Option<String>,
    },
    /// A requested IP is held by a Service it may not share with.
    #[error("requested {ip} is used by {holder} and {conflict}")]
    RequestedInUse {
        /// The requested IP.
        ip: IpAddr,
        /// One incompatible holder.
        holder: ServiceKey,
        /// Why they are incompatible.
        conflict: Conflict,
    },
    /// More than one requested IP of the same family.
    #[error("{} requested {family} addresses ({}); at most one per family", ips.len(), IpList(ips))]
    TooManyRequested {
        /// The family with too many.
        family: Family,
        /// All requested IPs of that family.
        ips: Vec<IpAddr>,
    },
    /// A requested IP's family is not one the Service asks for.
    #[error("requested {ip} is {} but the Service asks only for {}", Family::of(*ip), FamilyList(families))]
    RequestedFamilyMismatch {
        /// The requested IP.
        ip: IpAddr,
        /// The Service's families.
        families: Vec<Family>,
    },
}

struct IpList<'a>(&'a [IpAddr]);

impl fmt::Display for IpList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ip) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{ip}")?;
        }
        Ok(())
    }
}

struct FamilyList<'a>(&'a [Family]);

impl fmt::Display for FamilyList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, fam) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            f.write_str(fam.as_str())?;
        }
        Ok(())
    }
}

impl AllocError {
    /// Stable label for metrics.
    pub fn reason(&self) -> Reason {
        match self {
            AllocError::UnknownPool { .. } => Reason::UnknownPool,
            AllocError::NoCandidatePools { .. } => Reason::NoCandidatePools,
            AllocError::NoPoolHasFamily { .. } => Reason::NoPoolHasFamily,
            AllocError::PoolExhausted { .. } | AllocError::PoolsExhausted { .. } => {
                Reason::PoolExhausted
            }
            AllocError::RequestedNotInPool { .. } => Reason::RequestedNotInPool,
            AllocError::RequestedInUse { .. } => Reason::RequestedInUse,
            AllocError::TooManyRequested { .. } => Reason::TooManyRequested,
            AllocError::RequestedFamilyMismatch { .. } => Reason::RequestedFamilyMismatch,
        }
    }

    /// True when the failure only means "no address of this family is available right now";
    /// PreferDual tolerates these for one of its two families.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            AllocError::NoCandidatePools { .. }
                | AllocError::NoPoolHasFamily { .. }
                | AllocError::PoolExhausted { .. }
                | AllocError::PoolsExhausted { .. }
        )
    }
}
