//! Property tests of the HWDT against an oracle: the learned-binding bound holds, configured
//! bindings are never evicted, eviction takes the least recently seen, and both indexes agree
//! with a scan.

// A test crate: clippy only sees `#[test]` functions as tests, not their helpers.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use skyvine_tables::{BindingSource, Hwdt, Learned, MacAddr};

#[derive(Clone, Debug)]
enum Op {
    Learn {
        ip: u8,
        mac: u8,
        configured: bool,
        advance_s: u64,
    },
    Expire {
        advance_s: u64,
        max_age_s: u64,
    },
    Remove {
        ip: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..12, 0u8..5, prop::bool::weighted(0.15), 0u64..3).prop_map(
            |(ip, mac, configured, advance_s)| Op::Learn { ip, mac, configured, advance_s }
        ),
        1 => (0u64..4, 1u64..8).prop_map(|(advance_s, max_age_s)| Op::Expire { advance_s, max_age_s }),
        1 => (0u8..12).prop_map(|ip| Op::Remove { ip }),
    ]
}

/// What the oracle knows of one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    mac: MacAddr,
    source: BindingSource,
    first_seen: Instant,
    last_seen: Instant,
}

fn ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1, index)
}

fn mac(index: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0x77, 1, index])
}

/// The outcome the oracle expects, and its new state.
fn oracle_learn(
    known: &mut BTreeMap<Ipv4Addr, Known>,
    ip: Ipv4Addr,
    mac: MacAddr,
    source: BindingSource,
    now: Instant,
) -> Learned {
    let fresh = Known {
        mac,
        source,
        first_seen: now,
        last_seen: now,
    };
    match known.get_mut(&ip) {
        None => {
            known.insert(ip, fresh);
            Learned::New
        }
        Some(old) if old.mac == mac => {
            if source == BindingSource::Configured {
                old.source = BindingSource::Configured;
            }
            old.last_seen = now;
            Learned::Refreshed
        }
        Some(old) if old.source == BindingSource::Configured && source == BindingSource::Lan => {
            Learned::Conflict {
                configured_mac: old.mac,
            }
        }
        Some(old) => {
            let old_mac = old.mac;
            *old = fresh;
            Learned::Changed { old_mac }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn hwdt_agrees_with_an_oracle(capacity in 1usize..6, ops in prop::collection::vec(op(), 0..80)) {
        let mut now = Instant::now();
        let mut hwdt = Hwdt::new(capacity);
        let mut known: BTreeMap<Ipv4Addr, Known> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Learn { ip: i, mac: m, configured, advance_s } => {
                    now += Duration::from_secs(advance_s);
                    let source = if configured { BindingSource::Configured } else { BindingSource::Lan };
                    let want = oracle_learn(&mut known, ip(i), mac(m), source, now);
                    prop_assert_eq!(hwdt.learn(ip(i), mac(m), source, now), want);
                }
                Op::Expire { advance_s, max_age_s } => {
                    now += Duration::from_secs(advance_s);
                    let max_age = Duration::from_secs(max_age_s);
                    let before = known.len();
                    known.retain(|_, k| {
                        k.source == BindingSource::Configured || now.duration_since(k.last_seen) < max_age
                    });
                    prop_assert_eq!(hwdt.expire(now, max_age), before - known.len());
                }
                Op::Remove { ip: i } => {
                    let want = known.remove(&ip(i));
                    prop_assert_eq!(hwdt.remove(ip(i)).map(|b| b.mac), want.map(|k| k.mac));
                }
            }

            // Evicted bindings: learned ones only, and none seen more recently than a learned
            // binding still present (least recently seen goes first).
            let evicted: Vec<(Ipv4Addr, Known)> = known
                .iter()
                .filter(|(ip, _)| hwdt.by_ip(**ip).is_none())
                .map(|(ip, k)| (*ip, *k))
                .collect();
            let newest_evicted = evicted.iter().map(|(_, k)| k.last_seen).max();
            for (ip, k) in evicted {
                prop_assert_eq!(k.source, BindingSource::Lan, "configured {} was evicted", ip);
                known.remove(&ip);
            }
            if let Some(newest_evicted) = newest_evicted {
                for k in known.values().filter(|k| k.source == BindingSource::Lan) {
                    prop_assert!(k.last_seen >= newest_evicted);
                }
            }

            // The table is exactly the oracle (less evictions), within its bound.
            let learned = known.values().filter(|k| k.source == BindingSource::Lan).count();
            prop_assert!(learned <= capacity);
            prop_assert_eq!(hwdt.learned_len(), learned);
            prop_assert_eq!(hwdt.len(), known.len());
            for binding in hwdt.bindings() {
                let got = Known {
                    mac: binding.mac,
                    source: binding.source,
                    first_seen: binding.first_seen,
                    last_seen: binding.last_seen,
                };
                prop_assert_eq!(Some(&got), known.get(&binding.ip));
            }

            // The MAC index: every binding of a MAC, the most recently seen (then highest IP) first.
            for m in (0..5).map(mac) {
                let mut want: Vec<(Instant, Ipv4Addr)> = known
                    .iter()
                    .filter(|(_, k)| k.mac == m)
                    .map(|(ip, k)| (k.last_seen, *ip))
                    .collect();
                want.sort();
                let all: Vec<(Instant, Ipv4Addr)> =
                    hwdt.all_by_mac(m).map(|b| (b.last_seen, b.ip)).collect();
                prop_assert_eq!(&all, &want);
                prop_assert_eq!(hwdt.by_mac(m).map(|b| b.ip), want.last().map(|(_, ip)| *ip));
            }
        }
    }
}
