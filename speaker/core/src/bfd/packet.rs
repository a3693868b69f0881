//! BFD Control packets (RFC 5880 §4.1) and the reception checks of §6.8.6 that need no
//! session state.
//!
//! Owns the 24-byte mandatory section and an optional authentication section, kept opaque
//! (authentication is not implemented: sessions discard packets that carry it). It must not
//! do I/O or panic on any input; the checks that need session state (TTL, discriminators,
//! authentication in use) are the session's.

use super::BfdError;

/// UDP port of single-hop BFD control packets (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// UDP port of multihop BFD control packets (RFC 5883 §5).
pub const MULTI_HOP_PORT: u16 = 4784;
/// Length of the mandatory section.
pub const MANDATORY_LEN: usize = 24;

/// Session states (RFC 5880 §4.1 "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BfdState {
    /// 0: administratively down.
    AdminDown,
    /// 1.
    Down,
    /// 2.
    Init,
    /// 3.
    Up,
}

impl BfdState {
    /// The 2-bit code.
    pub const fn code(self) -> u8 {
        match self {
            Self::AdminDown => 0,
            Self::Down => 1,
            Self::Init => 2,
            Self::Up => 3,
        }
    }

    const fn from_code(c: u8) -> Self {
        match c & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }

    /// Stable label for metrics and status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AdminDown => "AdminDown",
            Self::Down => "Down",
            Self::Init => "Init",
            Self::Up => "Up",
        }
    }
}

/// A diagnostic code (RFC 5880 §4.1, 5 bits); unassigned values are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Diagnostic(u8);

impl Diagnostic {
    /// 0.
    pub const NONE: Diagnostic = Diagnostic(0);
    /// 1: nothing received for a detection time.
    pub const CONTROL_DETECTION_TIME_EXPIRED: Diagnostic = Diagnostic(1);
    /// 2.
    pub const ECHO_FUNCTION_FAILED: Diagnostic = Diagnostic(2);
    /// 3: the neighbour said Down or AdminDown.
    pub const NEIGHBOR_SIGNALED_DOWN: Diagnostic = Diagnostic(3);
    /// 4.
    pub const FORWARDING_PLANE_RESET: Diagnostic = Diagnostic(4);
    /// 5.
    pub const PATH_DOWN: Diagnostic = Diagnostic(5);
    /// 6.
    pub const CONCATENATED_PATH_DOWN: Diagnostic = Diagnostic(6);
    /// 7: taken down on purpose (what a planned restart sends).
    pub const ADMINISTRATIVELY_DOWN: Diagnostic = Diagnostic(7);
    /// 8.
    pub const REVERSE_CONCATENATED_PATH_DOWN: Diagnostic = Diagnostic(8);

    /// The diagnostic for a 5-bit code (higher bits are dropped).
    pub const fn new(code: u8) -> Self {
        Self(code & 0x1f)
    }

    /// The 5-bit code.
    pub const fn code(self) -> u8 {
        self.0
    }

    /// Stable label for metrics and status.
    pub const fn as_str(self) -> &'static str {
        match self.0 {
            0 => "none",
            1 => "control_detection_time_expired",
            2 => "echo_function_failed",
            3 => "neighbor_signaled_down",
            4 => "forwarding_plane_reset",
            5 => "path_down",
            6 => "concatenated_path_down",
            7 => "administratively_down",
            8 => "reverse_concatenated_path_down",
            _ => "unassigned",
        }
    }
}

/// An authentication section, opaque (RFC 5880 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthSection {
    /// Auth Type.
    pub auth_type: u8,
    /// Everything after Auth Type and Auth Len.
    pub data: Vec<u8>,
}

/// A BFD Control packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    /// Diagnostic.
    pub diag: Diagnostic,
    /// The sender's state.
    pub state: BfdState,
    /// P: the sender asks for a Final.
    pub poll: bool,
    /// F: the sender answers a Poll.
    pub final_: bool,
    /// C: control plane independent.
    pub control_plane_independent: bool,
    /// D: the sender wants Demand mode.
    pub demand: bool,
    /// Detect Mult (never 0).
    pub detect_mult: u8,
    /// My Discriminator (never 0).
    pub my_discriminator: u32,
    /// Your Discriminator (0 while the sender has not heard us).
    pub your_discriminator: u32,
    /// Desired Min TX Interval, µs.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, µs (0: send me nothing).
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, µs (we always send 0: no Echo).
    pub required_min_echo_rx: u32,
    /// The A bit and its section.
    pub auth: Option<AuthSection>,
}

impl ControlPacket {
    /// Parses and checks a packet as RFC 5880 §6.8.6 requires before any session lookup:
    /// version 1, a Length that covers the mandatory (and authentication) section and fits the
    /// datagram, Detect Mult and My Discriminator non-zero, M clear, and Your Discriminator
    /// non-zero unless the sender is Down or AdminDown. Bytes after Length are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, BfdError> {
        let head: [u8; MANDATORY_LEN] = bytes
            .get(..MANDATORY_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(BfdError::Truncated)?;
        let [b0, b1, detect_mult, length, ..] = head;
        if b0 >> 5 != 1 {
            return Err(BfdError::BadVersion);
        }
        let length = usize::from(length);
        let auth_present = b1 & 0x04 != 0;
        let min = if auth_present {
            MANDATORY_LEN + 2
        } else {
            MANDATORY_LEN
        };
        if length < min || length > bytes.len() {
            return Err(BfdError::BadLength);
        }
        if detect_mult == 0 {
            return Err(BfdError::ZeroDetectMult);
        }
        if b1 & 0x01 != 0 {
            return Err(BfdError::Multipoint);
        }
        let word = |i: usize| {
            head.get(i..i + 4)
                .and_then(|w| <[u8; 4]>::try_from(w).ok())
                .map_or(0, u32::from_be_bytes)
        };
        let state = BfdState::from_code(b1 >> 6);
        let my_discriminator = word(4);
        let your_discriminator = word(8);
        if my_discriminator == 0 {
            return Err(BfdError::ZeroMyDiscriminator);
        }
        if your_discriminator == 0 && !matches!(state, BfdState::Down | BfdState::AdminDown) {
            return Err(BfdError::ZeroYourDiscriminator);
        }
        let auth = if auth_present {
            let section = bytes
                .get(MANDATORY_LEN..length)
                .ok_or(BfdError::BadLength)?;
            let (Some(&auth_type), Some(&auth_len)) = (section.first(), section.get(1)) else {
                return Err(BfdError::BadLength);
            };
            if usize::from(auth_len) != section.len() {
                return Err(BfdError::BadLength);
            }
            Some(AuthSection {
                auth_type,
                data: section.get(2..).unwrap_or_default().to_vec(),
            })
        } else {
            None
        };
        Ok(Self {
            diag: Diagnostic::new(b0),
            state,
            poll: b1 & 0x20 != 0,
            final_: b1 & 0x10 != 0,
            control_plane_independent: b1 & 0x08 != 0,
            demand: b1 & 0x02 != 0,
            detect_mult,
            my_discriminator,
            your_discriminator,
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
            auth,
        })
    }

    /// Serialises the packet. An authentication section longer than 229 bytes of data does not
    /// fit the 1-octet lengths and fails.
    pub fn emit(&self) -> Result<Vec<u8>, BfdError> {
        let auth_len = self.auth.as_ref().map_or(0, |a| a.data.len() + 2);
        let total = u8::try_from(MANDATORY_LEN + auth_len).map_err(|_| BfdError::BadLength)?;
        let mut out = Vec::with_capacity(usize::from(total));
        out.push((1 << 5) | self.diag.code());
        let mut flags = self.state.code() << 6;
        for (set, bit) in [
            (self.poll, 0x20),
            (self.final_, 0x10),
            (self.control_plane_independent, 0x08),
            (self.auth.is_some(), 0x04),
            (self.demand, 0x02),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.push(flags);
        out.push(self.detect_mult);
        out.push(total);
        for w in [
            self.my_discriminator,
            self.your_discriminator,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        if let Some(a) = &self.auth {
            out.push(a.auth_type);
            out.push(u8::try_from(auth_len).map_err(|_| BfdError::BadLength)?);
            out.extend_from_slice(&a.data);
        }
        Ok(out)
    }
}
