//! Any byte string given to `classify` returns a value or an error, never panics; whatever
//! parses survives emit -> parse unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skyvine_capture::wire::{classify, ArpPacket, ArpRepr, EthernetFrame, MIN_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = classify(data) else {
        return;
    };
    assert_eq!(
        event.source_matches_sender(),
        event.eth_src == event.repr.sender_mac
    );

    // Rebuild the frame from what was parsed and parse it again.
    let mut buf = [0u8; MIN_FRAME_LEN];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_dst_addr(event.eth_dst);
    eth.set_src_addr(event.eth_src);
    eth.set_ethertype(event.ethertype);
    event
        .repr
        .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    let again = classify(&buf).expect("an emitted frame parses");
    assert_eq!(again, event);

    // The packet alone round-trips too.
    let packet = ArpPacket::new_checked(&buf[14..]).expect("emitted packet is whole");
    assert_eq!(ArpRepr::parse(&packet), Ok(event.repr));
});
