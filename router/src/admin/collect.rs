//! Builds the admin views from the router's state. Runs on the daemon's main loop (inside a
//! [`crate::daemon::QueryHandle::ask`] closure), so it only copies: no IO, no waiting.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use skyvine_tables::{BindingSource, EntryKind, LndtSource, SiteId, Stored};

use super::api::{
    BindingOrigin, CountersView, Counts, GndtRow, HintView, HwdtRow, Kind, LanView, LndtOrigin,
    LndtRow, LndtView, MigrationRow, MigrationsView, OutcomeName, PeerRow, PeersView, PreparedRow,
    RouteView, StatusView, TableName, TablesView,
};
use crate::daemon::Shared;
use crate::dataplane::CountersSnapshot;
use skyvine_core::networks::NetworkNode;
use skyvine_core::node::{Counter, HintOutcome, MigrationRecord, Node, Outcome};

/// What the views need from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Each network's LAN interface, by network name.
    pub lan_interfaces: BTreeMap<String, String>,
    /// Configured peer addresses (shown while a peer is down).
    pub peer_addresses: BTreeMap<SiteId, SocketAddr>,
    /// Configured relays of peers reached `via` one (shown while a peer is down).
    pub peer_relays: BTreeMap<SiteId, SiteId>,
}

/// Seconds from `then` to `now` (zero if `then` is later).
pub fn age(now: Instant, then: Instant) -> f64 {
    now.saturating_duration_since(then).as_secs_f64()
}

/// Milliseconds from `start` to `step`.
fn offset_ms(start: Instant, step: Option<Instant>) -> Option<f64> {
    step.map(|t| t.saturating_duration_since(start).as_secs_f64() * 1000.0)
}

pub fn gndt_row(node: &Node, stored: &Stored, now: Instant) -> GndtRow {
    let entry = &stored.entry;
    GndtRow {
        prefix: entry.prefix,
        kind: match entry.kind {
            EntryKind::SitePrefix => Kind::Prefix,
            EntryKind::Host => Kind::Host,
        },
        site: entry.site().clone(),
        seq: entry.version.seq,
        origin: entry.version.origin.clone(),
        mac: entry.mac,
        withdrawn: entry.withdrawn,
        local: entry.site() == node.me(),
        age_s: age(now, stored.updated_at),
    }
}

pub fn tables(node: &Node, table: Option<TableName>, now: Instant) -> TablesView {
    let wants = |name| table.is_none_or(|t| t == name);
    TablesView {
        site: node.me().clone(),
        network: String::new(),
        gndt: wants(TableName::Gndt).then(|| {
            node.gndt()
                .entries()
                .map(|stored| gndt_row(node, stored, now))
                .collect()
        }),
        lndt: wants(TableName::Lndt).then(|| LndtView {
            hosts: node
                .lndt()
                .hosts()
                .map(|host| LndtRow {
                    prefix: host.prefix,
                    source: match host.source {
                        LndtSource::Configured => LndtOrigin::Configured,
                        LndtSource::MigratedIn => LndtOrigin::MigratedIn,
                    },
                    mac: host.mac,
                    age_s: age(now, host.since),
                })
                .collect(),
            moved_away: node.lndt().moved_away().collect(),
        }),
        hwdt: wants(TableName::Hwdt).then(|| {
            let mut rows: Vec<HwdtRow> = node
                .hwdt()
                .bindings()
                .map(|b| HwdtRow {
                    ip: b.ip,
                    mac: b.mac,
                    source: match b.source {
                        BindingSource::Lan => BindingOrigin::Lan,
                        BindingSource::Configured => BindingOrigin::Configured,
                    },
                    first_seen_s: age(now, b.first_seen),
                    last_seen_s: age(now, b.last_seen),
                })
                .collect();
            rows.sort_by_key(|row| row.ip);
            rows
        }),
    }
}

/// The entry `address` matches and every other live entry containing it, longest first.
pub fn route(node: &Node, address: Ipv4Addr, now: Instant) -> RouteView {
    let mut covering: Vec<&Stored> = node
        .gndt()
        .live_entries()
        .filter(|stored| stored.entry.prefix.contains(address))
        .collect();
    covering.sort_by_key(|stored| std::cmp::Reverse(stored.entry.prefix.prefix()));
    let matched = match node.gndt().lookup(address) {
        skyvine_tables::Lookup::Found(stored) => Some(stored),
        skyvine_tables::Lookup::Missing => None,
    };
    let beaten = covering
        .into_iter()
        .filter(|stored| matched.is_none_or(|m| m.entry.prefix != stored.entry.prefix))
        .map(|stored| gndt_row(node, stored, now))
        .collect();
    RouteView {
        address,
        network: String::new(),
        site: node.me().clone(),
        matched: matched.map(|stored| gndt_row(node, stored, now)),
        beaten,
        in_lndt: node.lndt().contains(address),
    }
}

/// The peers of `networks` (one row per network and peer), and the drops of the router's own
/// data plane and of those networks'.
pub fn peers<'a>(
    me: &SiteId,
    networks: impl Iterator<Item = &'a NetworkNode>,
    shared: &Shared,
    ctx: &Context,
    now: Instant,
) -> PeersView {
    let mut drops = shared.counters.snapshot().drops;
    let mut peers = Vec::new();
    for network in networks {
        let counters = shared
            .network(network.id)
            .map(|n| n.counters.snapshot())
            .unwrap_or_default();
        for (reason, count) in &counters.drops {
            *drops.entry(reason.clone()).or_default() += count;
        }
        peers.extend(network_peers(network, &counters, shared, ctx, now));
    }
    PeersView {
        site: me.clone(),
        peers,
        drops,
    }
}

fn network_peers(
    network: &NetworkNode,
    counters: &CountersSnapshot,
    shared: &Shared,
    ctx: &Context,
    now: Instant,
) -> Vec<PeerRow> {
    let conns = shared.peers.load();
    let relayed = shared.relay.relayed();
    network
        .node
        .peers()
        .iter()
        .map(|(site, state)| {
            let conn = conns.get(site).filter(|_| state.connected);
            let stats = counters
                .peers
                .get(site.as_str())
                .copied()
                .unwrap_or_default();
            let via = match &state.path {
                Some(path) => path.relay().cloned(),
                None => ctx.peer_relays.get(site).cloned(),
            };
            let (relayed_packets, relayed_bytes) = relayed.get(site).copied().unwrap_or_default();
            PeerRow {
                network: network.name.clone(),
                site: site.clone(),
                configured: state.configured,
                connected: state.connected,
                synced: state.synced,
                since_s: age(now, state.since),
                address: match &via {
                    Some(_) => None,
                    None => conn
                        .map(quinn::Connection::remote_address)
                        .or_else(|| ctx.peer_addresses.get(site).copied()),
                },
                via,
                rtt_ms: conn.map(|c| duration_ms(c.rtt())),
                lost_packets: conn.map(|c| c.stats().path.lost_packets),
                tx_packets: stats.tx_packets,
                tx_bytes: stats.tx_bytes,
                rx_packets: stats.rx_packets,
                rx_bytes: stats.rx_bytes,
                relayed_packets,
                relayed_bytes,
            }
        })
        .collect()
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn migration_row(record: &MigrationRecord, now: Instant) -> MigrationRow {
    let (outcome, reason) = match &record.outcome {
        Outcome::InProgress => (OutcomeName::InProgress, None),
        Outcome::Applied => (OutcomeName::Applied, None),
        Outcome::Refused(why) => (OutcomeName::Refused, Some(why.name().to_owned())),
    };
    MigrationRow {
        network: String::new(),
        id: record.id,
        ip: record.ip,
        mac: record.mac,
        from: record.from.clone(),
        to: record.to.clone(),
        role: record.role.name().to_owned(),
        detection: record.detection.name().to_owned(),
        outcome,
        reason,
        age_s: age(now, record.detected),
        resolved_ms: offset_ms(record.detected, record.resolved),
        confirmed_ms: offset_ms(record.detected, record.confirmed),
        advertised_ms: offset_ms(record.detected, record.advertised),
        applied_ms: offset_ms(record.detected, record.applied),
    }
}

pub fn migrations(node: &Node, now: Instant) -> MigrationsView {
    MigrationsView {
        site: node.me().clone(),
        migrations: node.migrations().map(|r| migration_row(r, now)).collect(),
        prepared: node
            .prepared()
            .map(|w| PreparedRow {
                network: String::new(),
                ip: w.ip,
                mac: w.mac,
                from: w.from.clone(),
                to: w.to.clone(),
                age_s: age(now, w.since),
                left_s: w.until.saturating_duration_since(now).as_secs_f64(),
            })
            .collect(),
    }
}

/// What a prepare or cancel command did, as the admin CLI shows it.
pub fn hint(node: &Node, outcome: &HintOutcome) -> HintView {
    let site = node.me().clone();
    match outcome {
        HintOutcome::Announced(w) => HintView {
            site,
            outcome: "announced".into(),
            ip: w.ip,
            owner: w.from.clone(),
            to: Some(w.to.clone()),
            window_s: Some(w.until.saturating_duration_since(w.since).as_secs_f64()),
        },
        HintOutcome::Forwarded { owner, ip } => HintView {
            site,
            outcome: "forwarded".into(),
            ip: *ip,
            owner: owner.clone(),
            to: None,
            window_s: None,
        },
        HintOutcome::Cancelled { ip } => HintView {
            site: site.clone(),
            outcome: "cancelled".into(),
            ip: *ip,
            owner: site,
            to: None,
            window_s: None,
        },
    }
}

pub fn counts(node: &Node) -> Counts {
    let mut counts = Counts::default();
    for stored in node.gndt().entries() {
        match (stored.entry.withdrawn, stored.entry.kind) {
            (true, _) => counts.gndt_withdrawn += 1,
            (false, EntryKind::SitePrefix) => counts.gndt_prefixes += 1,
            (false, EntryKind::Host) => counts.gndt_hosts += 1,
        }
    }
    for host in node.lndt().hosts() {
        match host.source {
            LndtSource::Configured => counts.lndt_configured += 1,
            LndtSource::MigratedIn => counts.lndt_migrated_in += 1,
        }
    }
    counts.lndt_moved_away = count(node.lndt().moved_away());
    counts.hwdt_bindings = count(node.hwdt().bindings());
    counts.peers_configured = count(node.peers().values().filter(|p| p.configured));
    counts.peers_up = count(node.peers().values().filter(|p| p.connected));
    for record in node.migrations() {
        match record.outcome {
            Outcome::InProgress => counts.migrations_in_progress += 1,
            Outcome::Applied => counts.migrations_applied += 1,
            Outcome::Refused(_) => counts.migrations_refused += 1,
        }
    }
    counts
}

fn count<T>(items: impl Iterator<Item = T>) -> u64 {
    u64::try_from(items.count()).unwrap_or(u64::MAX)
}

pub fn lan_counters(node: &Node) -> CountersView {
    CountersView::new(&node.counters())
}

/// `ip_forward` is read by the caller (file IO stays off the main loop).
pub fn status(
    (network, node): (&str, &Node),
    ctx: &Context,
    ip_forward: Option<bool>,
    now: Instant,
) -> StatusView {
    let lan_counters = lan_counters(node);
    let identity = node.lan_identity();
    let mut warnings = Vec::new();
    if ip_forward == Some(false) {
        warnings.push(
            "net.ipv4.ip_forward is 0: the kernel does not forward between the LAN and the overlay"
                .to_owned(),
        );
    }
    warnings.extend(peer_warnings(node, now));
    warnings.extend(counter_warnings(&lan_counters));
    warnings.extend(move_warnings(node, now));
    StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        site: node.me().clone(),
        network: network.to_owned(),
        networks: Vec::new(),
        uptime_s: age(now, node.started()),
        lan: LanView {
            interface: ctx.lan_interfaces.get(network).cloned().unwrap_or_default(),
            ip: identity.map(|i| i.ip),
            mac: identity.map(|i| i.mac),
        },
        counts: counts(node),
        lan_counters,
        ip_forward,
        warnings,
    }
}

/// Configured peers that are down, and peers up whose table has not arrived.
fn peer_warnings(node: &Node, now: Instant) -> Vec<String> {
    let mut warnings = Vec::new();
    for (site, state) in node.peers() {
        if state.configured && !state.connected {
            warnings.push(format!(
                "peer {site} is down (for {})",
                super::render::duration(age(now, state.since))
            ));
        } else if state.connected && !state.synced {
            warnings.push(format!(
                "peer {site} is up but its table has not arrived yet"
            ));
        }
    }
    warnings
}

/// Counters that should stay at zero: LAN frames over the rate limit, entries over the limits.
fn counter_warnings(counters: &CountersView) -> Vec<String> {
    let mut warnings = Vec::new();
    let rate_limited = counters.get(Counter::RateLimited);
    if rate_limited > 0 {
        warnings.push(format!(
            "{rate_limited} LAN frames dropped by the rate limit (an ARP/RARP flood on the LAN?)"
        ));
    }
    let refused_entries = counters.get(Counter::RefusedEntries);
    if refused_entries > 0 {
        warnings.push(format!(
            "{refused_entries} table entries from peers refused: the GNDT size limit was reached"
        ));
    }
    warnings
}

/// Frozen addresses and refused moves.
fn move_warnings(node: &Node, now: Instant) -> Vec<String> {
    let mut warnings = Vec::new();
    for (ip, until) in node.frozen(now) {
        warnings.push(format!(
            "{ip} is frozen (moved too often: a duplicate address?) for another {}",
            super::render::duration(age(until, now))
        ));
    }
    for record in node.migrations() {
        if let Outcome::Refused(why) = record.outcome {
            let what = record
                .ip
                .map(|ip| ip.to_string())
                .or_else(|| record.mac.map(|m| m.to_string()))
                .unwrap_or_else(|| "unknown host".to_owned());
            warnings.push(format!(
                "refused a move of {what} to {} {} ago: {} ({})",
                record.to,
                super::render::duration(age(now, record.detected)),
                why.name(),
                why.describe()
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyvine_core::node::NodeConfig;
    use skyvine_core::proto::Message;
    use skyvine_tables::GndtEntry;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    /// Router a (10.77.1.0/24) that learned b's prefix and that 10.77.1.1 moved to b.
    pub(crate) fn node_with_move(now: Instant) -> Node {
        let prefix = "10.77.1.0/24".parse().unwrap();
        let mut node = Node::new(
            NodeConfig::new(
                site("a"),
                vec![prefix],
                vec![prefix],
                vec![site("b"), site("c")],
            ),
            now,
        );
        node.handle_peer_up(site("b"), vec!["10.77.2.0/24".parse().unwrap()], now);
        let entries = vec![
            GndtEntry::site_prefix("10.77.2.0/24".parse().unwrap(), site("b"), 1),
            GndtEntry::host("10.77.1.1".parse().unwrap(), site("b"), 2, None),
        ];
        node.handle_message(&site("b"), Message::Entries { entries }, now);
        let digest = node.gndt().digest();
        node.handle_message(&site("b"), Message::TableEnd { digest, count: 4 }, now);
        node
    }

    #[test]
    fn route_prefers_the_host_entry_and_lists_the_prefix_it_beat() {
        let now = Instant::now();
        let node = node_with_move(now);
        let view = route(&node, "10.77.1.1".parse().unwrap(), now);
        let matched = view.matched.unwrap();
        assert_eq!(matched.prefix.to_string(), "10.77.1.1/32");
        assert_eq!(matched.kind, Kind::Host);
        assert_eq!(matched.site, site("b"));
        assert!(!matched.local);
        assert_eq!(view.beaten.len(), 1);
        assert_eq!(view.beaten[0].prefix.to_string(), "10.77.1.0/24");
        assert!(view.beaten[0].local);
        assert!(!view.in_lndt);

        let other = route(&node, "10.77.1.2".parse().unwrap(), now);
        assert_eq!(other.matched.unwrap().prefix.to_string(), "10.77.1.0/24");
        assert!(other.beaten.is_empty());
        assert!(other.in_lndt);
        assert!(route(&node, "192.0.2.1".parse().unwrap(), now)
            .matched
            .is_none());
    }

    #[test]
    fn tables_lists_every_table_or_the_one_asked_for() {
        let now = Instant::now();
        let node = node_with_move(now);
        let all = tables(&node, None, now);
        let gndt = all.gndt.unwrap();
        assert_eq!(gndt.len(), 3);
        assert!(gndt.iter().any(|r| r.kind == Kind::Host && r.seq == 2));
        let lndt = all.lndt.unwrap();
        assert_eq!(
            lndt.moved_away,
            vec!["10.77.1.1".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(all.hwdt.unwrap().is_empty());
        let only = tables(&node, Some(TableName::Lndt), now);
        assert!(only.gndt.is_none() && only.hwdt.is_none() && only.lndt.is_some());
    }

    #[test]
    fn status_counts_and_warns_about_a_down_peer() {
        let now = Instant::now();
        let node = node_with_move(now);
        let view = status(("default", &node), &Context::default(), Some(false), now);
        assert_eq!(view.counts.gndt_prefixes, 2);
        assert_eq!(view.counts.gndt_hosts, 1);
        assert_eq!(view.counts.peers_configured, 2);
        assert_eq!(view.counts.peers_up, 1);
        assert_eq!(view.counts.lndt_moved_away, 1);
        assert!(view.warnings.iter().any(|w| w.contains("ip_forward")));
        assert!(view.warnings.iter().any(|w| w.contains("peer c is down")));
        assert!(!view.warnings.iter().any(|w| w.contains("peer b")));
    }
}
