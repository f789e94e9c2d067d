//! `skyvine-flood`: floods a LAN with ARP and RARP frames at a fixed rate for a bounded time,
//! from one raw `AF_PACKET` socket, to check that a router's LAN side neither starves the data
//! plane nor grows without bound. Every frame's Ethernet source equals its sender MAC field
//! (frames that fail that check are ignored cheaply by the router; these must not be).
//!
//! Modes: `same-mac` (every frame from one MAC claiming one IP), `random-macs` (a fresh
//! locally administered MAC per frame, claiming one IP: a hijack flood) and `random-ips` (one
//! MAC claiming a random address of a range per frame: a binding-table flood). Frames alternate
//! between a gratuitous ARP request and a QEMU-style RARP announcement (`--kinds`).
//!
//! Prints one line when done: `skyvine-flood mode=.. sent=N failed=N duration_s=..
//! rate_fps=.. target_fps=..`, `rate_fps` being the frames actually sent per second.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use skyvine_labtools::packet::PacketSocket;
use skyvine_labtools::wire::{gratuitous_arp_request, rarp_announce, FrameBytes, MacAddr};

/// Flood an interface with ARP/RARP frames at a fixed rate for a bounded time.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Interface to send on (a VM's eth0).
    #[arg(long)]
    iface: String,
    /// Frames per second to aim for.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// How long to flood, in seconds (at most 600).
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// What varies from frame to frame.
    #[arg(long, value_enum, default_value_t = Mode::SameMac)]
    mode: Mode,
    /// Frame kinds, sent in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "arp,rarp")]
    kinds: Vec<Kind>,
    /// Source MAC for same-mac and random-ips (default: the interface's own MAC).
    #[arg(long)]
    mac: Option<MacAddr>,
    /// Address claimed by same-mac and random-macs frames.
    #[arg(long, default_value = "10.77.3.1")]
    ip: Ipv4Addr,
    /// Range the random-ips addresses are drawn from (CIDR).
    #[arg(long, default_value = "10.77.3.0/24")]
    ip_range: String,
    /// Seed of the pseudo-random MACs and addresses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One MAC, one claimed address.
    SameMac,
    /// A random locally administered MAC per frame, one claimed address.
    RandomMacs,
    /// One MAC, a random address of --ip-range per frame.
    RandomIps,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::SameMac => "same-mac",
            Mode::RandomMacs => "random-macs",
            Mode::RandomIps => "random-ips",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Gratuitous ARP request (sender IP = target IP).
    Arp,
    /// RARP request, opcode 3 (QEMU's announcement).
    Rarp,
}

/// Frames sent per pass of the pacing loop at most (keeps the schedule smooth).
const BATCH: u64 = 64;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate == 0 || args.rate > 10_000_000 {
        bail!("--rate must be 1 to 10000000 frames per second");
    }
    if !(args.duration_s > 0.0 && args.duration_s <= 600.0) {
        bail!("--duration-s must be more than 0 and at most 600");
    }
    if args.kinds.is_empty() {
        bail!("--kinds needs at least one of arp, rarp");
    }
    let (base, len) = parse_cidr(&args.ip_range)?;
    let own_mac = match args.mac {
        Some(mac) => mac,
        None => interface_mac(&args.iface)?,
    };
    let socket = PacketSocket::open(&args.iface, 0)
        .with_context(|| format!("opening a packet socket on {}", args.iface))?;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut frames = Frames {
        args: &args,
        own_mac,
        base,
        host_bits: 32 - u32::from(len),
        rng: XorShift::new(args.seed),
    };
    let outcome = flood(&args, &socket, &mut frames);
    if let Some(e) = &outcome.first_error {
        eprintln!(
            "skyvine-flood: {} sends failed; the first: {e}",
            outcome.failed
        );
    }
    let kinds: Vec<&str> = args
        .kinds
        .iter()
        .map(|k| match k {
            Kind::Arp => "arp",
            Kind::Rarp => "rarp",
        })
        .collect();
    println!(
        "skyvine-flood mode={} kinds={} sent={} failed={} duration_s={:.3} rate_fps={:.0} target_fps={}",
        args.mode.name(),
        kinds.join(","),
        outcome.sent,
        outcome.failed,
        outcome.took,
        outcome.sent as f64 / outcome.took.max(1e-9),
        args.rate
    );
    if outcome.sent == 0 {
        bail!("no frame could be sent on {}", args.iface);
    }
    Ok(())
}

/// What a flood did.
struct Outcome {
    sent: u64,
    failed: u64,
    first_error: Option<std::io::Error>,
    /// Seconds it ran.
    took: f64,
}

/// Sends `frames` at `--rate` until `--duration-s` is over or a signal stops it.
fn flood(args: &Args, socket: &PacketSocket, frames: &mut Frames<'_>) -> Outcome {
    let duration = Duration::from_secs_f64(args.duration_s);
    let start = Instant::now();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut first_error: Option<std::io::Error> = None;
    let mut n: u64 = 0;
    while !STOP.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * args.rate as f64) as u64;
        let behind = due.saturating_sub(n);
        if behind == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        for _ in 0..behind.min(BATCH) {
            match socket.send(&frames.nth(n)) {
                Ok(()) => sent += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
            n += 1;
        }
    }
    Outcome {
        sent,
        failed,
        first_error,
        took: start.elapsed().as_secs_f64(),
    }
}

/// Makes the flood's frames: kinds in turn, MAC and claimed address by `--mode`.
struct Frames<'a> {
    args: &'a Args,
    own_mac: MacAddr,
    /// The `--ip-range` network and its host bits.
    base: u32,
    host_bits: u32,
    rng: XorShift,
}

impl Frames<'_> {
    /// Frame number `n` of the flood.
    fn nth(&mut self, n: u64) -> FrameBytes {
        let kinds = &self.args.kinds;
        let turn = usize::try_from(n % kinds.len() as u64).unwrap_or(0);
        let kind = kinds.get(turn).copied().unwrap_or(Kind::Arp);
        let (mac, ip) = match self.args.mode {
            Mode::SameMac => (self.own_mac, self.args.ip),
            Mode::RandomMacs => (self.rng.local_mac(), self.args.ip),
            Mode::RandomIps => (
                self.own_mac,
                random_in(&mut self.rng, self.base, self.host_bits),
            ),
        };
        match kind {
            Kind::Arp => gratuitous_arp_request(mac, ip),
            Kind::Rarp => rarp_announce(mac),
        }
    }
}

/// The MAC of `iface` from sysfs (`ip netns exec` mounts the namespace's own sysfs).
fn interface_mac(iface: &str) -> Result<MacAddr> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (or pass --mac)"))?;
    text.trim()
        .parse()
        .with_context(|| format!("parsing the MAC in {path}"))
}

/// `a.b.c.d/len` into the network address and length.
fn parse_cidr(text: &str) -> Result<(u32, u8)> {
    let (addr, len) = text
        .split_once('/')
        .with_context(|| format!("--ip-range {text:?} must be a CIDR like 10.77.3.0/24"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("--ip-range {text:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (8..=32).contains(l))
        .with_context(|| format!("--ip-range {text:?}: length must be 8 to 32"))?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ok((u32::from(addr) & mask, len))
}

fn random_in(rng: &mut XorShift, base: u32, host_bits: u32) -> Ipv4Addr {
    let host_mask = 1u32.checked_shl(host_bits).map_or(u32::MAX, |v| v - 1);
    Ipv4Addr::from(base | (rng.next() as u32 & host_mask))
}

/// xorshift64*: fast, deterministic, plenty for made-up MACs and addresses.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A unicast, locally administered MAC (02:xx:..).
    fn local_mac(&mut self) -> MacAddr {
        let b = self.next().to_be_bytes();
        MacAddr([0x02, b[0], b[1], b[2], b[3], b[4]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_random_addresses_stay_inside() {
        let (base, len) = parse_cidr("10.77.3.9/24").unwrap();
        assert_eq!(
            (Ipv4Addr::from(base), len),
            (Ipv4Addr::new(10, 77, 3, 0), 24)
        );
        let mut rng = XorShift::new(7);
        for _ in 0..1000 {
            let ip = random_in(&mut rng, base, 8);
            assert_eq!(ip.octets()[..3], [10, 77, 3]);
        }
        assert_eq!(
            random_in(&mut rng, u32::from(Ipv4Addr::new(10, 0, 0, 1)), 0),
            Ipv4Addr::new(10, 0, 0, 1)
        );
        assert!(parse_cidr("10.77.3.0").is_err());
        assert!(parse_cidr("10.77.3.0/40").is_err());
    }

    #[test]
    fn random_macs_are_unicast_and_local() {
        let mut rng = XorShift::new(1);
        let a = rng.local_mac();
        let b = rng.local_mac();
        assert_ne!(a, b);
        assert!(!a.is_group());
        assert_eq!(a.0[0] & 0x02, 0x02);
    }
}
