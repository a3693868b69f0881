//! IPv6 Neighbor Discovery (RFC 4861) Neighbor Solicitation and Advertisement over an IPv6
//! header without extension headers, and the pure NDP responder.
//!
//! Owns the IPv6 fixed header, the ICMPv6 checksum, RFC 4861 §7.1 validation, the NS/NA bodies
//! with their link-layer address options, the answer to a solicitation ([`respond`]) and the
//! unsolicited advertisement sent on takeover ([`unsolicited_advert`]). It must not decide which
//! addresses this node announces (the caller passes `owns`) nor pick the interface's source
//! address (the caller passes it).
//!
//! NDP messages never carry extension headers in practice (the kernel sends none), so a packet
//! whose next header is not ICMPv6 is [`DropReason::NotNdp`] rather than walked.

use std::net::Ipv6Addr;

use super::{
    DropReason, EthernetRepr, Frame, IgnoreReason, Mac, Outcome, Packet, VlanTag, read_array,
};

/// The link-local all-nodes multicast address, `ff02::1`.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const IPV6_HEADER_LEN: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
const HOP_LIMIT: u8 = 255;
const TYPE_NS: u8 = 135;
const TYPE_NA: u8 = 136;
/// NS/NA fixed part: type, code, checksum, flags/reserved (4), target (16).
const NDP_BODY_LEN: usize = 24;
const OPT_SOURCE_LLA: u8 = 1;
const OPT_TARGET_LLA: u8 = 2;
/// RFC 7527 enhanced DAD nonce; kept only so a parsed DAD probe re-emits byte for byte.
const OPT_NONCE: u8 = 14;
const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;
/// Prefix of solicited-node multicast addresses, `ff02::1:ff00:0/104`.
const SOLICITED_NODE_PREFIX: [u8; 13] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];

/// The IPv6 header fields an NDP message carries besides the fixed hop limit 255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address; `::` in a DAD solicitation.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Traffic class (kept so a parsed packet re-emits exactly; replies use 0).
    pub traffic_class: u8,
    /// Flow label, 20 bits (kept so a parsed packet re-emits exactly; replies use 0).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// A header with traffic class and flow label 0, as the kernel's own NDP messages have.
    pub const fn new(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self {
            src,
            dst,
            traffic_class: 0,
            flow_label: 0,
        }
    }

    fn emit(&self, payload_len: u16, out: &mut Vec<u8>) {
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xfffff);
        out.extend_from_slice(&word.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.extend_from_slice(&[NEXT_HEADER_ICMPV6, HOP_LIMIT]);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
    }
}

/// A validated Neighbor Solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborSolicitRepr {
    /// IPv6 header fields.
    pub ip: Ipv6Repr,
    /// The address being resolved.
    pub target: Ipv6Addr,
    /// Source Link-Layer Address option, if present (never present when `ip.src` is `::`).
    pub source_mac: Option<Mac>,
    /// RFC 7527 nonce option (6 bytes), if present. Other unknown options are skipped on parse
    /// and therefore not re-emitted.
    pub nonce: Option<[u8; 6]>,
}

impl NeighborSolicitRepr {
    /// Duplicate Address Detection probe: the source is the unspecified address.
    pub fn is_dad(&self) -> bool {
        self.ip.src.is_unspecified()
    }

    /// Appends IPv6 header and ICMPv6 message with a computed checksum.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut icmp = Vec::with_capacity(40);
        icmp.extend_from_slice(&[TYPE_NS, 0, 0, 0, 0, 0, 0, 0]);
        icmp.extend_from_slice(&self.target.octets());
        if let Some(mac) = self.source_mac {
            icmp.extend_from_slice(&[OPT_SOURCE_LLA, 1]);
            icmp.extend_from_slice(&mac);
        }
        if let Some(nonce) = self.nonce {
            icmp.extend_from_slice(&[OPT_NONCE, 1]);
            icmp.extend_from_slice(&nonce);
        }
        emit_icmp(&self.ip, icmp, out);
    }
}

/// A validated Neighbor Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborAdvertRepr {
    /// IPv6 header fields.
    pub ip: Ipv6Repr,
    /// R flag: the sender is a router.
    pub router: bool,
    /// S flag: sent in response to a solicitation.
    pub solicited: bool,
    /// O flag: receivers should override an existing cache entry (what makes takeover work).
    pub override_: bool,
    /// The address being advertised.
    pub target: Ipv6Addr,
    /// Target Link-Layer Address option, if present.
    pub target_mac: Option<Mac>,
}

impl NeighborAdvertRepr {
    /// Appends IPv6 header and ICMPv6 message with a computed checksum.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut flags = 0u8;
        if self.router {
            flags |= FLAG_ROUTER;
        }
        if self.solicited {
            flags |= FLAG_SOLICITED;
        }
        if self.override_ {
            flags |= FLAG_OVERRIDE;
        }
        let mut icmp = Vec::with_capacity(32);
        icmp.extend_from_slice(&[TYPE_NA, 0, 0, 0, flags, 0, 0, 0]);
        icmp.extend_from_slice(&self.target.octets());
        if let Some(mac) = self.target_mac {
            icmp.extend_from_slice(&[OPT_TARGET_LLA, 1]);
            icmp.extend_from_slice(&mac);
        }
        emit_icmp(&self.ip, icmp, out);
    }
}

/// The solicited-node multicast address of `ip` (RFC 4291 §2.7.1): `ff02::1:ff` followed by the
/// low 24 bits of `ip`. The shell joins this group for every announced IPv6 address so that
/// solicitations reach the speaker.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    let mut a = [0u8; 16];
    a[..13].copy_from_slice(&SOLICITED_NODE_PREFIX);
    a[13..].copy_from_slice(&o[13..]);
    Ipv6Addr::from(a)
}

/// The Ethernet multicast MAC of an IPv6 multicast address (RFC 2464 §7): `33:33` followed by
/// the low 32 bits of the address.
pub fn multicast_mac(ip: Ipv6Addr) -> Mac {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn is_solicited_node(ip: &Ipv6Addr) -> bool {
    ip.octets().starts_with(&SOLICITED_NODE_PREFIX)
}

/// Parses an IPv6 packet (the Ethernet payload) as NS or NA and applies RFC 4861 §7.1.1/§7.1.2
/// validation. Bytes past the IPv6 payload length are Ethernet padding and ignored.
pub(crate) fn parse_ipv6(payload: &[u8]) -> Result<Frame, DropReason> {
    let header: [u8; IPV6_HEADER_LEN] = read_array(payload, 0).ok_or(DropReason::Truncated)?;
    let word = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if word >> 28 != 6 {
        return Err(DropReason::BadIpVersion);
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let next_header = header[6];
    let hop_limit = header[7];
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&header[24..40]);
    let ip = Ipv6Repr {
        src: Ipv6Addr::from(src),
        dst: Ipv6Addr::from(dst),
        traffic_class: ((word >> 20) & 0xff) as u8,
        flow_label: word & 0xfffff,
    };
    let icmp = payload
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
        .ok_or(DropReason::Truncated)?;
    if next_header != NEXT_HEADER_ICMPV6 {
        return Err(DropReason::NotNdp);
    }
    let (&icmp_type, rest) = icmp.split_first().ok_or(DropReason::Truncated)?;
    let &code = rest.first().ok_or(DropReason::Truncated)?;
    if icmp_type != TYPE_NS && icmp_type != TYPE_NA {
        return Err(DropReason::NotNdp);
    }
    // RFC 4861 §7.1.1/§7.1.2, in the RFC's order.
    if hop_limit != HOP_LIMIT {
        return Err(DropReason::HopLimitNot255);
    }
    if checksum(&ip.src, &ip.dst, icmp) != 0 {
        return Err(DropReason::BadChecksum);
    }
    if code != 0 {
        return Err(DropReason::BadIcmpCode);
    }
    if icmp.len() < NDP_BODY_LEN {
        return Err(DropReason::IcmpTooShort);
    }
    let target = Ipv6Addr::from(read_array::<16>(icmp, 8).ok_or(DropReason::Truncated)?);
    if target.is_multicast() {
        return Err(DropReason::MulticastTarget);
    }
    if ip.src.is_multicast() {
        return Err(DropReason::MulticastSource);
    }
    let options = Options::parse(icmp.get(NDP_BODY_LEN..).unwrap_or_default())?;
    if icmp_type == TYPE_NS {
        if ip.src.is_unspecified() {
            if !is_solicited_node(&ip.dst) {
                return Err(DropReason::DadNotToSolicitedNode);
            }
            if options.source_mac.is_some() {
                return Err(DropReason::DadWithSourceLinkAddr);
            }
        }
        Ok(Frame::NeighborSolicit(NeighborSolicitRepr {
            ip,
            target,
            source_mac: options.source_mac,
            nonce: options.nonce,
        }))
    } else {
        let flags = icmp.get(4).copied().unwrap_or_default();
        let solicited = flags & FLAG_SOLICITED != 0;
        if solicited && ip.dst.is_multicast() {
            return Err(DropReason::SolicitedAdvertToMulticast);
        }
        Ok(Frame::NeighborAdvert(NeighborAdvertRepr {
            ip,
            router: flags & FLAG_ROUTER != 0,
            solicited,
            override_: flags & FLAG_OVERRIDE != 0,
            target,
            target_mac: options.target_mac,
        }))
    }
}

/// The options this module understands. The first occurrence of each wins, as in Linux.
#[derive(Debug, Default)]
struct Options {
    source_mac: Option<Mac>,
    target_mac: Option<Mac>,
    nonce: Option<[u8; 6]>,
}

impl Options {
    fn parse(mut rest: &[u8]) -> Result<Self, DropReason> {
        let mut options = Self::default();
        // Each iteration consumes at least 8 bytes, so this terminates for any input.
        while !rest.is_empty() {
            let kind = rest.first().copied().ok_or(DropReason::BadOption)?;
            let units = rest.get(1).copied().ok_or(DropReason::BadOption)?;
            if units == 0 {
                return Err(DropReason::BadOption);
            }
            let len = usize::from(units) * 8;
            let option = rest.get(..len).ok_or(DropReason::BadOption)?;
            rest = rest.get(len..).unwrap_or_default();
            let data: Option<[u8; 6]> = if units == 1 {
                read_array(option, 2)
            } else {
                None
            };
            match kind {
                OPT_SOURCE_LLA | OPT_TARGET_LLA => {
                    // An Ethernet link-layer address option is exactly one unit (RFC 2464 §8).
                    let mac = data.ok_or(DropReason::BadOption)?;
                    let slot = if kind == OPT_SOURCE_LLA {
                        &mut options.source_mac
                    } else {
                        &mut options.target_mac
                    };
                    slot.get_or_insert(mac);
                }
                OPT_NONCE => {
                    if let Some(nonce) = data {
                        options.nonce.get_or_insert(nonce);
                    }
                }
                // RFC 4861 §4.6: unrecognised options are skipped.
                _ => {}
            }
        }
        Ok(options)
    }
}

/// Internet checksum of the ICMPv6 pseudo-header (RFC 8200 §8.1) plus `icmp`. Over a message
/// whose checksum field is filled in, a valid message yields 0; over one whose field is zero, it
/// yields the value to store.
fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(*last) << 8;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    // ICMPv6 length is at most 65535 here (it comes from a u16 field or from our own emit).
    add(&u32::try_from(icmp.len()).unwrap_or(u32::MAX).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn emit_icmp(ip: &Ipv6Repr, mut icmp: Vec<u8>, out: &mut Vec<u8>) {
    let sum = checksum(&ip.src, &ip.dst, &icmp);
    if let Some(field) = icmp.get_mut(2..4) {
        field.copy_from_slice(&sum.to_be_bytes());
    }
    // NS/NA built here are at most 48 bytes, far below u16::MAX.
    let len = u16::try_from(icmp.len()).unwrap_or(u16::MAX);
    ip.emit(len, out);
    out.extend_from_slice(&icmp);
}

/// Decides how to answer one received frame.
///
/// A valid NS for an address `owns` accepts gets a solicited NA (S=1, O=1, R=0, Target
/// Link-Layer Address option = `iface_mac`) unicast to the soliciting address and to its Source
/// Link-Layer Address (or the frame's Ethernet source when the option is absent, as in
/// unicast NUD probes). A DAD probe (source `::`) for an owned address is defended with an NA to
/// all-nodes `ff02::1` with S=0 (RFC 4861 §7.2.4), telling the prober the address is in use.
///
/// `iface_src` becomes the NA's IPv6 source. RFC 4861 §7.2.4 only requires the source of an
/// advertisement to be an address assigned to the interface it is sent from, so the caller
/// passes the interface's link-local address (always present) or the announced address itself
/// (which is what Linux does for its own addresses). This module does not choose, because it
/// does not know the interface's addresses.
///
/// An NA from another MAC for an owned address is reported as
/// [`IgnoreReason::AddressConflict`].
pub fn respond(
    frame: &[u8],
    iface_mac: Mac,
    iface_src: Ipv6Addr,
    owns: impl Fn(Ipv6Addr) -> bool,
) -> Outcome {
    let packet = match super::parse(frame) {
        Ok(p) => p,
        Err(reason) => return Outcome::Drop(reason),
    };
    if matches!(packet.frame, Frame::Arp(_)) {
        return Outcome::Ignore(IgnoreReason::WrongProtocol);
    }
    if packet.ethernet.src == iface_mac {
        return Outcome::Ignore(IgnoreReason::FromSelf);
    }
    match packet.frame {
        Frame::NeighborAdvert(na) => {
            Outcome::Ignore(if owns(na.target) && na.target_mac != Some(iface_mac) {
                IgnoreReason::AddressConflict
            } else {
                IgnoreReason::NotARequest
            })
        }
        Frame::NeighborSolicit(ns) => {
            if ns.source_mac == Some(iface_mac) {
                Outcome::Ignore(IgnoreReason::FromSelf)
            } else if !owns(ns.target) {
                Outcome::Ignore(IgnoreReason::NotOwned)
            } else {
                Outcome::Reply(solicited_advert(&packet.ethernet, &ns, iface_mac, iface_src).emit())
            }
        }
        Frame::Arp(_) => Outcome::Ignore(IgnoreReason::WrongProtocol),
    }
}

/// The advertisement answering `ns` (received with link header `request_eth`); see [`respond`]
/// for addressing. Carries the request's VLAN tag.
pub fn solicited_advert(
    request_eth: &EthernetRepr,
    ns: &NeighborSolicitRepr,
    iface_mac: Mac,
    iface_src: Ipv6Addr,
) -> Packet {
    let (eth_dst, ip_dst, solicited) = if ns.is_dad() {
        (multicast_mac(ALL_NODES), ALL_NODES, false)
    } else {
        (ns.source_mac.unwrap_or(request_eth.src), ns.ip.src, true)
    };
    advert(
        EthernetRepr {
            dst: eth_dst,
            src: iface_mac,
            vlan: request_eth.vlan,
        },
        Ipv6Repr::new(iface_src, ip_dst),
        solicited,
        ns.target,
    )
}

/// Unsolicited advertisement for takeover (RFC 4861 §7.2.6): to all-nodes `ff02::1`, S=0, O=1
/// so neighbours replace the old owner's MAC, with the Target Link-Layer Address option.
/// `iface_src` as in [`respond`].
pub fn unsolicited_advert(
    iface_mac: Mac,
    iface_src: Ipv6Addr,
    target: Ipv6Addr,
    vlan: Option<VlanTag>,
) -> Packet {
    advert(
        EthernetRepr {
            dst: multicast_mac(ALL_NODES),
            src: iface_mac,
            vlan,
        },
        Ipv6Repr::new(iface_src, ALL_NODES),
        false,
        target,
    )
}

fn advert(ethernet: EthernetRepr, ip: Ipv6Repr, solicited: bool, target: Ipv6Addr) -> Packet {
    Packet {
        frame: Frame::NeighborAdvert(NeighborAdvertRepr {
            ip,
            router: false,
            solicited,
            override_: true,
            target,
            target_mac: Some(ethernet.src),
        }),
        ethernet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicited_node_and_multicast_mac() {
        let ip: Ipv6Addr = "2001:db8::1:2345:6789".parse().expect("literal");
        let sn = solicited_node(ip);
        assert_eq!(
            sn,
            "ff02::1:ff45:6789".parse::<Ipv6Addr>().expect("literal")
        );
        assert!(is_solicited_node(&sn));
        assert!(!is_solicited_node(&ALL_NODES));
        assert_eq!(multicast_mac(sn), [0x33, 0x33, 0xff, 0x45, 0x67, 0x89]);
        assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
    }

    #[test]
    fn checksum_matches_rfc1071_example_folding() {
        // Independent check of the folding: an all-0xff message sums to 0xffff..., whose
        // complement after folding is 0; a zero message with zero addresses leaves only
        // length and next header: !(len + 58).
        let z = Ipv6Addr::UNSPECIFIED;
        assert_eq!(checksum(&z, &z, &[0, 0, 0, 0]), !(4u16 + 58));
        assert_eq!(checksum(&z, &z, &[0xab]), !(0xab00u16 + 1 + 58));
    }

    #[test]
    fn options_reject_zero_length_and_overrun() {
        assert_eq!(Options::parse(&[1, 0]).err(), Some(DropReason::BadOption));
        assert_eq!(
            Options::parse(&[1, 2, 0, 0, 0, 0, 0, 0]).err(),
            Some(DropReason::BadOption)
        );
        assert_eq!(Options::parse(&[1]).err(), Some(DropReason::BadOption));
        // Ethernet SLLA must be exactly one unit.
        assert_eq!(
            Options::parse(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).err(),
            Some(DropReason::BadOption)
        );
        // Unknown and oversized nonce options are skipped; first SLLA wins.
        let o = Options::parse(&[
            99, 1, 0, 0, 0, 0, 0, 0, //
            1, 1, 2, 0, 0, 0, 0, 1, //
            1, 1, 2, 0, 0, 0, 0, 2, //
            14, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ])
        .expect("valid options");
        assert_eq!(o.source_mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!((o.target_mac, o.nonce), (None, None));
    }
}
