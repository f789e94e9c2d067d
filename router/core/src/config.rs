//! The router's TOML configuration: parsed strictly, validated, with errors that name the key,
//! and mapped to what the core needs ([`Config::node_config`]).
//!
//! Parsing works on text: reading the file is the binary's business (`skyvine_router::config`).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::Deserialize;
use skyvine_tables::{DampingConfig, SiteId};

use crate::node::{LanIdentity, NodeConfig, Takeover};
use crate::relay;

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
    /// Relay datagrams between two listed peers that cannot reach each other (both must name
    /// this router as their `via`). Without it this router refuses to relay.
    #[serde(default)]
    pub relay: bool,
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

    /// What the core needs: this site, its prefixes and hosts, its peers and the migration
    /// settings. `lan` is the router's own LAN address, found on the interface at start-up
    /// (`None` runs without migration support).
    pub fn node_config(&self, lan: Option<LanIdentity>) -> NodeConfig {
        let mut node = NodeConfig::new(
            self.site.clone(),
            self.lan.prefixes.clone(),
            self.lndt_ranges(),
            self.peers.iter().map(|p| p.site.clone()).collect(),
        );
        node.lan = lan;
        node.virtual_network = self.lan.virtual_network;
        node.takeover = self.migration.takeover();
        node.confirm_timeout = self.migration.confirm_timeout();
        node.still_here_timeout = self.migration.still_here_timeout();
        node.prepare_window = self.migration.prepare_window();
        node.damping = self.migration.damping();
        node.pinned = self.migration.pinned.clone();
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

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        validate_lan(&self.lan)
            .and_then(|()| validate_tun(&self.tun, &self.lan.interface))
            .and_then(|()| validate_peers(&self.site, &self.peers))
            .and_then(|()| validate_relayed(&self.site, &self.peers, self.tun.mtu))
            .and_then(|()| validate_migration(&self.migration))
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                key: key.to_owned(),
                message,
            })
    }
}

/// A rejected value: the key that names it, and what is wrong with it.
type Invalid = (&'static str, String);

/// The LAN section: interface name, prefixes (canonical, disjoint), hosts inside them, and the
/// virtual network around them. Errors name the key.
fn validate_lan(lan: &LanConfig) -> Result<(), Invalid> {
    interface_name(&lan.interface).map_err(|m| ("lan.interface", m))?;
    if lan.prefixes.is_empty() {
        return Err((
            "lan.prefixes",
            "list at least one prefix this site owns".into(),
        ));
    }
    for net in &lan.prefixes {
        check_canonical(net).map_err(|m| ("lan.prefixes", m))?;
    }
    for (i, a) in lan.prefixes.iter().enumerate() {
        for b in lan.prefixes.iter().skip(i + 1) {
            if a.contains(b.network()) || b.contains(a.network()) {
                return Err(("lan.prefixes", format!("{a} and {b} overlap")));
            }
        }
    }
    for net in lan.hosts.iter().flatten() {
        check_canonical(net).map_err(|m| ("lan.hosts", m))?;
        if !lan.prefixes.iter().any(|p| within(net, p)) {
            return Err((
                "lan.hosts",
                format!("{net} is not inside any of lan.prefixes"),
            ));
        }
    }
    if let Some(vnet) = &lan.virtual_network {
        check_canonical(vnet).map_err(|m| ("lan.virtual_network", m))?;
        if let Some(p) = lan.prefixes.iter().find(|p| !within(p, vnet)) {
            return Err((
                "lan.virtual_network",
                format!("{vnet} must contain every site prefix, but not {p}"),
            ));
        }
    }
    Ok(())
}

/// The TUN section: an interface name other than the LAN's, and an MTU that fits.
fn validate_tun(tun: &TunConfig, lan_interface: &str) -> Result<(), Invalid> {
    interface_name(&tun.name).map_err(|m| ("tun.name", m))?;
    if tun.name == lan_interface {
        return Err(("tun.name", "must differ from lan.interface".into()));
    }
    if !(576..=1500).contains(&tun.mtu) {
        return Err(("tun.mtu", format!("{} is outside 576..=1500", tun.mtu)));
    }
    Ok(())
}

/// Peers: never this router itself, each listed once.
fn validate_peers(me: &SiteId, peers: &[PeerConfig]) -> Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for peer in peers {
        if &peer.site == me {
            return Err(("peers", format!("site {} is this router itself", peer.site)));
        }
        if !seen.insert(peer.site.clone()) {
            return Err(("peers", format!("site {} is listed twice", peer.site)));
        }
    }
    Ok(())
}

/// Relayed peers: through another listed peer that is reached directly, never through this
/// router or the peer itself, and with a TUN MTU that leaves room for the relayed QUIC
/// connection's own packets (at least the 1200 bytes QUIC needs) inside a relay datagram.
fn validate_relayed(me: &SiteId, peers: &[PeerConfig], tun_mtu: u16) -> Result<(), Invalid> {
    for peer in peers {
        let Some(via) = &peer.via else { continue };
        let site = &peer.site;
        if via == me {
            return Err((
                "peers.via",
                format!("peer {site} is relayed via this router itself; name another router"),
            ));
        }
        if via == site {
            return Err((
                "peers.via",
                format!("peer {site} cannot be relayed via itself; name a third router"),
            ));
        }
        if peer.address.is_some() {
            return Err((
                "peers.via",
                format!("peer {site} has both address and via: keep one"),
            ));
        }
        let Some(relay) = peers.iter().find(|p| &p.site == via) else {
            return Err((
                "peers.via",
                format!("peer {site} is relayed via {via}, which is not a listed peer"),
            ));
        };
        if let Some(next) = &relay.via {
            return Err((
                "peers.via",
                format!(
                    "peer {site} is relayed via {via}, which is itself relayed via {next}: \
                     a relay must be reached directly"
                ),
            ));
        }
        let needed = relay::min_tun_mtu(me, site);
        if usize::from(tun_mtu) < needed {
            return Err((
                "tun.mtu",
                format!(
                    "{tun_mtu} is too small for peer {site} relayed via {via}: a relayed \
                     connection needs at least {needed}"
                ),
            ));
        }
    }
    Ok(())
}

/// Migration settings within their ranges.
fn validate_migration(migration: &MigrationConfig) -> Result<(), Invalid> {
    if migration.probe_timeout_ms.is_some() {
        return Err((
            "migration.probe_timeout_ms",
            "was split in two: `confirm_timeout_ms` (how long the destination probes for a \
             migrated VM, default 3000) and `still_here_timeout_ms` (how long the old site \
             probes for a host that left, default 1000); see README.md"
                .into(),
        ));
    }
    if migration.confirm_timeout_ms == 0 || migration.confirm_timeout_ms > MAX_CONFIRM_TIMEOUT_MS {
        return Err((
            "migration.confirm_timeout_ms",
            format!("must be between 1 and {MAX_CONFIRM_TIMEOUT_MS}"),
        ));
    }
    if migration.still_here_timeout_ms == 0 || migration.still_here_timeout_ms > 10_000 {
        return Err((
            "migration.still_here_timeout_ms",
            "must be between 1 and 10000".into(),
        ));
    }
    if migration.prepare_window_s == 0 || migration.prepare_window_s > 3600 {
        return Err((
            "migration.prepare_window_s",
            "must be between 1 and 3600".into(),
        ));
    }
    if migration.max_moves == 0 {
        return Err(("migration.max_moves", "must be at least 1".into()));
    }
    Ok(())
}

fn interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("must be an interface name of 1 to 15 characters".into());
    }
    Ok(())
}

/// Whether `inner` lies inside `outer` (same or longer prefix).
fn within(inner: &Ipv4Network, outer: &Ipv4Network) -> bool {
    outer.contains(inner.network()) && outer.prefix() <= inner.prefix()
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
    fn the_core_gets_the_sites_prefixes_hosts_peers_and_migration_settings() {
        let text = GOOD.replace(
            "[[peers]]\nsite = \"b\"",
            "[migration]\ntakeover = \"confirmed\"\nconfirm_timeout_ms = 120\n\
             still_here_timeout_ms = 80\nprepare_window_s = 30\nmax_moves = 3\nfreeze_s = 60\n\
             pinned = [\"10.77.1.9\"]\n[[peers]]\nsite = \"b\"",
        );
        let config = parse(&text).unwrap();
        let lan = LanIdentity {
            mac: "52:54:00:00:00:01".parse().unwrap(),
            ip: "10.77.1.254".parse().unwrap(),
        };
        let node = config.node_config(Some(lan));
        assert_eq!(node.me, config.site);
        assert_eq!(node.prefixes, config.lan.prefixes);
        assert_eq!(node.lndt_ranges, config.lan.prefixes);
        let peers: Vec<&str> = node.peers.iter().map(SiteId::as_str).collect();
        assert_eq!(peers, ["b", "c"]);
        assert_eq!(node.lan, Some(lan));
        assert_eq!(node.virtual_network, None);
        assert_eq!(node.takeover, Takeover::Confirmed);
        assert_eq!(node.confirm_timeout, Duration::from_millis(120));
        assert_eq!(node.still_here_timeout, Duration::from_millis(80));
        assert_eq!(node.prepare_window, Duration::from_secs(30));
        assert_eq!(node.damping.max_moves, 3);
        assert_eq!(node.damping.window, Duration::from_secs(180));
        assert_eq!(node.damping.freeze, Duration::from_secs(60));
        assert_eq!(node.pinned, ["10.77.1.9".parse::<Ipv4Addr>().unwrap()]);
    }

    #[test]
    fn the_old_probe_timeout_is_refused_with_what_replaced_it() {
        let text = GOOD.replace(
            "[[peers]]\nsite = \"b\"",
            "[migration]\nprobe_timeout_ms = 300\n[[peers]]\nsite = \"b\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("migration.probe_timeout_ms"), "{err}");
        assert!(
            err.contains("confirm_timeout_ms") && err.contains("still_here_timeout_ms"),
            "{err}"
        );
        let defaults = parse(GOOD).unwrap().node_config(None);
        assert_eq!(defaults.takeover, Takeover::Optimistic);
        assert_eq!(defaults.confirm_timeout, Duration::from_secs(3));
        assert_eq!(defaults.still_here_timeout, Duration::from_secs(1));
        assert_eq!(defaults.prepare_window, Duration::from_secs(60));
    }

    #[test]
    fn relay_and_via_reach_the_relay_policy() {
        let text = GOOD
            .replace("site = \"a\"\n", "site = \"a\"\nrelay = true\n")
            .replace("site = \"c\"", "site = \"c\"\nvia = \"b\"");
        let config = parse(&text).unwrap();
        assert!(config.relay);
        let policy = config.relay_policy();
        assert!(policy.relays());
        let (b, c) = (SiteId::new("b").unwrap(), SiteId::new("c").unwrap());
        assert_eq!(policy.via(&c), Some(&b));
        assert_eq!(policy.via(&b), None);
        assert!(!parse(GOOD).unwrap().relay_policy().relays());
    }

    #[test]
    fn nonsense_relaying_is_refused_with_the_reason() {
        let via = |peer_c: &str| GOOD.replace("site = \"c\"", peer_c);
        let cases = [
            (via("site = \"c\"\nvia = \"a\""), "via this router itself"),
            (
                via("site = \"c\"\nvia = \"c\""),
                "cannot be relayed via itself",
            ),
            (
                via("site = \"c\"\nvia = \"x\""),
                "x, which is not a listed peer",
            ),
            (
                via("site = \"c\"\nvia = \"b\"\naddress = \"100.64.0.3:7400\""),
                "both address and via",
            ),
            (
                GOOD.replace("site = \"c\"", "site = \"c\"\nvia = \"b\"")
                    .replace(
                        "address = \"100.64.0.2:7400\"",
                        "via = \"d\"\n[[peers]]\nsite = \"d\"",
                    ),
                "itself relayed via d",
            ),
            (
                via("site = \"c\"\nvia = \"b\"").replace(
                    "[[peers]]\nsite = \"b\"",
                    "[tun]\nmtu = 1100\n[[peers]]\nsite = \"b\"",
                ),
                "1100 is too small for peer c relayed via b",
            ),
        ];
        for (text, reason) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(reason), "expected {reason:?} in: {err}");
        }
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
            (
                GOOD.replace("\"lan0\"", "\"a-very-long-name0\""),
                "lan.interface",
            ),
            (
                GOOD.replace(
                    "[\"10.77.1.0/24\"]",
                    "[\"10.77.1.0/24\", \"10.77.1.128/25\"]",
                ),
                "lan.prefixes",
            ),
            (
                GOOD.replace("[wan]", "virtual_network = \"10.78.0.0/16\"\n[wan]"),
                "lan.virtual_network",
            ),
            (
                GOOD.replace(
                    "[[peers]]\nsite = \"b\"",
                    "[tun]\nname = \"lan0\"\n[[peers]]\nsite = \"b\"",
                ),
                "tun.name",
            ),
            (GOOD.replace("site = \"c\"", "site = \"b\""), "peers"),
            (
                GOOD.replace(
                    "[[peers]]\nsite = \"b\"",
                    "[migration]\nmax_moves = 0\n[[peers]]\nsite = \"b\"",
                ),
                "migration.max_moves",
            ),
            (
                GOOD.replace(
                    "[[peers]]\nsite = \"b\"",
                    "[migration]\nconfirm_timeout_ms = 0\n[[peers]]\nsite = \"b\"",
                ),
                "migration.confirm_timeout_ms",
            ),
            (
                GOOD.replace(
                    "[[peers]]\nsite = \"b\"",
                    "[migration]\nstill_here_timeout_ms = 20000\n[[peers]]\nsite = \"b\"",
                ),
                "migration.still_here_timeout_ms",
            ),
            (
                GOOD.replace(
                    "[[peers]]\nsite = \"b\"",
                    "[migration]\nprepare_window_s = 0\n[[peers]]\nsite = \"b\"",
                ),
                "migration.prepare_window_s",
            ),
            (
                GOOD.replace(
                    "[[peers]]\nsite = \"b\"",
                    "[migration]\ntakeover = \"eventually\"\n[[peers]]\nsite = \"b\"",
                ),
                "takeover",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "expected {key} in: {err}");
        }
    }
}
