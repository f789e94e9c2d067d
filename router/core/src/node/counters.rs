//! What the core counts, written once. The table below names each counter, its key in
//! `skyvine status --json` (`lan_counters`), the Prometheus family it is exported in (with the
//! `reason` label for refused moves) and the family's help text; the admin view, the status
//! line and the metrics all walk [`Counter::ALL`]. Adding a counter is one line here.

use super::records::RefusalReason;

/// Help text of the refused-moves family, shared by its rows.
const REFUSED_MOVES: &str = "Migrations refused at this router, by reason.";

macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident => $key:literal, $family:literal $([reason = $reason:ident])?, $help:expr; )*) => {
        /// One thing the core counts.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Counter {
            $( $(#[$doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in the order the admin CLI and the metrics list them.
            pub const ALL: [Counter; [$(Counter::$variant),*].len()] = [$(Counter::$variant),*];

            /// A stable snake_case name: the key in `skyvine status --json`.
            pub fn name(self) -> &'static str {
                match self { $( Counter::$variant => $key, )* }
            }

            /// The Prometheus metric family it is exported in.
            pub fn family(self) -> &'static str {
                match self { $( Counter::$variant => $family, )* }
            }

            /// For a refused move: the reason, the value of the family's `reason` label.
            pub fn reason(self) -> Option<RefusalReason> {
                match self { $( Counter::$variant => counters!(@reason $($reason)?), )* }
            }

            /// The family's help text.
            pub fn help(self) -> &'static str {
                match self { $( Counter::$variant => $help, )* }
            }
        }
    };
    (@reason) => { None };
    (@reason $reason:ident) => { Some(RefusalReason::$reason) };
}

counters! {
    /// ARP and RARP frames seen on the LAN.
    Frames => "frames", "skyvine_lan_frames_total",
        "ARP and RARP frames seen on the LAN.";
    /// Frames whose Ethernet source differs from the ARP sender MAC (ignored).
    ForgedFrames => "forged_frames", "skyvine_lan_forged_frames_total",
        "LAN frames whose Ethernet source differs from the ARP sender (ignored).";
    /// Announcements of a migration already pending or done, taken as one event.
    Repeats => "repeats", "skyvine_lan_announcement_repeats_total",
        "Repeated migration announcements treated as one event.";
    /// ARP replies sent on behalf of hosts at other sites.
    ProxyReplies => "proxy_replies", "skyvine_lan_proxy_replies_total",
        "ARP replies sent on behalf of hosts at other sites.";
    /// Frames dropped by the per-source or LAN-wide rate limit (a flood?).
    RateLimited => "rate_limited", "skyvine_lan_rate_limited_total",
        "LAN frames dropped by the per-source or LAN-wide rate limit.";
    /// GNDT entries from peers refused because a size limit was reached.
    RefusedEntries => "refused_entries", "skyvine_gndt_refused_entries_total",
        "GNDT entries from peers refused because a size limit was reached.";
    /// Entries whose origin is not the peer that sent them (a router speaks only for itself).
    RefusedForgedOrigin => "refused_forged_origin", "skyvine_gndt_refused_forged_origin_total",
        "GNDT entries refused because their origin is not the sending peer.";
    /// Entries whose kind disagrees with their length (a host that is not a /32, a prefix
    /// with a MAC or a freeze mark).
    RefusedBadKind => "refused_bad_kind", "skyvine_gndt_refused_bad_kind_total",
        "GNDT entries refused because their kind and prefix length disagree.";
    /// Prefixes outside the sender's certified prefixes, and hosts outside every site's.
    RefusedForeignPrefix => "refused_foreign_prefix", "skyvine_gndt_refused_foreign_prefix_total",
        "GNDT entries refused because they lie outside the sender's certified prefixes.";
    /// Prefixes overlapping this router's own prefixes.
    RefusedOwnPrefix => "refused_own_prefix", "skyvine_gndt_refused_own_prefix_total",
        "GNDT prefix entries refused because they overlap this router's own prefixes.";
    /// Host claims outside the sender's prefixes without a sequence number above the current
    /// owner's.
    RefusedNotNewer => "refused_not_newer", "skyvine_gndt_refused_not_newer_total",
        "Host claims refused because their sequence number is not above the current owner's.";
    /// Entries whose sequence number jumps absurdly far ahead.
    RefusedSeqJump => "refused_seq_jump", "skyvine_gndt_refused_seq_jump_total",
        "GNDT entries refused because their sequence number jumps too far ahead.";
    /// Host claims of a pinned or frozen address (whoever advertises them).
    RefusedPinnedClaim => "refused_pinned_claim", "skyvine_gndt_refused_pinned_claims_total",
        "Host claims refused because the address is pinned or frozen here.";
    /// Freeze marks from a site that is not the address's last confirmed owner.
    RefusedForgedFrozen => "refused_forged_frozen", "skyvine_gndt_refused_forged_frozen_total",
        "Host entries refused because their freeze mark does not come from the last confirmed owner.";
    /// Peers whose certificate was revoked while connected (cut off, entries withdrawn).
    RevokedPeers => "revoked_peers", "skyvine_peers_revoked_total",
        "Connected peers cut off because their certificate was revoked.";
    /// Planned-migration windows opened (hints announced by an address's owner).
    Hints => "hints", "skyvine_migration_hints_total",
        "Planned-migration hints accepted (windows opened).";
    /// Hints and hint requests refused (not from the owner, wrong MAC, unknown site, frozen...).
    HintsRefused => "hints_refused", "skyvine_migration_hints_refused_total",
        "Planned-migration hints or requests refused.";
    /// Windows that saw no announcement in time.
    HintsExpired => "hints_expired", "skyvine_migration_hints_expired_total",
        "Planned-migration windows that expired without an announcement.";
    RefusedFrozen => "refused_frozen", "skyvine_lan_refused_moves_total" [reason = Frozen], REFUSED_MOVES;
    RefusedPinned => "refused_pinned", "skyvine_lan_refused_moves_total" [reason = Pinned], REFUSED_MOVES;
    RefusedUnconfirmed => "refused_unconfirmed", "skyvine_lan_refused_moves_total" [reason = Unconfirmed], REFUSED_MOVES;
    RefusedUnresolved => "refused_unresolved", "skyvine_lan_refused_moves_total" [reason = Unresolved], REFUSED_MOVES;
    RefusedStillHere => "refused_still_here", "skyvine_lan_refused_moves_total" [reason = StillHere], REFUSED_MOVES;
    RefusedBusy => "refused_busy", "skyvine_lan_refused_moves_total" [reason = Busy], REFUSED_MOVES;
}

impl RefusalReason {
    /// The counter of moves refused for this reason.
    pub fn counter(self) -> Counter {
        match self {
            RefusalReason::Frozen => Counter::RefusedFrozen,
            RefusalReason::Pinned => Counter::RefusedPinned,
            RefusalReason::Unconfirmed => Counter::RefusedUnconfirmed,
            RefusalReason::Unresolved => Counter::RefusedUnresolved,
            RefusalReason::StillHere => Counter::RefusedStillHere,
            RefusalReason::Busy => Counter::RefusedBusy,
        }
    }
}

/// The value of every [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters([u64; Counter::ALL.len()]);

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0.get(counter as usize).copied().unwrap_or(0)
    }

    /// Counts one more; returns the new value.
    pub fn add(&mut self, counter: Counter) -> u64 {
        match self.0.get_mut(counter as usize) {
            Some(value) => {
                *value += 1;
                *value
            }
            None => 0,
        }
    }

    /// Every counter with its value, in [`Counter::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn every_refusal_reason_has_its_counter_labelled_with_its_name() {
        for reason in RefusalReason::ALL {
            let counter = reason.counter();
            assert_eq!(counter.reason(), Some(reason));
            assert_eq!(counter.name(), format!("refused_{}", reason.name()));
        }
        let labelled = Counter::ALL.iter().filter(|c| c.reason().is_some()).count();
        assert_eq!(labelled, RefusalReason::ALL.len());
    }

    #[test]
    fn names_are_unique_and_a_family_has_one_help_text() {
        let names: BTreeSet<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Counter::ALL.len());
        let mut help: BTreeMap<&str, &str> = BTreeMap::new();
        for counter in Counter::ALL {
            let known = help.entry(counter.family()).or_insert(counter.help());
            assert_eq!(*known, counter.help(), "{}", counter.family());
            assert!(counter.family().ends_with("_total"));
            // A family without a label holds exactly one counter.
            if counter.reason().is_none() {
                let same = Counter::ALL
                    .iter()
                    .filter(|c| c.family() == counter.family());
                assert_eq!(same.count(), 1, "{}", counter.family());
            }
        }
    }

    #[test]
    fn counters_count_each_counter_apart() {
        let mut counters = Counters::default();
        assert_eq!(counters.add(Counter::Repeats), 1);
        assert_eq!(counters.add(Counter::Repeats), 2);
        counters.add(RefusalReason::StillHere.counter());
        assert_eq!(counters.get(Counter::Repeats), 2);
        assert_eq!(counters.get(Counter::RefusedStillHere), 1);
        assert_eq!(counters.get(Counter::Frames), 0);
        let total: u64 = counters.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 3);
    }
}
