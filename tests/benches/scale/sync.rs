//! The initial sync of a large network: N sites in a full mesh, E GNDT entries in all (E/N host
//! entries per site, inside its prefix), every router starting with only its own and all
//! peers coming up at once. Measured: control messages and framed bytes (real encoder and
//! decoder), virtual time until every router holds all E entries, this thread's CPU time (all
//! routers, and the busiest one), and memory per router: the heap this process holds after the
//! sync minus before the routers were made, divided by N (a counting global allocator; the
//! simulator's own state, nearly nothing once the queue is empty, is included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// The system allocator, counting the bytes currently allocated.
pub(crate) struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        new
    }
}

/// Site i's prefix: 10.(1+i).0.0/16 (i < 200).
fn site_ip(i: usize, k: usize) -> Ipv4Addr {
    let b = u8::try_from(1 + i).unwrap_or(u8::MAX);
    let hi = u8::try_from(k / 250).unwrap_or(u8::MAX);
    let lo = u8::try_from(k % 250 + 1).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, b, hi, lo)
}

pub(crate) fn series(sites: usize, entries: usize) -> Result<()> {
    if sites >= 200 {
        bail!("the layout has room for 199 sites");
    }
    let delay = Duration::from_millis(20);
    let heap0 = LIVE.load(Ordering::Relaxed);
    let mut sim = Sim::with_layout(sites, delay, Vm::nowhere(), |i| {
        let prefix = Ipv4Network::new(site_ip(i, 0), 16)?;
        Ok((vec![prefix], vec![prefix], site_ip(i, 255 * 250 + 3)))
    })?;
    // Each router's own hosts, learned on its LAN (each says hello to its gateway: the router
    // advertises the binding as its own entry), untimed, before any peer is up.
    let per_site = entries / sites;
    for i in 0..sites {
        let gateway = site_ip(i, 255 * 250 + 3);
        for k in 0..per_site {
            let hello = frames::arp_request(sync_mac(i, k), site_ip(i, k), gateway);
            sim.lan_frame(i, &hello)?;
        }
        while sim.nodes[i].poll_effect().is_some() {}
    }
    let expected = sites * (per_site + 2);
    let t0 = sim.now;
    sim.connect_all();
    let peak0 = LIVE.load(Ordering::Relaxed);
    PEAK.store(peak0, Ordering::Relaxed);
    let wall = Instant::now();
    let cost = sim.phase(t0 + PHASE, |node| node.gndt().len() >= expected)?;
    let wall = wall.elapsed();
    let peak = PEAK.load(Ordering::Relaxed);
    let Some(converged) = cost.converged else {
        bail!("the sync did not complete at every router");
    };
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(heap0);
    let busiest = cost.core.iter().max().copied().unwrap_or_default();
    println!("\n== initial sync: {sites} sites in a full mesh, {expected} GNDT entries ({per_site} hosts per site), one-way delay {} ms", delay.as_millis());
    println!(
        "  messages {}   bytes {:.1} MB ({:.0} per router sent)   every router complete after {:.1} ms (virtual)",
        cost.messages,
        cost.bytes as f64 / 1e6,
        cost.bytes as f64 / sites as f64,
        converged.as_secs_f64() * 1e3
    );
    println!(
        "  CPU: {:.2} s in all (core {:.2} s; codec {:.2} s wall), busiest router's core {:.3} s; {:.2} s wall for the simulation",
        cost.cpu.as_secs_f64(),
        cost.core.iter().sum::<Duration>().as_secs_f64(),
        cost.codec.as_secs_f64(),
        busiest.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  memory per router after the sync: {:.1} MB ({:.0} bytes per GNDT entry); peak while messages were in flight {:.0} MB for all",
        heap as f64 / sites as f64 / 1e6,
        heap as f64 / sites as f64 / expected as f64,
        peak.saturating_sub(heap0) as f64 / 1e6
    );
    let kinds: Vec<String> = cost
        .by_kind
        .iter()
        .map(|(k, (n, b))| format!("{k} {n} ({:.1} MB)", *b as f64 / 1e6))
        .collect();
    println!("  messages by kind: {}", kinds.join(", "));
    Ok(())
}

fn sync_mac(i: usize, k: usize) -> MacAddr {
    let [_, _, hi, lo] = u32::try_from(k).unwrap_or(u32::MAX).to_be_bytes();
    let site = u8::try_from(i).unwrap_or(u8::MAX);
    MacAddr([0x52, 0x55, site, 0, hi, lo])
}
