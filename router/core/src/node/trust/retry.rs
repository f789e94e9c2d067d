//! Refused entries checked again: claims refused for a freeze when it ends, host entries
//! refused for lying in no known site's prefixes when that site's certificate arrives; and the
//! `Outranked` hints between a claimant and a router that refused its claim as not newer (see
//! the parent module's doc).

use super::*;

impl Node {
    /// Checks again the claims refused for a freeze that has ended, if each is still its
    /// sender's last word and the sender is connected.
    pub(in crate::node) fn replay_deferred(&mut self, now: Instant) {
        let due: Vec<(Ipv4Addr, SiteId)> = self
            .trust
            .deferred
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        let mut changed = false;
        for key in due {
            if let Some((entry, _)) = self.trust.deferred.remove(&key) {
                changed |= self.recheck(&key.1, entry, "the freeze ended", now);
            }
        }
        if changed {
            self.effects.push_back(Effect::TablesChanged);
        }
    }

    /// `peer` sent its digest: its claims refused here as not newer are hinted again
    /// ([`Message::Outranked`] with the number we hold), [`OUTRANKED_REPEATS`] times at most,
    /// while it still says each and our entry still outranks it. A claim that nothing here
    /// outranks any more (the entry that did is gone, or its owner restarted and said it again
    /// at a lower number) is checked again: its sender has no reason to say it again, and its
    /// digests agree with ours (a refused entry counts as said).
    pub(in crate::node) fn repeat_outranked(&mut self, peer: &SiteId, now: Instant) {
        let range = (peer.clone(), Ipv4Addr::UNSPECIFIED)..=(peer.clone(), Ipv4Addr::BROADCAST);
        let held: Vec<(Ipv4Addr, GndtEntry, u8)> = self
            .trust
            .outranked
            .range(range)
            .map(|((_, ip), (entry, left))| (*ip, entry.clone(), *left))
            .collect();
        let mut changed = false;
        for (ip, entry, left) in held {
            let key = (peer.clone(), ip);
            let says = self.trust.views.get(peer).is_some_and(|v| v.says(&entry));
            let ours = self
                .gndt
                .get(entry.prefix)
                .map(|s| s.entry.version.seq)
                .filter(|seq| *seq >= entry.version.seq && self.gndt.owner(ip) != Some(peer));
            match ours {
                _ if !says => {
                    self.trust.outranked.remove(&key);
                }
                Some(seq) if left > 0 => {
                    self.trust.outranked.insert(key, (entry, left - 1));
                    tracing::debug!(peer = %peer, %ip, seq, "claim still refused as not newer; telling its sender our number again");
                    self.send(peer, Message::Outranked { ip, seq });
                }
                // Hinted enough; kept, so that it is checked again if ours goes.
                Some(_) => {}
                None => {
                    self.trust.outranked.remove(&key);
                    if self.gndt.get(entry.prefix).map(|s| &s.entry) != Some(&entry) {
                        changed |= self.recheck(peer, entry, "nothing here outranks it now", now);
                    }
                }
            }
        }
        if changed {
            self.effects.push_back(Effect::TablesChanged);
        }
    }

    /// Checks a refused entry again (`why`: what changed), if it is still its sender's last
    /// word and the sender is connected. Whether the tables changed.
    pub(super) fn recheck(
        &mut self,
        from: &SiteId,
        entry: GndtEntry,
        why: &str,
        now: Instant,
    ) -> bool {
        let connected = self.peers.get(from).is_some_and(|p| p.connected);
        let says = self.trust.views.get(from).is_some_and(|v| v.says(&entry));
        if !(connected && says) {
            return false;
        }
        tracing::info!(ip = %entry.prefix.ip(), peer = %from, seq = entry.version.seq, why, "checking a refused entry again");
        self.merge_said(from, entry, now)
    }

    /// `peer`'s certificate is newly known: the host entries refused earlier for lying in no
    /// known site's prefixes and inside its prefixes are checked again, if each is still its
    /// sender's last word and the sender is connected.
    pub(super) fn replay_homeless(&mut self, peer: &SiteId, now: Instant) {
        let covered: Vec<(Ipv4Addr, SiteId)> = self
            .trust
            .homeless
            .keys()
            .filter(|(ip, _)| self.trust.certificates.covers(peer, Ipv4Network::from(*ip)))
            .cloned()
            .collect();
        let mut changed = false;
        for key in covered {
            if let Some(entry) = self.trust.homeless.remove(&key) {
                changed |= self.recheck(&key.1, entry, "the address's home is known now", now);
            }
        }
        if changed {
            self.effects.push_back(Effect::TablesChanged);
        }
    }

    /// `from` refused our claim of `ip`: it holds an entry numbered `seq`. If the host is ours
    /// (we hold it and advertise it), our entry is re-advertised above that number; a number
    /// further ahead than [`MAX_SEQ_JUMP`] is ignored (peers would refuse the jump).
    pub(in crate::node) fn on_outranked(
        &mut self,
        from: &SiteId,
        ip: Ipv4Addr,
        seq: u64,
        now: Instant,
    ) {
        let me = &self.config.me;
        let ours = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| s.entry.clone())
            .filter(|e| !e.withdrawn && e.site() == me && self.lndt.contains(ip));
        let Some(mut entry) = ours else {
            tracing::debug!(peer = %from, %ip, seq, "outranked claim of a host not ours; ignored");
            return;
        };
        if seq < entry.version.seq || seq >= entry.version.seq.saturating_add(MAX_SEQ_JUMP) {
            tracing::debug!(peer = %from, %ip, seq, ours = entry.version.seq, "outranked hint out of range; ignored");
            return;
        }
        if matches!(self.lan.damping.check(ip, now), MoveVerdict::Frozen { .. }) {
            // We took the address back and froze it: the peer's claim waits for the freeze to
            // end (then it is checked again, see [`Node::replay_deferred`]). Answering it now
            // would renew the freeze everywhere, for a VM that may have left since.
            tracing::debug!(peer = %from, %ip, seq, "outranked while frozen here; left to the end of the freeze");
            return;
        }
        entry.version.seq = seq.saturating_add(1);
        tracing::info!(peer = %from, %ip, seq = entry.version.seq, "a peer holds a newer entry for a host of ours; re-advertising ours above it");
        self.originate(entry, now);
    }
}
