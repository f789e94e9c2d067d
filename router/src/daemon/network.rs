//! One virtual network's side of the main loop: its IO (TUN device, forwarding snapshot,
//! kernel routes, LAN) and what it waits for; the route MTUs of its routes towards sites reached
//! through a relay.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use skyvine_core::config::NetworkId;
use skyvine_core::node::Node;
use skyvine_tables::SiteId;

use super::{KernelOps, LanChannels, LanEvent};
use crate::fib::Fib;
use crate::kernel_sync::KernelSync;

/// One network's IO in the main loop: its TUN device, forwarding snapshot, kernel routes and
/// LAN.
pub(super) struct NetIo<D, K: KernelOps> {
    pub(super) id: NetworkId,
    pub(super) name: String,
    pub(super) device: Arc<D>,
    pub(super) fib: Arc<Fib>,
    pub(super) kernel: KernelSync<K>,
    /// Copies of LAN packets for planned migrations from here (with a LAN only).
    pub(super) copies: Option<crate::lancopy::LanCopies>,
    pub(super) lan: Option<LanChannels>,
    /// The tables changed since they were last published.
    pub(super) dirty: bool,
    /// The generation of the foreign MACs last handed to the LAN capture.
    pub(super) foreign_generation: Option<u64>,
    pub(super) tun_task: tokio::task::JoinHandle<()>,
}

/// Something one network's IO has for the main loop.
pub(super) enum NetEvent<A> {
    Lan(Option<LanEvent>),
    DumpDue,
    Dumped(anyhow::Result<A>),
}

impl<D, K: KernelOps> NetIo<D, K> {
    /// The next LAN event, due kernel dump or finished dump of this network.
    async fn next_event(&mut self) -> NetEvent<K::Applied> {
        let lan_event = async {
            match self.lan.as_mut().and_then(|lan| lan.events.as_mut()) {
                Some(events) => events.recv().await,
                None => std::future::pending().await,
            }
        };
        let next_dump = self.kernel.next_dump();
        let reconcile = async move {
            match next_dump {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = reconcile => NetEvent::DumpDue,
            applied = self.kernel.dumped() => NetEvent::Dumped(applied),
            event = lan_event => NetEvent::Lan(event),
        }
    }
}

/// The next event of any network's IO, with the network's index.
pub(super) async fn next_net_event<D, K: KernelOps>(
    io: &mut [NetIo<D, K>],
) -> (usize, NetEvent<K::Applied>) {
    if io.is_empty() {
        return std::future::pending().await;
    }
    let events = io
        .iter_mut()
        .enumerate()
        .map(|(index, net)| Box::pin(async move { (index, net.next_event().await) }));
    futures::future::select_all(events).await.0
}

/// The MTU of the route for `prefix` if it goes towards a site reached through a relay.
pub(super) fn route_mtu(
    node: &Node,
    route_mtus: &BTreeMap<SiteId, u32>,
    prefix: Ipv4Network,
) -> Option<u32> {
    let owner = node.gndt().get(prefix)?.entry.site();
    route_mtus.get(owner).copied()
}

/// The MTU of each route towards a site reached through a relay.
pub(super) fn relayed_route_mtus(
    node: &Node,
    route_mtus: &BTreeMap<SiteId, u32>,
    tun_routes: &BTreeSet<Ipv4Network>,
) -> BTreeMap<Ipv4Network, u32> {
    tun_routes
        .iter()
        .filter_map(|prefix| Some((*prefix, route_mtu(node, route_mtus, *prefix)?)))
        .collect()
}
