//! Fault-injection tests on the `netns-lab` (issue 5): a spoofing VM, an ARP/RARP flood, a
//! router killed with SIGKILL while a VM migrates, and a WAN partition healed after a
//! migration. Each runs checked TCP transfers (every byte compared, hashes matched) across the
//! fault and then compares every router's tables with each other and with its kernel entries.
//!
//! Root only (they skip, and pass, otherwise); one lab per test with its own prefix, torn down
//! by the lab's drop guard, also on failure (router logs printed first). Serial within this
//! binary. Needs the release binaries: `cargo build --release --workspace --bins`.
//!
//! No timed assertions: waits poll with generous deadlines; the times measured (hijack
//! window, convergence after heal) are printed, not asserted.

mod faults_support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use faults_support::{
    all_place, gndt, kernel_mismatch, proc_kib, router_pid, start_flood, status_counter, GndtRow,
    Spy,
};
use skyvine_tests::{
    check_transfer, lab_test, vm_ip, vm_mac, wait_until, wait_until_ok, Lab, Route,
};

/// How long a spoofed announcement may divert a1's traffic to the spoofer: one WAN round trip
/// (the destination takes over at once and tells a; a's still-here probe gets a1's answer and
/// a takes the address back) plus 5 ms. The lab of this test has no WAN delay.
const SPOOF_WINDOW_MS: f64 = 0.0 + 5.0;
/// What reaches a1 per ms in that test: 1 ms probes and a transfer paced at 40 Mbit/s
/// (1500-byte frames at most).
const PROBES_PER_MS: f64 = 1.0;
const TRANSFER_MBIT: f64 = 40.0;
/// Announcements of one MAC within this long are one event (the router's filter, 2 s).
const ANNOUNCEMENT_WINDOW: Duration = Duration::from_millis(2100);
const XFER_PORT: u16 = 7810;
const SETTLE: Duration = Duration::from_secs(20);
const SITES: [&str; 3] = ["a", "b", "c"];
/// An address of site a's prefix that no VM uses.
const UNUSED_A: &str = "10.77.1.77";

/// Waits until the checked transfer to `vm` (its server on XFER_PORT) has delivered bytes.
fn wait_transfer_started(lab: &Lab, vm: &str) -> Result<()> {
    wait_until_ok(
        &format!("the transfer to {vm} is under way"),
        SETTLE,
        || {
            Ok(lab
                .tcp_bytes_received(vm, XFER_PORT)?
                .iter()
                .any(|b| *b > 0))
        },
    )?;
    Ok(())
}

#[test]
fn a_spoofing_vm_diverts_nothing() -> Result<()> {
    lab_test("a_spoofing_vm_diverts_nothing", &[], |lab| {
        let (a1, b1_mac, a1_mac) = (vm_ip("a1")?, vm_mac("b1")?, vm_mac("a1")?);
        let host = format!("{a1}/32");
        let announce = lab.bins().tool("skyvine-announce");
        let announce = announce.to_string_lossy().into_owned();

        // b1 counts (and drops) every packet for a1 that reaches it: what the spoofer diverts.
        let spy = Spy::install(lab, "b1", &a1)?;
        // A checked transfer c1 -> a1 (paced to span both attacks) and 1 ms probes c1 -> a1.
        let server = lab.xfer_server("a1", XFER_PORT, 1)?;
        let client = lab.xfer_client("c1", &format!("{a1}:{XFER_PORT}"), "30M", Some(40.0), 11)?;
        let probe = lab.probe("c1", "a1", "8")?;
        wait_transfer_started(lab, "a1")?;

        // Attack 0: b1 claims a free address of site a twice, without ever answering for it
        // (the confirmation probe must be what confirms, not the claim repeated).
        lab.run_in(
            "b1",
            &[
                &announce, "garp", "--count", "3", "--iface", "eth0", "--mac", &b1_mac, "--ip",
                UNUSED_A,
            ],
        )?;
        wait_until_ok("router b decides on b1's claim", SETTLE, || {
            let migrations = lab.admin_json("b", "migrations")?;
            Ok(migrations
                .get("migrations")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|all| {
                    all.iter().any(|m| {
                        m.get("ip").and_then(|v| v.as_str()) == Some(UNUSED_A)
                            && m.get("outcome").and_then(|v| v.as_str()) != Some("in_progress")
                    })
                }))
        })?;
        let unused = format!("{UNUSED_A}/32");
        for site in SITES {
            ensure!(
                faults_support::placed_at(lab, site, &unused)?.is_none(),
                "router {site} placed {UNUSED_A}, which nobody answers for, at {:?} after b1's \
                 unconfirmed gratuitous ARPs (a repeated claim counted as the probe's answer)",
                faults_support::placed_at(lab, site, &unused)?
            );
        }

        // Attack 1: b1 claims a1's address with its own MAC, and answers ARP for it. A live
        // migration keeps its MAC, and site a vouches for no such binding: b refuses at once.
        let b_unresolved = status_counter(lab, "b", "lan_counters", "refused_unresolved")?;
        // Announcements of one MAC within 2 s are one event (QEMU's burst): let attack 0's end.
        std::thread::sleep(ANNOUNCEMENT_WINDOW);
        lab.run_in(
            "b1",
            &["ip", "addr", "add", &format!("{a1}/32"), "dev", "eth0"],
        )?;
        lab.run_in(
            "b1",
            &[
                &announce, "garp", "--iface", "eth0", "--mac", &b1_mac, "--ip", &a1,
            ],
        )?;
        wait_until_ok(
            "router b refuses b1's claim on a1's address",
            SETTLE,
            || Ok(status_counter(lab, "b", "lan_counters", "refused_unresolved")? > b_unresolved),
        )?;
        wait_until_ok("every router still places a1 at a", SETTLE, || {
            all_place(lab, &SITES, &host, "a")
        })?;
        let diverted_own_mac = spy.read()?;
        spy.reset()?;

        // Attack 2: b1 takes a1's MAC too (so it answers the destination's confirmation probe
        // exactly as a1 would) and announces a1 the way QEMU and Xen do. b cannot tell it from
        // a real migration; a probes for a1 with the MAC it knows, the real a1 answers, and a
        // takes the address back, frozen everywhere.
        let a_mark = lab.log_mark("a");
        lab.run_in(
            "b1",
            &["ip", "link", "set", "dev", "eth0", "address", &a1_mac],
        )?;
        lab.run_in(
            "b1",
            &[
                &announce, "rarp", "--burst", "--iface", "eth0", "--mac", &a1_mac,
            ],
        )?;
        lab.run_in(
            "b1",
            &[
                &announce, "garp", "--iface", "eth0", "--mac", &a1_mac, "--ip", &a1,
            ],
        )?;
        wait_until(
            "router a refuses the move of a1 (host still answers here)",
            SETTLE,
            || {
                lab.log_since("a", a_mark)
                    .contains("host still answers here; refusing its move")
            },
        )?;
        wait_until_ok("every router places a1 at a again", SETTLE, || {
            all_place(lab, &SITES, &host, "a")
        })?;
        // Once frozen, a repeat (past the 2 s announcement window) is refused outright.
        let b_refused = status_counter(lab, "b", "lan_counters", "refused_frozen")?;
        std::thread::sleep(ANNOUNCEMENT_WINDOW);
        lab.run_in(
            "b1",
            &[
                &announce, "rarp", "--burst", "--iface", "eth0", "--mac", &a1_mac,
            ],
        )?;
        wait_until_ok(
            "router b refuses the spoofed-MAC announcement",
            SETTLE,
            || Ok(status_counter(lab, "b", "lan_counters", "refused_frozen")? > b_refused),
        )?;
        // Let a probe round trip pass over every path before reading what b1 received.
        lab.wait_ping("c1", &a1, SETTLE)?;
        let diverted_spoofed_mac = spy.read()?;
        // Then nothing: with a1 back at a, a second of pings (beside the probes and the
        // transfer still running) must not reach the spoofer at all.
        spy.reset()?;
        lab.run_in(
            "c1",
            &["ping", "-q", "-c", "100", "-i", "0.01", "-W", "1", &a1],
        )?;
        let diverted_after = spy.read()?;
        lab.run_in(
            "b1",
            &["ip", "link", "set", "dev", "eth0", "address", &b1_mac],
        )?;
        lab.run_in(
            "b1",
            &["ip", "addr", "del", &format!("{a1}/32"), "dev", "eth0"],
        )?;

        let client = client.wait(Duration::from_secs(120))?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client, &server.stdout, 30 << 20).context("transfer c1 -> a1")?;
        let probe = probe.wait(Duration::from_secs(60))?.success()?;
        let (lost, loss_run_ms) = probe_loss(&probe.stdout)?;

        wait_until_ok("every router places a1 at a", SETTLE, || {
            all_place(lab, &SITES, &host, "a")
        })?;
        for site in SITES {
            let row = gndt(lab, site)?
                .into_iter()
                .find(|r| r.prefix == host)
                .with_context(|| format!("router {site} has no entry for {host}"))?;
            ensure!(
                row.site == "a" && row.mac.as_deref() == Some(a1_mac.as_str()),
                "router {site} holds {row} for a1"
            );
        }
        let status_a = lab.admin_json("a", "status")?;
        let still_here = status_a
            .pointer("/lan_counters/refused_still_here")
            .and_then(serde_json::Value::as_u64)
            .context("no lan_counters.refused_still_here in router a's status")?;
        ensure!(
            still_here >= 1,
            "router a counted no refused move: {status_a}"
        );
        let warnings = status_a
            .get("warnings")
            .map(ToString::to_string)
            .unwrap_or_default();
        ensure!(
            warnings.contains(&format!("{a1} is frozen")) && warnings.contains("still answers"),
            "router a's status warns of no frozen address / refused move: {warnings}"
        );
        let frozen_refusals = status_counter(lab, "b", "lan_counters", "refused_frozen")?;

        let window_packets =
            (SPOOF_WINDOW_MS * (PROBES_PER_MS + TRANSFER_MBIT * 1000.0 / 8.0 / 1500.0)).ceil();
        println!(
            "a_spoofing_vm_diverts_nothing: own-MAC claim: {} packets / {} bytes reached b1; \
         spoofed-MAC claim: {} packets / {} bytes (bound: {window_packets} packets, one WAN \
         round trip + {SPOOF_WINDOW_MS} ms of traffic), then {} packets in 1 s of pings after \
         the take-back; c1 -> a1 probes lost {lost} (longest loss run {loss_run_ms} ms); \
         router a refused_still_here={still_here}, router b refused_frozen={frozen_refusals}",
            diverted_own_mac.0,
            diverted_own_mac.1,
            diverted_spoofed_mac.0,
            diverted_spoofed_mac.1,
            diverted_after.0
        );
        // A VM that spoofs a1's MAC and address and answers probes is, at b, indistinguishable
        // from a1 arriving by live migration: b takes over at once, and a (where the real a1
        // still answers) takes the address back, frozen, one WAN round trip later. What reaches
        // the spoofer is what is in flight in that window, then nothing.
        ensure!(
            diverted_spoofed_mac.0 as f64 <= window_packets,
            "the spoofed-MAC claim diverted {} packets ({} bytes) to b1: more than one WAN \
             round trip + {SPOOF_WINDOW_MS} ms of traffic ({window_packets} packets)",
            diverted_spoofed_mac.0,
            diverted_spoofed_mac.1
        );
        ensure!(
            diverted_after.0 == 0,
            "{} packets for a1 still reached the spoofer after a took the address back",
            diverted_after.0
        );
        ensure!(
            diverted_own_mac.0 == 0,
            "the own-MAC claim diverted {} packets ({} bytes) to b1 before router a took a1 back \
         (c1 -> a1 longest probe loss run {loss_run_ms} ms)",
            diverted_own_mac.0,
            diverted_own_mac.1
        );
        Ok(())
    })
}

#[test]
fn a_flood_neither_starves_nor_grows() -> Result<()> {
    lab_test("a_flood_neither_starves_nor_grows", &[], |lab| {
        let pid = router_pid(lab, "b")?;
        let before_kib = proc_kib(pid, "VmRSS")?;
        let frames_before = status_counter(lab, "b", "lan_counters", "frames")?;

        // A checked transfer a2 -> b2 across the overlay for the whole flood (~12 s at 50 Mbit/s).
        let b2 = vm_ip("b2")?;
        let server = lab.xfer_server("b2", XFER_PORT, 1)?;
        let client = lab.xfer_client("a2", &format!("{b2}:{XFER_PORT}"), "72M", Some(50.0), 21)?;
        wait_transfer_started(lab, "b2")?;

        // 100k frames/s from b1 for ~10 s: one MAC, then a fresh MAC per frame claiming c1's
        // address, then b1's MAC claiming random addresses of site a (a2 lives there).
        let phases: [(&str, f64, &[&str]); 3] = [
            ("same-mac", 2.0, &["--ip", "10.77.3.1"]),
            ("random-macs", 5.0, &["--ip", "10.77.3.1"]),
            ("random-ips", 3.0, &["--ip-range", "10.77.1.0/24"]),
        ];
        let mut peak_kib = before_kib;
        let mut results = Vec::new();
        for (mode, seconds, extra) in phases {
            let mut flood = start_flood(
                lab,
                "b1",
                mode,
                Duration::from_secs_f64(seconds),
                100_000,
                extra,
            )?;
            while flood.running() {
                peak_kib = peak_kib.max(proc_kib(pid, "VmRSS")?);
                std::thread::sleep(Duration::from_millis(50));
            }
            let done = flood.wait(Duration::from_secs(10))?.success()?;
            results.push(done.stdout.trim().to_owned());
        }
        let client = client.wait(Duration::from_secs(180))?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client, &server.stdout, 72 << 20).context("transfer a2 -> b2")?;

        // Bound: every LAN-side structure is capped (4096 rate-limit buckets, the HWDT and
        // announcement-filter capacities, 64 pending migrations, 256 records), together well
        // under 32 MiB; the flood sent ~1M frames, ~500k of them from distinct MACs, so anything
        // keyed by MAC or address without a cap would need far more (>= 48 B per entry).
        let bound_kib = 2 * before_kib + 32 * 1024;
        let after_kib = proc_kib(pid, "VmRSS")?;
        let hwm_kib = proc_kib(pid, "VmHWM")?;
        peak_kib = peak_kib.max(after_kib);
        let frames = status_counter(lab, "b", "lan_counters", "frames")? - frames_before;
        let status = lab.admin_json("b", "status")?;
        println!(
        "a_flood_neither_starves_nor_grows: router b RSS {before_kib} KiB before, peak {peak_kib} \
         KiB (VmHWM {hwm_kib} KiB), {after_kib} KiB after (bound {bound_kib} KiB); router b saw \
         {frames} LAN frames; lan_counters {}; counts {}",
        status
            .get("lan_counters")
            .map(ToString::to_string)
            .unwrap_or_default(),
        status
            .get("counts")
            .map(ToString::to_string)
            .unwrap_or_default()
    );
        for line in &results {
            println!("  {line}");
        }
        ensure!(
            hwm_kib.max(peak_kib) < bound_kib,
            "router b grew to {} KiB under the flood (bound {bound_kib} KiB)",
            hwm_kib.max(peak_kib)
        );
        ensure!(
            after_kib < before_kib + 16 * 1024,
            "router b holds {after_kib} KiB after the flood ({before_kib} KiB before)"
        );
        ensure!(
            frames > 100_000,
            "router b saw only {frames} frames of the flood"
        );
        let in_progress = status_counter(lab, "b", "counts", "migrations_in_progress")?;
        ensure!(
            in_progress <= 64,
            "{in_progress} migrations pending at router b"
        );
        // Nothing the flood claimed moved: c1 is still at c everywhere, a's hosts at a.
        for (prefix, owner) in [("10.77.3.1/32", "c"), ("10.77.1.2/32", "a")] {
            ensure!(
                all_place(lab, &SITES, prefix, owner)?,
                "the flood moved {prefix} away from {owner}"
            );
        }
        // No address moved to b: the flood never answered a confirmation probe.
        let migrations = lab.admin_json("b", "migrations")?;
        let taken: Vec<String> = migrations
            .get("migrations")
            .and_then(serde_json::Value::as_array)
            .map(|all| {
                all.iter()
                    .filter(|m| m.get("role").and_then(|r| r.as_str()) == Some("destination"))
                    .filter(|m| m.get("outcome").and_then(|r| r.as_str()) == Some("applied"))
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            taken.is_empty(),
            "router b took over addresses on the flood's word alone: {taken:?}"
        );
        let limited = status
        .pointer("/lan_counters/rate_limited")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| {
            format!(
                    "router b's status does not show rate limiting (no lan_counters.rate_limited): {}",
                    status.get("lan_counters").map(ToString::to_string).unwrap_or_default()
                )
        })?;
        ensure!(
            limited > 0,
            "router b rate-limited nothing of {frames} frames"
        );
        Ok(())
    })
}

#[test]
fn crash_and_restart_reconciles() -> Result<()> {
    lab_test("crash_and_restart_reconciles", &[], |lab| {
        let (a2, c2) = (vm_ip("a2")?, vm_ip("c2")?);
        let (a2_host, c2_host) = (format!("{a2}/32"), format!("{c2}/32"));

        // Give b state that a crash leaves behind: c2 migrates in (a /32 on lan0 and a permanent
        // neighbour entry).
        lab.migrate("c2", "b", "rarp")?;
        wait_until_ok("router b routes c2 on its LAN", SETTLE, || {
            Ok(lab.routes("b")?.contains(&Route::new(&c2, "lan0")))
        })?;

        let c1 = vm_ip("c1")?;
        let server = lab.xfer_server("c1", XFER_PORT, 1)?;
        let client = lab.xfer_client("a1", &format!("{c1}:{XFER_PORT}"), "30M", Some(30.0), 31)?;
        wait_transfer_started(lab, "c1")?;

        lab.lab_sh(&["kill-router", "b", "-9"])?;
        let (left, _) = faults_support::kernel_neighbours(lab, "b")?;
        println!("crash_and_restart_reconciles: after SIGKILL router b's kernel keeps routes {} and neighbours {left:?}", lab.routes_text("b"));
        ensure!(
            left.contains_key(&c2),
            "the crash left no neighbour entry for c2 at b, so this test would not see stale state"
        );

        // While b is down: a2 moves to c, and c2 leaves b for a.
        lab.migrate("a2", "c", "rarp")?;
        lab.migrate("c2", "a", "rarp")?;
        wait_until_ok("routers a and c agree on the moves", SETTLE, || {
            Ok(all_place(lab, &["a", "c"], &a2_host, "c")?
                && all_place(lab, &["a", "c"], &c2_host, "a")?)
        })?;

        lab.lab_sh(&["restart-router", "b"])?;
        let mut last = String::new();
        let took = wait_until_ok(
            "router b learns the moves and its kernel matches",
            SETTLE,
            || {
                if !all_place(lab, &["b"], &a2_host, "c")?
                    || !all_place(lab, &["b"], &c2_host, "a")?
                {
                    last = "tables not there yet".into();
                    return Ok(false);
                }
                match kernel_mismatch(lab, "b")? {
                    Some(why) => {
                        last = why;
                        Ok(false)
                    }
                    None => Ok(true),
                }
            },
        )
        .with_context(|| format!("last seen: {last}"))?;
        let want: std::collections::BTreeSet<Route> = [
            Route::new("10.77.1.0/24", "skyvine0"),
            Route::new("10.77.3.0/24", "skyvine0"),
            Route::new(&a2, "skyvine0"),
            Route::new(&c2, "skyvine0"),
        ]
        .into();
        let routes = lab.routes("b")?;
        ensure!(
            routes.len() == want.len()
                && routes
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    == want,
            "router b's kernel routes are {} (expected {})",
            lab.routes_text("b"),
            faults_support::join(&want)
        );
        let (neigh, lines) = faults_support::kernel_neighbours(lab, "b")?;
        ensure!(
            neigh.is_empty(),
            "router b keeps neighbour entries {lines:?}"
        );
        for site in SITES {
            if let Some(why) = kernel_mismatch(lab, site)? {
                anyhow::bail!("{why}");
            }
        }
        same_tables(lab)?;

        // b1 reaches a2 at its new site, with checked bytes.
        lab.wait_ping("b1", &a2, SETTLE)?;
        let server2 = lab.xfer_server("a2", XFER_PORT + 1, 1)?;
        let client2 = lab
            .xfer_client("b1", &format!("{a2}:{}", XFER_PORT + 1), "8M", None, 32)?
            .wait(Duration::from_secs(60))?;
        let server2 = server2.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client2, &server2.stdout, 8 << 20).context("transfer b1 -> a2 at c")?;

        let client = client.wait(Duration::from_secs(120))?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client, &server.stdout, 30 << 20)
            .context("transfer a1 -> c1 across the crash")?;
        println!(
        "crash_and_restart_reconciles: router b consistent with its peers and its kernel {:.2} s \
         after the restart command returned",
        took.as_secs_f64()
    );
        Ok(())
    })
}

#[test]
fn partition_and_heal_converge() -> Result<()> {
    lab_test("partition_and_heal_converge", &[], |lab| {
        let a1 = vm_ip("a1")?;
        let host = format!("{a1}/32");

        // Cut site c off the WAN (the lab's WAN is a bridge in P-wan; r-c is c's port on it).
        lab.run_in("wan", &["ip", "link", "set", "r-c", "down"])?;
        lab.migrate("a1", "b", "rarp")?;
        wait_until_ok("routers a and b place a1 at b", SETTLE, || {
            all_place(lab, &["a", "b"], &host, "b")
        })?;
        wait_until_ok("router c notices both peers down", SETTLE, || {
            Ok(status_counter(lab, "c", "counts", "peers_up")? == 0)
        })?;
        ensure!(
            all_place(lab, &["c"], &host, "a")?,
            "router c learned the move across a cut link"
        );
        // The rest of the network works during the partition: a2 -> a1 at b, checked.
        let server = lab.xfer_server("a1", XFER_PORT, 1)?;
        let client = lab
            .xfer_client("a2", &format!("{a1}:{XFER_PORT}"), "8M", None, 41)?
            .wait(Duration::from_secs(60))?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client, &server.stdout, 8 << 20)
            .context("transfer a2 -> a1 during the cut")?;

        lab.run_in("wan", &["ip", "link", "set", "r-c", "up"])?;
        let healed = Instant::now();
        let mut last = String::new();
        let took = wait_until_ok(
            "all routers converge after the heal",
            Duration::from_secs(60),
            || match converged(lab)? {
                Some(why) => {
                    last = why;
                    Ok(false)
                }
                None => Ok(true),
            },
        )
        .with_context(|| format!("last seen: {last}"))?;
        let converge_s = healed.elapsed().as_secs_f64().min(took.as_secs_f64());
        ensure!(
            all_place(lab, &SITES, &host, "b")?,
            "not every router places a1 at b"
        );

        lab.wait_ping("c1", &a1, SETTLE)?;
        let server = lab.xfer_server("a1", XFER_PORT + 1, 1)?;
        let client = lab
            .xfer_client("c1", &format!("{a1}:{}", XFER_PORT + 1), "8M", None, 42)?
            .wait(Duration::from_secs(60))?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client, &server.stdout, 8 << 20).context("transfer c1 -> a1 at b")?;
        println!("partition_and_heal_converge: converged {converge_s:.2} s after the heal");
        Ok(())
    })
}

/// None when all routers hold identical GNDTs and each kernel matches its tables.
fn converged(lab: &Lab) -> Result<Option<String>> {
    if let Some(why) = tables_differ(lab)? {
        return Ok(Some(why));
    }
    for site in SITES {
        if let Some(why) = kernel_mismatch(lab, site)? {
            return Ok(Some(why));
        }
    }
    Ok(None)
}

fn tables_differ(lab: &Lab) -> Result<Option<String>> {
    let first = gndt(lab, SITES[0])?;
    for site in &SITES[1..] {
        let other = gndt(lab, site)?;
        if other != first {
            let only = |x: &std::collections::BTreeSet<GndtRow>,
                        y: &std::collections::BTreeSet<GndtRow>| {
                x.difference(y)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Ok(Some(format!(
                "GNDT of a and {site} differ: only at a [{}], only at {site} [{}]",
                only(&first, &other),
                only(&other, &first)
            )));
        }
    }
    Ok(None)
}

fn same_tables(lab: &Lab) -> Result<()> {
    match tables_differ(lab)? {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}

/// (lost probes, longest loss run in ms) of the one source in `lab.sh probe --json` output.
fn probe_loss(json: &str) -> Result<(u64, f64)> {
    let doc: serde_json::Value =
        serde_json::from_str(json.trim()).with_context(|| format!("probe printed {json}"))?;
    let report = doc
        .pointer("/results/0/report")
        .or_else(|| doc.pointer("/results/0"))
        .with_context(|| format!("no probe result in {json}"))?;
    let lost = report
        .get("lost")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no lost count in {report}"))?;
    let run = report
        .get("max_loss_run_ms")
        .and_then(serde_json::Value::as_f64)
        .with_context(|| format!("no max_loss_run_ms in {report}"))?;
    Ok((lost, run))
}
