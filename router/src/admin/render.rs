//! Text output for people: aligned columns in the manner of `wg show` and `birdc show route`.
//! Host (/32) entries are marked with `*` and the KIND `host`, site prefixes with `prefix`.

use std::fmt::Write as _;

use skyvine_core::node::Counter;

use super::api::{
    Counts, GndtRow, HintView, HwdtRow, Kind, LndtOrigin, LndtView, MigrationRow, MigrationsView,
    OutcomeName, PeersView, RouteView, StatusView, TablesView,
};

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
#[derive(Debug)]
pub struct Columns {
    rows: Vec<Vec<String>>,
}

impl Columns {
    pub fn new(header: &[&str]) -> Self {
        Columns {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, indent: &str) -> String {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let width = cell.chars().count();
                match widths.get_mut(i) {
                    Some(w) => *w = (*w).max(width),
                    None => widths.push(width),
                }
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = indent.to_owned();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let width = widths.get(i).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A compact duration: `850ms`, `42s`, `5m12s`, `3h04m`, `2d07h`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    if seconds < 1.0 {
        return format!("{:.0}ms", seconds * 1000.0);
    }
    // Truncation to whole seconds is intended for display.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64 / 1024.0;
    let mut unit = "KiB";
    for next in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn gndt_columns(rows: &[&GndtRow]) -> Columns {
    let mut table = Columns::new(&[
        "PREFIX", "KIND", "SITE", "SEQ", "ORIGIN", "MAC", "STATE", "AGE",
    ]);
    for row in rows {
        let prefix = match row.kind {
            Kind::Host => format!("* {}", row.prefix),
            Kind::Prefix => format!("  {}", row.prefix),
        };
        let site = if row.local {
            format!("{} (here)", row.site)
        } else {
            row.site.to_string()
        };
        table.row(vec![
            prefix,
            kind_name(row.kind).to_owned(),
            site,
            row.seq.to_string(),
            row.origin.to_string(),
            opt(row.mac),
            if row.withdrawn { "withdrawn" } else { "live" }.to_owned(),
            duration(row.age_s),
        ]);
    }
    table
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Host => "host",
        Kind::Prefix => "prefix",
    }
}

pub fn gndt(site: &str, rows: &[GndtRow]) -> String {
    let hosts = rows
        .iter()
        .filter(|r| r.kind == Kind::Host && !r.withdrawn)
        .count();
    let prefixes = rows
        .iter()
        .filter(|r| r.kind == Kind::Prefix && !r.withdrawn)
        .count();
    let withdrawn = rows.iter().filter(|r| r.withdrawn).count();
    let mut out = format!(
        "GNDT at site {site}: {prefixes} prefix(es), {hosts} host entr{}, {withdrawn} withdrawn  (* = host /32)\n",
        if hosts == 1 { "y" } else { "ies" }
    );
    out += &gndt_columns(&rows.iter().collect::<Vec<_>>()).render("");
    out
}

pub fn lndt(site: &str, view: &LndtView) -> String {
    let mut out = format!("LNDT at site {site}: hosts this router forwards for\n");
    let mut table = Columns::new(&["HOSTS", "SOURCE", "MAC", "SINCE"]);
    for row in &view.hosts {
        table.row(vec![
            row.prefix.to_string(),
            match row.source {
                LndtOrigin::Configured => "configured",
                LndtOrigin::MigratedIn => "migrated in",
            }
            .to_owned(),
            opt(row.mac),
            duration(row.age_s),
        ]);
    }
    out += &table.render("");
    if !view.moved_away.is_empty() {
        let list: Vec<String> = view.moved_away.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "moved away: {}", list.join(", "));
    }
    out
}

pub fn hwdt(site: &str, rows: &[HwdtRow]) -> String {
    let mut out = format!("HWDT at site {site}: {} binding(s)\n", rows.len());
    let mut table = Columns::new(&["IP", "MAC", "SOURCE", "FIRST SEEN", "LAST SEEN"]);
    for row in rows {
        table.row(vec![
            row.ip.to_string(),
            row.mac.to_string(),
            match row.source {
                super::api::BindingOrigin::Lan => "lan",
                super::api::BindingOrigin::Configured => "configured",
            }
            .to_owned(),
            format!("{} ago", duration(row.first_seen_s)),
            format!("{} ago", duration(row.last_seen_s)),
        ]);
    }
    out += &table.render("");
    out
}

/// "a", or "a, network blue" on a router whose networks are named (`[[networks]]`).
fn site_in(site: &str, network: &str) -> String {
    if network.is_empty() || network == skyvine_core::config::DEFAULT_NETWORK_NAME {
        site.to_owned()
    } else {
        format!("{site}, network {network}")
    }
}

pub fn tables(view: &TablesView) -> String {
    let site = site_in(view.site.as_str(), &view.network);
    let site = site.as_str();
    let mut parts = Vec::new();
    if let Some(rows) = &view.gndt {
        parts.push(gndt(site, rows));
    }
    if let Some(lndt_view) = &view.lndt {
        parts.push(lndt(site, lndt_view));
    }
    if let Some(rows) = &view.hwdt {
        parts.push(hwdt(site, rows));
    }
    parts.join("\n")
}

pub fn route(view: &RouteView) -> String {
    let Some(matched) = &view.matched else {
        return format!(
            "{}: no route at site {} (no GNDT entry covers it; packets to it are dropped as no_route)\n",
            view.address, view.site
        );
    };
    let mut out = String::new();
    let verdict = if matched.local {
        "local: delivered on this site's LAN".to_owned()
    } else {
        format!("via site {} over the overlay", matched.site)
    };
    let _ = writeln!(
        out,
        "{} -> site {}  ({verdict})",
        view.address, matched.site
    );
    let _ = writeln!(
        out,
        "  matched {} {} (longest prefix containing {}, /{}), seq {} from {}, installed {} ago",
        kind_name(matched.kind),
        matched.prefix,
        view.address,
        matched.prefix.prefix(),
        matched.seq,
        matched.origin,
        duration(matched.age_s)
    );
    if view.beaten.is_empty() {
        out += "  no other entry contains it\n";
    } else {
        out += "  it beat the shorter entries:\n";
        let mut table = Columns::new(&["PREFIX", "KIND", "SITE", "SEQ"]);
        for row in &view.beaten {
            table.row(vec![
                row.prefix.to_string(),
                kind_name(row.kind).to_owned(),
                row.site.to_string(),
                row.seq.to_string(),
            ]);
        }
        out += &table.render("    ");
    }
    let _ = writeln!(
        out,
        "  as a source here: {}",
        if view.in_lndt {
            "in this router's LNDT (may send through the overlay)"
        } else {
            "not in this router's LNDT (the overlay drops what it sends from here)"
        }
    );
    out
}

pub fn peers(view: &PeersView) -> String {
    let mut out = format!("peers of site {}\n", view.site);
    let mut table = Columns::new(&[
        "NETWORK", "PEER", "STATE", "PATH", "ADDRESS", "RTT", "SINCE", "TX PKTS", "TX BYTES",
        "RX PKTS", "RX BYTES", "LOST",
    ]);
    for peer in &view.peers {
        let state = match (peer.connected, peer.synced) {
            (true, true) => "up",
            (true, false) => "syncing",
            (false, _) => "down",
        };
        let name = if peer.configured {
            peer.site.to_string()
        } else {
            format!("{} (dialed in)", peer.site)
        };
        let path = match &peer.via {
            Some(relay) => format!("via {relay}"),
            None => "direct".to_owned(),
        };
        table.row(vec![
            peer.network.clone(),
            name,
            state.to_owned(),
            path,
            opt(peer.address),
            peer.rtt_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}ms")),
            duration(peer.since_s),
            peer.tx_packets.to_string(),
            bytes(peer.tx_bytes),
            peer.rx_packets.to_string(),
            bytes(peer.rx_bytes),
            opt(peer.lost_packets),
        ]);
    }
    out += &table.render("");
    let relayed: Vec<String> = view
        .peers
        .iter()
        .filter(|p| p.relayed_packets > 0)
        .map(|p| {
            format!(
                "from {} {} pkts {}",
                p.site,
                p.relayed_packets,
                bytes(p.relayed_bytes)
            )
        })
        .collect();
    if !relayed.is_empty() {
        let _ = writeln!(out, "relayed for other sites: {}", relayed.join(", "));
    }
    let drops: Vec<String> = view
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "drops: {}",
        if drops.is_empty() {
            "none".to_owned()
        } else {
            drops.join(", ")
        }
    );
    out
}

/// The step offsets of a migration: `resolved +0.050 ms, confirmed +1.200 ms, ...`.
pub fn steps(row: &MigrationRow) -> String {
    let steps = [
        ("resolved", row.resolved_ms),
        ("confirmed", row.confirmed_ms),
        ("advertised", row.advertised_ms),
        ("applied", row.applied_ms),
    ];
    let done: Vec<String> = steps
        .iter()
        .filter_map(|(name, ms)| ms.map(|ms| format!("{name} +{ms:.3} ms")))
        .collect();
    if done.is_empty() {
        "-".to_owned()
    } else {
        done.join(", ")
    }
}

/// What `skyvine migration prepare` or `cancel` did, in one line.
pub fn hint(view: &HintView) -> String {
    match view.outcome.as_str() {
        "announced" => format!(
            "{}: planned migration of {} to {} announced to every router (window {:.0} s)\n",
            view.site,
            view.ip,
            view.to.as_ref().map_or("?", |s| s.as_str()),
            view.window_s.unwrap_or(0.0)
        ),
        "forwarded" => format!(
            "{}: asked {}, the owner of {}, to announce it (its log says if it refused)\n",
            view.site, view.owner, view.ip
        ),
        _ => format!(
            "{}: planned migration of {} {}\n",
            view.site, view.ip, view.outcome
        ),
    }
}

/// Planned migrations in their window, if any, as lines after the migrations table.
fn prepared(view: &MigrationsView) -> String {
    let mut out = String::new();
    for w in &view.prepared {
        out += &format!(
            "prepared: {} ({}) {} -> {}, open {:.1} s, {:.1} s left\n",
            w.ip, w.mac, w.from, w.to, w.age_s, w.left_s
        );
    }
    out
}

pub fn migrations(view: &MigrationsView) -> String {
    if view.migrations.is_empty() {
        return format!(
            "no migrations seen at site {}\n{}",
            view.site,
            prepared(view)
        );
    }
    let mut out = format!(
        "migrations seen at site {} (oldest first; steps are offsets from detection)\n",
        view.site
    );
    let mut table = Columns::new(&[
        "NETWORK",
        "ID",
        "VM IP",
        "MAC",
        "FROM",
        "TO",
        "ROLE",
        "DETECTION",
        "OUTCOME",
        "DETECTED",
        "STEPS",
    ]);
    for row in &view.migrations {
        let outcome = match (&row.outcome, &row.reason) {
            (OutcomeName::Applied, _) => "applied".to_owned(),
            (OutcomeName::InProgress, _) => "in progress".to_owned(),
            (OutcomeName::Refused, Some(why)) => format!("refused ({why})"),
            (OutcomeName::Refused, None) => "refused".to_owned(),
        };
        table.row(vec![
            row.network.clone(),
            row.id.to_string(),
            opt(row.ip),
            opt(row.mac),
            opt(row.from.as_ref()),
            row.to.to_string(),
            row.role.clone(),
            row.detection.clone(),
            outcome,
            format!("{} ago", duration(row.age_s)),
            steps(row),
        ]);
    }
    out += &table.render("");
    out += &prepared(view);
    out
}

pub fn status(view: &StatusView) -> String {
    let mut table = Columns::new(&["skyvine", &view.version]);
    table.row(vec!["site".into(), view.site.to_string()]);
    if view.networks.len() > 1 {
        table.row(vec![
            "network".into(),
            format!(
                "{} (this router carries {}; --network NAME for another)",
                view.network,
                view.networks.join(", ")
            ),
        ]);
    }
    table.row(vec!["uptime".into(), duration(view.uptime_s)]);
    let lan = match (view.lan.ip, view.lan.mac) {
        (Some(ip), Some(mac)) => format!("{} {ip} {mac}", view.lan.interface),
        _ => format!(
            "{} (no LAN identity: migrations not detected)",
            view.lan.interface
        ),
    };
    table.row(vec!["lan".into(), lan]);
    for (name, line) in count_lines(&view.counts) {
        table.row(vec![name.into(), line]);
    }
    let l = |counter| view.lan_counters.get(counter);
    table.row(vec![
        "lan frames".into(),
        format!(
            "{} seen, {} forged, {} repeats, {} proxy replies, {} rate-limited",
            l(Counter::Frames),
            l(Counter::ForgedFrames),
            l(Counter::Repeats),
            l(Counter::ProxyReplies),
            l(Counter::RateLimited)
        ),
    ]);
    let ip_forward = match view.ip_forward {
        Some(true) => "1",
        Some(false) => "0",
        None => "unknown",
    };
    table.row(vec!["ip_forward".into(), ip_forward.to_owned()]);
    let mut out = table.render("");
    if view.warnings.is_empty() {
        out += "warnings: none\n";
    } else {
        let _ = writeln!(out, "warnings: {}", view.warnings.len());
        for warning in &view.warnings {
            let _ = writeln!(out, "  ! {warning}");
        }
    }
    out
}

/// The status lines of the peer, table and migration counts.
fn count_lines(c: &Counts) -> [(&'static str, String); 5] {
    [
        (
            "peers",
            format!("{} up of {} configured", c.peers_up, c.peers_configured),
        ),
        (
            "gndt",
            format!(
                "{} prefix(es), {} host entr{}, {} withdrawn",
                c.gndt_prefixes,
                c.gndt_hosts,
                if c.gndt_hosts == 1 { "y" } else { "ies" },
                c.gndt_withdrawn
            ),
        ),
        (
            "lndt",
            format!(
                "{} configured range(s), {} migrated in, {} moved away",
                c.lndt_configured, c.lndt_migrated_in, c.lndt_moved_away
            ),
        ),
        ("hwdt", format!("{} binding(s)", c.hwdt_bindings)),
        (
            "migrations",
            format!(
                "{} applied, {} refused, {} in progress",
                c.migrations_applied, c.migrations_refused, c.migrations_in_progress
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyvine_tables::SiteId;

    fn row(prefix: &str, kind: Kind, site: &str, local: bool) -> GndtRow {
        GndtRow {
            prefix: prefix.parse().unwrap(),
            kind,
            site: SiteId::new(site).unwrap(),
            seq: 1,
            origin: SiteId::new(site).unwrap(),
            mac: None,
            withdrawn: false,
            local,
            age_s: 75.0,
        }
    }

    #[test]
    fn columns_align_every_cell_under_its_header() {
        let mut table = Columns::new(&["A", "LONG HEADER", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "last".into()]);
        let text = table.render("");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "A          LONG HEADER  C");
        assert_eq!(lines[1], "wide cell  x            last");
        assert_eq!(lines[0].find('C'), lines[1].find("last"));
    }

    #[test]
    fn host_entries_are_marked_apart_from_prefixes() {
        let rows = vec![
            row("10.77.1.0/24", Kind::Prefix, "a", true),
            row("10.77.1.1/32", Kind::Host, "b", false),
        ];
        let text = gndt("a", &rows);
        let prefix_line = text.lines().find(|l| l.contains("10.77.1.0/24")).unwrap();
        let host_line = text.lines().find(|l| l.contains("10.77.1.1/32")).unwrap();
        assert!(host_line.starts_with("* 10.77.1.1/32"), "{text}");
        assert!(prefix_line.starts_with("  10.77.1.0/24"), "{text}");
        assert!(host_line.contains(" host "), "{text}");
        assert!(prefix_line.contains(" prefix "), "{text}");
        assert!(prefix_line.contains("a (here)"), "{text}");
        // Every column starts at the same offset on both lines.
        assert_eq!(prefix_line.find("prefix"), host_line.find("host"));
        assert!(text.contains("1 host entry"), "{text}");
    }

    #[test]
    fn route_explains_the_longest_match() {
        let view = RouteView {
            address: "10.77.1.1".parse().unwrap(),
            network: String::new(),
            site: SiteId::new("c").unwrap(),
            matched: Some(row("10.77.1.1/32", Kind::Host, "b", false)),
            beaten: vec![row("10.77.1.0/24", Kind::Prefix, "a", false)],
            in_lndt: false,
        };
        let text = route(&view);
        assert!(
            text.starts_with("10.77.1.1 -> site b  (via site b over the overlay)"),
            "{text}"
        );
        assert!(text.contains("matched host 10.77.1.1/32"), "{text}");
        assert!(text.contains("10.77.1.0/24  prefix  a"), "{text}");
    }

    #[test]
    fn status_shows_one_line_per_part_and_every_warning() {
        let mut counters = skyvine_core::node::Counters::default();
        counters.add(Counter::Frames);
        let view = StatusView {
            version: "9.9.9".into(),
            site: SiteId::new("a").unwrap(),
            network: "default".into(),
            networks: vec!["default".into()],
            uptime_s: 312.0,
            lan: crate::admin::api::LanView {
                interface: "eth1".into(),
                ip: None,
                mac: None,
            },
            counts: Counts {
                peers_up: 1,
                peers_configured: 2,
                gndt_prefixes: 2,
                gndt_hosts: 1,
                migrations_applied: 3,
                ..Counts::default()
            },
            lan_counters: crate::admin::api::CountersView::new(&counters),
            ip_forward: Some(false),
            warnings: vec!["peer c is down (for 5m12s)".into()],
        };
        let text = status(&view);
        let line = |name: &str| {
            let found = text.lines().find(|l| l.split("  ").next() == Some(name));
            found
                .unwrap_or_else(|| panic!("no {name} line:\n{text}"))
                .to_owned()
        };
        assert!(line("skyvine").ends_with("9.9.9"), "{text}");
        assert!(line("uptime").ends_with("5m12s"), "{text}");
        assert!(line("lan").contains("eth1 (no LAN identity"), "{text}");
        assert!(line("peers").ends_with("1 up of 2 configured"), "{text}");
        assert!(
            line("gndt").ends_with("2 prefix(es), 1 host entry, 0 withdrawn"),
            "{text}"
        );
        assert!(line("hwdt").ends_with("0 binding(s)"), "{text}");
        assert!(
            line("migrations").ends_with("3 applied, 0 refused, 0 in progress"),
            "{text}"
        );
        assert!(line("lan frames").contains("1 seen, 0 forged"), "{text}");
        assert!(line("ip_forward").ends_with('0'), "{text}");
        assert!(
            text.ends_with("warnings: 1\n  ! peer c is down (for 5m12s)\n"),
            "{text}"
        );
    }

    #[test]
    fn durations_and_bytes_read_naturally() {
        assert_eq!(duration(0.25), "250ms");
        assert_eq!(duration(42.9), "42s");
        assert_eq!(duration(312.0), "5m12s");
        assert_eq!(duration(3.0 * 3600.0 + 240.0), "3h04m");
        assert_eq!(duration(2.0 * 86_400.0 + 7.0 * 3600.0), "2d07h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
    }

    #[test]
    fn migration_steps_are_offsets_in_ms_with_microseconds() {
        let row = MigrationRow {
            network: "default".into(),
            id: 1,
            ip: Some("10.77.1.1".parse().unwrap()),
            mac: None,
            from: None,
            to: SiteId::new("b").unwrap(),
            role: "destination".into(),
            detection: "rarp".into(),
            outcome: OutcomeName::Applied,
            reason: None,
            age_s: 3.0,
            resolved_ms: Some(0.05),
            confirmed_ms: Some(1.2),
            advertised_ms: None,
            applied_ms: Some(3.4567),
        };
        assert_eq!(
            steps(&row),
            "resolved +0.050 ms, confirmed +1.200 ms, applied +3.457 ms"
        );
    }
}
