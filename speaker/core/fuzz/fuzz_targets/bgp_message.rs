//! Fuzzes the BGP message parser with arbitrary bytes under both AS widths: it must never
//! panic, and whatever it accepts must emit to bytes that parse to the same message (the
//! codec has one canonical encoding per representation).
#![no_main]

use ferrolb_speaker_core::bgp::{Encoding, Message, frame_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data);
    for enc in [Encoding::TWO_OCTET, Encoding::FOUR_OCTET] {
        if let Ok(m) = Message::parse(data, enc) {
            let bytes = match m.emit(enc) {
                Ok(b) => b,
                Err(e) => panic!("accepted message does not emit: {e}"),
            };
            assert_eq!(Message::parse(&bytes, enc), Ok(m));
        }
    }
});
