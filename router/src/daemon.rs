//! The async shell around the core's [`Networks`] (one [`Node`] per virtual network): QUIC
//! connections to peers, control streams, the data plane and kernel state. It moves bytes and
//! applies effects; it decides nothing itself.
//!
//! The connections are the router's (one per peer, whatever networks it shares); everything
//! else is per network ([`NetIo`]): TUN device, forwarding snapshot, kernel routes (in the
//! network's VRF table when it has one), LAN capture and counters. A control frame or datagram
//! names its network and goes to that network only if the peer shares it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use skyvine_capture::sys::foreign::ForeignFrame;
use skyvine_capture::wire::ArpEvent;
use skyvine_inject::wire::FrameBytes;
use skyvine_tables::{MacAddr, SiteId};
use tokio::sync::{mpsc, watch};

use skyvine_core::config::{Config, NetworkId};
use skyvine_core::link::{self, Direction, Keep, PeerPath, PeerRouter};
use skyvine_core::networks::{NetworkNode, Networks};
use skyvine_core::node::{Effect, LanIdentity, Node};
use skyvine_core::proto::Frame;

use crate::dataplane::{self, Counters, DataNetwork, PacketDevice, PeerTable};
use crate::fib::Fib;
use crate::pki::{self, Identity};
use crate::relay::{self, Hub, RelayEndpoint};

mod connect;
mod network;
mod peer_link;
mod query;
mod trust;

pub use query::{select_network, Command, Query, QueryHandle};

use network::{next_net_event, relayed_route_mtus, route_mtu, NetEvent, NetIo};

use peer_link::{run_link, LinkContext};

/// How long a handshake (QUIC + hello) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Control messages queued towards one peer before the link is declared stuck.
const OUTBOX_CAPACITY: usize = 4096;
/// Events queued towards the main loop (readers wait when it is full: backpressure).
const INPUT_CAPACITY: usize = 4096;

/// QUIC application close codes.
mod close_code {
    pub const SHUTDOWN: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const DUPLICATE: u32 = 2;
    pub const STUCK: u32 = 3;
    pub const WRONG_SITE: u32 = 4;
    pub const RELAY_DOWN: u32 = 5;
    pub const REVOKED: u32 = 6;
    pub const NOT_ADMITTED: u32 = 7;
}

pub use crate::kernel_sync::KernelOps;
use crate::kernel_sync::KernelSync;

/// Something seen on the LAN.
#[derive(Debug, Clone, Copy)]
pub enum LanEvent {
    /// An ARP or RARP frame.
    Arp(ArpEvent),
    /// An IPv4 frame addressed to a MAC of another site.
    Foreign(ForeignFrame),
}

/// The LAN side as channels: captured events in, frames to send out, and the set of MACs
/// that live at other sites (frames to them are captured as [`LanEvent::Foreign`]).
#[derive(Debug)]
pub struct LanPort {
    pub identity: LanIdentity,
    pub events: mpsc::Receiver<LanEvent>,
    pub frames: mpsc::Sender<FrameBytes>,
    pub foreign_macs: watch::Sender<Vec<MacAddr>>,
}

/// Everything the daemon runs on; the binary builds real ones, tests build fakes.
#[derive(Debug)]
pub struct Parts<D, K> {
    pub config: Config,
    pub identity: Identity,
    /// The bound WAN UDP socket.
    pub socket: std::net::UdpSocket,
    /// One per network of `config.networks()`, in that order.
    pub networks: Vec<NetworkParts<D, K>>,
    /// Each message asks to re-read the revocation list (`tls.revoked`): SIGHUP in the binary.
    pub reload: Option<mpsc::Receiver<()>>,
}

/// What one virtual network runs on.
#[derive(Debug)]
pub struct NetworkParts<D, K> {
    pub device: Arc<D>,
    pub kernel: K,
    /// The LAN, or `None` to run without one (no migration support).
    pub lan: Option<LanPort>,
}

/// Shared, read-mostly state that outlives the main loop's borrows (admin, metrics).
#[derive(Debug)]
pub struct Shared {
    /// This router's site.
    pub site: SiteId,
    pub peers: Arc<PeerTable>,
    /// The router's own data-plane counters: relay datagrams, and datagrams for a network the
    /// peer does not share (what no network's counters can hold).
    pub counters: Arc<Counters>,
    /// Relay datagrams: what this router passed on, and who it reaches through a relay.
    pub relay: Arc<Hub>,
    /// Per network, in the config's order: forwarding snapshot and data-plane counters.
    pub networks: Vec<NetworkShared>,
}

/// One network's shared state.
#[derive(Debug)]
pub struct NetworkShared {
    pub id: NetworkId,
    pub name: String,
    pub fib: Arc<Fib>,
    pub counters: Arc<Counters>,
}

impl Shared {
    /// The shared state of network `id`.
    pub fn network(&self, id: NetworkId) -> Option<&NetworkShared> {
        self.networks.iter().find(|n| n.id == id)
    }
}

enum Input {
    Query(Query),
    Command(Command),
    Connected {
        site: SiteId,
        link: Link,
    },
    Disconnected {
        site: SiteId,
        id: u64,
    },
    Message {
        site: SiteId,
        id: u64,
        frame: Frame,
    },
    /// Re-read the revocation list.
    Reload,
}

struct Link {
    id: u64,
    conn: quinn::Connection,
    /// The peer's verified certificate: certified prefixes, serial and fingerprint.
    certificate: pki::PeerCertificate,
    /// The networks the peer's hello says it carries.
    networks: Vec<NetworkId>,
    outbox: mpsc::Sender<Frame>,
    direction: Direction,
    path: PeerPath,
}

/// Runs a router until `shutdown` resolves, then removes its kernel state.
pub async fn run<D: PacketDevice, K: KernelOps>(
    parts: Parts<D, K>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Parts {
        config,
        identity,
        socket,
        networks: parts,
        reload,
    } = parts;
    anyhow::ensure!(
        parts.len() == config.networks().len(),
        "{} network(s) configured but {} set up",
        config.networks().len(),
        parts.len()
    );
    let (endpoint, client) = open_endpoint(&config, &identity, socket)?;
    let revoked = Arc::new(std::sync::RwLock::new(crate::revoked::Revoked::load(
        config.tls.revoked.as_deref(),
    )?));
    let peers = Arc::new(PeerTable::new());
    let counters = Arc::new(Counters::new());
    let (hub, relayed) = relay::start(&config, &identity, &peers, &counters)?;
    let now = Instant::now();
    let mut nodes = Vec::new();
    let mut shared_networks = Vec::new();
    let mut io = Vec::new();
    for (network, part) in config.networks().iter().zip(parts) {
        let mut node = Node::new(
            trust::node_config(&config, network, &identity, part.lan.as_ref()),
            now,
        );
        let fib = Arc::new(Fib::new(node.fib_snapshot(now)));
        let net_counters = Arc::new(Counters::new());
        let tun_task = dataplane::spawn_tun_reader(
            network.id,
            part.device.clone(),
            fib.clone(),
            peers.clone(),
            net_counters.clone(),
        );
        io.push(NetIo {
            id: network.id,
            name: network.name.clone(),
            device: part.device,
            fib: fib.clone(),
            kernel: KernelSync::new(part.kernel),
            copies: part.lan.as_ref().map(|_| {
                crate::lancopy::LanCopies::start(
                    network.lan.interface.clone(),
                    network.tun.clone(),
                    crate::lancopy::table_name(network.id),
                )
            }),
            lan: part.lan.map(LanChannels::from),
            dirty: true,
            foreign_generation: None,
            tun_task,
        });
        shared_networks.push(NetworkShared {
            id: network.id,
            name: network.name.clone(),
            fib,
            counters: net_counters,
        });
        nodes.push(NetworkNode {
            id: network.id,
            name: network.name.clone(),
            node,
        });
    }
    let shared = Shared {
        site: config.site.clone(),
        peers,
        counters,
        relay: Arc::new(hub),
        networks: shared_networks,
    };
    let networks = Networks::new(nodes);
    let (inputs, input_rx) = mpsc::channel(INPUT_CAPACITY);
    let (connected, connected_rx) = watch::channel(BTreeSet::<SiteId>::new());
    if let Some(reload) = reload {
        tokio::spawn(trust::forward_reloads(reload, inputs.clone()));
    }
    let ctx = LinkContext {
        me: config.site.clone(),
        networks: networks.ids(),
        inputs,
        ids: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        revoked: revoked.clone(),
    };
    let endpoints = Endpoints {
        wan: endpoint.clone(),
        client,
        relayed: relayed.clone(),
    };
    let mut background = spawn_background(&config, &endpoints, &ctx, &connected_rx)?;
    let route_mtus = relay::route_mtus(&config);

    let mut main = MainLoop {
        me: config.site.clone(),
        networks,
        io,
        links: HashMap::new(),
        shared,
        connected,
        route_mtus,
        revoked,
        revoked_path: config.tls.revoked.clone(),
    };
    main.start().await;
    main.run(input_rx, shutdown).await;

    tracing::info!("shutting down");
    endpoint.close(quinn::VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
    if let Some(relayed) = &relayed {
        relayed
            .endpoint
            .close(quinn::VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
    }
    background.abort_all();
    for net in &mut main.io {
        net.tun_task.abort();
        net.kernel.clear().await.with_context(|| {
            format!("removing network {}'s kernel routes at shutdown", net.name)
        })?;
    }
    tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle())
        .await
        .ok();
    Ok(())
}

/// The QUIC endpoints: the WAN one, and the relay one when some peers are reached via a relay.
struct Endpoints {
    wan: quinn::Endpoint,
    client: quinn::ClientConfig,
    relayed: Option<Arc<RelayEndpoint>>,
}

/// The tasks beside the main loop: the admin socket and metrics, accepting connections, and
/// one dialer per peer with an address or a relay.
fn spawn_background(
    config: &Config,
    endpoints: &Endpoints,
    ctx: &LinkContext,
    connected: &watch::Receiver<BTreeSet<SiteId>>,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let mut background = tokio::task::JoinSet::new();
    for task in crate::admin::start(config, QueryHandle(ctx.inputs.clone()))? {
        background.spawn(task);
    }
    background.spawn(connect::accept_loop(
        endpoints.wan.clone(),
        None,
        ctx.clone(),
    ));
    if let Some(relayed) = &endpoints.relayed {
        background.spawn(connect::accept_loop(
            relayed.endpoint.clone(),
            Some(relayed.clone()),
            ctx.clone(),
        ));
    }
    for peer in &config.peers {
        let dial = match (peer.address, &peer.via, &endpoints.relayed) {
            (Some(addr), _, _) => connect::Dial::Direct {
                endpoint: endpoints.wan.clone(),
                client: endpoints.client.clone(),
                addr,
            },
            // Of two routers relayed to each other, the lower site id dials and the other
            // accepts: two dials at once would cost a replaced connection (the tie-break keeps
            // the lower one's anyway).
            (None, Some(relay), Some(relayed)) if config.site < peer.site => {
                connect::Dial::Relayed {
                    relayed: relayed.clone(),
                    relay: relay.clone(),
                }
            }
            // Reached only when it dials us.
            (None, _, _) => continue,
        };
        background.spawn(connect::dial_loop(
            dial,
            peer.site.clone(),
            ctx.clone(),
            connected.clone(),
        ));
    }
    Ok(background)
}

/// The QUIC endpoint on the bound WAN socket, and the client config to dial peers with.
fn open_endpoint(
    config: &Config,
    identity: &Identity,
    socket: std::net::UdpSocket,
) -> anyhow::Result<(quinn::Endpoint, quinn::ClientConfig)> {
    let mut transport = pki::transport_config();
    dataplane::tune_transport(&mut transport, config.tun.mtu);
    let idle = quinn::IdleTimeout::try_from(config.wan.idle_timeout())
        .context("wan.idle_timeout_ms does not fit a QUIC idle timeout")?;
    transport
        .keep_alive_interval(Some(config.wan.keep_alive()))
        .max_idle_timeout(Some(idle));
    let transport = Arc::new(transport);
    let server = identity.server_config(transport.clone())?;
    let client = identity.client_config(transport)?;
    let local_addr = socket
        .local_addr()
        .context("reading the WAN socket address")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .context("starting the QUIC endpoint")?;
    tracing::info!(site = %config.site, wan = %local_addr, "router starting");
    Ok((endpoint, client))
}

/// The LAN side's channels, as the main loop uses them.
struct LanChannels {
    /// `None` once the capture stopped.
    events: Option<mpsc::Receiver<LanEvent>>,
    frames: mpsc::Sender<FrameBytes>,
    foreign_macs: watch::Sender<Vec<MacAddr>>,
}

impl From<LanPort> for LanChannels {
    fn from(port: LanPort) -> Self {
        LanChannels {
            events: Some(port.events),
            frames: port.frames,
            foreign_macs: port.foreign_macs,
        }
    }
}

/// The daemon's main loop: owns the networks and feeds them inputs, LAN events and timeouts,
/// and applies their effects.
struct MainLoop<D, K: KernelOps> {
    me: SiteId,
    networks: Networks,
    /// Each network's IO, in the order of `networks`.
    io: Vec<NetIo<D, K>>,
    links: HashMap<SiteId, Link>,
    shared: Shared,
    /// The sites with a connection up, for the dialers.
    connected: watch::Sender<BTreeSet<SiteId>>,
    /// The route MTU towards each peer reached through a relay.
    route_mtus: BTreeMap<SiteId, u32>,
    /// The revocation list, shared with the connection tasks.
    revoked: Arc<std::sync::RwLock<crate::revoked::Revoked>>,
    revoked_path: Option<std::path::PathBuf>,
}

impl<D: PacketDevice, K: KernelOps> MainLoop<D, K> {
    /// Before anything else: each network's kernel state reconciled in full against its
    /// initial tables (what a previous instance left behind goes), and its first FIB snapshot.
    async fn start(&mut self) {
        self.apply_effects();
        for index in 0..self.io.len() {
            let route_mtus = &self.route_mtus;
            let Some(net) = self.io.get_mut(index) else {
                continue;
            };
            let Some(network) = self.networks.get(net.id) else {
                continue;
            };
            let node = &network.node;
            let tun_routes = node.tun_routes();
            let route_mtus = relayed_route_mtus(node, route_mtus, &tun_routes);
            let in_step = net
                .kernel
                .reconcile_now(tun_routes, node.lan_hosts(), route_mtus)
                .await;
            self.publish(index);
            if in_step {
                if let Some((node, _)) = self.pair_mut(index) {
                    node.handle_kernel_applied(Instant::now());
                }
            }
            if let Some(net) = self.io.get_mut(index) {
                net.dirty = false;
            }
        }
    }

    fn pair_mut(&mut self, index: usize) -> Option<(&mut Node, &mut NetIo<D, K>)> {
        let net = self.io.get_mut(index)?;
        let node = &mut self.networks.get_mut(net.id)?.node;
        Some((node, net))
    }

    async fn run(&mut self, mut inputs: mpsc::Receiver<Input>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.apply_effects();
            if self.io.iter().any(|n| n.dirty || n.kernel.has_pending()) {
                self.commit().await;
                continue;
            }
            let deadline = self
                .networks
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep_until(deadline) => self.networks.handle_timeout(Instant::now()),
                (index, event) = next_net_event(&mut self.io) => self.on_net_event(index, event).await,
                input = inputs.recv() => {
                    let Some(input) = input else { return };
                    self.handle_input(input);
                    self.connected.send_replace(self.links.keys().cloned().collect());
                }
            }
        }
    }

    async fn on_net_event(&mut self, index: usize, event: NetEvent<K::Applied>) {
        match event {
            NetEvent::Lan(event) => self.on_lan_event(index, event),
            NetEvent::DumpDue => {
                if let Some(net) = self.io.get_mut(index) {
                    net.kernel.start_dump();
                }
            }
            NetEvent::Dumped(applied) => {
                let route_mtus = &self.route_mtus;
                let Some(net) = self.io.get_mut(index) else {
                    return;
                };
                let Some(network) = self.networks.get_mut(net.id) else {
                    return;
                };
                let node = &mut network.node;
                let tun = node.tun_routes();
                let mtus = relayed_route_mtus(node, route_mtus, &tun);
                let lan = node.lan_hosts();
                if net.kernel.repaired(applied, tun, lan, mtus).await {
                    node.handle_kernel_applied(Instant::now());
                }
            }
        }
    }

    /// Applies what the tables' changes call for, network by network: the kernel's targeted
    /// changes first (a migrated VM's /32 and neighbour entry), then a new FIB snapshot for
    /// the data plane and the foreign MACs for the LAN capture. Migrations are applied once
    /// the kernel holds the tables (after a failure, once a repair succeeded).
    async fn commit(&mut self) {
        for index in 0..self.io.len() {
            let Some(net) = self.io.get_mut(index) else {
                continue;
            };
            if !net.dirty && !net.kernel.has_pending() {
                continue;
            }
            let in_step = net.kernel.flush().await;
            if std::mem::take(&mut net.dirty) {
                self.publish(index);
            }
            if in_step {
                if let Some((node, _)) = self.pair_mut(index) {
                    node.handle_kernel_applied(Instant::now());
                }
            }
        }
    }

    fn publish(&mut self, index: usize) {
        let Some((node, net)) = self.pair_mut(index) else {
            return;
        };
        let copies = node.fib_copies();
        net.fib.store(node.fib_snapshot(Instant::now()));
        if node.fib_copies() > copies {
            // A packet task still held the older snapshot: this one was copied whole.
            tracing::debug!(
                network = %net.name,
                copies = node.fib_copies(),
                "forwarding snapshot copied (the data plane held the spare)"
            );
        }
        let generation = node.foreign_macs_generation();
        if let Some(lan) = &net.lan {
            if net.foreign_generation != Some(generation) {
                net.foreign_generation = Some(generation);
                lan.foreign_macs.send_replace(node.foreign_macs());
            }
        }
    }

    fn on_lan_event(&mut self, index: usize, event: Option<LanEvent>) {
        let Some((node, net)) = self.pair_mut(index) else {
            return;
        };
        match event {
            Some(LanEvent::Arp(event)) => node.handle_lan_event(event, Instant::now()),
            Some(LanEvent::Foreign(frame)) => {
                node.handle_foreign_frame(frame.eth_src, frame.src_ip, Instant::now());
            }
            None => {
                tracing::warn!(network = %net.name, "LAN capture stopped; migrations can no longer be detected");
                if let Some(lan) = &mut net.lan {
                    lan.events = None;
                }
            }
        }
    }

    fn handle_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Query(query) => query(&self.networks, &self.shared, now),
            Input::Command(command) => command(&mut self.networks, now),
            Input::Connected { site, link } => self.on_connected(site, link, now),
            Input::Disconnected { site, id } => {
                if self.links.get(&site).is_some_and(|l| l.id == id) {
                    if let Some(link) = self.links.remove(&site) {
                        self.shared.peers.remove_if_same(&site, &link.conn);
                    }
                    self.networks.handle_peer_down(&site, now);
                    self.close_relayed_via(&site);
                }
            }
            Input::Message { site, id, frame } => {
                if self.links.get(&site).is_some_and(|l| l.id == id) {
                    // A frame for a network the peer does not share is counted and logged
                    // there, never routed.
                    let _ = self.networks.handle_frame(&site, frame, now);
                }
            }
            Input::Reload => self.reload_revoked(now),
        }
    }

    /// The connection to `relay` is gone: so is every path through it. Closing the relayed
    /// connections now (rather than at their idle timeout) lets their dialers start over as
    /// soon as the relay is back.
    fn close_relayed_via(&self, relay: &SiteId) {
        for (site, link) in &self.links {
            if link.path.relay() == Some(relay) {
                tracing::info!(peer = %site, %relay, "relay down; closing the relayed connection");
                link.conn.close(
                    quinn::VarInt::from_u32(close_code::RELAY_DOWN),
                    b"relay down",
                );
            }
        }
    }

    /// A connection passed its handshake; the core breaks the tie with one already up.
    fn on_connected(&mut self, site: SiteId, link: Link, now: Instant) {
        if !self.admitted(&site, &link) {
            return;
        }
        if let Some(existing) = self.links.get(&site) {
            // The certificate's fingerprint tells a site's two routers apart.
            let router = if existing.certificate.id == link.certificate.id {
                PeerRouter::Same
            } else {
                PeerRouter::Other
            };
            let keep = link::tie_break_link(
                &self.me,
                &site,
                (existing.direction, &existing.path),
                (link.direction, &link.path),
                router,
            );
            let (closing, reason) = match keep {
                Keep::New => (&existing.conn, "duplicate, replaced"),
                Keep::Existing => (&link.conn, "duplicate"),
            };
            if router == PeerRouter::Other {
                tracing::info!(peer = %site, old = %existing.conn.remote_address(), new = %link.conn.remote_address(), "the site's other router took over; replacing its connection");
            } else {
                tracing::debug!(peer = %site, reason, "closing duplicate connection");
            }
            closing.close(quinn::VarInt::from_u32(close_code::DUPLICATE), b"duplicate");
            if keep == Keep::Existing {
                return;
            }
        }
        self.shared.peers.insert(site.clone(), link.conn.clone());
        let shared = self.networks.handle_link_up(
            &site,
            &link.path,
            &link.networks,
            &link.certificate.prefixes,
            now,
        );
        if shared.is_empty() {
            tracing::warn!(peer = %site, theirs = ?link.networks, ours = ?self.networks.ids(), "peer shares no network with this router");
        }
        let data_networks = self
            .io
            .iter()
            .filter(|net| shared.contains(net.id))
            .filter_map(|net| {
                Some(DataNetwork {
                    id: net.id,
                    device: net.device.clone(),
                    fib: net.fib.clone(),
                    counters: self.shared.network(net.id)?.counters.clone(),
                })
            })
            .collect();
        dataplane::spawn_peer_reader_with_relay(
            link.conn.clone(),
            site.clone(),
            Arc::new(data_networks),
            (self.shared.peers.clone(), self.shared.counters.clone()),
            self.shared.relay.clone(),
        );
        let dialed_by_me = link.direction == Direction::Dialed;
        match &link.path {
            PeerPath::Direct => {
                tracing::info!(peer = %site, remote = %link.conn.remote_address(), dialed_by_me, "connection established");
            }
            PeerPath::Via(relay) => {
                tracing::info!(peer = %site, %relay, dialed_by_me, "connection established through a relay");
            }
        }
        self.links.insert(site, link);
    }

    fn apply_effects(&mut self) {
        while let Some((id, effect)) = self.networks.poll_effect() {
            if let Effect::Send { to, message } = effect {
                self.send(&to, Frame::new(id, message));
                continue;
            }
            let Some(net) = self.io.iter_mut().find(|n| n.id == id) else {
                continue;
            };
            match effect {
                Effect::TablesChanged => net.dirty = true,
                Effect::Kernel(op) => {
                    let mtu = self
                        .networks
                        .get(id)
                        .and_then(|n| route_mtu(&n.node, &self.route_mtus, op.dst()));
                    net.kernel.push(op, mtu);
                }
                Effect::LanCopies { ip, copy } => {
                    if let Some(copies) = &net.copies {
                        copies.set(ip, copy);
                    }
                }
                Effect::Transmit { frame } => {
                    if let Some(lan) = &net.lan {
                        if lan.frames.try_send(frame).is_err() {
                            tracing::debug!(network = %net.name, "LAN transmit queue full; frame dropped");
                        }
                    }
                }
                // Handled above.
                Effect::Send { .. } => {}
            }
        }
    }

    fn send(&self, to: &SiteId, frame: Frame) {
        let Some(link) = self.links.get(to) else {
            tracing::debug!(peer = %to, network = frame.network, kind = frame.message.kind(), "peer not connected; message dropped");
            return;
        };
        if let Err(error) = link.outbox.try_send(frame) {
            tracing::warn!(peer = %to, %error, "control queue to peer is stuck; closing the connection");
            link.conn.close(
                quinn::VarInt::from_u32(close_code::STUCK),
                b"control queue full",
            );
        }
    }
}
