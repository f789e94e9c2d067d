//! Validation of a parsed [`Config`]: every rejected value named by its key.

use std::collections::BTreeSet;
use std::path::Path;

use ipnetwork::Ipv4Network;
use skyvine_tables::SiteId;

use super::{
    default_tun_name, Config, ConfigError, LanConfig, MigrationConfig, Network, PeerConfig,
    TunConfig, WanConfig, LINK_NETWORK, MAX_CONFIRM_TIMEOUT_MS,
};
use crate::relay;

impl Config {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate_networks()
            .and_then(|()| validate_wan(&self.wan))
            .and_then(|()| validate_peers(&self.site, &self.peers))
            .and_then(|()| validate_relayed(&self.site, &self.peers, self.tun.mtu))
            .and_then(|()| validate_migration(&self.migration))
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                key: key.to_owned(),
                message,
            })
    }

    /// `[lan]` or `[[networks]]`, one of them; each network's LAN section valid; names, ids,
    /// LAN interfaces, TUN devices and VRF tables unique across networks. Prefixes may overlap
    /// across networks (they are isolated), never within one.
    fn validate_networks(&self) -> Result<(), Invalid> {
        match (&self.lan, self.networks.is_empty()) {
            (Some(_), false) => {
                return Err((
                    "networks",
                    "a config has either `[lan]` (one network) or `[[networks]]`, not both: \
                     move the `[lan]` section into a `[[networks]]` entry"
                        .into(),
                ))
            }
            (None, true) => {
                return Err((
                    "lan",
                    "missing: declare the site's LAN with `[lan]`, or several networks with \
                     `[[networks]]`"
                        .into(),
                ))
            }
            (Some(lan), true) => {
                validate_lan(lan, LanKeys::TOP)?;
                return validate_tun(&self.tun, &lan.interface);
            }
            (None, false) => {}
        }
        if self.tun.name != default_tun_name() {
            return Err((
                "tun.name",
                "applies to the single `[lan]` network; with `[[networks]]` name each \
                 network's device with its `tun` key"
                    .into(),
            ));
        }
        validate_tun(&self.tun, "")?;
        let networks = self.resolve_networks();
        for (i, (network, declared)) in networks.iter().zip(&self.networks).enumerate() {
            network_name(&network.name).map_err(|m| ("networks.name", m))?;
            if network.id == LINK_NETWORK {
                return Err((
                    "networks.id",
                    format!("{} is reserved; use 0-{}", LINK_NETWORK, LINK_NETWORK - 1),
                ));
            }
            validate_lan(&network.lan, LanKeys::NETWORK)
                .map_err(|(key, m)| (key, format!("network {}: {m}", network.name)))?;
            interface_name(&network.tun).map_err(|m| ("networks.tun", m))?;
            if declared
                .vrf_table
                .is_some_and(|t| t == 0 || (253..=255).contains(&t))
            {
                return Err((
                    "networks.vrf_table",
                    "must not be 0 or one of the kernel's own tables (253 default, 254 main, 255 local)".into(),
                ));
            }
            for site in network.peers.iter().flatten() {
                if !self.peers.iter().any(|p| &p.site == site) {
                    return Err((
                        "networks.peers",
                        format!("network {}: {site} is not one of [[peers]]", network.name),
                    ));
                }
            }
            for other in networks.iter().take(i) {
                unique_network(network, other)?;
            }
        }
        Ok(())
    }
}

/// Two networks of one router share no name, id, LAN interface, TUN device or VRF table, and
/// no network's TUN device is another's LAN interface.
fn unique_network(a: &Network, b: &Network) -> Result<(), Invalid> {
    let (na, nb) = (&a.name, &b.name);
    if na == nb {
        return Err(("networks.name", format!("{na} is declared twice")));
    }
    if a.id == b.id {
        return Err((
            "networks.id",
            format!("networks {nb} and {na} both have id {}", a.id),
        ));
    }
    if a.lan.interface == b.lan.interface {
        return Err((
            "networks.lan.interface",
            format!(
                "{} is in networks {nb} and {na}: a LAN interface belongs to one network",
                a.lan.interface
            ),
        ));
    }
    if [&a.tun, &a.lan.interface].contains(&&b.tun) || a.tun == b.lan.interface {
        return Err((
            "networks.tun",
            format!("networks {nb} and {na}: each needs a TUN device of its own, apart from the LAN interfaces"),
        ));
    }
    if a.vrf.as_ref().map(|v| v.table) == b.vrf.as_ref().map(|v| v.table) {
        return Err((
            "networks.vrf_table",
            format!("networks {nb} and {na} would share a routing table"),
        ));
    }
    Ok(())
}

/// A network name: 1-15 characters of a-z, A-Z, 0-9, '-', '_'.
fn network_name(name: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1-15 characters of a-z, A-Z, 0-9, '-' and '_'"
        ))
    }
}

/// The keys a LAN section's errors name: `lan.*` at the top, `networks.lan.*` in a network.
#[derive(Clone, Copy)]
struct LanKeys {
    interface: &'static str,
    prefixes: &'static str,
    hosts: &'static str,
    address: &'static str,
    virtual_network: &'static str,
}

impl LanKeys {
    const TOP: LanKeys = LanKeys {
        interface: "lan.interface",
        prefixes: "lan.prefixes",
        hosts: "lan.hosts",
        address: "lan.address",
        virtual_network: "lan.virtual_network",
    };
    const NETWORK: LanKeys = LanKeys {
        interface: "networks.lan.interface",
        prefixes: "networks.lan.prefixes",
        hosts: "networks.lan.hosts",
        address: "networks.lan.address",
        virtual_network: "networks.lan.virtual_network",
    };
}

/// A rejected value: the key that names it, and what is wrong with it.
type Invalid = (&'static str, String);

/// The LAN section: interface name, prefixes (canonical, disjoint), hosts inside them, and the
/// virtual network around them. Errors name the key.
fn validate_lan(lan: &LanConfig, keys: LanKeys) -> Result<(), Invalid> {
    interface_name(&lan.interface).map_err(|m| (keys.interface, m))?;
    if lan.prefixes.is_empty() {
        return Err((
            keys.prefixes,
            "list at least one prefix this site owns".into(),
        ));
    }
    for net in &lan.prefixes {
        check_canonical(net).map_err(|m| (keys.prefixes, m))?;
    }
    for (i, a) in lan.prefixes.iter().enumerate() {
        for b in lan.prefixes.iter().skip(i + 1) {
            if a.contains(b.network()) || b.contains(a.network()) {
                return Err((keys.prefixes, format!("{a} and {b} overlap")));
            }
        }
    }
    for net in lan.hosts.iter().flatten() {
        check_canonical(net).map_err(|m| (keys.hosts, m))?;
        if !lan.prefixes.iter().any(|p| within(net, p)) {
            return Err((
                keys.hosts,
                format!("{net} is not inside any of lan.prefixes"),
            ));
        }
    }
    if let Some(address) = lan.address {
        if !lan.prefixes.iter().any(|p| p.contains(address)) {
            return Err((
                keys.address,
                format!("{address} is not inside any of lan.prefixes"),
            ));
        }
    }
    if let Some(vnet) = &lan.virtual_network {
        check_canonical(vnet).map_err(|m| (keys.virtual_network, m))?;
        if let Some(p) = lan.prefixes.iter().find(|p| !within(p, vnet)) {
            return Err((
                keys.virtual_network,
                format!("{vnet} must contain every site prefix, but not {p}"),
            ));
        }
    }
    Ok(())
}

/// The WAN section's timers: a keep-alive of 100 ms to 10 s, and an idle timeout of 1 s to
/// 60 s that leaves room for two keep-alives.
fn validate_wan(wan: &WanConfig) -> Result<(), Invalid> {
    if !(100..=10_000).contains(&wan.keep_alive_ms) {
        return Err((
            "wan.keep_alive_ms",
            format!("{} is outside 100..=10000", wan.keep_alive_ms),
        ));
    }
    if !(1_000..=60_000).contains(&wan.idle_timeout_ms) {
        return Err((
            "wan.idle_timeout_ms",
            format!("{} is outside 1000..=60000", wan.idle_timeout_ms),
        ));
    }
    if wan.idle_timeout_ms < 2 * wan.keep_alive_ms {
        return Err((
            "wan.idle_timeout_ms",
            format!(
                "{} ms leaves no room for two keep-alives of {} ms: lost one, the connection would drop",
                wan.idle_timeout_ms, wan.keep_alive_ms
            ),
        ));
    }
    Ok(())
}

/// The TUN section: an interface name other than the LAN's, and an MTU that fits.
fn validate_tun(tun: &TunConfig, lan_interface: &str) -> Result<(), Invalid> {
    // `lan_interface` is empty with `[[networks]]`: each network's own `tun` is checked there.
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
