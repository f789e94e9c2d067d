//! The hardware description table: IP <-> MAC bindings seen on the LAN or advertised by peers.
//!
//! Bounded: when full, the least recently seen learned binding is evicted. Bindings from
//! configuration are never evicted.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::types::MacAddr;

/// Where a binding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingSource {
    /// Seen in an ARP frame on this router's LAN.
    Lan,
    /// Given in configuration; never evicted or expired.
    Configured,
}

/// One IP <-> MAC binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub source: BindingSource,
    pub first_seen: Instant,
    pub last_seen: Instant,
}

/// What [`Hwdt::learn`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    /// The IP was bound to another MAC before.
    Changed {
        old_mac: MacAddr,
    },
    /// A LAN sighting contradicts a configured binding: the table kept the configured MAC.
    /// Worth counting: a host claims an address that configuration gives to another.
    Conflict {
        configured_mac: MacAddr,
    },
}

/// The hardware description table.
#[derive(Debug)]
pub struct Hwdt {
    by_ip: HashMap<Ipv4Addr, Binding>,
    /// Every bound IP of a MAC, ordered by last sighting (the newest last).
    by_mac: HashMap<MacAddr, BTreeSet<(Instant, Ipv4Addr)>>,
    /// Learned bindings ordered by last sighting, for eviction and expiry.
    age_order: BTreeSet<(Instant, Ipv4Addr)>,
    capacity: usize,
}

impl Hwdt {
    /// A table holding at most `capacity` learned bindings (and any number of configured ones).
    pub fn new(capacity: usize) -> Self {
        Hwdt {
            by_ip: HashMap::new(),
            by_mac: HashMap::new(),
            age_order: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records a sighting of `ip` at `mac`.
    ///
    /// A configured binding only changes through configuration; a LAN sighting of its IP at
    /// another MAC is reported as [`Learned::Conflict`] and changes nothing. A configured
    /// sighting of a learned binding makes it configured.
    pub fn learn(
        &mut self,
        ip: Ipv4Addr,
        mac: MacAddr,
        source: BindingSource,
        now: Instant,
    ) -> Learned {
        let previous = self.by_ip.get(&ip).map(|b| (b.mac, b.source, b.first_seen));
        let (outcome, first_seen, source) = match previous {
            Some((old_mac, old_source, first_seen)) if old_mac == mac => {
                // Once configured, always configured (until configuration replaces it).
                let source = match (old_source, source) {
                    (BindingSource::Lan, BindingSource::Lan) => BindingSource::Lan,
                    _ => BindingSource::Configured,
                };
                (Learned::Refreshed, first_seen, source)
            }
            Some((old_mac, BindingSource::Configured, _)) if source == BindingSource::Lan => {
                return Learned::Conflict {
                    configured_mac: old_mac,
                };
            }
            Some((old_mac, _, _)) => (Learned::Changed { old_mac }, now, source),
            None => (Learned::New, now, source),
        };
        self.forget(ip);
        if source == BindingSource::Lan {
            self.make_room();
            self.age_order.insert((now, ip));
        }
        self.by_mac.entry(mac).or_default().insert((now, ip));
        self.by_ip.insert(
            ip,
            Binding {
                ip,
                mac,
                source,
                first_seen,
                last_seen: now,
            },
        );
        outcome
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Binding> {
        self.by_ip.get(&ip)
    }

    /// The most recently seen binding of `mac` (on a tie, the highest IP).
    pub fn by_mac(&self, mac: MacAddr) -> Option<&Binding> {
        let (_, ip) = self.by_mac.get(&mac)?.last()?;
        self.by_ip.get(ip)
    }

    /// Every binding of `mac`, the most recently seen last.
    pub fn all_by_mac(&self, mac: MacAddr) -> impl Iterator<Item = &Binding> {
        self.by_mac
            .get(&mac)
            .into_iter()
            .flatten()
            .filter_map(|(_, ip)| self.by_ip.get(ip))
    }

    /// Removes the binding of `ip`, learned or configured (e.g. configuration dropped it).
    pub fn remove(&mut self, ip: Ipv4Addr) -> Option<Binding> {
        self.forget(ip)
    }

    /// Drops learned bindings not seen for `max_age`. Returns how many went.
    pub fn expire(&mut self, now: Instant, max_age: Duration) -> usize {
        let mut gone = 0;
        while let Some(&(seen, ip)) = self.age_order.first() {
            if now.saturating_duration_since(seen) < max_age {
                break;
            }
            self.forget(ip);
            gone += 1;
        }
        gone
    }

    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.by_ip.values()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Number of learned (evictable) bindings; never more than [`Hwdt::capacity`].
    pub fn learned_len(&self) -> usize {
        self.age_order.len()
    }

    /// The most learned bindings the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn make_room(&mut self) {
        while self.age_order.len() >= self.capacity {
            match self.age_order.first().copied() {
                Some((_, oldest)) => {
                    self.forget(oldest);
                }
                None => break,
            }
        }
    }

    fn forget(&mut self, ip: Ipv4Addr) -> Option<Binding> {
        let old = self.by_ip.remove(&ip)?;
        self.age_order.remove(&(old.last_seen, ip));
        if let Some(ips) = self.by_mac.get_mut(&old.mac) {
            ips.remove(&(old.last_seen, ip));
            if ips.is_empty() {
                self.by_mac.remove(&old.mac);
            }
        }
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 1, last)
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0x77, 1, last])
    }

    #[test]
    fn learns_refreshes_and_changes() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut hwdt = Hwdt::new(8);
        assert_eq!(
            hwdt.learn(ip(1), mac(1), BindingSource::Lan, t0),
            Learned::New
        );
        assert_eq!(
            hwdt.learn(ip(1), mac(1), BindingSource::Lan, t1),
            Learned::Refreshed
        );
        let binding = hwdt.by_ip(ip(1)).unwrap();
        assert_eq!((binding.first_seen, binding.last_seen), (t0, t1));
        assert_eq!(
            hwdt.learn(ip(1), mac(2), BindingSource::Lan, t1),
            Learned::Changed { old_mac: mac(1) }
        );
        assert_eq!(hwdt.by_mac(mac(1)), None);
        assert_eq!(hwdt.by_mac(mac(2)).map(|b| b.ip), Some(ip(1)));
    }

    #[test]
    fn a_configured_binding_wins_over_lan_sightings() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut hwdt = Hwdt::new(8);
        hwdt.learn(ip(1), mac(1), BindingSource::Configured, t0);
        assert_eq!(
            hwdt.learn(ip(1), mac(9), BindingSource::Lan, t1),
            Learned::Conflict {
                configured_mac: mac(1)
            }
        );
        assert_eq!(hwdt.by_ip(ip(1)).map(|b| b.mac), Some(mac(1)));
        // The same MAC seen on the LAN refreshes it and keeps it configured.
        assert_eq!(
            hwdt.learn(ip(1), mac(1), BindingSource::Lan, t1),
            Learned::Refreshed
        );
        let binding = hwdt.by_ip(ip(1)).unwrap();
        assert_eq!(
            (binding.source, binding.last_seen),
            (BindingSource::Configured, t1)
        );
        assert_eq!(hwdt.learned_len(), 0);
        assert_eq!(
            hwdt.expire(t1 + Duration::from_secs(3600), Duration::from_secs(1)),
            0
        );
    }

    #[test]
    fn configuring_a_learned_binding_takes_it_out_of_eviction() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut hwdt = Hwdt::new(1);
        hwdt.learn(ip(1), mac(1), BindingSource::Lan, t0);
        assert_eq!(
            hwdt.learn(ip(1), mac(1), BindingSource::Configured, t1),
            Learned::Refreshed
        );
        assert_eq!(hwdt.learned_len(), 0);
        hwdt.learn(ip(2), mac(2), BindingSource::Lan, t1);
        hwdt.learn(ip(3), mac(3), BindingSource::Lan, t1);
        assert!(hwdt.by_ip(ip(1)).is_some());
        assert!(hwdt.by_ip(ip(2)).is_none());
        assert_eq!(hwdt.by_ip(ip(3)).map(|b| b.mac), Some(mac(3)));
    }

    #[test]
    fn one_mac_with_two_addresses_keeps_both() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut hwdt = Hwdt::new(2);
        hwdt.learn(ip(1), mac(1), BindingSource::Lan, t0);
        hwdt.learn(ip(2), mac(1), BindingSource::Lan, t1);
        assert_eq!(hwdt.by_mac(mac(1)).map(|b| b.ip), Some(ip(2)));
        assert_eq!(hwdt.all_by_mac(mac(1)).count(), 2);
        // The newest goes (another host takes its address): the older binding still resolves.
        hwdt.learn(ip(2), mac(2), BindingSource::Lan, t1);
        assert_eq!(hwdt.by_mac(mac(1)).map(|b| b.ip), Some(ip(1)));
    }

    #[test]
    fn the_least_recently_seen_learned_binding_is_evicted() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut hwdt = Hwdt::new(2);
        hwdt.learn(ip(1), mac(1), BindingSource::Lan, at(0));
        hwdt.learn(ip(2), mac(2), BindingSource::Lan, at(1));
        hwdt.learn(ip(1), mac(1), BindingSource::Lan, at(2));
        hwdt.learn(ip(3), mac(3), BindingSource::Lan, at(3));
        assert!(hwdt.by_ip(ip(2)).is_none());
        assert!(hwdt.by_mac(mac(2)).is_none());
        assert_eq!(hwdt.len(), 2);
        assert_eq!(hwdt.expire(at(4), Duration::from_secs(2)), 1);
        assert_eq!(
            hwdt.bindings().map(|b| b.ip).collect::<Vec<_>>(),
            vec![ip(3)]
        );
    }
}
