//! The async shell around [`Node`]: QUIC connections to peers, control streams, the data plane
//! and kernel state. It moves bytes and applies effects; it decides nothing itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnetwork::Ipv4Network;
use skyvine_capture::sys::foreign::ForeignFrame;
use skyvine_capture::wire::ArpEvent;
use skyvine_inject::wire::FrameBytes;
use skyvine_tables::{MacAddr, SiteId};
use tokio::sync::{mpsc, watch};

use skyvine_core::config::Config;
use skyvine_core::link::{self, Direction, Keep, PeerPath, PeerRouter};
use skyvine_core::node::{Effect, LanIdentity, Node};
use skyvine_core::proto::Message;

use crate::dataplane::{self, Counters, PacketDevice, PeerTable};
use crate::fib::Fib;
use crate::pki::{self, Identity};
use crate::relay::{self, Hub, RelayEndpoint};

mod connect;
mod peer_link;
mod trust;

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
    pub device: Arc<D>,
    pub kernel: K,
    /// The LAN, or `None` to run without one (no migration support).
    pub lan: Option<LanPort>,
    /// Each message asks to re-read the revocation list (`tls.revoked`): SIGHUP in the binary.
    pub reload: Option<mpsc::Receiver<()>>,
}

/// Shared, read-mostly state that outlives the main loop's borrows (admin, metrics).
#[derive(Debug)]
pub struct Shared {
    pub fib: Arc<Fib>,
    pub peers: Arc<PeerTable>,
    pub counters: Arc<Counters>,
    /// Relay datagrams: what this router passed on, and who it reaches through a relay.
    pub relay: Arc<Hub>,
}

/// A question for the main loop, answered from the node's state (admin CLI, metrics).
pub type Query = Box<dyn FnOnce(&Node, &Shared, Instant) + Send>;

/// Asks the main loop questions; cheap to clone.
#[derive(Clone, Debug)]
pub struct QueryHandle(mpsc::Sender<Input>);

impl QueryHandle {
    /// Runs `question` on the main loop and returns its answer, or `None` if the router is
    /// shutting down.
    pub async fn ask<T: Send + 'static>(
        &self,
        question: impl FnOnce(&Node, &Shared, Instant) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let query: Query = Box::new(move |node, shared, now| {
            // The asker may have gone away; nothing to do then.
            let _ = tx.send(question(node, shared, now));
        });
        self.0.send(Input::Query(query)).await.ok()?;
        rx.await.ok()
    }

    /// Runs `command` on the main loop with the node to change, and returns its answer; the
    /// effects it leaves are applied as any input's.
    pub async fn command<T: Send + 'static>(
        &self,
        command: impl FnOnce(&mut Node, Instant) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let boxed: Command = Box::new(move |node, now| {
            // The asker may have gone away; nothing to do then.
            let _ = tx.send(command(node, now));
        });
        self.0.send(Input::Command(boxed)).await.ok()?;
        rx.await.ok()
    }
}

/// A command for the main loop that changes the node (admin `migration prepare`/`cancel`).
pub type Command = Box<dyn FnOnce(&mut Node, Instant) + Send>;

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
        message: Message,
    },
    /// Re-read the revocation list.
    Reload,
}

struct Link {
    id: u64,
    conn: quinn::Connection,
    /// The peer's verified certificate: certified prefixes, serial and fingerprint.
    certificate: pki::PeerCertificate,
    outbox: mpsc::Sender<Message>,
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
        device,
        kernel,
        lan,
        reload,
    } = parts;
    let (endpoint, client) = open_endpoint(&config, &identity, socket)?;
    let revoked = Arc::new(std::sync::RwLock::new(crate::revoked::Revoked::load(
        config.tls.revoked.as_deref(),
    )?));
    let mut node = Node::new(
        trust::node_config(&config, &identity, lan.as_ref()),
        Instant::now(),
    );
    let peers = Arc::new(PeerTable::new());
    let counters = Arc::new(Counters::new());
    let (hub, relayed) = relay::start(&config, &identity, &peers, &counters)?;
    let shared = Shared {
        fib: Arc::new(Fib::new(node.fib_snapshot())),
        peers,
        counters,
        relay: Arc::new(hub),
    };
    let tun_task = dataplane::spawn_tun_reader(
        device.clone(),
        shared.fib.clone(),
        shared.peers.clone(),
        shared.counters.clone(),
    );
    let (inputs, input_rx) = mpsc::channel(INPUT_CAPACITY);
    let (connected, connected_rx) = watch::channel(BTreeSet::<SiteId>::new());
    if let Some(reload) = reload {
        tokio::spawn(trust::forward_reloads(reload, inputs.clone()));
    }
    let ctx = LinkContext {
        me: config.site.clone(),
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
        node,
        links: HashMap::new(),
        shared,
        device,
        kernel: KernelSync::new(kernel),
        copies: lan.as_ref().map(|_| {
            crate::lancopy::LanCopies::start(config.lan.interface.clone(), config.tun.name.clone())
        }),
        lan: lan.map(LanChannels::from),
        connected,
        route_mtus,
        dirty: true,
        revoked,
        revoked_path: config.tls.revoked.clone(),
        foreign_generation: None,
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
    tun_task.abort();
    main.kernel
        .clear()
        .await
        .context("removing kernel routes at shutdown")?;
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

/// The daemon's main loop: owns the node and feeds it inputs, LAN events and timeouts, and
/// applies its effects.
struct MainLoop<D, K: KernelOps> {
    node: Node,
    links: HashMap<SiteId, Link>,
    shared: Shared,
    device: Arc<D>,
    kernel: KernelSync<K>,
    /// Copies of LAN packets for planned migrations from here (with a LAN only).
    copies: Option<crate::lancopy::LanCopies>,
    lan: Option<LanChannels>,
    /// The sites with a connection up, for the dialers.
    connected: watch::Sender<BTreeSet<SiteId>>,
    /// The route MTU towards each peer reached through a relay.
    route_mtus: BTreeMap<SiteId, u32>,
    /// The tables changed since they were last published.
    dirty: bool,
    /// The revocation list, shared with the connection tasks.
    revoked: Arc<std::sync::RwLock<crate::revoked::Revoked>>,
    revoked_path: Option<std::path::PathBuf>,
    /// The generation of the foreign MACs last handed to the LAN capture.
    foreign_generation: Option<u64>,
}

impl<D: PacketDevice, K: KernelOps> MainLoop<D, K> {
    /// Before anything else: the kernel reconciled in full against the initial tables (what a
    /// previous instance left behind goes), and the first FIB snapshot.
    async fn start(&mut self) {
        self.apply_effects();
        let tun_routes = self.node.tun_routes();
        let route_mtus = self.relayed_route_mtus(&tun_routes);
        let in_step = self
            .kernel
            .reconcile_now(tun_routes, self.node.lan_hosts(), route_mtus)
            .await;
        self.publish();
        if in_step {
            self.node.handle_kernel_applied(Instant::now());
        }
        self.dirty = false;
    }

    async fn run(&mut self, mut inputs: mpsc::Receiver<Input>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.apply_effects();
            if self.dirty || self.kernel.has_pending() {
                self.commit().await;
                continue;
            }
            let lan_event = async {
                match self.lan.as_mut().and_then(|lan| lan.events.as_mut()) {
                    Some(events) => events.recv().await,
                    None => std::future::pending().await,
                }
            };
            let deadline = self
                .node
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let next_dump = self.kernel.next_dump();
            let reconcile = async move {
                match next_dump {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep_until(deadline) => self.node.handle_timeout(Instant::now()),
                () = reconcile => self.kernel.start_dump(),
                applied = self.kernel.dumped() => {
                    let tun = self.node.tun_routes();
                    let mtus = self.relayed_route_mtus(&tun);
                    let lan = self.node.lan_hosts();
                    if self.kernel.repaired(applied, tun, lan, mtus).await {
                        self.node.handle_kernel_applied(Instant::now());
                    }
                }
                event = lan_event => self.on_lan_event(event),
                input = inputs.recv() => {
                    let Some(input) = input else { return };
                    self.handle_input(input);
                    self.connected.send_replace(self.links.keys().cloned().collect());
                }
            }
        }
    }

    /// Applies what the tables' changes call for: the kernel's targeted changes first (a
    /// migrated VM's /32 and neighbour entry), then a new FIB snapshot for the data plane and
    /// the foreign MACs for the LAN capture. Migrations are applied once the kernel holds the
    /// tables (after a failure, once a repair succeeded).
    async fn commit(&mut self) {
        let in_step = self.kernel.flush().await;
        if self.dirty {
            self.dirty = false;
            self.publish();
        }
        if in_step {
            self.node.handle_kernel_applied(Instant::now());
        }
    }

    fn publish(&mut self) {
        let copies = self.node.fib_copies();
        self.shared.fib.store(self.node.fib_snapshot());
        if self.node.fib_copies() > copies {
            // A packet task still held the older snapshot: this one was copied whole.
            tracing::debug!(
                copies = self.node.fib_copies(),
                "forwarding snapshot copied (the data plane held the spare)"
            );
        }
        let generation = self.node.foreign_macs_generation();
        if let Some(lan) = &self.lan {
            if self.foreign_generation != Some(generation) {
                self.foreign_generation = Some(generation);
                lan.foreign_macs.send_replace(self.node.foreign_macs());
            }
        }
    }

    /// The MTU of the route for `prefix` if it goes towards a site reached through a relay.
    fn route_mtu(&self, prefix: Ipv4Network) -> Option<u32> {
        let owner = self.node.gndt().get(prefix)?.entry.site();
        self.route_mtus.get(owner).copied()
    }

    /// The MTU of each route towards a site reached through a relay.
    fn relayed_route_mtus(&self, tun_routes: &BTreeSet<Ipv4Network>) -> BTreeMap<Ipv4Network, u32> {
        tun_routes
            .iter()
            .filter_map(|prefix| {
                let owner = self.node.gndt().get(*prefix)?.entry.site();
                Some((*prefix, *self.route_mtus.get(owner)?))
            })
            .collect()
    }

    fn on_lan_event(&mut self, event: Option<LanEvent>) {
        match event {
            Some(LanEvent::Arp(event)) => self.node.handle_lan_event(event, Instant::now()),
            Some(LanEvent::Foreign(frame)) => {
                self.node
                    .handle_foreign_frame(frame.eth_src, frame.src_ip, Instant::now());
            }
            None => {
                tracing::warn!("LAN capture stopped; migrations can no longer be detected");
                if let Some(lan) = &mut self.lan {
                    lan.events = None;
                }
            }
        }
    }

    fn handle_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Query(query) => query(&self.node, &self.shared, now),
            Input::Command(command) => command(&mut self.node, now),
            Input::Connected { site, link } => self.on_connected(site, link, now),
            Input::Disconnected { site, id } => {
                if self.links.get(&site).is_some_and(|l| l.id == id) {
                    if let Some(link) = self.links.remove(&site) {
                        self.shared.peers.remove_if_same(&site, &link.conn);
                    }
                    self.node.handle_peer_down(&site, now);
                    self.close_relayed_via(&site);
                }
            }
            Input::Message { site, id, message } => {
                if self.links.get(&site).is_some_and(|l| l.id == id) {
                    self.node.handle_message(&site, message, now);
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
                self.node.me(),
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
        dataplane::spawn_peer_reader_with_relay(
            link.conn.clone(),
            site.clone(),
            self.device.clone(),
            (
                self.shared.fib.clone(),
                self.shared.peers.clone(),
                self.shared.counters.clone(),
            ),
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
        let path = link.path.clone();
        let certified = link.certificate.prefixes.clone();
        self.links.insert(site.clone(), link);
        self.node.handle_link_up(site, path, certified, now);
    }

    fn apply_effects(&mut self) {
        while let Some(effect) = self.node.poll_effect() {
            match effect {
                Effect::TablesChanged => self.dirty = true,
                Effect::Kernel(op) => {
                    let mtu = self.route_mtu(op.dst());
                    self.kernel.push(op, mtu);
                }
                Effect::LanCopies { ip, copy } => {
                    if let Some(copies) = &self.copies {
                        copies.set(ip, copy);
                    }
                }
                Effect::Transmit { frame } => {
                    if let Some(lan) = &self.lan {
                        if lan.frames.try_send(frame).is_err() {
                            tracing::debug!("LAN transmit queue full; frame dropped");
                        }
                    }
                }
                Effect::Send { to, message } => self.send(&to, message),
            }
        }
    }

    fn send(&self, to: &SiteId, message: Message) {
        let Some(link) = self.links.get(to) else {
            tracing::debug!(peer = %to, kind = message.kind(), "peer not connected; message dropped");
            return;
        };
        if let Err(error) = link.outbox.try_send(message) {
            tracing::warn!(peer = %to, %error, "control queue to peer is stuck; closing the connection");
            link.conn.close(
                quinn::VarInt::from_u32(close_code::STUCK),
                b"control queue full",
            );
        }
    }
}
