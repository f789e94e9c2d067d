//! Root only (skipped otherwise): frames sent by `Injector` arrive intact at an `ArpCapture`
//! on the other end of a veth pair, and a unicast gratuitous ARP request repoints a Linux
//! neighbour entry that was changed less than a second ago.

// Test code: a failed step should panic with its cause.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../capture/tests/support/netns.rs"]
#[allow(dead_code)] // only part of the shared helper is used here
mod netns;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netns::{runtime, VethNetns};
use skyvine_capture::source::ArpEvents;
use skyvine_capture::sys::{socket, ArpCapture};
use skyvine_capture::wire::EventKind;
use skyvine_inject::sys::Injector;
use skyvine_inject::wire;
use skyvine_tables::MacAddr;

const ROUTER: &str = "02:00:00:00:00:fe";
const VM: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

#[test]
fn injected_frames_arrive_as_built() {
    let Some(ns) = VethNetns::create("inj") else {
        return;
    };
    ns.ip(&["link", "set", "va", "address", ROUTER]);
    let router: MacAddr = ROUTER.parse().unwrap();
    let ip = |last| Ipv4Addr::new(10, 77, 1, last);
    let frames = [
        (
            wire::gratuitous_arp_request(router, ip(1)),
            EventKind::GratuitousRequest {
                ip: ip(1),
                mac: router,
            },
        ),
        (
            wire::rarp_announce(router),
            EventKind::RarpAnnounce { mac: router },
        ),
        (
            wire::proxy_arp_reply(router, Ipv4Addr::new(10, 77, 2, 1), VM, ip(2)),
            EventKind::Reply {
                sender_ip: Ipv4Addr::new(10, 77, 2, 1),
                sender_mac: router,
                target_ip: ip(2),
                target_mac: VM,
            },
        ),
        (
            wire::arp_probe(router, ip(2)),
            EventKind::Probe {
                mac: router,
                target_ip: ip(2),
            },
        ),
    ];
    ns.run(|| {
        runtime().block_on(async {
            let injector = Injector::open("va").unwrap();
            assert_eq!(injector.mac(), router);
            assert_eq!(injector.ifindex(), socket::interface_index("va").unwrap());
            let mut events = ArpEvents::new(ArpCapture::open("vb").unwrap());
            for (frame, kind) in &frames {
                injector.send(frame).unwrap();
                let got = tokio::time::timeout(Duration::from_secs(10), events.next())
                    .await
                    .expect("no frame within 10 s")
                    .unwrap();
                assert_eq!(got.event.kind, *kind);
                assert_eq!(got.event.eth_src, router);
                assert!(got.event.source_matches_sender());
            }
            assert_eq!(events.counters().malformed, 0);
            let short = injector.send(&[0xff; 10]).unwrap_err();
            assert_eq!(short.kind(), std::io::ErrorKind::InvalidInput);
        })
    });
}

#[test]
fn unicast_gratuitous_request_repoints_a_fresh_neighbour_entry() {
    let Some(ns) = VethNetns::create("garp") else {
        return;
    };
    ns.ip(&["link", "set", "va", "address", ROUTER]);
    ns.ip(&["addr", "add", "10.77.1.2/24", "dev", "vb"]);
    let vb_mac = read_mac(&ns, "vb");
    // An entry for 10.77.1.1 changed just now: within Linux's 1 s locktime.
    ns.ip(&[
        "neigh",
        "replace",
        "10.77.1.1",
        "lladdr",
        "52:54:00:99:99:99",
        "dev",
        "vb",
        "nud",
        "stale",
    ]);
    ns.run(|| {
        let injector = Injector::open("va").unwrap();
        let frame =
            wire::unicast_gratuitous_arp(injector.mac(), Ipv4Addr::new(10, 77, 1, 1), vb_mac);
        injector.send(&frame).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let entry = ns.ip(&["neigh", "show", "10.77.1.1", "dev", "vb"]);
        if entry.contains(ROUTER) {
            break;
        }
        assert!(Instant::now() < deadline, "entry not repointed: {entry}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_mac(ns: &VethNetns, dev: &str) -> MacAddr {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "link/ether").unwrap();
    words.next().unwrap().parse().unwrap()
}
