//! What one move costs as the GNDT grows: 1k, 10k and 100k entries on three routers.
//!
//! Each site owns /24s (as many as its hosts need, 250 hosts each: the table grows by
//! subnets, a LAN's size stays). Two thirds of its hosts live in them (their /32 agrees with
//! the prefix: no kernel route), one third migrated in long ago from outside any prefix (a
//! /32 route into the TUN at the other routers, a LAN route and a permanent neighbour at their
//! own). The tables are loaded untimed (entries messages handed to each core), then VMs of
//! site 0 move to site 2 one after the other, each with QEMU's RARP schedule and the
//! destination's confirmation probe answered. Per move and per router: the CPU time in the
//! core's handle_* calls (all of the phase: announcements, probes, timers), the time to make
//! the forwarding snapshots the data plane would get, and the targeted kernel changes asked
//! for (programmed for real by `kernel.rs`).

use super::*;
use skyvine_core::proto::{Message, MAX_ENTRIES_PER_MESSAGE};
use skyvine_tables::GndtEntry;

const SITES: usize = 3;
const SOURCE: usize = 0;
const THIRD: usize = 1;
const DEST: usize = 2;
/// Moves measured per table size (the median is printed).
const MOVES: usize = 5;

/// One table size's moves, kept for the kernel series.
pub(crate) struct SizeRun {
    pub entries: usize,
    /// The destination's kernel routes before the moves.
    pub dest_tun_routes: std::collections::BTreeSet<Ipv4Network>,
    pub dest_lan_hosts: BTreeMap<Ipv4Addr, Option<MacAddr>>,
    pub moves: Vec<Cost>,
}

pub(crate) fn series(sizes: &[usize]) -> Result<Vec<SizeRun>> {
    let mut runs = Vec::new();
    for &entries in sizes {
        runs.push(run(entries).with_context(|| format!("{entries} entries"))?);
    }
    print(&runs);
    Ok(runs)
}

/// Site i's hosts in its /24s of 10.(100+i).0.0/16.
fn home(i: usize, k: usize) -> Ipv4Addr {
    table_ip(100, i, k)
}

/// Every third host of site i moved in from the next site: its address lies in that site's
/// prefixes (where the next site has none of its own hosts), so that peers accept site i's
/// claim of it (a host away from home needs a home among the certified prefixes).
fn away(i: usize, k: usize) -> Ipv4Addr {
    home((i + 1) % SITES, k)
}

fn table_ip(base: usize, i: usize, k: usize) -> Ipv4Addr {
    let b = u8::try_from(base + i).unwrap_or(u8::MAX);
    let hi = u8::try_from(k / 250).unwrap_or(u8::MAX);
    let lo = u8::try_from(k % 250 + 1).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, b, hi, lo)
}

fn table_mac(i: usize, k: usize) -> MacAddr {
    let [_, _, hi, lo] = u32::try_from(k).unwrap_or(u32::MAX).to_be_bytes();
    let site = u8::try_from(i).unwrap_or(u8::MAX);
    let mid = u8::try_from(k >> 16).unwrap_or(u8::MAX);
    MacAddr([0x52, 0x54, site, mid, hi, lo])
}

fn run(entries: usize) -> Result<SizeRun> {
    let delay = Duration::from_millis(10);
    // Until the moves, the VM the simulator answers probes for is nowhere.
    let nobody = Vm::nowhere();
    // A router holds every other site's hosts (its own it knows from its LAN, not from peers).
    let per_site = entries / (SITES - 1);
    let mut sim = Sim::with_layout(SITES, delay, nobody, |i| {
        // The /24s of its hosts, and the router's own (10.(100+i).255.0/24).
        let mut prefixes = (0..per_site.div_ceil(250))
            .map(|k| Ipv4Network::new(home(i, 250 * k), 24))
            .collect::<Result<Vec<_>, _>>()?;
        let router = table_ip(100, i, 255 * 250 + 3);
        prefixes.push(Ipv4Network::new(router, 24)?);
        Ok((prefixes, vec![Ipv4Network::new(home(i, 0), 16)?], router))
    })?;
    let t0 = sim.now;
    sim.connect_all();
    let prefixes = per_site.div_ceil(250) + 1;
    sim.phase(t0 + PHASE, |node| {
        node.gndt().len() >= SITES * (prefixes + 1)
    })?;
    // Load the tables: every router gets every other site's hosts from that site's router.
    for i in 0..SITES {
        let owner = sim.names[i].clone();
        let hosts: Vec<GndtEntry> = (0..per_site)
            .map(|k| {
                let ip = if k % 3 == 2 { away(i, k) } else { home(i, k) };
                GndtEntry::host(ip, owner.clone(), 1, Some(table_mac(i, k)))
            })
            .collect();
        for j in (0..SITES).filter(|j| *j != i) {
            for chunk in hosts.chunks(MAX_ENTRIES_PER_MESSAGE) {
                let message = Message::Entries {
                    entries: chunk.to_vec(),
                };
                sim.nodes[j].handle_message(&owner, message, sim.now);
            }
            sim.drain(j)?;
        }
    }
    let loaded = sim.now + PHASE;
    sim.phase(loaded, |_| true)?;
    let expected = (SITES - 1) * per_site + SITES * (prefixes + 1);
    if let Some(short) = sim.nodes.iter().find(|n| n.gndt().len() < expected) {
        bail!(
            "{} holds {} entries, not {expected}",
            short.me(),
            short.gndt().len()
        );
    }
    let dest_tun_routes = sim.nodes[DEST].tun_routes();
    let dest_lan_hosts = sim.nodes[DEST].lan_hosts();
    let mut moves = Vec::new();
    let dest_name = sim.names[DEST].clone();
    for m in 0..MOVES {
        // Site 0's home hosts 0, 3, 6...: never one that moved in.
        let k = 3 * m;
        let (ip, mac) = (home(SOURCE, k), table_mac(SOURCE, k));
        sim.vm = Vm { ip, mac, at: DEST };
        let at = sim.now;
        sim.announce_rarp(DEST, mac);
        let cost = sim.phase(at + PHASE, |node| node.gndt().owner(ip) == Some(&dest_name))?;
        if cost.converged.is_none() {
            bail!("the move of {ip} did not reach every router");
        }
        moves.push(cost);
    }
    Ok(SizeRun {
        entries: expected,
        dest_tun_routes,
        dest_lan_hosts,
        moves,
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Per router, the median over the moves of `pick`.
fn per_router(run: &SizeRun, pick: impl Fn(&Cost, usize) -> Duration) -> [Duration; SITES] {
    [DEST, SOURCE, THIRD].map(|i| median(run.moves.iter().map(|c| pick(c, i)).collect()))
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn print(runs: &[SizeRun]) {
    println!("\n== one move as the GNDT grows: 3 routers, each VM of site 0 moves to site 2 ({MOVES} moves, medians)");
    println!(
        "{:>8} | {:>30} | {:>30} | {:>9} | {:>12} | {:>8}",
        "entries",
        "core CPU per move (us)",
        "forwarding snapshots (us)",
        "snapshots",
        "kernel ops",
        "reached"
    );
    println!(
        "{:>8} | {:>9} {:>9} {:>10} | {:>9} {:>9} {:>10} | {:>9} | {:>12} | {:>8}",
        "",
        "dest",
        "source",
        "third",
        "dest",
        "source",
        "third",
        "dest",
        "dest/src/3rd",
        "all (ms)"
    );
    for run in runs {
        let core = per_router(run, |c, i| c.core[i]);
        let snap = per_router(run, |c, i| c.snapshot[i]);
        let first = run.moves.first();
        let ops = |i: usize| first.map_or(0, |c| c.kernel[i].len());
        println!(
            "{:>8} | {:>9} {:>9} {:>10} | {:>9} {:>9} {:>10} | {:>9} | {:>12} | {:>8}",
            run.entries,
            us(core[0]),
            us(core[1]),
            us(core[2]),
            us(snap[0]),
            us(snap[1]),
            us(snap[2]),
            first.map_or(0, |c| c.snapshots[DEST]),
            format!("{}/{}/{}", ops(DEST), ops(SOURCE), ops(THIRD)),
            ms(median(run.moves.iter().filter_map(|c| c.converged).collect()).into()),
        );
    }
    println!(
        "  core CPU: every handle_* call of the move's 1.5 s (announcements, the probe, timers), \
         codec excluded; snapshots: FibSnapshot made after each batch of changes, old one \
         released at once as the data plane does"
    );
    let (Some(base), Some(top)) = (runs.first(), runs.last()) else {
        return;
    };
    if base.entries == top.entries {
        return;
    }
    let core = (
        per_router(base, |c, i| c.core[i]),
        per_router(top, |c, i| c.core[i]),
    );
    let snap = (
        per_router(base, |c, i| c.snapshot[i]),
        per_router(top, |c, i| c.snapshot[i]),
    );
    let r = |a: Duration, b: Duration| ratio(b.as_secs_f64(), a.as_secs_f64());
    println!(
        "  ratio {}/{} entries: core dest x{:.2} source x{:.2} third x{:.2}; snapshot dest x{:.2} source x{:.2} third x{:.2}",
        top.entries,
        base.entries,
        r(core.0[0], core.1[0]),
        r(core.0[1], core.1[1]),
        r(core.0[2], core.1[2]),
        r(snap.0[0], snap.1[0]),
        r(snap.0[1], snap.1[1]),
        r(snap.0[2], snap.1[2]),
    );
}
