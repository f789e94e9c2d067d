//! The admin subcommands of `skyvine` (`tables`, `route`, `peers`, `migrations`, `status`) and
//! the blocking client they use to ask the daemon over its admin socket.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::api::{Reply, Request, Response, TableName, MAX_LINE};
use super::render;
use crate::config::AdminConfig;

/// How long the CLI waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Commands that ask a running router.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Show the router's tables: GNDT (which site owns each prefix and host, with sequence
    /// number, origin and age), LNDT (hosts this router forwards for) and HWDT (IP <-> MAC
    /// bindings seen on the LAN). Host (/32) entries are marked `*` and KIND `host`.
    Tables {
        /// Show only this table.
        #[arg(value_enum)]
        table: Option<TableName>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show which GNDT entry ADDRESS matches and why: the longest prefix containing it, and the
    /// shorter entries it beat (e.g. a migrated VM's /32 over its site's /24).
    Route {
        /// An IPv4 address of the virtual network.
        #[arg(value_name = "ADDRESS")]
        address: Ipv4Addr,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the peer routers: connection state, path (direct, or via a relay router), address,
    /// RTT, time in state, packets and bytes each way, QUIC packets lost; on a relay, what it
    /// passed on for each peer; then the data plane's drops by reason (relay refusals too).
    Peers {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show recent migrations seen by this router: VM IP and MAC, from and to site, role, how it
    /// was detected (rarp, garp, traffic, peer), outcome, and each step's offset from detection
    /// (resolved, confirmed, advertised, applied).
    Migrations {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show version, site, uptime, table and peer counts, and warnings (peers down, frozen
    /// duplicate addresses, refused moves, ip_forward off).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Planned migrations: tell the routers that a VM is about to move (`prepare`), or that it
    /// will not after all (`cancel`).
    #[command(subcommand)]
    Migration(MigrationCommand),
}

/// `skyvine migration ...`: planned-migration hints (root only, like every admin command).
#[derive(Debug, clap::Subcommand)]
pub enum MigrationCommand {
    /// A VM is about to move to site --to: for a window (default `migration.prepare_window_s`,
    /// 60 s) every router sends its packets to both sites, so that its first announcement at
    /// the destination commits the move with no WAN round trip in the outage.
    ///
    /// Run it on the VM's current router (which announces it to every router) or on the
    /// destination's (which asks the current router to; the libvirt hook does this, since
    /// libvirt runs its migration hook on the destination host). The window ends when the VM
    /// is announced at the destination, on `skyvine migration cancel`, or at its end (logged).
    /// Without it a migration works as well, with one more WAN delay of outage.
    Prepare {
        /// The VM's address; without it, the address a router advertised for --mac.
        #[arg(long, value_name = "IP")]
        ip: Option<Ipv4Addr>,
        /// The VM's MAC address (as its current router advertised it).
        #[arg(long, value_name = "MAC")]
        mac: skyvine_tables::MacAddr,
        /// The destination site.
        #[arg(long, value_name = "SITE")]
        to: skyvine_tables::SiteId,
        /// How long the window stays open without an announcement, in seconds (1-3600).
        #[arg(long, value_name = "S")]
        window_s: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The prepared migration of a VM will not happen (e.g. libvirt aborted it): end its window
    /// everywhere. Run it on the VM's current router or on the destination's.
    Cancel {
        /// The VM's address.
        #[arg(long, value_name = "IP", required_unless_present = "mac")]
        ip: Option<Ipv4Addr>,
        /// The VM's MAC address (instead of, or beside, --ip).
        #[arg(long, value_name = "MAC")]
        mac: Option<skyvine_tables::MacAddr>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the router is and how to print its answer.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Print JSON for scripts instead of aligned columns.
    #[arg(long)]
    pub json: bool,
    /// The router's admin socket [default: /run/skyvine/skyvine.sock, or `admin.socket` of
    /// --config].
    #[arg(long, value_name = "PATH", env = "SKYVINE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Take the admin socket path from this router configuration file.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The virtual network asked about: a `[[networks]]` name ("default" for a config with
    /// one `[lan]`). Without it: the router's only network; `peers` and `migrations` show
    /// every network, `status` the first and names the others.
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,
}

impl AdminArgs {
    /// --socket, else the configuration's `admin.socket`, else the default.
    pub fn socket_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.socket {
            return Ok(path.clone());
        }
        match &self.config {
            Some(file) => Ok(crate::config::load(file)?.admin.socket),
            None => Ok(AdminConfig::default().socket),
        }
    }
}

/// Why asking the router failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no router is running at {} (is the daemon up?)", .0.display())]
    NotRunning(PathBuf),
    #[error("permission denied on {}: the admin socket answers root only (run it as root)", .0.display())]
    PermissionDenied(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the router at {} answered: {message}", path.display())]
    Refused { path: PathBuf, message: String },
    #[error("the router at {} sent an answer this CLI does not understand: {message}", path.display())]
    BadAnswer { path: PathBuf, message: String },
}

/// Sends one request and waits for its answer.
pub fn ask(path: &Path, request: &Request) -> Result<Reply, ClientError> {
    let io = |source: std::io::Error| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(path.to_owned())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_owned()),
        _ => io(error),
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| io(std::io::Error::other(e)))?;
    line.push(b'\n');
    match (&stream).write_all(&line) {
        Ok(()) => {}
        // The router may refuse (and close) before reading the request: its answer is
        // already queued for us, so read it rather than report a broken pipe.
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) => {}
        Err(error) => return Err(io(error)),
    }
    let mut answer = Vec::new();
    let limit = u64::try_from(MAX_LINE * 1024).unwrap_or(u64::MAX);
    BufReader::new(std::io::Read::take(&stream, limit))
        .read_until(b'\n', &mut answer)
        .map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::BadAnswer {
            path: path.to_owned(),
            message: "the connection closed without an answer".into(),
        });
    }
    match serde_json::from_slice::<Response>(&answer) {
        Ok(Response::Ok(reply)) => Ok(*reply),
        Ok(Response::Error(message)) if message.starts_with("permission denied") => {
            Err(ClientError::PermissionDenied(path.to_owned()))
        }
        Ok(Response::Error(message)) => Err(ClientError::Refused {
            path: path.to_owned(),
            message,
        }),
        Err(error) => Err(ClientError::BadAnswer {
            path: path.to_owned(),
            message: error.to_string(),
        }),
    }
}

/// Runs an admin command: asks the router and prints its answer on stdout.
pub fn run(command: AdminCommand) -> anyhow::Result<()> {
    let (request, admin) = match command {
        AdminCommand::Tables { table, admin } => {
            let network = admin.network.clone();
            (Request::Tables { table, network }, admin)
        }
        AdminCommand::Route { address, admin } => {
            let network = admin.network.clone();
            (Request::Route { address, network }, admin)
        }
        AdminCommand::Peers { admin } => {
            let network = admin.network.clone();
            (Request::Peers { network }, admin)
        }
        AdminCommand::Migrations { admin } => {
            let network = admin.network.clone();
            (Request::Migrations { network }, admin)
        }
        AdminCommand::Status { admin } => {
            let network = admin.network.clone();
            (Request::Status { network }, admin)
        }
        AdminCommand::Migration(MigrationCommand::Prepare {
            ip,
            mac,
            to,
            window_s,
            admin,
        }) => (
            Request::Prepare {
                ip,
                mac,
                to,
                window_s,
                network: admin.network.clone(),
            },
            admin,
        ),
        AdminCommand::Migration(MigrationCommand::Cancel { ip, mac, admin }) => {
            let network = admin.network.clone();
            (Request::Cancel { ip, mac, network }, admin)
        }
    };
    let path = admin.socket_path()?;
    let reply = ask(&path, &request)?;
    let text = if admin.json {
        let mut json = match &reply {
            Reply::Status(view) => serde_json::to_string_pretty(view),
            Reply::Tables(view) => serde_json::to_string_pretty(view),
            Reply::Route(view) => serde_json::to_string_pretty(view),
            Reply::Peers(view) => serde_json::to_string_pretty(view),
            Reply::Migrations(view) => serde_json::to_string_pretty(view),
            Reply::Hint(view) => serde_json::to_string_pretty(view),
        }
        .context("encoding the answer as JSON")?;
        json.push('\n');
        json
    } else {
        match &reply {
            Reply::Status(view) => render::status(view),
            Reply::Tables(view) => render::tables(view),
            Reply::Route(view) => render::route(view),
            Reply::Peers(view) => render::peers(view),
            Reply::Migrations(view) => render::migrations(view),
            Reply::Hint(view) => render::hint(view),
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        // `skyvine tables | head` is fine.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_means_no_router() {
        let path =
            std::env::temp_dir().join(format!("skyvine-no-such-{}.sock", std::process::id()));
        let error = ask(&path, &Request::Status { network: None }).unwrap_err();
        assert!(matches!(error, ClientError::NotRunning(_)));
        assert_eq!(
            error.to_string(),
            format!(
                "no router is running at {} (is the daemon up?)",
                path.display()
            )
        );
    }

    #[test]
    fn socket_path_prefers_the_flag_then_the_default() {
        let args = AdminArgs {
            json: false,
            socket: Some("/tmp/x.sock".into()),
            config: None,
            network: None,
        };
        assert_eq!(args.socket_path().unwrap(), PathBuf::from("/tmp/x.sock"));
        let args = AdminArgs {
            socket: None,
            ..args
        };
        assert_eq!(
            args.socket_path().unwrap(),
            PathBuf::from("/run/skyvine/skyvine.sock")
        );
    }
}
