//! `kubectl ferrolb`: trace a packet from a LoadBalancer IP to the pod, check a cluster's setup,
//! and migrate from MetalLB and K3s's servicelb.
//!
//! Layout, pure parts first (they take data and return data; no I/O, no clock):
//! - [`rules`]: kube-proxy's rules as users paste them (iptables-save, excerpts, `iptables -L`
//!   listings, `nft -j list ruleset`), parsed into one model;
//! - [`walk`]: the rule walker, a packet in, a tree of paths with traffic shares out, and the
//!   cross-check against EndpointSlices;
//! - [`snapshot`]: the cluster objects the checks read, and queries over them;
//! - [`service`]: `trace svc/NAME`'s steps over a snapshot, and the rules walk for a Service;
//! - [`doctor`], [`status`]: the checks and the status over a snapshot;
//! - [`migrate`]: MetalLB and K3s servicelb configuration to ferrolb's objects;
//! - [`findings`]: what every check reports.
//!
//! Shells: [`cluster`] (the only module that talks to the API server), [`run`] (files, standard
//! input, printing) and `main.rs`. The library is the product's core, so lab tests call
//! `cluster::snapshot(&client, ..)` and the pure functions directly. Everything but [`rules`],
//! [`walk`] and [`findings`] needs the default feature `cluster`.

#[cfg(feature = "cluster")]
pub mod args;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "cluster")]
pub mod doctor;
pub mod findings;
#[cfg(feature = "cluster")]
pub mod migrate;
pub mod rules;
#[cfg(feature = "cluster")]
pub mod run;
#[cfg(feature = "cluster")]
pub mod service;
#[cfg(feature = "cluster")]
pub mod snapshot;
#[cfg(feature = "cluster")]
pub mod status;
pub mod walk;
