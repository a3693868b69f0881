//! The ferrolb speaker's pure core: everything the speaker decides, with none of what it does.
//!
//! - [`wire`]: parse and emit Ethernet/ARP/NDP frames and decide replies.
//! - [`election`]: which alive, eligible node announces each IP.
//! - [`membership`]: which speakers are alive and what each announces: SWIM probing with
//!   Lifeguard, gossip and anti-entropy over UDP (version 2 heartbeats for older speakers), and a
//!   deterministic simulator of it.
//! - [`bgp`]: BGP-4 codec, session state machine and Adj-RIB-Out for BGP mode.
//! - [`bfd`]: BFD control packets and sessions, BGP mode's sub-second failure detector.
//!
//! This crate must not do I/O, open sockets, read clocks, environment or randomness, spawn tasks
//! or await: callers pass bytes and `now`, and get back values or lists of actions. That keeps
//! every decision deterministic and testable with byte fixtures and a virtual clock, and lets
//! every parser be fuzzed. No input may cause a panic.

pub mod bfd;
pub mod bgp;
pub mod election;
pub mod membership;
pub mod wire;
