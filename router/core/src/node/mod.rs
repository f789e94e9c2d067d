//! The router's control-plane core, sans IO: peer events, control messages and timeouts go in;
//! effects (messages to send, "the tables changed") come out of [`Node::poll_effect`].
//!
//! The async daemon only moves bytes and applies effects, so this core runs unchanged in the
//! in-process multi-site simulation.

mod counters;
mod destination;
mod kernel;
mod lan;
mod learning;
mod limits;
mod merge;
mod prepare;
mod prober;
mod proxy;
mod records;
mod source;
mod succession;
#[cfg(test)]
mod testing;
mod trust;
#[cfg(test)]
mod trust_tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_inject::wire::FrameBytes;
use skyvine_tables::{
    Applied, DampingConfig, EntryKind, Gndt, GndtEntry, Hwdt, Lndt, MacAddr, SiteId, Stored,
};

use crate::fib::{FibExtras, FibSnapshot, FibWriter};
use crate::link::PeerPath;
use crate::proto::{Message, MAX_ENTRIES_PER_MESSAGE};

pub use counters::{Counter, Counters};
pub use kernel::{KernelOp, KernelRoute};
pub use lan::LanIdentity;
pub use prepare::{HintError, HintOutcome, Prepared, MAX_PREPARED, MAX_PREPARE_WINDOW};
pub use records::{Detection, MigrationRecord, Outcome, RefusalReason, Role, RELAY_WINDOW};
pub use trust::{EntryRefusal, MAX_SEQ_JUMP, TOMBSTONE_LIFETIME};

/// How often a digest goes to each connected peer.
pub const DIGEST_INTERVAL: Duration = Duration::from_secs(5);
/// Capacity of the HWDT (learned bindings).
pub const HWDT_CAPACITY: usize = 65_536;
/// Most GNDT entries one origin site may make this router store.
pub const MAX_ENTRIES_PER_SITE: usize = 65_536;
/// Most GNDT entries in all; beyond this new prefixes are refused (changes to known ones pass).
pub const MAX_GNDT_ENTRIES: usize = 500_000;

/// The destination's default confirmation timeout. With an optimistic takeover a long one costs
/// little: a spoofed claim of a VM still running at its old site is caught by the old site's
/// still-here probe (about one WAN round trip), whatever this timeout; a claim for a VM that is
/// nowhere only diverts packets nobody would receive. A short one rolls back (and freezes) a
/// real guest that resumes slowly: a loaded TCG guest was measured answering after 300 ms.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
/// The old site's default still-here timeout. A host still running there answers within
/// milliseconds; waiting longer only catches slow ones too (the check diverts nothing).
pub const DEFAULT_STILL_HERE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a planned-migration hint stays open by default.
pub const DEFAULT_PREPARE_WINDOW: Duration = Duration::from_secs(60);

/// When the destination takes a migrated VM's address over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Takeover {
    /// On the announcement, when the announced MAC matches the binding the owning site
    /// advertised (or vouched for); the VM is probed afterwards, and a move it does not confirm
    /// is rolled back.
    #[default]
    Optimistic,
    /// Only once the VM answered the destination's probe (nothing leaks before, at the cost of
    /// the guest's reply time in the outage).
    Confirmed,
}

impl Takeover {
    /// Its name in the configuration (`migration.takeover`) and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Takeover::Optimistic => "optimistic",
            Takeover::Confirmed => "confirmed",
        }
    }
}

/// What the core needs to know about its own site.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub me: SiteId,
    /// Prefixes this site owns.
    pub prefixes: Vec<Ipv4Network>,
    /// The prefixes this router's own certificate certifies (host entries inside them are
    /// VMs homed here). [`NodeConfig::new`] takes `prefixes`.
    pub certified: Vec<Ipv4Network>,
    /// LNDT ranges from configuration.
    pub lndt_ranges: Vec<Ipv4Network>,
    /// Peers named in configuration: the only sites that may connect, unless
    /// `any_certified_peer`.
    pub peers: Vec<SiteId>,
    /// Whether any site the CA certified may connect, listed or not (`tls.any_certified_peer`).
    pub any_certified_peer: bool,
    /// The router's own LAN MAC and address; `None` when there is no LAN (some simulations).
    pub lan: Option<LanIdentity>,
    /// Routing-optimization mode: the subnet every VM is configured with.
    pub virtual_network: Option<Ipv4Network>,
    /// When the destination takes a migrated VM's address over: at once on the announcement
    /// (confirming in the background), or only once the VM answered its probe.
    pub takeover: Takeover,
    /// How long the destination probes for a migrated VM before it gives up: it refuses the
    /// move (confirmed takeover) or rolls it back (optimistic takeover).
    pub confirm_timeout: Duration,
    /// How long the old site probes for a host that moved away before it lets it go.
    pub still_here_timeout: Duration,
    /// How long a planned-migration hint stays open without an announcement.
    pub prepare_window: Duration,
    /// Duplicate-address detection for moves.
    pub damping: DampingConfig,
    /// Addresses that never move.
    pub pinned: Vec<Ipv4Addr>,
}

impl NodeConfig {
    /// A configuration with default migration settings and no LAN.
    pub fn new(
        me: SiteId,
        prefixes: Vec<Ipv4Network>,
        lndt_ranges: Vec<Ipv4Network>,
        peers: Vec<SiteId>,
    ) -> Self {
        NodeConfig {
            me,
            certified: prefixes.clone(),
            prefixes,
            lndt_ranges,
            peers,
            any_certified_peer: false,
            lan: None,
            virtual_network: None,
            takeover: Takeover::Optimistic,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            still_here_timeout: DEFAULT_STILL_HERE_TIMEOUT,
            prepare_window: DEFAULT_PREPARE_WINDOW,
            damping: DampingConfig::default(),
            pinned: Vec::new(),
        }
    }
}

/// Something the IO layer must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a control message to a connected peer.
    Send { to: SiteId, message: Message },
    /// The GNDT or LNDT changed: publish a new FIB snapshot.
    TablesChanged,
    /// Change one kernel route (and its neighbour entry): the precise consequence of a GNDT
    /// change. See [`KernelOp`].
    Kernel(KernelOp),
    /// Send an Ethernet frame on the LAN.
    Transmit { frame: FrameBytes },
    /// At the source of a planned migration: copy (or stop copying) the packets that LAN hosts
    /// send to `ip` into the TUN device, so that they also reach the destination.
    LanCopies { ip: Ipv4Addr, copy: bool },
}

/// What this router knows about one peer.
#[derive(Clone, Debug)]
pub struct PeerState {
    /// Whether a control stream is up.
    pub connected: bool,
    /// When the current connection came up, or the last one went down.
    pub since: Instant,
    /// Whether the peer's full table has arrived on the current connection.
    pub synced: bool,
    /// Configured, or connected without being named in configuration.
    pub configured: bool,
    /// How the current connection travels; `None` while down.
    pub path: Option<PeerPath>,
    next_digest: Instant,
}

/// The control-plane core of one router.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    gndt: Gndt,
    lndt: Lndt,
    hwdt: Hwdt,
    peers: BTreeMap<SiteId, PeerState>,
    effects: VecDeque<Effect>,
    started: Instant,
    lan: lan::LanState,
    counters: Counters,
    /// What this router asked the kernel to hold, by prefix (see [`KernelOp`]).
    kernel: BTreeMap<Ipv4Network, KernelRoute>,
    /// Planned migrations in their window.
    windows: prepare::Windows,
    /// Certificates, what each peer said, previous owners (see [`trust`]).
    trust: trust::Trust,
    /// Makes the data plane's snapshots from the GNDT's changes.
    fib: FibWriter,
    /// The MACs of other sites' live host entries, kept on every change.
    foreign: ForeignMacs,
}

/// The MACs of other sites' live host entries, with how many entries carry each.
#[derive(Debug, Default)]
struct ForeignMacs {
    macs: BTreeMap<MacAddr, usize>,
    /// Bumped whenever a MAC joins or leaves the set.
    generation: u64,
}

impl ForeignMacs {
    fn add(&mut self, mac: MacAddr) {
        let count = self.macs.entry(mac).or_default();
        *count += 1;
        if *count == 1 {
            self.generation += 1;
        }
    }

    fn remove(&mut self, mac: MacAddr) {
        if let Some(count) = self.macs.get_mut(&mac) {
            *count -= 1;
            if *count == 0 {
                self.macs.remove(&mac);
                self.generation += 1;
            }
        }
    }
}

impl Node {
    /// A router that owns its configured prefixes and knows nothing else yet.
    pub fn new(config: NodeConfig, now: Instant) -> Node {
        let peers = config
            .peers
            .iter()
            .map(|site| (site.clone(), PeerState::new(true, now)))
            .collect();
        let lan = lan::LanState::new(&config, now);
        let trust = trust::Trust::new(config.me.clone(), config.certified.clone(), now);
        let mut node = Node {
            trust,
            lndt: Lndt::new(config.lndt_ranges.iter().copied(), now),
            config,
            gndt: Gndt::new(),
            hwdt: Hwdt::new(HWDT_CAPACITY),
            peers,
            effects: VecDeque::new(),
            started: now,
            lan,
            counters: Counters::default(),
            kernel: BTreeMap::new(),
            windows: prepare::Windows::default(),
            fib: FibWriter::default(),
            foreign: ForeignMacs::default(),
        };
        for prefix in node.config.prefixes.clone() {
            let entry = GndtEntry::site_prefix(prefix, node.config.me.clone(), 1);
            node.apply_entry(entry, now);
        }
        if let Some(identity) = node.config.lan {
            // Our own LAN binding: a migrated VM's stale entry for its old gateway is repointed
            // with it, and peers resolve our address like any host's.
            let entry = GndtEntry::host(identity.ip, node.config.me.clone(), 1, Some(identity.mac));
            node.apply_entry(entry, now);
        }
        // A configured prefix of ours outside our certificate is advertised (peers refuse it,
        // and count and log that: the operator sees the mistake on both sides) but not routed
        // as ours here. Both are fixed for the router's life: decided once, not per snapshot.
        let me = &node.config.me;
        let uncertified: Vec<Ipv4Network> = node
            .config
            .prefixes
            .iter()
            .filter(|p| !node.trust.certificates.covers(me, **p))
            .copied()
            .collect();
        node.fib.unroute(uncertified);
        node.effects.push_back(Effect::TablesChanged);
        node
    }

    pub fn me(&self) -> &SiteId {
        &self.config.me
    }
    pub fn gndt(&self) -> &Gndt {
        &self.gndt
    }
    pub fn lndt(&self) -> &Lndt {
        &self.lndt
    }
    pub fn hwdt(&self) -> &Hwdt {
        &self.hwdt
    }
    pub fn peers(&self) -> &BTreeMap<SiteId, PeerState> {
        &self.peers
    }
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A direct control stream to `peer`, whose certificate certifies `certified`, is up:
    /// send it the whole table.
    pub fn handle_peer_up(&mut self, peer: SiteId, certified: Vec<Ipv4Network>, now: Instant) {
        self.handle_link_up(peer, PeerPath::Direct, certified, now);
    }

    /// Whether `peer` may connect at all: never this router's own id, and only a listed peer
    /// unless any certified site may. The daemon asks before it takes a connection up.
    pub fn admit(&self, peer: &SiteId) -> Result<(), crate::link::AdmitError> {
        crate::link::admit(
            &self.config.me,
            peer,
            &self.config.peers,
            self.config.any_certified_peer,
        )
    }

    /// A control stream to `peer` is up on a connection that travels `path`; its certificate
    /// certifies `certified`: send it the whole table (our own entries).
    pub fn handle_link_up(
        &mut self,
        peer: SiteId,
        path: PeerPath,
        certified: Vec<Ipv4Network>,
        now: Instant,
    ) {
        if let Err(error) = self.admit(&peer) {
            tracing::warn!(peer = %peer, %error, "peer refused");
            return;
        }
        self.trust
            .views
            .entry(peer.clone())
            .or_default()
            .reconnected();
        self.learn_certificate(&peer, certified, now);
        let configured = self.config.peers.contains(&peer);
        let state = self
            .peers
            .entry(peer.clone())
            .or_insert_with(|| PeerState::new(configured, now));
        state.connected = true;
        state.synced = false;
        state.since = now;
        state.next_digest = now + DIGEST_INTERVAL;
        tracing::info!(peer = %peer, configured, %path, "peer up");
        state.path = Some(path);
        self.send_full_table(&peer);
        self.send_echo(&peer);
    }

    /// The control stream to `peer` is gone.
    pub fn handle_peer_down(&mut self, peer: &SiteId, now: Instant) {
        if let Some(state) = self.peers.get_mut(peer) {
            if state.connected {
                tracing::info!(peer = %peer, "peer down");
            }
            state.connected = false;
            state.synced = false;
            state.since = now;
            state.path = None;
        }
    }

    /// A control message from a connected peer.
    pub fn handle_message(&mut self, from: &SiteId, message: Message, now: Instant) {
        tracing::trace!(peer = %from, kind = message.kind(), "control message");
        if !self.peers.get(from).is_some_and(|p| p.connected) {
            tracing::debug!(peer = %from, kind = message.kind(), "message from a peer that is not up; ignored");
            return;
        }
        match message {
            Message::Hello { .. } => {
                tracing::debug!(peer = %from, "ignoring a repeated hello");
            }
            Message::Entries { entries } => self.merge_entries(from, entries, now),
            Message::Echo { entries } => self.on_echo(from, entries, now),
            Message::Outranked { ip, seq } => self.on_outranked(from, ip, seq, now),
            Message::TableEnd { digest, count } => {
                let first = self
                    .peers
                    .get_mut(from)
                    .is_some_and(|state| !std::mem::replace(&mut state.synced, true));
                let heard = self.end_of_table(from, first, now);
                self.after_full_table(from, now);
                tracing::info!(
                    peer = %from,
                    peer_entries = count,
                    entries = self.gndt.len(),
                    in_sync = digest == heard,
                    "full table received"
                );
            }
            Message::Digest { digest, count } => {
                self.reecho_unsaid(from);
                self.repeat_outranked(from, now);
                let in_sync = match self.trust.views.get_mut(from) {
                    Some(view) => view.in_sync(digest),
                    None => digest == 0,
                };
                if !in_sync {
                    tracing::debug!(
                        peer = %from,
                        peer_entries = count,
                        entries = self.gndt.len(),
                        "digest mismatch, asking for the peer's table"
                    );
                    self.send(from, Message::TableRequest {});
                }
            }
            Message::TableRequest {} => self.send_full_table(from),
            Message::WhoHas { query, mac } => {
                let ip = self.vouch_for(mac);
                self.send(from, Message::IsAt { query, mac, ip });
            }
            Message::IsAt { query, mac, ip } => self.on_is_at(from, query, mac, ip, now),
            Message::Prepare {
                ip,
                mac,
                to,
                window_ms,
            } => self.on_prepare(from, (ip, mac, to), window_ms, now),
            Message::PrepareEnd { ip, mac } | Message::PrepareCancel { ip, mac } => {
                self.on_prepare_end(from, ip, mac, now)
            }
            Message::PrepareRequest { ip, mac, window_ms } => {
                self.on_prepare_request(from, ip, mac, window_ms, now)
            }
        }
    }

    /// Periodic work: digests to peers, probes, repeated announcements, expiry.
    ///
    /// A connected peer whose full table has not arrived a digest interval after the
    /// connection came up (or after the last request) is asked for it again instead: until
    /// its table is complete, a digest comparison with it means nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.lan_timeout(now);
        self.expire_windows(now);
        self.sweep_tombstones(now);
        self.replay_deferred(now);
        // A digest covers our own entries: what a full table from us carries.
        let digest = self.gndt.digest_of(&self.config.me);
        let count = u64::try_from(self.gndt.count_of(&self.config.me)).unwrap_or(u64::MAX);
        let due: Vec<(SiteId, bool)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected && p.next_digest <= now)
            .map(|(site, p)| (site.clone(), p.synced))
            .collect();
        for (site, synced) in due {
            if let Some(state) = self.peers.get_mut(&site) {
                state.next_digest = now + DIGEST_INTERVAL;
            }
            if synced {
                self.send(&site, Message::Digest { digest, count });
            } else {
                tracing::debug!(peer = %site, "peer's full table has not arrived; asking again");
                self.send(&site, Message::TableRequest {});
            }
        }
    }

    /// When [`Node::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let digests = self
            .peers
            .values()
            .filter(|p| p.connected)
            .map(|p| p.next_digest)
            .min();
        digests
            .into_iter()
            .chain(self.lan_poll_timeout())
            .chain(self.windows.next_at())
            .chain((self.gndt.tombstones() > 0).then(|| self.trust.next_sweep()))
            .chain(self.trust.next_deferred())
            .min()
    }

    /// The next effect to apply.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The forwarding view for the data plane at `now`, made from the changes since the last
    /// one (see [`FibWriter`]): its cost does not grow with the table.
    pub fn fib_snapshot(&mut self, now: Instant) -> Arc<FibSnapshot> {
        let (copy_to, arriving) = self.prepared_view();
        let extras = FibExtras {
            relays: self.relays(now),
            copy_to,
            arriving,
        };
        self.fib
            .publish(&self.config.me, &self.gndt, &self.lndt, extras)
    }

    /// How many forwarding snapshots were copied whole because the data plane still held the
    /// older one (see [`FibWriter::copies`]).
    pub fn fib_copies(&self) -> u64 {
        self.fib.copies()
    }

    /// Prefixes the kernel must route into the TUN device: every live entry owned by another
    /// site, except host entries that agree with the prefix that covers them.
    pub fn tun_routes(&self) -> BTreeSet<Ipv4Network> {
        self.gndt
            .live_entries()
            .filter(|stored| stored.entry.site() != &self.config.me)
            .filter(|stored| !self.agrees_with_cover(stored))
            .map(|stored| stored.entry.prefix)
            .collect()
    }

    /// Hosts the kernel must route on the LAN: hosts of other sites' prefixes that migrated here.
    pub fn lan_hosts(&self) -> BTreeMap<Ipv4Addr, Option<MacAddr>> {
        self.gndt
            .live_entries()
            .filter(|stored| stored.entry.kind == EntryKind::Host)
            .filter(|stored| stored.entry.site() == &self.config.me)
            .filter(|stored| !self.agrees_with_cover(stored))
            .map(|stored| (stored.entry.prefix.ip(), stored.entry.mac))
            .collect()
    }

    /// Whether a host entry says no more than the prefix covering it (same owner).
    fn agrees_with_cover(&self, stored: &Stored) -> bool {
        stored.entry.kind == EntryKind::Host
            && self
                .gndt
                .covering(stored.entry.prefix)
                .is_some_and(|cover| cover.entry.site() == stored.entry.site())
    }

    /// Sends our own entries (and nobody else's) to `peer`, then the end mark.
    fn send_full_table(&mut self, peer: &SiteId) {
        let me = self.config.me.clone();
        let entries: Vec<GndtEntry> = self.gndt.entries_of(&me).map(|s| s.entry.clone()).collect();
        for chunk in entries.chunks(MAX_ENTRIES_PER_MESSAGE) {
            self.send(
                peer,
                Message::Entries {
                    entries: chunk.to_vec(),
                },
            );
        }
        let count = u64::try_from(entries.len()).unwrap_or(u64::MAX);
        self.send(
            peer,
            Message::TableEnd {
                digest: self.gndt.digest_of(&me),
                count,
            },
        );
    }

    fn broadcast_except(&mut self, skip: Option<&SiteId>, entries: &[GndtEntry]) {
        let targets: Vec<SiteId> = self
            .peers
            .iter()
            .filter(|(site, state)| state.connected && Some(*site) != skip)
            .map(|(site, _)| site.clone())
            .collect();
        for site in targets {
            for chunk in entries.chunks(MAX_ENTRIES_PER_MESSAGE) {
                self.send(
                    &site,
                    Message::Entries {
                        entries: chunk.to_vec(),
                    },
                );
            }
        }
    }

    fn send(&mut self, to: &SiteId, message: Message) {
        self.effects.push_back(Effect::Send {
            to: to.clone(),
            message,
        });
    }
}

impl PeerState {
    fn new(configured: bool, now: Instant) -> Self {
        PeerState {
            connected: false,
            since: now,
            synced: false,
            configured,
            path: None,
            next_digest: now,
        }
    }
}

#[cfg(test)]
mod tests;
