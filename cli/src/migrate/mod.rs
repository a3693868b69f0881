//! `migrate`: other load balancers' configuration to ferrolb's objects. The conversions are
//! pure ([`metallb::convert`], [`k3s::convert`]); reading files or the cluster and applying are
//! the shell's ([`crate::cluster`]).

pub mod k3s;
pub mod metallb;
