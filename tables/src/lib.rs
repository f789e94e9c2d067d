//! The three tables of a skyvine router, and the rules that change them.
//!
//! * [`Gndt`]: the global network description table, replicated on every router: site prefixes
//!   and host (/32) entries, each owned by one site, answering longest-prefix match.
//! * [`Lndt`]: the local network description table: the hosts this router is responsible for.
//! * [`Hwdt`]: the hardware description table: IP <-> MAC bindings seen on the LAN.
//! * [`AnnouncementFilter`] and [`MoveDamping`]: live-migration decisions (one event per burst
//!   of announcements; duplicate address detection and pinned addresses).
//!
//! This crate never does IO, never reads a clock (every time is an argument) and never runs
//! async code. It decides; the `router` crate applies the decisions.

mod gndt;
mod hwdt;
mod lndt;
mod migration;
mod types;

pub use gndt::{entry_hash, Applied, Gndt, Lookup, Stored};
pub use hwdt::{Binding, BindingSource, Hwdt, Learned};
pub use lndt::{Lndt, LndtHost, LndtSource};
pub use migration::{
    AnnouncementFilter, DampingConfig, MoveDamping, MoveVerdict, Observation, LONGEST_PERIOD,
};
pub use types::{EntryKind, GndtEntry, MacAddr, ParseError, SiteId, Version};
