//! The userspace turnaround floor: what one trip through a sleeping userspace process costs on
//! this machine, with no work in between. `netns-lab/bench-throughput.sh` runs it between the
//! two router namespaces and prints it next to the tunnel's added round-trip time.
//!
//! `echo` answers each UDP datagram with itself from a blocking socket: the process sleeps in
//! `recv`, is woken by the kernel, and sends. `ping` sends one datagram every `--interval-ms`
//! (as the benchmark's ICMP pings do, so that the cores go idle between them), waits for the
//! answer and prints the median round trip:
//!
//! `wakeup_floor: N round trips, median R us`
//!
//! Against an ICMP ping between the same namespaces (answered inside the kernel, no process
//! woken; the pinger is woken once in both), the difference is one userspace turnaround: a
//! process woken from sleep, one receive and one send. A round trip through the overlay
//! crosses a router four times (the sending router and the receiving router, each way), and
//! each crossing is such a turnaround: a router that sleeps between packets cannot add less
//! than four of them.
//!
//!   wakeup_floor echo --bind 100.64.0.2:7402 --count 200
//!   wakeup_floor ping --bind 100.64.0.1:0 --connect 100.64.0.2:7402 --count 200

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[path = "common/rtt.rs"]
mod rtt;
use rtt::{Rtts, ANSWER_TIMEOUT};

#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Answer `--count` datagrams (each with itself), then exit.
    Echo {
        /// UDP address to bind.
        #[arg(long)]
        bind: SocketAddr,
        /// How many datagrams to answer.
        #[arg(long, default_value_t = 200)]
        count: u32,
        /// Give up when nothing arrived for this many seconds.
        #[arg(long, default_value_t = 20)]
        idle_timeout_s: u64,
    },
    /// Send `--count` datagrams one at a time and print the median round trip.
    Ping {
        /// UDP address to bind (port 0: any).
        #[arg(long)]
        bind: SocketAddr,
        /// The echo's address.
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 200)]
        count: u32,
        /// Pause between round trips, so that the machine is idle when each one starts.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
    },
}

/// Payload of each datagram: an ICMP echo's size (56 bytes of data, as `ping` sends).
const PAYLOAD: usize = 56;

fn main() -> anyhow::Result<()> {
    match Args::parse().role {
        Role::Echo {
            bind,
            count,
            idle_timeout_s,
        } => echo(bind, count, Duration::from_secs(idle_timeout_s)),
        Role::Ping {
            bind,
            connect,
            count,
            interval_ms,
        } => ping(bind, connect, count, Duration::from_millis(interval_ms)),
    }
}

fn echo(bind: SocketAddr, count: u32, idle: Duration) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    socket.set_read_timeout(Some(idle))?;
    let mut buf = [0u8; 2048];
    for answered in 0..count {
        let (len, from) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("waiting for datagram {} of {count}", answered + 1))?;
        let datagram = buf.get(..len).context("datagram longer than the buffer")?;
        socket.send_to(datagram, from)?;
    }
    Ok(())
}

fn ping(bind: SocketAddr, to: SocketAddr, count: u32, interval: Duration) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut rtts = Rtts::default();
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        std::thread::sleep(interval);
        let mut payload = seq.to_be_bytes().to_vec();
        payload.resize(PAYLOAD, 0);
        let sent = Instant::now();
        socket.send(&payload)?;
        // Skip late answers to earlier datagrams (their sequence number is not ours).
        loop {
            match socket.recv(&mut buf) {
                Ok(len) if buf.get(..4) == Some(&seq.to_be_bytes()[..]) && len == PAYLOAD => {
                    rtts.answered(sent.elapsed());
                    break;
                }
                Ok(_) => continue,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    rtts.lost();
                    break;
                }
                Err(error) => return Err(error).context("receiving an answer"),
            }
        }
    }
    rtts.print("wakeup_floor:", count)
}
