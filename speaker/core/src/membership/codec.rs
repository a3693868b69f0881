//! The speakers' membership wire formats: version 3 (SWIM probes, gossip and anti-entropy) and
//! the all-to-all heartbeats of versions 1 and 2, still spoken to speakers that predate version 3.
//!
//! Owns the byte layout of [`Packet`] (version 3) and [`Message`] (versions 1 and 2) and their
//! limits. It must not interpret messages (that is the state machine's job) and must never panic
//! or allocate unboundedly on any input: every length is checked against the remaining bytes and
//! against a fixed maximum before use. Every accepted datagram has exactly one encoding: decoding
//! rejects trailing bytes, unknown tags and out-of-range values, so `encode(decode(b)) == b`.
//!
//! # Version 3 (current, [`VERSION`])
//!
//! All integers big-endian.
//!
//! ```text
//! "FL" | 3 | kind: u8 | from: name | generation: u64 | incarnation: u32 | state_version: u32
//! kind 1 Ping      seq: u32
//! kind 2 Ack       seq: u32
//! kind 3 PingReq   seq: u32 | target: name
//! kind 4 Nack      seq: u32
//! kind 5 Notice    (nothing)
//! kind 6 SyncReq   hashes: u16 count, each u32 (receivers ignore counts but SYNC_BUCKETS)
//! kind 7 SyncDigest entries: u16 count, each (name | generation: u64 | incarnation: u32 |
//!                                            status: u8 | state_version: u32)
//! kind 8 SyncPull  wants: u16 count, each (name | first_part: u16)
//! then, for every kind: items: u8 count, each one item:
//!   tag 1 Alive    name | generation: u64 | incarnation: u32 | state_version: u32
//!   tag 2 Suspect  name | generation | incarnation | accuser: name
//!   tag 3 Dead     name | generation | incarnation | declarer: name
//!   tag 4 Left     name | generation | incarnation
//!   tag 5 Delta    name | generation | state_version: u32 (>= 1)
//!                  | add_claims: ips | del_claims: ips | add_unable: ips | del_unable: ips
//!   tag 6 State    name | generation | state_version: u32 | part: u16 | parts: u16 (part < parts)
//!                  | claims: ips | unable: ips
//! status = 0 alive, 1 suspect, 2 dead, 3 left
//! ips    = u16 count, each (family 4|6: u8, then 4|16 octets); the four lists of a Delta
//!          together, and the two of a State part together, hold at most STATE_PART_IPS
//! name   = u8 length (1..=253) + UTF-8 bytes
//! ```
//!
//! The header is the sender's proof of life: its generation (start time, see
//! [`super::Membership::new`]), its SWIM incarnation (bumped to refute suspicion) and the
//! version of its claims/unable record. A Delta takes a record from `state_version - 1` to
//! `state_version`; State parts carry a whole record, [`STATE_PART_IPS`] addresses per part in
//! the record's canonical order (claims sorted, then unable sorted), so parts of one version
//! fetched from different members fit together. With names of at most 253 bytes, a packet
//! holding one full Delta or State part is at most 1,098 bytes, inside [`MIN_DATAGRAM`].
//!
//! # Versions 1 and 2 (legacy heartbeats, [`Message`])
//!
//! ```text
//! "FL" | version (1 or 2) | kind (1 heartbeat, 2 leave) | from: name | incarnation: u64
//! heartbeat only:  seq: u64 | uptime_ms: u64
//!                  claims: u16 count, each ip
//!                  heard:  u16 count, each (name, age_ms: u32)
//!   version 2 only: unable: u16 count, each ip
//! ip   = family 4|6: u8, then 4|16 octets
//! ```
//!
//! `unable` (version 2) lists the IPs the sender is eligible for but has no usable interface
//! for. Version 1 is still decoded, as a heartbeat with an empty `unable`; [`Message::encode`]
//! writes [`LEGACY_VERSION`] (2), which speakers before version 3 understand. `claims` and
//! `unable` share one budget of [`MAX_CLAIMS`] addresses, and nothing may follow the last field.
//! The limits keep the largest message under [`MAX_MESSAGE_LEN`], inside one UDP datagram.
//! A version 3 speaker sends these only to peers it heard speak them (rolling upgrades; see the
//! module docs of [`super`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First two bytes of every message.
pub const MAGIC: [u8; 2] = *b"FL";
/// Format version of [`Packet`], written by speakers since SWIM membership; bump on any layout
/// change. [`decode`] reads this one as a [`Packet`] and [`OLDEST_VERSION`]..=[`LEGACY_VERSION`]
/// as a [`Message`], and rejects the rest.
pub const VERSION: u8 = 3;
/// Version of the all-to-all heartbeats ([`Message`]) written for speakers that predate
/// [`VERSION`].
pub const LEGACY_VERSION: u8 = 2;
/// Oldest version still decoded (1: heartbeats without an `unable` list).
pub const OLDEST_VERSION: u8 = 1;
/// Longest node name, in bytes (a Kubernetes node name is a DNS subdomain, at most 253).
pub const MAX_NAME_LEN: usize = 253;
/// Set in [`Heartbeat::uptime_ms`] by a speaker that speaks version 3: speakers before it only
/// log `uptime_ms`, so the bit tells a version 3 receiver that the sender is not a legacy
/// speaker (it sends version 2 only because it took the receiver for one) without changing the
/// layout.
pub const FROM_V3: u64 = 1 << 63;
/// Most IPs per heartbeat, `claims` and `unable` together (one budget, so the largest message
/// is the same size as in version 1).
pub const MAX_CLAIMS: usize = 1024;
/// Most `heard` entries per heartbeat.
pub const MAX_HEARD: usize = 170;
/// Upper bound of an encoded message, below the 65,507-byte UDP payload limit.
pub const MAX_MESSAGE_LEN: usize = 65_000;

const KIND_HEARTBEAT: u8 = 1;
const KIND_LEAVE: u8 = 2;

/// Why a datagram is not a valid message. `as_str()` values are stable metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The datagram ends inside a field.
    #[error("message truncated")]
    Truncated,
    /// Longer than [`MAX_MESSAGE_LEN`].
    #[error("message too long")]
    TooLong,
    /// Does not start with [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// A version outside [`OLDEST_VERSION`]..=[`VERSION`] (or, for [`Message::decode`], above
    /// [`LEGACY_VERSION`]).
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A name that is empty, too long or not UTF-8.
    #[error("bad node name")]
    BadName,
    /// More claims, unable IPs or heard entries than the limits allow.
    #[error("too many entries")]
    TooMany,
    /// An address family byte other than 4 or 6.
    #[error("bad address family {0}")]
    BadFamily(u8),
    /// An unknown item tag or member status, or a field out of its range (a part index not
    /// below the part count, a Delta of version 0).
    #[error("bad field value")]
    BadValue,
    /// Bytes after the last field.
    #[error("trailing bytes")]
    TrailingBytes,
}

impl CodecError {
    /// Stable snake_case label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::TooLong => "too_long",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::UnknownKind(_) => "unknown_kind",
            Self::BadName => "bad_name",
            Self::TooMany => "too_many",
            Self::BadFamily(_) => "bad_family",
            Self::BadValue => "bad_value",
            Self::TrailingBytes => "trailing_bytes",
        }
    }
}

/// Periodic liveness and state report from one speaker to each peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's node name.
    pub from: String,
    /// Sender's start time in ms since the Unix epoch: tells a restarted speaker from a late
    /// packet of the previous one.
    pub incarnation: u64,
    /// Increases by one per heartbeat within an incarnation; older or repeated ones are ignored.
    pub seq: u64,
    /// Sender's uptime, for operators; the top bit is [`FROM_V3`].
    pub uptime_ms: u64,
    /// Whom the sender heard directly, and how many ms before sending this heartbeat.
    pub heard: Vec<(String, u32)>,
    /// IPs the sender announces now.
    pub claims: Vec<IpAddr>,
    /// IPs the sender is eligible for but cannot announce: no interface the advertisement names
    /// is usable on its node. Peers leave it out of the candidates for them. Empty in version 1.
    pub unable: Vec<IpAddr>,
}

/// A speaker-to-speaker message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// Graceful shutdown: the sender stops announcing now; peers take over at once.
    Leave {
        /// Sender's node name.
        from: String,
        /// Sender's incarnation (see [`Heartbeat::incarnation`]).
        incarnation: u64,
    },
}

impl Message {
    /// The sender's node name.
    pub fn from(&self) -> &str {
        match self {
            Self::Heartbeat(h) => &h.from,
            Self::Leave { from, .. } => from,
        }
    }

    /// Serialises the message in [`LEGACY_VERSION`]. Never fails: lists beyond the limits are cut to
    /// their first entries (`claims` first, then `unable` to what is left of [`MAX_CLAIMS`]) and
    /// names beyond [`MAX_NAME_LEN`] bytes are cut at a character boundary, so the output always
    /// decodes. [`super::Membership`] never builds a message over the limits without reporting
    /// it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(LEGACY_VERSION);
        match self {
            Self::Heartbeat(h) => {
                out.push(KIND_HEARTBEAT);
                put_name(&h.from, &mut out);
                out.extend_from_slice(&h.incarnation.to_be_bytes());
                out.extend_from_slice(&h.seq.to_be_bytes());
                out.extend_from_slice(&h.uptime_ms.to_be_bytes());
                let claims = h.claims.get(..MAX_CLAIMS).unwrap_or(&h.claims);
                put_ips(claims, &mut out);
                let heard = h.heard.get(..MAX_HEARD).unwrap_or(&h.heard);
                put_count(heard.len(), &mut out);
                for (name, age) in heard {
                    put_name(name, &mut out);
                    out.extend_from_slice(&age.to_be_bytes());
                }
                let room = MAX_CLAIMS - claims.len();
                put_ips(h.unable.get(..room).unwrap_or(&h.unable), &mut out);
            }
            Self::Leave { from, incarnation } => {
                out.push(KIND_LEAVE);
                put_name(from, &mut out);
                out.extend_from_slice(&incarnation.to_be_bytes());
            }
        }
        out
    }

    /// Parses one datagram of version [`OLDEST_VERSION`]..=[`LEGACY_VERSION`]. Never panics;
    /// rejects anything not produced by [`Message::encode`] of such a version (version 3 is
    /// [`Packet::decode`]'s, see [`decode`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(CodecError::TooLong);
        }
        let mut r = Reader(bytes);
        if r.take(2)? != MAGIC {
            return Err(CodecError::BadMagic);
        }
        let version = r.u8()?;
        if !(OLDEST_VERSION..=LEGACY_VERSION).contains(&version) {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        if kind != KIND_HEARTBEAT && kind != KIND_LEAVE {
            return Err(CodecError::UnknownKind(kind));
        }
        let from = r.name()?;
        let incarnation = r.u64()?;
        let message = if kind == KIND_LEAVE {
            Self::Leave { from, incarnation }
        } else {
            let seq = r.u64()?;
            let uptime_ms = r.u64()?;
            let claims = r.ips(MAX_CLAIMS)?;
            let n = r.count(MAX_HEARD)?;
            let mut heard = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.name()?;
                let age = u32::from_be_bytes(r.array()?);
                heard.push((name, age));
            }
            let unable = if version >= 2 {
                r.ips(MAX_CLAIMS - claims.len())?
            } else {
                Vec::new()
            };
            Self::Heartbeat(Heartbeat {
                from,
                incarnation,
                seq,
                uptime_ms,
                heard,
                claims,
                unable,
            })
        };
        if !r.0.is_empty() {
            return Err(CodecError::TrailingBytes);
        }
        Ok(message)
    }
}

/// Writes a name, cut to [`MAX_NAME_LEN`] bytes at a character boundary.
fn put_name(name: &str, out: &mut Vec<u8>) {
    let mut end = name.len().min(MAX_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = name.as_bytes().get(..end).unwrap_or_default();
    // end <= 253, so the length fits a byte.
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

/// Writes a count and the addresses; callers cut the list to its limit first.
fn put_ips(ips: &[IpAddr], out: &mut Vec<u8>) {
    put_count(ips.len(), out);
    for ip in ips {
        match ip {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
    }
}

fn put_count(n: usize, out: &mut Vec<u8>) {
    // Callers cut lists to the limits first, which are far below u16::MAX.
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
}

/// A cursor that only hands out bytes that exist.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(CodecError::Truncated)?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| CodecError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn count(&mut self, max: usize) -> Result<usize, CodecError> {
        let n = usize::from(u16::from_be_bytes(self.array()?));
        if n > max {
            return Err(CodecError::TooMany);
        }
        Ok(n)
    }

    /// A count of at most `max`, then that many addresses. The count is checked before anything
    /// is allocated, so a lying count costs nothing.
    fn ips(&mut self, max: usize) -> Result<Vec<IpAddr>, CodecError> {
        let n = self.count(max)?;
        let mut ips = Vec::with_capacity(n.min(self.0.len() / 5));
        for _ in 0..n {
            let ip = match self.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
                other => return Err(CodecError::BadFamily(other)),
            };
            ips.push(ip);
        }
        Ok(ips)
    }

    fn name(&mut self) -> Result<String, CodecError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > MAX_NAME_LEN {
            return Err(CodecError::BadName);
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CodecError::BadName)
    }
}

// ---------------------------------------------------------------------------------------------
// Version 3
// ---------------------------------------------------------------------------------------------

/// Smallest datagram budget [`Packet`] producers may be configured with: one full Delta or State
/// part with the longest names fits (see the module docs).
pub const MIN_DATAGRAM: usize = 1_200;
/// Most addresses in one Delta (its four lists together) or one State part (both lists).
pub const STATE_PART_IPS: usize = 32;
/// Most addresses in one member's record, claims and unable together (the part count is a
/// `u16`; this keeps a record's full transfer to 512 parts).
pub const MAX_STATE_IPS: usize = 16_384;
/// Number of anti-entropy buckets: a [`Body::SyncReq`] carries one hash per bucket.
pub const SYNC_BUCKETS: usize = 64;
/// Most items in one packet.
pub const MAX_ITEMS: usize = 255;
/// Most entries in one [`Body::SyncDigest`] or [`Body::SyncPull`] (a 65,000-byte datagram
/// could not hold more with one-byte names).
pub const MAX_ENTRIES: usize = 4_096;

const K_PING: u8 = 1;
const K_ACK: u8 = 2;
const K_PING_REQ: u8 = 3;
const K_NACK: u8 = 4;
const K_NOTICE: u8 = 5;
const K_SYNC_REQ: u8 = 6;
const K_SYNC_DIGEST: u8 = 7;
const K_SYNC_PULL: u8 = 8;

const T_ALIVE: u8 = 1;
const T_SUSPECT: u8 = 2;
const T_DEAD: u8 = 3;
const T_LEFT: u8 = 4;
const T_DELTA: u8 = 5;
const T_STATE: u8 = 6;

/// A member's liveness as one member believes it. For one generation and incarnation the later
/// variant wins (`Alive < Suspect < Dead < Left`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Answering, or not yet suspected.
    Alive,
    /// A member failed to reach it directly and through others; it may refute.
    Suspect,
    /// Declared dead after a suspicion that was not refuted in time.
    Dead,
    /// Left gracefully; final for its generation.
    Left,
}

impl Status {
    /// Stable snake_case label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }

    pub(crate) const fn to_u8(self) -> u8 {
        match self {
            Self::Alive => 0,
            Self::Suspect => 1,
            Self::Dead => 2,
            Self::Left => 3,
        }
    }

    fn from_u8(v: u8) -> Result<Self, CodecError> {
        match v {
            0 => Ok(Self::Alive),
            1 => Ok(Self::Suspect),
            2 => Ok(Self::Dead),
            3 => Ok(Self::Left),
            _ => Err(CodecError::BadValue),
        }
    }
}

/// One member's liveness record in a [`Body::SyncDigest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The member.
    pub name: String,
    /// Its generation (restart identity).
    pub generation: u64,
    /// Its incarnation within the generation.
    pub incarnation: u32,
    /// Its status as the sender believes it.
    pub status: Status,
    /// The newest version of its claims/unable record the sender knows of.
    pub state_version: u32,
}

/// A change of one member's claims/unable record from `state_version - 1` to `state_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The member whose record changed.
    pub name: String,
    /// Its generation.
    pub generation: u64,
    /// The version this delta produces (at least 1; version 0 is the empty record).
    pub state_version: u32,
    /// IPs it now announces.
    pub add_claims: Vec<IpAddr>,
    /// IPs it no longer announces.
    pub del_claims: Vec<IpAddr>,
    /// IPs it newly cannot announce.
    pub add_unable: Vec<IpAddr>,
    /// IPs it can announce again.
    pub del_unable: Vec<IpAddr>,
}

impl Delta {
    /// Addresses in the four lists together.
    pub fn ips(&self) -> usize {
        self.add_claims.len()
            + self.del_claims.len()
            + self.add_unable.len()
            + self.del_unable.len()
    }
}

/// One part of a member's whole claims/unable record at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePart {
    /// The member.
    pub name: String,
    /// Its generation.
    pub generation: u64,
    /// The record's version.
    pub state_version: u32,
    /// This part's index, below `parts`.
    pub part: u16,
    /// How many parts the record has (at least 1: an empty record is one empty part).
    pub parts: u16,
    /// Claims in this part.
    pub claims: Vec<IpAddr>,
    /// Unable IPs in this part.
    pub unable: Vec<IpAddr>,
}

/// A piece of membership news, piggybacked on any packet (gossip) or sent directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The member is alive at this generation and incarnation (it said so itself).
    Alive {
        /// The member.
        name: String,
        /// Its generation.
        generation: u64,
        /// Its incarnation.
        incarnation: u32,
        /// Its record's version.
        state_version: u32,
    },
    /// `accuser` could not reach the member at this incarnation.
    Suspect {
        /// The suspected member.
        name: String,
        /// Its generation.
        generation: u64,
        /// The incarnation suspected.
        incarnation: u32,
        /// Who failed to reach it.
        accuser: String,
    },
    /// `declarer` declared the member dead at this incarnation.
    Dead {
        /// The dead member.
        name: String,
        /// Its generation.
        generation: u64,
        /// The incarnation declared dead.
        incarnation: u32,
        /// Who declared it.
        declarer: String,
    },
    /// The member left gracefully.
    Left {
        /// The member.
        name: String,
        /// Its generation.
        generation: u64,
        /// Its incarnation when leaving.
        incarnation: u32,
    },
    /// See [`Delta`].
    Delta(Delta),
    /// See [`StatePart`].
    State(StatePart),
}

impl Item {
    /// The member the item is about.
    pub fn subject(&self) -> &str {
        match self {
            Self::Alive { name, .. }
            | Self::Suspect { name, .. }
            | Self::Dead { name, .. }
            | Self::Left { name, .. } => name,
            Self::Delta(d) => &d.name,
            Self::State(s) => &s.name,
        }
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        self.put(&mut out);
        out.len()
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Alive {
                name,
                generation,
                incarnation,
                state_version,
            } => {
                out.push(T_ALIVE);
                put_name(name, out);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&incarnation.to_be_bytes());
                out.extend_from_slice(&state_version.to_be_bytes());
            }
            Self::Suspect {
                name,
                generation,
                incarnation,
                accuser,
            } => {
                out.push(T_SUSPECT);
                put_name(name, out);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&incarnation.to_be_bytes());
                put_name(accuser, out);
            }
            Self::Dead {
                name,
                generation,
                incarnation,
                declarer,
            } => {
                out.push(T_DEAD);
                put_name(name, out);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&incarnation.to_be_bytes());
                put_name(declarer, out);
            }
            Self::Left {
                name,
                generation,
                incarnation,
            } => {
                out.push(T_LEFT);
                put_name(name, out);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&incarnation.to_be_bytes());
            }
            Self::Delta(d) => {
                out.push(T_DELTA);
                put_name(&d.name, out);
                out.extend_from_slice(&d.generation.to_be_bytes());
                out.extend_from_slice(&d.state_version.to_be_bytes());
                // Cut to the shared budget in list order, so the output always decodes.
                let mut room = STATE_PART_IPS;
                for list in [&d.add_claims, &d.del_claims, &d.add_unable, &d.del_unable] {
                    let take = list.len().min(room);
                    room -= take;
                    put_ips(list.get(..take).unwrap_or(list), out);
                }
            }
            Self::State(s) => {
                out.push(T_STATE);
                put_name(&s.name, out);
                out.extend_from_slice(&s.generation.to_be_bytes());
                out.extend_from_slice(&s.state_version.to_be_bytes());
                out.extend_from_slice(&s.part.to_be_bytes());
                out.extend_from_slice(&s.parts.to_be_bytes());
                let take = s.claims.len().min(STATE_PART_IPS);
                put_ips(s.claims.get(..take).unwrap_or(&s.claims), out);
                let room = STATE_PART_IPS - take;
                put_ips(s.unable.get(..room).unwrap_or(&s.unable), out);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let tag = r.u8()?;
        let name = r.name()?;
        let generation = r.u64()?;
        Ok(match tag {
            T_ALIVE => Self::Alive {
                name,
                generation,
                incarnation: r.u32()?,
                state_version: r.u32()?,
            },
            T_SUSPECT => Self::Suspect {
                name,
                generation,
                incarnation: r.u32()?,
                accuser: r.name()?,
            },
            T_DEAD => Self::Dead {
                name,
                generation,
                incarnation: r.u32()?,
                declarer: r.name()?,
            },
            T_LEFT => Self::Left {
                name,
                generation,
                incarnation: r.u32()?,
            },
            T_DELTA => {
                let state_version = r.u32()?;
                if state_version == 0 {
                    return Err(CodecError::BadValue);
                }
                let mut room = STATE_PART_IPS;
                let mut list = |r: &mut Reader<'_>| -> Result<Vec<IpAddr>, CodecError> {
                    let ips = r.ips(room)?;
                    room -= ips.len();
                    Ok(ips)
                };
                Self::Delta(Delta {
                    name,
                    generation,
                    state_version,
                    add_claims: list(r)?,
                    del_claims: list(r)?,
                    add_unable: list(r)?,
                    del_unable: list(r)?,
                })
            }
            T_STATE => {
                let state_version = r.u32()?;
                let part = r.u16()?;
                let parts = r.u16()?;
                if part >= parts {
                    return Err(CodecError::BadValue);
                }
                let claims = r.ips(STATE_PART_IPS)?;
                let unable = r.ips(STATE_PART_IPS - claims.len())?;
                Self::State(StatePart {
                    name,
                    generation,
                    state_version,
                    part,
                    parts,
                    claims,
                    unable,
                })
            }
            _ => return Err(CodecError::BadValue),
        })
    }
}

/// What a [`Packet`] asks or answers, besides its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A probe: answer with an [`Body::Ack`] of the same `seq`.
    Ping {
        /// Probe number, chosen by the sender.
        seq: u32,
    },
    /// Answer to a Ping, or a helper relaying that the target of a PingReq answered.
    Ack {
        /// The Ping's (or PingReq's) `seq`.
        seq: u32,
    },
    /// Ask the receiver to ping `target` and relay the answer (an Ack of `seq`) or its absence
    /// (a Nack of `seq`).
    PingReq {
        /// The requester's probe number.
        seq: u32,
        /// The member to ping.
        target: String,
    },
    /// A helper could not reach the target of a PingReq in time (Lifeguard: tells the
    /// requester that the helper itself is alive and responsive).
    Nack {
        /// The PingReq's `seq`.
        seq: u32,
    },
    /// Items only: direct notifications and anti-entropy pushes.
    Notice,
    /// Anti-entropy: the sender's hash of each bucket of member records ([`SYNC_BUCKETS`]).
    SyncReq {
        /// One hash per bucket.
        hashes: Vec<u32>,
    },
    /// Anti-entropy: the records of buckets whose hashes differed.
    SyncDigest {
        /// The sender's records.
        entries: Vec<Digest>,
    },
    /// Anti-entropy: send me these members' whole claims/unable records, from this part on.
    SyncPull {
        /// Member and first part wanted.
        wants: Vec<(String, u16)>,
    },
}

/// A version 3 datagram: the sender's header, a body and piggybacked items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sender's node name.
    pub from: String,
    /// Sender's generation: its start time in ms since the Unix epoch, raised above any earlier
    /// generation of the same name it learns of (a restart whose clock went backwards).
    pub generation: u64,
    /// Sender's SWIM incarnation within the generation, raised to refute suspicion.
    pub incarnation: u32,
    /// Version of the sender's claims/unable record.
    pub state_version: u32,
    /// What the packet asks or answers.
    pub body: Body,
    /// Piggybacked news.
    pub items: Vec<Item>,
}

impl Packet {
    /// Serialises the packet. Never fails: item lists longer than [`MAX_ITEMS`] and entry lists
    /// longer than [`MAX_ENTRIES`] are cut, IP lists are cut to [`STATE_PART_IPS`], and names to
    /// [`MAX_NAME_LEN`] bytes, so the output always decodes. Size budgets are the caller's
    /// (see [`Packet::encoded_len`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.put_head(&mut out);
        let items = self.items.get(..MAX_ITEMS).unwrap_or(&self.items);
        out.push(u8::try_from(items.len()).unwrap_or(u8::MAX));
        for item in items {
            item.put(&mut out);
        }
        out
    }

    /// Encoded size of everything but the items, plus the item count byte.
    pub fn head_len(&self) -> usize {
        let mut out = Vec::with_capacity(64);
        self.put_head(&mut out);
        out.len() + 1
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.head_len() + self.items.iter().map(Item::encoded_len).sum::<usize>()
    }

    fn put_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(match &self.body {
            Body::Ping { .. } => K_PING,
            Body::Ack { .. } => K_ACK,
            Body::PingReq { .. } => K_PING_REQ,
            Body::Nack { .. } => K_NACK,
            Body::Notice => K_NOTICE,
            Body::SyncReq { .. } => K_SYNC_REQ,
            Body::SyncDigest { .. } => K_SYNC_DIGEST,
            Body::SyncPull { .. } => K_SYNC_PULL,
        });
        put_name(&self.from, out);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.state_version.to_be_bytes());
        match &self.body {
            Body::Ping { seq } | Body::Ack { seq } | Body::Nack { seq } => {
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Body::PingReq { seq, target } => {
                out.extend_from_slice(&seq.to_be_bytes());
                put_name(target, out);
            }
            Body::Notice => {}
            Body::SyncReq { hashes } => {
                let hashes = hashes.get(..MAX_ENTRIES).unwrap_or(hashes);
                put_count(hashes.len(), out);
                for h in hashes {
                    out.extend_from_slice(&h.to_be_bytes());
                }
            }
            Body::SyncDigest { entries } => {
                let entries = entries.get(..MAX_ENTRIES).unwrap_or(entries);
                put_count(entries.len(), out);
                for e in entries {
                    put_name(&e.name, out);
                    out.extend_from_slice(&e.generation.to_be_bytes());
                    out.extend_from_slice(&e.incarnation.to_be_bytes());
                    out.push(e.status.to_u8());
                    out.extend_from_slice(&e.state_version.to_be_bytes());
                }
            }
            Body::SyncPull { wants } => {
                let wants = wants.get(..MAX_ENTRIES).unwrap_or(wants);
                put_count(wants.len(), out);
                for (name, part) in wants {
                    put_name(name, out);
                    out.extend_from_slice(&part.to_be_bytes());
                }
            }
        }
    }

    /// Parses one version 3 datagram. Never panics; rejects anything [`Packet::encode`] would
    /// not produce.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(CodecError::TooLong);
        }
        let mut r = Reader(bytes);
        if r.take(2)? != MAGIC {
            return Err(CodecError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        if !(K_PING..=K_SYNC_PULL).contains(&kind) {
            return Err(CodecError::UnknownKind(kind));
        }
        let from = r.name()?;
        let generation = r.u64()?;
        let incarnation = r.u32()?;
        let state_version = r.u32()?;
        let body = match kind {
            K_PING => Body::Ping { seq: r.u32()? },
            K_ACK => Body::Ack { seq: r.u32()? },
            K_PING_REQ => Body::PingReq {
                seq: r.u32()?,
                target: r.name()?,
            },
            K_NACK => Body::Nack { seq: r.u32()? },
            K_NOTICE => Body::Notice,
            K_SYNC_REQ => {
                let n = r.count(MAX_ENTRIES)?;
                let mut hashes = Vec::with_capacity(n.min(r.0.len() / 4));
                for _ in 0..n {
                    hashes.push(r.u32()?);
                }
                Body::SyncReq { hashes }
            }
            K_SYNC_DIGEST => {
                let n = r.count(MAX_ENTRIES)?;
                let mut entries = Vec::with_capacity(n.min(r.0.len() / 19));
                for _ in 0..n {
                    entries.push(Digest {
                        name: r.name()?,
                        generation: r.u64()?,
                        incarnation: r.u32()?,
                        status: Status::from_u8(r.u8()?)?,
                        state_version: r.u32()?,
                    });
                }
                Body::SyncDigest { entries }
            }
            _ => {
                let n = r.count(MAX_ENTRIES)?;
                let mut wants = Vec::with_capacity(n.min(r.0.len() / 4));
                for _ in 0..n {
                    wants.push((r.name()?, r.u16()?));
                }
                Body::SyncPull { wants }
            }
        };
        let n = usize::from(r.u8()?);
        let mut items = Vec::with_capacity(n.min(r.0.len() / 14));
        for _ in 0..n {
            items.push(Item::read(&mut r)?);
        }
        if !r.0.is_empty() {
            return Err(CodecError::TrailingBytes);
        }
        Ok(Self {
            from,
            generation,
            incarnation,
            state_version,
            body,
            items,
        })
    }
}

/// Any datagram a speaker may receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    /// Version 3.
    Packet(Packet),
    /// Versions 1 and 2, from a speaker that predates version 3.
    Legacy(Message),
}

/// Parses a datagram of any supported version: [`VERSION`] as a [`Packet`],
/// [`OLDEST_VERSION`]..=[`LEGACY_VERSION`] as a [`Message`]. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Datagram, CodecError> {
    match bytes.get(2) {
        Some(&VERSION) if bytes.get(..2) == Some(&MAGIC[..]) => {
            Packet::decode(bytes).map(Datagram::Packet)
        }
        _ => Message::decode(bytes).map(Datagram::Legacy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal ip")
    }

    fn sample() -> Message {
        Message::Heartbeat(Heartbeat {
            from: "node-a".into(),
            incarnation: 1_700_000_000_000,
            seq: 42,
            uptime_ms: 1234,
            heard: vec![("node-b".into(), 7), ("nöde-c".into(), u32::MAX)],
            claims: vec![ip("198.51.100.10"), ip("2001:db8::10")],
            unable: vec![ip("198.51.100.11"), ip("2001:db8::11")],
        })
    }

    /// Heartbeat header of `from: "n"`, incarnation 1, seq 2, uptime 3, in `version`.
    fn header(version: u8) -> Vec<u8> {
        let mut b = vec![b'F', b'L', version, 1, 1, b'n'];
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        b
    }

    #[test]
    fn leave_layout_is_pinned() {
        let leave = Message::Leave {
            from: "n1".into(),
            incarnation: 0x0102_0304_0506_0708,
        };
        let bytes = [b'F', b'L', 2, 2, 2, b'n', b'1', 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(leave.encode(), bytes);
        assert_eq!(Message::decode(&bytes), Ok(leave.clone()));
        // A version 1 Leave has the same body.
        let mut v1 = bytes;
        v1[2] = 1;
        assert_eq!(Message::decode(&v1), Ok(leave));
    }

    #[test]
    fn heartbeat_v2_layout_is_pinned() {
        let hb = Message::Heartbeat(Heartbeat {
            from: "n".into(),
            incarnation: 1,
            seq: 2,
            uptime_ms: 3,
            heard: vec![("m".into(), 9)],
            claims: vec![ip("203.0.113.5")],
            unable: vec![ip("203.0.113.6"), ip("2001:db8::6")],
        });
        let mut want = header(2);
        want.extend_from_slice(&[0, 1, 4, 203, 0, 113, 5]);
        want.extend_from_slice(&[0, 1, 1, b'm', 0, 0, 0, 9]);
        want.extend_from_slice(&[0, 2, 4, 203, 0, 113, 6, 6]);
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(hb.encode(), want);
        assert_eq!(Message::decode(&want), Ok(hb));
    }

    #[test]
    fn version_1_heartbeats_decode_with_nothing_unable() {
        // Bytes exactly as a version 1 speaker sends them: no `unable` list at the end.
        let mut v1 = header(1);
        v1.extend_from_slice(&[0, 1, 4, 203, 0, 113, 5]);
        v1.extend_from_slice(&[0, 1, 1, b'm', 0, 0, 0, 9]);
        let want = Heartbeat {
            from: "n".into(),
            incarnation: 1,
            seq: 2,
            uptime_ms: 3,
            heard: vec![("m".into(), 9)],
            claims: vec![ip("203.0.113.5")],
            unable: vec![],
        };
        assert_eq!(Message::decode(&v1), Ok(Message::Heartbeat(want.clone())));
        // Re-encoded, it is a version 2 message with an empty list.
        let mut v2 = v1.clone();
        v2[2] = 2;
        v2.extend_from_slice(&[0, 0]);
        assert_eq!(Message::Heartbeat(want).encode(), v2);
        // A version 1 message carrying a version 2 tail is not version 1.
        assert_eq!(
            Message::decode(&[v1.as_slice(), &[0, 0]].concat()),
            Err(CodecError::TrailingBytes)
        );
        // A version 2 message without its tail is truncated.
        let mut short = v1;
        short[2] = 2;
        assert_eq!(Message::decode(&short), Err(CodecError::Truncated));
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let l = Message::Leave {
            from: "x".into(),
            incarnation: u64::MAX,
        };
        assert_eq!(Message::decode(&l.encode()), Ok(l));
    }

    #[test]
    fn rejects_garbage() {
        let good = sample().encode();
        assert_eq!(Message::decode(&[]), Err(CodecError::Truncated));
        assert_eq!(Message::decode(b"XX\x02\x01"), Err(CodecError::BadMagic));
        assert_eq!(
            Message::decode(b"FL\x09\x01"),
            Err(CodecError::UnsupportedVersion(9))
        );
        assert_eq!(
            Message::decode(b"FL\x00\x01"),
            Err(CodecError::UnsupportedVersion(0))
        );
        assert_eq!(
            Message::decode(b"FL\x02\x07"),
            Err(CodecError::UnknownKind(7))
        );
        assert_eq!(Message::decode(b"FL\x02\x02\x00"), Err(CodecError::BadName));
        assert_eq!(
            Message::decode(b"FL\x02\x02\x02\xff\xfe"),
            Err(CodecError::BadName)
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(CodecError::TrailingBytes));
        // Every strict prefix is truncated, never a panic or a wrong message.
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n]).is_err(), "prefix {n} accepted");
        }
        let count = |n: usize| u16::try_from(n).expect("small").to_be_bytes();
        // Claim count over the limit.
        let mut many = header(2);
        many.extend_from_slice(&count(MAX_CLAIMS + 1));
        assert_eq!(Message::decode(&many), Err(CodecError::TooMany));
        // Unable count over what the claims leave of the shared budget.
        let mut shared = header(2);
        shared.extend_from_slice(&count(1));
        shared.extend_from_slice(&[4, 203, 0, 113, 5]);
        shared.extend_from_slice(&[0, 0]);
        shared.extend_from_slice(&count(MAX_CLAIMS));
        assert_eq!(Message::decode(&shared), Err(CodecError::TooMany));
        // Bad family, in claims and in unable.
        let mut fam = header(2);
        fam.extend_from_slice(&[0, 1, 5]);
        assert_eq!(Message::decode(&fam), Err(CodecError::BadFamily(5)));
        let mut fam = header(2);
        fam.extend_from_slice(&[0, 0, 0, 0, 0, 1, 7]);
        assert_eq!(Message::decode(&fam), Err(CodecError::BadFamily(7)));
        assert_eq!(
            Message::decode(&vec![0; MAX_MESSAGE_LEN + 1]),
            Err(CodecError::TooLong)
        );
    }

    fn v6(i: usize) -> IpAddr {
        let i = u16::try_from(i).expect("small");
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i))
    }

    #[test]
    fn encode_cuts_to_limits_and_stays_decodable() {
        // The largest message: longest names, every list full, IPv6 only.
        let big = Message::Heartbeat(Heartbeat {
            from: "é".repeat(200), // 400 bytes, cut at a char boundary to 252
            incarnation: 1,
            seq: 1,
            uptime_ms: 1,
            heard: (0..MAX_HEARD + 10)
                .map(|i| (format!("{i:0>253}"), u32::MAX))
                .collect(),
            claims: (0..MAX_CLAIMS + 10).map(v6).collect(),
            unable: (0..10).map(v6).collect(),
        });
        let bytes = big.encode();
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{}", bytes.len());
        let Ok(Message::Heartbeat(h)) = Message::decode(&bytes) else {
            panic!("oversized heartbeat did not decode");
        };
        assert_eq!(h.from, "é".repeat(126));
        assert_eq!((h.claims.len(), h.heard.len()), (MAX_CLAIMS, MAX_HEARD));
        // The claims used the whole budget: nothing is left for `unable`.
        assert!(h.unable.is_empty());
        // Claims leave room: `unable` gets exactly what is left.
        let split = Message::Heartbeat(Heartbeat {
            from: "n".into(),
            incarnation: 1,
            seq: 1,
            uptime_ms: 1,
            heard: vec![],
            claims: (0..100).map(v6).collect(),
            unable: (0..MAX_CLAIMS).map(v6).collect(),
        });
        let bytes = split.encode();
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{}", bytes.len());
        let Ok(Message::Heartbeat(h)) = Message::decode(&bytes) else {
            panic!("split heartbeat did not decode");
        };
        assert_eq!((h.claims.len(), h.unable.len()), (100, MAX_CLAIMS - 100));
    }
}
