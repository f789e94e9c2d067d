//! Observation helpers for the fault-injection lab tests (`netns_faults.rs`): router memory
//! from /proc, GNDT rows from `skyvine tables --json`, the kernel entries the tables imply
//! (compared with what the kernel holds), and an nftables counter in a VM that counts (and
//! drops) the packets a spoofing VM manages to divert to itself.
//!
//! Only observes; never decides what the router should do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use skyvine_tests::{Background, Lab, Route};

/// One GNDT row as every router must agree on it (ages left out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GndtRow {
    pub prefix: String,
    pub kind: String,
    pub site: String,
    pub seq: u64,
    pub origin: String,
    pub mac: Option<String>,
    pub withdrawn: bool,
}

impl std::fmt::Display for GndtRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}@{} seq {}{}{}",
            self.prefix,
            self.kind,
            self.site,
            self.seq,
            self.mac
                .as_deref()
                .map(|m| format!(" mac {m}"))
                .unwrap_or_default(),
            if self.withdrawn { " withdrawn" } else { "" }
        )
    }
}

/// The GNDT of router `site`.
pub fn gndt(lab: &Lab, site: &str) -> Result<BTreeSet<GndtRow>> {
    let tables = lab.admin_json(site, "tables")?;
    let rows = tables
        .get("gndt")
        .and_then(Value::as_array)
        .with_context(|| format!("no gndt array in router {site}'s tables: {tables}"))?;
    rows.iter().map(parse_row).collect()
}

fn parse_row(row: &Value) -> Result<GndtRow> {
    let text = |key: &str| -> Result<String> {
        row.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("GNDT row without {key:?}: {row}"))
    };
    Ok(GndtRow {
        prefix: text("prefix")?,
        kind: text("kind")?,
        site: text("site")?,
        origin: text("origin")?,
        seq: row
            .get("seq")
            .and_then(Value::as_u64)
            .with_context(|| format!("GNDT row without seq: {row}"))?,
        mac: row.get("mac").and_then(Value::as_str).map(str::to_owned),
        withdrawn: row
            .get("withdrawn")
            .and_then(Value::as_bool)
            .with_context(|| format!("GNDT row without withdrawn: {row}"))?,
    })
}

/// The site router `at` places `prefix` (e.g. `10.77.1.1/32`) at, if it has a live entry.
pub fn placed_at(lab: &Lab, at: &str, prefix: &str) -> Result<Option<String>> {
    Ok(gndt(lab, at)?
        .into_iter()
        .find(|r| r.prefix == prefix && !r.withdrawn)
        .map(|r| r.site))
}

/// True when every router in `sites` places `prefix` at `owner`.
pub fn all_place(lab: &Lab, sites: &[&str], prefix: &str, owner: &str) -> Result<bool> {
    for site in sites {
        if placed_at(lab, site, prefix)?.as_deref() != Some(owner) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The kernel entries router `me` must hold for `rows` (the router's rule: every live entry
/// owned by another site goes into the TUN device, except a host entry that agrees with the
/// entry covering it; a host of ours that disagrees with its cover is routed on the LAN with
/// a permanent neighbour entry for its MAC).
pub fn expected_kernel(
    rows: &BTreeSet<GndtRow>,
    me: &str,
) -> Result<(BTreeSet<Route>, BTreeMap<String, String>)> {
    let live: Vec<(&GndtRow, u32, u8)> = rows
        .iter()
        .filter(|r| !r.withdrawn)
        .map(|r| parse_prefix(&r.prefix).map(|(net, len)| (r, net, len)))
        .collect::<Result<_>>()?;
    let cover_site = |net: u32, len: u8| -> Option<&str> {
        live.iter()
            .filter(|(_, n, l)| *l < len && contains(*n, *l, net))
            .max_by_key(|(_, _, l)| *l)
            .map(|(r, _, _)| r.site.as_str())
    };
    let mut routes = BTreeSet::new();
    let mut neighbours = BTreeMap::new();
    for (row, net, len) in &live {
        let agrees = row.kind == "host" && cover_site(*net, *len) == Some(row.site.as_str());
        if agrees {
            continue;
        }
        if row.site != me {
            routes.insert(Route::new(&row.prefix, "skyvine0"));
        } else if row.kind == "host" {
            routes.insert(Route::new(&row.prefix, "lan0"));
            if let Some(mac) = &row.mac {
                let ip = row.prefix.split('/').next().unwrap_or_default();
                neighbours.insert(ip.to_owned(), mac.clone());
            }
        }
    }
    Ok((routes, neighbours))
}

fn parse_prefix(prefix: &str) -> Result<(u32, u8)> {
    let (addr, len) = prefix.split_once('/').unwrap_or((prefix, "32"));
    let addr: std::net::Ipv4Addr = addr.parse().with_context(|| format!("prefix {prefix:?}"))?;
    let len: u8 = len.parse().with_context(|| format!("prefix {prefix:?}"))?;
    ensure!(len <= 32, "prefix {prefix:?}");
    Ok((u32::from(addr), len))
}

fn contains(net: u32, len: u8, addr: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    net & mask == addr & mask
}

/// The router's neighbour entries (`ip neigh show proto 90` in `P-r-S`): address -> MAC,
/// plus every line as printed (to spot non-permanent or duplicate entries).
pub fn kernel_neighbours(lab: &Lab, site: &str) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let out = lab.run_in(
        &format!("r-{site}"),
        &["ip", "neigh", "show", "proto", "90"],
    )?;
    let lines: Vec<String> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let mut map = BTreeMap::new();
    for line in &lines {
        let mut words = line.split_whitespace();
        let ip = words.next().context("empty neighbour line")?;
        let mac = line
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .with_context(|| format!("neighbour line without lladdr: {line:?}"))?;
        if map.insert(ip.to_owned(), mac.to_owned()).is_some() {
            bail!("duplicate neighbour entry for {ip} at router {site}: {lines:?}");
        }
    }
    Ok((map, lines))
}

/// Why router `site`'s kernel entries differ from what its own tables imply (`None` when
/// they match exactly: no stale, missing or duplicate route or neighbour).
pub fn kernel_mismatch(lab: &Lab, site: &str) -> Result<Option<String>> {
    let rows = gndt(lab, site)?;
    let (want_routes, want_neigh) = expected_kernel(&rows, site)?;
    let routes = lab.routes(site)?;
    let have_routes: BTreeSet<Route> = routes.iter().cloned().collect();
    let (have_neigh, neigh_lines) = kernel_neighbours(lab, site)?;
    let mut problems = Vec::new();
    if have_routes.len() != routes.len() {
        problems.push(format!("duplicate routes: {routes:?}"));
    }
    if have_routes != want_routes {
        problems.push(format!(
            "routes {} but the tables imply {}",
            join(&have_routes),
            join(&want_routes)
        ));
    }
    if have_neigh != want_neigh {
        problems.push(format!(
            "neighbours {neigh_lines:?} but the tables imply {want_neigh:?}"
        ));
    }
    if let Some(line) = neigh_lines.iter().find(|l| !l.contains("PERMANENT")) {
        problems.push(format!("non-permanent neighbour entry {line:?}"));
    }
    Ok((!problems.is_empty()).then(|| format!("router {site}: {}", problems.join("; "))))
}

pub fn join(routes: &BTreeSet<Route>) -> String {
    let all: Vec<String> = routes.iter().map(Route::to_string).collect();
    format!("[{}]", all.join(", "))
}

/// Router `site`'s PID as recorded by lab.sh.
pub fn router_pid(lab: &Lab, site: &str) -> Result<u32> {
    let path = lab.state_dir().join("pids").join(format!("router-{site}"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("no PID in {}: {text:?}", path.display()))
}

/// A `/proc/PID/status` field in KiB (e.g. `VmRSS`, `VmHWM`).
pub fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A counter of router `site`'s `skyvine status --json` (`lan_counters.NAME` or
/// `counts.NAME`).
pub fn status_counter(lab: &Lab, site: &str, group: &str, name: &str) -> Result<u64> {
    let status = lab.admin_json(site, "status")?;
    status
        .get(group)
        .and_then(|g| g.get(name))
        .and_then(Value::as_u64)
        .with_context(|| format!("router {site}'s status has no {group}.{name}: {status}"))
}

/// An nftables counter in VM `vm` that counts and drops every IPv4 packet addressed to
/// `ip` arriving on its link: what a spoofing VM receives of another host's traffic.
pub struct Spy<'a> {
    lab: &'a Lab,
    vm: String,
}

impl<'a> Spy<'a> {
    pub fn install(lab: &'a Lab, vm: &str, ip: &str) -> Result<Spy<'a>> {
        let rules = format!(
            "table inet skyvine_spy {{\n counter diverted {{}}\n chain pre {{ type filter hook prerouting priority -300; ip daddr {ip} counter name diverted drop; }}\n}}\n"
        );
        let path = lab.state_dir().join(format!("spy-{vm}.nft"));
        std::fs::write(&path, rules)?;
        let path = path.to_string_lossy().into_owned();
        lab.run_in(vm, &["nft", "-f", &path])?;
        Ok(Spy {
            lab,
            vm: vm.to_owned(),
        })
    }

    /// (packets, bytes) counted since the last reset.
    pub fn read(&self) -> Result<(u64, u64)> {
        let out = self.lab.run_in(
            &self.vm,
            &[
                "nft",
                "-j",
                "list",
                "counter",
                "inet",
                "skyvine_spy",
                "diverted",
            ],
        )?;
        let json: Value = serde_json::from_str(&out).with_context(|| format!("nft -j: {out}"))?;
        let counter = json
            .get("nftables")
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find_map(|i| i.get("counter")))
            .with_context(|| format!("no counter in {out}"))?;
        let get = |k: &str| counter.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok((get("packets"), get("bytes")))
    }

    pub fn reset(&self) -> Result<()> {
        self.lab.run_in(
            &self.vm,
            &["nft", "reset", "counter", "inet", "skyvine_spy", "diverted"],
        )?;
        Ok(())
    }
}

/// Starts `skyvine-flood` in `vm` (mode, duration, rate frames/s, extra arguments).
pub fn start_flood(
    lab: &Lab,
    vm: &str,
    mode: &str,
    duration: Duration,
    rate: u64,
    extra: &[&str],
) -> Result<Background> {
    let tool = lab.bins().tool("skyvine-flood");
    ensure!(
        tool.is_file(),
        "{} not found: run `cargo build --release -p skyvine-labtools`",
        tool.display()
    );
    let mut cmd = lab.command_in(vm, tool);
    cmd.args(["--iface", "eth0", "--mode", mode])
        .args(["--rate", &rate.to_string()])
        .args(["--duration-s", &format!("{:.3}", duration.as_secs_f64())])
        .args(extra);
    Background::spawn(format!("skyvine-flood {mode} in {vm}"), cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prefix: &str, kind: &str, site: &str) -> GndtRow {
        GndtRow {
            prefix: prefix.into(),
            kind: kind.into(),
            site: site.into(),
            seq: 1,
            origin: site.into(),
            mac: (kind == "host").then(|| "52:54:00:77:01:02".into()),
            withdrawn: false,
        }
    }

    #[test]
    fn kernel_entries_follow_the_cover_rule() {
        let rows: BTreeSet<GndtRow> = [
            row("10.77.1.0/24", "prefix", "a"),
            row("10.77.1.1/32", "host", "a"),
            row("10.77.1.2/32", "host", "c"),
            row("10.77.2.0/24", "prefix", "b"),
            row("10.77.3.0/24", "prefix", "c"),
        ]
        .into();
        let (routes, neigh) = expected_kernel(&rows, "b").unwrap();
        let want: BTreeSet<Route> = [
            Route::new("10.77.1.0/24", "skyvine0"),
            Route::new("10.77.1.2/32", "skyvine0"),
            Route::new("10.77.3.0/24", "skyvine0"),
        ]
        .into();
        assert_eq!(routes, want);
        assert!(neigh.is_empty());
        let (routes, neigh) = expected_kernel(&rows, "c").unwrap();
        assert!(routes.contains(&Route::new("10.77.1.2/32", "lan0")));
        assert_eq!(
            neigh.get("10.77.1.2").map(String::as_str),
            Some("52:54:00:77:01:02")
        );
    }
}
