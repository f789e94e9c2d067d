//! Migration at the source: a host of ours is now owned by another site. The router repoints
//! its LAN's caches to itself (gratuitous ARP), then checks with probes at the MAC it knew that
//! the host really left: if it still answers here, the move was a duplicate or a hijack, and
//! the router takes the address back, frozen.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use skyvine_inject::wire as frames;
use skyvine_tables::{GndtEntry, MacAddr, SiteId};

use super::lan::spoken_for;
use super::prober::{Prober, Tick};
use super::records::{Detection, RefusalReason, Role, Start};
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
        self.lan.pending.retain(|_, p| p.ip() != Some(ip));
        let Some(identity) = self.lan.identity else {
            return;
        };
        // Repoint every LAN host's cache entry for the VM to us (request form: accepted at
        // once even within Linux's 1 s locktime), then make sure the VM is really gone.
        self.schedule_repeated(frames::gratuitous_arp_request(identity.mac, ip), now);
        if let (Some(mac), false) = (known_mac, entry.frozen) {
            let prober = Prober::new(ip, mac, self.lan.probe_timeout, now);
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

    /// The moved-away VM answered at this site: the move was a duplicate or a hijack. Take the
    /// address back with a newer version, and tell the LAN where the VM really is.
    fn still_here(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let Some(verify) = self.lan.verifying.remove(&ip) else {
            return;
        };
        let claimed_by = self.gndt.owner(ip).cloned();
        tracing::warn!(%ip, %mac, claimed_by = ?claimed_by.as_ref().map(SiteId::as_str), "host still answers here; refusing its move (duplicate or hijack)");
        self.finish_refused(verify.record, RefusalReason::StillHere);
        let seq = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map_or(1, |s| s.entry.version.seq + 1);
        self.lndt.add(ip, Some(mac), now);
        self.lan.damping.freeze(ip, now);
        let mut entry = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
        entry.frozen = true;
        self.originate(entry, now);
        if let Some(identity) = self.lan.identity {
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
        a.handle_timeout(now + Duration::from_millis(300));
        assert!(a.lan.verifying.is_empty(), "no answer: gone");
        a.handle_kernel_applied(now + Duration::from_millis(300));
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

    #[test]
    fn a_frozen_take_back_is_not_checked_again() {
        let now = Instant::now();
        let a = a_after_move(true, now);
        assert!(a.lan.verifying.is_empty());
    }
}
