//! Zero-copy view of an ARP/RARP packet (Ethernet hardware, IPv4 protocol addresses) and its
//! parsed representation.

use std::net::Ipv4Addr;

use skyvine_tables::MacAddr;

use super::{read, write, WireError, ARP_HTYPE_ETHERNET, ARP_PACKET_LEN, ETHERTYPE_IPV4};

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: Range<usize> = 4..5;
    pub const PLEN: Range<usize> = 5..6;
    pub const OPER: Range<usize> = 6..8;
    /// End of the fixed header; the address fields below assume hlen = 6, plen = 4.
    pub const FIXED_END: usize = 8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// ARP and RARP operation codes (RFC 826, RFC 903).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    Request,
    Reply,
    /// RARP "request reverse": what QEMU/KVM and VMware send after a live migration.
    RarpRequest,
    RarpReply,
    Unknown(u16),
}

impl From<u16> for ArpOp {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            3 => ArpOp::RarpRequest,
            4 => ArpOp::RarpReply,
            other => ArpOp::Unknown(other),
        }
    }
}

impl From<ArpOp> for u16 {
    fn from(value: ArpOp) -> Self {
        match value {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::RarpRequest => 3,
            ArpOp::RarpReply => 4,
            ArpOp::Unknown(other) => other,
        }
    }
}

/// A view of an ARP packet whose address fields are laid out for 6-byte hardware and 4-byte
/// protocol addresses. Trailing bytes (Ethernet padding) are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it. For buffers being built; accessors of a too-short
    /// buffer read zeros.
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps captured bytes: refuses a buffer shorter than the fixed header, address lengths
    /// other than 6/4, and a buffer too short for those addresses.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The checks of [`ArpPacket::new_checked`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < field::FIXED_END {
            return Err(WireError::ArpTruncated {
                len,
                needed: field::FIXED_END,
            });
        }
        let (hlen, plen) = (self.hardware_len(), self.protocol_len());
        if (hlen, plen) != (6, 4) {
            return Err(WireError::UnsupportedAddressLengths { hlen, plen });
        }
        if len < ARP_PACKET_LEN {
            return Err(WireError::ArpTruncated {
                len,
                needed: ARP_PACKET_LEN,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        u16::from_be_bytes(read(self.buffer.as_ref(), field::HTYPE))
    }

    pub fn protocol_type(&self) -> u16 {
        u16::from_be_bytes(read(self.buffer.as_ref(), field::PTYPE))
    }

    pub fn hardware_len(&self) -> u8 {
        u8::from_be_bytes(read(self.buffer.as_ref(), field::HLEN))
    }

    pub fn protocol_len(&self) -> u8 {
        u8::from_be_bytes(read(self.buffer.as_ref(), field::PLEN))
    }

    pub fn operation(&self) -> ArpOp {
        ArpOp::from(u16::from_be_bytes(read(self.buffer.as_ref(), field::OPER)))
    }

    pub fn sender_hardware_addr(&self) -> MacAddr {
        MacAddr(read(self.buffer.as_ref(), field::SHA))
    }

    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read::<4>(self.buffer.as_ref(), field::SPA))
    }

    pub fn target_hardware_addr(&self) -> MacAddr {
        MacAddr(read(self.buffer.as_ref(), field::THA))
    }

    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read::<4>(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    pub fn set_hardware_type(&mut self, value: u16) {
        write(self.buffer.as_mut(), field::HTYPE, &value.to_be_bytes());
    }

    pub fn set_protocol_type(&mut self, value: u16) {
        write(self.buffer.as_mut(), field::PTYPE, &value.to_be_bytes());
    }

    pub fn set_hardware_len(&mut self, value: u8) {
        write(self.buffer.as_mut(), field::HLEN, &[value]);
    }

    pub fn set_protocol_len(&mut self, value: u8) {
        write(self.buffer.as_mut(), field::PLEN, &[value]);
    }

    pub fn set_operation(&mut self, value: ArpOp) {
        write(
            self.buffer.as_mut(),
            field::OPER,
            &u16::from(value).to_be_bytes(),
        );
    }

    pub fn set_sender_hardware_addr(&mut self, addr: MacAddr) {
        write(self.buffer.as_mut(), field::SHA, &addr.0);
    }

    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        write(self.buffer.as_mut(), field::SPA, &addr.octets());
    }

    pub fn set_target_hardware_addr(&mut self, addr: MacAddr) {
        write(self.buffer.as_mut(), field::THA, &addr.0);
    }

    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        write(self.buffer.as_mut(), field::TPA, &addr.octets());
    }
}

/// A parsed ARP or RARP packet for Ethernet and IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses a checked packet; only Ethernet hardware (1) and IPv4 protocol (0x0800)
    /// addresses are accepted. Any operation code parses (unknown ones as `ArpOp::Unknown`).
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        packet.check_len()?;
        match (packet.hardware_type(), packet.protocol_type()) {
            (ARP_HTYPE_ETHERNET, ETHERTYPE_IPV4) => Ok(ArpRepr {
                operation: packet.operation(),
                sender_mac: packet.sender_hardware_addr(),
                sender_ip: packet.sender_protocol_addr(),
                target_mac: packet.target_hardware_addr(),
                target_ip: packet.target_protocol_addr(),
            }),
            (ARP_HTYPE_ETHERNET, ptype) => Err(WireError::UnsupportedProtocol(ptype)),
            (htype, _) => Err(WireError::UnsupportedHardware(htype)),
        }
    }

    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        ARP_PACKET_LEN
    }

    /// Writes the packet into the first [`ArpRepr::buffer_len`] bytes of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_hardware_type(ARP_HTYPE_ETHERNET);
        packet.set_protocol_type(ETHERTYPE_IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(self.sender_mac);
        packet.set_sender_protocol_addr(self.sender_ip);
        packet.set_target_hardware_addr(self.target_mac);
        packet.set_target_protocol_addr(self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ARP request "who has 10.77.1.254? tell 10.77.1.1" (payload only).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, // htype Ethernet
        0x08, 0x00, // ptype IPv4
        0x06, 0x04, // hlen, plen
        0x00, 0x01, // request
        0x52, 0x54, 0x00, 0x77, 0x01, 0x01, // sender MAC
        10, 77, 1, 1, // sender IP
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC
        10, 77, 1, 254, // target IP
    ];

    fn request_repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOp::Request,
            sender_mac: MacAddr([0x52, 0x54, 0x00, 0x77, 0x01, 0x01]),
            sender_ip: Ipv4Addr::new(10, 77, 1, 1),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 77, 1, 254),
        }
    }

    #[test]
    fn parses_request() {
        let packet = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet), Ok(request_repr()));
    }

    #[test]
    fn emits_request() {
        let repr = request_repr();
        let mut buf = [0u8; 28];
        assert_eq!(repr.buffer_len(), buf.len());
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn ignores_trailing_padding() {
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        padded[28..].fill(0xee);
        let packet = ArpPacket::new_checked(&padded[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet), Ok(request_repr()));
    }

    #[test]
    fn refuses_truncated_packets() {
        for len in 0..8 {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..len]),
                Err(WireError::ArpTruncated { len, needed: 8 })
            );
        }
        for len in 8..28 {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..len]),
                Err(WireError::ArpTruncated { len, needed: 28 })
            );
        }
    }

    #[test]
    fn refuses_other_address_types() {
        let mut bytes = REQUEST;
        bytes[5] = 16; // IPv6-sized protocol addresses
        assert_eq!(
            ArpPacket::new_checked(&bytes[..]),
            Err(WireError::UnsupportedAddressLengths { hlen: 6, plen: 16 })
        );

        let mut bytes = REQUEST;
        bytes[1] = 6; // IEEE 802 hardware
        let packet = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            ArpRepr::parse(&packet),
            Err(WireError::UnsupportedHardware(6))
        );

        let mut bytes = REQUEST;
        bytes[2] = 0x86;
        bytes[3] = 0xdd;
        let packet = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            ArpRepr::parse(&packet),
            Err(WireError::UnsupportedProtocol(0x86dd))
        );
    }

    #[test]
    fn operation_codes_round_trip() {
        for code in 0..=u16::MAX {
            assert_eq!(u16::from(ArpOp::from(code)), code);
        }
        assert_eq!(ArpOp::from(3), ArpOp::RarpRequest);
        assert_eq!(ArpOp::from(9), ArpOp::Unknown(9));
    }
}
