//! `skyvine-probe`: the lab's millisecond prober. `echo` answers probes in the target VM;
//! `send` sends a small numbered UDP probe every interval on an absolute schedule and reports
//! the longest gap between consecutive echoes (a migration's outage), loss and RTT.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use skyvine_labtools::gaps::{summarize, Echo, ProbeReport};

/// Millisecond UDP prober: outage (longest echo gap), loss and RTT.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Keep the default scheduling policy (otherwise the prober runs SCHED_FIFO so a busy
    /// machine delays its probes less).
    #[arg(long, global = true)]
    no_realtime: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo every probe back to its sender (run in the target VM).
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7700")]
        bind: SocketAddr,
    },
    /// Send probes to an echo responder and report the longest gap between echoes.
    Send {
        /// The echo responder, e.g. 10.77.1.1:7700.
        #[arg(long)]
        to: SocketAddr,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        /// Time between probes, in milliseconds (fractions allowed).
        #[arg(long, default_value_t = 1.0)]
        interval_ms: f64,
        /// How long to keep listening for late echoes after the last probe, in milliseconds.
        #[arg(long, default_value_t = 500)]
        grace_ms: u64,
        /// A name for this source in the report (e.g. the VM name).
        #[arg(long, default_value = "")]
        label: String,
        /// Print one JSON object instead of a text line.
        #[arg(long)]
        json: bool,
    },
}

/// Probe payload: magic, session, sequence number, send offset in ns.
const MAGIC: &[u8; 4] = b"SVPB";
const PAYLOAD_LEN: usize = 28;

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.no_realtime {
        skyvine_labtools::try_realtime("skyvine-probe");
    }
    match args.command {
        Command::Echo { bind } => echo(bind),
        Command::Send {
            to,
            duration_s,
            interval_ms,
            grace_ms,
            label,
            json,
        } => {
            if !(duration_s.is_finite() && duration_s > 0.0 && duration_s <= 86_400.0) {
                bail!("--duration-s must be > 0 and at most 86400, got {duration_s}");
            }
            if !(interval_ms.is_finite() && (0.01..=60_000.0).contains(&interval_ms)) {
                bail!("--interval-ms must be between 0.01 and 60000, got {interval_ms}");
            }
            let run = SendRun {
                to,
                interval: Duration::from_secs_f64(interval_ms / 1000.0),
                count: (duration_s * 1000.0 / interval_ms).round().max(1.0) as u64,
                grace: Duration::from_millis(grace_ms),
            };
            let report = run.execute()?;
            print_report(&label, to, interval_ms, &report, json)
        }
    }
}

fn echo(bind: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    println!("skyvine-probe echo listening on {bind}");
    io::stdout().flush().context("writing to stdout")?;
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let payload = buf.get(..n).unwrap_or_default();
                if payload.len() == PAYLOAD_LEN && payload.starts_with(MAGIC) {
                    // A failed echo is a lost echo, which the sender counts.
                    let _ = socket.send_to(payload, peer);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("receiving probes"),
        }
    }
}

struct SendRun {
    to: SocketAddr,
    interval: Duration,
    count: u64,
    grace: Duration,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    probe: ProbeReport,
    send_errors: u64,
    recv_errors: u64,
}

impl SendRun {
    fn execute(&self) -> Result<Report> {
        let bind: SocketAddr = if self.to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind).context("binding the probe socket")?;
        socket
            .connect(self.to)
            .with_context(|| format!("connecting to {}", self.to))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .context("setting the receive timeout")?;
        let session = session_id();
        let start = Instant::now();
        let done = AtomicBool::new(false);
        let last_send_ns = AtomicU64::new(0);
        let send_errors = AtomicU64::new(0);
        let (echoes, recv_errors) = std::thread::scope(|scope| {
            let receiver =
                scope.spawn(|| receive(&socket, session, start, &done, &last_send_ns, self.grace));
            for seq in 0..self.count {
                let due = start
                    + self
                        .interval
                        .saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX));
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let sent = start.elapsed();
                let sent_ns = u64::try_from(sent.as_nanos()).unwrap_or(u64::MAX);
                let mut payload = [0u8; PAYLOAD_LEN];
                payload[..4].copy_from_slice(MAGIC);
                payload[4..12].copy_from_slice(&session.to_be_bytes());
                payload[12..20].copy_from_slice(&seq.to_be_bytes());
                payload[20..28].copy_from_slice(&sent_ns.to_be_bytes());
                if socket.send(&payload).is_err() {
                    send_errors.fetch_add(1, Ordering::Relaxed);
                }
                last_send_ns.store(sent_ns, Ordering::Relaxed);
            }
            done.store(true, Ordering::Release);
            receiver.join()
        })
        .map_err(|_| anyhow::anyhow!("the receive thread panicked"))?;
        let last_send = Duration::from_nanos(last_send_ns.load(Ordering::Relaxed));
        Ok(Report {
            probe: summarize(self.count, self.interval, last_send, &echoes),
            send_errors: send_errors.load(Ordering::Relaxed),
            recv_errors,
        })
    }
}

/// Collects echoes until the sender is done and the grace time after its last probe passed.
fn receive(
    socket: &UdpSocket,
    session: u64,
    start: Instant,
    done: &AtomicBool,
    last_send_ns: &AtomicU64,
    grace: Duration,
) -> (Vec<Echo>, u64) {
    let mut echoes = Vec::new();
    let mut errors = 0;
    let mut buf = [0u8; 2048];
    loop {
        if done.load(Ordering::Acquire)
            && start.elapsed() > Duration::from_nanos(last_send_ns.load(Ordering::Relaxed)) + grace
        {
            return (echoes, errors);
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                let arrived = start.elapsed();
                if let Some((seq, sent)) = parse_echo(buf.get(..n).unwrap_or_default(), session) {
                    echoes.push(Echo { seq, sent, arrived });
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // ICMP errors (unreachable, refused) surface here on a connected socket.
            Err(_) => errors += 1,
        }
    }
}

fn parse_echo(payload: &[u8], session: u64) -> Option<(u64, Duration)> {
    if payload.len() != PAYLOAD_LEN || !payload.starts_with(MAGIC) {
        return None;
    }
    let word = |at: usize| {
        payload
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    };
    (word(4)? == session).then_some(())?;
    Some((word(12)?, Duration::from_nanos(word(20)?)))
}

fn session_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

fn print_report(
    label: &str,
    to: SocketAddr,
    interval_ms: f64,
    report: &Report,
    json: bool,
) -> Result<()> {
    if json {
        let value = serde_json::json!({
            "label": label,
            "target": to.to_string(),
            "interval_ms": interval_ms,
            "report": report,
        });
        println!("{value}");
    } else {
        let p = &report.probe;
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        println!(
            "probe source={label} target={to} sent={} received={} lost={} dup={} reordered={} \
             max_gap_ms={:.3} gap_from_ms={:.1} max_loss_run_ms={:.3} loss_run_from_ms={:.1} \
             rtt_median_ms={} rtt_max_ms={} send_errors={} recv_errors={}",
            p.sent,
            p.received,
            p.lost,
            p.duplicates,
            p.reordered,
            p.max_gap_ms,
            p.gap_from_ms,
            p.max_loss_run_ms,
            p.loss_run_from_ms,
            opt(p.rtt_median_ms),
            opt(p.rtt_max_ms),
            report.send_errors,
            report.recv_errors,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_payload_round_trips_and_foreign_sessions_are_ignored() {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..4].copy_from_slice(MAGIC);
        payload[4..12].copy_from_slice(&9u64.to_be_bytes());
        payload[12..20].copy_from_slice(&5u64.to_be_bytes());
        payload[20..28].copy_from_slice(&1_000_000u64.to_be_bytes());
        assert_eq!(parse_echo(&payload, 9), Some((5, Duration::from_millis(1))));
        assert_eq!(parse_echo(&payload, 8), None);
        assert_eq!(parse_echo(&payload[..27], 9), None);
    }
}
