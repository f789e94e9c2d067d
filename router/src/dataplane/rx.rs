//! QUIC -> TUN: read the datagrams a peer sent, keep those of a network the peer shares whose
//! source the peer's site owns there, and write them to that network's device in batches
//! (coalesced by GRO where the device supports it).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use skyvine_core::config::NetworkId;
use skyvine_core::datagram::{self, Datagram};
use skyvine_core::networks::SharedNetworks;
use skyvine_tables::SiteId;

use super::counters::{DropTally, PeerCounters};
use super::{
    ipv4_addrs, is_fatal, Counters, DataNetwork, DropLog, PacketDevice, PeerTable, TxBatch,
};
use crate::relay::Hub;
use skyvine_core::fib::{DropReason, FibSnapshot};
use skyvine_core::relay;

/// How often one batch waits a scheduler round for more datagrams before it is written.
/// These waits cost a lone packet no measurable latency: ping through the overlay (300 pings at
/// 10 ms, median, two alternating rounds, load average 4.3-4.7) took 0.441 / 0.418 ms with 4
/// and 0.421 / 0.432 ms with none.
const MAX_YIELDS: usize = 4;

/// One shared network's state in a peer reader: its batch towards the TUN device, and what
/// the batch carried.
struct Lane<D> {
    network: Arc<DataNetwork<D>>,
    peer: Arc<PeerCounters>,
    batch: TxBatch,
    bytes: u64,
    tally: DropTally,
    /// Packets of a burst mostly share their source: the FIB is asked once per source.
    last: Option<(Ipv4Addr, Result<(), DropReason>)>,
}

pub(super) async fn run<D: PacketDevice>(
    conn: quinn::Connection,
    site: SiteId,
    networks: Arc<Vec<DataNetwork<D>>>,
    peers: Arc<PeerTable>,
    counters: Arc<Counters>,
    hub: Option<Arc<Hub>>,
) {
    let shared: SharedNetworks = networks.iter().map(|n| n.id).collect();
    let mut lanes: Vec<Lane<D>> = networks
        .iter()
        .map(|n| {
            let network = Arc::new(DataNetwork {
                id: n.id,
                device: n.device.clone(),
                fib: n.fib.clone(),
                counters: n.counters.clone(),
            });
            Lane {
                peer: network.counters.peer(&site),
                batch: TxBatch::new(network.device.takes_gso()),
                network,
                bytes: 0,
                tally: DropTally::default(),
                last: None,
            }
        })
        .collect();
    // Drops that belong to no network of this router (unknown network, relay datagrams).
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
        let fibs: Vec<_> = lanes.iter().map(|l| l.network.fib.load()).collect();
        let mut next = Some(first);
        let mut yields = 0;
        // Take what is already queued, without waiting, up to one batch.
        let now = Instant::now();
        while let Some(bytes) = next.take() {
            if bytes.first() == Some(&relay::KIND) {
                // Another site's traffic through this router (see crate::relay).
                let verdict = match &hub {
                    Some(hub) => hub.on_datagram(&site, &bytes),
                    None => Err(DropReason::RelayDisabled),
                };
                if let Err(reason) = verdict {
                    tally.add(reason);
                }
            } else {
                match datagram::parse(&bytes, &shared) {
                    Ok(parsed) => {
                        // The parser admitted only shared networks, which all have a lane.
                        let lane = lanes.iter().position(|l| l.network.id == parsed.network);
                        let lane = lane.and_then(|i| Some((lanes.get_mut(i)?, fibs.get(i)?)));
                        if let Some((lane, fib)) = lane {
                            lane.deliver(fib, &peers, &site, parsed, now);
                        }
                    }
                    Err(reason) => {
                        tracing::trace!(site = %site, reason = reason.name(), "datagram refused");
                        tally.add(reason);
                    }
                }
            }
            if lanes.iter().any(|l| l.batch.is_full()) {
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
        for lane in &mut lanes {
            if !lane.write(&site).await {
                return;
            }
            log.record("quic_to_tun", lane.tally.flush(&lane.network.counters));
        }
        log.record("quic_to_tun", tally.flush(&counters));
    }
}

impl<D: PacketDevice> Lane<D> {
    /// Checks one packet of this network and batches it for the TUN device, or sends it on.
    fn deliver(
        &mut self,
        fib: &FibSnapshot,
        peers: &PeerTable,
        site: &SiteId,
        parsed: Datagram<'_>,
        now: Instant,
    ) {
        let verdict = if parsed.relayed {
            relayed(fib, site, parsed.packet, now)
        } else {
            ipv4_addrs(parsed.packet).and_then(|(src, dst)| {
                let check = match self.last {
                    Some((cached, verdict)) if cached == src => verdict,
                    _ => {
                        let verdict = fib.inbound(site, src);
                        self.last = Some((src, verdict));
                        verdict
                    }
                };
                check?;
                relay(fib, peers, self.network.id, site, dst, parsed.packet, now)
            })
        };
        match verdict {
            Ok(Delivery::Relayed) => {}
            Ok(Delivery::Local(packet)) => {
                tracing::trace!(site = %site, network = self.network.id, len = packet.len(), "from peer");
                self.bytes += packet.len() as u64;
                self.batch.push(packet);
            }
            Err(reason) => self.tally.add(reason),
        }
    }

    /// Writes the batch to the network's device. `false` when the device is gone.
    async fn write(&mut self, site: &SiteId) -> bool {
        self.last = None;
        let packets = self.batch.packets() as u64;
        let bytes = std::mem::take(&mut self.bytes);
        if packets == 0 {
            return true;
        }
        match self.network.device.send(&mut self.batch).await {
            Ok(()) => self.peer.add_rx(packets, bytes),
            Err(error) if is_fatal(&error) => {
                tracing::error!(site = %site, network = self.network.id, %error, "TUN write failed, peer reader stops");
                return false;
            }
            Err(error) => {
                tracing::debug!(site = %site, network = self.network.id, %error, "TUN write failed");
                self.tally.add_n(DropReason::QueueFull, packets);
            }
        }
        true
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
    network: NetworkId,
    from: &SiteId,
    dst: Ipv4Addr,
    packet: &'a [u8],
    now: Instant,
) -> Result<Delivery<'a>, DropReason> {
    if fib.arriving_early(dst) {
        // A copy sent ahead of a planned migration here: the VM is not here yet.
        return Err(DropReason::NotArrived);
    }
    let Some(target) = fib.relay_target(dst, now).filter(|t| *t != from) else {
        fib.inbound_destination(dst)?;
        return Ok(Delivery::Local(packet));
    };
    let conn = peers.get(target).ok_or(DropReason::PeerDown)?;
    let mut relayed = Vec::with_capacity(packet.len() + datagram::HEADER_LEN);
    relayed.extend_from_slice(&datagram::header(datagram::RELAYED, network));
    relayed.extend_from_slice(packet);
    tracing::trace!(%dst, to = %target, "relaying a packet in flight to a host's new site");
    conn.send_datagram(relayed.into())
        .map_err(|_| DropReason::TooBig)?;
    Ok(Delivery::Relayed)
}

/// A packet relayed by the host's old site: accepted only for a host that just arrived here
/// from that site.
fn relayed<'a>(
    fib: &FibSnapshot,
    from: &SiteId,
    packet: &'a [u8],
    now: Instant,
) -> Result<Delivery<'a>, DropReason> {
    let (src, dst) = ipv4_addrs(packet)?;
    fib.accept_relayed(from, src, dst, now)?;
    Ok(Delivery::Local(packet))
}
