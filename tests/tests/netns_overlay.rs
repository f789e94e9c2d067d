//! Network-namespace tests of the overlay (issue 2): three sites joined over QUIC on the
//! `netns-lab`. Root only (they skip, and pass, otherwise); each test brings up its own lab with
//! its own prefix and tears it down, also on failure, printing the router logs first.
//!
//! Needs the release binaries: `cargo build --release --workspace --bins`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use skyvine_tests::{
    check_transfer, lab_test, site_prefix, vm_ip, wait_until_ok, Background, Route,
};

const XFER_PORT: u16 = 7800;
/// How long routers get to (re)connect and converge after a start.
const CONVERGE: Duration = Duration::from_secs(30);

#[test]
fn all_cross_site_pairs_reach_each_other() -> Result<()> {
    lab_test("all_cross_site_pairs_reach_each_other", &[], |lab| {
        lab.expect_all_pairs_ping(10)?;

        // Two checked transfers across sites, one at a time (the machine has 2 cores).
        for (from, to, seed) in [("a1", "b1", 1), ("c2", "a2", 2)] {
            let server = lab.xfer_server(to, XFER_PORT, 1)?;
            let target = format!("{}:{XFER_PORT}", vm_ip(to)?);
            let client = lab
                .xfer_client(from, &target, "20M", None, seed)?
                .wait(Duration::from_secs(120))?;
            let server = server.wait(Duration::from_secs(30))?.success()?;
            check_transfer(&client, &server.stdout, 20 << 20)
                .with_context(|| format!("transfer {from} -> {to}"))?;
        }

        Ok(())
    })
}

#[test]
fn a_host_outside_the_lndt_is_dropped() -> Result<()> {
    lab_test("a_host_outside_the_lndt_is_dropped", &[], |lab| {
        // The generated LNDT lists only the site's two VMs: .50 is on the LAN but not allowed.
        let config = std::fs::read_to_string(lab.state_dir().join("a/router.toml"))?;
        ensure!(
            config.contains(r#"hosts = ["10.77.1.1/32", "10.77.1.2/32"]"#),
            "unexpected LNDT in router a's config:\n{config}"
        );
        lab.run_in("a1", &["ip", "addr", "add", "10.77.1.50/24", "dev", "eth0"])?;
        let b1 = vm_ip("b1")?;

        let before = lab.drop_count("a", "source_not_local")?;
        let mut answered = 0;
        for _ in 0..3 {
            if lab.ping_from_addr("a1", "10.77.1.50", &b1) {
                answered += 1;
            }
        }
        ensure!(
            answered == 0,
            "{answered} of 3 pings from 10.77.1.50 (not in the LNDT) were answered"
        );
        // The same VM, from its listed address, still gets through.
        lab.wait_ping("a1", &b1, Duration::from_secs(5))?;
        ensure!(
            lab.ping_from_addr("a1", "10.77.1.1", &b1),
            "ping from 10.77.1.1 to {b1} failed"
        );
        let after = lab.drop_count("a", "source_not_local")?;
        ensure!(
            after >= before + 3,
            "router a's source_not_local drops went from {before} to {after} after 3 pings from 10.77.1.50"
        );

        Ok(())
    })
}

#[test]
fn a_router_with_a_foreign_certificate_is_refused() -> Result<()> {
    lab_test(
        "a_router_with_a_foreign_certificate_is_refused",
        &[],
        |lab| {
            // A second CA and a certificate for site b from it: an impostor router b.
            let foreign = lab.state_dir().join("foreign");
            std::fs::create_dir_all(&foreign)?;
            let skyvine = lab.bins().skyvine.clone();
            for args in [
                vec!["cert", "ca", "--dir"],
                vec![
                    "cert",
                    "issue",
                    "--site",
                    "b",
                    "--prefix",
                    "10.77.2.0/24",
                    "--dir",
                ],
            ] {
                let out = Command::new(&skyvine).args(&args).arg(&foreign).output()?;
                ensure!(
                    out.status.success(),
                    "skyvine {} failed: {out:?}",
                    args.join(" ")
                );
            }
            let pki = lab.state_dir().join("pki");
            let own_config = std::fs::read_to_string(lab.state_dir().join("b/router.toml"))?;
            let mut config = own_config.clone();
            for file in ["ca.pem", "b.pem", "b.key"] {
                let (own, theirs) = (pki.join(file), foreign.join(file));
                let own = own.to_str().context("non-UTF-8 path")?;
                ensure!(
                    config.contains(own),
                    "router b's config does not name {own}"
                );
                config = config.replace(own, theirs.to_str().context("non-UTF-8 path")?);
            }
            let foreign_config = foreign.join("router.toml");
            std::fs::write(&foreign_config, config)?;
            let foreign_log = foreign.join("router.log");
            lab.attach_log("router b with the foreign certificate", &foreign_log);

            // Start a and c afresh (a graceful stop removes their routes and they keep no state), with
            // the impostor already running, so neither ever had b's routes.
            for site in ["a", "b", "c"] {
                lab.lab_sh(&["kill-router", site])?;
            }
            for site in ["a", "c"] {
                ensure!(
                    lab.routes(site)?.is_empty(),
                    "router {site} left routes: {}",
                    lab.routes_text(site)
                );
            }
            let marks = (lab.log_mark("a"), lab.log_mark("c"));
            let mut cmd = lab.command_in("r-b", &skyvine);
            cmd.args(["router", "--config"])
                .arg(&foreign_config)
                .env("RUST_LOG", "info");
            let mut impostor =
                Background::spawn_logged("router b (foreign certificate)", cmd, &foreign_log)?;
            // Listening before a and c start, so their very first dial meets the foreign certificate.
            wait_until_ok("the impostor b listens", Duration::from_secs(10), || {
                ensure!(impostor.running(), "the impostor b exited");
                Ok(std::fs::read_to_string(&foreign_log)?.contains("router starting"))
            })?;
            lab.lab_sh(&["restart-router", "a"])?;
            lab.lab_sh(&["restart-router", "c"])?;

            // Both real routers reject b's certificate themselves: their own dial to b fails
            // verification (b, trusting only its own CA, also aborts their certificates when it dials,
            // which they log as "refused incoming connection … aborted by peer").
            let refused = |site: &str, mark: usize| {
                lab.log_since(site, mark).lines().any(|l| {
                    l.contains("cannot reach peer")
                        && l.contains("peer=b")
                        && l.contains("invalid peer certificate")
                        && !l.contains("aborted by peer")
                })
            };
            let b_prefix = site_prefix("b")?;
            let mut samples = 0;
            wait_until_ok(
                "routers a and c log the refusal of b's certificate",
                CONVERGE,
                || {
                    for site in ["a", "c"] {
                        let routes = lab.routes(site)?;
                        ensure!(
                            !routes.iter().any(|r| r.dest == b_prefix),
                            "b's prefix {b_prefix} reached router {site}'s kernel: {}",
                            lab.routes_text(site)
                        );
                    }
                    samples += 1;
                    Ok(refused("a", marks.0) && refused("c", marks.1))
                },
            )?;
            // a and c do talk to each other, and keep b out for a while longer.
            lab.wait_ping("a1", &vm_ip("c1")?, CONVERGE)?;
            let watch = Instant::now();
            while watch.elapsed() < Duration::from_secs(3) {
                for site in ["a", "c"] {
                    let routes = lab.routes(site)?;
                    ensure!(
                        !routes.iter().any(|r| r.dest == b_prefix),
                        "b's prefix {b_prefix} reached router {site}'s kernel: {}",
                        lab.routes_text(site)
                    );
                    samples += 1;
                }
            }
            for (site, mark) in [("a", marks.0), ("c", marks.1)] {
                let log = lab.log_since(site, mark);
                ensure!(
                    !log.lines().any(|l| l.contains("peer up peer=b")),
                    "router {site} brought the impostor b up:\n{log}"
                );
            }
            ensure!(
                !lab.ping("a1", &vm_ip("b1")?),
                "a1 reached b1 through the impostor"
            );
            let b_connected = lab.peer_connected("a", "b")?;
            ensure!(
                b_connected == Some(false),
                "router a's peers show b as {b_connected:?}"
            );
            println!("b's prefix absent from a's and c's kernels in {samples} samples");
            for (site, mark) in [("a", marks.0), ("c", marks.1)] {
                let log = lab.log_since(site, mark);
                let line = log.lines().find(|l| l.contains("invalid peer certificate"));
                println!("router {site}: {}", line.unwrap_or_default());
            }

            // The real b comes back: everything connects again.
            impostor.terminate(Duration::from_secs(10))?;
            lab.lab_sh(&["restart-router", "b"])?;
            lab.expect_all_pairs_ping(30)?;

            Ok(())
        },
    )
}

#[test]
fn restarting_a_router_restores_connectivity_without_duplicate_routes() -> Result<()> {
    lab_test(
        "restarting_a_router_restores_connectivity_without_duplicate_routes",
        &[],
        |lab| {
            let (a1, b1) = (vm_ip("a1")?, vm_ip("b1")?);

            lab.lab_sh(&["kill-router", "b", "-9"])?;
            // SIGKILL: no cleanup by the router. Its TUN device goes with the process, and the kernel
            // drops the routes through it; whatever else is left must be reconciled, not duplicated.
            println!("left in r-b after SIGKILL: [{}]", lab.routes_text("b"));
            ensure!(!lab.ping("a1", &b1), "a1 reached b1 with router b killed");

            lab.lab_sh(&["restart-router", "b"])?;
            lab.wait_ping("a1", &b1, CONVERGE)?;
            lab.wait_ping("b1", &a1, CONVERGE)?;
            for site in ["a", "b", "c"] {
                let expected: BTreeSet<Route> = ["a", "b", "c"]
                    .into_iter()
                    .filter(|other| *other != site)
                    .map(|other| Ok(Route::new(&site_prefix(other)?, "skyvine0")))
                    .collect::<Result<_>>()?;
                wait_until_ok(
                    &format!("router {site} has exactly {expected:?}"),
                    CONVERGE,
                    || Ok(exactly_once(&lab.routes(site)?, &expected)),
                )
                .with_context(|| format!("router {site} routes: {}", lab.routes_text(site)))?;
            }
            lab.expect_all_pairs_ping(10)?;

            Ok(())
        },
    )
}

#[test]
fn a_gracefully_stopped_router_removes_its_routes() -> Result<()> {
    lab_test(
        "a_gracefully_stopped_router_removes_its_routes",
        &[],
        |lab| {
            // A VM that migrated in gives router c a LAN route and a permanent neighbour entry too:
            // unlike the routes through the TUN device, those outlive the process unless it cleans up.
            let a1 = vm_ip("a1")?;
            println!("{}", lab.migrate("a1", "c", "rarp")?);
            let expected = [
                Route::new(&site_prefix("a")?, "skyvine0"),
                Route::new(&site_prefix("b")?, "skyvine0"),
                Route::new(&a1, "lan0"),
            ];
            wait_until_ok("router c routes a1 on its LAN", CONVERGE, || {
                let routes = lab.routes("c")?;
                Ok(expected.iter().all(|r| routes.contains(r)))
            })
            .with_context(|| format!("router c routes: {}", lab.routes_text("c")))?;
            wait_until_ok(
                "router c has a permanent neighbour entry for a1",
                CONVERGE,
                || Ok(lab.neigh("r-c", &a1)?.contains("PERMANENT")),
            )?;
            lab.wait_ping("b1", &a1, CONVERGE)?;

            let mark = lab.log_mark("c");
            lab.lab_sh(&["kill-router", "c"])?;
            // kill-router waits for the process to exit, so its cleanup is done by now.
            let after = lab.routes("c")?;
            ensure!(
                after.is_empty(),
                "router c left routes after SIGTERM: {after:?}"
            );
            let neigh = lab.neigh("r-c", &a1)?;
            ensure!(
                !neigh.contains("PERMANENT"),
                "router c left its neighbour entry: {neigh}"
            );
            let log = lab.log_since("c", mark);
            ensure!(
                log.contains("SIGTERM received") && !log.contains("panicked"),
                "router c's log after SIGTERM:\n{log}"
            );
            Ok(())
        },
    )
}

/// True when `routes` holds every expected route exactly once and nothing else.
fn exactly_once(routes: &[Route], expected: &BTreeSet<Route>) -> bool {
    let unique: BTreeSet<Route> = routes.iter().cloned().collect();
    unique.len() == routes.len() && &unique == expected
}

#[test]
fn route_sets_must_match_exactly_once() {
    let expected: BTreeSet<Route> = [Route::new("10.77.1.0/24", "skyvine0")]
        .into_iter()
        .collect();
    assert!(exactly_once(
        &[Route::new("10.77.1.0/24", "skyvine0")],
        &expected
    ));
    assert!(!exactly_once(
        &[
            Route::new("10.77.1.0/24", "skyvine0"),
            Route::new("10.77.1.0/24", "skyvine0")
        ],
        &expected
    ));
    assert!(!exactly_once(&[], &expected));
}

/// Issue 9: router b, restarted with its own certificate (10.77.2.0/24) but a config that
/// also claims a slice of a's LAN and router c's WAN address, speaks only for itself: a and c
/// refuse both, count and log them, and traffic flows as before.
#[test]
fn a_lying_router_is_refused_and_changes_nothing() -> Result<()> {
    lab_test(
        "a_lying_router_is_refused_and_changes_nothing",
        &[],
        |lab| {
            lab.expect_all_pairs_ping(10)?;
            let config_path = lab.state_dir().join("b/router.toml");
            let config = std::fs::read_to_string(&config_path)?;
            let honest = r#"prefixes = ["10.77.2.0/24"]"#;
            ensure!(
                config.contains(honest),
                "unexpected prefixes in b's config:\n{config}"
            );
            let lying = config.replace(
                honest,
                r#"prefixes = ["10.77.2.0/24", "10.77.1.0/25", "100.64.0.3/32"]"#,
            );
            std::fs::write(&config_path, lying)?;
            let marks: Vec<usize> = ["a", "c"].iter().map(|s| lab.log_mark(s)).collect();
            lab.lab_sh(&["restart-router", "b"])?;

            for (site, mark) in ["a", "c"].into_iter().zip(marks) {
                wait_until_ok(&format!("router {site} refuses b's lies"), CONVERGE, || {
                    let status = lab.admin_json(site, "status")?;
                    let counters = &status["lan_counters"];
                    let refused = ["refused_foreign_prefix", "refused_bad_kind"]
                        .iter()
                        .map(|k| counters[k].as_u64().unwrap_or(0))
                        .sum::<u64>();
                    Ok(refused >= 2)
                })?;
                let log = lab.log_since(site, mark);
                for lie in ["10.77.1.0/25", "100.64.0.3/32"] {
                    ensure!(
                        log.lines()
                            .any(|l| l.contains("refused an entry from a peer") && l.contains(lie)),
                        "router {site} did not log refusing {lie}:\n{log}"
                    );
                    let routes = lab.routes_text(site);
                    ensure!(
                        !routes.contains(lie),
                        "router {site} routes {lie}:\n{routes}"
                    );
                }
                // a1 is still a's, and c's WAN address no overlay destination.
                let (owner, prefix) = lab.route_owner(site, "10.77.1.1")?;
                ensure!(
                    owner == "a" && prefix != "10.77.1.0/25",
                    "router {site} places 10.77.1.1 at {owner} ({prefix})"
                );
            }
            lab.expect_all_pairs_ping(10)?;
            Ok(())
        },
    )
}

/// Revocation through the daemon (issue 9 point 3): router a's `tls.revoked` list gains b's
/// certificate (`skyvine cert revoke`) and a gets SIGHUP. a cuts b off at once: b is no longer
/// connected at a, a routes nothing of b's, counts and logs it, and refuses b's certificate
/// when b dials again; a and c still reach each other.
#[test]
fn a_router_revoked_on_sighup_is_cut_off_and_withdrawn() -> Result<()> {
    lab_test(
        "a_router_revoked_on_sighup_is_cut_off_and_withdrawn",
        &[],
        |lab| {
            // Router a names a revocation list, empty for now.
            let list = lab.state_dir().join("a/revoked");
            std::fs::write(&list, "")?;
            let config_path = lab.state_dir().join("a/router.toml");
            let config = std::fs::read_to_string(&config_path)?;
            ensure!(
                config.contains("[tls]\n"),
                "no [tls] in a's config:\n{config}"
            );
            let line = format!("[tls]\nrevoked = \"{}\"\n", list.display());
            std::fs::write(&config_path, config.replacen("[tls]\n", &line, 1))?;
            lab.lab_sh(&["restart-router", "a"])?;
            lab.expect_all_pairs_ping(30)?;
            ensure!(
                lab.peer_connected("a", "b")? == Some(true),
                "b is not connected at a"
            );

            let mark = lab.log_mark("a");
            let b_cert = lab.state_dir().join("pki/b.pem");
            let out = Command::new(&lab.bins().skyvine)
                .args(["cert", "revoke"])
                .arg(&b_cert)
                .arg("--list")
                .arg(&list)
                .output()?;
            ensure!(out.status.success(), "skyvine cert revoke failed: {out:?}");
            let pid = lab.router_pid("a")?;
            let hup = Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()?;
            ensure!(hup.success(), "kill -HUP {pid} failed");

            wait_until_ok("router a cuts b off", CONVERGE, || {
                let status = lab.admin_json("a", "status")?;
                let revoked = status["lan_counters"]["revoked_peers"].as_u64();
                let routes = lab.routes_text("a");
                Ok(revoked == Some(1)
                    && lab.peer_connected("a", "b")? == Some(false)
                    && !routes.contains(&site_prefix("b")?))
            })?;
            // b dials again (its own list is empty): a refuses its certificate each time.
            wait_until_ok("router a refuses b's certificate", CONVERGE, || {
                let log = lab.log_since("a", mark);
                Ok(log.contains("refused a revoked certificate"))
            })?;
            let log = lab.log_since("a", mark);
            ensure!(
                log.contains("peer certificate revoked"),
                "router a did not log the revocation:\n{log}"
            );
            ensure!(
                lab.peer_connected("a", "b")? == Some(false),
                "b came back at a"
            );
            ensure!(!lab.ping("a1", &vm_ip("b1")?), "a1 still reaches b1");
            lab.wait_ping("a1", &vm_ip("c1")?, CONVERGE)?;
            Ok(())
        },
    )
}
