//! Convergence at scale: how long a live migration takes to reach every router, and what it
//! costs in control messages, bytes and CPU, at 3, 50 and 100 sites in a full mesh; what one
//! move costs at 1k, 10k and 100k GNDT entries (`tables.rs`: core CPU, forwarding snapshot,
//! and the kernel programming in a network namespace, `kernel.rs`); the initial sync of 100
//! sites with 100k entries (`sync.rs`: messages, bytes, seconds, memory per router).
//!
//! Every router is the real sans-IO core (`skyvine_core::node::Node`), all in this process.
//! The network is simulated and event driven: each control message is encoded with
//! `proto::encode`, held for the configured one-way delay in virtual time, and decoded with a
//! `proto::Decoder` per directed link, so bytes are the real framed sizes and CPU includes the
//! codec. Virtual time drives the nodes' clocks; real CPU time (this thread's CPU clock) is
//! measured around each phase's event loop.
//!
//! Per run: the initial full-mesh sync (every node sends every peer its table), one VM's hello
//! on its LAN (so its MAC/IP binding is known everywhere), then a migration of that VM to
//! another site, driven at the destination with QEMU's RARP schedule and an answer to the
//! destination's confirmation probe, as in `tests/tests/migration_sim.rs`.
//!
//! Run: `cargo bench -p skyvine-tests --bench scale` (everything; the kernel series needs
//! root, and says so without it), or `-- --quick` (1k and 10k entries, 3 and 50 sites, the
//! sync at 20 sites x 10k entries: what CI runs). Prints figures; asserts nothing about speed.

// Indices are node numbers this simulator assigns itself (0..sites), never input.
#![allow(clippy::indexing_slicing)]

mod kernel;
mod sync;
mod tables;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipnetwork::Ipv4Network;
use skyvine_capture::wire::{classify, EventKind};
use skyvine_core::fib::FibSnapshot;
use skyvine_core::node::{Effect, KernelOp, LanIdentity, Node, NodeConfig, DIGEST_INTERVAL};
use skyvine_core::proto::{encode, Decoder, Frame};
use skyvine_inject::wire as frames;
use skyvine_tables::{MacAddr, SiteId};

/// QEMU's announcement schedule after a live migration.
const RARP_SCHEDULE_MS: [u64; 5] = [0, 50, 200, 450, 800];
/// Each phase runs this long in virtual time: long enough for every effect of the phase
/// (probe timeouts, repeated gratuitous ARPs), short enough that the three phases end before
/// the first periodic digest.
const PHASE: Duration = Duration::from_millis(1500);

/// Counts the heap this process holds (for memory per router).
#[global_allocator]
static ALLOC: sync::Counting = sync::Counting;

fn main() -> Result<()> {
    let started = Instant::now();
    // `cargo bench` passes --bench; anything else but --quick is a mistake.
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--bench" => {}
            other => bail!("unknown argument '{other}' (only --quick)"),
        }
    }
    println!(
        "scale: full mesh, sans-IO routers in one process, virtual network delay, real CPU time{}",
        if quick { " (--quick)" } else { "" }
    );
    println!("       bytes = framed control-protocol bytes (4-byte length + JSON), no QUIC/UDP/IP overhead");
    let site_counts: &[usize] = if quick { &[3, 50] } else { &[3, 50, 100] };
    for delay_ms in [20u64, 0] {
        let delay = Duration::from_millis(delay_ms);
        let mut runs = Vec::new();
        for &sites in site_counts {
            runs.push(run(sites, delay).with_context(|| format!("{sites} sites, {delay_ms} ms"))?);
        }
        print_series(delay_ms, &runs);
    }
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let moves = tables::series(sizes)?;
    kernel::series(&moves)?;
    if quick {
        sync::series(20, 10_000)?;
    } else {
        sync::series(100, 100_000)?;
    }
    println!(
        "\nscale: done in {:.1} s wall",
        started.elapsed().as_secs_f64()
    );
    println!("Reproduce: cargo bench -p skyvine-tests --bench scale [-- --quick]");
    Ok(())
}

/// What one phase cost.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cost {
    messages: u64,
    bytes: u64,
    by_kind: BTreeMap<&'static str, (u64, u64)>,
    cpu: Duration,
    codec: Duration,
    lan_frames: u64,
    /// Virtual time from the phase's trigger until its goal held at every node.
    converged: Option<Duration>,
    /// Virtual time from the trigger to the last message delivered in the phase.
    quiet: Duration,
    /// Per router: CPU time in the core's handle_* calls (codec excluded).
    core: Vec<Duration>,
    /// Per router: wall time making forwarding snapshots (once per batch of changes, as the
    /// daemon does after each input).
    snapshot: Vec<Duration>,
    /// Per router: how many snapshots it made.
    snapshots: Vec<u32>,
    /// Per router: the targeted kernel changes it asked for.
    kernel: Vec<Vec<KernelOp>>,
}

impl Cost {
    fn new(sites: usize) -> Cost {
        Cost {
            core: vec![Duration::ZERO; sites],
            snapshot: vec![Duration::ZERO; sites],
            snapshots: vec![0; sites],
            kernel: vec![Vec::new(); sites],
            ..Cost::default()
        }
    }
}

#[derive(Debug)]
struct RunResult {
    sites: usize,
    sync: Cost,
    mv: Cost,
}

fn run(sites: usize, delay: Duration) -> Result<RunResult> {
    if 3 * PHASE >= DIGEST_INTERVAL {
        bail!("the phases would overlap the first periodic digest");
    }
    let mut sim = Sim::new(sites, delay)?;
    let t0 = sim.now;
    // 1. Full-mesh sync: every node has every site's prefix and LAN address.
    let expected = 2 * sites;
    sim.connect_all();
    let sync = sim.phase(t0 + PHASE, |node| node.gndt().len() >= expected)?;
    // 2. The VM says hello on its LAN: its router advertises its MAC/IP binding.
    let (vm_ip, vm_mac) = (sim.vm.ip, sim.vm.mac);
    let gateway = router_ip(sim.vm.at);
    let hello = frames::arp_request(vm_mac, vm_ip, gateway).to_vec();
    sim.schedule(
        sim.now,
        Event::Lan {
            node: sim.vm.at,
            frame: hello,
        },
    );
    let home = sim.names[sim.vm.at].clone();
    sim.phase(t0 + 2 * PHASE, |node| {
        node.gndt()
            .get(Ipv4Network::from(vm_ip))
            .is_some_and(|s| s.entry.mac == Some(vm_mac))
    })?;
    if sim
        .nodes
        .iter()
        .any(|n| n.gndt().owner(vm_ip) != Some(&home))
    {
        bail!("before the move not every router places {vm_ip} at {home}");
    }
    // 3. The move: the VM appears on the destination's LAN and QEMU announces it.
    let dest = sites - 1;
    let dest_name = sim.names[dest].clone();
    sim.vm.at = dest;
    sim.announce_rarp(dest, vm_mac);
    let mv = sim.phase(t0 + 3 * PHASE, |node| {
        node.gndt().owner(vm_ip) == Some(&dest_name)
    })?;
    if mv.converged.is_none() {
        bail!("the move of {vm_ip} did not reach every router");
    }
    Ok(RunResult { sites, sync, mv })
}

struct Vm {
    ip: Ipv4Addr,
    mac: MacAddr,
    at: usize,
}

impl Vm {
    /// A VM that is nowhere (no node's LAN answers for it) until a bench places one.
    fn nowhere() -> Vm {
        Vm {
            ip: Ipv4Addr::new(10, 250, 0, 1),
            mac: MacAddr([0x52, 0x54, 0xff, 0, 0, 1]),
            at: usize::MAX,
        }
    }
}

/// When an event happens; the sequence number keeps each link's order.
type Key = Reverse<(Instant, u64)>;

enum Event {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    /// A frame appears on a node's LAN.
    Lan { node: usize, frame: Vec<u8> },
    /// The node asked to be woken at `wanted` (superseded if it asks again).
    Timer { node: usize, wanted: Instant },
}

struct Sim {
    now: Instant,
    /// Per router: the snapshot the data plane would hold.
    fibs: Vec<Option<Arc<FibSnapshot>>>,
    delay: Duration,
    names: Vec<SiteId>,
    /// Per router: the prefixes its certificate certifies (its configured ones).
    certified: Vec<Vec<Ipv4Network>>,
    index: HashMap<SiteId, usize>,
    nodes: Vec<Node>,
    decoders: HashMap<(usize, usize), Decoder>,
    queue: BinaryHeap<(Key, usize)>,
    events: HashMap<usize, Event>,
    next_seq: u64,
    /// The timer each node has in the queue (later ones supersede it).
    timer_at: Vec<Option<Instant>>,
    vm: Vm,
    /// Other hosts that answer probes, by address: their MAC and the node whose LAN they are on.
    resident: HashMap<Ipv4Addr, (MacAddr, usize)>,
    cost: Cost,
}

impl Sim {
    fn new(sites: usize, delay: Duration) -> Result<Sim> {
        let vm = Vm {
            ip: host_ip(0, 1),
            mac: vm_mac(0, 1),
            at: 0,
        };
        Sim::with_layout(sites, delay, vm, |i| {
            let prefix = Ipv4Network::new(host_ip(i, 0), 24)?;
            let lndt = vec![
                Ipv4Network::from(host_ip(i, 1)),
                Ipv4Network::from(host_ip(i, 2)),
            ];
            Ok((vec![prefix], lndt, router_ip(i)))
        })
    }

    /// `layout(i)`: site i's prefixes, LNDT ranges and router address.
    fn with_layout(
        sites: usize,
        delay: Duration,
        vm: Vm,
        layout: impl Fn(usize) -> Result<(Vec<Ipv4Network>, Vec<Ipv4Network>, Ipv4Addr)>,
    ) -> Result<Sim> {
        let now = Instant::now();
        let names: Vec<SiteId> = (0..sites)
            .map(|i| SiteId::new(&format!("s{i:03}")))
            .collect::<Result<_, _>>()?;
        let mut nodes = Vec::with_capacity(sites);
        let mut certified = Vec::with_capacity(sites);
        for (i, me) in names.iter().enumerate() {
            let (prefixes, lndt, ip) = layout(i)?;
            certified.push(prefixes.clone());
            let peers = names.iter().filter(|p| *p != me).cloned().collect();
            let mut config = NodeConfig::new(me.clone(), prefixes, lndt, peers);
            config.lan = Some(LanIdentity {
                mac: router_mac(i),
                ip,
            });
            nodes.push(Node::new(config, now));
        }
        let index = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect();
        Ok(Sim {
            now,
            delay,
            index,
            timer_at: vec![None; sites],
            fibs: vec![None; sites],
            names,
            certified,
            nodes,
            decoders: HashMap::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_seq: 0,
            vm,
            resident: HashMap::new(),
            cost: Cost::new(sites),
        })
    }

    /// Every router learns that each other one is up: the connections of a full mesh, from now.
    fn connect_all(&mut self) {
        let sites = self.nodes.len();
        for i in 0..sites {
            for j in 0..sites {
                if i != j {
                    let (peer, certified) = (self.names[j].clone(), self.certified[j].clone());
                    self.nodes[i].handle_peer_up(peer, certified, self.now);
                }
            }
        }
    }

    /// QEMU's announcement of the VM with MAC `mac` on node `node`'s LAN: its RARP burst on
    /// [`RARP_SCHEDULE_MS`], from now.
    fn announce_rarp(&mut self, node: usize, mac: MacAddr) {
        let at = self.now;
        for ms in RARP_SCHEDULE_MS {
            let frame = frames::rarp_announce(mac).to_vec();
            self.schedule(at + Duration::from_millis(ms), Event::Lan { node, frame });
        }
    }

    /// Runs `f` on node `i`, charging its CPU time to the node.
    fn on_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let t = thread_cpu();
        let result = f(&mut self.nodes[i], self.now);
        self.cost.core[i] += thread_cpu().saturating_sub(t);
        result
    }

    /// Runs every event up to `until` and reports the phase's cost; `goal` is checked on each
    /// node an event touched, and `converged` is when it first held at all of them.
    fn phase(&mut self, until: Instant, goal: impl Fn(&Node) -> bool) -> Result<Cost> {
        let start = self.now;
        self.cost = Cost::new(self.nodes.len());
        let mut done: Vec<bool> = self.nodes.iter().map(&goal).collect();
        let mut left = done.iter().filter(|d| !**d).count();
        let mut converged = (left == 0).then_some(Duration::ZERO);
        let cpu0 = thread_cpu();
        // Effects of what happened just before (peers up) belong to this phase.
        for i in 0..self.nodes.len() {
            self.drain(i)?;
        }
        let mut same_instant = 0u32;
        while let Some((Reverse((at, _)), id)) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            same_instant = if at > self.now { 0 } else { same_instant + 1 };
            if same_instant > 10_000_000 {
                bail!("no progress: 10M events at one instant");
            }
            self.now = self.now.max(at);
            let touched = match self
                .events
                .remove(&id)
                .ok_or_else(|| anyhow!("event {id} lost"))?
            {
                Event::Deliver { from, to, bytes } => {
                    self.deliver(from, to, &bytes)?;
                    self.cost.quiet = self.now - start;
                    to
                }
                Event::Lan { node, frame } => {
                    self.lan_frame(node, &frame)?;
                    node
                }
                Event::Timer { node, wanted } => {
                    if self.timer_at.get(node).copied().flatten() != Some(wanted) {
                        continue;
                    }
                    self.timer_at[node] = None;
                    self.on_node(node, Node::handle_timeout);
                    node
                }
            };
            self.drain(touched)?;
            if !done[touched] && goal(&self.nodes[touched]) {
                done[touched] = true;
                left -= 1;
                if left == 0 {
                    converged.get_or_insert(self.now - start);
                }
            }
        }
        self.now = until;
        let mut cost = std::mem::replace(&mut self.cost, Cost::new(self.nodes.len()));
        cost.cpu = thread_cpu().saturating_sub(cpu0);
        cost.converged = converged;
        Ok(cost)
    }

    /// A frame appears on node `at`'s LAN.
    fn lan_frame(&mut self, at: usize, frame: &[u8]) -> Result<()> {
        let event = classify(frame).map_err(|e| anyhow!("frame does not classify: {e:?}"))?;
        self.on_node(at, |node, now| node.handle_lan_event(event, now));
        self.drain(at)
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: &[u8]) -> Result<()> {
        let t = Instant::now();
        let decoder = self.decoders.entry((from, to)).or_default();
        decoder.push(bytes);
        let mut messages = Vec::new();
        while let Some(message) = decoder.next_message()? {
            messages.push(message);
        }
        self.cost.codec += t.elapsed();
        let name = self.names[from].clone();
        for frame in messages {
            self.on_node(to, |node, now| {
                node.handle_message(&name, frame.message, now)
            });
        }
        Ok(())
    }

    /// Applies node `i`'s effects: messages go on the wire, the kernel is "applied" at once,
    /// LAN frames reach the VM (which answers probes for its address).
    fn drain(&mut self, i: usize) -> Result<()> {
        let mut tables_changed = false;
        while let Some(effect) = self.nodes[i].poll_effect() {
            match effect {
                Effect::Send { to, message } => {
                    let j = *self
                        .index
                        .get(&to)
                        .ok_or_else(|| anyhow!("send to unknown {to}"))?;
                    let t = Instant::now();
                    // One network: the frame names the default one, as a [lan] config's does.
                    let frame = Frame::new(skyvine_core::config::DEFAULT_NETWORK, message);
                    let bytes = encode(&frame)?;
                    let message = frame.message;
                    self.cost.codec += t.elapsed();
                    self.cost.messages += 1;
                    self.cost.bytes += bytes.len() as u64;
                    let kind = self.cost.by_kind.entry(message.kind()).or_default();
                    kind.0 += 1;
                    kind.1 += bytes.len() as u64;
                    self.schedule(
                        self.now + self.delay,
                        Event::Deliver {
                            from: i,
                            to: j,
                            bytes,
                        },
                    );
                }
                Effect::LanCopies { .. } => {}
                Effect::TablesChanged => {
                    tables_changed = true;
                    self.on_node(i, Node::handle_kernel_applied);
                }
                Effect::Kernel(op) => {
                    self.cost.kernel[i].push(op);
                    self.on_node(i, Node::handle_kernel_applied);
                }
                Effect::Transmit { frame } => {
                    self.cost.lan_frames += 1;
                    self.on_transmit(i, &frame)?;
                }
            }
        }
        if tables_changed {
            // As the daemon: one new snapshot for the data plane per batch of changes, the old
            // one dropped by the data plane right away.
            let t = Instant::now();
            let snapshot = self.nodes[i].fib_snapshot(self.now);
            self.cost.snapshot[i] += t.elapsed();
            self.cost.snapshots[i] += 1;
            self.fibs[i] = Some(snapshot);
        }
        let next = self.nodes[i].poll_timeout();
        if next != self.timer_at[i] {
            self.timer_at[i] = next;
            if let Some(wanted) = next {
                self.schedule(wanted.max(self.now), Event::Timer { node: i, wanted });
            }
        }
        Ok(())
    }

    fn on_transmit(&mut self, at: usize, frame: &[u8]) -> Result<()> {
        let event =
            classify(frame).map_err(|e| anyhow!("router frame does not classify: {e:?}"))?;
        if let EventKind::Probe {
            mac: router,
            target_ip,
        } = event.kind
        {
            let vm = (self.vm.at == at && self.vm.ip == target_ip).then_some(self.vm.mac);
            let resident = self
                .resident
                .get(&target_ip)
                .and_then(|&(mac, on)| (on == at).then_some(mac));
            let answer = vm
                .or(resident)
                .filter(|mac| event.eth_dst == *mac || event.eth_dst == MacAddr::BROADCAST);
            if let Some(mac) = answer {
                // Linux answers a probe (sender IP 0.0.0.0) with a reply to the prober's MAC.
                let reply = frames::proxy_arp_reply(mac, target_ip, router, Ipv4Addr::UNSPECIFIED);
                let event =
                    classify(&reply).map_err(|e| anyhow!("reply does not classify: {e:?}"))?;
                self.on_node(at, |node, now| node.handle_lan_event(event, now));
            }
        }
        Ok(())
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        let id = usize::try_from(self.next_seq).unwrap_or(usize::MAX);
        self.queue.push((Reverse((at, self.next_seq)), id));
        self.events.insert(id, event);
        self.next_seq += 1;
    }
}

/// Site `i`'s addresses: 10.(1 + i/250).(i%250).host.
fn host_ip(i: usize, host: u8) -> Ipv4Addr {
    let hi = u8::try_from(1 + i / 250).unwrap_or(u8::MAX);
    let lo = u8::try_from(i % 250).unwrap_or(0);
    Ipv4Addr::new(10, hi, lo, host)
}

fn router_ip(i: usize) -> Ipv4Addr {
    host_ip(i, 254)
}

fn site_bytes(i: usize) -> [u8; 2] {
    u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes()
}

fn router_mac(i: usize) -> MacAddr {
    let [hi, lo] = site_bytes(i);
    MacAddr([0x02, 0, 0, hi, lo, 0xfe])
}

fn vm_mac(i: usize, vm: u8) -> MacAddr {
    let [hi, lo] = site_bytes(i);
    MacAddr([0x52, 0x54, 0, hi, lo, vm])
}

/// This thread's CPU time (user + system).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn print_series(delay_ms: u64, runs: &[RunResult]) {
    println!("\n== one-way control-message delay {delay_ms} ms");
    println!(
        "{:>6} | {:>34} | {:>45} | {:>24}",
        "",
        "initial full-mesh sync",
        "one migration (RARP x5 + confirmation probe)",
        "move: messages by kind"
    );
    println!(
        "{:>6} | {:>8} {:>9} {:>9} {:>5} | {:>9} {:>7} {:>8} {:>9} {:>9} |",
        "sites",
        "all (ms)",
        "messages",
        "MB",
        "cpu s",
        "all (ms)",
        "msgs",
        "bytes",
        "cpu ms",
        "codec ms",
    );
    for r in runs {
        let kinds: Vec<String> =
            r.mv.by_kind
                .iter()
                .map(|(k, (n, _))| format!("{k} {n}"))
                .collect();
        println!(
            "{:>6} | {:>8} {:>9} {:>9.2} {:>5.2} | {:>9} {:>7} {:>8} {:>9.3} {:>9.3} | {}",
            r.sites,
            ms(r.sync.converged),
            r.sync.messages,
            r.sync.bytes as f64 / 1e6,
            r.sync.cpu.as_secs_f64(),
            ms(r.mv.converged),
            r.mv.messages,
            r.mv.bytes,
            r.mv.cpu.as_secs_f64() * 1e3,
            r.mv.codec.as_secs_f64() * 1e3,
            kinds.join(", "),
        );
    }
    println!(
        "  'all (ms)': virtual time until every router has the result (sync: every site's entries; move: \
         gndt().owner(vm) = destination); the last message of the move arrived at {} ms",
        runs.iter().map(|r| format!("{:.1}", r.mv.quiet.as_secs_f64() * 1e3)).collect::<Vec<_>>().join(" / ")
    );
    for r in runs {
        let n = r.sites as u64 - 1;
        let entries = r.mv.by_kind.get("entries").map_or(0, |(count, _)| *count);
        if entries == n * n {
            println!(
                "  {} sites: the move's {} entries messages = (N-1)^2: the destination's {} updates, \
                 then each receiver floods to the {} others (all of them arrive stale)",
                r.sites,
                entries,
                n,
                n.saturating_sub(1)
            );
        }
    }
    let Some(base) = runs.iter().find(|r| r.sites == 3) else {
        return;
    };
    for r in runs.iter().filter(|r| r.sites != 3) {
        println!(
            "  move {}/3 sites: messages x{:.1}, bytes x{:.1}, cpu x{:.1}   |   sync {}/3: messages x{:.1}, cpu x{:.1}",
            r.sites,
            ratio(r.mv.messages as f64, base.mv.messages as f64),
            ratio(r.mv.bytes as f64, base.mv.bytes as f64),
            ratio(r.mv.cpu.as_secs_f64(), base.mv.cpu.as_secs_f64()),
            r.sites,
            ratio(r.sync.messages as f64, base.sync.messages as f64),
            ratio(r.sync.cpu.as_secs_f64(), base.sync.cpu.as_secs_f64()),
        );
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "never".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1e3),
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}
