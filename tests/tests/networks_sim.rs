//! Several virtual networks on one router, sans IO: routers whose cores are
//! `skyvine_core::networks::Networks` (one `Node` per network), their control frames encoded
//! and decoded with the real codec. Networks 1 ("blue") and 2 ("red") reuse the same addresses
//! on every site; a migration in one must leave the other's tables as they were, and a peer
//! that names a network it is not part of gets its frames dropped and counted.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_capture::wire::{classify, EventKind};
use skyvine_core::config::NetworkId;
use skyvine_core::link::PeerPath;
use skyvine_core::networks::{CertifiedPrefix, NetworkNode, Networks, Unshared};
use skyvine_core::node::{Effect, LanIdentity, Node, NodeConfig};
use skyvine_core::proto::{self, Decoder, Frame, Message};
use skyvine_inject::wire as frames;
use skyvine_tables::{GndtEntry, MacAddr, SiteId};

const BLUE: NetworkId = 1;
const RED: NetworkId = 2;

fn site(s: &str) -> SiteId {
    SiteId::new(s).unwrap()
}

fn ip(n: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, n, host)
}

/// Each network's VMs have their own MACs: network id in the fourth byte.
fn mac(network: NetworkId, n: u8, host: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, u8::try_from(network).unwrap(), n, host])
}

fn prefix(n: u8) -> Ipv4Network {
    format!("10.77.{n}.0/24").parse().unwrap()
}

/// A VM: its network, address, MAC and the router whose LAN it is on.
#[derive(Clone, Copy, Debug)]
struct Vm {
    network: NetworkId,
    ip: Ipv4Addr,
    mac: MacAddr,
    at: usize,
}

struct World {
    now: Instant,
    names: Vec<SiteId>,
    routers: Vec<Networks>,
    vms: Vec<Vm>,
    /// Encoded frames in flight: from, to, bytes.
    wire: VecDeque<(usize, usize, Vec<u8>)>,
}

impl World {
    /// Sites a (10.77.1.0/24) and b (10.77.2.0/24) carry blue and red with the same
    /// addresses; c (10.77.3.0/24) carries blue only, though its hello names red too.
    fn new() -> World {
        let now = Instant::now();
        let sites = [
            ("a", 1u8, vec![BLUE, RED]),
            ("b", 2, vec![BLUE, RED]),
            ("c", 3, vec![BLUE]),
        ];
        let names: Vec<SiteId> = sites.iter().map(|(s, _, _)| site(s)).collect();
        let mut routers = Vec::new();
        let mut vms = Vec::new();
        for (i, (me, n, networks)) in sites.iter().enumerate() {
            let peers: Vec<SiteId> = names
                .iter()
                .filter(|p| p.as_str() != *me)
                .cloned()
                .collect();
            let nodes = networks
                .iter()
                .map(|&network| {
                    let hosts = vec![Ipv4Network::from(ip(*n, 1)), Ipv4Network::from(ip(*n, 2))];
                    let mut config =
                        NodeConfig::new(site(me), vec![prefix(*n)], hosts, peers.clone());
                    config.lan = Some(LanIdentity {
                        mac: mac(network, *n, 0xfe),
                        ip: ip(*n, 254),
                    });
                    config.certified = vec![prefix(*n)];
                    NetworkNode {
                        id: network,
                        name: if network == BLUE { "blue" } else { "red" }.into(),
                        node: Node::new(config, now),
                    }
                })
                .collect();
            routers.push(Networks::new(nodes));
            for &network in networks {
                for host in 1..=2 {
                    vms.push(Vm {
                        network,
                        ip: ip(*n, host),
                        mac: mac(network, *n, host),
                        at: i,
                    });
                }
            }
        }
        let mut world = World {
            now,
            names,
            routers,
            vms,
            wire: VecDeque::new(),
        };
        for i in 0..3 {
            for j in (0..3).filter(|j| *j != i) {
                // Every router's hello names both networks; certificates certify the site's
                // prefix in the networks it really carries (c: blue only).
                let certified = world.certified(j);
                let peer = world.names[j].clone();
                world.routers[i].handle_link_up(
                    &peer,
                    &PeerPath::Direct,
                    &[BLUE, RED],
                    &certified,
                    now,
                );
            }
        }
        world.settle();
        for v in 0..world.vms.len() {
            world.speak(v);
        }
        world.settle();
        world
    }

    fn certified(&self, i: usize) -> Vec<CertifiedPrefix> {
        let n = u8::try_from(i + 1).unwrap();
        self.routers[i]
            .ids()
            .into_iter()
            .map(|network| CertifiedPrefix {
                network,
                prefix: prefix(n),
            })
            .collect()
    }

    fn node(&self, at: &str, network: NetworkId) -> &Node {
        let i = self.names.iter().position(|s| s.as_str() == at).unwrap();
        &self.routers[i].get(network).unwrap().node
    }

    /// A frame on router `at`'s LAN in `network`.
    fn lan_frame(&mut self, at: usize, network: NetworkId, frame: &[u8]) {
        let event = classify(frame).unwrap();
        let now = self.now;
        let target = self.routers[at].get_mut(network).unwrap();
        target.node.handle_lan_event(event, now);
    }

    /// The VM asks its LAN for its gateway, so its router learns its binding.
    fn speak(&mut self, v: usize) {
        let vm = self.vms[v];
        let gateway = Ipv4Addr::new(10, 77, vm.ip.octets()[2], 254);
        self.lan_frame(
            vm.at,
            vm.network,
            &frames::arp_request(vm.mac, vm.ip, gateway),
        );
        self.settle();
    }

    /// Applies effects and delivers frames until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            self.pump();
            let Some((from, to, bytes)) = self.wire.pop_front() else {
                return;
            };
            let mut decoder = Decoder::default();
            decoder.push(&bytes);
            let frame = decoder.next_message().unwrap().unwrap();
            let sender = self.names[from].clone();
            // A frame for a network the peer does not share is refused and counted there.
            let _ = self.routers[to].handle_frame(&sender, frame, self.now);
        }
        panic!("the world did not settle");
    }

    fn pump(&mut self) {
        for i in 0..self.routers.len() {
            while let Some((network, effect)) = self.routers[i].poll_effect() {
                match effect {
                    Effect::Send { to, message } => {
                        let j = self.names.iter().position(|s| *s == to).unwrap();
                        let bytes = proto::encode(&Frame::new(network, message)).unwrap();
                        self.wire.push_back((i, j, bytes));
                    }
                    Effect::TablesChanged | Effect::Kernel(_) => {
                        let now = self.now;
                        if let Some(target) = self.routers[i].get_mut(network) {
                            target.node.handle_kernel_applied(now);
                        }
                    }
                    Effect::LanCopies { .. } => {}
                    Effect::Transmit { frame } => self.transmit(i, network, &frame),
                }
            }
        }
    }

    /// A router sent a frame on its LAN in `network`: a VM of that network there answers a
    /// probe for it.
    fn transmit(&mut self, at: usize, network: NetworkId, frame: &[u8]) {
        let event = classify(frame).unwrap();
        if let EventKind::Probe {
            mac: router,
            target_ip,
        } = event.kind
        {
            let answer = self.vms.iter().find(|v| {
                v.network == network
                    && v.at == at
                    && v.ip == target_ip
                    && (event.eth_dst == v.mac || event.eth_dst == MacAddr::BROADCAST)
            });
            if let Some(vm) = answer.copied() {
                let reply = frames::proxy_arp_reply(vm.mac, vm.ip, router, Ipv4Addr::UNSPECIFIED);
                self.lan_frame(at, network, &reply);
            }
        }
    }

    /// Moves time on, firing every timeout due.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.routers.iter().filter_map(Networks::poll_timeout).min() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            for router in &mut self.routers {
                router.handle_timeout(self.now);
            }
            self.settle();
        }
        self.now = until;
        self.settle();
    }

    /// The VM of `network` at `vm_ip` moves to router `to`, and the hypervisor sends QEMU's
    /// RARP there.
    fn migrate(&mut self, network: NetworkId, vm_ip: Ipv4Addr, to: usize) {
        let v = self
            .vms
            .iter()
            .position(|v| v.network == network && v.ip == vm_ip)
            .unwrap();
        self.vms[v].at = to;
        let vm_mac = self.vms[v].mac;
        self.lan_frame(to, network, &frames::rarp_announce(vm_mac));
        self.settle();
        self.advance(Duration::from_secs(2));
    }

    /// Every table of `network` on every router that carries it, as text.
    fn tables(&self, network: NetworkId) -> Vec<String> {
        self.routers
            .iter()
            .filter_map(|r| r.get(network))
            .map(|n| {
                let gndt: Vec<String> = n
                    .node
                    .gndt()
                    .entries()
                    .map(|s| format!("{:?}", s.entry))
                    .collect();
                let lndt: Vec<String> = n
                    .node
                    .lndt()
                    .hosts()
                    .map(|h| format!("{:?}", h.prefix))
                    .collect();
                let hwdt: Vec<String> = n
                    .node
                    .hwdt()
                    .bindings()
                    .map(|b| format!("{} {}", b.ip, b.mac))
                    .collect();
                format!(
                    "{}: {gndt:?} {lndt:?} {hwdt:?} {:?}",
                    n.node.me(),
                    n.node.tun_routes()
                )
            })
            .collect()
    }
}

/// The site the GNDT of `node` places `addr` at.
fn owner(node: &Node, addr: Ipv4Addr) -> String {
    match node.gndt().lookup(addr) {
        skyvine_tables::Lookup::Found(stored) => stored.entry.site().to_string(),
        skyvine_tables::Lookup::Missing => "nobody".into(),
    }
}

#[test]
fn the_same_addresses_live_apart_in_two_networks() {
    let world = World::new();
    for network in [BLUE, RED] {
        let at_b = world.node("b", network);
        assert_eq!(owner(at_b, ip(1, 1)), "a");
        let skyvine_tables::Lookup::Found(entry) = at_b.gndt().lookup(ip(1, 1)) else {
            panic!("b knows a's VM in network {network}");
        };
        assert_eq!(
            entry.entry.mac,
            Some(mac(network, 1, 1)),
            "network {network}'s own VM"
        );
    }
    // c is part of blue only: red knows nothing of it.
    assert_eq!(owner(world.node("a", BLUE), ip(3, 1)), "c");
    assert_eq!(owner(world.node("a", RED), ip(3, 1)), "nobody");
}

#[test]
fn a_migration_in_one_network_leaves_the_others_tables_untouched() {
    let mut world = World::new();
    let red_before = world.tables(RED);
    world.migrate(BLUE, ip(1, 1), 1);
    for at in ["a", "b", "c"] {
        assert_eq!(owner(world.node(at, BLUE), ip(1, 1)), "b", "blue at {at}");
    }
    assert!(world.node("b", BLUE).lndt().contains(ip(1, 1)));
    assert_eq!(world.tables(RED), red_before, "red did not move");
    assert_eq!(owner(world.node("b", RED), ip(1, 1)), "a");
    assert!(!world.node("b", RED).lndt().contains(ip(1, 1)));
    // And the other way round: red's VM moves, blue stays where it now is.
    let blue_before = world.tables(BLUE);
    world.migrate(RED, ip(2, 2), 0);
    assert_eq!(owner(world.node("b", RED), ip(2, 2)), "a");
    assert_eq!(world.tables(BLUE), blue_before, "blue did not move");
}

#[test]
fn frames_for_a_network_the_peer_is_not_part_of_are_dropped_and_counted() {
    let mut world = World::new();
    let red_before = world.tables(RED);
    // c names red in its hello but its certificate certifies nothing there: c claims a's
    // address in red (and a prefix of its own), and asks for a's table.
    let forged = vec![
        GndtEntry::host(ip(1, 1), site("c"), 99, Some(mac(RED, 3, 9))),
        GndtEntry::site_prefix(prefix(3), site("c"), 1),
    ];
    for message in [
        Message::Entries { entries: forged },
        Message::TableRequest {},
    ] {
        let bytes = proto::encode(&Frame::new(RED, message)).unwrap();
        world.wire.push_back((2, 0, bytes));
    }
    // A network nobody carries.
    let bytes = proto::encode(&Frame::new(9, Message::TableRequest {})).unwrap();
    world.wire.push_back((2, 1, bytes));
    world.settle();
    assert_eq!(
        world.routers[0].dropped().get(&(RED, Unshared::NotMember)),
        Some(&2)
    );
    assert_eq!(
        world.routers[1]
            .dropped()
            .get(&(9, Unshared::UnknownNetwork)),
        Some(&1)
    );
    assert_eq!(world.tables(RED), red_before, "red's tables untouched");
    assert_eq!(owner(world.node("a", RED), ip(1, 1)), "a");
    // The same claim in blue, which c shares, reaches blue's tables (and is judged there by
    // the trust rules: an address of a's certified prefix is not c's to take).
    assert!(world.routers[0].shared_with(&site("c")).contains(BLUE));
    assert!(!world.routers[0].shared_with(&site("c")).contains(RED));
}
