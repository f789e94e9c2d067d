//! Several isolated virtual networks on one router: one [`Node`] per network, which networks a
//! peer shares with this router, and the verdict on every control frame and data datagram by
//! its network id.
//!
//! A peer shares network N with this router when N is one of ours, the peer's hello names it,
//! its certificate certifies at least one prefix in N, and N's config admits the peer (listed
//! for N, or any certified peer). A frame or datagram for any other network is dropped and
//! counted, never handed to a network's tables: networks stay apart even when they reuse each
//! other's addresses, and a peer cannot reach a network it was not let into by naming its id.
//!
//! This module never does IO; the daemon moves the bytes, the data plane asks
//! [`SharedNetworks::contains`] per datagram.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use skyvine_tables::SiteId;

use crate::config::{NetworkId, DEFAULT_NETWORK};
use crate::link::PeerPath;
use crate::node::{Effect, Node};
use crate::proto::Frame;

/// One prefix a router certificate certifies, in one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertifiedPrefix {
    pub network: NetworkId,
    pub prefix: Ipv4Network,
}

impl CertifiedPrefix {
    /// Parses the part of a `skyvine:prefix:` URI after that prefix: `<id>:<cidr>` for network
    /// `id`, or a bare `<cidr>` (certificates issued before several networks existed), which
    /// certifies the prefix in [`DEFAULT_NETWORK`] (0) only.
    pub fn parse(text: &str) -> Result<CertifiedPrefix, String> {
        let (network, cidr) = match text.split_once(':') {
            Some((id, cidr)) => (
                id.parse::<NetworkId>()
                    .map_err(|_| format!("{id:?} is not a network id (0-65535)"))?,
                cidr,
            ),
            None => (DEFAULT_NETWORK, text),
        };
        let prefix = cidr
            .parse::<Ipv4Network>()
            .map_err(|e| format!("{cidr:?} is not an IPv4 prefix: {e}"))?;
        Ok(CertifiedPrefix { network, prefix })
    }
}

/// A prefix certified in network 0, as certificates before several networks carried them.
impl From<Ipv4Network> for CertifiedPrefix {
    fn from(prefix: Ipv4Network) -> Self {
        CertifiedPrefix {
            network: DEFAULT_NETWORK,
            prefix,
        }
    }
}

impl std::str::FromStr for CertifiedPrefix {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        CertifiedPrefix::parse(text)
    }
}

/// The URI form after `skyvine:prefix:`: the bare prefix for network 0 (what every version
/// reads), `<id>:<cidr>` for any other.
impl fmt::Display for CertifiedPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.network == DEFAULT_NETWORK {
            write!(f, "{}", self.prefix)
        } else {
            write!(f, "{}:{}", self.network, self.prefix)
        }
    }
}

/// The prefixes of `certified` in `network`.
pub fn certified_in(certified: &[CertifiedPrefix], network: NetworkId) -> Vec<Ipv4Network> {
    certified
        .iter()
        .filter(|c| c.network == network)
        .map(|c| c.prefix)
        .collect()
}

/// Why a frame or datagram from a peer was not handed to a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unshared {
    /// The id is not a network this router carries.
    UnknownNetwork,
    /// This router carries the network, but the peer is not part of it here.
    NotMember,
}

impl Unshared {
    pub const ALL: [Unshared; 2] = [Unshared::UnknownNetwork, Unshared::NotMember];

    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Unshared::UnknownNetwork => "unknown_network",
            Unshared::NotMember => "not_member",
        }
    }
}

/// The networks one peer shares with this router: what its data datagrams may carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedNetworks(BTreeSet<NetworkId>);

impl SharedNetworks {
    pub fn contains(&self, network: NetworkId) -> bool {
        self.0.contains(&network)
    }
    pub fn iter(&self) -> impl Iterator<Item = NetworkId> + '_ {
        self.0.iter().copied()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<NetworkId> for SharedNetworks {
    fn from_iter<I: IntoIterator<Item = NetworkId>>(ids: I) -> Self {
        SharedNetworks(ids.into_iter().collect())
    }
}

/// One network this router carries: its id, name and tables.
#[derive(Debug)]
pub struct NetworkNode {
    pub id: NetworkId,
    pub name: String,
    pub node: Node,
}

/// The router's networks, and which of them each connected peer shares.
#[derive(Debug)]
pub struct Networks {
    networks: Vec<NetworkNode>,
    shared: HashMap<SiteId, SharedNetworks>,
    dropped: BTreeMap<(NetworkId, Unshared), u64>,
    /// Round-robin start for [`Networks::poll_effect`], so no network starves another.
    next: usize,
}

impl Networks {
    /// `networks` in the config's order; their ids and names are unique (the config checks).
    pub fn new(networks: Vec<NetworkNode>) -> Networks {
        Networks {
            networks,
            shared: HashMap::new(),
            dropped: BTreeMap::new(),
            next: 0,
        }
    }

    /// The ids of the networks this router carries, for its hello.
    pub fn ids(&self) -> Vec<NetworkId> {
        self.networks.iter().map(|n| n.id).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &NetworkNode> {
        self.networks.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut NetworkNode> {
        self.networks.iter_mut()
    }

    pub fn get(&self, id: NetworkId) -> Option<&NetworkNode> {
        self.networks.iter().find(|n| n.id == id)
    }

    pub fn get_mut(&mut self, id: NetworkId) -> Option<&mut NetworkNode> {
        self.networks.iter_mut().find(|n| n.id == id)
    }

    /// The network named `name`.
    pub fn by_name(&self, name: &str) -> Option<&NetworkNode> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// Any network's node, for what every network answers alike (this router's site, whether
    /// a peer is admitted at all).
    pub fn first(&self) -> Option<&Node> {
        self.networks.first().map(|n| &n.node)
    }

    /// The networks `site` shares with this router while its link is up.
    pub fn shared_with(&self, site: &SiteId) -> SharedNetworks {
        self.shared.get(site).cloned().unwrap_or_default()
    }

    /// Whether `peer` may connect at all: admitted by at least one network.
    pub fn admit(&self, peer: &SiteId) -> Result<(), crate::link::AdmitError> {
        let mut last = None;
        for network in &self.networks {
            match network.node.admit(peer) {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
        }
        last.map_or(Ok(()), Err)
    }

    /// A control stream to `peer` is up; its hello named `hello`, its certificate certifies
    /// `certified`. Each network it shares is told (and sends it that network's table); the
    /// others are logged. Returns what it shares, for the data plane.
    pub fn handle_link_up(
        &mut self,
        peer: &SiteId,
        path: &PeerPath,
        hello: &[NetworkId],
        certified: &[CertifiedPrefix],
        now: Instant,
    ) -> SharedNetworks {
        let mut shared = BTreeSet::new();
        for network in &mut self.networks {
            let prefixes = certified_in(certified, network.id);
            let why_not = if !hello.contains(&network.id) {
                Some("the peer does not carry it")
            } else if prefixes.is_empty() {
                Some("the peer's certificate certifies no prefix in it")
            } else if network.node.admit(peer).is_err() {
                Some("the peer is not listed for it")
            } else {
                None
            };
            match why_not {
                None => {
                    shared.insert(network.id);
                    network
                        .node
                        .handle_link_up(peer.clone(), path.clone(), prefixes, now);
                }
                Some(reason) => {
                    tracing::info!(peer = %peer, network = %network.name, reason, "peer not part of this network");
                }
            }
        }
        for id in hello.iter().filter(|id| self.get(**id).is_none()) {
            tracing::debug!(peer = %peer, network = id, "peer carries a network this router does not");
        }
        let shared = SharedNetworks(shared);
        self.shared.insert(peer.clone(), shared.clone());
        shared
    }

    /// The control stream to `peer` is gone: every network it shared hears so.
    pub fn handle_peer_down(&mut self, peer: &SiteId, now: Instant) {
        let shared = self.shared.remove(peer).unwrap_or_default();
        for network in &mut self.networks {
            if shared.contains(network.id) {
                network.node.handle_peer_down(peer, now);
            }
        }
    }

    /// `peer`'s certificate was revoked: every network withdraws what it originated.
    pub fn handle_peer_revoked(&mut self, peer: &SiteId, now: Instant) {
        self.shared.remove(peer);
        for network in &mut self.networks {
            network.node.handle_peer_revoked(peer, now);
        }
    }

    /// A control frame from a connected peer: handed to its network if the peer shares it,
    /// otherwise dropped, counted and logged.
    pub fn handle_frame(
        &mut self,
        from: &SiteId,
        frame: Frame,
        now: Instant,
    ) -> Result<(), Unshared> {
        let Frame { network, message } = frame;
        let verdict = match self.networks.iter_mut().find(|n| n.id == network) {
            None => Err(Unshared::UnknownNetwork),
            Some(_) if !self.shared.get(from).is_some_and(|s| s.contains(network)) => {
                Err(Unshared::NotMember)
            }
            Some(target) => {
                target.node.handle_message(from, message, now);
                return Ok(());
            }
        };
        if let Err(reason) = verdict {
            *self.dropped.entry((network, reason)).or_default() += 1;
            tracing::debug!(peer = %from, network, kind = message.kind(), reason = reason.name(), "control message for a network the peer does not share; dropped");
        }
        verdict
    }

    /// Control frames dropped, by the network id they named and why.
    pub fn dropped(&self) -> &BTreeMap<(NetworkId, Unshared), u64> {
        &self.dropped
    }

    /// Periodic work of every network.
    pub fn handle_timeout(&mut self, now: Instant) {
        for network in &mut self.networks {
            if network.node.poll_timeout().is_some_and(|at| at <= now) {
                network.node.handle_timeout(now);
            }
        }
    }

    /// When [`Networks::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.networks
            .iter()
            .filter_map(|n| n.node.poll_timeout())
            .min()
    }

    /// The next effect of any network, with the network it is for.
    pub fn poll_effect(&mut self) -> Option<(NetworkId, Effect)> {
        let count = self.networks.len();
        for step in 0..count {
            let index = (self.next + step) % count;
            let network = self.networks.get_mut(index)?;
            if let Some(effect) = network.node.poll_effect() {
                self.next = (index + 1) % count;
                return Some((network.id, effect));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
