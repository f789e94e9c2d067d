//! The admin socket's wire format: one JSON request per line, one JSON response per line.
//!
//! A request is an object tagged by `"request"`, e.g. `{"request":"route","address":"10.77.1.1"}`;
//! a response is `{"ok":{"<kind>":{...}}}` or `{"error":"<why>"}`. Times are ages in seconds
//! relative to when the router answered; migration steps are offsets from detection in ms.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use skyvine_core::node::{Counter, Counters};
use skyvine_tables::{MacAddr, SiteId};

/// Longest request line accepted, newline included; a longer one closes the connection.
pub const MAX_LINE: usize = 64 * 1024;

/// A question for the router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Version, site, uptime, counts and warnings, of one network (on a router with several
    /// and none named: the first, and the list of all).
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// One table, or all three when `table` is absent.
    Tables {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<TableName>,
        /// The network asked about (by name); without it, the router's only network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Which GNDT entry `address` matches, and which covering entries it beat.
    Route {
        address: Ipv4Addr,
        /// The network asked about (by name); without it, the router's only network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Peer routers with their connections and counters, per network (all without a name).
    Peers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Recent migrations seen by this router, per network (all without a name).
    Migrations {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// A planned migration: the VM at `mac` (address `ip`, or the one advertised for `mac`) is
    /// about to move to site `to`. Changes the router's state (root only, like every request).
    Prepare {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<Ipv4Addr>,
        mac: MacAddr,
        to: SiteId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_s: Option<u64>,
        /// The network asked about (by name); without it, the router's only network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Ends the planned migration of `ip` (or of the VM at `mac`).
    Cancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<MacAddr>,
        /// The network asked about (by name); without it, the router's only network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
}

/// The router's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TableName {
    /// Global network description table: prefix and host owners.
    Gndt,
    /// Local network description table: hosts this router is responsible for.
    Lndt,
    /// Hardware description table: IP <-> MAC bindings.
    Hwdt,
}

/// One response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Box<Reply>),
    Error(String),
}

/// A successful answer, tagged by request kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Status(StatusView),
    Tables(TablesView),
    Route(RouteView),
    Peers(PeersView),
    Migrations(MigrationsView),
    Hint(HintView),
}

/// What `skyvine migration prepare` or `cancel` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HintView {
    /// The router that answered.
    pub site: SiteId,
    /// announced (this router owns the address and told every router), forwarded (asked
    /// the owner, which alone may announce it), or cancelled.
    pub outcome: String,
    pub ip: Ipv4Addr,
    /// The address's owner (the move's source).
    pub owner: SiteId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<SiteId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
}

/// One planned migration in its window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreparedRow {
    /// The virtual network this is about.
    #[serde(default)]
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub from: SiteId,
    pub to: SiteId,
    /// Seconds since the window opened, and until it closes without an announcement.
    pub age_s: f64,
    pub left_s: f64,
}

/// Whether a GNDT entry is a site prefix or a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Prefix,
    Host,
}

/// One GNDT entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GndtRow {
    pub prefix: Ipv4Network,
    pub kind: Kind,
    /// The owning site (the origin of the entry's version).
    pub site: SiteId,
    pub seq: u64,
    pub origin: SiteId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// A tombstone: never matches, only stops older versions.
    pub withdrawn: bool,
    /// Owned by the router that answered.
    pub local: bool,
    /// Seconds since this router installed the current version.
    pub age_s: f64,
}

/// Where an LNDT host came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LndtOrigin {
    Configured,
    MigratedIn,
}

/// One LNDT entry: a configured range or a host that migrated in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LndtRow {
    pub prefix: Ipv4Network,
    pub source: LndtOrigin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub age_s: f64,
}

/// The LNDT: hosts this router is responsible for, and configured ones that moved away.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LndtView {
    pub hosts: Vec<LndtRow>,
    pub moved_away: Vec<Ipv4Addr>,
}

/// Where an HWDT binding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingOrigin {
    Lan,
    Configured,
}

/// One HWDT binding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HwdtRow {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub source: BindingOrigin,
    /// Seconds since the binding was first and last seen.
    pub first_seen_s: f64,
    pub last_seen_s: f64,
}

/// The tables asked for (absent ones were not asked for).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TablesView {
    pub site: SiteId,
    /// The virtual network this is about.
    #[serde(default)]
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gndt: Option<Vec<GndtRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lndt: Option<LndtView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwdt: Option<Vec<HwdtRow>>,
}

/// How an address is routed and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub address: Ipv4Addr,
    /// The virtual network this is about.
    #[serde(default)]
    pub network: String,
    /// The router that answered.
    pub site: SiteId,
    /// The longest live prefix containing the address, if any.
    pub matched: Option<GndtRow>,
    /// The other live entries containing the address, longest first: the match beat them.
    pub beaten: Vec<GndtRow>,
    /// Whether this router's LNDT lets the address send through the overlay.
    pub in_lndt: bool,
}

/// One peer router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// The virtual network this is about.
    #[serde(default)]
    pub network: String,
    pub site: SiteId,
    /// Named in the configuration (otherwise it dialed in with a valid certificate).
    pub configured: bool,
    pub connected: bool,
    /// Its full table arrived on the current connection.
    pub synced: bool,
    /// Seconds since the connection came up (or went down).
    pub since_s: f64,
    /// The connection's remote address, or the configured one while down (none for a path
    /// through a relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// The relay the connection travels through (while down: the configured one); none for a
    /// direct path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<SiteId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// QUIC packets the connection declared lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_packets: Option<u64>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Relay datagrams from this peer that this router passed on to another (`relay = true`).
    #[serde(default)]
    pub relayed_packets: u64,
    #[serde(default)]
    pub relayed_bytes: u64,
}

/// Peers and the data plane's drops (by reason, for all peers together).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeersView {
    pub site: SiteId,
    pub peers: Vec<PeerRow>,
    pub drops: BTreeMap<String, u64>,
}

/// How a migration ended at this router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    InProgress,
    Applied,
    Refused,
}

/// One migration with the offset of each step from its detection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationRow {
    /// The virtual network this is about.
    #[serde(default)]
    pub network: String,
    pub id: u64,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<MacAddr>,
    pub from: Option<SiteId>,
    pub to: SiteId,
    /// destination, source or third.
    pub role: String,
    /// rarp, garp, traffic or peer.
    pub detection: String,
    pub outcome: OutcomeName,
    /// For a refused migration: the reason's name (frozen, pinned, unconfirmed, unresolved,
    /// still_here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since detection.
    pub age_s: f64,
    pub resolved_ms: Option<f64>,
    pub confirmed_ms: Option<f64>,
    pub advertised_ms: Option<f64>,
    pub applied_ms: Option<f64>,
}

/// Recent migrations, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationsView {
    pub site: SiteId,
    pub migrations: Vec<MigrationRow>,
    /// Planned migrations in their window (`skyvine migration prepare`).
    #[serde(default)]
    pub prepared: Vec<PreparedRow>,
}

/// The router's LAN address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LanView {
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// Table sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub gndt_prefixes: u64,
    pub gndt_hosts: u64,
    pub gndt_withdrawn: u64,
    pub lndt_configured: u64,
    pub lndt_migrated_in: u64,
    pub lndt_moved_away: u64,
    pub hwdt_bindings: u64,
    pub peers_configured: u64,
    pub peers_up: u64,
    pub migrations_applied: u64,
    pub migrations_refused: u64,
    pub migrations_in_progress: u64,
}

/// What the router's core counted (LAN frames, refusals, entries over the limits), by
/// [`Counter::name`]: one key per counter of [`Counter::ALL`]. A name an older router does not
/// send reads 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CountersView(pub BTreeMap<String, u64>);

impl CountersView {
    pub fn new(counters: &Counters) -> Self {
        CountersView(
            counters
                .iter()
                .map(|(counter, n)| (counter.name().to_owned(), n))
                .collect(),
        )
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0.get(counter.name()).copied().unwrap_or(0)
    }
}

/// `skyvine status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub site: SiteId,
    /// The virtual network this is about.
    #[serde(default)]
    pub network: String,
    /// Every network this router carries.
    #[serde(default)]
    pub networks: Vec<String>,
    pub uptime_s: f64,
    pub lan: LanView,
    pub counts: Counts,
    pub lan_counters: CountersView,
    /// net.ipv4.ip_forward in the router's network namespace (None if unreadable).
    pub ip_forward: Option<bool>,
    /// Things an operator should look at, one sentence each.
    pub warnings: Vec<String>,
}
