//! QUIC -> TUN: read the datagrams a peer sent, keep those whose source the peer's site owns,
//! and write them to the device in batches (coalesced by GRO where the device supports it).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use skyvine_tables::SiteId;

use super::counters::DropTally;
use super::{ipv4_addrs, is_fatal, Counters, DropLog, PacketDevice, PeerTable, TxBatch};
use crate::fib::Fib;
use crate::relay::Hub;
use skyvine_core::fib::{DropReason, FibSnapshot};
use skyvine_core::relay;

/// How often one batch waits a scheduler round for more datagrams before it is written.
/// These waits cost a lone packet no measurable latency: ping through the overlay (300 pings at
/// 10 ms, median, two alternating rounds, load average 4.3-4.7) took 0.441 / 0.418 ms with 4
/// and 0.421 / 0.432 ms with none.
const MAX_YIELDS: usize = 4;

/// First byte of a datagram relayed by a host's old site (an IPv4 packet starts with 0x4_).
pub const RELAY_MARKER: u8 = 0x00;

pub(super) async fn run<D: PacketDevice>(
    conn: quinn::Connection,
    site: SiteId,
    dev: Arc<D>,
    fib: Arc<Fib>,
    peers: Arc<PeerTable>,
    counters: Arc<Counters>,
    hub: Option<Arc<Hub>>,
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
        let now = Instant::now();
        while let Some(datagram) = next.take() {
            let verdict = match datagram.first() {
                Some(&RELAY_MARKER) => relayed(&fib, &site, &datagram, now),
                // Another site's traffic through this router (see crate::relay).
                Some(&relay::KIND) => match &hub {
                    Some(hub) => hub
                        .on_datagram(&site, &datagram)
                        .map(|()| Delivery::Relayed),
                    None => Err(DropReason::RelayDisabled),
                },
                _ => ipv4_addrs(&datagram).and_then(|(src, dst)| {
                    check(src)?;
                    relay(&fib, &peers, &site, dst, &datagram, now)
                }),
            };
            match verdict {
                Ok(Delivery::Relayed) => {}
                Ok(Delivery::Local(packet)) => {
                    tracing::trace!(site = %site, len = packet.len(), "from peer");
                    bytes += packet.len() as u64;
                    batch.push(packet);
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

/// What happens to one datagram from a peer.
enum Delivery<'a> {
    /// Write this packet to the TUN device.
    Local(&'a [u8]),
    /// Sent on: to a host's new site, or through this router to another site.
    Relayed,
}

/// A datagram for a host that left this site moments ago goes straight on to its new site
/// (the kernel would route it back into the overlay, where the source check drops it).
fn relay<'a>(
    fib: &FibSnapshot,
    peers: &PeerTable,
    from: &SiteId,
    dst: Ipv4Addr,
    datagram: &'a [u8],
    now: Instant,
) -> Result<Delivery<'a>, DropReason> {
    if fib.arriving_early(dst) {
        // A copy sent ahead of a planned migration here: the VM is not here yet.
        return Err(DropReason::NotArrived);
    }
    let Some(target) = fib.relay_target(dst, now).filter(|t| *t != from) else {
        fib.inbound_destination(dst)?;
        return Ok(Delivery::Local(datagram));
    };
    let conn = peers.get(target).ok_or(DropReason::PeerDown)?;
    let mut relayed = Vec::with_capacity(datagram.len() + 1);
    relayed.push(RELAY_MARKER);
    relayed.extend_from_slice(datagram);
    tracing::trace!(%dst, to = %target, "relaying a packet in flight to a host's new site");
    conn.send_datagram(relayed.into())
        .map_err(|_| DropReason::TooBig)?;
    Ok(Delivery::Relayed)
}

/// A datagram relayed by the host's old site: accepted only for a host that just arrived here
/// from that site.
fn relayed<'a>(
    fib: &FibSnapshot,
    from: &SiteId,
    datagram: &'a [u8],
    now: Instant,
) -> Result<Delivery<'a>, DropReason> {
    let packet = datagram.get(1..).ok_or(DropReason::Malformed)?;
    let (src, dst) = ipv4_addrs(packet)?;
    fib.accept_relayed(from, src, dst, now)?;
    Ok(Delivery::Local(packet))
}
