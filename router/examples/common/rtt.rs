//! The round-trip summary the benchmark's ping programs print (`wakeup_floor`,
//! `datagram_ceiling ping`): one probe at a time, so each either came back or timed out.

use std::time::Duration;

/// How long one round trip may take before it counts as lost.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Round trips measured so far, and how many probes got no answer.
#[derive(Debug, Default)]
pub struct Rtts {
    rtts: Vec<Duration>,
    lost: u32,
}

impl Rtts {
    pub fn answered(&mut self, rtt: Duration) {
        self.rtts.push(rtt);
    }

    pub fn lost(&mut self) {
        self.lost += 1;
    }

    /// Reports losses on stderr and prints `{label} N round trips, median R us`; an error when
    /// no probe came back.
    pub fn print(mut self, label: &str, count: u32) -> anyhow::Result<()> {
        self.rtts.sort();
        let Some(median) = self.rtts.get(self.rtts.len() / 2) else {
            anyhow::bail!("no answer to any of {count} datagrams");
        };
        if self.lost > 0 {
            eprintln!(
                "{label} {} of {count} datagrams got no answer within {ANSWER_TIMEOUT:?}",
                self.lost
            );
        }
        println!(
            "{label} {} round trips, median {:.1} us",
            self.rtts.len(),
            median.as_secs_f64() * 1e6
        );
        Ok(())
    }
}
