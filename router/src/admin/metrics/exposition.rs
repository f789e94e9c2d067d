//! What a scrape shows. Every metric family is declared once: the router's in [`FAMILIES`]
//! (name, help, type, labels, where its series come from), the core's by its [`Counter`] table
//! (one family per [`Counter::family`], labelled by `reason` for refused moves). The scrape walks
//! [`families`] and `prometheus-client` encodes the OpenMetrics text.
//!
//! Label sets are typed (`label_sets!`): each is a struct the crate's `EncodeLabelSet` derive
//! encodes, with its label names as `NAMES` for the table. Every family about a virtual
//! network's tables, traffic or migrations carries a `network` label (the `[[networks]]` name,
//! "default" for a config with one `[lan]`); router-wide families (info, uptime, peer
//! connections, relaying, and datagrams dropped before they reached any network) do not.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    text, DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType::{
    self, Counter as CounterType, Gauge, Histogram as HistogramType,
};
use prometheus_client::registry::Registry;
use skyvine_core::node::Counter;

use super::{MigrationStats, NetworkSnapshot, Snapshot};

/// A label value: a fixed name (a reason, a direction) or text from the router's state (a
/// site). `prometheus-client` escapes it.
pub type Value = Cow<'static, str>;

/// Declares label sets: a struct of [`Value`]s per set, encoded by `prometheus-client`'s
/// derive, with `NAMES`, its label names in the order they are written.
macro_rules! label_sets {
    ($( $(#[$doc:meta])* $name:ident { $($field:ident),+ } )*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
        pub struct $name {
            $(pub $field: Value,)+
        }

        impl $name {
            /// The label names, in the order they are written.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),+];
        }
    )*};
}

label_sets! {
    /// `skyvine_info`: the router's version and site.
    InfoLabels { version, site }
    /// One peer router.
    PeerLabels { peer }
    /// A peer reached through relay router `via`.
    RelayedLabels { peer, via }
    /// Traffic to (`tx`) or from (`rx`) one peer in one network.
    FlowLabels { network, peer, direction }
    /// Why the data plane dropped packets of a network.
    DropLabels { network, reason }
    /// Why the router dropped datagrams that reached no network.
    ReasonLabels { reason }
    /// One network (its table gauges and unlabelled core counters).
    NetworkLabels { network }
    /// Why the core refused moves (its counters labelled by reason).
    RefusalLabels { network, reason }
    /// A kind of GNDT entry: `prefix`, `host`, `withdrawn`.
    EntryLabels { network, kind }
    /// Where LNDT hosts come from: `configured`, `migrated_in`.
    SourceLabels { network, source }
    /// Finished migrations: how they were detected, this router's role, how they ended.
    MigrationLabels { network, detection, role, outcome }
    /// One step of applied migrations, at this router's role.
    StepLabels { network, step, role }
}

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The sample name. A counter's ends in `_total`; its HELP and TYPE lines name the family
    /// without it, as OpenMetrics requires.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    /// The label names of every series, in order (none: the family has one series).
    pub labels: &'static [&'static str],
    series: Series,
}

/// Where a family's series come from.
#[derive(Clone, Copy, Debug)]
enum Series {
    /// Written from the scrape by this function.
    Scrape(fn(&Scrape, &mut MetricEncoder<'_>) -> fmt::Result),
    /// The core's [`Counter`]s of this family.
    Core,
}

impl Family {
    const fn new(
        name: &'static str,
        kind: MetricType,
        labels: &'static [&'static str],
        help: &'static str,
        series: fn(&Scrape, &mut MetricEncoder<'_>) -> fmt::Result,
    ) -> Self {
        Family {
            name,
            help,
            kind,
            labels,
            series: Series::Scrape(series),
        }
    }

    /// The name on the HELP and TYPE lines.
    fn descriptor_name(&self) -> &'static str {
        match self.kind {
            MetricType::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            _ => self.name,
        }
    }
}

/// The router's families, in the order a scrape writes them (the core's follow).
#[rustfmt::skip]
pub static FAMILIES: &[Family] = &[
    Family::new("skyvine_info", Gauge, InfoLabels::NAMES,
        "Version and site of this router (always 1).", info),
    Family::new("skyvine_uptime_seconds", Gauge, &[],
        "Seconds since the router started.", |s, m| m.encode_gauge(&s.snap.uptime_s)),
    Family::new("skyvine_peer_up", Gauge, PeerLabels::NAMES,
        "1 if the control connection to the peer router is up.", peer_up),
    Family::new("skyvine_peer_rtt_seconds", Gauge, PeerLabels::NAMES,
        "Smoothed QUIC round-trip time to the peer.", peer_rtt),
    Family::new("skyvine_peer_relayed", Gauge, RelayedLabels::NAMES,
        "1 while the connection to the peer travels through relay router `via`.", peer_relayed),
    Family::new("skyvine_relayed_packets_total", CounterType, PeerLabels::NAMES,
        "Relay datagrams from the peer that this router passed on to another site.",
        |s, m| relayed(s, m, |(packets, _)| packets)),
    Family::new("skyvine_relayed_bytes_total", CounterType, PeerLabels::NAMES,
        "Bytes of relay datagrams from the peer that this router passed on.",
        |s, m| relayed(s, m, |(_, bytes)| bytes)),
    Family::new("skyvine_peer_packets_total", CounterType, FlowLabels::NAMES,
        "Packets through the overlay per peer; tx = sent to it, rx = received from it.",
        |s, m| peer_flows(s, m, |p| (p.tx_packets, p.rx_packets))),
    Family::new("skyvine_peer_bytes_total", CounterType, FlowLabels::NAMES,
        "IP bytes through the overlay per peer and direction.",
        |s, m| peer_flows(s, m, |p| (p.tx_bytes, p.rx_bytes))),
    Family::new("skyvine_dropped_packets_total", CounterType, DropLabels::NAMES,
        "Packets the data plane dropped, by network and reason.", dropped),
    Family::new("skyvine_dropped_datagrams_total", CounterType, ReasonLabels::NAMES,
        "Datagrams from peers dropped before they reached a network: relay refusals, a network the peer does not share.",
        dropped_datagrams),
    Family::new("skyvine_dropped_control_messages_total", CounterType, ReasonLabels::NAMES,
        "Control messages from peers dropped because they named a network the peer does not share with this router.",
        dropped_control),
    Family::new("skyvine_gndt_entries", Gauge, EntryLabels::NAMES,
        "GNDT entries: site prefixes, host (/32) entries, withdrawn tombstones.", gndt_entries),
    Family::new("skyvine_lndt_hosts", Gauge, SourceLabels::NAMES,
        "LNDT entries: configured ranges and hosts that migrated in.", lndt_hosts),
    Family::new("skyvine_lndt_moved_away", Gauge, NetworkLabels::NAMES,
        "Configured hosts that migrated to another site.",
        |s, m| per_network(s, m, |n| n.counts.lndt_moved_away)),
    Family::new("skyvine_hwdt_bindings", Gauge, NetworkLabels::NAMES,
        "IP <-> MAC bindings in the HWDT.",
        |s, m| per_network(s, m, |n| n.counts.hwdt_bindings)),
    Family::new("skyvine_frozen_addresses", Gauge, NetworkLabels::NAMES,
        "Addresses frozen by move damping (moved too often).",
        |s, m| per_network(s, m, |n| n.frozen)),
    Family::new("skyvine_migrations_in_progress", Gauge, NetworkLabels::NAMES,
        "Migrations detected and not finished yet.",
        |s, m| per_network(s, m, |n| n.counts.migrations_in_progress)),
    Family::new("skyvine_migrations_total", CounterType, MigrationLabels::NAMES,
        "Finished migrations by detection (rarp, garp, traffic, peer), role and outcome.",
        migrations),
    Family::new("skyvine_migration_step_seconds", HistogramType, StepLabels::NAMES,
        "Time from detecting a migration to each step (resolved, confirmed, advertised, applied), applied migrations only.",
        steps),
];

/// Every family a scrape writes: [`FAMILIES`], then one per [`Counter::family`] in the core's
/// table order.
pub fn families() -> Vec<Family> {
    let mut all = FAMILIES.to_vec();
    let mut core: Vec<&str> = Vec::new();
    for counter in Counter::ALL {
        if core.contains(&counter.family()) {
            continue;
        }
        core.push(counter.family());
        all.push(Family {
            name: counter.family(),
            help: counter.help(),
            kind: CounterType,
            labels: match counter.reason() {
                Some(_) => RefusalLabels::NAMES,
                None => NetworkLabels::NAMES,
            },
            series: Series::Core,
        });
    }
    all
}

/// The exposition text of one scrape.
pub fn render(snap: Snapshot, stats: &MigrationStats) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        snap,
        totals: stats.totals.clone(),
        steps: stats.steps.clone(),
    }));
    let mut text = String::new();
    text::encode(&mut text, &registry)?;
    Ok(text)
}

/// What one scrape encodes: the snapshot and the migrations counted so far.
#[derive(Debug)]
struct Scrape {
    snap: Snapshot,
    totals: BTreeMap<MigrationLabels, u64>,
    steps: BTreeMap<StepLabels, Histogram>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in families() {
            let mut metric = encoder.encode_descriptor(
                family.descriptor_name(),
                family.help,
                None,
                family.kind,
            )?;
            match family.series {
                Series::Scrape(write) => write(self, &mut metric)?,
                Series::Core => self.core(family.name, &mut metric)?,
            }
        }
        Ok(())
    }
}

impl Scrape {
    /// The core's counters of `family`, per network: one series, or one per refusal reason.
    fn core(&self, family: &str, metric: &mut MetricEncoder<'_>) -> fmt::Result {
        for network in &self.snap.networks {
            for counter in Counter::ALL.iter().filter(|c| c.family() == family) {
                let value = network.core.get(*counter);
                match counter.reason() {
                    Some(reason) => {
                        let labels = RefusalLabels {
                            network: network.name.clone().into(),
                            reason: reason.name().into(),
                        };
                        count(metric, &labels, value)?;
                    }
                    None => count(metric, &network_labels(network), value)?,
                }
            }
        }
        Ok(())
    }
}

fn info(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    let labels = InfoLabels {
        version: env!("CARGO_PKG_VERSION").into(),
        site: s.snap.site.to_string().into(),
    };
    m.encode_family(&labels)?.encode_gauge(&1i64)
}

fn peer_up(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for (site, (connected, _)) in &s.snap.peers {
        let labels = PeerLabels {
            peer: site.to_string().into(),
        };
        m.encode_family(&labels)?
            .encode_gauge(&i64::from(*connected))?;
    }
    Ok(())
}

fn peer_rtt(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for (site, (_, rtt)) in &s.snap.peers {
        if let Some(rtt) = rtt {
            let labels = PeerLabels {
                peer: site.to_string().into(),
            };
            m.encode_family(&labels)?.encode_gauge(rtt)?;
        }
    }
    Ok(())
}

fn peer_relayed(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for (site, relay) in &s.snap.relayed_peers {
        let labels = RelayedLabels {
            peer: site.to_string().into(),
            via: relay.to_string().into(),
        };
        m.encode_family(&labels)?.encode_gauge(&1i64)?;
    }
    Ok(())
}

/// A series per peer this relay passed datagrams on for, with the value `pick` reads from
/// (packets, bytes).
fn relayed(s: &Scrape, m: &mut MetricEncoder<'_>, pick: fn((u64, u64)) -> u64) -> fmt::Result {
    for (site, counts) in &s.snap.relayed {
        let labels = PeerLabels {
            peer: site.to_string().into(),
        };
        count(m, &labels, pick(*counts))?;
    }
    Ok(())
}

/// A tx and an rx series per peer, with the (tx, rx) values `pick` reads.
fn peer_flows(
    s: &Scrape,
    m: &mut MetricEncoder<'_>,
    pick: fn(&crate::dataplane::PeerStats) -> (u64, u64),
) -> fmt::Result {
    for network in &s.snap.networks {
        for (site, stats) in &network.counters.peers {
            let (tx, rx) = pick(stats);
            for (direction, value) in [("tx", tx), ("rx", rx)] {
                let labels = FlowLabels {
                    network: network.name.clone().into(),
                    peer: site.clone().into(),
                    direction: direction.into(),
                };
                count(m, &labels, value)?;
            }
        }
    }
    Ok(())
}

/// One gauge per network, with the value `pick` reads.
fn per_network(
    s: &Scrape,
    m: &mut MetricEncoder<'_>,
    pick: fn(&NetworkSnapshot) -> u64,
) -> fmt::Result {
    for network in &s.snap.networks {
        m.encode_family(&network_labels(network))?
            .encode_gauge(&signed(pick(network)))?;
    }
    Ok(())
}

fn network_labels(network: &NetworkSnapshot) -> NetworkLabels {
    NetworkLabels {
        network: network.name.clone().into(),
    }
}

fn dropped_control(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for (reason, n) in &s.snap.control_drops {
        count(
            m,
            &ReasonLabels {
                reason: (*reason).into(),
            },
            *n,
        )?;
    }
    Ok(())
}

fn dropped_datagrams(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for (reason, n) in &s.snap.counters.drops {
        let labels = ReasonLabels {
            reason: reason.clone().into(),
        };
        count(m, &labels, *n)?;
    }
    Ok(())
}

fn dropped(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for network in &s.snap.networks {
        for (reason, n) in &network.counters.drops {
            let labels = DropLabels {
                network: network.name.clone().into(),
                reason: reason.clone().into(),
            };
            count(m, &labels, *n)?;
        }
    }
    Ok(())
}

fn gndt_entries(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for network in &s.snap.networks {
        let c = &network.counts;
        for (kind, n) in [
            ("prefix", c.gndt_prefixes),
            ("host", c.gndt_hosts),
            ("withdrawn", c.gndt_withdrawn),
        ] {
            let labels = EntryLabels {
                network: network.name.clone().into(),
                kind: kind.into(),
            };
            m.encode_family(&labels)?.encode_gauge(&signed(n))?;
        }
    }
    Ok(())
}

fn lndt_hosts(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for network in &s.snap.networks {
        let c = &network.counts;
        for (source, n) in [
            ("configured", c.lndt_configured),
            ("migrated_in", c.lndt_migrated_in),
        ] {
            let labels = SourceLabels {
                network: network.name.clone().into(),
                source: source.into(),
            };
            m.encode_family(&labels)?.encode_gauge(&signed(n))?;
        }
    }
    Ok(())
}

fn migrations(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for (labels, n) in &s.totals {
        count(m, labels, *n)?;
    }
    Ok(())
}

fn steps(s: &Scrape, m: &mut MetricEncoder<'_>) -> fmt::Result {
    for (labels, histogram) in &s.steps {
        histogram.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One labelled counter series.
fn count(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, f64>(&value, None)
}

/// A count as a gauge value (the encoder's gauges are signed; no count reaches `i64::MAX`).
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use skyvine_tables::SiteId;
    use skyvine_tests::openmetrics::{self, Exposition};

    use super::*;
    use crate::admin::api::{Counts, MigrationRow, OutcomeName};
    use crate::admin::metrics::NetworkSnapshot;
    use crate::dataplane::{CountersSnapshot, PeerStats};

    pub(crate) fn row(id: u64, outcome: OutcomeName, applied_ms: Option<f64>) -> MigrationRow {
        MigrationRow {
            network: "default".into(),
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
            PeerStats {
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
            relayed_peers: [(SiteId::new("c").unwrap(), SiteId::new("b").unwrap())].into(),
            relayed: [(SiteId::new("b").unwrap(), (5, 7000))].into(),
            counters: CountersSnapshot {
                drops: [("relay_disabled".into(), 2)].into(),
                ..CountersSnapshot::default()
            },
            control_drops: [("unknown_network", 0), ("not_member", 3)].into(),
            networks: vec![NetworkSnapshot {
                name: "default".into(),
                counters,
                counts: Counts {
                    gndt_prefixes: 3,
                    gndt_hosts: 1,
                    ..Counts::default()
                },
                core: skyvine_core::node::Counters::default(),
                frozen: 0,
            }],
            migrations: Vec::new(),
        }
    }

    fn scrape(snap: Snapshot, stats: &MigrationStats) -> Exposition {
        let text = render(snap, stats).unwrap();
        openmetrics::parse(&text).unwrap_or_else(|why| panic!("{why}\n{text}"))
    }

    #[test]
    fn exposition_carries_the_numbers() {
        let mut stats = MigrationStats::default();
        stats.absorb(&[row(1, OutcomeName::Applied, Some(3.0))]);
        let mut snap = snapshot();
        snap.networks[0].core.add(Counter::Frames);
        snap.networks[0].core.add(Counter::RefusedStillHere);
        let samples = scrape(snap, &stats).samples();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            samples[&format!("skyvine_info{{version=\"{version}\",site=\"a\"}}")],
            1.0
        );
        assert_eq!(samples["skyvine_uptime_seconds"], 12.5);
        assert_eq!(
            samples["skyvine_dropped_datagrams_total{reason=\"relay_disabled\"}"],
            2.0
        );
        assert_eq!(
            samples["skyvine_dropped_control_messages_total{reason=\"not_member\"}"],
            3.0
        );
        assert_eq!(
            samples["skyvine_lan_frames_total{network=\"default\"}"],
            1.0
        );
        assert_eq!(
            samples["skyvine_lan_refused_moves_total{network=\"default\",reason=\"still_here\"}"],
            1.0
        );
        assert_eq!(
            samples["skyvine_lan_refused_moves_total{network=\"default\",reason=\"busy\"}"],
            0.0
        );
        assert_eq!(
            samples["skyvine_gndt_refused_entries_total{network=\"default\"}"],
            0.0
        );
        assert_eq!(samples["skyvine_peer_up{peer=\"b\"}"], 1.0);
        assert_eq!(samples["skyvine_peer_up{peer=\"c\"}"], 0.0);
        assert_eq!(samples["skyvine_peer_relayed{peer=\"c\",via=\"b\"}"], 1.0);
        assert_eq!(samples["skyvine_relayed_packets_total{peer=\"b\"}"], 5.0);
        assert_eq!(samples["skyvine_relayed_bytes_total{peer=\"b\"}"], 7000.0);
        assert_eq!(samples["skyvine_peer_rtt_seconds{peer=\"b\"}"], 0.0004);
        assert!(!samples.contains_key("skyvine_peer_rtt_seconds{peer=\"c\"}"));
        assert_eq!(
            samples["skyvine_peer_packets_total{network=\"default\",peer=\"b\",direction=\"tx\"}"],
            3.0
        );
        assert_eq!(
            samples["skyvine_peer_bytes_total{network=\"default\",peer=\"b\",direction=\"rx\"}"],
            200.0
        );
        assert_eq!(
            samples["skyvine_dropped_packets_total{network=\"default\",reason=\"no_route\"}"],
            4.0
        );
        assert_eq!(
            samples["skyvine_gndt_entries{network=\"default\",kind=\"host\"}"],
            1.0
        );
        assert_eq!(
            samples["skyvine_gndt_entries{network=\"default\",kind=\"prefix\"}"],
            3.0
        );
        assert_eq!(
            samples["skyvine_lndt_hosts{network=\"default\",source=\"migrated_in\"}"],
            0.0
        );
        assert_eq!(samples["skyvine_hwdt_bindings{network=\"default\"}"], 0.0);
        assert_eq!(
            samples["skyvine_migrations_total{network=\"default\",detection=\"rarp\",role=\"destination\",outcome=\"applied\"}"],
            1.0
        );
        // prometheus-client writes `le` first; the order of labels carries no meaning.
        let bucket = |le: &str| {
            samples[&format!("skyvine_migration_step_seconds_bucket{{le=\"{le}\",network=\"default\",step=\"applied\",role=\"destination\"}}")]
        };
        assert_eq!(bucket("0.001"), 0.0);
        assert_eq!(bucket("0.0025"), 0.0);
        assert_eq!(bucket("0.005"), 1.0);
        assert_eq!(bucket("+Inf"), 1.0);
        assert_eq!(
            samples["skyvine_migration_step_seconds_count{network=\"default\",step=\"applied\",role=\"destination\"}"],
            1.0
        );
        assert_eq!(
            samples["skyvine_migration_step_seconds_sum{network=\"default\",step=\"applied\",role=\"destination\"}"],
            0.003
        );
    }

    #[test]
    fn every_family_of_the_table_is_written_with_its_labels() {
        let mut stats = MigrationStats::default();
        stats.absorb(&[row(1, OutcomeName::Applied, Some(3.0))]);
        let exposition = scrape(snapshot(), &stats);
        let families = families();
        assert_eq!(exposition.families.len(), families.len());
        for family in &families {
            let written = &exposition.families[family.descriptor_name()];
            assert_eq!(written.help, family.help, "{}", family.name);
            assert_eq!(written.kind, family.kind.as_str(), "{}", family.name);
            assert!(!written.samples.is_empty(), "{} has no series", family.name);
            for sample in &written.samples {
                let names: Vec<&str> = sample
                    .labels
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| *k != "le")
                    .collect();
                assert_eq!(names, family.labels, "{}", sample.series());
            }
        }
    }

    #[test]
    fn the_table_is_consistent() {
        let families = families();
        let names: BTreeSet<&str> = families.iter().map(|f| f.descriptor_name()).collect();
        assert_eq!(names.len(), families.len(), "a family declared twice");
        for family in &families {
            assert!(family.name.starts_with("skyvine_"), "{}", family.name);
            assert_eq!(
                family.name.ends_with("_total"),
                matches!(family.kind, MetricType::Counter),
                "{}: counters, and only counters, end in _total",
                family.name
            );
            assert!(
                family.help.ends_with('.') && !family.help.contains(['\\', '\n']),
                "{}: HELP is one plain sentence (the encoder does not escape it)",
                family.name
            );
        }
        // Every core counter is in a family.
        for counter in Counter::ALL {
            assert!(families.iter().any(|f| f.name == counter.family()));
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut snap = snapshot();
        let odd = "we\"ird\\peer\nname";
        snap.networks[0]
            .counters
            .peers
            .insert(odd.into(), PeerStats::default());
        let exposition = scrape(snap, &MigrationStats::default());
        let flows = &exposition.families["skyvine_peer_packets"].samples;
        assert!(flows.iter().any(|s| s.label("peer") == Some(odd)));
    }

    #[test]
    fn migrations_are_counted_once_and_only_when_finished() {
        let total = |stats: &MigrationStats| -> f64 {
            let exposition = scrape(snapshot(), stats);
            match exposition.families.get("skyvine_migrations") {
                Some(family) => family.samples.iter().map(|s| s.value).sum(),
                None => 0.0,
            }
        };
        let mut stats = MigrationStats::default();
        stats.absorb(&[row(1, OutcomeName::InProgress, None)]);
        assert_eq!(total(&stats), 0.0);
        stats.absorb(&[
            row(1, OutcomeName::Applied, Some(2.0)),
            row(2, OutcomeName::Refused, None),
        ]);
        stats.absorb(&[
            row(1, OutcomeName::Applied, Some(2.0)),
            row(2, OutcomeName::Refused, None),
        ]);
        assert_eq!(total(&stats), 2.0);
        let samples = scrape(snapshot(), &stats).samples();
        assert_eq!(
            samples["skyvine_migration_step_seconds_count{network=\"default\",step=\"applied\",role=\"destination\"}"],
            1.0
        );
        assert_eq!(
            samples["skyvine_migrations_total{network=\"default\",detection=\"rarp\",role=\"destination\",outcome=\"refused\"}"],
            1.0
        );
        // Record 1 evicted from the router's list: still counted once.
        stats.absorb(&[
            row(2, OutcomeName::Refused, None),
            row(3, OutcomeName::Applied, Some(1.0)),
        ]);
        assert_eq!(total(&stats), 3.0);
        assert!(!stats.counted["default"].contains(&1));
    }
}
