//! Root-only tests of [`Kernel`] against a real kernel, in a throw-away network namespace.
//! Without root they print that they were skipped and pass, unless
//! `SKYVINE_REQUIRE_ROOT_TESTS=1` (CI sets it) makes them fail instead.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use skyvine_core::node::{KernelOp, KernelRoute};

use super::super::{Desired, Dev, Kernel, KernelError};
use super::{ip, mac, net, route};

/// A network namespace with `tun0` and `lan0` (10.77.1.254/24), deleted on drop, also when
/// the test panics. Both are veth devices (whose peers stay in the namespace): this kernel
/// has no dummy driver, and a veth pair, unlike an unattached TUN, has carrier.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ns = Netns(format!("svk{}-{n}", std::process::id()));
        ip_cmd(&["netns", "add", &ns.0]);
        for (dev, peer) in [("tun0", "tun0p"), ("lan0", "lan0p")] {
            ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", peer]);
            ns.ip(&["link", "set", dev, "up"]);
            ns.ip(&["link", "set", peer, "up"]);
        }
        ns.ip(&["addr", "add", "10.77.1.254/24", "dev", "lan0"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.0.as_str()];
        full.extend_from_slice(args);
        ip_cmd(&full)
    }

    /// `ip route show proto 90`, sorted lines.
    fn our_routes(&self) -> Vec<String> {
        lines(&self.ip(&["-4", "route", "show", "proto", "90"]))
    }

    /// Permanent neighbour entries on lan0, sorted lines.
    fn permanent_neighbours(&self) -> Vec<String> {
        lines(&self.ip(&["-4", "neigh", "show", "dev", "lan0", "nud", "permanent"]))
    }

    /// Runs `body` on a thread inside the namespace with its own current-thread runtime:
    /// netlink sockets belong to the namespace of the thread that opens them.
    fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let path = format!("/var/run/netns/{}", self.0);
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(body());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip_cmd(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn lines(s: &str) -> Vec<String> {
    let mut lines: Vec<String> = s.lines().map(|l| l.trim().to_owned()).collect();
    lines.sort();
    lines
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let required = std::env::var("SKYVINE_REQUIRE_ROOT_TESTS").is_ok_and(|v| v.trim() == "1");
        assert!(
            !required,
            "this test needs root (a network namespace) and SKYVINE_REQUIRE_ROOT_TESTS=1 forbids \
             skipping it"
        );
        println!("skipped: needs root to create a network namespace");
    }
    root
}

#[test]
fn targeted_changes_replace_in_place_and_repairs_skip_what_they_touched() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let host = net("10.77.1.1/32");
    let m = mac("52:54:00:77:01:01");
    let lan = KernelRoute::Lan { mac: Some(m) };
    ns.run(move || async move {
        let mut kernel = Kernel::connect("tun0", "lan0").await.unwrap();
        // The VM migrated away: one route into the TUN.
        let set = |route, previous| KernelOp::Set {
            dst: host,
            route,
            previous,
        };
        let changes = kernel
            .apply_op(&set(KernelRoute::Tun, None), None)
            .await
            .unwrap();
        assert_eq!(changes.added.len(), 1, "{changes:?}");
        // It comes back migrated in elsewhere... here: neighbour, then the route replaced.
        let changes = kernel
            .apply_op(&set(lan, Some(KernelRoute::Tun)), None)
            .await
            .unwrap();
        let added: Vec<String> = changes.added.iter().map(ToString::to_string).collect();
        assert_eq!(
            added,
            [
                "neighbour 10.77.1.1 lladdr 52:54:00:77:01:01 dev lan",
                "route 10.77.1.1/32 dev lan"
            ]
        );
    });
    assert_eq!(ns.our_routes(), ["10.77.1.1 dev lan0 scope link"]);
    assert_eq!(
        ns.permanent_neighbours(),
        ["10.77.1.1 lladdr 52:54:00:77:01:01 PERMANENT proto 90"]
    );
    // A route for a prefix that is not ours: the targeted add fails (a repair will say why)
    // and leaves it alone.
    ns.ip(&["route", "add", "10.77.9.0/24", "dev", "lan0"]);
    ns.run(move || async move {
        let mut kernel = Kernel::connect("tun0", "lan0").await.unwrap();
        let foreign = KernelOp::Set {
            dst: net("10.77.9.0/24"),
            route: KernelRoute::Tun,
            previous: None,
        };
        let err = kernel.apply_op(&foreign, None).await.unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        // A repair from a dump taken before the move back: the touched host is skipped, the
        // rest is made to match.
        let dump = kernel.dumper().dump().await.unwrap();
        let desired = Desired {
            tun_routes: BTreeSet::from([net("10.77.2.0/24")]),
            lan_hosts: BTreeMap::new(),
            route_mtus: BTreeMap::new(),
        };
        let changes = kernel
            .repair(dump, &desired, &BTreeSet::from([host]))
            .await
            .unwrap();
        assert_eq!(changes.added.len(), 1, "{changes:?}");
        assert!(changes.removed.is_empty(), "{changes:?}");
        // Home: the /32 and its neighbour entry go.
        let remove = KernelOp::Remove {
            dst: host,
            previous: lan,
        };
        assert_eq!(
            kernel.apply_op(&remove, None).await.unwrap().removed.len(),
            2
        );
    });
    assert_eq!(ns.our_routes(), ["10.77.2.0/24 dev tun0 scope link"]);
    assert!(ns.permanent_neighbours().is_empty());
    assert_eq!(
        lines(&ns.ip(&["-4", "route", "show", "10.77.9.0/24"])),
        ["10.77.9.0/24 dev lan0 scope link"]
    );
}

#[test]
fn reconcile_installs_repairs_and_removes_in_a_namespace() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let desired = Desired {
        tun_routes: BTreeSet::from([
            net("10.77.2.0/24"),
            net("10.77.3.0/24"),
            // A VM that migrated away: more specific than lan0's connected /24.
            net("10.77.1.1/32"),
        ]),
        lan_hosts: BTreeMap::from([
            (ip("10.77.2.5"), Some(mac("52:54:00:77:02:05"))),
            (ip("10.77.3.7"), None),
        ]),
        route_mtus: BTreeMap::new(),
    };
    let expected_routes = vec![
        "10.77.1.1 dev tun0 scope link",
        "10.77.2.0/24 dev tun0 scope link",
        "10.77.2.5 dev lan0 scope link",
        "10.77.3.0/24 dev tun0 scope link",
        "10.77.3.7 dev lan0 scope link",
    ];
    let first = desired.clone();
    let routes_after_first = {
        let (ns_name, d) = (ns.0.clone(), first);
        ns.run(move || async move {
            let mut kernel = Kernel::connect("tun0", "lan0").await.unwrap();
            let changes = kernel.reconcile(&d).await.unwrap();
            assert_eq!(changes.added.len(), 6, "{changes:?}");
            assert!(changes.removed.is_empty(), "{changes:?}");
            // Same set again: nothing to do.
            let again = kernel.reconcile(&d).await.unwrap();
            assert!(again.is_empty(), "{again:?} in {ns_name}");
        });
        ns.our_routes()
    };
    assert_eq!(routes_after_first, expected_routes);
    assert_eq!(
        ns.permanent_neighbours(),
        vec!["10.77.2.5 lladdr 52:54:00:77:02:05 PERMANENT proto 90"]
    );

    // A leftover of a crashed instance, a route an operator deleted, a route not ours.
    ns.ip(&["route", "add", "10.99.0.0/16", "dev", "lan0", "proto", "90"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.77.1.77",
        "lladdr",
        "52:54:00:77:01:77",
        "dev",
        "lan0",
        "nud",
        "permanent",
        "proto",
        "90",
    ]);
    ns.ip(&["route", "del", "10.77.2.0/24", "dev", "tun0"]);
    ns.ip(&["route", "add", "10.98.0.0/16", "dev", "lan0"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.77.1.88",
        "lladdr",
        "52:54:00:77:01:88",
        "dev",
        "lan0",
        "nud",
        "permanent",
    ]);

    // A restarted router (new connection) with a changed desired set: one prefix gone,
    // one host gone, one MAC changed.
    let mut second = desired.clone();
    second.tun_routes.remove(&net("10.77.3.0/24"));
    second.lan_hosts.remove(&ip("10.77.3.7"));
    second
        .lan_hosts
        .insert(ip("10.77.2.5"), Some(mac("52:54:00:77:02:06")));
    ns.run(move || async move {
        let mut kernel = Kernel::connect("tun0", "lan0").await.unwrap();
        let changes = kernel.reconcile(&second).await.unwrap();
        let added: BTreeSet<String> = changes.added.iter().map(ToString::to_string).collect();
        let removed: BTreeSet<String> = changes.removed.iter().map(ToString::to_string).collect();
        assert_eq!(
            added,
            BTreeSet::from([
                "route 10.77.2.0/24 dev tun".to_owned(),
                "neighbour 10.77.2.5 lladdr 52:54:00:77:02:06 dev lan".to_owned(),
            ])
        );
        assert_eq!(
            removed,
            BTreeSet::from([
                "route 10.77.3.0/24 dev tun".to_owned(),
                "route 10.77.3.7/32 dev lan".to_owned(),
                "route 10.99.0.0/16 dev lan".to_owned(),
                "neighbour 10.77.1.77 lladdr 52:54:00:77:01:77 dev lan".to_owned(),
                "neighbour 10.77.2.5 lladdr 52:54:00:77:02:05 dev lan".to_owned(),
            ])
        );
        assert!(kernel.reconcile(&second).await.unwrap().is_empty());
    });
    assert_eq!(
        ns.our_routes(),
        vec![
            "10.77.1.1 dev tun0 scope link",
            "10.77.2.0/24 dev tun0 scope link",
            "10.77.2.5 dev lan0 scope link",
        ]
    );
    assert_eq!(
        ns.permanent_neighbours(),
        vec![
            "10.77.1.88 lladdr 52:54:00:77:01:88 PERMANENT",
            "10.77.2.5 lladdr 52:54:00:77:02:06 PERMANENT proto 90",
        ]
    );

    // Graceful shutdown removes ours only.
    ns.run(|| async {
        let mut kernel = Kernel::connect("tun0", "lan0").await.unwrap();
        let changes = kernel.clear().await.unwrap();
        assert_eq!(changes.removed.len(), 4, "{changes:?}");
        assert!(kernel.clear().await.unwrap().is_empty());
    });
    assert!(ns.our_routes().is_empty(), "{:?}", ns.our_routes());
    assert_eq!(
        ns.permanent_neighbours(),
        vec!["10.77.1.88 lladdr 52:54:00:77:01:88 PERMANENT"]
    );
    assert_eq!(
        lines(&ns.ip(&["-4", "route", "show", "10.98.0.0/16"])),
        vec!["10.98.0.0/16 dev lan0 scope link"]
    );
}

#[test]
fn connect_names_a_missing_interface_and_apply_errors_name_the_entry() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    // Routes via a device that is down are refused (ENETDOWN).
    ns.ip(&["link", "set", "tun0", "down"]);
    ns.run(|| async {
        let err = Kernel::connect("tun0", "nosuch0").await.unwrap_err();
        assert!(
            matches!(&err, KernelError::NoSuchInterface { name } if name == "nosuch0"),
            "{err}"
        );
        assert!(err.to_string().contains("nosuch0"), "{err}");

        let mut kernel = Kernel::connect("tun0", "lan0").await.unwrap();
        let desired = Desired {
            tun_routes: BTreeSet::from([net("10.77.2.0/24")]),
            lan_hosts: BTreeMap::from([(ip("10.77.2.5"), None)]),
            route_mtus: BTreeMap::new(),
        };
        match kernel.reconcile(&desired).await {
            Err(err @ KernelError::Apply { .. }) => {
                let message = err.to_string();
                let KernelError::Apply { changes, failures } = err else {
                    unreachable!()
                };
                assert_eq!(changes.added, vec![route("10.77.2.5/32", Dev::Lan)]);
                assert_eq!(failures.len(), 1, "{failures:?}");
                assert_eq!(failures[0].entry, route("10.77.2.0/24", Dev::Tun));
                assert!(
                    message.contains("add route 10.77.2.0/24 dev tun"),
                    "{message}"
                );
                println!("{message}");
            }
            other => panic!("expected a partial failure, got {other:?}"),
        }
    });
}

#[test]
fn a_relayed_site_gets_a_route_mtu_changed_in_place() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let relayed = |mtu: Option<u32>| Desired {
        tun_routes: BTreeSet::from([net("10.77.2.0/24"), net("10.77.3.0/24")]),
        route_mtus: mtu
            .map(|mtu| BTreeMap::from([(net("10.77.3.0/24"), mtu)]))
            .unwrap_or_default(),
        ..Desired::default()
    };
    let ns_name = ns.0.clone();
    ns.run(move || async move {
        let mut kernel = Kernel::connect("tun0", "lan0").await.unwrap();
        kernel.reconcile(&relayed(Some(1323))).await.unwrap();
        let shown = |ns: &str| lines(&ip_cmd(&["-n", ns, "-4", "route", "show", "proto", "90"]));
        assert_eq!(
            shown(&ns_name),
            [
                "10.77.2.0/24 dev tun0 scope link",
                "10.77.3.0/24 dev tun0 scope link mtu 1323"
            ]
        );
        // The reconciler reads the MTU back: nothing to do the second time.
        assert!(kernel
            .reconcile(&relayed(Some(1323)))
            .await
            .unwrap()
            .is_empty());
        // A new MTU, then none: the route is replaced, never missing in between.
        let changes = kernel.reconcile(&relayed(Some(1300))).await.unwrap();
        assert_eq!(changes.added.len(), 1, "{changes:?}");
        assert!(shown(&ns_name).contains(&"10.77.3.0/24 dev tun0 scope link mtu 1300".to_owned()));
        kernel.reconcile(&relayed(None)).await.unwrap();
        assert!(shown(&ns_name).contains(&"10.77.3.0/24 dev tun0 scope link".to_owned()));
    });
}
