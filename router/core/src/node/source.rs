//! Migration at the source: a host of ours is now owned by another site. The router repoints
//! its LAN's caches to itself (gratuitous ARP), then checks with probes at the MAC it knew that
//! the host really left: if it still answers here, the move was a duplicate or a hijack, and
//! the router takes the address back, frozen.
//!
//! It also remembers for a while where each host went ([`Departures`]): a destination that took
//! a host over optimistically and then never heard from it withdraws its own claim (a newer
//! version of its entry, withdrawn), and this site, the last one where the host was confirmed,
//! takes the address back, frozen. Every entry stays originated by the site it names: nobody
//! ever writes an entry in another site's name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_inject::wire as frames;
use skyvine_tables::{GndtEntry, MacAddr, SiteId};

use super::lan::spoken_for;
use super::prober::{Prober, Tick};
use super::records::{Detection, Outcome, RefusalReason, Role, Start};
use super::Node;

/// A host that moved away, being checked for a reply at this site.
#[derive(Debug)]
pub(super) struct Verifying {
    /// Its migration record.
    record: u64,
    prober: Prober,
}

impl Verifying {
    /// When this check needs [`Node::handle_timeout`] next.
    pub(super) fn next_at(&self) -> Instant {
        self.prober.next_at()
    }
}

/// How long a departure is remembered: longer than any destination's confirmation timeout
/// (at most [`crate::config::MAX_CONFIRM_TIMEOUT_MS`]), with room for the withdrawal to travel.
pub(super) const DEPARTURE_MEMORY: Duration = Duration::from_secs(90);
/// Departures remembered at once; the oldest is forgotten first.
const MAX_DEPARTURES: usize = 4096;

/// Where a host that left this site went, and until when that is remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Departure {
    pub(super) to: SiteId,
    pub(super) mac: Option<MacAddr>,
    /// The migration record of the move away.
    pub(super) record: u64,
    until: Instant,
}

/// Recent departures by address, bounded, with an index by expiry so that timers and the
/// bound cost O(log n), not a scan of every departure.
#[derive(Debug, Default)]
pub(super) struct Departures {
    by_ip: BTreeMap<Ipv4Addr, Departure>,
    by_until: BTreeSet<(Instant, Ipv4Addr)>,
}

impl Departures {
    fn insert(
        &mut self,
        ip: Ipv4Addr,
        to: SiteId,
        mac: Option<MacAddr>,
        record: u64,
        now: Instant,
    ) {
        self.forget(ip);
        if self.by_ip.len() >= MAX_DEPARTURES {
            if let Some((_, oldest)) = self.by_until.pop_first() {
                self.by_ip.remove(&oldest);
            }
        }
        let until = now + DEPARTURE_MEMORY;
        self.by_until.insert((until, ip));
        self.by_ip.insert(
            ip,
            Departure {
                to,
                mac,
                record,
                until,
            },
        );
    }

    /// The departure of `ip` to `to`, if remembered and not expired; it is forgotten.
    fn take(&mut self, ip: Ipv4Addr, to: &SiteId, now: Instant) -> Option<Departure> {
        let found = self
            .by_ip
            .get(&ip)
            .is_some_and(|d| &d.to == to && now < d.until);
        if !found {
            return None;
        }
        let departure = self.by_ip.remove(&ip)?;
        self.by_until.remove(&(departure.until, ip));
        Some(departure)
    }

    pub(super) fn forget(&mut self, ip: Ipv4Addr) {
        if let Some(departure) = self.by_ip.remove(&ip) {
            self.by_until.remove(&(departure.until, ip));
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(until, ip)) = self.by_until.first() {
            if now < until {
                break;
            }
            self.by_until.pop_first();
            self.by_ip.remove(&ip);
        }
    }
}

impl Node {
    /// A host entry of ours was superseded by another site's: the host moved away from here.
    /// `known_mac` is the MAC this site knew for it, used to check that it really left.
    pub(super) fn on_moved_away(
        &mut self,
        ip: Ipv4Addr,
        known_mac: Option<MacAddr>,
        entry: &GndtEntry,
        now: Instant,
    ) {
        let start = Start {
            mac: entry.mac,
            ip: Some(ip),
            from: Some(self.config.me.clone()),
            to: entry.site().clone(),
            role: Role::Source,
            detection: Detection::Peer,
        };
        let record = self.lan.records.start(start, now);
        self.update_record(record, |r| r.advertised = Some(now));
        // Only a host confirmed here departs from here: after an unconfirmed takeover that
        // lost, a withdrawal by the winner is no reason to take the address back.
        if !self.abandon_pending(ip) {
            self.lan.departed.insert(
                ip,
                entry.site().clone(),
                known_mac.or(entry.mac),
                record,
                now,
            );
        }
        let Some(identity) = self.lan.identity else {
            return;
        };
        // Repoint every LAN host's cache entry for the VM to us (request form: accepted at
        // once even within Linux's 1 s locktime), then make sure the VM is really gone.
        self.schedule_repeated(frames::gratuitous_arp_request(identity.mac, ip), now);
        if let (Some(mac), false) = (known_mac, entry.frozen) {
            let prober = Prober::new(ip, mac, self.lan.still_here_timeout, now);
            self.lan.verifying.insert(ip, Verifying { record, prober });
            self.advance_verifying(now);
        }
    }

    /// `(ip, mac)` answered a probe: if it is a host that moved away, it did not.
    pub(super) fn on_still_here_reply(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let verifying = self.lan.verifying.get(&ip);
        if verifying.is_some_and(|v| v.prober.answered_by(ip, mac)) {
            self.still_here(ip, mac, now);
        }
    }

    /// A VM that moved away from here is taken over here again (it came back): its departure
    /// and any still-here check of that earlier move are over. Left running, the check would
    /// take the VM's reply to the new takeover's probe for a refusal of the old move.
    pub(super) fn on_returned(&mut self, ip: Ipv4Addr) {
        if self.lan.verifying.remove(&ip).is_some() {
            tracing::debug!(%ip, "moved-away VM is back; its still-here check ends");
        }
        self.lan.departed.forget(ip);
    }

    /// The moved-away VM answered at this site: the move was a duplicate or a hijack. Take the
    /// address back with a newer version, and tell the LAN where the VM really is.
    fn still_here(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let Some(verify) = self.lan.verifying.remove(&ip) else {
            return;
        };
        let claimed_by = self.gndt.owner(ip).cloned();
        tracing::warn!(%ip, %mac, claimed_by = ?claimed_by.as_ref().map(SiteId::as_str), "host still answers here; refusing its move (duplicate or hijack)");
        self.finish_refused(verify.record, RefusalReason::StillHere);
        self.lan.departed.forget(ip);
        self.take_back(ip, Some(mac), now);
    }

    /// A host entry was withdrawn by the site that had claimed it. If that site took the host
    /// over from here (a remembered departure), the move was never confirmed there: this site,
    /// the last where the host was confirmed, takes the address back, frozen.
    pub(super) fn on_withdrawn_host(&mut self, entry: &GndtEntry, now: Instant) {
        let ip = entry.prefix.ip();
        if let Some(departure) = self.lan.departed.take(ip, entry.site(), now) {
            tracing::warn!(%ip, by = %entry.site(), "the destination withdrew its unconfirmed claim; taking the address back, frozen");
            self.lan.verifying.remove(&ip);
            self.update_record(departure.record, |r| {
                r.outcome = Outcome::Refused(RefusalReason::Unconfirmed);
            });
            self.take_back(ip, departure.mac.or(entry.mac), now);
            return;
        }
        // Nobody took it back (yet): the address falls back to the prefix covering it.
        self.adopt_if_ours_by_prefix(ip, entry.mac, now);
    }

    /// A host entry of `ip` was withdrawn: if the address now falls back to a prefix of ours
    /// that the configuration gives us, the host is ours again, as configured.
    pub(super) fn adopt_if_ours_by_prefix(
        &mut self,
        ip: Ipv4Addr,
        mac: Option<MacAddr>,
        now: Instant,
    ) {
        if self.gndt.owner(ip) == Some(&self.config.me)
            && self.lndt.is_configured(ip)
            && self.lndt_add(ip, mac, now)
        {
            tracing::info!(%ip, "host entry withdrawn; the address is ours again by our prefix");
        }
    }

    /// Takes the address of a host at `mac` back to this site, frozen (the host is, or was
    /// last confirmed, here), and tells the LAN where the host is.
    fn take_back(&mut self, ip: Ipv4Addr, mac: Option<MacAddr>, now: Instant) {
        self.take_back_over(ip, mac, 0, now);
    }

    /// [`Node::take_back`] with a sequence number above `floor` too (a claim this router
    /// refused, and so does not hold).
    pub(super) fn take_back_over(
        &mut self,
        ip: Ipv4Addr,
        mac: Option<MacAddr>,
        floor: u64,
        now: Instant,
    ) {
        let seq = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map_or(0, |s| s.entry.version.seq)
            .max(floor)
            .saturating_add(1);
        self.lndt_add(ip, mac, now);
        self.lan.damping.freeze(ip, now);
        let mut entry = GndtEntry::host(ip, self.config.me.clone(), seq, mac);
        entry.frozen = true;
        self.originate(entry, now);
        if let (Some(identity), Some(mac)) = (self.lan.identity, mac) {
            self.schedule_repeated(spoken_for(identity.mac, MacAddr::BROADCAST, ip, mac), now);
        }
    }

    /// Sends the probes that are due; a host that stayed silent until the deadline is gone.
    pub(super) fn advance_verifying(&mut self, now: Instant) {
        let our_mac = self.lan.identity.map(|i| i.mac);
        let mut gone = Vec::new();
        let mut probes = Vec::new();
        for (ip, verify) in self.lan.verifying.iter_mut() {
            match verify.prober.tick(now) {
                Tick::Probe(due) => probes.extend(verify.prober.frames(due, our_mac)),
                Tick::Expired => gone.push(*ip),
            }
        }
        for ip in gone {
            self.lan.verifying.remove(&ip);
        }
        self.transmit_all(probes);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use skyvine_capture::wire::{classify, EventKind};

    use super::super::testing::{from_peer, ip, lan_node, mac, site, transmitted};
    use super::super::{Counter, Outcome};
    use super::*;

    /// Router a, whose a1 was seen on the LAN, then claimed by b (with `frozen`).
    fn a_after_move(frozen: bool, now: Instant) -> Node {
        let mut a = lan_node("a", 1, now);
        let hello = frames::arp_request(mac(1, 1), ip(1, 1), ip(1, 254));
        a.handle_lan_event(classify(&hello).unwrap(), now);
        let mut moved = GndtEntry::host(ip(1, 1), site("b"), 2, Some(mac(1, 1)));
        moved.frozen = frozen;
        from_peer(&mut a, "b", vec![moved], now);
        a
    }

    #[test]
    fn the_lan_is_repointed_and_a_silent_host_is_let_go() {
        let now = Instant::now();
        let mut a = a_after_move(false, now);
        assert!(!a.lndt().contains(ip(1, 1)));
        let sent = transmitted(&mut a);
        assert!(sent.iter().any(|e| matches!(e.kind,
            EventKind::GratuitousRequest { ip: i, mac: m } if i == ip(1, 1) && m == mac(1, 0xfe))));
        assert!(sent.iter().any(|e| e.eth_dst == mac(1, 1)
            && matches!(e.kind, EventKind::Probe { target_ip, .. } if target_ip == ip(1, 1))));
        let timeout = super::super::DEFAULT_STILL_HERE_TIMEOUT;
        a.handle_timeout(now + timeout - Duration::from_millis(1));
        assert!(!a.lan.verifying.is_empty(), "still probing");
        a.handle_timeout(now + timeout);
        assert!(a.lan.verifying.is_empty(), "no answer: gone");
        a.handle_kernel_applied(now + timeout);
        let record = a.migrations().last().unwrap();
        assert_eq!(
            (record.role, record.outcome),
            (Role::Source, Outcome::Applied)
        );
    }

    #[test]
    fn a_host_that_still_answers_is_taken_back_frozen() {
        let now = Instant::now();
        let mut a = a_after_move(false, now);
        while a.poll_effect().is_some() {}
        // Another MAC answering for the address proves nothing.
        let impostor =
            frames::proxy_arp_reply(mac(1, 9), ip(1, 1), mac(1, 0xfe), Ipv4Addr::UNSPECIFIED);
        a.handle_lan_event(classify(&impostor).unwrap(), now);
        assert!(!a.lndt().contains(ip(1, 1)));
        let reply =
            frames::proxy_arp_reply(mac(1, 1), ip(1, 1), mac(1, 0xfe), Ipv4Addr::UNSPECIFIED);
        a.handle_lan_event(classify(&reply).unwrap(), now);
        assert!(a.lndt().contains(ip(1, 1)));
        let entry = &a.gndt().get(Ipv4Network::from(ip(1, 1))).unwrap().entry;
        assert_eq!(
            (entry.site(), entry.version.seq, entry.frozen),
            (&site("a"), 3, true)
        );
        assert_eq!(a.frozen(now).len(), 1);
        assert_eq!(a.counters().get(Counter::RefusedStillHere), 1);
        let record = a.migrations().find(|r| r.role == Role::Source).unwrap();
        assert_eq!(record.outcome, Outcome::Refused(RefusalReason::StillHere));
        // The LAN learns where the host really is.
        assert!(transmitted(&mut a).iter().any(|e| e.eth_dst == MacAddr::BROADCAST
            && matches!(e.kind, EventKind::GratuitousRequest { ip: i, mac: m } if i == ip(1, 1) && m == mac(1, 1))));
    }

    /// b's withdrawal of its own claim on a1 (seq 3, after its claim at seq 2).
    fn withdrawal_by(claimant: &str) -> GndtEntry {
        let mut withdrawn = GndtEntry::host(ip(1, 1), site(claimant), 3, Some(mac(1, 1)));
        withdrawn.withdrawn = true;
        withdrawn
    }

    #[test]
    fn a_withdrawn_unconfirmed_claim_is_taken_back_frozen_by_the_old_site() {
        let now = Instant::now();
        let mut a = a_after_move(false, now);
        // a1 did not answer at a: let go.
        a.handle_timeout(now + Duration::from_secs(2));
        assert!(a.lan.verifying.is_empty() && !a.lndt().contains(ip(1, 1)));
        while a.poll_effect().is_some() {}
        // b never heard from a1 either and withdraws its own claim.
        let later = now + Duration::from_secs(3);
        from_peer(&mut a, "b", vec![withdrawal_by("b")], later);
        let entry = &a.gndt().get(Ipv4Network::from(ip(1, 1))).unwrap().entry;
        assert_eq!(
            (
                entry.site(),
                entry.version.seq,
                entry.frozen,
                entry.withdrawn,
                entry.mac
            ),
            (&site("a"), 4, true, false, Some(mac(1, 1)))
        );
        assert!(a.lndt().contains(ip(1, 1)));
        assert_eq!(a.frozen(later).len(), 1);
        let record = a.migrations().find(|r| r.role == Role::Source).unwrap();
        assert_eq!(record.outcome, Outcome::Refused(RefusalReason::Unconfirmed));
        // The take-back goes to every peer, in a's own name only.
        let sent = super::super::testing::advertised(&mut a);
        assert!(sent
            .iter()
            .any(|e| e.site() == &site("a") && e.version.seq == 4 && e.frozen));
        assert!(sent.iter().all(|e| e.site() == &site("a")));
    }

    #[test]
    fn only_the_claimant_withdrawing_its_own_claim_triggers_a_take_back() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        // A withdrawal in c's name of b's claim (a missed c's own claim) is no take-back at a:
        // it is not b withdrawing what it claimed. The merge makes it the current entry, so
        // the address falls back to a's prefix, and a holds it again as configured, unfrozen.
        let mut a = a_after_move(false, now);
        from_peer(&mut a, "c", vec![withdrawal_by("c")], later);
        assert!(a.lndt().contains(ip(1, 1)));
        assert!(a.frozen(later).is_empty());
        let entry = &a.gndt().get(Ipv4Network::from(ip(1, 1))).unwrap().entry;
        assert!(
            entry.withdrawn && entry.site() == &site("c"),
            "no take-back: {entry:?}"
        );
        // Past the departure memory, b's withdrawal only lets the address fall back to a's
        // prefix (a's host again as configured), with no take-back and no freeze.
        let mut a = a_after_move(false, now);
        let much_later = now + DEPARTURE_MEMORY + Duration::from_secs(1);
        a.handle_timeout(much_later);
        from_peer(&mut a, "b", vec![withdrawal_by("b")], much_later);
        assert!(a.lndt().contains(ip(1, 1)));
        assert!(a.frozen(much_later).is_empty());
        let entry = &a.gndt().get(Ipv4Network::from(ip(1, 1))).unwrap().entry;
        assert!(entry.withdrawn && entry.site() == &site("b"));
    }

    /// A VM back at a within a's still-here window (back_and_onward, moves 1 s apart): a
    /// takes it over as a plain move, and its reply to the takeover's probe is no refusal of
    /// the move away (which froze the VM and refused its next move).
    #[test]
    fn a_vm_back_within_the_still_here_window_is_taken_over_unfrozen() {
        let now = Instant::now();
        let mut a = a_after_move(false, now);
        assert!(!a.lan.verifying.is_empty());
        let back = now + super::super::DEFAULT_STILL_HERE_TIMEOUT / 2;
        let rarp = frames::rarp_announce(mac(1, 1));
        a.handle_lan_event(classify(&rarp).unwrap(), back);
        let reply =
            frames::proxy_arp_reply(mac(1, 1), ip(1, 1), mac(1, 0xfe), Ipv4Addr::UNSPECIFIED);
        a.handle_lan_event(classify(&reply).unwrap(), back);
        let entry = &a.gndt().get(Ipv4Network::from(ip(1, 1))).unwrap().entry;
        assert_eq!(
            (entry.site(), entry.version.seq, entry.frozen),
            (&site("a"), 3, false)
        );
        assert!(a.lndt().contains(ip(1, 1)));
        assert!(a.frozen(back).is_empty());
        assert_eq!(a.counters().get(Counter::RefusedStillHere), 0);
        assert_eq!(a.migrations().last().unwrap().role, Role::Destination);
        assert!(a
            .migrations()
            .all(|r| !matches!(r.outcome, Outcome::Refused(_))));
    }

    #[test]
    fn a_frozen_claim_from_a_site_that_never_held_the_host_is_checked_all_the_same() {
        let now = Instant::now();
        let a = a_after_move(true, now);
        // Not a take-back (b never held it): the mark would skip our still-here check, so it
        // is taken as a plain claim, checked.
        assert!(!a.lan.verifying.is_empty());
        assert!(a.frozen(now).is_empty());
        assert_eq!(a.counters().get(Counter::RefusedForgedFrozen), 1);
    }
}
