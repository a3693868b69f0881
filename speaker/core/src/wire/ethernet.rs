//! Ethernet II header with at most one IEEE 802.1Q tag.
//!
//! Owns the link header only: addresses, the optional VLAN tag and the EtherType that selects the
//! payload parser. It must not interpret the payload, and it accepts exactly one tag (TPID
//! 0x8100); a second tag (Q-in-Q) is reported as an unknown EtherType, because the speaker answers
//! on the interface where the VIP's subnet lives and never bridges between VLANs.

use super::{DropReason, Mac, is_multicast_mac, read_array, read_u16};

const TPID_8021Q: u16 = 0x8100;
const HEADER_LEN: usize = 14;
const TAG_LEN: usize = 4;

/// An 802.1Q tag. Kept whole (not just the VLAN id) so that a reply carries exactly the tag,
/// priority included, that the request arrived with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Priority code point, 0..=7 (higher bits are masked off on emit).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4095 (higher bits are masked off on emit).
    pub id: u16,
}

impl VlanTag {
    /// A tag with priority 0 and DEI clear.
    pub const fn new(id: u16) -> Self {
        Self {
            pcp: 0,
            dei: false,
            id: id & 0x0fff,
        }
    }

    /// Decodes a tag control information field.
    pub const fn from_tci(tci: u16) -> Self {
        Self {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            id: tci & 0x0fff,
        }
    }

    /// Encodes the tag control information field; out-of-range fields are masked, never panic.
    pub const fn tci(self) -> u16 {
        (((self.pcp & 0x07) as u16) << 13) | ((self.dei as u16) << 12) | (self.id & 0x0fff)
    }
}

/// The parts of an Ethernet header a reply needs. The EtherType is not stored: it follows from
/// the payload representation when emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// The 802.1Q tag, if the frame had one.
    pub vlan: Option<VlanTag>,
}

impl EthernetRepr {
    /// Parses the header, returning it with the (inner) EtherType and the payload slice.
    /// Rejects group source addresses, which no station may send from.
    pub fn parse(bytes: &[u8]) -> Result<(Self, u16, &[u8]), DropReason> {
        let dst: Mac = read_array(bytes, 0).ok_or(DropReason::Truncated)?;
        let src: Mac = read_array(bytes, 6).ok_or(DropReason::Truncated)?;
        let outer = read_u16(bytes, 12).ok_or(DropReason::Truncated)?;
        let (vlan, ethertype, payload_at) = if outer == TPID_8021Q {
            let tci = read_u16(bytes, 14).ok_or(DropReason::Truncated)?;
            let inner = read_u16(bytes, 16).ok_or(DropReason::Truncated)?;
            (Some(VlanTag::from_tci(tci)), inner, HEADER_LEN + TAG_LEN)
        } else {
            (None, outer, HEADER_LEN)
        };
        if is_multicast_mac(&src) {
            return Err(DropReason::MulticastSenderMac);
        }
        let payload = bytes.get(payload_at..).ok_or(DropReason::Truncated)?;
        Ok((Self { dst, src, vlan }, ethertype, payload))
    }

    /// Appends the header (with the tag, if any) for the given EtherType.
    pub fn emit(&self, ethertype: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        if let Some(tag) = self.vlan {
            out.extend_from_slice(&TPID_8021Q.to_be_bytes());
            out.extend_from_slice(&tag.tci().to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tci_round_trips_and_masks() {
        let t = VlanTag {
            pcp: 5,
            dei: true,
            id: 100,
        };
        assert_eq!(t.tci(), 0xb064);
        assert_eq!(VlanTag::from_tci(0xb064), t);
        let wild = VlanTag {
            pcp: 0xff,
            dei: false,
            id: 0xffff,
        };
        assert_eq!(wild.tci(), 0xefff);
        assert_eq!(VlanTag::new(0x1005).id, 5);
    }

    #[test]
    fn parses_untagged_and_tagged_headers() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x08, 0x06, 0xaa]);
        let (eth, et, payload) = EthernetRepr::parse(&f).expect("valid header");
        assert_eq!((eth.vlan, et, payload), (None, 0x0806, &[0xaa][..]));

        let mut t = f[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00, 0x20, 0x2a, 0x86, 0xdd]);
        let (eth, et, payload) = EthernetRepr::parse(&t).expect("valid tagged header");
        assert_eq!(eth.vlan, Some(VlanTag::from_tci(0x202a)));
        assert_eq!(eth.vlan.map(|v| (v.pcp, v.id)), Some((1, 42)));
        assert_eq!((et, payload.len()), (0x86dd, 0));
        let mut out = Vec::new();
        eth.emit(et, &mut out);
        assert_eq!(out, t);
    }

    #[test]
    fn rejects_short_and_group_source() {
        assert_eq!(
            EthernetRepr::parse(&[0; 13]).err(),
            Some(DropReason::Truncated)
        );
        let mut tagged = vec![0; 12];
        tagged.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(
            EthernetRepr::parse(&tagged).err(),
            Some(DropReason::Truncated)
        );
        let mut f = vec![0; 14];
        f[6] = 0x01;
        assert_eq!(
            EthernetRepr::parse(&f).err(),
            Some(DropReason::MulticastSenderMac)
        );
    }
}
