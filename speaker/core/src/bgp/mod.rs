//! BGP-4 for an announce-only speaker: the message codec, one session's state machine and its
//! Adj-RIB-Out.
//!
//! - [`wire`]: framing, the [`Message`] representation and the codec's error type;
//!   [`open`], [`update`] and [`notification`]: the message bodies.
//! - [`session`]: the RFC 4271 state machine with hold timer enforcement, graceful restart,
//!   administrative shutdown and jittered reconnect backoff.
//! - [`rib`]: the Adj-RIB-Out differ that packs minimal UPDATEs into 4096 bytes.
//!
//! This module owns BGP's protocol logic. It must not do I/O, read clocks or draw randomness,
//! and no input may make it panic: the shell (one task per session, TCP through socket2 with
//! MD5 and `TCP_USER_TIMEOUT`) passes bytes, events and `now`, and carries out the returned
//! actions. Received routes are never installed: UPDATEs from the peer only keep the session
//! alive, and are checked for the errors that RFC 7606 says must reset it.
//!
//! # How a shell drives a session
//!
//! One task per (node, peer) owns a [`Session`] built with [`Session::new`] and a random seed.
//! It loops: sleep until [`Session::poll_timeout`] (or forever if `None`) while also waiting
//! for socket reads, connect completion, BFD state and commands; turn whichever comes first
//! into an [`Event`] with `now` and call [`Session::handle`]; then carry out the returned
//! [`Action`]s in order:
//! - [`Action::Connect`]: socket2 socket, `TCP_MD5SIG` for the peer, TTL (1 for a directly
//!   connected eBGP peer, 255 with multihop), bind to the source address, non-blocking
//!   connect to port 179; report [`Event::Connected`] with the next hops (the socket's local
//!   address, plus the node's global and link-local IPv6 for IPv6 routes) or
//!   [`Event::ConnectFailed`] (an `ENOPROTOOPT` from `TCP_MD5SIG` is worth its own status).
//! - [`Action::Send`]: write the bytes (in order; a `BufWriter` flushed after each batch).
//! - [`Action::Close`]: flush, then close; no [`Event::Closed`] is reported for it.
//! - [`Action::Established`]: set `TCP_USER_TIMEOUT` to the negotiated hold time, publish
//!   state and capabilities. [`Action::Closed`]: publish the reason (`Display` for words,
//!   `as_str` for metric labels) and count flaps.
//!
//! Reads go in as [`Event::Received`] (any chunking); EOF or a socket error as
//! [`Event::Closed`]. The plan's routes for this peer go in as [`Event::Routes`] whenever
//! they change, and once at start even if empty: End-of-RIB waits for it, which is what keeps
//! a graceful restart from flushing the router's stale routes early. A BFD failure goes in as
//! [`Event::BfdDown`]; node drain, peer removal and planned restarts as [`Event::Stop`], after
//! which the task waits for the [`Action::Closed`] and exits.
//!
//! Supported: RFC 4271, 4760 (IPv4/IPv6 unicast), 6793, 2918, 4724 (restarting speaker),
//! 8203/9003, 6286, 7606, 1997, 8092, 9072 (read), 9384 (BFD Cease). Not supported: RFC 8654
//! extended messages, ADD-PATH, enhanced route refresh, RFC 8950 IPv4 over IPv6 next hops,
//! listening for connections (so no collision detection).

pub mod notification;
pub mod open;
pub mod rib;
pub mod session;
pub mod update;
pub mod wire;

pub use notification::{Notification, NotificationCode};
pub use open::{Capability, GracefulRestart, Open};
pub use rib::{AdjRibOut, Attributes, Diff, GRACEFUL_SHUTDOWN, RejectReason};
pub use session::{
    Action, CloseReason, Closed, Config, Event, GracefulRestartConfig, Negotiated, NextHops,
    PeerAs, RouteAttrs, Session, State, Stop,
};
pub use update::{
    AsPath, AsSegment, LargeCommunity, MpNextHop, MpReach, MpUnreach, Origin, PathAttribute,
    Prefix, SegmentType, Update,
};
pub use wire::{
    AS_TRANS, AfiSafi, Encoding, Family, Handling, MAX_MESSAGE_LEN, Message, MessageType,
    RouteRefresh, WireError, frame_len,
};
