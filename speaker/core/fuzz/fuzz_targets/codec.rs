//! Fuzzes the heartbeat decoder: it must never panic, and whatever it accepts must re-encode to
//! the same bytes (the format has exactly one encoding per message).
#![no_main]

use ferrolb_speaker_core::membership::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        assert_eq!(message.encode(), data);
    }
});
