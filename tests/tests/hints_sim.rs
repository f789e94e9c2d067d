//! Planned-migration hints in the deterministic sans-IO world (`skyvine_tests::sim`): who may
//! announce one (only the address's owner, for the MAC it advertised, to a known site, for a
//! sane window, not for a frozen or pinned address), how a destination asks the owner, what
//! the windows do to the forwarding view, and how they end (committed by the move, cancelled,
//! or expired everywhere).

use std::time::Duration;

use skyvine_core::node::{Counter, HintError, HintOutcome, Node, NodeConfig, MAX_PREPARE_WINDOW};
use skyvine_core::proto::Message;
use skyvine_tables::MacAddr;
use skyvine_tests::sim::{ip, mac, site, Announce, World};

const WINDOW: Duration = Duration::from_secs(60);

fn world() -> World {
    World::new(&["a", "b", "c"], false)
}

fn world_with(configure: impl Fn(&mut NodeConfig)) -> World {
    World::build(&["a", "b", "c"], &[], configure)
}

/// Every router's window for `vm`: (from, to) or none.
fn windows(w: &World, vm: std::net::Ipv4Addr) -> Vec<Option<(String, String)>> {
    w.nodes
        .iter()
        .map(|n| {
            n.prepared()
                .find(|p| p.ip == vm)
                .map(|p| (p.from.to_string(), p.to.to_string()))
        })
        .collect()
}

fn refused(node: &Node) -> u64 {
    node.counters().get(Counter::HintsRefused)
}

/// A hint from `from` delivered straight to router `at`.
fn hint_from(w: &mut World, from: &str, at: usize, message: Message) {
    let now = w.now;
    w.nodes[at].handle_message(&site(from), message, now);
    w.settle();
}

fn prepare(vm: std::net::Ipv4Addr, vm_mac: MacAddr, to: &str, window_ms: u64) -> Message {
    Message::Prepare {
        ip: vm,
        mac: vm_mac,
        to: site(to),
        window_ms,
    }
}

#[test]
fn the_owner_announces_a_window_and_the_first_announcement_commits_it() {
    let mut w = world();
    let vm = ip(1, 1);
    let (a, b, c) = (w.index("a"), w.index("b"), w.index("c"));
    let now = w.now;
    let outcome = w.nodes[a]
        .prepare(Some(vm), mac(1, 1), site("b"), None, now)
        .unwrap();
    assert!(matches!(outcome, HintOutcome::Announced(ref p) if p.until == now + WINDOW));
    w.settle();
    let open = Some(("a".to_owned(), "b".to_owned()));
    assert_eq!(windows(&w, vm), [open.clone(), open.clone(), open]);
    // c sends copies to b; b drops what arrives before the VM; a copies its LAN's packets.
    let c_view = w.nodes[c].fib_snapshot(w.now);
    assert_eq!(c_view.copy_to(vm), Some(&site("b")));
    assert!(w.nodes[b].fib_snapshot(w.now).arriving_early(vm));
    assert_eq!(w.nodes[a].fib_snapshot(w.now).copy_to(vm), Some(&site("b")));
    assert!(w.lan_copies[a].contains(&vm));
    assert_eq!(w.nodes[c].counters().get(Counter::Hints), 1);
    // The VM arrives at b: taken over as without a hint; every window closes, committed.
    w.arrive(vm, b, Announce::RarpBurst);
    w.assert_location(vm, "b");
    assert_eq!(windows(&w, vm), [None, None, None]);
    assert!(w.lan_copies[a].is_empty(), "a stops copying");
    assert_eq!(w.nodes[c].fib_snapshot(w.now).copy_to(vm), None);
    assert!(!w.nodes[b].fib_snapshot(w.now).arriving_early(vm));
    w.advance(Duration::from_secs(5));
    w.check_converged().unwrap();
}

#[test]
fn the_destination_asks_the_owner_which_alone_announces() {
    let mut w = world();
    let vm = ip(1, 1);
    let (b, c) = (w.index("b"), w.index("c"));
    let now = w.now;
    // As the libvirt hook does on the destination host: the MAC only.
    let outcome = w.nodes[b]
        .prepare(None, mac(1, 1), site("b"), None, now)
        .unwrap();
    assert_eq!(
        outcome,
        HintOutcome::Forwarded {
            owner: site("a"),
            ip: vm
        }
    );
    w.settle();
    let open = Some(("a".to_owned(), "b".to_owned()));
    assert_eq!(windows(&w, vm), [open.clone(), open.clone(), open]);
    // A third router cannot prepare a move it is neither source nor destination of.
    let error = w.nodes[c]
        .prepare(Some(vm), mac(1, 1), site("b"), None, now)
        .unwrap_err();
    assert!(matches!(error, HintError::Elsewhere { .. }), "{error}");
    // b cancels (libvirt aborted the migration): a ends the window everywhere.
    let outcome = w.nodes[b]
        .cancel_prepared(None, Some(mac(1, 1)), w.now)
        .unwrap();
    assert!(matches!(outcome, HintOutcome::Forwarded { .. }));
    w.settle();
    assert_eq!(windows(&w, vm), [None, None, None]);
}

#[test]
fn a_window_without_an_announcement_expires_everywhere() {
    let mut w = world();
    let vm = ip(1, 1);
    let a = w.index("a");
    let now = w.now;
    w.nodes[a]
        .prepare(
            Some(vm),
            mac(1, 1),
            site("b"),
            Some(Duration::from_secs(5)),
            now,
        )
        .unwrap();
    w.settle();
    w.advance(Duration::from_secs(5));
    assert_eq!(windows(&w, vm), [None, None, None]);
    for node in &w.nodes {
        assert_eq!(
            node.counters().get(Counter::HintsExpired),
            1,
            "{}",
            node.me()
        );
    }
    assert!(w.lan_copies[a].is_empty());
    // a's LAN is told where the VM is again.
    let back = w.sent_by("a").iter().any(|e| {
        e.eth_dst == MacAddr::BROADCAST
            && matches!(e.kind, skyvine_capture::wire::EventKind::GratuitousRequest { ip: i, mac: m } if i == vm && m == mac(1, 1))
    });
    assert!(back, "{:?}", w.sent_by("a"));
    w.assert_location(vm, "a");
}

#[test]
fn a_hint_is_accepted_only_from_the_owner() {
    let mut w = world();
    let vm = ip(1, 1);
    let b = w.index("b");
    // c says a's VM moves to b: c does not own it.
    hint_from(&mut w, "c", b, prepare(vm, mac(1, 1), "b", 60_000));
    assert!(w.nodes[b].prepared().next().is_none());
    assert_eq!(refused(&w.nodes[b]), 1);
    // The same from a is taken.
    hint_from(&mut w, "a", b, prepare(vm, mac(1, 1), "b", 60_000));
    assert_eq!(w.nodes[b].prepared().count(), 1);
}

#[test]
fn a_hint_must_name_the_mac_the_owner_advertised() {
    let mut w = world();
    let b = w.index("b");
    hint_from(&mut w, "a", b, prepare(ip(1, 1), mac(1, 2), "b", 60_000));
    assert!(w.nodes[b].prepared().next().is_none());
    assert_eq!(refused(&w.nodes[b]), 1);
}

#[test]
fn a_hint_must_name_a_known_destination_other_than_its_source() {
    let mut w = world();
    let c = w.index("c");
    hint_from(&mut w, "a", c, prepare(ip(1, 1), mac(1, 1), "zz", 60_000));
    hint_from(&mut w, "a", c, prepare(ip(1, 1), mac(1, 1), "a", 60_000));
    assert!(w.nodes[c].prepared().next().is_none());
    assert_eq!(refused(&w.nodes[c]), 2);
}

#[test]
fn a_hint_needs_a_sane_window_and_an_address_that_may_move() {
    let vm = ip(1, 1);
    let mut w = world_with(|config| config.pinned = vec![ip(1, 2)]);
    let c = w.index("c");
    let too_long = u64::try_from(MAX_PREPARE_WINDOW.as_millis()).unwrap() + 1;
    hint_from(&mut w, "a", c, prepare(vm, mac(1, 1), "b", 0));
    hint_from(&mut w, "a", c, prepare(vm, mac(1, 1), "b", too_long));
    hint_from(&mut w, "a", c, prepare(ip(1, 2), mac(1, 2), "b", 60_000));
    assert!(w.nodes[c].prepared().next().is_none());
    assert_eq!(refused(&w.nodes[c]), 3);
    hint_from(&mut w, "a", c, prepare(vm, mac(1, 1), "b", 60_000));
    assert_eq!(w.nodes[c].prepared().count(), 1);
}

#[test]
fn a_request_reaches_only_the_owner_and_an_end_only_counts_from_it() {
    let mut w = world();
    let vm = ip(1, 1);
    let (a, b, c) = (w.index("a"), w.index("b"), w.index("c"));
    // b asks c (not the owner) to announce a's VM: refused, nothing opens anywhere.
    let request = Message::PrepareRequest {
        ip: Some(vm),
        mac: mac(1, 1),
        window_ms: 60_000,
    };
    hint_from(&mut w, "b", c, request.clone());
    assert_eq!(refused(&w.nodes[c]), 1);
    assert_eq!(windows(&w, vm), [None, None, None]);
    // The owner takes it; then c, not the owner, cannot end the window at b.
    hint_from(&mut w, "b", a, request);
    assert_eq!(w.nodes[b].prepared().count(), 1);
    hint_from(
        &mut w,
        "c",
        b,
        Message::PrepareEnd {
            ip: vm,
            mac: mac(1, 1),
        },
    );
    assert_eq!(w.nodes[b].prepared().count(), 1);
    assert_eq!(refused(&w.nodes[b]), 1);
    // a may.
    hint_from(
        &mut w,
        "a",
        b,
        Message::PrepareEnd {
            ip: vm,
            mac: mac(1, 1),
        },
    );
    assert_eq!(w.nodes[b].prepared().count(), 0);
}

#[test]
fn a_window_ends_when_another_site_takes_the_address() {
    let mut w = world();
    let vm = ip(1, 1);
    let (a, c) = (w.index("a"), w.index("c"));
    let now = w.now;
    w.nodes[a]
        .prepare(Some(vm), mac(1, 1), site("b"), None, now)
        .unwrap();
    w.settle();
    // The VM goes to c instead.
    w.arrive(vm, c, Announce::RarpBurst);
    w.assert_location(vm, "c");
    assert_eq!(windows(&w, vm), [None, None, None]);
    assert!(w.lan_copies[a].is_empty());
}
