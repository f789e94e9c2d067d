//! Network-namespace tests of several virtual networks on one router (issue 10, part 2):
//! `lab.sh up --networks 2` builds a second network ("red", id 2) beside the first ("blue",
//! id 1) with the same addresses on every site. Root only (they skip, and pass, otherwise;
//! under SKYVINE_REQUIRE_ROOT_TESTS=1 they fail instead); each test brings up its own lab and
//! tears it down, also on failure.
//!
//! Needs the release binaries: `cargo build --release --workspace --bins`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use skyvine_tests::{lab_test, wait_until_ok, Lab};

/// Two sites, both networks: a1, a2, b1, b2 in blue and a1n2, a2n2, b1n2, b2n2 in red, each
/// pair with the same address (b1 and b1n2 are both 10.77.2.1).
const UP: &[&str] = &["--sites", "2", "--networks", "2"];

/// ICMP echo requests a VM's kernel has received (`InEchos` of its `/proc/net/snmp`).
fn echoes_received(lab: &Lab, vm: &str) -> Result<u64> {
    let snmp = lab.run_in(vm, &["cat", "/proc/net/snmp"])?;
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp: "));
    let (names, values) = (icmp.next(), icmp.next());
    let (Some(names), Some(values)) = (names, values) else {
        anyhow::bail!("no Icmp lines in {vm}'s /proc/net/snmp:\n{snmp}");
    };
    let index = names
        .split_whitespace()
        .position(|n| n == "InEchos")
        .context("no InEchos column")?;
    values
        .split_whitespace()
        .nth(index)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no InEchos value in {values:?}"))
}

#[test]
fn a_packet_of_one_network_never_reaches_the_other_with_the_same_addresses() -> Result<()> {
    lab_test(
        "a_packet_of_one_network_never_reaches_the_other",
        UP,
        |lab| {
            // `up` checked that every pair of each network pings; now who answers.
            for (from, to, other) in [("a1", "b1", "b1n2"), ("a2n2", "b1n2", "b1")] {
                let (to_before, other_before) =
                    (echoes_received(lab, to)?, echoes_received(lab, other)?);
                let out = lab.run_in(
                    from,
                    &[
                        "ping",
                        "-n",
                        "-q",
                        "-c",
                        "20",
                        "-i",
                        "0.01",
                        "-W",
                        "1",
                        "10.77.2.1",
                    ],
                )?;
                ensure!(out.contains("20 received"), "{from} -> 10.77.2.1: {out}");
                let to_now = echoes_received(lab, to)?;
                let other_now = echoes_received(lab, other)?;
                ensure!(
                    to_now >= to_before + 20,
                    "{to}, in {from}'s network, got {} echo requests of 20",
                    to_now - to_before
                );
                ensure!(
                other_now == other_before,
                "{other}, in the other network with the same address, got {} of {from}'s echo requests",
                other_now - other_before
            );
            }
            // Each network's routes live in its own table, towards its own TUN device.
            for (tun, table) in [("skyvine1", "1001"), ("skyvine2", "1002")] {
                let routes = lab.run_in(
                    "r-a",
                    &["ip", "route", "show", "table", table, "proto", "90"],
                )?;
                ensure!(
                    routes.contains(&format!("10.77.2.0/24 dev {tun}")),
                    "router a's table {table}:\n{routes}"
                );
            }
            let main = lab.run_in("r-a", &["ip", "route", "show", "proto", "90"])?;
            ensure!(
                main.trim().is_empty(),
                "router a's main table holds overlay routes:\n{main}"
            );
            Ok(())
        },
    )
}

/// Network `network`'s GNDT and LNDT at router `site`, without ages.
fn tables(lab: &Lab, site: &str, network: &str) -> Result<String> {
    let mut view = lab.admin_json_args(site, &["tables", "--network", network])?;
    for rows in ["/gndt", "/lndt/hosts"] {
        let rows = view.pointer_mut(rows).and_then(|g| g.as_array_mut());
        for row in rows.into_iter().flatten() {
            row.as_object_mut().map(|r| r.remove("age_s"));
        }
    }
    view.as_object_mut().map(|v| v.remove("hwdt"));
    Ok(view.to_string())
}

/// The site that router `site`'s GNDT of `network` places `ip` at.
fn owner(lab: &Lab, site: &str, network: &str, ip: &str) -> Result<String> {
    let view = lab.admin_json_args(site, &["route", ip, "--network", network])?;
    view.pointer("/matched/site")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("router {site} has no {network} route for {ip}: {view}"))
}

#[test]
fn a_migration_in_one_network_leaves_the_others_tables_untouched() -> Result<()> {
    lab_test(
        "a_migration_in_one_network_leaves_the_other_untouched",
        UP,
        |lab| {
            let red_before = [tables(lab, "a", "red")?, tables(lab, "b", "red")?];
            // blue's a1 moves to b; red's a1n2, at the same address, stays at a.
            lab.migrate("a1", "b", "rarp")?;
            wait_until_ok(
                "blue places 10.77.1.1 at b everywhere",
                Duration::from_secs(10),
                || {
                    Ok(owner(lab, "a", "blue", "10.77.1.1")? == "b"
                        && owner(lab, "b", "blue", "10.77.1.1")? == "b")
                },
            )?;
            let red_after = [tables(lab, "a", "red")?, tables(lab, "b", "red")?];
            ensure!(
                red_after == red_before,
                "red's tables changed:\nbefore {red_before:?}\nafter  {red_after:?}"
            );
            for site in ["a", "b"] {
                ensure!(
                    owner(lab, site, "red", "10.77.1.1")? == "a",
                    "red moved at {site}"
                );
            }
            // Both still reachable, each in its network: a1 from b2 over b's LAN, a1n2 from b2n2
            // through the overlay.
            ensure!(
                lab.ping("b2", "10.77.1.1"),
                "b2 does not reach the migrated a1"
            );
            ensure!(
                lab.ping("b2n2", "10.77.1.1"),
                "b2n2 does not reach red's a1n2"
            );
            let migrations = lab.admin_json("b", "migrations")?;
            let rows = migrations
                .pointer("/migrations")
                .and_then(|m| m.as_array())
                .cloned()
                .unwrap_or_default();
            ensure!(
                !rows.is_empty()
                    && rows
                        .iter()
                        .all(|r| r.get("network").and_then(|n| n.as_str()) == Some("blue")),
                "b's migrations name only blue: {migrations}"
            );
            Ok(())
        },
    )
}
