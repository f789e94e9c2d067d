//! Kernel routes and neighbour entries, reconciled against a desired set.
//!
//! The router owns three kinds of kernel state per network, in the main IPv4 table (a config
//! with one `[lan]`) or in the routing table of the network's VRF ([`vrf`]: `[[networks]]`,
//! whose TUN and LAN devices are enslaved to it, so the kernel keeps networks apart even when
//! they reuse addresses):
//!
//! * `ip route add PREFIX dev <tun> proto 90 scope link` for every prefix that lives at another
//!   site (remote site prefixes, and /32s of VMs that migrated away), with `mtu N` when the site
//!   is reached through a relay (its packets must leave room for the relayed connection's own
//!   header, and the kernel then answers larger ones with "fragmentation needed");
//! * `ip route add IP/32 dev <lan> proto 90 scope link` for every VM that migrated in; being a
//!   /32 it wins over the LAN's own connected prefix and over a remote site's prefix via TUN;
//! * `ip neigh replace IP lladdr MAC dev <lan> nud permanent proto 90` for those VMs whose MAC is
//!   known, so that the kernel never has to ARP for them.
//!
//! Everything carries the route protocol [`RTPROT_SKYVINE`], which is how skyvine recognises
//! its own entries. Two ways to change them:
//!
//! * [`Kernel::apply_op`]: one targeted change the core asked for ([`KernelOp`]), one netlink
//!   request per route or neighbour entry (a replace, never delete-then-add). A migration's
//!   critical path only ever takes this way.
//! * [`Kernel::reconcile`] (and its halves, a [`Dumper`] and [`Kernel::repair`]): dumps what
//!   the kernel holds with our protocol, diffs it against the desired set and applies only the
//!   difference. The daemon runs it at start, after a failed targeted change and on a timer,
//!   with the dump on a task of its own; it removes what a crashed previous instance left
//!   behind and repairs what an operator deleted by hand. It never replays a log of changes.
//!
//! Nothing without our protocol is ever touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use netlink_packet_route::route::RouteHeader;
use rtnetlink::Handle;
use skyvine_core::node::{KernelOp, KernelRoute};
use skyvine_tables::MacAddr;

mod diff;
mod netlink;
pub mod vrf;

use diff::{desired_entries, plan};
use netlink::resolve;
pub use netlink::Dumper;

/// The route protocol number of every route and neighbour entry skyvine installs.
///
/// 90 (0x5a) is unassigned in iproute2's `rt_protos` (assigned: 0-4, 8-18, 42, 99, 186-192) and
/// in the kernel's `RTPROT_*` list. `ip route show proto 90` lists skyvine's routes;
/// adding `90 skyvine` to `/etc/iproute2/rt_protos.d/skyvine.conf` names them.
pub const RTPROT_SKYVINE: u8 = 90;

/// What the kernel should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every prefix routed into the TUN device (host bits are ignored).
    pub tun_routes: BTreeSet<Ipv4Network>,
    /// Every host routed on the LAN interface as a /32 (VMs that migrated in), with a permanent
    /// neighbour entry when its MAC is known. A host that is also in `tun_routes` as a /32 is
    /// routed on the LAN: the kernel holds one route per prefix.
    pub lan_hosts: BTreeMap<Ipv4Addr, Option<MacAddr>>,
    /// A route MTU for some of `tun_routes` (those towards relayed sites); the others use
    /// the TUN device's MTU.
    pub route_mtus: BTreeMap<Ipv4Network, u32>,
}

/// The interface a kernel entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dev {
    Tun,
    Lan,
    /// Any other interface, by index: only ever a leftover to remove.
    Other(u32),
}

/// One route or neighbour entry carrying [`RTPROT_SKYVINE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Route {
        dst: Ipv4Network,
        dev: Dev,
        /// The route's MTU metric, if it has one.
        mtu: Option<u32>,
    },
    Neighbour {
        ip: Ipv4Addr,
        mac: MacAddr,
        dev: Dev,
    },
}

/// What one reconcile changed in the kernel, for logging at info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Entry>,
    pub removed: Vec<Entry>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// One kernel change that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `true` when adding `entry` failed, `false` when removing it failed.
    pub adding: bool,
    pub entry: Entry,
    pub error: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.adding { "add" } else { "remove" };
        write!(f, "{verb} {}: {}", self.entry, self.error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("opening a netlink socket: {0}")]
    Socket(io::Error),
    #[error("the kernel netlink connection needs a tokio runtime: {0}")]
    NoRuntime(tokio::runtime::TryCurrentError),
    #[error("interface {name:?} does not exist")]
    NoSuchInterface { name: String },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    /// Some changes failed; `changes` lists those that were applied.
    #[error("{} kernel change(s) failed: {}", failures.len(), join(failures))]
    Apply {
        changes: Changes,
        failures: Vec<Failure>,
    },
    #[error("{path}: {source}")]
    Sysctl {
        path: &'static str,
        source: io::Error,
    },
    #[error("{0}")]
    Vrf(String),
    #[error("this kernel has no VRFs")]
    VrfUnsupported,
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Sets the per-interface kernel settings a skyvine gateway needs, and says what it changed:
/// - no ICMP redirects on the LAN (`send_redirects`, which Linux ORs with `all`): a router
///   that forwards a migrated VM's packets back out of the LAN would otherwise tell its LAN
///   hosts that the VM is on-link, and they would keep ARPing for it after it leaves;
/// - no IPv6 on the TUN device, which only carries IPv4 (the kernel's own IPv6 packets would
///   be counted as malformed drops).
pub fn prepare_interfaces(lan: &str, tun: &str) -> Vec<String> {
    let settings = [
        ("/proc/sys/net/ipv4/conf/all/send_redirects".to_owned(), "0"),
        (format!("/proc/sys/net/ipv4/conf/{lan}/send_redirects"), "0"),
        (format!("/proc/sys/net/ipv6/conf/{tun}/disable_ipv6"), "1"),
    ];
    let mut changed = Vec::new();
    for (path, value) in settings {
        match std::fs::read_to_string(&path) {
            Ok(current) if current.trim() == value => {}
            Ok(_) => match std::fs::write(&path, value) {
                Ok(()) => changed.push(format!("{path}={value}")),
                Err(error) => tracing::warn!(path, %error, "cannot change a kernel setting"),
            },
            // IPv6 may be compiled out or disabled altogether: nothing to do then.
            Err(error) => tracing::debug!(path, %error, "kernel setting not present"),
        }
    }
    changed
}

/// Whether the kernel forwards IPv4 (`net.ipv4.ip_forward`). Setting it is the operator's job;
/// the daemon warns when it is off.
pub fn check_forwarding() -> Result<bool, KernelError> {
    let value = std::fs::read_to_string(IP_FORWARD).map_err(|source| KernelError::Sysctl {
        path: IP_FORWARD,
        source,
    })?;
    Ok(value.trim() != "0")
}

/// A netlink connection that reconciles skyvine's kernel routes and neighbour entries.
///
/// Interface indexes are resolved once, in [`Kernel::connect`]: if the TUN or LAN device is
/// re-created, connect again.
#[derive(Debug)]
pub struct Kernel {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    tun_index: u32,
    lan_index: u32,
    /// The routing table our routes live in: main, or the network's VRF table.
    table: u32,
    /// With a VRF (several networks on one router): only neighbour entries on this network's
    /// own TUN and LAN devices are ours; the others belong to other networks.
    own_devices_only: bool,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Kernel {
    /// Opens a netlink connection (driven by a task on the current tokio runtime) and resolves
    /// the two interfaces. The socket belongs to the calling thread's network namespace.
    pub async fn connect(tun_ifname: &str, lan_ifname: &str) -> Result<Kernel, KernelError> {
        Kernel::connect_in(tun_ifname, lan_ifname, None).await
    }

    /// [`Kernel::connect`] for a network with a VRF (`vrf`): the VRF device is created (or
    /// found, with the same table), brought up, and the TUN and LAN devices enslaved to it;
    /// routes then go to the VRF's table.
    pub async fn connect_in(
        tun_ifname: &str,
        lan_ifname: &str,
        vrf: Option<&vrf::VrfDevice>,
    ) -> Result<Kernel, KernelError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(KernelError::NoRuntime)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(KernelError::Socket)?;
        let connection = runtime.spawn(connection);
        let tun = resolve(&handle, tun_ifname).await;
        let lan = resolve(&handle, lan_ifname).await;
        match (tun, lan) {
            (Ok(tun_index), Ok(lan_index)) => {
                tracing::debug!(
                    tun = tun_ifname,
                    tun_index,
                    lan = lan_ifname,
                    lan_index,
                    "netlink connected"
                );
                let kernel = Kernel {
                    handle,
                    connection,
                    tun_index,
                    lan_index,
                    table: vrf.map_or(u32::from(RouteHeader::RT_TABLE_MAIN), |v| v.table),
                    own_devices_only: vrf.is_some(),
                };
                if let Some(vrf) = vrf {
                    let tun = vrf::Port {
                        index: tun_index,
                        name: tun_ifname,
                    };
                    let lan = vrf::Port {
                        index: lan_index,
                        name: lan_ifname,
                    };
                    vrf::isolate(&kernel.handle, vrf, tun, lan).await?;
                }
                Ok(kernel)
            }
            (Err(e), _) | (_, Err(e)) => {
                connection.abort();
                Err(e)
            }
        }
    }

    /// Makes the kernel hold exactly `desired` among the entries with our protocol: dumps what
    /// is there, adds what is missing, removes what is extra or wrong. "Already exists" and
    /// "already gone" count as success. Returns what changed; if some changes fail, the others
    /// are still applied and [`KernelError::Apply`] lists both.
    pub async fn reconcile(&mut self, desired: &Desired) -> Result<Changes, KernelError> {
        let applied = self.dumper().dump().await?;
        self.repair(applied, desired, &BTreeSet::new()).await
    }

    /// Reads the kernel's entries without borrowing this connection, e.g. on another task.
    pub fn dumper(&self) -> Dumper {
        Dumper {
            handle: self.handle.clone(),
            tun_index: self.tun_index,
            lan_index: self.lan_index,
            table: self.table,
            own_devices_only: self.own_devices_only,
        }
    }

    /// The second half of [`Kernel::reconcile`]: makes the kernel hold `desired`, given what a
    /// dump taken earlier found (`applied`). Prefixes in `skip` (changed by targeted requests
    /// since the dump began, so the dump may predate them) are left alone.
    pub async fn repair(
        &mut self,
        applied: BTreeSet<Entry>,
        desired: &Desired,
        skip: &BTreeSet<Ipv4Network>,
    ) -> Result<Changes, KernelError> {
        let untouched = |entry: &Entry| !skip.contains(&entry.prefix());
        let wanted: BTreeSet<Entry> = desired_entries(desired)
            .into_iter()
            .filter(untouched)
            .collect();
        let applied: BTreeSet<Entry> = applied.into_iter().filter(untouched).collect();
        let plan = plan(&wanted, &applied);
        let mut changes = Changes::default();
        let mut failures = Vec::new();

        for entry in &plan.remove {
            let removed = if plan.replaced(entry) {
                // Overwritten in place by the add below, no gap without an entry.
                Ok(true)
            } else {
                self.remove(entry).await
            };
            match removed {
                Ok(true) => changes.removed.push(*entry),
                Ok(false) => tracing::debug!(%entry, "already gone"),
                Err(error) => failures.push(Failure {
                    adding: false,
                    entry: *entry,
                    error,
                }),
            }
        }
        for entry in &plan.add {
            match self.add(entry, plan.replaces(entry)).await {
                Ok(true) => changes.added.push(*entry),
                Ok(false) => tracing::warn!(
                    %entry,
                    "a route for this prefix that skyvine did not install already exists; \
                     leaving it"
                ),
                Err(error) => failures.push(Failure {
                    adding: true,
                    entry: *entry,
                    error,
                }),
            }
        }
        finish(changes, failures)
    }

    /// One targeted change: at most one neighbour request and one route request (`mtu` is the
    /// route MTU of a route into the TUN towards a relayed site). A new route is added (a route
    /// for the prefix that is not ours makes it fail with "exists": the caller reconciles,
    /// which leaves such a route alone and says so); a route of ours is replaced in place, so a
    /// host moving between the TUN and the LAN is never unrouted.
    pub async fn apply_op(
        &mut self,
        op: &KernelOp,
        mtu: Option<u32>,
    ) -> Result<Changes, KernelError> {
        let mut changes = Changes::default();
        let mut failures = Vec::new();
        let mut note = |result: Result<bool, String>, adding: bool, entry: Entry| match result {
            Ok(true) if adding => changes.added.push(entry),
            Ok(true) => changes.removed.push(entry),
            Ok(false) if adding => failures.push(Failure {
                adding,
                entry,
                error: "a route for this prefix already exists (not installed by skyvine?)".into(),
            }),
            Ok(false) => tracing::debug!(%entry, "already gone"),
            Err(error) => failures.push(Failure {
                adding,
                entry,
                error,
            }),
        };
        match *op {
            KernelOp::Set {
                dst,
                route,
                previous,
            } => {
                let dst = normalize(dst);
                let old_mac = lan_mac(previous);
                let new_mac = lan_mac(Some(route));
                // The neighbour entry before the route, so a host route never exists without
                // its MAC; a stale one goes after the route moved.
                if let Some(mac) = new_mac.filter(|mac| Some(*mac) != old_mac) {
                    let entry = neighbour_entry(dst, mac);
                    note(self.add(&entry, true).await, true, entry);
                }
                if previous.map(dev_of) != Some(dev_of(route)) {
                    let mtu = mtu.filter(|_| route == KernelRoute::Tun);
                    let entry = Entry::Route {
                        dst,
                        dev: dev_of(route),
                        mtu,
                    };
                    let result = self.add(&entry, previous.is_some()).await;
                    note(result, true, entry);
                }
                if let Some(mac) = old_mac.filter(|_| new_mac.is_none()) {
                    let entry = neighbour_entry(dst, mac);
                    note(self.remove(&entry).await, false, entry);
                }
            }
            KernelOp::Remove { dst, previous } => {
                let dst = normalize(dst);
                let entry = Entry::Route {
                    dst,
                    dev: dev_of(previous),
                    mtu: None,
                };
                note(self.remove(&entry).await, false, entry);
                if let Some(mac) = lan_mac(Some(previous)) {
                    let entry = neighbour_entry(dst, mac);
                    note(self.remove(&entry).await, false, entry);
                }
            }
        }
        finish(changes, failures)
    }

    /// Removes every route and neighbour entry with our protocol (graceful shutdown).
    pub async fn clear(&mut self) -> Result<Changes, KernelError> {
        self.reconcile(&Desired::default()).await
    }
}

/// The LAN MAC a route stands for, if any.
fn lan_mac(route: Option<KernelRoute>) -> Option<MacAddr> {
    match route {
        Some(KernelRoute::Lan { mac }) => mac,
        Some(KernelRoute::Tun) | None => None,
    }
}

fn dev_of(route: KernelRoute) -> Dev {
    match route {
        KernelRoute::Tun => Dev::Tun,
        KernelRoute::Lan { .. } => Dev::Lan,
    }
}

fn neighbour_entry(dst: Ipv4Network, mac: MacAddr) -> Entry {
    Entry::Neighbour {
        ip: dst.ip(),
        mac,
        dev: Dev::Lan,
    }
}

/// `changes`, or an error listing the failures beside them.
fn finish(changes: Changes, failures: Vec<Failure>) -> Result<Changes, KernelError> {
    if failures.is_empty() {
        Ok(changes)
    } else {
        Err(KernelError::Apply { changes, failures })
    }
}

fn host(ip: Ipv4Addr) -> Ipv4Network {
    Ipv4Network::from(ip)
}

/// `net` with its host bits cleared, as the kernel stores it.
fn normalize(net: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(net.network(), net.prefix()).unwrap_or(net)
}

fn join(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Entry {
    /// The prefix the entry is for (a neighbour entry's address as a /32).
    pub fn prefix(&self) -> Ipv4Network {
        match self {
            Entry::Route { dst, .. } => *dst,
            Entry::Neighbour { ip, .. } => host(*ip),
        }
    }
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dev::Tun => f.write_str("tun"),
            Dev::Lan => f.write_str("lan"),
            Dev::Other(index) => write!(f, "ifindex {index}"),
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Route {
                dst,
                dev,
                mtu: None,
            } => write!(f, "route {dst} dev {dev}"),
            Entry::Route {
                dst,
                dev,
                mtu: Some(mtu),
            } => write!(f, "route {dst} dev {dev} mtu {mtu}"),
            Entry::Neighbour { ip, mac, dev } => write!(f, "neighbour {ip} lladdr {mac} dev {dev}"),
        }
    }
}

#[cfg(test)]
mod tests;
