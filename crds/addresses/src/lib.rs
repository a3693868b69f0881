//! What an `IPAddressPool`'s `spec.addresses` entries mean: CIDRs and inclusive ranges, parsed,
//! counted and compared, for the controller's allocator and the speakers alike.
//!
//! Owns the address arithmetic: the [`Family`] of an address, the inclusive [`IpRange`], the
//! parsing of one pool entry ([`parse_pool_entry`], with [`RangeError`] saying in words what is
//! wrong), exact counts (an IPv6 /48 costs what a /30 does), and the "buggy" IPv4 addresses
//! (`.0`/`.255`, [`is_buggy`]) with the integer mappings the allocator's interval sets use.
//! It must not know about pools, Services, Kubernetes or allocation state, and does no I/O: it
//! depends on nothing but `thiserror`, so both binaries read pool entries the same way.

pub mod range;

pub use range::{Family, IpRange, RangeError, RangeReason, is_buggy, parse_pool_entry};
