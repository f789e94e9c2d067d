//! Root only (skipped otherwise): the kernel hands `ArpCapture` ARP and RARP frames and
//! nothing else, never our own sent frames, and the interface is not made promiscuous.

// Test code: a failed step should panic with its cause.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support {
    pub mod netns;
}

use std::time::Duration;

use skyvine_capture::source::{ArpEvents, CaptureCounters, CapturedEvent};
use skyvine_capture::sys::{socket, ArpCapture};
use skyvine_capture::wire::EventKind;
use skyvine_tables::MacAddr;
use support::netns::{runtime, VethNetns};

const VM: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// QEMU's RARP announce for 52:54:00:12:34:56 (60 bytes).
fn qemu_rarp() -> Vec<u8> {
    let mut f =
        hex("ffffffffffff525400123456803500010800060400035254001234560000000052540012345600000000");
    f.resize(60, 0);
    f
}

/// Broadcast ARP request "who has 10.77.1.<target>? tell 10.77.1.2", padded to 60.
fn arp_request(target: u8) -> Vec<u8> {
    let mut f = hex("ffffffffffff525400123456080600010800060400015254001234560a4d0102000000000000");
    f.extend_from_slice(&[10, 77, 1, target]);
    f.resize(60, 0);
    f
}

/// A broadcast frame of another ethertype with a plausible payload.
fn other_frame(ethertype: u16) -> Vec<u8> {
    let mut f = hex("ffffffffffff525400123456");
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&hex("4500002e000040004011000a0a4d01020a4d01ff"));
    f.resize(60, 0x55);
    f
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Receives events until `done` says so, failing after a generous deadline.
async fn collect_until(
    events: &mut ArpEvents<ArpCapture>,
    mut done: impl FnMut(&[CapturedEvent]) -> bool,
) -> Vec<CapturedEvent> {
    let mut got = Vec::new();
    while !done(&got) {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("no frame within 10 s")
            .unwrap();
        got.push(next);
    }
    got
}

#[test]
fn only_arp_and_rarp_reach_the_capture_without_promiscuous_mode() {
    let Some(ns) = VethNetns::create("cap") else {
        return;
    };
    let (got, counters, promiscuity) = ns.run(|| {
        runtime().block_on(async {
            let capture = ArpCapture::open("vb").unwrap();
            let vb_index = capture.ifindex();
            let va_index = socket::interface_index("va").unwrap();
            let sender = socket::open_packet_socket(va_index, 0).unwrap();
            let send = |frame: &[u8]| {
                let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
                socket::send_frame(&sender, va_index, ethertype, [0xff; 6], frame).unwrap();
            };
            let mut events = ArpEvents::new(capture);
            send(&other_frame(0x0800));
            send(&arp_request(254));
            send(&other_frame(0x0800));
            send(&qemu_rarp());
            send(&other_frame(0x86dd));
            send(&other_frame(0x0800));
            // The marker: an IPv4 frame sent before it on the same path would be in by now.
            send(&arp_request(253));
            let got = collect_until(&mut events, |got| {
                let seen = |kind: &dyn Fn(&EventKind) -> bool| got.iter().any(|e| kind(&e.event.kind));
                seen(&|k| matches!(k, EventKind::Request { target_ip, .. } if target_ip.octets()[3] == 253))
                    && seen(&|k| matches!(k, EventKind::RarpAnnounce { .. }))
            })
            .await;
            for event in &got {
                assert_eq!(event.ifindex, vb_index);
            }
            (got, events.counters(), ns.promiscuity("vb"))
        })
    });
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        counters,
        CaptureCounters {
            received: 3,
            malformed: 0
        },
        "a non-ARP frame reached user space"
    );
    assert!(got
        .iter()
        .any(|e| e.event.kind == EventKind::RarpAnnounce { mac: MacAddr(VM) }));
    assert_eq!(promiscuity, 0, "vb was made promiscuous");
    assert_eq!(ns.promiscuity("va"), 0);
}

#[test]
fn frames_sent_from_the_captured_interface_are_not_captured() {
    let Some(ns) = VethNetns::create("own") else {
        return;
    };
    let got = ns.run(|| {
        runtime().block_on(async {
            let capture = ArpCapture::open("va").unwrap();
            let va_index = capture.ifindex();
            let vb_index = socket::interface_index("vb").unwrap();
            let on_va = socket::open_packet_socket(va_index, 0).unwrap();
            let on_vb = socket::open_packet_socket(vb_index, 0).unwrap();
            let mut events = ArpEvents::new(capture);
            // Our own ARP and RARP go out of va; then a marker comes in from the peer.
            socket::send_frame(&on_va, va_index, 0x0806, [0xff; 6], &arp_request(1)).unwrap();
            socket::send_frame(&on_va, va_index, 0x8035, [0xff; 6], &qemu_rarp()).unwrap();
            socket::send_frame(&on_vb, vb_index, 0x0806, [0xff; 6], &arp_request(253)).unwrap();
            collect_until(&mut events, |got| !got.is_empty()).await
        })
    });
    assert_eq!(got.len(), 1);
    assert!(
        matches!(got[0].event.kind, EventKind::Request { target_ip, .. } if target_ip.octets()[3] == 253),
        "captured our own frame: {got:?}"
    );
}

#[test]
fn open_outside_a_runtime_is_an_error_not_a_panic() {
    let err = ArpCapture::open("lo").unwrap_err();
    assert!(
        matches!(err, skyvine_capture::sys::CaptureError::NoRuntime),
        "{err}"
    );
}
