//! NOTIFICATION messages (RFC 4271 §4.5) and the names of their codes and subcodes
//! (RFC 4271 §6, RFC 4486 and RFC 9384 Cease subcodes, RFC 6608 FSM subcodes, RFC 7313), with
//! the Shutdown Communication of RFC 8203/RFC 9003 for Administrative Shutdown and Reset.
//!
//! Owns encoding and decoding and the human words for each code ([`NotificationCode::as_str`]),
//! which feed status conditions and logs ("NOTIFICATION 2/2 bad peer AS"). It must not decide
//! when to send one: that is the session's job.

use super::wire::Reader;

/// A NOTIFICATION error code and subcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotificationCode {
    /// Error code (1..=7 are defined).
    pub code: u8,
    /// Error subcode (0 = unspecific).
    pub subcode: u8,
}

macro_rules! codes {
    ($($name:ident = $code:literal / $sub:literal, $text:literal;)*) => {
        impl NotificationCode {
            $(
                #[doc = $text]
                pub const $name: NotificationCode = NotificationCode { code: $code, subcode: $sub };
            )*

            /// Every code/subcode with a name, for pre-registering metric labels.
            pub const KNOWN: &'static [NotificationCode] = &[$(Self::$name),*];

            /// Words for status conditions and logs, e.g. "NOTIFICATION 2/2 bad peer AS".
            /// Unassigned subcodes name only their code.
            pub const fn as_str(self) -> &'static str {
                match (self.code, self.subcode) {
                    $(($code, $sub) => concat!("NOTIFICATION ", $code, "/", $sub, " ", $text),)*
                    (1, _) => "NOTIFICATION 1/? message header error",
                    (2, _) => "NOTIFICATION 2/? OPEN message error",
                    (3, _) => "NOTIFICATION 3/? UPDATE message error",
                    (4, _) => "NOTIFICATION 4/? hold timer expired",
                    (5, _) => "NOTIFICATION 5/? finite state machine error",
                    (6, _) => "NOTIFICATION 6/? cease",
                    (7, _) => "NOTIFICATION 7/? ROUTE-REFRESH message error",
                    _ => "NOTIFICATION with unknown error code",
                }
            }
        }
    };
}

codes! {
    CONNECTION_NOT_SYNCHRONIZED = 1 / 1, "connection not synchronized";
    BAD_MESSAGE_LENGTH = 1 / 2, "bad message length";
    BAD_MESSAGE_TYPE = 1 / 3, "bad message type";
    OPEN_UNSPECIFIC = 2 / 0, "OPEN message error";
    UNSUPPORTED_VERSION = 2 / 1, "unsupported version number";
    BAD_PEER_AS = 2 / 2, "bad peer AS";
    BAD_BGP_IDENTIFIER = 2 / 3, "bad BGP identifier";
    UNSUPPORTED_OPTIONAL_PARAMETER = 2 / 4, "unsupported optional parameter";
    UNACCEPTABLE_HOLD_TIME = 2 / 6, "unacceptable hold time";
    UNSUPPORTED_CAPABILITY = 2 / 7, "unsupported capability";
    ROLE_MISMATCH = 2 / 11, "role mismatch";
    UPDATE_UNSPECIFIC = 3 / 0, "UPDATE message error";
    MALFORMED_ATTRIBUTE_LIST = 3 / 1, "malformed attribute list";
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 3 / 2, "unrecognized well-known attribute";
    MISSING_WELL_KNOWN_ATTRIBUTE = 3 / 3, "missing well-known attribute";
    ATTRIBUTE_FLAGS_ERROR = 3 / 4, "attribute flags error";
    ATTRIBUTE_LENGTH_ERROR = 3 / 5, "attribute length error";
    INVALID_ORIGIN = 3 / 6, "invalid ORIGIN attribute";
    INVALID_NEXT_HOP = 3 / 8, "invalid NEXT_HOP attribute";
    OPTIONAL_ATTRIBUTE_ERROR = 3 / 9, "optional attribute error";
    INVALID_NETWORK_FIELD = 3 / 10, "invalid network field";
    MALFORMED_AS_PATH = 3 / 11, "malformed AS_PATH";
    HOLD_TIMER_EXPIRED = 4 / 0, "hold timer expired";
    FSM_UNSPECIFIC = 5 / 0, "finite state machine error";
    FSM_UNEXPECTED_IN_OPENSENT = 5 / 1, "unexpected message in OpenSent";
    FSM_UNEXPECTED_IN_OPENCONFIRM = 5 / 2, "unexpected message in OpenConfirm";
    FSM_UNEXPECTED_IN_ESTABLISHED = 5 / 3, "unexpected message in Established";
    CEASE = 6 / 0, "cease";
    MAX_PREFIXES = 6 / 1, "maximum number of prefixes reached";
    ADMIN_SHUTDOWN = 6 / 2, "administrative shutdown";
    PEER_DECONFIGURED = 6 / 3, "peer de-configured";
    ADMIN_RESET = 6 / 4, "administrative reset";
    CONNECTION_REJECTED = 6 / 5, "connection rejected";
    OTHER_CONFIG_CHANGE = 6 / 6, "other configuration change";
    CONNECTION_COLLISION = 6 / 7, "connection collision resolution";
    OUT_OF_RESOURCES = 6 / 8, "out of resources";
    HARD_RESET = 6 / 9, "hard reset";
    BFD_DOWN = 6 / 10, "BFD down";
    ROUTE_REFRESH_INVALID_LENGTH = 7 / 1, "invalid ROUTE-REFRESH message length";
}

impl std::fmt::Display for NotificationCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.as_str().contains('?') || self.code == 0 || self.code > 7 {
            write!(f, "NOTIFICATION {}/{}", self.code, self.subcode)
        } else {
            f.write_str(self.as_str())
        }
    }
}

/// Longest Shutdown Communication we send. RFC 9003 allows 255 bytes, but RFC 8203 receivers
/// reject anything over 128, so we stay within both.
pub const MAX_SHUTDOWN_MESSAGE: usize = 128;

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Error code and subcode.
    pub code: NotificationCode,
    /// Diagnostic data, meaning depending on the code.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with the given code and data.
    pub fn new(code: NotificationCode, data: Vec<u8>) -> Self {
        Self { code, data }
    }

    /// A Cease (6/`subcode`) carrying an RFC 8203 Shutdown Communication: a length octet and
    /// UTF-8 text, cut at a character boundary to [`MAX_SHUTDOWN_MESSAGE`] bytes. Only
    /// Administrative Shutdown (2) and Administrative Reset (4) define the field; for other
    /// subcodes the text is dropped.
    pub fn cease(subcode: u8, message: &str) -> Self {
        let code = NotificationCode { code: 6, subcode };
        if !matches!(subcode, 2 | 4) || message.is_empty() {
            return Self::new(code, Vec::new());
        }
        let mut end = message.len().min(MAX_SHUTDOWN_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = message.get(..end).unwrap_or_default().as_bytes();
        let mut data = Vec::with_capacity(text.len() + 1);
        data.push(u8::try_from(text.len()).unwrap_or(0));
        data.extend_from_slice(text);
        Self::new(code, data)
    }

    /// The RFC 8203 Shutdown Communication of a received 6/2 or 6/4, if present and valid UTF-8
    /// whose length octet matches. Control characters are replaced, so the text is safe to log.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code.code != 6 || !matches!(self.code.subcode, 2 | 4) {
            return None;
        }
        let mut r = Reader::new(&self.data);
        let len = usize::from(r.u8()?);
        let text = r.take(len)?;
        if len == 0 {
            return None;
        }
        let s = std::str::from_utf8(text).ok()?;
        Some(
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    }

    /// Parses a NOTIFICATION body (after the header). Never fails: the header check already
    /// guaranteed the two code octets, and the data is opaque.
    pub(crate) fn parse(body: &[u8]) -> Self {
        let mut r = Reader::new(body);
        let code = r.u8().unwrap_or(0);
        let subcode = r.u8().unwrap_or(0);
        Self {
            code: NotificationCode { code, subcode },
            data: r.rest().to_vec(),
        }
    }

    pub(crate) fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.code.code);
        out.push(self.code.subcode);
        out.extend_from_slice(&self.data);
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(m) = self.shutdown_message() {
            write!(f, ": \"{m}\"")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_name_code_and_subcode() {
        assert_eq!(
            NotificationCode::BAD_PEER_AS.as_str(),
            "NOTIFICATION 2/2 bad peer AS"
        );
        assert_eq!(
            NotificationCode {
                code: 6,
                subcode: 99
            }
            .to_string(),
            "NOTIFICATION 6/99"
        );
        let mut seen: Vec<_> = NotificationCode::KNOWN.iter().map(|c| c.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), NotificationCode::KNOWN.len());
    }

    #[test]
    fn shutdown_text_is_cut_on_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let n = Notification::cease(2, &long);
        assert_eq!(n.data[0], 128);
        assert_eq!(n.data.len(), 129);
        assert_eq!(n.shutdown_message(), Some("é".repeat(64)));
        let odd = format!("a{long}"); // boundary at 128 falls inside a character
        let n = Notification::cease(2, &odd);
        assert_eq!(n.data[0], 127);
        assert!(n.shutdown_message().is_some());
        assert!(Notification::cease(3, "ignored").data.is_empty());
    }

    #[test]
    fn bad_shutdown_text_is_not_shown() {
        let n = Notification::new(NotificationCode::ADMIN_SHUTDOWN, vec![5, b'a']);
        assert_eq!(n.shutdown_message(), None);
        let n = Notification::new(NotificationCode::ADMIN_SHUTDOWN, vec![2, 0xff, 0xfe]);
        assert_eq!(n.shutdown_message(), None);
        let n = Notification::new(NotificationCode::ADMIN_SHUTDOWN, vec![2, b'a', b'\n']);
        assert_eq!(n.shutdown_message().as_deref(), Some("a "));
    }
}
