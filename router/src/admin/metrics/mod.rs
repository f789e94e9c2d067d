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
    /// Each known peer: connected (in any network), and the RTT when connected.
    pub peers: BTreeMap<SiteId, (bool, Option<f64>)>,
    /// The connected peers reached through a relay, with their relay.
    pub relayed_peers: BTreeMap<SiteId, SiteId>,
    /// Relay datagrams this router passed on, per source peer: packets, bytes.
    pub relayed: BTreeMap<SiteId, (u64, u64)>,
    /// The router's own data-plane counters: datagrams dropped before any network.
    pub counters: CountersSnapshot,
    /// Control messages from peers dropped before they reached a network, by reason
    /// (`unknown_network`, `not_member`), summed over the network ids they named (a peer
    /// chooses those: one series per id would let it grow the scrape at will).
    pub control_drops: BTreeMap<&'static str, u64>,
    /// Per network, in the config's order.
    pub networks: Vec<NetworkSnapshot>,
    /// Every network's recent migrations (each row names its network).
    pub migrations: Vec<MigrationRow>,
}

/// One network's part of a scrape.
#[derive(Clone, Debug)]
pub struct NetworkSnapshot {
    pub name: String,
    /// Its data-plane counters: packets per peer, drops.
    pub counters: CountersSnapshot,
    pub counts: Counts,
    /// The core's counters (LAN frames, refusals, entries over the limits).
    pub core: Counters,
    pub frozen: u64,
}

impl Snapshot {
    pub fn take(
        networks: &skyvine_core::networks::Networks,
        shared: &crate::daemon::Shared,
        now: std::time::Instant,
    ) -> Self {
        let conns = shared.peers.load();
        let mut peers = BTreeMap::new();
        let mut relayed_peers = BTreeMap::new();
        for network in networks.iter() {
            for (site, state) in network.node.peers() {
                let rtt = conns
                    .get(site)
                    .filter(|_| state.connected)
                    .map(|c| c.rtt().as_secs_f64());
                let entry = peers.entry(site.clone()).or_insert((false, None));
                entry.0 |= state.connected;
                entry.1 = entry.1.or(rtt);
                if let Some(relay) = state.path.as_ref().and_then(|p| p.relay()) {
                    relayed_peers.insert(site.clone(), relay.clone());
                }
            }
        }
        let first = networks.first();
        Snapshot {
            site: first
                .map(|n| n.me().clone())
                .unwrap_or_else(|| shared.site.clone()),
            uptime_s: first.map_or(0.0, |n| collect::age(now, n.started())),
            peers,
            relayed_peers,
            relayed: shared.relay.relayed(),
            counters: shared.counters.snapshot(),
            control_drops: control_drops(networks),
            networks: networks
                .iter()
                .map(|n| NetworkSnapshot {
                    name: n.name.clone(),
                    counters: shared
                        .network(n.id)
                        .map(|s| s.counters.snapshot())
                        .unwrap_or_default(),
                    counts: collect::counts(&n.node),
                    core: n.node.counters(),
                    frozen: u64::try_from(n.node.frozen(now).len()).unwrap_or(u64::MAX),
                })
                .collect(),
            migrations: migration_rows(networks, now),
        }
    }
}

/// Control messages dropped for a network the sender does not share, by reason (every
/// reason, zero included).
pub fn control_drops(networks: &skyvine_core::networks::Networks) -> BTreeMap<&'static str, u64> {
    let mut drops: BTreeMap<&'static str, u64> = skyvine_core::networks::Unshared::ALL
        .iter()
        .map(|reason| (reason.name(), 0))
        .collect();
    for ((_, reason), n) in networks.dropped() {
        *drops.entry(reason.name()).or_default() += n;
    }
    drops
}

/// Every network's recent migrations, each row naming its network.
pub fn migration_rows(
    networks: &skyvine_core::networks::Networks,
    now: std::time::Instant,
) -> Vec<MigrationRow> {
    networks
        .iter()
        .flat_map(|n| {
            n.node.migrations().map(move |r| {
                let mut row = collect::migration_row(r, now);
                row.network.clone_from(&n.name);
                row
            })
        })
        .collect()
}

/// Finished migrations, counted once each.
#[derive(Debug, Default)]
pub struct MigrationStats {
    /// Per network: the record ids counted (each network's node numbers its own).
    counted: BTreeMap<String, BTreeSet<u64>>,
    /// Finished migrations by (detection, role, outcome).
    totals: BTreeMap<MigrationLabels, u64>,
    /// Seconds from detection to each step, by (step, role); applied migrations only.
    steps: BTreeMap<StepLabels, Histogram>,
}

impl MigrationStats {
    /// Counts the finished migrations in `rows` not counted before.
    pub fn absorb(&mut self, rows: &[MigrationRow]) {
        // Record ids only grow: ids older than the oldest listed can never come back.
        for (network, counted) in &mut self.counted {
            let oldest = rows
                .iter()
                .filter(|r| &r.network == network)
                .map(|r| r.id)
                .min();
            if let Some(oldest) = oldest {
                *counted = counted.split_off(&oldest);
            }
        }
        for row in rows {
            let outcome = match row.outcome {
                OutcomeName::InProgress => continue,
                OutcomeName::Applied => "applied",
                OutcomeName::Refused => "refused",
            };
            if !self
                .counted
                .entry(row.network.clone())
                .or_default()
                .insert(row.id)
            {
                continue;
            }
            let labels = MigrationLabels {
                network: row.network.clone().into(),
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
                        network: row.network.clone().into(),
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
                .ask(|networks, _, now| migration_rows(networks, now))
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
