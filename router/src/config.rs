//! The router's TOML configuration: parsed strictly, validated, with errors that name the key.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::Deserialize;
use skyvine_tables::SiteId;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    /// The site's LAN: where its VMs are.
    pub lan: LanConfig,
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
    /// The other routers of the virtual network.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

/// The site's LAN.
#[derive(Debug, Clone, Deserialize)]
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
}

/// The WAN endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// UDP address the QUIC endpoint binds (e.g. "0.0.0.0:7400").
    pub listen: SocketAddr,
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

/// Live-migration settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// How long the destination waits for the migrated VM to answer its ARP probe.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
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
            probe_timeout_ms: default_probe_timeout_ms(),
            max_moves: default_max_moves(),
            damping_window_s: default_damping_s(),
            freeze_s: default_damping_s(),
            pinned: Vec::new(),
        }
    }
}

impl MigrationConfig {
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
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
fn default_probe_timeout_ms() -> u64 {
    300
}
fn default_max_moves() -> u32 {
    5
}
fn default_damping_s() -> u64 {
    180
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors
    /// relative certificate paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// The LNDT ranges: `lan.hosts`, or the site prefixes.
    pub fn lndt_ranges(&self) -> Vec<Ipv4Network> {
        self.lan
            .hosts
            .clone()
            .unwrap_or_else(|| self.lan.prefixes.clone())
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.lan.interface.is_empty() || self.lan.interface.len() > 15 {
            return Err(invalid(
                "lan.interface",
                "must be an interface name of 1 to 15 characters".into(),
            ));
        }
        if self.lan.prefixes.is_empty() {
            return Err(invalid(
                "lan.prefixes",
                "list at least one prefix this site owns".into(),
            ));
        }
        for net in &self.lan.prefixes {
            check_canonical(net).map_err(|m| invalid("lan.prefixes", m))?;
        }
        for (i, a) in self.lan.prefixes.iter().enumerate() {
            for b in self.lan.prefixes.iter().skip(i + 1) {
                if a.contains(b.network()) || b.contains(a.network()) {
                    return Err(invalid("lan.prefixes", format!("{a} and {b} overlap")));
                }
            }
        }
        for net in self.lan.hosts.iter().flatten() {
            check_canonical(net).map_err(|m| invalid("lan.hosts", m))?;
            let inside = self
                .lan
                .prefixes
                .iter()
                .any(|p| p.contains(net.network()) && p.prefix() <= net.prefix());
            if !inside {
                return Err(invalid(
                    "lan.hosts",
                    format!("{net} is not inside any of lan.prefixes"),
                ));
            }
        }
        if let Some(vnet) = &self.lan.virtual_network {
            check_canonical(vnet).map_err(|m| invalid("lan.virtual_network", m))?;
            for p in &self.lan.prefixes {
                if !(vnet.contains(p.network()) && vnet.prefix() <= p.prefix()) {
                    return Err(invalid(
                        "lan.virtual_network",
                        format!("{vnet} must contain every site prefix, but not {p}"),
                    ));
                }
            }
        }
        if self.tun.name.is_empty() || self.tun.name.len() > 15 {
            return Err(invalid(
                "tun.name",
                "must be an interface name of 1 to 15 characters".into(),
            ));
        }
        if self.tun.name == self.lan.interface {
            return Err(invalid("tun.name", "must differ from lan.interface".into()));
        }
        if !(576..=1500).contains(&self.tun.mtu) {
            return Err(invalid(
                "tun.mtu",
                format!("{} is outside 576..=1500", self.tun.mtu),
            ));
        }
        let mut seen = BTreeSet::new();
        for peer in &self.peers {
            if peer.site == self.site {
                return Err(invalid(
                    "peers",
                    format!("site {} is this router itself", peer.site),
                ));
            }
            if !seen.insert(peer.site.clone()) {
                return Err(invalid(
                    "peers",
                    format!("site {} is listed twice", peer.site),
                ));
            }
        }
        if self.migration.probe_timeout_ms == 0 || self.migration.probe_timeout_ms > 10_000 {
            return Err(invalid(
                "migration.probe_timeout_ms",
                "must be between 1 and 10000".into(),
            ));
        }
        if self.migration.max_moves == 0 {
            return Err(invalid("migration.max_moves", "must be at least 1".into()));
        }
        Ok(())
    }
}

fn check_canonical(net: &Ipv4Network) -> Result<(), String> {
    if net.network() != net.ip() {
        return Err(format!(
            "{net} has host bits set; did you mean {}/{}?",
            net.network(),
            net.prefix()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
site = "a"
[lan]
interface = "lan0"
prefixes = ["10.77.1.0/24"]
[wan]
listen = "0.0.0.0:7400"
[tls]
ca = "ca.pem"
cert = "a.pem"
key = "a.key"
[[peers]]
site = "b"
address = "100.64.0.2:7400"
[[peers]]
site = "c"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/skyvine/a.toml"))
    }

    #[test]
    fn good_config_gets_defaults_and_absolute_paths() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.tun.name, "skyvine0");
        assert_eq!(config.tun.mtu, 1380);
        assert_eq!(config.tls.ca, PathBuf::from("/etc/skyvine/ca.pem"));
        assert_eq!(config.lndt_ranges(), config.lan.prefixes);
        assert_eq!(config.peers.len(), 2);
        assert!(config.peers[1].address.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = GOOD.replace("[wan]", "colour = \"blue\"\n[wan]");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            (GOOD.replace("10.77.1.0/24", "10.77.1.5/24"), "lan.prefixes"),
            (GOOD.replace("site = \"b\"", "site = \"a\""), "peers"),
            (GOOD.replace("site = \"a\"", "site = \"a b\""), "site"),
            (
                GOOD.replace("[wan]", "hosts = [\"10.9.0.1/32\"]\n[wan]"),
                "lan.hosts",
            ),
            (
                GOOD.replace(
                    "[[peers]]\nsite = \"b\"",
                    "[tun]\nmtu = 9000\n[[peers]]\nsite = \"b\"",
                ),
                "tun.mtu",
            ),
            (GOOD.replace("0.0.0.0:7400", "nowhere"), "listen"),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "expected {key} in: {err}");
        }
    }
}
