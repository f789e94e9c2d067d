//! QUIC settings the data plane needs to be fast: datagram buffers deep enough for quinn to
//! coalesce many datagrams into one UDP GSO send, an initial path MTU that fits a whole TUN
//! packet from the first packet on, and large UDP socket buffers.
//!
//! Measured and left at quinn's defaults (`netns-lab/bench-throughput.sh` with `--variant`
//! rows, and the `datagram_ceiling` program run alternately with each setting, 3 runs each, on
//! the shared 2-core machine at load average 4-6; throughput varied by up to 25% from run to
//! run, so the router CPU seconds per GB and the ceiling are the figures to go by):
//! - ACK frequency (`AckFrequencyConfig`, the peer ACKs every 9th or 33rd ack-eliciting packet
//!   instead of every 2nd): no gain to take. The receiving router already made only 2.5 k
//!   sendmsg/s in all (its ACKs included) while it received ~136 k datagrams/s (1507 Mbit/s of
//!   1380-byte packets; syscalls counted with perf stat on the syscall tracepoints). Router CPU
//!   per GB rose (3.74 / 3.52 s with 1 / 4 streams by default; 3.84 / 4.67 with threshold 8;
//!   4.06 / 4.42 with threshold 32) and the ceiling fell (2.59, 2.97, 3.81 Gbit/s by default
//!   against 1.55, 1.61, 2.81 with threshold 8).
//! - Congestion controller: BBR 3.55 / 3.80 CPU s per GB, within the noise of Cubic's; the
//!   ceiling was lower with BBR (1.42, 2.48, 3.37 Gbit/s) and NewReno (2.03, 2.58, 3.32) than
//!   with Cubic in each of the three alternating rounds. Cubic stays (`pki::transport_config`).
//! - What does bound the transport: quinn 0.11 hands the socket at most 10 datagrams per GSO
//!   send (`MAX_TRANSMIT_SEGMENTS` in quinn's `connection.rs`, not configurable; upstream main
//!   still has 10). The sending router made 14.7 k sendmsg/s, 9.3 datagrams each, and sendmsg
//!   was 23% of its profile. A quinn patched to 40 (an experiment, not used here) cut that to
//!   14% at ~30 datagrams per send and the router CPU per GB by 9-24% in three of four
//!   comparisons (+1% in the fourth), but once failed a ceiling run with "datagram too
//!   large" (quinn's datagram limit fell below 1380 bytes mid-run, which the data plane would
//!   count as drops): see issue 11's notes before taking it up.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Bytes a QUIC 1-RTT packet adds around an IPv4 packet from the TUN device at most: header
/// byte, a connection id of up to 20 bytes, a 4-byte packet number, the 16-byte AEAD tag, the
/// DATAGRAM frame's type and length (quinn budgets 9 bytes for these), and our own 3-byte
/// datagram header (kind and network id, [`skyvine_core::datagram`]).
pub const DATAGRAM_OVERHEAD: u16 = 1 + 20 + 4 + 16 + 9 + 3;
const _: () = assert!(skyvine_core::datagram::HEADER_LEN == 3);

/// UDP socket send and receive buffer size for the WAN socket.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Outgoing datagrams quinn may queue: enough for a few 64 KB super-segments, so a send
/// burst fills whole GSO batches without dropping the oldest datagrams.
pub const DATAGRAM_SEND_BUFFER: usize = 2 << 20;
/// Incoming datagrams quinn may queue before the peer reader drains them.
const DATAGRAM_RECEIVE_BUFFER: usize = 4 << 20;
/// Upper bound for path-MTU discovery: the largest UDP payload of IPv4 on a 1500-byte link.
const MTU_DISCOVERY_UPPER_BOUND: u16 = 1472;

/// Applies the data plane's settings to a transport config used for router connections:
/// datagram buffers, and an initial UDP payload size that carries a full `tun_mtu` packet as
/// a datagram (quinn falls back to 1200 and probes again if the path turns out smaller).
pub fn tune_transport(config: &mut quinn::TransportConfig, tun_mtu: u16) {
    let initial_mtu = tun_mtu.saturating_add(DATAGRAM_OVERHEAD).max(1200);
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(initial_mtu.max(MTU_DISCOVERY_UPPER_BOUND));
    config
        .initial_mtu(initial_mtu)
        .mtu_discovery_config(Some(discovery))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER));
}

/// A UDP socket bound to `addr` with [`SOCKET_BUFFER`]-sized buffers, for
/// `quinn::Endpoint::new`. As root the buffers are forced past `net.core.{r,w}mem_max`;
/// otherwise they are capped by those limits.
pub fn bind_wan_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    for (force, fallback) in [
        (
            libc::SO_SNDBUFFORCE,
            socket2::Socket::set_send_buffer_size as BufferSetter,
        ),
        (libc::SO_RCVBUFFORCE, socket2::Socket::set_recv_buffer_size),
    ] {
        if force_buffer(&socket, force, SOCKET_BUFFER).is_err() {
            fallback(&socket, SOCKET_BUFFER)?;
        }
    }
    tracing::debug!(
        %addr,
        send = socket.send_buffer_size()?,
        recv = socket.recv_buffer_size()?,
        "WAN socket buffers"
    );
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

type BufferSetter = fn(&socket2::Socket, usize) -> io::Result<()>;

/// Sets a buffer size with one of the `*BUFFORCE` options (needs CAP_NET_ADMIN).
fn force_buffer(socket: &socket2::Socket, option: libc::c_int, size: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(size).map_err(|_| io::ErrorKind::InvalidInput)?;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: the descriptor is open for the lifetime of `socket`, and the option value points
    // to a live c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
