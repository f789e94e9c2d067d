//! What the kernel must hold, as precise changes: every GNDT change is turned into at most one
//! targeted change per prefix ([`KernelOp`]), so that a move costs one route request and one
//! neighbour request, never a dump of the kernel's tables. The core keeps its own view of what
//! it asked for; the daemon still reconciles the kernel in full from time to time (after a
//! restart, after a failed request, and on a timer), against [`Node::tun_routes`] and
//! [`Node::lan_hosts`], off the critical path of any move.

use ipnetwork::Ipv4Network;
use skyvine_tables::{EntryKind, MacAddr};

use super::{Effect, Node};

/// Where the kernel routes one prefix for this router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelRoute {
    /// Into the TUN device: the prefix lives at another site.
    Tun,
    /// On the LAN: a VM that migrated in, with a permanent neighbour entry for its MAC when
    /// known.
    Lan { mac: Option<MacAddr> },
}

/// One targeted change to the kernel's routes and neighbour entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelOp {
    /// Route `dst` as `route`; `previous` is what this router had asked for it before (none:
    /// a new route; some: replace it in place, and drop a neighbour entry it no longer needs).
    Set {
        dst: Ipv4Network,
        route: KernelRoute,
        previous: Option<KernelRoute>,
    },
    /// `dst` needs no route of ours any more (nor its neighbour entry).
    Remove {
        dst: Ipv4Network,
        previous: KernelRoute,
    },
}

impl KernelOp {
    /// The prefix it changes.
    pub fn dst(&self) -> Ipv4Network {
        match self {
            KernelOp::Set { dst, .. } | KernelOp::Remove { dst, .. } => *dst,
        }
    }
}

impl Node {
    /// The GNDT entry for `prefix` changed: emits the kernel changes it calls for, for it and,
    /// for a prefix shorter than /32, for the hosts inside it (whether a host entry says more
    /// than its covering prefix depends on that prefix).
    pub(super) fn sync_kernel(&mut self, prefix: Ipv4Network) {
        self.sync_kernel_one(prefix);
        if prefix.prefix() < 32 {
            let hosts: Vec<Ipv4Network> = self
                .gndt
                .hosts_within(prefix)
                .map(|stored| stored.entry.prefix)
                .collect();
            for host in hosts {
                self.sync_kernel_one(host);
            }
        }
    }

    fn sync_kernel_one(&mut self, prefix: Ipv4Network) {
        let wanted = self.wanted_route(prefix);
        let previous = self.kernel.get(&prefix).copied();
        if wanted == previous {
            return;
        }
        let op = match (wanted, previous) {
            (Some(route), previous) => {
                self.kernel.insert(prefix, route);
                KernelOp::Set {
                    dst: prefix,
                    route,
                    previous,
                }
            }
            (None, Some(previous)) => {
                self.kernel.remove(&prefix);
                KernelOp::Remove {
                    dst: prefix,
                    previous,
                }
            }
            (None, None) => return,
        };
        self.effects.push_back(Effect::Kernel(op));
    }

    /// What the kernel should hold for `prefix`: the same rule as [`Node::tun_routes`] and
    /// [`Node::lan_hosts`], for one prefix.
    fn wanted_route(&self, prefix: Ipv4Network) -> Option<KernelRoute> {
        let stored = self.gndt.get(prefix).filter(|s| !s.entry.withdrawn)?;
        if self.agrees_with_cover(stored) {
            return None;
        }
        let entry = &stored.entry;
        if entry.site() != &self.config.me {
            Some(KernelRoute::Tun)
        } else if entry.kind == EntryKind::Host {
            Some(KernelRoute::Lan { mac: entry.mac })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use skyvine_tables::GndtEntry;

    use super::super::testing::{from_peer, ip, lan_node, mac, site, site_entries};
    use super::*;

    fn kernel_ops(node: &mut Node) -> Vec<KernelOp> {
        std::iter::from_fn(|| node.poll_effect())
            .filter_map(|e| match e {
                Effect::Kernel(op) => Some(op),
                _ => None,
            })
            .collect()
    }

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn a_move_is_one_targeted_change_per_router() {
        let now = Instant::now();
        let mut b = lan_node("b", 2, now);
        from_peer(&mut b, "a", site_entries("a", 1), now);
        // a's prefix into the TUN; a's bindings agree with it: nothing more.
        assert_eq!(
            kernel_ops(&mut b),
            [KernelOp::Set {
                dst: net("10.77.1.0/24"),
                route: KernelRoute::Tun,
                previous: None
            }]
        );
        // a1 moves to c: one /32 into the TUN.
        let to_c = GndtEntry::host(ip(1, 1), site("c"), 2, Some(mac(1, 1)));
        from_peer(&mut b, "c", vec![to_c], now);
        let host = Ipv4Network::from(ip(1, 1));
        assert_eq!(
            kernel_ops(&mut b),
            [KernelOp::Set {
                dst: host,
                route: KernelRoute::Tun,
                previous: None
            }]
        );
        // Then from c to b: the same /32 replaced in place, onto the LAN with its MAC.
        let rarp = skyvine_inject::wire::rarp_announce(mac(1, 1));
        b.handle_lan_event(skyvine_capture::wire::classify(&rarp).unwrap(), now);
        let lan = KernelRoute::Lan {
            mac: Some(mac(1, 1)),
        };
        assert_eq!(
            kernel_ops(&mut b),
            [KernelOp::Set {
                dst: host,
                route: lan,
                previous: Some(KernelRoute::Tun)
            }]
        );
        assert_eq!(b.lan_hosts().get(&ip(1, 1)), Some(&Some(mac(1, 1))));
        // Back home to a: the /32 goes, a's prefix covers it again.
        let home = GndtEntry::host(ip(1, 1), site("a"), 4, Some(mac(1, 1)));
        from_peer(&mut b, "a", vec![home], now);
        assert_eq!(
            kernel_ops(&mut b),
            [KernelOp::Remove {
                dst: host,
                previous: lan
            }]
        );
        assert!(b.tun_routes().iter().all(|r| r.prefix() < 32));
    }

    #[test]
    fn a_changed_prefix_rechecks_the_hosts_inside_it() {
        let now = Instant::now();
        let mut b = lan_node("b", 2, now);
        // a1's binding arrives before a's prefix: a /32 into the TUN (no cover yet) ...
        let binding = GndtEntry::host(ip(1, 1), site("a"), 1, Some(mac(1, 1)));
        from_peer(&mut b, "a", vec![binding], now);
        let host = Ipv4Network::from(ip(1, 1));
        assert!(kernel_ops(&mut b).contains(&KernelOp::Set {
            dst: host,
            route: KernelRoute::Tun,
            previous: None
        }));
        // ... which the prefix makes redundant.
        let prefix = GndtEntry::site_prefix(net("10.77.1.0/24"), site("a"), 1);
        from_peer(&mut b, "a", vec![prefix], now);
        let ops = kernel_ops(&mut b);
        assert!(ops.contains(&KernelOp::Remove {
            dst: host,
            previous: KernelRoute::Tun
        }));
        assert_eq!(b.tun_routes(), [net("10.77.1.0/24")].into());
    }
}
