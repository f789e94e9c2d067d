//! The quinn datagram ceiling: how fast the routers' own QUIC transport carries datagrams
//! between two hosts when nothing else is in the way (no TUN device, no FIB, no inner TCP).
//! `netns-lab/bench-throughput.sh` runs it between the two router namespaces and prints the
//! result next to the tunnel's throughput, so a report can say how close the data plane is to
//! its transport's limit.
//!
//! Both ends use the router's transport settings ([`pki::transport_config`] +
//! [`dataplane::tune_transport`]), its WAN socket setup ([`dataplane::bind_wan_socket`]), its
//! runtime layout and allocator settings ([`dataplane::runtime`],
//! [`dataplane::tune_allocator`]) and mutual TLS with the certificates in `--pki-dir`
//! (`ca.pem`, `SITE.pem`, `SITE.key`, e.g. a lab's). The sender offers datagrams of `--size`
//! bytes as fast as quinn takes them (`send_datagram_wait`: it waits for room in the send
//! buffer instead of dropping, so the rate is what quinn's packetisation, encryption,
//! congestion control and UDP GSO sustain). The receiver counts what arrives and prints one
//! line:
//!
//! `ceiling: received D datagrams, B payload bytes in S s: G Gbit/s payload`
//!
//!   datagram_ceiling recv --site b --bind 100.64.0.2:7401 --pki-dir DIR
//!   datagram_ceiling send --site a --peer-site b --bind 100.64.0.1:7401 \
//!       --connect 100.64.0.2:7401 --pki-dir DIR --seconds 10
//!
//! The same transport's round trip: `echo` returns each datagram on its connection as it
//! arrives; `ping` sends one datagram of an ICMP echo's size (84 bytes) every `--interval-ms`,
//! waits for it to come back, and prints the median:
//!
//! `ceiling: quinn echo N round trips, median R us`
//!
//! Less an ICMP ping between the same namespaces, that is one turnaround through quinn and the
//! runtime at the echo (woken, receive, send) plus quinn's send and receive at the pinger: a
//! reference for the transport next to `wakeup_floor`'s bare socket, not a floor (a skyvine
//! router crossing has measured below it).
//!
//!   datagram_ceiling echo --site b --bind 100.64.0.2:7401 --pki-dir DIR
//!   datagram_ceiling ping --site a --peer-site b --bind 100.64.0.1:7401 \
//!       --connect 100.64.0.2:7401 --pki-dir DIR --count 200

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use skyvine_router::{dataplane, pki};
use skyvine_tables::SiteId;

#[path = "common/rtt.rs"]
mod rtt;
use rtt::{Rtts, ANSWER_TIMEOUT};

#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Accept one connection and count the datagrams it carries until it closes.
    Recv {
        #[command(flatten)]
        common: Common,
        /// Give up when no sender connected within this many seconds.
        #[arg(long, default_value_t = 20)]
        accept_timeout_s: u64,
    },
    /// Connect and send datagrams as fast as quinn allows for `--seconds`.
    Send {
        #[command(flatten)]
        common: Common,
        /// The receiver's site id (its certificate must name it).
        #[arg(long)]
        peer_site: SiteId,
        /// The receiver's address.
        #[arg(long)]
        connect: SocketAddr,
        /// How long to send.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Payload bytes per datagram (default: the lab's TUN MTU, a full tunnelled packet).
        #[arg(long, default_value_t = 1380)]
        size: usize,
    },
    /// Accept one connection and send back each datagram it carries, until it closes.
    Echo {
        #[command(flatten)]
        common: Common,
        /// Give up when no pinger connected within this many seconds.
        #[arg(long, default_value_t = 20)]
        accept_timeout_s: u64,
    },
    /// Connect, then time `--count` round trips of one datagram each through an `echo`.
    Ping {
        #[command(flatten)]
        common: Common,
        /// The echo's site id (its certificate must name it).
        #[arg(long)]
        peer_site: SiteId,
        /// The echo's address.
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 200)]
        count: u32,
        /// Pause between round trips, so that the machine is idle when each one starts.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
    },
}

/// Payload of each `ping` datagram: the size of the benchmark's ICMP echo packets (20-byte IPv4
/// header, 8-byte ICMP header, 56 bytes of data), as the tunnel would carry them.
const PING_SIZE: usize = 84;

#[derive(clap::Args, Debug)]
struct Common {
    /// This end's site id (selects SITE.pem and SITE.key in --pki-dir).
    #[arg(long)]
    site: SiteId,
    /// UDP address to bind.
    #[arg(long)]
    bind: SocketAddr,
    /// Directory holding ca.pem, SITE.pem and SITE.key.
    #[arg(long)]
    pki_dir: PathBuf,
    /// TUN MTU the transport is tuned for (as the router's `tun.mtu`).
    #[arg(long, default_value_t = 1380)]
    mtu: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dataplane::tune_allocator();
    dataplane::runtime()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.role {
        Role::Recv {
            common,
            accept_timeout_s,
        } => {
            let (_endpoint, conn) = accept(&common, accept_timeout_s, "sender").await?;
            receive(&conn).await
        }
        Role::Send {
            common,
            peer_site,
            connect,
            seconds,
            size,
        } => {
            let (endpoint, conn) = dial(&common, &peer_site, connect, "receiver").await?;
            send(&conn, Duration::from_secs(seconds), size).await?;
            endpoint.wait_idle().await;
            Ok(())
        }
        Role::Echo {
            common,
            accept_timeout_s,
        } => {
            let (_endpoint, conn) = accept(&common, accept_timeout_s, "pinger").await?;
            while let Ok(datagram) = conn.read_datagram().await {
                conn.send_datagram(datagram)
                    .context("sending a datagram back")?;
            }
            Ok(())
        }
        Role::Ping {
            common,
            peer_site,
            connect,
            count,
            interval_ms,
        } => {
            let (endpoint, conn) = dial(&common, &peer_site, connect, "echo").await?;
            ping(&conn, count, Duration::from_millis(interval_ms)).await?;
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            Ok(())
        }
    }
}

/// Waits up to `timeout_s` for one connection (from the `peer` role) and completes it.
async fn accept(
    common: &Common,
    timeout_s: u64,
    peer: &str,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let (endpoint, _) = endpoint(common)?;
    let incoming = tokio::time::timeout(Duration::from_secs(timeout_s), endpoint.accept())
        .await
        .with_context(|| format!("no {peer} connected in time"))?
        .context("endpoint closed")?;
    let conn = incoming
        .await
        .with_context(|| format!("handshake with the {peer}"))?;
    Ok((endpoint, conn))
}

/// Connects to the `peer` role at `connect`, whose certificate must name `peer_site`.
async fn dial(
    common: &Common,
    peer_site: &SiteId,
    connect: SocketAddr,
    peer: &str,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let (endpoint, identity) = endpoint(common)?;
    let client = identity.client_config(transport(common.mtu))?;
    let conn = endpoint
        .connect_with(client, connect, &pki::server_name(peer_site))?
        .await
        .with_context(|| format!("handshake with the {peer}"))?;
    Ok((endpoint, conn))
}

async fn ping(conn: &quinn::Connection, count: u32, interval: Duration) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let mut rtts = Rtts::default();
    for seq in 0..count {
        tokio::time::sleep(interval).await;
        let mut payload = seq.to_be_bytes().to_vec();
        payload.resize(PING_SIZE, 0);
        let sent = Instant::now();
        conn.send_datagram(payload.into())
            .context("sending a datagram")?;
        // Skip late answers to earlier datagrams (their sequence number is not ours).
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                let datagram = conn.read_datagram().await?;
                if datagram.get(..4) == Some(&seq.to_be_bytes()[..]) {
                    return Ok::<_, quinn::ConnectionError>(());
                }
            }
        })
        .await;
        match answer {
            Ok(Ok(())) => rtts.answered(sent.elapsed()),
            Ok(Err(error)) => return Err(error).context("the echo's connection"),
            Err(_) => rtts.lost(),
        }
    }
    rtts.print("ceiling: quinn echo", count)
}

fn transport(mtu: u16) -> Arc<quinn::TransportConfig> {
    let mut transport = pki::transport_config();
    dataplane::tune_transport(&mut transport, mtu);
    Arc::new(transport)
}

fn endpoint(common: &Common) -> anyhow::Result<(quinn::Endpoint, pki::Identity)> {
    let dir = &common.pki_dir;
    let identity = pki::Identity::load(
        &dir.join("ca.pem"),
        &dir.join(format!("{}.pem", common.site)),
        &dir.join(format!("{}.key", common.site)),
        &common.site,
    )?;
    let socket = dataplane::bind_wan_socket(common.bind)
        .with_context(|| format!("binding {}", common.bind))?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(identity.server_config(transport(common.mtu))?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok((endpoint, identity))
}

async fn send(conn: &quinn::Connection, duration: Duration, size: usize) -> anyhow::Result<()> {
    let max = conn
        .max_datagram_size()
        .context("the receiver does not take datagrams")?;
    if size == 0 || size > max {
        bail!("--size {size} must be between 1 and the connection's datagram limit {max}");
    }
    let payload = Bytes::from(vec![0x45; size]);
    let deadline = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        // Check the clock once per 64 datagrams; each clone shares the one payload buffer.
        for _ in 0..64 {
            conn.send_datagram_wait(payload.clone())
                .await
                .context("sending a datagram")?;
            sent += 1;
        }
    }
    // Let the queue drain before closing (the receiver stops counting at the close).
    let drain = Instant::now() + Duration::from_secs(2);
    while conn.datagram_send_buffer_space() < dataplane::DATAGRAM_SEND_BUFFER
        && Instant::now() < drain
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    eprintln!("ceiling: sent {sent} datagrams of {size} bytes");
    conn.close(0u32.into(), b"done");
    Ok(())
}

async fn receive(conn: &quinn::Connection) -> anyhow::Result<()> {
    let mut datagrams = 0u64;
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while let Ok(datagram) = conn.read_datagram().await {
        last = Instant::now();
        first.get_or_insert(last);
        datagrams += 1;
        bytes += datagram.len() as u64;
    }
    let Some(first) = first else {
        bail!("the sender closed before any datagram arrived");
    };
    let seconds = last.duration_since(first).as_secs_f64();
    if seconds <= 0.0 {
        bail!("only one datagram arrived");
    }
    println!(
        "ceiling: received {datagrams} datagrams, {bytes} payload bytes in {seconds:.3} s: \
         {:.3} Gbit/s payload",
        bytes as f64 * 8.0 / seconds / 1e9
    );
    Ok(())
}
