//! ferrolb's controller: assigns LoadBalancer IPs from IPAddressPools and publishes them in Service
//! status.
//!
//! Layout: [`service`], [`pools`] and [`l2adv`] project Kubernetes objects into plain data
//! ([`strmap`] is the compact map a Service's labels and annotations are kept in); [`core`] holds
//! the index and the allocator and decides (pure, synchronous); [`run`] is the shell that watches,
//! leads, writes and serves metrics.

pub mod bgp;
pub mod conditions;
pub mod config;
pub mod core;
pub mod forwarder;
pub mod l2adv;
pub mod leader;
pub mod pools;
pub mod run;
pub mod service;
pub mod strmap;
pub mod writer;
