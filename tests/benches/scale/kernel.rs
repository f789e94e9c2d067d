//! The kernel's part of a move as the GNDT grows: in a throw-away network namespace (root),
//! the destination router's routes and neighbours of `tables.rs` are programmed in full with
//! the daemon's own [`Kernel`] (untimed setup: one reconcile), then the targeted changes its
//! core asked for in each move are applied one netlink change at a time, as the daemon's
//! kernel_sync does, and timed (wall clock, netlink round trips included).

use std::collections::BTreeMap;
use std::process::Command;

use skyvine_router::kernel::{Desired, Kernel};

use super::tables::SizeRun;
use super::*;

/// A namespace with tun0 and lan0 (veth devices, whose peers stay inside: they have carrier),
/// deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns> {
        let ns = Netns(format!("svscale{}", std::process::id()));
        ip(&["netns", "add", &ns.0])?;
        for (dev, peer) in [("tun0", "tun0p"), ("lan0", "lan0p")] {
            ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", peer])?;
            ns.ip(&["link", "set", dev, "up"])?;
            ns.ip(&["link", "set", peer, "up"])?;
        }
        ns.ip(&["addr", "add", "10.102.255.4/16", "dev", "lan0"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.0.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

struct Programmed {
    entries: usize,
    routes: usize,
    setup: Duration,
    /// Per move: the wall time of its targeted changes, and how many there were.
    moves: Vec<(Duration, usize)>,
}

pub(crate) fn series(runs: &[SizeRun]) -> Result<()> {
    println!("\n== the kernel's part of a move (network namespace, the daemon's netlink code)");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let required = std::env::var("SKYVINE_REQUIRE_ROOT_TESTS").is_ok_and(|v| v.trim() == "1");
        if required {
            bail!(
                "the kernel series needs root and SKYVINE_REQUIRE_ROOT_TESTS=1 forbids skipping it"
            );
        }
        println!("  not measured: needs root (a network namespace)");
        return Ok(());
    }
    let mut measured = Vec::new();
    for run in runs {
        measured.push(program(run).with_context(|| format!("{} entries", run.entries))?);
    }
    println!(
        "{:>8} | {:>14} | {:>16} | {:>22}",
        "entries", "kernel routes", "full setup (s)", "per move (us, median)"
    );
    for m in &measured {
        let mut times: Vec<Duration> = m.moves.iter().map(|(d, _)| *d).collect();
        times.sort_unstable();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let ops = m.moves.first().map_or(0, |(_, n)| *n);
        println!(
            "{:>8} | {:>14} | {:>16.2} | {:>12.1} ({ops} changes)",
            m.entries,
            m.routes,
            m.setup.as_secs_f64(),
            median.as_secs_f64() * 1e6,
        );
    }
    if let (Some(base), Some(top)) = (measured.first(), measured.last()) {
        let med = |m: &Programmed| {
            let mut t: Vec<Duration> = m.moves.iter().map(|(d, _)| *d).collect();
            t.sort_unstable();
            t.get(t.len() / 2)
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
        };
        if base.entries != top.entries {
            println!(
                "  ratio {}/{} entries: per move x{:.2}",
                top.entries,
                base.entries,
                ratio(med(top), med(base))
            );
        }
    }
    Ok(())
}

/// Programs `run`'s destination router in a fresh namespace and times each move's changes.
fn program(run: &SizeRun) -> Result<Programmed> {
    let ns = Netns::new()?;
    let desired = Desired {
        tun_routes: run.dest_tun_routes.clone(),
        lan_hosts: run.dest_lan_hosts.clone(),
        route_mtus: BTreeMap::new(),
    };
    let ops: Vec<Vec<KernelOp>> = run.moves.iter().map(|c| c.kernel[2].clone()).collect();
    let routes = desired.tun_routes.len() + desired.lan_hosts.len();
    let path = format!("/var/run/netns/{}", ns.0);
    let thread = std::thread::spawn(move || -> Result<(Duration, Vec<(Duration, usize)>)> {
        let file = std::fs::File::open(&path).context("opening the namespace")?;
        // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut kernel = Kernel::connect("tun0", "lan0").await?;
            let t = Instant::now();
            kernel.reconcile(&desired).await?;
            let setup = t.elapsed();
            let mut moves = Vec::new();
            for move_ops in ops {
                let t = Instant::now();
                for op in &move_ops {
                    kernel.apply_op(op, None).await?;
                }
                moves.push((t.elapsed(), move_ops.len()));
            }
            Ok((setup, moves))
        })
    });
    let (setup, moves) = thread
        .join()
        .map_err(|_| anyhow!("the namespace thread panicked"))??;
    Ok(Programmed {
        entries: run.entries,
        routes,
        setup,
        moves,
    })
}
