//! Thin, safe wrappers over the `AF_PACKET` system calls shared by capture and inject. Each
//! `unsafe` block is one system call on memory owned by the calling function.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The kernel's interface index for `ifname` (`if_nametoindex`).
pub fn interface_index(ifname: &str) -> io::Result<u32> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1 to 15 bytes",
        ));
    }
    let name = CString::new(ifname).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// A non-blocking, close-on-exec `AF_PACKET`/`SOCK_RAW` socket bound to interface `ifindex`
/// that receives only frames of `ethertype` (0 = receive nothing, for sending only). The
/// socket is created with protocol 0 and gets its protocol at `bind`, so frames of other
/// interfaces never slip in between the two calls. Promiscuous mode is never requested.
pub fn open_packet_socket(ifindex: u32, ethertype: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let addr = link_addr(ifindex, ethertype, None)?;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            sockaddr_ll_len(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// One received frame's length and the `sockaddr_ll` fields that matter to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub ifindex: u32,
    /// `PACKET_HOST`, `PACKET_BROADCAST`, ..., `PACKET_OUTGOING` (a copy of a frame sent on
    /// this host).
    pub pkttype: u8,
}

/// `recvfrom` on a packet socket. Returns `WouldBlock` when nothing is queued.
pub fn recv_packet(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    let mut addr_len = sockaddr_ll_len();
    // SAFETY: `buf` and `addr` are valid for writes of the lengths passed, for the whole call.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&raw mut addr).cast::<libc::sockaddr>(),
            &mut addr_len,
        )
    };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok(Received {
        len,
        ifindex: u32::try_from(addr.sll_ifindex).unwrap_or(0),
        pkttype: addr.sll_pkttype,
    })
}

/// Sends one whole Ethernet frame out of `ifindex` with `sendto`, telling the kernel its
/// ethertype and destination so the frame needs no parsing there.
pub fn send_frame(
    fd: &impl AsRawFd,
    ifindex: u32,
    ethertype: u16,
    dst: [u8; 6],
    frame: &[u8],
) -> io::Result<()> {
    let addr = link_addr(ifindex, ethertype, Some(dst))?;
    // SAFETY: `frame` is valid for reads of its length and `addr` is a valid sockaddr_ll of
    // the length passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast::<libc::sockaddr>(),
            sockaddr_ll_len(),
        )
    };
    match usize::try_from(n) {
        Err(_) => Err(io::Error::last_os_error()),
        Ok(sent) if sent == frame.len() => Ok(()),
        Ok(sent) => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", frame.len()),
        )),
    }
}

fn link_addr(ifindex: u32, ethertype: u16, dst: Option<[u8; 6]>) -> io::Result<libc::sockaddr_ll> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex;
    if let Some(dst) = dst {
        addr.sll_halen = 6;
        for (d, s) in addr.sll_addr.iter_mut().zip(dst) {
            *d = s;
        }
    }
    Ok(addr)
}

fn sockaddr_ll_len() -> libc::socklen_t {
    // sockaddr_ll is 20 bytes: always fits.
    mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t
}
