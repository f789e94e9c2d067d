//! What one move costs as the GNDT grows: 1k, 10k and 100k entries on three routers.
//!
//! Each site owns /24s (as many as its hosts need, 250 hosts each: the table grows by
//! subnets, a LAN's size stays). The tables are built untimed the way a real network builds
//! them: each router learns its own hosts from their ARP hellos on its LAN (paced under the
//! LAN's rate limit), the routers connect and sync by full tables, and then every third host
//! of site i+1 migrates to site i (a gratuitous ARP there, confirmed by the destination's
//! probe, [`MIGRATING`] at a time): a /32 route into the TUN at the other routers, a LAN
//! route and a permanent neighbour at its new site. Then home hosts of site 0 that never
//! moved move to site 2 one after the other, each with QEMU's RARP schedule and the
//! destination's confirmation probe answered. Per move and per router: the CPU time in the
//! core's handle_* calls (all of the phase: announcements, probes, timers, the periodic
//! digests that fall in it), the time to make the forwarding snapshots the data plane would
//! get, and the targeted kernel changes asked for (programmed for real by `kernel.rs`).
//!
//! The moves are measured twice: right after the build, and again after [`SETTLE`] of quiet.
//! Right after it, each router still holds what the build's migrations left (damping tracks,
//! departures, migration records within their relay window, tombstones), a third of its hosts
//! moved within the last minutes: at 100k entries that is 11k moves per site, at 1k 112. Its
//! expiry falls into the moves' timers, so that series measures the build's churn as much
//! as the table. The settled series compares the table sizes alone.

use super::*;

const SITES: usize = 3;
const SOURCE: usize = 0;
const THIRD: usize = 1;
const DEST: usize = 2;
/// Moves measured per table size (the median is printed).
const MOVES: usize = 9;
/// Spacing of the hosts' frames on a LAN while the tables are built: 1000 frames/s, under the
/// router's limit for a whole LAN (2000 events/s sustained).
const LAN_PACE: Duration = Duration::from_millis(1);
/// Hosts migrating at once while the tables are built: fewer than a destination confirms at
/// once (its pending migrations are bounded).
const MIGRATING: usize = 60;
/// Quiet before the second series of moves: longer than everything a move leaves behind
/// lives (the damping window, 180 s; a departure, 90 s; a tombstone, 600 s, swept each 60 s).
const SETTLE: Duration = Duration::from_secs(700);

/// One table size's moves, kept for the kernel series.
pub(crate) struct SizeRun {
    pub entries: usize,
    /// The destination's kernel routes before the moves.
    pub dest_tun_routes: std::collections::BTreeSet<Ipv4Network>,
    pub dest_lan_hosts: BTreeMap<Ipv4Addr, Option<MacAddr>>,
    /// Right after the build.
    pub moves: Vec<Cost>,
    /// After [`SETTLE`] of quiet.
    pub settled: Vec<Cost>,
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

/// The router of site i: in its own /24, 10.(100+i).255.0/24.
fn table_router(i: usize) -> Ipv4Addr {
    table_ip(100, i, 255 * 250 + 3)
}

/// Every third host of site i+1 (k % 3 == 2) migrated to site i while the tables were built:
/// its address lies in site i+1's prefixes (a host away from home keeps its home there).
fn away_ip(i: usize, k: usize) -> Ipv4Addr {
    home((i + 1) % SITES, k)
}

fn away_mac(i: usize, k: usize) -> MacAddr {
    table_mac((i + 1) % SITES, k)
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
    // The simulator's one VM is not used: hosts answer probes as `Sim::resident`.
    let nobody = Vm::nowhere();
    let per_site = entries / SITES;
    let mut sim = Sim::with_layout(SITES, delay, nobody, |i| {
        // The /24s of its hosts, and the router's own.
        let mut prefixes = (0..per_site.div_ceil(250))
            .map(|k| Ipv4Network::new(home(i, 250 * k), 24))
            .collect::<Result<Vec<_>, _>>()?;
        prefixes.push(Ipv4Network::new(table_router(i), 24)?);
        Ok((
            prefixes,
            vec![Ipv4Network::new(home(i, 0), 16)?],
            table_router(i),
        ))
    })?;
    // 1. Each router learns its own hosts: an ARP hello from each on its LAN.
    let t0 = sim.now;
    for i in 0..SITES {
        for k in 0..per_site {
            let (ip, mac) = (home(i, k), table_mac(i, k));
            sim.resident.insert(ip, (mac, i));
            let frame = frames::arp_request(mac, ip, table_router(i)).to_vec();
            sim.schedule(t0 + pace(k), Event::Lan { node: i, frame });
        }
    }
    sim.phase(t0 + pace(per_site) + PHASE, |_| true)?;
    let own: Vec<usize> = sim.nodes.iter().map(|n| n.gndt().len()).collect();
    if let Some(i) = (0..SITES).find(|&i| own[i] < per_site) {
        bail!(
            "{} learned {} entries of its {per_site} hosts",
            sim.names[i],
            own[i]
        );
    }
    // 2. The routers connect and sync by full tables.
    let expected: usize = own.iter().sum();
    sim.connect_all();
    let synced = sim.now + PHASE;
    sim.phase(synced, |node| node.gndt().len() >= expected)?;
    if let Some(short) = sim.nodes.iter().find(|n| n.gndt().len() < expected) {
        bail!(
            "{} holds {} entries after the sync, not {expected}",
            short.me(),
            short.gndt().len()
        );
    }
    // 3. Every third host of site i+1 migrates to site i, MIGRATING at a time on each LAN.
    let movers: Vec<usize> = (0..per_site).filter(|k| k % 3 == 2).collect();
    for batch in movers.chunks(MIGRATING) {
        let at = sim.now;
        for i in 0..SITES {
            for (n, &k) in batch.iter().enumerate() {
                let (ip, mac) = (away_ip(i, k), away_mac(i, k));
                sim.resident.insert(ip, (mac, i));
                let frame = frames::gratuitous_arp_request(mac, ip).to_vec();
                sim.schedule(at + pace(n), Event::Lan { node: i, frame });
            }
        }
        sim.phase(at + PHASE, |_| true)?;
    }
    for i in 0..SITES {
        let site = &sim.names[i];
        for &k in &movers {
            let ip = away_ip(i, k);
            if let Some(node) = sim.nodes.iter().find(|n| n.gndt().owner(ip) != Some(site)) {
                bail!(
                    "{} places {ip} at {:?}, not at {site} where it moved",
                    node.me(),
                    node.gndt().owner(ip)
                );
            }
        }
    }
    let dest_tun_routes = sim.nodes[DEST].tun_routes();
    let dest_lan_hosts = sim.nodes[DEST].lan_hosts();
    let moves = measure_moves(&mut sim, 0)?;
    sim.phase(sim.now + SETTLE, |_| true)?;
    let settled = measure_moves(&mut sim, MOVES)?;
    Ok(SizeRun {
        entries: sim.nodes[DEST].gndt().len(),
        dest_tun_routes,
        dest_lan_hosts,
        moves,
        settled,
    })
}

/// [`MOVES`] moves of site 0's home hosts to site 2, from the `first`-th on: each with QEMU's
/// RARP schedule and the destination's probe answered.
fn measure_moves(sim: &mut Sim, first: usize) -> Result<Vec<Cost>> {
    let mut moves = Vec::new();
    let dest_name = sim.names[DEST].clone();
    for m in first..first + MOVES {
        // Site 0's home hosts 0, 3, 6...: never one that moved.
        let (ip, mac) = (home(SOURCE, 3 * m), table_mac(SOURCE, 3 * m));
        sim.resident.insert(ip, (mac, DEST));
        let at = sim.now;
        sim.announce_rarp(DEST, mac);
        let cost = sim.phase(at + PHASE, |node| node.gndt().owner(ip) == Some(&dest_name))?;
        if cost.converged.is_none() {
            bail!("the move of {ip} did not reach every router");
        }
        moves.push(cost);
    }
    Ok(moves)
}

/// When the n-th of a LAN's frames goes, from the start of a batch.
fn pace(n: usize) -> Duration {
    LAN_PACE * u32::try_from(n).unwrap_or(u32::MAX)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Per router, the median over `moves` of `pick`.
fn per_router(moves: &[Cost], pick: impl Fn(&Cost, usize) -> Duration) -> [Duration; SITES] {
    [DEST, SOURCE, THIRD].map(|i| median(moves.iter().map(|c| pick(c, i)).collect()))
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn print(runs: &[SizeRun]) {
    println!("\n== one move as the GNDT grows: 3 routers, home hosts of site 0 move to site 2 ({MOVES} moves per series, medians)");
    println!(
        "{:>8} {:>8} | {:>30} | {:>30} | {:>9} | {:>12} | {:>8}",
        "entries",
        "series",
        "core CPU per move (us)",
        "forwarding snapshots (us)",
        "snapshots",
        "kernel ops",
        "reached"
    );
    println!(
        "{:>8} {:>8} | {:>9} {:>9} {:>10} | {:>9} {:>9} {:>10} | {:>9} | {:>12} | {:>8}",
        "",
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
        for (series, moves) in [("built", &run.moves), ("settled", &run.settled)] {
            let core = per_router(moves, |c, i| c.core[i]);
            let snap = per_router(moves, |c, i| c.snapshot[i]);
            let first = moves.first();
            let ops = |i: usize| first.map_or(0, |c| c.kernel[i].len());
            println!(
                "{:>8} {:>8} | {:>9} {:>9} {:>10} | {:>9} {:>9} {:>10} | {:>9} | {:>12} | {:>8}",
                run.entries,
                series,
                us(core[0]),
                us(core[1]),
                us(core[2]),
                us(snap[0]),
                us(snap[1]),
                us(snap[2]),
                first.map_or(0, |c| c.snapshots[DEST]),
                format!("{}/{}/{}", ops(DEST), ops(SOURCE), ops(THIRD)),
                ms(median(moves.iter().filter_map(|c| c.converged).collect()).into()),
            );
        }
    }
    println!(
        "  core CPU: every handle_* call of the move's 1.5 s (announcements, the probe, timers), \
         codec excluded; snapshots: FibSnapshot made after each batch of changes, old one \
         released at once as the data plane does"
    );
    println!(
        "  built: right after the build (a third of the hosts moved in the last minutes; their \
         damping tracks, departures and records expire during the moves); settled: after {} s \
         of quiet",
        SETTLE.as_secs()
    );
    let (Some(base), Some(top)) = (runs.first(), runs.last()) else {
        return;
    };
    if base.entries == top.entries {
        return;
    }
    let r = |a: Duration, b: Duration| ratio(b.as_secs_f64(), a.as_secs_f64());
    for (series, low, high) in [
        ("built", &base.moves, &top.moves),
        ("settled", &base.settled, &top.settled),
    ] {
        let core = (
            per_router(low, |c, i| c.core[i]),
            per_router(high, |c, i| c.core[i]),
        );
        let snap = (
            per_router(low, |c, i| c.snapshot[i]),
            per_router(high, |c, i| c.snapshot[i]),
        );
        println!(
            "  ratio {}/{} entries, {series}: core dest x{:.2} source x{:.2} third x{:.2}; snapshot dest x{:.2} source x{:.2} third x{:.2}",
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
}
