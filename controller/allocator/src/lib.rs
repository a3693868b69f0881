//! ferrolb's pure IP allocator: pools, ranges, sharing, stability.
//!
//! The controller's shell translates `IPAddressPool`s into [`PoolConfig`]s and Services into
//! [`Request`]s, calls [`Allocator::assign`], and writes the returned [`Assignment`] into the
//! Service status. This crate owns every allocation decision and the promises listed on
//! [`Allocator`]. It must not do I/O, read clocks or env, or know Kubernetes types, and its memory
//! must not grow with pool size (an IPv6 /48 pool costs what a /30 does).
//!
//! Modules: `runs` (interval set), `used` (index of used addresses), `holders` (the Services on
//! one IP), [`pool`] (pool sets and stats), [`request`] (request/answer types), [`allocator`]
//! (state and decisions), [`error`] (errors and reason labels). Address ranges, pool-entry
//! parsing and exact counting are `ferrolb-addresses`' (shared with the speaker); the items
//! callers need are re-exported here.

pub mod allocator;
pub mod error;
mod holders;
pub mod pool;
pub mod request;
mod runs;
mod used;

pub use allocator::Allocator;
pub use error::{AllocError, Conflict, Reason};
pub use ferrolb_addresses::{Family, IpRange, RangeError, RangeReason, is_buggy, parse_pool_entry};
pub use pool::{FamilyStats, Overlap, PoolConfig, PoolStats};
pub use request::{
    AssignedIp, Assignment, FamilyPolicy, Protocol, Request, ServiceKey, SharingKey, TrafficPolicy,
};
