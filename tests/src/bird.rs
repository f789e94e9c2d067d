//! BIRD 2 next to a lab router, peering by eBGP with a second BIRD that plays the site's
//! top-of-rack switch (`deploy/bird.conf` on the gateway, a plain BGP speaker on the switch).
//!
//! A [`Fabric`] owns what it creates: the switch namespace `P-tor-S`, the veth between it and
//! the router namespace `P-r-S`, and both BIRD processes (stopped by PID on drop, also when the
//! test fails; the namespace is deleted after them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::Background;
use crate::{site_num, wait_until_ok, workspace_root, Lab};

/// Where Debian's bird2 puts the daemon and its client.
const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";

/// How long a BGP session may take to come up (BIRD waits 5 s before its first connect).
const SESSION_UP: Duration = Duration::from_secs(30);

/// Installs Debian's bird2 when `bird` is missing (root only; tests/run.sh does it up front).
pub fn ensure_bird() -> Result<()> {
    if Path::new(BIRD).is_file() && Path::new(BIRDC).is_file() {
        return Ok(());
    }
    println!("{BIRD} missing: installing Debian package bird2");
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed; install bird2 by hand (apt-get install bird2)");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "bird2"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install bird2")?;
    if !install.success() || !Path::new(BIRD).is_file() {
        bail!("could not install bird2 (apt-get install bird2)");
    }
    Ok(())
}

/// One BIRD daemon in a lab namespace, with its own control socket.
#[derive(Debug)]
pub struct Bird {
    label: String,
    socket: PathBuf,
    process: Background,
}

impl Bird {
    /// Writes `config` to DIR/NAME.conf, checks it (`bird -p`), and starts BIRD in the
    /// foreground in namespace `ns` (a lab name such as `r-b`), logging to DIR/NAME.log.
    pub fn start(lab: &mut Lab, ns: &str, dir: &Path, name: &str, config: &str) -> Result<Bird> {
        let conf = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let parse = Command::new(BIRD)
            .arg("-p")
            .arg("-c")
            .arg(&conf)
            .output()
            .context("running bird -p")?;
        if !parse.status.success() {
            bail!(
                "bird rejects {}: {}{}",
                conf.display(),
                String::from_utf8_lossy(&parse.stdout),
                String::from_utf8_lossy(&parse.stderr)
            );
        }
        let mut cmd = lab.command_in(ns, BIRD);
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join(format!("{name}.pid")));
        let label = format!("bird {name} in {}", lab.ns(ns));
        let process = Background::spawn_logged(label.clone(), cmd, &log)?;
        lab.attach_log(&label, &log);
        let mut bird = Bird {
            label,
            socket,
            process,
        };
        wait_until_ok(
            &format!("{} answers on {}", bird.label, bird.socket.display()),
            Duration::from_secs(10),
            || {
                if !bird.running() {
                    bail!("{} exited; see {}", bird.label, log.display());
                }
                Ok(bird.birdc(&["show", "status"]).is_ok())
            },
        )?;
        Ok(bird)
    }

    /// True while the daemon runs.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// `birdc -s SOCKET ARGS…`; its output, or an error quoting it.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(BIRDC)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .with_context(|| format!("running birdc {}", args.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("Unable to connect") {
            bail!(
                "birdc {} ({}) failed: {text}{}",
                args.join(" "),
                self.label,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// The networks in BIRD's IPv4 table (`birdc show route`).
    pub fn routes(&self) -> Result<BTreeSet<String>> {
        let text = self.birdc(&["show", "route"])?;
        Ok(route_networks(&text))
    }

    /// The networks BIRD sends to protocol `name` (`birdc show route export NAME`).
    pub fn exported_to(&self, name: &str) -> Result<BTreeSet<String>> {
        let text = self.birdc(&["show", "route", "export", name])?;
        Ok(route_networks(&text))
    }

    /// How many routes protocol `name`'s import filter has refused so far.
    pub fn import_filtered(&self, name: &str) -> Result<u64> {
        let text = self.birdc(&["show", "protocols", "all", name])?;
        import_filtered(&text).with_context(|| format!("no import statistics in {text}"))
    }

    /// True when BGP protocol `name` is Established.
    pub fn established(&self, name: &str) -> Result<bool> {
        let text = self.birdc(&["show", "protocols", name])?;
        Ok(text.lines().any(|l| l.contains("Established")))
    }
}

/// The "filtered" count of a protocol's import updates in `birdc show protocols all NAME`.
fn import_filtered(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Import updates:"))?;
    // received, rejected, filtered, ignored, accepted
    line.split_whitespace().nth(4)?.parse().ok()
}

/// The networks in `birdc show route` output: the first word of each route line.
fn route_networks(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// Site S's fabric: BIRD in `P-r-S` with `deploy/bird.conf`, and a top-of-rack BIRD in
/// `P-tor-S`, joined by a veth (gateway `fabric0` 100.65.N.2/30, switch `gw0` 100.65.N.1/30).
#[derive(Debug)]
pub struct Fabric {
    /// The site.
    pub site: String,
    /// BIRD on the router's gateway, with the shipped configuration.
    pub gateway: Bird,
    /// BIRD playing the switch: it learns what the gateway exports and installs it in its
    /// namespace's kernel, so the switch namespace can reach the VMs through the gateway.
    pub switch: Bird,
    _namespace: Namespace,
}

impl Fabric {
    /// The switch's namespace name within the lab (`tor-S`).
    pub fn switch_ns(site: &str) -> String {
        format!("tor-{site}")
    }

    /// The switch's address on the link to the gateway.
    pub fn switch_address(site: &str) -> Result<String> {
        Ok(format!("100.65.{}.1", site_num(site)?))
    }

    /// Builds site `site`'s fabric and waits until its BGP session is Established. With
    /// `site_prefix`, the gateway also announces the site prefix (the optional block of
    /// `deploy/bird.conf`, uncommented).
    pub fn up(lab: &mut Lab, site: &str, site_prefix: bool) -> Result<Fabric> {
        let n = site_num(site)?;
        let switch_ns = Fabric::switch_ns(site);
        let namespace = Namespace::create(&lab.ns(&switch_ns))?;
        run(Command::new("ip").args([
            "link",
            "add",
            "fabric0",
            "netns",
            &lab.ns(&format!("r-{site}")),
            "type",
            "veth",
            "peer",
            "gw0",
            "netns",
            &namespace.0,
        ]))?;
        let gateway_ip = format!("100.65.{n}.2");
        let switch_ip = Fabric::switch_address(site)?;
        lab.run_in(
            &format!("r-{site}"),
            &[
                "ip",
                "addr",
                "add",
                &format!("{gateway_ip}/30"),
                "dev",
                "fabric0",
            ],
        )?;
        lab.run_in(
            &format!("r-{site}"),
            &["ip", "link", "set", "fabric0", "up"],
        )?;
        lab.run_in(&switch_ns, &["ip", "link", "set", "lo", "up"])?;
        lab.run_in(
            &switch_ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{switch_ip}/30"),
                "dev",
                "gw0",
            ],
        )?;
        lab.run_in(&switch_ns, &["ip", "link", "set", "gw0", "up"])?;

        let dir = lab.state_dir().join("bgp");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let gateway_conf = gateway_config(site, &gateway_ip, &switch_ip, site_prefix)?;
        let gateway = Bird::start(
            lab,
            &format!("r-{site}"),
            &dir,
            &format!("gateway-{site}"),
            &gateway_conf,
        )?;
        let switch_conf = switch_config(site, &gateway_ip, &switch_ip)?;
        let switch = Bird::start(
            lab,
            &switch_ns,
            &dir,
            &format!("switch-{site}"),
            &switch_conf,
        )?;
        let fabric = Fabric {
            site: site.to_owned(),
            gateway,
            switch,
            _namespace: namespace,
        };
        wait_until_ok(
            &format!("site {site}'s gateway and switch BIRDs establish BGP"),
            SESSION_UP,
            || Ok(fabric.gateway.established("fabric")? && fabric.switch.established("skyvine_gw")?),
        )?;
        Ok(fabric)
    }

    /// What the switch has learnt from the gateway.
    pub fn switch_routes(&self) -> Result<BTreeSet<String>> {
        self.switch.routes()
    }
}

/// `deploy/bird.conf` for site `site` of the lab: its defines and router id filled in, logging
/// to stderr (the test's log file) instead of syslog.
fn gateway_config(
    site: &str,
    gateway_ip: &str,
    switch_ip: &str,
    site_prefix: bool,
) -> Result<String> {
    let path = workspace_root().join("deploy").join("bird.conf");
    let mut text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let n = site_num(site)?;
    let edits = [
        (
            "router id 192.0.2.2;".to_owned(),
            format!("router id {gateway_ip};"),
        ),
        (
            "define SKYVINE_LAN = \"eth1\";".to_owned(),
            "define SKYVINE_LAN = \"lan0\";".to_owned(),
        ),
        (
            "define GATEWAY_AS = 65002;".to_owned(),
            format!("define GATEWAY_AS = {};", 65000 + u32::from(n)),
        ),
        (
            "define FABRIC_PEER = 192.0.2.1;".to_owned(),
            format!("define FABRIC_PEER = {switch_ip};"),
        ),
        ("log syslog all;".to_owned(), "log stderr all;".to_owned()),
    ];
    for (from, to) in edits {
        text = replace_once(&text, &from, &to, &path)?;
    }
    if site_prefix {
        let block =
            "#protocol static skyvine_site {\n#\tipv4;\n#\troute 10.77.2.0/24 via \"eth1\";\n#}";
        let enabled = format!(
            "protocol static skyvine_site {{\n\tipv4;\n\troute 10.77.{n}.0/24 via \"lan0\";\n}}"
        );
        text = replace_once(&text, block, &enabled, &path)?;
        text = replace_once(
            &text,
            "export where proto = \"skyvine_hosts\";",
            "export where proto = \"skyvine_hosts\" || proto = \"skyvine_site\";",
            &path,
        )?;
    }
    Ok(text)
}

/// The switch: takes everything the gateway announces, installs it in its kernel, announces
/// nothing back.
fn switch_config(site: &str, gateway_ip: &str, switch_ip: &str) -> Result<String> {
    let gateway_as = 65000 + u32::from(site_num(site)?);
    Ok(format!(
        "# top-of-rack switch of lab site {site} (generated by the skyvine tests)
router id {switch_ip};
log stderr all;
protocol device {{
}}
protocol kernel {{
\tipv4 {{ import none; export all; }};
}}
protocol bgp skyvine_gw {{
\tlocal as 65100;
\tneighbor {gateway_ip} as {gateway_as};
\thold time 9;
\tkeepalive time 3;
\tconnect retry time 5;
\tipv4 {{ import all; export none; }};
}}
"
    ))
}

fn replace_once(text: &str, from: &str, to: &str, path: &Path) -> Result<String> {
    match text.matches(from).count() {
        1 => Ok(text.replacen(from, to, 1)),
        n => bail!(
            "{} holds {from:?} {n} times, not once: update the test to the new file",
            path.display()
        ),
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A network namespace this test created; deleted on drop (its veth ends go with it).
#[derive(Debug)]
struct Namespace(String);

impl Namespace {
    fn create(name: &str) -> Result<Namespace> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        Ok(Namespace(name.to_owned()))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.0])) {
            eprintln!("deleting namespace {}: {e:#}", self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lines_give_their_networks() {
        let text = "BIRD 2.0.12 ready.\nTable master4:\n10.77.1.1/32         unicast [gateway 09:00:00.123] * (100) [AS65002i]\n\tvia 100.65.2.2 on gw0\n10.77.3.0/24         unicast [gateway 09:00:00.123] * (100) [AS65003i]\n";
        let nets: Vec<String> = route_networks(text).into_iter().collect();
        assert_eq!(nets, ["10.77.1.1/32", "10.77.3.0/24"]);
        assert!(route_networks("BIRD 2.0.12 ready.\n").is_empty());
    }

    #[test]
    fn import_statistics_give_the_filtered_count() {
        let text = "skyvine_hosts Kernel     master4    up     09:00:00.000\n  Channel ipv4\n    Route change stats:     received   rejected   filtered    ignored   accepted\n      Import updates:              3          0          2          0          1\n      Import withdraws:            0          0        ---          0          0\n";
        assert_eq!(import_filtered(text), Some(2));
        assert_eq!(import_filtered("BIRD 2.0.12 ready.\n"), None);
    }

    #[test]
    fn the_shipped_config_takes_the_lab_values() {
        let text = gateway_config("c", "100.65.3.2", "100.65.3.1", true).unwrap();
        assert!(text.contains("router id 100.65.3.2;"), "{text}");
        assert!(text.contains("define GATEWAY_AS = 65003;"), "{text}");
        assert!(text.contains("route 10.77.3.0/24 via \"lan0\";"), "{text}");
        assert!(!text.contains("eth1\";\n"), "{text}");
    }
}
