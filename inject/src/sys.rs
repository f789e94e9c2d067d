//! The Linux side: [`Injector`], an `AF_PACKET` socket bound to one interface that sends
//! whole Ethernet frames and receives nothing.

use std::ffi::c_char;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd};

use skyvine_capture::sys::socket;
use skyvine_tables::MacAddr;

use crate::sink::FrameSink;

/// Why [`Injector::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("interface {ifname:?}: {source}")]
    Interface {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("packet socket on {ifname:?}: {source}")]
    Socket {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the hardware address of {ifname:?}: {source}")]
    HardwareAddress {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("interface {ifname:?} is not Ethernet (ARPHRD type {hatype})")]
    NotEthernet { ifname: String, hatype: u16 },
}

/// Sends frames on one Ethernet interface. Needs `CAP_NET_RAW`. The socket is bound with
/// protocol 0, so the kernel queues no received frames on it.
#[derive(Debug)]
pub struct Injector {
    fd: OwnedFd,
    ifindex: u32,
    mac: MacAddr,
}

impl Injector {
    /// Opens the socket on `ifname` and reads the interface's MAC (`SIOCGIFHWADDR`) once.
    pub fn open(ifname: &str) -> Result<Self, InjectError> {
        let ifindex = socket::interface_index(ifname).map_err(|source| InjectError::Interface {
            ifname: ifname.to_owned(),
            source,
        })?;
        let fd = socket::open_packet_socket(ifindex, 0).map_err(|source| InjectError::Socket {
            ifname: ifname.to_owned(),
            source,
        })?;
        let (hatype, octets) =
            hardware_address(&fd, ifname).map_err(|source| InjectError::HardwareAddress {
                ifname: ifname.to_owned(),
                source,
            })?;
        if hatype != libc::ARPHRD_ETHER {
            return Err(InjectError::NotEthernet {
                ifname: ifname.to_owned(),
                hatype,
            });
        }
        let mac = MacAddr(octets);
        tracing::debug!(ifname, ifindex, %mac, "injector open");
        Ok(Injector { fd, ifindex, mac })
    }

    /// Sends one whole Ethernet frame; the ethertype and destination are read from its
    /// header. Fails with `InvalidInput` for a frame shorter than the header and with
    /// `WouldBlock` (never blocks) when the socket's send buffer is full.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let (dst, ethertype) = match (frame.get(0..6), frame.get(12..14)) {
            (Some(dst), Some(&[hi, lo])) => (dst, u16::from_be_bytes([hi, lo])),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "frame shorter than an Ethernet header",
                ))
            }
        };
        let mut dst_mac = [0u8; 6];
        dst_mac.copy_from_slice(dst);
        let result = socket::send_frame(&self.fd, self.ifindex, ethertype, dst_mac, frame);
        tracing::trace!(
            ifindex = self.ifindex,
            len = frame.len(),
            ok = result.is_ok(),
            "frame sent"
        );
        result
    }

    /// The interface's MAC address, as read when the injector was opened.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl FrameSink for Injector {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        Injector::send(self, frame)
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

/// `SIOCGIFHWADDR`: the interface's ARP hardware type and first six address bytes.
fn hardware_address(fd: &OwnedFd, ifname: &str) -> io::Result<(u16, [u8; 6])> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    // The name was checked by interface_index: at most 15 bytes, so a NUL stays at the end.
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as c_char;
    }
    // SAFETY: `req` is a valid ifreq that the kernel fills for SIOCGIFHWADDR.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR succeeded, so the union holds `ifru_hwaddr`.
    let hwaddr = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hwaddr.sa_data) {
        *dst = src as u8;
    }
    Ok((hwaddr.sa_family, mac))
}
