//! The packet device behind the data plane: the real TUN device (tun-rs, with Linux GSO/GRO
//! offloads when the kernel has them) and an in-memory fake for tests without root.
//!
//! Both work on reusable batches: [`RxBatch`] receives IP packets (a TCP super-segment from the
//! kernel arrives already split into MTU-sized packets), [`TxBatch`] collects packets to write
//! and lets the device coalesce them (GRO) into as few writes as possible.

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tun_rs::{
    checksum, gso_split, AsyncDevice, DeviceBuilder, VirtioNetHdr, IDEAL_BATCH_SIZE,
    VIRTIO_NET_HDR_LEN,
};

use super::gro::{self, Head, Segment, NEEDS_CSUM};

/// Packets per batch; tun-rs' choice. A receive batch stops taking more reads once it holds
/// this many packets (it has room for [`RX_SLOTS`]).
pub const BATCH: usize = IDEAL_BATCH_SIZE;
/// Packet slots of a receive batch: one 64 KB super-segment always fits an empty batch when its
/// segments carry at least 256 bytes (65535 / 256), whatever TCP options shrink the MSS to.
const RX_SLOTS: usize = 2 * BATCH;
/// Headroom left in front of every packet to write (the virtio-net header with offloads).
const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// Room for one packet in a receive slot; the TUN MTU never exceeds this.
const SLOT_LEN: usize = 1 << 14;
/// Capacity of a transmit buffer: a coalesced super-segment plus headroom (tun-rs checks
/// `2 * offset + len`).
const TX_BUF_CAPACITY: usize = 2 * VIRTIO_NET_HDR_LEN + 65535;
/// A raw read with offloads: the virtio-net header and a super-segment of up to 64 KB.
const RAW_LEN: usize = VIRTIO_NET_HDR_LEN + 65535;
/// virtio-net `gso_type` of a packet that is not a super-segment.
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// A device that reads and writes IPv4 packets in batches.
pub trait PacketDevice: Send + Sync + 'static {
    /// The largest packet the device hands over or accepts (the interface MTU).
    fn mtu(&self) -> u16;

    /// Whether writes may be GSO super-segments (a [`TxBatch`] merges TCP segments then).
    fn takes_gso(&self) -> bool {
        false
    }

    /// Waits for at least one packet and fills `batch` with what is ready (replacing its
    /// previous content).
    fn recv(&self, batch: &mut RxBatch) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes every packet of `batch` (coalescing where the device can) and empties it.
    fn send(&self, batch: &mut TxBatch) -> impl Future<Output = io::Result<()>> + Send;
}

/// Reusable receive buffers: up to [`RX_SLOTS`] packets.
///
/// With offloads, a raw read (virtio-net header + up to 64 KB) is split into the slots only
/// when all its segments fit the free slots; otherwise it stays in `raw` (`pending`) and
/// starts the next batch. So no read is ever lost for want of room, however small the MSS of
/// the super-segment (TCP timestamps alone make 50 segments of a 64 KB read at MTU 1380,
/// more than the 48 slots a "65535 / MTU" estimate leaves room for).
#[derive(Debug)]
pub struct RxBatch {
    raw: Vec<u8>,
    /// Length of a raw read in `raw` that did not fit the previous batch (0: none).
    pending: usize,
    slots: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    len: usize,
}

impl RxBatch {
    /// Buffers for packets of up to `mtu` bytes.
    pub fn new(mtu: u16) -> Self {
        let slot = usize::from(mtu).clamp(576, SLOT_LEN);
        RxBatch {
            raw: vec![0; RAW_LEN],
            pending: 0,
            slots: vec![vec![0; slot]; RX_SLOTS],
            sizes: vec![0; RX_SLOTS],
            len: 0,
        }
    }

    /// The packets received by the last `recv`.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.slots
            .iter()
            .zip(&self.sizes)
            .take(self.len)
            .map(|(slot, &size)| slot.get(..size).unwrap_or_default())
    }

    /// How many packets the last `recv` returned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last `recv` returned nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Accounts for a packet of `size` bytes read into the next free slot.
    fn push_size(&mut self, size: usize) {
        if let Some(slot) = self.sizes.get_mut(self.len) {
            *slot = size;
            self.len += 1;
        }
    }

    /// Copies `packet` into the next free slot (for devices without their own splitting).
    /// Returns false when the batch is full or the packet does not fit a slot.
    fn push(&mut self, packet: &[u8]) -> bool {
        let (Some(slot), Some(size)) = (self.slots.get_mut(self.len), self.sizes.get_mut(self.len))
        else {
            return false;
        };
        let Some(dst) = slot.get_mut(..packet.len()) else {
            return false;
        };
        dst.copy_from_slice(packet);
        *size = packet.len();
        self.len += 1;
        true
    }
}

/// Reusable transmit buffers: packets queued for one write to the device. With `gro`,
/// consecutive TCP segments of a flow are merged into one buffer as they are queued (see
/// [`super::gro`]); each buffer is then one write.
#[derive(Debug)]
pub struct TxBatch {
    bufs: Vec<Vec<u8>>,
    heads: Vec<Head>,
    len: usize,
    packets: usize,
    gro: bool,
}

/// How many of the most recent buffers a segment may be appended to (interleaved flows).
const GRO_LOOKBACK: usize = 8;

impl TxBatch {
    /// An empty batch; `gro` merges TCP segments (only for devices that take GSO writes).
    pub fn new(gro: bool) -> Self {
        TxBatch {
            bufs: Vec::with_capacity(BATCH),
            heads: Vec::with_capacity(BATCH),
            len: 0,
            packets: 0,
            gro,
        }
    }

    /// Queues a copy of `packet`; buffers are reused from batch to batch.
    pub fn push(&mut self, packet: &[u8]) {
        self.packets += 1;
        let segment = if self.gro {
            Segment::parse(packet)
        } else {
            None
        };
        if let Some(seg) = segment {
            if self.append(packet, &seg) {
                return;
            }
        }
        if self.len == self.bufs.len() {
            let capacity = if self.gro {
                TX_BUF_CAPACITY
            } else {
                HEADROOM + 2048
            };
            self.bufs.push(Vec::with_capacity(capacity));
            self.heads.push(Head::default());
        }
        if let (Some(buf), Some(head)) = (self.bufs.get_mut(self.len), self.heads.get_mut(self.len))
        {
            buf.clear();
            buf.resize(HEADROOM, 0);
            buf.extend_from_slice(packet);
            *head = Head::new(segment, packet.len());
            self.len += 1;
        }
    }

    /// Appends `seg` to a recent buffer of the same flow, if it continues it.
    fn append(&mut self, packet: &[u8], seg: &Segment) -> bool {
        let from = self.len.saturating_sub(GRO_LOOKBACK);
        let (Some(bufs), Some(heads)) = (
            self.bufs.get_mut(from..self.len),
            self.heads.get_mut(from..self.len),
        ) else {
            return false;
        };
        for (buf, head) in bufs.iter_mut().zip(heads.iter_mut()).rev() {
            let queued = buf.get(HEADROOM..).unwrap_or_default();
            if !seg.follows(packet, head, queued) {
                continue;
            }
            let Some(payload) = packet.get(seg.header_len()..) else {
                return false;
            };
            buf.extend_from_slice(payload);
            if head.append(seg) {
                if let Some(flags) = buf.get_mut(HEADROOM + gro::TCP_FLAGS_AT) {
                    *flags |= gro::PSH;
                }
            }
            return true;
        }
        false
    }

    /// Number of buffers (writes) queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of packets queued (before merging).
    pub fn packets(&self) -> usize {
        self.packets
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another packet might need a buffer beyond one batch.
    pub fn is_full(&self) -> bool {
        self.len >= BATCH
    }

    /// The queued buffers, each with the virtio-net header filled in (for GSO writes).
    fn finish(&mut self) -> impl Iterator<Item = &[u8]> + '_ {
        let len = self.len;
        self.len = 0;
        self.packets = 0;
        self.bufs
            .iter_mut()
            .zip(&self.heads)
            .take(len)
            .map(|(buf, head)| {
                head.finish(buf, HEADROOM);
                &buf[..]
            })
    }
}

/// Whether the TUN device was opened with GSO/GRO offloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// TCP (and UDP where the kernel has it) segmentation offload via virtio-net headers.
    On { udp: bool },
    /// Plain one-packet-per-read device.
    Off,
}

/// The kernel TUN device.
pub struct TunDevice {
    dev: AsyncDevice,
    offload: Offload,
    name: String,
    mtu: u16,
}

/// Creates (or re-opens) the TUN device `name` with `mtu`, brings it up, and enables GSO/GRO
/// offloads when the kernel supports them (falling back to a plain device otherwise).
pub async fn open_tun(name: &str, mtu: u16) -> io::Result<Arc<TunDevice>> {
    let build = |offload: bool| {
        DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .offload(offload)
            .tx_queue_len(1000)
            .build_async()
    };
    let (dev, offload) = match build(true) {
        Ok(dev) => {
            let offload = if dev.tcp_gso() {
                Offload::On { udp: dev.udp_gso() }
            } else {
                Offload::Off
            };
            (dev, offload)
        }
        Err(error) => {
            tracing::warn!(tun = name, %error, "TUN offloads unavailable, using a plain device");
            (build(false)?, Offload::Off)
        }
    };
    dev.enabled(true)?;
    tracing::info!(tun = name, mtu, ?offload, "TUN device open");
    Ok(Arc::new(TunDevice {
        dev,
        offload,
        name: name.to_owned(),
        mtu,
    }))
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("offload", &self.offload)
            .finish_non_exhaustive()
    }
}

impl TunDevice {
    /// A device without offloads: one packet per read, straight into the slots.
    async fn recv_plain(&self, batch: &mut RxBatch) -> io::Result<()> {
        let Some(first) = batch.slots.first_mut() else {
            return Ok(());
        };
        let n = self.dev.recv(first).await?;
        batch.push_size(n);
        while batch.len < BATCH {
            let Some(slot) = batch.slots.get_mut(batch.len) else {
                break;
            };
            match self.dev.try_recv(slot) {
                Ok(n) => batch.push_size(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn offload(&self) -> Offload {
        self.offload
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PacketDevice for TunDevice {
    fn mtu(&self) -> u16 {
        self.mtu
    }

    fn takes_gso(&self) -> bool {
        matches!(self.offload, Offload::On { .. })
    }

    async fn recv(&self, batch: &mut RxBatch) -> io::Result<()> {
        batch.len = 0;
        if !self.takes_gso() {
            return self.recv_plain(batch).await;
        }
        if batch.pending == 0 {
            batch.pending = self.dev.recv(&mut batch.raw).await?;
        }
        // Split what was read, then drain what else is ready, up to a batch.
        loop {
            match split_raw(batch) {
                Ok(true) => {}
                Ok(false) => return Ok(()), // kept for the next batch
                Err(error) if batch.len > 0 => {
                    // Deliver what the batch holds; the bad read is already discarded.
                    tracing::debug!(%error, "TUN read dropped");
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
            if batch.len >= BATCH {
                return Ok(());
            }
            match self.dev.try_recv(&mut batch.raw) {
                Ok(n) => batch.pending = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(&self, batch: &mut TxBatch) -> io::Result<()> {
        let vnet_header = self.takes_gso();
        let mut result = Ok(());
        for buf in batch.finish() {
            let frame = if vnet_header {
                buf
            } else {
                buf.get(HEADROOM..).unwrap_or_default()
            };
            // Keep writing the rest after one failed write; report the last error.
            if let Err(error) = self.dev.send(frame).await {
                result = Err(error);
            }
        }
        result
    }
}

/// Splits the raw read pending in `batch` into its free slots. Returns false (keeping the read
/// pending) when its segments do not all fit; an error discards the read.
fn split_raw(batch: &mut RxBatch) -> io::Result<bool> {
    let len = std::mem::take(&mut batch.pending);
    let Some((header, packet)) = batch
        .raw
        .get_mut(..len)
        .filter(|raw| raw.len() > VIRTIO_NET_HDR_LEN)
        .map(|raw| raw.split_at_mut(VIRTIO_NET_HDR_LEN))
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TUN read of {len} bytes is shorter than its virtio-net header"),
        ));
    };
    let header = VirtioNetHdr::decode(&*header)?;
    let (Some(slots), Some(sizes)) = (
        batch.slots.get_mut(batch.len..),
        batch.sizes.get_mut(batch.len..),
    ) else {
        return Ok(false);
    };
    if header.gso_type == VIRTIO_NET_HDR_GSO_NONE {
        let (Some(slot), Some(size)) = (slots.first_mut(), sizes.first_mut()) else {
            batch.pending = len;
            return Ok(false);
        };
        if header.flags & NEEDS_CSUM != 0 {
            complete_checksum(packet, header.csum_start, header.csum_offset)?;
        }
        let dst = slot.get_mut(..packet.len()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "TUN packet larger than the MTU")
        })?;
        dst.copy_from_slice(packet);
        *size = packet.len();
        batch.len += 1;
        return Ok(true);
    }
    let segments = packet
        .len()
        .checked_sub(usize::from(header.hdr_len))
        .map(|payload| payload.div_ceil(usize::from(header.gso_size.max(1))));
    if segments.is_some_and(|n| n > slots.len()) && batch.len > 0 {
        batch.pending = len;
        return Ok(false);
    }
    let n = gso_split(packet, header, slots, sizes, 0, false)?;
    batch.len += n;
    Ok(true)
}

/// Finishes a partial (CHECKSUM_PARTIAL) checksum: the field at `start + offset` holds the
/// pseudo-header sum; the sum from `start` to the end goes there.
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> io::Result<()> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "checksum offset outside the packet",
        )
    };
    let field: &mut [u8; 2] = packet
        .get_mut(at..at + 2)
        .and_then(|f| f.try_into().ok())
        .ok_or_else(bad)?;
    let initial = u16::from_be_bytes(*field);
    *field = [0, 0];
    let sum = checksum(packet.get(start..).ok_or_else(bad)?, u64::from(initial));
    if let Some(field) = packet.get_mut(at..at + 2) {
        field.copy_from_slice(&(!sum).to_be_bytes());
    }
    Ok(())
}

/// An in-memory device: packets written by the data plane come out of [`FakeHandle::sent`],
/// packets put into [`FakeHandle::inject`] are read by the data plane.
#[derive(Debug)]
pub struct FakeDevice {
    incoming: Mutex<mpsc::Receiver<Vec<u8>>>,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    mtu: u16,
}

/// The test side of a [`FakeDevice`].
#[derive(Debug)]
pub struct FakeHandle {
    /// Packets the "kernel" hands to the data plane.
    pub inject: mpsc::Sender<Vec<u8>>,
    /// Packets the data plane wrote to the device, in order.
    pub sent: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl FakeDevice {
    /// A fake device with interface MTU `mtu`.
    pub fn new(mtu: u16) -> (Arc<FakeDevice>, FakeHandle) {
        let (inject, incoming) = mpsc::channel(1024);
        let (outgoing, sent) = mpsc::unbounded_channel();
        let dev = FakeDevice {
            incoming: Mutex::new(incoming),
            outgoing,
            mtu,
        };
        (Arc::new(dev), FakeHandle { inject, sent })
    }
}

impl PacketDevice for FakeDevice {
    fn mtu(&self) -> u16 {
        self.mtu
    }

    async fn recv(&self, batch: &mut RxBatch) -> io::Result<()> {
        batch.len = 0;
        let mut incoming = self.incoming.lock().await;
        let Some(first) = incoming.recv().await else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "fake device closed",
            ));
        };
        batch.push(&first);
        while batch.len < BATCH {
            match incoming.try_recv() {
                Ok(packet) => {
                    batch.push(&packet);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn send(&self, batch: &mut TxBatch) -> io::Result<()> {
        let mut result = Ok(());
        for buf in batch.finish() {
            let packet = buf.get(HEADROOM..).unwrap_or_default().to_vec();
            if self.outgoing.send(packet).is_err() {
                result = Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "fake device closed",
                ));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_device_round_trips_batches() {
        let (dev, mut handle) = FakeDevice::new(1380);
        handle.inject.send(vec![1, 2, 3]).await.unwrap();
        handle.inject.send(vec![4, 5]).await.unwrap();
        let mut rx = RxBatch::new(1380);
        dev.recv(&mut rx).await.unwrap();
        let got: Vec<Vec<u8>> = rx.packets().map(<[u8]>::to_vec).collect();
        assert_eq!(got, vec![vec![1, 2, 3], vec![4, 5]]);

        let mut tx = TxBatch::new(false);
        tx.push(&[9, 9]);
        tx.push(&[8]);
        dev.send(&mut tx).await.unwrap();
        assert!(tx.is_empty());
        assert_eq!(handle.sent.recv().await.unwrap(), vec![9, 9]);
        assert_eq!(handle.sent.recv().await.unwrap(), vec![8]);
    }

    #[test]
    fn rx_batch_refuses_oversized_packets() {
        let mut rx = RxBatch::new(600);
        assert!(!rx.push(&[0; 700]));
        assert!(rx.push(&[0; 600]));
        assert_eq!(rx.len(), 1);
    }

    fn tcp_segment(seq: u32, payload: usize, psh: bool) -> Vec<u8> {
        let mut builder = etherparse::PacketBuilder::ipv4([10, 77, 1, 1], [10, 77, 2, 1], 63)
            .tcp(5000, 6000, seq, 64000)
            .ack(1);
        if psh {
            builder = builder.psh();
        }
        let mut packet = Vec::new();
        builder
            .write(&mut packet, &vec![seq as u8; payload])
            .unwrap();
        packet
    }

    /// Splits a written buffer the way the kernel would (tun-rs' GSO split).
    fn split(buf: &[u8]) -> Vec<Vec<u8>> {
        let header = tun_rs::VirtioNetHdr::decode(&buf[..HEADROOM]).unwrap();
        let mut input = buf[HEADROOM..].to_vec();
        if header.gso_type == 0 {
            return vec![input];
        }
        let mut out = vec![vec![0u8; 2048]; 64];
        let mut sizes = vec![0; 64];
        let n = tun_rs::gso_split(&mut input, header, &mut out, &mut sizes, 0, false).unwrap();
        out.iter()
            .zip(sizes)
            .take(n)
            .map(|(b, s)| b[..s].to_vec())
            .collect()
    }

    /// Equal except the IPv4 identification and header checksum (GSO numbers segments).
    fn same_but_ip_id(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a[..4] == b[..4] && a[6..10] == b[6..10] && a[12..] == b[12..]
    }

    #[test]
    fn tx_batch_merges_consecutive_tcp_segments_into_one_gso_write() {
        let mut tx = TxBatch::new(true);
        let mut sent = Vec::new();
        for i in 0..10u32 {
            let packet = tcp_segment(1000 + i * 1000, 1000, false);
            tx.push(&packet);
            sent.push(packet);
        }
        // A shorter last segment with PSH still joins, and closes the merged packet.
        let last = tcp_segment(11_000, 300, true);
        tx.push(&last);
        sent.push(last);
        tx.push(&tcp_segment(11_300, 1000, false));
        assert_eq!((tx.len(), tx.packets()), (2, 12));
        let written: Vec<Vec<u8>> = tx.finish().map(<[u8]>::to_vec).collect();
        assert_eq!(written[0].len(), HEADROOM + 40 + 10 * 1000 + 300);
        let segments = split(&written[0]);
        assert_eq!(segments.len(), 11);
        for (got, want) in segments.iter().zip(&sent) {
            assert!(
                same_but_ip_id(got, want),
                "segment differs after merge and split"
            );
        }
        assert!(tx.is_empty());
    }

    #[test]
    fn tx_batch_keeps_gaps_other_flows_and_non_tcp_apart() {
        let mut tx = TxBatch::new(true);
        tx.push(&tcp_segment(1000, 1000, false));
        tx.push(&tcp_segment(3000, 1000, false)); // gap: seq 2000 missing
        let mut other_flow = tcp_segment(4000, 1000, false);
        other_flow[23] ^= 1; // different destination port
        tx.push(&other_flow);
        tx.push(&[0x45, 0, 0, 20]); // not TCP (and truncated): queued as is
        tx.push(&tcp_segment(4000, 1000, false)); // continues the second buffer
        assert_eq!((tx.len(), tx.packets()), (4, 5));
        let lens: Vec<usize> = tx.finish().map(<[u8]>::len).collect();
        assert_eq!(
            lens,
            vec![
                HEADROOM + 1040,
                HEADROOM + 2040,
                HEADROOM + 1040,
                HEADROOM + 4
            ]
        );
    }

    #[test]
    fn tx_batch_without_gro_never_merges() {
        let mut tx = TxBatch::new(false);
        tx.push(&tcp_segment(1000, 1000, false));
        tx.push(&tcp_segment(2000, 1000, false));
        assert_eq!(tx.len(), 2);
    }

    /// A raw TUN read as the kernel hands it over: a TCP/IPv4 super-segment with timestamps
    /// (MSS = 1380 - 20 - 32 = 1328) and a partial checksum, behind its virtio-net header.
    fn super_segment(payload: usize) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ipv4([10, 77, 1, 1], [10, 77, 2, 1], 64)
            .tcp(5000, 6000, 1, 64000)
            .ack(1)
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap();
        let mut packet = Vec::new();
        builder.write(&mut packet, &vec![7u8; payload]).unwrap();
        let header = tun_rs::VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: tun_rs::VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1328,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut raw = vec![0u8; HEADROOM];
        header.encode(&mut raw).unwrap();
        raw.extend_from_slice(&packet);
        raw
    }

    fn load(batch: &mut RxBatch, raw: &[u8]) {
        batch.raw[..raw.len()].copy_from_slice(raw);
        batch.pending = raw.len();
    }

    #[test]
    fn a_read_that_does_not_fit_waits_for_the_next_batch() {
        let mut batch = RxBatch::new(1380);
        // 64 KB of payload in 1328-byte segments: 50 segments, more than 65535 / 1380 + 1.
        let raw = super_segment(65535 - 52);
        batch.len = RX_SLOTS - 49;
        load(&mut batch, &raw);
        assert!(
            !split_raw(&mut batch).unwrap(),
            "49 free slots cannot take 50 segments"
        );
        assert_eq!((batch.len, batch.pending), (RX_SLOTS - 49, raw.len()));

        batch.len = 0;
        assert!(split_raw(&mut batch).unwrap());
        assert_eq!((batch.len, batch.pending), (50, 0));
        let mut payload = 0;
        for packet in batch.packets() {
            let (ip, rest) = etherparse::Ipv4Slice::from_slice(packet)
                .map(|s| (s.header().to_header(), s.payload().payload.to_vec()))
                .unwrap();
            let tcp = etherparse::TcpSlice::from_slice(&rest).unwrap();
            assert_eq!(
                tcp.to_header()
                    .calc_checksum_ipv4(&ip, tcp.payload())
                    .unwrap(),
                tcp.checksum(),
                "every segment leaves with a complete checksum"
            );
            payload += tcp.payload().len();
        }
        assert_eq!(payload, 65535 - 52);
    }

    #[test]
    fn a_partial_checksum_of_a_single_packet_is_completed() {
        let mut batch = RxBatch::new(1380);
        let mut raw = super_segment(100);
        // gso_type NONE: one packet with a partial checksum (the pseudo-header sum).
        raw[1] = 0;
        let packet = raw[HEADROOM..].to_vec();
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&packet).unwrap();
        let pseudo = checksum_no_fold_pseudo(&ip, packet.len() - 20);
        raw[HEADROOM + 36..HEADROOM + 38].copy_from_slice(&pseudo.to_be_bytes());
        load(&mut batch, &raw);
        assert!(split_raw(&mut batch).unwrap());
        let out = batch.packets().next().unwrap().to_vec();
        assert_eq!(
            out, packet,
            "completing the partial sum restores the real checksum"
        );

        // A checksum offset past the end is refused, not trusted.
        raw[HEADROOM - 2..HEADROOM].copy_from_slice(&400u16.to_le_bytes());
        batch.len = 0;
        load(&mut batch, &raw);
        assert!(split_raw(&mut batch).is_err());
        assert_eq!(batch.pending, 0, "a bad read is discarded");
    }

    /// The folded (not complemented) TCP pseudo-header sum, as the kernel leaves it in the
    /// checksum field of a CHECKSUM_PARTIAL packet.
    fn checksum_no_fold_pseudo(ip: &etherparse::Ipv4HeaderSlice<'_>, tcp_len: usize) -> u16 {
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&ip.source());
        pseudo[4..8].copy_from_slice(&ip.destination());
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        tun_rs::checksum(&pseudo, 0)
    }
}
