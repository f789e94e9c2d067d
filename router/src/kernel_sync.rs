//! Keeps the kernel in step with the core, off the critical path of any migration: the core's
//! targeted changes ([`KernelOp`]) are applied as they come, one netlink request per route or
//! neighbour entry; a full reconcile (dump, diff, repair) runs at start, a while after a failed
//! targeted change (with backoff) and every [`RECONCILE_INTERVAL`], with its dump on a task of
//! its own so that changes go on meanwhile. Prefixes changed by targeted requests while a dump
//! was under way are left out of that repair (the dump may predate them).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use skyvine_core::node::KernelOp;

pub use crate::kernel::Desired;
use skyvine_tables::MacAddr;
use tokio::task::JoinHandle;

/// How often the kernel is reconciled in full even when nothing failed (an operator's `ip
/// route del`, another program's changes).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// First wait before a failed kernel change is repaired; it doubles with every failure.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two repairs: the kernel must catch up with the tables eventually.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Where the daemon's kernel state goes: the real netlink kernel, or a recording fake.
pub trait KernelOps: Send + 'static {
    /// What a dump found.
    type Applied: Send + 'static;

    /// Applies one targeted change; `mtu` is the route MTU of a route into the TUN towards a
    /// site reached through a relay.
    fn apply_op(
        &mut self,
        op: &KernelOp,
        mtu: Option<u32>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A dump of the kernel's entries that runs without this object (on a task of its own).
    fn dump(&self) -> impl Future<Output = anyhow::Result<Self::Applied>> + Send + 'static;

    /// Makes the kernel hold the desired set (`route_mtus` gives some of `tun_routes`, those
    /// towards relayed sites, a route MTU), given a dump; prefixes in `skip` are left alone.
    fn repair(
        &mut self,
        applied: Self::Applied,
        desired: Desired,
        skip: BTreeSet<Ipv4Network>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Removes everything this router installed.
    fn clear(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl KernelOps for crate::kernel::Kernel {
    type Applied = BTreeSet<crate::kernel::Entry>;

    async fn apply_op(&mut self, op: &KernelOp, mtu: Option<u32>) -> anyhow::Result<()> {
        let result = crate::kernel::Kernel::apply_op(self, op, mtu).await;
        log_result(&result);
        result.map(|_| ())?;
        Ok(())
    }

    fn dump(&self) -> impl Future<Output = anyhow::Result<Self::Applied>> + Send + 'static {
        let dumper = self.dumper();
        async move { Ok(dumper.dump().await?) }
    }

    async fn repair(
        &mut self,
        applied: Self::Applied,
        desired: Desired,
        skip: BTreeSet<Ipv4Network>,
    ) -> anyhow::Result<()> {
        let result = crate::kernel::Kernel::repair(self, applied, &desired, &skip).await;
        log_result(&result);
        result.map(|_| ())?;
        Ok(())
    }

    async fn clear(&mut self) -> anyhow::Result<()> {
        let result = crate::kernel::Kernel::clear(self).await;
        log_result(&result);
        result.map(|_| ())?;
        Ok(())
    }
}

/// Logs what a change did (the applied part of a partly failed one too).
fn log_result(result: &Result<crate::kernel::Changes, crate::kernel::KernelError>) {
    let changes = match result {
        Ok(changes) => changes,
        Err(crate::kernel::KernelError::Apply { changes, .. }) => changes,
        Err(_) => return,
    };
    for entry in &changes.added {
        tracing::info!(%entry, "kernel entry installed");
    }
    for entry in &changes.removed {
        tracing::info!(%entry, "kernel entry removed");
    }
}

/// The kernel side of the main loop.
#[derive(Debug)]
pub struct KernelSync<K: KernelOps> {
    kernel: K,
    /// Targeted changes not applied yet, with their route MTU.
    pending: Vec<(KernelOp, Option<u32>)>,
    /// A full dump under way, and the prefixes changed since it began.
    dumping: Option<JoinHandle<anyhow::Result<K::Applied>>>,
    touched: BTreeSet<Ipv4Network>,
    /// Whether the kernel may differ from the tables (a change failed, no repair since).
    behind: bool,
    failures: u32,
    /// When to repair after a failure.
    retry_at: Option<tokio::time::Instant>,
    /// When the next full reconcile is due.
    next_reconcile: tokio::time::Instant,
}

impl<K: KernelOps> KernelSync<K> {
    pub fn new(kernel: K) -> Self {
        KernelSync {
            kernel,
            pending: Vec::new(),
            dumping: None,
            touched: BTreeSet::new(),
            behind: false,
            failures: 0,
            retry_at: None,
            next_reconcile: tokio::time::Instant::now() + RECONCILE_INTERVAL,
        }
    }

    pub fn push(&mut self, op: KernelOp, mtu: Option<u32>) {
        self.pending.push((op, mtu));
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Applies the pending targeted changes in order. Returns whether the kernel now holds
    /// the tables (every change applied, and no earlier failure left to repair).
    pub async fn flush(&mut self) -> bool {
        for (op, mtu) in std::mem::take(&mut self.pending) {
            self.touched.insert(op.dst());
            if let Err(error) = self.kernel.apply_op(&op, mtu).await {
                self.failed(&error);
            }
        }
        !self.behind
    }

    /// Reconciles in full, inline (at start: nothing else to do before it). It supersedes the
    /// targeted changes pending.
    pub async fn reconcile_now(
        &mut self,
        tun_routes: BTreeSet<Ipv4Network>,
        lan_hosts: BTreeMap<Ipv4Addr, Option<MacAddr>>,
        route_mtus: BTreeMap<Ipv4Network, u32>,
    ) -> bool {
        self.pending.clear();
        let applied = self.kernel.dump().await;
        self.touched.clear();
        self.repaired(applied, tun_routes, lan_hosts, route_mtus)
            .await
    }

    /// When [`KernelSync::start_dump`] is due (none while a dump is under way).
    pub fn next_dump(&self) -> Option<tokio::time::Instant> {
        if self.dumping.is_some() {
            return None;
        }
        Some(
            self.retry_at
                .map_or(self.next_reconcile, |at| at.min(self.next_reconcile)),
        )
    }

    /// Starts a full dump on a task of its own.
    pub fn start_dump(&mut self) {
        self.touched.clear();
        self.dumping = Some(tokio::spawn(self.kernel.dump()));
    }

    /// The dump under way, once done (pending forever when none is).
    pub async fn dumped(&mut self) -> anyhow::Result<K::Applied> {
        match self.dumping.as_mut() {
            Some(task) => {
                let result = task.await;
                self.dumping = None;
                result.unwrap_or_else(|error| Err(anyhow::anyhow!("kernel dump task: {error}")))
            }
            None => std::future::pending().await,
        }
    }

    /// Repairs the kernel from a finished dump. Returns whether it now holds the tables.
    pub async fn repaired(
        &mut self,
        applied: anyhow::Result<K::Applied>,
        tun_routes: BTreeSet<Ipv4Network>,
        lan_hosts: BTreeMap<Ipv4Addr, Option<MacAddr>>,
        route_mtus: BTreeMap<Ipv4Network, u32>,
    ) -> bool {
        let desired = Desired {
            tun_routes,
            lan_hosts,
            route_mtus,
        };
        self.next_reconcile = tokio::time::Instant::now() + RECONCILE_INTERVAL;
        self.retry_at = None;
        let skip = std::mem::take(&mut self.touched);
        let result = match applied {
            Ok(applied) => self.kernel.repair(applied, desired, skip).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, "kernel repaired after failures");
                }
                self.failures = 0;
                self.behind = false;
                self.retry_at = None;
                true
            }
            Err(error) => {
                self.failed(&error);
                false
            }
        }
    }

    pub async fn clear(&mut self) -> anyhow::Result<()> {
        self.kernel.clear().await
    }

    fn failed(&mut self, error: &anyhow::Error) {
        self.behind = true;
        self.failures = self.failures.saturating_add(1);
        let backoff = RETRY_MIN
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(RETRY_MAX);
        let at = tokio::time::Instant::now() + backoff;
        self.retry_at = Some(self.retry_at.map_or(at, |earlier| earlier.min(at)));
        let error = format!("{error:#}");
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(
                error,
                failures = self.failures,
                retry_in_ms = backoff.as_millis(),
                "changing kernel routes failed; a full reconcile follows with backoff"
            );
        } else {
            tracing::debug!(
                error,
                failures = self.failures,
                "changing kernel routes failed again"
            );
        }
    }
}
