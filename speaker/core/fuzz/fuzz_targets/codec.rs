//! Fuzzes the heartbeat decoder: it must never panic, and whatever it accepts in the current
//! version must re-encode to the same bytes (the format has exactly one encoding per message).
//! An accepted older-version message re-encodes as the current version, which must decode to
//! the same message.
#![no_main]

use ferrolb_speaker_core::membership::Message;
use ferrolb_speaker_core::membership::codec::VERSION;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let bytes = message.encode();
        if data.get(2) == Some(&VERSION) {
            assert_eq!(bytes, data);
        } else {
            assert_eq!(Message::decode(&bytes), Ok(message));
        }
    }
});
