//! Classification of a captured ARP/RARP frame into what it announces. Describes the frame;
//! deciding what it means for the tables is the router's job.

use std::net::Ipv4Addr;

use skyvine_tables::MacAddr;

use super::{ArpOp, ArpPacket, ArpRepr, EthernetFrame, WireError, ETHERTYPE_ARP, ETHERTYPE_RARP};

/// A captured ARP or RARP frame: its Ethernet header, what it is, and the packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpEvent {
    pub eth_src: MacAddr,
    pub eth_dst: MacAddr,
    /// [`ETHERTYPE_ARP`] or [`ETHERTYPE_RARP`].
    pub ethertype: u16,
    pub kind: EventKind,
    pub repr: ArpRepr,
}

impl ArpEvent {
    /// Whether the Ethernet source equals the ARP sender MAC field. Frames where it does not
    /// are forged or relayed and must not move anything.
    pub fn source_matches_sender(&self) -> bool {
        self.eth_src == self.repr.sender_mac
    }
}

/// What an ARP/RARP frame says, decided by its operation code and addresses only (the
/// ethertype is kept in [`ArpEvent::ethertype`], not used here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// RARP request (opcode 3) with sender MAC = target MAC and both IPs 0.0.0.0: the
    /// announcement QEMU/KVM and VMware send for a VM that just arrived. Carries no IP.
    RarpAnnounce { mac: MacAddr },
    /// ARP request with sender IP = target IP != 0.0.0.0 (RFC 5227 announcement form).
    GratuitousRequest { ip: Ipv4Addr, mac: MacAddr },
    /// ARP reply with sender IP != 0.0.0.0 and either sender IP = target IP, or target MAC =
    /// sender MAC, or target MAC = broadcast.
    GratuitousReply { ip: Ipv4Addr, mac: MacAddr },
    /// ARP request with sender IP 0.0.0.0 (RFC 5227 probe).
    Probe { mac: MacAddr, target_ip: Ipv4Addr },
    Request {
        sender_ip: Ipv4Addr,
        sender_mac: MacAddr,
        target_ip: Ipv4Addr,
    },
    Reply {
        sender_ip: Ipv4Addr,
        sender_mac: MacAddr,
        target_ip: Ipv4Addr,
        target_mac: MacAddr,
    },
    /// Any other RARP operation (a RARP request that is not an announcement, a RARP reply).
    OtherRarp(ArpOp),
}

/// Parses a whole Ethernet frame (trailing padding ignored) carrying ARP or RARP for
/// Ethernet/IPv4 and says what it is. Unknown operation codes are an error.
pub fn classify(frame: &[u8]) -> Result<ArpEvent, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let ethertype = eth.ethertype();
    if ethertype != ETHERTYPE_ARP && ethertype != ETHERTYPE_RARP {
        return Err(WireError::UnsupportedEthertype(ethertype));
    }
    let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload())?)?;
    Ok(ArpEvent {
        eth_src: eth.src_addr(),
        eth_dst: eth.dst_addr(),
        ethertype,
        kind: kind_of(&repr)?,
        repr,
    })
}

fn kind_of(repr: &ArpRepr) -> Result<EventKind, WireError> {
    let unspecified = repr.sender_ip.is_unspecified();
    let kind = match repr.operation {
        ArpOp::RarpRequest
            if repr.sender_mac == repr.target_mac
                && unspecified
                && repr.target_ip.is_unspecified() =>
        {
            EventKind::RarpAnnounce {
                mac: repr.sender_mac,
            }
        }
        op @ (ArpOp::RarpRequest | ArpOp::RarpReply) => EventKind::OtherRarp(op),
        ArpOp::Request if unspecified => EventKind::Probe {
            mac: repr.sender_mac,
            target_ip: repr.target_ip,
        },
        ArpOp::Request if repr.sender_ip == repr.target_ip => EventKind::GratuitousRequest {
            ip: repr.sender_ip,
            mac: repr.sender_mac,
        },
        ArpOp::Request => EventKind::Request {
            sender_ip: repr.sender_ip,
            sender_mac: repr.sender_mac,
            target_ip: repr.target_ip,
        },
        ArpOp::Reply
            if !unspecified
                && (repr.sender_ip == repr.target_ip
                    || repr.target_mac == repr.sender_mac
                    || repr.target_mac == MacAddr::BROADCAST) =>
        {
            EventKind::GratuitousReply {
                ip: repr.sender_ip,
                mac: repr.sender_mac,
            }
        }
        ArpOp::Reply => EventKind::Reply {
            sender_ip: repr.sender_ip,
            sender_mac: repr.sender_mac,
            target_ip: repr.target_ip,
            target_mac: repr.target_mac,
        },
        ArpOp::Unknown(code) => return Err(WireError::UnsupportedOperation(code)),
    };
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::samples::*;

    const VM: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const ROUTER: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0xfe]);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 1, last)
    }

    #[test]
    fn qemu_announce_is_rarp_announce() {
        let event = classify(&QEMU_RARP).unwrap();
        assert_eq!(event.kind, EventKind::RarpAnnounce { mac: VM });
        assert_eq!(event.ethertype, ETHERTYPE_RARP);
        assert_eq!(event.eth_dst, MacAddr::BROADCAST);
        assert_eq!(event.eth_src, VM);
        assert_eq!(
            event.repr,
            ArpRepr {
                operation: ArpOp::RarpRequest,
                sender_mac: VM,
                sender_ip: Ipv4Addr::UNSPECIFIED,
                target_mac: VM,
                target_ip: Ipv4Addr::UNSPECIFIED,
            }
        );
        assert!(event.source_matches_sender());
    }

    #[test]
    fn classifies_each_frame_kind() {
        let cases: [(&[u8], EventKind); 8] = [
            (
                &GARP_REQUEST,
                EventKind::GratuitousRequest { ip: ip(2), mac: VM },
            ),
            (
                &GARP_REPLY,
                EventKind::GratuitousReply { ip: ip(2), mac: VM },
            ),
            (
                &GARP_REPLY_BROADCAST_TARGET,
                EventKind::GratuitousReply { ip: ip(2), mac: VM },
            ),
            (
                &PROBE,
                EventKind::Probe {
                    mac: ROUTER,
                    target_ip: ip(2),
                },
            ),
            (
                &REQUEST,
                EventKind::Request {
                    sender_ip: ip(2),
                    sender_mac: VM,
                    target_ip: ip(254),
                },
            ),
            (
                &REPLY,
                EventKind::Reply {
                    sender_ip: ip(254),
                    sender_mac: ROUTER,
                    target_ip: ip(2),
                    target_mac: VM,
                },
            ),
            (&RARP_REPLY, EventKind::OtherRarp(ArpOp::RarpReply)),
            (
                &SPOOFED_GARP,
                EventKind::GratuitousRequest { ip: ip(2), mac: VM },
            ),
        ];
        for (bytes, kind) in cases {
            assert_eq!(classify(bytes).map(|e| e.kind), Ok(kind), "{bytes:02x?}");
        }
    }

    #[test]
    fn source_must_match_sender() {
        assert!(classify(&GARP_REQUEST).unwrap().source_matches_sender());
        assert!(classify(&REPLY).unwrap().source_matches_sender());
        let spoofed = classify(&SPOOFED_GARP).unwrap();
        assert_eq!(
            spoofed.eth_src,
            MacAddr([0x52, 0x54, 0x00, 0x66, 0x66, 0x66])
        );
        assert!(!spoofed.source_matches_sender());
    }

    #[test]
    fn rarp_request_that_is_no_announce_is_other_rarp() {
        let mut bytes = QEMU_RARP;
        bytes[35] = 0x57; // target MAC differs from sender MAC
        assert_eq!(
            classify(&bytes).map(|e| e.kind),
            Ok(EventKind::OtherRarp(ArpOp::RarpRequest))
        );
        let mut bytes = QEMU_RARP;
        bytes[31] = 7; // sender IP 0.0.0.7
        assert_eq!(
            classify(&bytes).map(|e| e.kind),
            Ok(EventKind::OtherRarp(ArpOp::RarpRequest))
        );
    }

    #[test]
    fn reply_from_unspecified_sender_is_not_gratuitous() {
        let mut bytes = GARP_REPLY;
        bytes[28..32].fill(0);
        bytes[38..42].fill(0);
        assert!(matches!(
            classify(&bytes).map(|e| e.kind),
            Ok(EventKind::Reply { .. })
        ));
    }

    #[test]
    fn truncated_frames_are_errors() {
        for len in 0..14 {
            assert_eq!(
                classify(&QEMU_RARP[..len]),
                Err(WireError::EthernetTruncated { len })
            );
        }
        for len in 14..42 {
            assert!(
                matches!(
                    classify(&QEMU_RARP[..len]),
                    Err(WireError::ArpTruncated { .. })
                ),
                "{len}"
            );
        }
        assert!(classify(&QEMU_RARP[..42]).is_ok());
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut ipv4 = QEMU_RARP;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            classify(&ipv4),
            Err(WireError::UnsupportedEthertype(0x0800))
        );

        let mut unknown_op = GARP_REQUEST;
        unknown_op[21] = 9; // InARP request
        assert_eq!(
            classify(&unknown_op),
            Err(WireError::UnsupportedOperation(9))
        );

        let mut long_hw = GARP_REQUEST;
        long_hw[18] = 20;
        assert_eq!(
            classify(&long_hw),
            Err(WireError::UnsupportedAddressLengths { hlen: 20, plen: 4 })
        );
    }
}
