//! The local network description table: the hosts this router is responsible for.
//!
//! Hosts come from configuration (single addresses or ranges) or arrive by migration. A host that
//! migrated away is excluded even when a configured range still covers it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;

use crate::types::MacAddr;

/// How a host came to be in the LNDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LndtSource {
    /// Covered by a range in this router's configuration.
    Configured,
    /// Migrated in from another site.
    MigratedIn,
}

/// One host the router is responsible for (a configured range is listed as its prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LndtHost {
    pub prefix: Ipv4Network,
    pub mac: Option<MacAddr>,
    pub source: LndtSource,
    pub since: Instant,
}

/// The local network description table.
#[derive(Debug)]
pub struct Lndt {
    configured: Vec<(Ipv4Network, Instant)>,
    migrated_in: BTreeMap<Ipv4Addr, LndtHost>,
    moved_away: BTreeSet<Ipv4Addr>,
}

impl Lndt {
    /// A table of the configured ranges (a single host is a /32).
    pub fn new(configured: impl IntoIterator<Item = Ipv4Network>, now: Instant) -> Self {
        Lndt {
            configured: configured.into_iter().map(|net| (net, now)).collect(),
            migrated_in: BTreeMap::new(),
            moved_away: BTreeSet::new(),
        }
    }

    /// Whether `ip` is a host this router is responsible for now.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.migrated_in.contains_key(&ip)
            || (!self.moved_away.contains(&ip) && self.is_configured(ip))
    }

    /// Whether a configured range covers `ip` (whether or not it has moved away).
    pub fn is_configured(&self, ip: Ipv4Addr) -> bool {
        self.configured.iter().any(|(net, _)| net.contains(ip))
    }

    /// A host migrated in: the router is now responsible for it. Returns false if it already was
    /// (a MAC given now still replaces an unknown or older one).
    pub fn add(&mut self, ip: Ipv4Addr, mac: Option<MacAddr>, now: Instant) -> bool {
        let was = self.contains(ip);
        self.moved_away.remove(&ip);
        if self.is_configured(ip) {
            // Back home: the configured range covers it again.
            self.migrated_in.remove(&ip);
        } else {
            self.migrated_in
                .entry(ip)
                .and_modify(|host| host.mac = mac.or(host.mac))
                .or_insert(LndtHost {
                    prefix: Ipv4Network::from(ip),
                    mac,
                    source: LndtSource::MigratedIn,
                    since: now,
                });
        }
        !was
    }

    /// A host migrated away. Returns false if the router was not responsible for it.
    pub fn remove(&mut self, ip: Ipv4Addr) -> bool {
        let was = self.contains(ip);
        self.migrated_in.remove(&ip);
        if self.is_configured(ip) {
            self.moved_away.insert(ip);
        }
        was
    }

    /// Configured ranges, then hosts that migrated in.
    pub fn hosts(&self) -> impl Iterator<Item = LndtHost> + '_ {
        let configured = self.configured.iter().map(|(net, since)| LndtHost {
            prefix: *net,
            mac: None,
            source: LndtSource::Configured,
            since: *since,
        });
        configured.chain(self.migrated_in.values().cloned())
    }

    /// Configured ranges.
    pub fn configured(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        self.configured.iter().map(|(net, _)| *net)
    }

    /// Whether `ip` migrated in (outside the configured ranges).
    pub fn is_migrated_in(&self, ip: Ipv4Addr) -> bool {
        self.migrated_in.contains_key(&ip)
    }

    /// Whether `ip`, in a configured range, migrated away.
    pub fn is_moved_away(&self, ip: Ipv4Addr) -> bool {
        self.moved_away.contains(&ip)
    }

    /// Configured addresses whose host migrated away.
    pub fn moved_away(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.moved_away.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_moves_a_host_out_of_and_back_into_its_range() {
        let now = Instant::now();
        let mut lndt = Lndt::new(["10.1.0.0/24".parse().unwrap()], now);
        let vm: Ipv4Addr = "10.1.0.2".parse().unwrap();
        assert!(lndt.contains(vm));
        assert!(lndt.remove(vm));
        assert!(!lndt.contains(vm));
        assert!(lndt.contains("10.1.0.3".parse().unwrap()));
        assert!(lndt.add(vm, None, now));
        assert!(lndt.contains(vm));
        assert_eq!(lndt.moved_away().count(), 0);
    }

    #[test]
    fn a_migrated_in_host_is_listed_and_can_leave_again() {
        let now = Instant::now();
        let mut lndt = Lndt::new(["10.2.0.0/24".parse().unwrap()], now);
        let vm: Ipv4Addr = "10.1.0.2".parse().unwrap();
        assert!(!lndt.contains(vm));
        assert!(lndt.add(vm, None, now));
        assert!(!lndt.add(vm, None, now));
        assert_eq!(
            lndt.hosts()
                .filter(|h| h.source == LndtSource::MigratedIn)
                .count(),
            1
        );
        let mac: MacAddr = "52:54:00:77:01:02".parse().unwrap();
        assert!(!lndt.add(vm, Some(mac), now));
        assert!(!lndt.add(vm, None, now));
        assert_eq!(lndt.hosts().find_map(|h| h.mac), Some(mac));
        assert!(lndt.remove(vm));
        assert!(!lndt.contains(vm));
        assert!(!lndt.remove(vm));
    }
}
