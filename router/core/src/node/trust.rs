//! Control-plane trust: what a peer may make this router believe. A router speaks only for
//! itself.
//!
//! * **Origin = sender.** An entry is accepted only from the site it names as its origin, on
//!   that site's own authenticated connection (end to end, also through a relay: see
//!   [`crate::relay`]). A full table carries only the sender's own entries, and nobody ever
//!   hands a router its own entries back: a restarted router relearns them from its
//!   configuration (prefixes, LNDT ranges) and its LAN (ARP, RARP, traffic: it advertises each
//!   host again as it sees it), and its peers drop what it no longer advertises once its full
//!   table has ended, except its host bindings: those of its own prefixes until it speaks
//!   about them again, its claims of VMs away from home through its first full table (it
//!   claims or withdraws each that they echo: see [`Node::end_of_table`]). The last word of an origin about its own
//!   entry wins, even with a lower sequence number than before (it restarted).
//! * **Certified prefixes.** Each router's certificate lists the prefixes the CA gave its site
//!   ([`Certificates`]). A prefix entry must lie inside the sender's certified prefixes and may
//!   not overlap this router's own. A host /32 outside the sender's prefixes (a VM that
//!   migrated there) must lie inside another site's certified prefix (the VM's home) and carry
//!   a sequence number above the current entry's; taking it over this way always starts the
//!   current owner's still-here check ([`super::source`]). At an equal sequence number the
//!   address's home wins; between two other sites the greater site id does, so every router
//!   ranks entries the same way whatever order they arrive in (two sites that claim a VM
//!   concurrently both saw the same entry, and pick the same number).
//! * A host claim that moves a pinned or frozen address is refused whoever sends it; a freeze
//!   mark is honoured only from the site the address last moved away from (the last confirmed
//!   owner) or from the current owner refreshing its entry.
//! * Sequence numbers may not jump more than [`MAX_SEQ_JUMP`] ahead of the current entry.
//!
//! Every refusal is counted (a `refused_*` counter) and logged at warn, at powers of two.
//! Digests compare what each peer *said* ([`PeerView`]), not what this router accepted, so a
//! refused entry never makes digests disagree.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_tables::{entry_hash, EntryKind, GndtEntry, MacAddr, MoveVerdict, SiteId};

use super::counters::Counter;
use super::{Effect, Message, Node, MAX_ENTRIES_PER_SITE};

mod echo;
mod retry;

/// How far ahead of the current entry a sequence number may jump. An honest site adds one per
/// change; this leaves room for a billion changes while nothing a peer sends can bring a
/// sequence number near `u64::MAX`.
pub const MAX_SEQ_JUMP: u64 = 1 << 32;
/// How long a tombstone is kept: longer than any message stays in flight, so that no older
/// advertisement can revive the entry it withdrew. Then it is collected.
pub const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(600);
/// How often tombstones are collected.
const TOMBSTONE_SWEEP: Duration = Duration::from_secs(60);
/// Addresses whose previous owner is remembered (for freeze marks); the oldest go first.
const MAX_PRIOR_OWNERS: usize = 65_536;
/// How many times an [`Message::Outranked`] hint is repeated with the claimant's digests.
const OUTRANKED_REPEATS: u8 = 3;
/// How many times a binding a peer's table left out is echoed to it again, one digest interval
/// apart (see [`Node::reecho_unsaid`]): a lost echo is repeated, a binding the peer has no use
/// for does not make it probe its LAN for ever.
const REECHOES: u8 = 3;

/// Why an entry from a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryRefusal {
    /// Its origin is not the peer that sent it.
    ForgedOrigin,
    /// Kind and prefix length disagree.
    BadKind,
    /// Outside the sender's certified prefixes (and, for a host, outside every known site's).
    ForeignPrefix,
    /// A prefix overlapping this router's own prefixes.
    OwnPrefix,
    /// A host claim whose sequence number is not above the current entry's.
    NotNewer,
    /// A sequence number too far ahead.
    SeqJump,
    /// A claim of a pinned or frozen address.
    PinnedOrFrozen,
    /// A freeze mark not from the address's last confirmed owner.
    ForgedFrozen,
}

impl EntryRefusal {
    /// The counter of entries refused for this reason.
    pub fn counter(self) -> Counter {
        match self {
            EntryRefusal::ForgedOrigin => Counter::RefusedForgedOrigin,
            EntryRefusal::BadKind => Counter::RefusedBadKind,
            EntryRefusal::ForeignPrefix => Counter::RefusedForeignPrefix,
            EntryRefusal::OwnPrefix => Counter::RefusedOwnPrefix,
            EntryRefusal::NotNewer => Counter::RefusedNotNewer,
            EntryRefusal::SeqJump => Counter::RefusedSeqJump,
            EntryRefusal::PinnedOrFrozen => Counter::RefusedPinnedClaim,
            EntryRefusal::ForgedFrozen => Counter::RefusedForgedFrozen,
        }
    }

    /// What an operator reads in the log.
    pub fn describe(self) -> &'static str {
        match self {
            EntryRefusal::ForgedOrigin => "entry of another site (a router speaks only for itself)",
            EntryRefusal::BadKind => "entry kind and prefix length disagree",
            EntryRefusal::ForeignPrefix => "outside the sender's certified prefixes",
            EntryRefusal::OwnPrefix => "overlaps this router's own prefixes",
            EntryRefusal::NotNewer => "host claim not newer than the current owner's entry",
            EntryRefusal::SeqJump => "sequence number jumps too far ahead",
            EntryRefusal::PinnedOrFrozen => "claim of a pinned or frozen address",
            EntryRefusal::ForgedFrozen => "freeze mark not from the address's last confirmed owner",
        }
    }
}

/// How an accepted entry is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Accepted {
    /// It wins a tie of sequence numbers against another origin's current entry (it comes
    /// from the address's home).
    pub(super) wins_tie: bool,
    /// Its freeze mark (if any) counts.
    pub(super) honour_freeze: bool,
}

/// The certified prefixes of every site whose certificate this router has verified, its own
/// included.
#[derive(Clone, Debug, Default)]
pub(super) struct Certificates(BTreeMap<SiteId, Vec<Ipv4Network>>);

impl Certificates {
    /// Records `site`'s certified prefixes; whether they differ from what was known.
    pub(super) fn set(&mut self, site: SiteId, prefixes: Vec<Ipv4Network>) -> bool {
        let prefixes: Vec<Ipv4Network> = prefixes.into_iter().map(normalize).collect();
        self.0.insert(site, prefixes.clone()).as_ref() != Some(&prefixes)
    }

    /// Whether `prefix` lies inside one of `site`'s certified prefixes.
    pub(super) fn covers(&self, site: &SiteId, prefix: Ipv4Network) -> bool {
        self.0
            .get(site)
            .is_some_and(|certified| certified.iter().any(|c| contains(*c, prefix)))
    }

    /// The site other than `except` with the longest certified prefix holding `ip`: the home
    /// of a VM at that address.
    pub(super) fn home_of(&self, ip: Ipv4Addr, except: &SiteId) -> Option<&SiteId> {
        self.0
            .iter()
            .filter(|(site, _)| *site != except)
            .flat_map(|(site, certified)| certified.iter().map(move |c| (site, c)))
            .filter(|(_, c)| c.contains(ip))
            .max_by_key(|(_, c)| c.prefix())
            .map(|(site, _)| site)
    }

    pub(super) fn of(&self, site: &SiteId) -> &[Ipv4Network] {
        self.0.get(site).map_or(&[], Vec::as_slice)
    }
}

/// What one peer last said about each prefix, accepted or not: the digest it sends covers the
/// same entries, so the two agree whenever nothing was lost on the way.
#[derive(Debug, Default)]
pub(super) struct PeerView {
    /// Per prefix: the hash of the entry it last sent, and the full-table round it came in.
    said: HashMap<Ipv4Network, (u64, u64)>,
    digest: u64,
    round: u64,
    /// Host bindings of the peer that we keep although its table left them out (see
    /// [`Node::end_of_table`]), with how many more times they are echoed to it.
    unsaid: BTreeMap<Ipv4Network, u8>,
    /// How many more times the bindings of its hosts that only a withdrawn entry or an entry
    /// gone from our table carries are echoed to it, with its digests (see
    /// [`Node::reecho_unsaid`]); [`REECHOES`] from its first table end on each connection.
    remembered_reechoes: u8,
    /// Hashes of the entries dropped as superseded since the peer's last digest (see
    /// [`PeerView::in_sync`]); at most [`MAX_IN_FLIGHT`] + 1, oldest first.
    dropped: Vec<u64>,
}

/// Superseded entries remembered between two digests of a peer (see [`PeerView::in_sync`]).
/// More moves away from the peer than this within a digest interval, and a digest that
/// differs from ours asks for the peer's table.
const MAX_IN_FLIGHT: usize = 4096;

impl PeerView {
    /// Records an entry; `false` if the peer already said as much as one site may.
    fn record(&mut self, entry: &GndtEntry) -> bool {
        let prefix = normalize(entry.prefix);
        let hash = entry_hash(&GndtEntry {
            prefix,
            ..entry.clone()
        });
        let full = self.said.len() >= MAX_ENTRIES_PER_SITE;
        match self.said.get_mut(&prefix) {
            Some(said) => {
                self.digest = self.digest.wrapping_sub(said.0).wrapping_add(hash);
                *said = (hash, self.round);
            }
            None if full => return false,
            None => {
                self.digest = self.digest.wrapping_add(hash);
                self.said.insert(prefix, (hash, self.round));
            }
        }
        true
    }

    /// The peer's table ended: what it did not repeat since the last end, it no longer says.
    fn end_of_table(&mut self) {
        let round = self.round;
        let mut digest = self.digest;
        self.said.retain(|_, (hash, seen)| {
            let kept = *seen == round;
            if !kept {
                digest = digest.wrapping_sub(*hash);
            }
            kept
        });
        self.digest = digest;
        self.round = round.wrapping_add(1);
        self.dropped.clear();
    }

    /// A new connection to the peer: its full table on it says afresh what it says. What it
    /// said on the last connection and does not repeat is no longer its word (a restarted
    /// router knows nothing of what it said before).
    pub(super) fn reconnected(&mut self) {
        self.round = self.round.wrapping_add(1);
        self.dropped.clear();
    }

    fn said(&self, prefix: Ipv4Network) -> bool {
        self.said.contains_key(&prefix)
    }

    /// Whether `entry` is still the peer's last word about its prefix.
    fn says(&self, entry: &GndtEntry) -> bool {
        let prefix = normalize(entry.prefix);
        let hash = entry_hash(&GndtEntry {
            prefix,
            ..entry.clone()
        });
        self.said
            .get(&prefix)
            .is_some_and(|(said, _)| *said == hash)
    }

    pub(super) fn digest(&self) -> u64 {
        self.digest
    }

    /// Another site's newer entry replaced `entry`, one of this peer's: the peer applies the
    /// same newer entry, so its table (and the digest it sends) no longer has `entry`. If
    /// `entry` is still its last word, it is dropped from the view here too; otherwise every
    /// move away from the peer would leave the two digests apart, and each would cost a full
    /// table at the next one. (If the peer keeps its entry after all, the digests differ and
    /// its table says so again.)
    fn superseded(&mut self, entry: &GndtEntry) {
        if !self.says(entry) {
            return;
        }
        if let Some((hash, _)) = self.said.remove(&normalize(entry.prefix)) {
            self.digest = self.digest.wrapping_sub(hash);
            if self.dropped.len() <= MAX_IN_FLIGHT {
                self.dropped.push(hash);
            }
        }
    }

    /// Whether the peer's `digest` agrees with what it said. A digest the peer sent before it
    /// heard of a move that we applied already still counts the entry the move superseded
    /// (the newer entry came to us first, from its own site). The peer applies the newer
    /// entries in the order we did when they come from one site (one ordered stream), so the
    /// entries it has not heard of yet are the last ones we dropped: a digest that differs
    /// from ours by the last few entries dropped since its previous digest is in sync too.
    /// Without this, each move that crosses a digest on the wire would cost a full table.
    pub(super) fn in_sync(&mut self, digest: u64) -> bool {
        let dropped = std::mem::take(&mut self.dropped);
        if dropped.len() > MAX_IN_FLIGHT {
            return digest == self.digest;
        }
        let mut counted = self.digest;
        if counted == digest {
            return true;
        }
        dropped.iter().rev().any(|hash| {
            counted = counted.wrapping_add(*hash);
            counted == digest
        })
    }
}

/// Trust state of a node: certificates, what each peer said, previous owners of addresses.
#[derive(Debug)]
pub(super) struct Trust {
    pub(super) certificates: Certificates,
    pub(super) views: BTreeMap<SiteId, PeerView>,
    /// Per address, the owner it last moved away from, in the order they were noted.
    prior_owners: BTreeMap<Ipv4Addr, (SiteId, u64)>,
    /// Bindings of host entries that went from the table (their origin stopped saying them):
    /// the address's MAC is still known, so that a VM that turns up here with it is recognised
    /// (see [`Node::remembered_binding`]).
    gone_bindings: BTreeMap<Ipv4Addr, MacAddr>,
    /// Bindings of our own hosts that peers echoed after a restart (see [`Node::on_echo`]).
    echoed: BTreeMap<MacAddr, Ipv4Addr>,
    /// Our claims of VMs away from their homes that peers still held when they echoed them
    /// (we restarted, or took over from the site's other router): the sequence number they
    /// hold, until the VM answers here (we claim it above that) or not (we withdraw it).
    echoed_claims: BTreeMap<Ipv4Addr, u64>,
    noted: u64,
    /// Per address and sender, the last claim refused because the address was frozen here,
    /// with when the freeze ends: then it is checked again (the freeze delays a move; it does
    /// not lose the claimant's word). Kept per sender: two sites may claim the address during
    /// one freeze, and the one whose claim ranks lower may be the one that still says it.
    deferred: BTreeMap<(Ipv4Addr, SiteId), (GndtEntry, Instant)>,
    /// Per address and sender, the last host entry refused for lying in no known site's
    /// prefixes: a certificate learned later may make it acceptable, and it is checked again
    /// then (without asking anyone: a request could be lost, and the digests agree). Kept per
    /// sender: two sites' claims of one VM may both be refused, and the newer one need not be
    /// the last to arrive.
    homeless: BTreeMap<(Ipv4Addr, SiteId), GndtEntry>,
    /// Per sender and address, a claim refused as not newer than the entry held here: the
    /// sender was told our number ([`Message::Outranked`]). The hint is repeated with its
    /// digests, [`OUTRANKED_REPEATS`] times at most, while it still says the claim and it is
    /// still refused: a hint can be lost, and the digests agree all the same. The claim is
    /// kept while its sender says it, and checked again once nothing here outranks it.
    outranked: BTreeMap<(SiteId, Ipv4Addr), (GndtEntry, u8)>,
    /// More homeless entries were refused than `homeless` keeps: a certificate learned later
    /// asks every connected peer for its table instead.
    homeless_overflow: bool,
    next_sweep: Instant,
}

impl Trust {
    pub(super) fn new(me: SiteId, certified: Vec<Ipv4Network>, now: Instant) -> Self {
        let mut certificates = Certificates::default();
        certificates.set(me, certified);
        Trust {
            certificates,
            views: BTreeMap::new(),
            prior_owners: BTreeMap::new(),
            gone_bindings: BTreeMap::new(),
            echoed: BTreeMap::new(),
            echoed_claims: BTreeMap::new(),
            noted: 0,
            deferred: BTreeMap::new(),
            homeless: BTreeMap::new(),
            outranked: BTreeMap::new(),
            homeless_overflow: false,
            next_sweep: now + TOMBSTONE_SWEEP,
        }
    }

    /// `ip` moved away from `owner`.
    pub(super) fn note_prior_owner(&mut self, ip: Ipv4Addr, owner: SiteId) {
        if !self.prior_owners.contains_key(&ip) && self.prior_owners.len() >= MAX_PRIOR_OWNERS {
            let oldest = self
                .prior_owners
                .iter()
                .min_by_key(|(_, (_, n))| *n)
                .map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                self.prior_owners.remove(&oldest);
            }
        }
        self.noted = self.noted.wrapping_add(1);
        self.prior_owners.insert(ip, (owner, self.noted));
    }

    fn note_gone_binding(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        if self.gone_bindings.len() < MAX_PRIOR_OWNERS || self.gone_bindings.contains_key(&ip) {
            self.gone_bindings.insert(ip, mac);
        }
    }

    fn note_echoed(&mut self, mac: MacAddr, ip: Ipv4Addr) {
        if self.echoed.len() < MAX_PRIOR_OWNERS || self.echoed.contains_key(&mac) {
            self.echoed.insert(mac, ip);
        }
    }

    fn note_echoed_claim(&mut self, ip: Ipv4Addr, seq: u64) {
        if self.echoed_claims.len() < MAX_PRIOR_OWNERS || self.echoed_claims.contains_key(&ip) {
            let held = self.echoed_claims.entry(ip).or_insert(seq);
            *held = (*held).max(seq);
        }
    }

    /// The sequence number peers hold for our echoed claim of `ip`, which is settled now.
    pub(super) fn take_echoed_claim(&mut self, ip: Ipv4Addr) -> Option<u64> {
        self.echoed_claims.remove(&ip)
    }

    /// The address of our own host at `mac` as we advertised it before a restart.
    pub(super) fn echoed(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.echoed.get(&mac).copied()
    }

    fn prior_owner(&self, ip: Ipv4Addr) -> Option<&SiteId> {
        self.prior_owners.get(&ip).map(|(site, _)| site)
    }

    pub(super) fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    fn defer(&mut self, from: &SiteId, entry: &GndtEntry, until: Instant) {
        let key = (entry.prefix.ip(), from.clone());
        let newer = self
            .deferred
            .get(&key)
            .is_none_or(|(held, _)| entry.version >= held.version);
        if newer && (self.deferred.len() < MAX_PRIOR_OWNERS || self.deferred.contains_key(&key)) {
            self.deferred.insert(key, (entry.clone(), until));
        }
    }

    fn keep_homeless(&mut self, from: &SiteId, entry: &GndtEntry) {
        let key = (entry.prefix.ip(), from.clone());
        if self.homeless.len() < MAX_PRIOR_OWNERS || self.homeless.contains_key(&key) {
            self.homeless.insert(key, entry.clone());
        } else {
            self.homeless_overflow = true;
        }
    }

    /// When the first deferred claim is due.
    pub(super) fn next_deferred(&self) -> Option<Instant> {
        self.deferred.values().map(|(_, until)| *until).min()
    }
}

impl Node {
    /// Whether `from` may tell us `entry`, and how we take it.
    pub(super) fn check_entry(
        &self,
        from: &SiteId,
        entry: &GndtEntry,
        now: Instant,
    ) -> Result<Accepted, EntryRefusal> {
        if entry.site() != from || from == &self.config.me {
            return Err(EntryRefusal::ForgedOrigin);
        }
        let prefix = normalize(entry.prefix);
        let host = entry.kind == EntryKind::Host;
        if host != (prefix.prefix() == 32) || (!host && (entry.mac.is_some() || entry.frozen)) {
            return Err(EntryRefusal::BadKind);
        }
        let current = self.gndt.get(prefix).map(|s| &s.entry);
        let base = current.map_or(0, |c| c.version.seq);
        if entry.version.seq > base.saturating_add(MAX_SEQ_JUMP) {
            return Err(EntryRefusal::SeqJump);
        }
        let at_home = self.trust.certificates.covers(from, prefix);
        if !host {
            if !at_home {
                return Err(EntryRefusal::ForeignPrefix);
            }
            // Our own prefixes, as far as our certificate backs them.
            let me = &self.config.me;
            let ours = self.config.prefixes.iter();
            if ours
                .filter(|own| self.trust.certificates.covers(me, **own))
                .any(|own| overlap(*own, prefix))
            {
                return Err(EntryRefusal::OwnPrefix);
            }
            return Ok(Accepted::default());
        }
        let ip = prefix.ip();
        if !at_home && self.trust.certificates.home_of(ip, from).is_none() {
            return Err(EntryRefusal::ForeignPrefix);
        }
        // Ranked by (sequence number, is the address's home, site id): a claim from away
        // must beat the home's entry with a higher sequence number; between two sites away
        // from home the site id breaks a tie, as everywhere.
        let rival = current.filter(|c| c.site() != from);
        if let Some(rival) = rival {
            let rival_home = self.trust.certificates.covers(rival.site(), prefix);
            let beats = entry.version.seq > rival.version.seq
                || (entry.version.seq == rival.version.seq
                    && (at_home || (!rival_home && entry.version > rival.version)));
            if !at_home && !beats {
                return Err(EntryRefusal::NotNewer);
            }
        }
        let honour_freeze = entry.withdrawn || self.check_move(from, entry, ip, now)?;
        Ok(Accepted {
            wins_tie: at_home && rival.is_some_and(|r| r.version.seq == entry.version.seq),
            honour_freeze,
        })
    }

    /// Pinned and frozen addresses do not move, whoever claims them; a freeze mark counts
    /// only from the last confirmed owner: the site the address last moved away from here.
    /// The current owner repeating its own frozen entry is no move.
    ///
    /// A claim with a freeze mark this router does not honour is taken as a plain claim
    /// (`Ok(false)`): at the current owner its still-here check runs, and the VM, if it is
    /// still here, is taken back. Where the address may not move now, it is refused.
    fn check_move(
        &self,
        from: &SiteId,
        entry: &GndtEntry,
        ip: Ipv4Addr,
        now: Instant,
    ) -> Result<bool, EntryRefusal> {
        let owner = self.gndt.owner(ip);
        let moves = owner != Some(from);
        // The current owner knows its history exactly; another router that saw no move of
        // the address (it restarted since) takes the mark: the owner, refusing a forged one,
        // answers with its own entry, newer and frozen, which every router then honours.
        let ours = owner == Some(&self.config.me) && self.lndt.contains(ip);
        let take_back = moves
            && match self.trust.prior_owner(ip) {
                Some(prior) => prior == from,
                None => !ours,
            };
        let forged = entry.frozen && moves && !take_back;
        if forged && !ours {
            // Not honoured: taken as a plain claim where the address may move (the claimant
            // may be right and merely unknown here as an owner: its claim lost a tie here),
            // refused where it may not.
            return match self.lan.damping.check(ip, now) {
                MoveVerdict::Allowed => Ok(false),
                MoveVerdict::Frozen { .. } | MoveVerdict::Pinned => Err(EntryRefusal::ForgedFrozen),
            };
        }
        if !moves {
            return Ok(true);
        }
        match self.lan.damping.check(ip, now) {
            MoveVerdict::Allowed => Ok(!forged),
            MoveVerdict::Frozen { .. } if entry.frozen && take_back => Ok(true),
            MoveVerdict::Frozen { .. } | MoveVerdict::Pinned => Err(EntryRefusal::PinnedOrFrozen),
        }
    }

    /// `previous`, its site's entry, was replaced by another site's (see
    /// [`PeerView::superseded`]).
    pub(super) fn note_superseded(&mut self, previous: &GndtEntry) {
        if let Some(view) = self.trust.views.get_mut(previous.site()) {
            view.superseded(previous);
        }
    }

    /// Records what `from` said about `entry`'s prefix; `false` if it is over its limit.
    pub(super) fn record_said(&mut self, from: &SiteId, entry: &GndtEntry) -> bool {
        self.trust
            .views
            .entry(from.clone())
            .or_default()
            .record(entry)
    }

    /// Counts and logs a refused entry. A refused claim of a pinned host of ours is answered
    /// with our own entry, newer, so that routers that did accept it (their pins differ) come
    /// back to us; one refused for a freeze is checked again when the freeze ends.
    pub(super) fn refuse_entry(
        &mut self,
        from: &SiteId,
        entry: &GndtEntry,
        refusal: EntryRefusal,
        now: Instant,
    ) {
        let count = self.counters.add(refusal.counter());
        if refusal == EntryRefusal::ForeignPrefix && entry.kind == EntryKind::Host {
            self.trust.keep_homeless(from, entry);
        }
        if count.is_power_of_two() {
            tracing::warn!(
                peer = %from,
                origin = %entry.site(),
                prefix = %entry.prefix,
                kind = ?entry.kind,
                seq = entry.version.seq,
                reason = refusal.describe(),
                refused = count,
                "refused an entry from a peer"
            );
        } else {
            tracing::debug!(peer = %from, prefix = %entry.prefix, reason = refusal.describe(), "refused an entry from a peer");
        }
        let ip = entry.prefix.ip();
        if let (
            EntryRefusal::PinnedOrFrozen | EntryRefusal::ForgedFrozen,
            MoveVerdict::Frozen { until },
        ) = (refusal, self.lan.damping.check(ip, now))
        {
            self.trust.defer(from, entry, until);
        }
        if refusal == EntryRefusal::NotNewer && !entry.withdrawn {
            // The claimant may have restarted and not know the number we hold: tell it.
            if let Some(current) = self.gndt.get(entry.prefix) {
                let seq = current.entry.version.seq;
                self.send(from, Message::Outranked { ip, seq });
                let key = (from.clone(), ip);
                let outranked = &mut self.trust.outranked;
                if outranked.len() < MAX_PRIOR_OWNERS || outranked.contains_key(&key) {
                    outranked.insert(key, (entry.clone(), OUTRANKED_REPEATS));
                }
            }
        }
        // Only a pinned address is answered with ours at once. A claim refused because we
        // froze the address (we took it back: the VM answered here then) waits for the freeze
        // to end, and is checked again then (see [`Node::replay_deferred`]): our still-here
        // check settles where the VM is. The VM may have left since without a word; our entry
        // again, frozen, would renew the freeze here and everywhere, spare every router its
        // still-here check, and keep the address here for as long as claims come, for a VM
        // that is elsewhere. (Two sites that both took the address back frozen would answer
        // each other's claims the same way.)
        let pinned = matches!(self.lan.damping.check(ip, now), MoveVerdict::Pinned);
        if refusal == EntryRefusal::PinnedOrFrozen
            && pinned
            && entry.kind == EntryKind::Host
            && self.gndt.owner(ip) == Some(&self.config.me)
            && self.lndt.contains(ip)
        {
            // The binding we advertised stays with the entry: without it, no router could
            // recognise the VM where it turns up.
            let mac = self
                .hwdt
                .by_ip(ip)
                .map(|b| b.mac)
                .or_else(|| self.gndt.get(entry.prefix).and_then(|s| s.entry.mac));
            tracing::info!(%ip, by = %from, "re-advertising a host of ours over a refused claim");
            self.take_back_over(ip, mac, entry.version.seq, now);
        }
    }

    /// `peer` presented a certificate with these prefixes. A change from what was known drops
    /// its entries (its full table follows and is checked afresh); a site newly known may
    /// make refused host entries acceptable: they are checked again.
    pub(super) fn learn_certificate(
        &mut self,
        peer: &SiteId,
        prefixes: Vec<Ipv4Network>,
        now: Instant,
    ) {
        let known = !self.trust.certificates.of(peer).is_empty();
        if !self.trust.certificates.set(peer.clone(), prefixes) {
            return;
        }
        tracing::info!(peer = %peer, prefixes = ?self.trust.certificates.of(peer), "certified prefixes");
        if known {
            let held: Vec<Ipv4Network> =
                self.gndt.entries_of(peer).map(|s| s.entry.prefix).collect();
            self.drop_entries(held, now);
        }
        self.replay_homeless(peer, now);
        if std::mem::take(&mut self.trust.homeless_overflow) {
            let connected: Vec<SiteId> = self
                .peers
                .iter()
                .filter(|(site, p)| p.connected && *site != peer)
                .map(|(site, _)| site.clone())
                .collect();
            for site in connected {
                self.send(&site, Message::TableRequest {});
            }
        }
    }

    /// The certificate of `peer` was revoked: it is cut off and what it originated is
    /// withdrawn here at once.
    pub fn handle_peer_revoked(&mut self, peer: &SiteId, now: Instant) {
        let count = self.counters.add(Counter::RevokedPeers);
        let held: Vec<Ipv4Network> = self.gndt.entries_of(peer).map(|s| s.entry.prefix).collect();
        tracing::warn!(peer = %peer, entries = held.len(), revoked = count, "peer certificate revoked: cut off, its entries withdrawn");
        self.trust.views.remove(peer);
        self.drop_entries(held, now);
        self.handle_peer_down(peer, now);
    }

    /// Removes entries whose origin no longer vouches for them, as if withdrawn.
    ///
    /// A dropped host entry may have replaced what another site says of the address: the
    /// home's own binding, or a claim it outranked. Those sites (if connected: the home, and
    /// every peer whose last word covers the address) are asked for their tables again, so
    /// that what they still say comes back; their digests agree with what we heard of them,
    /// so nothing else would.
    fn drop_entries(&mut self, prefixes: Vec<Ipv4Network>, now: Instant) {
        let mut changed = false;
        let mut ask = std::collections::BTreeSet::new();
        for prefix in prefixes {
            let Some(previous) = self.gndt_remove(prefix) else {
                continue;
            };
            changed = true;
            self.sync_kernel(prefix);
            if let (EntryKind::Host, Some(mac)) = (previous.kind, previous.mac) {
                self.trust.note_gone_binding(prefix.ip(), mac);
            }
            if previous.kind == EntryKind::Host {
                if let Some(home) = self
                    .trust
                    .certificates
                    .home_of(prefix.ip(), previous.site())
                {
                    ask.insert(home.clone());
                }
                let sayers = self.trust.views.iter().filter(|(_, v)| v.said(prefix));
                ask.extend(sayers.map(|(site, _)| site.clone()));
            }
            if previous.kind == EntryKind::Host && !previous.withdrawn {
                let mut gone = previous.clone();
                gone.withdrawn = true;
                self.after_change(&gone, Some(previous), now);
            }
        }
        for site in ask {
            if site != self.config.me && self.peers.get(&site).is_some_and(|p| p.connected) {
                self.send(&site, Message::TableRequest {});
            }
        }
        if changed {
            self.effects.push_back(Effect::TablesChanged);
        }
    }

    /// The MAC of `ip` from a host entry that went from the table, while no entry in it
    /// binds the address to a MAC: a VM's binding outlives the entries that carried it
    /// (a claim given up, a withdrawal collected), as it does on the LAN.
    pub(super) fn remembered_binding(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        let bound = self
            .gndt
            .get(Ipv4Network::from(ip))
            .is_some_and(|s| s.entry.mac.is_some());
        if bound {
            return None;
        }
        self.trust.gone_bindings.get(&ip).copied()
    }

    /// Collects tombstones past their lifetime (ours too: peers drop them once our full table
    /// no longer carries them).
    pub(super) fn sweep_tombstones(&mut self, now: Instant) {
        if now < self.trust.next_sweep {
            return;
        }
        self.trust.next_sweep = now + TOMBSTONE_SWEEP;
        if let Some(before) = now.checked_sub(TOMBSTONE_LIFETIME) {
            let collected = self.gndt.collect_tombstones(before);
            if !collected.is_empty() {
                tracing::debug!(tombstones = collected.len(), "collected old tombstones");
            }
            // A withdrawn host's binding outlives its tombstone (see `remembered_binding`).
            for entry in collected {
                if let (EntryKind::Host, Some(mac)) = (entry.kind, entry.mac) {
                    self.trust.note_gone_binding(entry.prefix.ip(), mac);
                }
            }
        }
    }
}

/// The canonical form of a prefix: host bits cleared.
fn normalize(prefix: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(prefix.network(), prefix.prefix()).unwrap_or(prefix)
}

/// Whether `outer` contains all of `inner`.
fn contains(outer: Ipv4Network, inner: Ipv4Network) -> bool {
    outer.prefix() <= inner.prefix() && outer.contains(inner.network())
}

fn overlap(a: Ipv4Network, b: Ipv4Network) -> bool {
    contains(a, b) || contains(b, a)
}
