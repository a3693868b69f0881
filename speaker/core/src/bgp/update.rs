//! UPDATE messages (RFC 4271 §4.3) with IPv4 NLRI in the body and IPv4/IPv6 unicast in
//! MP_REACH_NLRI/MP_UNREACH_NLRI (RFC 4760), the path attributes an announcer needs (ORIGIN,
//! AS_PATH with 2- or 4-octet ASNs, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, COMMUNITIES
//! RFC 1997, AS4_PATH RFC 6793, LARGE_COMMUNITIES RFC 8092) and unknown optional attributes
//! kept verbatim. End-of-RIB markers (RFC 4724 §2) are built and recognised here.
//!
//! Owns the bytes and the RFC 4271 §6.3 checks, each reported as a [`WireError`] whose
//! [`WireError::handling`] follows RFC 7606. It must not decide what to announce (that is
//! [`super::rib`]) nor apply RFC 6793's AS_TRANS substitution: the codec writes exactly the
//! ASNs it is given and refuses a 4-octet ASN on a 2-octet session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{AfiSafi, Encoding, Family, Reader, WireError, push_u16_len};

/// An IP prefix with its host bits cleared. Construct with [`Prefix::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len`, host bits cleared; `None` if `len` exceeds 32 (IPv4) or 128.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return None;
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Some(Self { addr, len })
    }

    /// A host route (/32 or /128) for one address.
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the default route (length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The family it belongs to.
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::Ipv4Unicast,
            IpAddr::V6(_) => Family::Ipv6Unicast,
        }
    }

    /// Bytes this prefix takes in an NLRI field: one length octet and the significant octets.
    pub fn encoded_len(&self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.len);
        let n = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => out.extend_from_slice(a.octets().get(..n).unwrap_or_default()),
            IpAddr::V6(a) => out.extend_from_slice(a.octets().get(..n).unwrap_or_default()),
        }
    }

    /// Reads one prefix of `family`. Host bits are cleared (RFC 4271: they are irrelevant).
    fn parse(r: &mut Reader<'_>, family: Family) -> Option<Self> {
        let len = r.u8()?;
        let max = if family == Family::Ipv4Unicast {
            32
        } else {
            128
        };
        if len > max {
            return None;
        }
        let bytes = r.take(usize::from(len).div_ceil(8))?;
        let addr = match family {
            Family::Ipv4Unicast => {
                let mut o = [0u8; 4];
                o.get_mut(..bytes.len())?.copy_from_slice(bytes);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            Family::Ipv6Unicast => {
                let mut o = [0u8; 16];
                o.get_mut(..bytes.len())?.copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        };
        Self::new(addr, len)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn parse_prefixes(bytes: &[u8], family: Family) -> Option<Vec<Prefix>> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Prefix::parse(&mut r, family)?);
    }
    Some(out)
}

fn emit_prefixes(prefixes: &[Prefix], family: Family, out: &mut Vec<u8>) -> Result<(), WireError> {
    for p in prefixes {
        if p.family() != family {
            return Err(WireError::Unencodable(
                "prefix of the wrong family in an NLRI field",
            ));
        }
        p.emit(out);
    }
    Ok(())
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// 0: interior to the originating AS (what an announcer of Service IPs sends).
    Igp,
    /// 1.
    Egp,
    /// 2.
    Incomplete,
}

/// AS_PATH segment types (RFC 4271 §4.3, RFC 5065 for confederations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentType {
    /// 1.
    Set,
    /// 2.
    Sequence,
    /// 3.
    ConfedSequence,
    /// 4.
    ConfedSet,
}

/// One AS_PATH segment: 1 to 255 ASNs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsSegment {
    /// Segment type.
    pub kind: SegmentType,
    /// The ASNs, nearest first for a sequence.
    pub asns: Vec<u32>,
}

/// An AS_PATH (or AS4_PATH): segments in order. Empty for routes originated to iBGP peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsPath {
    /// The segments.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// One AS_SEQUENCE of `asns`, or the empty path if `asns` is empty. Callers keep it to at
    /// most 255 ASNs (longer cannot be emitted as one segment).
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Whether any ASN needs 4 octets.
    pub fn has_four_octet(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| *a > u32::from(u16::MAX)))
    }

    fn parse(value: &[u8], four: bool) -> Option<Self> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = match r.u8()? {
                1 => SegmentType::Set,
                2 => SegmentType::Sequence,
                3 => SegmentType::ConfedSequence,
                4 => SegmentType::ConfedSet,
                _ => return None,
            };
            let count = r.u8()?;
            // RFC 7606 §7.2: a segment with no ASNs is malformed.
            if count == 0 {
                return None;
            }
            let mut asns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                asns.push(if four { r.u32()? } else { u32::from(r.u16()?) });
            }
            segments.push(AsSegment { kind, asns });
        }
        Some(Self { segments })
    }

    fn emit(&self, four: bool, out: &mut Vec<u8>) -> Result<(), WireError> {
        for s in &self.segments {
            out.push(match s.kind {
                SegmentType::Set => 1,
                SegmentType::Sequence => 2,
                SegmentType::ConfedSequence => 3,
                SegmentType::ConfedSet => 4,
            });
            let n = u8::try_from(s.asns.len()).ok().filter(|n| *n > 0).ok_or(
                WireError::Unencodable("AS_PATH segment of 0 or over 255 ASNs"),
            )?;
            out.push(n);
            for a in &s.asns {
                if four {
                    out.extend_from_slice(&a.to_be_bytes());
                } else {
                    let a = u16::try_from(*a)
                        .map_err(|_| WireError::Unencodable("4-octet ASN on a 2-octet session"))?;
                    out.extend_from_slice(&a.to_be_bytes());
                }
            }
        }
        Ok(())
    }
}

/// A large community (RFC 8092): global administrator and two local data parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (usually the ASN).
    pub global: u32,
    /// Local data part 1.
    pub local1: u32,
    /// Local data part 2.
    pub local2: u32,
}

/// The next hop carried in MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MpNextHop {
    /// 4 octets, for IPv4 unicast.
    V4(Ipv4Addr),
    /// 16 octets, or 32 with a link-local address for directly connected peers (RFC 2545 §3).
    V6 {
        /// The global address.
        global: Ipv6Addr,
        /// The link-local address, if sent.
        link_local: Option<Ipv6Addr>,
    },
}

/// MP_REACH_NLRI (type 14) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    /// The family of every prefix in `nlri`.
    pub family: Family,
    /// The next hop, of the family's kind.
    pub next_hop: MpNextHop,
    /// Reachable prefixes.
    pub nlri: Vec<Prefix>,
}

/// MP_UNREACH_NLRI (type 15) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    /// The family of every prefix in `withdrawn`.
    pub family: Family,
    /// Withdrawn prefixes; none in an End-of-RIB marker.
    pub withdrawn: Vec<Prefix>,
}

/// A path attribute we model, or an unknown optional one kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathAttribute {
    /// Type 1.
    Origin(Origin),
    /// Type 2, in the session's ASN width.
    AsPath(AsPath),
    /// Type 3: next hop of the IPv4 NLRI in the body.
    NextHop(Ipv4Addr),
    /// Type 4.
    MultiExitDisc(u32),
    /// Type 5 (iBGP only).
    LocalPref(u32),
    /// Type 6.
    AtomicAggregate,
    /// Type 8 (RFC 1997).
    Communities(Vec<u32>),
    /// Type 14.
    MpReach(MpReach),
    /// Type 15.
    MpUnreach(MpUnreach),
    /// Type 17 (RFC 6793), always 4-octet ASNs.
    As4Path(AsPath),
    /// Type 32 (RFC 8092).
    LargeCommunities(Vec<LargeCommunity>),
    /// Any other optional attribute, verbatim.
    Unknown {
        /// Flags as received (the extended-length bit is kept so the bytes round-trip).
        flags: u8,
        /// Type code.
        type_code: u8,
        /// Value.
        value: Vec<u8>,
    },
}

const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const PARTIAL: u8 = 0x20;
const EXTENDED: u8 = 0x10;

impl PathAttribute {
    /// The type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Self::Origin(_) => 1,
            Self::AsPath(_) => 2,
            Self::NextHop(_) => 3,
            Self::MultiExitDisc(_) => 4,
            Self::LocalPref(_) => 5,
            Self::AtomicAggregate => 6,
            Self::Communities(_) => 8,
            Self::MpReach(_) => 14,
            Self::MpUnreach(_) => 15,
            Self::As4Path(_) => 17,
            Self::LargeCommunities(_) => 32,
            Self::Unknown { type_code, .. } => *type_code,
        }
    }

    /// The optional/transitive flags RFC 4271 §5 fixes for a type we model.
    fn required_flags(type_code: u8) -> Option<u8> {
        match type_code {
            1 | 2 | 3 | 5 | 6 => Some(TRANSITIVE),
            4 | 14 | 15 => Some(OPTIONAL),
            8 | 17 | 32 => Some(OPTIONAL | TRANSITIVE),
            _ => None,
        }
    }

    fn value_bytes(&self, enc: Encoding) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::new();
        match self {
            Self::Origin(o) => v.push(match o {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            }),
            Self::AsPath(p) => p.emit(enc.four_octet_as, &mut v)?,
            Self::NextHop(a) => v.extend_from_slice(&a.octets()),
            Self::MultiExitDisc(x) | Self::LocalPref(x) => v.extend_from_slice(&x.to_be_bytes()),
            Self::AtomicAggregate => {}
            Self::Communities(c) => {
                for x in c {
                    v.extend_from_slice(&x.to_be_bytes());
                }
            }
            Self::MpReach(m) => {
                let a = m.family.afi_safi();
                v.extend_from_slice(&a.afi.to_be_bytes());
                v.push(a.safi);
                match (m.family, m.next_hop) {
                    (Family::Ipv4Unicast, MpNextHop::V4(nh)) => {
                        v.push(4);
                        v.extend_from_slice(&nh.octets());
                    }
                    (Family::Ipv6Unicast, MpNextHop::V6 { global, link_local }) => {
                        v.push(if link_local.is_some() { 32 } else { 16 });
                        v.extend_from_slice(&global.octets());
                        if let Some(ll) = link_local {
                            v.extend_from_slice(&ll.octets());
                        }
                    }
                    _ => {
                        return Err(WireError::Unencodable(
                            "MP_REACH next hop of another family",
                        ));
                    }
                }
                v.push(0); // reserved
                emit_prefixes(&m.nlri, m.family, &mut v)?;
            }
            Self::MpUnreach(m) => {
                let a = m.family.afi_safi();
                v.extend_from_slice(&a.afi.to_be_bytes());
                v.push(a.safi);
                emit_prefixes(&m.withdrawn, m.family, &mut v)?;
            }
            Self::As4Path(p) => p.emit(true, &mut v)?,
            Self::LargeCommunities(c) => {
                for x in c {
                    v.extend_from_slice(&x.global.to_be_bytes());
                    v.extend_from_slice(&x.local1.to_be_bytes());
                    v.extend_from_slice(&x.local2.to_be_bytes());
                }
            }
            Self::Unknown { value, .. } => v.extend_from_slice(value),
        }
        Ok(v)
    }

    /// Appends the attribute (flags, type, length, value). The extended-length flag is set
    /// when the value exceeds 255 bytes, or when an unknown attribute arrived with it.
    pub(crate) fn emit(&self, enc: Encoding, out: &mut Vec<u8>) -> Result<(), WireError> {
        let value = self.value_bytes(enc)?;
        let mut flags = match self {
            Self::Unknown { flags, .. } => *flags,
            _ => Self::required_flags(self.type_code()).unwrap_or(OPTIONAL),
        };
        if value.len() > 255 {
            flags |= EXTENDED;
        }
        out.push(flags);
        out.push(self.type_code());
        if flags & EXTENDED != 0 {
            push_u16_len(out, value.len(), "attribute over 65535 bytes")?;
        } else {
            out.push(u8::try_from(value.len()).unwrap_or(0));
        }
        out.extend_from_slice(&value);
        Ok(())
    }

    /// Bytes this attribute takes on the wire.
    pub fn encoded_len(&self, enc: Encoding) -> Result<usize, WireError> {
        let mut v = Vec::new();
        self.emit(enc, &mut v)?;
        Ok(v.len())
    }

    /// Parses one attribute given its header fields; `raw` is the whole attribute for
    /// NOTIFICATION data.
    fn parse(
        flags: u8,
        type_code: u8,
        value: &[u8],
        raw: &[u8],
        enc: Encoding,
    ) -> Result<Self, WireError> {
        let attr = || raw.to_vec();
        if let Some(required) = Self::required_flags(type_code) {
            let mut significant = flags & (OPTIONAL | TRANSITIVE);
            // The partial bit is meaningful only for optional transitive attributes.
            if flags & PARTIAL != 0 && required != (OPTIONAL | TRANSITIVE) {
                significant |= PARTIAL;
            }
            if significant != required {
                return Err(WireError::AttributeFlags {
                    type_code,
                    attr: attr(),
                });
            }
        }
        let length_error = || WireError::AttributeLength {
            type_code,
            attr: attr(),
        };
        let mut r = Reader::new(value);
        Ok(match type_code {
            1 => match (value.len(), value.first()) {
                (1, Some(0)) => Self::Origin(Origin::Igp),
                (1, Some(1)) => Self::Origin(Origin::Egp),
                (1, Some(2)) => Self::Origin(Origin::Incomplete),
                (1, _) => return Err(WireError::InvalidOrigin { attr: attr() }),
                _ => return Err(length_error()),
            },
            2 | 17 => {
                let four = type_code == 17 || enc.four_octet_as;
                let path = AsPath::parse(value, four).ok_or(WireError::MalformedAsPath {
                    type_code,
                    attr: attr(),
                })?;
                if type_code == 2 {
                    Self::AsPath(path)
                } else {
                    Self::As4Path(path)
                }
            }
            3 => match (r.array::<4>(), value.len()) {
                (Some(a), 4) => Self::NextHop(Ipv4Addr::from(a)),
                _ => return Err(length_error()),
            },
            4 | 5 => match (r.u32(), value.len()) {
                (Some(x), 4) if type_code == 4 => Self::MultiExitDisc(x),
                (Some(x), 4) => Self::LocalPref(x),
                _ => return Err(length_error()),
            },
            6 if value.is_empty() => Self::AtomicAggregate,
            6 => return Err(length_error()),
            8 => {
                if !value.len().is_multiple_of(4) {
                    return Err(length_error());
                }
                let mut c = Vec::with_capacity(value.len() / 4);
                while let Some(x) = r.u32() {
                    c.push(x);
                }
                Self::Communities(c)
            }
            14 | 15 => Self::parse_mp(type_code, value, raw)?,
            32 => {
                if !value.len().is_multiple_of(12) {
                    return Err(length_error());
                }
                let mut c = Vec::with_capacity(value.len() / 12);
                while let (Some(global), Some(local1), Some(local2)) = (r.u32(), r.u32(), r.u32()) {
                    c.push(LargeCommunity {
                        global,
                        local1,
                        local2,
                    });
                }
                Self::LargeCommunities(c)
            }
            _ => {
                if flags & OPTIONAL == 0 {
                    return Err(WireError::UnrecognizedWellKnown {
                        type_code,
                        attr: attr(),
                    });
                }
                Self::Unknown {
                    flags,
                    type_code,
                    value: value.to_vec(),
                }
            }
        })
    }

    fn parse_mp(type_code: u8, value: &[u8], raw: &[u8]) -> Result<Self, WireError> {
        let malformed = || WireError::MalformedMpAttribute {
            type_code,
            attr: raw.to_vec(),
        };
        let mut r = Reader::new(value);
        let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
            return Err(malformed());
        };
        let afi_safi = AfiSafi { afi, safi };
        let family = Family::from_afi_safi(afi_safi).ok_or(WireError::UnsupportedAfiSafi {
            afi_safi,
            attr: raw.to_vec(),
        })?;
        if type_code == 15 {
            let withdrawn = parse_prefixes(r.rest(), family).ok_or_else(malformed)?;
            return Ok(Self::MpUnreach(MpUnreach { family, withdrawn }));
        }
        let nh_len = r.u8().ok_or_else(malformed)?;
        let nh = r.take(usize::from(nh_len)).ok_or_else(malformed)?;
        let _reserved = r.u8().ok_or_else(malformed)?;
        let bad_nh = || WireError::InvalidNextHop { attr: raw.to_vec() };
        let next_hop = match family {
            Family::Ipv4Unicast => MpNextHop::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(nh).map_err(|_| bad_nh())?,
            )),
            Family::Ipv6Unicast => {
                let global = nh.get(..16).and_then(|g| <[u8; 16]>::try_from(g).ok());
                let ll = nh.get(16..32).and_then(|g| <[u8; 16]>::try_from(g).ok());
                match (nh.len(), global, ll) {
                    (16, Some(g), _) => MpNextHop::V6 {
                        global: Ipv6Addr::from(g),
                        link_local: None,
                    },
                    (32, Some(g), Some(l)) => MpNextHop::V6 {
                        global: Ipv6Addr::from(g),
                        link_local: Some(Ipv6Addr::from(l)),
                    },
                    _ => return Err(bad_nh()),
                }
            }
        };
        let nlri = parse_prefixes(r.rest(), family).ok_or_else(malformed)?;
        Ok(Self::MpReach(MpReach {
            family,
            next_hop,
            nlri,
        }))
    }
}

/// An UPDATE message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Update {
    /// IPv4 prefixes withdrawn in the body.
    pub withdrawn: Vec<Prefix>,
    /// Path attributes in wire order.
    pub attributes: Vec<PathAttribute>,
    /// IPv4 prefixes announced in the body.
    pub nlri: Vec<Prefix>,
}

/// Bytes of an UPDATE with nothing in it: header plus the two 2-octet length fields.
pub const EMPTY_UPDATE_LEN: usize = super::wire::HEADER_LEN + 4;

impl Update {
    /// The End-of-RIB marker of a family (RFC 4724 §2): an empty UPDATE for IPv4 unicast,
    /// an UPDATE with only an empty MP_UNREACH_NLRI otherwise.
    pub fn end_of_rib(family: Family) -> Self {
        match family {
            Family::Ipv4Unicast => Self::default(),
            Family::Ipv6Unicast => Self {
                attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                })],
                ..Self::default()
            },
        }
    }

    /// The family whose End-of-RIB this is, if it is one.
    pub fn is_end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::Ipv4Unicast),
            [PathAttribute::MpUnreach(m)] if m.withdrawn.is_empty() => Some(m.family),
            _ => None,
        }
    }

    /// The attribute with `type_code`, if present.
    pub fn attribute(&self, type_code: u8) -> Option<&PathAttribute> {
        self.attributes.iter().find(|a| a.type_code() == type_code)
    }

    /// Parses an UPDATE body (after the header).
    pub(crate) fn parse(body: &[u8], enc: Encoding) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let wlen = r.u16().ok_or(WireError::MalformedAttributeList)?;
        let wbytes = r
            .take(usize::from(wlen))
            .ok_or(WireError::MalformedAttributeList)?;
        let alen = r.u16().ok_or(WireError::MalformedAttributeList)?;
        let abytes = r
            .take(usize::from(alen))
            .ok_or(WireError::MalformedAttributeList)?;
        let nbytes = r.rest();
        let withdrawn =
            parse_prefixes(wbytes, Family::Ipv4Unicast).ok_or(WireError::InvalidNetworkField)?;
        let nlri =
            parse_prefixes(nbytes, Family::Ipv4Unicast).ok_or(WireError::InvalidNetworkField)?;

        let mut attributes: Vec<PathAttribute> = Vec::new();
        let mut a = Reader::new(abytes);
        while !a.is_empty() {
            let start = abytes.len() - a.remaining();
            let overrun = |type_code: u8| WireError::AttributeLength {
                type_code,
                attr: abytes.get(start..).unwrap_or_default().to_vec(),
            };
            let (Some(flags), Some(type_code)) = (a.u8(), a.u8()) else {
                return Err(overrun(0));
            };
            let len = if flags & EXTENDED != 0 {
                a.u16().map(usize::from)
            } else {
                a.u8().map(usize::from)
            }
            .ok_or(overrun(type_code))?;
            let value = a.take(len).ok_or(overrun(type_code))?;
            let raw = abytes
                .get(start..abytes.len() - a.remaining())
                .unwrap_or_default();
            let attr = PathAttribute::parse(flags, type_code, value, raw, enc)?;
            if attributes.iter().any(|x| x.type_code() == type_code) {
                return Err(WireError::DuplicateAttribute { type_code });
            }
            attributes.push(attr);
        }

        let update = Self {
            withdrawn,
            attributes,
            nlri,
        };
        // Mandatory attributes (RFC 4271 §5, RFC 4760 §3): only when something is announced.
        let mp_reach = update.attribute(14).is_some();
        if !update.nlri.is_empty() || mp_reach {
            let mut required = vec![1u8, 2];
            if !update.nlri.is_empty() {
                required.push(3);
            }
            if let Some(missing) = required
                .into_iter()
                .find(|t| update.attribute(*t).is_none())
            {
                return Err(WireError::MissingWellKnown { type_code: missing });
            }
        }
        Ok(update)
    }

    pub(crate) fn emit(&self, enc: Encoding, out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut w = Vec::new();
        emit_prefixes(&self.withdrawn, Family::Ipv4Unicast, &mut w)?;
        push_u16_len(out, w.len(), "withdrawn routes over 65535 bytes")?;
        out.extend_from_slice(&w);
        let mut attrs = Vec::new();
        for a in &self.attributes {
            a.emit(enc, &mut attrs)?;
        }
        push_u16_len(out, attrs.len(), "path attributes over 65535 bytes")?;
        out.extend_from_slice(&attrs);
        emit_prefixes(&self.nlri, Family::Ipv4Unicast, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_masked_and_bounded() {
        let p = Prefix::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)), 24);
        assert_eq!(p.map(|p| p.to_string()).as_deref(), Some("198.51.100.0/24"));
        assert!(Prefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 33).is_none());
        assert!(Prefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 129).is_none());
        assert_eq!(
            Prefix::new(IpAddr::V4(Ipv4Addr::BROADCAST), 0).map(|p| p.addr()),
            Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(
            Prefix::host(IpAddr::V6(Ipv6Addr::LOCALHOST)).encoded_len(),
            17
        );
    }

    #[test]
    fn end_of_rib_is_recognised() {
        for f in Family::ALL {
            assert_eq!(Update::end_of_rib(f).is_end_of_rib(), Some(f));
        }
    }
}
