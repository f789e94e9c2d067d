//! Network-namespace tests of live migration (issue 3) on the `netns-lab`: a VM's link moves to
//! another site's LAN (it keeps its IP, MAC, ARP cache and sockets) and the routers must notice
//! and reroute. Root only (they skip, and pass, otherwise); each test brings up its own lab with
//! its own prefix and tears it down, also on failure, printing the router logs first.
//!
//! Needs the release binaries: `cargo build --release --workspace --bins`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use skyvine_tests::{
    check_transfer, lab_test, vm_ip, vm_mac, wait_until, wait_until_ok, Background, Lab,
};

const XFER_PORT: u16 = 7800;
/// Bytes of each paced transfer: 4 MiB at 3 Mbit/s lasts about 11 s.
const XFER_BYTES: u64 = 4 << 20;
const XFER_RATE_MBPS: f64 = 3.0;
/// How long the routers get to agree after a migration was detected.
const CONVERGE: Duration = Duration::from_secs(15);
/// With no announcement the VM's own ARP reveals it: Linux re-ARPs for its gateway once the
/// neighbour entry is stale (reachable time 15-45 s, then delay_first_probe 5 s).
const DETECT_WITHOUT_ANNOUNCEMENT: Duration = Duration::from_secs(90);

#[test]
fn migration_under_tcp_load_with_rarp() -> Result<()> {
    migration_under_tcp_load("rarp", "rarp")
}

#[test]
fn migration_under_tcp_load_with_garp() -> Result<()> {
    migration_under_tcp_load("garp", "garp")
}

#[test]
fn migration_under_tcp_load_with_none() -> Result<()> {
    migration_under_tcp_load("none", "traffic")
}

/// a1 migrates from a to b while a2 (same site) and c1 (third site) send it paced, checked TCP
/// transfers; `announce` is what the "hypervisor" emits, `detection` how router b must have
/// noticed.
fn migration_under_tcp_load(announce: &str, detection: &str) -> Result<()> {
    lab_test(
        &format!("migration_under_tcp_load_with_{announce}"),
        &[],
        |lab| {
            let a1 = vm_ip("a1")?;
            let target = format!("{a1}:{XFER_PORT}");

            let server = lab.xfer_server("a1", XFER_PORT, 2)?;
            let bytes = XFER_BYTES.to_string();
            let clients = [
                lab.xfer_client("a2", &target, &bytes, Some(XFER_RATE_MBPS), 2)?,
                lab.xfer_client("c1", &target, &bytes, Some(XFER_RATE_MBPS), 3)?,
            ];
            // Without an announcement only the VM's own traffic can reveal it. A receiver sends
            // nothing while nothing reaches it, so give a1 an outbound flow of its own, as any real
            // guest has (a ping through its gateway every 200 ms).
            let _pinger = if announce == "none" {
                let mut ping = lab.command_in("a1", "ping");
                ping.args(["-n", "-q", "-i", "0.2", &vm_ip("c2")?]);
                Some(Background::spawn("ping a1 -> c2", ping)?)
            } else {
                None
            };
            wait_until_ok(
                "both transfers to a1 are under way",
                Duration::from_secs(20),
                || {
                    let received = lab.tcp_bytes_received("a1", XFER_PORT)?;
                    Ok(received.len() == 2 && received.iter().all(|n| *n >= 256 * 1024))
                },
            )?;

            let mark = lab.log_mark("b");
            println!("{}", lab.migrate("a1", "b", announce)?);
            let applied_line = |log: &str| {
                log.lines()
                    .find(|l| {
                        l.contains("migration applied") && l.contains(r#"role="destination""#)
                    })
                    .map(str::to_owned)
            };
            let timeout = if announce == "none" {
                DETECT_WITHOUT_ANNOUNCEMENT
            } else {
                CONVERGE
            };
            let detected_after = wait_until("router b applies a1's migration", timeout, || {
                applied_line(&lab.log_since("b", mark)).is_some()
            })?;
            let line = applied_line(&lab.log_since("b", mark)).context("the line went away")?;
            println!(
            "announce={announce}: router b applied the migration {:.1} s after the move: {line}",
            detected_after.as_secs_f64()
        );
            ensure!(
                line.contains(&format!(r#"detection="{detection}""#)),
                "router b should have detected the move by {detection}: {line}"
            );

            // Both transfers complete, every byte checked, no reset.
            let mut finished = Vec::new();
            for client in clients {
                finished.push(client.wait(Duration::from_secs(240))?);
            }
            let server = server.wait(Duration::from_secs(30))?;
            for client in &finished {
                check_transfer(client, &server.stdout, XFER_BYTES)?;
            }
            server.success()?;

            expect_location(lab, "a1", "b")?;
            lab.wait_ping("c1", &a1, CONVERGE)?;
            lab.wait_ping("a2", &a1, CONVERGE)?;

            Ok(())
        },
    )
}

/// A planned migration: the libvirt hook (deploy/libvirt-hook-qemu, run as libvirt runs it on
/// the destination host, domain XML on stdin) asks router b, which forwards the hint to a, the
/// owner of a1; every router opens the window, c1's packets reach b as copies that b drops
/// (counted) until a1 is there, a copies its LAN's packets with an nftables rule; the move
/// commits the window everywhere and the rule goes; a checked transfer from c1 survives.
#[test]
fn a_prepared_migration_commits_on_the_first_announcement() -> Result<()> {
    lab_test(
        "a_prepared_migration_commits_on_the_first_announcement",
        &[],
        |lab| {
            let (a1, a1_mac) = (vm_ip("a1")?, vm_mac("a1")?);
            let target = format!("{a1}:{XFER_PORT}");
            let server = lab.xfer_server("a1", XFER_PORT, 1)?;
            let bytes = XFER_BYTES.to_string();
            let client = lab.xfer_client("c1", &target, &bytes, Some(XFER_RATE_MBPS), 5)?;
            wait_until_ok(
                "the transfer to a1 is under way",
                Duration::from_secs(20),
                || {
                    Ok(lab
                        .tcp_bytes_received("a1", XFER_PORT)?
                        .iter()
                        .any(|n| *n >= 64 * 1024))
                },
            )?;
            let early_before = lab.drop_count("b", "not_arrived")?;
            let hook = lab
                .bins()
                .lab_sh
                .parent()
                .context("no netns-lab dir")?
                .join("../deploy/libvirt-hook-qemu");
            let domain = format!(
                "<domain type='kvm'><name>a1</name><devices><interface type='bridge'>\
             <mac address='{a1_mac}'/></interface></devices></domain>"
            );
            let socket = lab.state_dir().join("b").join("skyvine.sock");
            let mut run = std::process::Command::new(&hook);
            run.args(["a1", "migrate", "begin", "-"])
                .env("SKYVINE_HOOK_CONF", "/dev/null")
                .env("SKYVINE_HOOK_SITE", "b")
                .env("SKYVINE_HOOK_COMMAND", &lab.bins().skyvine)
                .env("SKYVINE_HOOK_SOCKET", &socket)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = run
                .spawn()
                .with_context(|| format!("running {}", hook.display()))?;
            std::io::Write::write_all(
                &mut child.stdin.take().context("no stdin")?,
                domain.as_bytes(),
            )?;
            let hooked = child.wait_with_output()?;
            ensure!(hooked.status.success(), "the hook failed: {hooked:?}");
            ensure!(
                hooked.stdout.is_empty(),
                "the hook wrote to stdout (libvirt would take it for the domain XML): {:?}",
                String::from_utf8_lossy(&hooked.stdout)
            );
            println!("hook: {}", String::from_utf8_lossy(&hooked.stderr).trim());
            let prepared = |site: &str| -> Result<bool> {
                let view = lab.admin_json(site, "migrations")?;
                Ok(view
                    .get("prepared")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|all| {
                        all.iter().any(|w| {
                            w.get("ip").and_then(|v| v.as_str()) == Some(a1.as_str())
                                && w.get("from").and_then(|v| v.as_str()) == Some("a")
                                && w.get("to").and_then(|v| v.as_str()) == Some("b")
                        })
                    }))
            };
            wait_until_ok("every router has the window open", CONVERGE, || {
                Ok(prepared("a")? && prepared("b")? && prepared("c")?)
            })?;
            // c1's packets reach b as copies, dropped there while a1 is still at a.
            wait_until_ok("router b drops copies sent ahead of a1", CONVERGE, || {
                Ok(lab.drop_count("b", "not_arrived")? > early_before)
            })?;
            let rules = lab.run_in("r-a", &["nft", "list", "table", "ip", "skyvine_copies"]);
            let rules = rules.unwrap_or_else(|e| format!("{e:#}"));
            ensure!(
                rules.contains(&format!("dup to {a1}")),
                "router a copies no LAN packets for a1: {rules}"
            );

            println!("{}", lab.migrate("a1", "b", "rarp")?);
            wait_until_ok("every window closes once a1 is at b", CONVERGE, || {
                Ok(!prepared("a")? && !prepared("b")? && !prepared("c")?)
            })?;
            expect_location(lab, "a1", "b")?;
            wait_until("router a removes its copy rules", CONVERGE, || {
                lab.run_in("r-a", &["nft", "list", "table", "ip", "skyvine_copies"])
                    .is_err()
            })?;
            let client = client.wait(Duration::from_secs(240))?;
            let server = server.wait(Duration::from_secs(30))?;
            check_transfer(&client, &server.stdout, XFER_BYTES)?;
            server.success()?;
            lab.wait_ping("a2", &a1, CONVERGE)?;
            lab.wait_ping("c1", &a1, CONVERGE)?;
            println!(
            "a_prepared_migration_commits_on_the_first_announcement: router b dropped {} early copies",
            lab.drop_count("b", "not_arrived")? - early_before
        );
            Ok(())
        },
    )
}

#[test]
fn back_and_onward() -> Result<()> {
    lab_test("back_and_onward", &[], |lab| {
        let a1 = vm_ip("a1")?;

        // a -> b -> a: home again, nobody keeps a /32 for it.
        for (to, pingers) in [("b", ["b1", "c1", "a2"]), ("a", ["b1", "c1", "a2"])] {
            println!("{}", lab.migrate("a1", to, "rarp")?);
            expect_location(lab, "a1", to)?;
            for from in pingers {
                lab.wait_ping(from, &a1, CONVERGE)?;
            }
        }
        // a -> b -> c: onward, every step reachable from the old site and a third one.
        for to in ["b", "c"] {
            println!("{}", lab.migrate("a1", to, "rarp")?);
            expect_location(lab, "a1", to)?;
            for from in ["a2", "c1"] {
                lab.wait_ping(from, &a1, CONVERGE)?;
            }
        }

        Ok(())
    })
}

#[test]
fn two_vms_at_once() -> Result<()> {
    lab_test("two_vms_at_once", &[], |lab| {
        let moves = [("a1", "b"), ("b2", "c")];
        let running = moves
            .iter()
            .map(|(vm, to)| {
                let cmd = lab.lab_sh_command(&["migrate", vm, to, "--announce", "rarp"]);
                Background::spawn(format!("lab.sh migrate {vm} {to}"), cmd)
            })
            .collect::<Result<Vec<_>>>()?;
        for migration in running {
            print!(
                "{}",
                migration.wait(Duration::from_secs(30))?.success()?.stdout
            );
        }

        for (vm, to) in moves {
            expect_location(lab, vm, to)?;
        }
        for (vm, _) in moves {
            let ip = vm_ip(vm)?;
            for from in ["a1", "a2", "b1", "b2", "c1", "c2"] {
                if from != vm {
                    lab.wait_ping(from, &ip, CONVERGE)?;
                }
            }
        }

        Ok(())
    })
}

#[test]
fn routing_optimization() -> Result<()> {
    lab_test("routing_optimization", &["--optimize"], |lab| {
        let (a1, b1) = (vm_ip("a1")?, vm_ip("b1")?);
        let (a1_mac, b1_mac) = (vm_mac("a1")?, vm_mac("b1")?);

        // One /16 and no gateway: a1 reaches b1 because router a answers ARP for it.
        lab.wait_ping("a1", &b1, CONVERGE)?;
        let before = lab.neigh("a1", &b1)?;
        ensure!(
            before.contains("lladdr 52:54:00:77:01:fe"),
            "a1 should reach b1 through router a's MAC before the move: {before}"
        );

        println!("{}", lab.migrate("a1", "b", "rarp")?);
        expect_location(lab, "a1", "b")?;
        // Now on the same LAN, a1 and b1 must know each other's real MACs.
        wait_until_ok(
            &format!("a1 and b1 resolve each other to {b1_mac} / {a1_mac}"),
            CONVERGE,
            || {
                let pinged = lab.ping("a1", &b1);
                Ok(pinged
                    && lab.neigh("a1", &b1)?.contains(&format!("lladdr {b1_mac}"))
                    && lab.neigh("b1", &a1)?.contains(&format!("lladdr {a1_mac}")))
            },
        )
        .with_context(|| {
            format!(
                "a1: {:?}; b1: {:?}",
                lab.neigh("a1", &b1).unwrap_or_default(),
                lab.neigh("b1", &a1).unwrap_or_default()
            )
        })?;

        // And their traffic no longer crosses router b: 8 MiB a1 -> b1 (about 6000 data segments
        // and thousands of ACKs) leaves router b's LAN counter almost where it was.
        let server = lab.xfer_server("b1", XFER_PORT, 1)?;
        let rx_before = lab.rx_packets("r-b", "lan0")?;
        let client = lab
            .xfer_client("a1", &format!("{b1}:{XFER_PORT}"), "8M", None, 5)?
            .wait(Duration::from_secs(120))?;
        let rx_after = lab.rx_packets("r-b", "lan0")?;
        let server = server.wait(Duration::from_secs(30))?.success()?;
        check_transfer(&client, &server.stdout, 8 << 20)?;
        let crossed = rx_after - rx_before;
        println!("router b's lan0 received {crossed} packets during the a1 -> b1 transfer");
        ensure!(
            crossed < 100,
            "{crossed} packets reached router b's lan0 during an a1 -> b1 transfer on one LAN"
        );

        Ok(())
    })
}

/// Waits until every router agrees that `vm` (home site = its first letter) is at `site`
/// (GNDT owner, kernel routes and neighbour entries: [`Lab::expect_host_at`]).
fn expect_location(lab: &Lab, vm: &str, site: &str) -> Result<()> {
    let home = vm.get(..1).context("empty VM name")?;
    lab.expect_host_at(&vm_ip(vm)?, &vm_mac(vm)?, home, site)
}
