//! Network-namespace test with a real hypervisor (issue 8): the lab's QEMU guest (Debian's
//! kernel and a busybox initramfs, TCG, virtio-net) is live-migrated over QMP from site a to b
//! and back while c1 sends it a paced TCP transfer in which every byte is checked. After each
//! move every router must place the guest at the right site, in its GNDT and in the kernel.
//! Root only: it skips for a developer without root and fails in CI
//! (SKYVINE_REQUIRE_ROOT_TESTS=1).
//!
//! The first run builds the guest (apt-get download of the kernel package, initramfs) into
//! /var/cache/skyvine-lab (SKYVINE_GUEST_CACHE); later runs reuse it. Needs the release
//! binaries: `cargo build --release --workspace --bins`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use skyvine_tests::{check_transfer, field, lab_test, wait_until_ok, Guest, Lab};

const XFER_PORT: u16 = 7800;
/// 8 MiB at 4 Mbit/s lasts about 17 s: longer than two live migrations and their checks.
const XFER_BYTES: u64 = 8 << 20;
const XFER_RATE_MBPS: f64 = 4.0;
/// The guest's echo and transfer server run under TCG on a busy machine.
const REACH: Duration = Duration::from_secs(20);

#[test]
fn qemu_guest_live_migrates_there_and_back_under_a_checked_transfer() -> Result<()> {
    lab_test(
        "qemu_guest_live_migrates_there_and_back_under_a_checked_transfer",
        &["--qemu", "a"],
        |lab| {
            let g1 = lab.guest("g1")?;
            ensure!(
                g1.ip == "10.77.1.10" && g1.home == "a",
                "unexpected guest {g1:?}"
            );
            let config = std::fs::read_to_string(lab.state_dir().join("a/router.toml"))?;
            ensure!(
                config.contains(r#""10.77.1.10/32""#),
                "the guest is not in router a's LNDT:\n{config}"
            );
            lab.expect_host_at(&g1.ip, &g1.mac, "a", "a")?;

            let target = format!("{}:{XFER_PORT}", g1.ip);
            let mut client = lab.xfer_client(
                "c1",
                &target,
                &XFER_BYTES.to_string(),
                Some(XFER_RATE_MBPS),
                8,
            )?;
            let flowing = |at_least: u64| -> Result<u64> {
                let mut acked = 0;
                wait_until_ok(
                    &format!("c1's transfer to g1 has {at_least} bytes acked"),
                    REACH,
                    || {
                        acked = lab.tcp_bytes_acked("c1", &target)?.into_iter().sum();
                        Ok(acked >= at_least)
                    },
                )?;
                Ok(acked)
            };
            let mut acked = flowing(256 * 1024)?;

            for to in ["b", "a"] {
                let line = lab.migrate_guest("g1", to, &[])?;
                println!("{line}");
                let off_ms: f64 = field(&line, "off_ms")
                    .context("no off_ms")?
                    .parse()
                    .context("off_ms is not a number")?;
                ensure!(off_ms > 0.0, "a live migration with no off time: {line}");
                lab.expect_host_at(&g1.ip, &g1.mac, "a", to)?;
                expect_reachable(lab, &g1)?;
                // The same connection goes on after the move: more bytes acknowledged.
                acked = flowing(acked + 64 * 1024)?;
                ensure!(
                    client.running(),
                    "the transfer ended before the move to {to} was checked: it proves nothing"
                );
            }

            let client = client.wait(Duration::from_secs(240))?;
            let console = lab.guest_console("g1");
            check_transfer(&client, &console, XFER_BYTES).context("c1 -> g1 across a -> b -> a")?;
            println!("{}", client.stdout.trim());
            Ok(())
        },
    )
}

/// The guest answers pings from a VM of every site.
fn expect_reachable(lab: &Lab, guest: &Guest) -> Result<()> {
    for from in ["a2", "b1", "c1"] {
        lab.wait_ping(from, &guest.ip, REACH)
            .with_context(|| format!("{from} -> {} ({})", guest.name, guest.ip))?;
    }
    Ok(())
}
