//! The data plane: IPv4 packets between the TUN device and QUIC datagrams to peer routers.
//!
//! Two directions, each one task:
//! - [`spawn_tun_reader`]: TUN -> FIB (`outbound`: LNDT source check, GNDT owner of the
//!   destination) -> the owning site's connection from the [`PeerTable`] -> `send_datagram`.
//! - [`spawn_peer_reader`] (one per peer connection): `read_datagram` -> FIB (`inbound`: the
//!   sending site must own the source) -> TUN; relay datagrams go to [`crate::relay::Hub`].
//!
//! Everything is batched: the TUN device is opened with GSO/GRO offloads, so the kernel hands
//! over 64 KB TCP super-segments (split here into MTU-sized packets) and takes coalesced ones
//! back; the FIB and the peer map are loaded once per batch, counters are added once per batch,
//! and datagram payloads are cut from one reused buffer. This module never decides routing
//! (that is [`skyvine_core::fib`]) and never manages connections (the daemon inserts and removes them).
//!
//! Datagram format ([`skyvine_core::datagram`]): a kind byte (a packet as it left the sending
//! site's LAN, or one relayed in flight by a host's old site), the 2-byte network id, then the
//! IPv4 packet. Each router runs one TUN reader per network, which writes its network's id;
//! a peer reader hands each datagram to the TUN device and tables of the network it names, if
//! the peer shares that network, and drops and counts it (`unknown_network`) otherwise. Each
//! payload is copied exactly once on its way in (from the TUN batch into the datagram buffer,
//! the header written next to it) and once on its way out (from the datagram into the TUN
//! write buffer): the header costs 3 bytes and no extra copy or allocation on either side.
//!
//! Where the time goes, and the choices made from it, is recorded next to each choice: the
//! runtime layout ([`runtime`]), the datagram buffer (`tx.rs`), the TUN read batching
//! (`device.rs`), the GRO on TUN writes (`gro.rs`), the cipher ([`crate::pki::crypto_provider`]).

mod counters;
mod device;
mod gro;
mod quic;
mod runtime;
mod rx;
mod tx;

use std::net::Ipv4Addr;
use std::sync::Arc;

use skyvine_core::config::NetworkId;
use skyvine_tables::SiteId;
use tokio::task::JoinHandle;

pub use counters::{Counters, CountersSnapshot, PeerCounters, PeerStats, PeerTable};
pub use device::{
    open_tun, FakeDevice, FakeHandle, Offload, PacketDevice, RxBatch, TunDevice, TxBatch, BATCH,
};
pub use quic::{
    bind_wan_socket, tune_transport, DATAGRAM_OVERHEAD, DATAGRAM_SEND_BUFFER, SOCKET_BUFFER,
};
pub use runtime::{runtime, tune_allocator, WORKER_THREADS_ENV};

use crate::fib::Fib;
use skyvine_core::fib::DropReason;

/// One network as a peer reader sees it: where its packets go and what it checks them
/// against.
#[derive(Debug)]
pub struct DataNetwork<D> {
    pub id: NetworkId,
    pub device: Arc<D>,
    pub fib: Arc<Fib>,
    /// The network's own counters: packets per peer, drops.
    pub counters: Arc<Counters>,
}

/// Starts the TUN -> QUIC direction of `network`. Runs until the device fails.
pub fn spawn_tun_reader<D: PacketDevice>(
    network: NetworkId,
    dev: Arc<D>,
    fib: Arc<Fib>,
    peers: Arc<PeerTable>,
    counters: Arc<Counters>,
) -> JoinHandle<()> {
    tokio::spawn(tx::run(network, dev, fib, peers, counters))
}

/// Starts the QUIC -> TUN direction for the connection to `site`, which shares `networks` with
/// this router (a datagram for any other is dropped and counted in `counters`, the router's
/// own). Ends when the connection closes (or a device fails). Relay datagrams on it are
/// dropped (see [`spawn_peer_reader_with_relay`]).
pub fn spawn_peer_reader<D: PacketDevice>(
    conn: quinn::Connection,
    site: SiteId,
    networks: Arc<Vec<DataNetwork<D>>>,
    peers: Arc<PeerTable>,
    counters: Arc<Counters>,
) -> JoinHandle<()> {
    tokio::spawn(rx::run(conn, site, networks, peers, counters, None))
}

/// [`spawn_peer_reader`], handing relay datagrams to `hub` (pass on, or deliver to the relay
/// socket).
pub fn spawn_peer_reader_with_relay<D: PacketDevice>(
    conn: quinn::Connection,
    site: SiteId,
    networks: Arc<Vec<DataNetwork<D>>>,
    shared: (Arc<PeerTable>, Arc<Counters>),
    hub: Arc<crate::relay::Hub>,
) -> JoinHandle<()> {
    let (peers, counters) = shared;
    tokio::spawn(rx::run(conn, site, networks, peers, counters, Some(hub)))
}

/// Source and destination of an IPv4 packet, after checking that the header is whole and the
/// total length fits the buffer.
fn ipv4_addrs(packet: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr), DropReason> {
    let header =
        etherparse::Ipv4HeaderSlice::from_slice(packet).map_err(|_| DropReason::Malformed)?;
    let total = usize::from(header.total_len());
    if total < header.slice().len() || total > packet.len() {
        return Err(DropReason::Malformed);
    }
    Ok((header.source_addr(), header.destination_addr()))
}

/// Logs drops at debug at most once a second per task, with how many were not logged.
#[derive(Debug)]
struct DropLog {
    next: std::time::Instant,
    pending: u64,
}

impl DropLog {
    const INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

    fn new() -> Self {
        DropLog {
            next: std::time::Instant::now(),
            pending: 0,
        }
    }

    /// Records a batch's drops; logs them if the last log is old enough.
    fn record(&mut self, direction: &'static str, drops: impl Iterator<Item = (DropReason, u64)>) {
        for (reason, count) in drops {
            self.pending += count;
            if !tracing::enabled!(tracing::Level::DEBUG) {
                continue;
            }
            let now = std::time::Instant::now();
            if now >= self.next {
                tracing::debug!(
                    direction,
                    reason = reason.name(),
                    count,
                    since_last_log = self.pending,
                    "dropped packets"
                );
                self.pending = 0;
                self.next = now + Self::INTERVAL;
            }
        }
    }
}

/// Whether an I/O error on the device means it is gone (end the task) rather than one bad read.
fn is_fatal(error: &std::io::Error) -> bool {
    match error.raw_os_error() {
        Some(code) => !matches!(code, libc::EINTR | libc::EAGAIN | libc::ENOBUFS),
        None => error.kind() == std::io::ErrorKind::BrokenPipe,
    }
}

#[cfg(test)]
mod tests;
