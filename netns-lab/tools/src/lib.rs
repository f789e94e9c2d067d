//! Helpers for the skyvine network-namespace lab (`netns-lab/lab.sh`).
//!
//! The binaries in `src/bin/` are small tools the lab runs inside its namespaces: a WAN delay
//! relay (`skyvine-delay`), a millisecond prober (`skyvine-probe`), a hypervisor announcement
//! sender and ARP watcher (`skyvine-announce`), a byte-checked TCP transfer (`skyvine-xfer`)
//! and a QMP client that live-migrates the lab's QEMU guest (`skyvine-qmp`).
//! This library holds their pure parts — the watcher's view of ARP frames (`wire`, on the
//! router's own frame codec), the deterministic byte stream, the probe gap statistics, the
//! delay queue, QMP messages — apart from the two modules that touch the kernel (`packet`, an
//! `AF_PACKET` socket; `netlink`, bridge-port moves and namespace switching). It never decides
//! anything about routing: it only makes, moves and measures traffic for tests and benchmarks.

pub mod delay;
pub mod gaps;
pub mod netlink;
pub mod packet;
pub mod qmp;
pub mod stream;
pub mod wire;

/// Asks for SCHED_FIFO for the calling thread (threads it spawns later inherit it), so a busy
/// machine delays the lab's timed sends less; says so on stderr and carries on without it.
pub fn try_realtime(tool: &str) {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sets the calling thread's policy; `param` is valid for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        eprintln!(
            "{tool}: SCHED_FIFO unavailable ({}), running with the default policy",
            std::io::Error::last_os_error()
        );
    }
}

/// Parses a byte count with an optional binary suffix: `1000`, `64K`, `10M`, `2G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, factor) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let factor: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(format!(
                        "unknown size suffix {c:?} in {text:?} (use K, M or G)"
                    ))
                }
            };
            (text.get(..i).unwrap_or_default(), factor)
        }
        _ => (text, 1),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 1000, 64K, 10M, 2G)"))?;
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
