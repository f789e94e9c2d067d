//! Paths through a relay router: the IO side of [`skyvine_core::relay`] (framing and decisions
//! live there).
//!
//! A router that reaches some peers `via` a relay runs a second QUIC endpoint, the *relay
//! endpoint* ([`RelayEndpoint`]), on a [`RelaySocket`]: a virtual UDP socket whose network is the
//! relay datagrams on this router's direct connections to its relays. Each relayed peer has a
//! synthetic address there ([`Paths`]). The QUIC connection to such a peer is an ordinary one,
//! end to end (mutual TLS, control stream, datagrams, keep-alives), so the daemon and the data
//! plane use it exactly like a direct one: a next hop is a connection.
//!
//! Its packets must leave room for the relay header and the inner connection's own QUIC
//! overhead inside one datagram of the outer connection, so the inner connection runs at a
//! fixed, smaller UDP payload size and the kernel routes towards relayed sites carry a route
//! MTU ([`Relayed::route_mtu`]): the kernel answers larger packets with "fragmentation
//! needed", so path-MTU discovery and TCP's MSS work through the relay.
//!
//! [`Hub`] is what the data plane calls for each relay datagram that arrives on any connection:
//! it passes the datagram on unchanged (at a relay with `relay = true`) or hands its payload to
//! the relay socket (at an end), and counts what it relayed.

mod socket;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use skyvine_core::config::Config;
use skyvine_core::fib::DropReason;
use skyvine_core::relay::{self, Decision, RelayPolicy};
use skyvine_tables::SiteId;
use tokio::sync::mpsc;

pub use socket::{Inbound, RelaySocket};

use crate::dataplane::{self, PeerTable};
use crate::pki::{self, Identity};

/// Payloads from relayed peers queued towards the relay endpoint before new ones are dropped.
const INBOUND_CAPACITY: usize = 8192;
/// The first synthetic address; the n-th relayed peer gets port n + 1 on it (TEST-NET-1,
/// never a real address).
const SYNTHETIC_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// One relayed peer: the relay it is reached through and its address on the relay socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub peer: SiteId,
    pub relay: SiteId,
    pub addr: SocketAddr,
}

/// The relayed peers of the config, by synthetic address and by site.
#[derive(Debug, Default)]
pub struct Paths {
    paths: Vec<Path>,
    by_peer: BTreeMap<SiteId, usize>,
}

impl Paths {
    pub fn new(policy: &RelayPolicy) -> Self {
        let mut paths = Paths::default();
        for (i, (peer, relay)) in policy.relayed_peers().iter().enumerate() {
            let port = u16::try_from(i + 1).unwrap_or(u16::MAX);
            paths.by_peer.insert(peer.clone(), paths.paths.len());
            paths.paths.push(Path {
                peer: peer.clone(),
                relay: relay.clone(),
                addr: SocketAddr::new(SYNTHETIC_IP.into(), port),
            });
        }
        paths
    }

    pub fn by_addr(&self, addr: SocketAddr) -> Option<&Path> {
        if addr.ip() != SYNTHETIC_IP {
            return None;
        }
        let index = usize::from(addr.port()).checked_sub(1)?;
        self.paths.get(index)
    }

    pub fn by_peer(&self, peer: &SiteId) -> Option<&Path> {
        self.paths.get(*self.by_peer.get(peer)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Datagrams this relay passed on for one source peer.
#[derive(Debug, Default)]
struct RelayedCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// What the data plane does with relay datagrams: pass them on, or deliver them to the relay
/// socket. Shared by every peer reader.
#[derive(Debug)]
pub struct Hub {
    policy: RelayPolicy,
    paths: Arc<Paths>,
    /// Towards the relay socket; `None` when this router reaches no peer through a relay.
    inbound: Option<mpsc::Sender<Inbound>>,
    peers: Arc<PeerTable>,
    /// Per source peer (every listed peer may be one), fixed at start: no lock per packet.
    relayed: BTreeMap<SiteId, RelayedCounters>,
}

impl Hub {
    /// The hub, and the receiving end for the relay socket when this router has relayed peers.
    pub fn new(config: &Config, peers: Arc<PeerTable>) -> (Hub, Option<mpsc::Receiver<Inbound>>) {
        let policy = config.relay_policy();
        let paths = Arc::new(Paths::new(&policy));
        let (inbound, receiver) = if paths.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
            (Some(tx), Some(rx))
        };
        let relayed = config
            .peers
            .iter()
            .map(|p| (p.site.clone(), RelayedCounters::default()))
            .collect();
        let hub = Hub {
            policy,
            paths,
            inbound,
            peers,
            relayed,
        };
        (hub, receiver)
    }

    /// A hub that relays nothing and has no relayed peers (tests, tools).
    pub fn disabled(me: SiteId, peers: Arc<PeerTable>) -> Hub {
        Hub {
            policy: RelayPolicy::new(me, false, []),
            paths: Arc::new(Paths::default()),
            inbound: None,
            peers,
            relayed: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> &RelayPolicy {
        &self.policy
    }

    pub fn paths(&self) -> &Arc<Paths> {
        &self.paths
    }

    /// A relay datagram that arrived on the connection from `from`.
    pub fn on_datagram(&self, from: &SiteId, datagram: &Bytes) -> Result<(), DropReason> {
        match self.policy.judge(from, datagram)? {
            Decision::Forward { to } => {
                let conn = self.peers.get(&to).ok_or(DropReason::PeerDown)?;
                let len = datagram.len() as u64;
                // Unchanged: the header already names both ends; no copy.
                conn.send_datagram(datagram.clone()).map_err(send_error)?;
                if let Some(counters) = self.relayed.get(from) {
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(len, Ordering::Relaxed);
                }
                tracing::trace!(%from, %to, len, "relayed");
                Ok(())
            }
            Decision::Deliver {
                source,
                payload_offset,
            } => {
                let path = self
                    .paths
                    .by_peer(&source)
                    .ok_or(DropReason::RelayUnexpected)?;
                let inbound = self.inbound.as_ref().ok_or(DropReason::RelayUnexpected)?;
                let payload = datagram.slice(payload_offset.min(datagram.len())..);
                inbound
                    .try_send(Inbound {
                        from: path.addr,
                        payload,
                    })
                    .map_err(|_| DropReason::QueueFull)
            }
        }
    }

    /// Datagrams and bytes passed on per source peer, for the admin view.
    pub fn relayed(&self) -> BTreeMap<SiteId, (u64, u64)> {
        self.relayed
            .iter()
            .map(|(site, c)| {
                (
                    site.clone(),
                    (
                        c.packets.load(Ordering::Relaxed),
                        c.bytes.load(Ordering::Relaxed),
                    ),
                )
            })
            .filter(|(_, (packets, _))| *packets > 0)
            .collect()
    }
}

/// The relay hub, and the relay endpoint when this router reaches some peers `via` a relay.
pub fn start(
    config: &Config,
    identity: &Identity,
    peers: &Arc<PeerTable>,
    counters: &Arc<dataplane::Counters>,
) -> anyhow::Result<(Hub, Option<Arc<RelayEndpoint>>)> {
    let (hub, inbound) = Hub::new(config, peers.clone());
    let Some(inbound) = inbound else {
        return Ok((hub, None));
    };
    let socket = RelaySocket::new(
        config.site.clone(),
        hub.paths().clone(),
        peers.clone(),
        counters.clone(),
        inbound,
    );
    let relayed = RelayEndpoint::open(config, identity, socket, hub.paths().clone())?;
    Ok((hub, Some(Arc::new(relayed))))
}

/// The route MTU towards each peer this router reaches through a relay.
pub fn route_mtus(config: &Config) -> BTreeMap<SiteId, u32> {
    config
        .relay_policy()
        .relayed_peers()
        .keys()
        .map(|peer| {
            let sizes = Relayed::new(config.tun.mtu, &config.site, peer);
            (peer.clone(), sizes.route_mtu)
        })
        .collect()
}

/// Why a datagram could not be queued on a connection.
pub(crate) fn send_error(error: quinn::SendDatagramError) -> DropReason {
    match error {
        quinn::SendDatagramError::TooLarge => DropReason::TooBig,
        quinn::SendDatagramError::ConnectionLost(_)
        | quinn::SendDatagramError::Disabled
        | quinn::SendDatagramError::UnsupportedByPeer => DropReason::PeerDown,
    }
}

/// The sizes of one relayed peer's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// The inner connection's fixed UDP payload size.
    pub udp_payload: u16,
    /// The route MTU towards the peer's prefixes: the largest packet that fits one datagram
    /// of the inner connection.
    pub route_mtu: u32,
}

impl Relayed {
    /// For `peer` reached from `me` through a relay, with TUN MTU `tun_mtu` (the size of a
    /// datagram on the outer connections; check-config made sure it leaves QUIC's minimum).
    pub fn new(tun_mtu: u16, me: &SiteId, peer: &SiteId) -> Self {
        let udp = relay::inner_udp_payload(usize::from(tun_mtu), me, peer)
            .max(relay::QUIC_MIN_UDP_PAYLOAD);
        let udp_payload = u16::try_from(udp).unwrap_or(u16::MAX);
        Relayed {
            udp_payload,
            route_mtu: u32::from(udp_payload.saturating_sub(dataplane::DATAGRAM_OVERHEAD)),
        }
    }

    /// Transport settings of the inner connection: a router tunnel's, at a fixed UDP payload
    /// size (the relay socket has no path to discover an MTU on).
    fn transport(self, tun_mtu: u16) -> quinn::TransportConfig {
        let mut transport = pki::transport_config();
        dataplane::tune_transport(&mut transport, tun_mtu);
        transport
            .initial_mtu(self.udp_payload)
            .mtu_discovery_config(None);
        transport
    }
}

/// The QUIC endpoint on the relay socket, and the per-peer client and server configs that set
/// each inner connection's size.
#[derive(Debug)]
pub struct RelayEndpoint {
    pub endpoint: quinn::Endpoint,
    paths: Arc<Paths>,
    configs: BTreeMap<SiteId, (quinn::ClientConfig, Arc<quinn::ServerConfig>)>,
}

impl RelayEndpoint {
    pub fn open(
        config: &Config,
        identity: &Identity,
        socket: RelaySocket,
        paths: Arc<Paths>,
    ) -> anyhow::Result<Self> {
        let mut configs = BTreeMap::new();
        let mut default_server = None;
        for path in paths.iter() {
            let sizes = Relayed::new(config.tun.mtu, &config.site, &path.peer);
            let transport = Arc::new(sizes.transport(config.tun.mtu));
            let client = identity.client_config(transport.clone())?;
            let server = identity.server_config(transport)?;
            default_server.get_or_insert_with(|| server.clone());
            configs.insert(path.peer.clone(), (client, Arc::new(server)));
        }
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            default_server,
            Arc::new(socket),
            Arc::new(quinn::TokioRuntime),
        )
        .context("starting the relay endpoint")?;
        Ok(RelayEndpoint {
            endpoint,
            paths,
            configs,
        })
    }

    /// The path to `peer`, with the client config to dial it.
    pub fn dial_target(&self, peer: &SiteId) -> Option<(&Path, &quinn::ClientConfig)> {
        let path = self.paths.by_peer(peer)?;
        let (client, _) = self.configs.get(peer)?;
        Some((path, client))
    }

    /// The path an incoming connection comes over, with the server config to accept it.
    pub fn accept_target(&self, remote: SocketAddr) -> Option<(&Path, Arc<quinn::ServerConfig>)> {
        let path = self.paths.by_addr(remote)?;
        let (_, server) = self.configs.get(&path.peer)?;
        Some((path, server.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    #[test]
    fn relayed_peers_get_distinct_synthetic_addresses() {
        let policy = RelayPolicy::new(
            site("b"),
            false,
            [
                (site("a"), None),
                (site("c"), Some(site("a"))),
                (site("d"), Some(site("a"))),
            ],
        );
        let paths = Paths::new(&policy);
        let c = paths.by_peer(&site("c")).unwrap();
        let d = paths.by_peer(&site("d")).unwrap();
        assert_ne!(c.addr, d.addr);
        assert_eq!(paths.by_addr(c.addr), Some(c));
        assert_eq!(paths.by_addr(d.addr).map(|p| &p.relay), Some(&site("a")));
        assert!(paths.by_peer(&site("a")).is_none());
        assert!(paths
            .by_addr(SocketAddr::new(SYNTHETIC_IP.into(), 9))
            .is_none());
        assert!(paths.by_addr("192.0.2.2:1".parse().unwrap()).is_none());
        assert!(paths
            .by_addr(SocketAddr::new(SYNTHETIC_IP.into(), 0))
            .is_none());
    }

    #[test]
    fn a_relayed_packet_fits_the_inner_and_the_outer_connection() {
        let (b, c) = (site("b"), site("c"));
        let sizes = Relayed::new(1380, &b, &c);
        // 1380 - 7 header bytes, then the inner QUIC overhead budget.
        assert_eq!(sizes.udp_payload, 1373);
        // Minus the inner QUIC overhead, our 3-byte datagram header included.
        assert_eq!(sizes.route_mtu, 1320);
        assert!(
            usize::from(sizes.udp_payload) + relay::header_len(&b, &c) <= 1380,
            "the relay datagram fits a datagram of the outer connection"
        );
        // Never below QUIC's minimum (check-config refuses such a TUN MTU anyway).
        assert_eq!(Relayed::new(600, &b, &c).udp_payload, 1200);
    }
}
