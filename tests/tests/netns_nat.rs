//! Network-namespace tests of sites behind NAT and of the relay (issue 10, part 1), on
//! `lab.sh up --nat b,c`: routers b and c each sit behind their own nftables NAT (masquerade,
//! no inbound mapping), so they can only dial out to a; a is public and relays between them.
//! Root only (with SKYVINE_REQUIRE_ROOT_TESTS=1, as in CI, they fail instead of skipping); each
//! test brings up its own lab and tears it down, also on failure, printing the router logs.
//!
//! Needs the release binaries: `cargo build --release --workspace --bins`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use skyvine_tests::{check_transfer, lab_test, vm_ip, vm_mac, wait_until_ok, Lab};

const XFER_PORT: u16 = 7800;
/// A paced transfer across an event: 4 MiB at 3 Mbit/s lasts about 11 s.
const PACED_BYTES: u64 = 4 << 20;
const PACED_MBPS: f64 = 3.0;
/// How long the routers get to agree after a change.
const CONVERGE: Duration = Duration::from_secs(15);
/// The route MTU towards a relayed site with tun.mtu 1380 and one-letter site ids.
const RELAYED_MTU: &str = "mtu 1320";

#[test]
fn nat_sites_talk_through_the_relay_and_keep_a_vm_reachable_across_a_migration() -> Result<()> {
    lab_test("nat_relay_and_migration", &["--nat", "b,c"], |lab| {
        // lab.sh up already saw all 12 pairs ping. b and c cannot be dialed at all.
        for (from, to) in [
            ("r-c", "100.64.0.2"),
            ("r-b", "100.64.0.3"),
            ("r-a", "100.64.0.2"),
        ] {
            ensure!(
                lab.run_in(from, &["ping", "-n", "-c", "1", "-W", "1", to])
                    .is_err(),
                "{from} reaches {to}: the NAT lets new connections in"
            );
        }
        expect_path(lab, "b", "c", Some("a"))?;
        expect_path(lab, "c", "b", Some("a"))?;
        expect_path(lab, "b", "a", None)?;
        // Packets towards the relayed site leave room for the relay's overhead.
        for (router, far) in [("b", "10.77.3.0/24"), ("c", "10.77.2.0/24")] {
            let routes = lab.run_in(
                &format!("r-{router}"),
                &["ip", "route", "show", "proto", "90"],
            )?;
            ensure!(
                routes
                    .lines()
                    .any(|l| l.starts_with(far) && l.contains(RELAYED_MTU)),
                "router {router} should route {far} with {RELAYED_MTU}:\n{routes}"
            );
        }

        // A full-speed checked transfer b1 -> c1 through the relay: the VMs' 1500-byte MTU
        // meets the route MTU, so this only completes if path-MTU discovery works.
        let c1 = vm_ip("c1")?;
        let server = lab.xfer_server("c1", XFER_PORT, 1)?;
        let client = lab
            .xfer_client("b1", &format!("{c1}:{XFER_PORT}"), "16M", None, 1)?
            .wait(Duration::from_secs(120))?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client, &server.stdout, 16 << 20)?;
        let relayed = relayed_packets(lab, "a", "b")?;
        ensure!(
            relayed > 10_000,
            "relay a passed on only {relayed} datagrams from b during a 16 MiB transfer"
        );

        // b1 moves to c during paced transfers b1 -> c1 (relayed before, local after) and
        // a1 -> b1 (a to NATed b before, to NATed c after).
        let b1 = vm_ip("b1")?;
        let to_c1 = lab.xfer_server("c1", XFER_PORT, 1)?;
        let to_b1 = lab.xfer_server("b1", XFER_PORT + 1, 1)?;
        let bytes = PACED_BYTES.to_string();
        let clients = [
            lab.xfer_client(
                "b1",
                &format!("{c1}:{XFER_PORT}"),
                &bytes,
                Some(PACED_MBPS),
                2,
            )?,
            lab.xfer_client(
                "a1",
                &format!("{b1}:{}", XFER_PORT + 1),
                &bytes,
                Some(PACED_MBPS),
                3,
            )?,
        ];
        wait_until_ok("both transfers are under way", CONVERGE, || {
            let to_c1 = lab.tcp_bytes_received("c1", XFER_PORT)?;
            let to_b1 = lab.tcp_bytes_received("b1", XFER_PORT + 1)?;
            Ok([to_c1, to_b1]
                .iter()
                .all(|r| r.len() == 1 && r.iter().all(|n| *n >= 256 * 1024)))
        })?;
        println!("{}", lab.migrate("b1", "c", "rarp")?);
        let mut finished = Vec::new();
        for client in clients {
            finished.push(client.wait(Duration::from_secs(240))?);
        }
        let to_c1 = to_c1.wait(Duration::from_secs(30))?.success()?;
        let to_b1 = to_b1.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&finished[0], &to_c1.stdout, PACED_BYTES)?;
        check_transfer(&finished[1], &to_b1.stdout, PACED_BYTES)?;
        lab.expect_host_at(&b1, &vm_mac("b1")?, "b", "c")?;
        for from in ["a1", "b2", "c2"] {
            lab.wait_ping(from, &b1, CONVERGE)?;
        }
        Ok(())
    })
}

#[test]
fn a_nat_rebinding_keeps_the_connections_with_wan_delay() -> Result<()> {
    lab_test(
        "nat_rebinding",
        &["--nat", "b,c", "--wan-delay-ms", "5"],
        |lab| {
            let before = peer(lab, "a", "b")?;
            let address_before = before
                .get("address")
                .and_then(Value::as_str)
                .context("a shows b's address")?
                .to_owned();
            let (mark_a, mark_b, mark_c) =
                (lab.log_mark("a"), lab.log_mark("b"), lab.log_mark("c"));
            // A transfer to b2 from the public site and one through the relay, across the new
            // mapping.
            let b2 = vm_ip("b2")?;
            let server = lab.xfer_server("b2", XFER_PORT, 2)?;
            let bytes = PACED_BYTES.to_string();
            let clients = [
                lab.xfer_client(
                    "a1",
                    &format!("{b2}:{XFER_PORT}"),
                    &bytes,
                    Some(PACED_MBPS),
                    4,
                )?,
                lab.xfer_client(
                    "c1",
                    &format!("{b2}:{XFER_PORT}"),
                    &bytes,
                    Some(PACED_MBPS),
                    5,
                )?,
            ];
            wait_until_ok("both transfers are under way", CONVERGE, || {
                let received = lab.tcp_bytes_received("b2", XFER_PORT)?;
                Ok(received.len() == 2 && received.iter().all(|n| *n >= 256 * 1024))
            })?;
            println!("{}", lab.lab_sh(&["nat-rebind", "b"])?.trim());
            // a sees b's packets from a new public port: the same QUIC connection migrated.
            wait_until_ok("a sees b at its new NAT mapping", CONVERGE, || {
                let now = peer(lab, "a", "b")?;
                Ok(now.get("address").and_then(Value::as_str) != Some(&address_before))
            })?;
            let mut finished = Vec::new();
            for client in clients {
                finished.push(client.wait(Duration::from_secs(240))?);
            }
            let server = server.wait(Duration::from_secs(30))?.success()?;
            for client in &finished {
                check_transfer(client, &server.stdout, PACED_BYTES)?;
            }
            for (site, mark) in [("a", mark_a), ("b", mark_b), ("c", mark_c)] {
                let log = lab.log_since(site, mark);
                ensure!(
                    !log.contains("connection established"),
                    "router {site} set up a new connection instead of migrating the old one:\n{log}"
                );
            }
            let after = peer(lab, "a", "b")?;
            println!(
                "a sees b at {address_before}, then at {}",
                after.get("address").unwrap_or(&Value::Null)
            );
            Ok(())
        },
    )
}

#[test]
fn a_router_refuses_to_relay_without_relay_true_or_for_an_unlisted_site() -> Result<()> {
    lab_test("relay_refusals", &["--nat", "b,c"], |lab| {
        let (b1, c1) = (vm_ip("b1")?, vm_ip("c1")?);
        let config = lab.state_dir().join("a/router.toml");
        let original = std::fs::read_to_string(&config).context("reading a's config")?;
        ensure!(original.contains("relay = true"), "a relays: {original}");

        // a without `relay = true`: b and c lose each other, a counts what it refused.
        restart_with(lab, &original.replace("relay = true\n", ""))?;
        wait_until_ok("a refuses relay datagrams", CONVERGE, || {
            Ok(lab.drop_count("a", "relay_disabled")? > 0)
        })?;
        ensure!(
            !lab.ping("b1", &c1),
            "b1 reached c1 through a router that does not relay"
        );
        lab.wait_ping("b1", &vm_ip("a1")?, CONVERGE)?;
        let c_at_b = peer(lab, "b", "c")?;
        ensure!(
            c_at_b.get("connected").and_then(Value::as_bool) == Some(false),
            "b still reaches c: {c_at_b}"
        );

        // a relays but does not list c: c still connects (a valid certificate), but may not
        // use the relay.
        let unlisted = original
            .split("\n[[peers]]\n")
            .filter(|section| !section.starts_with("site = \"c\""))
            .collect::<Vec<_>>()
            .join("\n[[peers]]\n");
        ensure!(!unlisted.contains("site = \"c\""), "{unlisted}");
        restart_with(lab, &unlisted)?;
        wait_until_ok(
            "a refuses relay datagrams from or to unlisted c",
            CONVERGE,
            || Ok(lab.drop_count("a", "relay_unlisted")? > 0),
        )?;
        ensure!(
            !lab.ping("c1", &b1),
            "c1 reached b1 through a relay that does not list c"
        );
        ensure!(relayed_packets(lab, "a", "b")? == 0, "a relayed for b");

        // The original config: b and c meet again.
        restart_with(lab, &original)?;
        lab.wait_ping("b1", &c1, Duration::from_secs(30))?;
        expect_path(lab, "b", "c", Some("a"))?;
        Ok(())
    })
}

/// Writes router a's config and restarts it.
fn restart_with(lab: &Lab, config: &str) -> Result<()> {
    std::fs::write(lab.state_dir().join("a/router.toml"), config).context("writing a's config")?;
    lab.lab_sh(&["restart-router", "a"])?;
    Ok(())
}

/// Router `site`'s row for `peer` in `skyvine peers --json`.
fn peer(lab: &Lab, site: &str, peer: &str) -> Result<Value> {
    let peers = lab.admin_json(site, "peers")?;
    peers
        .get("peers")
        .and_then(Value::as_array)
        .and_then(|rows| {
            rows.iter()
                .find(|row| row.get("site").and_then(Value::as_str) == Some(peer))
        })
        .cloned()
        .with_context(|| format!("router {site} has no peer {peer}: {peers}"))
}

/// Waits until router `site` is connected to `to`, through relay `via` (or directly).
fn expect_path(lab: &Lab, site: &str, to: &str, via: Option<&str>) -> Result<()> {
    wait_until_ok(
        &format!("router {site} is connected to {to} via {via:?}"),
        CONVERGE,
        || {
            let row = peer(lab, site, to)?;
            Ok(row.get("connected").and_then(Value::as_bool) == Some(true)
                && row.get("via").and_then(Value::as_str) == via)
        },
    )
    .map(|_| ())
}

/// Relay datagrams from `from` that router `relay` passed on.
fn relayed_packets(lab: &Lab, relay: &str, from: &str) -> Result<u64> {
    let row = peer(lab, relay, from)?;
    Ok(row
        .get("relayed_packets")
        .and_then(Value::as_u64)
        .unwrap_or(0))
}

#[test]
fn lab_rejects_nat_without_routers_or_for_the_relay() {
    if skyvine_tests::skip_unless_root() {
        return;
    }
    let lab_sh = skyvine_tests::workspace_root().join("netns-lab/lab.sh");
    for (args, says) in [
        (&["up", "--nat", "a,b"][..], "site a stays public"),
        (
            &["up", "--nat", "b", "--no-routers"][..],
            "--nat needs routers",
        ),
    ] {
        let out = std::process::Command::new(&lab_sh)
            .args(args)
            .env("SKYVINE_LAB_CURRENT", "/tmp/skyvine-lab-current-netns-nat")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
