//! `kubectl ferrolb`: trace a packet from a LoadBalancer IP to the pod, check a cluster's setup,
//! and migrate from MetalLB and K3s's servicelb.
//!
//! Layout, pure parts first:
//! - [`rules`]: kube-proxy's rules as users paste them (iptables-save, excerpts, `iptables -L`
//!   listings, `nft -j list ruleset`), parsed into one model;
//! - [`walk`]: the rule walker, a packet in, a tree of paths with traffic shares out, and the
//!   cross-check against EndpointSlices;
//!
//! This crate is a library first so lab tests can call every command's core with a snapshot or
//! a `kube::Client`; `main.rs` only parses arguments and prints.

pub mod args;
pub mod cluster;
pub mod doctor;
pub mod findings;
pub mod migrate;
pub mod rules;
pub mod run;
pub mod service;
pub mod snapshot;
pub mod status;
pub mod walk;
