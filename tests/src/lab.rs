//! One netns lab (`netns-lab/lab.sh`) owned by one test: brought up with its own prefix, every
//! lab.sh command given `--prefix P`, torn down by `Drop` (with the router logs printed first
//! when the test did not call [`Lab::pass`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{Background, Finished};
use crate::{field, Binaries};

/// Lines of each router log printed when a test fails.
const LOG_TAIL_LINES: usize = 150;
/// How long the routers get to agree on where a host is after a move.
const HOST_CONVERGE: Duration = Duration::from_secs(15);

/// A running lab. Dropping it runs `lab.sh down --prefix P`.
#[derive(Debug)]
pub struct Lab {
    bins: Binaries,
    prefix: String,
    state: PathBuf,
    current_file: PathBuf,
    passed: bool,
    extra_logs: Vec<(String, PathBuf)>,
}

/// A QEMU guest of the lab (`lab.sh up --qemu SITE`): a real VM, reached only over its network
/// (no command runs inside it); its console log is in the lab's state folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// `g1`.
    pub name: String,
    /// Its home site, whose prefix holds its address.
    pub home: String,
    pub ip: String,
    pub mac: String,
}

/// One kernel route of the router's protocol (`ip route show proto 90`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Destination with its length, e.g. `10.77.1.1/32`.
    pub dest: String,
    /// Output device, e.g. `skyvine0` or `lan0`.
    pub dev: String,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dev {}", self.dest, self.dev)
    }
}

impl Route {
    /// A route to `dest` (a plain address means /32) on `dev`.
    pub fn new(dest: &str, dev: &str) -> Route {
        let dest = if dest.contains('/') {
            dest.to_owned()
        } else {
            format!("{dest}/32")
        };
        Route {
            dest,
            dev: dev.to_owned(),
        }
    }

    fn parse(line: &str) -> Option<Route> {
        let mut words = line.split_whitespace();
        let dest = words.next()?;
        let dev = words.skip_while(|w| *w != "dev").nth(1)?;
        Some(Route::new(dest, dev))
    }
}

impl Lab {
    /// Brings up a lab with a fresh prefix: `lab.sh up --prefix P ARGS…` (which waits until
    /// every cross-site VM pair pings).
    pub fn up(args: &[&str]) -> Result<Lab> {
        let bins = Binaries::discover()?;
        let prefix = fresh_prefix()?;
        let lab = Lab {
            state: PathBuf::from(format!("/tmp/skyvine-lab-{prefix}")),
            current_file: std::env::temp_dir().join(format!("skyvine-test-current-{prefix}")),
            bins,
            prefix,
            passed: false,
            extra_logs: Vec::new(),
        };
        let mut up = vec!["up"];
        up.extend_from_slice(args);
        lab.lab_sh(&up).context("bringing the lab up")?;
        Ok(lab)
    }

    /// Marks the test as passed: `Drop` then tears down without printing logs.
    pub fn pass(&mut self) {
        self.passed = true;
    }

    /// The lab's prefix (namespaces are `P-a1`, `P-r-b`, …).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The binaries this lab runs.
    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    /// The lab's state folder (`/tmp/skyvine-lab-P`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Also print this file when the test fails.
    pub fn attach_log(&mut self, label: &str, path: &Path) {
        self.extra_logs.push((label.to_owned(), path.to_owned()));
    }

    /// The full name of a lab namespace: `a1` -> `P-a1`, `r-b` -> `P-r-b`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Runs `lab.sh --prefix P ARGS…`; returns its stdout, or an error quoting its output.
    pub fn lab_sh(&self, args: &[&str]) -> Result<String> {
        let output = self
            .lab_sh_command(args)
            .output()
            .context("running lab.sh")?;
        expect_success(&format!("lab.sh {}", args.join(" ")), &output)
    }

    /// A `lab.sh --prefix P ARGS…` command, to run in the background.
    pub fn lab_sh_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bins.lab_sh);
        cmd.arg("--prefix")
            .arg(&self.prefix)
            .args(args)
            .env("SKYVINE_BIN", &self.bins.skyvine)
            .env("SKYVINE_LABTOOLS_DIR", &self.bins.labtools)
            // Never touch the user's "current lab": every command names its prefix anyway.
            .env("SKYVINE_LAB_CURRENT", &self.current_file);
        cmd
    }

    /// `ip netns exec P-NAME PROGRAM`, arguments still to add.
    pub fn command_in(&self, name: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name)]).arg(program);
        cmd
    }

    /// Runs `ARGS` in namespace NAME; returns stdout, or an error quoting the output.
    pub fn run_in(&self, name: &str, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("run_in needs a program")?;
        let output = self
            .command_in(name, program)
            .args(rest)
            .output()
            .with_context(|| format!("running {} in {}", args.join(" "), self.ns(name)))?;
        expect_success(
            &format!("{} (in {})", args.join(" "), self.ns(name)),
            &output,
        )
    }

    /// One ping (1 s timeout) from `vm` to `to_ip`; true if it was answered.
    pub fn ping(&self, vm: &str, to_ip: &str) -> bool {
        self.ping_with(vm, &[to_ip])
    }

    /// One ping from `vm`, sent from its address `src_ip`, to `to_ip`.
    pub fn ping_from_addr(&self, vm: &str, src_ip: &str, to_ip: &str) -> bool {
        self.ping_with(vm, &["-I", src_ip, to_ip])
    }

    fn ping_with(&self, vm: &str, args: &[&str]) -> bool {
        self.command_in(vm, "ping")
            .args(["-n", "-q", "-c", "1", "-W", "1"])
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until one ping from `vm` to `to_ip` is answered.
    pub fn wait_ping(&self, vm: &str, to_ip: &str, timeout: Duration) -> Result<Duration> {
        crate::wait_until(&format!("{vm} pings {to_ip}"), timeout, || {
            self.ping(vm, to_ip)
        })
    }

    /// `lab.sh ping-all --wait-s WAIT_S`: fails unless every cross-site VM pair pings (and
    /// every guest from the VMs of the other sites).
    pub fn expect_all_pairs_ping(&self, wait_s: u32) -> Result<()> {
        let matrix = self.lab_sh(&["ping-all", "--wait-s", &wait_s.to_string()])?;
        let all_ok = matrix
            .lines()
            .filter_map(|l| l.strip_prefix("ping-all: "))
            .filter_map(|l| l.strip_suffix(" OK"))
            .filter_map(|l| l.split_once('/'))
            .any(|(ok, total)| ok == total && total.parse::<u32>().is_ok_and(|n| n >= 12));
        if !all_ok {
            bail!("not every cross-site pair pings:\n{matrix}");
        }
        Ok(())
    }

    /// The router's kernel routes on site `site` (`ip route show proto 90` in `P-r-S`).
    pub fn routes(&self, site: &str) -> Result<Vec<Route>> {
        let out = self.run_in(
            &format!("r-{site}"),
            &["ip", "route", "show", "proto", "90"],
        )?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Route::parse(l).with_context(|| format!("unparsable route line {l:?}")))
            .collect()
    }

    /// The routes of `site` as one line, for messages.
    pub fn routes_text(&self, site: &str) -> String {
        match self.routes(site) {
            Ok(routes) => routes
                .iter()
                .map(Route::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("(error: {e:#})"),
        }
    }

    /// `ip neigh show ADDR` in namespace NAME (empty when there is no entry).
    pub fn neigh(&self, name: &str, addr: &str) -> Result<String> {
        self.run_in(name, &["ip", "neigh", "show", addr])
    }

    /// The router log of `site` (every start of that router appends to it).
    pub fn router_log(&self, site: &str) -> String {
        std::fs::read_to_string(self.state.join(site).join("router.log")).unwrap_or_default()
    }

    /// The current length of a router's log: pass it to [`Lab::log_since`].
    pub fn log_mark(&self, site: &str) -> usize {
        self.router_log(site).len()
    }

    /// What a router logged after `mark`.
    pub fn log_since(&self, site: &str, mark: usize) -> String {
        let log = self.router_log(site);
        log.get(mark..).unwrap_or_default().to_owned()
    }

    /// `skyvine WHAT --json --socket S/admin.sock` for `site` (e.g. WHAT = "peers").
    pub fn admin_json(&self, site: &str, what: &str) -> Result<serde_json::Value> {
        self.admin_json_args(site, &[what])
    }

    /// `skyvine ARGS… --json --socket S/admin.sock` for `site` (e.g. `["route", "10.77.1.1"]`).
    pub fn admin_json_args(&self, site: &str, args: &[&str]) -> Result<serde_json::Value> {
        let socket = self.state.join(site).join("skyvine.sock");
        let what = args.join(" ");
        let output = Command::new(&self.bins.skyvine)
            .args(args)
            .args(["--json", "--socket"])
            .arg(&socket)
            .output()
            .with_context(|| format!("running skyvine {what}"))?;
        let stdout = expect_success(&format!("skyvine {what} --json (site {site})"), &output)?;
        serde_json::from_str(&stdout)
            .with_context(|| format!("skyvine {what} --json printed no JSON: {stdout}"))
    }

    /// Whether router `site`'s `skyvine peers` shows `peer` connected (`None`: not listed).
    pub fn peer_connected(&self, site: &str, peer: &str) -> Result<Option<bool>> {
        let peers = self.admin_json(site, "peers")?;
        Ok(peers
            .get("peers")
            .and_then(|p| p.as_array())
            .and_then(|rows| {
                rows.iter()
                    .find(|row| row.get("site").and_then(|s| s.as_str()) == Some(peer))
            })
            .and_then(|row| row.get("connected"))
            .and_then(|c| c.as_bool()))
    }

    /// The PID of site `site`'s router, as `lab.sh` recorded it (`STATE/pids/router-S`).
    pub fn router_pid(&self, site: &str) -> Result<u32> {
        let file = self.state.join("pids").join(format!("router-{site}"));
        let record = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        record
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .with_context(|| format!("no PID in {}: {record:?}", file.display()))
    }

    /// The site whose GNDT entry `ip` matches at router `site`, and that entry's prefix
    /// (`skyvine route IP --json`).
    pub fn route_owner(&self, site: &str, ip: &str) -> Result<(String, String)> {
        let view = self.admin_json_args(site, &["route", ip])?;
        let matched = view
            .get("matched")
            .filter(|m| !m.is_null())
            .with_context(|| format!("router {site} has no GNDT entry for {ip}: {view}"))?;
        let text = |key: &str| {
            matched
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no {key} in router {site}'s route for {ip}: {view}"))
        };
        Ok((text("site")?, text("prefix")?))
    }

    /// Waits until every router agrees that host `ip` (MAC `mac`, address of site `home`'s
    /// prefix) is at `site`. In the GNDT: its /32 owned by `site`, or, at home, whatever
    /// matches owned by `home`. In the kernel (`ip route show proto 90`): the router there
    /// routes it on its LAN with a permanent neighbour entry for its MAC, every other router
    /// through the TUN device, and at home nobody holds a /32.
    pub fn expect_host_at(&self, ip: &str, mac: &str, home: &str, site: &str) -> Result<()> {
        let sites = std::fs::read_to_string(self.state.join("sites")).context("lab sites")?;
        let sites: Vec<&str> = sites.split_whitespace().collect();
        let desc = format!("every router places {ip} at site {site}");
        crate::wait_until_ok(&desc, HOST_CONVERGE, || {
            for router in &sites {
                if !self.host_state_is(router, ip, mac, home, site)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .map(drop)
        .with_context(|| {
            sites
                .iter()
                .map(|r| {
                    format!(
                        "router {r}: routes [{}], neighbour {:?}, GNDT match {:?}",
                        self.routes_text(r),
                        self.neigh(&format!("r-{r}"), ip).unwrap_or_default().trim(),
                        self.route_owner(r, ip).map_err(|e| format!("{e:#}")),
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn host_state_is(
        &self,
        router: &str,
        ip: &str,
        mac: &str,
        home: &str,
        site: &str,
    ) -> Result<bool> {
        let host: Vec<Route> = self
            .routes(router)?
            .into_iter()
            .filter(|r| r.dest == format!("{ip}/32"))
            .collect();
        let expected = if site == home {
            vec![]
        } else if router == site {
            vec![Route::new(ip, "lan0")]
        } else {
            vec![Route::new(ip, "skyvine0")]
        };
        if host != expected {
            return Ok(false);
        }
        let neigh = self.neigh(&format!("r-{router}"), ip)?;
        let permanent = neigh.contains("PERMANENT");
        let wants_permanent = router == site && site != home;
        if permanent != wants_permanent
            || (wants_permanent && !neigh.contains(&format!("lladdr {mac}")))
        {
            return Ok(false);
        }
        let (owner, prefix) = self.route_owner(router, ip)?;
        Ok(owner == site && (site == home || prefix == format!("{ip}/32")))
    }

    /// The data-plane drop counter `reason` of router `site` (from `skyvine peers --json`).
    pub fn drop_count(&self, site: &str, reason: &str) -> Result<u64> {
        let peers = self.admin_json(site, "peers")?;
        peers
            .get("drops")
            .and_then(|d| d.get(reason))
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no drop counter {reason:?} in {peers}"))
    }

    /// The QEMU guest `name` of this lab (`lab.sh up --qemu`).
    pub fn guest(&self, name: &str) -> Result<Guest> {
        let dir = self.state.join("guest").join(name);
        let home = std::fs::read_to_string(dir.join("home"))
            .with_context(|| format!("no guest {name} in lab {}", self.prefix))?
            .trim()
            .to_owned();
        let n = crate::site_num(&home)?;
        let host: u8 = match name.strip_prefix('g').map(str::parse::<u8>) {
            Some(Ok(k @ 1..=9)) => 9 + k,
            _ => bail!("unknown guest name {name:?} (guests are g1…g9)"),
        };
        Ok(Guest {
            name: name.to_owned(),
            ip: format!("10.77.{n}.{host}"),
            mac: format!("52:54:00:77:{n:02}:{host}"),
            home,
        })
    }

    /// Everything guest `name` printed on its serial console so far (every QEMU instance of
    /// it appends to one log).
    pub fn guest_console(&self, name: &str) -> String {
        let path = self.state.join("guest").join(name).join("console.log");
        // The guest's tty writes "\r\n".
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .replace('\r', "")
    }

    /// `lab.sh migrate GUEST SITE --qemu EXTRA…`: a live migration over QMP; returns its
    /// result line (with the guest's `off_ms`).
    pub fn migrate_guest(&self, guest: &str, site: &str, extra: &[&str]) -> Result<String> {
        let mut args = vec!["migrate", guest, site, "--qemu"];
        args.extend_from_slice(extra);
        let out = self.lab_sh(&args)?;
        let line = out.trim().to_owned();
        if crate::field(&line, "status") != Some("completed") {
            bail!("lab.sh migrate {guest} {site}: no completed migration in {line:?}");
        }
        Ok(line)
    }

    /// `lab.sh migrate VM SITE --announce KIND --pause-ms 100`; returns its result line.
    pub fn migrate(&self, vm: &str, site: &str, announce: &str) -> Result<String> {
        let out = self.lab_sh(&[
            "migrate",
            vm,
            site,
            "--announce",
            announce,
            "--pause-ms",
            "100",
        ])?;
        Ok(out.trim().to_owned())
    }

    /// Starts a checked-transfer server in `vm` for `connections` transfers and waits until it
    /// listens on `port`.
    pub fn xfer_server(&self, vm: &str, port: u16, connections: usize) -> Result<Background> {
        let mut cmd = self.command_in(vm, self.bins.tool("skyvine-xfer"));
        cmd.args(["server", "--listen", &format!("0.0.0.0:{port}")])
            .args(["--connections", &connections.to_string()])
            .args(["--idle-timeout-s", "240"]);
        let mut server = Background::spawn(format!("xfer server in {vm}"), cmd)?;
        let filter = format!("sport = :{port}");
        crate::wait_until_ok(
            &format!("the xfer server in {vm} listens on {port}"),
            Duration::from_secs(10),
            || {
                if !server.running() {
                    bail!("the xfer server in {vm} exited");
                }
                Ok(!self
                    .run_in(vm, &["ss", "-Hltn", &filter])?
                    .trim()
                    .is_empty())
            },
        )?;
        Ok(server)
    }

    /// Starts a checked transfer of `bytes` (e.g. "20M") from `vm` to `to` (ip:port),
    /// optionally paced to `rate_mbps`.
    pub fn xfer_client(
        &self,
        vm: &str,
        to: &str,
        bytes: &str,
        rate_mbps: Option<f64>,
        seed: u64,
    ) -> Result<Background> {
        let mut cmd = self.command_in(vm, self.bins.tool("skyvine-xfer"));
        cmd.args([
            "client",
            "--to",
            to,
            "--bytes",
            bytes,
            "--seed",
            &seed.to_string(),
        ])
        .args(["--idle-timeout-s", "240"]);
        if let Some(rate) = rate_mbps {
            cmd.args(["--rate-mbps", &rate.to_string()]);
        }
        Background::spawn(format!("xfer client {vm} -> {to}"), cmd)
    }

    /// Starts `lab.sh probe --to TO --from FROM --duration-s SECONDS --json` in the background:
    /// 1 ms probes from `from` to `to` for `duration_s` seconds, the JSON report on its stdout.
    pub fn probe(&self, from: &str, to: &str, duration_s: &str) -> Result<Background> {
        let args = [
            "probe",
            "--to",
            to,
            "--from",
            from,
            "--duration-s",
            duration_s,
            "--json",
        ];
        Background::spawn(format!("probe {from} -> {to}"), self.lab_sh_command(&args))
    }

    /// Bytes the peer acknowledged so far on each established TCP connection from `vm` to
    /// `to` (ip:port): the sender's view, for a receiver (a guest) that runs no commands.
    pub fn tcp_bytes_acked(&self, vm: &str, to: &str) -> Result<Vec<u64>> {
        let filter = format!("dst = {to}");
        let out = self.run_in(vm, &["ss", "-Htni", "state", "established", &filter])?;
        Ok(out
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("bytes_acked:"))
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// Bytes received so far on each established TCP connection to local `port` in `vm`.
    pub fn tcp_bytes_received(&self, vm: &str, port: u16) -> Result<Vec<u64>> {
        let filter = format!("sport = :{port}");
        let out = self.run_in(vm, &["ss", "-Htni", "state", "established", &filter])?;
        Ok(out
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("bytes_received:"))
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// Received packets counted on interface `dev` of namespace `name`.
    pub fn rx_packets(&self, name: &str, dev: &str) -> Result<u64> {
        let out = self.run_in(name, &["ip", "-j", "-s", "link", "show", dev])?;
        let json: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("ip -j printed {out}"))?;
        json.get(0)
            .and_then(|l| l.get("stats64"))
            .and_then(|s| s.get("rx"))
            .and_then(|rx| rx.get("packets"))
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no rx packet counter in {out}"))
    }

    fn guest_names(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.state.join("guest")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn print_failure_report(&self) {
        eprintln!(
            "==== lab {} failed: state and router logs ====",
            self.prefix
        );
        match self.lab_sh(&["status"]) {
            Ok(status) => eprintln!("{status}"),
            Err(e) => eprintln!("lab.sh status failed: {e:#}"),
        }
        let sites = std::fs::read_to_string(self.state.join("sites")).unwrap_or_default();
        for site in sites.split_whitespace() {
            eprintln!("---- router {site} log (last {LOG_TAIL_LINES} lines) ----");
            eprintln!("{}", tail(&self.router_log(site), LOG_TAIL_LINES));
        }
        for guest in self.guest_names() {
            eprintln!("---- guest {guest} console (last {LOG_TAIL_LINES} lines) ----");
            eprintln!("{}", tail(&self.guest_console(&guest), LOG_TAIL_LINES));
        }
        for (label, path) in &self.extra_logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            eprintln!("---- {label} ({}) ----", path.display());
            eprintln!("{}", tail(&text, LOG_TAIL_LINES));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.passed {
            self.print_failure_report();
        }
        if let Err(e) = self.lab_sh(&["down"]) {
            eprintln!("tearing down lab {}: {e:#}", self.prefix);
        }
        let _ = std::fs::remove_file(&self.current_file);
    }
}

/// Checks the transfer client's and server's results: both exited 0, the client sent
/// `bytes`, and the server reports the same count and hash as the client for its seed.
pub fn check_transfer(client: &Finished, server_stdout: &str, bytes: u64) -> Result<()> {
    if !client.status.success() {
        bail!("transfer failed: {client}");
    }
    let line = client
        .stdout
        .lines()
        .find(|l| l.starts_with("xfer-client") && l.ends_with(" ok"))
        .with_context(|| format!("no result line from {client}"))?;
    let sent = field(line, "bytes").context("no bytes= field")?;
    let hash = field(line, "fnv64").context("no fnv64= field")?;
    let seed = field(line, "seed").context("no seed= field")?;
    if sent != bytes.to_string() || field(line, "server_bytes") != Some(sent) {
        bail!("transfer count mismatch (expected {bytes}): {line}");
    }
    if field(line, "server_fnv64") != Some(hash) {
        bail!("hash mismatch: {line}");
    }
    let confirmed = server_stdout.lines().any(|l| {
        l.ends_with(" ok")
            && field(l, "bytes") == Some(sent)
            && field(l, "fnv64") == Some(hash)
            && field(l, "seed") == Some(seed)
    });
    if !confirmed {
        bail!("the server did not report bytes={sent} fnv64={hash} seed={seed}:\n{server_stdout}");
    }
    Ok(())
}

fn expect_success(what: &str, output: &Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({})\n--- stdout\n{stdout}--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// `t` + 5 hex digits from the PID and a counter, unused by any namespace.
fn fresh_prefix() -> Result<String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let existing = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running ip netns list")?;
    let existing = String::from_utf8_lossy(&existing.stdout).into_owned();
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!(
            "t{:05x}",
            (std::process::id().wrapping_mul(16).wrapping_add(n)) & 0xf_ffff
        );
        let taken = existing
            .lines()
            .any(|l| l.starts_with(&format!("{prefix}-")))
            || Path::new(&format!("/tmp/skyvine-lab-{prefix}")).exists();
        if !taken {
            return Ok(prefix);
        }
    }
    bail!("no free lab prefix found")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all.get(all.len().saturating_sub(lines)..)
        .unwrap_or_default()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lines_parse_to_destination_and_device() {
        assert_eq!(
            Route::parse("10.77.1.1 dev lan0 scope link "),
            Some(Route::new("10.77.1.1/32", "lan0"))
        );
        assert_eq!(
            Route::parse("10.77.2.0/24 dev skyvine0 scope link"),
            Some(Route::new("10.77.2.0/24", "skyvine0"))
        );
        assert_eq!(Route::parse(""), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
