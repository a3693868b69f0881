//! ferrolb's speaker: makes LoadBalancer IPs reachable on the LAN by answering ARP and NDP for
//! them from exactly one healthy node, and moves them within a few hundred milliseconds when that
//! node dies.
//!
//! Layout (pure decisions, thin shells):
//! - pure: [`config`] (flags), [`objects`] (projections of Kubernetes objects), [`plan`]
//!   (eligible nodes and interfaces per IP), [`decide`] (announcers, this node's IPs, Service
//!   conditions), [`pacer`] (takeover frame pacing); plus `ferrolb-speaker-core` (wire formats,
//!   election, membership).
//! - shells: [`watch`] (Kubernetes watches → plan), [`netif`] (rtnetlink), [`l2`] (packet
//!   sockets and receive threads), [`status`] (condition and event writes), [`engine`] (the loop
//!   tying membership, decisions and the wire together), [`run`] (process wiring).

pub mod config;
pub mod decide;
pub mod engine;
pub mod l2;
pub mod metrics;
pub mod netif;
pub mod objects;
pub mod pacer;
pub mod plan;
pub mod run;
pub mod status;
pub mod watch;
