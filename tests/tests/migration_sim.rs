//! Deterministic simulation of the migration logic: several router cores (`Node`, sans IO)
//! with simulated LANs whose VMs answer ARP probes, a virtual clock, and control messages that
//! can be delayed, reordered, duplicated or lost. The world itself is `skyvine_tests::sim`.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use skyvine_capture::wire::EventKind;
use skyvine_core::node::{
    Counter, Detection, Node, Outcome, RefusalReason, Role, DEFAULT_CONFIRM_TIMEOUT,
    DIGEST_INTERVAL,
};
use skyvine_inject::wire as frames;
use skyvine_tables::{MacAddr, SiteId};
use skyvine_tests::sim::{ip, mac, site, Announce, Delivery, Vm, World};

fn destination_records(node: &Node) -> Vec<&skyvine_core::node::MigrationRecord> {
    node.migrations()
        .filter(|r| r.role == Role::Destination)
        .collect()
}

#[test]
fn rarp_burst_is_one_migration_and_every_router_follows() {
    let mut w = World::new(&["a", "b", "c"], false);
    let vm = ip(1, 1);
    w.migrate(vm, "b", Detection::Rarp);
    w.assert_location(vm, "b");
    w.assert_minimal_kernel_state();

    let b = &w.nodes[w.index("b")];
    let records = destination_records(b);
    assert_eq!(
        records.len(),
        1,
        "five RARPs must be one migration: {records:?}"
    );
    let record = records[0];
    assert_eq!(record.detection, Detection::Rarp);
    assert_eq!(record.outcome, Outcome::Applied);
    assert_eq!(record.ip, Some(vm));
    assert_eq!(record.from.as_ref().map(SiteId::as_str), Some("a"));
    assert!(
        record.applied.unwrap() - record.detected < Duration::from_millis(1),
        "the simulation is instantaneous"
    );
    assert!(b.counters().get(Counter::Repeats) >= 4);

    // Kernel state: b routes the VM on its LAN, a and c send it into the overlay.
    assert_eq!(b.lan_hosts().get(&vm), Some(&Some(mac(1, 1))));
    let host = Ipv4Network::from(vm);
    assert!(w.nodes[w.index("a")].tun_routes().contains(&host));
    assert!(w.nodes[w.index("c")].tun_routes().contains(&host));

    // a repointed its LAN (gratuitous ARP, request form, our MAC) ...
    let a_garp = w.sent_by("a").iter().any(|e| {
        matches!(e.kind, EventKind::GratuitousRequest { ip: i, mac: m } if i == vm && m == mac(1, 0xfe))
    });
    assert!(
        a_garp,
        "source router must announce itself for the VM: {:?}",
        w.sent_by("a")
    );
    // ... and b repointed the VM's cache for its old gateway and neighbour to b's MAC.
    for old in [ip(1, 254), ip(1, 2)] {
        let fixed = w.sent_by("b").iter().any(|e| {
            e.eth_dst == mac(1, 1)
                && matches!(e.kind, EventKind::GratuitousRequest { ip: i, mac: m } if i == old && m == mac(2, 0xfe))
        });
        assert!(fixed, "b must repoint the VM's entry for {old}");
    }
    assert!(w.elapsed() > Duration::from_secs(2));
}

#[test]
fn proxy_arp_answers_for_moved_hosts_and_old_neighbours_at_once() {
    let mut w = World::new(&["a", "b", "c"], false);
    let vm = ip(1, 1);
    w.migrate(vm, "b", Detection::GratuitousArp);
    w.assert_location(vm, "b");
    for node in &mut w.transmitted {
        node.clear();
    }
    // A host left at a asks for the moved VM: a answers with its own MAC.
    let a = w.index("a");
    w.lan_frame(a, &frames::arp_request(mac(1, 2), ip(1, 2), vm));
    w.settle();
    let answered = w.sent_by("a").iter().any(|e| {
        matches!(e.kind, EventKind::Reply { sender_ip, sender_mac, .. } if sender_ip == vm && sender_mac == mac(1, 0xfe))
    });
    assert!(answered, "a must proxy-answer for the moved VM");
    // The migrated VM asks b for its old neighbour: b answers with its own MAC.
    let b = w.index("b");
    w.lan_frame(b, &frames::arp_request(mac(1, 1), vm, ip(1, 2)));
    w.settle();
    let answered = w.sent_by("b").iter().any(|e| {
        matches!(e.kind, EventKind::Reply { sender_ip, sender_mac, .. } if sender_ip == ip(1, 2) && sender_mac == mac(2, 0xfe))
    });
    assert!(
        answered,
        "b must answer the migrated VM for its old neighbour"
    );
    // A host of b asking for another host of b is none of the router's business.
    w.lan_frame(b, &frames::arp_request(mac(2, 1), ip(2, 1), ip(2, 2)));
    w.settle();
    let meddled = w
        .sent_by("b")
        .iter()
        .any(|e| matches!(e.kind, EventKind::Reply { sender_ip, .. } if sender_ip == ip(2, 2)));
    assert!(!meddled);
}

#[test]
fn back_onward_and_two_at_once_converge_without_stale_state() {
    let mut w = World::new(&["a", "b", "c"], false);
    let (x, y) = (ip(1, 1), ip(2, 2));
    w.migrate(x, "b", Detection::Rarp);
    w.migrate(x, "a", Detection::Rarp);
    w.assert_location(x, "a");
    w.assert_minimal_kernel_state();
    assert!(
        w.nodes.iter().all(|n| n.lan_hosts().is_empty()),
        "back home: no LAN host routes anywhere"
    );
    assert!(
        w.nodes
            .iter()
            .all(|n| n.tun_routes().iter().all(|r| r.prefix() < 32)),
        "back home: no /32 anywhere"
    );

    w.migrate(x, "b", Detection::Rarp);
    w.migrate(x, "c", Detection::Traffic);
    w.assert_location(x, "c");
    w.assert_minimal_kernel_state();

    // Two VMs at once: both announced before either is settled.
    let (ci, ai) = (w.index("c"), w.index("a"));
    let (vx, vy) = (w.vm(x), w.vm(y));
    w.vms[vx].at = ai;
    w.vms[vy].at = ci;
    w.lan_frame(ai, &frames::rarp_announce(mac(1, 1)));
    w.lan_frame(ci, &frames::rarp_announce(mac(2, 2)));
    w.settle();
    w.advance(Duration::from_secs(1));
    w.assert_location(x, "a");
    w.assert_location(y, "c");
    w.assert_minimal_kernel_state();
    w.check_digests_agree().unwrap();
}

#[test]
fn reordered_and_duplicated_messages_give_the_same_result() {
    let mut w = World::new(&["a", "b", "c"], false);
    w.delivery = Delivery::ReversedAndDuplicated;
    let vm = ip(1, 2);
    w.migrate(vm, "b", Detection::Rarp);
    w.migrate(vm, "c", Detection::GratuitousArp);
    w.migrate(vm, "a", Detection::Rarp);
    w.assert_location(vm, "a");
    w.assert_minimal_kernel_state();
    w.check_digests_agree().unwrap();
}

#[test]
fn a_lost_update_is_recovered_by_the_periodic_digest() {
    let mut w = World::new(&["a", "b", "c"], false);
    let (b, c) = (w.index("b"), w.index("c"));
    // b's advertisement of the move never reaches c; a's forwarded copy is lost too.
    w.drop_next = Some((b, c, "entries"));
    let vm = ip(1, 1);
    let v = w.vm(vm);
    w.vms[v].at = b;
    w.lan_frame(b, &frames::rarp_announce(mac(1, 1)));
    w.settle();
    // Whether or not a's flooded copy reached c, after a digest round everyone agrees.
    w.advance(DIGEST_INTERVAL * 2);
    w.assert_location(vm, "b");
    w.assert_minimal_kernel_state();
    w.check_digests_agree().unwrap();
}

#[test]
fn a_claim_with_another_mac_or_for_an_unused_address_is_refused() {
    let mut w = World::new(&["a", "b", "c"], false);
    let victim = ip(1, 1);
    let b = w.index("b");
    // A VM at b claims a1's address with its own MAC, repeatedly, and answers probes for it.
    let spoofer = MacAddr([0x02, 0, 0, 0, 0, 0x66]);
    w.vms.push(Vm {
        ip: victim,
        mac: spoofer,
        at: b,
    });
    w.lan_frame(b, &frames::gratuitous_arp_request(spoofer, victim));
    w.lan_frame(b, &frames::gratuitous_arp_request(spoofer, victim));
    w.settle();
    w.advance(Duration::from_secs(2));
    w.assert_location(victim, "a");
    assert_eq!(
        w.nodes[b].counters().get(Counter::RefusedUnresolved),
        1,
        "a does not vouch for that MAC"
    );
    // The same for an address nobody uses: no binding, no owner to vouch, no move.
    let unused = ip(3, 77);
    w.vms.push(Vm {
        ip: unused,
        mac: spoofer,
        at: b,
    });
    w.advance(Duration::from_secs(3));
    w.lan_frame(b, &frames::gratuitous_arp_request(spoofer, unused));
    w.lan_frame(b, &frames::gratuitous_arp_request(spoofer, unused));
    w.settle();
    w.advance(Duration::from_secs(2));
    assert_eq!(
        w.nodes[b].gndt().owner(unused).map(SiteId::as_str),
        Some("c")
    );
    assert!(!w.nodes[b].lndt().contains(unused));
    // A forged frame (Ethernet source differs from the sender MAC) moves nothing.
    let mut forged = frames::gratuitous_arp_request(mac(3, 1), ip(3, 1));
    forged[6..12].copy_from_slice(&spoofer.0);
    w.lan_frame(b, &forged);
    w.advance(Duration::from_secs(1));
    w.assert_location(ip(3, 1), "c");
    assert_eq!(w.nodes[b].counters().get(Counter::ForgedFrames), 1);
}

#[test]
fn a_claim_with_a_spoofed_mac_is_taken_back_frozen_by_the_real_hosts_site() {
    let mut w = World::new(&["a", "b", "c"], false);
    let victim = ip(1, 1);
    let (a, b) = (w.index("a"), w.index("b"));
    // A VM at b spoofs a1's MAC and address and answers probes; a1 is still at a.
    w.vms.push(Vm {
        ip: victim,
        mac: mac(1, 1),
        at: b,
    });
    // b cannot tell it from a1 arriving: it takes the address over at once ...
    w.delivery = Delivery::Manual;
    w.lan_frame(b, &frames::gratuitous_arp_request(mac(1, 1), victim));
    w.pump();
    assert_eq!(
        w.nodes[b].gndt().owner(victim).map(SiteId::as_str),
        Some("b")
    );
    // ... until a, where the real a1 still answers its still-here probe, takes it back.
    w.delivery = Delivery::InOrder;
    w.settle();
    w.advance(Duration::from_secs(1));
    // The real a1 still answers at a: a takes the address back, frozen, and everyone follows.
    w.assert_location(victim, "a");
    assert_eq!(w.nodes[a].counters().get(Counter::RefusedStillHere), 1);
    assert!(
        w.nodes.iter().all(|n| !n.frozen(w.now).is_empty()),
        "every router must freeze the address"
    );
    // Further claims, past the announcement window, are refused outright.
    w.advance(Duration::from_secs(3));
    w.lan_frame(b, &frames::rarp_announce(mac(1, 1)));
    w.advance(Duration::from_secs(3));
    w.assert_location(victim, "a");
    assert!(w.nodes[b].counters().get(Counter::RefusedFrozen) >= 1);
}

#[test]
fn an_optimistic_takeover_the_vm_never_confirms_is_rolled_back_everywhere() {
    let mut w = World::new(&["a", "b", "c"], false);
    let vm = ip(1, 1);
    let (a, b) = (w.index("a"), w.index("b"));
    // a1 arrives at b but stays mute (a guest that does not resume in time).
    w.mute.insert(vm);
    w.arrive(vm, b, Announce::RarpBurst);
    // Taken over on the announcement: every router follows b at once.
    w.assert_location(vm, "b");
    let record = destination_records(&w.nodes[b])[0].clone();
    assert_eq!(record.outcome, Outcome::InProgress, "not confirmed yet");
    assert!(record.advertised.is_some() && record.confirmed.is_none());
    // No answer within the confirmation timeout: rolled back, a holds a1 again, frozen.
    w.advance(DEFAULT_CONFIRM_TIMEOUT + Duration::from_millis(10));
    w.assert_location(vm, "a");
    w.assert_minimal_kernel_state();
    for node in &w.nodes {
        assert!(
            node.frozen(w.now).iter().any(|(ip, _)| *ip == vm),
            "router {} must freeze {vm}",
            node.me()
        );
        let entry = &node.gndt().get(Ipv4Network::from(vm)).unwrap().entry;
        assert_eq!(
            (entry.site().as_str(), entry.frozen, entry.withdrawn),
            ("a", true, false),
            "router {} holds {entry:?}",
            node.me()
        );
    }
    assert_eq!(w.nodes[b].counters().get(Counter::RefusedUnconfirmed), 1);
    assert_eq!(
        destination_records(&w.nodes[b])[0].outcome,
        Outcome::Refused(RefusalReason::Unconfirmed)
    );
    // The take-back is a's own entry; b only ever withdrew its own.
    let digests: Vec<u64> = w.nodes.iter().map(|n| n.gndt().digest()).collect();
    assert!(digests.windows(2).all(|d| d[0] == d[1]), "{digests:?}");
    assert_eq!(w.nodes[a].counters().get(Counter::RefusedStillHere), 0);
    // Once it answers and the freeze is over, its own traffic moves it for good.
    w.mute.clear();
    w.advance(skyvine_tables::DampingConfig::default().freeze + Duration::from_secs(1));
    w.speak(vm);
    w.advance(Duration::from_secs(1));
    w.assert_location(vm, "b");
    w.assert_minimal_kernel_state();
}

#[test]
fn routing_optimization_introduces_the_vm_to_its_new_neighbours() {
    let mut w = World::new(&["a", "b", "c"], true);
    // Before: a host of b asks for a VM of a (same /16): b answers for it.
    let b = w.index("b");
    w.lan_frame(b, &frames::arp_request(mac(2, 1), ip(2, 1), ip(1, 1)));
    w.settle();
    assert!(w
        .sent_by("b")
        .iter()
        .any(|e| matches!(e.kind, EventKind::Reply { sender_ip, .. } if sender_ip == ip(1, 1))));
    w.migrate(ip(1, 1), "b", Detection::Rarp);
    w.assert_location(ip(1, 1), "b");
    // b tells its LAN the VM's real MAC, and tells the VM its new neighbours' real MACs.
    let introduced_vm = w.sent_by("b").iter().any(|e| {
        e.eth_dst == MacAddr::BROADCAST
            && matches!(e.kind, EventKind::GratuitousRequest { ip: i, mac: m } if i == ip(1, 1) && m == mac(1, 1))
    });
    let introduced_neighbour = w.sent_by("b").iter().any(|e| {
        e.eth_dst == mac(1, 1)
            && matches!(e.kind, EventKind::GratuitousRequest { ip: i, mac: m } if i == ip(2, 1) && m == mac(2, 1))
    });
    assert!(
        introduced_vm && introduced_neighbour,
        "{:?}",
        w.sent_by("b")
    );
    // b no longer answers for the VM: its neighbours reach it directly.
    for node in &mut w.transmitted {
        node.clear();
    }
    w.lan_frame(b, &frames::arp_request(mac(2, 1), ip(2, 1), ip(1, 1)));
    w.settle();
    assert!(!w
        .sent_by("b")
        .iter()
        .any(|e| matches!(e.kind, EventKind::Reply { sender_ip, .. } if sender_ip == ip(1, 1))));
}

#[test]
fn without_an_advertised_binding_the_owning_router_is_asked() {
    let vm = ip(1, 2);
    let mut w = World::with_silent(&["a", "b", "c"], false, &[vm]);
    let (a, b) = (w.index("a"), w.index("b"));
    // a2 speaks for the first time; a's advertisement of it to b is lost.
    w.drop_next = Some((a, b, "entries"));
    w.lan_frame(a, &frames::arp_request(mac(1, 2), vm, ip(1, 254)));
    w.settle();
    assert!(
        w.nodes[b].gndt().hosts_by_mac(mac(1, 2)).next().is_none(),
        "b must not know a2"
    );
    // a2 migrates to b: b has no binding for its MAC and asks; only a vouches for it.
    let v = w.vm(vm);
    w.vms[v].at = b;
    w.lan_frame(b, &frames::rarp_announce(mac(1, 2)));
    w.settle();
    // b's claim does not know a's entry (it was lost) and is not newer than it: a refuses it
    // until the digests repair b's view; then b's claim, checked again, wins.
    w.advance(skyvine_core::node::DIGEST_INTERVAL * 2);
    w.assert_location(vm, "b");
    let records: BTreeMap<_, _> = destination_records(&w.nodes[b])
        .iter()
        .map(|r| (r.ip, r.outcome))
        .collect();
    assert_eq!(records.get(&Some(vm)), Some(&Outcome::Applied));
}

#[test]
fn an_unannounced_vm_is_found_by_its_frames_to_its_old_gateway() {
    let mut w = World::new(&["a", "b", "c"], false);
    let vm = ip(1, 1);
    let b = w.index("b");
    // b watches for frames to the MACs of other sites, including a's router.
    assert!(w.nodes[b].foreign_macs().contains(&mac(1, 0xfe)));
    assert!(!w.nodes[b].foreign_macs().contains(&mac(2, 1)));
    let v = w.vm(vm);
    w.vms[v].at = b;
    // The VM, silent on ARP, sends an IP packet to its old gateway's MAC: b sees it flooded.
    w.nodes[b].handle_foreign_frame(mac(1, 1), vm, w.now);
    w.settle();
    w.advance(Duration::from_secs(1));
    w.assert_location(vm, "b");
    let records = destination_records(&w.nodes[b]);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].detection, Detection::Traffic);
    // Frames from b's own hosts to foreign MACs are nothing to act on.
    w.nodes[b].handle_foreign_frame(mac(2, 1), ip(2, 1), w.now);
    w.settle();
    assert_eq!(destination_records(&w.nodes[b]).len(), 1);
}

#[test]
fn the_old_site_relays_packets_in_flight_for_a_short_while() {
    let mut w = World::new(&["a", "b", "c"], false);
    let vm = ip(1, 1);
    w.migrate(vm, "b", Detection::Rarp);
    let (a, b) = (w.index("a"), w.index("b"));
    let now = w.now;
    let old = w.nodes[a].fib_snapshot(w.now);
    let new = w.nodes[b].fib_snapshot(w.now);
    assert_eq!(old.relay_target(vm, now), Some(&site("b")));
    assert_eq!(
        old.relay_target(ip(1, 2), now),
        None,
        "only the host that left"
    );
    // b accepts a's relay of c1's packet to the VM, but not from c, nor to another host,
    // nor with one of b's own addresses as source.
    assert!(new.accept_relayed(&site("a"), ip(3, 1), vm, now).is_ok());
    assert!(new.accept_relayed(&site("c"), ip(3, 1), vm, now).is_err());
    assert!(new
        .accept_relayed(&site("a"), ip(3, 1), ip(2, 1), now)
        .is_err());
    assert!(new.accept_relayed(&site("a"), ip(2, 2), vm, now).is_err());
    // The window closes.
    let later = now + skyvine_core::node::RELAY_WINDOW;
    assert_eq!(old.relay_target(vm, later), None);
    assert!(new.accept_relayed(&site("a"), ip(3, 1), vm, later).is_err());
    // Back home: a no longer relays, it delivers.
    w.migrate(vm, "a", Detection::Rarp);
    assert_eq!(w.nodes[a].fib_snapshot(w.now).relay_target(vm, w.now), None);
    assert_eq!(
        w.nodes[b].fib_snapshot(w.now).relay_target(vm, w.now),
        Some(&site("a"))
    );
}

#[test]
fn at_100_sites_a_move_reaches_every_router_in_one_one_way_delay() {
    let names: Vec<String> = (0..100).map(|i| format!("s{i:03}")).collect();
    let sites: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut w = World::new(&sites, false);
    w.delivery = Delivery::Manual;
    let vm = ip(1, 1);
    let dest = w.index("s050");
    w.arrive(vm, dest, Announce::RarpBurst);
    // What is in flight now crosses the network once (one one-way delay): the destination's
    // update, sent straight to every other router, and nothing relayed.
    let first_hop = w.wire.len();
    assert_eq!(first_hop, 99, "one update per peer: {:?}", w.wire);
    assert!(w.wire.iter().all(|e| e.from == dest));
    for _ in 0..first_hop {
        // The oldest in flight; what its delivery makes goes behind the first hop.
        w.deliver(0);
    }
    for (i, node) in w.nodes.iter().enumerate() {
        assert_eq!(
            node.gndt().owner(vm),
            Some(&site("s050")),
            "router {} after one hop",
            w.names[i]
        );
    }
    w.delivery = Delivery::InOrder;
    w.advance(Duration::from_secs(5));
    w.assert_location(vm, "s050");
    w.check_converged().unwrap();
}
