//! Shared state of the data plane: the peer connections and the packet counters.
//!
//! Both are read on the packet path once per batch, never once per packet: the peer map is a
//! copy-on-write snapshot behind an `Arc`, and counters are atomics that a batch adds to once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use skyvine_tables::SiteId;

use skyvine_core::fib::DropReason;

/// The live QUIC connection to each peer site, shared by the daemon (writer) and the TUN
/// reader (which loads a snapshot per batch).
#[derive(Debug, Default)]
pub struct PeerTable {
    current: RwLock<Arc<HashMap<SiteId, quinn::Connection>>>,
}

impl PeerTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `conn` the connection for `site`, returning the one it replaces.
    pub fn insert(&self, site: SiteId, conn: quinn::Connection) -> Option<quinn::Connection> {
        self.update(|map| map.insert(site, conn))
    }

    /// Forgets the connection for `site`.
    pub fn remove(&self, site: &SiteId) -> Option<quinn::Connection> {
        self.update(|map| map.remove(site))
    }

    /// Forgets the connection for `site` only if it is still `conn` (a newer connection that
    /// replaced it stays). Returns whether it was removed.
    pub fn remove_if_same(&self, site: &SiteId, conn: &quinn::Connection) -> bool {
        self.update(|map| match map.get(site) {
            Some(current) if current.stable_id() == conn.stable_id() => {
                map.remove(site);
                true
            }
            _ => false,
        })
    }

    pub fn get(&self, site: &SiteId) -> Option<quinn::Connection> {
        self.load().get(site).cloned()
    }

    /// The current map; cheap (an `Arc` clone), meant once per packet batch.
    pub fn load(&self) -> Arc<HashMap<SiteId, quinn::Connection>> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn update<R>(&self, f: impl FnOnce(&mut HashMap<SiteId, quinn::Connection>) -> R) -> R {
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut map = HashMap::clone(&guard);
        let result = f(&mut map);
        *guard = Arc::new(map);
        result
    }
}

/// Packet and byte counters for one peer site (both directions).
#[derive(Debug, Default)]
pub struct PeerCounters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
}

impl PeerCounters {
    /// Adds a batch sent to the peer.
    pub fn add_tx(&self, packets: u64, bytes: u64) {
        self.tx_packets.fetch_add(packets, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds a batch received from the peer and written to the device.
    pub fn add_rx(&self, packets: u64, bytes: u64) {
        self.rx_packets.fetch_add(packets, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PeerStats {
        PeerStats {
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
        }
    }
}

/// All data-plane counters: per peer traffic and drops by reason.
#[derive(Debug, Default)]
pub struct Counters {
    peers: Mutex<BTreeMap<SiteId, Arc<PeerCounters>>>,
    drops: [AtomicU64; DropReason::ALL.len()],
}

/// Plain copy of one peer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// Plain copy of all counters, for the admin socket and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountersSnapshot {
    /// Per peer site id.
    pub peers: BTreeMap<String, PeerStats>,
    /// Per [`DropReason::name`], every reason present (zero when none).
    pub drops: BTreeMap<String, u64>,
}

impl CountersSnapshot {
    /// The drop count for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.name()).copied().unwrap_or(0)
    }
}

impl Counters {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `site`, created on first use. Hold on to the `Arc` on the packet path.
    pub fn peer(&self, site: &SiteId) -> Arc<PeerCounters> {
        let mut peers = match self.peers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(peers.entry(site.clone()).or_default())
    }

    /// Counts `n` packets dropped for `reason`.
    pub fn add_drops(&self, reason: DropReason, n: u64) {
        if let Some(counter) = self.drops.get(drop_index(reason)) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops
            .get(drop_index(reason))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let peers = match self.peers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        CountersSnapshot {
            peers: peers
                .iter()
                .map(|(site, c)| (site.as_str().to_owned(), c.snapshot()))
                .collect(),
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r.name().to_owned(), self.dropped(r)))
                .collect(),
        }
    }
}

/// Per-batch drop tally, added to [`Counters`] once per batch.
#[derive(Debug, Default)]
pub(crate) struct DropTally([u64; DropReason::ALL.len()]);

impl DropTally {
    pub(crate) fn add(&mut self, reason: DropReason) {
        self.add_n(reason, 1);
    }

    pub(crate) fn add_n(&mut self, reason: DropReason, n: u64) {
        if let Some(count) = self.0.get_mut(drop_index(reason)) {
            *count += n;
        }
    }

    /// Adds the tally to `counters` and resets it; returns the reasons seen with their counts.
    pub(crate) fn flush(&mut self, counters: &Counters) -> impl Iterator<Item = (DropReason, u64)> {
        let tally = std::mem::take(&mut self.0);
        for (reason, n) in DropReason::ALL.iter().zip(tally) {
            if n > 0 {
                counters.add_drops(*reason, n);
            }
        }
        DropReason::ALL
            .into_iter()
            .zip(tally)
            .filter(|(_, n)| *n > 0)
    }
}

fn drop_index(reason: DropReason) -> usize {
    match reason {
        DropReason::Malformed => 0,
        DropReason::SourceNotLocal => 1,
        DropReason::NoRoute => 2,
        DropReason::DestinationLocal => 3,
        DropReason::PeerDown => 4,
        DropReason::SpoofedSource => 5,
        DropReason::TooBig => 6,
        DropReason::QueueFull => 7,
        DropReason::RelayNetwork => 8,
        DropReason::RelayDisabled => 9,
        DropReason::RelayUnlisted => 10,
        DropReason::RelaySpoofed => 11,
        DropReason::RelayUnexpected => 12,
        DropReason::NotArrived => 13,
        DropReason::DestinationNotLocal => 14,
        DropReason::UnknownNetwork => 15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_index_matches_all_order() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(drop_index(*reason), i, "{reason:?}");
        }
    }

    #[test]
    fn snapshot_lists_every_reason_and_peer() {
        let counters = Counters::new();
        let b = SiteId::new("b").unwrap();
        counters.peer(&b).add_tx(2, 3000);
        counters.peer(&b).add_rx(1, 100);
        let mut tally = DropTally::default();
        tally.add(DropReason::NoRoute);
        tally.add(DropReason::NoRoute);
        let seen: Vec<_> = tally.flush(&counters).collect();
        assert_eq!(seen, vec![(DropReason::NoRoute, 2)]);
        let snap = counters.snapshot();
        assert_eq!(snap.drops.len(), DropReason::ALL.len());
        assert_eq!(snap.dropped(DropReason::NoRoute), 2);
        assert_eq!(snap.dropped(DropReason::Malformed), 0);
        assert_eq!(
            snap.peers["b"],
            PeerStats {
                tx_packets: 2,
                tx_bytes: 3000,
                rx_packets: 1,
                rx_bytes: 100
            }
        );
    }
}
