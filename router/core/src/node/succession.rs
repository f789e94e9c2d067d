//! A site with two routers: the one that becomes active takes over from the other. Both are
//! the same site, so the peers' tables need nothing new; what differs is the MAC: the LAN's
//! caches, and the peers' binding of the site's gateway address, still name the predecessor's.
//!
//! The successor notices it from the network itself (the peers hold a binding of our LAN
//! address with another MAC), re-advertises its own binding, newer, and repoints the caches it
//! can know of: every VM that migrated into the site (for its old neighbours and gateway, as
//! after its migration) and, in routing-optimization mode, the LAN's entries for other sites'
//! hosts. The gateway address itself is the VRRP daemon's to announce.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use skyvine_inject::wire as frames;
use skyvine_tables::{EntryKind, GndtEntry, LndtSource, MacAddr, SiteId};

use super::Node;

/// Most other sites' hosts one full table makes the successor announce on its LAN.
pub(super) const MAX_REPOINTED_PER_TABLE: usize = 4096;

impl Node {
    /// Our own LAN binding, re-originated newer when the network holds another version of it:
    /// withdrawn, or with another MAC. When the other version is ours with another MAC, another
    /// router of this site was active before us: we succeed it (see the module doc).
    pub(super) fn reassert_lan_identity(&mut self, now: Instant) -> Option<GndtEntry> {
        let identity = self.config.lan?;
        let me = self.config.me.clone();
        let current = self
            .gndt
            .get(Ipv4Network::from(identity.ip))
            .map(|s| s.entry.clone());
        let ours = |e: &GndtEntry| !e.withdrawn && e.site() == &me && e.kind == EntryKind::Host;
        if current
            .as_ref()
            .is_some_and(|e| ours(e) && e.mac == Some(identity.mac))
        {
            return None;
        }
        let seq = current
            .as_ref()
            .map_or(1, |e| e.version.seq.saturating_add(1));
        tracing::info!(ip = %identity.ip, mac = %identity.mac, seq, "the network holds another binding of our LAN address; re-advertising ours");
        let predecessor = current.filter(ours).and_then(|e| e.mac);
        if let (Some(predecessor), false) = (predecessor, self.lan.succeeded) {
            self.succeed(predecessor, now);
        }
        Some(GndtEntry::host(identity.ip, me, seq, Some(identity.mac)))
    }

    /// A host of ours came back from the network: after a succession, repoint its caches.
    pub(super) fn after_adopting(&mut self, ip: Ipv4Addr, mac: Option<MacAddr>, now: Instant) {
        if let (true, Some(mac)) = (self.lan.succeeded, mac) {
            if !self.lndt.is_configured(ip) {
                self.fix_migrated_view(ip, mac, now);
            }
        }
    }

    /// A peer's full table arrived: after a succession, in routing-optimization mode, repoint
    /// the LAN's entries for that site's hosts.
    pub(super) fn after_full_table(&mut self, from: &SiteId, now: Instant) {
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

    use skyvine_capture::wire::{ArpEvent, EventKind};

    use super::super::testing::{
        from_peer, ip, lan_node_with, mac, site, site_entries, transmitted,
    };
    use super::super::{Effect, LanIdentity, NodeConfig};
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

    /// What peer b's full table tells the standby: site a as its predecessor left it (b1
    /// migrated in), and site b.
    fn b_table(predecessor_mac: MacAddr) -> Vec<GndtEntry> {
        let mut entries = site_entries("a", 1);
        if let Some(gateway) = entries.last_mut() {
            gateway.mac = Some(predecessor_mac);
        }
        entries.push(GndtEntry::host(ip(2, 1), site("a"), 2, Some(mac(2, 1))));
        entries.extend(site_entries("b", 2));
        entries
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
        from_peer(&mut a, "b", b_table(mac(1, 0xfe)), now);
        let digest = a.gndt().digest();
        a.handle_message(&site("b"), Message::TableEnd { digest, count: 9 }, now);
        let frames = transmitted(&mut a);
        // b1 (migrated in) learns that its old gateway and neighbour are at our MAC ...
        for old in [ip(2, 254), ip(2, 2)] {
            assert!(
                announces(&frames, mac(2, 1), old, ours),
                "{old}: {frames:?}"
            );
        }
        // ... and the LAN that b's hosts are at our MAC (routing optimization).
        for remote in [ip(2, 2), ip(2, 254)] {
            assert!(
                announces(&frames, MacAddr::BROADCAST, remote, ours),
                "{remote}: {frames:?}"
            );
        }
        assert!(a.lndt().contains(ip(2, 1)));
    }

    #[test]
    fn a_router_whose_binding_comes_back_unchanged_repoints_nothing() {
        let now = Instant::now();
        // The same table, with our own MAC for the gateway: a restart, not a succession.
        let mut a = standby(true, now);
        from_peer(&mut a, "b", b_table(mac(1, 0xfd)), now);
        let digest = a.gndt().digest();
        a.handle_message(&site("b"), Message::TableEnd { digest, count: 9 }, now);
        let frames = transmitted(&mut a);
        assert!(
            !frames
                .iter()
                .any(|e| matches!(e.kind, EventKind::GratuitousRequest { .. })),
            "{frames:?}"
        );
        // Without routing optimization a successor repoints its migrated-in VMs only.
        let mut a = standby(false, now);
        from_peer(&mut a, "b", b_table(mac(1, 0xfe)), now);
        let frames = transmitted(&mut a);
        assert!(announces(&frames, mac(2, 1), ip(2, 254), mac(1, 0xfd)));
        assert!(!frames.iter().any(|e| e.eth_dst == MacAddr::BROADCAST));
    }

    #[test]
    fn a_standby_taking_over_the_gateway_address_re_advertises_its_own_mac() {
        let now = Instant::now();
        let gateway: Ipv4Addr = "10.77.1.254".parse().unwrap();
        let standby_mac = MacAddr([0x52, 0x54, 0, 0x77, 1, 0xfd]);
        let mut config = NodeConfig::new(
            site("a"),
            vec!["10.77.1.0/24".parse().unwrap()],
            vec!["10.77.1.1/32".parse().unwrap()],
            vec![site("b")],
        );
        config.lan = Some(LanIdentity {
            mac: standby_mac,
            ip: gateway,
        });
        let mut a = Node::new(config, now);
        a.handle_peer_up(site("b"), now);
        while a.poll_effect().is_some() {}
        // b still holds the failed router's binding of the same address, newer.
        let old_mac = MacAddr([0x52, 0x54, 0, 0x77, 1, 0xfe]);
        let old = GndtEntry::host(gateway, site("a"), 4, Some(old_mac));
        a.handle_message(&site("b"), Message::Entries { entries: vec![old] }, now);
        let stored = a
            .gndt()
            .get(Ipv4Network::from(gateway))
            .unwrap()
            .entry
            .clone();
        assert_eq!((stored.mac, stored.version.seq), (Some(standby_mac), 5));
        let sent_fix = std::iter::from_fn(|| a.poll_effect()).any(|e| {
            matches!(e, Effect::Send { message: Message::Entries { entries }, .. }
                if entries.iter().any(|x| x.prefix.ip() == gateway && x.mac == Some(standby_mac) && x.version.seq == 5))
        });
        assert!(sent_fix);
        // Not a host of ours: the gateway address stays out of the LNDT.
        assert!(!a.lndt().contains(gateway), "{:?}", a.lndt());
        // Our own binding coming back unchanged calls for nothing.
        let ours = stored;
        a.handle_message(
            &site("b"),
            Message::Entries {
                entries: vec![ours],
            },
            now,
        );
        assert!(std::iter::from_fn(|| a.poll_effect()).next().is_none());
    }
}
