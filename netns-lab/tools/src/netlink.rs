//! Just enough rtnetlink to move a bridge port (`ip link set PORT nomaster` / `master BR`) in
//! one process with microsecond timing, and network-namespace switching, for the lab's
//! migration. The message layout is a pure function; the socket is a thin wrapper.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const IFLA_MASTER: u16 = 10;
const HEADER_LEN: usize = 16;
const IFINFO_LEN: usize = 16;

/// The bytes of an RTM_NEWLINK request that sets (or, with 0, clears) `ifindex`'s master.
pub fn set_master_request(seq: u32, ifindex: i32, master: u32) -> [u8; 40] {
    let mut msg = [0u8; 40];
    msg[0..4].copy_from_slice(&40u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel. ifinfomsg: family AF_UNSPEC, type 0, index, flags 0, change 0.
    msg[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&ifindex.to_ne_bytes());
    const ATTR: usize = HEADER_LEN + IFINFO_LEN;
    msg[ATTR..ATTR + 2].copy_from_slice(&8u16.to_ne_bytes());
    msg[ATTR + 2..ATTR + 4].copy_from_slice(&IFLA_MASTER.to_ne_bytes());
    msg[ATTR + 4..ATTR + 8].copy_from_slice(&master.to_ne_bytes());
    msg
}

/// Reads the acknowledgement for `seq` from a netlink reply: Ok for error code 0.
pub fn parse_ack(reply: &[u8], seq: u32) -> io::Result<()> {
    let u32_at = |at: usize| {
        reply
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_ne_bytes)
    };
    let kind = reply
        .get(4..6)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_ne_bytes);
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply");
    if kind != Some(NLMSG_ERROR) || u32_at(8) != Some(seq) {
        return Err(malformed());
    }
    let code = u32_at(HEADER_LEN).ok_or_else(malformed)? as i32;
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

/// A NETLINK_ROUTE socket in the network namespace current when it was opened.
#[derive(Debug)]
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RouteSocket {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(RouteSocket { fd, seq: 1 })
    }

    /// Sets `ifindex`'s master (0 = no master) and waits for the kernel's acknowledgement.
    pub fn set_master(&mut self, ifindex: i32, master: u32) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let msg = set_master_request(self.seq, ifindex, master);
        // SAFETY: `msg` is valid for reads of its length; the destination defaults to the
        // kernel for an unbound netlink socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 1024];
        // SAFETY: `reply` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                reply.as_mut_ptr().cast(),
                reply.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        parse_ack(reply.get(..n.unsigned_abs()).unwrap_or_default(), self.seq)
    }
}

/// Switches the calling thread into the network namespace at `path` (e.g.
/// /run/netns/NAME or /proc/self/ns/net). Sockets opened before keep their namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    // SAFETY: setns on a namespace file we hold open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The current network namespace, to return to with `enter_netns_file`.
pub fn current_netns() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// Switches back to a namespace held open by `current_netns`.
pub fn enter_netns_file(file: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace file descriptor we own.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_master_request_layout() {
        let msg = set_master_request(7, 5, 3);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 40);
        assert_eq!(
            u16::from_ne_bytes(msg[4..6].try_into().unwrap()),
            RTM_NEWLINK
        );
        assert_eq!(u16::from_ne_bytes(msg[6..8].try_into().unwrap()), 0x5);
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(msg[16], 0, "AF_UNSPEC");
        assert_eq!(i32::from_ne_bytes(msg[20..24].try_into().unwrap()), 5);
        assert_eq!(u16::from_ne_bytes(msg[32..34].try_into().unwrap()), 8);
        assert_eq!(
            u16::from_ne_bytes(msg[34..36].try_into().unwrap()),
            IFLA_MASTER
        );
        assert_eq!(u32::from_ne_bytes(msg[36..40].try_into().unwrap()), 3);
    }

    #[test]
    fn acks_and_errors_parse() {
        let mut ack = [0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&9u32.to_ne_bytes());
        assert!(parse_ack(&ack, 9).is_ok());
        assert!(parse_ack(&ack, 8).is_err());
        ack[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        let err = parse_ack(&ack, 9).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
        assert!(parse_ack(&ack[..10], 9).is_err());
    }
}
