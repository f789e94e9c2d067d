//! The netlink side of [`Kernel`]: one request per entry added or removed, the dump of what
//! the kernel holds with our protocol, and the reading of its messages.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};
use skyvine_tables::MacAddr;

use super::{Dev, Entry, Kernel, KernelError, RTPROT_SKYVINE};

/// Reads the kernel's routes and neighbour entries of our protocol; cheap to clone, so that a
/// full dump can run on a task of its own while targeted changes go on.
#[derive(Clone, Debug)]
pub struct Dumper {
    pub(super) handle: Handle,
    pub(super) tun_index: u32,
    pub(super) lan_index: u32,
    pub(super) table: u32,
    pub(super) own_devices_only: bool,
}

impl Dumper {
    fn dev(&self, ifindex: u32) -> Dev {
        if ifindex == self.tun_index {
            Dev::Tun
        } else if ifindex == self.lan_index {
            Dev::Lan
        } else {
            Dev::Other(ifindex)
        }
    }

    /// Every IPv4 route in our table and every IPv4 neighbour entry with our protocol (with a
    /// VRF: on our own devices).
    pub async fn dump(self) -> Result<BTreeSet<Entry>, KernelError> {
        let mut entries = BTreeSet::new();
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = routes.try_next().await.map_err(netlink("dumping routes"))? {
            if let Some((dst, oif, mtu)) = our_route(&route, self.table) {
                entries.insert(Entry::Route {
                    dst,
                    dev: self.dev(oif),
                    mtu,
                });
            }
        }
        let mut neighbours = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(neighbour) = neighbours
            .try_next()
            .await
            .map_err(netlink("dumping neighbours"))?
        {
            let ifindex = neighbour.header.ifindex;
            if self.own_devices_only && ifindex != self.tun_index && ifindex != self.lan_index {
                continue;
            }
            if let Some((ip, mac)) = our_neighbour(&neighbour) {
                entries.insert(Entry::Neighbour {
                    ip,
                    mac,
                    dev: self.dev(neighbour.header.ifindex),
                });
            }
        }
        Ok(entries)
    }
}

impl Kernel {
    pub(super) fn ifindex(&self, dev: Dev) -> u32 {
        match dev {
            Dev::Tun => self.tun_index,
            Dev::Lan => self.lan_index,
            Dev::Other(index) => index,
        }
    }

    /// Installs `entry` (over an entry of ours for the same key with `replace`); `Ok(false)` if
    /// the kernel already had one for that key.
    pub(super) async fn add(&self, entry: &Entry, replace: bool) -> Result<bool, String> {
        let result = match *entry {
            Entry::Route { dst, dev, mtu } => {
                let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst.network(), dst.prefix())
                    .output_interface(self.ifindex(dev))
                    .protocol(RouteProtocol::from(RTPROT_SKYVINE))
                    .scope(RouteScope::Link)
                    .table_id(self.table)
                    .build();
                if let Some(mtu) = mtu {
                    route
                        .attributes
                        .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
                }
                let request = self.handle.route().add(route);
                // A new MTU on a route of ours overwrites it in place (see `Plan::replaced`).
                let request = if replace { request.replace() } else { request };
                request.execute().await
            }
            Entry::Neighbour { ip, mac, dev } => {
                let mut request = self
                    .handle
                    .neighbours()
                    .add(self.ifindex(dev), IpAddr::V4(ip))
                    .link_layer_address(&mac.octets())
                    .state(NeighbourState::Permanent)
                    .replace();
                request
                    .message_mut()
                    .attributes
                    .push(NeighbourAttribute::Protocol(RouteProtocol::from(
                        RTPROT_SKYVINE,
                    )));
                request.execute().await
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(describe(&e)),
        }
    }

    /// Removes `entry`; `Ok(false)` if it was already gone.
    pub(super) async fn remove(&self, entry: &Entry) -> Result<bool, String> {
        let result = match *entry {
            Entry::Route { dst, dev, .. } => {
                let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst.network(), dst.prefix())
                    .output_interface(self.ifindex(dev))
                    .protocol(RouteProtocol::from(RTPROT_SKYVINE))
                    .table_id(self.table)
                    .build();
                // Match any scope, as `ip route del` does.
                route.header.scope = RouteScope::NoWhere;
                self.handle.route().del(route).execute().await
            }
            Entry::Neighbour { ip, dev, .. } => {
                let mut neighbour = NeighbourMessage::default();
                neighbour.header.family = AddressFamily::Inet;
                neighbour.header.ifindex = self.ifindex(dev);
                neighbour
                    .attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
                self.handle.neighbours().del(neighbour).execute().await
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENOENT)) => Ok(false),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// The destination, output interface and MTU metric of an IPv4 unicast route with our
/// protocol in routing table `ours`.
fn our_route(route: &RouteMessage, ours: u32) -> Option<(Ipv4Network, u32, Option<u32>)> {
    let header = &route.header;
    if header.address_family != AddressFamily::Inet
        || header.protocol != RouteProtocol::from(RTPROT_SKYVINE)
        || header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    let mut mtu = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Metrics(metrics) => {
                mtu = metrics.iter().find_map(|metric| match metric {
                    RouteMetric::Mtu(mtu) => Some(*mtu),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    if table != ours {
        return None;
    }
    let dst = Ipv4Network::new(dst, header.destination_prefix_length).ok()?;
    // A route of ours without an output interface is none we made; 0 still lets it be removed.
    Some((dst, oif.unwrap_or(0), mtu))
}

/// The address and MAC of an IPv4 neighbour entry with our protocol.
fn our_neighbour(neighbour: &NeighbourMessage) -> Option<(Ipv4Addr, MacAddr)> {
    let mut ours = false;
    let mut ip = None;
    let mut mac = MacAddr::ZERO;
    for attribute in &neighbour.attributes {
        match attribute {
            NeighbourAttribute::Protocol(p) => ours = *p == RouteProtocol::from(RTPROT_SKYVINE),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => ip = Some(*addr),
            NeighbourAttribute::LinkLayerAddress(lladdr) => {
                if let Ok(octets) = <[u8; 6]>::try_from(lladdr.as_slice()) {
                    mac = MacAddr(octets);
                }
            }
            _ => {}
        }
    }
    if ours {
        ip.map(|ip| (ip, mac))
    } else {
        None
    }
}

/// The index of interface `name`.
pub(super) async fn resolve(handle: &Handle, name: &str) -> Result<u32, KernelError> {
    let missing = || KernelError::NoSuchInterface {
        name: name.to_owned(),
    };
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => Err(missing()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Err(missing()),
        Err(source) => Err(KernelError::Netlink {
            what: format!("looking up interface {name:?}"),
            source,
        }),
    }
}

fn netlink(what: &'static str) -> impl Fn(rtnetlink::Error) -> KernelError {
    move |source| KernelError::Netlink {
        what: what.to_owned(),
        source,
    }
}

/// The positive errno of a netlink error reply.
pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => Some(-message.raw_code()),
        _ => None,
    }
}

fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::RouteHeader;

    use super::*;
    use crate::kernel::tests::{ip, net};

    const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

    #[test]
    fn only_main_table_unicast_ipv4_routes_with_our_protocol_are_ours() {
        let ours = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip("10.77.2.0"), 24)
            .output_interface(4)
            .protocol(RouteProtocol::from(RTPROT_SKYVINE))
            .build();
        assert_eq!(our_route(&ours, MAIN), Some((net("10.77.2.0/24"), 4, None)));
        let mut with_mtu = ours.clone();
        with_mtu
            .attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(1323)]));
        assert_eq!(
            our_route(&with_mtu, MAIN),
            Some((net("10.77.2.0/24"), 4, Some(1323)))
        );

        let mut static_route = ours.clone();
        static_route.header.protocol = RouteProtocol::Static;
        assert_eq!(our_route(&static_route, MAIN), None);

        let mut other_table = ours.clone();
        other_table.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(our_route(&other_table, MAIN), None);
        // A network's VRF table: its routes are ours there, and the main table's are not.
        assert_eq!(
            our_route(&other_table, 1000),
            Some((net("10.77.2.0/24"), 4, None))
        );
        assert_eq!(our_route(&ours, 1000), None);

        let default_route = RouteMessageBuilder::<Ipv4Addr>::new()
            .protocol(RouteProtocol::from(RTPROT_SKYVINE))
            .build();
        assert_eq!(
            our_route(&default_route, MAIN),
            Some((net("0.0.0.0/0"), 0, None))
        );
    }
}
