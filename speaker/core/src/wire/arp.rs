//! ARP for Ethernet/IPv4 (RFC 826), including RFC 5227 probes and announcements, and the pure
//! ARP responder.
//!
//! Owns the 28-byte ARP body, the decision whether to answer a request ([`respond`]) and the
//! gratuitous ARP frames sent on takeover ([`gratuitous_request`], [`gratuitous_reply`]). It must
//! not decide *which* addresses this node announces: the caller passes `owns`, computed from the
//! election.

use std::net::Ipv4Addr;

use super::{
    BROADCAST_MAC, DropReason, EthernetRepr, Frame, IgnoreReason, Mac, Outcome, Packet, VlanTag,
    is_multicast_mac, read_array, read_u16,
};

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
/// Length of the ARP body for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;

/// ARP operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// `1`: who has `target_ip`?
    Request,
    /// `2`: `sender_ip` is at `sender_mac`.
    Reply,
}

impl ArpOperation {
    const fn code(self) -> u16 {
        match self {
            Self::Request => 1,
            Self::Reply => 2,
        }
    }
}

/// A validated Ethernet/IPv4 ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request or reply.
    pub operation: ArpOperation,
    /// Sender hardware address (SHA).
    pub sender_mac: Mac,
    /// Sender protocol address (SPA); `0.0.0.0` in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (THA); ignored in requests, so tools vary (zeros or broadcast).
    pub target_mac: Mac,
    /// Target protocol address (TPA).
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses and validates an ARP body; bytes after the 28-byte body are padding and ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, DropReason> {
        if payload.len() < ARP_LEN {
            return Err(DropReason::Truncated);
        }
        let field = |at| read_u16(payload, at).ok_or(DropReason::Truncated);
        if field(0)? != HTYPE_ETHERNET {
            return Err(DropReason::BadHardwareType);
        }
        if field(2)? != PTYPE_IPV4 {
            return Err(DropReason::BadProtocolType);
        }
        let lens: [u8; 2] = read_array(payload, 4).ok_or(DropReason::Truncated)?;
        if lens != [6, 4] {
            return Err(DropReason::BadAddrLen);
        }
        let operation = match field(6)? {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            _ => return Err(DropReason::UnknownOperation),
        };
        let sender_mac: Mac = read_array(payload, 8).ok_or(DropReason::Truncated)?;
        if is_multicast_mac(&sender_mac) {
            return Err(DropReason::MulticastSenderMac);
        }
        let sender_ip: [u8; 4] = read_array(payload, 14).ok_or(DropReason::Truncated)?;
        let target_mac: Mac = read_array(payload, 18).ok_or(DropReason::Truncated)?;
        let target_ip: [u8; 4] = read_array(payload, 24).ok_or(DropReason::Truncated)?;
        Ok(Self {
            operation,
            sender_mac,
            sender_ip: Ipv4Addr::from(sender_ip),
            target_mac,
            target_ip: Ipv4Addr::from(target_ip),
        })
    }

    /// Appends the 28-byte ARP body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        out.extend_from_slice(&PTYPE_IPV4.to_be_bytes());
        out.extend_from_slice(&[6, 4]);
        out.extend_from_slice(&self.operation.code().to_be_bytes());
        out.extend_from_slice(&self.sender_mac);
        out.extend_from_slice(&self.sender_ip.octets());
        out.extend_from_slice(&self.target_mac);
        out.extend_from_slice(&self.target_ip.octets());
    }

    /// An announcement (RFC 5227 §2.3) or "gratuitous ARP": sender IP equals target IP.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip && !self.sender_ip.is_unspecified()
    }

    /// An RFC 5227 probe: a request with sender IP `0.0.0.0`.
    pub fn is_probe(&self) -> bool {
        self.operation == ArpOperation::Request && self.sender_ip.is_unspecified()
    }
}

/// Decides how to answer one received frame.
///
/// Answers requests (probes included, RFC 5227 §2.1.1: a probe for an address in use must be
/// answered so the prober backs off) for addresses `owns` accepts, from `iface_mac`, unicast to
/// the requester's SHA, with the request's VLAN tag. A probe's reply has target IP `0.0.0.0`,
/// exactly as the Linux kernel answers.
///
/// Never answers a gratuitous ARP, even for an owned address: another host announcing our
/// address is a conflict to log ([`IgnoreReason::AddressConflict`]), not a question. An ARP reply
/// from another MAC for an owned address is reported the same way.
pub fn respond(frame: &[u8], iface_mac: Mac, owns: impl Fn(Ipv4Addr) -> bool) -> Outcome {
    let packet = match super::parse(frame) {
        Ok(p) => p,
        Err(reason) => return Outcome::Drop(reason),
    };
    let Frame::Arp(arp) = packet.frame else {
        return Outcome::Ignore(IgnoreReason::WrongProtocol);
    };
    if packet.ethernet.src == iface_mac || arp.sender_mac == iface_mac {
        return Outcome::Ignore(IgnoreReason::FromSelf);
    }
    if arp.is_gratuitous() {
        return Outcome::Ignore(if owns(arp.sender_ip) {
            IgnoreReason::AddressConflict
        } else {
            IgnoreReason::Gratuitous
        });
    }
    if arp.operation == ArpOperation::Reply {
        return Outcome::Ignore(if owns(arp.sender_ip) {
            IgnoreReason::AddressConflict
        } else {
            IgnoreReason::NotARequest
        });
    }
    if !owns(arp.target_ip) {
        return Outcome::Ignore(IgnoreReason::NotOwned);
    }
    Outcome::Reply(reply_to(&packet.ethernet, &arp, iface_mac).emit())
}

/// The reply to `request` (received with link header `request_eth`) from `iface_mac`: unicast to
/// the requester's SHA, same VLAN tag, target fields copied from the request's sender fields.
pub fn reply_to(request_eth: &EthernetRepr, request: &ArpRepr, iface_mac: Mac) -> Packet {
    Packet {
        ethernet: EthernetRepr {
            dst: request.sender_mac,
            src: iface_mac,
            vlan: request_eth.vlan,
        },
        frame: Frame::Arp(ArpRepr {
            operation: ArpOperation::Reply,
            sender_mac: iface_mac,
            sender_ip: request.target_ip,
            target_mac: request.sender_mac,
            target_ip: request.sender_ip,
        }),
    }
}

/// Gratuitous ARP, request form (RFC 5227 §3 announcement): op=1, sender=target=`ip`, target MAC
/// zero, to broadcast. Sent together with [`gratuitous_reply`] on takeover because some hosts
/// only update their caches from one of the two forms.
pub fn gratuitous_request(iface_mac: Mac, ip: Ipv4Addr, vlan: Option<VlanTag>) -> Packet {
    gratuitous(ArpOperation::Request, [0; 6], iface_mac, ip, vlan)
}

/// Gratuitous ARP, reply form: op=2, sender=target=`ip`, target MAC = sender MAC, to broadcast.
pub fn gratuitous_reply(iface_mac: Mac, ip: Ipv4Addr, vlan: Option<VlanTag>) -> Packet {
    gratuitous(ArpOperation::Reply, iface_mac, iface_mac, ip, vlan)
}

fn gratuitous(
    operation: ArpOperation,
    target_mac: Mac,
    iface_mac: Mac,
    ip: Ipv4Addr,
    vlan: Option<VlanTag>,
) -> Packet {
    Packet {
        ethernet: EthernetRepr {
            dst: BROADCAST_MAC,
            src: iface_mac,
            vlan,
        },
        frame: Frame::Arp(ArpRepr {
            operation,
            sender_mac: iface_mac,
            sender_ip: ip,
            target_mac,
            target_ip: ip,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Vec<u8> {
        let mut out = Vec::new();
        ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: [2, 0, 0, 0, 0, 0xa],
            sender_ip: Ipv4Addr::new(198, 51, 100, 1),
            target_mac: [0; 6],
            target_ip: Ipv4Addr::new(198, 51, 100, 2),
        }
        .emit(&mut out);
        out
    }

    #[test]
    fn validates_each_header_field() {
        assert!(ArpRepr::parse(&body()).is_ok());
        let bad = |at: usize, v: u8| {
            let mut b = body();
            b[at] = v;
            ArpRepr::parse(&b).err()
        };
        assert_eq!(bad(1, 6), Some(DropReason::BadHardwareType));
        assert_eq!(bad(2, 0x86), Some(DropReason::BadProtocolType));
        assert_eq!(bad(4, 8), Some(DropReason::BadAddrLen));
        assert_eq!(bad(5, 16), Some(DropReason::BadAddrLen));
        assert_eq!(bad(7, 3), Some(DropReason::UnknownOperation));
        assert_eq!(bad(8, 0x01), Some(DropReason::MulticastSenderMac));
        assert_eq!(
            ArpRepr::parse(&body()[..27]).err(),
            Some(DropReason::Truncated)
        );
    }

    #[test]
    fn gratuitous_and_probe_predicates() {
        let mut a = ArpRepr::parse(&body()).expect("valid");
        assert!(!a.is_gratuitous() && !a.is_probe());
        a.sender_ip = Ipv4Addr::UNSPECIFIED;
        assert!(a.is_probe() && !a.is_gratuitous());
        a.sender_ip = a.target_ip;
        assert!(a.is_gratuitous());
    }
}
