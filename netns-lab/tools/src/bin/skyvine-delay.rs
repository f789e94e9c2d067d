//! `skyvine-delay`: a user-space layer-2 relay that holds every frame for a fixed time, so the
//! lab can emulate WAN latency on a kernel without `tc netem`. It attaches to N interfaces with
//! packet sockets (no bridge on them), learns MAC -> port, floods broadcasts and unknown
//! destinations, and transmits each frame on its egress port once the delay has passed, in
//! arrival order. Stops on SIGTERM/SIGINT and prints its counters as one JSON line.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use skyvine_labtools::delay::DelaySwitch;
use skyvine_labtools::packet::{wait_readable, Direction, PacketSocket, ETH_P_ALL};

/// Relay frames between interfaces with a fixed one-way delay (WAN emulation).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// An interface to relay on (repeat, at least two). Give it no IP and no bridge master.
    #[arg(long = "iface", required = true, num_args = 1)]
    ifaces: Vec<String>,
    /// One-way delay added to every frame, in milliseconds (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Most frames queued per egress port; more are dropped and counted.
    #[arg(long, default_value_t = 65536)]
    queue: usize,
    /// Print the counters every this many seconds (0 = only when stopping).
    #[arg(long, default_value_t = 0)]
    stats_interval_s: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction is plain old data; the handler only stores to an atomic, which is
        // async-signal-safe. No SA_RESTART, so ppoll returns EINTR and the loop sees STOP.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(io::Error::last_os_error()).context("installing signal handler");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.ifaces.len() < 2 {
        bail!("give at least two --iface to relay between");
    }
    if !(args.delay_ms.is_finite() && (0.0..=10_000.0).contains(&args.delay_ms)) {
        bail!(
            "--delay-ms must be between 0 and 10000, got {}",
            args.delay_ms
        );
    }
    if args.queue == 0 {
        bail!("--queue must be at least 1");
    }
    let delay = Duration::from_secs_f64(args.delay_ms / 1000.0);
    let sockets = args
        .ifaces
        .iter()
        .map(|name| open_port(name).with_context(|| format!("attaching to interface {name}")))
        .collect::<Result<Vec<_>>>()?;
    install_signal_handlers()?;
    eprintln!(
        "skyvine-delay: relaying between {} with {} ms one-way delay",
        args.ifaces.join(","),
        args.delay_ms
    );
    let mut relay = Relay {
        switch: DelaySwitch::new(sockets.len(), delay, args.queue),
        sockets,
        tx_errors: 0,
        truncated: 0,
    };
    relay.run(Duration::from_secs(args.stats_interval_s))?;
    relay.print_stats();
    Ok(())
}

fn open_port(name: &str) -> io::Result<PacketSocket> {
    let socket = PacketSocket::open(name, ETH_P_ALL)?;
    socket.ignore_outgoing()?;
    socket.set_nonblocking()?;
    socket.set_buffers(8 << 20)?;
    Ok(socket)
}

struct Relay {
    switch: DelaySwitch,
    sockets: Vec<PacketSocket>,
    tx_errors: u64,
    truncated: u64,
}

/// Largest frame accepted (offloads should be off on the relayed links; see lab.sh).
const MAX_FRAME: usize = 65536;
/// Frames read from one port before looking at the others and at due frames.
const BATCH: usize = 256;

impl Relay {
    fn run(&mut self, stats_every: Duration) -> Result<()> {
        let fds: Vec<_> = self.sockets.iter().map(|s| s.as_raw_fd()).collect();
        let mut buf = vec![0u8; MAX_FRAME + 1];
        let mut next_stats = Instant::now() + stats_every;
        let mut last_printed = None;
        while !STOP.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = self
                .switch
                .next_due()
                .map_or(Duration::from_millis(200), |due| {
                    due.saturating_duration_since(now)
                });
            let readable = wait_readable(&fds, Some(timeout)).context("waiting for frames")?;
            for port in readable {
                self.receive(port, &mut buf)?;
            }
            self.transmit_due();
            if !stats_every.is_zero() && Instant::now() >= next_stats {
                // Periodic lines only when something moved since the last one.
                let current = self.switch.stats();
                if last_printed != Some(current) {
                    self.print_stats();
                    last_printed = Some(current);
                }
                next_stats += stats_every;
            }
        }
        Ok(())
    }

    fn receive(&mut self, port: usize, buf: &mut [u8]) -> Result<()> {
        let Some(socket) = self.sockets.get(port) else {
            return Ok(());
        };
        for _ in 0..BATCH {
            match socket.recv(buf) {
                Ok((_, Direction::Outgoing)) => {}
                Ok((n, Direction::Incoming)) => {
                    if n > MAX_FRAME {
                        self.truncated += 1;
                        continue;
                    }
                    let frame = buf.get(..n).unwrap_or_default();
                    self.switch.handle_frame(port, frame, Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e).context("receiving a frame"),
            }
        }
        Ok(())
    }

    fn transmit_due(&mut self) {
        let now = Instant::now();
        while let Some((port, frame)) = self.switch.poll_transmit(now) {
            let sent = self.sockets.get(port).map(|s| s.send(&frame));
            if !matches!(sent, Some(Ok(()))) {
                self.tx_errors += 1;
            }
        }
    }

    fn print_stats(&self) {
        let stats = serde_json::json!({
            "switch": self.switch.stats(),
            "tx_errors": self.tx_errors,
            "truncated": self.truncated,
        });
        eprintln!("skyvine-delay stats: {stats}");
    }
}
