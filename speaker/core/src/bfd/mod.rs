//! Bidirectional Forwarding Detection (RFC 5880) over UDP, single hop (RFC 5881) and multihop
//! (RFC 5883): the sub-second failure detector that lets a router drop a dead node's BGP
//! routes in under a second instead of a hold time.
//!
//! - [`packet`]: Control packet codec and the stateless reception checks.
//! - [`session`]: one session's state machine, timers and jitter.
//!
//! This module owns BFD's protocol logic. It must not do I/O, read clocks or draw randomness:
//! the shell (a dedicated thread with one UDP socket per family, sending with TTL 255 from a
//! source port in 49152–65535) passes received datagrams with their TTL and `now`, and sends
//! what the session returns. Demultiplexing is the shell's: by Your Discriminator
//! ([`session::Session::local_discriminator`]) when it is non-zero, else by the peer's address.
//! Authentication, Demand mode and Echo are not implemented (see [`session`]).
//!
//! # How a shell drives it
//!
//! The BFD thread owns every [`Session`] (one per peer, created with a unique non-zero
//! random discriminator and a random seed) and one UDP socket per family bound to port 3784
//! ([`SINGLE_HOP_PORT`]; [`MULTI_HOP_PORT`] for multihop) with `IP_RECVTTL` /
//! `IPV6_RECVHOPLIMIT`, plus a sending socket per session with TTL 255 and a source port in
//! 49152–65535. It loops: `recvmsg` with a timeout until the earliest
//! [`Session::poll_timeout`]; a datagram goes to the session whose discriminator its Your
//! Discriminator names (parse it with [`ControlPacket::parse`] first), or, when that is 0, to
//! the session of its source address, as [`Event::Received`] with its TTL; expired deadlines
//! get [`Event::Timeout`]. [`Action::Send`] bytes go to the peer; an
//! [`Action::StateChanged`] whose [`Transition::is_failure`] holds becomes the BGP session's
//! `BfdDown`. For a planned restart the shell sends [`Event::AdminDown`] with
//! [`Diagnostic::ADMINISTRATIVELY_DOWN`] and keeps the thread running until
//! [`Session::admin_down_complete_at`].

pub mod packet;
pub mod session;

pub use packet::{BfdState, ControlPacket, Diagnostic, MULTI_HOP_PORT, SINGLE_HOP_PORT};
pub use session::{Action, Config, Discard, Event, Hops, Session, Transition};

/// Why a datagram is not a valid BFD Control packet (RFC 5880 §6.8.6). `as_str()` values are
/// stable metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum BfdError {
    /// Shorter than the 24-byte mandatory section.
    #[error("shorter than 24 bytes")]
    Truncated,
    /// Version is not 1.
    #[error("version is not 1")]
    BadVersion,
    /// Length field below the sections it must cover or beyond the datagram.
    #[error("bad length field")]
    BadLength,
    /// Detect Mult is zero.
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    /// The Multipoint bit is set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    /// Your Discriminator is zero while the sender is Init or Up.
    #[error("your discriminator is zero in state Init or Up")]
    ZeroYourDiscriminator,
}

impl BfdError {
    /// Every error, for pre-registering metric label values.
    pub const ALL: [BfdError; 7] = [
        Self::Truncated,
        Self::BadVersion,
        Self::BadLength,
        Self::ZeroDetectMult,
        Self::Multipoint,
        Self::ZeroMyDiscriminator,
        Self::ZeroYourDiscriminator,
    ];

    /// Stable snake_case label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadVersion => "bad_version",
            Self::BadLength => "bad_length",
            Self::ZeroDetectMult => "zero_detect_mult",
            Self::Multipoint => "multipoint",
            Self::ZeroMyDiscriminator => "zero_my_discriminator",
            Self::ZeroYourDiscriminator => "zero_your_discriminator",
        }
    }
}
