//! Network-namespace test of `deploy/bird.conf` (issue 13): a real BIRD 2 next to each lab
//! router exports the router's migrated-in /32s by eBGP to a second BIRD playing the site's
//! top-of-rack switch. Root only (skips, and passes, otherwise); installs bird2 with apt when
//! missing. Prints the time from the move to the route at the fabric.
//!
//! Needs the release binaries: `cargo build --release --workspace --bins`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use skyvine_tests::{
    ensure_bird, lab_test, skip_unless_root, vm_ip, wait_until_ok, Background, Fabric, Lab,
};

const SITES: [&str; 3] = ["a", "b", "c"];
/// The deadline from the move to the route at the fabric.
const FABRIC_DEADLINE: Duration = Duration::from_secs(2);
/// How long pings through the fabric may take to work after the routes are in place.
const CONVERGE: Duration = Duration::from_secs(15);

#[test]
fn migrated_in_hosts_are_announced_to_the_fabric_and_withdrawn_when_they_leave() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    ensure_bird()?;
    lab_test("bgp_fabric", &[], |lab| {
        let a1 = vm_ip("a1")?;
        let host = format!("{a1}/32");
        // Site c's gateway also announces its site prefix (the optional block of bird.conf).
        let mut fabrics = Vec::new();
        for site in SITES {
            fabrics.push(Fabric::up(lab, site, site == "c")?);
        }
        expect_fabric(&fabrics, &[&[], &[], &["10.77.3.0/24"]])?;

        // a -> b: b's switch learns a1's /32. Router a now routes a1's /32 into its TUN
        // device with protocol 90 too: a's BIRD sees it and its filter refuses it.
        let refused_at_a = fabrics[0].gateway.import_filtered("skyvine_hosts")?;
        let timing = timed_move(lab, &fabrics, "a1", "b", None)?;
        println!("a1 a -> b: {timing}");
        wait_until_ok(
            &format!("router a routes {host} into its TUN and a's BIRD refuses it"),
            CONVERGE,
            || {
                let at_a = fabrics[0].gateway.routes()?;
                if at_a.contains(&host) {
                    bail!("a's BIRD took {host}, which router a routes into its TUN: {at_a:?}");
                }
                let tun_route = lab
                    .routes("a")?
                    .iter()
                    .any(|r| r.dest == host && r.dev == "skyvine0");
                Ok(
                    tun_route
                        && fabrics[0].gateway.import_filtered("skyvine_hosts")? > refused_at_a,
                )
            },
        )?;
        let at_a = fabrics[0].gateway.routes()?;
        ensure!(
            !at_a.contains(&host),
            "a's BIRD took {host} from the TUN route: {at_a:?}"
        );
        expect_fabric(&fabrics, &[&[], &[&host], &["10.77.3.0/24"]])?;
        let exported = fabrics[1].gateway.exported_to("fabric")?;
        ensure!(
            exported == BTreeSet::from([host.clone()]),
            "`birdc show route export fabric` at b shows {exported:?}"
        );
        ping_from_switch(lab, "b", &a1)?;

        // b -> c: withdrawn at b's switch, announced at c's.
        let timing = timed_move(lab, &fabrics, "a1", "c", Some("b"))?;
        println!("a1 b -> c: {timing}");
        expect_fabric(&fabrics, &[&[], &[], &[&host, "10.77.3.0/24"]])?;
        ping_from_switch(lab, "c", &a1)?;
        ensure!(
            !lab.command_in(&Fabric::switch_ns("b"), "ping")
                .args(["-n", "-q", "-c", "1", "-W", "1", &a1])
                .output()?
                .status
                .success(),
            "b's switch still reaches {a1} after its route was withdrawn"
        );
        Ok(())
    })
}

/// What one timed move took, from the start of `lab.sh migrate`.
struct Timing {
    kernel: Duration,
    fabric: Duration,
    withdrawn: Option<Duration>,
    /// The longest time between two looks at the same state: each figure is late by at most
    /// this much.
    resolution: Duration,
    migrate_line: String,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "from the start of the move: /32 in the destination router's kernel after {:.0} ms, \
             at its fabric switch after {:.0} ms",
            ms(self.kernel),
            ms(self.fabric),
        )?;
        if let Some(withdrawn) = self.withdrawn {
            write!(
                f,
                "; withdrawn at the old site's switch {:.0} ms",
                ms(withdrawn)
            )?;
        }
        write!(
            f,
            " (each figure late by up to {:.0} ms of polling; the machine may be busy) [{}]",
            ms(self.resolution),
            self.migrate_line
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `lab.sh migrate VM TO` in the background and polls, every few milliseconds, the
/// destination router's kernel and its switch's BIRD (and `from`'s switch for the
/// withdrawal) until the route is announced (and withdrawn), at most [`FABRIC_DEADLINE`] from
/// the start of the move.
fn timed_move(
    lab: &Lab,
    fabrics: &[Fabric],
    vm: &str,
    to: &str,
    from: Option<&str>,
) -> Result<Timing> {
    let host = format!("{}/32", vm_ip(vm)?);
    let fabric = |site: &str| {
        fabrics
            .iter()
            .find(|f| f.site == site)
            .with_context(|| format!("no fabric at site {site}"))
    };
    let (dest, old) = (fabric(to)?, from.map(fabric).transpose()?);
    let start = Instant::now();
    let migrate = Background::spawn(
        format!("lab.sh migrate {vm} {to}"),
        lab.lab_sh_command(&["migrate", vm, to, "--announce", "rarp", "--pause-ms", "100"]),
    )?;
    let (mut kernel, mut announced, mut withdrawn) = (None, None, old.map(|_| None));
    let (mut resolution, mut last) = (Duration::ZERO, start);
    while start.elapsed() < FABRIC_DEADLINE {
        if kernel.is_none() && has_lan_route(lab, to, &host)? {
            kernel = Some(start.elapsed());
        }
        if announced.is_none() && dest.switch_routes()?.contains(&host) {
            announced = Some(start.elapsed());
        }
        if let (Some(None), Some(old)) = (withdrawn, old) {
            if !old.switch_routes()?.contains(&host) {
                withdrawn = Some(Some(start.elapsed()));
            }
        }
        resolution = resolution.max(last.elapsed());
        last = Instant::now();
        if kernel.is_some() && announced.is_some() && withdrawn.is_none_or(|w| w.is_some()) {
            break;
        }
    }
    let migrated = migrate.wait(Duration::from_secs(30))?.success()?;
    let migrate_line = migrated.stdout.trim().to_owned();
    let late = |what: &str| {
        format!(
            "{what} not within {:.0} s of the move ({migrate_line}); {}'s switch has {:?}",
            FABRIC_DEADLINE.as_secs_f64(),
            to,
            dest.switch_routes().unwrap_or_default()
        )
    };
    let Some(kernel) = kernel else {
        bail!(
            "{}",
            late(&format!("{host} dev lan0 in router {to}'s kernel"))
        );
    };
    let Some(fabric_at) = announced else {
        bail!("{}", late(&format!("{host} at {to}'s switch")));
    };
    let withdrawn = match withdrawn {
        Some(None) => bail!(
            "{}",
            late(&format!("{host} withdrawn at the old site's switch"))
        ),
        Some(Some(at)) => Some(at),
        None => None,
    };
    Ok(Timing {
        kernel,
        fabric: fabric_at,
        withdrawn,
        resolution,
        migrate_line,
    })
}

/// Router `site` routes `host` on its LAN with protocol 90 (`ip -n NS`: one process per look,
/// quicker than `ip netns exec`).
fn has_lan_route(lab: &Lab, site: &str, host: &str) -> Result<bool> {
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.ns(&format!("r-{site}")), "route", "show", host])
        .args(["proto", "90", "dev", "lan0"])
        .output()
        .context("running ip route show")?;
    ensure!(out.status.success(), "ip route show failed: {out:?}");
    Ok(!out.stdout.is_empty())
}

/// Every site's switch has exactly the networks in `expected` (in [`SITES`] order), within
/// a few seconds (BGP updates follow the session and the moves by milliseconds).
fn expect_fabric(fabrics: &[Fabric], expected: &[&[&str]]) -> Result<()> {
    let want: Vec<BTreeSet<String>> = expected
        .iter()
        .map(|nets| nets.iter().map(|s| (*s).to_owned()).collect())
        .collect();
    let state =
        || -> Result<Vec<BTreeSet<String>>> { fabrics.iter().map(Fabric::switch_routes).collect() };
    wait_until_ok(
        "every switch has what its gateway should export",
        CONVERGE,
        || Ok(state()? == want),
    )
    .map(drop)
    .with_context(|| {
        format!(
            "switches a, b, c have {:?}, expected {want:?}",
            state().unwrap_or_default()
        )
    })
}

/// The switch at `site` reaches the VM through the gateway: the route BIRD installed in its
/// kernel is real.
fn ping_from_switch(lab: &Lab, site: &str, ip: &str) -> Result<()> {
    let ns = Fabric::switch_ns(site);
    skyvine_tests::wait_until(&format!("{site}'s switch pings {ip}"), CONVERGE, || {
        lab.command_in(&ns, "ping")
            .args(["-n", "-q", "-c", "1", "-W", "1", ip])
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .map(drop)
}
