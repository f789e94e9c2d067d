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
mod prepare;
mod prober;
mod proxy;
mod records;
mod source;
mod succession;
#[cfg(test)]
mod testing;

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
    /// LNDT ranges from configuration.
    pub lndt_ranges: Vec<Ipv4Network>,
    /// Peers named in configuration (others may still connect with a valid certificate).
    pub peers: Vec<SiteId>,
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
            prefixes,
            lndt_ranges,
            peers,
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
        let mut node = Node {
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

    /// A direct control stream to `peer` is up: send it the whole table.
    pub fn handle_peer_up(&mut self, peer: SiteId, now: Instant) {
        self.handle_link_up(peer, PeerPath::Direct, now);
    }

    /// A control stream to `peer` is up on a connection that travels `path`: send it the
    /// whole table.
    pub fn handle_link_up(&mut self, peer: SiteId, path: PeerPath, now: Instant) {
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
        match message {
            Message::Hello { .. } => {
                tracing::debug!(peer = %from, "ignoring a repeated hello");
            }
            Message::Entries { entries } => self.merge_entries(from, entries, now),
            Message::TableEnd { digest, count } => {
                if let Some(state) = self.peers.get_mut(from) {
                    state.synced = true;
                }
                self.after_full_table(from, now);
                tracing::info!(
                    peer = %from,
                    peer_entries = count,
                    entries = self.gndt.len(),
                    in_sync = digest == self.gndt.digest(),
                    "full table received"
                );
            }
            Message::Digest { digest, count } => {
                if digest != self.gndt.digest() {
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
        let digest = self.gndt.digest();
        let count = u64::try_from(self.gndt.len()).unwrap_or(u64::MAX);
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
            .min()
    }

    /// The next effect to apply.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The forwarding view for the data plane, made from the changes since the last one (see
    /// [`FibWriter`]): its cost does not grow with the table.
    pub fn fib_snapshot(&mut self) -> Arc<FibSnapshot> {
        let (copy_to, arriving) = self.prepared_view();
        let extras = FibExtras {
            relays: self.relays(),
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

    fn merge_entries(&mut self, from: &SiteId, entries: Vec<GndtEntry>, now: Instant) {
        let mut changed = Vec::new();
        for entry in entries {
            if self.gndt.get(entry.prefix).is_none() && !self.has_room_for(&entry) {
                let refused = self.counters.add(Counter::RefusedEntries);
                if refused.is_power_of_two() {
                    tracing::warn!(peer = %from, origin = %entry.site(), refused, "GNDT limit reached; new entries refused");
                }
                continue;
            }
            let applied = self.apply_entry(entry.clone(), now);
            if let Applied::Stale { current } = &applied {
                tracing::trace!(peer = %from, prefix = %entry.prefix, ?current, "stale entry ignored");
            }
            if applied.changed() {
                tracing::debug!(
                    peer = %from,
                    prefix = %entry.prefix,
                    site = %entry.site(),
                    seq = entry.version.seq,
                    withdrawn = entry.withdrawn,
                    "gndt entry changed"
                );
                let previous = match applied {
                    Applied::Replaced { previous } => Some(previous),
                    _ => None,
                };
                self.after_change(&entry, previous, now);
                changed.push(entry);
            }
        }
        // Only a change to one of our own entries can call for a correction.
        let ours_touched = changed
            .iter()
            .any(|e| e.site() == &self.config.me || self.config.prefixes.contains(&e.prefix));
        let reasserted = if ours_touched {
            self.reassert_own(&changed, now)
        } else {
            Vec::new()
        };
        if changed.is_empty() && reasserted.is_empty() {
            return;
        }
        self.effects.push_back(Effect::TablesChanged);
        // Received entries are not flooded on: every router advertises its own entries to
        // every peer directly (the data plane only ever sends to the owning site directly, so
        // routers form a full mesh), and the periodic digest repairs anything lost. Flooding
        // would cost (N-1)^2 messages per change.
        if !reasserted.is_empty() {
            self.broadcast_except(None, &reasserted);
        }
    }

    fn has_room_for(&self, entry: &GndtEntry) -> bool {
        self.gndt.len() < MAX_GNDT_ENTRIES
            && self.gndt.count_of(entry.site()) < MAX_ENTRIES_PER_SITE
    }

    /// What the core counted: LAN frames, refusals, entries over the limits.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Keeps the LNDT (and the LAN) in step with a changed host entry.
    fn after_change(&mut self, entry: &GndtEntry, previous: Option<GndtEntry>, now: Instant) {
        if entry.kind != EntryKind::Host {
            return;
        }
        self.on_owner_change(entry.prefix.ip(), now);
        if entry.withdrawn {
            self.after_withdrawal(entry, previous, now);
            return;
        }
        let ip = entry.prefix.ip();
        let previous_mac = previous.as_ref().and_then(|p| p.mac);
        // Who had the address before: the previous host entry, else the prefix covering it.
        let previous_owner = previous
            .filter(|p| !p.withdrawn)
            .map(|p| p.site().clone())
            .or_else(|| {
                self.gndt
                    .covering(entry.prefix)
                    .map(|c| c.entry.site().clone())
            });
        let moved = previous_owner.as_ref().is_some_and(|p| p != entry.site());
        // A frozen take-back freezes the address even where it does not look like a move (it
        // followed a withdrawal, and the address already fell back to the same site).
        if moved || entry.frozen {
            self.note_move(entry, now);
        }
        let own_lan_address = self.config.lan.is_some_and(|l| l.ip == ip);
        if entry.site() == &self.config.me && own_lan_address {
            // Our own LAN binding, as another router of the site advertised it (or we did
            // with an older MAC): no host to adopt; reassert_own re-advertises ours.
        } else if entry.site() == &self.config.me {
            // Our own host entry came back from the network (we restarted): adopt it.
            if self.lndt_add(ip, entry.mac, now) {
                tracing::info!(%ip, "host entry of ours learned from peers; back in the LNDT");
                self.after_adopting(ip, entry.mac, now);
            }
        } else if self.lndt_remove(ip) {
            tracing::info!(%ip, to = %entry.site(), "host moved away; removed from the LNDT");
            // Verify with the MAC we knew: a claim with another MAC must not pass unchecked.
            let known_mac = previous_mac.or_else(|| self.hwdt.by_ip(ip).map(|b| b.mac));
            self.on_moved_away(ip, known_mac, entry, now);
        } else if moved {
            self.on_remote_move(entry, previous_owner, now);
        }
    }

    /// A host entry was withdrawn. A claimant withdrawing its own live claim may call for a
    /// take-back by the site the host came from. A withdrawal that beat a live entry of ours
    /// for a host we still hold (two sites chose the same sequence number concurrently, e.g. a
    /// rollback crossing our own take-back) is answered by re-originating ours, newer.
    fn after_withdrawal(&mut self, entry: &GndtEntry, previous: Option<GndtEntry>, now: Instant) {
        if entry.site() == &self.config.me {
            return;
        }
        let Some(previous) = previous.filter(|p| !p.withdrawn) else {
            return;
        };
        let ip = entry.prefix.ip();
        if previous.site() == &self.config.me && self.lndt.contains(ip) {
            let mut ours = previous;
            ours.version.seq = entry.version.seq.saturating_add(1);
            tracing::info!(%ip, by = %entry.site(), seq = ours.version.seq, "another site's withdrawal superseded our host entry; re-advertising it");
            self.originate(ours, now);
        } else if previous.site() == entry.site() {
            self.on_withdrawn_host(entry, now);
        } else {
            // We missed the withdrawing site's claim (its message was lost, or came in a full
            // table we never got): the claim we knew is superseded all the same, and the
            // address may now fall back to a prefix of ours.
            self.adopt_if_ours_by_prefix(ip, entry.mac, now);
        }
    }

    /// Re-originates our own prefixes when the network holds a different version of them
    /// (e.g. withdrawn by a previous incarnation), and withdraws stale prefixes of ours among
    /// the `changed` entries (a prefix of ours that is no longer configured only ever comes
    /// back from the network, as a change: no need to scan the table).
    fn reassert_own(&mut self, changed: &[GndtEntry], now: Instant) -> Vec<GndtEntry> {
        let me = self.config.me.clone();
        let mut out = Vec::new();
        for prefix in self.config.prefixes.clone() {
            let current = self.gndt.get(prefix).map(|s| s.entry.clone());
            let ok = current.as_ref().is_some_and(|e| {
                !e.withdrawn && e.site() == &me && e.kind == EntryKind::SitePrefix
            });
            if !ok {
                let seq = current.map_or(1, |e| e.version.seq + 1);
                out.push(GndtEntry::site_prefix(prefix, me.clone(), seq));
            }
        }
        out.extend(self.reassert_lan_identity(now));
        let stale: BTreeMap<Ipv4Network, GndtEntry> = changed
            .iter()
            .filter_map(|e| self.gndt.get(e.prefix).map(|s| &s.entry))
            .filter(|e| !e.withdrawn && e.site() == &me && e.kind == EntryKind::SitePrefix)
            .filter(|e| !self.config.prefixes.contains(&e.prefix))
            .map(|e| (e.prefix, e.clone()))
            .collect();
        for mut entry in stale.into_values() {
            tracing::info!(prefix = %entry.prefix, "withdrawing a prefix no longer configured");
            entry.version.seq += 1;
            entry.withdrawn = true;
            out.push(entry);
        }
        for entry in &out {
            self.apply_entry(entry.clone(), now);
        }
        out
    }

    /// The MAC of a live host entry of another site (see [`Node::foreign_macs`]).
    fn foreign_mac(&self, entry: &GndtEntry) -> Option<MacAddr> {
        let foreign =
            entry.kind == EntryKind::Host && !entry.withdrawn && entry.site() != &self.config.me;
        entry.mac.filter(|_| foreign)
    }

    /// [`Lndt::add`], noted for the next forwarding snapshot.
    pub(super) fn lndt_add(&mut self, ip: Ipv4Addr, mac: Option<MacAddr>, now: Instant) -> bool {
        self.fib.local_changed(ip);
        self.lndt.add(ip, mac, now)
    }

    /// [`Lndt::remove`], noted for the next forwarding snapshot.
    pub(super) fn lndt_remove(&mut self, ip: Ipv4Addr) -> bool {
        self.fib.local_changed(ip);
        self.lndt.remove(ip)
    }

    /// Merges one entry into the GNDT and, if it changed anything, emits the kernel changes.
    pub(super) fn apply_entry(&mut self, entry: GndtEntry, now: Instant) -> Applied {
        let prefix = entry.prefix;
        let foreign = self.foreign_mac(&entry);
        let applied = self.gndt.apply(entry, now);
        if applied.changed() {
            if let Some(mac) = foreign {
                self.foreign.add(mac);
            }
            if let Some(mac) = match &applied {
                Applied::Replaced { previous } => self.foreign_mac(previous),
                _ => None,
            } {
                self.foreign.remove(mac);
            }
            let prefix = Ipv4Network::new(prefix.network(), prefix.prefix()).unwrap_or(prefix);
            self.fib.changed(prefix);
            self.sync_kernel(prefix);
        }
        applied
    }

    fn send_full_table(&mut self, peer: &SiteId) {
        let entries: Vec<GndtEntry> = self.gndt.entries().map(|s| s.entry.clone()).collect();
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
                digest: self.gndt.digest(),
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
