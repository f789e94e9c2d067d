//! The reconcile's diff: the entries a desired state stands for, and the plan that takes the
//! applied entries there.

use std::collections::BTreeSet;

use ipnetwork::Ipv4Network;

use super::{host, normalize, Desired, Dev, Entry};

/// The entries `desired` stands for. A host both on the LAN and via TUN is routed on the LAN.
pub(super) fn desired_entries(desired: &Desired) -> BTreeSet<Entry> {
    let lan_routes: BTreeSet<Ipv4Network> = desired.lan_hosts.keys().map(|ip| host(*ip)).collect();
    let tun = desired
        .tun_routes
        .iter()
        .filter(|net| !lan_routes.contains(&normalize(**net)))
        .map(|net| Entry::Route {
            dst: normalize(*net),
            dev: Dev::Tun,
            mtu: desired.route_mtus.get(net).copied(),
        });
    let lan = lan_routes.iter().map(|dst| Entry::Route {
        dst: *dst,
        dev: Dev::Lan,
        mtu: None,
    });
    let neighbours = desired.lan_hosts.iter().filter_map(|(ip, mac)| {
        mac.map(|mac| Entry::Neighbour {
            ip: *ip,
            mac,
            dev: Dev::Lan,
        })
    });
    tun.chain(lan).chain(neighbours).collect()
}

/// The difference between desired and applied state.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) remove: Vec<Entry>,
    pub(super) add: Vec<Entry>,
}

impl Plan {
    /// Whether `entry` (being removed) is overwritten in place by an add: a MAC change is one
    /// `ip neigh replace`, an MTU change one `ip route replace`, never delete-then-add.
    pub(super) fn replaced(&self, entry: &Entry) -> bool {
        self.add.iter().any(|added| same_key(added, entry))
    }

    /// Whether `entry` (being added) overwrites one of ours that is being removed.
    pub(super) fn replaces(&self, entry: &Entry) -> bool {
        self.remove.iter().any(|removed| same_key(removed, entry))
    }
}

/// Whether two entries are for the same kernel key: a neighbour's address and device, a
/// route's destination and device (its MTU is a property of the route).
fn same_key(a: &Entry, b: &Entry) -> bool {
    match (a, b) {
        (Entry::Neighbour { ip, dev, .. }, Entry::Neighbour { ip: i, dev: d, .. }) => {
            ip == i && dev == d
        }
        (Entry::Route { dst, dev, .. }, Entry::Route { dst: t, dev: d, .. }) => {
            dst == t && dev == d
        }
        (Entry::Route { .. }, Entry::Neighbour { .. })
        | (Entry::Neighbour { .. }, Entry::Route { .. }) => false,
    }
}

/// Removes what is applied but not desired, adds what is desired but not applied. Adds put
/// neighbour entries before routes, so a host route never exists without its MAC.
pub(super) fn plan(desired: &BTreeSet<Entry>, applied: &BTreeSet<Entry>) -> Plan {
    let remove = applied.difference(desired).copied().collect();
    let (mut add, routes): (Vec<Entry>, Vec<Entry>) = desired
        .difference(applied)
        .copied()
        .partition(|entry| matches!(entry, Entry::Neighbour { .. }));
    add.extend(routes);
    Plan { remove, add }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kernel::tests::{ip, mac, neighbour, net, route};

    #[test]
    fn plan_adds_missing_removes_extra_and_keeps_the_rest() {
        let desired = BTreeSet::from([
            route("10.77.2.0/24", Dev::Tun),
            route("10.77.3.0/24", Dev::Tun),
            route("10.77.2.5/32", Dev::Lan),
            neighbour("10.77.2.5", "52:54:00:77:02:05"),
        ]);
        let applied = BTreeSet::from([
            route("10.77.2.0/24", Dev::Tun),
            route("10.77.9.0/24", Dev::Other(7)),
            route("10.77.3.0/24", Dev::Lan),
        ]);
        let plan = plan(&desired, &applied);
        assert_eq!(
            plan.remove,
            vec![
                route("10.77.3.0/24", Dev::Lan),
                route("10.77.9.0/24", Dev::Other(7))
            ]
        );
        // The neighbour entry goes in before its host route.
        assert_eq!(
            plan.add,
            vec![
                neighbour("10.77.2.5", "52:54:00:77:02:05"),
                route("10.77.2.5/32", Dev::Lan),
                route("10.77.3.0/24", Dev::Tun),
            ]
        );
        assert_eq!(super::plan(&desired, &desired), Plan::default());
    }

    #[test]
    fn a_mac_change_is_a_replace_not_a_delete() {
        let old = neighbour("10.77.2.5", "52:54:00:77:02:05");
        let new = neighbour("10.77.2.5", "52:54:00:77:02:06");
        let plan = plan(&BTreeSet::from([new]), &BTreeSet::from([old]));
        assert_eq!(
            (plan.remove.clone(), plan.add.clone()),
            (vec![old], vec![new])
        );
        assert!(plan.replaced(&old));
        let gone = plan_without(&old);
        assert!(!gone.replaced(&old));
    }

    #[test]
    fn an_mtu_change_replaces_the_route_in_place() {
        let desired = Desired {
            tun_routes: BTreeSet::from([net("10.77.3.0/24"), net("10.77.2.0/24")]),
            route_mtus: BTreeMap::from([(net("10.77.3.0/24"), 1323)]),
            ..Desired::default()
        };
        let relayed = Entry::Route {
            dst: net("10.77.3.0/24"),
            dev: Dev::Tun,
            mtu: Some(1323),
        };
        let wanted = desired_entries(&desired);
        assert_eq!(
            wanted,
            BTreeSet::from([route("10.77.2.0/24", Dev::Tun), relayed])
        );
        let old = route("10.77.3.0/24", Dev::Tun);
        let plan = plan(
            &wanted,
            &BTreeSet::from([old, route("10.77.2.0/24", Dev::Tun)]),
        );
        assert_eq!(
            (plan.remove.clone(), plan.add.clone()),
            (vec![old], vec![relayed])
        );
        assert!(plan.replaced(&old));
        assert!(plan.replaces(&relayed));
        assert!(!plan_without(&old).replaced(&old));
    }

    fn plan_without(entry: &Entry) -> Plan {
        plan(&BTreeSet::new(), &BTreeSet::from([*entry]))
    }

    #[test]
    fn lan_host_wins_over_the_same_host_via_tun_and_prefixes_are_normalized() {
        let desired = Desired {
            tun_routes: BTreeSet::from([net("10.77.2.9/24"), net("10.77.1.5/32")]),
            lan_hosts: BTreeMap::from([
                (ip("10.77.1.5"), Some(mac("52:54:00:77:01:05"))),
                (ip("10.77.2.7"), None),
            ]),
            route_mtus: BTreeMap::new(),
        };
        assert_eq!(
            desired_entries(&desired),
            BTreeSet::from([
                route("10.77.2.0/24", Dev::Tun),
                route("10.77.1.5/32", Dev::Lan),
                route("10.77.2.7/32", Dev::Lan),
                neighbour("10.77.1.5", "52:54:00:77:01:05"),
            ])
        );
    }
}
