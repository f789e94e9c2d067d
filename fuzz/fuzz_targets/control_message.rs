//! Control-message decoding: arbitrary bytes split at an arbitrary point go through the
//! router's stream `Decoder`; it must never panic, never accept more than the size limit, and
//! every message it accepts must survive an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The router's codec lives in the sans-IO core: no QUIC, TUN or netlink under the sanitizer.
use skyvine_core::proto;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(bytes.len());
    let mut decoder = proto::Decoder::default();
    for chunk in [&bytes[..split], &bytes[split..]] {
        decoder.push(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let frame = proto::encode(&message).expect("a decoded message re-encodes");
                    assert!(frame.len() <= 4 + proto::MAX_MESSAGE_LEN);
                    let mut again = proto::Decoder::default();
                    again.push(&frame);
                    let decoded = again.next_message().expect("re-decodes").expect("whole");
                    assert_eq!(decoded, message);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
