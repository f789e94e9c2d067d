//! A throw-away network namespace holding a veth pair, for root-only tests. Shared by the
//! capture and inject crates' tests (inject includes this file with `#[path]`).

// Test code: a failed step should panic with its cause.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace `sv<tag><pid>_<n>` with veth `va` <-> `vb`, both up. Deleted on drop,
/// which also deletes the veth pair.
pub struct VethNetns {
    pub name: String,
}

impl VethNetns {
    /// None (after printing why) when not root: the test is skipped.
    pub fn create(tag: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to create network namespaces");
            return None;
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sv{tag}{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run(&["netns", "add", &name]);
        // From here on Drop removes the namespace, also when a step below panics.
        let ns = VethNetns { name };
        ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
        ns.ip(&["link", "set", "va", "up"]);
        ns.ip(&["link", "set", "vb", "up"]);
        // The kernel's link watcher turns carrier on and attaches the real queueing discipline
        // later (deferred work, up to a second or more on a busy machine); until then frames
        // sent are dropped. Operational state UP on both ends means it has run.
        for dev in ["va", "vb"] {
            ns.wait_operstate_up(dev);
        }
        Some(ns)
    }

    /// Waits (10 s at most) until `dev` reports operational state UP.
    fn wait_operstate_up(&self, dev: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = self.ip(&["-o", "link", "show", "dev", dev]);
            if out.contains("state UP") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{dev} in {} is not operationally up after 10 s: {out}",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `ip -n <ns> args...`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Moves the calling thread into the namespace (other threads are unaffected).
    pub fn enter(&self) {
        let file = File::open(format!("/var/run/netns/{}", self.name)).unwrap();
        // SAFETY: `file` is an open namespace file for the duration of the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// The kernel's promiscuity counter of `dev` (`ip -d link`), 0 unless someone asked for
    /// promiscuous mode.
    pub fn promiscuity(&self, dev: &str) -> u32 {
        let out = self.ip(&["-d", "-o", "link", "show", "dev", dev]);
        let mut words = out.split_whitespace();
        words
            .by_ref()
            .find(|w| *w == "promiscuity")
            .unwrap_or_else(|| panic!("no promiscuity in {out}"));
        words.next().unwrap().parse().unwrap()
    }

    /// Runs `body` on a fresh thread inside the namespace and returns its result (a panic in
    /// `body` fails the test).
    pub fn run<F, T>(&self, body: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                body()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for VethNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A current-thread runtime with IO and timers, for use inside [`VethNetns::run`].
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
