//! ferrolb's controller: assigns LoadBalancer IPs from IPAddressPools and publishes them in Service
//! status.
//!
//! Layout: [`service`] and [`pools`] project Kubernetes objects into plain data; [`core`] holds the
//! index and the allocator and decides (pure, synchronous); [`run`] is the shell that watches, leads,
//! writes and serves metrics.

pub mod config;
pub mod core;
pub mod leader;
pub mod pools;
pub mod run;
pub mod service;
pub mod writer;
