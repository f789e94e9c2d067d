//! Opens the LAN side for the daemon: the ARP/RARP capture and the frame injector, bridged to
//! the main loop by channels ([`LanPort`]).

use std::io;
use std::net::Ipv4Addr;

use anyhow::Context;
use skyvine_capture::source::ArpEvents;
use skyvine_capture::sys::foreign::ForeignFrames;
use skyvine_capture::sys::ArpCapture;
use skyvine_inject::sys::Injector;
use skyvine_inject::wire::FrameBytes;
use skyvine_tables::MacAddr;
use tokio::sync::{mpsc, watch};

use crate::daemon::{LanEvent, LanPort};
use skyvine_core::node::LanIdentity;

/// Events queued from the capture towards the main loop; beyond this, frames are dropped
/// (and counted) rather than letting a flood grow memory.
const EVENT_QUEUE: usize = 4096;
/// Frames queued towards the injector.
const FRAME_QUEUE: usize = 4096;

/// Opens capture and injection on `ifname` and starts their tasks. The router's LAN address is
/// `address` (`lan.address`, e.g. a virtual IP shared with a standby router), else the
/// interface's first IPv4 address.
pub fn open_lan(ifname: &str, address: Option<Ipv4Addr>) -> anyhow::Result<LanPort> {
    let injector = Injector::open(ifname)
        .with_context(|| format!("opening a packet socket to send on {ifname}"))?;
    let capture = ArpCapture::open(ifname)
        .with_context(|| format!("opening the ARP/RARP capture on {ifname}"))?;
    let foreign = ForeignFrames::open(ifname)
        .with_context(|| format!("opening the capture of frames to foreign MACs on {ifname}"))?;
    let ip = match address {
        Some(ip) => ip,
        None => interface_ipv4(ifname)?,
    };
    let identity = LanIdentity {
        mac: injector.mac(),
        ip,
    };
    tracing::info!(interface = ifname, mac = %identity.mac, %ip, "LAN capture open (ARP and RARP only, not promiscuous)");
    let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (foreign_macs, macs_rx) = watch::channel(Vec::new());
    let (frames, frame_rx) = mpsc::channel(FRAME_QUEUE);
    tokio::spawn(watch_foreign(foreign, macs_rx, event_tx.clone()));
    tokio::spawn(forward_arp(capture, event_tx));
    tokio::spawn(inject(injector, frame_rx));
    Ok(LanPort {
        identity,
        events,
        frames,
        foreign_macs,
    })
}

/// Keeps the foreign-MAC capture's filter on the MACs the main loop names, and passes the
/// frames it catches on (dropped when the main loop is behind: the next frame tells the same).
async fn watch_foreign(
    foreign: ForeignFrames,
    mut macs: watch::Receiver<Vec<MacAddr>>,
    events: mpsc::Sender<LanEvent>,
) {
    loop {
        tokio::select! {
            changed = macs.changed() => {
                if changed.is_err() {
                    return;
                }
                let macs = macs.borrow_and_update().clone();
                match foreign.set_destinations(&macs) {
                    Ok(()) => tracing::debug!(macs = macs.len(), "watching the LAN for frames to other sites' MACs"),
                    Err(error) => tracing::warn!(%error, "cannot update the foreign-MAC filter"),
                }
            }
            frame = foreign.recv() => match frame {
                Ok(frame) => {
                    if events.try_send(LanEvent::Foreign(frame)).is_err() && events.is_closed() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "capture of frames to foreign MACs failed");
                    return;
                }
            },
        }
    }
}

/// Passes captured ARP/RARP events to the main loop; a full queue drops them (counted, and
/// logged at each power of two) rather than letting a flood grow memory.
async fn forward_arp(capture: ArpCapture, events: mpsc::Sender<LanEvent>) {
    let mut captured = ArpEvents::new(capture);
    let mut dropped = 0u64;
    loop {
        match captured.next().await {
            Ok(frame) => {
                if events.try_send(LanEvent::Arp(frame.event)).is_err() {
                    if events.is_closed() {
                        return;
                    }
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(dropped, "LAN event queue full; ARP frames dropped");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "LAN capture failed");
                return;
            }
        }
    }
}

/// Sends the frames the main loop queues.
async fn inject(injector: Injector, mut frames: mpsc::Receiver<FrameBytes>) {
    while let Some(frame) = frames.recv().await {
        if let Err(error) = injector.send(&frame) {
            tracing::debug!(%error, "sending a frame on the LAN failed");
        }
    }
}

/// The first IPv4 address of `ifname`.
pub fn interface_ipv4(ifname: &str) -> anyhow::Result<Ipv4Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `addrs`; it is freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(io::Error::last_os_error()).context("listing interface addresses");
    }
    let mut found = None;
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a non-null node of the list returned by getifaddrs.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if name.to_bytes() == ifname.as_bytes() && family == libc::AF_INET {
            // SAFETY: the family is AF_INET, so the sockaddr is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            break;
        }
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found.with_context(|| {
        format!("interface {ifname} has no IPv4 address (the router's LAN address is needed)")
    })
}
