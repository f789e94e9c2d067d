//! Decisions for live migration: which announcements are new events, and which moves to allow.
//!
//! Both types here are driven: the caller passes the time of every observation, and calls
//! `handle_timeout(now)` (at `poll_timeout()` or on any periodic tick) to let state expire.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::types::MacAddr;

/// The longest window or freeze accepted; longer settings are cut to this (ten years), so that
/// adding one to an `Instant` cannot overflow.
pub const LONGEST_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Whether an announcement starts a new event or repeats one already seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The first announcement of this MAC within the window: act on it.
    First,
    /// A repeat of an announcement seen less than a window ago: ignore it.
    Repeat,
}

/// Treats a burst of announcements of one MAC as one event.
///
/// QEMU announces a migrated VM with 5 RARPs at +0, 50, 200, 450 and 800 ms, or all 5 at once
/// when a paused destination is resumed; a guest may add a gratuitous ARP. Every announcement
/// of a MAC within `window` of the first one of its burst is a [`Observation::Repeat`].
/// Memory is bounded: at most `capacity` MACs are remembered, the oldest burst is dropped first.
#[derive(Debug)]
pub struct AnnouncementFilter {
    window: Duration,
    capacity: usize,
    /// First sighting of the current burst, per MAC.
    first_seen: HashMap<MacAddr, Instant>,
    /// The same, ordered by time, for expiry and eviction.
    by_age: BTreeSet<(Instant, MacAddr)>,
}

impl Default for AnnouncementFilter {
    fn default() -> Self {
        Self::new(Self::DEFAULT_WINDOW, Self::DEFAULT_CAPACITY)
    }
}

impl AnnouncementFilter {
    /// Long enough for QEMU's 800 ms schedule with room for a slow host.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A filter that merges announcements within `window` and remembers at most `capacity`
    /// MACs (at least one).
    pub fn new(window: Duration, capacity: usize) -> Self {
        AnnouncementFilter {
            window: window.min(LONGEST_PERIOD),
            capacity: capacity.max(1),
            first_seen: HashMap::new(),
            by_age: BTreeSet::new(),
        }
    }

    /// Records an announcement of `mac` at `now` and says whether it starts a new event.
    pub fn observe(&mut self, mac: MacAddr, now: Instant) -> Observation {
        if let Some(&first) = self.first_seen.get(&mac) {
            if now.saturating_duration_since(first) < self.window {
                return Observation::Repeat;
            }
            self.by_age.remove(&(first, mac));
        } else {
            while self.first_seen.len() >= self.capacity {
                let Some((_, oldest)) = self.by_age.pop_first() else {
                    break;
                };
                self.first_seen.remove(&oldest);
            }
        }
        self.first_seen.insert(mac, now);
        self.by_age.insert((now, mac));
        Observation::First
    }

    /// Forgets `mac`, so that its next announcement is a new event (e.g. the event it started
    /// was refused and a later announcement deserves another look).
    pub fn forget(&mut self, mac: MacAddr) {
        if let Some(first) = self.first_seen.remove(&mac) {
            self.by_age.remove(&(first, mac));
        }
    }

    /// Drops bursts whose window has ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(first, mac)) = self.by_age.first() {
            if now.saturating_duration_since(first) < self.window {
                break;
            }
            self.by_age.pop_first();
            self.first_seen.remove(&mac);
        }
    }

    /// When the next burst's window ends, if any is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (first, _) = self.by_age.first()?;
        first.checked_add(self.window)
    }

    /// Number of MACs remembered.
    pub fn len(&self) -> usize {
        self.first_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first_seen.is_empty()
    }
}

/// Settings of [`MoveDamping`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DampingConfig {
    /// Moves of one address allowed within `window`; the next one freezes it.
    pub max_moves: u32,
    /// The sliding window over which moves are counted.
    pub window: Duration,
    /// How long a frozen address stays where it is.
    pub freeze: Duration,
    /// Most addresses tracked at once (at least one).
    pub capacity: usize,
}

impl Default for DampingConfig {
    /// EVPN's duplicate address detection defaults (RFC 7432 section 15.1): 5 moves in 180 s.
    /// RFC 7432 leaves the end of a freeze to the operator; here it ends by itself after
    /// `freeze`, by default as long as the window (180 s), so that a VM that really keeps
    /// moving is held still for a while and then tracked afresh.
    fn default() -> Self {
        DampingConfig {
            max_moves: 5,
            window: Duration::from_secs(180),
            freeze: Duration::from_secs(180),
            capacity: 4096,
        }
    }
}

/// Whether an address may move now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveVerdict {
    /// The move counts and may be applied.
    Allowed,
    /// Too many moves: the address stays where it is until `until`.
    Frozen { until: Instant },
    /// The address is pinned by configuration and never moves.
    Pinned,
}

impl MoveVerdict {
    pub fn is_allowed(self) -> bool {
        self == MoveVerdict::Allowed
    }
}

/// Duplicate address detection for moves, EVPN style: more than `max_moves` moves of one
/// address within `window` freeze it for `freeze`; pinned addresses never move.
///
/// Only moves that were about to be applied (confirmed at the destination) should be recorded.
/// Memory is bounded: at most `max_moves` times per address, and at most `capacity` addresses;
/// when full, the address whose last move is oldest is forgotten, frozen ones last.
#[derive(Debug)]
pub struct MoveDamping {
    config: DampingConfig,
    tracks: HashMap<Ipv4Addr, Track>,
    /// Every track by when it next has something to forget ([`Track::due`]): timers cost
    /// O(log n), not a scan of every tracked address.
    deadlines: BTreeSet<(Instant, Ipv4Addr)>,
    /// Every track by the order in which [`MoveDamping::make_room`] forgets them.
    ranks: BTreeSet<(Rank, Ipv4Addr)>,
    pinned: BTreeSet<Ipv4Addr>,
}

#[derive(Debug, Default)]
struct Track {
    /// Allowed moves within the window, oldest first.
    moves: VecDeque<Instant>,
    /// When the address was frozen, if it is.
    frozen_at: Option<Instant>,
}

/// Frozen tracks last, then by their last move (or freeze): the first is forgotten first.
type Rank = (bool, Option<Instant>);

impl Track {
    /// When this track next has something to forget: the end of its freeze or of its oldest
    /// move's window. None for an empty track (one that is not kept).
    fn due(&self, config: &DampingConfig) -> Option<Instant> {
        match self.frozen_at {
            Some(frozen_at) => Some(end_of(frozen_at, config.freeze)),
            None => Some(end_of(*self.moves.front()?, config.window)),
        }
    }

    fn rank(&self) -> Rank {
        let last = self.moves.back().copied().or(self.frozen_at);
        (self.frozen_at.is_some(), last)
    }
}

impl Default for MoveDamping {
    fn default() -> Self {
        Self::new(DampingConfig::default())
    }
}

impl MoveDamping {
    /// Durations beyond [`LONGEST_PERIOD`] are cut to it.
    pub fn new(mut config: DampingConfig) -> Self {
        config.window = config.window.min(LONGEST_PERIOD);
        config.freeze = config.freeze.min(LONGEST_PERIOD);
        config.capacity = config.capacity.max(1);
        MoveDamping {
            config,
            tracks: HashMap::new(),
            deadlines: BTreeSet::new(),
            ranks: BTreeSet::new(),
            pinned: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &DampingConfig {
        &self.config
    }

    /// Pins `ip`: it never moves, whatever is announced.
    pub fn pin(&mut self, ip: Ipv4Addr) {
        self.pinned.insert(ip);
    }

    /// Unpins `ip`. Returns whether it was pinned.
    pub fn unpin(&mut self, ip: Ipv4Addr) -> bool {
        self.pinned.remove(&ip)
    }

    pub fn is_pinned(&self, ip: Ipv4Addr) -> bool {
        self.pinned.contains(&ip)
    }

    /// Pinned addresses in order.
    pub fn pinned(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.pinned.iter().copied()
    }

    /// What [`MoveDamping::record_move`] would answer now, without recording anything: lets the
    /// caller skip the work of a move that would be refused anyway.
    pub fn check(&self, ip: Ipv4Addr, now: Instant) -> MoveVerdict {
        if self.pinned.contains(&ip) {
            return MoveVerdict::Pinned;
        }
        let Some(track) = self.tracks.get(&ip) else {
            return verdict_for_count(0, &self.config, now);
        };
        if let Some(until) = self.frozen_until(track, now) {
            return MoveVerdict::Frozen { until };
        }
        if track.frozen_at.is_some() {
            // The freeze is over: the next move starts afresh.
            return verdict_for_count(0, &self.config, now);
        }
        let recent = track
            .moves
            .iter()
            .filter(|&&at| self.in_window(at, now))
            .count();
        verdict_for_count(recent, &self.config, now)
    }

    /// Records a move of `ip` at `now` and says whether it may be applied. A refused move is not
    /// counted; the move that exceeds `max_moves` freezes the address and is refused.
    pub fn record_move(&mut self, ip: Ipv4Addr, now: Instant) -> MoveVerdict {
        if self.pinned.contains(&ip) {
            return MoveVerdict::Pinned;
        }
        let mut track = self.take_or_make_room(ip);
        if let Some(frozen_at) = track.frozen_at {
            let freeze = self.config.freeze;
            if now.saturating_duration_since(frozen_at) < freeze {
                self.put(ip, track);
                return MoveVerdict::Frozen {
                    until: end_of(frozen_at, freeze),
                };
            }
            track.frozen_at = None;
            track.moves.clear();
        }
        let config = &self.config;
        while let Some(&oldest) = track.moves.front() {
            if now.saturating_duration_since(oldest) < config.window {
                break;
            }
            track.moves.pop_front();
        }
        let verdict = verdict_for_count(track.moves.len(), config, now);
        match verdict {
            MoveVerdict::Allowed => track.moves.push_back(now),
            MoveVerdict::Frozen { .. } => {
                track.frozen_at = Some(now);
                track.moves.clear();
            }
            MoveVerdict::Pinned => {}
        }
        self.put(ip, track);
        verdict
    }

    /// Whether `ip` is frozen by damping now (pinned addresses are not "frozen"; see
    /// [`MoveDamping::is_pinned`]).
    pub fn is_frozen(&self, ip: Ipv4Addr, now: Instant) -> bool {
        self.tracks
            .get(&ip)
            .and_then(|track| self.frozen_until(track, now))
            .is_some()
    }

    /// Addresses frozen now, with the end of their freeze, in address order.
    pub fn frozen(&self, now: Instant) -> impl Iterator<Item = (Ipv4Addr, Instant)> + '_ {
        let mut frozen: Vec<(Ipv4Addr, Instant)> = self
            .tracks
            .iter()
            .filter_map(|(ip, track)| Some((*ip, self.frozen_until(track, now)?)))
            .collect();
        frozen.sort_unstable();
        frozen.into_iter()
    }

    /// Ends the freeze of `ip` (an operator's decision). Returns whether it was frozen.
    /// Freezes `ip` from `now` on, whatever its count (a conflict was seen: two sites claim it).
    pub fn freeze(&mut self, ip: Ipv4Addr, now: Instant) {
        let mut track = self.take_or_make_room(ip);
        track.moves.clear();
        track.frozen_at = Some(now);
        self.put(ip, track);
    }

    pub fn unfreeze(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        let frozen = self.is_frozen(ip, now);
        if frozen {
            self.take(ip);
        }
        frozen
    }

    /// Forgets moves older than the window and freezes that have ended. Touches only the
    /// tracks that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(due, ip)) = self.deadlines.first() {
            if due > now {
                break;
            }
            let Some(mut track) = self.take(ip) else {
                // Unreachable: every deadline has its track; drop the stray one.
                self.deadlines.remove(&(due, ip));
                continue;
            };
            let config = &self.config;
            if track
                .frozen_at
                .is_some_and(|frozen_at| now.saturating_duration_since(frozen_at) >= config.freeze)
            {
                track.frozen_at = None;
            }
            if track.frozen_at.is_none() {
                track
                    .moves
                    .retain(|&at| now.saturating_duration_since(at) < config.window);
            }
            self.put(ip, track);
        }
    }

    /// The next time [`MoveDamping::handle_timeout`] has something to forget.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(due, _)| due)
    }

    /// Number of addresses tracked (recent movers and frozen ones).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    fn in_window(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) < self.config.window
    }

    fn frozen_until(&self, track: &Track, now: Instant) -> Option<Instant> {
        let frozen_at = track.frozen_at?;
        (now.saturating_duration_since(frozen_at) < self.config.freeze)
            .then(|| end_of(frozen_at, self.config.freeze))
    }

    /// Forgets addresses to make room for another: the one whose last move is oldest first,
    /// preferring any not frozen (forgetting a frozen address would end its freeze early).
    fn make_room(&mut self) {
        while self.tracks.len() >= self.config.capacity {
            let Some(&(_, victim)) = self.ranks.first() else {
                break;
            };
            self.take(victim);
        }
    }

    /// Takes `ip`'s track out (to change it and [`MoveDamping::put`] it back), or makes room
    /// for a new one.
    fn take_or_make_room(&mut self, ip: Ipv4Addr) -> Track {
        self.take(ip).unwrap_or_else(|| {
            self.make_room();
            Track::default()
        })
    }

    /// Removes `ip`'s track and its index entries.
    fn take(&mut self, ip: Ipv4Addr) -> Option<Track> {
        let track = self.tracks.remove(&ip)?;
        if let Some(due) = track.due(&self.config) {
            self.deadlines.remove(&(due, ip));
        }
        self.ranks.remove(&(track.rank(), ip));
        Some(track)
    }

    /// Stores `ip`'s track with its index entries; an empty one is forgotten.
    fn put(&mut self, ip: Ipv4Addr, track: Track) {
        let Some(due) = track.due(&self.config) else {
            return;
        };
        self.deadlines.insert((due, ip));
        self.ranks.insert((track.rank(), ip));
        self.tracks.insert(ip, track);
    }

    /// Test support: whether both indexes hold exactly the tracks' keys.
    #[cfg(test)]
    fn indexes_agree(&self) -> bool {
        let deadlines: BTreeSet<(Instant, Ipv4Addr)> = self
            .tracks
            .iter()
            .filter_map(|(ip, track)| Some((track.due(&self.config)?, *ip)))
            .collect();
        let ranks: BTreeSet<(Rank, Ipv4Addr)> = self
            .tracks
            .iter()
            .map(|(ip, track)| (track.rank(), *ip))
            .collect();
        deadlines == self.deadlines && ranks == self.ranks && self.tracks.len() == ranks.len()
    }
}

/// The verdict on one more move when `recent` moves are already in the window.
fn verdict_for_count(recent: usize, config: &DampingConfig, now: Instant) -> MoveVerdict {
    let allowed = usize::try_from(config.max_moves).unwrap_or(usize::MAX);
    if recent < allowed {
        MoveVerdict::Allowed
    } else {
        MoveVerdict::Frozen {
            until: end_of(now, config.freeze),
        }
    }
}

/// `start + period`; periods are at most [`LONGEST_PERIOD`], so this only falls back to `start`
/// on a platform whose `Instant` cannot reach ten years ahead.
fn end_of(start: Instant, period: Duration) -> Instant {
    start.checked_add(period).unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0x77, 1, last])
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 1, last)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn qemu_schedule_is_one_event() {
        let t0 = Instant::now();
        let mut filter = AnnouncementFilter::default();
        assert_eq!(filter.observe(mac(1), t0), Observation::First);
        for offset in [50, 200, 450, 800] {
            assert_eq!(filter.observe(mac(1), t0 + ms(offset)), Observation::Repeat);
        }
        // Another VM announcing meanwhile is its own event.
        assert_eq!(filter.observe(mac(2), t0 + ms(300)), Observation::First);
    }

    #[test]
    fn five_at_once_after_resume_is_one_event() {
        let t0 = Instant::now();
        let mut filter = AnnouncementFilter::default();
        let seen: Vec<_> = (0..5).map(|_| filter.observe(mac(1), t0)).collect();
        assert_eq!(seen[0], Observation::First);
        assert!(seen[1..].iter().all(|o| *o == Observation::Repeat));
    }

    #[test]
    fn the_window_counts_from_the_first_sighting() {
        let t0 = Instant::now();
        let mut filter = AnnouncementFilter::new(ms(2000), 16);
        assert_eq!(filter.observe(mac(1), t0), Observation::First);
        assert_eq!(filter.observe(mac(1), t0 + ms(1999)), Observation::Repeat);
        // Repeats do not extend the window: a migration back 2 s later is a new event.
        assert_eq!(filter.observe(mac(1), t0 + ms(2000)), Observation::First);
        assert_eq!(filter.observe(mac(1), t0 + ms(2100)), Observation::Repeat);
        assert_eq!(filter.poll_timeout(), Some(t0 + ms(4000)));
    }

    #[test]
    fn the_filter_expires_and_forgets() {
        let t0 = Instant::now();
        let mut filter = AnnouncementFilter::new(ms(2000), 16);
        filter.observe(mac(1), t0);
        filter.observe(mac(2), t0 + ms(1000));
        filter.handle_timeout(t0 + ms(2000));
        assert_eq!(filter.len(), 1);
        assert_eq!(filter.poll_timeout(), Some(t0 + ms(3000)));
        filter.forget(mac(2));
        assert!(filter.is_empty());
        assert_eq!(filter.poll_timeout(), None);
        assert_eq!(filter.observe(mac(2), t0 + ms(1500)), Observation::First);
    }

    #[test]
    fn the_filter_is_bounded_and_drops_the_oldest() {
        let t0 = Instant::now();
        let mut filter = AnnouncementFilter::new(ms(2000), 3);
        for n in 0..10u8 {
            filter.observe(mac(n), t0 + ms(u64::from(n)));
            assert!(filter.len() <= 3);
        }
        // The three newest are remembered, the oldest were dropped.
        assert_eq!(filter.observe(mac(9), t0 + ms(20)), Observation::Repeat);
        assert_eq!(filter.observe(mac(7), t0 + ms(20)), Observation::Repeat);
        assert_eq!(filter.observe(mac(0), t0 + ms(20)), Observation::First);
    }

    #[test]
    fn the_sixth_move_within_the_window_freezes() {
        let t0 = Instant::now();
        let secs = |n| t0 + Duration::from_secs(n);
        let mut damping = MoveDamping::default();
        for n in 0..5 {
            assert_eq!(
                damping.record_move(ip(1), secs(n * 10)),
                MoveVerdict::Allowed
            );
        }
        assert_eq!(
            damping.check(ip(1), secs(60)),
            MoveVerdict::Frozen { until: secs(240) }
        );
        assert_eq!(
            damping.record_move(ip(1), secs(60)),
            MoveVerdict::Frozen { until: secs(240) }
        );
        assert!(damping.is_frozen(ip(1), secs(60)));
        // Refused moves do not extend the freeze.
        assert_eq!(
            damping.record_move(ip(1), secs(100)),
            MoveVerdict::Frozen { until: secs(240) }
        );
        assert_eq!(
            damping.frozen(secs(100)).collect::<Vec<_>>(),
            vec![(ip(1), secs(240))]
        );
        assert!(!damping.is_frozen(ip(2), secs(100)));
        assert_eq!(damping.record_move(ip(2), secs(100)), MoveVerdict::Allowed);
        // The freeze ends by itself, and counting starts afresh.
        assert!(!damping.is_frozen(ip(1), secs(240)));
        assert_eq!(damping.check(ip(1), secs(240)), MoveVerdict::Allowed);
        assert_eq!(damping.record_move(ip(1), secs(240)), MoveVerdict::Allowed);
        assert_eq!(damping.frozen(secs(240)).count(), 0);
    }

    #[test]
    fn moves_spread_wider_than_the_window_never_freeze() {
        let t0 = Instant::now();
        let mut damping = MoveDamping::default();
        for n in 0..50 {
            let now = t0 + Duration::from_secs(n * 37);
            assert_eq!(
                damping.record_move(ip(1), now),
                MoveVerdict::Allowed,
                "move {n}"
            );
        }
    }

    #[test]
    fn configured_limits_apply() {
        let t0 = Instant::now();
        let mut damping = MoveDamping::new(DampingConfig {
            max_moves: 2,
            window: Duration::from_secs(10),
            freeze: Duration::from_secs(30),
            capacity: 16,
        });
        assert!(damping.record_move(ip(1), t0).is_allowed());
        assert!(damping.record_move(ip(1), t0 + ms(100)).is_allowed());
        assert_eq!(
            damping.record_move(ip(1), t0 + ms(200)),
            MoveVerdict::Frozen {
                until: t0 + ms(30_200)
            }
        );
        assert!(damping.unfreeze(ip(1), t0 + ms(300)));
        assert!(damping.record_move(ip(1), t0 + ms(400)).is_allowed());
    }

    #[test]
    fn pinned_addresses_never_move() {
        let t0 = Instant::now();
        let mut damping = MoveDamping::default();
        damping.pin(ip(1));
        assert_eq!(damping.record_move(ip(1), t0), MoveVerdict::Pinned);
        assert_eq!(damping.check(ip(1), t0), MoveVerdict::Pinned);
        assert!(!damping.is_frozen(ip(1), t0));
        assert!(damping.is_empty());
        assert_eq!(damping.pinned().collect::<Vec<_>>(), vec![ip(1)]);
        assert!(damping.unpin(ip(1)));
        assert_eq!(damping.record_move(ip(1), t0), MoveVerdict::Allowed);
    }

    #[test]
    fn damping_expires_old_moves_and_ended_freezes() {
        let t0 = Instant::now();
        let secs = |n| t0 + Duration::from_secs(n);
        let mut damping = MoveDamping::new(DampingConfig {
            max_moves: 1,
            ..DampingConfig::default()
        });
        damping.record_move(ip(1), secs(0));
        damping.record_move(ip(2), secs(10));
        assert!(matches!(
            damping.record_move(ip(2), secs(20)),
            MoveVerdict::Frozen { .. }
        ));
        assert_eq!(damping.poll_timeout(), Some(secs(180)));
        damping.handle_timeout(secs(180));
        assert_eq!(damping.len(), 1);
        assert_eq!(damping.poll_timeout(), Some(secs(200)));
        damping.handle_timeout(secs(200));
        assert!(damping.is_empty());
        assert_eq!(damping.poll_timeout(), None);
    }

    #[test]
    fn damping_memory_is_bounded_and_keeps_frozen_addresses() {
        let t0 = Instant::now();
        let mut damping = MoveDamping::new(DampingConfig {
            max_moves: 1,
            capacity: 4,
            ..DampingConfig::default()
        });
        damping.record_move(ip(0), t0);
        assert!(matches!(
            damping.record_move(ip(0), t0),
            MoveVerdict::Frozen { .. }
        ));
        for n in 1..100u8 {
            damping.record_move(ip(n), t0 + ms(u64::from(n)));
            assert!(damping.len() <= 4);
        }
        assert!(damping.is_frozen(ip(0), t0 + ms(200)));
        // The most recent movers are still counted.
        assert!(matches!(
            damping.check(ip(99), t0 + ms(200)),
            MoveVerdict::Frozen { .. }
        ));
        assert_eq!(damping.check(ip(1), t0 + ms(200)), MoveVerdict::Allowed);
    }

    #[test]
    fn the_damping_indexes_follow_the_tracks() {
        // Moves, freezes, unfreezes and timeouts in a pseudo-random order over a few
        // addresses, with a small capacity: after each step both indexes hold exactly the
        // tracks, and the next timeout is the earliest one a scan of every track finds.
        let t0 = Instant::now();
        let mut damping = MoveDamping::new(DampingConfig {
            max_moves: 2,
            window: ms(50),
            freeze: ms(80),
            capacity: 6,
        });
        let mut state = 0x9e37_79b9_u32;
        let mut now = t0;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let addr = ip(u8::try_from(state % 10).unwrap_or(0));
            now += ms(u64::from(state >> 28));
            match (state >> 8) % 4 {
                0 | 1 => {
                    damping.record_move(addr, now);
                }
                2 if state & 1 == 0 => damping.freeze(addr, now),
                2 => {
                    damping.unfreeze(addr, now);
                }
                _ => damping.handle_timeout(now),
            }
            assert!(damping.indexes_agree());
            assert!(damping.len() <= 6);
            let scanned = damping
                .tracks
                .values()
                .filter_map(|track| track.due(&damping.config))
                .min();
            assert_eq!(damping.poll_timeout(), scanned);
        }
    }

    #[test]
    fn huge_settings_do_not_overflow() {
        let t0 = Instant::now();
        let mut damping = MoveDamping::new(DampingConfig {
            max_moves: 0,
            window: Duration::MAX,
            freeze: Duration::MAX,
            capacity: 0,
        });
        assert!(matches!(
            damping.record_move(ip(1), t0),
            MoveVerdict::Frozen { .. }
        ));
        assert!(damping.poll_timeout().is_some());
        let mut filter = AnnouncementFilter::new(Duration::MAX, 0);
        assert_eq!(filter.observe(mac(1), t0), Observation::First);
        assert!(filter.poll_timeout().is_some());
    }
}
