//! Pure builders of the ARP/RARP frames skyvine sends. Every frame is a whole Ethernet frame
//! padded with zeros to the 60-byte minimum, built with capture's views and `ArpRepr::emit`
//! so that what we send and what we parse share one definition of the layout.

use std::net::Ipv4Addr;

use skyvine_capture::wire::{
    ArpOp, ArpPacket, ArpRepr, EthernetFrame, ETHERNET_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_RARP,
    MIN_FRAME_LEN,
};
use skyvine_tables::MacAddr;

/// A built frame: always [`MIN_FRAME_LEN`] bytes (14 header + 28 ARP + 18 padding).
pub type FrameBytes = [u8; MIN_FRAME_LEN];

/// An ARP or RARP frame before it is turned into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth_dst: MacAddr,
    pub eth_src: MacAddr,
    /// `ETHERTYPE_ARP` or `ETHERTYPE_RARP`.
    pub ethertype: u16,
    pub repr: ArpRepr,
}

impl ArpFrame {
    /// The frame's bytes, zero-padded to 60.
    pub fn to_bytes(&self) -> FrameBytes {
        let mut buf = [0u8; MIN_FRAME_LEN];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.set_dst_addr(self.eth_dst);
        eth.set_src_addr(self.eth_src);
        eth.set_ethertype(self.ethertype);
        // The 46-byte payload holds the 28-byte packet: the unchecked view cannot fall short.
        self.repr
            .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        buf
    }
}

const _: () = assert!(ETHERNET_HEADER_LEN + 28 <= MIN_FRAME_LEN);

/// Gratuitous ARP, request form (RFC 5227 announcement): broadcast, sender = target IP = `ip`,
/// target MAC 00:00:00:00:00:00. Linux updates an existing cache entry with it at once, even
/// within its 1 s locktime, because sender IP = target IP.
pub fn gratuitous_arp_request(mac: MacAddr, ip: Ipv4Addr) -> FrameBytes {
    request(MacAddr::BROADCAST, mac, ip, MacAddr::ZERO, ip)
}

/// Gratuitous ARP, reply form: broadcast, sender = target IP = `ip`, and target MAC = sender
/// MAC = `mac`. Linux counts a reply as gratuitous (locktime override) only when both hold,
/// so this form sets both.
pub fn gratuitous_arp_reply(mac: MacAddr, ip: Ipv4Addr) -> FrameBytes {
    ArpFrame {
        eth_dst: MacAddr::BROADCAST,
        eth_src: mac,
        ethertype: ETHERTYPE_ARP,
        repr: ArpRepr {
            operation: ArpOp::Reply,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: mac,
            target_ip: ip,
        },
    }
    .to_bytes()
}

/// Gratuitous ARP request (sender = target IP = `ip`, sender MAC `src_mac`) sent to one
/// station only (Ethernet destination `dst_mac`): repoints that host's cache entry for `ip`
/// to `src_mac`, within Linux's 1 s locktime too, and disturbs no one else.
pub fn unicast_gratuitous_arp(src_mac: MacAddr, ip: Ipv4Addr, dst_mac: MacAddr) -> FrameBytes {
    request(dst_mac, src_mac, ip, MacAddr::ZERO, ip)
}

/// Reply to `requester` that `answered_ip` is at `our_mac` (proxy ARP), unicast to the
/// requester's MAC.
pub fn proxy_arp_reply(
    our_mac: MacAddr,
    answered_ip: Ipv4Addr,
    requester_mac: MacAddr,
    requester_ip: Ipv4Addr,
) -> FrameBytes {
    ArpFrame {
        eth_dst: requester_mac,
        eth_src: our_mac,
        ethertype: ETHERTYPE_ARP,
        repr: ArpRepr {
            operation: ArpOp::Reply,
            sender_mac: our_mac,
            sender_ip: answered_ip,
            target_mac: requester_mac,
            target_ip: requester_ip,
        },
    }
    .to_bytes()
}

/// ARP probe (RFC 5227): broadcast request for `target_ip` with sender IP 0.0.0.0, so no
/// receiver learns anything from it. The owner of `target_ip` answers with a unicast reply.
pub fn arp_probe(our_mac: MacAddr, target_ip: Ipv4Addr) -> FrameBytes {
    request(
        MacAddr::BROADCAST,
        our_mac,
        Ipv4Addr::UNSPECIFIED,
        MacAddr::ZERO,
        target_ip,
    )
}

/// Ordinary broadcast ARP request "who has `target_ip`? tell `our_ip`".
pub fn arp_request(our_mac: MacAddr, our_ip: Ipv4Addr, target_ip: Ipv4Addr) -> FrameBytes {
    request(
        MacAddr::BROADCAST,
        our_mac,
        our_ip,
        MacAddr::ZERO,
        target_ip,
    )
}

/// QEMU's self-announcement for `mac`, byte for byte: broadcast RARP request (ethertype
/// 0x8035, opcode 3) with sender and target MAC = `mac` and both IPs 0.0.0.0.
pub fn rarp_announce(mac: MacAddr) -> FrameBytes {
    ArpFrame {
        eth_dst: MacAddr::BROADCAST,
        eth_src: mac,
        ethertype: ETHERTYPE_RARP,
        repr: ArpRepr {
            operation: ArpOp::RarpRequest,
            sender_mac: mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: mac,
            target_ip: Ipv4Addr::UNSPECIFIED,
        },
    }
    .to_bytes()
}

/// An ARP request whose Ethernet source is its sender MAC.
fn request(
    eth_dst: MacAddr,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> FrameBytes {
    ArpFrame {
        eth_dst,
        eth_src: sender_mac,
        ethertype: ETHERTYPE_ARP,
        repr: ArpRepr {
            operation: ArpOp::Request,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        },
    }
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyvine_capture::wire::samples::{GARP_REPLY, GARP_REQUEST, PROBE, QEMU_RARP};
    use skyvine_capture::wire::{classify, EventKind};

    const VM: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const ROUTER: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0xfe]);
    const PAD: [u8; 18] = [0; 18];

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 1, last)
    }

    /// 42 header+packet bytes followed by 18 zero bytes of padding.
    fn padded(head: [u8; 42]) -> [u8; 60] {
        let mut out = [0u8; 60];
        out[..42].copy_from_slice(&head);
        out[42..].copy_from_slice(&PAD);
        out
    }

    /// Router tells the VM (unicast) that 10.77.1.1 is now at the router's MAC.
    static UNICAST_GARP: [u8; 42] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 10, 77, 1, 1, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 77, 1, 1,
    ];

    /// Router answers the VM's "who has 10.77.2.1?" with its own MAC.
    static PROXY_REPLY: [u8; 42] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 10, 77, 2, 1, //
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 77, 1, 2,
    ];

    /// "Who has 10.77.1.2? Tell 10.77.1.254", from the router.
    static REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 10, 77, 1, 254, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 77, 1, 2,
    ];

    #[test]
    fn rarp_announce_is_qemus_frame() {
        assert_eq!(rarp_announce(VM), QEMU_RARP);
    }

    #[test]
    fn builders_match_reference_bytes() {
        assert_eq!(gratuitous_arp_request(VM, ip(2)), padded(GARP_REQUEST));
        assert_eq!(gratuitous_arp_reply(VM, ip(2)), padded(GARP_REPLY));
        assert_eq!(
            unicast_gratuitous_arp(ROUTER, ip(1), VM),
            padded(UNICAST_GARP)
        );
        assert_eq!(
            proxy_arp_reply(ROUTER, Ipv4Addr::new(10, 77, 2, 1), VM, ip(2)),
            padded(PROXY_REPLY)
        );
        assert_eq!(arp_probe(ROUTER, ip(2)), PROBE);
        assert_eq!(arp_request(ROUTER, ip(254), ip(2)), padded(REQUEST));
    }

    #[test]
    fn frames_round_trip_through_the_parser() {
        let cases = [
            (rarp_announce(VM), EventKind::RarpAnnounce { mac: VM }),
            (
                gratuitous_arp_request(VM, ip(2)),
                EventKind::GratuitousRequest { ip: ip(2), mac: VM },
            ),
            (
                gratuitous_arp_reply(VM, ip(2)),
                EventKind::GratuitousReply { ip: ip(2), mac: VM },
            ),
            (
                unicast_gratuitous_arp(ROUTER, ip(1), VM),
                EventKind::GratuitousRequest {
                    ip: ip(1),
                    mac: ROUTER,
                },
            ),
            (
                proxy_arp_reply(ROUTER, Ipv4Addr::new(10, 77, 2, 1), VM, ip(2)),
                EventKind::Reply {
                    sender_ip: Ipv4Addr::new(10, 77, 2, 1),
                    sender_mac: ROUTER,
                    target_ip: ip(2),
                    target_mac: VM,
                },
            ),
            (
                arp_probe(ROUTER, ip(2)),
                EventKind::Probe {
                    mac: ROUTER,
                    target_ip: ip(2),
                },
            ),
            (
                arp_request(ROUTER, ip(254), ip(2)),
                EventKind::Request {
                    sender_ip: ip(254),
                    sender_mac: ROUTER,
                    target_ip: ip(2),
                },
            ),
        ];
        for (bytes, kind) in cases {
            let event = classify(&bytes).unwrap();
            assert_eq!(event.kind, kind);
            assert!(event.source_matches_sender(), "{kind:?}");
            // parse -> ArpFrame -> bytes gives the same bytes back.
            let rebuilt = ArpFrame {
                eth_dst: event.eth_dst,
                eth_src: event.eth_src,
                ethertype: event.ethertype,
                repr: event.repr,
            };
            assert_eq!(rebuilt.to_bytes(), bytes);
        }
    }
}
