//! The forwarding view of the tables that the data plane consults for every packet.
//!
//! The control plane builds a new immutable [`FibSnapshot`] whenever the GNDT or LNDT changes
//! ([`crate::node::Node::fib_snapshot`]); the daemon publishes it to its packet tasks, which
//! consult it without waiting for the control plane.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
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
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
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
#[derive(Debug)]
pub struct FibSnapshot {
    me: SiteId,
    owners: PrefixMap<Ipv4Network, SiteId>,
    local: Vec<Ipv4Network>,
    local_exceptions: Vec<Ipv4Addr>,
    local_extra: Vec<Ipv4Addr>,
    relays: Relays,
    /// Planned migrations elsewhere: hosts whose packets also go to this site.
    copy_to: HashMap<Ipv4Addr, SiteId>,
    /// Planned migrations here: hosts whose copies are dropped until they arrive.
    arriving: HashSet<Ipv4Addr>,
}

impl FibSnapshot {
    /// Captures the forwarding-relevant part of the tables.
    pub fn build(me: &SiteId, gndt: &Gndt, lndt: &Lndt) -> Self {
        let mut owners = PrefixMap::new();
        for stored in gndt.live_entries() {
            owners.insert(stored.entry.prefix, stored.entry.site().clone());
        }
        let mut local = Vec::new();
        let mut local_extra = Vec::new();
        for host in lndt.hosts() {
            match host.source {
                skyvine_tables::LndtSource::Configured => local.push(host.prefix),
                skyvine_tables::LndtSource::MigratedIn => local_extra.push(host.prefix.ip()),
            }
        }
        let mut local_exceptions: Vec<Ipv4Addr> = lndt.moved_away().collect();
        local_exceptions.sort_unstable();
        local_extra.sort_unstable();
        FibSnapshot {
            me: me.clone(),
            owners,
            local,
            local_exceptions,
            local_extra,
            relays: Relays::default(),
            copy_to: HashMap::new(),
            arriving: HashSet::new(),
        }
    }

    /// The same view, with the planned migrations in their window.
    pub fn with_prepared(
        mut self,
        copy_to: HashMap<Ipv4Addr, SiteId>,
        arriving: HashSet<Ipv4Addr>,
    ) -> Self {
        self.copy_to = copy_to;
        self.arriving = arriving;
        self
    }

    /// For a packet to `dst` sent to its owner: the other site that gets a copy (a planned
    /// migration of `dst` to it is in its window), if any.
    pub fn copy_to(&self, dst: Ipv4Addr) -> Option<&SiteId> {
        let site = self.copy_to.get(&dst)?;
        let owner = self.owners.get_lpm(&Ipv4Network::from(dst)).map(|(_, s)| s);
        (owner != Some(site) && site != &self.me).then_some(site)
    }

    /// Whether a packet from the overlay for `dst` is a copy sent ahead of a planned migration
    /// here that has not happened yet (dropped: the VM is not here).
    pub fn arriving_early(&self, dst: Ipv4Addr) -> bool {
        self.arriving.contains(&dst)
            && self
                .owners
                .get_lpm(&Ipv4Network::from(dst))
                .is_none_or(|(_, owner)| *owner != self.me)
    }

    /// The same view, with recent moves to relay for.
    pub fn with_relays(mut self, relays: Relays) -> Self {
        self.relays = relays;
        self
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
        let own_source = matches!(self.owners.get_lpm(&Ipv4Network::from(src)), Some((_, owner)) if *owner == self.me);
        if arrived_from_relay && !own_source {
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
        match self.owners.get_lpm(&Ipv4Network::from(dst)) {
            // A host of ours in a planned migration's window: the kernel sent a copy here (the
            // host itself still gets the original on the LAN).
            Some((_, site)) if *site == self.me => {
                self.copy_to.get(&dst).ok_or(DropReason::DestinationLocal)
            }
            Some((_, site)) => Ok(site),
            None => Err(DropReason::NoRoute),
        }
    }

    /// Whether a packet with source `src` may arrive from site `from`.
    pub fn inbound(&self, from: &SiteId, src: Ipv4Addr) -> Result<(), DropReason> {
        match self.owners.get_lpm(&Ipv4Network::from(src)) {
            Some((_, owner)) if owner == from => Ok(()),
            _ => Err(DropReason::SpoofedSource),
        }
    }

    /// Whether `ip` is in the LNDT.
    pub fn is_local_host(&self, ip: Ipv4Addr) -> bool {
        self.local_extra.binary_search(&ip).is_ok()
            || (self.local.iter().any(|net| net.contains(ip))
                && self.local_exceptions.binary_search(&ip).is_err())
    }
}
