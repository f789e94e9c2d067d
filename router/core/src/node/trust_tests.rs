//! One test per attack on the control plane (issue 9): each fails without its check.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_tables::{EntryKind, GndtEntry, MacAddr};

use super::testing::{
    advertised, certified, from_peer, ip, lan_node, lan_node_with, mac, sent, site, site_entries,
};
use super::trust::{MAX_SEQ_JUMP, TOMBSTONE_LIFETIME};
use super::{Counter, Effect, Message, Node, DIGEST_INTERVAL};

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

/// Router a with b and c connected, both having sent their own tables.
fn a_with_peers(now: Instant) -> Node {
    let mut a = lan_node("a", 1, now);
    from_peer(&mut a, "b", site_entries("b", 2), now);
    from_peer(&mut a, "c", site_entries("c", 3), now);
    while a.poll_effect().is_some() {}
    a
}

fn held(node: &Node, prefix: &str) -> Option<GndtEntry> {
    node.gndt().get(net(prefix)).map(|s| s.entry.clone())
}

#[test]
fn an_entry_in_another_sites_name_is_refused() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let before = held(&a, "10.77.3.0/24");
    // b speaks for c: withdraws c's prefix, and moves one of c's VMs to c's "new" MAC.
    let mut gone = GndtEntry::site_prefix(net("10.77.3.0/24"), site("c"), 9);
    gone.withdrawn = true;
    let forged = GndtEntry::host(ip(3, 1), site("c"), 9, Some(mac(9, 9)));
    from_peer(&mut a, "b", vec![gone, forged], now);
    assert_eq!(held(&a, "10.77.3.0/24"), before);
    assert_eq!(
        held(&a, "10.77.3.1/32").and_then(|e| e.mac),
        Some(mac(3, 1))
    );
    assert_eq!(a.counters().get(Counter::RefusedForgedOrigin), 2);
}

#[test]
fn an_entry_naming_the_receiver_is_never_adopted() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let stranger = ip(1, 77);
    let ours = GndtEntry::host(stranger, site("a"), 5, Some(mac(6, 6)));
    from_peer(&mut a, "b", vec![ours], now);
    assert!(!a.lndt().contains(stranger));
    assert!(a.lan_hosts().is_empty());
    assert!(held(&a, "10.77.1.77/32").is_none());
    assert_eq!(a.counters().get(Counter::RefusedForgedOrigin), 1);
    // Nor from a peer with our own id: the core refuses such a connection (see
    // `our_own_id_and_unlisted_sites_cannot_connect`), and its entries all the same.
    assert_eq!(
        a.check_entry(
            &site("a"),
            &GndtEntry::host(stranger, site("a"), 5, None),
            now
        ),
        Err(super::EntryRefusal::ForgedOrigin)
    );
}

#[test]
fn a_prefix_outside_the_senders_certificate_is_refused() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    // Half the Internet, a slice of c's prefix, and a /32 of c's WAN address as a "host".
    let half = GndtEntry::site_prefix(net("0.0.0.0/1"), site("b"), 1);
    let slice = GndtEntry::site_prefix(net("10.77.3.128/25"), site("b"), 1);
    let wan = GndtEntry::host("192.0.2.3".parse().unwrap(), site("b"), 1, None);
    from_peer(&mut a, "b", vec![half, slice, wan], now);
    for prefix in ["0.0.0.0/1", "10.77.3.128/25", "192.0.2.3/32"] {
        assert!(held(&a, prefix).is_none(), "{prefix}");
        assert!(!a.tun_routes().contains(&net(prefix)), "{prefix}");
    }
    assert_eq!(a.counters().get(Counter::RefusedForeignPrefix), 3);
}

#[test]
fn a_slice_of_the_receivers_own_lan_is_refused() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let slice = GndtEntry::site_prefix(net("10.77.1.0/25"), site("b"), 1);
    from_peer(&mut a, "b", vec![slice.clone()], now);
    assert!(held(&a, "10.77.1.0/25").is_none());
    assert_eq!(a.counters().get(Counter::RefusedForeignPrefix), 1);
    // Even when a careless CA certified b for all of 10.77.0.0/16.
    let mut a = lan_node("a", 1, now);
    a.handle_peer_up(site("b"), vec![net("10.77.0.0/16")], now);
    a.handle_message(
        &site("b"),
        Message::Entries {
            entries: vec![slice],
        },
        now,
    );
    assert!(held(&a, "10.77.1.0/25").is_none());
    assert_eq!(a.counters().get(Counter::RefusedOwnPrefix), 1);
}

#[test]
fn a_host_entry_must_be_a_slash_32_and_a_prefix_carries_no_host_fields() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let mut wide = GndtEntry::host(ip(2, 0), site("b"), 2, Some(mac(2, 1)));
    wide.prefix = net("10.0.0.0/8");
    let mut prefix_with_mac = GndtEntry::site_prefix(net("10.77.2.0/25"), site("b"), 2);
    prefix_with_mac.mac = Some(mac(2, 1));
    let mut host_as_prefix = GndtEntry::site_prefix(net("10.77.2.7/32"), site("b"), 2);
    host_as_prefix.kind = EntryKind::SitePrefix;
    from_peer(
        &mut a,
        "b",
        vec![wide, prefix_with_mac, host_as_prefix],
        now,
    );
    assert!(held(&a, "10.0.0.0/8").is_none());
    assert!(held(&a, "10.77.2.0/25").is_none());
    assert!(held(&a, "10.77.2.7/32").is_none());
    assert_eq!(a.counters().get(Counter::RefusedBadKind), 3);
}

#[test]
fn a_migrated_host_needs_a_home_and_a_higher_sequence_number() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    // c's VM moved to b: b claims it, but not above c's sequence number.
    let vm = ip(3, 1);
    let same = GndtEntry::host(vm, site("b"), 1, Some(mac(3, 1)));
    from_peer(&mut a, "b", vec![same], now);
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("c"));
    assert_eq!(a.counters().get(Counter::RefusedNotNewer), 1);
    let newer = GndtEntry::host(vm, site("b"), 2, Some(mac(3, 1)));
    from_peer(&mut a, "b", vec![newer], now);
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("b"));
    // At an equal sequence number the home wins back, whatever the site ids.
    from_peer(
        &mut a,
        "c",
        vec![GndtEntry::host(vm, site("c"), 2, Some(mac(3, 1)))],
        now,
    );
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("c"));
}

#[test]
fn a_claim_of_the_receivers_host_starts_its_still_here_check() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let vm = ip(1, 1);
    let hello = skyvine_inject::wire::arp_request(mac(1, 1), vm, ip(1, 254));
    a.handle_lan_event(skyvine_capture::wire::classify(&hello).unwrap(), now);
    // a now advertises the VM at sequence 1: b's claim must be newer.
    let claim = GndtEntry::host(vm, site("b"), 2, Some(mac(1, 1)));
    from_peer(&mut a, "b", vec![claim], now);
    assert!(!a.lndt().contains(vm));
    assert!(!a.lan.verifying.is_empty(), "no still-here check of {vm}");
}

#[test]
fn a_freeze_mark_counts_only_from_the_last_confirmed_owner() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    // Our VM, seen here: b claims it frozen, which would skip our still-here check.
    let vm = ip(1, 1);
    let hello = skyvine_inject::wire::arp_request(mac(1, 1), vm, ip(1, 254));
    a.handle_lan_event(skyvine_capture::wire::classify(&hello).unwrap(), now);
    while a.poll_effect().is_some() {}
    let mut frozen = GndtEntry::host(vm, site("b"), 5, Some(mac(1, 1)));
    frozen.frozen = true;
    from_peer(&mut a, "b", vec![frozen], now);
    assert_eq!(a.counters().get(Counter::RefusedForgedFrozen), 1);
    // Taken as a plain claim: the still-here check runs, nothing is frozen.
    assert!(!a.lan.verifying.is_empty(), "no still-here check of {vm}");
    assert!(a.frozen(now).is_empty());
    while a.poll_effect().is_some() {}

    // c's VM claimed plainly by b, then taken back frozen by c (its last owner): honoured;
    // a frozen claim by b after that is not (b is not where it last moved away from).
    let vm = ip(3, 1);
    from_peer(
        &mut a,
        "b",
        vec![GndtEntry::host(vm, site("b"), 3, Some(mac(3, 1)))],
        now,
    );
    let mut take_back = GndtEntry::host(vm, site("c"), 4, Some(mac(3, 1)));
    take_back.frozen = true;
    from_peer(&mut a, "c", vec![take_back], now);
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("c"));
    assert!(a.frozen(now).iter().any(|(frozen, _)| *frozen == vm));
    let mut again = GndtEntry::host(vm, site("b"), 9, Some(mac(3, 1)));
    again.frozen = true;
    from_peer(&mut a, "b", vec![again], now);
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("c"));
    assert_eq!(a.counters().get(Counter::RefusedForgedFrozen), 2);
    // Frozen now: nobody moves it, whatever it advertises.
    from_peer(
        &mut a,
        "b",
        vec![GndtEntry::host(vm, site("b"), 10, Some(mac(3, 1)))],
        now,
    );
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("c"));
    assert_eq!(a.counters().get(Counter::RefusedPinnedClaim), 1);
}

#[test]
fn a_claim_of_a_pinned_address_is_refused_and_answered_with_ours() {
    let now = Instant::now();
    let mut a = lan_node_with("a", 1, now, |config| config.pinned = vec![ip(1, 1)]);
    from_peer(&mut a, "b", site_entries("b", 2), now);
    while a.poll_effect().is_some() {}
    let claim = GndtEntry::host(ip(1, 1), site("b"), 5, Some(mac(1, 1)));
    from_peer(&mut a, "b", vec![claim], now);
    assert!(a.lndt().contains(ip(1, 1)));
    assert_eq!(a.counters().get(Counter::RefusedPinnedClaim), 1);
    // Peers that do not pin it (and took b's claim) learn ours, newer.
    let ours = advertised(&mut a);
    assert!(
        ours.iter().any(|e| e.prefix == net("10.77.1.1/32")
            && e.site() == &site("a")
            && e.version.seq > 5),
        "{ours:?}"
    );
}

#[test]
fn sequence_numbers_near_the_top_are_refused_and_nothing_wraps() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let top = GndtEntry::site_prefix(net("10.77.2.0/24"), site("b"), u64::MAX);
    let claim = GndtEntry::host(ip(1, 1), site("b"), u64::MAX - 1, Some(mac(1, 1)));
    from_peer(&mut a, "b", vec![top, claim], now);
    assert_eq!(held(&a, "10.77.2.0/24").unwrap().version.seq, 1);
    assert!(a.lndt().contains(ip(1, 1)));
    assert_eq!(a.counters().get(Counter::RefusedSeqJump), 2);
    // The largest jump allowed passes, and our answer to it does not overflow.
    let far = GndtEntry::host(ip(1, 1), site("b"), MAX_SEQ_JUMP, Some(mac(1, 1)));
    from_peer(&mut a, "b", vec![far], now);
    assert_eq!(held(&a, "10.77.1.1/32").unwrap().site(), &site("b"));
}

#[test]
fn our_own_id_and_unlisted_sites_cannot_connect() {
    let now = Instant::now();
    let mut a = lan_node("a", 1, now);
    a.handle_peer_up(site("a"), certified("a"), now);
    a.handle_peer_up(site("z"), vec![net("10.77.9.0/24")], now);
    assert!(a.admit(&site("a")).is_err());
    assert!(a.admit(&site("z")).is_err());
    assert!(!a.peers().get(&site("a")).is_some_and(|p| p.connected));
    assert!(!a.peers().contains_key(&site("z")));
    let entries = vec![GndtEntry::site_prefix(net("10.77.9.0/24"), site("z"), 1)];
    a.handle_message(&site("z"), Message::Entries { entries }, now);
    assert!(held(&a, "10.77.9.0/24").is_none());
    // With any_certified_peer, z connects, and is held to its certificate like anyone.
    let mut open = lan_node_with("a", 1, now, |config| config.any_certified_peer = true);
    open.handle_peer_up(site("z"), vec![net("10.77.9.0/24")], now);
    let entries = vec![
        GndtEntry::site_prefix(net("10.77.9.0/24"), site("z"), 1),
        GndtEntry::site_prefix(net("10.77.2.0/24"), site("z"), 1),
    ];
    open.handle_message(&site("z"), Message::Entries { entries }, now);
    assert!(held(&open, "10.77.9.0/24").is_some());
    assert!(held(&open, "10.77.2.0/24").is_none());
}

#[test]
fn a_revoked_peer_is_cut_off_and_what_it_originated_withdrawn() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    // b also holds a VM that migrated to it from c.
    from_peer(
        &mut a,
        "b",
        vec![GndtEntry::host(ip(3, 2), site("b"), 2, Some(mac(3, 2)))],
        now,
    );
    assert!(a.tun_routes().contains(&net("10.77.2.0/24")));
    a.handle_peer_revoked(&site("b"), now);
    assert_eq!(a.gndt().count_of(&site("b")), 0);
    assert!(!a.tun_routes().contains(&net("10.77.2.0/24")));
    assert_eq!(a.gndt().owner(ip(3, 2)), Some(&site("c")));
    assert!(!a.peers()[&site("b")].connected);
    assert_eq!(a.counters().get(Counter::RevokedPeers), 1);
    // Whatever was still in flight from it is dropped.
    from_peer_without_reconnect(&mut a, "b", site_entries("b", 2), now);
    assert_eq!(a.gndt().count_of(&site("b")), 0);
}

fn from_peer_without_reconnect(node: &mut Node, peer: &str, entries: Vec<GndtEntry>, now: Instant) {
    node.handle_message(&site(peer), Message::Entries { entries }, now);
}

#[test]
fn a_refused_entry_does_not_make_digests_disagree() {
    let now = Instant::now();
    let mut a = lan_node("a", 1, now);
    // b configured with a slice of a's LAN it has no certificate for.
    let mut b = lan_node_with("b", 2, now, |config| {
        config.prefixes.push(net("10.77.1.0/25"));
    });
    a.handle_peer_up(site("b"), certified("b"), now);
    b.handle_peer_up(site("a"), certified("a"), now);
    for _ in 0..3 {
        exchange(&mut a, &mut b, now);
    }
    assert!(held(&a, "10.77.1.0/25").is_none());
    assert!(a.counters().get(Counter::RefusedForeignPrefix) >= 1);
    // b's digest comes: a heard everything b said, so it does not ask again.
    let later = now + DIGEST_INTERVAL;
    b.handle_timeout(later);
    let digests: Vec<Message> = sent(&mut b).into_iter().map(|(_, m)| m).collect();
    for message in digests {
        a.handle_message(&site("b"), message, later);
    }
    assert!(
        !sent(&mut a)
            .iter()
            .any(|(_, m)| matches!(m, Message::TableRequest {})),
        "a asks b for its table again and again"
    );
}

/// Delivers what each of a and b sent to the other, once.
fn exchange(a: &mut Node, b: &mut Node, now: Instant) {
    for (to, message) in sent(a) {
        if to == site("b") {
            b.handle_message(&site("a"), message, now);
        }
    }
    for (to, message) in sent(b) {
        if to == site("a") {
            a.handle_message(&site("b"), message, now);
        }
    }
}

#[test]
fn tombstones_are_collected() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let gone = withdrawn_host(ip(2, 1), "b", 2, mac(2, 1));
    from_peer(&mut a, "b", vec![gone], now);
    assert_eq!(a.gndt().tombstones(), 1);
    past_tombstone_lifetime(&mut a, now);
    assert_eq!(a.gndt().tombstones(), 0);
}

/// b's VM is claimed by c when b (restarted) connects: a's echo carries the VM's binding too, as
/// a withdrawn entry (b may vouch for it, no more), so that b can still vouch for the VM once
/// the claim is rolled back and gone everywhere.
#[test]
fn a_restarted_home_is_echoed_the_binding_of_another_sites_claim() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let vm = ip(2, 2);
    let claim = GndtEntry::host(vm, site("c"), 2, Some(mac(2, 2)));
    from_peer(&mut a, "c", vec![claim], now);
    assert_eq!(held(&a, "10.77.2.2/32").unwrap().site(), &site("c"));
    while a.poll_effect().is_some() {}
    a.handle_peer_down(&site("b"), now);
    a.handle_peer_up(site("b"), certified("b"), now);
    let echoed: Vec<GndtEntry> = sent(&mut a)
        .into_iter()
        .filter(|(to, _)| to == &site("b"))
        .flat_map(|(_, message)| match message {
            Message::Echo { entries } => entries,
            _ => Vec::new(),
        })
        .collect();
    let binding = echoed
        .iter()
        .find(|e| e.prefix == Ipv4Network::from(vm))
        .expect("the VM's binding is echoed");
    assert_eq!(
        (binding.site(), binding.mac, binding.withdrawn),
        (&site("b"), Some(mac(2, 2)), true)
    );
    let mut b = lan_node("b", 2, now);
    b.handle_peer_up(site("a"), certified("a"), now);
    b.handle_message(&site("a"), Message::Echo { entries: echoed }, now);
    assert_eq!(b.vouch_for(mac(2, 2)), Some(vm));
}

/// a took its VM back frozen (it answered a's still-here check), then the VM left without a
/// word and c claims it. a refuses the claim without answering it with its own entry (which
/// would renew the freeze everywhere for a VM that may be elsewhere), and checks it again when
/// the freeze ends: then its still-here check settles where the VM is.
#[test]
fn a_claim_refused_for_a_freeze_is_not_answered_but_checked_again() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let vm = ip(1, 1);
    let lan = |a: &mut Node, frame: &[u8]| {
        a.handle_lan_event(skyvine_capture::wire::classify(frame).unwrap(), now);
    };
    lan(
        &mut a,
        &skyvine_inject::wire::arp_request(mac(1, 1), vm, ip(1, 254)),
    );
    let claim = GndtEntry::host(vm, site("b"), 2, Some(mac(1, 1)));
    from_peer(&mut a, "b", vec![claim], now);
    lan(
        &mut a,
        &skyvine_inject::wire::proxy_arp_reply(
            mac(1, 1),
            vm,
            mac(1, 0xfe),
            std::net::Ipv4Addr::UNSPECIFIED,
        ),
    );
    let until = a.frozen(now).iter().find(|(ip, _)| *ip == vm).map(|f| f.1);
    let until = until.expect("taken back frozen");
    while a.poll_effect().is_some() {}
    let claim = GndtEntry::host(vm, site("c"), 4, Some(mac(1, 1)));
    from_peer(&mut a, "c", vec![claim], now);
    assert_eq!(a.counters().get(Counter::RefusedPinnedClaim), 1);
    assert!(a.lndt().contains(vm));
    let answer = advertised(&mut a);
    assert!(
        !answer.iter().any(|e| e.prefix == Ipv4Network::from(vm)),
        "{answer:?}"
    );
    a.handle_timeout(until);
    assert_eq!(held(&a, "10.77.1.1/32").unwrap().site(), &site("c"));
    assert!(!a.lndt().contains(vm));
    assert!(!a.lan.verifying.is_empty(), "no still-here check of {vm}");
}

/// The `Outranked` hints sent to `peer` among `node`'s effects.
fn outranked_hints(node: &mut Node, peer: &str) -> Vec<(Ipv4Addr, u64)> {
    std::iter::from_fn(|| node.poll_effect())
        .filter_map(|e| match e {
            Effect::Send {
                to,
                message: Message::Outranked { ip, seq },
            } if to == site(peer) => Some((ip, seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_claim_refused_as_not_newer_is_hinted_again_with_the_claimants_digests() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    // b claims c's VMs, not above c's numbers: a tells b the number it holds.
    let (vm, other) = (ip(3, 1), ip(3, 2));
    let claims = vec![
        GndtEntry::host(vm, site("b"), 1, Some(mac(3, 1))),
        GndtEntry::host(other, site("b"), 1, Some(mac(3, 2))),
    ];
    from_peer(&mut a, "b", claims, now);
    assert_eq!(outranked_hints(&mut a, "b"), vec![(vm, 1), (other, 1)]);
    // The hints may be lost: they are repeated with b's digests.
    let digest = Message::Digest {
        digest: 0,
        count: 0,
    };
    a.handle_message(&site("b"), digest.clone(), now);
    assert_eq!(outranked_hints(&mut a, "b"), vec![(vm, 1), (other, 1)]);
    // b claims one above: that one is no longer hinted; the other, three times at most.
    from_peer(
        &mut a,
        "b",
        vec![GndtEntry::host(vm, site("b"), 2, Some(mac(3, 1)))],
        now,
    );
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("b"));
    while a.poll_effect().is_some() {}
    for _ in 0..2 {
        a.handle_message(&site("b"), digest.clone(), now);
        assert_eq!(outranked_hints(&mut a, "b"), vec![(other, 1)]);
    }
    a.handle_message(&site("b"), digest, now);
    assert!(outranked_hints(&mut a, "b").is_empty());
}

/// `peer`'s full table ends (it says `count` entries).
fn table_end(node: &mut Node, peer: &str, count: u64, now: Instant) {
    let end = Message::TableEnd { digest: 0, count };
    node.handle_message(&site(peer), end, now);
}

/// `peer` sends a digest (one that agrees with nothing: only what it triggers matters here).
fn digest_from(node: &mut Node, peer: &str, now: Instant) {
    let digest = Message::Digest {
        digest: 0,
        count: 0,
    };
    node.handle_message(&site(peer), digest, now);
}

/// `site`'s withdrawal of its host entry for `ip` (which keeps the MAC).
fn withdrawn_host(ip: Ipv4Addr, site_name: &str, seq: u64, mac: MacAddr) -> GndtEntry {
    let mut entry = GndtEntry::host(ip, site(site_name), seq, Some(mac));
    entry.withdrawn = true;
    entry
}

/// Runs `node`'s timers (effects dropped) until its tombstones from `now` are collected;
/// returns the time reached.
fn past_tombstone_lifetime(node: &mut Node, now: Instant) -> Instant {
    let mut at = now;
    let end = now + TOMBSTONE_LIFETIME + Duration::from_secs(120);
    while at < end {
        at = node
            .poll_timeout()
            .unwrap()
            .max(at + Duration::from_secs(1));
        node.handle_timeout(at);
        while node.poll_effect().is_some() {}
    }
    at
}

/// The connection to `peer` drops and comes back.
fn reconnect(node: &mut Node, peer: &str, now: Instant) {
    node.handle_peer_down(&site(peer), now);
    node.handle_peer_up(site(peer), certified(peer), now);
}

/// The entries echoed to `peer` among `node`'s effects.
fn echoes(node: &mut Node, peer: &str) -> Vec<GndtEntry> {
    std::iter::from_fn(|| node.poll_effect())
        .filter_map(|e| match e {
            Effect::Send {
                to,
                message: Message::Echo { entries },
            } if to == site(peer) => Some(entries),
            _ => None,
        })
        .flatten()
        .collect()
}

/// c claimed b's VM and rolled the claim back: only a's tombstone still carries the VM's
/// binding. b restarts and the echo of it is lost: it is echoed again with b's first digests
/// on the connection, three at most, so that b can still vouch for the VM where it turns up.
#[test]
fn a_binding_only_a_withdrawn_entry_carries_is_echoed_again_with_the_peers_digests() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let vm = ip(2, 2);
    from_peer(
        &mut a,
        "c",
        vec![GndtEntry::host(vm, site("c"), 2, Some(mac(2, 2)))],
        now,
    );
    from_peer(
        &mut a,
        "c",
        vec![withdrawn_host(vm, "c", 3, mac(2, 2))],
        now,
    );
    assert!(held(&a, "10.77.2.2/32").unwrap().withdrawn);
    reconnect(&mut a, "b", now);
    let is_binding = |e: &GndtEntry| {
        e.prefix == Ipv4Network::from(vm) && e.mac == Some(mac(2, 2)) && e.withdrawn
    };
    assert!(
        echoes(&mut a, "b").iter().any(is_binding),
        "echoed on connect"
    );
    // That echo is lost. b's table ends, then its digests come.
    from_peer(&mut a, "b", site_entries("b", 2), now);
    table_end(&mut a, "b", 4, now);
    while a.poll_effect().is_some() {}
    for round in 1..=3 {
        digest_from(&mut a, "b", now);
        assert!(
            echoes(&mut a, "b").iter().any(is_binding),
            "echoed again with digest {round}"
        );
    }
    digest_from(&mut a, "b", now);
    assert!(
        !echoes(&mut a, "b").iter().any(is_binding),
        "three times at most"
    );
}

/// The same once the tombstone is collected: the binding is remembered without it, and still
/// echoed on connect and again with the peer's first digests. (The tombstone sweep used to
/// forget it.)
#[test]
fn a_forgotten_binding_is_echoed_again_with_the_peers_digests() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let vm = ip(2, 2);
    from_peer(
        &mut a,
        "c",
        vec![withdrawn_host(vm, "c", 3, mac(2, 2))],
        now,
    );
    let at = past_tombstone_lifetime(&mut a, now);
    assert!(
        held(&a, "10.77.2.2/32").is_none(),
        "the tombstone is collected"
    );
    reconnect(&mut a, "b", at);
    let is_binding = |e: &GndtEntry| {
        e.prefix == Ipv4Network::from(vm) && e.mac == Some(mac(2, 2)) && e.withdrawn
    };
    assert!(
        echoes(&mut a, "b").iter().any(is_binding),
        "echoed on connect"
    );
    // b restarted: its table no longer has the VM (it is elsewhere).
    let mut table = site_entries("b", 2);
    table.retain(|e| e.prefix != Ipv4Network::from(vm));
    from_peer(&mut a, "b", table, at);
    table_end(&mut a, "b", 3, at);
    while a.poll_effect().is_some() {}
    digest_from(&mut a, "b", at);
    assert!(echoes(&mut a, "b").iter().any(is_binding), "echoed again");
}

/// b's claim of c's VM is refused as not newer than c's entry (c moved it back: seq 2), and the
/// hint is lost. c restarts and says its entry again at 1: nothing outranks b's claim now, and
/// b's next digest has it checked again (b has no reason to say it again).
#[test]
fn a_refused_claim_is_checked_again_once_nothing_outranks_it() {
    let now = Instant::now();
    let mut a = a_with_peers(now);
    let vm = ip(3, 1);
    from_peer(
        &mut a,
        "c",
        vec![GndtEntry::host(vm, site("c"), 2, Some(mac(3, 1)))],
        now,
    );
    from_peer(
        &mut a,
        "b",
        vec![GndtEntry::host(vm, site("b"), 2, Some(mac(3, 1)))],
        now,
    );
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().site(), &site("c"));
    assert_eq!(outranked_hints(&mut a, "b"), vec![(vm, 2)]);
    // c restarts: its table has the VM at 1 again.
    a.handle_peer_down(&site("c"), now);
    from_peer(&mut a, "c", site_entries("c", 3), now);
    table_end(&mut a, "c", 4, now);
    assert_eq!(held(&a, "10.77.3.1/32").unwrap().version.seq, 1);
    digest_from(&mut a, "b", now);
    let entry = held(&a, "10.77.3.1/32").unwrap();
    assert_eq!((entry.site(), entry.version.seq), (&site("b"), 2));
}
