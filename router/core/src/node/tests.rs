use super::*;

fn site(s: &str) -> SiteId {
    SiteId::new(s).unwrap()
}

fn node(me: &str, prefix: &str, peers: &[&str], now: Instant) -> Node {
    let prefix: Ipv4Network = prefix.parse().unwrap();
    Node::new(
        NodeConfig::new(
            site(me),
            vec![prefix],
            vec![prefix],
            peers.iter().map(|p| site(p)).collect(),
        ),
        now,
    )
}

/// Delivers every queued message between the nodes until nothing moves.
fn settle(nodes: &mut [Node], now: Instant) {
    loop {
        let mut moved = false;
        for i in 0..nodes.len() {
            while let Some(effect) = nodes[i].poll_effect() {
                if let Effect::Send { to, message } = effect {
                    let from = nodes[i].me().clone();
                    if let Some(target) = nodes.iter_mut().find(|n| n.me() == &to) {
                        target.handle_message(&from, message, now);
                        moved = true;
                    }
                }
            }
        }
        if !moved {
            break;
        }
    }
}

#[test]
fn peers_learn_each_others_prefixes_and_route_them_into_the_tun() {
    let now = Instant::now();
    let mut nodes = vec![
        node("a", "10.77.1.0/24", &["b"], now),
        node("b", "10.77.2.0/24", &["a"], now),
    ];
    nodes[0].handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
    nodes[1].handle_peer_up(site("a"), crate::node::testing::certified("a"), now);
    settle(&mut nodes, now);
    let routes: Vec<String> = nodes[0]
        .tun_routes()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(routes, vec!["10.77.2.0/24"]);
    assert_eq!(nodes[1].gndt().digest(), nodes[0].gndt().digest());
    assert!(nodes[0].peers()[&site("b")].synced);
}

#[test]
fn a_moved_host_leaves_the_lndt_and_gets_a_tun_route() {
    let now = Instant::now();
    let mut a = node("a", "10.77.1.0/24", &["b"], now);
    a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
    let vm: Ipv4Addr = "10.77.1.2".parse().unwrap();
    assert!(a.lndt().contains(vm));
    a.handle_message(
        &site("b"),
        Message::Entries {
            entries: vec![GndtEntry::host(vm, site("b"), 1, None)],
        },
        now,
    );
    assert!(!a.lndt().contains(vm));
    assert!(a.tun_routes().contains(&Ipv4Network::from(vm)));
    assert!(a.lan_hosts().is_empty());
}

#[test]
fn a_restarted_peer_is_believed_about_its_own_entries_and_nothing_else() {
    let now = Instant::now();
    let mut a = node("a", "10.77.1.0/24", &["b"], now);
    let certified = crate::node::testing::certified("b");
    a.handle_peer_up(site("b"), certified.clone(), now);
    let prefix: Ipv4Network = "10.77.2.0/24".parse().unwrap();
    // One of our VMs that had migrated to b, and one of b's own.
    let old_host = GndtEntry::host("10.77.1.9".parse().unwrap(), site("b"), 4, None);
    let home_host = GndtEntry::host("10.77.2.9".parse().unwrap(), site("b"), 4, None);
    let entries = vec![
        GndtEntry::site_prefix(prefix, site("b"), 7),
        old_host.clone(),
        home_host.clone(),
    ];
    a.handle_message(&site("b"), Message::Entries { entries }, now);
    a.handle_message(
        &site("b"),
        Message::TableEnd {
            digest: 0,
            count: 2,
        },
        now,
    );
    // b restarts: it counts from 1 again and no longer has the host.
    a.handle_peer_down(&site("b"), now);
    a.handle_peer_up(site("b"), certified, now);
    // Our own full table goes out, with nothing of b's in it.
    let sent: Vec<GndtEntry> = std::iter::from_fn(|| a.poll_effect())
        .filter_map(|e| match e {
            Effect::Send {
                message: Message::Entries { entries },
                ..
            } => Some(entries),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|e| e.site() == &site("a")), "{sent:?}");
    let fresh = vec![GndtEntry::site_prefix(prefix, site("b"), 1)];
    a.handle_message(&site("b"), Message::Entries { entries: fresh }, now);
    a.handle_message(
        &site("b"),
        Message::TableEnd {
            digest: 0,
            count: 1,
        },
        now,
    );
    let stored = a.gndt().get(prefix).unwrap();
    assert_eq!(stored.entry.version.seq, 1);
    // Both host bindings stay until b speaks about them again: b's own host, and our VM that
    // had migrated to b (b looks for it on its LAN as we echo it).
    assert!(a.gndt().get(home_host.prefix).is_some());
    let held = a.gndt().get(old_host.prefix).map(|s| s.entry.clone());
    assert_eq!(held.as_ref().map(GndtEntry::site), Some(&site("b")));
    // The VM did not answer at b: b withdraws its claim at the number we hold, and the address
    // is no longer b's.
    let mut withdrawal = old_host.clone();
    withdrawal.withdrawn = true;
    let entries = vec![withdrawal];
    a.handle_message(&site("b"), Message::Entries { entries }, now);
    let stored = a.gndt().get(old_host.prefix).map(|s| s.entry.clone());
    assert!(
        stored
            .as_ref()
            .is_none_or(|e| e.withdrawn || e.site() != &site("b")),
        "{stored:?}"
    );
}

#[test]
fn a_full_table_that_never_ended_is_asked_for_again() {
    let now = Instant::now();
    let mut a = node("a", "10.77.1.0/24", &["b"], now);
    a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
    while a.poll_effect().is_some() {}
    // b's entries arrive, its TableEnd is lost: a cannot compare digests with b.
    let entries = vec![GndtEntry::site_prefix(
        "10.77.2.0/24".parse().unwrap(),
        site("b"),
        1,
    )];
    a.handle_message(&site("b"), Message::Entries { entries }, now);
    while a.poll_effect().is_some() {}
    let due = a.poll_timeout().unwrap();
    assert_eq!(due, now + DIGEST_INTERVAL);
    a.handle_timeout(due);
    let asked: Vec<Effect> = std::iter::from_fn(|| a.poll_effect()).collect();
    assert_eq!(
        asked,
        [Effect::Send {
            to: site("b"),
            message: Message::TableRequest {}
        }]
    );
    // Once the table is complete, digests go out instead.
    let digest = a.gndt().digest();
    a.handle_message(&site("b"), Message::TableEnd { digest, count: 3 }, due);
    a.handle_timeout(due + DIGEST_INTERVAL);
    assert!(matches!(
        a.poll_effect(),
        Some(Effect::Send {
            message: Message::Digest { .. },
            ..
        })
    ));
}

#[test]
fn digest_mismatch_requests_the_table() {
    let now = Instant::now();
    let mut a = node("a", "10.77.1.0/24", &["b"], now);
    a.handle_peer_up(site("b"), crate::node::testing::certified("b"), now);
    while a.poll_effect().is_some() {}
    a.handle_message(
        &site("b"),
        Message::Digest {
            digest: 1,
            count: 1,
        },
        now,
    );
    assert_eq!(
        a.poll_effect(),
        Some(Effect::Send {
            to: site("b"),
            message: Message::TableRequest {}
        })
    );
}

/// b's VM moves to c, and c's claim reaches a before b has heard of it: the digest b sends
/// meanwhile still counts its entry for the VM. Neither that digest nor the next (without the
/// VM) asks a for b's table; a digest that keeps counting the VM after that still does.
#[test]
fn a_digest_that_crossed_a_move_on_the_wire_is_in_sync() {
    use super::testing::{from_peer, ip, lan_node, mac, sent, site_entries};
    let now = Instant::now();
    let mut a = lan_node("a", 1, now);
    let said = site_entries("b", 2);
    from_peer(&mut a, "b", said.clone(), now);
    from_peer(&mut a, "c", site_entries("c", 3), now);
    let moved = GndtEntry::host(ip(2, 1), site("c"), 2, Some(mac(2, 1)));
    from_peer(&mut a, "c", vec![moved], now);
    assert_eq!(a.gndt().owner(ip(2, 1)), Some(&site("c")));
    while a.poll_effect().is_some() {}
    let digest_of = |entries: &[GndtEntry]| {
        entries
            .iter()
            .map(skyvine_tables::entry_hash)
            .fold(0u64, u64::wrapping_add)
    };
    let mut asks = |digest: u64| {
        a.handle_message(&site("b"), Message::Digest { digest, count: 4 }, now);
        sent(&mut a)
            .into_iter()
            .any(|(to, m)| to == site("b") && m == Message::TableRequest {})
    };
    let without_vm: Vec<GndtEntry> = said
        .iter()
        .filter(|e| e.prefix.ip() != ip(2, 1))
        .cloned()
        .collect();
    assert!(!asks(digest_of(&said)), "sent before b heard of the move");
    assert!(!asks(digest_of(&without_vm)), "sent after");
    assert!(asks(digest_of(&said)), "b still claims the VM");
}
