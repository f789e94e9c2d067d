//! Generic receive offload for writes to the TUN device: consecutive TCP/IPv4 segments of one
//! flow are appended to the first one as they are queued, and the result is handed to the
//! kernel as one GSO super-segment (virtio-net header, partial checksum). The receiving host
//! then sees one 64 KB segment instead of ~45, and ACKs it once.
//!
//! Same rules as Linux `tcp_gro_receive`: equal addresses, ports, ACK number, window, TCP
//! options, TOS, TTL and DF; in-order sequence; only ACK (and a final PSH) flags; every segment
//! the size of the first except a shorter last one. Checksums of the merged segments are not
//! verified: they were computed by the sending router's kernel or GSO split and carried inside
//! authenticated QUIC packets; the kernel computes the merged segment's checksum.
//!
//! Why not tun-rs' own GRO (`AsyncDevice::send_multiple` with a `GROTable`), which does the
//! same job: it checksums every packet before merging it and keys its flow table by hash map,
//! and it was measured slower. `netns-lab/bench-throughput.sh --variant SKYVINE_BIN=...`, one
//! run, the same lab, a binary whose peer reader wrote through `send_multiple` instead
//! (load average 5.7-6.9 from other work on the 2-core machine): this module 1525 Mbit/s one
//! stream, 1228 four streams, 4.01 / 3.89 router CPU s per GB; tun-rs' GRO 894 and 947 Mbit/s,
//! 5.28 / 4.62 CPU s per GB.

use std::ops::Range;

use tun_rs::{checksum, checksum_no_fold, VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the device must finish the checksum (CHECKSUM_PARTIAL).
pub(super) const NEEDS_CSUM: u8 = 1;
const IPV4_HEADER: usize = 20;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_ACK: u8 = 0x10;
/// Offset of the TCP checksum within the TCP header.
const TCP_CHECKSUM: u16 = 16;

/// A TCP/IPv4 segment that may be merged: addresses, ports and sequence numbers read from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    /// Source and destination address and port, as bytes 12..24 of the packet.
    key: [u8; 12],
    seq: u32,
    header_len: usize,
    payload_len: usize,
    psh: bool,
}

/// What is known about a queued packet that later segments may be appended to.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Head {
    /// The first segment, when the queued packet is a mergeable TCP segment.
    first: Option<Segment>,
    /// Whether more segments may still be appended.
    open: bool,
    next_seq: u32,
    segments: u16,
    total_len: usize,
}

impl Segment {
    /// The segment view of `packet`, if it is a plain in-order-mergeable TCP/IPv4 segment.
    pub(super) fn parse(packet: &[u8]) -> Option<Segment> {
        let ip = packet.get(..IPV4_HEADER)?;
        let total_len = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        let no_fragment = ip.get(6)? & 0x3f == 0 && *ip.get(7)? == 0;
        if *ip.first()? != 0x45 || *ip.get(9)? != 6 || total_len != packet.len() || !no_fragment {
            return None;
        }
        let tcp = packet.get(IPV4_HEADER..)?;
        let tcp_len = usize::from(tcp.get(12)? >> 4) * 4;
        let flags = *tcp.get(13)?;
        let header_len = IPV4_HEADER + tcp_len;
        if tcp_len < 20 || header_len >= packet.len() {
            return None;
        }
        if flags != TCP_FLAG_ACK && flags != TCP_FLAG_ACK | TCP_FLAG_PSH {
            return None;
        }
        let key = packet.get(12..24)?.try_into().ok()?;
        let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
        Some(Segment {
            key,
            seq,
            header_len,
            payload_len: packet.len() - header_len,
            psh: flags & TCP_FLAG_PSH != 0,
        })
    }

    /// Length of the IPv4 and TCP headers (the payload starts there).
    pub(super) fn header_len(&self) -> usize {
        self.header_len
    }

    /// Whether this segment's payload may be appended to `head` (the queued packet `queued`).
    pub(super) fn follows(&self, packet: &[u8], head: &Head, queued: &[u8]) -> bool {
        let Some(first) = head.first.filter(|_| head.open) else {
            return false;
        };
        first.key == self.key
            && head.next_seq == self.seq
            && first.header_len == self.header_len
            && self.payload_len <= first.payload_len
            && head.total_len + self.payload_len <= usize::from(u16::MAX)
            && same(packet, queued, 1..2) // TOS
            && same_bits(packet, queued, 6, 0xe0) // DF and reserved
            && same(packet, queued, 8..9) // TTL
            && same(packet, queued, IPV4_HEADER + 8..IPV4_HEADER + 13) // ACK number, data offset
            && same(packet, queued, IPV4_HEADER + 14..IPV4_HEADER + 16) // window
            && same(packet, queued, IPV4_HEADER + 20..self.header_len) // options
    }
}

impl Head {
    /// The head for a packet queued on its own (`segment` is its view, if mergeable).
    pub(super) fn new(segment: Option<Segment>, packet_len: usize) -> Head {
        match segment {
            Some(seg) => Head {
                first: Some(seg),
                open: !seg.psh,
                next_seq: seg.seq.wrapping_add(seg.payload_len as u32),
                segments: 1,
                total_len: packet_len,
            },
            None => Head::default(),
        }
    }

    /// Accounts for `seg` having been appended. Returns whether it carried PSH, which the
    /// caller then sets on the queued packet's header.
    pub(super) fn append(&mut self, seg: &Segment) -> bool {
        self.next_seq = self.next_seq.wrapping_add(seg.payload_len as u32);
        self.segments += 1;
        self.total_len += seg.payload_len;
        let full_size = self.first.is_some_and(|s| s.payload_len == seg.payload_len);
        if seg.psh || !full_size || self.segments == u16::MAX {
            self.open = false;
        }
        seg.psh
    }

    /// Fills in the virtio-net header (the first `headroom` bytes of `buf`) and, for a merged
    /// packet, its IPv4 total length and checksum and the TCP pseudo-header checksum.
    pub(super) fn finish(&self, buf: &mut [u8], headroom: usize) {
        let Some(first) = self.first.filter(|_| self.segments > 1) else {
            return; // The zeroed header already says "no GSO, checksum complete".
        };
        let Some(packet) = buf.get_mut(headroom..) else {
            return;
        };
        let Ok(len) = u16::try_from(packet.len()) else {
            return;
        };
        let Some(Ok(ip)) = packet
            .get_mut(..IPV4_HEADER)
            .map(<&mut [u8; IPV4_HEADER]>::try_from)
        else {
            return;
        };
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let ip_sum = !checksum(ip, 0);
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&ip[12..20]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&(len - IPV4_HEADER as u16).to_be_bytes());
        let partial = checksum(&[], checksum_no_fold(&pseudo, 0));
        let at = IPV4_HEADER + usize::from(TCP_CHECKSUM);
        if let Some(field) = packet.get_mut(at..at + 2) {
            field.copy_from_slice(&partial.to_be_bytes());
        }
        let header = VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: first.header_len as u16,
            gso_size: first.payload_len as u16,
            csum_start: IPV4_HEADER as u16,
            csum_offset: TCP_CHECKSUM,
        };
        if let Some(room) = buf.get_mut(..headroom) {
            // `room` is VIRTIO_NET_HDR_LEN long, exactly what `encode` writes.
            let _ = header.encode(room);
        }
    }
}

/// Offset of the TCP flags byte in an IPv4 packet without options.
pub(super) const TCP_FLAGS_AT: usize = IPV4_HEADER + 13;
pub(super) const PSH: u8 = TCP_FLAG_PSH;

fn same(a: &[u8], b: &[u8], range: Range<usize>) -> bool {
    a.get(range.clone()) == b.get(range)
}

fn same_bits(a: &[u8], b: &[u8], at: usize, mask: u8) -> bool {
    a.get(at).map(|x| x & mask) == b.get(at).map(|x| x & mask)
}
