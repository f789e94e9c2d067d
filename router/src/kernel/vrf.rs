//! A network's Linux VRF: a `vrf` device bound to one routing table, with the network's TUN
//! and LAN devices enslaved to it. Packets that arrive on either are routed by that table only,
//! so two networks on one router never route into each other, even with the same addresses.
//!
//! Created over rtnetlink when missing (like `ip link add svrf1 type vrf table 1001`), found
//! and checked when present (a device of that name must be a VRF with the same table), brought
//! up, and left in place at shutdown: the LAN interface stays in its network's VRF, as an
//! operator would configure it.

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVrf, LinkAttribute, LinkInfo};
use rtnetlink::{Handle, LinkUnspec, LinkVrf};

use super::{errno, KernelError};

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
pub(super) async fn enslave(
    handle: &Handle,
    vrf: &VrfDevice,
    ports: &[u32],
) -> Result<(), KernelError> {
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
