use skyvine_capture::wire::{classify, EventKind};
use skyvine_tables::DampingConfig;

use super::super::testing::{
    from_peer, ip, lan_node, lan_node_with, mac, sent, site, site_entries, transmitted,
};
use super::super::{Counter, Effect, Outcome, DEFAULT_CONFIRM_TIMEOUT};
use super::*;

/// Router b, connected to a, with a's prefix and VM bindings; effects drained.
fn b_knowing_a(now: Instant) -> Node {
    let mut b = lan_node("b", 2, now);
    from_peer(&mut b, "a", site_entries("a", 1), now);
    while b.poll_effect().is_some() {}
    b
}

fn rarp(node: &mut Node, vm: MacAddr, now: Instant) {
    let frame = frames::rarp_announce(vm);
    node.handle_lan_event(classify(&frame).unwrap(), now);
}

/// The VM's reply to b's probe.
fn probe_reply(node: &mut Node, vm_ip: Ipv4Addr, vm: MacAddr, now: Instant) {
    let frame = frames::proxy_arp_reply(vm, vm_ip, mac(2, 0xfe), Ipv4Addr::UNSPECIFIED);
    node.handle_lan_event(classify(&frame).unwrap(), now);
}

fn probes_to(events: &[skyvine_capture::wire::ArpEvent], vm_ip: Ipv4Addr) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Probe { target_ip, .. } if target_ip == vm_ip))
        .count()
}

fn last_outcome(node: &Node) -> Outcome {
    node.migrations().last().unwrap().outcome
}

/// Router b knowing a, with a confirmed takeover and a 300 ms confirmation timeout.
fn confirming_b(now: Instant) -> Node {
    let mut b = lan_node_with("b", 2, now, |config| {
        config.takeover = Takeover::Confirmed;
        config.confirm_timeout = Duration::from_millis(300);
    });
    from_peer(&mut b, "a", site_entries("a", 1), now);
    while b.poll_effect().is_some() {}
    b
}

fn owner_of(node: &Node, vm_ip: Ipv4Addr) -> (SiteId, u64, bool) {
    let entry = &node.gndt().get(Ipv4Network::from(vm_ip)).unwrap().entry;
    (entry.site().clone(), entry.version.seq, entry.withdrawn)
}

#[test]
fn an_advertised_binding_is_taken_over_at_once_then_confirmed() {
    let now = Instant::now();
    let mut b = b_knowing_a(now);
    rarp(&mut b, mac(1, 1), now);
    // Taken over on the announcement: b's entry, advertised, before any reply.
    assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 2, false));
    assert!(b.lndt().contains(ip(1, 1)));
    assert_eq!(b.lan_hosts().get(&ip(1, 1)), Some(&Some(mac(1, 1))));
    let pending = &b.lan.pending[&mac(1, 1)];
    assert!(pending.taken_over());
    let effects: Vec<Effect> = std::iter::from_fn(|| b.poll_effect()).collect();
    let claimed = effects.iter().any(|e| matches!(e, Effect::Send { to, message: Message::Entries { entries } }
            if to == &site("a") && entries.iter().any(|x| x.prefix == Ipv4Network::from(ip(1, 1)) && x.site() == &site("b"))));
    assert!(claimed, "the claim goes to a at once: {effects:?}");
    let frames: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Transmit { frame } => classify(frame).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(probes_to(&frames, ip(1, 1)), 1, "the first probe at once");
    // The kernel catches up: applied, but not done until the VM answers.
    let applied = now + Duration::from_millis(1);
    b.handle_kernel_applied(applied);
    let record = b.migrations().last().unwrap().clone();
    assert_eq!((record.applied, record.confirmed), (Some(applied), None));
    assert_eq!(record.outcome, Outcome::InProgress);
    // A reply from another MAC confirms nothing; the VM's does.
    probe_reply(&mut b, ip(1, 1), mac(2, 0x66), now);
    assert!(b.lan.pending.contains_key(&mac(1, 1)));
    let later = now + Duration::from_millis(40);
    probe_reply(&mut b, ip(1, 1), mac(1, 1), later);
    assert!(b.lan.pending.is_empty());
    let record = b.migrations().last().unwrap();
    assert_eq!(record.confirmed, Some(later));
    assert_eq!(record.outcome, Outcome::Applied);
    // Nothing left to time out: no rollback later.
    b.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(owner_of(&b, ip(1, 1)).0, site("b"));
    assert_eq!(b.counters().get(Counter::RefusedUnconfirmed), 0);
}

#[test]
fn an_unconfirmed_optimistic_takeover_is_rolled_back_and_frozen() {
    let now = Instant::now();
    let mut b = b_knowing_a(now);
    rarp(&mut b, mac(1, 1), now);
    assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 2, false));
    while b.poll_effect().is_some() {}
    // The VM never answers: probes keep going until the confirmation timeout.
    let deadline = now + DEFAULT_CONFIRM_TIMEOUT;
    b.handle_timeout(deadline - Duration::from_millis(1));
    assert!(b.lan.pending.contains_key(&mac(1, 1)));
    assert!(
        probes_to(&transmitted(&mut b), ip(1, 1)) > 6,
        "a slow guest is probed longer"
    );
    b.handle_timeout(deadline);
    // Rolled back: b withdraws its own claim with a newer version, and freezes the address.
    assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 3, true));
    assert_eq!(
        b.gndt().owner(ip(1, 1)),
        Some(&site("a")),
        "back to a's prefix"
    );
    assert!(!b.lndt().contains(ip(1, 1)));
    assert!(b.lan_hosts().is_empty());
    assert_eq!(b.frozen(deadline).len(), 1);
    assert_eq!(
        last_outcome(&b),
        Outcome::Refused(RefusalReason::Unconfirmed)
    );
    assert_eq!(b.counters().get(Counter::RefusedUnconfirmed), 1);
    let effects: Vec<Effect> = std::iter::from_fn(|| b.poll_effect()).collect();
    let withdrawn = effects.iter().any(|e| matches!(e, Effect::Send { to, message: Message::Entries { entries } }
            if to == &site("a") && entries.iter().any(|x| x.withdrawn && x.site() == &site("b") && x.version.seq == 3)));
    assert!(withdrawn, "the withdrawal goes to a: {effects:?}");
    // Never an entry in a's name.
    assert!(!effects.iter().any(
        |e| matches!(e, Effect::Send { message: Message::Entries { entries }, .. }
            if entries.iter().any(|x| x.site() != &site("b")))
    ));
    // a takes the address back (frozen), as its departure memory tells it to; the next
    // announcement (past the repeat window) is refused outright.
    let mut back = GndtEntry::host(ip(1, 1), site("a"), 4, Some(mac(1, 1)));
    back.frozen = true;
    from_peer(&mut b, "a", vec![back], deadline);
    assert_eq!(owner_of(&b, ip(1, 1)), (site("a"), 4, false));
    rarp(&mut b, mac(1, 1), deadline + Duration::from_secs(3));
    assert_eq!(last_outcome(&b), Outcome::Refused(RefusalReason::Frozen));
}

#[test]
fn with_a_confirmed_takeover_the_reply_comes_before_the_takeover() {
    let now = Instant::now();
    let mut b = confirming_b(now);
    rarp(&mut b, mac(1, 1), now);
    assert_eq!(b.lan.pending[&mac(1, 1)].ip(), Some(ip(1, 1)));
    assert_eq!(owner_of(&b, ip(1, 1)), (site("a"), 1, false), "not yet");
    let probes = transmitted(&mut b);
    assert_eq!(probes_to(&probes, ip(1, 1)), 1, "the first probe at once");
    assert_eq!(probes[0].eth_dst, mac(1, 1), "unicast to the VM");
    // A reply from another MAC, or not to our probe, confirms nothing.
    probe_reply(&mut b, ip(1, 1), mac(2, 0x66), now);
    assert!(b.lan.pending.contains_key(&mac(1, 1)));
    let later = now + Duration::from_millis(7);
    probe_reply(&mut b, ip(1, 1), mac(1, 1), later);
    assert!(!b.lan.pending.contains_key(&mac(1, 1)));
    assert!(b.lndt().contains(ip(1, 1)));
    assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 2, false));
    let record = b.migrations().find(|r| r.mac == Some(mac(1, 1))).unwrap();
    assert_eq!(record.confirmed, Some(later));
    b.handle_kernel_applied(later);
    let record = b.migrations().find(|r| r.mac == Some(mac(1, 1))).unwrap();
    assert_eq!(record.outcome, Outcome::Applied);
    // The VM's view: its old gateway and neighbour repointed to b.
    let fixes = transmitted(&mut b);
    for old in [ip(1, 254), ip(1, 2)] {
        assert!(fixes.iter().any(|e| e.eth_dst == mac(1, 1)
                && matches!(e.kind, EventKind::GratuitousRequest { ip: i, mac: m } if i == old && m == mac(2, 0xfe))));
    }
}

#[test]
fn an_unanswered_probe_refuses_a_confirmed_move_at_the_timeout() {
    let now = Instant::now();
    let mut b = confirming_b(now);
    rarp(&mut b, mac(1, 1), now);
    let mut probes = probes_to(&transmitted(&mut b), ip(1, 1));
    while let Some(at) = b
        .poll_timeout()
        .filter(|t| *t < now + Duration::from_secs(1))
    {
        b.handle_timeout(at);
        probes += probes_to(&transmitted(&mut b), ip(1, 1));
    }
    assert_eq!(probes, 6, "the whole schedule within 300 ms");
    assert!(b.lan.pending.is_empty());
    assert_eq!(
        last_outcome(&b),
        Outcome::Refused(RefusalReason::Unconfirmed)
    );
    assert_eq!(b.counters().get(Counter::RefusedUnconfirmed), 1);
    assert!(!b.lndt().contains(ip(1, 1)));
    assert_eq!(
        owner_of(&b, ip(1, 1)),
        (site("a"), 1, false),
        "nothing ever moved"
    );
}

#[test]
fn without_a_binding_only_the_owner_can_vouch_for_the_claimed_address() {
    let now = Instant::now();
    let mut b = lan_node("b", 2, now);
    from_peer(&mut b, "a", site_entries("a", 1)[..1].to_vec(), now);
    from_peer(&mut b, "c", site_entries("c", 3)[..1].to_vec(), now);
    while b.poll_effect().is_some() {}
    let garp = frames::gratuitous_arp_request(mac(1, 1), ip(1, 1));
    b.handle_lan_event(classify(&garp).unwrap(), now);
    let asked = sent(&mut b);
    assert_eq!(
        asked.len(),
        1,
        "only the owner of the claimed address: {asked:?}"
    );
    let (to, Message::WhoHas { query, mac: m }) = asked[0].clone() else {
        panic!("{asked:?}")
    };
    assert_eq!((to, m), (site("a"), mac(1, 1)));
    // c's word counts for nothing, nor a's for another address, nor a stale query.
    b.on_is_at(&site("c"), query, mac(1, 1), Some(ip(1, 1)), now);
    b.on_is_at(&site("a"), query, mac(1, 1), Some(ip(1, 2)), now);
    b.on_is_at(&site("a"), query + 1, mac(1, 1), Some(ip(1, 1)), now);
    assert!(matches!(
        b.lan.pending[&mac(1, 1)].phase,
        Phase::Resolving { .. }
    ));
    b.on_is_at(&site("a"), query, mac(1, 1), Some(ip(1, 1)), now);
    assert!(matches!(
        b.lan.pending[&mac(1, 1)].phase,
        Phase::TakenOver { .. }
    ));
    assert_eq!(
        b.gndt().owner(ip(1, 1)),
        Some(&site("b")),
        "vouched for: taken over"
    );
    assert!(b.migrations().last().unwrap().resolved.is_some());
}

#[test]
fn a_bare_mac_nobody_vouches_for_is_refused_after_the_resolve_timeout() {
    let now = Instant::now();
    let mut b = b_knowing_a(now);
    from_peer(&mut b, "c", Vec::new(), now);
    while b.poll_effect().is_some() {}
    rarp(&mut b, mac(9, 9), now);
    let asked: Vec<SiteId> = sent(&mut b).into_iter().map(|(to, _)| to).collect();
    assert_eq!(asked, [site("a"), site("c")], "everyone for a bare MAC");
    assert_eq!(b.poll_timeout(), Some(now + RESOLVE_TIMEOUT));
    b.handle_timeout(now + RESOLVE_TIMEOUT);
    assert_eq!(
        last_outcome(&b),
        Outcome::Refused(RefusalReason::Unresolved)
    );
    assert_eq!(b.counters().get(Counter::RefusedUnresolved), 1);
}

#[test]
fn a_pinned_address_is_refused_before_any_probe() {
    let now = Instant::now();
    let prefix: Ipv4Network = "10.77.2.0/24".parse().unwrap();
    let mut config =
        super::super::NodeConfig::new(site("b"), vec![prefix], vec![prefix], vec![site("a")]);
    config.lan = Some(super::super::LanIdentity {
        mac: mac(2, 0xfe),
        ip: ip(2, 254),
    });
    config.pinned = vec![ip(1, 1)];
    config.damping = DampingConfig::default();
    let mut b = Node::new(config, now);
    from_peer(&mut b, "a", site_entries("a", 1), now);
    while b.poll_effect().is_some() {}
    rarp(&mut b, mac(1, 1), now);
    assert_eq!(probes_to(&transmitted(&mut b), ip(1, 1)), 0);
    assert_eq!(last_outcome(&b), Outcome::Refused(RefusalReason::Pinned));
    assert_eq!(b.counters().get(Counter::RefusedPinned), 1);
    assert!(b.lan.pending.is_empty());
}

#[test]
fn repeats_are_one_migration_and_a_flood_of_macs_is_bounded() {
    let now = Instant::now();
    let mut b = b_knowing_a(now);
    for _ in 0..5 {
        rarp(&mut b, mac(1, 1), now);
    }
    assert_eq!(b.migrations().count(), 1);
    assert_eq!(b.counters().get(Counter::Repeats), 4);
    // Announcements for random MACs: at most MAX_PENDING queries at once.
    for i in 0..100u8 {
        let frame = frames::rarp_announce(MacAddr([0x02, 0, 0, 0, 1, i]));
        // From distinct sources, so the rate limit is not what stops them.
        b.handle_lan_event(classify(&frame).unwrap(), now);
    }
    assert_eq!(b.lan.pending.len(), MAX_PENDING);
    assert_eq!(
        b.counters().get(Counter::RefusedBusy),
        100 + 1 - MAX_PENDING as u64
    );
}

#[test]
fn an_address_of_ours_or_outside_the_network_starts_nothing() {
    let now = Instant::now();
    let mut b = b_knowing_a(now);
    let own = frames::gratuitous_arp_request(mac(2, 1), ip(2, 1));
    b.handle_lan_event(classify(&own).unwrap(), now);
    let outside = frames::gratuitous_arp_request(mac(7, 7), "192.0.2.7".parse().unwrap());
    b.handle_lan_event(classify(&outside).unwrap(), now);
    assert_eq!(b.migrations().count(), 0);
    assert!(b.lan.pending.is_empty());
}

#[test]
fn a_pending_migration_wakes_at_its_phase_deadline() {
    let now = Instant::now();
    let resolving = Pending {
        record: 1,
        phase: Phase::Resolving {
            claimed: Some(ip(1, 1)),
            query: 1,
            deadline: now + RESOLVE_TIMEOUT,
        },
    };
    assert_eq!(resolving.ip(), Some(ip(1, 1)));
    assert_eq!(resolving.next_at(), now + RESOLVE_TIMEOUT);
    let prober = Prober::new(ip(1, 2), mac(1, 2), Duration::from_millis(300), now);
    let confirming = Pending {
        record: 2,
        phase: Phase::Confirming { prober },
    };
    assert_eq!(confirming.ip(), Some(ip(1, 2)));
    assert_eq!(confirming.next_at(), now);
}

#[test]
fn a_vm_seen_while_its_address_was_frozen_is_looked_for_when_the_freeze_ends() {
    let now = Instant::now();
    let mut b = b_knowing_a(now);
    // a took the VM's address back, frozen: b honours the freeze.
    let mut back = GndtEntry::host(ip(1, 1), site("a"), 2, Some(mac(1, 1)));
    back.frozen = true;
    from_peer(&mut b, "a", vec![back], now);
    let until = b.frozen(now)[0].1;
    while b.poll_effect().is_some() {}
    // The VM moves to b meanwhile: its RARPs are refused, and it says nothing more.
    rarp(&mut b, mac(1, 1), now + Duration::from_secs(1));
    assert_eq!(last_outcome(&b), Outcome::Refused(RefusalReason::Frozen));
    assert_eq!(owner_of(&b, ip(1, 1)).0, site("a"));
    while b.poll_effect().is_some() {}
    // The freeze ends: b probes for the VM, and takes its address once it answers.
    assert!(b.poll_timeout().is_some_and(|at| at <= until));
    b.handle_timeout(until);
    assert_eq!(probes_to(&transmitted(&mut b), ip(1, 1)), 1);
    assert_eq!(owner_of(&b, ip(1, 1)).0, site("a"), "not before it answers");
    probe_reply(
        &mut b,
        ip(1, 1),
        mac(1, 1),
        until + Duration::from_millis(5),
    );
    assert_eq!(owner_of(&b, ip(1, 1)), (site("b"), 3, false));
    assert_eq!(b.migrations().last().unwrap().detection, Detection::Rarp);
}
