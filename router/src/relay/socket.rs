//! The relay socket: a virtual UDP socket for the relay endpoint. Its "network" is the relay
//! datagrams on this router's direct connections to its relays.
//!
//! Sending to a relayed peer's synthetic address ([`Paths`]) wraps the UDP payload in a relay
//! datagram to that peer and sends it on the connection to the peer's relay. Receiving yields
//! the payloads that [`super::Hub`] took out of relay datagrams from relayed peers, each from
//! its peer's synthetic address. Like a real UDP socket it never fails a send: what cannot go
//! out is dropped and counted, and QUIC recovers as from any loss.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use skyvine_core::fib::DropReason;
use skyvine_core::relay;
use skyvine_tables::SiteId;
use tokio::sync::mpsc;

use super::Paths;
use crate::dataplane::{Counters, PeerTable};

/// The address the relay socket says it is bound to (TEST-NET-1: never a real peer).
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 1);

/// A payload of the inner connection from a relayed peer, as the socket hands it to QUIC.
#[derive(Debug)]
pub struct Inbound {
    /// The peer's synthetic address.
    pub from: SocketAddr,
    pub payload: Bytes,
}

/// The virtual socket under the relay endpoint.
pub struct RelaySocket {
    me: SiteId,
    paths: Arc<Paths>,
    peers: Arc<PeerTable>,
    counters: Arc<Counters>,
    /// Filled by [`super::Hub`]; read only by the endpoint's driver.
    inbound: Mutex<mpsc::Receiver<Inbound>>,
}

impl fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySocket")
            .field("me", &self.me)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl RelaySocket {
    pub fn new(
        me: SiteId,
        paths: Arc<Paths>,
        peers: Arc<PeerTable>,
        counters: Arc<Counters>,
        inbound: mpsc::Receiver<Inbound>,
    ) -> Self {
        RelaySocket {
            me,
            paths,
            peers,
            counters,
            inbound: Mutex::new(inbound),
        }
    }

    /// Sends one UDP payload to the relayed peer at `destination`; drops (and counts) it when
    /// that cannot be done.
    fn send_one(&self, destination: SocketAddr, payload: &[u8]) {
        if let Err(reason) = self.try_send_one(destination, payload) {
            tracing::trace!(%destination, reason = reason.name(), "relay socket drop");
            self.counters.add_drops(reason, 1);
        }
    }

    fn try_send_one(&self, destination: SocketAddr, payload: &[u8]) -> Result<(), DropReason> {
        let path = self.paths.by_addr(destination).ok_or(DropReason::NoRoute)?;
        let conn = self.peers.get(&path.relay).ok_or(DropReason::PeerDown)?;
        let mut datagram =
            Vec::with_capacity(relay::header_len(&self.me, &path.peer) + payload.len());
        relay::emit_header(&mut datagram, relay::DEFAULT_NETWORK, &self.me, &path.peer);
        datagram.extend_from_slice(payload);
        conn.send_datagram(datagram.into())
            .map_err(super::send_error)
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // One datagram per transmit (max_transmit_segments is 1); split a batch all the same.
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for payload in transmit.contents.chunks(segment) {
            self.send_one(transmit.destination, payload);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbound = match self.inbound.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut filled = 0;
        for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()) {
            let next = if filled == 0 {
                match inbound.poll_recv(cx) {
                    Poll::Ready(Some(next)) => next,
                    Poll::Ready(None) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the relay hub is gone",
                        )))
                    }
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match inbound.try_recv() {
                    Ok(next) => next,
                    Err(_) => break,
                }
            };
            let len = next.payload.len().min(buf.len());
            if let (Some(to), Some(from)) = (buf.get_mut(..len), next.payload.get(..len)) {
                to.copy_from_slice(from);
            }
            *meta = RecvMeta {
                addr: next.from,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(LOCAL)
    }

    fn may_fragment(&self) -> bool {
        // A payload too large for a relay datagram is dropped, never fragmented.
        false
    }
}

/// Sends never wait: a relay datagram that does not fit the outer connection's buffer
/// replaces its oldest queued one, as quinn does for every datagram.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
