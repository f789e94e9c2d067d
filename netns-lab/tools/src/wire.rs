//! The frames the lab sends and watches, on the router's own codec: the hypervisor
//! announcements are `skyvine_inject::wire`'s builders (QEMU's RARP and the gratuitous ARP
//! request, pinned byte for byte to what QEMU and Linux send by that crate's tests), and the
//! watcher reads frames through `skyvine_capture::wire`'s checked views. Pure: bytes in, bytes
//! out.
//!
//! What stays the lab's own is [`ArpKind`], the watcher's name for a frame: it names every
//! opcode (the router's `classify` refuses unknown ones) and goes by the frame's fields alone,
//! so the lab reports what was on the wire rather than what the router's code, under test,
//! makes of it.

use std::net::Ipv4Addr;

use skyvine_capture::wire::{ArpOp, ArpPacket, ArpRepr, EthernetFrame};
pub use skyvine_capture::wire::{WireError, ETHERTYPE_ARP, ETHERTYPE_RARP};
pub use skyvine_inject::wire::{gratuitous_arp_request, rarp_announce, FrameBytes};
pub use skyvine_tables::MacAddr;

/// What an ARP or RARP frame is, as the lab's watcher reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpKind {
    /// RARP opcode 3 (QEMU/VMware announcements use this).
    RarpRequest,
    /// RARP opcode 4.
    RarpReply,
    /// ARP request with sender IP = target IP.
    GratuitousRequest,
    /// ARP reply with sender IP = target IP.
    GratuitousReply,
    /// ARP request with sender IP 0.0.0.0 (RFC 5227 probe).
    Probe,
    Request,
    Reply,
    /// Any other opcode.
    Other(u16),
}

impl ArpKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ArpKind::RarpRequest => "rarp-request",
            ArpKind::RarpReply => "rarp-reply",
            ArpKind::GratuitousRequest => "garp-request",
            ArpKind::GratuitousReply => "garp-reply",
            ArpKind::Probe => "arp-probe",
            ArpKind::Request => "arp-request",
            ArpKind::Reply => "arp-reply",
            ArpKind::Other(_) => "arp-other",
        }
    }
}

/// A captured ARP or RARP frame (Ethernet/IPv4 only): its Ethernet header and packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
    pub arp: ArpRepr,
}

impl ArpFrame {
    /// Parses a frame captured from the wire; anything else is an error, never a panic.
    pub fn parse(frame: &[u8]) -> Result<Self, WireError> {
        let eth = EthernetFrame::new_checked(frame)?;
        let ethertype = eth.ethertype();
        if ethertype != ETHERTYPE_ARP && ethertype != ETHERTYPE_RARP {
            return Err(WireError::UnsupportedEthertype(ethertype));
        }
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload())?)?;
        Ok(ArpFrame {
            dst: eth.dst_addr(),
            src: eth.src_addr(),
            ethertype,
            arp,
        })
    }

    pub fn kind(&self) -> ArpKind {
        let a = &self.arp;
        let same_ip = a.sender_ip == a.target_ip;
        match (self.ethertype, a.operation) {
            (ETHERTYPE_RARP, ArpOp::RarpRequest) => ArpKind::RarpRequest,
            (ETHERTYPE_RARP, ArpOp::RarpReply) => ArpKind::RarpReply,
            (ETHERTYPE_ARP, ArpOp::Request) if same_ip => ArpKind::GratuitousRequest,
            (ETHERTYPE_ARP, ArpOp::Request) if a.sender_ip.is_unspecified() => ArpKind::Probe,
            (ETHERTYPE_ARP, ArpOp::Request) => ArpKind::Request,
            (ETHERTYPE_ARP, ArpOp::Reply) if same_ip => ArpKind::GratuitousReply,
            (ETHERTYPE_ARP, ArpOp::Reply) => ArpKind::Reply,
            (_, op) => ArpKind::Other(op.into()),
        }
    }

    /// The sender's addresses (hardware, protocol).
    pub fn sender(&self) -> (MacAddr, Ipv4Addr) {
        (self.arp.sender_mac, self.arp.sender_ip)
    }

    /// The target's addresses (hardware, protocol).
    pub fn target(&self) -> (MacAddr, Ipv4Addr) {
        (self.arp.target_mac, self.arp.target_ip)
    }
}

#[cfg(test)]
mod tests {
    use skyvine_capture::wire::samples::{
        GARP_REPLY, GARP_REQUEST, PROBE, QEMU_RARP, RARP_REPLY, REPLY, REQUEST,
    };

    use super::*;

    #[test]
    fn the_watcher_names_every_kind_of_frame() {
        let kinds = [
            (&QEMU_RARP[..], ArpKind::RarpRequest),
            (&RARP_REPLY, ArpKind::RarpReply),
            (&GARP_REQUEST, ArpKind::GratuitousRequest),
            (&GARP_REPLY, ArpKind::GratuitousReply),
            (&PROBE, ArpKind::Probe),
            (&REQUEST, ArpKind::Request),
            (&REPLY, ArpKind::Reply),
        ];
        for (frame, kind) in kinds {
            assert_eq!(ArpFrame::parse(frame).unwrap().kind(), kind, "{frame:02x?}");
        }
        // An opcode the router refuses is still named.
        let mut odd = REQUEST;
        odd[21] = 9;
        let frame = ArpFrame::parse(&odd).unwrap();
        assert_eq!(frame.kind(), ArpKind::Other(9));
        assert_eq!(frame.kind().as_str(), "arp-other");
    }

    #[test]
    fn the_announcements_read_back_as_sent() {
        let mac: MacAddr = "52:54:00:77:01:02".parse().unwrap();
        let ip = Ipv4Addr::new(10, 77, 1, 2);
        let rarp = ArpFrame::parse(&rarp_announce(mac)).unwrap();
        assert_eq!(rarp.kind(), ArpKind::RarpRequest);
        assert_eq!((rarp.src, rarp.dst), (mac, MacAddr::BROADCAST));
        assert_eq!(rarp.sender(), (mac, Ipv4Addr::UNSPECIFIED));
        assert_eq!(rarp.target(), (mac, Ipv4Addr::UNSPECIFIED));
        let garp = ArpFrame::parse(&gratuitous_arp_request(mac, ip)).unwrap();
        assert_eq!(garp.kind(), ArpKind::GratuitousRequest);
        assert_eq!(garp.sender(), (mac, ip));
        assert_eq!(garp.target(), (MacAddr::ZERO, ip));
    }

    #[test]
    fn the_parser_rejects_short_and_foreign_frames() {
        assert!(matches!(
            ArpFrame::parse(&QEMU_RARP[..41]),
            Err(WireError::ArpTruncated { .. })
        ));
        let mut ipv4 = QEMU_RARP;
        ipv4[12] = 0x08;
        ipv4[13] = 0x00;
        assert_eq!(
            ArpFrame::parse(&ipv4),
            Err(WireError::UnsupportedEthertype(0x0800))
        );
        let mut bad_len = QEMU_RARP;
        bad_len[18] = 8;
        assert!(matches!(
            ArpFrame::parse(&bad_len),
            Err(WireError::UnsupportedAddressLengths { hlen: 8, plen: 4 })
        ));
    }
}
