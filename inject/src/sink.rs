//! The [`FrameSink`] trait the Linux injector and an in-memory recorder implement, so code
//! that sends ARP frames can be tested without root.

use std::io;
use std::sync::{Mutex, PoisonError};

use skyvine_tables::MacAddr;

/// Something that puts whole Ethernet frames on one interface.
pub trait FrameSink {
    /// Sends one whole Ethernet frame (header included). Never blocks.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// The interface's own MAC address: the source of the frames we build.
    fn mac(&self) -> MacAddr;
    /// The kernel's index of the interface.
    fn ifindex(&self) -> u32;
}

/// An in-memory [`FrameSink`] that records every frame sent to it.
#[derive(Debug)]
pub struct RecordingSink {
    mac: MacAddr,
    ifindex: u32,
    sent: Mutex<Vec<Vec<u8>>>,
}

impl RecordingSink {
    pub fn new(mac: MacAddr, ifindex: u32) -> Self {
        RecordingSink {
            mac,
            ifindex,
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Every frame sent so far, oldest first.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.lock().clone()
    }

    /// Every frame sent since the last `take`, oldest first.
    pub fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FrameSink for RecordingSink {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.lock().push(frame.to_vec());
        Ok(())
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl<S: FrameSink + ?Sized> FrameSink for &S {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        (**self).send(frame)
    }

    fn mac(&self) -> MacAddr {
        (**self).mac()
    }

    fn ifindex(&self) -> u32 {
        (**self).ifindex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::gratuitous_arp_request;
    use std::net::Ipv4Addr;

    #[test]
    fn records_frames_in_order() {
        let mac = MacAddr([2, 0, 0, 0, 0, 0xfe]);
        let sink = RecordingSink::new(mac, 4);
        let by_ref: &dyn FrameSink = &sink;
        let first = gratuitous_arp_request(by_ref.mac(), Ipv4Addr::new(10, 77, 1, 1));
        let second = gratuitous_arp_request(by_ref.mac(), Ipv4Addr::new(10, 77, 1, 2));
        by_ref.send(&first).unwrap();
        by_ref.send(&second).unwrap();
        assert_eq!(by_ref.ifindex(), 4);
        assert_eq!(sink.sent(), vec![first.to_vec(), second.to_vec()]);
        assert_eq!(sink.take().len(), 2);
        assert!(sink.sent().is_empty());
    }
}
