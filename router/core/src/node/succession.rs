//! A site with two routers: the one that becomes active takes over from the other. Both are
//! the same site, so the peers' tables need nothing new; what differs is the MAC: the LAN's
//! caches, and the peers' binding of the site's gateway address, still name the predecessor's.
//!
//! The successor notices it from the network itself: a peer echoes our LAN address back to
//! us with another MAC (see [`Node::on_echo`]; our own binding, in our full table, replaces
//! the predecessor's at every peer, as an origin's last word does). It repoints the caches it
//! can know of: every VM that migrated into the site (each is looked for on the LAN as the
//! peers echo it, and its old neighbours and gateway repointed once it answers, as after its
//! migration) and, in routing-optimization mode, the LAN's entries for other sites' hosts.
//! The gateway address itself is the VRRP daemon's to announce.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use skyvine_inject::wire as frames;
use skyvine_tables::{EntryKind, LndtSource, MacAddr, SiteId};

use super::Node;

/// Most other sites' hosts one full table makes the successor announce on its LAN.
pub(super) const MAX_REPOINTED_PER_TABLE: usize = 4096;

impl Node {
    /// A peer echoed our LAN address with `mac`. Another MAC than ours means another router
    /// of this site was active before us: we succeed it (see the module doc).
    pub(super) fn on_echoed_lan_binding(&mut self, mac: Option<MacAddr>, now: Instant) {
        let Some(identity) = self.config.lan else {
            return;
        };
        let Some(predecessor) = mac.filter(|m| *m != identity.mac) else {
            return;
        };
        tracing::info!(ip = %identity.ip, mac = %identity.mac, %predecessor, "a peer holds another binding of our LAN address; our own replaces it");
        if !self.lan.succeeded {
            self.succeed(predecessor, now);
        }
    }

    /// A peer's full table arrived: fix the view of the migrated-in VMs whose home prefix it
    /// brought; after a succession, in routing-optimization mode, repoint the LAN's entries
    /// for that site's hosts.
    pub(super) fn after_full_table(&mut self, from: &SiteId, now: Instant) {
        let housed: Vec<(Ipv4Addr, MacAddr)> = self
            .lan
            .homeless
            .iter()
            .filter(|(ip, _)| self.gndt.covering(Ipv4Network::from(**ip)).is_some())
            .map(|(ip, mac)| (*ip, *mac))
            .collect();
        for (ip, mac) in housed {
            // Still here: a VM that left was dropped with its LNDT entry.
            self.lan.homeless.remove(&ip);
            self.fix_migrated_view(ip, mac, now);
        }
        if self.lan.succeeded {
            self.repoint_remote_hosts(Some(from), now);
        }
    }

    fn succeed(&mut self, predecessor: MacAddr, now: Instant) {
        self.lan.succeeded = true;
        let migrated_in: Vec<(Ipv4Addr, MacAddr)> = self
            .lndt
            .hosts()
            .filter(|h| h.source == LndtSource::MigratedIn)
            .filter_map(|h| Some((h.prefix.ip(), h.mac?)))
            .collect();
        tracing::info!(%predecessor, migrated_in = migrated_in.len(), "taking over from the site's other router: repointing the LAN's caches");
        for (ip, mac) in migrated_in {
            self.fix_migrated_view(ip, mac, now);
        }
        self.repoint_remote_hosts(None, now);
    }

    /// In routing-optimization mode, gratuitous ARPs (request form, from us) for the hosts of
    /// `site` (every other site with `None`) that the GNDT knows: the LAN's hosts that cached
    /// them with the predecessor's MAC repoint to ours; hosts that never cached them ignore it.
    fn repoint_remote_hosts(&mut self, site: Option<&SiteId>, now: Instant) {
        let (Some(identity), Some(vnet)) = (self.lan.identity, self.config.virtual_network) else {
            return;
        };
        let me = &self.config.me;
        let hosts: Vec<Ipv4Addr> = self
            .gndt
            .live_entries()
            .map(|s| &s.entry)
            .filter(|e| e.kind == EntryKind::Host && e.site() != me)
            .filter(|e| site.is_none_or(|s| e.site() == s))
            .map(|e| e.prefix.ip())
            .filter(|ip| vnet.contains(*ip))
            .take(MAX_REPOINTED_PER_TABLE)
            .collect();
        for ip in hosts {
            self.schedule_repeated(frames::gratuitous_arp_request(identity.mac, ip), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use skyvine_capture::wire::{classify, ArpEvent, EventKind};

    use super::super::testing::{
        certified, from_peer, ip, lan_node, lan_node_with, mac, sent, site, site_entries,
        transmitted,
    };
    use ipnetwork::Ipv4Network;
    use skyvine_tables::GndtEntry;

    use super::super::Effect;
    use super::*;
    use crate::proto::Message;

    /// Site a's standby (MAC ...:1:fd, the gateway address .254 like its predecessor ...:1:fe),
    /// in routing-optimization mode or not.
    fn standby(optimize: bool, now: Instant) -> Node {
        lan_node_with("a", 1, now, |config| {
            if let Some(lan) = config.lan.as_mut() {
                lan.mac = mac(1, 0xfd);
            }
            if optimize {
                config.virtual_network = Some("10.77.0.0/16".parse().unwrap());
            }
        })
    }

    /// Peer b connects to the standby: its own table (b1 migrated to site a, so b no longer
    /// advertises it), then the echo of site a as the predecessor left it at b.
    fn b_connects(a: &mut Node, predecessor_mac: MacAddr, now: Instant) {
        let own: Vec<GndtEntry> = site_entries("b", 2)
            .into_iter()
            .filter(|e| e.prefix.ip() != ip(2, 1))
            .collect();
        from_peer(a, "b", own, now);
        let count = 3;
        a.handle_message(&site("b"), Message::TableEnd { digest: 0, count }, now);
        let mut echoed = site_entries("a", 1);
        if let Some(gateway) = echoed.last_mut() {
            gateway.mac = Some(predecessor_mac);
        }
        echoed.push(GndtEntry::host(ip(2, 1), site("a"), 2, Some(mac(2, 1))));
        a.handle_message(&site("b"), Message::Echo { entries: echoed }, now);
    }

    /// b1, migrated in, answers the standby's probe.
    fn b1_answers(a: &mut Node, now: Instant) {
        let frame =
            frames::proxy_arp_reply(mac(2, 1), ip(2, 1), mac(1, 0xfd), Ipv4Addr::UNSPECIFIED);
        a.handle_lan_event(classify(&frame).unwrap(), now);
    }

    fn announces(frames: &[ArpEvent], to: MacAddr, about: Ipv4Addr, ours: MacAddr) -> bool {
        frames.iter().any(|e| {
            e.eth_dst == to
                && matches!(e.kind, EventKind::GratuitousRequest { ip, mac } if ip == about && mac == ours)
        })
    }

    #[test]
    fn a_successor_repoints_its_migrated_in_vms_and_the_lans_remote_entries() {
        let now = Instant::now();
        let ours = mac(1, 0xfd);
        let mut a = standby(true, now);
        b_connects(&mut a, mac(1, 0xfe), now);
        let frames = transmitted(&mut a);
        // The LAN learns that b's hosts are at our MAC (routing optimization).
        for remote in [ip(2, 2), ip(2, 254)] {
            assert!(
                announces(&frames, MacAddr::BROADCAST, remote, ours),
                "{remote}: {frames:?}"
            );
        }
        // b1 (migrated in) is looked for, and once it answers here learns that its old
        // gateway and neighbour are at our MAC.
        assert!(!a.lndt().contains(ip(2, 1)));
        b1_answers(&mut a, now);
        let frames = transmitted(&mut a);
        for old in [ip(2, 254), ip(2, 2)] {
            assert!(
                announces(&frames, mac(2, 1), old, ours),
                "{old}: {frames:?}"
            );
        }
        assert!(a.lndt().contains(ip(2, 1)));
    }

    /// The peers connect in any order: when c's echo of b1 comes before b's table, b1 is
    /// confirmed here while its home prefix is unknown; its old gateway is repointed once b's
    /// table brings the prefix.
    #[test]
    fn a_vm_confirmed_before_its_home_prefix_is_known_is_repointed_when_it_arrives() {
        let now = Instant::now();
        let ours = mac(1, 0xfd);
        let mut a = standby(false, now);
        from_peer(&mut a, "c", site_entries("c", 3), now);
        a.handle_message(
            &site("c"),
            Message::TableEnd {
                digest: 0,
                count: 4,
            },
            now,
        );
        let mut echoed = site_entries("a", 1);
        if let Some(gateway) = echoed.last_mut() {
            gateway.mac = Some(mac(1, 0xfe));
        }
        echoed.push(GndtEntry::host(ip(2, 1), site("a"), 2, Some(mac(2, 1))));
        a.handle_message(&site("c"), Message::Echo { entries: echoed }, now);
        b1_answers(&mut a, now);
        assert!(a.lndt().contains(ip(2, 1)));
        let frames = transmitted(&mut a);
        assert!(
            !announces(&frames, mac(2, 1), ip(2, 254), ours),
            "{frames:?}"
        );
        b_connects(&mut a, mac(1, 0xfe), now);
        let frames = transmitted(&mut a);
        for old in [ip(2, 254), ip(2, 2)] {
            assert!(
                announces(&frames, mac(2, 1), old, ours),
                "{old}: {frames:?}"
            );
        }
        // Once: a later table of b's repoints nothing more.
        a.handle_message(
            &site("b"),
            Message::TableEnd {
                digest: 0,
                count: 3,
            },
            now,
        );
        let frames = transmitted(&mut a);
        assert!(
            !announces(&frames, mac(2, 1), ip(2, 254), ours),
            "{frames:?}"
        );
    }

    /// The host claims the standby sends b (in `Entries`) for b1.
    fn claims_of_b1(a: &mut Node) -> Vec<GndtEntry> {
        sent(a)
            .into_iter()
            .filter(|(to, _)| *to == site("b"))
            .filter_map(|(_, m)| match m {
                Message::Entries { entries } => Some(entries),
                _ => None,
            })
            .flatten()
            .filter(|e| e.prefix.ip() == ip(2, 1))
            .collect()
    }

    #[test]
    fn an_echoed_claim_is_claimed_above_the_peers_number_or_withdrawn() {
        let now = Instant::now();
        // b1 answers: claimed above the number b holds (2), so it replaces b's entry.
        let mut a = standby(false, now);
        b_connects(&mut a, mac(1, 0xfe), now);
        b1_answers(&mut a, now);
        let claims = claims_of_b1(&mut a);
        assert!(
            claims.iter().any(|e| !e.withdrawn && e.version.seq == 3),
            "{claims:?}"
        );
        // b1 does not answer: our claim that b still holds is withdrawn at that number.
        let mut a = standby(false, now);
        b_connects(&mut a, mac(1, 0xfe), now);
        while a.poll_effect().is_some() {}
        a.handle_timeout(now + std::time::Duration::from_secs(30));
        let claims = claims_of_b1(&mut a);
        assert!(
            claims
                .iter()
                .any(|e| e.withdrawn && e.version.seq == 2 && e.site() == &site("a")),
            "{claims:?}"
        );
        assert!(!a.lndt().contains(ip(2, 1)));
    }

    #[test]
    fn a_router_whose_binding_comes_back_unchanged_repoints_nothing() {
        let now = Instant::now();
        // Our own MAC for the gateway: a restart, not a succession.
        let mut a = standby(true, now);
        b_connects(&mut a, mac(1, 0xfd), now);
        let frames = transmitted(&mut a);
        assert!(
            !frames
                .iter()
                .any(|e| matches!(e.kind, EventKind::GratuitousRequest { .. })),
            "{frames:?}"
        );
        // Without routing optimization a successor repoints its migrated-in VMs only.
        let mut a = standby(false, now);
        b_connects(&mut a, mac(1, 0xfe), now);
        b1_answers(&mut a, now);
        let frames = transmitted(&mut a);
        assert!(announces(&frames, mac(2, 1), ip(2, 254), mac(1, 0xfd)));
        assert!(!frames.iter().any(|e| e.eth_dst == MacAddr::BROADCAST));
    }

    #[test]
    fn the_standbys_binding_of_the_gateway_address_replaces_its_predecessors_at_peers() {
        // b holds the failed router's binding of the gateway address, at a high number or at
        // the same number as the standby's (both counted from 1).
        for seq in [4, 1] {
            standbys_binding_replaces_one_at(seq);
        }
    }

    fn standbys_binding_replaces_one_at(seq: u64) {
        let now = Instant::now();
        let gateway = ip(1, 254);
        let mut b = lan_node("b", 2, now);
        let old = GndtEntry::host(gateway, site("a"), seq, Some(mac(1, 0xfe)));
        from_peer(&mut b, "a", vec![old], now);
        b.handle_peer_down(&site("a"), now);
        // The standby's full table: its own binding, counting from 1.
        let mut a = standby(false, now);
        a.handle_peer_up(site("b"), certified("b"), now);
        b.handle_peer_up(site("a"), certified("a"), now);
        for effect in std::iter::from_fn(|| a.poll_effect()) {
            if let Effect::Send { to, message } = effect {
                if to == site("b") {
                    b.handle_message(&site("a"), message, now);
                }
            }
        }
        let stored = b.gndt().get(Ipv4Network::from(gateway)).unwrap();
        assert_eq!(stored.entry.mac, Some(mac(1, 0xfd)), "held at {seq}");
        // The echo of the old binding makes the standby succeed, and the gateway address
        // stays out of its LNDT: no host of ours.
        for effect in std::iter::from_fn(|| b.poll_effect()) {
            if let Effect::Send { to, message } = effect {
                if to == site("a") {
                    a.handle_message(&site("b"), message, now);
                }
            }
        }
        assert!(a.lan.succeeded);
        assert!(!a.lndt().contains(gateway), "{:?}", a.lndt());
    }
}
