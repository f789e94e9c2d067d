//! Zero-copy view of an Ethernet II frame header.

use skyvine_tables::MacAddr;

use super::{read, write, WireError, ETHERNET_HEADER_LEN};

mod field {
    use core::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// A read (and, over a mutable buffer, write) view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking its length. For buffers whose length is known, such as
    /// one being built; accessors of a too-short buffer read zeros.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps captured bytes, refusing a buffer shorter than the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds a whole header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < ETHERNET_HEADER_LEN {
            Err(WireError::EthernetTruncated { len })
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(read(self.buffer.as_ref(), field::DESTINATION))
    }

    pub fn src_addr(&self) -> MacAddr {
        MacAddr(read(self.buffer.as_ref(), field::SOURCE))
    }

    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes(read(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the header, including any trailing padding.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        write(self.buffer.as_mut(), field::DESTINATION, &addr.0);
    }

    pub fn set_src_addr(&mut self, addr: MacAddr) {
        write(self.buffer.as_mut(), field::SOURCE, &addr.0);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        write(
            self.buffer.as_mut(),
            field::ETHERTYPE,
            &ethertype.to_be_bytes(),
        );
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::PAYLOAD..)
            .unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HEADER: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // source
        0x08, 0x06, // ethertype
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn reads_header_fields() {
        let frame = EthernetFrame::new_checked(&HEADER[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(
            frame.src_addr(),
            MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        );
        assert_eq!(frame.ethertype(), 0x0806);
        assert_eq!(frame.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn refuses_short_header() {
        for len in 0..ETHERNET_HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&HEADER[..len]),
                Err(WireError::EthernetTruncated { len })
            );
        }
        let frame = EthernetFrame::new_checked(&HEADER[..ETHERNET_HEADER_LEN]).unwrap();
        assert!(frame.payload().is_empty());
    }

    #[test]
    fn writes_header_fields() {
        let mut buf = [0u8; 16];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        frame.set_ethertype(0x0806);
        frame.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn unchecked_short_buffer_reads_zeros_without_panic() {
        let frame = EthernetFrame::new_unchecked(&HEADER[..3]);
        assert_eq!(frame.src_addr(), MacAddr::ZERO);
        assert_eq!(frame.ethertype(), 0);
        let mut short = [0u8; 3];
        let mut frame = EthernetFrame::new_unchecked(&mut short[..]);
        frame.set_ethertype(0x0806);
        assert_eq!(short, [0, 0, 0]);
    }
}
