//! ferrolb's speaker: makes LoadBalancer IPs reachable on the LAN by answering ARP and NDP for
//! them from exactly one healthy node, and moves them within a few hundred milliseconds when that
//! node dies.
//!
//! Layout: what every mode shares at the top, then one folder per mode (pure decisions, thin
//! shells).
//!
//! - shared, pure: [`config`] (flags), [`metrics`] (metric names), [`objects`] (projections of
//!   Kubernetes objects), [`plan`] (per IP: the Services, the eligible nodes and why not; plus
//!   the interfaces the L2Advertisements wish for); plus `ferrolb-speaker-core` (wire formats,
//!   election, membership).
//! - shared, shells: [`watch`] (Kubernetes watches → published plan), [`membership`] (the
//!   heartbeat UDP shell and the [`membership::MemberView`] modes decide from), [`netif`]
//!   (rtnetlink interface table), [`status`] (the task writing conditions and events),
//!   [`engine`] (the one task owning membership and driving the modes), [`run`] (process
//!   wiring).
//! - [`l2`], the L2 mode: pure `decide` (announcers, this node's IPs, Service conditions),
//!   `interfaces` (interface resolution) and `pacer` (takeover frame pacing); shells `packet`
//!   (packet sockets and receive threads) and `announcer` (carrying the decisions out).
//! - [`forwarder`], forwarder mode (Services on node addresses, forwarded by kube-proxy): pure
//!   `sockets` (`/proc/net` listeners) and `check` (which wanted ports are unavailable and why);
//!   its shell writes this node's `ForwarderNode` report.
//!
//! - [`bgp`], the BGP mode: pure `decide` (sessions and routes per peer) and `objects`;
//!   shells `watch`, `session` (one task per session), `socket`, `bfd` (its own thread) and
//!   `state` (BGPSessionState).
//!
//! A mode reads the shared plan and membership and never reaches into another mode; the shared
//! pure modules never import a mode. Only the wiring (`engine`, `run`) and the status task,
//! which performs what the modes ask, know the modes.

pub mod bgp;
pub mod config;
pub mod engine;
pub mod forwarder;
pub mod l2;
pub mod membership;
pub mod metrics;
pub mod netif;
pub mod objects;
pub mod plan;
pub mod run;
pub mod status;
pub mod watch;
