//! Planned-migration hints. A VM manager (the libvirt hook in `deploy/`, which runs on the
//! destination host) tells a router that VM `ip`/`mac` is about to move to site `to`. Only the
//! address's current owner may announce such a hint: a router that is not the owner forwards
//! the request to it ([`Message::PrepareRequest`], accepted only from the destination itself),
//! and the owner announces a window to every router ([`Message::Prepare`], accepted only from
//! the owner, for the MAC the owner advertised, to a known site).
//!
//! During the window every router but the destination sends the VM's packets to both sites
//! (the forwarding view's [`crate::fib::FibSnapshot::copy_to`]); the destination drops its
//! copies until the VM is there. The first announcement at the destination takes over exactly
//! as without a hint, with the other routers already delivering there: the outage has no WAN
//! round trip in it. The window ends when the address moves (committed), when the owner
//! cancels it ([`Message::PrepareEnd`]), or after its length without an announcement
//! (expired, everywhere, logged).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_tables::{EntryKind, MacAddr, MoveVerdict, SiteId};

use skyvine_inject::wire as frames;

use super::counters::Counter;
use super::lan::spoken_for;
use super::{Effect, Node};
use crate::proto::Message;

/// The longest window a hint may ask for.
pub const MAX_PREPARE_WINDOW: Duration = Duration::from_secs(3600);
/// Windows open at once; more hints are refused (each costs a copy of every packet).
pub const MAX_PREPARED: usize = 256;

/// A planned migration of `ip` (at `mac`) from `from`, its owner, to `to`, open until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub from: SiteId,
    pub to: SiteId,
    pub since: Instant,
    pub until: Instant,
}

/// What a prepare or cancel command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HintOutcome {
    /// This router owns the address and announced the window to every router.
    Announced(Prepared),
    /// The request went to the address's owner, which alone may announce it.
    Forwarded { owner: SiteId, ip: Ipv4Addr },
    /// This router owned the window and ended it everywhere.
    Cancelled { ip: Ipv4Addr },
}

/// Why a hint (or a command for one) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    #[error("{ip} is not an address of the virtual network")]
    Outside { ip: Ipv4Addr },
    #[error("no router advertised a binding for MAC {mac}; give the VM's --ip")]
    UnknownMac { mac: MacAddr },
    #[error("{ip} is advertised by {owner} with MAC {known}, not {mac}")]
    WrongMac {
        ip: Ipv4Addr,
        mac: MacAddr,
        owner: SiteId,
        known: String,
    },
    #[error("{ip} is owned by {owner}, not by {from}")]
    NotOwner {
        ip: Ipv4Addr,
        owner: SiteId,
        from: SiteId,
    },
    #[error("site {to} is not a peer of this router")]
    UnknownSite { to: SiteId },
    #[error("site {to} is not connected")]
    SiteDown { to: SiteId },
    #[error("{ip} is already at {to}")]
    AlreadyThere { ip: Ipv4Addr, to: SiteId },
    #[error("{ip} is pinned or frozen: it does not move now")]
    Frozen { ip: Ipv4Addr },
    #[error("this router ({me}) is neither {ip}'s owner ({owner}) nor the destination ({to}): run the command on one of them")]
    Elsewhere {
        me: SiteId,
        ip: Ipv4Addr,
        owner: SiteId,
        to: SiteId,
    },
    #[error("the owner of {ip}, {owner}, is not connected")]
    OwnerDown { ip: Ipv4Addr, owner: SiteId },
    #[error("a window must last 1 s to {} s", MAX_PREPARE_WINDOW.as_secs())]
    Window,
    #[error("{MAX_PREPARED} moves are prepared already")]
    Busy,
    #[error("no move of {what} is prepared here")]
    NotPrepared { what: String },
}

/// How a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Committed,
    Superseded,
    Cancelled,
    Expired,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Committed => "committed",
            End::Superseded => "superseded",
            End::Cancelled => "cancelled",
            End::Expired => "expired",
        }
    }
}

/// The open windows, by address.
#[derive(Debug, Default)]
pub(super) struct Windows(BTreeMap<Ipv4Addr, Prepared>);

impl Windows {
    pub(super) fn next_at(&self) -> Option<Instant> {
        self.0.values().map(|w| w.until).min()
    }
}

impl Node {
    /// `skyvine migration prepare`: the VM at `mac` (address `ip`, or the one advertised for
    /// `mac`) is about to move to `to`. The owner announces it; the destination forwards it to
    /// the owner; any other router refuses.
    pub fn prepare(
        &mut self,
        ip: Option<Ipv4Addr>,
        mac: MacAddr,
        to: SiteId,
        window: Option<Duration>,
        now: Instant,
    ) -> Result<HintOutcome, HintError> {
        let window = window.unwrap_or(self.config.prepare_window);
        if window.is_zero() || window > MAX_PREPARE_WINDOW {
            return Err(HintError::Window);
        }
        let ip = match ip {
            Some(ip) => ip,
            None => self.address_of(mac).ok_or(HintError::UnknownMac { mac })?,
        };
        let owner = self
            .gndt
            .owner(ip)
            .cloned()
            .ok_or(HintError::Outside { ip })?;
        if owner == self.config.me {
            return self
                .announce(ip, mac, to, window, now)
                .map(HintOutcome::Announced);
        }
        if to != self.config.me {
            let me = self.config.me.clone();
            return Err(HintError::Elsewhere { me, ip, owner, to });
        }
        self.check_binding(ip, mac, &owner)?;
        if !self.peers.get(&owner).is_some_and(|p| p.connected) {
            return Err(HintError::OwnerDown { ip, owner });
        }
        let window_ms = millis(window);
        tracing::info!(%ip, %mac, %owner, window_ms, "asking the owner to announce a planned migration here");
        self.send(
            &owner,
            Message::PrepareRequest {
                ip: Some(ip),
                mac,
                window_ms,
            },
        );
        Ok(HintOutcome::Forwarded { owner, ip })
    }

    /// `skyvine migration cancel`: ends the window for `ip` (or the one for `mac`) at its
    /// owner, or asks the owner to (at the destination).
    pub fn cancel_prepared(
        &mut self,
        ip: Option<Ipv4Addr>,
        mac: Option<MacAddr>,
        now: Instant,
    ) -> Result<HintOutcome, HintError> {
        let window = self
            .windows
            .0
            .values()
            .find(|w| ip.is_none_or(|ip| w.ip == ip) && mac.is_none_or(|mac| w.mac == mac))
            .cloned()
            .ok_or(HintError::NotPrepared {
                what: ip.map_or_else(
                    || mac.map_or_else(String::new, |m| m.to_string()),
                    |ip| ip.to_string(),
                ),
            })?;
        let ip = window.ip;
        if window.from == self.config.me {
            self.end_window(ip, End::Cancelled, now);
            return Ok(HintOutcome::Cancelled { ip });
        }
        if window.to != self.config.me {
            let (me, owner, to) = (self.config.me.clone(), window.from, window.to);
            return Err(HintError::Elsewhere { me, ip, owner, to });
        }
        self.send(
            &window.from,
            Message::PrepareCancel {
                ip,
                mac: window.mac,
            },
        );
        Ok(HintOutcome::Forwarded {
            owner: window.from,
            ip,
        })
    }

    /// The planned migrations known here, by address.
    pub fn prepared(&self) -> impl Iterator<Item = &Prepared> {
        self.windows.0.values()
    }

    /// A hint from `from`: open the window if `from` owns the address, advertised that MAC for
    /// it, and names a known destination.
    pub(super) fn on_prepare(
        &mut self,
        from: &SiteId,
        hint: (Ipv4Addr, MacAddr, SiteId),
        window_ms: u64,
        now: Instant,
    ) {
        let (ip, mac, to) = hint;
        let checked = self.check_hint(from, (ip, mac, &to), window_ms, now);
        match checked {
            Ok(window) => {
                let prepared = Prepared {
                    ip,
                    mac,
                    from: from.clone(),
                    to,
                    since: now,
                    until: now + window,
                };
                self.open_window(prepared, now);
            }
            Err(error) => self.refuse_hint(from, &error),
        }
    }

    /// The destination `from` asks us, the owner, to announce a move of `ip` to it.
    pub(super) fn on_prepare_request(
        &mut self,
        from: &SiteId,
        ip: Option<Ipv4Addr>,
        mac: MacAddr,
        window_ms: u64,
        now: Instant,
    ) {
        let ip = match ip.or_else(|| self.address_of(mac)) {
            Some(ip) => ip,
            None => return self.refuse_hint(from, &HintError::UnknownMac { mac }),
        };
        let owner = self.gndt.owner(ip).cloned();
        if owner.as_ref() != Some(&self.config.me) {
            let owner = owner.unwrap_or_else(|| self.config.me.clone());
            let me = self.config.me.clone();
            return self.refuse_hint(
                from,
                &HintError::NotOwner {
                    ip,
                    owner,
                    from: me,
                },
            );
        }
        let window = Duration::from_millis(window_ms);
        if let Err(error) = self.announce(ip, mac, from.clone(), window, now) {
            self.refuse_hint(from, &error);
        }
    }

    /// `from` ends a window ([`Message::PrepareEnd`], from the window's owner) or asks us, the
    /// owner, to end it ([`Message::PrepareCancel`], from the window's destination).
    pub(super) fn on_prepare_end(
        &mut self,
        from: &SiteId,
        ip: Ipv4Addr,
        mac: MacAddr,
        now: Instant,
    ) {
        let Some(window) = self.windows.0.get(&ip) else {
            return;
        };
        if window.mac != mac {
            return;
        }
        let allowed = &window.from == from || (&window.to == from && window.from == self.config.me);
        if allowed {
            self.end_window(ip, End::Cancelled, now);
        } else {
            let error = HintError::NotOwner {
                ip,
                owner: window.from.clone(),
                from: from.clone(),
            };
            self.refuse_hint(from, &error);
        }
    }

    /// A host entry for `ip` changed: a window for it ends, committed if the address went to
    /// the window's destination.
    pub(super) fn on_owner_change(&mut self, ip: Ipv4Addr, now: Instant) {
        let Some(window) = self.windows.0.get(&ip) else {
            return;
        };
        match self.gndt.owner(ip) {
            Some(owner) if owner == &window.to => self.end_window(ip, End::Committed, now),
            Some(owner) if owner == &window.from => {}
            _ => self.end_window(ip, End::Superseded, now),
        }
    }

    /// Ends the windows whose time ran out.
    pub(super) fn expire_windows(&mut self, now: Instant) {
        let expired: Vec<Ipv4Addr> = self
            .windows
            .0
            .values()
            .filter(|w| w.until <= now)
            .map(|w| w.ip)
            .collect();
        for ip in expired {
            self.end_window(ip, End::Expired, now);
        }
    }

    /// Where copies go and what arrives early, for the forwarding view: `(copy_to, arriving)`.
    pub(super) fn prepared_view(&self) -> (HashMap<Ipv4Addr, SiteId>, HashSet<Ipv4Addr>) {
        let mut copy_to = HashMap::new();
        let mut arriving = HashSet::new();
        for window in self.windows.0.values() {
            if window.to == self.config.me {
                arriving.insert(window.ip);
            } else {
                copy_to.insert(window.ip, window.to.clone());
            }
        }
        (copy_to, arriving)
    }

    /// As the owner: check and open a window, and announce it to every router.
    fn announce(
        &mut self,
        ip: Ipv4Addr,
        mac: MacAddr,
        to: SiteId,
        window: Duration,
        now: Instant,
    ) -> Result<Prepared, HintError> {
        let me = self.config.me.clone();
        let window = self.check_hint(&me, (ip, mac, &to), millis(window), now)?;
        if !self.peers.get(&to).is_some_and(|p| p.connected) {
            return Err(HintError::SiteDown { to });
        }
        let prepared = Prepared {
            ip,
            mac,
            from: me,
            to: to.clone(),
            since: now,
            until: now + window,
        };
        self.open_window(prepared.clone(), now);
        let message = Message::Prepare {
            ip,
            mac,
            to,
            window_ms: millis(window),
        };
        self.send_to_all(&message);
        Ok(prepared)
    }

    fn send_to_all(&mut self, message: &Message) {
        let targets: Vec<SiteId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected)
            .map(|(site, _)| site.clone())
            .collect();
        for site in targets {
            self.send(&site, message.clone());
        }
    }

    /// The checks on a hint said to come from `from`: it owns `ip` here, advertised `mac`
    /// for it, names a known destination other than itself, for a sane window, and the address
    /// may move. Returns the window.
    fn check_hint(
        &self,
        from: &SiteId,
        (ip, mac, to): (Ipv4Addr, MacAddr, &SiteId),
        window_ms: u64,
        now: Instant,
    ) -> Result<Duration, HintError> {
        let window = Duration::from_millis(window_ms);
        if window.is_zero() || window > MAX_PREPARE_WINDOW {
            return Err(HintError::Window);
        }
        let owner = self.gndt.owner(ip).ok_or(HintError::Outside { ip })?;
        if owner != from {
            return Err(HintError::NotOwner {
                ip,
                owner: owner.clone(),
                from: from.clone(),
            });
        }
        self.check_binding(ip, mac, from)?;
        if to == from {
            return Err(HintError::AlreadyThere { ip, to: to.clone() });
        }
        if to != &self.config.me && !self.peers.contains_key(to) {
            return Err(HintError::UnknownSite { to: to.clone() });
        }
        if self.lan.damping.check(ip, now) != MoveVerdict::Allowed {
            return Err(HintError::Frozen { ip });
        }
        if !self.windows.0.contains_key(&ip) && self.windows.0.len() >= MAX_PREPARED {
            return Err(HintError::Busy);
        }
        Ok(window)
    }

    /// `owner` advertised `mac` for `ip` (its live host entry).
    fn check_binding(&self, ip: Ipv4Addr, mac: MacAddr, owner: &SiteId) -> Result<(), HintError> {
        let entry = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| &s.entry)
            .filter(|e| !e.withdrawn && e.kind == EntryKind::Host && e.site() == owner);
        match entry.and_then(|e| e.mac) {
            Some(known) if known == mac => Ok(()),
            known => Err(HintError::WrongMac {
                ip,
                mac,
                owner: owner.clone(),
                known: known.map_or_else(|| "none".to_owned(), |m| m.to_string()),
            }),
        }
    }

    /// The address advertised (or, for a host of ours, seen) for `mac`.
    fn address_of(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.vouch_for(mac).or_else(|| {
            self.gndt
                .host_by_mac(mac)
                .filter(|s| !s.entry.withdrawn)
                .map(|s| s.entry.prefix.ip())
        })
    }

    fn open_window(&mut self, prepared: Prepared, now: Instant) {
        let window_ms = millis(prepared.until.saturating_duration_since(prepared.since));
        tracing::info!(
            ip = %prepared.ip,
            mac = %prepared.mac,
            from = %prepared.from,
            to = %prepared.to,
            window_ms,
            "planned migration prepared: packets for the VM go to both sites"
        );
        self.counters.add(Counter::Hints);
        if prepared.from == self.config.me {
            self.copy_lan_traffic(prepared.ip, None, now);
        }
        self.windows.0.insert(prepared.ip, prepared);
        self.effects.push_back(Effect::TablesChanged);
    }

    /// At the source: LAN hosts send to us for `ip` (gratuitous ARP, request form) and their
    /// packets are copied into the TUN, or (`back` to the VM's MAC) no longer.
    fn copy_lan_traffic(&mut self, ip: Ipv4Addr, back: Option<MacAddr>, now: Instant) {
        self.effects.push_back(Effect::LanCopies {
            ip,
            copy: back.is_none(),
        });
        let Some(identity) = self.lan.identity else {
            return;
        };
        let frame = match back {
            None => frames::gratuitous_arp_request(identity.mac, ip),
            Some(mac) => spoken_for(identity.mac, MacAddr::BROADCAST, ip, mac),
        };
        self.schedule_repeated(frame, now);
    }

    fn end_window(&mut self, ip: Ipv4Addr, end: End, now: Instant) {
        let Some(window) = self.windows.0.remove(&ip) else {
            return;
        };
        let open_ms = millis(now.saturating_duration_since(window.since));
        match end {
            End::Expired => {
                self.counters.add(Counter::HintsExpired);
                tracing::warn!(%ip, mac = %window.mac, to = %window.to, open_ms, "planned migration saw no announcement in its window; cancelled");
            }
            End::Committed | End::Superseded | End::Cancelled => {
                tracing::info!(%ip, to = %window.to, open_ms, end = end.name(), "planned migration window closed");
            }
        }
        if window.from == self.config.me {
            // Our LAN back to the VM itself, unless it left (the move's own path repoints it).
            let back = (end != End::Committed).then_some(window.mac);
            match back {
                Some(mac) if self.lndt.contains(ip) => self.copy_lan_traffic(ip, Some(mac), now),
                _ => self
                    .effects
                    .push_back(Effect::LanCopies { ip, copy: false }),
            }
        }
        // The owner tells everyone (the others expire on their own too).
        if window.from == self.config.me && matches!(end, End::Cancelled | End::Expired) {
            self.send_to_all(&Message::PrepareEnd {
                ip,
                mac: window.mac,
            });
        }
        self.effects.push_back(Effect::TablesChanged);
    }

    fn refuse_hint(&mut self, from: &SiteId, error: &HintError) {
        let refused = self.counters.add(Counter::HintsRefused);
        tracing::warn!(peer = %from, %error, refused, "planned-migration hint refused");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
