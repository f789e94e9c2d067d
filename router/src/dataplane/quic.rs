//! QUIC settings the data plane needs to be fast: datagram buffers deep enough for quinn to
//! coalesce many datagrams into one UDP GSO send, an initial path MTU that fits a whole TUN
//! packet from the first packet on, and large UDP socket buffers.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Bytes a QUIC 1-RTT packet adds around a datagram payload at most: header byte, a
/// connection id of up to 20 bytes, a 4-byte packet number, the 16-byte AEAD tag and the
/// DATAGRAM frame's type and length (quinn budgets 9 bytes for these).
pub const DATAGRAM_OVERHEAD: u16 = 1 + 20 + 4 + 16 + 9;

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
