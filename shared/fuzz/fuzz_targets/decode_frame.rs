//! Arbitrary bytes into the control-plane frame decoder, read as either direction: it must never
//! panic, and what it accepts must re-encode (no longer than it came, since postcard's encoding is
//! minimal and the decoder accepts only what it could have written) and decode to the same message.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use shared::wire::{EdgeMessage, OriginMessage, WireMessage, decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    round_trip::<EdgeMessage>(data);
    round_trip::<OriginMessage>(data);
});

fn round_trip<M: WireMessage + PartialEq + Debug>(data: &[u8]) {
    let Ok(Some((message, consumed))) = decode_frame::<M>(data) else {
        return;
    };
    assert!(consumed <= data.len());
    let mut again = Vec::new();
    encode_frame(&message, &mut again).expect("a decoded message is valid, so it encodes");
    assert!(
        again.len() <= consumed,
        "re-encoded {} bytes from {consumed}",
        again.len()
    );
    assert_eq!(decode_frame::<M>(&again), Ok(Some((message, again.len()))));
}
