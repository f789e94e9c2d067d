//! Prometheus metrics (text exposition format 0.0.4) over a minimal HTTP/1.1 responder:
//! `GET /metrics` answers 200, any other path 404, any other method 405; one request per
//! connection.
//!
//! Migration counters and step histograms must only grow, but the router keeps a bounded list
//! of recent migrations: [`MigrationStats`] absorbs each finished migration exactly once (a
//! poller runs between scrapes so none is evicted unseen).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skyvine_tables::SiteId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use skyvine_core::node::{Counter, Counters};

use super::api::{Counts, MigrationRow, OutcomeName};
use super::collect;
use crate::daemon::QueryHandle;
use crate::dataplane::CountersSnapshot;

/// Histogram bucket bounds for migration step durations, in seconds.
pub const STEP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// A client must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often finished migrations are absorbed between scrapes.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Everything a scrape shows, copied on the main loop.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub site: SiteId,
    pub uptime_s: f64,
    /// Each known peer: connected, and the RTT when connected.
    pub peers: BTreeMap<SiteId, (bool, Option<f64>)>,
    pub counters: CountersSnapshot,
    pub counts: Counts,
    /// The core's counters (LAN frames, refusals, entries over the limits).
    pub core: Counters,
    pub frozen: u64,
    pub migrations: Vec<MigrationRow>,
}

impl Snapshot {
    pub fn take(
        node: &skyvine_core::node::Node,
        shared: &crate::daemon::Shared,
        now: std::time::Instant,
    ) -> Self {
        let conns = shared.peers.load();
        Snapshot {
            site: node.me().clone(),
            uptime_s: collect::age(now, node.started()),
            peers: node
                .peers()
                .iter()
                .map(|(site, state)| {
                    let rtt = conns
                        .get(site)
                        .filter(|_| state.connected)
                        .map(|c| c.rtt().as_secs_f64());
                    (site.clone(), (state.connected, rtt))
                })
                .collect(),
            counters: shared.counters.snapshot(),
            counts: collect::counts(node),
            core: node.counters(),
            frozen: u64::try_from(node.frozen(now).len()).unwrap_or(u64::MAX),
            migrations: node
                .migrations()
                .map(|r| collect::migration_row(r, now))
                .collect(),
        }
    }
}

/// A cumulative histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket of [`STEP_BUCKETS`] (not cumulative), then the overflow.
    buckets: [u64; STEP_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, value: f64) {
        let index = STEP_BUCKETS
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(STEP_BUCKETS.len());
        if let Some(bucket) = self.buckets.get_mut(index) {
            *bucket += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Finished migrations, counted once each.
#[derive(Debug, Default)]
pub struct MigrationStats {
    counted: BTreeSet<u64>,
    /// By (detection, role, outcome).
    totals: BTreeMap<(String, String, &'static str), u64>,
    /// By (step, role), seconds from detection; applied migrations only.
    steps: BTreeMap<(&'static str, String), Histogram>,
}

impl MigrationStats {
    /// Counts the finished migrations in `rows` not counted before.
    pub fn absorb(&mut self, rows: &[MigrationRow]) {
        // Record ids only grow: ids older than the oldest listed can never come back.
        if let Some(oldest) = rows.iter().map(|r| r.id).min() {
            self.counted = self.counted.split_off(&oldest);
        }
        for row in rows {
            let outcome = match row.outcome {
                OutcomeName::InProgress => continue,
                OutcomeName::Applied => "applied",
                OutcomeName::Refused => "refused",
            };
            if !self.counted.insert(row.id) {
                continue;
            }
            *self
                .totals
                .entry((row.detection.clone(), row.role.clone(), outcome))
                .or_default() += 1;
            if row.outcome != OutcomeName::Applied {
                continue;
            }
            let steps = [
                ("resolved", row.resolved_ms),
                ("confirmed", row.confirmed_ms),
                ("advertised", row.advertised_ms),
                ("applied", row.applied_ms),
            ];
            for (step, ms) in steps {
                if let Some(ms) = ms {
                    self.steps
                        .entry((step, row.role.clone()))
                        .or_default()
                        .observe(ms / 1000.0);
                }
            }
        }
    }
}

/// Writes one metric family in the text format.
struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'a str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text for one scrape.
pub fn render(snap: &Snapshot, stats: &MigrationStats) -> String {
    let mut out = String::new();
    let o = &mut out;
    let version = env!("CARGO_PKG_VERSION");
    Family::new(
        o,
        "skyvine_info",
        "gauge",
        "Version and site of this router (always 1).",
    )
    .sample("", &[("version", version), ("site", snap.site.as_str())], 1);
    Family::new(
        o,
        "skyvine_uptime_seconds",
        "gauge",
        "Seconds since the router started.",
    )
    .sample("", &[], snap.uptime_s);

    let mut up = Family::new(
        o,
        "skyvine_peer_up",
        "gauge",
        "1 if the control connection to the peer router is up.",
    );
    for (site, (connected, _)) in &snap.peers {
        up.sample("", &[("peer", site.as_str())], u8::from(*connected));
    }
    let mut rtt = Family::new(
        o,
        "skyvine_peer_rtt_seconds",
        "gauge",
        "Smoothed QUIC round-trip time to the peer.",
    );
    for (site, (_, value)) in &snap.peers {
        if let Some(value) = value {
            rtt.sample("", &[("peer", site.as_str())], value);
        }
    }
    let mut packets = Family::new(
        o,
        "skyvine_peer_packets_total",
        "counter",
        "Packets through the overlay per peer; tx = sent to it, rx = received from it.",
    );
    for (site, s) in &snap.counters.peers {
        packets.sample("", &[("peer", site), ("direction", "tx")], s.tx_packets);
        packets.sample("", &[("peer", site), ("direction", "rx")], s.rx_packets);
    }
    let mut bytes = Family::new(
        o,
        "skyvine_peer_bytes_total",
        "counter",
        "IP bytes through the overlay per peer and direction.",
    );
    for (site, s) in &snap.counters.peers {
        bytes.sample("", &[("peer", site), ("direction", "tx")], s.tx_bytes);
        bytes.sample("", &[("peer", site), ("direction", "rx")], s.rx_bytes);
    }
    let mut drops = Family::new(
        o,
        "skyvine_dropped_packets_total",
        "counter",
        "Packets the data plane dropped, by reason.",
    );
    for (reason, n) in &snap.counters.drops {
        drops.sample("", &[("reason", reason)], n);
    }

    let c = &snap.counts;
    let mut gndt = Family::new(
        o,
        "skyvine_gndt_entries",
        "gauge",
        "GNDT entries: site prefixes, host (/32) entries, withdrawn tombstones.",
    );
    gndt.sample("", &[("kind", "prefix")], c.gndt_prefixes);
    gndt.sample("", &[("kind", "host")], c.gndt_hosts);
    gndt.sample("", &[("kind", "withdrawn")], c.gndt_withdrawn);
    let mut lndt = Family::new(
        o,
        "skyvine_lndt_hosts",
        "gauge",
        "LNDT entries: configured ranges and hosts that migrated in.",
    );
    lndt.sample("", &[("source", "configured")], c.lndt_configured);
    lndt.sample("", &[("source", "migrated_in")], c.lndt_migrated_in);
    Family::new(
        o,
        "skyvine_lndt_moved_away",
        "gauge",
        "Configured hosts that migrated to another site.",
    )
    .sample("", &[], c.lndt_moved_away);
    Family::new(
        o,
        "skyvine_hwdt_bindings",
        "gauge",
        "IP <-> MAC bindings in the HWDT.",
    )
    .sample("", &[], c.hwdt_bindings);
    Family::new(
        o,
        "skyvine_frozen_addresses",
        "gauge",
        "Addresses frozen by move damping (moved too often).",
    )
    .sample("", &[], snap.frozen);
    Family::new(
        o,
        "skyvine_migrations_in_progress",
        "gauge",
        "Migrations detected and not finished yet.",
    )
    .sample("", &[], c.migrations_in_progress);

    let mut totals = Family::new(
        o,
        "skyvine_migrations_total",
        "counter",
        "Finished migrations by detection (rarp, garp, traffic, peer), role and outcome.",
    );
    for ((detection, role, outcome), n) in &stats.totals {
        totals.sample(
            "",
            &[
                ("detection", detection),
                ("role", role),
                ("outcome", outcome),
            ],
            n,
        );
    }
    let mut steps = Family::new(o, "skyvine_migration_step_seconds", "histogram", "Time from detecting a migration to each step (resolved, confirmed, advertised, applied), applied migrations only.");
    for ((step, role), h) in &stats.steps {
        let mut cumulative = 0u64;
        for (bound, n) in STEP_BUCKETS.iter().zip(h.buckets.iter()) {
            cumulative += n;
            let le = bound.to_string();
            steps.sample(
                "_bucket",
                &[("step", step), ("role", role), ("le", &le)],
                cumulative,
            );
        }
        steps.sample(
            "_bucket",
            &[("step", step), ("role", role), ("le", "+Inf")],
            h.count,
        );
        steps.sample("_sum", &[("step", step), ("role", role)], h.sum);
        steps.sample("_count", &[("step", step), ("role", role)], h.count);
    }

    core_counters(o, &snap.core);
    out
}

/// The core's counters, one family per [`Counter::family`] (refused moves labelled by reason).
fn core_counters(out: &mut String, counters: &Counters) {
    let mut done: Vec<&str> = Vec::new();
    for first in Counter::ALL {
        if done.contains(&first.family()) {
            continue;
        }
        done.push(first.family());
        let mut family = Family::new(out, first.family(), "counter", first.help());
        for counter in Counter::ALL.iter().filter(|c| c.family() == first.family()) {
            let value = counters.get(*counter);
            match counter.reason() {
                Some(reason) => family.sample("", &[("reason", reason.name())], value),
                None => family.sample("", &[], value),
            }
        }
    }
}

/// Serves the metrics endpoint and absorbs finished migrations between scrapes.
#[derive(Clone, Debug)]
pub struct Exporter {
    pub queries: QueryHandle,
    pub stats: Arc<Mutex<MigrationStats>>,
}

impl Exporter {
    pub async fn serve(self, listener: std::net::TcpListener) {
        let addr = listener.local_addr().ok();
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "metrics listener unusable; no metrics");
                return;
            }
        };
        tracing::info!(addr = ?addr, "metrics listening (GET /metrics)");
        let mut connections = JoinSet::new();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    connections.spawn(self.clone().connection(stream));
                }
                Err(error) => {
                    tracing::debug!(%error, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            while connections.try_join_next().is_some() {}
        }
    }

    /// Absorbs finished migrations periodically so that none leaves the router's list unseen.
    pub async fn poll(self) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tick.tick().await;
            let Some(rows) = self
                .queries
                .ask(|node, _, now| {
                    node.migrations()
                        .map(|r| collect::migration_row(r, now))
                        .collect::<Vec<_>>()
                })
                .await
            else {
                return;
            };
            self.lock().absorb(&rows);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MigrationStats> {
        match self.stats.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    async fn connection(self, mut stream: TcpStream) {
        let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => return,
        };
        let (status, body) = match route(&head) {
            Route::Metrics => match self.queries.ask(Snapshot::take).await {
                Some(snap) => {
                    let mut stats = self.lock();
                    stats.absorb(&snap.migrations);
                    ("200 OK", render(&snap, &stats))
                }
                None => (
                    "503 Service Unavailable",
                    "the router is shutting down\n".to_owned(),
                ),
            },
            Route::NotFound => (
                "404 Not Found",
                "not found; metrics are at /metrics\n".to_owned(),
            ),
            Route::BadMethod => ("405 Method Not Allowed", "only GET\n".to_owned()),
            Route::Bad => ("400 Bad Request", "bad request\n".to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// Reads up to the end of the request head; `None` if it is too long or the peer left.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(buf.get(..n)?);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > MAX_REQUEST {
            return None;
        }
    }
}

/// What a request head asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Bad,
}

pub fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::Bad;
    };
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    if method != "GET" {
        return Route::BadMethod;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, outcome: OutcomeName, applied_ms: Option<f64>) -> MigrationRow {
        MigrationRow {
            id,
            ip: Some("10.77.1.1".parse().unwrap()),
            mac: None,
            from: Some(SiteId::new("a").unwrap()),
            to: SiteId::new("b").unwrap(),
            role: "destination".into(),
            detection: "rarp".into(),
            outcome,
            reason: None,
            age_s: 1.0,
            resolved_ms: Some(0.05),
            confirmed_ms: Some(1.5),
            advertised_ms: Some(1.6),
            applied_ms,
        }
    }

    fn snapshot() -> Snapshot {
        let mut counters = CountersSnapshot::default();
        counters.peers.insert(
            "b".into(),
            crate::dataplane::PeerStats {
                tx_packets: 3,
                tx_bytes: 300,
                rx_packets: 2,
                rx_bytes: 200,
            },
        );
        counters.drops.insert("no_route".into(), 4);
        Snapshot {
            site: SiteId::new("a").unwrap(),
            uptime_s: 12.5,
            peers: [
                (SiteId::new("b").unwrap(), (true, Some(0.0004))),
                (SiteId::new("c").unwrap(), (false, None)),
            ]
            .into(),
            counters,
            counts: Counts {
                gndt_prefixes: 3,
                gndt_hosts: 1,
                ..Counts::default()
            },
            core: Counters::default(),
            frozen: 0,
            migrations: Vec::new(),
        }
    }

    /// Checks the text format line by line: every sample belongs to a family announced by
    /// HELP and TYPE, has well-formed labels and a numeric value. Returns the samples.
    pub(crate) fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = BTreeMap::new();
        let mut helped = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty(), "{line}");
                helped.insert(name.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "twice: {line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = series.split('{').next().unwrap();
            let family = types.keys().find(|f| {
                name == f.as_str()
                    || (types[*f] == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name == format!("{f}{s}")))
            });
            assert!(family.is_some(), "sample without a TYPE: {line}");
            if types[family.unwrap()] == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                    for pair in labels[1..labels.len() - 1].split("\",") {
                        let (key, val) = pair.split_once("=\"").unwrap();
                        assert!(
                            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                            "{line}"
                        );
                        assert!(!val.contains('\n'), "{line}");
                    }
                }
            }
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate series: {line}"
            );
        }
        samples
    }

    #[test]
    fn exposition_is_well_formed_and_carries_the_numbers() {
        let mut stats = MigrationStats::default();
        stats.absorb(&[row(1, OutcomeName::Applied, Some(3.0))]);
        let mut snap = snapshot();
        snap.core.add(Counter::Frames);
        snap.core.add(Counter::RefusedStillHere);
        let text = render(&snap, &stats);
        let samples = parse_exposition(&text);
        assert_eq!(samples["skyvine_lan_frames_total"], 1.0);
        assert_eq!(
            samples["skyvine_lan_refused_moves_total{reason=\"still_here\"}"],
            1.0
        );
        assert_eq!(
            samples["skyvine_lan_refused_moves_total{reason=\"busy\"}"],
            0.0
        );
        assert_eq!(samples["skyvine_gndt_refused_entries_total"], 0.0);
        assert_eq!(samples["skyvine_peer_up{peer=\"b\"}"], 1.0);
        assert_eq!(samples["skyvine_peer_up{peer=\"c\"}"], 0.0);
        assert_eq!(
            samples["skyvine_peer_packets_total{peer=\"b\",direction=\"tx\"}"],
            3.0
        );
        assert_eq!(
            samples["skyvine_peer_bytes_total{peer=\"b\",direction=\"rx\"}"],
            200.0
        );
        assert_eq!(
            samples["skyvine_dropped_packets_total{reason=\"no_route\"}"],
            4.0
        );
        assert_eq!(samples["skyvine_gndt_entries{kind=\"host\"}"], 1.0);
        assert_eq!(
            samples["skyvine_migrations_total{detection=\"rarp\",role=\"destination\",outcome=\"applied\"}"],
            1.0
        );
        let bucket = |le: &str| {
            samples[&format!("skyvine_migration_step_seconds_bucket{{step=\"applied\",role=\"destination\",le=\"{le}\"}}")]
        };
        assert_eq!(bucket("0.001"), 0.0);
        assert_eq!(bucket("0.005"), 1.0);
        assert_eq!(bucket("+Inf"), 1.0);
        assert_eq!(
            samples["skyvine_migration_step_seconds_count{step=\"applied\",role=\"destination\"}"],
            1.0
        );
    }

    #[test]
    fn migrations_are_counted_once_and_only_when_finished() {
        let mut stats = MigrationStats::default();
        stats.absorb(&[row(1, OutcomeName::InProgress, None)]);
        assert!(stats.totals.is_empty());
        stats.absorb(&[
            row(1, OutcomeName::Applied, Some(2.0)),
            row(2, OutcomeName::Refused, None),
        ]);
        stats.absorb(&[
            row(1, OutcomeName::Applied, Some(2.0)),
            row(2, OutcomeName::Refused, None),
        ]);
        let total: u64 = stats.totals.values().sum();
        assert_eq!(total, 2);
        assert_eq!(stats.steps[&("applied", "destination".to_owned())].count, 1);
        // Record 1 evicted from the router's list: still counted once.
        stats.absorb(&[
            row(2, OutcomeName::Refused, None),
            row(3, OutcomeName::Applied, Some(1.0)),
        ]);
        assert_eq!(stats.totals.values().sum::<u64>(), 3);
        assert!(!stats.counted.contains(&1));
    }

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b"\xff\xff\r\n\r\n"), Route::Bad);
        assert_eq!(route(b"GET\r\n\r\n"), Route::Bad);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
