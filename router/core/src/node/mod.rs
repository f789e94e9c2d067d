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
#[cfg(test)]
mod testing;
mod trust;
#[cfg(test)]
mod trust_tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_inject::wire::FrameBytes;
use skyvine_tables::{
    Applied, DampingConfig, EntryKind, Gndt, GndtEntry, Hwdt, Lndt, MacAddr, SiteId, Stored,
};

use crate::fib::FibSnapshot;
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
            Message::TableEnd { digest, count } => {
                if let Some(state) = self.peers.get_mut(from) {
                    state.synced = true;
                }
                let heard = self.end_of_table(from, now);
                tracing::info!(
                    peer = %from,
                    peer_entries = count,
                    entries = self.gndt.len(),
                    in_sync = digest == heard,
                    "full table received"
                );
            }
            Message::Digest { digest, count } => {
                let heard = self.trust.views.get(from).map_or(0, |v| v.digest());
                if digest != heard {
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
            .min()
    }

    /// The next effect to apply.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The forwarding view for the data plane.
    ///
    /// A configured prefix of ours outside our certificate is advertised (peers refuse it,
    /// and count and log that: the operator sees the mistake on both sides) but not routed as
    /// ours here.
    pub fn fib_snapshot(&self) -> FibSnapshot {
        let (copy_to, arriving) = self.prepared_view();
        let uncertified: Vec<Ipv4Network> = self
            .config
            .prefixes
            .iter()
            .filter(|p| !self.trust.certificates.covers(&self.config.me, **p))
            .copied()
            .collect();
        let gndt = if uncertified.is_empty() {
            std::borrow::Cow::Borrowed(&self.gndt)
        } else {
            let mut gndt = self.gndt.clone();
            for prefix in uncertified {
                gndt.remove(prefix);
            }
            std::borrow::Cow::Owned(gndt)
        };
        FibSnapshot::build(&self.config.me, &gndt, &self.lndt)
            .with_relays(self.relays())
            .with_prepared(copy_to, arriving)
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
        let mut changed = false;
        for entry in entries {
            if !self.record_said(from, &entry)
                || (self.gndt.get(entry.prefix).is_none() && !self.has_room_for(from))
            {
                let refused = self.counters.add(Counter::RefusedEntries);
                if refused.is_power_of_two() {
                    tracing::warn!(peer = %from, origin = %entry.site(), refused, "GNDT limit reached; new entries refused");
                }
                continue;
            }
            let accepted = match self.check_entry(from, &entry, now) {
                Ok(accepted) => accepted,
                Err(refusal) => {
                    self.refuse_entry(from, &entry, refusal, now);
                    continue;
                }
            };
            let applied = self.apply_peer_entry(entry.clone(), accepted.wins_tie, now);
            // Stored as sent (every router holds the same entry), acted on without a freeze
            // mark we do not honour: our still-here check runs.
            let mut entry = entry;
            if entry.frozen && !accepted.honour_freeze && applied.changed() {
                self.counters.add(Counter::RefusedForgedFrozen);
                tracing::warn!(peer = %from, prefix = %entry.prefix, reason = EntryRefusal::ForgedFrozen.describe(), "freeze mark not honoured; checking the host is still here");
                entry.frozen = false;
            }
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
                changed = true;
            }
        }
        // Received entries are not flooded on: every router advertises its own entries to
        // every peer directly (the data plane only ever sends to the owning site directly, so
        // routers form a full mesh), and the periodic digest repairs anything lost. Flooding
        // would cost (N-1)^2 messages per change, and a router speaks only for itself.
        if changed {
            self.effects.push_back(Effect::TablesChanged);
        }
    }

    /// Applies a checked entry from its origin: the origin's last word about its own entry
    /// wins even when older (it restarted and counts from 1 again); against another origin's
    /// entry the sequence numbers decide, ties going to the address's home (`wins_tie`).
    fn apply_peer_entry(&mut self, entry: GndtEntry, wins_tie: bool, now: Instant) -> Applied {
        let current = self.gndt.get(entry.prefix).map(|s| s.entry.clone());
        match current {
            Some(current) if current.site() == entry.site() && current.version > entry.version => {
                self.gndt.remove(current.prefix);
                match self.apply_entry_ranked(entry, false, now) {
                    Applied::Inserted => Applied::Replaced { previous: current },
                    other => other,
                }
            }
            _ => self.apply_entry_ranked(entry, wins_tie, now),
        }
    }

    fn has_room_for(&self, from: &SiteId) -> bool {
        self.gndt.len() < MAX_GNDT_ENTRIES && self.gndt.count_of(from) < MAX_ENTRIES_PER_SITE
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
        // Entries of ours are never taken from peers (a restarted router relearns its hosts on
        // its LAN), so this entry is another site's.
        if self.lndt.remove(ip) {
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
        }
    }

    /// Merges one entry into the GNDT and, if it changed anything, emits the kernel changes.
    pub(super) fn apply_entry(&mut self, entry: GndtEntry, now: Instant) -> Applied {
        self.apply_entry_ranked(entry, false, now)
    }

    /// [`Node::apply_entry`], winning sequence-number ties against other origins if `wins_tie`.
    fn apply_entry_ranked(&mut self, entry: GndtEntry, wins_tie: bool, now: Instant) -> Applied {
        let prefix = entry.prefix;
        // A frozen take-back ends a move that was never confirmed: the site it takes the
        // address from is no confirmed owner, and the one before stays the last.
        let host =
            (entry.kind == EntryKind::Host && !entry.withdrawn && !entry.frozen).then(|| {
                let before = self.gndt.owner(prefix.ip()).cloned();
                (entry.site().clone(), before)
            });
        let applied = self.gndt.apply_ranked(entry, now, wins_tie);
        if let Some((owner, Some(before))) = host.filter(|_| applied.changed()) {
            // Remembered for freeze marks: only the site an address moved away from may
            // take it back frozen.
            if owner != before {
                self.trust.note_prior_owner(prefix.ip(), before);
            }
        }
        if applied.changed() {
            self.sync_kernel(Ipv4Network::new(prefix.network(), prefix.prefix()).unwrap_or(prefix));
        }
        applied
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
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    fn node(me: &str, prefix: &str, peers: &[&str], now: Instant) -> Node {
        let prefix: Ipv4Network = prefix.parse().unwrap();
        Node::new(
            NodeConfig::new(
                site(me),
                vec![prefix],
                vec![prefix],
                peers.iter().map(|p| site(p)).collect(),
            ),
            now,
        )
    }

    /// Delivers every queued message between the nodes until nothing moves.
    fn settle(nodes: &mut [Node], now: Instant) {
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                while let Some(effect) = nodes[i].poll_effect() {
                    if let Effect::Send { to, message } = effect {
                        let from = nodes[i].me().clone();
                        if let Some(target) = nodes.iter_mut().find(|n| n.me() == &to) {
                            target.handle_message(&from, message, now);
                            moved = true;
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    #[test]
    fn peers_learn_each_others_prefixes_and_route_them_into_the_tun() {
        let now = Instant::now();
        let mut nodes = vec![
            node("a", "10.77.1.0/24", &["b"], now),
            node("b", "10.77.2.0/24", &["a"], now),
        ];
        nodes[0].handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
        nodes[1].handle_peer_up(site("a"), crate::node::testing::certified("a"), now);
        settle(&mut nodes, now);
        let routes: Vec<String> = nodes[0]
            .tun_routes()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(routes, vec!["10.77.2.0/24"]);
        assert_eq!(nodes[1].gndt().digest(), nodes[0].gndt().digest());
        assert!(nodes[0].peers()[&site("b")].synced);
    }

    #[test]
    fn a_moved_host_leaves_the_lndt_and_gets_a_tun_route() {
        let now = Instant::now();
        let mut a = node("a", "10.77.1.0/24", &["b"], now);
        a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
        let vm: Ipv4Addr = "10.77.1.2".parse().unwrap();
        assert!(a.lndt().contains(vm));
        a.handle_message(
            &site("b"),
            Message::Entries {
                entries: vec![GndtEntry::host(vm, site("b"), 1, None)],
            },
            now,
        );
        assert!(!a.lndt().contains(vm));
        assert!(a.tun_routes().contains(&Ipv4Network::from(vm)));
        assert!(a.lan_hosts().is_empty());
    }

    #[test]
    fn a_restarted_peer_is_believed_about_its_own_entries_and_nothing_else() {
        let now = Instant::now();
        let mut a = node("a", "10.77.1.0/24", &["b"], now);
        let certified = crate::node::testing::certified("b");
        a.handle_peer_up(site("b"), certified.clone(), now);
        let prefix: Ipv4Network = "10.77.2.0/24".parse().unwrap();
        // One of our VMs that had migrated to b, and one of b's own.
        let old_host = GndtEntry::host("10.77.1.9".parse().unwrap(), site("b"), 4, None);
        let home_host = GndtEntry::host("10.77.2.9".parse().unwrap(), site("b"), 4, None);
        let entries = vec![
            GndtEntry::site_prefix(prefix, site("b"), 7),
            old_host.clone(),
            home_host.clone(),
        ];
        a.handle_message(&site("b"), Message::Entries { entries }, now);
        a.handle_message(
            &site("b"),
            Message::TableEnd {
                digest: 0,
                count: 2,
            },
            now,
        );
        // b restarts: it counts from 1 again and no longer has the host.
        a.handle_peer_down(&site("b"), now);
        a.handle_peer_up(site("b"), certified, now);
        // Our own full table goes out, with nothing of b's in it.
        let sent: Vec<GndtEntry> = std::iter::from_fn(|| a.poll_effect())
            .filter_map(|e| match e {
                Effect::Send {
                    message: Message::Entries { entries },
                    ..
                } => Some(entries),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!sent.is_empty());
        assert!(sent.iter().all(|e| e.site() == &site("a")), "{sent:?}");
        let fresh = vec![GndtEntry::site_prefix(prefix, site("b"), 1)];
        a.handle_message(&site("b"), Message::Entries { entries: fresh }, now);
        a.handle_message(
            &site("b"),
            Message::TableEnd {
                digest: 0,
                count: 1,
            },
            now,
        );
        let stored = a.gndt().get(prefix).unwrap();
        assert_eq!(stored.entry.version.seq, 1);
        // Our VM that was at b is no longer b's (we take it back, as after a withdrawal).
        assert_ne!(
            a.gndt().get(old_host.prefix).map(|s| s.entry.site()),
            Some(&site("b"))
        );
        // b's own host binding stays until b speaks about it again.
        assert!(a.gndt().get(home_host.prefix).is_some());
    }

    #[test]
    fn a_full_table_that_never_ended_is_asked_for_again() {
        let now = Instant::now();
        let mut a = node("a", "10.77.1.0/24", &["b"], now);
        a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
        while a.poll_effect().is_some() {}
        // b's entries arrive, its TableEnd is lost: a cannot compare digests with b.
        let entries = vec![GndtEntry::site_prefix(
            "10.77.2.0/24".parse().unwrap(),
            site("b"),
            1,
        )];
        a.handle_message(&site("b"), Message::Entries { entries }, now);
        while a.poll_effect().is_some() {}
        let due = a.poll_timeout().unwrap();
        assert_eq!(due, now + DIGEST_INTERVAL);
        a.handle_timeout(due);
        let asked: Vec<Effect> = std::iter::from_fn(|| a.poll_effect()).collect();
        assert_eq!(
            asked,
            [Effect::Send {
                to: site("b"),
                message: Message::TableRequest {}
            }]
        );
        // Once the table is complete, digests go out instead.
        let digest = a.gndt().digest();
        a.handle_message(&site("b"), Message::TableEnd { digest, count: 3 }, due);
        a.handle_timeout(due + DIGEST_INTERVAL);
        assert!(matches!(
            a.poll_effect(),
            Some(Effect::Send {
                message: Message::Digest { .. },
                ..
            })
        ));
    }

    #[test]
    fn digest_mismatch_requests_the_table() {
        let now = Instant::now();
        let mut a = node("a", "10.77.1.0/24", &["b"], now);
        a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
        while a.poll_effect().is_some() {}
        a.handle_message(
            &site("b"),
            Message::Digest {
                digest: 1,
                count: 1,
            },
            now,
        );
        assert_eq!(
            a.poll_effect(),
            Some(Effect::Send {
                to: site("b"),
                message: Message::TableRequest {}
            })
        );
    }
}
