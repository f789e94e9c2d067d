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
    /// withdraws the entry that carried the binding, not the binding itself.
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
                .map(|_| ip),
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

    /// `mac` resolved to `ip`: unless damping forbids the move, take over at once and probe
    /// for it here (optimistic), or probe first (confirmed).
    fn start_confirming(&mut self, record: u64, mac: MacAddr, ip: Ipv4Addr, now: Instant) {
        if let Some((reason, detail)) = refusal(self.lan.damping.check(ip, now), now) {
            self.lan.pending.remove(&mac);
            self.refuse(record, mac, reason, &detail);
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
        if let Some((reason, detail)) = refusal(self.lan.damping.record_move(ip, now), now) {
            self.refuse(record, mac, reason, &detail);
            return false;
        }
        let previous = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| s.entry.clone());
        let seq = previous
            .as_ref()
            .map_or(1, |e| e.version.seq.saturating_add(1));
        let entry = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
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
    /// VM still answered there).
    pub(super) fn abandon_pending(&mut self, ip: Ipv4Addr) {
        let abandoned: Vec<MacAddr> = self
            .lan
            .pending
            .iter()
            .filter(|(_, p)| p.ip() == Some(ip))
            .map(|(mac, _)| *mac)
            .collect();
        for mac in abandoned {
            if let Some(pending) = self.lan.pending.remove(&mac) {
                if pending.taken_over() {
                    tracing::warn!(%ip, %mac, "our unconfirmed takeover was superseded by another site's claim");
                    self.update_record(pending.record, |r| {
                        r.outcome = Outcome::Refused(RefusalReason::StillHere);
                    });
                }
            }
        }
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
            }
        }
        for (mac, ip) in unconfirmed {
            if let Some(pending) = self.lan.pending.remove(&mac) {
                self.roll_back(pending.record, mac, ip, now);
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
mod tests {
    use skyvine_capture::wire::{classify, EventKind};
    use skyvine_tables::DampingConfig;

    use super::super::testing::{
        from_peer, ip, lan_node, lan_node_with, mac, sent, site, site_entries, transmitted,
    };
    use super::super::{Counter, Effect, Outcome, DEFAULT_CONFIRM_TIMEOUT};
    use super::*;

    /// Router b, connected to a, with a's prefix and VM bindings; effects drained.
    fn b_knowing_a(now: Instant) -> Node {
        let mut b = lan_node("b", 2, now);
        from_peer(&mut b, "a", site_entries("a", 1), now);
        while b.poll_effect().is_some() {}
        b
    }

    fn rarp(node: &mut Node, vm: MacAddr, now: Instant) {
        let frame = frames::rarp_announce(vm);
        node.handle_lan_event(classify(&frame).unwrap(), now);
    }

    /// The VM's reply to b's probe.
    fn probe_reply(node: &mut Node, vm_ip: Ipv4Addr, vm: MacAddr, now: Instant) {
        let frame = frames::proxy_arp_reply(vm, vm_ip, mac(2, 0xfe), Ipv4Addr::UNSPECIFIED);
        node.handle_lan_event(classify(&frame).unwrap(), now);
    }

    fn probes_to(events: &[skyvine_capture::wire::ArpEvent], vm_ip: Ipv4Addr) -> usize {
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Probe { target_ip, .. } if target_ip == vm_ip))
            .count()
    }

    fn last_outcome(node: &Node) -> Outcome {
        node.migrations().last().unwrap().outcome
    }

    /// Router b knowing a, with a confirmed takeover and a 300 ms confirmation timeout.
    fn confirming_b(now: Instant) -> Node {
        let mut b = lan_node_with("b", 2, now, |config| {
            config.takeover = Takeover::Confirmed;
            config.confirm_timeout = Duration::from_millis(300);
        });
        from_peer(&mut b, "a", site_entries("a", 1), now);
        while b.poll_effect().is_some() {}
        b
    }

    fn owner_of(node: &Node, vm_ip: Ipv4Addr) -> (SiteId, u64, bool) {
        let entry = &node.gndt().get(Ipv4Network::from(vm_ip)).unwrap().entry;
        (entry.site().clone(), entry.version.seq, entry.withdrawn)
    }

    #[test]
    fn an_advertised_binding_is_taken_over_at_once_then_confirmed() {
        let now = Instant::now();
        let mut b = b_knowing_a(now);
        rarp(&mut b, mac(1, 1), now);
        // Taken over on the announcement: b's entry, advertised, before any reply.
        assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 2, false));
        assert!(b.lndt().contains(ip(1, 1)));
        assert_eq!(b.lan_hosts().get(&ip(1, 1)), Some(&Some(mac(1, 1))));
        let pending = &b.lan.pending[&mac(1, 1)];
        assert!(pending.taken_over());
        let effects: Vec<Effect> = std::iter::from_fn(|| b.poll_effect()).collect();
        let claimed = effects.iter().any(|e| matches!(e, Effect::Send { to, message: Message::Entries { entries } }
            if to == &site("a") && entries.iter().any(|x| x.prefix == Ipv4Network::from(ip(1, 1)) && x.site() == &site("b"))));
        assert!(claimed, "the claim goes to a at once: {effects:?}");
        let frames: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Transmit { frame } => classify(frame).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(probes_to(&frames, ip(1, 1)), 1, "the first probe at once");
        // The kernel catches up: applied, but not done until the VM answers.
        let applied = now + Duration::from_millis(1);
        b.handle_kernel_applied(applied);
        let record = b.migrations().last().unwrap().clone();
        assert_eq!((record.applied, record.confirmed), (Some(applied), None));
        assert_eq!(record.outcome, Outcome::InProgress);
        // A reply from another MAC confirms nothing; the VM's does.
        probe_reply(&mut b, ip(1, 1), mac(2, 0x66), now);
        assert!(b.lan.pending.contains_key(&mac(1, 1)));
        let later = now + Duration::from_millis(40);
        probe_reply(&mut b, ip(1, 1), mac(1, 1), later);
        assert!(b.lan.pending.is_empty());
        let record = b.migrations().last().unwrap();
        assert_eq!(record.confirmed, Some(later));
        assert_eq!(record.outcome, Outcome::Applied);
        // Nothing left to time out: no rollback later.
        b.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(owner_of(&b, ip(1, 1)).0, site("b"));
        assert_eq!(b.counters().get(Counter::RefusedUnconfirmed), 0);
    }

    #[test]
    fn an_unconfirmed_optimistic_takeover_is_rolled_back_and_frozen() {
        let now = Instant::now();
        let mut b = b_knowing_a(now);
        rarp(&mut b, mac(1, 1), now);
        assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 2, false));
        while b.poll_effect().is_some() {}
        // The VM never answers: probes keep going until the confirmation timeout.
        let deadline = now + DEFAULT_CONFIRM_TIMEOUT;
        b.handle_timeout(deadline - Duration::from_millis(1));
        assert!(b.lan.pending.contains_key(&mac(1, 1)));
        assert!(
            probes_to(&transmitted(&mut b), ip(1, 1)) > 6,
            "a slow guest is probed longer"
        );
        b.handle_timeout(deadline);
        // Rolled back: b withdraws its own claim with a newer version, and freezes the address.
        assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 3, true));
        assert_eq!(
            b.gndt().owner(ip(1, 1)),
            Some(&site("a")),
            "back to a's prefix"
        );
        assert!(!b.lndt().contains(ip(1, 1)));
        assert!(b.lan_hosts().is_empty());
        assert_eq!(b.frozen(deadline).len(), 1);
        assert_eq!(
            last_outcome(&b),
            Outcome::Refused(RefusalReason::Unconfirmed)
        );
        assert_eq!(b.counters().get(Counter::RefusedUnconfirmed), 1);
        let effects: Vec<Effect> = std::iter::from_fn(|| b.poll_effect()).collect();
        let withdrawn = effects.iter().any(|e| matches!(e, Effect::Send { to, message: Message::Entries { entries } }
            if to == &site("a") && entries.iter().any(|x| x.withdrawn && x.site() == &site("b") && x.version.seq == 3)));
        assert!(withdrawn, "the withdrawal goes to a: {effects:?}");
        // Never an entry in a's name.
        assert!(!effects.iter().any(
            |e| matches!(e, Effect::Send { message: Message::Entries { entries }, .. }
            if entries.iter().any(|x| x.site() != &site("b")))
        ));
        // a takes the address back (frozen), as its departure memory tells it to; the next
        // announcement (past the repeat window) is refused outright.
        let mut back = GndtEntry::host(ip(1, 1), site("a"), 4, Some(mac(1, 1)));
        back.frozen = true;
        from_peer(&mut b, "a", vec![back], deadline);
        assert_eq!(owner_of(&b, ip(1, 1)), (site("a"), 4, false));
        rarp(&mut b, mac(1, 1), deadline + Duration::from_secs(3));
        assert_eq!(last_outcome(&b), Outcome::Refused(RefusalReason::Frozen));
    }

    #[test]
    fn with_a_confirmed_takeover_the_reply_comes_before_the_takeover() {
        let now = Instant::now();
        let mut b = confirming_b(now);
        rarp(&mut b, mac(1, 1), now);
        assert_eq!(b.lan.pending[&mac(1, 1)].ip(), Some(ip(1, 1)));
        assert_eq!(owner_of(&b, ip(1, 1)), (site("a"), 1, false), "not yet");
        let probes = transmitted(&mut b);
        assert_eq!(probes_to(&probes, ip(1, 1)), 1, "the first probe at once");
        assert_eq!(probes[0].eth_dst, mac(1, 1), "unicast to the VM");
        // A reply from another MAC, or not to our probe, confirms nothing.
        probe_reply(&mut b, ip(1, 1), mac(2, 0x66), now);
        assert!(b.lan.pending.contains_key(&mac(1, 1)));
        let later = now + Duration::from_millis(7);
        probe_reply(&mut b, ip(1, 1), mac(1, 1), later);
        assert!(!b.lan.pending.contains_key(&mac(1, 1)));
        assert!(b.lndt().contains(ip(1, 1)));
        assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 2, false));
        let record = b.migrations().find(|r| r.mac == Some(mac(1, 1))).unwrap();
        assert_eq!(record.confirmed, Some(later));
        b.handle_kernel_applied(later);
        let record = b.migrations().find(|r| r.mac == Some(mac(1, 1))).unwrap();
        assert_eq!(record.outcome, Outcome::Applied);
        // The VM's view: its old gateway and neighbour repointed to b.
        let fixes = transmitted(&mut b);
        for old in [ip(1, 254), ip(1, 2)] {
            assert!(fixes.iter().any(|e| e.eth_dst == mac(1, 1)
                && matches!(e.kind, EventKind::GratuitousRequest { ip: i, mac: m } if i == old && m == mac(2, 0xfe))));
        }
    }

    #[test]
    fn an_unanswered_probe_refuses_a_confirmed_move_at_the_timeout() {
        let now = Instant::now();
        let mut b = confirming_b(now);
        rarp(&mut b, mac(1, 1), now);
        let mut probes = probes_to(&transmitted(&mut b), ip(1, 1));
        while let Some(at) = b
            .poll_timeout()
            .filter(|t| *t < now + Duration::from_secs(1))
        {
            b.handle_timeout(at);
            probes += probes_to(&transmitted(&mut b), ip(1, 1));
        }
        assert_eq!(probes, 6, "the whole schedule within 300 ms");
        assert!(b.lan.pending.is_empty());
        assert_eq!(
            last_outcome(&b),
            Outcome::Refused(RefusalReason::Unconfirmed)
        );
        assert_eq!(b.counters().get(Counter::RefusedUnconfirmed), 1);
        assert!(!b.lndt().contains(ip(1, 1)));
        assert_eq!(
            owner_of(&b, ip(1, 1)),
            (site("a"), 1, false),
            "nothing ever moved"
        );
    }

    #[test]
    fn without_a_binding_only_the_owner_can_vouch_for_the_claimed_address() {
        let now = Instant::now();
        let mut b = lan_node("b", 2, now);
        from_peer(&mut b, "a", site_entries("a", 1)[..1].to_vec(), now);
        from_peer(&mut b, "c", site_entries("c", 3)[..1].to_vec(), now);
        while b.poll_effect().is_some() {}
        let garp = frames::gratuitous_arp_request(mac(1, 1), ip(1, 1));
        b.handle_lan_event(classify(&garp).unwrap(), now);
        let asked = sent(&mut b);
        assert_eq!(
            asked.len(),
            1,
            "only the owner of the claimed address: {asked:?}"
        );
        let (to, Message::WhoHas { query, mac: m }) = asked[0].clone() else {
            panic!("{asked:?}")
        };
        assert_eq!((to, m), (site("a"), mac(1, 1)));
        // c's word counts for nothing, nor a's for another address, nor a stale query.
        b.on_is_at(&site("c"), query, mac(1, 1), Some(ip(1, 1)), now);
        b.on_is_at(&site("a"), query, mac(1, 1), Some(ip(1, 2)), now);
        b.on_is_at(&site("a"), query + 1, mac(1, 1), Some(ip(1, 1)), now);
        assert!(matches!(
            b.lan.pending[&mac(1, 1)].phase,
            Phase::Resolving { .. }
        ));
        b.on_is_at(&site("a"), query, mac(1, 1), Some(ip(1, 1)), now);
        assert!(matches!(
            b.lan.pending[&mac(1, 1)].phase,
            Phase::TakenOver { .. }
        ));
        assert_eq!(
            b.gndt().owner(ip(1, 1)),
            Some(&site("b")),
            "vouched for: taken over"
        );
        assert!(b.migrations().last().unwrap().resolved.is_some());
    }

    #[test]
    fn a_bare_mac_nobody_vouches_for_is_refused_after_the_resolve_timeout() {
        let now = Instant::now();
        let mut b = b_knowing_a(now);
        from_peer(&mut b, "c", Vec::new(), now);
        while b.poll_effect().is_some() {}
        rarp(&mut b, mac(9, 9), now);
        let asked: Vec<SiteId> = sent(&mut b).into_iter().map(|(to, _)| to).collect();
        assert_eq!(asked, [site("a"), site("c")], "everyone for a bare MAC");
        assert_eq!(b.poll_timeout(), Some(now + RESOLVE_TIMEOUT));
        b.handle_timeout(now + RESOLVE_TIMEOUT);
        assert_eq!(
            last_outcome(&b),
            Outcome::Refused(RefusalReason::Unresolved)
        );
        assert_eq!(b.counters().get(Counter::RefusedUnresolved), 1);
    }

    #[test]
    fn a_pinned_address_is_refused_before_any_probe() {
        let now = Instant::now();
        let prefix: Ipv4Network = "10.77.2.0/24".parse().unwrap();
        let mut config =
            super::super::NodeConfig::new(site("b"), vec![prefix], vec![prefix], vec![site("a")]);
        config.lan = Some(super::super::LanIdentity {
            mac: mac(2, 0xfe),
            ip: ip(2, 254),
        });
        config.pinned = vec![ip(1, 1)];
        config.damping = DampingConfig::default();
        let mut b = Node::new(config, now);
        from_peer(&mut b, "a", site_entries("a", 1), now);
        while b.poll_effect().is_some() {}
        rarp(&mut b, mac(1, 1), now);
        assert_eq!(probes_to(&transmitted(&mut b), ip(1, 1)), 0);
        assert_eq!(last_outcome(&b), Outcome::Refused(RefusalReason::Pinned));
        assert_eq!(b.counters().get(Counter::RefusedPinned), 1);
        assert!(b.lan.pending.is_empty());
    }

    #[test]
    fn repeats_are_one_migration_and_a_flood_of_macs_is_bounded() {
        let now = Instant::now();
        let mut b = b_knowing_a(now);
        for _ in 0..5 {
            rarp(&mut b, mac(1, 1), now);
        }
        assert_eq!(b.migrations().count(), 1);
        assert_eq!(b.counters().get(Counter::Repeats), 4);
        // Announcements for random MACs: at most MAX_PENDING queries at once.
        for i in 0..100u8 {
            let frame = frames::rarp_announce(MacAddr([0x02, 0, 0, 0, 1, i]));
            // From distinct sources, so the rate limit is not what stops them.
            b.handle_lan_event(classify(&frame).unwrap(), now);
        }
        assert_eq!(b.lan.pending.len(), MAX_PENDING);
        assert_eq!(
            b.counters().get(Counter::RefusedBusy),
            100 + 1 - MAX_PENDING as u64
        );
    }

    #[test]
    fn an_address_of_ours_or_outside_the_network_starts_nothing() {
        let now = Instant::now();
        let mut b = b_knowing_a(now);
        let own = frames::gratuitous_arp_request(mac(2, 1), ip(2, 1));
        b.handle_lan_event(classify(&own).unwrap(), now);
        let outside = frames::gratuitous_arp_request(mac(7, 7), "192.0.2.7".parse().unwrap());
        b.handle_lan_event(classify(&outside).unwrap(), now);
        assert_eq!(b.migrations().count(), 0);
        assert!(b.lan.pending.is_empty());
    }

    #[test]
    fn a_pending_migration_wakes_at_its_phase_deadline() {
        let now = Instant::now();
        let resolving = Pending {
            record: 1,
            phase: Phase::Resolving {
                claimed: Some(ip(1, 1)),
                query: 1,
                deadline: now + RESOLVE_TIMEOUT,
            },
        };
        assert_eq!(resolving.ip(), Some(ip(1, 1)));
        assert_eq!(resolving.next_at(), now + RESOLVE_TIMEOUT);
        let prober = Prober::new(ip(1, 2), mac(1, 2), Duration::from_millis(300), now);
        let confirming = Pending {
            record: 2,
            phase: Phase::Confirming { prober },
        };
        assert_eq!(confirming.ip(), Some(ip(1, 2)));
        assert_eq!(confirming.next_at(), now);
    }
}
