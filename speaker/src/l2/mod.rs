//! The L2 mode: one node per IP answers ARP and NDP for it and announces takeovers.
//!
//! Reads the shared plan ([`crate::plan`]: which nodes are eligible for each IP, and the
//! interfaces the L2Advertisements wish for) and the membership view
//! ([`crate::membership::MemberView`]), and owns everything else it needs:
//!
//! - pure: [`decide`] (the announcer of each IP, this node's IPs, the `ferrolb.io/Announced`
//!   condition and who writes it, events about unusable interfaces), [`interfaces`] (which of
//!   this node's interfaces announce an IP), [`pacer`] (takeover frame pacing);
//! - shells: [`packet`] (packet sockets and receive threads answering ARP/NDP), [`announcer`]
//!   (carries the decisions out: ports, answer sets, takeover frames, status requests).
//!
//! The engine drives it through [`Announcer`] alone. It must not reach into another mode, and
//! other modes must not reach into it.

pub mod announcer;
pub mod decide;
pub mod interfaces;
pub mod pacer;
pub mod packet;
pub mod rawsock;

pub use announcer::{Announcer, L2Config};
pub use packet::L2Event;
