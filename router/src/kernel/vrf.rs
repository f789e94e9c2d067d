//! A network's own routing table, and how the kernel keeps the network's packets in it.
//!
//! Where the kernel has VRFs (`CONFIG_NET_VRF`): a `vrf` device bound to the table, with the
//! network's TUN and LAN devices enslaved to it. Created over rtnetlink when missing (like
//! `ip link add svrf1 type vrf table 1001`), found and checked when present (a device of that
//! name must be a VRF with the same table), brought up, and left in place at shutdown: the LAN
//! interface stays in its network's VRF, as an operator would configure it.
//!
//! Where it has not (the kernel answers "Operation not supported"; the development machine's
//! kernel is one), the same isolation by policy routing: for each of the two devices, `ip rule
//! add iif DEV lookup TABLE pref 1000` and `ip rule add iif DEV unreachable pref 1001`, so a
//! packet that arrives on the network's TUN or LAN device is routed by its table or not at
//! all, never by the main table or another network's; the LAN's own prefixes go into the table
//! as routes with protocol [`RTPROT_SKYVINE_LINK`] (the kernel puts connected routes in the
//! main table only). The rules also stay at shutdown: a stopped router's networks stay apart.
//!
//! Either way two networks on one router never route into each other, even with the same
//! addresses.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVrf, LinkAttribute, LinkInfo};
use netlink_packet_route::route::{RouteProtocol, RouteScope};
use netlink_packet_route::rule::RuleAction;
use rtnetlink::{Handle, LinkUnspec, LinkVrf, RouteMessageBuilder};

use super::netlink::errno;
use super::KernelError;

/// The route protocol of the LAN's own prefixes in a network's table when it is isolated by
/// rules (see the module doc); never touched by the reconcile, which owns [`super::RTPROT_SKYVINE`].
pub const RTPROT_SKYVINE_LINK: u8 = 91;
/// The priority of the rules that send a network's packets to its table, and of those that
/// refuse the rest (both before the main table's 32766).
pub const RULE_LOOKUP_PRIORITY: u32 = 1000;
pub const RULE_UNREACHABLE_PRIORITY: u32 = 1001;

/// How the kernel keeps a network apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// The TUN and LAN devices are in the network's VRF.
    Vrf,
    /// Policy-routing rules send what arrives on them to the network's table.
    Rules,
}

/// One network device: its index and name.
pub(super) struct Port<'a> {
    pub index: u32,
    pub name: &'a str,
}

/// Puts the network's devices in its VRF or, on a kernel without VRFs, behind its rules.
pub(super) async fn isolate(
    handle: &Handle,
    vrf: &VrfDevice,
    tun: Port<'_>,
    lan: Port<'_>,
) -> Result<Isolation, KernelError> {
    match enslave(handle, vrf, &[tun.index, lan.index]).await {
        Ok(()) => Ok(Isolation::Vrf),
        Err(KernelError::VrfUnsupported) => {
            tracing::warn!(vrf = %vrf.name, table = vrf.table, "this kernel has no VRFs (CONFIG_NET_VRF): the network is kept apart by policy-routing rules on its TUN and LAN devices instead");
            rules(handle, vrf.table, &[&tun, &lan]).await?;
            connected_routes(handle, vrf.table, &lan).await?;
            Ok(Isolation::Rules)
        }
        Err(other) => Err(other),
    }
}

/// `iif DEV lookup TABLE` and `iif DEV unreachable` for each device ("already there" is fine).
async fn rules(handle: &Handle, table: u32, ports: &[&Port<'_>]) -> Result<(), KernelError> {
    for port in ports {
        for (priority, action) in [
            (RULE_LOOKUP_PRIORITY, RuleAction::ToTable),
            (RULE_UNREACHABLE_PRIORITY, RuleAction::Unreachable),
        ] {
            let mut request = handle
                .rule()
                .add()
                .v4()
                .input_interface(port.name)
                .priority(priority)
                .action(action);
            if action == RuleAction::ToTable {
                request = request.table_id(table);
            }
            match request.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(KernelError::Netlink {
                        what: format!("adding the rule for {} to table {table}", port.name),
                        source,
                    })
                }
            }
        }
    }
    tracing::info!(table, "network isolated by policy-routing rules");
    Ok(())
}

/// The LAN device's own IPv4 prefixes as routes in `table`.
async fn connected_routes(handle: &Handle, table: u32, lan: &Port<'_>) -> Result<(), KernelError> {
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(lan.index)
        .execute();
    let mut prefixes = Vec::new();
    loop {
        let address = addresses
            .try_next()
            .await
            .map_err(|source| KernelError::Netlink {
                what: format!("reading the addresses of {}", lan.name),
                source,
            })?;
        let Some(address) = address else { break };
        for attribute in &address.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = attribute {
                if let Ok(net) = ipnetwork::Ipv4Network::new(*ip, address.header.prefix_len) {
                    prefixes.push(net);
                }
            }
        }
    }
    for prefix in prefixes {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(prefix.network(), prefix.prefix())
            .output_interface(lan.index)
            .protocol(RouteProtocol::from(RTPROT_SKYVINE_LINK))
            .scope(RouteScope::Link)
            .table_id(table)
            .build();
        match handle.route().add(route).replace().execute().await {
            Ok(()) => {
                tracing::info!(%prefix, lan = lan.name, table, "LAN prefix in the network's table")
            }
            Err(source) => {
                return Err(KernelError::Netlink {
                    what: format!("adding the LAN prefix {prefix} to table {table}"),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// The VRF device of one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrfDevice {
    pub name: String,
    pub table: u32,
}

impl From<&skyvine_core::config::Vrf> for VrfDevice {
    fn from(vrf: &skyvine_core::config::Vrf) -> Self {
        VrfDevice {
            name: vrf.name.clone(),
            table: vrf.table,
        }
    }
}

/// Makes `vrf` exist and run, and enslaves `ports` (interface indexes) to it.
async fn enslave(handle: &Handle, vrf: &VrfDevice, ports: &[u32]) -> Result<(), KernelError> {
    let index = ensure(handle, vrf).await?;
    for &port in ports {
        handle
            .link()
            .set(LinkUnspec::new_with_index(port).controller(index).build())
            .execute()
            .await
            .map_err(|source| KernelError::Netlink {
                what: format!("enslaving interface {port} to VRF {}", vrf.name),
                source,
            })?;
    }
    tracing::info!(vrf = %vrf.name, table = vrf.table, "TUN and LAN devices in the network's VRF");
    Ok(())
}

/// The index of the VRF device, created if missing and brought up.
async fn ensure(handle: &Handle, vrf: &VrfDevice) -> Result<u32, KernelError> {
    let netlink = |what: &str| {
        let what = format!("{what} VRF {}", vrf.name);
        move |source| KernelError::Netlink { what, source }
    };
    let index = match find(handle, &vrf.name).await? {
        Some((index, table)) if table == Some(vrf.table) => index,
        Some((_, table)) => {
            return Err(KernelError::Vrf(format!(
                "an interface {} exists but is not a VRF with table {} (table {table:?}): \
                 delete it or choose another networks.vrf_table",
                vrf.name, vrf.table
            )))
        }
        None => {
            let added = handle
                .link()
                .add(LinkVrf::new(&vrf.name, vrf.table).build())
                .execute()
                .await;
            match added {
                Ok(()) => tracing::info!(vrf = %vrf.name, table = vrf.table, "VRF created"),
                // Created meanwhile by someone else: checked below like any existing one.
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                    return Err(KernelError::VrfUnsupported)
                }
                Err(e) => return Err(netlink("creating")(e)),
            }
            match find(handle, &vrf.name).await? {
                Some((index, Some(table))) if table == vrf.table => index,
                _ => {
                    return Err(KernelError::Vrf(format!(
                        "VRF {} did not come up with table {}",
                        vrf.name, vrf.table
                    )))
                }
            }
        }
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink("bringing up"))?;
    Ok(index)
}

/// The index of interface `name` and, if it is a VRF, its table.
async fn find(handle: &Handle, name: &str) -> Result<Option<(u32, Option<u32>)>, KernelError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    let link = match links.try_next().await {
        Ok(link) => link,
        Err(e) if errno(&e) == Some(libc::ENODEV) => None,
        Err(source) => {
            return Err(KernelError::Netlink {
                what: format!("looking up interface {name:?}"),
                source,
            })
        }
    };
    let Some(link) = link else {
        return Ok(None);
    };
    let mut is_vrf = false;
    let mut table = None;
    for attribute in &link.attributes {
        let LinkAttribute::LinkInfo(infos) = attribute else {
            continue;
        };
        for info in infos {
            match info {
                LinkInfo::Kind(InfoKind::Vrf) => is_vrf = true,
                LinkInfo::Data(InfoData::Vrf(data)) => {
                    table = data.iter().find_map(|d| match d {
                        InfoVrf::TableId(t) => Some(*t),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
    }
    Ok(Some((link.header.index, table.filter(|_| is_vrf))))
}
