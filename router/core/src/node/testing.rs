//! Helpers for the node's unit tests: sites a, b, c with 10.77.N.0/24, two VMs each
//! (10.77.N.1 and .2, MAC 52:54:00:77:N:VM) and a router at .254 (MAC ...:N:fe).

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use skyvine_capture::wire::{classify, ArpEvent};
use skyvine_tables::{GndtEntry, MacAddr, SiteId};

use super::{Effect, LanIdentity, Node, NodeConfig};
use crate::proto::Message;

pub(super) fn site(s: &str) -> SiteId {
    SiteId::new(s).unwrap()
}

pub(super) fn mac(site_no: u8, vm: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x77, site_no, vm])
}

pub(super) fn ip(site_no: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, site_no, host)
}

/// Router `me` of site number `n`, with its LAN; its peers are the other of a, b, c (none
/// connected yet).
pub(super) fn lan_node(me: &str, n: u8, now: Instant) -> Node {
    lan_node_with(me, n, now, |_| {})
}

/// [`lan_node`] with its configuration adjusted by `configure`.
pub(super) fn lan_node_with(
    me: &str,
    n: u8,
    now: Instant,
    configure: impl FnOnce(&mut NodeConfig),
) -> Node {
    let prefix: Ipv4Network = format!("10.77.{n}.0/24").parse().unwrap();
    let lndt = vec![Ipv4Network::from(ip(n, 1)), Ipv4Network::from(ip(n, 2))];
    let peers = ["a", "b", "c"]
        .into_iter()
        .filter(|p| *p != me)
        .map(site)
        .collect();
    let mut config = NodeConfig::new(site(me), vec![prefix], lndt, peers);
    config.lan = Some(LanIdentity {
        mac: mac(n, 0xfe),
        ip: ip(n, 254),
    });
    configure(&mut config);
    Node::new(config, now)
}

/// The prefixes the certificate of site `a`, `b` or `c` certifies: its 10.77.N.0/24.
pub(super) fn certified(name: &str) -> Vec<Ipv4Network> {
    let n = match name {
        "a" => 1,
        "b" => 2,
        "c" => 3,
        _ => return Vec::new(),
    };
    vec![format!("10.77.{n}.0/24").parse().unwrap()]
}

/// `peer` (connected first if it is not) sends `entries`.
pub(super) fn from_peer(node: &mut Node, peer: &str, entries: Vec<GndtEntry>, now: Instant) {
    if !node.peers().get(&site(peer)).is_some_and(|p| p.connected) {
        node.handle_peer_up(site(peer), certified(peer), now);
    }
    node.handle_message(&site(peer), Message::Entries { entries }, now);
}

/// Site `n`'s prefix, both its VMs' bindings and its router's, as its router advertises them.
pub(super) fn site_entries(name: &str, n: u8) -> Vec<GndtEntry> {
    let prefix = format!("10.77.{n}.0/24").parse().unwrap();
    vec![
        GndtEntry::site_prefix(prefix, site(name), 1),
        GndtEntry::host(ip(n, 1), site(name), 1, Some(mac(n, 1))),
        GndtEntry::host(ip(n, 2), site(name), 1, Some(mac(n, 2))),
        GndtEntry::host(ip(n, 254), site(name), 1, Some(mac(n, 0xfe))),
    ]
}

/// Drains the effects; returns the frames sent on the LAN.
pub(super) fn transmitted(node: &mut Node) -> Vec<ArpEvent> {
    std::iter::from_fn(|| node.poll_effect())
        .filter_map(|e| match e {
            Effect::Transmit { frame } => Some(classify(&frame).unwrap()),
            Effect::Send { .. }
            | Effect::TablesChanged
            | Effect::Kernel(_)
            | Effect::LanCopies { .. } => None,
        })
        .collect()
}

/// Drains the effects; returns the messages sent to peers.
pub(super) fn sent(node: &mut Node) -> Vec<(SiteId, Message)> {
    std::iter::from_fn(|| node.poll_effect())
        .filter_map(|e| match e {
            Effect::Send { to, message } => Some((to, message)),
            Effect::Transmit { .. }
            | Effect::TablesChanged
            | Effect::Kernel(_)
            | Effect::LanCopies { .. } => None,
        })
        .collect()
}

/// Drains the effects; returns the entries advertised to peers.
pub(super) fn advertised(node: &mut Node) -> Vec<GndtEntry> {
    sent(node)
        .into_iter()
        .flat_map(|(_, message)| match message {
            Message::Entries { entries } => entries,
            _ => Vec::new(),
        })
        .collect()
}
