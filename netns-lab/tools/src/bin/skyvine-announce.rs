//! `skyvine-announce`: emits what a hypervisor emits after a live migration — QEMU's burst of
//! five RARP announcements, or one Xen-style gratuitous ARP — and watches an interface for
//! ARP/RARP frames (so the lab can prove the frames arrived).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use skyvine_labtools::netlink::{current_netns, enter_netns, enter_netns_file, RouteSocket};
use skyvine_labtools::packet::{
    interface_index, wait_readable, Direction, PacketSocket, ETH_P_ALL,
};
use skyvine_labtools::wire::{
    gratuitous_arp_request, rarp_announce, ArpFrame, FrameBytes, MacAddr,
};

/// Send hypervisor migration announcements, or watch ARP/RARP traffic.
#[derive(Debug, Parser)]
#[command(version)]
enum Command {
    /// QEMU/KVM's announcement: RARP requests (opcode 3, sender = target = MAC, IPs 0.0.0.0).
    Rarp {
        /// Interface to send on (the VM side of its link, so the frame enters the bridge through
        /// the VM's port as a tap write by QEMU does).
        #[arg(long)]
        iface: String,
        /// The migrated VM's MAC.
        #[arg(long)]
        mac: MacAddr,
        /// Send all announcements at once (QEMU when a paused destination VM is resumed)
        /// instead of on the schedule.
        #[arg(long)]
        burst: bool,
        /// Send times in ms after the first (QEMU: 0,50,200,450,800).
        #[arg(long, value_delimiter = ',', default_value = "0,50,200,450,800")]
        schedule_ms: Vec<u64>,
    },
    /// Xen's announcement: a gratuitous ARP request (sender IP = target IP = the VM's IP).
    Garp {
        /// Interface to send on (the VM's own interface).
        #[arg(long)]
        iface: String,
        /// The VM's MAC.
        #[arg(long)]
        mac: MacAddr,
        /// The VM's IPv4 address.
        #[arg(long)]
        ip: Ipv4Addr,
        /// How many to send, 100 ms apart.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Live-migrate a lab VM: detach its host-side link from its bridge, wait, attach it to
    /// another bridge, then announce as the hypervisor would — all in one process, so the
    /// pause is measured to the microsecond and the first announcement leaves right after
    /// the attach. Prints `pause_ms=.. pause_min_ms=.. announced=N`.
    Migrate(Migrate),
    /// Print every ARP/RARP frame seen on an interface, one line each.
    Watch {
        #[arg(long)]
        iface: String,
        /// Exit 0 after this many matching frames (default: run until --timeout-ms).
        #[arg(long)]
        count: Option<u64>,
        /// Give up after this long; exits 1 if --count frames were not seen by then.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Only count frames with this sender hardware address.
        #[arg(long)]
        mac: Option<MacAddr>,
        /// Only count frames of these kinds (rarp-request, garp-request, arp-request, ...).
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        /// Also report frames this host sent.
        #[arg(long)]
        outgoing: bool,
        /// One JSON object per frame.
        #[arg(long)]
        json: bool,
    },
}

/// `skyvine-announce migrate`.
#[derive(Debug, clap::Args)]
struct Migrate {
    /// Namespace (name under /run/netns) holding the bridges and the VM's host-side link.
    #[arg(long)]
    fabric_netns: String,
    /// The VM's host-side link (a bridge port), e.g. vm-a1.
    #[arg(long)]
    port: String,
    /// The bridge to attach it to, e.g. br-b.
    #[arg(long)]
    bridge: String,
    /// How long the VM is off every LAN, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// Announcement after the attach.
    #[arg(long, value_enum, default_value_t = Announce::Rarp)]
    announce: Announce,
    /// Namespace of the VM (announcements leave its interface, entering the bridge through
    /// the VM's port as a hypervisor's tap write does).
    #[arg(long)]
    vm_netns: String,
    /// The VM's interface.
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// The VM's MAC.
    #[arg(long)]
    mac: MacAddr,
    /// The VM's IPv4 address (needed for --announce garp).
    #[arg(long)]
    ip: Option<Ipv4Addr>,
}

/// What the hypervisor emits after a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Announce {
    /// QEMU/KVM: 5 RARPs at +0, 50, 200, 450, 800 ms.
    Rarp,
    /// Xen: one gratuitous ARP request from the VM.
    Garp,
    /// Nothing (the router must notice the VM's own traffic).
    None,
}

const QEMU_SCHEDULE_MS: [u64; 5] = [0, 50, 200, 450, 800];

fn main() -> Result<()> {
    match Command::parse() {
        Command::Rarp {
            iface,
            mac,
            burst,
            schedule_ms,
        } => rarp(&iface, mac, burst, &schedule_ms),
        Command::Garp {
            iface,
            mac,
            ip,
            count,
        } => garp(&iface, mac, ip, count),
        Command::Migrate(args) => migrate(args),
        Command::Watch {
            iface,
            count,
            timeout_ms,
            mac,
            kind,
            outgoing,
            json,
        } => {
            let filter = Filter {
                mac,
                kinds: kind,
                outgoing,
            };
            watch(
                &iface,
                count,
                timeout_ms.map(Duration::from_millis),
                &filter,
                json,
            )
        }
    }
}

/// QEMU's RARPs for `mac` on `iface`, on the schedule or all at once.
fn rarp(iface: &str, mac: MacAddr, burst: bool, schedule_ms: &[u64]) -> Result<()> {
    if schedule_ms.is_empty() || schedule_ms.len() > 100 {
        bail!("--schedule-ms needs 1 to 100 entries");
    }
    let schedule: Vec<_> = if burst {
        vec![Duration::ZERO; schedule_ms.len()]
    } else {
        schedule_ms
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect()
    };
    send_schedule(iface, &rarp_announce(mac), &schedule, "rarp")
}

/// `count` gratuitous ARP requests, 100 ms apart.
fn garp(iface: &str, mac: MacAddr, ip: Ipv4Addr, count: u32) -> Result<()> {
    if count == 0 || count > 100 {
        bail!("--count must be 1 to 100");
    }
    let schedule: Vec<_> = (0..u64::from(count))
        .map(|i| Duration::from_millis(100 * i))
        .collect();
    send_schedule(iface, &gratuitous_arp_request(mac, ip), &schedule, "garp")
}

/// Moves the VM's port to another bridge, then announces from the VM as its hypervisor would.
fn migrate(args: Migrate) -> Result<()> {
    let frame: Option<FrameBytes> = match (args.announce, args.ip) {
        (Announce::Rarp, _) => Some(rarp_announce(args.mac)),
        (Announce::Garp, Some(ip)) => Some(gratuitous_arp_request(args.mac, ip)),
        (Announce::Garp, None) => bail!("--announce garp needs --ip"),
        (Announce::None, _) => None,
    };
    let move_ = PortMove {
        fabric_netns: netns_path(&args.fabric_netns),
        port: args.port,
        bridge: args.bridge,
        pause: Duration::from_millis(args.pause_ms),
    };
    let sender = match frame {
        Some(frame) => Some((
            open_in_netns(&netns_path(&args.vm_netns), &args.iface)?,
            frame,
        )),
        None => None,
    };
    // The pause and the announcement schedule are timed sleeps: keep them on time.
    skyvine_labtools::try_realtime("skyvine-announce");
    let (pause, pause_min) = move_.run()?;
    let mut announced = 0;
    if let Some((socket, frame)) = sender {
        let schedule: &[u64] = match args.announce {
            Announce::Rarp => &QEMU_SCHEDULE_MS,
            Announce::Garp | Announce::None => &[0],
        };
        let at: Vec<_> = schedule
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
        let what = format!("{:?}", args.announce);
        announced = send_on(&socket, &args.iface, &frame, &at, &what)?;
    }
    println!(
        "pause_ms={:.3} pause_min_ms={:.3} announced={announced}",
        pause.as_secs_f64() * 1000.0,
        pause_min.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Sends `frame` at each offset of `schedule` (absolute, from the first send).
fn send_schedule(iface: &str, frame: &[u8], schedule: &[Duration], what: &str) -> Result<()> {
    let socket = PacketSocket::open(iface, 0).with_context(|| format!("opening {iface}"))?;
    for line in send_lines(&socket, iface, frame, schedule, what)? {
        println!("{line}");
    }
    Ok(())
}

/// As `send_schedule` on an open socket, logging to stderr; returns the count sent.
fn send_on(
    socket: &PacketSocket,
    iface: &str,
    frame: &[u8],
    schedule: &[Duration],
    what: &str,
) -> Result<usize> {
    let lines = send_lines(socket, iface, frame, schedule, what)?;
    for line in &lines {
        eprintln!("{line}");
    }
    Ok(lines.len())
}

fn send_lines(
    socket: &PacketSocket,
    iface: &str,
    frame: &[u8],
    schedule: &[Duration],
    what: &str,
) -> Result<Vec<String>> {
    let mut lines = Vec::with_capacity(schedule.len());
    let start = Instant::now();
    for (i, at) in schedule.iter().enumerate() {
        let due = start + *at;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        socket
            .send(frame)
            .with_context(|| format!("sending {what} #{i} on {iface}"))?;
        lines.push(format!(
            "sent {what} #{i} on {iface} at +{:.3} ms",
            start.elapsed().as_secs_f64() * 1000.0
        ));
    }
    Ok(lines)
}

fn netns_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        Path::new("/run/netns").join(name)
    }
}

/// Opens a send-only packet socket on `iface` inside another network namespace.
fn open_in_netns(netns: &Path, iface: &str) -> Result<PacketSocket> {
    let home = current_netns().context("opening the current network namespace")?;
    enter_netns(netns).with_context(|| format!("entering {}", netns.display()))?;
    let socket = PacketSocket::open(iface, 0);
    enter_netns_file(&home).context("returning to the original network namespace")?;
    socket.with_context(|| format!("opening {iface} in {}", netns.display()))
}

struct PortMove {
    fabric_netns: PathBuf,
    port: String,
    bridge: String,
    pause: Duration,
}

impl PortMove {
    /// Detaches, waits, attaches. Returns (detach start .. attach acknowledged, detach
    /// acknowledged .. attach start): the longest and shortest the port was off a bridge.
    fn run(&self) -> Result<(Duration, Duration)> {
        let home = current_netns().context("opening the current network namespace")?;
        enter_netns(&self.fabric_netns)
            .with_context(|| format!("entering {}", self.fabric_netns.display()))?;
        let prepared = (
            interface_index(&self.port),
            interface_index(&self.bridge),
            RouteSocket::open(),
        );
        enter_netns_file(&home).context("returning to the original network namespace")?;
        let (port, bridge, socket) = prepared;
        let port = port.with_context(|| format!("port {}", self.port))?;
        let bridge = u32::try_from(bridge.with_context(|| format!("bridge {}", self.bridge))?)
            .context("bridge index")?;
        let mut socket = socket.context("opening a netlink socket")?;
        let t0 = Instant::now();
        socket
            .set_master(port, 0)
            .with_context(|| format!("detaching {} from its bridge", self.port))?;
        let t1 = Instant::now();
        let due = t1 + self.pause;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let t2 = Instant::now();
        socket
            .set_master(port, bridge)
            .with_context(|| format!("attaching {} to {}", self.port, self.bridge))?;
        let t3 = Instant::now();
        Ok((t3 - t0, t2 - t1))
    }
}

struct Filter {
    mac: Option<MacAddr>,
    kinds: Vec<String>,
    outgoing: bool,
}

impl Filter {
    fn matches(&self, frame: &ArpFrame, direction: Direction) -> bool {
        (self.outgoing || direction == Direction::Incoming)
            && self.mac.is_none_or(|m| m == frame.arp.sender_mac)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == frame.kind().as_str()))
    }
}

fn watch(
    iface: &str,
    count: Option<u64>,
    timeout: Option<Duration>,
    filter: &Filter,
    json: bool,
) -> Result<()> {
    let socket =
        PacketSocket::open(iface, ETH_P_ALL).with_context(|| format!("opening {iface}"))?;
    socket.set_nonblocking().context("setting non-blocking")?;
    eprintln!("skyvine-announce: watching ARP/RARP on {iface}");
    let start = Instant::now();
    let deadline = timeout.map(|t| start + t);
    let mut seen = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        if count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                Some(left)
            }
            None => None,
        };
        if wait_readable(&[socket.as_raw_fd()], wait)?.is_empty() {
            continue;
        }
        while let Ok((n, direction)) = socket.recv(&mut buf) {
            let Ok(frame) = ArpFrame::parse(buf.get(..n).unwrap_or_default()) else {
                continue;
            };
            if !filter.matches(&frame, direction) {
                continue;
            }
            seen += 1;
            print_frame(&frame, direction, start.elapsed(), json);
            if count.is_some_and(|c| seen >= c) {
                break;
            }
        }
    }
    match count {
        Some(c) => {
            bail!("saw {seen} of {c} matching ARP/RARP frames on {iface} before the timeout")
        }
        None => Ok(()),
    }
}

fn print_frame(frame: &ArpFrame, direction: Direction, at: Duration, json: bool) {
    let dir = match direction {
        Direction::Incoming => "in",
        Direction::Outgoing => "out",
    };
    let ms = at.as_secs_f64() * 1000.0;
    let kind = frame.kind().as_str();
    let ((sha, spa), (tha, tpa)) = (frame.sender(), frame.target());
    if json {
        let value = serde_json::json!({
            "t_ms": ms, "dir": dir, "kind": kind, "src": frame.src.to_string(),
            "dst": frame.dst.to_string(), "sha": sha.to_string(), "spa": spa,
            "tha": tha.to_string(), "tpa": tpa,
        });
        println!("{value}");
    } else {
        println!(
            "t_ms={ms:.1} dir={dir} kind={kind} src={} dst={} sha={sha} spa={spa} tha={tha} tpa={tpa}",
            frame.src, frame.dst
        );
    }
}
