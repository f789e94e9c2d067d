//! Network-namespace test of a site with two routers (issue 13 part 3), on `lab.sh up --ha a`:
//! routers a (active) and a-2 (standby) share site a's LAN and WAN, and keepalived (Debian's,
//! real) in each holds the site's virtual IPs (gateway 10.77.1.254, WAN 100.64.0.1) by VRRP and
//! runs skyvine only on the MASTER. `lab.sh kill-router a -9` kills the active router's skyvine
//! by its PID; its keepalived faults, a-2 becomes MASTER and starts skyvine, which learns the
//! site's state from the peers and dials them; the peers replace their connection to the dead
//! router with a-2's at once (another certificate of the same site).
//!
//! Root only (with SKYVINE_REQUIRE_ROOT_TESTS=1, as in CI, it fails instead of skipping); the
//! lab is torn down also on failure, printing the routers' and keepalived's logs.
//!
//! Needs the release binaries: `cargo build --release --workspace --bins`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use skyvine_tests::{check_transfer, lab_test, vm_ip, vm_mac, wait_until_ok, Lab};

const XFER_PORT: u16 = 7800;
/// A paced transfer across the failover: 4 MiB at 3 Mbit/s lasts about 11 s.
const PACED_BYTES: u64 = 4 << 20;
const PACED_MBPS: f64 = 3.0;
/// How long the probes run: the failover happens about 2 s in.
const PROBE_S: &str = "8";
/// How long the routers get to agree after a change (a functional bound, not a measurement).
const CONVERGE: Duration = Duration::from_secs(15);
/// The standby's LAN MAC in the lab.
const STANDBY_MAC: &str = "52:54:00:77:01:fd";
const GATEWAY: &str = "10.77.1.254";
/// Site b's gateway: b1's default gateway wherever it runs.
const B_GATEWAY: &str = "10.77.2.254";

#[test]
fn a_transfer_survives_the_failure_of_its_sites_active_router() -> Result<()> {
    lab_test("ha_failover", &["--ha", "a"], |lab| {
        for (label, file) in [
            ("router a-2 log", "a-2/router.log"),
            ("keepalived a", "a/keepalived.log"),
            ("keepalived a-2", "a-2/keepalived.log"),
            ("vrrp a", "a/vrrp.log"),
            ("vrrp a-2", "a-2/vrrp.log"),
        ] {
            let path = lab.state_dir().join(file);
            lab.attach_log(label, &path);
        }
        ensure!(vrrp_state(lab, "a")? == "MASTER" && vrrp_state(lab, "a-2")? == "BACKUP");

        // b1 migrates into site a first: a host that only the active router's tables (and the
        // peers') know at site a. The standby must learn it to keep it reachable.
        let (b1, b1_mac) = (vm_ip("b1")?, vm_mac("b1")?);
        println!("{}", lab.migrate("b1", "a", "rarp")?);
        lab.expect_host_at(&b1, &b1_mac, "b", "a")?;

        // A byte-checked transfer c1 -> a1 and 1 ms probes c1 -> a1 across the failover.
        let a1 = vm_ip("a1")?;
        let server = lab.xfer_server("a1", XFER_PORT, 1)?;
        let client = lab.xfer_client(
            "c1",
            &format!("{a1}:{XFER_PORT}"),
            &PACED_BYTES.to_string(),
            Some(PACED_MBPS),
            13,
        )?;
        wait_until_ok("the transfer to a1 is under way", CONVERGE, || {
            let received = lab.tcp_bytes_received("a1", XFER_PORT)?;
            Ok(received.len() == 1 && received.iter().all(|n| *n >= 256 * 1024))
        })?;
        let probe = lab.probe("c1", "a1", PROBE_S)?;
        std::thread::sleep(Duration::from_secs(2));
        println!("{}", lab.lab_sh(&["kill-router", "a", "-9"])?.trim());

        wait_until_ok("router a-2 is MASTER", CONVERGE, || {
            Ok(vrrp_state(lab, "a-2")? == "MASTER")
        })?;
        ensure!(
            vrrp_state(lab, "a")? == "FAULT",
            "router a's keepalived should be in FAULT after its skyvine died"
        );
        // b1, idle since its migration, cached its old gateway (10.77.2.254) with router a's
        // MAC; a-2 repoints it to its own (an idle STALE entry would otherwise stay wrong
        // until b1 next talks, and then cost it the kernel's probe cycle).
        wait_until_ok("b1's entry for its old gateway names a-2", CONVERGE, || {
            Ok(lab
                .neigh("b1", B_GATEWAY)?
                .contains(&format!("lladdr {STANDBY_MAC}")))
        })?;
        let probe = probe.wait(Duration::from_secs(60))?.success()?;
        let finished = client.wait(Duration::from_secs(240))?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&finished, &server.stdout, PACED_BYTES)?;
        let (lost, outage_ms, received) = probe_outage(&probe.stdout)?;
        println!(
            "ha failover: c1 -> a1 outage {outage_ms:.0} ms (longest run of lost 1 ms probes; \
             {lost} lost, {received} answered), {PACED_BYTES} bytes checked; \
             reproduce: cargo test --release -p skyvine-tests --test netns_ha -- --nocapture"
        );

        // The standby took over the site: its LNDT and kernel hold the migrated-in b1 (learned
        // from the peers), the peers route it to site a and hold a-2's gateway binding.
        wait_until_ok("router a-2 routes b1 on its LAN", CONVERGE, || {
            let routes = lab.routes_text("a-2");
            let neigh = lab.neigh("r-a-2", &b1)?;
            Ok(routes.contains(&format!("{b1}/32 dev lan0"))
                && neigh.contains("PERMANENT")
                && neigh.contains(&format!("lladdr {b1_mac}")))
        })?;
        ensure!(
            lndt_has(lab, "a-2", &b1)? && lndt_has(lab, "a-2", &a1)?,
            "router a-2's LNDT lacks a1 or b1: {}",
            lab.admin_json("a-2", "tables")?
        );
        for peer in ["b", "c"] {
            let (owner, prefix) = lab.route_owner(peer, &b1)?;
            ensure!(
                owner == "a" && prefix == format!("{b1}/32"),
                "router {peer} places b1 at {owner} ({prefix})"
            );
            wait_until_ok(
                &format!("router {peer} holds a-2's binding of the gateway"),
                CONVERGE,
                || gateway_mac_is(lab, peer, STANDBY_MAC),
            )?;
        }
        for (from, to) in [("c1", &b1), ("b2", &a1), ("c2", &a1)] {
            lab.wait_ping(from, to, CONVERGE)
                .with_context(|| format!("{from} -> {to} after the failover"))?;
        }
        expect_takeover_logged(lab, &["b", "c"], 0)
    })
}

/// At a site whose id is the highest, the peers' connection to its active router is the one
/// they dialed (the lower id dials): only the certificate tells them that the standby's
/// connection is not a duplicate to refuse but the site's other router taking over. In
/// routing-optimization mode (`--optimize`) the site's VMs cached the other sites' hosts with
/// the failed router's MAC: the standby repoints them.
#[test]
fn peers_with_lower_ids_take_the_standbys_connection_at_once() -> Result<()> {
    lab_test("ha_failover_site_c", &["--ha", "c", "--optimize"], |lab| {
        lab.attach_log("router c-2 log", &lab.state_dir().join("c-2/router.log"));
        let marks = [lab.log_mark("a"), lab.log_mark("b")];
        let a1 = vm_ip("a1")?;
        ensure!(
            lab.neigh("c1", &a1)?.contains("lladdr 52:54:00:77:03:fe"),
            "c1 should have cached a1 at router c's MAC (lab.sh up pinged every pair)"
        );
        println!("{}", lab.lab_sh(&["kill-router", "c", "-9"])?.trim());
        wait_until_ok("router c-2 is MASTER", CONVERGE, || {
            Ok(vrrp_state(lab, "c-2")? == "MASTER")
        })?;
        // c1 is idle: only c-2's gratuitous ARP can repoint its entry.
        wait_until_ok("c1's entry for a1 names c-2", CONVERGE, || {
            Ok(lab.neigh("c1", &a1)?.contains("lladdr 52:54:00:77:03:fd"))
        })?;
        for (from, to) in [("a1", "c1"), ("b2", "c2"), ("c1", "a2")] {
            lab.wait_ping(from, &vm_ip(to)?, CONVERGE)
                .with_context(|| format!("{from} -> {to} after the failover"))?;
        }
        expect_takeover_logged(lab, &["a"], marks[0])?;
        expect_takeover_logged(lab, &["b"], marks[1])
    })
}

/// Each of `peers` logged, after byte `mark` of its log, that the failed site's other router
/// took its connection over.
fn expect_takeover_logged(lab: &Lab, peers: &[&str], mark: usize) -> Result<()> {
    for peer in peers {
        let log = lab.log_since(peer, mark);
        ensure!(
            log.contains("the site's other router took over"),
            "router {peer} did not take the standby's connection as the site's other router"
        );
    }
    Ok(())
}

/// The VRRP state keepalived last reported for lab router `router` (from its notify script).
fn vrrp_state(lab: &Lab, router: &str) -> Result<String> {
    let path = lab.state_dir().join(router).join("vrrp-state");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// (lost probes, longest loss run in ms, answered probes) of the one source in
/// `lab.sh probe --json`.
fn probe_outage(json: &str) -> Result<(u64, f64, u64)> {
    let doc: Value =
        serde_json::from_str(json.trim()).with_context(|| format!("probe printed {json}"))?;
    let report = doc
        .pointer("/results/0/report")
        .with_context(|| format!("no probe result in {json}"))?;
    let number = |key: &str| {
        report
            .get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("no {key} in {report}"))
    };
    let received = number("received")? as u64;
    ensure!(received > 0, "no probe was answered: {report}");
    Ok((number("lost")? as u64, number("max_loss_run_ms")?, received))
}

/// Whether `ip` is in router `router`'s LNDT (`skyvine tables --json`).
fn lndt_has(lab: &Lab, router: &str, ip: &str) -> Result<bool> {
    let tables = lab.admin_json(router, "tables")?;
    let hosts = tables
        .pointer("/lndt/hosts")
        .and_then(Value::as_array)
        .with_context(|| format!("no lndt hosts in {tables}"))?;
    let host = format!("{ip}/32");
    Ok(hosts
        .iter()
        .any(|h| h.get("prefix").and_then(Value::as_str) == Some(&host)))
}

/// Whether router `router`'s GNDT binds the site a gateway to `mac`.
fn gateway_mac_is(lab: &Lab, router: &str, mac: &str) -> Result<bool> {
    let tables = lab.admin_json(router, "tables")?;
    let gndt = tables
        .get("gndt")
        .and_then(Value::as_array)
        .with_context(|| format!("no gndt in {tables}"))?;
    Ok(gndt.iter().any(|e| {
        e.get("prefix").and_then(Value::as_str) == Some(&format!("{GATEWAY}/32"))
            && e.get("mac").and_then(Value::as_str) == Some(mac)
    }))
}
