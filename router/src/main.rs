//! `skyvine`: the router daemon and its admin commands.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skyvine_router::config::Config;
use skyvine_router::{admin, check, daemon, dataplane, kernel, pki};
use skyvine_tables::SiteId;

/// A user-level virtual network router that joins sites into one virtual network over QUIC
/// and keeps live-migrated VMs reachable at their addresses.
#[derive(Debug, Parser)]
#[command(
    name = "skyvine",
    version,
    propagate_version = true,
    after_long_help = "Files: /etc/skyvine/skyvine.toml (the configuration; check it with \
                       `skyvine check-config --host`), /run/skyvine/skyvine.sock (the admin \
                       socket). Deployment, kernel settings, certificates and BGP export of \
                       host routes: /usr/share/doc/skyvine/README.md (deploy/README.md in the \
                       source)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the router daemon (needs root: TUN device, routes, packet sockets).
    ///
    /// Logs go to stderr; filter them with RUST_LOG (e.g. RUST_LOG=skyvine=debug). SIGTERM or
    /// SIGINT stops the router and removes the kernel routes it installed. The router runs on
    /// one thread (the fastest layout for its QUIC data plane); SKYVINE_WORKER_THREADS=N runs it
    /// on N worker threads instead.
    Router {
        /// The configuration file (TOML); see README.md for every key.
        #[arg(long, short, value_name = "FILE", env = "SKYVINE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and its certificates, and optionally this machine.
    ///
    /// Parses the file (unknown keys and bad values are named), then loads tls.ca, tls.cert and
    /// tls.key and checks that the certificate is signed by the CA, names this config's site,
    /// matches the key and is valid now; says when it expires. Prints one line per problem and
    /// exits 1 if there is any, 0 otherwise. Nothing is changed.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(value_name = "FILE")]
        config: PathBuf,
        /// Also check this machine for the router: net.ipv4.ip_forward is 1, rp_filter is 0 or
        /// 2 on `all` and the LAN interface, the LAN interface exists, the WAN UDP address can
        /// be bound (no other program on the port), and the TUN name is free or a TUN device.
        #[arg(long)]
        host: bool,
    },
    /// Create the site CA and router certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Write the man pages (skyvine.1 and one per subcommand) into DIR, e.g. for a package.
    #[command(hide = true)]
    Man {
        /// Directory for the pages (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Admin commands asking a running router: tables, route, peers, migrations, status.
    #[command(flatten)]
    Admin(admin::cli::AdminCommand),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Create a site CA: DIR/ca.pem and DIR/ca.key (keep ca.key offline in production).
    Ca {
        /// Directory for the CA files (created if missing; existing files are never overwritten).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a router certificate signed by the CA in DIR: DIR/SITE.pem and DIR/SITE.key.
    ///
    /// The certificate certifies the site's prefixes: peers accept from this router only
    /// prefixes inside them (and hosts that migrated to it from another site's). Certificates
    /// issued before certified prefixes existed are refused: issue them again with --prefix
    /// (move the old SITE.pem and SITE.key away first).
    Issue {
        /// Directory holding ca.pem and ca.key; the new files are written there too.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The router's site id (as in its configuration's `site`).
        #[arg(long, value_name = "ID")]
        site: SiteId,
        /// A prefix the site owns, e.g. 10.77.1.0/24 (its configuration's `lan.prefixes`),
        /// certified in network 0 (the network of a configuration with one `[lan]`); or
        /// ID:PREFIX, e.g. 2:10.77.1.0/24, certified in the virtual network with id ID (a
        /// `[[networks]]` entry's `id`). Repeat for several. At least one.
        #[arg(long = "prefix", value_name = "[ID:]NETWORK/LEN", required = true)]
        prefixes: Vec<pki::CertifiedPrefix>,
    },
    /// Revoke a router certificate: append its fingerprint to a revocation list (the file
    /// `tls.revoked` names). Copy the list to every router and send them SIGHUP: each cuts the
    /// revoked router off at once and withdraws what it advertised.
    Revoke {
        /// The certificate to revoke (PEM), e.g. pki/b.pem.
        #[arg(value_name = "CERT")]
        cert: PathBuf,
        /// The revocation list to append to (created if missing).
        #[arg(long, value_name = "FILE")]
        list: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("skyvine: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Router { config } => {
            let config = skyvine_router::config::load(&config)?;
            dataplane::tune_allocator();
            let runtime = dataplane::runtime().context("starting the async runtime")?;
            runtime.block_on(run_router(config))
        }
        Command::CheckConfig { config, host } => check_config(&config, host),
        Command::Cert(CertCommand::Ca { dir }) => {
            pki::create_ca(&dir)?;
            println!("created {0}/ca.pem and {0}/ca.key", dir.display());
            Ok(())
        }
        Command::Cert(CertCommand::Issue {
            dir,
            site,
            prefixes,
        }) => {
            pki::issue(&dir, &site, &prefixes)?;
            let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
            println!(
                "issued {0}/{1}.pem and {0}/{1}.key for prefixes {2}",
                dir.display(),
                site,
                prefixes.join(", ")
            );
            Ok(())
        }
        Command::Cert(CertCommand::Revoke { cert, list }) => {
            let line = skyvine_router::revoked::revoke(&cert, &list)?;
            print!("appended to {}: {line}", list.display());
            println!("copy the list to every router (tls.revoked) and send them SIGHUP");
            Ok(())
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!("man pages written to {}", dir.display());
            Ok(())
        }
        Command::Admin(command) => admin::cli::run(command),
    }
}

/// `skyvine check-config`: every problem on its own line, an error (exit 1) if any.
fn check_config(path: &Path, host: bool) -> anyhow::Result<()> {
    let config = skyvine_router::config::load(path)?;
    let mut problems = Vec::new();
    match check::check_certificates(&config, SystemTime::now()) {
        Ok(summary) => {
            println!(
                "{}: config valid (site {}, {} network(s), {} peer(s))",
                path.display(),
                config.site,
                config.networks().len(),
                config.peers.len()
            );
            for network in config.networks() {
                println!("{}", describe_network(network));
            }
            let policy = config.relay_policy();
            if policy.relays() {
                println!("relay: this router relays between its listed peers (relay = true)");
            }
            for (peer, relay) in policy.relayed_peers() {
                println!(
                    "relayed: peer {peer} is reached via {relay}, which must have relay = true"
                );
            }
            println!(
                "certificates: {} is site {}'s, signed by the CA in {}, matches {}; valid until \
                 {} ({} days); the CA until {}",
                config.tls.cert.display(),
                config.site,
                config.tls.ca.display(),
                config.tls.key.display(),
                summary.cert_expires,
                summary.cert_days_left,
                summary.ca_expires
            );
            for warning in &summary.warnings {
                println!("warning: {warning}");
            }
        }
        Err(found) => problems.extend(found),
    }
    if host {
        let found = check::check_host(&config, &check::HostPaths::default());
        if found.is_empty() {
            let lans: Vec<&str> = config
                .networks()
                .iter()
                .map(|n| n.lan.interface.as_str())
                .collect();
            let tuns: Vec<&str> = config.networks().iter().map(|n| n.tun.as_str()).collect();
            println!(
                "host: ip_forward on, rp_filter 0 or 2, {} present, UDP {} free, TUN {} free or ours",
                lans.join(", "),
                config.wan.listen,
                tuns.join(", ")
            );
        }
        problems.extend(found);
    }
    if problems.is_empty() {
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{}: {problem}", path.display());
    }
    anyhow::bail!("{}: {} problem(s) found", path.display(), problems.len())
}

/// One line of `check-config` about a network: id, prefixes, LAN, TUN and VRF.
fn describe_network(network: &skyvine_router::config::Network) -> String {
    let prefixes: Vec<String> = network
        .lan
        .prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    let vrf = match &network.vrf {
        Some(vrf) => format!("VRF {} (table {})", vrf.name, vrf.table),
        None => "main routing table".to_owned(),
    };
    format!(
        "network {} (id {}): prefixes {}, LAN {}, TUN {}, {vrf}{}",
        network.name,
        network.id,
        prefixes.join(", "),
        network.lan.interface,
        network.tun,
        if network.lan.virtual_network.is_some() {
            ", routing optimization"
        } else {
            ""
        }
    )
}

async fn run_router(config: Config) -> anyhow::Result<()> {
    let identity = pki::Identity::load(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
        &config.site,
    )
    .context("loading certificates")?;
    if !kernel::check_forwarding().unwrap_or(false) {
        tracing::warn!(
            "net.ipv4.ip_forward is 0: the kernel will not forward between the LAN and the overlay"
        );
    }
    let socket = dataplane::bind_wan_socket(config.wan.listen)
        .with_context(|| format!("binding the WAN socket {}", config.wan.listen))?;
    let mut networks = Vec::new();
    for network in config.networks() {
        networks.push(
            open_network(network, config.tun.mtu)
                .await
                .with_context(|| format!("setting up network {}", network.name))?,
        );
    }
    let parts = daemon::Parts {
        config,
        identity,
        socket,
        networks,
        reload: Some(reload_signal()),
    };
    daemon::run(parts, shutdown_signal()).await
}

/// One network's devices: its TUN device, its kernel routes (in its VRF, which the TUN and
/// LAN devices are enslaved to, when it has one) and its LAN.
async fn open_network(
    network: &skyvine_router::config::Network,
    mtu: u16,
) -> anyhow::Result<daemon::NetworkParts<dataplane::TunDevice, kernel::Kernel>> {
    let device = dataplane::open_tun(&network.tun, mtu)
        .await
        .with_context(|| format!("creating TUN device {}", network.tun))?;
    for setting in kernel::prepare_interfaces(&network.lan.interface, &network.tun) {
        tracing::info!(setting, "kernel setting changed");
    }
    let vrf = network.vrf.as_ref().map(kernel::vrf::VrfDevice::from);
    let kernel = kernel::Kernel::connect_in(&network.tun, &network.lan.interface, vrf.as_ref())
        .await
        .context("connecting to the kernel's routing netlink")?;
    let lan = skyvine_router::lanio::open_lan(&network.lan.interface, network.lan.address)?;
    Ok(daemon::NetworkParts {
        device,
        kernel,
        lan: Some(lan),
    })
}

/// SIGHUP: re-read the revocation list.
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received");
                    // A reload already queued covers this one.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(error) => {
            tracing::warn!(%error, "cannot install the SIGHUP handler; the revocation list is read at start only");
        }
    }
    rx
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop the router with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
