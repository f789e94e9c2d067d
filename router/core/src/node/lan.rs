//! What the router does with ARP and RARP frames seen on its LAN, and the state that goes with
//! it. This file dispatches frames and runs the LAN's timers; the concerns live apart:
//! [`learning`](super::learning) (bindings seen on the LAN, advertising our own, vouching for
//! them), [`proxy`](super::proxy) (answering ARP for hosts at other sites),
//! [`destination`](super::destination) (a VM arrived: detect, resolve, confirm, take over, fix
//! its view), [`source`](super::source) (a host left: repoint the LAN, check it is really gone)
//! and [`prober`](super::prober) (the ARP probes both of those send).
//!
//! Still sans IO: frames come in as parsed [`ArpEvent`]s, frames to send go out as
//! [`Effect::Transmit`], and every step is stamped with the `now` it was given.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use skyvine_capture::wire::{ArpEvent, ArpOp, ArpRepr, EventKind, ETHERTYPE_ARP};
use skyvine_inject::wire::{ArpFrame, FrameBytes};
use skyvine_tables::{
    AnnouncementFilter, EntryKind, GndtEntry, MacAddr, MoveDamping, MoveVerdict, SiteId,
};

use super::counters::Counter;
use super::destination::Pending;
use super::limits::LanLimiter;
use super::records::{Detection, MigrationRecord, Records, RefusalReason, Role, Start};
use super::source::{Departures, Verifying};
use super::{Effect, Node, NodeConfig, Takeover};
use crate::fib::Relays;

/// Gratuitous ARPs are repeated at these offsets, in case the first is lost.
const GARP_REPEAT_MS: [u64; 3] = [0, 150, 1000];

/// The router's own address on its LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanIdentity {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

#[derive(Debug)]
pub(super) struct LanState {
    pub(super) identity: Option<LanIdentity>,
    pub(super) filter: AnnouncementFilter,
    pub(super) damping: MoveDamping,
    pub(super) takeover: Takeover,
    pub(super) confirm_timeout: Duration,
    pub(super) still_here_timeout: Duration,
    /// Migrations to this site being resolved or confirmed, by MAC.
    pub(super) pending: BTreeMap<MacAddr, Pending>,
    /// Hosts that moved away, being checked for a reply at this site (hijack detection).
    pub(super) verifying: BTreeMap<Ipv4Addr, Verifying>,
    /// Hosts that moved away recently, with the site that claimed them: if that site withdraws
    /// its claim unconfirmed, this site takes the address back.
    pub(super) departed: Departures,
    /// Frames to send later, by time and then by when they were scheduled.
    scheduled: BTreeMap<(Instant, u64), FrameBytes>,
    scheduled_seq: u64,
    pub(super) records: Records,
    pub(super) next_query: u64,
    limiter: LanLimiter,
    /// Another router of this site held the LAN before this one (its binding of our LAN
    /// address had another MAC): the LAN's caches still name that router's MAC.
    pub(super) succeeded: bool,
    /// VMs that migrated in and were confirmed here while no peer had yet told us their home
    /// prefix (a successor hears its peers one by one): their view is fixed when the full
    /// table that brings the prefix arrives. At most one per LNDT host.
    pub(super) homeless: BTreeMap<Ipv4Addr, MacAddr>,
    /// VMs seen here while move damping froze their address, by when the freeze ends: then
    /// they are looked for on the LAN (a freeze delays a move; it does not lose it). Bounded.
    pub(super) seen_frozen: BTreeMap<(Instant, Ipv4Addr), (MacAddr, Detection)>,
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
            takeover: config.takeover,
            confirm_timeout: config.confirm_timeout,
            still_here_timeout: config.still_here_timeout,
            pending: BTreeMap::new(),
            verifying: BTreeMap::new(),
            departed: Departures::default(),
            scheduled: BTreeMap::new(),
            scheduled_seq: 0,
            records: Records::default(),
            next_query: 1,
            limiter: LanLimiter::new(now),
            succeeded: false,
            homeless: BTreeMap::new(),
            seen_frozen: BTreeMap::new(),
        }
    }
}

impl Node {
    /// An ARP or RARP frame seen on the LAN.
    pub fn handle_lan_event(&mut self, event: ArpEvent, now: Instant) {
        self.counters.add(Counter::Frames);
        let Some(identity) = self.lan.identity else {
            return;
        };
        if event.eth_src == identity.mac {
            return;
        }
        if !self.lan.limiter.allow(event.eth_src, now) {
            self.counters.add(Counter::RateLimited);
            return;
        }
        if !event.source_matches_sender() {
            // Forged or relayed: never let it teach or move anything.
            self.counters.add(Counter::ForgedFrames);
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
                self.answer_for_remote(sender_ip, sender_mac, target_ip, identity);
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
            self.counters.add(Counter::RateLimited);
            return;
        }
        self.on_traffic(src_ip, eth_src, now);
    }

    /// MACs that live at other sites (their hosts' advertised bindings, including the other
    /// routers' LAN addresses): frames to them on this LAN come from a migrated VM.
    pub fn foreign_macs(&self) -> Vec<MacAddr> {
        self.foreign.macs.keys().copied().collect()
    }

    /// Changes whenever [`Node::foreign_macs`] does: the set is only worth asking for (a walk
    /// over every foreign MAC) when this moved.
    pub fn foreign_macs_generation(&self) -> u64 {
        self.foreign.generation
    }

    /// The kernel now holds the routes for the current tables: completes migrations.
    pub fn handle_kernel_applied(&mut self, now: Instant) {
        self.lan.records.complete(now);
    }

    /// Hosts that moved to or from here within [`RELAY_WINDOW`](super::RELAY_WINDOW) before
    /// `now`, for relaying packets in flight.
    pub fn relays(&self, now: Instant) -> Relays {
        self.lan.records.relays(now)
    }

    /// Recent migrations, oldest first.
    pub fn migrations(&self) -> impl Iterator<Item = &MigrationRecord> {
        self.lan.records.iter()
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
        self.lan.departed.handle_timeout(now);
        let mut due = Vec::new();
        while let Some(entry) = self.lan.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        self.transmit_all(due);
        self.look_for_seen_frozen(now);
        self.advance_pending(now);
        self.advance_verifying(now);
    }

    pub(super) fn lan_poll_timeout(&self) -> Option<Instant> {
        let scheduled = self.lan.scheduled.keys().next().map(|(at, _)| *at);
        let pending = self.lan.pending.values().map(Pending::next_at).min();
        let verifying = self.lan.verifying.values().map(Verifying::next_at).min();
        let seen_frozen = self.lan.seen_frozen.keys().next().map(|(at, _)| *at);
        [
            scheduled,
            pending,
            verifying,
            seen_frozen,
            self.lan.filter.poll_timeout(),
            self.lan.damping.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// `(ip, mac)` answered one of our probes: a migrated VM confirmed here, or a host that
    /// moved away still here.
    fn on_probe_reply(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        self.on_confirmation_reply(ip, mac, now);
        self.on_still_here_reply(ip, mac, now);
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

    /// Ends a migration record as refused, and counts the refusal.
    pub(super) fn finish_refused(&mut self, record: u64, reason: RefusalReason) {
        self.counters.add(reason.counter());
        self.update_record(record, |r| r.outcome = super::Outcome::Refused(reason));
    }

    pub(super) fn update_record(&mut self, id: u64, change: impl FnOnce(&mut MigrationRecord)) {
        self.lan.records.update(id, change);
    }

    /// Applies an entry we originate and advertises it to every connected peer.
    pub(super) fn originate(&mut self, entry: GndtEntry, now: Instant) {
        if self.apply_entry(entry.clone(), now).changed() {
            if entry.kind == EntryKind::Host {
                self.on_owner_change(entry.prefix.ip(), now);
            }
            self.effects.push_back(Effect::TablesChanged);
            self.broadcast_except(None, &[entry]);
        }
    }

    pub(super) fn transmit_all(&mut self, frames: Vec<FrameBytes>) {
        for frame in frames {
            self.effects.push_back(Effect::Transmit { frame });
        }
    }

    /// Sends `frame` now and repeats it on [`GARP_REPEAT_MS`].
    pub(super) fn schedule_repeated(&mut self, frame: FrameBytes, now: Instant) {
        for (i, offset) in GARP_REPEAT_MS.iter().enumerate() {
            if i == 0 {
                self.effects.push_back(Effect::Transmit { frame });
            } else {
                let at = now + Duration::from_millis(*offset);
                self.lan.scheduled_seq += 1;
                self.lan
                    .scheduled
                    .insert((at, self.lan.scheduled_seq), frame);
            }
        }
    }
}

/// A gratuitous ARP request saying `ip` is at `host_mac`, sent by the router (Ethernet source
/// = our MAC, so LAN switches keep learning the host's MAC on the host's own port) to `to`.
pub(super) fn spoken_for(
    our_mac: MacAddr,
    to: MacAddr,
    ip: Ipv4Addr,
    host_mac: MacAddr,
) -> FrameBytes {
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

#[cfg(test)]
mod tests {
    use skyvine_capture::wire::classify;
    use skyvine_inject::wire as frames;

    use super::super::testing::{ip, lan_node, mac, transmitted};
    use super::*;

    #[test]
    fn frames_from_ourselves_a_flooder_or_a_forger_move_nothing() {
        let now = Instant::now();
        let mut b = lan_node("b", 2, now);
        // Our own frame: counted as seen, nothing else.
        let own = frames::gratuitous_arp_request(mac(2, 0xfe), ip(2, 254));
        b.handle_lan_event(classify(&own).unwrap(), now);
        // A forged frame: Ethernet source differs from the ARP sender.
        let mut forged = frames::gratuitous_arp_request(mac(1, 1), ip(1, 1));
        forged[6..12].copy_from_slice(&mac(2, 0x66).0);
        b.handle_lan_event(classify(&forged).unwrap(), now);
        assert_eq!(b.counters().get(Counter::Frames), 2);
        assert_eq!(b.counters().get(Counter::ForgedFrames), 1);
        assert_eq!(b.migrations().count(), 0);
        // One source flooding: its burst passes, the rest is dropped and counted.
        let request = frames::arp_request(mac(2, 9), ip(2, 9), ip(2, 254));
        for _ in 0..200 {
            b.handle_lan_event(classify(&request).unwrap(), now);
        }
        assert_eq!(b.counters().get(Counter::RateLimited), 100);
    }

    #[test]
    fn repeated_frames_go_out_again_on_their_schedule() {
        let now = Instant::now();
        let mut b = lan_node("b", 2, now);
        while b.poll_effect().is_some() {}
        let frame = frames::gratuitous_arp_request(mac(2, 0xfe), ip(2, 1));
        b.schedule_repeated(frame, now);
        assert_eq!(transmitted(&mut b).len(), 1, "the first at once");
        assert_eq!(b.poll_timeout(), Some(now + Duration::from_millis(150)));
        b.handle_timeout(now + Duration::from_millis(150));
        assert_eq!(transmitted(&mut b).len(), 1);
        b.handle_timeout(now + Duration::from_millis(1000));
        assert_eq!(transmitted(&mut b).len(), 1);
        assert!(b.lan.scheduled.is_empty());
    }

    #[test]
    fn spoken_for_is_a_request_for_the_host_from_the_router() {
        let frame = spoken_for(mac(2, 0xfe), MacAddr::BROADCAST, ip(1, 1), mac(1, 1));
        let event = classify(&frame).unwrap();
        assert_eq!(event.eth_src, mac(2, 0xfe));
        assert_eq!(event.eth_dst, MacAddr::BROADCAST);
        assert!(matches!(
            event.kind,
            EventKind::GratuitousRequest { ip: i, mac: m } if i == ip(1, 1) && m == mac(1, 1)
        ));
    }
}
