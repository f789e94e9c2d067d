//! Migration at the destination: a VM announced itself on this LAN (RARP, gratuitous ARP) or
//! spoke from an address the tables place at another site. The router detects the move,
//! resolves the MAC to an address (advertised bindings, else a query to the owning site),
//! confirms the VM on this LAN with probes, takes the address over, and fixes the VM's view of
//! its old LAN.
//!
//! Each migration in progress is a [`Pending`] in one [`Phase`]; a refusal at any step ends
//! its record with a [`RefusalReason`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_inject::wire as frames;
use skyvine_tables::{
    BindingSource, EntryKind, GndtEntry, MacAddr, MoveVerdict, Observation, SiteId, Stored,
};

use super::counters::Counter;
use super::lan::spoken_for;
use super::prober::{Prober, Tick};
use super::records::{Detection, RefusalReason, Role, Start};
use super::{Node, Outcome, Takeover};
use crate::proto::Message;

/// How long a query by MAC waits for the other routers.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Migrations being resolved or confirmed at once; more are refused (a flood of announcements
/// for random MACs must not turn into a flood of queries to every peer).
const MAX_PENDING: usize = 64;
/// VMs seen while their address was frozen, kept to be looked for when the freeze ends.
const MAX_SEEN_FROZEN: usize = 256;

/// A migration to this site in progress, keyed by the VM's MAC.
#[derive(Debug)]
pub(super) struct Pending {
    /// Its migration record.
    record: u64,
    phase: Phase,
}

/// Where a pending migration stands.
///
/// With a confirmed takeover a migration is resolved, confirmed, then taken over, and leaves
/// `pending` at the takeover. With an optimistic one it is taken over as soon as it is
/// resolved and stays pending, [`Phase::TakenOver`], until the VM answers (done) or the
/// confirmation timeout passes (the move is rolled back).
#[derive(Debug)]
enum Phase {
    /// No advertised binding for the MAC: the owning site (or every site, for a bare MAC) was
    /// asked which address it has. `claimed` is the address the announcement named, if any.
    Resolving {
        claimed: Option<Ipv4Addr>,
        query: u64,
        deadline: Instant,
    },
    /// Resolved: probing the VM on this LAN before taking its address over.
    Confirming { prober: Prober },
    /// Taken over on the announcement: probing the VM on this LAN to confirm the move.
    TakenOver { prober: Prober },
}

impl Pending {
    /// The address claimed or resolved.
    pub(super) fn ip(&self) -> Option<Ipv4Addr> {
        match &self.phase {
            Phase::Resolving { claimed, .. } => *claimed,
            Phase::Confirming { prober } | Phase::TakenOver { prober } => Some(prober.ip()),
        }
    }

    /// When this migration needs [`Node::handle_timeout`] next.
    pub(super) fn next_at(&self) -> Instant {
        match &self.phase {
            Phase::Resolving { deadline, .. } => *deadline,
            Phase::Confirming { prober } | Phase::TakenOver { prober } => prober.next_at(),
        }
    }

    /// Whether the address was already taken over (and is only being confirmed).
    pub(super) fn taken_over(&self) -> bool {
        matches!(self.phase, Phase::TakenOver { .. })
    }
}

impl Node {
    /// ARP traffic (or an IPv4 frame) from `ip` at `mac`: if the tables place `ip` at another
    /// site, its VM migrated here without announcing itself.
    pub(super) fn on_traffic(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        if ip.is_unspecified() || self.lndt.contains(ip) {
            return;
        }
        match self.gndt.owner(ip) {
            Some(owner) if owner != &self.config.me => {
                self.on_announcement(mac, Some(ip), Detection::Traffic, now);
            }
            _ => {}
        }
    }

    /// A VM at `mac` (claiming `ip`, if the signal carries one) announced itself here.
    pub(super) fn on_announcement(
        &mut self,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
        detection: Detection,
        now: Instant,
    ) {
        // A live migration keeps its MAC: the move must match a binding another site
        // advertised. Without one (e.g. an address nobody uses), only the owning site's
        // answer to a query by MAC can vouch for it.
        let bound = self.binding_elsewhere(mac, ip);
        if !self.is_new_migration(mac, ip.or(bound), now) {
            return;
        }
        let resolved = bound.or(ip);
        let from = resolved.and_then(|ip| self.gndt.owner(ip).cloned());
        let start = Start {
            mac: Some(mac),
            ip: resolved,
            from,
            to: self.config.me.clone(),
            role: Role::Destination,
            detection,
        };
        let record = self.lan.records.start(start, now);
        tracing::info!(%mac, ip = ?resolved, detection = detection.name(), "migration detected");
        match bound {
            Some(ip) => {
                self.update_record(record, |r| r.resolved = Some(now));
                self.start_confirming(record, mac, ip, now);
            }
            None => self.resolve_by_query(record, mac, ip, now),
        }
    }

    /// Whether an announcement starts a migration: not a repeat of one pending or done, for an
    /// address of the virtual network, and with room for one more.
    fn is_new_migration(&mut self, mac: MacAddr, ip: Option<Ipv4Addr>, now: Instant) -> bool {
        if self.lan.pending.contains_key(&mac) {
            self.counters.add(Counter::Repeats);
            return false;
        }
        if let Some(ip) = ip {
            if self.lndt.contains(ip) && self.gndt.owner(ip) == Some(&self.config.me) {
                // Already ours: a boot announcement or a repeat after the move completed.
                self.counters.add(Counter::Repeats);
                return false;
            }
            if self.gndt.owner(ip).is_none() {
                tracing::debug!(%ip, %mac, "announcement for an address outside the virtual network ignored");
                return false;
            }
        }
        if self.lan.filter.observe(mac, now) == Observation::Repeat {
            self.counters.add(Counter::Repeats);
            return false;
        }
        if self.lan.pending.len() >= MAX_PENDING {
            self.counters.add(RefusalReason::Busy.counter());
            tracing::debug!(%mac, "too many migrations pending; announcement ignored");
            return false;
        }
        true
    }

    /// No advertised binding: ask the site that owns the claimed address, or everyone for a
    /// bare MAC, and wait for its word.
    fn resolve_by_query(
        &mut self,
        record: u64,
        mac: MacAddr,
        claimed: Option<Ipv4Addr>,
        now: Instant,
    ) {
        let query = self.lan.next_query;
        self.lan.next_query += 1;
        let phase = Phase::Resolving {
            claimed,
            query,
            deadline: now + RESOLVE_TIMEOUT,
        };
        self.lan.pending.insert(mac, Pending { record, phase });
        let owner = claimed.and_then(|ip| self.gndt.owner(ip).cloned());
        let asked: Vec<SiteId> = self
            .peers
            .iter()
            .filter(|(site, p)| p.connected && owner.as_ref().is_none_or(|o| o == *site))
            .map(|(s, _)| s.clone())
            .collect();
        tracing::debug!(%mac, ?claimed, peers = asked.len(), "no advertised binding; asking the owning router");
        for peer in asked {
            self.send(&peer, Message::WhoHas { query, mac });
        }
    }

    /// The address another site advertised for `mac` (the claimed one, if given). For a
    /// claimed address, a withdrawn claim counts too (ours included): a rolled-back takeover
    /// withdraws the entry that carried the binding, not the binding itself; so does the
    /// binding of an entry that went from the table since.
    fn binding_elsewhere(&self, mac: MacAddr, claimed: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let elsewhere = |stored: &&Stored| {
            let e = &stored.entry;
            e.kind == EntryKind::Host
                && e.mac == Some(mac)
                && (e.withdrawn || e.site() != &self.config.me)
        };
        match claimed {
            Some(ip) => self
                .gndt
                .get(Ipv4Network::from(ip))
                .filter(elsewhere)
                .map(|_| ip)
                .or_else(|| (self.remembered_binding(ip) == Some(mac)).then_some(ip)),
            None => self
                .gndt
                .hosts_by_mac(mac)
                .filter(|stored| !stored.entry.withdrawn)
                .find(elsewhere)
                .map(|stored| stored.entry.prefix.ip()),
        }
    }

    /// A peer answered our query by MAC. Only the site that owns the address can vouch for
    /// it, and only for the address that was claimed (if one was).
    pub(super) fn on_is_at(
        &mut self,
        from: &SiteId,
        query: u64,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
        now: Instant,
    ) {
        let vouched = ip.filter(|ip| self.gndt.owner(*ip) == Some(from));
        let Some(pending) = self.lan.pending.get(&mac) else {
            return;
        };
        let Phase::Resolving {
            claimed, query: q, ..
        } = pending.phase
        else {
            return;
        };
        if q != query {
            return;
        }
        if let Some(ip) = vouched.filter(|ip| claimed.is_none_or(|c| c == *ip)) {
            let record = pending.record;
            self.update_record(record, |r| {
                r.ip = Some(ip);
                r.resolved = Some(now);
            });
            self.start_confirming(record, mac, ip, now);
        }
    }

    /// A peer reminded us (restarted) that the VM at `mac` with `ip` was here: probe for it,
    /// and take its address only once it answered here, whatever the takeover mode.
    pub(super) fn look_for_echoed(&mut self, mac: MacAddr, ip: Ipv4Addr, now: Instant) {
        // Several peers echo the same VM; the owner's prefix may not have arrived yet. A
        // migration of it detected here and still resolving its address has it now: probed.
        if let Some(pending) = self.lan.pending.get_mut(&mac) {
            if matches!(pending.phase, Phase::Resolving { .. }) {
                let prober = Prober::new(ip, mac, self.lan.confirm_timeout, now);
                pending.phase = Phase::Confirming { prober };
                let record = pending.record;
                self.update_record(record, |r| r.ip = Some(ip));
                self.advance_pending(now);
            }
            return;
        }
        if self.probe_first(mac, ip, Detection::Echo, now) {
            tracing::info!(%ip, %mac, "a peer remembers this VM here; looking for it on the LAN");
            self.advance_pending(now);
        }
    }

    /// Starts a migration of `(ip, mac)` here that probes for the VM and takes its address
    /// only once it answers. False when too many migrations are pending already.
    fn probe_first(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        detection: Detection,
        now: Instant,
    ) -> bool {
        if self.lan.pending.len() >= MAX_PENDING {
            return false;
        }
        let start = Start {
            mac: Some(mac),
            ip: Some(ip),
            from: self.gndt.owner(ip).cloned(),
            to: self.config.me.clone(),
            role: Role::Destination,
            detection,
        };
        let record = self.lan.records.start(start, now);
        let prober = Prober::new(ip, mac, self.lan.confirm_timeout, now);
        let phase = Phase::Confirming { prober };
        self.lan.pending.insert(mac, Pending { record, phase });
        true
    }

    /// `mac` resolved to `ip`: unless damping forbids the move, take over at once and probe
    /// for it here (optimistic), or probe first (confirmed).
    fn start_confirming(&mut self, record: u64, mac: MacAddr, ip: Ipv4Addr, now: Instant) {
        let verdict = self.lan.damping.check(ip, now);
        if let Some((reason, detail)) = refusal(verdict, now) {
            self.lan.pending.remove(&mac);
            self.refuse(record, mac, reason, &detail);
            self.remember_seen_frozen(record, mac, ip, verdict);
            return;
        }
        let prober = Prober::new(ip, mac, self.lan.confirm_timeout, now);
        let phase = match self.lan.takeover {
            Takeover::Confirmed => Phase::Confirming { prober },
            Takeover::Optimistic => {
                if !self.take_over(record, mac, ip, now) {
                    self.lan.pending.remove(&mac);
                    return;
                }
                Phase::TakenOver { prober }
            }
        };
        self.lan.pending.insert(mac, Pending { record, phase });
        self.advance_pending(now);
    }

    /// `(ip, mac)` answered a probe: a VM being confirmed here is taken over, one taken over
    /// already is confirmed.
    pub(super) fn on_confirmation_reply(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let answered = self.lan.pending.get(&mac).is_some_and(|p| match &p.phase {
            Phase::Confirming { prober } | Phase::TakenOver { prober } => {
                prober.answered_by(ip, mac)
            }
            Phase::Resolving { .. } => false,
        });
        if !answered {
            return;
        }
        let Some(pending) = self.lan.pending.remove(&mac) else {
            return;
        };
        let record = pending.record;
        match pending.phase {
            Phase::Confirming { .. } => {
                self.update_record(record, |r| r.confirmed = Some(now));
                if self.take_over(record, mac, ip, now) {
                    tracing::info!(%ip, %mac, "migrated VM confirmed here; took over its address");
                }
            }
            Phase::TakenOver { .. } => {
                tracing::info!(%ip, %mac, "migrated VM answered here; takeover confirmed");
                self.lan.records.confirm(record, now);
            }
            Phase::Resolving { .. } => {}
        }
    }

    /// Steps 4 and 6 of the migration at the destination: the address is ours, advertised,
    /// and the VM's view fixed. Returns false when move damping refuses the move.
    fn take_over(&mut self, record: u64, mac: MacAddr, ip: Ipv4Addr, now: Instant) -> bool {
        let verdict = self.lan.damping.record_move(ip, now);
        if let Some((reason, detail)) = refusal(verdict, now) {
            self.refuse(record, mac, reason, &detail);
            self.remember_seen_frozen(record, mac, ip, verdict);
            return false;
        }
        let previous = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| s.entry.clone());
        // Above what peers still hold of our claim before a restart, too.
        let echoed = self.trust.take_echoed_claim(ip).unwrap_or(0);
        let seq = previous
            .as_ref()
            .map_or(0, |e| e.version.seq)
            .max(echoed)
            .saturating_add(1);
        let entry = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
        self.on_returned(ip);
        self.lndt_add(ip, Some(mac), now);
        self.hwdt.learn(ip, mac, BindingSource::Lan, now);
        self.originate(entry, now);
        self.update_record(record, |r| r.advertised = Some(now));
        tracing::info!(%ip, %mac, seq, takeover = self.lan.takeover.name(), "taking over a migrated VM's address");
        self.fix_migrated_view(ip, mac, now);
        true
    }

    /// An optimistic takeover that the VM never confirmed: the move is rolled back. This site
    /// withdraws its own claim (a newer version of its entry, withdrawn) and freezes the
    /// address; the site the VM came from, the last where it was confirmed, takes it back,
    /// frozen ([`Node::on_withdrawn_host`]). Nobody writes an entry in another site's name.
    fn roll_back(&mut self, record: u64, mac: MacAddr, ip: Ipv4Addr, now: Instant) {
        let timeout_ms = self.lan.confirm_timeout.as_millis();
        tracing::warn!(%ip, %mac, reason = RefusalReason::Unconfirmed.name(), timeout_ms, "migrated VM never answered here; rolling the move back");
        self.finish_refused(record, RefusalReason::Unconfirmed);
        self.lan.damping.freeze(ip, now);
        self.lndt_remove(ip);
        let ours = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| s.entry.clone())
            .filter(|e| !e.withdrawn && e.site() == &self.config.me);
        if let Some(mut withdrawal) = ours {
            withdrawal.version.seq = withdrawal.version.seq.saturating_add(1);
            withdrawal.withdrawn = true;
            withdrawal.frozen = false;
            self.originate(withdrawal, now);
        }
        // Rolled back to our own prefix (the VM's home is here): ours as configured.
        self.adopt_if_ours_by_prefix(ip, Some(mac), now);
        if let Some(identity) = self.lan.identity {
            // Hosts here that learnt the VM's MAC for the address send to us again.
            self.schedule_repeated(frames::gratuitous_arp_request(identity.mac, ip), now);
        }
    }

    /// Another site took `ip` over while a migration of it was pending here: drop it. One
    /// already taken over here lost to a newer claim (typically the old site's take-back: the
    /// VM still answered there). Whether such an unconfirmed takeover was dropped.
    pub(super) fn abandon_pending(&mut self, ip: Ipv4Addr) -> bool {
        let abandoned: Vec<MacAddr> = self
            .lan
            .pending
            .iter()
            .filter(|(_, p)| p.ip() == Some(ip))
            .map(|(mac, _)| *mac)
            .collect();
        let mut unconfirmed = false;
        for mac in abandoned {
            if let Some(pending) = self.lan.pending.remove(&mac) {
                if pending.taken_over() {
                    unconfirmed = true;
                    tracing::warn!(%ip, %mac, "our unconfirmed takeover was superseded by another site's claim");
                    self.update_record(pending.record, |r| {
                        r.outcome = Outcome::Refused(RefusalReason::StillHere);
                    });
                }
            }
        }
        unconfirmed
    }

    /// Step 6: repoint the migrated VM's cache entries for every host it may have cached (its
    /// home prefix; the whole virtual network in routing-optimization mode): hosts at other
    /// sites to us, hosts here (including us, when the VM comes home) to their real MACs. In
    /// routing-optimization mode, also introduce the VM to its new LAN neighbours directly.
    pub(super) fn fix_migrated_view(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let Some(identity) = self.lan.identity else {
            return;
        };
        let home = self
            .gndt
            .covering(Ipv4Network::from(ip))
            .map(|s| s.entry.prefix);
        if home.is_none() {
            // Its old gateway and neighbours are repointed once a peer brings the prefix.
            self.lan.homeless.insert(ip, mac);
        }
        let optimize = self.config.virtual_network;
        let mut frames = Vec::new();
        // The host entries of the home prefix and of the virtual network (each host once):
        // ranges of the GNDT's ordered hosts, never a walk over the whole table.
        let in_home = home.into_iter().flat_map(|h| self.gndt.hosts_within(h));
        let in_network = optimize
            .into_iter()
            .flat_map(|v| self.gndt.hosts_within(v))
            .filter(|s| !home.is_some_and(|h| h.contains(s.entry.prefix.ip())));
        for stored in in_home.chain(in_network) {
            let e = &stored.entry;
            let host = e.prefix.ip();
            if e.kind != EntryKind::Host || host == ip {
                continue;
            }
            if e.site() != &self.config.me {
                frames.push(frames::unicast_gratuitous_arp(identity.mac, host, mac));
            } else if let Some(host_mac) = e.mac {
                frames.push(spoken_for(identity.mac, mac, host, host_mac));
            }
        }
        if optimize.is_some() {
            // Our LAN hosts that reached the VM through us now reach it directly.
            frames.push(spoken_for(identity.mac, MacAddr::BROADCAST, ip, mac));
        }
        for frame in frames {
            self.schedule_repeated(frame, now);
        }
    }

    /// Sends the probes that are due; refuses the migrations whose time ran out, and rolls
    /// back the takeovers that were never confirmed.
    pub(super) fn advance_pending(&mut self, now: Instant) {
        let timeout = self.lan.confirm_timeout;
        let our_mac = self.lan.identity.map(|i| i.mac);
        let mut expired = Vec::new();
        let mut unconfirmed = Vec::new();
        let mut probes = Vec::new();
        for (mac, pending) in self.lan.pending.iter_mut() {
            match &mut pending.phase {
                Phase::Resolving { deadline, .. } => {
                    if now >= *deadline {
                        let detail = "no router knows this MAC".to_owned();
                        expired.push((*mac, RefusalReason::Unresolved, detail));
                    }
                }
                Phase::Confirming { prober } => match prober.tick(now) {
                    Tick::Probe(due) => probes.extend(prober.frames(due, our_mac)),
                    Tick::Expired => {
                        let detail = format!(
                            "no answer to the confirmation probe within {} ms",
                            timeout.as_millis()
                        );
                        expired.push((*mac, RefusalReason::Unconfirmed, detail));
                    }
                },
                Phase::TakenOver { prober } => match prober.tick(now) {
                    Tick::Probe(due) => probes.extend(prober.frames(due, our_mac)),
                    Tick::Expired => unconfirmed.push((*mac, prober.ip())),
                },
            }
        }
        self.transmit_all(probes);
        for (mac, reason, detail) in expired {
            if let Some(pending) = self.lan.pending.remove(&mac) {
                self.refuse(pending.record, mac, reason, &detail);
                // Probed without an answer (not merely unresolved): not here.
                if let (RefusalReason::Unconfirmed, Some(ip)) = (reason, pending.ip()) {
                    self.withdraw_echoed_claim(ip, mac, now);
                }
            }
        }
        for (mac, ip) in unconfirmed {
            if let Some(pending) = self.lan.pending.remove(&mac) {
                self.roll_back(pending.record, mac, ip, now);
            }
        }
    }

    /// A migration of `(ip, mac)` was refused because damping froze the address: the VM is
    /// looked for here again when the freeze ends. A VM that keeps talking would be detected
    /// again anyway; one that only announced itself (QEMU's RARPs last a second) would not.
    fn remember_seen_frozen(
        &mut self,
        record: u64,
        mac: MacAddr,
        ip: Ipv4Addr,
        verdict: MoveVerdict,
    ) {
        let MoveVerdict::Frozen { until } = verdict else {
            return;
        };
        if self.lan.seen_frozen.len() >= MAX_SEEN_FROZEN {
            tracing::debug!(%ip, %mac, "too many VMs seen while frozen; this one is not looked for again");
            return;
        }
        let Some(detection) = self.lan.records.get(record).map(|r| r.detection) else {
            return;
        };
        self.lan.seen_frozen.insert((until, ip), (mac, detection));
    }

    /// Freezes that ended: each VM seen here during one is probed for, and its address taken
    /// once it answers here, whatever the takeover mode. A freeze renewed meanwhile waits
    /// again; an address we hold, or a VM already being looked for, needs nothing.
    pub(super) fn look_for_seen_frozen(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(entry) = self.lan.seen_frozen.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ip = entry.key().1;
            let (mac, detection) = entry.remove();
            due.push((ip, mac, detection));
        }
        for (ip, mac, detection) in due {
            let ours = self.gndt.owner(ip) == Some(&self.config.me) && self.lndt.contains(ip);
            if ours || self.lan.pending.contains_key(&mac) {
                continue;
            }
            match self.lan.damping.check(ip, now) {
                // A freeze that ends now (a zero freeze) would wake us up again at once.
                MoveVerdict::Frozen { until } if until > now => {
                    self.lan.seen_frozen.insert((until, ip), (mac, detection));
                }
                MoveVerdict::Frozen { .. } | MoveVerdict::Pinned => {}
                MoveVerdict::Allowed => {
                    if self.probe_first(mac, ip, detection, now) {
                        tracing::info!(%ip, %mac, "the freeze ended: looking on the LAN for a VM seen here while its address was frozen");
                    }
                }
            }
        }
    }

    /// Ends a pending migration as refused: logged with its details, counted, recorded.
    fn refuse(&mut self, record: u64, mac: MacAddr, reason: RefusalReason, detail: &str) {
        tracing::warn!(%mac, reason = reason.name(), detail, "migration refused");
        self.finish_refused(record, reason);
    }
}

/// Why move damping forbids a move, with the details for the log.
fn refusal(verdict: MoveVerdict, now: Instant) -> Option<(RefusalReason, String)> {
    match verdict {
        MoveVerdict::Allowed => None,
        MoveVerdict::Pinned => Some((RefusalReason::Pinned, "pinned by configuration".to_owned())),
        MoveVerdict::Frozen { until } => {
            let left = until.saturating_duration_since(now).as_secs();
            Some((
                RefusalReason::Frozen,
                format!("moved too often: frozen by move damping for {left} s more"),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
