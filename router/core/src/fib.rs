//! The forwarding view of the tables that the data plane consults for every packet.
//!
//! The control plane hands out a new immutable [`FibSnapshot`] whenever the GNDT or LNDT
//! changes ([`crate::node::Node::fib_snapshot`]); the daemon publishes it to its packet tasks,
//! which consult it without waiting for the control plane. A [`FibWriter`] makes each new
//! snapshot from the changes alone, so its cost does not grow with the table.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use prefix_trie::PrefixMap;
use skyvine_tables::{Gndt, Lndt, SiteId};

/// Why the data plane dropped a packet. Counted per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not an IPv4 packet, or a truncated header.
    Malformed,
    /// Outbound: the source is not a host this router is responsible for (not in the LNDT).
    SourceNotLocal,
    /// Outbound: no GNDT entry covers the destination.
    NoRoute,
    /// Outbound: the destination belongs to this site; the kernel should not have sent it here.
    DestinationLocal,
    /// Outbound: the owning site's router is not connected.
    PeerDown,
    /// Inbound: the sending site does not own the packet's source address in the GNDT.
    SpoofedSource,
    /// The packet does not fit a QUIC datagram on this path.
    TooBig,
    /// A queue towards the TUN device or a peer was full.
    QueueFull,
    /// A relay datagram for a network this router does not carry.
    RelayNetwork,
    /// A relay datagram to pass on, but this router has no `relay = true`.
    RelayDisabled,
    /// A relay datagram from or to a site that is not a listed peer reached directly.
    RelayUnlisted,
    /// A relay datagram whose source is not the peer that sent it, or that names its sender as
    /// its destination.
    RelaySpoofed,
    /// A relay datagram for this router from a source that is not configured `via` the peer
    /// that relayed it.
    RelayUnexpected,
    /// Inbound: a copy for a VM whose planned migration to this site has not happened yet.
    NotArrived,
    /// Inbound: the destination is not an address of this site.
    DestinationNotLocal,
    /// Inbound: a datagram for a network this router does not carry, or that the sending
    /// peer is not part of here.
    UnknownNetwork,
}

impl DropReason {
    pub const ALL: [DropReason; 16] = [
        DropReason::Malformed,
        DropReason::SourceNotLocal,
        DropReason::NoRoute,
        DropReason::DestinationLocal,
        DropReason::PeerDown,
        DropReason::SpoofedSource,
        DropReason::TooBig,
        DropReason::QueueFull,
        DropReason::RelayNetwork,
        DropReason::RelayDisabled,
        DropReason::RelayUnlisted,
        DropReason::RelaySpoofed,
        DropReason::RelayUnexpected,
        DropReason::NotArrived,
        DropReason::DestinationNotLocal,
        DropReason::UnknownNetwork,
    ];

    /// A stable snake_case name for logs, metrics and the admin CLI.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::SourceNotLocal => "source_not_local",
            DropReason::NoRoute => "no_route",
            DropReason::DestinationLocal => "destination_local",
            DropReason::PeerDown => "peer_down",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::TooBig => "too_big",
            DropReason::QueueFull => "queue_full",
            DropReason::RelayNetwork => "relay_network",
            DropReason::RelayDisabled => "relay_disabled",
            DropReason::RelayUnlisted => "relay_unlisted",
            DropReason::RelaySpoofed => "relay_spoofed",
            DropReason::RelayUnexpected => "relay_unexpected",
            DropReason::NotArrived => "not_arrived",
            DropReason::DestinationNotLocal => "destination_not_local",
            DropReason::UnknownNetwork => "unknown_network",
        }
    }
}

/// Hosts that moved recently. Packets already in flight to a host's old site when it moved
/// would be lost there: the old site relays them to the new one, which accepts them for a
/// short while from that site only.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Relays {
    /// At the old site: hosts that left, their new site, and until when to relay.
    pub departed: HashMap<Ipv4Addr, (SiteId, Instant)>,
    /// At the new site: hosts that arrived, the site they left, and until when to accept.
    pub arrived: HashMap<Ipv4Addr, (SiteId, Instant)>,
}

/// An immutable forwarding view: GNDT owners by longest prefix, and the LNDT membership test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibSnapshot {
    me: SiteId,
    /// Owners of live /32 entries: an exact match beats any shorter prefix.
    hosts: HashMap<Ipv4Addr, SiteId>,
    /// Owners of live entries shorter than /32 (site prefixes: few, and rarely changing),
    /// shared between successive snapshots until one of them changes.
    prefixes: Arc<PrefixMap<Ipv4Network, SiteId>>,
    /// The LNDT's configured ranges,
    local: Vec<Ipv4Network>,
    /// less the hosts that moved away,
    local_exceptions: HashSet<Ipv4Addr>,
    /// plus the hosts that moved in.
    local_extra: HashSet<Ipv4Addr>,
    relays: Relays,
    /// Planned migrations elsewhere: hosts whose packets also go to this site.
    copy_to: HashMap<Ipv4Addr, SiteId>,
    /// Planned migrations here: hosts whose copies are dropped until they arrive.
    arriving: HashSet<Ipv4Addr>,
}

impl FibSnapshot {
    /// Captures the forwarding-relevant part of the tables.
    pub fn build(me: &SiteId, gndt: &Gndt, lndt: &Lndt) -> Self {
        let hosts = gndt
            .live_hosts()
            .map(|stored| (stored.entry.prefix.ip(), stored.entry.site().clone()))
            .collect();
        let local_extra = lndt
            .hosts()
            .filter(|host| host.source == skyvine_tables::LndtSource::MigratedIn)
            .map(|host| host.prefix.ip())
            .collect();
        FibSnapshot {
            me: me.clone(),
            hosts,
            prefixes: Arc::new(prefix_owners(gndt, &[])),
            local: lndt.configured().collect(),
            local_exceptions: lndt.moved_away().collect(),
            local_extra,
            relays: Relays::default(),
            copy_to: HashMap::new(),
            arriving: HashSet::new(),
        }
    }

    /// Whether two views agree on what they took from the tables (owners and local hosts),
    /// whatever their recent moves and planned migrations: a snapshot made from changes
    /// against one built in full.
    pub fn same_tables(&self, other: &FibSnapshot) -> bool {
        self.me == other.me
            && self.hosts == other.hosts
            && self.prefixes == other.prefixes
            && self.local == other.local
            && self.local_exceptions == other.local_exceptions
            && self.local_extra == other.local_extra
    }

    /// Brings what the view says of host `ip` (its owner, whether it is local) in line with
    /// the tables.
    fn set_host(&mut self, ip: Ipv4Addr, gndt: &Gndt, lndt: &Lndt) {
        match gndt.live_host(ip) {
            Some(stored) => {
                self.hosts.insert(ip, stored.entry.site().clone());
            }
            None => {
                self.hosts.remove(&ip);
            }
        }
        set_member(&mut self.local_extra, ip, lndt.is_migrated_in(ip));
        set_member(&mut self.local_exceptions, ip, lndt.is_moved_away(ip));
    }

    /// The site owning `ip` by longest-prefix match, if any.
    fn owner(&self, ip: Ipv4Addr) -> Option<&SiteId> {
        self.hosts.get(&ip).or_else(|| {
            self.prefixes
                .get_lpm(&Ipv4Network::from(ip))
                .map(|(_, site)| site)
        })
    }

    /// For a packet to `dst` sent to its owner: the other site that gets a copy (a planned
    /// migration of `dst` to it is in its window), if any.
    pub fn copy_to(&self, dst: Ipv4Addr) -> Option<&SiteId> {
        let site = self.copy_to.get(&dst)?;
        let owner = self.owner(dst);
        (owner != Some(site) && site != &self.me).then_some(site)
    }

    /// Whether a packet from the overlay for `dst` is a copy sent ahead of a planned migration
    /// here that has not happened yet (dropped: the VM is not here).
    pub fn arriving_early(&self, dst: Ipv4Addr) -> bool {
        self.arriving.contains(&dst) && self.owner(dst).is_none_or(|owner| *owner != self.me)
    }

    /// At a host's old site: where to relay a packet from the overlay for `dst`, which left
    /// recently (instead of letting the kernel drop it).
    pub fn relay_target(&self, dst: Ipv4Addr, now: Instant) -> Option<&SiteId> {
        match self.relays.departed.get(&dst) {
            Some((site, until)) if now < *until => Some(site),
            _ => None,
        }
    }

    /// At a host's new site: whether a packet relayed by site `from` may be delivered. Only
    /// for a host that arrived from `from` recently, and never with a source of our own.
    pub fn accept_relayed(
        &self,
        from: &SiteId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        now: Instant,
    ) -> Result<(), DropReason> {
        let arrived_from_relay = matches!(
            self.relays.arrived.get(&dst),
            Some((site, until)) if site == from && now < *until
        );
        // The same source check as a direct packet's, as far as a relay allows: the source
        // must be another site's (the relay is the host's previous owner, not the sender).
        let other_source = self.owner(src).is_some_and(|owner| *owner != self.me);
        if arrived_from_relay && other_source {
            Ok(())
        } else {
            Err(DropReason::SpoofedSource)
        }
    }

    /// Where a packet from a LAN host to `dst` must go: the owning site, or why it is dropped.
    pub fn outbound(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Result<&SiteId, DropReason> {
        if !self.is_local_host(src) {
            return Err(DropReason::SourceNotLocal);
        }
        match self.owner(dst) {
            // A host of ours in a planned migration's window: the kernel sent a copy here (the
            // host itself still gets the original on the LAN).
            Some(site) if *site == self.me => {
                self.copy_to.get(&dst).ok_or(DropReason::DestinationLocal)
            }
            Some(site) => Ok(site),
            None => Err(DropReason::NoRoute),
        }
    }

    /// Whether a packet from the overlay for `dst` may be delivered here: `dst` must be an
    /// address of this site.
    pub fn inbound_destination(&self, dst: Ipv4Addr) -> Result<(), DropReason> {
        match self.owner(dst) {
            Some(owner) if *owner == self.me => Ok(()),
            _ => Err(DropReason::DestinationNotLocal),
        }
    }

    /// Whether a packet with source `src` may arrive from site `from`.
    pub fn inbound(&self, from: &SiteId, src: Ipv4Addr) -> Result<(), DropReason> {
        match self.owner(src) {
            Some(owner) if owner == from => Ok(()),
            _ => Err(DropReason::SpoofedSource),
        }
    }

    /// Whether `ip` is in the LNDT.
    pub fn is_local_host(&self, ip: Ipv4Addr) -> bool {
        self.local_extra.contains(&ip)
            || (self.local.iter().any(|net| net.contains(ip))
                && !self.local_exceptions.contains(&ip))
    }
}

fn set_member(set: &mut HashSet<Ipv4Addr>, ip: Ipv4Addr, member: bool) {
    if member {
        set.insert(ip);
    } else {
        set.remove(&ip);
    }
}

/// The owners of the GNDT's live entries shorter than /32, except the `unrouted` ones.
fn prefix_owners(gndt: &Gndt, unrouted: &[Ipv4Network]) -> PrefixMap<Ipv4Network, SiteId> {
    let mut owners = PrefixMap::new();
    for stored in gndt.live_prefixes() {
        if unrouted.contains(&stored.entry.prefix) {
            continue;
        }
        owners.insert(stored.entry.prefix, stored.entry.site().clone());
    }
    owners
}

/// Makes successive [`FibSnapshot`]s from the tables' changes, touching only what changed: a
/// left-right pair. The snapshot handed out last is never modified (packet tasks read it); the
/// one before it, once no packet task holds it any more, is brought up to date with the host
/// changes it lacks and handed out next. So a move costs a few hash-map updates whatever the
/// table's size. Only when a reader still holds the older snapshot is the current one copied
/// whole (counted in [`FibWriter::copies`]); readers hold one for a batch of packets.
#[derive(Debug, Default)]
pub struct FibWriter {
    /// The snapshot handed out last.
    published: Option<Arc<FibSnapshot>>,
    /// The one handed out before it, to reuse.
    spare: Option<Arc<FibSnapshot>>,
    /// Hosts whose GNDT entry or LNDT membership changed since `published` was made.
    pending: HashSet<Ipv4Addr>,
    /// Host entries the spare lacks besides `pending` (those `published` took in).
    spare_lacks: HashSet<Ipv4Addr>,
    /// An entry shorter than /32 changed since `published` was made.
    prefixes_changed: bool,
    /// Prefixes left out of the snapshots whatever the GNDT says (see [`FibWriter::unroute`]).
    unrouted: Vec<Ipv4Network>,
    copies: u64,
}

/// The parts of a snapshot that are rebuilt for each one: bounded by recent moves and the
/// planned migrations in their window, not by the table.
#[derive(Debug, Default)]
pub struct FibExtras {
    pub relays: Relays,
    pub copy_to: HashMap<Ipv4Addr, SiteId>,
    pub arriving: HashSet<Ipv4Addr>,
}

impl FibWriter {
    /// The GNDT entry for `prefix` changed.
    pub fn changed(&mut self, prefix: Ipv4Network) {
        if prefix.prefix() == 32 {
            self.pending.insert(prefix.ip());
        } else {
            self.prefixes_changed = true;
        }
    }

    /// Whether the LNDT holds host `ip` may have changed.
    pub fn local_changed(&mut self, ip: Ipv4Addr) {
        self.pending.insert(ip);
    }

    /// Leaves `prefixes` (entries shorter than /32) out of the snapshots from now on: our own
    /// prefixes that our certificate does not back, advertised but not routed as ours.
    pub fn unroute(&mut self, mut prefixes: Vec<Ipv4Network>) {
        prefixes.sort();
        if prefixes != self.unrouted {
            self.unrouted = prefixes;
            self.prefixes_changed = true;
        }
    }

    /// How many snapshots had to be copied whole because a reader still held the spare.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// The forwarding view of the tables as they are now.
    pub fn publish(
        &mut self,
        me: &SiteId,
        gndt: &Gndt,
        lndt: &Lndt,
        extras: FibExtras,
    ) -> Arc<FibSnapshot> {
        let pending = std::mem::take(&mut self.pending);
        let spare = self.spare.take().map(Arc::try_unwrap);
        let mut next = match (&self.published, spare) {
            (None, _) => {
                let mut first = FibSnapshot::build(me, gndt, lndt);
                first.prefixes = Arc::new(prefix_owners(gndt, &self.unrouted));
                first
            }
            (Some(published), Some(Ok(mut spare))) => {
                for ip in self.spare_lacks.iter().chain(&pending) {
                    spare.set_host(*ip, gndt, lndt);
                }
                spare.prefixes = Arc::clone(&published.prefixes);
                spare
            }
            (Some(published), _) => {
                self.copies += 1;
                let mut copy = FibSnapshot::clone(published);
                for ip in &pending {
                    copy.set_host(*ip, gndt, lndt);
                }
                copy
            }
        };
        if std::mem::take(&mut self.prefixes_changed) {
            next.prefixes = Arc::new(prefix_owners(gndt, &self.unrouted));
        }
        next.relays = extras.relays;
        next.copy_to = extras.copy_to;
        next.arriving = extras.arriving;
        let next = Arc::new(next);
        self.spare = self.published.replace(Arc::clone(&next));
        self.spare_lacks = pending;
        next
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use skyvine_tables::GndtEntry;

    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    fn host(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, i)
    }

    /// Applies an entry as the core does: the tables, then the writer.
    fn apply(gndt: &mut Gndt, writer: &mut FibWriter, entry: GndtEntry, now: Instant) {
        let prefix = entry.prefix;
        if gndt.apply(entry, now).changed() {
            writer.changed(prefix);
        }
    }

    #[test]
    fn each_snapshot_equals_a_full_build_whoever_holds_the_old_ones() {
        let now = Instant::now();
        let me = site("a");
        let mut lndt = Lndt::new(["10.1.0.0/24".parse().unwrap()], now);
        let mut gndt = Gndt::new();
        let mut writer = FibWriter::default();
        apply(
            &mut gndt,
            &mut writer,
            GndtEntry::site_prefix("10.1.0.0/24".parse().unwrap(), me.clone(), 1),
            now,
        );
        let mut held = Vec::new();
        for step in 0u8..12 {
            // Hosts move between b and c, one is withdrawn, a prefix appears half-way.
            let owner = if step % 2 == 0 { "b" } else { "c" };
            let entry = GndtEntry::host(host(step % 4 + 1), site(owner), u64::from(step) + 1, None);
            apply(&mut gndt, &mut writer, entry, now);
            // Hosts leave the LNDT and come back; one moves in from outside its ranges.
            let local = host(step % 4 + 1);
            if step % 3 == 0 {
                lndt.remove(local);
            } else {
                lndt.add(local, None, now);
            }
            writer.local_changed(local);
            let outsider = Ipv4Addr::new(10, 9, 0, step);
            lndt.add(outsider, None, now);
            writer.local_changed(outsider);
            if step == 5 {
                let mut gone = GndtEntry::host(host(2), site("c"), 100, None);
                gone.withdrawn = true;
                apply(&mut gndt, &mut writer, gone, now);
                let prefix = GndtEntry::site_prefix("10.2.0.0/24".parse().unwrap(), site("b"), 1);
                apply(&mut gndt, &mut writer, prefix, now);
            }
            let snapshot = writer.publish(&me, &gndt, &lndt, FibExtras::default());
            assert_eq!(
                *snapshot,
                FibSnapshot::build(&me, &gndt, &lndt),
                "step {step}"
            );
            // Every third snapshot stays held by a "reader" for a while: the writer copies.
            if step % 3 == 0 {
                held.push(snapshot);
            }
            if step % 4 == 3 {
                held.clear();
            }
        }
        assert!(writer.copies() > 0, "held snapshots forced copies");
        assert!(writer.copies() < 12, "free snapshots were reused");
        assert_eq!(
            writer
                .publish(&me, &gndt, &lndt, FibExtras::default())
                .outbound(host(9), Ipv4Addr::new(10, 2, 0, 7)),
            Ok(&site("b"))
        );
    }

    /// Router c's view: sites a, b, c with 10.77.N.0/24; 10.77.1.5 arrived here from a.
    fn view_at_c(now: Instant) -> FibSnapshot {
        let mut gndt = Gndt::new();
        for (name, n) in [("a", 1), ("b", 2), ("c", 3)] {
            let prefix = format!("10.77.{n}.0/24").parse().unwrap();
            gndt.apply(GndtEntry::site_prefix(prefix, site(name), 1), now);
        }
        let vm: Ipv4Addr = "10.77.1.5".parse().unwrap();
        gndt.apply(GndtEntry::host(vm, site("c"), 2, None), now);
        let lndt = Lndt::new(["10.77.3.0/24".parse().unwrap()], now);
        let mut relays = Relays::default();
        relays
            .arrived
            .insert(vm, (site("a"), now + Duration::from_secs(5)));
        let mut fib = FibSnapshot::build(&site("c"), &gndt, &lndt);
        fib.relays = relays;
        fib
    }

    #[test]
    fn a_relayed_packet_needs_another_sites_source_and_the_hosts_old_site() {
        let now = Instant::now();
        let fib = view_at_c(now);
        let vm: Ipv4Addr = "10.77.1.5".parse().unwrap();
        let from_b: Ipv4Addr = "10.77.2.1".parse().unwrap();
        assert_eq!(fib.accept_relayed(&site("a"), from_b, vm, now), Ok(()));
        // Relayed by a site the host did not come from.
        assert!(fib.accept_relayed(&site("b"), from_b, vm, now).is_err());
        // A source of our own, or outside the virtual network.
        for src in ["10.77.3.9", "192.0.2.1"] {
            let src = src.parse().unwrap();
            assert!(
                fib.accept_relayed(&site("a"), src, vm, now).is_err(),
                "{src}"
            );
        }
    }

    #[test]
    fn a_packet_from_the_overlay_must_be_for_this_site() {
        let now = Instant::now();
        let fib = view_at_c(now);
        for dst in ["10.77.3.1", "10.77.1.5"] {
            assert_eq!(
                fib.inbound_destination(dst.parse().unwrap()),
                Ok(()),
                "{dst}"
            );
        }
        for dst in ["10.77.2.1", "10.77.1.6", "192.0.2.1"] {
            assert_eq!(
                fib.inbound_destination(dst.parse().unwrap()),
                Err(DropReason::DestinationNotLocal),
                "{dst}"
            );
        }
    }
}
