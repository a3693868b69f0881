//! Wire formats the speaker answers on the LAN: Ethernet (with at most one 802.1Q tag), ARP
//! (RFC 826, RFC 5227 probes and announcements) and IPv6 Neighbor Discovery (RFC 4861 NS/NA).
//!
//! This module owns turning raw frames into validated representations ([`parse`]), turning
//! representations back into bytes ([`Packet::emit`]) and the pure responders
//! ([`arp::respond`], [`ndp::respond`]). It must not do I/O, read clocks or panic on any input:
//! every byte slice, however short or hostile, yields `Ok` or a [`DropReason`]. All reads go
//! through bounds-checked helpers; there is no indexing that can fail on a frame.
//!
//! The submodules share this module's single error enum, [`DropReason`], so one metric label set
//! covers every parser.

pub mod arp;
pub mod ethernet;
pub mod ndp;

pub use arp::{ArpOperation, ArpRepr};
pub use ethernet::{EthernetRepr, VlanTag};
pub use ndp::{Ipv6Repr, NeighborAdvertRepr, NeighborSolicitRepr, multicast_mac, solicited_node};

/// An Ethernet (EUI-48) hardware address.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address.
pub const BROADCAST_MAC: Mac = [0xff; 6];

/// Why a frame was dropped as malformed or invalid. `as_str()` values are stable metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// The frame ends before a header or a length field says it should.
    #[error("frame truncated")]
    Truncated,
    /// The (inner) EtherType is neither ARP (0x0806) nor IPv6 (0x86dd).
    #[error("neither ARP nor IPv6")]
    NotArpOrIpv6,
    /// The Ethernet or ARP sender hardware address is a group (multicast/broadcast) address.
    #[error("multicast sender MAC")]
    MulticastSenderMac,
    /// ARP hardware type is not Ethernet (1).
    #[error("ARP hardware type is not Ethernet")]
    BadHardwareType,
    /// ARP protocol type is not IPv4 (0x0800).
    #[error("ARP protocol type is not IPv4")]
    BadProtocolType,
    /// ARP hardware/protocol address lengths are not 6/4.
    #[error("ARP address lengths are not 6/4")]
    BadAddrLen,
    /// ARP operation is neither request (1) nor reply (2).
    #[error("unknown ARP operation")]
    UnknownOperation,
    /// The IPv6 version field is not 6.
    #[error("IPv6 version field is not 6")]
    BadIpVersion,
    /// An IPv6 packet that is not an ICMPv6 Neighbor Solicitation or Advertisement (another
    /// next header, including extension headers, or another ICMPv6 type).
    #[error("not a neighbor solicitation or advertisement")]
    NotNdp,
    /// The ICMPv6 checksum over the pseudo-header does not verify.
    #[error("bad ICMPv6 checksum")]
    BadChecksum,
    /// IPv6 hop limit is not 255, so the packet may have been forwarded by a router (RFC 4861 §7.1).
    #[error("hop limit is not 255")]
    HopLimitNot255,
    /// ICMPv6 code is not 0.
    #[error("ICMPv6 code is not 0")]
    BadIcmpCode,
    /// The ICMPv6 message is shorter than the 24 bytes an NS/NA needs.
    #[error("ICMPv6 message shorter than 24 bytes")]
    IcmpTooShort,
    /// The NS/NA target address is a multicast address.
    #[error("multicast target address")]
    MulticastTarget,
    /// The IPv6 source address is a multicast address.
    #[error("multicast source address")]
    MulticastSource,
    /// An NDP option has length zero, overruns the message, or a link-layer address option has
    /// a length other than one 8-octet unit.
    #[error("malformed NDP option")]
    BadOption,
    /// A DAD solicitation (unspecified source) carries a Source Link-Layer Address option.
    #[error("DAD solicitation with source link-layer address option")]
    DadWithSourceLinkAddr,
    /// A DAD solicitation (unspecified source) is not sent to a solicited-node multicast address.
    #[error("DAD solicitation not sent to a solicited-node multicast address")]
    DadNotToSolicitedNode,
    /// A Neighbor Advertisement sent to a multicast address has the Solicited flag set.
    #[error("solicited advertisement sent to a multicast address")]
    SolicitedAdvertToMulticast,
}

impl DropReason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [DropReason; 19] = [
        Self::Truncated,
        Self::NotArpOrIpv6,
        Self::MulticastSenderMac,
        Self::BadHardwareType,
        Self::BadProtocolType,
        Self::BadAddrLen,
        Self::UnknownOperation,
        Self::BadIpVersion,
        Self::NotNdp,
        Self::BadChecksum,
        Self::HopLimitNot255,
        Self::BadIcmpCode,
        Self::IcmpTooShort,
        Self::MulticastTarget,
        Self::MulticastSource,
        Self::BadOption,
        Self::DadWithSourceLinkAddr,
        Self::DadNotToSolicitedNode,
        Self::SolicitedAdvertToMulticast,
    ];

    /// Stable snake_case label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::NotArpOrIpv6 => "not_arp_or_ipv6",
            Self::MulticastSenderMac => "multicast_sender_mac",
            Self::BadHardwareType => "bad_hardware_type",
            Self::BadProtocolType => "bad_protocol_type",
            Self::BadAddrLen => "bad_addr_len",
            Self::UnknownOperation => "unknown_operation",
            Self::BadIpVersion => "bad_ip_version",
            Self::NotNdp => "not_ndp",
            Self::BadChecksum => "bad_checksum",
            Self::HopLimitNot255 => "hop_limit_not_255",
            Self::BadIcmpCode => "bad_icmp_code",
            Self::IcmpTooShort => "icmp_too_short",
            Self::MulticastTarget => "multicast_target",
            Self::MulticastSource => "multicast_source",
            Self::BadOption => "bad_option",
            Self::DadWithSourceLinkAddr => "dad_with_source_link_addr",
            Self::DadNotToSolicitedNode => "dad_not_to_solicited_node",
            Self::SolicitedAdvertToMulticast => "solicited_advert_to_multicast",
        }
    }
}

/// Why a well-formed frame needs no answer. `as_str()` values are stable metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// An NDP frame given to the ARP responder or an ARP frame given to the NDP responder.
    WrongProtocol,
    /// Our own frame looped back (Ethernet or ARP sender MAC is the interface's MAC); packet
    /// sockets also see outgoing frames.
    FromSelf,
    /// An ARP reply or a Neighbor Advertisement that does not conflict with us.
    NotARequest,
    /// The requested address is not one we announce.
    NotOwned,
    /// A gratuitous ARP (sender IP == target IP) for an address we do not announce.
    Gratuitous,
    /// Another host announces or answers for an address we announce (gratuitous ARP, ARP reply
    /// or Neighbor Advertisement from a different MAC). The shell should log an address conflict.
    AddressConflict,
}

impl IgnoreReason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [IgnoreReason; 6] = [
        Self::WrongProtocol,
        Self::FromSelf,
        Self::NotARequest,
        Self::NotOwned,
        Self::Gratuitous,
        Self::AddressConflict,
    ];

    /// Stable snake_case label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WrongProtocol => "wrong_protocol",
            Self::FromSelf => "from_self",
            Self::NotARequest => "not_a_request",
            Self::NotOwned => "not_owned",
            Self::Gratuitous => "gratuitous",
            Self::AddressConflict => "address_conflict",
        }
    }
}

/// What a responder decided about one received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes (a complete Ethernet frame) on the interface the request came in on.
    Reply(Vec<u8>),
    /// Well-formed, but nothing to answer.
    Ignore(IgnoreReason),
    /// Malformed or invalid; counted and discarded.
    Drop(DropReason),
}

/// The payload of a parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An ARP request or reply.
    Arp(ArpRepr),
    /// An ICMPv6 Neighbor Solicitation that passed RFC 4861 §7.1.1 validation.
    NeighborSolicit(NeighborSolicitRepr),
    /// An ICMPv6 Neighbor Advertisement that passed RFC 4861 §7.1.2 validation.
    NeighborAdvert(NeighborAdvertRepr),
}

/// A whole parsed Ethernet frame: link header plus payload representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Ethernet addresses and the optional VLAN tag (kept so replies carry the same tag).
    pub ethernet: EthernetRepr,
    /// The ARP or NDP message.
    pub frame: Frame,
}

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Parses a whole Ethernet frame (without FCS). Trailing bytes beyond what the ARP header or the
/// IPv6 payload length covers are Ethernet padding and ignored. Never panics.
pub fn parse(bytes: &[u8]) -> Result<Packet, DropReason> {
    let (ethernet, ethertype, payload) = EthernetRepr::parse(bytes)?;
    let frame = match ethertype {
        ETHERTYPE_ARP => Frame::Arp(ArpRepr::parse(payload)?),
        ETHERTYPE_IPV6 => ndp::parse_ipv6(payload)?,
        _ => return Err(DropReason::NotArpOrIpv6),
    };
    Ok(Packet { ethernet, frame })
}

impl Packet {
    /// Serialises the frame: Ethernet header (with the VLAN tag if any), then ARP or IPv6+ICMPv6
    /// with a freshly computed checksum. No padding to 60 bytes is added; NIC drivers pad short
    /// frames, as they do for the kernel's own 42-byte ARP replies.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        match &self.frame {
            Frame::Arp(arp) => {
                self.ethernet.emit(ETHERTYPE_ARP, &mut out);
                arp.emit(&mut out);
            }
            Frame::NeighborSolicit(ns) => {
                self.ethernet.emit(ETHERTYPE_IPV6, &mut out);
                ns.emit(&mut out);
            }
            Frame::NeighborAdvert(na) => {
                self.ethernet.emit(ETHERTYPE_IPV6, &mut out);
                na.emit(&mut out);
            }
        }
        out
    }
}

/// Returns true for group (multicast or broadcast) MAC addresses: the I/G bit is set.
pub const fn is_multicast_mac(mac: &Mac) -> bool {
    mac[0] & 0x01 != 0
}

/// Bounds-checked big-endian reads: the only way this module reads frame bytes, so no input can
/// cause an out-of-bounds panic.
pub(crate) fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([
        b.first().copied()?,
        b.get(1).copied()?,
    ]))
}

/// Copies `N` bytes starting at `at`, or `None` if the buffer is too short.
pub(crate) fn read_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    let b = buf.get(at..at.checked_add(N)?)?;
    <[u8; N]>::try_from(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_snake_case() {
        let mut drop: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        let mut ignore: Vec<&str> = IgnoreReason::ALL.iter().map(|r| r.as_str()).collect();
        for l in drop.iter().chain(ignore.iter()) {
            assert!(
                l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        drop.sort_unstable();
        drop.dedup();
        ignore.sort_unstable();
        ignore.dedup();
        assert_eq!(drop.len(), DropReason::ALL.len());
        assert_eq!(ignore.len(), IgnoreReason::ALL.len());
    }

    #[test]
    fn readers_are_bounds_checked() {
        assert_eq!(read_u16(&[1, 2, 3], 1), Some(0x0203));
        assert_eq!(read_u16(&[1, 2, 3], 2), None);
        assert_eq!(read_u16(&[], usize::MAX), None);
        assert_eq!(read_array::<2>(&[1, 2, 3], 1), Some([2, 3]));
        assert_eq!(read_array::<4>(&[1, 2, 3], 0), None);
        assert_eq!(read_array::<1>(&[1], usize::MAX), None);
    }

    #[test]
    fn unknown_ethertype_is_dropped() {
        let mut f = vec![0u8; 60];
        f[6] = 0x02;
        f[12] = 0x08; // IPv4
        assert_eq!(parse(&f), Err(DropReason::NotArpOrIpv6));
    }
}
