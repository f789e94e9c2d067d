//! One side of a two-site data-plane benchmark: a TUN device, a FIB for two sites, and one
//! QUIC connection to the other side. Used by `router/examples/dataplane-bench.sh`, which runs
//! two of these in network namespaces and measures iperf3 through them.
//!
//! The side given `--connect` dials; the other accepts. Certificates come from `--pki-dir`
//! (created with `skyvine_router::pki` by the accepting side if missing).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ipnetwork::Ipv4Network;
use skyvine_core::fib::FibSnapshot;
use skyvine_router::dataplane::{self, Counters, PeerTable};
use skyvine_router::fib::Fib;
use skyvine_router::pki;
use skyvine_tables::{Gndt, GndtEntry, Lndt, SiteId};

#[derive(Parser, Debug)]
struct Args {
    /// This side's site id.
    #[arg(long)]
    site: SiteId,
    /// The other side's site id.
    #[arg(long)]
    peer_site: SiteId,
    /// This site's prefix (also its LNDT).
    #[arg(long)]
    local: Ipv4Network,
    /// The other site's prefix.
    #[arg(long)]
    remote: Ipv4Network,
    /// UDP address to bind.
    #[arg(long)]
    bind: SocketAddr,
    /// Dial this address (otherwise accept).
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// Directory with ca.pem and <site>.pem/.key.
    #[arg(long)]
    pki_dir: PathBuf,
    #[arg(long, default_value = "skyvine0")]
    tun: String,
    #[arg(long, default_value_t = 1380)]
    mtu: u16,
    /// Congestion controller: cubic, bbr or newreno.
    #[arg(long, default_value = "cubic")]
    cc: String,
    /// Tokio worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Override the datagram send buffer (bytes).
    #[arg(long)]
    send_buffer: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let identity = load_identity(&args).await?;

    let mut transport = pki::transport_config();
    dataplane::tune_transport(&mut transport, args.mtu);
    match args.cc.as_str() {
        "cubic" => {}
        "bbr" => {
            transport
                .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
        "newreno" => {
            transport.congestion_controller_factory(Arc::new(
                quinn::congestion::NewRenoConfig::default(),
            ));
        }
        other => bail!("unknown congestion controller {other}"),
    }
    if let Some(size) = args.send_buffer {
        transport.datagram_send_buffer_size(size);
    }
    let transport = Arc::new(transport);

    let socket = dataplane::bind_wan_socket(args.bind)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(identity.server_config(transport.clone())?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let dev = dataplane::open_tun(&args.tun, args.mtu).await?;
    eprintln!("tun {} offload {:?}", dev.name(), dev.offload());

    let fib = Arc::new(Fib::new(build_fib(&args)));
    let peers = Arc::new(PeerTable::new());
    let counters = Arc::new(Counters::new());
    let network = skyvine_router::config::DEFAULT_NETWORK;
    dataplane::spawn_tun_reader(
        network,
        dev.clone(),
        fib.clone(),
        peers.clone(),
        counters.clone(),
    );

    let conn = match args.connect {
        Some(addr) => {
            let client = identity.client_config(transport)?;
            endpoint
                .connect_with(client, addr, &pki::server_name(&args.peer_site))?
                .await?
        }
        None => {
            let incoming = endpoint.accept().await.context("endpoint closed")?;
            incoming.await?
        }
    };
    eprintln!(
        "connected to {} max datagram {:?}",
        conn.remote_address(),
        conn.max_datagram_size()
    );
    peers.insert(args.peer_site.clone(), conn.clone());
    let reader = dataplane::spawn_peer_reader(
        conn.clone(),
        args.peer_site.clone(),
        Arc::new(vec![dataplane::DataNetwork {
            id: network,
            device: dev,
            fib,
            counters: counters.clone(),
        }]),
        peers.clone(),
        counters.clone(),
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = reader => eprintln!("connection closed"),
    }
    let stats = conn.stats();
    eprintln!(
        "counters {}",
        serde_json::to_string(&counters.snapshot()).unwrap_or_default()
    );
    eprintln!(
        "quic: udp_tx datagrams {} ios {} lost_packets {} cwnd {} rtt {:?}",
        stats.udp_tx.datagrams,
        stats.udp_tx.ios,
        stats.path.lost_packets,
        stats.path.cwnd,
        stats.path.rtt
    );
    conn.close(0u32.into(), b"done");
    Ok(())
}

fn build_fib(args: &Args) -> FibSnapshot {
    let now = Instant::now();
    let mut gndt = Gndt::new();
    gndt.apply(
        GndtEntry::site_prefix(args.local, args.site.clone(), 1),
        now,
    );
    gndt.apply(
        GndtEntry::site_prefix(args.remote, args.peer_site.clone(), 1),
        now,
    );
    let lndt = Lndt::new([args.local], now);
    FibSnapshot::build(&args.site, &gndt, &lndt)
}

/// The accepting side creates the CA and both certificates; the dialing side waits for them.
async fn load_identity(args: &Args) -> anyhow::Result<pki::Identity> {
    let dir = &args.pki_dir;
    let cert = dir.join(format!("{}.pem", args.site));
    let key = dir.join(format!("{}.key", args.site));
    if args.connect.is_none() && !dir.join("ca.pem").exists() {
        pki::create_ca(dir)?;
        pki::issue(dir, &args.peer_site, &[args.remote.into()])?;
        pki::issue(dir, &args.site, &[args.local.into()])?;
    }
    // The files may still be being written by the other side: retry until they load.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match pki::Identity::load(&dir.join("ca.pem"), &cert, &key, &args.site) {
            Ok(identity) => return Ok(identity),
            Err(error) if Instant::now() > deadline => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
