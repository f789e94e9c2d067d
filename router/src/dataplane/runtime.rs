//! The async runtime the router runs on (and the benchmarks' own programs, so that they
//! measure the same layout).
//!
//! By default one thread runs everything: the TUN reader, the peer readers, quinn's endpoint
//! and connection drivers, and the control plane. quinn keeps each connection's state behind
//! one mutex, and a packet crosses three tasks on its way (TUN reader -> connection driver ->
//! socket on one side, endpoint driver -> connection driver -> peer reader on the other). On a
//! multi-threaded runtime those hand-overs become futex wake-ups between worker threads and
//! the mutex is contended; on one thread they are plain function calls in a run queue.
//! Measured with `netns-lab/bench-throughput.sh`-style runs (single TCP stream through a
//! two-site lab, 2-core VM, runs interleaved in one lab): one thread carried 2191/2340/2072
//! Mbit/s at 4.9-5.2 router CPU s per GB with ~800 inner TCP retransmits per 8 s, two worker
//! threads 2168/2051/1736 Mbit/s at 5.3-6.0 CPU s/GB with ~5000 retransmits (datagram queue
//! drops while the driver waited for a worker).
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
