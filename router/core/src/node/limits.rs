//! Rate limits for what the LAN can make the router do: token buckets per source MAC and one
//! for the whole LAN, with a bounded number of tracked sources. Time is an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use skyvine_tables::MacAddr;

/// Events one source MAC may cause per second, sustained.
pub const PER_SOURCE_RATE: f64 = 50.0;
/// Events one source MAC may cause in a burst.
pub const PER_SOURCE_BURST: f64 = 100.0;
/// Events the whole LAN may cause per second, sustained.
pub const GLOBAL_RATE: f64 = 2000.0;
/// Events the whole LAN may cause in a burst.
pub const GLOBAL_BURST: f64 = 4000.0;
/// Sources tracked at once; beyond this the least recently seen is forgotten.
pub const MAX_SOURCES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether the LAN may make the router act on one more event.
#[derive(Debug)]
pub struct LanLimiter {
    global: Bucket,
    sources: HashMap<MacAddr, Bucket>,
}

impl LanLimiter {
    pub fn new(now: Instant) -> Self {
        LanLimiter {
            global: Bucket::full(GLOBAL_BURST, now),
            sources: HashMap::new(),
        }
    }

    /// Takes a token for an event from `source`; false if it must be dropped.
    ///
    /// When [`MAX_SOURCES`] are tracked already, a new source is held to the global bucket
    /// alone until [`LanLimiter::handle_timeout`] forgets idle ones: memory stays bounded and
    /// no event costs more than a hash lookup.
    pub fn allow(&mut self, source: MacAddr, now: Instant) -> bool {
        let full = self.sources.len() >= MAX_SOURCES;
        let per_source = match self.sources.get_mut(&source) {
            Some(bucket) => bucket.take(PER_SOURCE_RATE, PER_SOURCE_BURST, now),
            None if full => true,
            None => {
                let mut bucket = Bucket::full(PER_SOURCE_BURST, now);
                let ok = bucket.take(PER_SOURCE_RATE, PER_SOURCE_BURST, now);
                self.sources.insert(source, bucket);
                ok
            }
        };
        per_source && self.global.take(GLOBAL_RATE, GLOBAL_BURST, now)
    }

    /// Forgets sources whose bucket has refilled (they are as good as new).
    pub fn handle_timeout(&mut self, now: Instant) {
        let refill = Duration::from_secs_f64(PER_SOURCE_BURST / PER_SOURCE_RATE);
        self.sources
            .retain(|_, b| now.saturating_duration_since(b.at) < refill);
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> MacAddr {
        let b = i.to_be_bytes();
        MacAddr([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn one_source_gets_its_burst_then_its_rate() {
        let now = Instant::now();
        let mut limiter = LanLimiter::new(now);
        let allowed = (0..1000).filter(|_| limiter.allow(mac(1), now)).count();
        assert_eq!(allowed, 100);
        let later = now + Duration::from_secs(1);
        let allowed = (0..1000).filter(|_| limiter.allow(mac(1), later)).count();
        assert_eq!(allowed, 50);
        // Another source is not starved by the first.
        assert!(limiter.allow(mac(2), later));
    }

    #[test]
    fn many_sources_are_capped_globally_and_in_memory() {
        let now = Instant::now();
        let mut limiter = LanLimiter::new(now);
        let allowed = (0..100_000).filter(|i| limiter.allow(mac(*i), now)).count();
        assert_eq!(allowed, 4000);
        assert!(limiter.tracked() <= MAX_SOURCES);
        limiter.handle_timeout(now + Duration::from_secs(3));
        assert_eq!(limiter.tracked(), 0);
    }
}
