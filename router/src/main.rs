//! `skyvine`: the router daemon and its admin commands.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skyvine_router::config::Config;
use skyvine_router::{admin, daemon, dataplane, kernel, pki};
use skyvine_tables::SiteId;

/// skyvine: a user-level virtual network router that joins sites into one virtual network over
/// QUIC and keeps live-migrated VMs reachable at their addresses.
#[derive(Debug, Parser)]
#[command(name = "skyvine", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the router daemon (needs root: TUN device, routes, packet sockets).
    ///
    /// Logs go to stderr; filter them with RUST_LOG (e.g. RUST_LOG=skyvine=debug). SIGTERM or
    /// SIGINT stops the router and removes the kernel routes it installed.
    Router {
        /// The configuration file (TOML); see README.md for every key.
        #[arg(long, short, value_name = "FILE", env = "SKYVINE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 if valid, 1 with the problem otherwise.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Create the site CA and router certificates.
    #[command(subcommand)]
    Cert(CertCommand),
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
    Issue {
        /// Directory holding ca.pem and ca.key; the new files are written there too.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The router's site id (as in its configuration's `site`).
        #[arg(long, value_name = "ID")]
        site: SiteId,
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
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(run_router(config))
        }
        Command::CheckConfig { config } => {
            let parsed = skyvine_router::config::load(&config)?;
            println!(
                "{}: valid (site {}, {} prefix(es), {} peer(s))",
                config.display(),
                parsed.site,
                parsed.lan.prefixes.len(),
                parsed.peers.len()
            );
            Ok(())
        }
        Command::Cert(CertCommand::Ca { dir }) => {
            pki::create_ca(&dir)?;
            println!("created {0}/ca.pem and {0}/ca.key", dir.display());
            Ok(())
        }
        Command::Cert(CertCommand::Issue { dir, site }) => {
            pki::issue(&dir, &site)?;
            println!("issued {0}/{1}.pem and {0}/{1}.key", dir.display(), site);
            Ok(())
        }
        Command::Admin(command) => admin::cli::run(command),
    }
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
    let device = dataplane::open_tun(&config.tun.name, config.tun.mtu)
        .await
        .with_context(|| format!("creating TUN device {}", config.tun.name))?;
    for setting in kernel::prepare_interfaces(&config.lan.interface, &config.tun.name) {
        tracing::info!(setting, "kernel setting changed");
    }
    let kernel = kernel::Kernel::connect(&config.tun.name, &config.lan.interface)
        .await
        .context("connecting to the kernel's routing netlink")?;
    let lan = skyvine_router::lanio::open_lan(&config.lan.interface)?;
    let parts = daemon::Parts {
        config,
        identity,
        socket,
        device,
        kernel,
        lan: Some(lan),
    };
    daemon::run(parts, shutdown_signal()).await
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
