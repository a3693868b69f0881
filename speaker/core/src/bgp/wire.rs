//! BGP-4 message framing (RFC 4271 §4.1), the [`Message`] representation and the codec's one
//! error type, [`WireError`].
//!
//! Owns the 19-byte header checks, splitting a TCP byte stream into messages ([`frame_len`]),
//! KEEPALIVE and ROUTE-REFRESH (RFC 2918), and the mapping from each malformation to the
//! NOTIFICATION code/subcode the RFCs prescribe ([`WireError::notification`]) and to the RFC 7606
//! handling ([`WireError::handling`]). OPEN, UPDATE and NOTIFICATION bodies live in their own
//! files and share this error type. It must not do I/O or panic on any input: every read is
//! bounds-checked through one small cursor type.
//!
//! Messages are at most 4096 bytes: RFC 8654 extended messages are not negotiated.

use super::notification::{Notification, NotificationCode};
use super::open::Open;
use super::update::Update;

/// The 16-byte all-ones marker every message starts with.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Length of the fixed header: marker, length, type.
pub const HEADER_LEN: usize = 19;
/// Largest message without RFC 8654 extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// AS number placed in 2-octet fields when the real one does not fit (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// How ASNs are encoded on this session: decided by the 4-octet AS capability (RFC 6793).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Encoding {
    /// Both sides sent the 4-octet AS capability: AS_PATH carries 4-byte ASNs.
    pub four_octet_as: bool,
}

impl Encoding {
    /// 4-octet ASNs in AS_PATH (what every modern peer negotiates).
    pub const FOUR_OCTET: Encoding = Encoding {
        four_octet_as: true,
    };
    /// 2-octet ASNs in AS_PATH (RFC 4271 peers without RFC 6793).
    pub const TWO_OCTET: Encoding = Encoding {
        four_octet_as: false,
    };
}

/// An AFI/SAFI pair as carried in capabilities, MP attributes and ROUTE-REFRESH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    /// Address family identifier (1 = IPv4, 2 = IPv6).
    pub afi: u16,
    /// Subsequent address family identifier (1 = unicast).
    pub safi: u8,
}

/// The two address families this speaker announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// AFI 1, SAFI 1.
    Ipv4Unicast,
    /// AFI 2, SAFI 1.
    Ipv6Unicast,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    /// The AFI/SAFI pair on the wire.
    pub const fn afi_safi(self) -> AfiSafi {
        match self {
            Self::Ipv4Unicast => AfiSafi { afi: 1, safi: 1 },
            Self::Ipv6Unicast => AfiSafi { afi: 2, safi: 1 },
        }
    }

    /// The family of an AFI/SAFI pair, if it is one we speak.
    pub const fn from_afi_safi(a: AfiSafi) -> Option<Family> {
        match (a.afi, a.safi) {
            (1, 1) => Some(Self::Ipv4Unicast),
            (2, 1) => Some(Self::Ipv6Unicast),
            _ => None,
        }
    }

    /// Stable label for metrics and status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4Unicast => "ipv4-unicast",
            Self::Ipv6Unicast => "ipv6-unicast",
        }
    }
}

/// Message type codes (RFC 4271 §4.1, RFC 2918).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// 1.
    Open,
    /// 2.
    Update,
    /// 3.
    Notification,
    /// 4.
    Keepalive,
    /// 5 (RFC 2918).
    RouteRefresh,
}

impl MessageType {
    /// The type octet.
    pub const fn code(self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Update => 2,
            Self::Notification => 3,
            Self::Keepalive => 4,
            Self::RouteRefresh => 5,
        }
    }

    /// The type for a type octet, if known.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Open),
            2 => Some(Self::Update),
            3 => Some(Self::Notification),
            4 => Some(Self::Keepalive),
            5 => Some(Self::RouteRefresh),
            _ => None,
        }
    }

    /// Stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Update => "update",
            Self::Notification => "notification",
            Self::Keepalive => "keepalive",
            Self::RouteRefresh => "route_refresh",
        }
    }

    /// Smallest valid total length for this type (RFC 4271 §6.1).
    const fn min_len(self) -> usize {
        match self {
            Self::Open => 29,
            Self::Update => 23,
            Self::Notification => 21,
            Self::Keepalive => 19,
            Self::RouteRefresh => 23,
        }
    }
}

/// A ROUTE-REFRESH request (RFC 2918; the middle octet is RFC 7313's subtype, 0 for a plain
/// refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// The family to re-send.
    pub afi_safi: AfiSafi,
    /// 0 = normal request; 1/2 = RFC 7313 begin/end of route refresh.
    pub subtype: u8,
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// This message's type.
    pub fn kind(&self) -> MessageType {
        match self {
            Self::Open(_) => MessageType::Open,
            Self::Update(_) => MessageType::Update,
            Self::Notification(_) => MessageType::Notification,
            Self::Keepalive => MessageType::Keepalive,
            Self::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Parses exactly one message: `bytes` must be the whole message, header included, and
    /// nothing more (use [`frame_len`] to cut a stream). `enc` says how AS_PATH encodes ASNs.
    pub fn parse(bytes: &[u8], enc: Encoding) -> Result<Message, WireError> {
        let (kind, len) = check_header(bytes)?;
        if len != bytes.len() {
            return Err(WireError::BadMessageLength {
                length: u16::try_from(bytes.len()).unwrap_or(u16::MAX),
            });
        }
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        Ok(match kind {
            MessageType::Open => Message::Open(Open::parse(body)?),
            MessageType::Update => Message::Update(Update::parse(body, enc)?),
            MessageType::Notification => Message::Notification(Notification::parse(body)),
            MessageType::Keepalive => Message::Keepalive,
            MessageType::RouteRefresh => {
                let mut r = Reader::new(body);
                let afi = r.u16();
                let subtype = r.u8();
                let safi = r.u8();
                match (afi, subtype, safi, r.is_empty()) {
                    (Some(afi), Some(subtype), Some(safi), true) => {
                        Message::RouteRefresh(RouteRefresh {
                            afi_safi: AfiSafi { afi, safi },
                            subtype,
                        })
                    }
                    _ => {
                        return Err(WireError::BadRouteRefreshLength {
                            message: bytes.to_vec(),
                        });
                    }
                }
            }
        })
    }

    /// Serialises the message with its header. Fails only if the representation cannot be
    /// encoded: longer than 4096 bytes, a field out of range, or an ASN that needs 4 octets on
    /// a 2-octet session.
    pub fn emit(&self, enc: Encoding) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&[0, 0, self.kind().code()]);
        match self {
            Self::Open(o) => o.emit(&mut out)?,
            Self::Update(u) => u.emit(enc, &mut out)?,
            Self::Notification(n) => n.emit(&mut out),
            Self::Keepalive => {}
            Self::RouteRefresh(r) => {
                out.extend_from_slice(&r.afi_safi.afi.to_be_bytes());
                out.push(r.subtype);
                out.push(r.afi_safi.safi);
            }
        }
        let len = out.len();
        if len > MAX_MESSAGE_LEN {
            return Err(WireError::TooLong { length: len });
        }
        // `len` <= 4096 was just checked, so it fits the 2-byte field.
        let field = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        if let Some(slot) = out.get_mut(16..18) {
            slot.copy_from_slice(&field);
        }
        Ok(out)
    }
}

/// Looks at the start of a received byte stream. `Ok(None)`: fewer than 19 bytes buffered, read
/// more. `Ok(Some(n))`: the header is valid and the message is `n` bytes long (it may not all
/// be buffered yet). `Err`: the stream is broken; send [`WireError::notification`] and close.
pub fn frame_len(stream: &[u8]) -> Result<Option<usize>, WireError> {
    if stream.len() < HEADER_LEN {
        return Ok(None);
    }
    check_header(stream).map(|(_, len)| Some(len))
}

/// RFC 4271 §6.1 header checks on the first 19 bytes; returns the type and the length field.
fn check_header(bytes: &[u8]) -> Result<(MessageType, usize), WireError> {
    let mut r = Reader::new(bytes);
    let marker = r.take(16).ok_or(WireError::BadMessageLength {
        length: u16::try_from(bytes.len()).unwrap_or(u16::MAX),
    })?;
    let (Some(length), Some(code)) = (r.u16(), r.u8()) else {
        return Err(WireError::BadMessageLength {
            length: u16::try_from(bytes.len()).unwrap_or(u16::MAX),
        });
    };
    if marker != MARKER {
        return Err(WireError::ConnectionNotSynchronized);
    }
    let len = usize::from(length);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(WireError::BadMessageLength { length });
    }
    let kind = MessageType::from_code(code).ok_or(WireError::BadMessageType { kind: code })?;
    let fits = match kind {
        MessageType::Keepalive => len == HEADER_LEN,
        // A wrong ROUTE-REFRESH length has its own code (RFC 7313 §5), checked in the body.
        MessageType::RouteRefresh => true,
        _ => len >= kind.min_len(),
    };
    if !fits {
        return Err(WireError::BadMessageLength { length });
    }
    Ok((kind, len))
}

/// What RFC 7606 says to do with a malformed UPDATE (RFC 4271 resets for every other message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handling {
    /// Send the NOTIFICATION and close the session.
    SessionReset,
    /// Treat the UPDATE's NLRI as withdrawn (RFC 7606 §2) and keep the session.
    TreatAsWithdraw,
    /// Drop the offending attribute and keep the rest (RFC 7606 §2).
    AttributeDiscard,
    /// Ignore routes of that AFI/SAFI on this session (RFC 4760 §7, RFC 7606 §5.3).
    AfiSafiDisable,
}

/// A malformed or unencodable message. Each variant knows the NOTIFICATION that reports it
/// ([`Self::notification`]) and, for UPDATEs, what RFC 7606 prescribes ([`Self::handling`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The marker is not all ones (1/1).
    #[error("marker is not all ones")]
    ConnectionNotSynchronized,
    /// The length field is out of range or wrong for the type (1/2).
    #[error("bad message length {length}")]
    BadMessageLength {
        /// The offending length field.
        length: u16,
    },
    /// Unknown type octet (1/3).
    #[error("bad message type {kind}")]
    BadMessageType {
        /// The offending type octet.
        kind: u8,
    },
    /// OPEN version other than 4 (2/1).
    #[error("unsupported BGP version {version}")]
    UnsupportedVersion {
        /// The version the peer bid.
        version: u8,
    },
    /// The optional parameters do not add up to their length field (2/0).
    #[error("malformed OPEN optional parameters")]
    MalformedOptionalParameters,
    /// An optional parameter other than capabilities (2/4).
    #[error("unsupported optional parameter {param}")]
    UnsupportedOptionalParameter {
        /// Its type.
        param: u8,
    },
    /// A capability we know with the wrong length (2/0).
    #[error("malformed capability {code}")]
    MalformedCapability {
        /// Its code.
        code: u8,
    },
    /// Withdrawn Routes Length or Total Path Attribute Length overrun the message (3/1).
    #[error("malformed attribute list")]
    MalformedAttributeList,
    /// An attribute appears twice (3/1).
    #[error("attribute {type_code} appears twice")]
    DuplicateAttribute {
        /// Its type code.
        type_code: u8,
    },
    /// A well-known attribute we do not know (3/2).
    #[error("unrecognized well-known attribute {type_code}")]
    UnrecognizedWellKnown {
        /// Its type code.
        type_code: u8,
        /// The whole attribute, for the NOTIFICATION data.
        attr: Vec<u8>,
    },
    /// ORIGIN, AS_PATH or NEXT_HOP missing where required (3/3).
    #[error("missing well-known attribute {type_code}")]
    MissingWellKnown {
        /// The missing type code.
        type_code: u8,
    },
    /// Flags that contradict the type code (3/4).
    #[error("attribute {type_code} has wrong flags")]
    AttributeFlags {
        /// Its type code.
        type_code: u8,
        /// The whole attribute.
        attr: Vec<u8>,
    },
    /// A length wrong for the type, or overrunning the attributes (3/5).
    #[error("attribute {type_code} has a bad length")]
    AttributeLength {
        /// Its type code.
        type_code: u8,
        /// The whole attribute (or what is left of it).
        attr: Vec<u8>,
    },
    /// ORIGIN other than 0, 1, 2 (3/6).
    #[error("invalid ORIGIN")]
    InvalidOrigin {
        /// The whole attribute.
        attr: Vec<u8>,
    },
    /// An MP_REACH_NLRI next hop with a length wrong for its family (3/9).
    #[error("invalid next hop")]
    InvalidNextHop {
        /// The whole attribute.
        attr: Vec<u8>,
    },
    /// MP_REACH_NLRI/MP_UNREACH_NLRI for an AFI/SAFI we do not speak (3/9).
    #[error("MP attribute for unsupported AFI {} SAFI {}", afi_safi.afi, afi_safi.safi)]
    UnsupportedAfiSafi {
        /// The AFI/SAFI carried.
        afi_safi: AfiSafi,
        /// The whole attribute.
        attr: Vec<u8>,
    },
    /// MP_REACH_NLRI/MP_UNREACH_NLRI whose fields do not add up (3/9).
    #[error("malformed MP attribute {type_code}")]
    MalformedMpAttribute {
        /// 14 or 15.
        type_code: u8,
        /// The whole attribute.
        attr: Vec<u8>,
    },
    /// A prefix longer than its family allows or overrunning its field (3/10).
    #[error("invalid network field")]
    InvalidNetworkField,
    /// AS_PATH (or AS4_PATH) segments that do not parse (3/11).
    #[error("malformed AS path")]
    MalformedAsPath {
        /// 2 (AS_PATH) or 17 (AS4_PATH).
        type_code: u8,
        /// The whole attribute.
        attr: Vec<u8>,
    },
    /// A ROUTE-REFRESH whose body is not 4 bytes (7/1, RFC 7313 §5).
    #[error("ROUTE-REFRESH with bad length")]
    BadRouteRefreshLength {
        /// The whole message, for the NOTIFICATION data.
        message: Vec<u8>,
    },
    /// Emit: the message would exceed 4096 bytes.
    #[error("message of {length} bytes exceeds 4096")]
    TooLong {
        /// The length it would have.
        length: usize,
    },
    /// Emit: a field does not fit (an AS_PATH segment over 255 ASNs, a 2-octet session given an
    /// ASN above 65535, a prefix of the wrong family in a field, capabilities over 65535 bytes).
    #[error("unencodable field: {0}")]
    Unencodable(&'static str),
}

impl WireError {
    /// Stable snake_case label for metrics and logs.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::ConnectionNotSynchronized => "connection_not_synchronized",
            Self::BadMessageLength { .. } => "bad_message_length",
            Self::BadMessageType { .. } => "bad_message_type",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::MalformedOptionalParameters => "malformed_optional_parameters",
            Self::UnsupportedOptionalParameter { .. } => "unsupported_optional_parameter",
            Self::MalformedCapability { .. } => "malformed_capability",
            Self::MalformedAttributeList => "malformed_attribute_list",
            Self::DuplicateAttribute { .. } => "duplicate_attribute",
            Self::UnrecognizedWellKnown { .. } => "unrecognized_well_known",
            Self::MissingWellKnown { .. } => "missing_well_known",
            Self::AttributeFlags { .. } => "attribute_flags",
            Self::AttributeLength { .. } => "attribute_length",
            Self::InvalidOrigin { .. } => "invalid_origin",
            Self::InvalidNextHop { .. } => "invalid_next_hop",
            Self::UnsupportedAfiSafi { .. } => "unsupported_afi_safi",
            Self::MalformedMpAttribute { .. } => "malformed_mp_attribute",
            Self::InvalidNetworkField => "invalid_network_field",
            Self::MalformedAsPath { .. } => "malformed_as_path",
            Self::BadRouteRefreshLength { .. } => "bad_route_refresh_length",
            Self::TooLong { .. } => "too_long",
            Self::Unencodable(_) => "unencodable",
        }
    }

    /// The NOTIFICATION that reports this error to the peer, data field included (RFC 4271
    /// §6, RFC 4760 §7, RFC 7313 §5).
    pub fn notification(&self) -> Notification {
        use NotificationCode as C;
        let (code, data) = match self {
            Self::ConnectionNotSynchronized => (C::CONNECTION_NOT_SYNCHRONIZED, Vec::new()),
            Self::BadMessageLength { length } => {
                (C::BAD_MESSAGE_LENGTH, length.to_be_bytes().to_vec())
            }
            Self::BadMessageType { kind } => (C::BAD_MESSAGE_TYPE, vec![*kind]),
            // Data: the largest version we support below the one bid (RFC 4271 §6.2).
            Self::UnsupportedVersion { .. } => (C::UNSUPPORTED_VERSION, vec![0, 4]),
            Self::MalformedOptionalParameters | Self::MalformedCapability { .. } => {
                (C::OPEN_UNSPECIFIC, Vec::new())
            }
            Self::UnsupportedOptionalParameter { .. } => {
                (C::UNSUPPORTED_OPTIONAL_PARAMETER, Vec::new())
            }
            Self::MalformedAttributeList | Self::DuplicateAttribute { .. } => {
                (C::MALFORMED_ATTRIBUTE_LIST, Vec::new())
            }
            Self::UnrecognizedWellKnown { attr, .. } => {
                (C::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, attr.clone())
            }
            Self::MissingWellKnown { type_code } => {
                (C::MISSING_WELL_KNOWN_ATTRIBUTE, vec![*type_code])
            }
            Self::AttributeFlags { attr, .. } => (C::ATTRIBUTE_FLAGS_ERROR, attr.clone()),
            Self::AttributeLength { attr, .. } => (C::ATTRIBUTE_LENGTH_ERROR, attr.clone()),
            Self::InvalidOrigin { attr } => (C::INVALID_ORIGIN, attr.clone()),
            // Only MP_REACH_NLRI next hops are checked beyond their length (a NEXT_HOP of the
            // wrong length is an attribute length error), and MP attribute errors are
            // Optional Attribute Errors (RFC 4760 §7).
            Self::InvalidNextHop { attr }
            | Self::UnsupportedAfiSafi { attr, .. }
            | Self::MalformedMpAttribute { attr, .. } => {
                (C::OPTIONAL_ATTRIBUTE_ERROR, attr.clone())
            }
            Self::InvalidNetworkField => (C::INVALID_NETWORK_FIELD, Vec::new()),
            Self::MalformedAsPath { .. } => (C::MALFORMED_AS_PATH, Vec::new()),
            Self::BadRouteRefreshLength { message } => {
                (C::ROUTE_REFRESH_INVALID_LENGTH, message.clone())
            }
            // Our own encoding failures never reach a peer; Cease/Out of Resources is the
            // closest honest report if a caller insists on sending one.
            Self::TooLong { .. } | Self::Unencodable(_) => (C::OUT_OF_RESOURCES, Vec::new()),
        };
        Notification::new(code, data)
    }

    /// What to do about it. Only UPDATE errors are ever anything but a session reset; for
    /// those, RFC 7606's rule is that a session is reset only when the NLRI cannot be located
    /// reliably (or MP_REACH/MP_UNREACH repeat).
    pub fn handling(&self) -> Handling {
        match self {
            Self::DuplicateAttribute { type_code } => {
                if matches!(type_code, 14 | 15) {
                    Handling::SessionReset
                } else {
                    Handling::AttributeDiscard
                }
            }
            Self::MissingWellKnown { .. }
            | Self::AttributeFlags { .. }
            | Self::InvalidOrigin { .. }
            | Self::InvalidNextHop { .. } => Handling::TreatAsWithdraw,
            Self::AttributeLength { type_code, .. } => match type_code {
                // ATOMIC_AGGREGATE and AGGREGATOR: attribute discard (RFC 7606 §7.6, §7.7).
                6 | 7 => Handling::AttributeDiscard,
                _ => Handling::TreatAsWithdraw,
            },
            Self::MalformedAsPath { type_code, .. } => {
                // A malformed AS4_PATH is discarded (RFC 6793 §6); AS_PATH: treat-as-withdraw.
                if *type_code == 17 {
                    Handling::AttributeDiscard
                } else {
                    Handling::TreatAsWithdraw
                }
            }
            Self::UnsupportedAfiSafi { .. } => Handling::AfiSafiDisable,
            _ => Handling::SessionReset,
        }
    }
}

/// A bounds-checked big-endian cursor: the only way the codec reads received bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes, or `None` (consuming nothing) if fewer remain.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array::<2>().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| <[u8; N]>::try_from(b).ok())
    }
}

/// Appends a big-endian 2-byte length, failing if it does not fit.
pub(crate) fn push_u16_len(
    out: &mut Vec<u8>,
    len: usize,
    what: &'static str,
) -> Result<(), WireError> {
    let v = u16::try_from(len).map_err(|_| WireError::Unencodable(what))?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u16(), None);
        assert_eq!(r.u8(), Some(3));
        assert_eq!(r.u8(), None);
        assert!(r.is_empty());
        assert_eq!(Reader::new(&[]).take(usize::MAX), None);
    }

    #[test]
    fn labels_are_snake_case() {
        let e = [
            WireError::ConnectionNotSynchronized,
            WireError::TooLong { length: 5000 },
            WireError::InvalidNetworkField,
        ];
        for x in e {
            assert!(
                x.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
    }

    #[test]
    fn header_checks_follow_rfc4271_6_1() {
        let mut ka = MARKER.to_vec();
        ka.extend_from_slice(&[0, 19, 4]);
        assert_eq!(frame_len(&ka), Ok(Some(19)));
        assert_eq!(frame_len(&ka[..18]), Ok(None));
        let mut bad = ka.clone();
        bad[3] = 0;
        assert_eq!(frame_len(&bad), Err(WireError::ConnectionNotSynchronized));
        let mut bad = ka.clone();
        bad[17] = 20;
        assert_eq!(
            frame_len(&bad),
            Err(WireError::BadMessageLength { length: 20 })
        );
        let mut bad = ka.clone();
        bad[18] = 9;
        assert_eq!(frame_len(&bad), Err(WireError::BadMessageType { kind: 9 }));
    }
}
