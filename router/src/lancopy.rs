//! At the source of a planned migration, the packets that LAN hosts send to the VM must also
//! reach the destination: the core has the LAN send them to the router (gratuitous ARP), and
//! the kernel forwards them to the VM as ever, while an nftables `dup` statement copies each
//! into the TUN device, whence the data plane sends it to the destination.
//!
//! The rules live in their own table, `ip skyvine_copies`, rewritten whole (one atomic
//! `nft -f -` transaction) whenever the set of copied addresses changes, and deleted when it is
//! empty; a task of its own runs `nft`, off the main loop. Without `nft` (package nftables)
//! the hint still copies at every other router; the source's own LAN then waits for the move
//! to reach it, one WAN delay more, and the router says so once.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// The nftables table that holds the copy rules (of network 0; see [`table_name`]).
pub const TABLE: &str = "skyvine_copies";

/// The nftables table of network `id`'s copy rules: [`TABLE`] for network 0 (as before several
/// networks), `skyvine_copies_<id>` for the others, so networks never rewrite each other's.
pub fn table_name(id: skyvine_core::config::NetworkId) -> String {
    if id == skyvine_core::config::DEFAULT_NETWORK {
        TABLE.to_owned()
    } else {
        format!("{TABLE}_{id}")
    }
}

/// Which addresses the LAN's packets are copied for; a background task keeps nftables in step.
#[derive(Debug)]
pub struct LanCopies {
    wanted: watch::Sender<BTreeSet<Ipv4Addr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LanCopies {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LanCopies {
    /// Starts the task that applies the rules for packets from `lan` copied into `tun`, in the
    /// nftables table `table`.
    pub fn start(lan: String, tun: String, table: String) -> LanCopies {
        let (wanted, watching) = watch::channel(BTreeSet::new());
        let task = tokio::spawn(keep_in_step(watching, lan, tun, table));
        LanCopies { wanted, task }
    }

    pub fn set(&self, ip: Ipv4Addr, copy: bool) {
        self.wanted.send_if_modified(|set| {
            if copy {
                set.insert(ip)
            } else {
                set.remove(&ip)
            }
        });
    }
}

async fn keep_in_step(
    mut wanted: watch::Receiver<BTreeSet<Ipv4Addr>>,
    lan: String,
    tun: String,
    table: String,
) {
    let mut warned = false;
    let mut applied = BTreeSet::new();
    loop {
        let set = wanted.borrow_and_update().clone();
        if set != applied {
            match apply(&ruleset(&set, &lan, &tun, &table)).await {
                Ok(()) => {
                    tracing::info!(
                        copied = set.len(),
                        "LAN packets copied into the overlay for planned migrations"
                    );
                    applied = set;
                }
                Err(error) if !warned => {
                    warned = true;
                    tracing::warn!(error = format!("{error:#}"), "cannot copy LAN packets for a planned migration (is nftables installed?); this site's LAN hosts reach the VM one WAN delay later after its move");
                }
                Err(error) => tracing::debug!(error = format!("{error:#}"), "nft failed again"),
            }
        }
        if wanted.changed().await.is_err() {
            // The router stops: leave no rules behind.
            if !applied.is_empty() {
                let _ = apply(&ruleset(&BTreeSet::new(), &lan, &tun, &table)).await;
            }
            return;
        }
    }
}

/// The nft script that makes `table` hold exactly the rules for `set` (none: no table).
pub fn ruleset(set: &BTreeSet<Ipv4Addr>, lan: &str, tun: &str, table: &str) -> String {
    // Declaring the table first makes the delete succeed whether or not it existed.
    let mut script = format!("table ip {table}\ndelete table ip {table}\n");
    if set.is_empty() {
        return script;
    }
    script += &format!(
        "table ip {table} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n"
    );
    for ip in set {
        script += &format!("    iifname \"{lan}\" ip daddr {ip} dup to {ip} device \"{tun}\"\n");
    }
    script += "  }\n}\n";
    script
}

async fn apply(script: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .context("writing to nft")?;
    }
    let out = child.wait_with_output().await.context("waiting for nft")?;
    if !out.status.success() {
        anyhow::bail!(
            "nft -f - failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_copies_each_address_from_the_lan_into_the_tun() {
        let set = BTreeSet::from(["10.77.1.10".parse().unwrap()]);
        let script = ruleset(&set, "lan0", "skyvine0", TABLE);
        assert!(script.starts_with("table ip skyvine_copies\ndelete table ip skyvine_copies\n"));
        assert!(script.contains(
            "iifname \"lan0\" ip daddr 10.77.1.10 dup to 10.77.1.10 device \"skyvine0\""
        ));
        let empty = ruleset(&BTreeSet::new(), "lan0", "skyvine0", TABLE);
        assert_eq!(
            empty,
            "table ip skyvine_copies\ndelete table ip skyvine_copies\n"
        );
    }
}
