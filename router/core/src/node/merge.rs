//! Applying entries to the GNDT: a peer's, once checked and ranked, and our own; and what
//! follows each change (the LNDT, the forwarding view, the kernel, migrations in progress).

use super::*;

impl Node {
    pub(super) fn merge_entries(&mut self, from: &SiteId, entries: Vec<GndtEntry>, now: Instant) {
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
            changed |= self.merge_said(from, entry, now);
        }
        // Received entries are not flooded on: every router advertises its own entries to
        // every peer directly (the data plane only ever sends to the owning site directly, so
        // routers form a full mesh), and the periodic digest repairs anything lost. Flooding
        // would cost (N-1)^2 messages per change, and a router speaks only for itself.
        if changed {
            self.effects.push_back(Effect::TablesChanged);
        }
    }

    /// Checks and applies one entry `from` said (recorded already); whether the GNDT changed.
    pub(super) fn merge_said(&mut self, from: &SiteId, entry: GndtEntry, now: Instant) -> bool {
        let accepted = match self.check_entry(from, &entry, now) {
            Ok(accepted) => accepted,
            Err(refusal) => {
                self.refuse_entry(from, &entry, refusal, now);
                return false;
            }
        };
        let applied = self.apply_peer_entry(entry.clone(), accepted.wins_tie, now);
        // Stored as sent (every router holds the same entry), acted on without a freeze
        // mark we do not honour: our still-here check runs.
        let mut entry = entry;
        if entry.frozen && !accepted.honour_freeze && applied.changed() {
            self.counters.add(Counter::RefusedForgedFrozen);
            tracing::warn!(peer = %from, prefix = %entry.prefix, reason = EntryRefusal::ForgedFrozen.describe(), "freeze mark not honoured; taken as a plain claim");
            entry.frozen = false;
        }
        if let Applied::Stale { current } = &applied {
            tracing::trace!(peer = %from, prefix = %entry.prefix, ?current, "stale entry ignored");
        }
        if !applied.changed() {
            return false;
        }
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
        true
    }

    /// Applies a checked entry from its origin: the origin's last word about its own entry
    /// wins even when older or as old and different (it restarted and counts from 1 again, or
    /// the site's other router took over with its own MAC); against another origin's entry
    /// the sequence numbers decide, ties going to the address's home (`wins_tie`).
    pub(super) fn apply_peer_entry(
        &mut self,
        entry: GndtEntry,
        wins_tie: bool,
        now: Instant,
    ) -> Applied {
        let current = self.gndt.get(entry.prefix).map(|s| s.entry.clone());
        match current {
            Some(current)
                if current.site() == entry.site()
                    && current.version >= entry.version
                    && current != entry =>
            {
                self.gndt_remove(current.prefix);
                match self.apply_entry_ranked(entry, false, now) {
                    Applied::Inserted => Applied::Replaced { previous: current },
                    other => other,
                }
            }
            _ => self.apply_entry_ranked(entry, wins_tie, now),
        }
    }

    pub(super) fn has_room_for(&self, from: &SiteId) -> bool {
        self.gndt.len() < MAX_GNDT_ENTRIES && self.gndt.count_of(from) < MAX_ENTRIES_PER_SITE
    }

    /// What the core counted: LAN frames, refusals, entries over the limits.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Keeps the LNDT (and the LAN) in step with a changed host entry.
    pub(super) fn after_change(
        &mut self,
        entry: &GndtEntry,
        previous: Option<GndtEntry>,
        now: Instant,
    ) {
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
        // its LAN, see [`trust`]), so this entry is another site's.
        if self.lndt_remove(ip) {
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
    pub(super) fn after_withdrawal(
        &mut self,
        entry: &GndtEntry,
        previous: Option<GndtEntry>,
        now: Instant,
    ) {
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
            // The same entry again, not a new take-back: its freeze mark only while the
            // freeze lasts here (every router that takes the mark freezes the address anew).
            ours.frozen &= matches!(
                self.lan.damping.check(ip, now),
                skyvine_tables::MoveVerdict::Frozen { .. }
            );
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

    /// The MAC of a live host entry of another site (see [`Node::foreign_macs`]).
    pub(super) fn foreign_mac(&self, entry: &GndtEntry) -> Option<MacAddr> {
        let foreign =
            entry.kind == EntryKind::Host && !entry.withdrawn && entry.site() != &self.config.me;
        entry.mac.filter(|_| foreign)
    }

    /// [`Lndt::add`], noted for the next forwarding snapshot.
    pub(super) fn lndt_add(&mut self, ip: Ipv4Addr, mac: Option<MacAddr>, now: Instant) -> bool {
        self.fib.local_changed(ip);
        self.lndt.add(ip, mac, now)
    }

    /// [`Gndt::remove`], kept in step with the foreign MACs and noted for the next forwarding
    /// snapshot (the caller syncs the kernel).
    pub(super) fn gndt_remove(&mut self, prefix: Ipv4Network) -> Option<GndtEntry> {
        let removed = self.gndt.remove(prefix)?;
        if let Some(mac) = self.foreign_mac(&removed) {
            self.foreign.remove(mac);
        }
        self.fib.changed(removed.prefix);
        Some(removed)
    }

    /// [`Lndt::remove`], noted for the next forwarding snapshot.
    pub(super) fn lndt_remove(&mut self, ip: Ipv4Addr) -> bool {
        self.fib.local_changed(ip);
        self.lan.homeless.remove(&ip);
        self.lndt.remove(ip)
    }

    /// Merges one entry into the GNDT and, if it changed anything, emits the kernel changes.
    pub(super) fn apply_entry(&mut self, entry: GndtEntry, now: Instant) -> Applied {
        self.apply_entry_ranked(entry, false, now)
    }

    /// [`Node::apply_entry`], winning sequence-number ties against other origins if `wins_tie`.
    pub(super) fn apply_entry_ranked(
        &mut self,
        entry: GndtEntry,
        wins_tie: bool,
        now: Instant,
    ) -> Applied {
        let prefix = entry.prefix;
        // A frozen take-back ends a move that was never confirmed: the site it takes the
        // address from is no confirmed owner, and the one before stays the last.
        let host =
            (entry.kind == EntryKind::Host && !entry.withdrawn && !entry.frozen).then(|| {
                let before = self.gndt.owner(prefix.ip()).cloned();
                (entry.site().clone(), before)
            });
        let foreign = self.foreign_mac(&entry);
        let applied_site = entry.site().clone();
        let applied = self.gndt.apply_ranked(entry, now, wins_tie);
        if let Some((owner, Some(before))) = host.filter(|_| applied.changed()) {
            // Remembered for freeze marks: only the site an address moved away from may
            // take it back frozen.
            if owner != before {
                self.trust.note_prior_owner(prefix.ip(), before);
            }
        }
        if let Applied::Replaced { previous } = &applied {
            if *previous.site() != applied_site {
                self.note_superseded(previous);
            }
        }
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
}
