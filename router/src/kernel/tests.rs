use super::*;

/// Root only: a real kernel in a throw-away network namespace.
mod netns;

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn route(dst: &str, dev: Dev) -> Entry {
    Entry::Route {
        dst: net(dst),
        dev,
        mtu: None,
    }
}

fn neighbour(addr: &str, lladdr: &str) -> Entry {
    Entry::Neighbour {
        ip: ip(addr),
        mac: mac(lladdr),
        dev: Dev::Lan,
    }
}

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

const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

fn plan_without(entry: &Entry) -> Plan {
    plan(&BTreeSet::new(), &BTreeSet::from([*entry]))
}

#[test]
fn only_main_table_unicast_ipv4_routes_with_our_protocol_are_ours() {
    let ours = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip("10.77.2.0"), 24)
        .output_interface(4)
        .protocol(RouteProtocol::from(RTPROT_SKYVINE))
        .build();
    assert_eq!(our_route(&ours, MAIN), Some((net("10.77.2.0/24"), 4, None)));
    let mut with_mtu = ours.clone();
    with_mtu
        .attributes
        .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(1323)]));
    assert_eq!(
        our_route(&with_mtu, MAIN),
        Some((net("10.77.2.0/24"), 4, Some(1323)))
    );

    let mut static_route = ours.clone();
    static_route.header.protocol = RouteProtocol::Static;
    assert_eq!(our_route(&static_route, MAIN), None);

    let mut other_table = ours.clone();
    other_table.attributes.push(RouteAttribute::Table(1000));
    assert_eq!(our_route(&other_table, MAIN), None);
    // A network's VRF table: its routes are ours there, and the main table's are not.
    assert_eq!(
        our_route(&other_table, 1000),
        Some((net("10.77.2.0/24"), 4, None))
    );
    assert_eq!(our_route(&ours, 1000), None);

    let default_route = RouteMessageBuilder::<Ipv4Addr>::new()
        .protocol(RouteProtocol::from(RTPROT_SKYVINE))
        .build();
    assert_eq!(
        our_route(&default_route, MAIN),
        Some((net("0.0.0.0/0"), 0, None))
    );
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

#[test]
fn forwarding_flag_is_readable() {
    let expected = std::fs::read_to_string(IP_FORWARD).unwrap().trim() == "1";
    assert_eq!(check_forwarding().unwrap(), expected);
}
