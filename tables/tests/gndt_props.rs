//! Property tests of the GNDT against brute-force oracles: longest-prefix match, and the merge
//! rule's independence from the order (and repetition) of updates.

// A test crate: clippy only sees `#[test]` functions as tests, not their helpers.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use proptest::prelude::*;
use skyvine_tables::{EntryKind, Gndt, GndtEntry, Lookup, MacAddr, SiteId, Version};

fn site(index: u8) -> SiteId {
    SiteId::new(["a", "b", "c"][usize::from(index % 3)]).unwrap()
}

fn mac(index: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0x77, 0, index])
}

fn normalize(net: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(net.network(), net.prefix()).unwrap()
}

/// Addresses crowded into a small space (so that prefixes nest and collide), plus a few
/// anywhere.
fn address() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        4 => (prop::sample::select(vec![10u8, 11, 172]), 0u8..3, 0u8..4, 0u8..6)
            .prop_map(|(a, b, c, d)| Ipv4Addr::new(a, b, c, d)),
        1 => any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

/// A prefix of an address in that space: mostly /8../24 site prefixes and /32 hosts, sometimes
/// the default route. Host bits are left set on purpose: the table must normalize.
fn prefix() -> impl Strategy<Value = Ipv4Network> {
    let len = prop_oneof![
        1 => Just(0u8),
        2 => Just(8u8),
        2 => Just(12u8),
        3 => Just(16u8),
        2 => Just(20u8),
        3 => Just(24u8),
        1 => Just(30u8),
        5 => Just(32u8),
    ];
    (address(), len).prop_map(|(ip, len)| Ipv4Network::new(ip, len).unwrap())
}

fn entry(prefix: impl Strategy<Value = Ipv4Network>) -> impl Strategy<Value = GndtEntry> {
    (
        prefix,
        0u64..5,
        0u8..3,
        prop::option::of(0u8..3),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(prefix, seq, origin, mac_index, withdrawn)| {
            let kind = if prefix.prefix() == 32 {
                EntryKind::Host
            } else {
                EntryKind::SitePrefix
            };
            GndtEntry {
                prefix,
                kind,
                version: Version {
                    seq,
                    origin: site(origin),
                },
                mac: mac_index.filter(|_| kind == EntryKind::Host).map(mac),
                withdrawn,
                // Frozen copies of one version must converge like any content difference.
                frozen: seq % 3 == 2 && kind == EntryKind::Host,
            }
        })
}

/// The live entry with the longest prefix containing `addr`, by linear scan.
fn oracle_lpm(entries: &BTreeMap<Ipv4Network, GndtEntry>, addr: Ipv4Addr) -> Option<&GndtEntry> {
    entries
        .values()
        .filter(|e| !e.withdrawn && e.prefix.contains(addr))
        .max_by_key(|e| e.prefix.prefix())
}

/// Every entry of a table, keyed by prefix (one entry per prefix).
fn snapshot(gndt: &Gndt) -> BTreeMap<Ipv4Network, GndtEntry> {
    gndt.entries()
        .map(|stored| (stored.entry.prefix, stored.entry.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lpm_agrees_with_a_linear_scan(
        entries in prop::collection::vec(entry(prefix()), 0..40),
        probes in prop::collection::vec(address(), 1..64),
    ) {
        let now = Instant::now();
        // One entry per prefix (the last generated), so the oracle needs no merge rule.
        let mut expected = BTreeMap::new();
        for mut entry in entries {
            entry.prefix = normalize(entry.prefix);
            expected.insert(entry.prefix, entry);
        }
        let mut gndt = Gndt::new();
        for entry in expected.values() {
            prop_assert!(gndt.apply(entry.clone(), now).changed());
        }
        prop_assert_eq!(gndt.len(), expected.len());
        prop_assert_eq!(&snapshot(&gndt), &expected);
        // Live entries come in prefix order (address, then length), withdrawn ones after.
        let live: Vec<Ipv4Network> = gndt.live_entries().map(|s| s.entry.prefix).collect();
        let want: Vec<Ipv4Network> =
            expected.values().filter(|e| !e.withdrawn).map(|e| e.prefix).collect();
        prop_assert_eq!(live, want);
        let withdrawn_after = gndt.entries().skip_while(|s| !s.entry.withdrawn).all(|s| s.entry.withdrawn);
        prop_assert!(withdrawn_after);
        for net in expected.keys() {
            prop_assert_eq!(gndt.get(*net).map(|s| &s.entry), expected.get(net));
        }

        // Probe random addresses and every stored prefix's own address and its neighbours.
        let edges = expected
            .keys()
            .flat_map(|net| [net.network(), net.broadcast()])
            .flat_map(|ip| {
                let n = u32::from(ip);
                [n.wrapping_sub(1), n, n.wrapping_add(1)].map(Ipv4Addr::from)
            });
        for addr in probes.into_iter().chain(edges) {
            let want = oracle_lpm(&expected, addr);
            let got = match gndt.lookup(addr) {
                Lookup::Found(stored) => Some(&stored.entry),
                Lookup::Missing => None,
            };
            prop_assert_eq!(got, want, "lookup {}", addr);
            prop_assert_eq!(gndt.owner(addr), want.map(|e| e.site()));
        }

        // `covering`: the longest live entry strictly shorter than the prefix that contains it.
        for net in expected.keys() {
            let want = expected
                .values()
                .filter(|e| !e.withdrawn && e.prefix.prefix() < net.prefix())
                .filter(|e| e.prefix.contains(net.network()))
                .max_by_key(|e| e.prefix.prefix());
            prop_assert_eq!(gndt.covering(*net).map(|s| &s.entry), want, "covering {}", net);
        }
    }

    #[test]
    fn merge_ignores_order_and_repetition(
        (first, second) in prop::collection::vec(
            entry(prop::sample::select(vec![
                "10.0.0.0/16", "10.0.1.0/24", "10.0.1.5/32", "10.0.1.6/32", "10.0.2.7/32",
            ]).prop_map(|s| s.parse::<Ipv4Network>().unwrap())),
            0..30,
        ).prop_flat_map(|updates| (Just(updates.clone()).prop_shuffle(), Just(updates).prop_shuffle())),
    ) {
        let now = Instant::now();
        let mut one = Gndt::new();
        let mut two = Gndt::new();
        for entry in &first {
            one.apply(entry.clone(), now);
        }
        for entry in &second {
            two.apply(entry.clone(), now);
        }
        let snap = snapshot(&one);
        prop_assert_eq!(&snap, &snapshot(&two));
        prop_assert_eq!(one.digest(), two.digest());

        // Each prefix holds the highest version advertised for it.
        let mut newest: BTreeMap<Ipv4Network, Version> = BTreeMap::new();
        for entry in &first {
            let version = newest.entry(entry.prefix).or_insert_with(|| entry.version.clone());
            if entry.version > *version {
                *version = entry.version.clone();
            }
        }
        prop_assert_eq!(
            snap.iter().map(|(p, e)| (*p, e.version.clone())).collect::<BTreeMap<_, _>>(),
            newest
        );

        // The MAC index answers the same on both, and agrees with a scan of live hosts.
        for index in 0..3 {
            let m = mac(index);
            let live_hosts: Vec<&GndtEntry> = snap
                .values()
                .filter(|e| !e.withdrawn && e.kind == EntryKind::Host && e.mac == Some(m))
                .collect();
            let by_mac_one: Vec<&GndtEntry> = one.hosts_by_mac(m).map(|s| &s.entry).collect();
            let by_mac_two: Vec<&GndtEntry> = two.hosts_by_mac(m).map(|s| &s.entry).collect();
            prop_assert_eq!(&by_mac_one, &live_hosts);
            prop_assert_eq!(&by_mac_two, &live_hosts);
            prop_assert_eq!(
                one.host_by_mac(m).map(|s| &s.entry),
                two.host_by_mac(m).map(|s| &s.entry)
            );
            prop_assert_eq!(one.host_by_mac(m).is_some(), !live_hosts.is_empty());
        }
        for probe in ["10.0.1.5", "10.0.1.6", "10.0.1.9", "10.0.2.7", "10.0.3.1"] {
            let addr: Ipv4Addr = probe.parse().unwrap();
            prop_assert_eq!(
                one.lookup(addr).map_entry(),
                two.lookup(addr).map_entry()
            );
        }

        // Applying everything again (duplicates, in another order) changes nothing.
        let digest = one.digest();
        for entry in second.iter().chain(first.iter().rev()) {
            let applied = one.apply(entry.clone(), now);
            prop_assert!(!applied.changed(), "{:?} changed the table: {:?}", entry, applied);
        }
        prop_assert_eq!(&snapshot(&one), &snap);
        prop_assert_eq!(one.digest(), digest);
    }
}

/// Only what a lookup found, for comparing two tables.
trait LookupEntry {
    fn map_entry(self) -> Option<GndtEntry>;
}

impl LookupEntry for Lookup<'_> {
    fn map_entry(self) -> Option<GndtEntry> {
        match self {
            Lookup::Found(stored) => Some(stored.entry.clone()),
            Lookup::Missing => None,
        }
    }
}
