//! TUN -> QUIC: read a batch, route every packet through the FIB, send it as a datagram on the
//! owning site's connection.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::BytesMut;
use skyvine_core::config::NetworkId;
use skyvine_core::datagram;
use skyvine_tables::SiteId;

use super::counters::{DropTally, PeerCounters};
use super::{ipv4_addrs, is_fatal, Counters, DropLog, PacketDevice, PeerTable, RxBatch};
use crate::fib::Fib;
use skyvine_core::fib::{DropReason, FibSnapshot};

pub(super) async fn run<D: PacketDevice>(
    network: NetworkId,
    dev: Arc<D>,
    fib: Arc<Fib>,
    peers: Arc<PeerTable>,
    counters: Arc<Counters>,
) {
    let mut batch = RxBatch::new(dev.mtu());
    let mut sender = Sender::new(network, counters);
    loop {
        if let Err(error) = dev.recv(&mut batch).await {
            if is_fatal(&error) {
                tracing::error!(%error, "TUN read failed, data plane TUN reader stops");
                return;
            }
            tracing::debug!(%error, "TUN read skipped");
            sender.tally.add(DropReason::Malformed);
            sender.flush();
            continue;
        }
        let fib = fib.load();
        let peers = peers.load();
        sender.send_batch(&batch, &fib, &peers);
        sender.flush();
    }
}

/// Per-task state of the sending direction, reused across batches.
struct Sender {
    /// The header of every datagram: a packet of this network.
    header: [u8; datagram::HEADER_LEN],
    counters: Arc<Counters>,
    peer_counters: HashMap<SiteId, Arc<PeerCounters>>,
    /// The peers a batch sent to: connection, counters, packets and bytes of this batch.
    out: Vec<Outgoing>,
    tally: DropTally,
    log: DropLog,
    /// Holds the payloads of the datagrams handed to quinn; see [`Sender::arena_for`].
    arena: BytesMut,
}

struct Outgoing {
    site: SiteId,
    conn: quinn::Connection,
    counters: Arc<PeerCounters>,
    /// Room left in the connection's datagram send buffer, as of the start of the batch.
    space: usize,
    packets: u64,
    bytes: u64,
}

/// Size of the buffer datagram payloads are cut from: a few batches' worth.
const ARENA_CAPACITY: usize = 1 << 20;

/// What quinn charges the datagram send buffer per datagram beyond its payload.
const DATAGRAM_BOOKKEEPING: usize = std::mem::size_of::<bytes::Bytes>();

impl Sender {
    fn new(network: NetworkId, counters: Arc<Counters>) -> Self {
        Sender {
            header: datagram::header(datagram::PACKET, network),
            counters,
            peer_counters: HashMap::new(),
            out: Vec::new(),
            tally: DropTally::default(),
            log: DropLog::new(),
            arena: BytesMut::new(),
        }
    }

    fn send_batch(
        &mut self,
        batch: &RxBatch,
        fib: &FibSnapshot,
        peers: &HashMap<SiteId, quinn::Connection>,
    ) {
        let total = batch
            .packets()
            .map(|p| p.len() + datagram::HEADER_LEN)
            .sum();
        let mut arena = self.take_arena(total);
        // Packets of one super-segment share their addresses: route once per flow change.
        type Route = Result<(usize, Option<usize>), DropReason>;
        let mut last: Option<((Ipv4Addr, Ipv4Addr), Route)> = None;
        for packet in batch.packets() {
            let addrs = match ipv4_addrs(packet) {
                Ok(addrs) => addrs,
                Err(reason) => {
                    self.tally.add(reason);
                    continue;
                }
            };
            let route = match last {
                Some((cached, route)) if cached == addrs => route,
                _ => {
                    let route = self.route(fib, peers, addrs);
                    last = Some((addrs, route));
                    route
                }
            };
            let (index, copy) = match route {
                Ok(route) => route,
                Err(reason) => {
                    tracing::trace!(src = %addrs.0, dst = %addrs.1, reason = reason.name(), "drop");
                    self.tally.add(reason);
                    continue;
                }
            };
            arena.extend_from_slice(&self.header);
            arena.extend_from_slice(packet);
            let datagram = arena.split().freeze();
            if let Some(copy) = copy {
                // A planned migration of the destination is in its window: its new site gets
                // a copy, so the VM's packets are there the moment it resumes.
                self.send_one(copy, datagram.clone(), addrs);
            }
            self.send_one(index, datagram, addrs);
        }
        self.arena = arena;
    }

    /// Sends one datagram on the connection at `index` of `self.out`, counting it.
    fn send_one(&mut self, index: usize, datagram: bytes::Bytes, addrs: (Ipv4Addr, Ipv4Addr)) {
        let len = datagram.len();
        let Some(peer) = self.out.get_mut(index) else {
            return;
        };
        tracing::trace!(src = %addrs.0, dst = %addrs.1, len, site = %peer.site, "to peer");
        match peer.conn.send_datagram(datagram) {
            Ok(()) => {
                peer.packets += 1;
                // The IPv4 packet's bytes, as the receiving end counts them.
                peer.bytes += len.saturating_sub(datagram::HEADER_LEN) as u64;
                // quinn makes room by dropping its oldest queued datagram: count that.
                let cost = len + DATAGRAM_BOOKKEEPING;
                match peer.space.checked_sub(cost) {
                    Some(left) => peer.space = left,
                    None => self.tally.add(DropReason::QueueFull),
                }
            }
            Err(quinn::SendDatagramError::TooLarge) => self.tally.add(DropReason::TooBig),
            Err(
                quinn::SendDatagramError::ConnectionLost(_)
                | quinn::SendDatagramError::Disabled
                | quinn::SendDatagramError::UnsupportedByPeer,
            ) => self.tally.add(DropReason::PeerDown),
        }
    }

    /// A buffer with room for `total` bytes of payload: every datagram of a batch is a slice
    /// of one buffer. The buffer is reused once quinn has sent (and dropped) every datagram cut
    /// from it, so in the steady state no batch allocates; a new one is taken only while quinn
    /// still holds datagrams of the old one. (A fresh allocation per batch, as before, cost
    /// 4.6% of the sending router's CPU in page faults: batches of ~128 KB sat at glibc's mmap
    /// threshold.) Give it back with `self.arena = arena` after the batch.
    fn take_arena(&mut self, total: usize) -> BytesMut {
        let mut arena = std::mem::take(&mut self.arena);
        if !arena.try_reclaim(total) {
            arena = BytesMut::with_capacity(total.max(ARENA_CAPACITY));
        }
        arena
    }

    /// The index in `self.out` of the peer that gets packets from `src` to `dst`, and of the
    /// one that gets a copy (a planned migration of `dst` in its window), if any.
    fn route(
        &mut self,
        fib: &FibSnapshot,
        peers: &HashMap<SiteId, quinn::Connection>,
        (src, dst): (Ipv4Addr, Ipv4Addr),
    ) -> Result<(usize, Option<usize>), DropReason> {
        let site = fib.outbound(src, dst)?;
        let index = self.connection(peers, site)?;
        // A copy that cannot go (its site is down) does not stop the original.
        let copy = fib
            .copy_to(dst)
            .and_then(|site| self.connection(peers, site).ok());
        Ok((index, copy))
    }

    /// The index in `self.out` of `site`'s connection, added for this batch if needed.
    fn connection(
        &mut self,
        peers: &HashMap<SiteId, quinn::Connection>,
        site: &SiteId,
    ) -> Result<usize, DropReason> {
        if let Some(index) = self.out.iter().position(|o| o.site == *site) {
            return Ok(index);
        }
        let conn = peers.get(site).ok_or(DropReason::PeerDown)?;
        let counters = match self.peer_counters.get(site) {
            Some(counters) => Arc::clone(counters),
            None => {
                let counters = self.counters.peer(site);
                self.peer_counters
                    .insert(site.clone(), Arc::clone(&counters));
                counters
            }
        };
        self.out.push(Outgoing {
            site: site.clone(),
            space: conn.datagram_send_buffer_space(),
            conn: conn.clone(),
            counters,
            packets: 0,
            bytes: 0,
        });
        Ok(self.out.len() - 1)
    }

    /// Adds the batch's counts to the shared counters and logs drops (rate-limited).
    fn flush(&mut self) {
        for peer in self.out.drain(..) {
            if peer.packets > 0 {
                peer.counters.add_tx(peer.packets, peer.bytes);
            }
        }
        let drops = self.tally.flush(&self.counters);
        self.log.record("tun_to_quic", drops);
    }
}
