//! Checks that a host is on this LAN: unicast ARP probes to one (address, MAC) on a fixed
//! schedule until a deadline. The destination confirms a migrated VM with one; the old site
//! checks with one that a host that moved away is really gone. What an answer or the deadline
//! means is the caller's business.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use skyvine_capture::wire::{ArpOp, ArpRepr, ETHERTYPE_ARP};
use skyvine_inject::wire::{ArpFrame, FrameBytes};
use skyvine_tables::MacAddr;

/// Probes go out at these offsets from the start (until the deadline): a guest that resumes
/// a few ms after its announcement is caught early, and a lost probe is repeated.
const PROBE_SCHEDULE_MS: [u64; 6] = [0, 5, 15, 40, 100, 200];
/// After the schedule, one probe every this long until the deadline (a slow guest).
const PROBE_REPEAT: Duration = Duration::from_millis(250);

/// What a [`Prober`] wants at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tick {
    /// Send this many probes now (0: nothing due yet).
    Probe(usize),
    /// The deadline passed without an answer.
    Expired,
}

/// Probes for `ip` at `mac` from `since` until `since + timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Prober {
    ip: Ipv4Addr,
    mac: MacAddr,
    since: Instant,
    timeout: Duration,
    sent: usize,
}

impl Prober {
    /// A prober whose first probe is due at `now`.
    pub(super) fn new(ip: Ipv4Addr, mac: MacAddr, timeout: Duration, now: Instant) -> Self {
        Prober {
            ip,
            mac,
            since: now,
            timeout,
            sent: 0,
        }
    }

    pub(super) fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Whether a reply from `(ip, mac)` answers these probes.
    pub(super) fn answered_by(&self, ip: Ipv4Addr, mac: MacAddr) -> bool {
        self.ip == ip && self.mac == mac
    }

    /// When [`Prober::tick`] has something to do next: the next probe, or the deadline.
    pub(super) fn next_at(&self) -> Instant {
        let offset = match PROBE_SCHEDULE_MS.get(self.sent) {
            Some(ms) => Duration::from_millis(*ms),
            None => {
                let last = PROBE_SCHEDULE_MS.last().copied().unwrap_or(0);
                let beyond =
                    u32::try_from(self.sent + 1 - PROBE_SCHEDULE_MS.len()).unwrap_or(u32::MAX);
                Duration::from_millis(last).saturating_add(PROBE_REPEAT.saturating_mul(beyond))
            }
        };
        (self.since + offset).min(self.deadline())
    }

    /// What is due at `now`; the probes counted as due are taken as sent.
    pub(super) fn tick(&mut self, now: Instant) -> Tick {
        if now >= self.deadline() {
            return Tick::Expired;
        }
        let mut due = 0;
        while self.next_at() <= now {
            self.sent += 1;
            due += 1;
        }
        Tick::Probe(due)
    }

    /// The probe frame, from the router's `our_mac`.
    pub(super) fn frame(&self, our_mac: MacAddr) -> FrameBytes {
        unicast_probe(our_mac, self.mac, self.ip)
    }

    /// `count` probe frames from `our_mac` (none without a LAN identity).
    pub(super) fn frames(&self, count: usize, our_mac: Option<MacAddr>) -> Vec<FrameBytes> {
        our_mac.map_or_else(Vec::new, |ours| vec![self.frame(ours); count])
    }

    fn deadline(&self) -> Instant {
        self.since + self.timeout
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

#[cfg(test)]
mod tests {
    use skyvine_capture::wire::{classify, EventKind};

    use super::*;

    const VM: MacAddr = MacAddr([0x52, 0x54, 0, 0x77, 1, 1]);
    const ROUTER: MacAddr = MacAddr([0x52, 0x54, 0, 0x77, 2, 0xfe]);

    fn prober(now: Instant) -> Prober {
        Prober::new(
            Ipv4Addr::new(10, 77, 1, 1),
            VM,
            Duration::from_millis(300),
            now,
        )
    }

    #[test]
    fn probes_follow_the_schedule_then_the_deadline_expires() {
        let start = Instant::now();
        let mut p = prober(start);
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(p.next_at(), start);
        assert_eq!(p.tick(start), Tick::Probe(1));
        assert_eq!(p.tick(at(4)), Tick::Probe(0));
        assert_eq!(p.next_at(), at(5));
        // Late: every overdue probe goes out at once.
        assert_eq!(p.tick(at(50)), Tick::Probe(3));
        assert_eq!(p.tick(at(250)), Tick::Probe(2));
        assert_eq!(p.next_at(), at(300), "the next repeat is past the deadline");
        assert_eq!(p.tick(at(299)), Tick::Probe(0));
        assert_eq!(p.tick(at(300)), Tick::Expired);
    }

    #[test]
    fn a_long_timeout_keeps_probing_a_slow_guest() {
        let start = Instant::now();
        let mut p = Prober::new(
            Ipv4Addr::new(10, 77, 1, 1),
            VM,
            Duration::from_secs(3),
            start,
        );
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(p.tick(at(200)), Tick::Probe(6));
        assert_eq!(p.next_at(), at(450));
        assert_eq!(p.tick(at(2999)), Tick::Probe(11), "every 250 ms until 2950");
        assert_eq!(p.next_at(), at(3000));
        assert_eq!(p.tick(at(3000)), Tick::Expired);
    }

    #[test]
    fn a_short_timeout_cuts_the_schedule() {
        let start = Instant::now();
        let mut p = Prober::new(
            Ipv4Addr::new(10, 77, 1, 1),
            VM,
            Duration::from_millis(10),
            start,
        );
        assert_eq!(p.tick(start + Duration::from_millis(9)), Tick::Probe(2));
        assert_eq!(
            p.next_at(),
            start + Duration::from_millis(10),
            "the deadline, not +15 ms"
        );
        assert_eq!(p.tick(start + Duration::from_millis(10)), Tick::Expired);
    }

    #[test]
    fn only_the_probed_address_at_the_probed_mac_answers() {
        let p = prober(Instant::now());
        let ip = Ipv4Addr::new(10, 77, 1, 1);
        assert!(p.answered_by(ip, VM));
        assert!(!p.answered_by(ip, ROUTER));
        assert!(!p.answered_by(Ipv4Addr::new(10, 77, 1, 2), VM));
    }

    #[test]
    fn the_probe_is_unicast_to_the_vm_with_no_sender_address() {
        let frame = prober(Instant::now()).frame(ROUTER);
        let event = classify(&frame).unwrap();
        assert_eq!(event.eth_dst, VM);
        assert_eq!(event.eth_src, ROUTER);
        assert!(matches!(
            event.kind,
            EventKind::Probe { mac, target_ip } if mac == ROUTER && target_ip == Ipv4Addr::new(10, 77, 1, 1)
        ));
    }
}
