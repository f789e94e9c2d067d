use std::time::Instant;

use skyvine_tables::GndtEntry;

use super::*;
use crate::node::NodeConfig;
use crate::proto::Message;

fn site(s: &str) -> SiteId {
    SiteId::new(s).unwrap()
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

/// Router `me` carrying networks 1 ("blue") and 2 ("red"), both with the same prefix
/// 10.77.N.0/24 (overlapping on purpose); its peers are the other of a, b.
fn router(me: &str, n: u8, now: Instant) -> Networks {
    let peer = if me == "a" { "b" } else { "a" };
    let networks = [(1, "blue"), (2, "red")]
        .into_iter()
        .map(|(id, name)| {
            let prefix = net(&format!("10.77.{n}.0/24"));
            let config = NodeConfig::new(site(me), vec![prefix], vec![prefix], vec![site(peer)]);
            NetworkNode {
                id,
                name: name.into(),
                node: Node::new(config, now),
            }
        })
        .collect();
    Networks::new(networks)
}

fn certified(n: u8, networks: &[NetworkId]) -> Vec<CertifiedPrefix> {
    networks
        .iter()
        .map(|&network| CertifiedPrefix {
            network,
            prefix: net(&format!("10.77.{n}.0/24")),
        })
        .collect()
}

fn entries(owner: &str, prefix: &str) -> Message {
    Message::Entries {
        entries: vec![GndtEntry::site_prefix(net(prefix), site(owner), 1)],
    }
}

#[test]
fn the_old_and_new_certified_prefix_forms_parse_and_print() {
    let old = CertifiedPrefix::parse("10.77.1.0/24").unwrap();
    assert_eq!(old.network, DEFAULT_NETWORK);
    assert_eq!(old.to_string(), "10.77.1.0/24");
    let new = CertifiedPrefix::parse("2:10.77.1.0/24").unwrap();
    assert_eq!((new.network, new.prefix), (2, net("10.77.1.0/24")));
    assert_eq!(new.to_string(), "2:10.77.1.0/24");
    for bad in [
        "x:10.77.1.0/24",
        "70000:10.77.1.0/24",
        "2:10.77.1.0/33",
        "2:",
    ] {
        assert!(CertifiedPrefix::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_peer_shares_only_networks_in_its_hello_and_its_certificate() {
    let now = Instant::now();
    let mut a = router("a", 1, now);
    // b says it carries 1, 2 and 9, but its certificate certifies nothing in 2.
    let shared = a.handle_link_up(
        &site("b"),
        &PeerPath::Direct,
        &[1, 2, 9],
        &certified(2, &[1]),
        now,
    );
    assert!(shared.contains(1));
    assert!(!shared.contains(2));
    assert!(!shared.contains(9));
    assert!(a.get(1).unwrap().node.peers()[&site("b")].connected);
    assert!(!a.get(2).unwrap().node.peers()[&site("b")].connected);
}

#[test]
fn a_frame_for_a_network_the_peer_does_not_share_is_dropped_and_counted() {
    let now = Instant::now();
    let mut a = router("a", 1, now);
    a.handle_link_up(
        &site("b"),
        &PeerPath::Direct,
        &[1, 2],
        &certified(2, &[1]),
        now,
    );
    let before = (a_gndt_len(&a, 1), a_gndt_len(&a, 2));

    // Network 2: a carries it, b is not part of it here (its certificate says so).
    let frame = Frame::new(2, entries("b", "10.77.2.0/24"));
    assert_eq!(
        a.handle_frame(&site("b"), frame, now),
        Err(Unshared::NotMember)
    );
    // Network 7: a does not carry it at all.
    let frame = Frame::new(7, entries("b", "10.77.2.0/24"));
    assert_eq!(
        a.handle_frame(&site("b"), frame, now),
        Err(Unshared::UnknownNetwork)
    );
    assert_eq!(a.dropped().get(&(2, Unshared::NotMember)), Some(&1));
    assert_eq!(a.dropped().get(&(7, Unshared::UnknownNetwork)), Some(&1));
    assert_eq!(
        a_gndt_len(&a, 2),
        before.1,
        "network 2's tables are untouched"
    );

    // Network 1, which b shares: the prefix is installed there, and only there.
    let frame = Frame::new(1, entries("b", "10.77.2.0/24"));
    assert_eq!(a.handle_frame(&site("b"), frame, now), Ok(()));
    assert_eq!(a_gndt_len(&a, 1), before.0 + 1);
    assert_eq!(a_gndt_len(&a, 2), before.1);
}

fn a_gndt_len(networks: &Networks, id: NetworkId) -> usize {
    networks.get(id).unwrap().node.gndt().len()
}

#[test]
fn after_the_link_goes_down_nothing_is_shared_any_more() {
    let now = Instant::now();
    let mut a = router("a", 1, now);
    a.handle_link_up(
        &site("b"),
        &PeerPath::Direct,
        &[1, 2],
        &certified(2, &[1, 2]),
        now,
    );
    assert!(a.shared_with(&site("b")).contains(2));
    a.handle_peer_down(&site("b"), now);
    assert!(a.shared_with(&site("b")).is_empty());
    let frame = Frame::new(1, entries("b", "10.77.2.0/24"));
    assert_eq!(
        a.handle_frame(&site("b"), frame, now),
        Err(Unshared::NotMember)
    );
    assert!(!a.get(2).unwrap().node.peers()[&site("b")].connected);
}

#[test]
fn effects_come_tagged_with_their_network() {
    let now = Instant::now();
    let mut a = router("a", 1, now);
    while a.poll_effect().is_some() {}
    a.handle_link_up(
        &site("b"),
        &PeerPath::Direct,
        &[2],
        &certified(2, &[2]),
        now,
    );
    let mut sends = Vec::new();
    while let Some((network, effect)) = a.poll_effect() {
        if let Effect::Send { to, .. } = effect {
            sends.push((network, to));
        }
    }
    assert!(!sends.is_empty());
    assert!(
        sends
            .iter()
            .all(|(network, to)| *network == 2 && to == &site("b")),
        "{sends:?}"
    );
}
