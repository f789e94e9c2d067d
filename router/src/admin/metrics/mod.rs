//! Prometheus metrics: `GET /metrics` answers the OpenMetrics text exposition of the router's
//! state ([`exposition`], encoded by `prometheus-client`) over hyper's HTTP/1.1 server
//! ([`http`], with its request-size, time and connection bounds); any other path answers 404,
//! any other method on `/metrics` 405.
//!
//! Migration counters and step histograms must only grow, but the router keeps a bounded list
//! of recent migrations: [`MigrationStats`] absorbs each finished migration exactly once (a
//! poller runs between scrapes so none is evicted unseen).

pub mod exposition;
pub mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use skyvine_tables::SiteId;

use skyvine_core::node::Counters;

use super::api::{Counts, MigrationRow, OutcomeName};
use super::collect;
use crate::daemon::QueryHandle;
use crate::dataplane::CountersSnapshot;
use exposition::{MigrationLabels, StepLabels};

/// Histogram bucket bounds for migration step durations, in seconds.
pub const STEP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// How often finished migrations are absorbed between scrapes.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Everything a scrape shows, copied on the main loop.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub site: SiteId,
    pub uptime_s: f64,
    /// Each known peer: connected, and the RTT when connected.
    pub peers: BTreeMap<SiteId, (bool, Option<f64>)>,
    /// The connected peers reached through a relay, with their relay.
    pub relayed_peers: BTreeMap<SiteId, SiteId>,
    /// Relay datagrams this router passed on, per source peer: packets, bytes.
    pub relayed: BTreeMap<SiteId, (u64, u64)>,
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
            relayed_peers: node
                .peers()
                .iter()
                .filter_map(|(site, state)| {
                    let relay = state.path.as_ref()?.relay()?;
                    Some((site.clone(), relay.clone()))
                })
                .collect(),
            relayed: shared.relay.relayed(),
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

/// Finished migrations, counted once each.
#[derive(Debug, Default)]
pub struct MigrationStats {
    counted: BTreeSet<u64>,
    /// Finished migrations by (detection, role, outcome).
    totals: BTreeMap<MigrationLabels, u64>,
    /// Seconds from detection to each step, by (step, role); applied migrations only.
    steps: BTreeMap<StepLabels, Histogram>,
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
            let labels = MigrationLabels {
                detection: row.detection.clone().into(),
                role: row.role.clone().into(),
                outcome: outcome.into(),
            };
            *self.totals.entry(labels).or_default() += 1;
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
                    let labels = StepLabels {
                        step: step.into(),
                        role: row.role.clone().into(),
                    };
                    self.steps
                        .entry(labels)
                        .or_insert_with(|| Histogram::new(STEP_BUCKETS))
                        .observe(ms / 1000.0);
                }
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
        let scrape = move || {
            let exporter = self.clone();
            async move { exporter.scrape().await }
        };
        http::serve(listener, http::Limits::default(), scrape).await;
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

    /// One scrape: the main loop's snapshot, the migrations it finished, encoded.
    async fn scrape(&self) -> Result<String, http::Unavailable> {
        let snap = self
            .queries
            .ask(Snapshot::take)
            .await
            .ok_or(http::Unavailable::ShuttingDown)?;
        let mut stats = self.lock();
        stats.absorb(&snap.migrations);
        exposition::render(snap, &stats).map_err(|error| {
            tracing::warn!(%error, "the metrics could not be encoded");
            http::Unavailable::Encoding
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MigrationStats> {
        match self.stats.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
