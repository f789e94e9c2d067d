//! The two hypervisor announcements the lab emits (QEMU's RARP, Xen's gratuitous ARP) and a
//! small parser for the ARP/RARP frames the lab watches. Pure: bytes in, bytes out.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of reverse ARP (QEMU/KVM and VMware announce a migrated VM with it).
pub const ETHERTYPE_RARP: u16 = 0x8035;
/// Minimum Ethernet frame length without FCS; announcements are padded with zeros to it.
pub const MIN_FRAME_LEN: usize = 60;

/// Named byte ranges of an Ethernet + ARP (IPv4 over Ethernet) frame.
mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const HTYPE: Range<usize> = 14..16;
    pub const PTYPE: Range<usize> = 16..18;
    pub const HLEN: usize = 18;
    pub const PLEN: usize = 19;
    pub const OPER: Range<usize> = 20..22;
    pub const SHA: Range<usize> = 22..28;
    pub const SPA: Range<usize> = 28..32;
    pub const THA: Range<usize> = 32..38;
    pub const TPA: Range<usize> = 38..42;
    pub const END: usize = 42;
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    pub const ZERO: Mac = Mac([0; 6]);

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a MAC address text was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MAC address {0:?} must be six hex octets separated by ':' (e.g. 52:54:00:77:01:01)")]
pub struct MacParseError(String);

impl FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(Mac(out))
    }
}

/// QEMU's self-announcement after a live migration (`qemu_announce_self`): a broadcast RARP
/// request whose sender and target hardware addresses are the VM's MAC and whose protocol
/// addresses are 0.0.0.0, padded with zeros to 60 bytes.
pub fn qemu_rarp_announce(mac: Mac) -> [u8; MIN_FRAME_LEN] {
    arp_frame(
        ETHERTYPE_RARP,
        Mac::BROADCAST,
        mac,
        3,
        (mac, Ipv4Addr::UNSPECIFIED),
        (mac, Ipv4Addr::UNSPECIFIED),
    )
}

/// The gratuitous ARP a Xen guest (or a virtio guest with `NOTIFY_PEERS`) sends after a
/// migration: a broadcast ARP request with sender IP = target IP = the VM's address and a zero
/// target hardware address, as Linux's `arp_send(ARPOP_REQUEST, .., ip, dev, ip, NULL, ..)`.
pub fn gratuitous_arp_request(mac: Mac, ip: Ipv4Addr) -> [u8; MIN_FRAME_LEN] {
    arp_frame(
        ETHERTYPE_ARP,
        Mac::BROADCAST,
        mac,
        1,
        (mac, ip),
        (Mac::ZERO, ip),
    )
}

fn arp_frame(
    ethertype: u16,
    dst: Mac,
    src: Mac,
    oper: u16,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> [u8; MIN_FRAME_LEN] {
    let mut f = [0u8; MIN_FRAME_LEN];
    let mut put = |range: std::ops::Range<usize>, bytes: &[u8]| {
        if let Some(slot) = f.get_mut(range) {
            slot.copy_from_slice(bytes);
        }
    };
    put(field::DST, &dst.0);
    put(field::SRC, &src.0);
    put(field::ETHERTYPE, &ethertype.to_be_bytes());
    put(field::HTYPE, &1u16.to_be_bytes());
    put(field::PTYPE, &0x0800u16.to_be_bytes());
    put(field::HLEN..field::HLEN + 1, &[6]);
    put(field::PLEN..field::PLEN + 1, &[4]);
    put(field::OPER, &oper.to_be_bytes());
    put(field::SHA, &sender.0 .0);
    put(field::SPA, &sender.1.octets());
    put(field::THA, &target.0 .0);
    put(field::TPA, &target.1.octets());
    f
}

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

/// A parsed ARP or RARP frame (Ethernet/IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    pub oper: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

/// Why a frame is not an ARP/RARP frame the watcher understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than an ARP frame (42)")]
    Truncated(usize),
    #[error("ethertype {0:#06x} is neither ARP nor RARP")]
    NotArp(u16),
    #[error("not an Ethernet/IPv4 ARP header")]
    Unsupported,
}

impl ArpFrame {
    /// Parses a frame captured from the wire; anything else is an error, never a panic.
    pub fn parse(frame: &[u8]) -> Result<Self, FrameError> {
        let head = frame
            .get(..field::END)
            .ok_or(FrameError::Truncated(frame.len()))?;
        let u16_at = |r: std::ops::Range<usize>| {
            head.get(r)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(u16::from_be_bytes)
                .unwrap_or_default()
        };
        let mac_at = |r: std::ops::Range<usize>| {
            Mac(head
                .get(r)
                .and_then(|b| <[u8; 6]>::try_from(b).ok())
                .unwrap_or_default())
        };
        let ip_at = |r: std::ops::Range<usize>| {
            Ipv4Addr::from(
                head.get(r)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .unwrap_or_default(),
            )
        };
        let ethertype = u16_at(field::ETHERTYPE);
        if ethertype != ETHERTYPE_ARP && ethertype != ETHERTYPE_RARP {
            return Err(FrameError::NotArp(ethertype));
        }
        let lens = (head.get(field::HLEN), head.get(field::PLEN));
        if u16_at(field::HTYPE) != 1
            || u16_at(field::PTYPE) != 0x0800
            || lens != (Some(&6), Some(&4))
        {
            return Err(FrameError::Unsupported);
        }
        Ok(ArpFrame {
            dst: mac_at(field::DST),
            src: mac_at(field::SRC),
            ethertype,
            oper: u16_at(field::OPER),
            sha: mac_at(field::SHA),
            spa: ip_at(field::SPA),
            tha: mac_at(field::THA),
            tpa: ip_at(field::TPA),
        })
    }

    pub fn kind(&self) -> ArpKind {
        match (self.ethertype, self.oper) {
            (ETHERTYPE_RARP, 3) => ArpKind::RarpRequest,
            (ETHERTYPE_RARP, 4) => ArpKind::RarpReply,
            (ETHERTYPE_ARP, 1) if self.spa == self.tpa => ArpKind::GratuitousRequest,
            (ETHERTYPE_ARP, 1) if self.spa.is_unspecified() => ArpKind::Probe,
            (ETHERTYPE_ARP, 1) => ArpKind::Request,
            (ETHERTYPE_ARP, 2) if self.spa == self.tpa => ArpKind::GratuitousReply,
            (ETHERTYPE_ARP, 2) => ArpKind::Reply,
            (_, op) => ArpKind::Other(op),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The QEMU announce of DESIGN.md / issue 3, byte for byte.
    const QEMU_RARP: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x80, 0x35, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x03, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x00, 0x00,
        0x00, 0x00, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    const GARP: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x77, 0x01, 0x02, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x77, 0x01, 0x02, 10, 77, 1, 2,
        0, 0, 0, 0, 0, 0, 10, 77, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn rarp_matches_qemu_bytes() {
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(qemu_rarp_announce(mac), QEMU_RARP);
        let parsed = ArpFrame::parse(&QEMU_RARP).unwrap();
        assert_eq!(parsed.kind(), ArpKind::RarpRequest);
        assert_eq!(parsed.sha, mac);
        assert_eq!(parsed.tha, mac);
        assert!(parsed.spa.is_unspecified() && parsed.tpa.is_unspecified());
    }

    #[test]
    fn garp_is_a_request_with_equal_ips() {
        let mac: Mac = "52:54:00:77:01:02".parse().unwrap();
        let frame = gratuitous_arp_request(mac, Ipv4Addr::new(10, 77, 1, 2));
        assert_eq!(frame, GARP);
        let parsed = ArpFrame::parse(&frame).unwrap();
        assert_eq!(parsed.kind(), ArpKind::GratuitousRequest);
        assert_eq!(parsed.dst, Mac::BROADCAST);
    }

    #[test]
    fn parser_rejects_short_and_foreign_frames() {
        assert_eq!(
            ArpFrame::parse(&QEMU_RARP[..41]),
            Err(FrameError::Truncated(41))
        );
        let mut ipv4 = QEMU_RARP;
        ipv4[12] = 0x08;
        ipv4[13] = 0x00;
        assert_eq!(ArpFrame::parse(&ipv4), Err(FrameError::NotArp(0x0800)));
        let mut bad_len = QEMU_RARP;
        bad_len[18] = 8;
        assert_eq!(ArpFrame::parse(&bad_len), Err(FrameError::Unsupported));
    }

    #[test]
    fn mac_text_round_trips_and_rejects_garbage() {
        let mac: Mac = "52:54:00:77:0a:ff".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:77:0a:ff");
        for bad in [
            "",
            "52:54:00:77:0a",
            "52:54:00:77:0a:ff:00",
            "5:54:00:77:0a:ff",
            "zz:54:00:77:0a:ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
