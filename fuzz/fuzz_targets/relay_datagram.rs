//! Relay datagrams: arbitrary bytes go through `relay::RelayDatagram::parse` and the relay's
//! and an end's decisions (`RelayPolicy::judge`); nothing may panic or read past the end, a
//! parsed datagram must re-emit to the same bytes, and a forward decision must name a listed
//! peer other than the sender.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyvine_core::relay::{self, Decision, RelayDatagram, RelayPolicy};
use skyvine_tables::SiteId;

fuzz_target!(|data: &[u8]| {
    let site = |s: &str| SiteId::new(s).expect("a valid site id");
    if let Ok(datagram) = RelayDatagram::parse(data) {
        let mut again = Vec::new();
        relay::emit_header(
            &mut again,
            datagram.network,
            &site(datagram.source),
            &site(datagram.destination),
        );
        again.extend_from_slice(datagram.payload);
        assert_eq!(again, data);
        assert_eq!(&data[datagram.payload_offset..], datagram.payload);
    }
    // A relay with two direct peers and one relayed, and an end behind it.
    let relay = RelayPolicy::new(
        site("a"),
        true,
        [(site("b"), None), (site("c"), None), (site("d"), Some(site("b")))],
    );
    let end = RelayPolicy::new(site("c"), false, [(site("a"), None), (site("b"), Some(site("a")))]);
    for (policy, from) in [(&relay, "b"), (&relay, "x"), (&end, "a")] {
        match policy.judge(&site(from), data) {
            Ok(Decision::Forward { to }) => {
                assert!(to.as_str() == "b" || to.as_str() == "c");
                assert_ne!(to.as_str(), from);
            }
            Ok(Decision::Deliver { payload_offset, .. }) => assert!(payload_offset <= data.len()),
            Err(_) => {}
        }
    }
});
