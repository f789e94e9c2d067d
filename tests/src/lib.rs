//! Helpers for the network-namespace tests in `tests/tests/netns_*.rs`: they drive
//! `netns-lab/lab.sh` (one lab per test, with its own prefix), run commands inside the lab's
//! namespaces, and poll kernel and router state until a condition holds or a deadline passes.
//!
//! This crate never decides what the router should do: it only observes (kernel routes and
//! neighbours, router logs, the admin socket) and reports what it saw. Every lab it brings up is
//! torn down by a drop guard, also when the test fails; only processes it started are signalled,
//! by PID.
//!
//! [`sim`] is the other half: the deterministic sans-IO world of router cores that
//! `migration_sim.rs` and `migration_props.rs` drive, with no root and no IO; [`openmetrics`]
//! reads the metrics endpoint's text strictly (the lab test and the router's unit tests).

mod bird;
mod lab;
pub mod openmetrics;
mod process;
pub mod sim;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use bird::{ensure_bird, Bird, Fabric};
pub use lab::{check_transfer, Guest, Lab, Route};
pub use process::{Background, Finished};

/// The lab tools the tests run inside VM namespaces (and the lab's QMP client).
const LABTOOLS: [&str; 4] = [
    "skyvine-xfer",
    "skyvine-announce",
    "skyvine-probe",
    "skyvine-qmp",
];

/// Set to 1 (CI does) to make a test that needs root fail instead of skipping.
pub const REQUIRE_ROOT_ENV: &str = "SKYVINE_REQUIRE_ROOT_TESTS";

/// Where the router binary, the lab script and the lab tools are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `netns-lab/lab.sh`.
    pub lab_sh: PathBuf,
    /// The `skyvine` binary (SKYVINE_BIN, or `target/release/skyvine`).
    pub skyvine: PathBuf,
    /// Folder holding `skyvine-xfer` and the other lab tools (SKYVINE_LABTOOLS_DIR, or
    /// `target/release`).
    pub labtools: PathBuf,
}

impl Binaries {
    /// Finds the binaries relative to the workspace root, honouring SKYVINE_BIN,
    /// SKYVINE_LABTOOLS_DIR and CARGO_TARGET_DIR; an error says how to build what is missing.
    pub fn discover() -> Result<Binaries> {
        let root = workspace_root();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        let skyvine = std::env::var_os("SKYVINE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("release").join("skyvine"));
        if !skyvine.is_file() {
            bail!(
                "router binary {} not found: run `cargo build --release --workspace --bins` \
                 first (or set SKYVINE_BIN)",
                skyvine.display()
            );
        }
        let labtools = std::env::var_os("SKYVINE_LABTOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("release"));
        for tool in LABTOOLS {
            if !labtools.join(tool).is_file() {
                bail!(
                    "lab tool {} not found: run `cargo build --release -p skyvine-labtools` \
                     first (or set SKYVINE_LABTOOLS_DIR)",
                    labtools.join(tool).display()
                );
            }
        }
        let lab_sh = root.join("netns-lab").join("lab.sh");
        if !lab_sh.is_file() {
            bail!("{} not found", lab_sh.display());
        }
        Ok(Binaries {
            lab_sh,
            skyvine,
            labtools,
        })
    }

    /// The path of one lab tool, e.g. `skyvine-xfer`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.labtools.join(name)
    }
}

/// The workspace root: the parent of this crate's manifest folder.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// True when this process runs as root (effective uid 0), read from /proc/self/status.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// Returns true (and says so) when the test must be skipped because it is not root. With
/// SKYVINE_REQUIRE_ROOT_TESTS=1 (as in CI) a test that cannot run as root fails instead: CI
/// must never pass a namespace test it did not run.
pub fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    assert!(
        !root_required(),
        "this test needs root (network namespaces) and {REQUIRE_ROOT_ENV}=1 forbids skipping it"
    );
    println!("skipped: needs root (network namespaces)");
    true
}

/// Whether SKYVINE_REQUIRE_ROOT_TESTS asks for root tests to fail rather than skip.
pub fn root_required() -> bool {
    std::env::var(REQUIRE_ROOT_ENV).is_ok_and(|v| v.trim() == "1")
}

/// One lab test at a time per test binary (the machine has 2 cores, and lab timings get
/// meaningless under contention). Hold the guard for the whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next test still runs on its own lab.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs one lab test: skips (and passes) unless root, holds the [`serial`] lock, brings up a
/// lab with `lab.sh up ARGS…`, runs `body`, and prints how long it all took. The lab is torn
/// down either way; when `body` fails or panics the router logs are printed first.
pub fn lab_test(
    name: &str,
    up_args: &[&str],
    body: impl FnOnce(&mut Lab) -> Result<()>,
) -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let _serial = serial();
    let start = Instant::now();
    let mut lab = Lab::up(up_args)?;
    body(&mut lab)?;
    lab.pass();
    drop(lab);
    println!(
        "{name}: {:.1} s with lab up and down",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; returns how long it took,
/// or an error naming `desc`.
pub fn wait_until(
    desc: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {:.1} s waiting until {desc}",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`wait_until`], for a condition that can fail to be evaluated: an error stops the wait.
pub fn wait_until_ok(
    desc: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let mut failure = None;
    let waited = wait_until(desc, timeout, || match cond() {
        Ok(done) => done,
        Err(e) => {
            failure = Some(e);
            true
        }
    });
    match failure {
        Some(e) => Err(e).with_context(|| format!("while waiting until {desc}")),
        None => waited,
    }
}

/// The site number of a site id (a = 1, b = 2, c = 3), as in the lab's IP plan.
pub fn site_num(site: &str) -> Result<u8> {
    match site {
        "a" => Ok(1),
        "b" => Ok(2),
        "c" => Ok(3),
        other => bail!("unknown site {other:?}"),
    }
}

/// The lab address of a VM, e.g. `a1` -> `10.77.1.1`.
pub fn vm_ip(vm: &str) -> Result<String> {
    let (site, num) = split_vm(vm)?;
    Ok(format!("10.77.{}.{num}", site_num(site)?))
}

/// The lab MAC of a VM, e.g. `a1` -> `52:54:00:77:01:01`.
pub fn vm_mac(vm: &str) -> Result<String> {
    let (site, num) = split_vm(vm)?;
    Ok(format!("52:54:00:77:{:02x}:{num:02}", site_num(site)?))
}

/// A site's prefix, e.g. `b` -> `10.77.2.0/24`.
pub fn site_prefix(site: &str) -> Result<String> {
    Ok(format!("10.77.{}.0/24", site_num(site)?))
}

fn split_vm(vm: &str) -> Result<(&str, u8)> {
    let (site, num) = vm.split_at_checked(1).context("empty VM name")?;
    match num {
        "1" => Ok((site, 1)),
        "2" => Ok((site, 2)),
        _ => bail!("unknown VM {vm:?} (VMs are a1 a2 b1 b2 c1 c2)"),
    }
}

/// Parses the `key=value` fields of a skyvine-xfer (or lab.sh) result line.
pub fn fields(line: &str) -> Vec<(&str, &str)> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .collect()
}

/// The value of `key` in a `key=value` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    fields(line)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_follow_the_ip_plan() {
        assert_eq!(vm_ip("b2").unwrap(), "10.77.2.2");
        assert_eq!(vm_mac("c1").unwrap(), "52:54:00:77:03:01");
        assert_eq!(site_prefix("a").unwrap(), "10.77.1.0/24");
        assert!(vm_ip("d1").is_err());
        assert!(vm_ip("a3").is_err());
    }

    #[test]
    fn result_lines_split_into_fields() {
        let line = "xfer-client bytes=42 fnv64=00ab server_bytes=42 ok";
        assert_eq!(field(line, "bytes"), Some("42"));
        assert_eq!(field(line, "server_bytes"), Some("42"));
        assert_eq!(field(line, "missing"), None);
    }
}
