//! The record of migrations this router took part in: what happened, when each step was
//! done, and which recent moves call for relaying packets still in flight.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use skyvine_tables::{MacAddr, SiteId};

use crate::fib::Relays;

/// How long after a move the old site relays packets still arriving for the host, and the new
/// site accepts them: enough for every sender to learn the new location (one WAN delay).
pub const RELAY_WINDOW: Duration = Duration::from_secs(10);
/// Recent migrations kept for the admin CLI.
const RECORDS_KEPT: usize = 256;

/// How a migration came to this router's attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// A RARP announcement (QEMU/KVM, VMware).
    Rarp,
    /// A gratuitous ARP (Xen, virtio guests).
    GratuitousArp,
    /// The VM's own ARP traffic from an address the tables place at another site.
    Traffic,
    /// Another router advertised the move.
    Peer,
    /// After a restart, a peer reminded this router of a VM it held (verified by a probe).
    Echo,
}

impl Detection {
    pub fn name(self) -> &'static str {
        match self {
            Detection::Rarp => "rarp",
            Detection::GratuitousArp => "garp",
            Detection::Traffic => "traffic",
            Detection::Peer => "peer",
            Detection::Echo => "echo",
        }
    }
}

/// This router's part in a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The VM arrived here.
    Destination,
    /// The VM left from here.
    Source,
    /// Neither: only the route changed.
    Third,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Destination => "destination",
            Role::Source => "source",
            Role::Third => "third",
        }
    }
}

/// How a migration ended here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    InProgress,
    Applied,
    Refused(RefusalReason),
}

/// Why this router refused a migration. The details (how long a freeze lasts, which probe
/// went unanswered) go to the log; the reason is what the admin CLI and the metrics show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// The address moved too often (move damping) and stays where it was confirmed last.
    Frozen,
    /// The address is pinned by configuration.
    Pinned,
    /// The VM did not answer the confirmation probe on this LAN in time.
    Unconfirmed,
    /// No advertised binding matched the MAC, and no owning router vouched for it.
    Unresolved,
    /// At the old site: the host still answers here, so the move was a duplicate or a hijack.
    StillHere,
    /// Too many migrations were pending; the announcement was dropped without a record.
    Busy,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 6] = [
        RefusalReason::Frozen,
        RefusalReason::Pinned,
        RefusalReason::Unconfirmed,
        RefusalReason::Unresolved,
        RefusalReason::StillHere,
        RefusalReason::Busy,
    ];

    /// A stable snake_case name for the admin CLI, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            RefusalReason::Frozen => "frozen",
            RefusalReason::Pinned => "pinned",
            RefusalReason::Unconfirmed => "unconfirmed",
            RefusalReason::Unresolved => "unresolved",
            RefusalReason::StillHere => "still_here",
            RefusalReason::Busy => "busy",
        }
    }

    /// One sentence for people (status warnings).
    pub fn describe(self) -> &'static str {
        match self {
            RefusalReason::Frozen => "the address is frozen by move damping",
            RefusalReason::Pinned => "the address is pinned by configuration",
            RefusalReason::Unconfirmed => "the VM did not answer the confirmation probe",
            RefusalReason::Unresolved => "no router vouched for the MAC",
            RefusalReason::StillHere => "the host still answers at its old site",
            RefusalReason::Busy => "too many migrations were pending",
        }
    }
}

/// One migration as seen by this router, with the time of each step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationRecord {
    pub id: u64,
    pub mac: Option<MacAddr>,
    pub ip: Option<Ipv4Addr>,
    pub from: Option<SiteId>,
    pub to: SiteId,
    pub role: Role,
    pub detection: Detection,
    pub detected: Instant,
    pub resolved: Option<Instant>,
    pub confirmed: Option<Instant>,
    pub advertised: Option<Instant>,
    /// Kernel routes and neighbours applied, and the LAN told (gratuitous ARP sent).
    pub applied: Option<Instant>,
    pub outcome: Outcome,
}

/// Marks an in-progress record applied once every step it needs is done: the kernel step, and
/// at the destination the VM's confirmation. Logs it.
fn finish_if_done(record: &mut MigrationRecord) {
    let Some(applied) = record.applied else {
        return;
    };
    if record.role == Role::Destination && record.confirmed.is_none() {
        return;
    }
    record.outcome = Outcome::Applied;
    let since =
        |at: Option<Instant>| at.map(|t| t.saturating_duration_since(record.detected).as_micros());
    tracing::info!(
        ip = ?record.ip,
        from = ?record.from.as_ref().map(SiteId::as_str),
        to = %record.to,
        role = record.role.name(),
        detection = record.detection.name(),
        took_us = applied.saturating_duration_since(record.detected).as_micros(),
        confirmed_us = since(record.confirmed),
        "migration applied"
    );
}

/// How a record starts: who moved, where, and how this router learnt of it.
#[derive(Clone, Debug)]
pub(super) struct Start {
    pub mac: Option<MacAddr>,
    pub ip: Option<Ipv4Addr>,
    pub from: Option<SiteId>,
    pub to: SiteId,
    pub role: Role,
    pub detection: Detection,
}

/// The most recent migrations, oldest first, bounded.
#[derive(Debug)]
pub(super) struct Records {
    list: VecDeque<MigrationRecord>,
    next_id: u64,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            list: VecDeque::new(),
            next_id: 1,
        }
    }
}

impl Records {
    /// Records a migration detected at `now`; returns its id.
    pub(super) fn start(&mut self, start: Start, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.list.len() >= RECORDS_KEPT {
            self.list.pop_front();
        }
        self.list.push_back(MigrationRecord {
            id,
            mac: start.mac,
            ip: start.ip,
            from: start.from,
            to: start.to,
            role: start.role,
            detection: start.detection,
            detected: now,
            resolved: None,
            confirmed: None,
            advertised: None,
            applied: None,
            outcome: Outcome::InProgress,
        });
        id
    }

    pub(super) fn get(&self, id: u64) -> Option<&MigrationRecord> {
        self.list.iter().rev().find(|r| r.id == id)
    }

    pub(super) fn update(&mut self, id: u64, change: impl FnOnce(&mut MigrationRecord)) {
        if let Some(record) = self.list.iter_mut().rev().find(|r| r.id == id) {
            change(record);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &MigrationRecord> {
        self.list.iter()
    }

    /// The kernel holds the current tables: every advertised migration is now applied, and
    /// done unless it still waits for its confirmation (an optimistic takeover here).
    pub(super) fn complete(&mut self, now: Instant) {
        for record in self.list.iter_mut() {
            if record.outcome == Outcome::InProgress
                && record.advertised.is_some()
                && record.applied.is_none()
            {
                record.applied = Some(now);
                finish_if_done(record);
            }
        }
    }

    /// The VM answered at the destination after an optimistic takeover.
    pub(super) fn confirm(&mut self, id: u64, now: Instant) {
        self.update(id, |record| {
            record.confirmed = Some(now);
            if record.outcome == Outcome::InProgress {
                finish_if_done(record);
            }
        });
    }

    /// Hosts that moved to or from here within [`RELAY_WINDOW`] before `now`, for relaying
    /// packets in flight; a later move of a host overrides an earlier one.
    ///
    /// A move whose window has ended relays nothing, then or later, but still overrides the
    /// host's earlier moves. The records are kept in the order they started, so the ended
    /// ones mostly come before any live one, while the maps are empty: skipping them then
    /// costs no lookup, and a snapshot pays for the recent moves only.
    pub(super) fn relays(&self, now: Instant) -> Relays {
        let mut relays = Relays::default();
        for record in &self.list {
            let (Some(ip), Some(advertised)) = (record.ip, record.advertised) else {
                continue;
            };
            if matches!(record.outcome, Outcome::Refused(_)) {
                continue;
            }
            let until = advertised + RELAY_WINDOW;
            if until <= now {
                if !relays.departed.is_empty() || !relays.arrived.is_empty() {
                    relays.departed.remove(&ip);
                    relays.arrived.remove(&ip);
                }
                continue;
            }
            match (record.role, &record.from) {
                (Role::Source, _) => {
                    relays.arrived.remove(&ip);
                    relays.departed.insert(ip, (record.to.clone(), until));
                }
                (Role::Destination, Some(from)) => {
                    relays.departed.remove(&ip);
                    relays.arrived.insert(ip, (from.clone(), until));
                }
                (Role::Destination, None) | (Role::Third, _) => {}
            }
        }
        relays
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    fn start(role: Role, from: &str, to: &str) -> Start {
        Start {
            mac: None,
            ip: Some(Ipv4Addr::new(10, 77, 1, 1)),
            from: Some(site(from)),
            to: site(to),
            role,
            detection: Detection::Peer,
        }
    }

    #[test]
    fn only_advertised_migrations_complete_when_the_kernel_catches_up() {
        let now = Instant::now();
        let mut records = Records::default();
        let advertised = records.start(start(Role::Source, "a", "b"), now);
        let pending = records.start(start(Role::Destination, "a", "b"), now);
        records.update(advertised, |r| r.advertised = Some(now));
        let later = now + Duration::from_millis(3);
        records.complete(later);
        let outcome = |id| records.iter().find(|r| r.id == id).unwrap().outcome;
        assert_eq!(outcome(advertised), Outcome::Applied);
        assert_eq!(outcome(pending), Outcome::InProgress);
        let applied = records.iter().find(|r| r.id == advertised).unwrap().applied;
        assert_eq!(applied, Some(later));
    }

    #[test]
    fn relays_follow_the_latest_move_and_skip_refusals() {
        let now = Instant::now();
        let mut records = Records::default();
        let ip = Ipv4Addr::new(10, 77, 1, 1);
        // At a: the host left for b, then came back from b.
        let left = records.start(start(Role::Source, "a", "b"), now);
        records.update(left, |r| r.advertised = Some(now));
        assert_eq!(records.relays(now).departed[&ip].0, site("b"));
        let back = records.start(start(Role::Destination, "b", "a"), now);
        records.update(back, |r| r.advertised = Some(now));
        let relays = records.relays(now);
        assert!(
            relays.departed.is_empty(),
            "a later arrival overrides the departure"
        );
        assert_eq!(relays.arrived[&ip], (site("b"), now + RELAY_WINDOW));
        // A refused move relays nothing.
        let refused = records.start(start(Role::Source, "a", "c"), now);
        records.update(refused, |r| {
            r.advertised = Some(now);
            r.outcome = Outcome::Refused(RefusalReason::StillHere);
        });
        assert!(records.relays(now).departed.is_empty());
    }

    #[test]
    fn a_move_whose_window_ended_relays_nothing_and_still_overrides_earlier_ones() {
        let now = Instant::now();
        let mut records = Records::default();
        let ip = Ipv4Addr::new(10, 77, 1, 1);
        // At a: the host arrives from b (advertised late), then leaves for c (advertised at
        // once): the departure's window ends first.
        let back = records.start(start(Role::Destination, "b", "a"), now);
        let left = records.start(start(Role::Source, "a", "c"), now);
        records.update(left, |r| r.advertised = Some(now));
        let late = now + Duration::from_secs(5);
        records.update(back, |r| r.advertised = Some(late));
        assert_eq!(records.relays(now).departed[&ip].0, site("c"));
        let after = now + RELAY_WINDOW;
        let relays = records.relays(after);
        assert!(relays.departed.is_empty(), "the departure's window ended");
        assert!(
            relays.arrived.is_empty(),
            "the later departure still overrides the arrival"
        );
        let ended = late + RELAY_WINDOW;
        let relays = records.relays(ended);
        assert!(relays.departed.is_empty() && relays.arrived.is_empty());
    }

    #[test]
    fn the_record_list_is_bounded() {
        let now = Instant::now();
        let mut records = Records::default();
        for _ in 0..RECORDS_KEPT + 10 {
            records.start(start(Role::Third, "a", "b"), now);
        }
        assert_eq!(records.iter().count(), RECORDS_KEPT);
        assert_eq!(
            records.iter().next().unwrap().id,
            11,
            "the oldest went first"
        );
    }

    #[test]
    fn refusal_reasons_have_distinct_names() {
        let names: std::collections::BTreeSet<&str> =
            RefusalReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), RefusalReason::ALL.len());
        assert!(RefusalReason::ALL.iter().all(|r| !r.describe().is_empty()));
    }
}
