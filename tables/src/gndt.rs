//! The global network description table: which site owns which prefix or host.
//!
//! A thin typed wrapper over `prefix_trie::PrefixMap`: the trie answers longest-prefix match,
//! this module adds the merge rule (see [`crate::Version`]), tombstones and a MAC index. Live /32
//! entries sit in a hash map beside the trie: an exact match always beats any shorter prefix,
//! and hashing is several times faster than walking a trie (see `benches/lpm.rs`).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use prefix_trie::PrefixMap;

use crate::types::{EntryKind, GndtEntry, MacAddr, SiteId, Version};

/// An entry as this router holds it: what was advertised, and when it last changed here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub entry: GndtEntry,
    /// When this router installed the current version.
    pub updated_at: Instant,
}

/// What [`Gndt::apply`] did with an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// No entry existed for the prefix.
    Inserted,
    /// The entry replaced an older version.
    Replaced { previous: GndtEntry },
    /// The same version was already present (a duplicate delivery).
    Unchanged,
    /// The table holds a newer version; the entry was ignored.
    Stale { current: Version },
}

impl Applied {
    /// Whether the table changed.
    pub fn changed(&self) -> bool {
        matches!(self, Applied::Inserted | Applied::Replaced { .. })
    }
}

/// The answer of a longest-prefix match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a Stored),
    Missing,
}

/// The global network description table.
#[derive(Clone, Debug, Default)]
pub struct Gndt {
    /// Live (not withdrawn) entries shorter than /32, for longest-prefix match.
    prefixes: PrefixMap<Ipv4Network, Stored>,
    /// Live /32 entries (hosts), looked up before the trie.
    hosts: HashMap<Ipv4Addr, Stored>,
    /// The keys of `hosts` in order, to list entries in prefix order.
    host_order: BTreeSet<Ipv4Addr>,
    /// Tombstones: withdrawn entries, kept so that an older advertisement cannot revive them.
    withdrawn: HashMap<Ipv4Network, Stored>,
    /// Live host entries by MAC, for resolving a RARP (which carries no IP). A MAC may have
    /// several addresses (a VM with two IPs), so every one is kept.
    by_mac: HashMap<MacAddr, BTreeSet<Ipv4Network>>,
    /// Entries (live and withdrawn) per origin site, to bound what one site can make us store,
    /// with the digest of that site's entries (see [`Gndt::digest_of`]).
    per_origin: HashMap<SiteId, OriginTally>,
    /// The wrapping sum of every stored entry's hash (live and withdrawn): [`Gndt::digest`],
    /// kept up to date by each change instead of recomputed over the table.
    digest: u64,
}

/// How many entries one origin has in the table, and their digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct OriginTally {
    count: usize,
    digest: u64,
}

impl Gndt {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one advertised entry: it replaces the current one only if its version is newer.
    ///
    /// The result does not depend on the order in which a set of entries is applied.
    pub fn apply(&mut self, entry: GndtEntry, now: Instant) -> Applied {
        self.apply_ranked(entry, now, false)
    }

    /// [`Gndt::apply`], except that with `wins_tie` the entry also replaces a current entry of
    /// the same sequence number from another origin (whatever the site ids). The caller ranks
    /// such ties by a rule of its own (the address's certified home wins them); the result
    /// stays order-independent as long as that rule is a total order.
    pub fn apply_ranked(&mut self, mut entry: GndtEntry, now: Instant, wins_tie: bool) -> Applied {
        entry.prefix = normalize(entry.prefix);
        let prefix = entry.prefix;
        let current = self.get(prefix);
        let previous = match current {
            Some(stored)
                if wins_tie
                    && stored.entry.version.seq == entry.version.seq
                    && stored.entry.site() != entry.site() =>
            {
                Some(stored.entry.clone())
            }
            Some(stored) if stored.entry.version > entry.version => {
                return Applied::Stale {
                    current: stored.entry.version.clone(),
                }
            }
            Some(stored) if stored.entry.version == entry.version => {
                if stored.entry == entry {
                    return Applied::Unchanged;
                }
                // Same version, different content: only a buggy or hostile origin sends this.
                // Pick deterministically so that every router agrees.
                if content_rank(&stored.entry) >= content_rank(&entry) {
                    return Applied::Unchanged;
                }
                Some(stored.entry.clone())
            }
            Some(stored) => Some(stored.entry.clone()),
            None => None,
        };
        self.remove_prefix(&prefix);
        if let Some(previous) = &previous {
            self.uncount(previous);
        }
        let tally = self.per_origin.entry(entry.site().clone()).or_default();
        tally.count += 1;
        let hash = entry_hash(&entry);
        tally.digest = tally.digest.wrapping_add(hash);
        self.digest = self.digest.wrapping_add(hash);
        let stored = Stored {
            entry,
            updated_at: now,
        };
        if stored.entry.withdrawn {
            self.withdrawn.insert(prefix, stored);
        } else {
            if let (EntryKind::Host, Some(mac)) = (stored.entry.kind, stored.entry.mac) {
                self.by_mac.entry(mac).or_default().insert(prefix);
            }
            self.insert_live(prefix, stored);
        }
        match previous {
            Some(previous) => Applied::Replaced { previous },
            None => Applied::Inserted,
        }
    }

    /// Longest-prefix match among live entries: a /32 host entry beats the prefix containing it.
    pub fn lookup(&self, addr: Ipv4Addr) -> Lookup<'_> {
        let found = match self.hosts.get(&addr) {
            Some(stored) => Some(stored),
            None => self
                .prefixes
                .get_lpm(&Ipv4Network::from(addr))
                .map(|(_, stored)| stored),
        };
        match found {
            Some(stored) => Lookup::Found(stored),
            None => Lookup::Missing,
        }
    }

    /// The site that owns `addr` by longest-prefix match, if any.
    pub fn owner(&self, addr: Ipv4Addr) -> Option<&SiteId> {
        match self.lookup(addr) {
            Lookup::Found(stored) => Some(stored.entry.site()),
            Lookup::Missing => None,
        }
    }

    /// The longest live entry strictly shorter than `prefix` that covers it.
    pub fn covering(&self, prefix: Ipv4Network) -> Option<&Stored> {
        let prefix = normalize(prefix);
        // A /32 is never strictly shorter than anything: only the trie can cover.
        self.prefixes
            .cover(&prefix)
            .filter(|(p, _)| p.prefix() < prefix.prefix())
            .max_by_key(|(p, _)| p.prefix())
            .map(|(_, stored)| stored)
    }

    /// The entry (live or withdrawn) stored for exactly `prefix`.
    pub fn get(&self, prefix: Ipv4Network) -> Option<&Stored> {
        let prefix = normalize(prefix);
        self.get_live(&prefix)
            .or_else(|| self.withdrawn.get(&prefix))
    }

    /// The live host entry advertised with `mac`. When several are (one host with several
    /// addresses), the one with the highest version, then the lowest prefix: the same answer on
    /// every router whatever order the entries arrived in.
    pub fn host_by_mac(&self, mac: MacAddr) -> Option<&Stored> {
        self.hosts_by_mac(mac).reduce(|best, stored| {
            if stored.entry.version > best.entry.version {
                stored
            } else {
                best
            }
        })
    }

    /// Every live host entry advertised with `mac`, in prefix order.
    pub fn hosts_by_mac(&self, mac: MacAddr) -> impl Iterator<Item = &Stored> {
        self.by_mac
            .get(&mac)
            .into_iter()
            .flatten()
            .filter_map(|prefix| self.get_live(prefix))
    }

    /// Live host (/32) entries inside `prefix`, in address order.
    pub fn hosts_within(&self, prefix: Ipv4Network) -> impl Iterator<Item = &Stored> {
        let prefix = normalize(prefix);
        self.host_order
            .range(prefix.network()..=prefix.broadcast())
            .filter_map(|ip| self.hosts.get(ip))
    }

    /// Every entry, live and withdrawn, live ones in prefix order first.
    pub fn entries(&self) -> impl Iterator<Item = &Stored> {
        self.live_entries().chain(self.withdrawn.values())
    }

    /// Live entries in prefix order (by network address, then length).
    pub fn live_entries(&self) -> impl Iterator<Item = &Stored> {
        let mut prefixes = self.prefixes.values().peekable();
        let mut hosts = self
            .host_order
            .iter()
            .filter_map(|ip| self.hosts.get(ip))
            .peekable();
        std::iter::from_fn(move || match (prefixes.peek(), hosts.peek()) {
            (Some(prefix), Some(host)) if host.entry.prefix < prefix.entry.prefix => hosts.next(),
            (Some(_), _) => prefixes.next(),
            (None, _) => hosts.next(),
        })
    }

    /// Removes the entry stored for exactly `prefix` (live or withdrawn), without leaving a
    /// tombstone: for entries whose origin no longer vouches for them (a revoked router, an
    /// entry missing from its origin's full table, a tombstone old enough to collect).
    pub fn remove(&mut self, prefix: Ipv4Network) -> Option<GndtEntry> {
        let prefix = normalize(prefix);
        let stored = self.get(prefix)?.entry.clone();
        self.remove_prefix(&prefix);
        self.uncount(&stored);
        Some(stored)
    }

    /// Removes every tombstone installed at or before `before` and returns them.
    pub fn collect_tombstones(&mut self, before: Instant) -> Vec<GndtEntry> {
        let old: Vec<Ipv4Network> = self
            .withdrawn
            .iter()
            .filter(|(_, stored)| stored.updated_at <= before)
            .map(|(prefix, _)| *prefix)
            .collect();
        old.into_iter()
            .filter_map(|prefix| self.remove(prefix))
            .collect()
    }

    /// Every entry (live and withdrawn) that `site` originated, in no particular order.
    pub fn entries_of<'a>(&'a self, site: &'a SiteId) -> impl Iterator<Item = &'a Stored> + 'a {
        self.entries()
            .filter(move |stored| stored.entry.site() == site)
    }

    /// Live host (/32) entries, in no particular order.
    pub fn live_hosts(&self) -> impl Iterator<Item = &Stored> {
        self.hosts.values()
    }

    /// The live host entry for `ip`, if any.
    pub fn live_host(&self, ip: Ipv4Addr) -> Option<&Stored> {
        self.hosts.get(&ip)
    }

    /// Live entries shorter than /32, in prefix order.
    pub fn live_prefixes(&self) -> impl Iterator<Item = &Stored> {
        self.prefixes.values()
    }

    /// Number of entries, live and withdrawn, that `site` originated.
    pub fn count_of(&self, site: &SiteId) -> usize {
        self.per_origin.get(site).map_or(0, |t| t.count)
    }

    /// The digest of the entries `site` originated: what `site` itself reports for its own
    /// entries when both tables agree about them. Kept up to date on every change.
    pub fn digest_of(&self, site: &SiteId) -> u64 {
        self.per_origin.get(site).map_or(0, |t| t.digest)
    }

    /// The tombstones (withdrawn entries), in no particular order.
    pub fn tombstone_entries(&self) -> impl Iterator<Item = &Stored> {
        self.withdrawn.values()
    }

    /// Number of tombstones (withdrawn entries).
    pub fn tombstones(&self) -> usize {
        self.withdrawn.len()
    }

    /// Number of entries, live and withdrawn.
    pub fn len(&self) -> usize {
        self.prefixes.len() + self.hosts.len() + self.withdrawn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An order-independent fingerprint of the table's content, to detect divergence between
    /// routers cheaply (periodic digests): the wrapping sum of the entries' hashes, maintained
    /// on every change, so reading it costs nothing whatever the table's size.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The digest computed over the whole table, as [`Gndt::digest`] keeps it (for tests).
    pub fn digest_recomputed(&self) -> u64 {
        self.entries()
            .map(|stored| entry_hash(&stored.entry))
            .fold(0u64, |acc, h| acc.wrapping_add(h))
    }

    /// Takes a stored entry out of the per-origin tallies and the table's digest.
    fn uncount(&mut self, entry: &GndtEntry) {
        let hash = entry_hash(entry);
        self.digest = self.digest.wrapping_sub(hash);
        if let Some(tally) = self.per_origin.get_mut(entry.site()) {
            tally.count = tally.count.saturating_sub(1);
            tally.digest = tally.digest.wrapping_sub(hash);
            if tally.count == 0 {
                self.per_origin.remove(entry.site());
            }
        }
    }

    fn remove_prefix(&mut self, prefix: &Ipv4Network) {
        if let Some(old) = self.remove_live(prefix) {
            if let Some(mac) = old.entry.mac {
                if let Some(prefixes) = self.by_mac.get_mut(&mac) {
                    prefixes.remove(prefix);
                    if prefixes.is_empty() {
                        self.by_mac.remove(&mac);
                    }
                }
            }
        }
        self.withdrawn.remove(prefix);
    }

    fn get_live(&self, prefix: &Ipv4Network) -> Option<&Stored> {
        if prefix.prefix() == 32 {
            self.hosts.get(&prefix.ip())
        } else {
            self.prefixes.get(prefix)
        }
    }

    fn insert_live(&mut self, prefix: Ipv4Network, stored: Stored) {
        if prefix.prefix() == 32 {
            self.host_order.insert(prefix.ip());
            self.hosts.insert(prefix.ip(), stored);
        } else {
            self.prefixes.insert(prefix, stored);
        }
    }

    fn remove_live(&mut self, prefix: &Ipv4Network) -> Option<Stored> {
        if prefix.prefix() == 32 {
            self.host_order.remove(&prefix.ip());
            self.hosts.remove(&prefix.ip())
        } else {
            self.prefixes.remove(prefix)
        }
    }
}

/// The canonical form of a prefix: host bits cleared.
pub(crate) fn normalize(prefix: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(prefix.network(), prefix.prefix()).unwrap_or(prefix)
}

/// A deterministic order among entries that share a version, so that conflicting copies of one
/// version converge everywhere.
fn content_rank(entry: &GndtEntry) -> (bool, Option<MacAddr>, u8, bool) {
    let kind = match entry.kind {
        EntryKind::SitePrefix => 0,
        EntryKind::Host => 1,
    };
    (entry.withdrawn, entry.mac, kind, entry.frozen)
}

/// FNV-1a over the entry's canonical fields: stable across processes and versions of Rust.
/// Digests are wrapping sums of these.
pub fn entry_hash(entry: &GndtEntry) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(&entry.prefix.ip().octets());
    feed(&[entry.prefix.prefix()]);
    feed(&entry.version.seq.to_be_bytes());
    feed(entry.version.origin.as_str().as_bytes());
    feed(&[
        0xff,
        u8::from(entry.withdrawn),
        content_rank(entry).2,
        u8::from(entry.frozen),
    ]);
    if let Some(mac) = entry.mac {
        feed(&mac.octets());
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_within_lists_the_live_hosts_of_a_prefix() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        for (ip, seq) in [("10.1.0.2", 1), ("10.1.0.9", 1), ("10.1.1.2", 1)] {
            gndt.apply(
                GndtEntry::host(ip.parse().unwrap(), site("a"), seq, None),
                now,
            );
        }
        let mut gone = GndtEntry::host("10.1.0.9".parse().unwrap(), site("a"), 2, None);
        gone.withdrawn = true;
        gndt.apply(gone, now);
        let within: Vec<String> = gndt
            .hosts_within(net("10.1.0.0/24"))
            .map(|s| s.entry.prefix.to_string())
            .collect();
        assert_eq!(within, ["10.1.0.2/32"]);
        assert_eq!(gndt.hosts_within(net("10.0.0.0/8")).count(), 2);
    }

    #[test]
    fn host_entry_beats_its_site_prefix() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        gndt.apply(
            GndtEntry::site_prefix(net("10.1.0.0/24"), site("a"), 1),
            now,
        );
        let ip: Ipv4Addr = "10.1.0.2".parse().unwrap();
        assert_eq!(gndt.owner(ip), Some(&site("a")));
        gndt.apply(GndtEntry::host(ip, site("b"), 1, None), now);
        assert_eq!(gndt.owner(ip), Some(&site("b")));
        assert_eq!(gndt.owner("10.1.0.3".parse().unwrap()), Some(&site("a")));
        assert_eq!(gndt.owner("10.2.0.3".parse().unwrap()), None);
    }

    #[test]
    fn newer_version_wins_and_older_is_stale() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        let ip: Ipv4Addr = "10.1.0.2".parse().unwrap();
        assert_eq!(
            gndt.apply(GndtEntry::host(ip, site("b"), 2, None), now),
            Applied::Inserted
        );
        assert!(matches!(
            gndt.apply(GndtEntry::host(ip, site("c"), 1, None), now),
            Applied::Stale { .. }
        ));
        assert_eq!(
            gndt.apply(GndtEntry::host(ip, site("b"), 2, None), now),
            Applied::Unchanged
        );
        // Equal sequence: the greater site id wins.
        assert!(gndt
            .apply(GndtEntry::host(ip, site("c"), 2, None), now)
            .changed());
        assert_eq!(gndt.owner(ip), Some(&site("c")));
    }

    #[test]
    fn withdrawn_entries_do_not_match_but_block_older_versions() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        gndt.apply(
            GndtEntry::site_prefix(net("10.0.0.0/16"), site("a"), 1),
            now,
        );
        let mut slice = GndtEntry::site_prefix(net("10.0.1.0/24"), site("b"), 1);
        gndt.apply(slice.clone(), now);
        slice.version.seq = 2;
        slice.withdrawn = true;
        gndt.apply(slice, now);
        assert_eq!(gndt.owner("10.0.1.9".parse().unwrap()), Some(&site("a")));
        let old = GndtEntry::site_prefix(net("10.0.1.0/24"), site("b"), 1);
        assert!(matches!(gndt.apply(old, now), Applied::Stale { .. }));
    }

    #[test]
    fn host_by_mac_follows_the_current_entry() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let ip: Ipv4Addr = "10.1.0.2".parse().unwrap();
        gndt.apply(GndtEntry::host(ip, site("a"), 1, Some(mac)), now);
        assert_eq!(gndt.host_by_mac(mac).map(|s| s.entry.prefix.ip()), Some(ip));
        gndt.apply(GndtEntry::host(ip, site("a"), 2, None), now);
        assert_eq!(gndt.host_by_mac(mac), None);
    }

    #[test]
    fn one_mac_with_two_addresses_resolves_the_same_whatever_the_order() {
        let now = Instant::now();
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let one = GndtEntry::host("10.1.0.2".parse().unwrap(), site("a"), 3, Some(mac));
        let two = GndtEntry::host("10.1.0.3".parse().unwrap(), site("a"), 1, Some(mac));
        let mut forward = Gndt::new();
        forward.apply(one.clone(), now);
        forward.apply(two.clone(), now);
        let mut backward = Gndt::new();
        backward.apply(two.clone(), now);
        backward.apply(one.clone(), now);
        for gndt in [&forward, &backward] {
            assert_eq!(gndt.host_by_mac(mac).map(|s| &s.entry), Some(&one));
            assert_eq!(gndt.hosts_by_mac(mac).count(), 2);
        }
        // One address leaves (withdrawn): the other still resolves.
        let mut gone = one.clone();
        gone.version.seq += 1;
        gone.withdrawn = true;
        forward.apply(gone, now);
        assert_eq!(forward.host_by_mac(mac).map(|s| &s.entry), Some(&two));
    }

    #[test]
    fn prefixes_are_normalized() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        gndt.apply(
            GndtEntry::site_prefix(net("10.1.0.77/24"), site("a"), 1),
            now,
        );
        assert!(gndt.get(net("10.1.0.0/24")).is_some());
        assert_eq!(
            gndt.covering(net("10.1.0.5/32")).map(|s| s.entry.prefix),
            Some(net("10.1.0.0/24"))
        );
    }

    #[test]
    fn the_kept_digest_is_the_digest_of_the_table() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        let ip: Ipv4Addr = "10.1.0.2".parse().unwrap();
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let mut steps = vec![
            GndtEntry::site_prefix(net("10.1.0.0/24"), site("a"), 1),
            GndtEntry::host(ip, site("a"), 1, Some(mac)),
            // Replaced, stale, duplicate, same-version conflict, withdrawn, revived.
            GndtEntry::host(ip, site("b"), 2, Some(mac)),
            GndtEntry::host(ip, site("c"), 1, None),
            GndtEntry::host(ip, site("b"), 2, Some(mac)),
            GndtEntry::host(ip, site("b"), 2, None),
        ];
        let mut gone = GndtEntry::host(ip, site("b"), 3, None);
        gone.withdrawn = true;
        steps.push(gone);
        steps.push(GndtEntry::host(ip, site("a"), 4, Some(mac)));
        assert_eq!(gndt.digest(), 0);
        for entry in steps {
            gndt.apply(entry, now);
            assert_eq!(gndt.digest(), gndt.digest_recomputed());
        }
        // The same content reached in another order has the same digest.
        let mut other = Gndt::new();
        other.apply(GndtEntry::host(ip, site("a"), 4, Some(mac)), now);
        other.apply(
            GndtEntry::site_prefix(net("10.1.0.0/24"), site("a"), 1),
            now,
        );
        assert_eq!(other.digest(), gndt.digest());
    }

    #[test]
    fn entries_are_counted_per_origin() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        let ip: Ipv4Addr = "10.1.0.2".parse().unwrap();
        gndt.apply(
            GndtEntry::site_prefix(net("10.1.0.0/24"), site("a"), 1),
            now,
        );
        gndt.apply(GndtEntry::host(ip, site("a"), 1, None), now);
        assert_eq!(gndt.count_of(&site("a")), 2);
        gndt.apply(GndtEntry::host(ip, site("b"), 2, None), now);
        assert_eq!(
            (gndt.count_of(&site("a")), gndt.count_of(&site("b"))),
            (1, 1)
        );
        gndt.apply(GndtEntry::host(ip, site("b"), 1, None), now);
        assert_eq!(gndt.count_of(&site("b")), 1);
    }

    #[test]
    fn per_origin_digests_follow_every_change_and_removal() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        let ip: Ipv4Addr = "10.1.0.2".parse().unwrap();
        let prefix = GndtEntry::site_prefix(net("10.1.0.0/24"), site("a"), 1);
        let host = GndtEntry::host(ip, site("a"), 1, None);
        gndt.apply(prefix.clone(), now);
        gndt.apply(host.clone(), now);
        let sum = |entries: &[&GndtEntry]| {
            entries
                .iter()
                .fold(0u64, |acc, e| acc.wrapping_add(entry_hash(e)))
        };
        assert_eq!(gndt.digest_of(&site("a")), sum(&[&prefix, &host]));
        let claim = GndtEntry::host(ip, site("b"), 2, None);
        gndt.apply(claim.clone(), now);
        assert_eq!(gndt.digest_of(&site("a")), sum(&[&prefix]));
        assert_eq!(gndt.digest_of(&site("b")), sum(&[&claim]));
        assert_eq!(gndt.remove(claim.prefix), Some(claim));
        assert_eq!(
            (gndt.digest_of(&site("b")), gndt.count_of(&site("b"))),
            (0, 0)
        );
        assert_eq!(gndt.digest(), sum(&[&prefix]));
        assert_eq!(gndt.digest(), gndt.digest_recomputed());
    }

    #[test]
    fn a_tie_goes_to_the_ranked_entry_only_when_asked() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        let ip: Ipv4Addr = "10.1.0.2".parse().unwrap();
        gndt.apply(GndtEntry::host(ip, site("z"), 4, None), now);
        let home = GndtEntry::host(ip, site("a"), 4, None);
        assert!(matches!(
            gndt.apply(home.clone(), now),
            Applied::Stale { .. }
        ));
        assert!(gndt.apply_ranked(home.clone(), now, true).changed());
        assert_eq!(gndt.get(home.prefix).map(|s| &s.entry), Some(&home));
        // A lower sequence number never wins, ranked or not.
        let old = GndtEntry::host(ip, site("z"), 3, None);
        assert!(!gndt.apply_ranked(old, now, true).changed());
    }

    #[test]
    fn old_tombstones_are_collected() {
        let now = Instant::now();
        let mut gndt = Gndt::new();
        let mut gone = GndtEntry::site_prefix(net("10.1.0.0/24"), site("a"), 2);
        gone.withdrawn = true;
        gndt.apply(gone, now);
        let later = now + std::time::Duration::from_secs(1);
        let mut fresh = GndtEntry::site_prefix(net("10.2.0.0/24"), site("a"), 2);
        fresh.withdrawn = true;
        gndt.apply(fresh, later);
        let collected: Vec<Ipv4Network> = gndt
            .collect_tombstones(now)
            .into_iter()
            .map(|e| e.prefix)
            .collect();
        assert_eq!(collected, vec![net("10.1.0.0/24")]);
        assert_eq!(gndt.len(), 1);
        assert_eq!(gndt.count_of(&site("a")), 1);
        assert_eq!(gndt.digest(), gndt.digest_recomputed());
        assert_eq!(gndt.digest(), gndt.digest_of(&site("a")));
    }
}
