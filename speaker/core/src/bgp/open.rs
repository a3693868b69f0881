//! OPEN messages (RFC 4271 §4.2) and their capabilities (RFC 5492): multiprotocol
//! (RFC 4760), route refresh (RFC 2918), graceful restart (RFC 4724) and 4-octet AS
//! (RFC 6793). Extended optional parameters (RFC 9072) are read, and written only when the
//! capabilities exceed 255 bytes.
//!
//! Owns the OPEN's bytes. It must not judge the values (peer AS, hold time, identifier): the
//! session validates those against its configuration. Unknown capabilities are kept verbatim.
//! All capabilities are written in one optional parameter; peers that send one parameter per
//! capability are read the same, so their bytes do not round-trip exactly.

use std::net::Ipv4Addr;

use super::wire::{AS_TRANS, AfiSafi, Family, Reader, WireError, push_u16_len};

/// Graceful restart capability (code 64, RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted and its peer should keep the routes it had as stale
    /// until End-of-RIB.
    pub restarting: bool,
    /// N bit (RFC 8538), kept as received; we never set it.
    pub notification: bool,
    /// Seconds the peer should keep our routes while we restart (12 bits, at most 4095).
    pub restart_time: u16,
    /// Families with their F bit: forwarding state was preserved across the restart.
    pub families: Vec<(AfiSafi, bool)>,
}

/// One capability.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Code 1: the sender speaks this AFI/SAFI.
    Multiprotocol(AfiSafi),
    /// Code 2: the sender accepts ROUTE-REFRESH.
    RouteRefresh,
    /// Code 64.
    GracefulRestart(GracefulRestart),
    /// Code 65: the sender's real AS number.
    FourOctetAs(u32),
    /// Anything else, verbatim.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Self::Multiprotocol(_) => 1,
            Self::RouteRefresh => 2,
            Self::GracefulRestart(_) => 64,
            Self::FourOctetAs(_) => 65,
            Self::Unknown { code, .. } => *code,
        }
    }

    fn parse(code: u8, value: &[u8]) -> Result<Self, WireError> {
        let bad = WireError::MalformedCapability { code };
        let mut r = Reader::new(value);
        Ok(match code {
            1 => {
                let (Some(afi), Some(_reserved), Some(safi), true) =
                    (r.u16(), r.u8(), r.u8(), value.len() == 4)
                else {
                    return Err(bad);
                };
                Self::Multiprotocol(AfiSafi { afi, safi })
            }
            2 if value.is_empty() => Self::RouteRefresh,
            64 => {
                let head = r.u16().ok_or(bad.clone())?;
                if !r.remaining().is_multiple_of(4) {
                    return Err(bad);
                }
                let mut families = Vec::with_capacity(r.remaining() / 4);
                while let (Some(afi), Some(safi), Some(flags)) = (r.u16(), r.u8(), r.u8()) {
                    families.push((AfiSafi { afi, safi }, flags & 0x80 != 0));
                }
                Self::GracefulRestart(GracefulRestart {
                    restarting: head & 0x8000 != 0,
                    notification: head & 0x4000 != 0,
                    restart_time: head & 0x0fff,
                    families,
                })
            }
            65 => match (r.u32(), value.len()) {
                (Some(asn), 4) => Self::FourOctetAs(asn),
                _ => return Err(bad),
            },
            _ => Self::Unknown {
                code,
                value: value.to_vec(),
            },
        })
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut value = Vec::new();
        match self {
            Self::Multiprotocol(a) => {
                value.extend_from_slice(&a.afi.to_be_bytes());
                value.push(0);
                value.push(a.safi);
            }
            Self::RouteRefresh => {}
            Self::GracefulRestart(gr) => {
                if gr.restart_time > 0x0fff {
                    return Err(WireError::Unencodable("graceful restart time over 4095 s"));
                }
                let mut head = gr.restart_time;
                if gr.restarting {
                    head |= 0x8000;
                }
                if gr.notification {
                    head |= 0x4000;
                }
                value.extend_from_slice(&head.to_be_bytes());
                for (a, forwarding) in &gr.families {
                    value.extend_from_slice(&a.afi.to_be_bytes());
                    value.push(a.safi);
                    value.push(if *forwarding { 0x80 } else { 0 });
                }
            }
            Self::FourOctetAs(asn) => value.extend_from_slice(&asn.to_be_bytes()),
            Self::Unknown { value: v, .. } => value.extend_from_slice(v),
        }
        out.push(self.code());
        out.push(
            u8::try_from(value.len())
                .map_err(|_| WireError::Unencodable("capability over 255 bytes"))?,
        );
        out.extend_from_slice(&value);
        Ok(())
    }
}

/// An OPEN message. The version is always 4: parsing rejects any other with 2/1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field: [`AS_TRANS`] when the real AS does not fit.
    pub my_as: u16,
    /// Proposed hold time in seconds (0, or at least 3 to be acceptable).
    pub hold_time: u16,
    /// BGP Identifier (RFC 6286: any non-zero 4 octets).
    pub bgp_id: Ipv4Addr,
    /// Capabilities in the order sent.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn` with the 2-octet field filled per RFC 6793 (the 4-octet AS capability
    /// must be among `capabilities` for the peer to learn an AS above 65535).
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        Self {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: from the 4-octet AS capability if present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The AS in the 4-octet AS capability, if sent.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    /// AFI/SAFIs announced with multiprotocol capabilities. A peer that sends none speaks
    /// IPv4 unicast only (RFC 4760 §8), and this returns exactly that.
    pub fn afi_safis(&self) -> Vec<AfiSafi> {
        let mp: Vec<AfiSafi> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(a) => Some(*a),
                _ => None,
            })
            .collect();
        if mp.is_empty() {
            vec![Family::Ipv4Unicast.afi_safi()]
        } else {
            mp
        }
    }

    /// Whether the route refresh capability was sent.
    pub fn route_refresh(&self) -> bool {
        self.capabilities.contains(&Capability::RouteRefresh)
    }

    /// The graceful restart capability, if sent.
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }

    /// Parses an OPEN body (after the 19-byte header).
    pub(crate) fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let (Some(version), Some(my_as), Some(hold_time), Some(id), Some(opt_len)) =
            (r.u8(), r.u16(), r.u16(), r.array::<4>(), r.u8())
        else {
            return Err(WireError::BadMessageLength {
                length: u16::try_from(body.len() + super::wire::HEADER_LEN).unwrap_or(u16::MAX),
            });
        };
        if version != 4 {
            return Err(WireError::UnsupportedVersion { version });
        }
        let rest = r.rest();
        let mut params = Reader::new(rest);
        // RFC 9072: length 255 and a first parameter of type 255 announce 2-octet lengths.
        let extended = opt_len == 255 && rest.first() == Some(&255);
        let params_len = if extended {
            let _ = params.u8();
            usize::from(params.u16().ok_or(WireError::MalformedOptionalParameters)?)
        } else {
            usize::from(opt_len)
        };
        if params.remaining() != params_len {
            return Err(WireError::MalformedOptionalParameters);
        }
        let mut capabilities = Vec::new();
        while !params.is_empty() {
            let kind = params.u8().ok_or(WireError::MalformedOptionalParameters)?;
            let len = if extended {
                params.u16().map(usize::from)
            } else {
                params.u8().map(usize::from)
            }
            .ok_or(WireError::MalformedOptionalParameters)?;
            let value = params
                .take(len)
                .ok_or(WireError::MalformedOptionalParameters)?;
            if kind != 2 {
                return Err(WireError::UnsupportedOptionalParameter { param: kind });
            }
            let mut caps = Reader::new(value);
            while !caps.is_empty() {
                let (Some(code), Some(len)) = (caps.u8(), caps.u8()) else {
                    return Err(WireError::MalformedOptionalParameters);
                };
                let v = caps
                    .take(usize::from(len))
                    .ok_or(WireError::MalformedOptionalParameters)?;
                capabilities.push(Capability::parse(code, v)?);
            }
        }
        Ok(Self {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
    }

    pub(crate) fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.push(4);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut caps = Vec::new();
        for c in &self.capabilities {
            c.emit(&mut caps)?;
        }
        if caps.is_empty() {
            out.push(0);
        } else if caps.len() + 2 <= 255 {
            out.push(u8::try_from(caps.len() + 2).unwrap_or(0));
            out.push(2);
            out.push(u8::try_from(caps.len()).unwrap_or(0));
            out.extend_from_slice(&caps);
        } else {
            // RFC 9072 extended format: 255, 255, total length, then (type, 2-octet length).
            out.extend_from_slice(&[255, 255]);
            push_u16_len(out, caps.len() + 3, "optional parameters over 65535 bytes")?;
            out.push(2);
            push_u16_len(out, caps.len(), "capabilities over 65535 bytes")?;
            out.extend_from_slice(&caps);
        }
        Ok(())
    }
}
