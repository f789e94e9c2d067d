//! The learning switch with a fixed delay behind `skyvine-delay`: frames in (port, bytes, now),
//! frames out when due. Each egress port has a FIFO; with one fixed delay, FIFO order is due
//! order, so the queue is also the timer and frame order per port is kept. Bounded: a full
//! queue drops the frame and counts it.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::MacAddr;

/// Counters a relay prints when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwitchStats {
    pub received: u64,
    pub transmitted: u64,
    /// Frames flooded (broadcast, multicast or unknown destination).
    pub flooded: u64,
    /// Frame copies dropped because the egress queue was full.
    pub dropped_queue_full: u64,
    /// Frames dropped because they were too short to carry Ethernet addresses.
    pub dropped_runt: u64,
    /// Frames addressed to a MAC learned on the port they came in on.
    pub filtered_same_port: u64,
}

#[derive(Debug)]
struct Pending {
    due: Instant,
    frame: Rc<[u8]>,
}

/// A delaying learning switch over `ports` ports, numbered from 0.
#[derive(Debug)]
pub struct DelaySwitch {
    delay: Duration,
    capacity: usize,
    fdb: HashMap<MacAddr, usize>,
    queues: Vec<VecDeque<Pending>>,
    stats: SwitchStats,
}

impl DelaySwitch {
    /// `capacity` bounds each egress queue (frames).
    pub fn new(ports: usize, delay: Duration, capacity: usize) -> Self {
        DelaySwitch {
            delay,
            capacity,
            fdb: HashMap::new(),
            queues: (0..ports).map(|_| VecDeque::new()).collect(),
            stats: SwitchStats::default(),
        }
    }

    pub fn stats(&self) -> SwitchStats {
        self.stats
    }

    /// Takes a frame that arrived on `ingress` at `now`: learns its source, queues a copy for
    /// each egress port it must leave by.
    pub fn handle_frame(&mut self, ingress: usize, frame: &[u8], now: Instant) {
        self.stats.received += 1;
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            self.stats.dropped_runt += 1;
            return;
        };
        if !src.is_group() {
            self.fdb.insert(src, ingress);
        }
        let known = if dst.is_group() {
            None
        } else {
            self.fdb.get(&dst).copied()
        };
        let frame: Rc<[u8]> = Rc::from(frame);
        let due = now + self.delay;
        match known {
            Some(port) if port == ingress => self.stats.filtered_same_port += 1,
            Some(port) => self.enqueue(port, due, frame),
            None => {
                self.stats.flooded += 1;
                for port in (0..self.queues.len()).filter(|&p| p != ingress) {
                    self.enqueue(port, due, Rc::clone(&frame));
                }
            }
        }
    }

    fn enqueue(&mut self, port: usize, due: Instant, frame: Rc<[u8]>) {
        let Some(queue) = self.queues.get_mut(port) else {
            return;
        };
        if queue.len() >= self.capacity {
            self.stats.dropped_queue_full += 1;
        } else {
            queue.push_back(Pending { due, frame });
        }
    }

    /// The earliest time a queued frame becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front())
            .map(|p| p.due)
            .min()
    }

    /// A frame that is due at `now` and the port it leaves by; call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(usize, Rc<[u8]>)> {
        let (port, queue) = self
            .queues
            .iter_mut()
            .enumerate()
            .filter(|(_, q)| q.front().is_some_and(|p| p.due <= now))
            .min_by_key(|(_, q)| q.front().map(|p| p.due))?;
        let pending = queue.pop_front()?;
        self.stats.transmitted += 1;
        Some((port, pending.frame))
    }
}

fn mac_at(frame: &[u8], offset: usize) -> Option<MacAddr> {
    frame
        .get(offset..offset + 6)
        .and_then(|b| <[u8; 6]>::try_from(b).ok())
        .map(MacAddr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: u8, src: u8, tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
        f[14] = tag;
        f
    }

    fn drain(sw: &mut DelaySwitch, now: Instant) -> Vec<(usize, u8)> {
        std::iter::from_fn(|| sw.poll_transmit(now))
            .map(|(p, f)| (p, f[14]))
            .collect()
    }

    #[test]
    fn frames_wait_for_the_delay_then_leave_in_order() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(20);
        let mut sw = DelaySwitch::new(3, delay, 100);
        let mut bcast = frame(0xff, 1, 0);
        bcast[..6].copy_from_slice(&[0xff; 6]);
        sw.handle_frame(0, &bcast, t0);
        assert_eq!(sw.next_due(), Some(t0 + delay));
        assert!(drain(&mut sw, t0 + Duration::from_millis(19)).is_empty());
        assert_eq!(drain(&mut sw, t0 + delay), vec![(1, 0), (2, 0)]);
        // Port 0 owns MAC 1 now; unicast to it goes only there, in arrival order.
        for tag in 1..=5 {
            sw.handle_frame(
                2,
                &frame(1, 2, tag),
                t0 + Duration::from_millis(u64::from(tag)),
            );
        }
        let out = drain(&mut sw, t0 + Duration::from_millis(100));
        assert_eq!(out, (1..=5).map(|t| (0, t)).collect::<Vec<_>>());
        assert_eq!(sw.stats().transmitted, 7);
    }

    #[test]
    fn unknown_unicast_floods_and_same_port_is_filtered() {
        let t0 = Instant::now();
        let mut sw = DelaySwitch::new(3, Duration::ZERO, 100);
        sw.handle_frame(0, &frame(9, 1, 0), t0);
        assert_eq!(drain(&mut sw, t0), vec![(1, 0), (2, 0)]);
        sw.handle_frame(0, &frame(1, 3, 1), t0);
        assert!(drain(&mut sw, t0).is_empty());
        assert_eq!(sw.stats().filtered_same_port, 1);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let t0 = Instant::now();
        let mut sw = DelaySwitch::new(2, Duration::from_millis(5), 2);
        sw.handle_frame(1, &frame(0xfe, 2, 0), t0); // learn MAC 2 on port 1
        drain(&mut sw, t0 + Duration::from_millis(5));
        for tag in 0..4 {
            sw.handle_frame(0, &frame(2, 1, tag), t0);
        }
        assert_eq!(sw.stats().dropped_queue_full, 2);
        assert_eq!(
            drain(&mut sw, t0 + Duration::from_millis(5)),
            vec![(1, 0), (1, 1)]
        );
        sw.handle_frame(0, &[0u8; 8], t0);
        assert_eq!(sw.stats().dropped_runt, 1);
    }
}
