//! The speakers' heartbeat wire format.
//!
//! Owns the byte layout of [`Message`] and its limits. It must not interpret messages (that is
//! the state machine's job) and must never panic or allocate unboundedly on any input: every
//! length is checked against the remaining bytes and against a fixed maximum before use.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! "FL" | version (1 or 2) | kind (1 heartbeat, 2 leave) | from: name | incarnation: u64
//! heartbeat only:  seq: u64 | uptime_ms: u64
//!                  claims: u16 count, each ip
//!                  heard:  u16 count, each (name, age_ms: u32)
//!   version 2 only: unable: u16 count, each ip
//! name = u8 length (1..=253) + UTF-8 bytes
//! ip   = family 4|6: u8, then 4|16 octets
//! ```
//!
//! `unable` (version 2) lists the IPs the sender is eligible for but has no usable interface
//! for. Version 1 is still decoded, as a heartbeat with an empty `unable`, so a rolling upgrade
//! keeps heartbeats flowing in one direction; [`Message::encode`] always writes [`VERSION`].
//! `claims` and `unable` share one budget of [`MAX_CLAIMS`] addresses, and nothing may follow
//! the last field. The limits keep the largest message under [`MAX_MESSAGE_LEN`], inside one
//! UDP datagram.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First two bytes of every message.
pub const MAGIC: [u8; 2] = *b"FL";
/// Format version written; bump on any layout change. Speakers decode this one and
/// [`OLDEST_VERSION`]..=`VERSION`, and reject the rest.
pub const VERSION: u8 = 2;
/// Oldest version still decoded (1: no `unable` list).
pub const OLDEST_VERSION: u8 = 1;
/// Longest node name, in bytes (a Kubernetes node name is a DNS subdomain, at most 253).
pub const MAX_NAME_LEN: usize = 253;
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
    /// A version outside [`OLDEST_VERSION`]..=[`VERSION`].
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
    /// Sender's uptime, for operators.
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

    /// Serialises the message in [`VERSION`]. Never fails: lists beyond the limits are cut to
    /// their first entries (`claims` first, then `unable` to what is left of [`MAX_CLAIMS`]) and
    /// names beyond [`MAX_NAME_LEN`] bytes are cut at a character boundary, so the output always
    /// decodes. [`super::Membership`] never builds a message over the limits without reporting
    /// it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
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

    /// Parses one datagram of version [`OLDEST_VERSION`]..=[`VERSION`]. Never panics; rejects
    /// anything not produced by [`Message::encode`] of such a version.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(CodecError::TooLong);
        }
        let mut r = Reader(bytes);
        if r.take(2)? != MAGIC {
            return Err(CodecError::BadMagic);
        }
        let version = r.u8()?;
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
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
        let mut ips = Vec::with_capacity(n);
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
