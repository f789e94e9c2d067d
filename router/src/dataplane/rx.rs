//! QUIC -> TUN: read the datagrams a peer sent, keep those whose source the peer's site owns,
//! and write them to the device in batches (coalesced by GRO where the device supports it).

use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::FutureExt;
use skyvine_tables::SiteId;

use super::counters::DropTally;
use super::{ipv4_addrs, is_fatal, Counters, DropLog, PacketDevice, TxBatch};
use crate::fib::{DropReason, Fib};

/// How often one batch waits a scheduler round for more datagrams before it is written.
const MAX_YIELDS: usize = 4;

pub(super) async fn run<D: PacketDevice>(
    conn: quinn::Connection,
    site: SiteId,
    dev: Arc<D>,
    fib: Arc<Fib>,
    counters: Arc<Counters>,
) {
    let peer = counters.peer(&site);
    let mut batch = TxBatch::new(dev.takes_gso());
    let mut tally = DropTally::default();
    let mut log = DropLog::new();
    loop {
        let first = match conn.read_datagram().await {
            Ok(datagram) => datagram,
            Err(error) => {
                tracing::debug!(site = %site, %error, "peer reader ends: connection closed");
                return;
            }
        };
        let fib = fib.load();
        let mut next = Some(first);
        let mut bytes = 0u64;
        let mut yields = 0;
        // Packets of a burst mostly share their source: check the FIB once per source.
        let mut last: Option<(Ipv4Addr, Result<(), DropReason>)> = None;
        let mut check = |src: Ipv4Addr| match last {
            Some((cached, verdict)) if cached == src => verdict,
            _ => {
                let verdict = fib.inbound(&site, src);
                last = Some((src, verdict));
                verdict
            }
        };
        // Take what is already queued, without waiting, up to one batch.
        while let Some(datagram) = next.take() {
            match ipv4_addrs(&datagram).and_then(|(src, _)| check(src)) {
                Ok(()) => {
                    tracing::trace!(site = %site, len = datagram.len(), "from peer");
                    bytes += datagram.len() as u64;
                    batch.push(&datagram);
                }
                Err(reason) => tally.add(reason),
            }
            if batch.is_full() {
                break;
            }
            next = conn.read_datagram().now_or_never().and_then(Result::ok);
            if next.is_none() && yields < MAX_YIELDS {
                // Let the QUIC drivers deliver what the socket already holds, so that one
                // GRO-coalesced write carries a whole burst (and the receiver ACKs it once).
                yields += 1;
                tokio::task::yield_now().await;
                next = conn.read_datagram().now_or_never().and_then(Result::ok);
            }
        }
        let packets = batch.packets() as u64;
        if packets > 0 {
            match dev.send(&mut batch).await {
                Ok(()) => peer.add_rx(packets, bytes),
                Err(error) if is_fatal(&error) => {
                    tracing::error!(site = %site, %error, "TUN write failed, peer reader stops");
                    return;
                }
                Err(error) => {
                    tracing::debug!(site = %site, %error, "TUN write failed");
                    tally.add_n(DropReason::QueueFull, packets);
                }
            }
        }
        log.record("quic_to_tun", tally.flush(&counters));
    }
}
