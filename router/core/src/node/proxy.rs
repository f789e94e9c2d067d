//! Proxy ARP: the router answers, with its own MAC, for addresses that live at another site
//! when the asker expects them on its link.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use skyvine_inject::wire as frames;
use skyvine_tables::MacAddr;

use super::counters::Counter;
use super::lan::LanIdentity;
use super::{Effect, Node};

impl Node {
    /// Answers `sender`'s request for `target` if `target` lives at another site and is one of:
    /// a host of our prefix that moved away; the old neighbour or gateway of a VM that migrated
    /// here; anything of the virtual network in routing-optimization mode.
    pub(super) fn answer_for_remote(
        &mut self,
        sender_ip: Ipv4Addr,
        sender_mac: MacAddr,
        target: Ipv4Addr,
        identity: LanIdentity,
    ) {
        if target == sender_ip || target == identity.ip || sender_ip.is_unspecified() {
            return;
        }
        match self.gndt.owner(target) {
            Some(owner) if owner != &self.config.me => {}
            _ => return,
        }
        let ours = self.config.prefixes.iter().any(|p| p.contains(target));
        let migrated_in = self.lndt.contains(sender_ip) && !self.lndt.is_configured(sender_ip);
        let same_home = migrated_in
            && self
                .gndt
                .covering(Ipv4Network::from(sender_ip))
                .is_some_and(|home| home.entry.prefix.contains(target));
        let optimize = self
            .config
            .virtual_network
            .is_some_and(|v| v.contains(target));
        if ours || same_home || optimize {
            self.counters.add(Counter::ProxyReplies);
            tracing::trace!(%target, asker = %sender_ip, "proxy ARP reply");
            self.effects.push_back(Effect::Transmit {
                frame: frames::proxy_arp_reply(identity.mac, target, sender_mac, sender_ip),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use skyvine_capture::wire::{classify, EventKind};
    use skyvine_inject::wire as frames;
    use skyvine_tables::GndtEntry;

    use super::super::testing::{from_peer, ip, lan_node, mac, site, transmitted};
    use super::super::NodeConfig;
    use super::*;

    fn answers(node: &mut Node, asker: (Ipv4Addr, MacAddr), target: Ipv4Addr) -> bool {
        while node.poll_effect().is_some() {}
        let frame = frames::arp_request(asker.1, asker.0, target);
        node.handle_lan_event(classify(&frame).unwrap(), Instant::now());
        transmitted(node).iter().any(|e| {
            matches!(e.kind, EventKind::Reply { sender_ip, sender_mac, target_mac, .. }
                if sender_ip == target && sender_mac == mac(1, 0xfe) && target_mac == asker.1)
        })
    }

    #[test]
    fn answers_for_a_host_of_ours_that_moved_away_and_nothing_else() {
        let now = Instant::now();
        let mut a = lan_node("a", 1, now);
        from_peer(
            &mut a,
            "b",
            vec![
                GndtEntry::site_prefix("10.77.2.0/24".parse().unwrap(), site("b"), 1),
                GndtEntry::host(ip(1, 1), site("b"), 2, Some(mac(1, 1))),
            ],
            now,
        );
        let neighbour = (ip(1, 2), mac(1, 2));
        assert!(answers(&mut a, neighbour, ip(1, 1)), "a1 moved to b");
        assert!(
            !answers(&mut a, neighbour, ip(1, 3)),
            "a1's neighbour is still here"
        );
        assert!(
            !answers(&mut a, neighbour, ip(2, 1)),
            "another subnet: the gateway routes"
        );
        assert!(!answers(&mut a, neighbour, ip(1, 254)), "our own address");
        assert!(
            !answers(&mut a, (ip(1, 1), mac(1, 1)), ip(1, 1)),
            "a host asking for itself"
        );
        assert!(
            !answers(&mut a, neighbour, "192.0.2.1".parse().unwrap()),
            "outside the network"
        );
        assert_eq!(a.counters().get(Counter::ProxyReplies), 1);
    }

    #[test]
    fn in_routing_optimization_mode_answers_for_every_other_site() {
        let now = Instant::now();
        let prefix = "10.77.1.0/24".parse().unwrap();
        let mut config = NodeConfig::new(site("a"), vec![prefix], vec![prefix], vec![site("b")]);
        config.lan = Some(LanIdentity {
            mac: mac(1, 0xfe),
            ip: ip(1, 254),
        });
        config.virtual_network = Some("10.77.0.0/16".parse().unwrap());
        let mut a = Node::new(config, now);
        from_peer(
            &mut a,
            "b",
            vec![GndtEntry::site_prefix(
                "10.77.2.0/24".parse().unwrap(),
                site("b"),
                1,
            )],
            now,
        );
        assert!(answers(&mut a, (ip(1, 2), mac(1, 2)), ip(2, 1)));
        assert!(!answers(&mut a, (ip(1, 2), mac(1, 2)), ip(1, 3)));
    }
}
