//! Pure frame handling: zero-copy views of Ethernet frames and ARP packets, the `ArpRepr`
//! they parse into and emit from, and the classification of a captured frame into an
//! [`ArpEvent`]. No IO, no clock, no allocation.
//!
//! The layout follows smoltcp's `wire` module: a view (`EthernetFrame`, `ArpPacket`) wraps a
//! buffer and names its byte ranges in a private `field` module; `new_checked` is the only way
//! captured input should enter; a `Repr` is the parsed, validated value with `parse`, `emit`
//! and `buffer_len`. Accessors never index unchecked: a view built with `new_unchecked` over a
//! short buffer reads zeros and writes nothing rather than panicking.

mod arp;
mod ethernet;
mod event;
pub mod samples;

pub use arp::{ArpOp, ArpPacket, ArpRepr};
pub use ethernet::EthernetFrame;
pub use event::{classify, ArpEvent, EventKind};

/// Ethertype of ARP frames.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of RARP frames (QEMU/KVM and VMware announce migrated VMs with these).
pub const ETHERTYPE_RARP: u16 = 0x8035;
/// Ethertype of IPv4, also the ARP protocol type for IPv4 addresses.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP hardware type of Ethernet.
pub const ARP_HTYPE_ETHERNET: u16 = 1;
/// Length of an Ethernet header without VLAN tag.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an ARP packet for Ethernet hardware and IPv4 protocol addresses.
pub const ARP_PACKET_LEN: usize = 28;
/// Shortest Ethernet frame on the wire without its FCS; shorter frames are padded to it.
pub const MIN_FRAME_LEN: usize = 60;

/// Why a frame was not accepted. Every variant is a property of the bytes, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("Ethernet frame of {len} bytes is shorter than its 14-byte header")]
    EthernetTruncated { len: usize },
    #[error("ARP packet of {len} bytes is shorter than the {needed} bytes it needs")]
    ArpTruncated { len: usize, needed: usize },
    #[error("ethertype {0:#06x} is neither ARP (0x0806) nor RARP (0x8035)")]
    UnsupportedEthertype(u16),
    #[error("ARP hardware type {0} is not Ethernet (1)")]
    UnsupportedHardware(u16),
    #[error("ARP protocol type {0:#06x} is not IPv4 (0x0800)")]
    UnsupportedProtocol(u16),
    #[error("ARP address lengths hlen={hlen} plen={plen} are not Ethernet/IPv4 (6/4)")]
    UnsupportedAddressLengths { hlen: u8, plen: u8 },
    #[error("ARP operation {0} is not a request or reply of ARP or RARP")]
    UnsupportedOperation(u16),
}

/// Reads a fixed-size field; a buffer too short for it reads as zeros (checked construction
/// rules that out for captured input).
fn read<const N: usize>(buf: &[u8], range: core::ops::Range<usize>) -> [u8; N] {
    buf.get(range)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .unwrap_or([0; N])
}

/// Writes a field; bytes that do not fit the buffer are dropped.
fn write(buf: &mut [u8], range: core::ops::Range<usize>, value: &[u8]) {
    if let Some(dst) = buf.get_mut(range) {
        for (d, s) in dst.iter_mut().zip(value) {
            *d = *s;
        }
    }
}
