//! Bindings seen on the LAN: every IP <-> MAC pair a frame shows goes to the HWDT; those of
//! our own hosts are advertised to every router (so a RARP elsewhere resolves without a query),
//! and a router asking by MAC gets our word only for hosts of ours.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use skyvine_tables::{BindingSource, GndtEntry, Learned, MacAddr};

use super::Node;

impl Node {
    /// `ip` was seen at `mac` on the LAN.
    pub(super) fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        if ip.is_unspecified() || mac.is_group() {
            return;
        }
        let learned = self.hwdt.learn(ip, mac, BindingSource::Lan, now);
        if let Learned::Changed { old_mac } = learned {
            tracing::debug!(%ip, %mac, %old_mac, "address now seen at another MAC on the LAN");
        }
        // Advertise bindings of our own hosts, so a RARP elsewhere resolves without a query.
        if !self.lndt.contains(ip) || self.gndt.owner(ip) != Some(&self.config.me) {
            return;
        }
        let current = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| s.entry.clone());
        let up_to_date = current
            .as_ref()
            .is_some_and(|e| !e.withdrawn && e.site() == &self.config.me && e.mac == Some(mac));
        if up_to_date {
            return;
        }
        let seq = current.map_or(1, |e| e.version.seq.saturating_add(1));
        let entry = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
        self.originate(entry, now);
    }

    /// Answers a query by MAC for a host of ours: an advertised binding of ours, or a binding
    /// seen on our LAN for a host in our LNDT. Nothing else is vouched for.
    pub(super) fn vouch_for(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        let me = &self.config.me;
        self.gndt
            .hosts_by_mac(mac)
            .find(|s| !s.entry.withdrawn && s.entry.site() == me)
            .map(|s| s.entry.prefix.ip())
            .or_else(|| {
                self.hwdt
                    .by_mac(mac)
                    .map(|b| b.ip)
                    .filter(|ip| self.lndt.contains(*ip) && self.gndt.owner(*ip) == Some(me))
            })
            .or_else(|| {
                // Echoed to us after a restart, for an address still ours by prefix.
                self.trust
                    .echoed(mac)
                    .filter(|ip| self.lndt.is_configured(*ip) && self.gndt.owner(*ip) == Some(me))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ipnetwork::Ipv4Network;
    use skyvine_capture::wire::classify;
    use skyvine_inject::wire as frames;
    use skyvine_tables::GndtEntry;

    use super::super::testing::{advertised, ip, lan_node, mac, site};
    use super::super::Effect;

    #[test]
    fn a_host_of_ours_is_advertised_once_per_binding() {
        let now = Instant::now();
        let mut a = lan_node("a", 1, now);
        a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
        while a.poll_effect().is_some() {}
        let hello = frames::arp_request(mac(1, 1), ip(1, 1), ip(1, 254));
        a.handle_lan_event(classify(&hello).unwrap(), now);
        let sent = advertised(&mut a);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].prefix, Ipv4Network::from(ip(1, 1)));
        assert_eq!(sent[0].mac, Some(mac(1, 1)));
        assert_eq!(sent[0].version.seq, 1);
        // The same binding again: nothing new. Another MAC: a newer version.
        a.handle_lan_event(classify(&hello).unwrap(), now);
        assert!(advertised(&mut a).is_empty());
        let other = frames::arp_request(mac(1, 9), ip(1, 1), ip(1, 254));
        a.handle_lan_event(classify(&other).unwrap(), now);
        let sent = advertised(&mut a);
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].mac, sent[0].version.seq), (Some(mac(1, 9)), 2));
    }

    #[test]
    fn bindings_of_hosts_not_ours_are_learned_but_not_advertised() {
        let now = Instant::now();
        let mut a = lan_node("a", 1, now);
        a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
        while a.poll_effect().is_some() {}
        // 10.77.1.50 is in a's prefix but not its LNDT; 10.77.2.1 is b's.
        for (host, m) in [(ip(1, 50), mac(1, 50)), (ip(2, 1), mac(2, 1))] {
            let frame = frames::arp_request(m, host, ip(1, 254));
            a.handle_lan_event(classify(&frame).unwrap(), now);
        }
        assert!(!std::iter::from_fn(|| a.poll_effect()).any(|e| matches!(e, Effect::Send { .. })));
        assert_eq!(a.hwdt().by_ip(ip(1, 50)).map(|b| b.mac), Some(mac(1, 50)));
        assert_eq!(a.vouch_for(mac(1, 50)), None, "not in the LNDT");
        assert_eq!(a.vouch_for(mac(2, 1)), None, "b's host");
    }

    #[test]
    fn only_hosts_of_ours_are_vouched_for() {
        let now = Instant::now();
        let mut a = lan_node("a", 1, now);
        // Seen on the LAN, in the LNDT: vouched for without an advertisement.
        let hello = frames::arp_request(mac(1, 2), ip(1, 2), ip(1, 254));
        a.handle_lan_event(classify(&hello).unwrap(), now);
        assert_eq!(a.vouch_for(mac(1, 2)), Some(ip(1, 2)));
        // Once the host moved to b, a no longer vouches for it.
        a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
        let moved = GndtEntry::host(ip(1, 2), site("b"), 2, Some(mac(1, 2)));
        a.handle_message(
            &site("b"),
            crate::proto::Message::Entries {
                entries: vec![moved],
            },
            now,
        );
        assert_eq!(a.vouch_for(mac(1, 2)), None);
    }
}
