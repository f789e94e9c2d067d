//! Echoes: a peer reminds a router of what it said before it restarted (or its predecessor
//! did), and the router settles each echoed entry on its LAN (see the parent module's doc).

use super::*;

impl Node {
    /// Sends `peer` its own entries for VMs that had migrated to it (see [`Message::Echo`]).
    pub(in crate::node) fn send_echo(&mut self, peer: &SiteId) {
        let mut entries: Vec<GndtEntry> = self
            .gndt
            .live_entries()
            .map(|s| &s.entry)
            .filter(|e| e.site() == peer && e.kind == EntryKind::Host && e.mac.is_some())
            .cloned()
            .collect();
        // The bindings of its hosts that only a withdrawn entry or another site's claim carries,
        // or that went from our table (as withdrawn entries: the peer may vouch for them, no
        // more): a restarted home is the one router asked about them. A claim counts too: it
        // may be rolled back and dropped after this echo (its claimant restarts), and the home,
        // connected by then, would never hear of the binding again (its VM, found by its
        // traffic where it is, could not be recognised).
        entries.extend(self.remembered_bindings(peer, true));
        self.send_echo_entries(peer, &entries);
    }

    /// The bindings of `peer`'s hosts (as withdrawn entries of its, with the MAC) that another
    /// site's live claim carries (if `with_claims`), or only a withdrawn entry, or that went
    /// from our table and are remembered: what the peer may vouch for and may not know.
    fn remembered_bindings(&self, peer: &SiteId, with_claims: bool) -> Vec<GndtEntry> {
        let binding = |ip: Ipv4Addr, mac: MacAddr| {
            let mut binding = GndtEntry::host(ip, peer.clone(), 0, Some(mac));
            binding.withdrawn = true;
            binding
        };
        // Without the claims, only the tombstones are looked at (not the whole table).
        let live = self
            .gndt
            .live_entries()
            .take(if with_claims { usize::MAX } else { 0 });
        let elsewhere = live
            .chain(self.gndt.tombstone_entries())
            .map(|s| &s.entry)
            .filter(|e| {
                (e.withdrawn || e.site() != peer)
                    && e.kind == EntryKind::Host
                    && self.trust.certificates.covers(peer, e.prefix)
            });
        let mut bindings: Vec<GndtEntry> = elsewhere
            .filter_map(|e| Some(binding(e.prefix.ip(), e.mac?)))
            .collect();
        // The forgotten bindings inside the peer's certified prefixes, each taken once (its
        // prefixes may overlap).
        let mut gone: BTreeMap<Ipv4Addr, MacAddr> = BTreeMap::new();
        for certified in self.trust.certificates.of(peer) {
            let range = certified.network()..=certified.broadcast();
            gone.extend(self.trust.gone_bindings.range(range));
        }
        for (ip, mac) in gone {
            if self.remembered_binding(ip).is_some() {
                bindings.push(binding(ip, mac));
            }
        }
        bindings
    }

    fn send_echo_entries(&mut self, peer: &SiteId, entries: &[GndtEntry]) {
        for chunk in entries.chunks(crate::proto::MAX_ENTRIES_PER_MESSAGE) {
            self.send(
                peer,
                Message::Echo {
                    entries: chunk.to_vec(),
                },
            );
        }
    }

    /// A peer reminds us of VMs we held (we restarted, or it did): each that we do not hold
    /// now is looked for on our LAN, and claimed only if it answers here.
    pub(in crate::node) fn on_echo(
        &mut self,
        from: &SiteId,
        entries: Vec<GndtEntry>,
        now: Instant,
    ) {
        if self.lan.identity.is_none() {
            return;
        }
        for entry in entries {
            let ip = entry.prefix.ip();
            let (Some(mac), true, true) = (
                entry.mac,
                entry.site() == &self.config.me,
                entry.kind == EntryKind::Host && entry.prefix.prefix() == 32,
            ) else {
                tracing::debug!(peer = %from, prefix = %entry.prefix, "echo of an entry not ours; ignored");
                continue;
            };
            if self.config.lan.is_some_and(|l| l.ip == ip) {
                self.on_echoed_lan_binding(entry.mac, now);
                continue;
            }
            let home = self.config.prefixes.iter().any(|p| p.contains(ip));
            let unknown = home && self.lndt.is_configured(ip) && self.hwdt.by_ip(ip).is_none();
            if entry.withdrawn {
                // A binding of a host of ours that the peer still knows, no claim: vouched for.
                if unknown {
                    self.trust.note_echoed(mac, ip);
                }
                continue;
            }
            if unknown {
                // Our own host, before the restart: we may vouch for its MAC (who it is, not
                // where), so that a destination can still recognise it if it moved meanwhile.
                // If it does not answer here, the binding peers keep for us is withdrawn at
                // their number (it may be a claim we made before the restart, never confirmed).
                self.trust.note_echoed(mac, ip);
                self.trust.note_echoed_claim(ip, entry.version.seq);
            } else if home || self.gndt.owner(ip) == Some(&self.config.me) || self.lndt.contains(ip)
            {
                continue;
            } else {
                // Our claim away from the VM's home, which the peer keeps until we speak
                // about it: claimed again if the VM answers here, withdrawn if not.
                self.trust.note_echoed_claim(ip, entry.version.seq);
            }
            self.look_for_echoed(mac, ip, now);
        }
    }

    /// `peer`'s table ended: its entries that it did not repeat are no longer its word, and
    /// go. Except the host bindings of its own prefixes: a restarted router relearns its
    /// hosts on its LAN, and until it has, a VM of its that moves must still be recognised by
    /// the binding it advertised. And, at the `first` table end since it connected, its
    /// claims of VMs away from their homes: a restarted router (or the site's other router,
    /// taking over) must keep a VM that had migrated to it routed there and not fall back to
    /// its home; it claims or withdraws each as we echo it (see [`Node::on_echo`]). At a later
    /// end (a digest disagreed) a claim it no longer repeats is one it gave up: it goes.
    pub(in crate::node) fn end_of_table(
        &mut self,
        peer: &SiteId,
        first: bool,
        now: Instant,
    ) -> u64 {
        let view = self.trust.views.entry(peer.clone()).or_default();
        view.end_of_table();
        if first {
            view.remembered_reechoes = REECHOES;
        }
        let digest = view.digest();
        let view = self.trust.views.get(peer);
        // A claim we still echo to it (the first echo may have been lost) is kept until it
        // answered, or the echoes are used up.
        let echoing =
            |p: &Ipv4Network| view.is_some_and(|v| v.unsaid.get(p).is_some_and(|l| *l > 0));
        let stale: Vec<Ipv4Network> = self
            .gndt
            .entries_of(peer)
            .filter(|s| {
                let e = &s.entry;
                e.withdrawn
                    || e.kind != EntryKind::Host
                    || (!first
                        && !self.trust.certificates.covers(peer, e.prefix)
                        && !echoing(&e.prefix))
            })
            .map(|s| s.entry.prefix)
            .filter(|p| !view.is_some_and(|v| v.said(*p)))
            .collect();
        if !stale.is_empty() {
            tracing::info!(peer = %peer, entries = stale.len(), "dropping entries the peer no longer advertises");
            self.drop_entries(stale, now);
        }
        self.note_unsaid(peer);
        digest
    }

    /// Notes the host bindings of `peer` that we keep although its table left them out: the
    /// echo sent when it connected may have been lost with a connection, and without it the
    /// peer cannot vouch for a VM of its that moved meanwhile, nor claim or withdraw a VM
    /// that had migrated to it. Each is echoed again with the peer's next digests.
    fn note_unsaid(&mut self, peer: &SiteId) {
        let unsaid: Vec<Ipv4Network> = self.unsaid_bindings(peer).map(|e| e.prefix).collect();
        if let Some(view) = self.trust.views.get_mut(peer) {
            let previous = std::mem::take(&mut view.unsaid);
            view.unsaid = unsaid
                .into_iter()
                .map(|p| (p, previous.get(&p).copied().unwrap_or(REECHOES)))
                .collect();
        }
    }

    /// The live host bindings of `peer` that we keep and its last table did not say.
    fn unsaid_bindings<'a>(&'a self, peer: &'a SiteId) -> impl Iterator<Item = &'a GndtEntry> {
        let view = self.trust.views.get(peer);
        self.gndt
            .entries_of(peer)
            .map(|s| &s.entry)
            .filter(|e| !e.withdrawn && e.kind == EntryKind::Host && e.mac.is_some())
            .filter(move |e| view.is_none_or(|v| !v.said(e.prefix)))
    }

    /// `peer` sent its digest: the bindings of its that we keep unsaid are echoed to it again,
    /// [`REECHOES`] times at most each; and so are, the first [`REECHOES`] digests on each
    /// connection, the bindings of its hosts that only a withdrawn entry or an entry gone from
    /// our table carries (the echo sent when it connected may have been lost, and no one else
    /// may know them: a restarted home could not recognise its VM where it turns up).
    pub(in crate::node) fn reecho_unsaid(&mut self, peer: &SiteId) {
        let Some(view) = self.trust.views.get_mut(peer) else {
            return;
        };
        let remembered = view.remembered_reechoes > 0;
        view.remembered_reechoes = view.remembered_reechoes.saturating_sub(1);
        let mut still = Vec::new();
        if !view.unsaid.is_empty() {
            let mut candidates = std::mem::take(&mut view.unsaid);
            still = self
                .unsaid_bindings(peer)
                .filter(|e| candidates.get(&e.prefix).is_some_and(|left| *left > 0))
                .cloned()
                .collect();
            candidates.retain(|p, left| {
                let echoed = still.iter().any(|e| e.prefix == *p);
                *left = left.saturating_sub(1);
                echoed && *left > 0
            });
            if let Some(view) = self.trust.views.get_mut(peer) {
                view.unsaid = candidates;
            }
        }
        let unsaid = still.len();
        if remembered {
            still.extend(self.remembered_bindings(peer, false));
        }
        if still.is_empty() {
            return;
        }
        tracing::debug!(peer = %peer, unsaid, remembered = still.len() - unsaid, "echoing again the bindings the peer's table left out, or that only we remember");
        self.send_echo_entries(peer, &still);
    }

    /// The VM of our echoed claim of `ip` (at `mac`) did not answer here: the claim that peers
    /// still hold is withdrawn, at the number they hold (so that it replaces our claim, and
    /// nothing that outranked it). The withdrawal keeps the binding, as a rolled-back takeover
    /// does: the VM is elsewhere, and the site it turns up at must still recognise its MAC when
    /// no router that saw it there is left to vouch for it.
    pub(in crate::node) fn withdraw_echoed_claim(
        &mut self,
        ip: Ipv4Addr,
        mac: MacAddr,
        now: Instant,
    ) {
        let Some(seq) = self.trust.take_echoed_claim(ip) else {
            return;
        };
        if self.lndt.contains(ip) {
            return;
        }
        let mut withdrawal = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
        withdrawal.withdrawn = true;
        tracing::info!(%ip, seq, "a VM that peers remember here did not answer; withdrawing our claim of it");
        if self.gndt.get(Ipv4Network::from(ip)).is_none() {
            self.originate(withdrawal, now);
        } else {
            self.broadcast_except(None, &[withdrawal]);
        }
    }
}
