//! The router's TOML configuration: parsed strictly, validated, with errors that name the key,
//! and mapped to what the core needs ([`Config::node_config`]).
//!
//! Parsing works on text: reading the file is the binary's business (`skyvine_router::config`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::Deserialize;
use skyvine_tables::{DampingConfig, SiteId};

use crate::node::{LanIdentity, NodeConfig, Takeover};
use crate::relay;

mod validate;

/// A virtual network's numeric id, carried by every control message and data datagram.
pub type NetworkId = u16;

/// The id of the one network a config without `[[networks]]` declares.
pub const DEFAULT_NETWORK: NetworkId = relay::DEFAULT_NETWORK;

/// Reserved: the id framing link-level control messages (the hello), never a network's.
pub const LINK_NETWORK: NetworkId = NetworkId::MAX;

/// The name of the one network a config without `[[networks]]` declares.
pub const DEFAULT_NETWORK_NAME: &str = "default";

/// The first Linux routing table a declared network's VRF uses by default: network id N gets
/// table `VRF_TABLE_BASE + N`.
pub const VRF_TABLE_BASE: u32 = 1000;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (reported by the loader that reads it).
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A skyvine router's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This router's site id (1-32 characters of a-z, A-Z, 0-9, '-', '_'); must match its
    /// certificate.
    pub site: SiteId,
    /// The site's LAN: where its VMs are, for a router that carries one virtual network
    /// (network id 0, named "default", in the main routing table). Leave it out when
    /// `[[networks]]` declares the networks instead.
    #[serde(default)]
    pub lan: Option<LanConfig>,
    /// The WAN side: where the QUIC endpoint listens.
    pub wan: WanConfig,
    /// Certificates: the site CA and this router's certificate and key.
    pub tls: TlsConfig,
    /// The TUN device that carries packets between the kernel and the overlay.
    #[serde(default)]
    pub tun: TunConfig,
    /// The admin socket used by `skyvine tables`, `peers`, ...
    #[serde(default)]
    pub admin: AdminConfig,
    /// Live-migration detection and safety settings.
    #[serde(default)]
    pub migration: MigrationConfig,
    /// Relay datagrams between two listed peers that cannot reach each other (both must name
    /// this router as their `via`). Without it this router refuses to relay.
    #[serde(default)]
    pub relay: bool,
    /// The other routers of the virtual network(s).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Several isolated virtual networks on this router, each with its own tables, TUN device
    /// and Linux VRF; they may reuse each other's addresses. Excludes `lan`.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    /// The networks this router carries, resolved from `lan` or `networks` by [`Config::parse`].
    #[serde(skip)]
    resolved: Vec<Network>,
}

/// One virtual network of a router that carries several (`[[networks]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The network's name (1-15 characters of a-z, A-Z, 0-9, '-', '_'), as the admin CLI's
    /// `--network` and the metrics' `network` label show it. Unique on this router.
    pub name: String,
    /// The network's id, the same on every router of the network (0-65534). Unique on this
    /// router; certificates certify prefixes per network id.
    pub id: NetworkId,
    /// The site's LAN in this network: interface (one network's only), prefixes, hosts,
    /// routing-optimization subnet, gateway address, as the top-level `[lan]`.
    pub lan: LanConfig,
    /// The network's TUN device. Default: "skyvine<id>".
    #[serde(default)]
    pub tun: Option<String>,
    /// The Linux routing table of the network's VRF. Default: 1000 + id.
    #[serde(default)]
    pub vrf_table: Option<u32>,
    /// The `[[peers]]` (by site) that carry this network. Default: all of them.
    #[serde(default)]
    pub peers: Option<Vec<SiteId>>,
}

/// A network this router carries, as resolved from the config: the single `[lan]` form is one
/// of these too (id 0, no VRF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub id: NetworkId,
    pub lan: LanConfig,
    /// The TUN device's name.
    pub tun: String,
    /// The network's VRF; `None` (the single-network form) keeps today's main-table routes.
    pub vrf: Option<Vrf>,
    /// The peers that carry this network; `None`: every listed peer.
    pub peers: Option<Vec<SiteId>>,
}

/// A network's Linux VRF device and the routing table it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vrf {
    /// The VRF device's name: "svrf<id>".
    pub name: String,
    pub table: u32,
}

impl Network {
    /// The LNDT ranges: `lan.hosts`, or the site prefixes.
    pub fn lndt_ranges(&self) -> Vec<Ipv4Network> {
        self.lan
            .hosts
            .clone()
            .unwrap_or_else(|| self.lan.prefixes.clone())
    }
}

/// The site's LAN.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanConfig {
    /// The LAN interface of the gateway (e.g. "eth1").
    pub interface: String,
    /// The site's slice(s) of the virtual network, owned by this router in the GNDT.
    pub prefixes: Vec<Ipv4Network>,
    /// The hosts this router is responsible for (LNDT): addresses or ranges inside `prefixes`.
    /// Only they may send through the overlay. Default: all of `prefixes`.
    #[serde(default)]
    pub hosts: Option<Vec<Ipv4Network>>,
    /// Routing-optimization mode: the one large subnet every VM is configured with (e.g.
    /// 10.77.0.0/16). The router then answers ARP on its LAN for addresses of other sites.
    #[serde(default)]
    pub virtual_network: Option<Ipv4Network>,
    /// The gateway address this router advertises as its own on the LAN, inside `prefixes`.
    /// Default: the first IPv4 address of `interface`. A site with two routers sets the virtual
    /// IP they carry in turn (keepalived's VRRP address), which its VMs use as their gateway.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

/// The WAN endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// UDP address the QUIC endpoint binds (e.g. "0.0.0.0:7400").
    pub listen: SocketAddr,
    /// How often an idle connection to a peer sends a QUIC keep-alive, in milliseconds: it
    /// holds NAT mappings open and lets the peer tell a live router from a dead one.
    #[serde(default = "default_keep_alive_ms")]
    pub keep_alive_ms: u64,
    /// How long a connection may go without hearing from the peer before it is declared dead,
    /// in milliseconds (at least twice `keep_alive_ms`; each end uses the smaller of the two
    /// ends' values). A peer whose router failed is redialed after it; a site's standby router
    /// that dials in replaces the old connection at once, without waiting for it.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_keep_alive_ms() -> u64 {
    1_000
}

fn default_idle_timeout_ms() -> u64 {
    3_000
}

impl WanConfig {
    /// The keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.keep_alive_ms)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// Certificate files; relative paths are relative to the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The site CA certificate (PEM) every router's certificate is checked against.
    pub ca: PathBuf,
    /// This router's certificate (PEM), issued by `skyvine cert issue`.
    pub cert: PathBuf,
    /// This router's private key (PEM).
    pub key: PathBuf,
    /// A revocation list: a file with one revoked certificate per line, by serial number or
    /// SHA-256 fingerprint in hex (`skyvine cert revoke` appends them; `#` starts a comment).
    /// Re-read on SIGHUP: a connected router whose certificate it lists is cut off at once and
    /// what it originated is withdrawn.
    #[serde(default)]
    pub revoked: Option<PathBuf>,
    /// Admit any site the CA certified, not only those listed in `[[peers]]` (they still may
    /// only advertise their certified prefixes). Default false.
    #[serde(default)]
    pub any_certified_peer: bool,
}

/// The TUN device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunConfig {
    /// Interface name (at most 15 characters).
    #[serde(default = "default_tun_name")]
    pub name: String,
    /// MTU; it must fit one QUIC datagram on the WAN path (1380 fits a 1500-byte WAN MTU).
    #[serde(default = "default_tun_mtu")]
    pub mtu: u16,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig {
            name: default_tun_name(),
            mtu: default_tun_mtu(),
        }
    }
}

/// The admin interface.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Unix socket for the admin CLI (created mode 0600).
    #[serde(default = "default_admin_socket")]
    pub socket: PathBuf,
    /// Optional address for Prometheus metrics over HTTP (e.g. "127.0.0.1:9477").
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: default_admin_socket(),
            metrics: None,
        }
    }
}

/// The longest `migration.confirm_timeout_ms` accepted.
pub const MAX_CONFIRM_TIMEOUT_MS: u64 = 30_000;

/// When the destination takes a migrated VM's address over (`migration.takeover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverMode {
    /// At once on the announcement; the VM is probed afterwards and an unconfirmed move is
    /// rolled back.
    #[default]
    Optimistic,
    /// Only once the VM answered the destination's probe.
    Confirmed,
}

/// Live-migration settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// "optimistic" (default): the destination takes a migrated VM's address over on its
    /// announcement and confirms it afterwards; "confirmed": only after the VM answered.
    #[serde(default)]
    pub takeover: TakeoverMode,
    /// How long the destination probes for a migrated VM before giving up: the move is rolled
    /// back (optimistic) or refused (confirmed).
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// How long the old site probes for a host that moved away; an answer means the move was a
    /// duplicate or a hijack, and the old site takes the address back.
    #[serde(default = "default_still_here_timeout_ms")]
    pub still_here_timeout_ms: u64,
    /// Replaced by `confirm_timeout_ms` and `still_here_timeout_ms`: refused with a message
    /// that says so.
    #[serde(default)]
    pub probe_timeout_ms: Option<u64>,
    /// How long a planned-migration hint (`skyvine migration prepare`) stays open without an
    /// announcement at the destination, in seconds.
    #[serde(default = "default_prepare_window_s")]
    pub prepare_window_s: u64,
    /// More than this many moves of one address within `damping_window_s` freeze it.
    #[serde(default = "default_max_moves")]
    pub max_moves: u32,
    /// The window for `max_moves`, in seconds.
    #[serde(default = "default_damping_s")]
    pub damping_window_s: u64,
    /// How long a frozen address stays at its last confirmed site, in seconds.
    #[serde(default = "default_damping_s")]
    pub freeze_s: u64,
    /// Addresses that never move, whatever is announced.
    #[serde(default)]
    pub pinned: Vec<Ipv4Addr>,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            takeover: TakeoverMode::default(),
            confirm_timeout_ms: default_confirm_timeout_ms(),
            still_here_timeout_ms: default_still_here_timeout_ms(),
            probe_timeout_ms: None,
            prepare_window_s: default_prepare_window_s(),
            max_moves: default_max_moves(),
            damping_window_s: default_damping_s(),
            freeze_s: default_damping_s(),
            pinned: Vec::new(),
        }
    }
}

impl MigrationConfig {
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    pub fn still_here_timeout(&self) -> Duration {
        Duration::from_millis(self.still_here_timeout_ms)
    }

    pub fn takeover(&self) -> Takeover {
        match self.takeover {
            TakeoverMode::Optimistic => Takeover::Optimistic,
            TakeoverMode::Confirmed => Takeover::Confirmed,
        }
    }

    pub fn prepare_window(&self) -> Duration {
        Duration::from_secs(self.prepare_window_s)
    }

    /// Move damping as configured (EVPN's defaults for what is not).
    pub fn damping(&self) -> DampingConfig {
        DampingConfig {
            max_moves: self.max_moves,
            window: Duration::from_secs(self.damping_window_s),
            freeze: Duration::from_secs(self.freeze_s),
            ..DampingConfig::default()
        }
    }
}

/// Another router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's site id (as in its certificate).
    pub site: SiteId,
    /// Where to dial it. Omit for a peer that cannot be reached (e.g. behind NAT): it dials us.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Reach this peer through another listed peer that relays (`relay = true` there), when
    /// neither can dial the other (both behind NAT). The peer must name this router the same
    /// way. Excludes `address`.
    #[serde(default)]
    pub via: Option<SiteId>,
}

fn default_tun_name() -> String {
    "skyvine0".to_owned()
}
fn default_tun_mtu() -> u16 {
    1380
}
fn default_admin_socket() -> PathBuf {
    PathBuf::from("/run/skyvine/skyvine.sock")
}
fn default_confirm_timeout_ms() -> u64 {
    u64::try_from(crate::node::DEFAULT_CONFIRM_TIMEOUT.as_millis()).unwrap_or(3000)
}
fn default_still_here_timeout_ms() -> u64 {
    u64::try_from(crate::node::DEFAULT_STILL_HERE_TIMEOUT.as_millis()).unwrap_or(1000)
}
fn default_prepare_window_s() -> u64 {
    60
}
fn default_max_moves() -> u32 {
    5
}
fn default_damping_s() -> u64 {
    180
}

impl Config {
    /// Parses and validates configuration text; `path` names it in errors and anchors
    /// relative certificate paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        config.resolved = config.resolve_networks();
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            Some(&mut config.tls.ca),
            Some(&mut config.tls.cert),
            Some(&mut config.tls.key),
            config.tls.revoked.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// The networks this router carries, in the order of the file: the `[lan]` form is one
    /// network, [`DEFAULT_NETWORK`] named [`DEFAULT_NETWORK_NAME`], without a VRF.
    pub fn networks(&self) -> &[Network] {
        &self.resolved
    }

    /// The network named `name`.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.resolved.iter().find(|n| n.name == name)
    }

    fn resolve_networks(&self) -> Vec<Network> {
        if let Some(lan) = &self.lan {
            return vec![Network {
                name: DEFAULT_NETWORK_NAME.to_owned(),
                id: DEFAULT_NETWORK,
                lan: lan.clone(),
                tun: self.tun.name.clone(),
                vrf: None,
                peers: None,
            }];
        }
        self.networks
            .iter()
            .map(|n| Network {
                name: n.name.clone(),
                id: n.id,
                lan: n.lan.clone(),
                tun: n.tun.clone().unwrap_or_else(|| format!("skyvine{}", n.id)),
                vrf: Some(Vrf {
                    name: format!("svrf{}", n.id),
                    table: n.vrf_table.unwrap_or(VRF_TABLE_BASE + u32::from(n.id)),
                }),
                peers: n.peers.clone(),
            })
            .collect()
    }

    /// What the core needs for `network`: this site, its prefixes and hosts there, its peers
    /// and the migration settings. `lan` is the router's own LAN address in that network,
    /// found on the interface at start-up (`None` runs without migration support).
    pub fn node_config(&self, network: &Network, lan: Option<LanIdentity>) -> NodeConfig {
        let mut node = NodeConfig::new(
            self.site.clone(),
            network.lan.prefixes.clone(),
            network.lndt_ranges(),
            self.peers
                .iter()
                .map(|p| p.site.clone())
                .filter(|site| {
                    network
                        .peers
                        .as_ref()
                        .is_none_or(|only| only.contains(site))
                })
                .collect(),
        );
        node.lan = lan;
        node.virtual_network = network.lan.virtual_network;
        node.takeover = self.migration.takeover();
        node.confirm_timeout = self.migration.confirm_timeout();
        node.still_here_timeout = self.migration.still_here_timeout();
        node.prepare_window = self.migration.prepare_window();
        node.damping = self.migration.damping();
        node.pinned = self.migration.pinned.clone();
        node.any_certified_peer = self.tls.any_certified_peer;
        node
    }

    /// Who may relay through this router (`relay`), and which peers it reaches through a
    /// relay (`via`).
    pub fn relay_policy(&self) -> relay::RelayPolicy {
        relay::RelayPolicy::new(
            self.site.clone(),
            self.relay,
            self.peers.iter().map(|p| (p.site.clone(), p.via.clone())),
        )
    }
}

#[cfg(test)]
mod tests;
