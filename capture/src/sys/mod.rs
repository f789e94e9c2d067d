//! The Linux side: [`ArpCapture`], one `AF_PACKET` socket per ethertype (ARP 0x0806 and RARP
//! 0x8035) bound to one interface, so the kernel hands user space those frames and nothing
//! else. No promiscuous mode: the sockets see what the interface receives anyway (broadcasts
//! and frames addressed to it), which is all ARP and RARP announcements are.

pub mod foreign;
pub mod socket;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::source::{FrameMeta, FrameSource};
use crate::wire::{ETHERTYPE_ARP, ETHERTYPE_RARP};

/// Why [`ArpCapture::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("interface {ifname:?}: {source}")]
    Interface {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("ArpCapture::open needs a tokio runtime with IO enabled")]
    NoRuntime,
    #[error("packet socket for ethertype {ethertype:#06x} on {ifname:?}: {source}")]
    Socket {
        ifname: String,
        ethertype: u16,
        #[source]
        source: io::Error,
    },
}

/// Receives the ARP and RARP frames arriving on one interface. Needs `CAP_NET_RAW` and a
/// tokio runtime with IO enabled. Frames this host sends (`PACKET_OUTGOING`) are skipped.
#[derive(Debug)]
pub struct ArpCapture {
    ifname: String,
    ifindex: u32,
    sockets: [AsyncFd<OwnedFd>; 2],
    /// Which socket to try first, alternating so a flood on one cannot starve the other.
    turn: AtomicUsize,
}

impl ArpCapture {
    /// Opens the two sockets on `ifname`. Must be called inside a tokio runtime with IO
    /// enabled (`enable_io`/`enable_all`).
    pub fn open(ifname: &str) -> Result<Self, CaptureError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CaptureError::NoRuntime);
        }
        let ifindex =
            socket::interface_index(ifname).map_err(|source| CaptureError::Interface {
                ifname: ifname.to_owned(),
                source,
            })?;
        let open = |ethertype: u16| {
            socket::open_packet_socket(ifindex, ethertype)
                .and_then(register)
                .map_err(|source| CaptureError::Socket {
                    ifname: ifname.to_owned(),
                    ethertype,
                    source,
                })
        };
        let sockets = [open(ETHERTYPE_ARP)?, open(ETHERTYPE_RARP)?];
        tracing::debug!(ifname, ifindex, "arp/rarp capture open");
        Ok(ArpCapture {
            ifname: ifname.to_owned(),
            ifindex,
            sockets,
            turn: AtomicUsize::new(0),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Waits for the next ARP or RARP frame received on the interface and copies it into
    /// `buf`; returns its length (cut to `buf.len()`).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_meta(buf).await.map(|meta| meta.len)
    }

    /// Like [`ArpCapture::recv`], also saying which interface the frame arrived on.
    pub async fn recv_meta(&self, buf: &mut [u8]) -> io::Result<FrameMeta> {
        std::future::poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<FrameMeta>> {
        let first = self.turn.fetch_add(1, Ordering::Relaxed) % 2;
        let [a, b] = &self.sockets;
        let order = if first == 0 { [a, b] } else { [b, a] };
        for sock in order {
            if let Poll::Ready(result) = poll_socket(sock, cx, buf) {
                return Poll::Ready(result);
            }
        }
        // Both sockets registered the waker before returning Pending.
        Poll::Pending
    }
}

/// Registers a packet socket with the tokio reactor for read readiness.
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is a valid open descriptor that the AsyncFd owns from here on, so
    // it stays open and `as_raw_fd` returns the same number until the AsyncFd is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
    registered.map_err(io::Error::from)
}

/// Reads one incoming frame from `sock` if one is queued; Pending (waker registered) if not.
fn poll_socket(
    sock: &AsyncFd<OwnedFd>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<FrameMeta>> {
    loop {
        let mut guard = match sock.poll_read_ready(cx) {
            Poll::Ready(Ok(guard)) => guard,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        match guard.try_io(|fd| socket::recv_packet(fd, buf)) {
            Ok(Ok(rx)) if rx.pkttype == libc::PACKET_OUTGOING => {
                tracing::trace!(ifindex = rx.ifindex, "skipped outgoing frame");
            }
            Ok(Ok(rx)) => {
                return Poll::Ready(Ok(FrameMeta {
                    len: rx.len.min(buf.len()),
                    ifindex: rx.ifindex,
                }))
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            // Readiness was cleared: poll again, which registers the waker.
            Err(_would_block) => {}
        }
    }
}

impl FrameSource for ArpCapture {
    async fn recv_frame<'a>(&'a self, buf: &'a mut [u8]) -> io::Result<FrameMeta> {
        self.recv_meta(buf).await
    }
}
