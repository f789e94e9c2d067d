//! Frames in, events out: the [`FrameSource`] trait that the Linux socket and an in-memory
//! fake implement, and [`ArpEvents`] that classifies what a source delivers and counts it.
//! No IO here: the fake lets tests without root drive the same code the daemon runs.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::wire::{classify, ArpEvent, MIN_FRAME_LEN};

/// Where a received frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Bytes written into the caller's buffer.
    pub len: usize,
    /// Index of the interface the frame arrived on.
    pub ifindex: u32,
}

/// Something that delivers whole Ethernet frames received on a LAN (never frames we sent).
pub trait FrameSource {
    /// Waits for the next frame and copies it into `buf` (a longer frame is cut to `buf`).
    fn recv_frame<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<FrameMeta>> + Send + 'a;
}

/// A classified frame and the interface it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturedEvent {
    pub ifindex: u32,
    pub event: ArpEvent,
}

/// What [`ArpEvents`] has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    /// Frames the source delivered, malformed ones included.
    pub received: u64,
    /// Frames dropped because [`classify`] refused them (truncated, not Ethernet/IPv4 ARP,
    /// unknown operation).
    pub malformed: u64,
}

/// Turns a [`FrameSource`] into a stream of [`CapturedEvent`]s, dropping and counting frames
/// that do not parse.
#[derive(Debug)]
pub struct ArpEvents<S> {
    source: S,
    buf: Box<[u8]>,
    counters: CaptureCounters,
}

/// Receive buffer size: ARP frames are 42-60 bytes; anything longer is not ARP anyway.
const RECV_BUF_LEN: usize = 256;

impl<S: FrameSource> ArpEvents<S> {
    pub fn new(source: S) -> Self {
        ArpEvents {
            source,
            buf: vec![0; RECV_BUF_LEN.max(MIN_FRAME_LEN)].into_boxed_slice(),
            counters: CaptureCounters::default(),
        }
    }

    /// The next frame that classifies. Errors are the source's (the socket's), never a
    /// frame's: malformed frames are counted, logged at debug and skipped.
    pub async fn next(&mut self) -> io::Result<CapturedEvent> {
        loop {
            let meta = self.source.recv_frame(&mut self.buf).await?;
            self.counters.received += 1;
            let frame = self.buf.get(..meta.len).unwrap_or(&[]);
            match classify(frame) {
                Ok(event) => {
                    tracing::trace!(ifindex = meta.ifindex, ?event, "arp frame");
                    return Ok(CapturedEvent {
                        ifindex: meta.ifindex,
                        event,
                    });
                }
                Err(error) => {
                    self.counters.malformed += 1;
                    tracing::debug!(ifindex = meta.ifindex, len = meta.len, %error, "dropped malformed frame");
                }
            }
        }
    }

    pub fn counters(&self) -> CaptureCounters {
        self.counters
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn into_source(self) -> S {
        self.source
    }
}

/// An in-memory [`FrameSource`] for tests: frames pushed on one clone are received on another.
/// After [`FakeFrameSource::close`] and once drained, `recv_frame` fails with `UnexpectedEof`.
#[derive(Debug, Clone, Default)]
pub struct FakeFrameSource {
    inner: Arc<FakeInner>,
}

#[derive(Debug, Default)]
struct FakeInner {
    queue: Mutex<FakeQueue>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct FakeQueue {
    frames: VecDeque<(Vec<u8>, u32)>,
    closed: bool,
}

impl FakeFrameSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame as if it arrived on interface `ifindex`.
    pub fn push(&self, frame: &[u8], ifindex: u32) {
        self.lock().frames.push_back((frame.to_vec(), ifindex));
        self.inner.notify.notify_one();
    }

    /// No more frames will come: receivers get `UnexpectedEof` once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeQueue> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl FrameSource for FakeFrameSource {
    async fn recv_frame<'a>(&'a self, buf: &'a mut [u8]) -> io::Result<FrameMeta> {
        loop {
            let next = {
                let mut queue = self.lock();
                match queue.frames.pop_front() {
                    Some(frame) => Some(Ok(frame)),
                    None if queue.closed => Some(Err(())),
                    None => None,
                }
            };
            match next {
                Some(Ok((frame, ifindex))) => {
                    let len = frame.len().min(buf.len());
                    for (dst, src) in buf.iter_mut().zip(&frame) {
                        *dst = *src;
                    }
                    return Ok(FrameMeta { len, ifindex });
                }
                Some(Err(())) => {
                    // Wake the next waiter too: the source stays closed.
                    self.inner.notify.notify_one();
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                None => self.inner.notify.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::samples::QEMU_RARP;
    use crate::wire::EventKind;
    use skyvine_tables::MacAddr;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn drops_and_counts_malformed_frames() {
        runtime().block_on(async {
            let fake = FakeFrameSource::new();
            fake.push(&QEMU_RARP[..20], 7); // truncated
            fake.push(&[0u8; 3], 7); // not even Ethernet
            let mut ipv4 = QEMU_RARP;
            ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
            fake.push(&ipv4, 7);
            fake.push(&QEMU_RARP, 7);
            fake.close();

            let mut events = ArpEvents::new(fake);
            let got = events.next().await.unwrap();
            assert_eq!(got.ifindex, 7);
            assert_eq!(
                got.event.kind,
                EventKind::RarpAnnounce {
                    mac: MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
                }
            );
            assert_eq!(
                events.counters(),
                CaptureCounters {
                    received: 4,
                    malformed: 3
                }
            );
            let end = events.next().await.unwrap_err();
            assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
        });
    }

    #[test]
    fn waits_for_frames_pushed_later() {
        runtime().block_on(async {
            let fake = FakeFrameSource::new();
            let pusher = fake.clone();
            let mut events = ArpEvents::new(fake);
            let push = async move {
                tokio::task::yield_now().await;
                pusher.push(&QEMU_RARP, 3);
            };
            let (got, ()) = tokio::join!(events.next(), push);
            assert_eq!(got.unwrap().ifindex, 3);
            assert_eq!(events.counters().received, 1);
        });
    }
}
