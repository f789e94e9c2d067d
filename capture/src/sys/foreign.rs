//! [`ForeignFrames`]: IPv4 frames on the LAN addressed to a MAC that lives at another site.
//!
//! A VM live-migrated without any announcement keeps sending to the MACs in its ARP cache: its
//! old gateway and old neighbours, which are not on this LAN. A switch floods such unknown
//! unicast frames, so the router's LAN interface receives them (as "other host" frames, without
//! promiscuous mode). A classic BPF filter attached to an `ETH_P_IP` packet socket lets the
//! kernel hand user space only frames whose Ethernet destination is in the given set, so
//! ordinary traffic never leaves the kernel.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use skyvine_tables::MacAddr;
use tokio::io::unix::AsyncFd;

use super::socket::{interface_index, recv_packet};
use super::CaptureError;

/// The IPv4 ethertype.
const ETH_P_IP: u16 = 0x0800;
/// Most destination MACs one filter matches (5 instructions each; the kernel allows 4096).
pub const MAX_FILTER_MACS: usize = 512;

/// An IPv4 frame sent to a foreign MAC: who sent it and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignFrame {
    pub eth_src: MacAddr,
    pub eth_dst: MacAddr,
    pub src_ip: Ipv4Addr,
}

impl ForeignFrame {
    /// Reads the Ethernet addresses and the IPv4 source of a frame; `None` if it is too short
    /// or not IPv4.
    pub fn parse(frame: &[u8]) -> Option<ForeignFrame> {
        let dst: [u8; 6] = frame.get(0..6)?.try_into().ok()?;
        let src: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
        let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
        let version = frame.get(14)? >> 4;
        if ethertype != ETH_P_IP || version != 4 {
            return None;
        }
        let ip: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
        Some(ForeignFrame {
            eth_src: MacAddr(src),
            eth_dst: MacAddr(dst),
            src_ip: Ipv4Addr::from(ip),
        })
    }
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

/// A filter accepting frames whose Ethernet destination is one of `macs` (at most
/// [`MAX_FILTER_MACS`]; the rest are ignored), rejecting everything else. Per MAC:
/// `ld [0]; jeq hi32 ? next : skip; ldh [4]; jeq lo16 ? next : skip; ret accept`.
pub fn destination_filter(macs: &[MacAddr]) -> Vec<BpfInsn> {
    let mut program = Vec::new();
    for mac in macs.iter().take(MAX_FILTER_MACS) {
        let o = mac.octets();
        let hi = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
        let lo = u32::from(u16::from_be_bytes([o[4], o[5]]));
        program.push(BpfInsn {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        });
        program.push(BpfInsn {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 3,
            k: hi,
        });
        program.push(BpfInsn {
            code: BPF_LD_H_ABS,
            jt: 0,
            jf: 0,
            k: 4,
        });
        program.push(BpfInsn {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 1,
            k: lo,
        });
        program.push(BpfInsn {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: 0xffff,
        });
    }
    program.push(BpfInsn {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: 0,
    });
    program
}

/// Runs a program built by [`destination_filter`] on a frame (what the kernel would do);
/// used by tests to check the program without a socket.
pub fn filter_accepts(program: &[BpfInsn], frame: &[u8]) -> bool {
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    while let Some(insn) = program.get(pc) {
        let k = usize::try_from(insn.k).unwrap_or(usize::MAX);
        match insn.code {
            BPF_LD_W_ABS => match frame
                .get(k..k.saturating_add(4))
                .and_then(|b| b.try_into().ok())
            {
                Some(word) => acc = u32::from_be_bytes(word),
                None => return false,
            },
            BPF_LD_H_ABS => match frame
                .get(k..k.saturating_add(2))
                .and_then(|b| b.try_into().ok())
            {
                Some(half) => acc = u32::from(u16::from_be_bytes(half)),
                None => return false,
            },
            BPF_JEQ_K => {
                let skip = if acc == insn.k { insn.jt } else { insn.jf };
                pc += usize::from(skip);
            }
            BPF_RET_K => return insn.k != 0,
            _ => return false,
        }
        pc += 1;
    }
    false
}

/// IPv4 frames arriving on one interface for a settable set of destination MACs.
#[derive(Debug)]
pub struct ForeignFrames {
    socket: AsyncFd<OwnedFd>,
}

impl ForeignFrames {
    /// Opens the socket on `ifname` with an empty set (nothing is delivered until
    /// [`ForeignFrames::set_destinations`]). Needs a tokio runtime with IO enabled.
    pub fn open(ifname: &str) -> Result<Self, CaptureError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CaptureError::NoRuntime);
        }
        let ifindex = interface_index(ifname).map_err(|source| CaptureError::Interface {
            ifname: ifname.to_owned(),
            source,
        })?;
        let socket_error = |source| CaptureError::Socket {
            ifname: ifname.to_owned(),
            ethertype: ETH_P_IP,
            source,
        };
        // Protocol 0 receives nothing until bind: attach the filter first, so no unfiltered
        // frame is ever queued.
        // SAFETY: plain system call with integer arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(socket_error(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach(&fd, &destination_filter(&[])).map_err(socket_error)?;
        bind(&fd, ifindex).map_err(socket_error)?;
        let socket = super::register(fd).map_err(socket_error)?;
        Ok(ForeignFrames { socket })
    }

    /// Replaces the set of destination MACs whose frames are delivered.
    pub fn set_destinations(&self, macs: &[MacAddr]) -> io::Result<()> {
        attach(self.socket.get_ref(), &destination_filter(macs))
    }

    /// The next delivered frame (frames that do not parse as IPv4 are skipped).
    pub async fn recv(&self) -> io::Result<ForeignFrame> {
        let mut buf = [0u8; 64];
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|fd| recv_packet(fd, &mut buf)) {
                Ok(Ok(received)) => {
                    // A frame longer than the buffer is truncated: its headers are all we read.
                    let len = received.len.min(buf.len());
                    if received.pkttype == libc::PACKET_OUTGOING {
                        continue;
                    }
                    if let Some(frame) = buf.get(..len).and_then(ForeignFrame::parse) {
                        return Ok(frame);
                    }
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }
}

fn attach(fd: &OwnedFd, program: &[BpfInsn]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut().cast::<libc::sock_filter>(),
    };
    // SAFETY: BpfInsn has the layout of sock_filter; `prog` points at `program`, which lives
    // for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            u32::try_from(std::mem::size_of::<libc::sock_fprog>()).unwrap_or(u32::MAX),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bind(fd: &OwnedFd, ifindex: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ETH_P_IP.to_be();
    addr.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(u32::MAX),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, src_ip: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[12..16].copy_from_slice(&src_ip);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn filter_accepts_exactly_the_listed_destinations() {
        let a = MacAddr([0x52, 0x54, 0, 0x77, 1, 0xfe]);
        let b = MacAddr([0x52, 0x54, 0, 0x77, 1, 0x02]);
        let near = MacAddr([0x52, 0x54, 0, 0x77, 1, 0xff]);
        let program = destination_filter(&[a, b]);
        let src = [0x52, 0x54, 0, 0x77, 2, 1];
        assert!(filter_accepts(
            &program,
            &frame(a.0, src, ETH_P_IP, [10, 77, 1, 1])
        ));
        assert!(filter_accepts(
            &program,
            &frame(b.0, src, ETH_P_IP, [10, 77, 1, 1])
        ));
        assert!(!filter_accepts(
            &program,
            &frame(near.0, src, ETH_P_IP, [10, 77, 1, 1])
        ));
        assert!(!filter_accepts(
            &program,
            &frame([0xff; 6], src, ETH_P_IP, [10, 77, 1, 1])
        ));
        assert!(!filter_accepts(
            &destination_filter(&[]),
            &frame(a.0, src, ETH_P_IP, [1, 2, 3, 4])
        ));
        assert!(!filter_accepts(&program, &a.0[..4]));
    }

    #[test]
    fn filter_size_is_bounded() {
        let macs: Vec<MacAddr> = (0..2000u32)
            .map(|i| {
                let b = i.to_be_bytes();
                MacAddr([2, 0, b[0], b[1], b[2], b[3]])
            })
            .collect();
        assert_eq!(destination_filter(&macs).len(), MAX_FILTER_MACS * 5 + 1);
    }

    #[test]
    fn parse_reads_addresses_and_refuses_non_ipv4() {
        let f = frame([1; 6], [2; 6], ETH_P_IP, [10, 77, 1, 1]);
        assert_eq!(
            ForeignFrame::parse(&f),
            Some(ForeignFrame {
                eth_src: MacAddr([2; 6]),
                eth_dst: MacAddr([1; 6]),
                src_ip: Ipv4Addr::new(10, 77, 1, 1)
            })
        );
        assert_eq!(
            ForeignFrame::parse(&frame([1; 6], [2; 6], 0x0806, [0; 4])),
            None
        );
        assert_eq!(ForeignFrame::parse(&f[..20]), None);
    }
}
