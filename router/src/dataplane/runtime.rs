//! The async runtime the router runs on (and the benchmarks' own programs, so that they
//! measure the same layout).
//!
//! By default one thread runs everything: the TUN reader, the peer readers, quinn's endpoint
//! and connection drivers, and the control plane. quinn keeps each connection's state behind
//! one mutex, and a packet crosses three tasks on its way (TUN reader -> connection driver ->
//! socket on one side, endpoint driver -> connection driver -> peer reader on the other). On a
//! multi-threaded runtime those hand-overs become futex wake-ups between worker threads and
//! the mutex is contended; on one thread they are plain function calls in a run queue.
//! Measured (single TCP stream through a two-site lab on the 2-core development VM):
//! - quiet machine (load average 1.8), runs interleaved in one lab: one thread 2191, 2340, 2072
//!   Mbit/s at 4.9-5.2 router CPU s per GB with ~800 inner TCP retransmits per 8 s; two worker
//!   threads 2168, 2051, 1736 Mbit/s at 5.3-6.0 CPU s per GB with ~5000 retransmits (datagram
//!   queue drops while the connection driver waited for a worker);
//! - busy machine (load average 6-7 from other builds), `netns-lab/bench-throughput.sh
//!   --variant SKYVINE_WORKER_THREADS=2`: one thread 1280 Mbit/s (1 stream) and 1306 (4) at
//!   4.64 / 4.96 CPU s per GB; two workers 1449 and 1302 at 4.87 / 5.59. With other work
//!   competing for the cores, two threads get a bigger share of them; per GB carried, one
//!   thread stays the cheaper.
//!
//! The thread parks in epoll between bursts, so a lone packet (a ping) waits for its wake-up
//! at each router. Busy-polling instead does not pay on a shared machine: a task that kept the
//! thread from ever parking (`yield_now` in a loop) made the router a CPU hog
//! that the kernel schedules behind the other work on the 2-core machine, and the ping through the overlay rose from 0.42-0.44 ms to 11.9-12.1 ms (same lab,
//! alternating, load average 4.3-4.7).
//!
//! `SKYVINE_WORKER_THREADS=N` (N >= 1) switches to tokio's multi-threaded runtime with N
//! workers, e.g. for a gateway with many busy peers; 0 or unset means one thread.

use std::io;

/// Environment variable that selects the runtime: unset or 0 = one thread, N = N workers.
pub const WORKER_THREADS_ENV: &str = "SKYVINE_WORKER_THREADS";

/// Builds the runtime selected by [`WORKER_THREADS_ENV`].
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let threads = match std::env::var(WORKER_THREADS_ENV) {
        Ok(value) => parse_threads(&value)?,
        Err(std::env::VarError::NotPresent) => 0,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(invalid(format!("{WORKER_THREADS_ENV} is not valid UTF-8")))
        }
    };
    let mut builder = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

/// Keeps glibc's heap from shrinking and growing under the data plane's buffers.
///
/// quinn copies every received UDP batch (up to 64 KB) into a fresh buffer and frees it once
/// the datagrams are read. With glibc's defaults the top of the heap is trimmed back to the
/// kernel as soon as 128 KB or more are free there, and the next batch faults the pages in
/// again: 3.4% of the receiving router's CPU went to page faults under one TCP stream
/// (`netns-lab/profile-throughput.sh`, `exc_page_fault` under `BytesMut::from`). Trimming only
/// past 16 MiB free keeps those pages mapped; the heap still shrinks after a burst that left
/// more than 16 MiB free. Setting the trim threshold fixes glibc's mmap threshold too (it no
/// longer adapts), so it is set to 4 MiB: at 1 MiB every new 1 MiB datagram buffer of the
/// sending side was a fresh mmap (page faults there rose from 0.3% to 6.6%). With both
/// settings page faults were 0.0% of either router's samples. Call once at start-up, before
/// other threads allocate.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value) in [
        (libc::M_TRIM_THRESHOLD, 16 << 20),
        (libc::M_MMAP_THRESHOLD, 4 << 20),
    ] {
        // SAFETY: mallopt only adjusts glibc's allocator parameters; both are documented
        // parameters with in-range values, set before the process starts other threads.
        if unsafe { libc::mallopt(param, value) } != 1 {
            tracing::debug!(param, value, "mallopt refused an allocator setting");
        }
    }
}

fn parse_threads(value: &str) -> io::Result<usize> {
    value.trim().parse::<usize>().map_err(|_| {
        invalid(format!(
            "{WORKER_THREADS_ENV}={value:?}: expected a whole number of worker threads (0 = one thread)"
        ))
    })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_parse() {
        assert_eq!(parse_threads("0").unwrap(), 0);
        assert_eq!(parse_threads(" 4 ").unwrap(), 4);
        let error = parse_threads("many").unwrap_err();
        assert!(
            error.to_string().contains("SKYVINE_WORKER_THREADS"),
            "{error}"
        );
        assert!(parse_threads("-1").is_err());
    }
}
