//! What the router does with ARP and RARP frames seen on its LAN: learning bindings, proxy ARP,
//! and the live-migration sequence (detect, resolve, confirm, take over, redirect).
//!
//! Still sans IO: frames come in as parsed [`ArpEvent`]s, frames to send go out as
//! [`Effect::Transmit`], and every step is stamped with the `now` it was given.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_capture::wire::{ArpEvent, ArpOp, ArpRepr, EventKind, ETHERTYPE_ARP};
use skyvine_inject::wire::{self as frames, ArpFrame, FrameBytes};
use skyvine_tables::{
    AnnouncementFilter, BindingSource, EntryKind, GndtEntry, Learned, MacAddr, MoveDamping,
    MoveVerdict, Observation, SiteId,
};

use super::limits::LanLimiter;
use super::records::{Detection, MigrationRecord, Outcome, Records, Role, Start};
use super::{Effect, Node, NodeConfig};
use crate::fib::Relays;
use crate::proto::Message;

/// Probes sent while confirming, at these offsets from the start (until the probe timeout).
const PROBE_SCHEDULE_MS: [u64; 6] = [0, 5, 15, 40, 100, 200];
/// Gratuitous ARPs are repeated at these offsets, in case the first is lost.
const GARP_REPEAT_MS: [u64; 3] = [0, 150, 1000];
/// How long a query by MAC waits for the other routers.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Migrations being resolved or confirmed at once; more are refused (a flood of announcements
/// for random MACs must not turn into a flood of queries to every peer).
const MAX_PENDING: usize = 64;

/// The router's own address on its LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanIdentity {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// Counters of what the LAN side refused or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LanCounters {
    pub frames: u64,
    /// Ethernet source differs from the ARP sender MAC.
    pub forged_frames: u64,
    pub repeats: u64,
    pub proxy_replies: u64,
    pub refused_frozen: u64,
    pub refused_pinned: u64,
    pub refused_unconfirmed: u64,
    pub refused_unresolved: u64,
    /// A moved-away VM still answered at this site: the move was a duplicate or a hijack.
    pub refused_still_here: u64,
    /// Dropped by the per-source or LAN-wide rate limit.
    pub rate_limited: u64,
    /// Announcements refused because too many migrations were already pending.
    pub refused_busy: u64,
}

#[derive(Debug)]
pub(super) struct LanState {
    identity: Option<LanIdentity>,
    filter: AnnouncementFilter,
    damping: MoveDamping,
    probe_timeout: Duration,
    /// Migrations being resolved or confirmed here, by MAC.
    pending: BTreeMap<MacAddr, Pending>,
    /// Hosts that moved away, being checked for a reply at this site (hijack detection).
    verifying: BTreeMap<Ipv4Addr, Verify>,
    /// Frames to send later, in time order.
    scheduled: Vec<(Instant, FrameBytes)>,
    records: Records,
    next_query: u64,
    limiter: LanLimiter,
    pub(super) counters: LanCounters,
}

#[derive(Debug)]
struct Pending {
    record: u64,
    ip: Option<Ipv4Addr>,
    /// Resolving by query: the query id and when to give up.
    query: Option<(u64, Instant)>,
    /// Confirming: when the probing started.
    probing_since: Option<Instant>,
    probes_sent: usize,
}

#[derive(Debug)]
struct Verify {
    mac: MacAddr,
    record: u64,
    since: Instant,
    probes_sent: usize,
}

impl LanState {
    pub(super) fn new(config: &NodeConfig, now: Instant) -> Self {
        let mut damping = MoveDamping::new(config.damping.clone());
        for ip in &config.pinned {
            damping.pin(*ip);
        }
        LanState {
            identity: config.lan,
            filter: AnnouncementFilter::default(),
            damping,
            probe_timeout: config.probe_timeout,
            pending: BTreeMap::new(),
            verifying: BTreeMap::new(),
            scheduled: Vec::new(),
            records: Records::default(),
            next_query: 1,
            limiter: LanLimiter::new(now),
            counters: LanCounters::default(),
        }
    }
}

impl Node {
    /// An ARP or RARP frame seen on the LAN.
    pub fn handle_lan_event(&mut self, event: ArpEvent, now: Instant) {
        self.lan.counters.frames += 1;
        let Some(identity) = self.lan.identity else {
            return;
        };
        if event.eth_src == identity.mac {
            return;
        }
        if !self.lan.limiter.allow(event.eth_src, now) {
            self.lan.counters.rate_limited += 1;
            return;
        }
        if !event.source_matches_sender() {
            // Forged or relayed: never let it teach or move anything.
            self.lan.counters.forged_frames += 1;
            tracing::debug!(eth_src = %event.eth_src, sender = %event.repr.sender_mac, "frame whose source is not its sender ignored");
            return;
        }
        match event.kind {
            EventKind::RarpAnnounce { mac } => {
                self.on_announcement(mac, None, Detection::Rarp, now)
            }
            EventKind::GratuitousRequest { ip, mac } | EventKind::GratuitousReply { ip, mac } => {
                self.learn(ip, mac, now);
                self.on_announcement(mac, Some(ip), Detection::GratuitousArp, now);
            }
            EventKind::Request {
                sender_ip,
                sender_mac,
                target_ip,
            } => {
                self.learn(sender_ip, sender_mac, now);
                self.on_traffic(sender_ip, sender_mac, now);
                self.answer_for_remote(sender_ip, sender_mac, target_ip, identity, now);
            }
            EventKind::Reply {
                sender_ip,
                sender_mac,
                target_mac,
                ..
            } => {
                self.learn(sender_ip, sender_mac, now);
                // Only an answer to our own probe confirms: a host announcing itself (or
                // anyone repeating a claim) proves nothing.
                if target_mac == identity.mac {
                    self.on_probe_reply(sender_ip, sender_mac, now);
                }
                self.on_traffic(sender_ip, sender_mac, now);
            }
            EventKind::Probe { .. } | EventKind::OtherRarp(_) => {}
        }
    }

    /// An IPv4 frame on the LAN addressed to a MAC that lives at another site: a VM that
    /// migrated here without any announcement, still talking to its old gateway or neighbours.
    pub fn handle_foreign_frame(&mut self, eth_src: MacAddr, src_ip: Ipv4Addr, now: Instant) {
        if self.lan.identity.is_some_and(|me| me.mac == eth_src) || eth_src.is_group() {
            return;
        }
        if !self.lan.limiter.allow(eth_src, now) {
            self.lan.counters.rate_limited += 1;
            return;
        }
        self.on_traffic(src_ip, eth_src, now);
    }

    /// MACs that live at other sites (their hosts' advertised bindings, including the other
    /// routers' LAN addresses): frames to them on this LAN come from a migrated VM.
    pub fn foreign_macs(&self) -> Vec<MacAddr> {
        let mut macs: Vec<MacAddr> = self
            .gndt
            .live_entries()
            .filter(|s| s.entry.kind == EntryKind::Host && s.entry.site() != &self.config.me)
            .filter_map(|s| s.entry.mac)
            .collect();
        macs.sort_unstable();
        macs.dedup();
        macs
    }

    /// The kernel now holds the routes for the current tables: completes migrations.
    pub fn handle_kernel_applied(&mut self, now: Instant) {
        self.lan.records.complete(now);
    }

    /// Hosts that moved to or from here recently, for relaying packets in flight.
    pub fn relays(&self) -> Relays {
        self.lan.records.relays()
    }

    /// Recent migrations, oldest first.
    pub fn migrations(&self) -> impl Iterator<Item = &MigrationRecord> {
        self.lan.records.iter()
    }

    /// What the LAN side counted.
    pub fn lan_counters(&self) -> LanCounters {
        self.lan.counters
    }

    /// Addresses frozen by move damping, with the end of their freeze.
    pub fn frozen(&self, now: Instant) -> Vec<(Ipv4Addr, Instant)> {
        self.lan.damping.frozen(now).collect()
    }

    /// The router's LAN identity, if it has a LAN.
    pub fn lan_identity(&self) -> Option<LanIdentity> {
        self.lan.identity
    }

    pub(super) fn lan_timeout(&mut self, now: Instant) {
        self.lan.filter.handle_timeout(now);
        self.lan.damping.handle_timeout(now);
        self.lan.limiter.handle_timeout(now);
        let due: Vec<FrameBytes> = {
            let (due, later): (Vec<_>, Vec<_>) =
                self.lan.scheduled.drain(..).partition(|(at, _)| *at <= now);
            self.lan.scheduled = later;
            due.into_iter().map(|(_, frame)| frame).collect()
        };
        for frame in due {
            self.effects.push_back(Effect::Transmit { frame });
        }
        self.advance_pending(now);
        self.advance_verifying(now);
    }

    pub(super) fn lan_poll_timeout(&self) -> Option<Instant> {
        let scheduled = self.lan.scheduled.iter().map(|(at, _)| *at).min();
        let pending = self.lan.pending.values().filter_map(|p| {
            let probing = p
                .probing_since
                .map(|since| next_probe_at(since, p.probes_sent, self.lan.probe_timeout));
            let query = p.query.map(|(_, deadline)| deadline);
            probing.into_iter().chain(query).min()
        });
        let verifying = self
            .lan
            .verifying
            .values()
            .map(|v| next_probe_at(v.since, v.probes_sent, self.lan.probe_timeout));
        [
            scheduled,
            pending.min(),
            verifying.min(),
            self.lan.filter.poll_timeout(),
            self.lan.damping.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A peer answered our query by MAC.
    /// A peer answered our query by MAC. Only the site that owns the address can vouch for
    /// it, and only for the address that was claimed (if one was).
    pub(super) fn on_is_at(
        &mut self,
        from: &SiteId,
        query: u64,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
        now: Instant,
    ) {
        let vouched = ip.filter(|ip| self.gndt.owner(*ip) == Some(from));
        let Some(pending) = self.lan.pending.get_mut(&mac) else {
            return;
        };
        if pending.query.map(|(q, _)| q) != Some(query) {
            return;
        }
        let claimed = pending.ip;
        if let Some(ip) = vouched.filter(|ip| claimed.is_none_or(|c| c == *ip)) {
            pending.query = None;
            pending.ip = Some(ip);
            let record = pending.record;
            self.update_record(record, |r| {
                r.ip = Some(ip);
                r.resolved = Some(now);
            });
            self.start_confirming(mac, ip, now);
        }
    }

    /// Every router counts every move of an address (EVPN-style damping), and honours a
    /// freeze announced with a re-taken entry.
    pub(super) fn note_move(&mut self, entry: &GndtEntry, now: Instant) {
        let ip = entry.prefix.ip();
        if entry.frozen {
            self.lan.damping.freeze(ip, now);
        } else if let MoveVerdict::Frozen { .. } = self.lan.damping.record_move(ip, now) {
            tracing::warn!(%ip, "address moves too often; further moves are refused for a while");
        }
    }

    /// A host entry of ours was superseded by another site's: the host moved away from here.
    /// `known_mac` is the MAC this site knew for it, used to check that it really left.
    pub(super) fn on_moved_away(
        &mut self,
        ip: Ipv4Addr,
        known_mac: Option<MacAddr>,
        entry: &GndtEntry,
        now: Instant,
    ) {
        let to = entry.site().clone();
        let start = Start {
            mac: entry.mac,
            ip: Some(ip),
            from: Some(self.config.me.clone()),
            to,
            role: Role::Source,
            detection: Detection::Peer,
        };
        let record = self.lan.records.start(start, now);
        self.update_record(record, |r| r.advertised = Some(now));
        self.lan.pending.retain(|_, p| p.ip != Some(ip));
        let Some(identity) = self.lan.identity else {
            return;
        };
        // Repoint every LAN host's cache entry for the VM to us (request form: accepted at
        // once even within Linux's 1 s locktime), then make sure the VM is really gone.
        self.schedule_repeated(frames::gratuitous_arp_request(identity.mac, ip), now);
        if let (Some(mac), false) = (known_mac, entry.frozen) {
            self.lan.verifying.insert(
                ip,
                Verify {
                    mac,
                    record,
                    since: now,
                    probes_sent: 0,
                },
            );
            self.advance_verifying(now);
        }
    }

    /// A host entry changed owner between two other sites (or arrived here from a peer).
    pub(super) fn on_remote_move(
        &mut self,
        entry: &GndtEntry,
        previous_owner: Option<SiteId>,
        now: Instant,
    ) {
        let start = Start {
            mac: entry.mac,
            ip: Some(entry.prefix.ip()),
            from: previous_owner,
            to: entry.site().clone(),
            role: Role::Third,
            detection: Detection::Peer,
        };
        let record = self.lan.records.start(start, now);
        self.update_record(record, |r| r.advertised = Some(now));
    }

    fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        if ip.is_unspecified() || mac.is_group() {
            return;
        }
        let learned = self.hwdt.learn(ip, mac, BindingSource::Lan, now);
        if let Learned::Changed { old_mac } = learned {
            tracing::debug!(%ip, %mac, %old_mac, "address now seen at another MAC on the LAN");
        }
        // Advertise bindings of our own hosts, so a RARP elsewhere resolves without a query.
        if !self.lndt.contains(ip) || self.gndt.owner(ip) != Some(&self.config.me) {
            return;
        }
        let current = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| s.entry.clone());
        let up_to_date = current
            .as_ref()
            .is_some_and(|e| !e.withdrawn && e.site() == &self.config.me && e.mac == Some(mac));
        if up_to_date {
            return;
        }
        let seq = current.map_or(1, |e| e.version.seq + 1);
        let entry = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
        self.originate(entry, now);
    }

    fn on_traffic(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        if ip.is_unspecified() || self.lndt.contains(ip) {
            return;
        }
        match self.gndt.owner(ip) {
            Some(owner) if owner != &self.config.me => {
                self.on_announcement(mac, Some(ip), Detection::Traffic, now);
            }
            _ => {}
        }
    }

    fn on_announcement(
        &mut self,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
        detection: Detection,
        now: Instant,
    ) {
        if self.lan.pending.contains_key(&mac) {
            self.lan.counters.repeats += 1;
            return;
        }
        // A live migration keeps its MAC: the move must match a binding another site
        // advertised. Without one (e.g. an address nobody uses), only the owning site's
        // answer to a query by MAC can vouch for it.
        let bound = self.binding_elsewhere(mac, ip);
        if let Some(ip) = ip.or(bound) {
            if self.lndt.contains(ip) && self.gndt.owner(ip) == Some(&self.config.me) {
                // Already ours: a boot announcement or a repeat after the move completed.
                self.lan.counters.repeats += 1;
                return;
            }
            if self.gndt.owner(ip).is_none() {
                tracing::debug!(%ip, %mac, "announcement for an address outside the virtual network ignored");
                return;
            }
        }
        if self.lan.filter.observe(mac, now) == Observation::Repeat {
            self.lan.counters.repeats += 1;
            return;
        }
        if self.lan.pending.len() >= MAX_PENDING {
            self.lan.counters.refused_busy += 1;
            tracing::debug!(%mac, "too many migrations pending; announcement ignored");
            return;
        }
        let claimed = ip;
        let ip = bound.or(ip);
        let from = ip.and_then(|ip| self.gndt.owner(ip).cloned());
        let record = self.lan.records.start(
            Start {
                mac: Some(mac),
                ip,
                from,
                to: self.config.me.clone(),
                role: Role::Destination,
                detection,
            },
            now,
        );
        tracing::info!(%mac, ?ip, detection = detection.name(), "migration detected");
        let mut pending = Pending {
            record,
            ip,
            query: None,
            probing_since: None,
            probes_sent: 0,
        };
        match bound {
            Some(ip) => {
                self.update_record(record, |r| r.resolved = Some(now));
                self.lan.pending.insert(mac, pending);
                self.start_confirming(mac, ip, now);
            }
            None => {
                let query = self.lan.next_query;
                self.lan.next_query += 1;
                pending.ip = claimed;
                pending.query = Some((query, now + RESOLVE_TIMEOUT));
                self.lan.pending.insert(mac, pending);
                // Ask the site that owns the claimed address, or everyone for a bare MAC.
                let owner = claimed.and_then(|ip| self.gndt.owner(ip).cloned());
                let asked: Vec<SiteId> = self
                    .peers
                    .iter()
                    .filter(|(site, p)| p.connected && owner.as_ref().is_none_or(|o| o == *site))
                    .map(|(s, _)| s.clone())
                    .collect();
                tracing::debug!(%mac, ?claimed, peers = asked.len(), "no advertised binding; asking the owning router");
                for peer in asked {
                    self.send(&peer, Message::WhoHas { query, mac });
                }
            }
        }
    }

    /// The address another site advertised for `mac` (the claimed one, if given).
    fn binding_elsewhere(&self, mac: MacAddr, claimed: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let elsewhere = |stored: &&skyvine_tables::Stored| {
            let e = &stored.entry;
            !e.withdrawn
                && e.kind == EntryKind::Host
                && e.mac == Some(mac)
                && e.site() != &self.config.me
        };
        match claimed {
            Some(ip) => self
                .gndt
                .get(Ipv4Network::from(ip))
                .filter(elsewhere)
                .map(|_| ip),
            None => self
                .gndt
                .hosts_by_mac(mac)
                .find(elsewhere)
                .map(|stored| stored.entry.prefix.ip()),
        }
    }

    /// Answers a query by MAC for a host of ours: an advertised binding of ours, or a binding
    /// seen on our LAN for a host in our LNDT. Nothing else is vouched for.
    pub(super) fn vouch_for(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        let me = &self.config.me;
        self.gndt
            .hosts_by_mac(mac)
            .find(|s| !s.entry.withdrawn && s.entry.site() == me)
            .map(|s| s.entry.prefix.ip())
            .or_else(|| {
                self.hwdt
                    .by_mac(mac)
                    .map(|b| b.ip)
                    .filter(|ip| self.lndt.contains(*ip) && self.gndt.owner(*ip) == Some(me))
            })
    }

    fn start_confirming(&mut self, mac: MacAddr, ip: Ipv4Addr, now: Instant) {
        match self.lan.damping.check(ip, now) {
            MoveVerdict::Allowed => {}
            MoveVerdict::Pinned => {
                self.lan.counters.refused_pinned += 1;
                self.refuse(mac, "pinned by configuration".into());
                return;
            }
            MoveVerdict::Frozen { until } => {
                self.lan.counters.refused_frozen += 1;
                let left = until.saturating_duration_since(now).as_secs();
                self.refuse(mac, format!("frozen by move damping for {left} s more"));
                return;
            }
        }
        if let Some(pending) = self.lan.pending.get_mut(&mac) {
            pending.probing_since = Some(now);
            pending.probes_sent = 0;
        }
        self.advance_pending(now);
    }

    /// `(ip, mac)` answered our probe: the host is on this LAN.
    fn on_probe_reply(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let confirming = self
            .lan
            .pending
            .get(&mac)
            .is_some_and(|p| p.ip == Some(ip) && p.probing_since.is_some());
        if confirming {
            self.take_over(mac, ip, now);
        }
        if self.lan.verifying.get(&ip).is_some_and(|v| v.mac == mac) {
            self.still_here(ip, mac, now);
        }
    }

    /// Step 4 and 6 of the migration at the destination.
    fn take_over(&mut self, mac: MacAddr, ip: Ipv4Addr, now: Instant) {
        let Some(pending) = self.lan.pending.remove(&mac) else {
            return;
        };
        let record = pending.record;
        match self.lan.damping.record_move(ip, now) {
            MoveVerdict::Allowed => {}
            MoveVerdict::Pinned => {
                self.lan.counters.refused_pinned += 1;
                self.finish_refused(record, "pinned by configuration".into());
                return;
            }
            MoveVerdict::Frozen { .. } => {
                self.lan.counters.refused_frozen += 1;
                tracing::warn!(%ip, %mac, "address moves too often; frozen at its current site");
                self.finish_refused(record, "frozen by move damping".into());
                return;
            }
        }
        let previous = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map(|s| s.entry.clone());
        let seq = previous.as_ref().map_or(1, |e| e.version.seq + 1);
        let entry = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
        self.update_record(record, |r| r.confirmed = Some(now));
        self.lndt.add(ip, Some(mac), now);
        self.hwdt.learn(ip, mac, BindingSource::Lan, now);
        self.originate(entry, now);
        self.update_record(record, |r| r.advertised = Some(now));
        tracing::info!(%ip, %mac, seq, "migrated VM confirmed here; taking over its address");
        self.fix_migrated_view(ip, mac, now);
    }

    /// Step 6: repoint the migrated VM's cache entries for every host it may have cached (its
    /// home prefix; the whole virtual network in routing-optimization mode): hosts at other
    /// sites to us, hosts here (including us, when the VM comes home) to their real MACs. In
    /// routing-optimization mode, also introduce the VM to its new LAN neighbours directly.
    fn fix_migrated_view(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let Some(identity) = self.lan.identity else {
            return;
        };
        let home = self
            .gndt
            .covering(Ipv4Network::from(ip))
            .map(|s| s.entry.prefix);
        let optimize = self.config.virtual_network;
        let mut frames = Vec::new();
        for stored in self.gndt.live_entries() {
            let e = &stored.entry;
            let host = e.prefix.ip();
            let relevant = home.is_some_and(|h| h.contains(host))
                || optimize.is_some_and(|v| v.contains(host));
            if e.kind != EntryKind::Host || host == ip || !relevant {
                continue;
            }
            if e.site() != &self.config.me {
                frames.push(frames::unicast_gratuitous_arp(identity.mac, host, mac));
            } else if let Some(host_mac) = e.mac {
                frames.push(spoken_for(identity.mac, mac, host, host_mac));
            }
        }
        if optimize.is_some() {
            // Our LAN hosts that reached the VM through us now reach it directly.
            frames.push(spoken_for(identity.mac, MacAddr::BROADCAST, ip, mac));
        }
        for frame in frames {
            self.schedule_repeated(frame, now);
        }
    }

    /// The moved-away VM answered at this site: the move was a duplicate or a hijack. Take the
    /// address back with a newer version, and tell the LAN where the VM really is.
    fn still_here(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let Some(verify) = self.lan.verifying.remove(&ip) else {
            return;
        };
        self.lan.counters.refused_still_here += 1;
        let claimed_by = self.gndt.owner(ip).cloned();
        tracing::warn!(%ip, %mac, claimed_by = ?claimed_by.as_ref().map(SiteId::as_str), "host still answers here; refusing its move (duplicate or hijack)");
        self.finish_refused(verify.record, "host still answers at this site".into());
        let seq = self
            .gndt
            .get(Ipv4Network::from(ip))
            .map_or(1, |s| s.entry.version.seq + 1);
        self.lndt.add(ip, Some(mac), now);
        self.lan.damping.freeze(ip, now);
        let mut entry = GndtEntry::host(ip, self.config.me.clone(), seq, Some(mac));
        entry.frozen = true;
        self.originate(entry, now);
        if let Some(identity) = self.lan.identity {
            self.schedule_repeated(spoken_for(identity.mac, MacAddr::BROADCAST, ip, mac), now);
        }
    }

    /// Proxy ARP: answer for addresses that live at another site when the asker expects them
    /// on its link (a host of our prefix that moved away; a migrated VM's old neighbours and
    /// gateway; anything of the virtual network in routing-optimization mode).
    fn answer_for_remote(
        &mut self,
        sender_ip: Ipv4Addr,
        sender_mac: MacAddr,
        target: Ipv4Addr,
        identity: LanIdentity,
        _now: Instant,
    ) {
        if target == sender_ip || target == identity.ip || sender_ip.is_unspecified() {
            return;
        }
        match self.gndt.owner(target) {
            Some(owner) if owner != &self.config.me => {}
            _ => return,
        }
        let ours = self.config.prefixes.iter().any(|p| p.contains(target));
        let migrated_in = self.lndt.contains(sender_ip) && !self.lndt.is_configured(sender_ip);
        let same_home = migrated_in
            && self
                .gndt
                .covering(Ipv4Network::from(sender_ip))
                .is_some_and(|home| home.entry.prefix.contains(target));
        let optimize = self
            .config
            .virtual_network
            .is_some_and(|v| v.contains(target));
        if ours || same_home || optimize {
            self.lan.counters.proxy_replies += 1;
            tracing::trace!(%target, asker = %sender_ip, "proxy ARP reply");
            self.effects.push_back(Effect::Transmit {
                frame: frames::proxy_arp_reply(identity.mac, target, sender_mac, sender_ip),
            });
        }
    }

    fn advance_pending(&mut self, now: Instant) {
        let timeout = self.lan.probe_timeout;
        let mut refused = Vec::new();
        let mut probes = Vec::new();
        for (mac, pending) in self.lan.pending.iter_mut() {
            if let Some((_, deadline)) = pending.query {
                if now >= deadline {
                    refused.push((*mac, "no router knows this MAC".to_owned(), false));
                }
                continue;
            }
            let (Some(since), Some(ip)) = (pending.probing_since, pending.ip) else {
                continue;
            };
            if now >= since + timeout {
                refused.push((
                    *mac,
                    format!(
                        "no answer to the confirmation probe within {} ms",
                        timeout.as_millis()
                    ),
                    true,
                ));
                continue;
            }
            while next_probe_at(since, pending.probes_sent, timeout) <= now {
                pending.probes_sent += 1;
                probes.push((ip, *mac));
            }
        }
        if let Some(identity) = self.lan.identity {
            for (ip, mac) in probes {
                self.effects.push_back(Effect::Transmit {
                    frame: unicast_probe(identity.mac, mac, ip),
                });
            }
        }
        for (mac, reason, unconfirmed) in refused {
            if unconfirmed {
                self.lan.counters.refused_unconfirmed += 1;
            } else {
                self.lan.counters.refused_unresolved += 1;
            }
            tracing::warn!(%mac, reason, "migration refused");
            self.refuse(mac, reason);
        }
    }

    fn advance_verifying(&mut self, now: Instant) {
        let timeout = self.lan.probe_timeout;
        let mut done = Vec::new();
        let mut probes = Vec::new();
        for (ip, verify) in self.lan.verifying.iter_mut() {
            if now >= verify.since + timeout {
                done.push(*ip);
                continue;
            }
            while next_probe_at(verify.since, verify.probes_sent, timeout) <= now {
                verify.probes_sent += 1;
                probes.push((*ip, verify.mac));
            }
        }
        for ip in done {
            self.lan.verifying.remove(&ip);
        }
        if let Some(identity) = self.lan.identity {
            for (ip, mac) in probes {
                self.effects.push_back(Effect::Transmit {
                    frame: unicast_probe(identity.mac, mac, ip),
                });
            }
        }
    }

    fn refuse(&mut self, mac: MacAddr, reason: String) {
        if let Some(pending) = self.lan.pending.remove(&mac) {
            self.finish_refused(pending.record, reason);
        }
    }

    fn finish_refused(&mut self, record: u64, reason: String) {
        self.update_record(record, |r| r.outcome = Outcome::Refused(reason));
    }

    fn update_record(&mut self, id: u64, change: impl FnOnce(&mut MigrationRecord)) {
        self.lan.records.update(id, change);
    }

    /// Applies an entry we originate and advertises it to every connected peer.
    fn originate(&mut self, entry: GndtEntry, now: Instant) {
        if self.gndt.apply(entry.clone(), now).changed() {
            self.effects.push_back(Effect::TablesChanged);
            self.broadcast_except(None, &[entry]);
        }
    }

    fn schedule_repeated(&mut self, frame: FrameBytes, now: Instant) {
        for (i, offset) in GARP_REPEAT_MS.iter().enumerate() {
            if i == 0 {
                self.effects.push_back(Effect::Transmit { frame });
            } else {
                self.lan
                    .scheduled
                    .push((now + Duration::from_millis(*offset), frame));
            }
        }
    }
}

fn next_probe_at(since: Instant, sent: usize, timeout: Duration) -> Instant {
    match PROBE_SCHEDULE_MS.get(sent) {
        Some(offset) => since + Duration::from_millis(*offset),
        None => since + timeout,
    }
}

/// An ARP probe (sender IP 0.0.0.0) sent only to `mac`: the VM answers it without learning
/// anything, and nobody else is disturbed.
fn unicast_probe(our_mac: MacAddr, mac: MacAddr, ip: Ipv4Addr) -> FrameBytes {
    ArpFrame {
        eth_dst: mac,
        eth_src: our_mac,
        ethertype: ETHERTYPE_ARP,
        repr: ArpRepr {
            operation: ArpOp::Request,
            sender_mac: our_mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        },
    }
    .to_bytes()
}

/// A gratuitous ARP request saying `ip` is at `host_mac`, sent by the router (Ethernet source
/// = our MAC, so LAN switches keep learning the host's MAC on the host's own port) to `to`.
fn spoken_for(our_mac: MacAddr, to: MacAddr, ip: Ipv4Addr, host_mac: MacAddr) -> FrameBytes {
    ArpFrame {
        eth_dst: to,
        eth_src: our_mac,
        ethertype: ETHERTYPE_ARP,
        repr: ArpRepr {
            operation: ArpOp::Request,
            sender_mac: host_mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        },
    }
    .to_bytes()
}
