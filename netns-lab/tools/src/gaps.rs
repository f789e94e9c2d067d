//! Statistics of a probe run: the longest silence between consecutive echoes (the outage a
//! migration causes), loss, duplicates, reordering and round-trip times. Pure: times are
//! offsets from the start of the run, passed in.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

/// One echo that came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub seq: u64,
    /// When the probe was sent, as an offset from the start of the run.
    pub sent: Duration,
    /// When its echo arrived, same clock.
    pub arrived: Duration,
}

/// What `skyvine-probe send` reports per source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub sent: u64,
    /// Distinct sequence numbers echoed.
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Echoes that arrived after an echo of a later probe.
    pub reordered: u64,
    /// Longest time without any echo, counting from the first send and up to the last send.
    pub max_gap_ms: f64,
    /// Where that gap began and ended (offsets from the first send).
    pub gap_from_ms: f64,
    pub gap_to_ms: f64,
    /// Longest run of consecutive lost probes, as schedule time: (next received sequence -
    /// last received sequence) x interval, counting the run's bookends like `max_gap_ms`.
    /// Unlike `max_gap_ms` it ignores stalls of the prober itself (a late but delivered
    /// probe is not lost).
    pub max_loss_run_ms: f64,
    /// Where that run began (offset of its last received probe's schedule time).
    pub loss_run_from_ms: f64,
    pub rtt_median_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Summarizes a run in which `sent` probes went out every `interval`, the last at
/// `last_send`, and `echoes` (in arrival order) came back.
pub fn summarize(
    sent: u64,
    interval: Duration,
    last_send: Duration,
    echoes: &[Echo],
) -> ProbeReport {
    let mut seen = HashSet::with_capacity(echoes.len());
    let mut duplicates = 0;
    let mut reordered = 0;
    let mut highest: Option<u64> = None;
    let mut rtts = Vec::with_capacity(echoes.len());
    // Gap bookends: the run starts at offset 0 and lasts until the last probe left.
    let mut gap = (Duration::ZERO, Duration::ZERO);
    let mut previous = Duration::ZERO;
    let widen = |from: Duration, to: Duration, gap: &mut (Duration, Duration)| {
        if to.saturating_sub(from) > gap.1.saturating_sub(gap.0) {
            *gap = (from, to);
        }
    };
    for echo in echoes {
        if !seen.insert(echo.seq) {
            duplicates += 1;
            continue;
        }
        match highest {
            Some(h) if echo.seq < h => reordered += 1,
            _ => highest = Some(echo.seq),
        }
        rtts.push(echo.arrived.saturating_sub(echo.sent));
        widen(previous, echo.arrived, &mut gap);
        previous = previous.max(echo.arrived);
    }
    widen(previous, last_send, &mut gap);
    rtts.sort_unstable();
    let received = seen.len() as u64;
    let (run, run_from) = longest_loss_run(sent, &seen);
    let at = |seq: i128| ms(interval) * seq as f64;
    ProbeReport {
        sent,
        received,
        lost: sent.saturating_sub(received),
        duplicates,
        reordered,
        max_gap_ms: ms(gap.1.saturating_sub(gap.0)),
        gap_from_ms: ms(gap.0),
        gap_to_ms: ms(gap.1),
        max_loss_run_ms: at(run),
        loss_run_from_ms: at(run_from).max(0.0),
        rtt_median_ms: rtts.get(rtts.len() / 2).copied().map(ms),
        rtt_max_ms: rtts.last().copied().map(ms),
    }
}

/// The longest distance in sequence numbers between consecutive received probes, with
/// virtual received probes at -1 and `sent`; and where it starts.
fn longest_loss_run(sent: u64, seen: &HashSet<u64>) -> (i128, i128) {
    let mut received: Vec<u64> = seen.iter().copied().filter(|&s| s < sent).collect();
    received.sort_unstable();
    let mut best = (0i128, 0i128);
    let mut previous = -1i128;
    for seq in received
        .into_iter()
        .map(i128::from)
        .chain([i128::from(sent)])
    {
        if seq - previous > best.0 {
            best = (seq - previous, previous);
        }
        previous = seq;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn echo(seq: u64, sent_ms: u64, arrived_us: u64) -> Echo {
        Echo {
            seq,
            sent: Duration::from_millis(sent_ms),
            arrived: Duration::from_micros(arrived_us),
        }
    }

    #[test]
    fn steady_stream_has_interval_gaps() {
        let echoes: Vec<_> = (0..100).map(|i| echo(i, i, i * 1000 + 100)).collect();
        let r = summarize(100, MS, Duration::from_millis(99), &echoes);
        assert_eq!(
            (r.received, r.lost, r.duplicates, r.reordered),
            (100, 0, 0, 0)
        );
        assert!((r.max_gap_ms - 1.0).abs() < 1e-9, "{r:?}");
        assert!((r.max_loss_run_ms - 1.0).abs() < 1e-9, "{r:?}");
        assert!((r.rtt_median_ms.unwrap() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn outage_in_the_middle_is_the_max_gap() {
        let echoes: Vec<_> = (0..100)
            .filter(|i| !(40..60).contains(i))
            .map(|i| echo(i, i, i * 1000 + 100))
            .collect();
        let r = summarize(100, MS, Duration::from_millis(99), &echoes);
        assert_eq!(r.lost, 20);
        assert!((r.max_gap_ms - 21.0).abs() < 1e-9, "{r:?}");
        assert!((r.gap_from_ms - 39.1).abs() < 1e-9);
        assert!((r.max_loss_run_ms - 21.0).abs() < 1e-9, "{r:?}");
        assert!((r.loss_run_from_ms - 39.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn silence_until_the_end_counts() {
        let echoes: Vec<_> = (0..10).map(|i| echo(i, i, i * 1000 + 100)).collect();
        let r = summarize(100, MS, Duration::from_millis(99), &echoes);
        assert!((r.max_gap_ms - 89.9).abs() < 1e-9, "{r:?}");
        let none = summarize(100, MS, Duration::from_millis(99), &[]);
        assert!((none.max_gap_ms - 99.0).abs() < 1e-9);
        assert_eq!(none.rtt_median_ms, None);
        assert!((none.max_loss_run_ms - 101.0).abs() < 1e-9, "{none:?}");
        assert!((r.max_loss_run_ms - 91.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn a_stalled_prober_is_a_gap_but_not_a_loss_run() {
        // Probes 10..20 left 30 ms late together (sender stall); all came back.
        let echoes: Vec<_> = (0..40)
            .map(|i| {
                let arrived = if (10..20).contains(&i) {
                    40_000
                } else {
                    i * 1000 + 100
                };
                echo(i, i, arrived)
            })
            .collect();
        let r = summarize(40, MS, Duration::from_millis(39), &echoes);
        assert!(r.max_gap_ms > 30.0, "{r:?}");
        assert!((r.max_loss_run_ms - 1.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn duplicates_and_reordering_are_counted() {
        let echoes = [
            echo(0, 0, 100),
            echo(2, 2, 2100),
            echo(1, 1, 2200),
            echo(2, 2, 2300),
        ];
        let r = summarize(3, MS, Duration::from_millis(2), &echoes);
        assert_eq!(
            (r.received, r.lost, r.duplicates, r.reordered),
            (3, 0, 1, 1)
        );
    }
}
