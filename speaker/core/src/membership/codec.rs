//! The speakers' heartbeat wire format.
//!
//! Owns the byte layout of [`Message`] and its limits. It must not interpret messages (that is
//! the state machine's job) and must never panic or allocate unboundedly on any input: every
//! length is checked against the remaining bytes and against a fixed maximum before use.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! "FL" | version=1 | kind (1 heartbeat, 2 leave) | from: name | incarnation: u64
//! heartbeat only:  seq: u64 | uptime_ms: u64
//!                  claims: u16 count, each (family 4|6: u8, 4|16 octets)
//!                  heard:  u16 count, each (name, age_ms: u32)
//! name = u8 length (1..=253) + UTF-8 bytes
//! ```
//!
//! Nothing may follow the last field. The limits keep the largest message under
//! [`MAX_MESSAGE_LEN`], inside one UDP datagram.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First two bytes of every message.
pub const MAGIC: [u8; 2] = *b"FL";
/// Format version; bump on any layout change (speakers reject other versions).
pub const VERSION: u8 = 1;
/// Longest node name, in bytes (a Kubernetes node name is a DNS subdomain, at most 253).
pub const MAX_NAME_LEN: usize = 253;
/// Most claimed IPs per heartbeat.
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
    /// A version other than [`VERSION`].
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A name that is empty, too long or not UTF-8.
    #[error("bad node name")]
    BadName,
    /// More claims or heard entries than the limits allow.
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

    /// Serialises the message. Never fails: lists beyond [`MAX_CLAIMS`] / [`MAX_HEARD`] are cut
    /// to their first entries and names beyond [`MAX_NAME_LEN`] bytes are cut at a character
    /// boundary, so the output always decodes. [`super::Membership`] never builds a message
    /// over the limits without reporting it.
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
                put_count(claims.len(), &mut out);
                for ip in claims {
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
                let heard = h.heard.get(..MAX_HEARD).unwrap_or(&h.heard);
                put_count(heard.len(), &mut out);
                for (name, age) in heard {
                    put_name(name, &mut out);
                    out.extend_from_slice(&age.to_be_bytes());
                }
            }
            Self::Leave { from, incarnation } => {
                out.push(KIND_LEAVE);
                put_name(from, &mut out);
                out.extend_from_slice(&incarnation.to_be_bytes());
            }
        }
        out
    }

    /// Parses one datagram. Never panics; rejects anything not produced by [`Message::encode`]
    /// of this version.
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
            let n = r.count(MAX_CLAIMS)?;
            let mut claims = Vec::with_capacity(n);
            for _ in 0..n {
                let ip = match r.u8()? {
                    4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                    6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                    other => return Err(CodecError::BadFamily(other)),
                };
                claims.push(ip);
            }
            let n = r.count(MAX_HEARD)?;
            let mut heard = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.name()?;
                let age = u32::from_be_bytes(r.array()?);
                heard.push((name, age));
            }
            Self::Heartbeat(Heartbeat {
                from,
                incarnation,
                seq,
                uptime_ms,
                heard,
                claims,
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

    fn sample() -> Message {
        Message::Heartbeat(Heartbeat {
            from: "node-a".into(),
            incarnation: 1_700_000_000_000,
            seq: 42,
            uptime_ms: 1234,
            heard: vec![("node-b".into(), 7), ("nöde-c".into(), u32::MAX)],
            claims: vec![
                "198.51.100.10".parse().expect("literal"),
                "2001:db8::10".parse().expect("literal"),
            ],
        })
    }

    #[test]
    fn heartbeat_layout_is_pinned() {
        let leave = Message::Leave {
            from: "n1".into(),
            incarnation: 0x0102_0304_0506_0708,
        };
        assert_eq!(
            leave.encode(),
            [b'F', b'L', 1, 2, 2, b'n', b'1', 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let hb = Message::Heartbeat(Heartbeat {
            from: "n".into(),
            incarnation: 1,
            seq: 2,
            uptime_ms: 3,
            heard: vec![("m".into(), 9)],
            claims: vec!["203.0.113.5".parse().expect("literal")],
        });
        let mut want = vec![b'F', b'L', 1, 1, 1, b'n'];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        want.extend_from_slice(&[0, 1, 4, 203, 0, 113, 5]);
        want.extend_from_slice(&[0, 1, 1, b'm', 0, 0, 0, 9]);
        assert_eq!(hb.encode(), want);
        assert_eq!(Message::decode(&want), Ok(hb));
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
        assert_eq!(Message::decode(b"XX\x01\x01"), Err(CodecError::BadMagic));
        assert_eq!(
            Message::decode(b"FL\x09\x01"),
            Err(CodecError::UnsupportedVersion(9))
        );
        assert_eq!(
            Message::decode(b"FL\x01\x07"),
            Err(CodecError::UnknownKind(7))
        );
        assert_eq!(Message::decode(b"FL\x01\x02\x00"), Err(CodecError::BadName));
        assert_eq!(
            Message::decode(b"FL\x01\x02\x02\xff\xfe"),
            Err(CodecError::BadName)
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(CodecError::TrailingBytes));
        // Every strict prefix is truncated, never a panic or a wrong message.
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n]).is_err(), "prefix {n} accepted");
        }
        // Claim count over the limit.
        let mut many = b"FL\x01\x01\x01n".to_vec();
        many.extend_from_slice(&[0; 24]);
        many.extend_from_slice(&u16::try_from(MAX_CLAIMS + 1).expect("small").to_be_bytes());
        assert_eq!(Message::decode(&many), Err(CodecError::TooMany));
        // Bad family.
        let mut fam = b"FL\x01\x01\x01n".to_vec();
        fam.extend_from_slice(&[0; 24]);
        fam.extend_from_slice(&[0, 1, 5]);
        assert_eq!(Message::decode(&fam), Err(CodecError::BadFamily(5)));
        assert_eq!(
            Message::decode(&vec![0; MAX_MESSAGE_LEN + 1]),
            Err(CodecError::TooLong)
        );
    }

    #[test]
    fn encode_cuts_to_limits_and_stays_decodable() {
        let big = Message::Heartbeat(Heartbeat {
            from: "é".repeat(200), // 400 bytes, cut at a char boundary to 252
            incarnation: 1,
            seq: 1,
            uptime_ms: 1,
            heard: (0..MAX_HEARD + 10)
                .map(|i| (format!("{i:0>253}"), u32::MAX))
                .collect(),
            claims: (0..MAX_CLAIMS + 10)
                .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16)))
                .collect(),
        });
        let bytes = big.encode();
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{}", bytes.len());
        let Ok(Message::Heartbeat(h)) = Message::decode(&bytes) else {
            panic!("oversized heartbeat did not decode");
        };
        assert_eq!(h.from, "é".repeat(126));
        assert_eq!((h.claims.len(), h.heard.len()), (MAX_CLAIMS, MAX_HEARD));
    }
}
