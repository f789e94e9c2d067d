//! A deterministic, sans-IO multi-site world for the migration logic: several router cores
//! ([`Node`]) with simulated LANs whose VMs answer ARP probes, a virtual clock, and a control
//! network whose messages can be delivered in order, reversed and duplicated, or one by one in
//! any order the test picks (with losses and duplicates), over links that can be cut and
//! healed; a router can be restarted with a fresh core that relearns from its peers.
//!
//! Sites are numbered from 1: site N owns 10.77.N.0/24, its router sits at 10.77.N.254 (MAC
//! 52:54:00:77:N:fe) and its two VMs at 10.77.N.1 and .2 (MAC 52:54:00:77:N:VM). The kernel is
//! what the core asks for ([`Node::tun_routes`], [`Node::lan_hosts`]); [`World::check_converged`]
//! compares it, and the tables, with where the VMs really are.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_capture::wire::{classify, ArpEvent, EventKind};
use skyvine_core::fib::FibSnapshot;
use skyvine_core::node::{Detection, Effect, KernelOp, KernelRoute, LanIdentity, Node, NodeConfig};
use skyvine_core::proto::Message;
use skyvine_inject::wire as frames;
use skyvine_tables::{EntryKind, MacAddr, SiteId};

pub fn site(s: &str) -> SiteId {
    SiteId::new(s).unwrap()
}

pub fn mac(site_no: u8, vm: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x77, site_no, vm])
}

pub fn ip(site_no: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, site_no, host)
}

/// How [`World::settle`] delivers the control messages in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Messages are delivered in order.
    InOrder,
    /// Each batch of queued messages is delivered in reverse order, twice.
    ReversedAndDuplicated,
    /// Nothing is delivered unless the test says so ([`World::deliver`] and friends); time
    /// still passes and effects still queue.
    Manual,
}

/// What the hypervisor sends after a move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// QEMU's 5 RARPs, all at once (as when a paused destination is resumed).
    RarpBurst,
    /// Xen's gratuitous ARP.
    Garp,
    /// Nothing: the routers learn of the move from the VM's own traffic, if ever.
    Silent,
}

#[derive(Clone, Debug)]
pub struct Vm {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Site index the VM is attached to.
    pub at: usize,
}

/// A control message in flight.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: usize,
    pub to: usize,
    pub message: Message,
}

#[derive(Debug)]
pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub names: Vec<SiteId>,
    /// Each router's configuration, for restarts.
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<Node>,
    pub vms: Vec<Vm>,
    /// Control messages in flight.
    pub wire: VecDeque<Envelope>,
    /// Frames each router sent on its LAN.
    pub transmitted: Vec<Vec<ArpEvent>>,
    /// Each router's kernel routes, as its targeted changes ([`Effect::Kernel`]) left them
    /// (a restart starts from a full reconcile, as the daemon does).
    pub kernels: Vec<BTreeMap<Ipv4Network, KernelRoute>>,
    /// Each router's forwarding snapshot, made from its changes after each batch of effects
    /// that changed the tables (as the daemon does; checked against a full build).
    pub fibs: Vec<Option<Arc<FibSnapshot>>>,
    /// Addresses each router copies its LAN's packets for (the source of a planned migration).
    pub lan_copies: Vec<BTreeSet<Ipv4Addr>>,
    pub delivery: Delivery,
    /// Drop the next message from -> to matching this kind.
    pub drop_next: Option<(usize, usize, &'static str)>,
    /// Connections that are down, by (lower, higher) index.
    cut: BTreeSet<(usize, usize)>,
    /// Routers restarted since the world was built.
    restarted: BTreeSet<usize>,
    /// VMs (by address) that answer no probe: a guest that resumes too slowly, or one that is
    /// announced where it is not.
    pub mute: BTreeSet<Ipv4Addr>,
}

impl World {
    pub fn new(sites: &[&str], optimize: bool) -> World {
        World::with_silent(sites, optimize, &[])
    }

    /// A world where the VMs in `silent` have not yet said anything on their LAN.
    pub fn with_silent(sites: &[&str], optimize: bool, silent: &[Ipv4Addr]) -> World {
        World::build(sites, silent, |config| {
            if optimize {
                config.virtual_network = Some("10.77.0.0/16".parse().unwrap());
            }
        })
    }

    /// A world whose router configurations `configure` adjusts, where the VMs in `silent`
    /// have not yet said anything; every router is connected to every other and settled.
    pub fn build(
        sites: &[&str],
        silent: &[Ipv4Addr],
        configure: impl Fn(&mut NodeConfig),
    ) -> World {
        let start = Instant::now();
        let names: Vec<SiteId> = sites.iter().map(|s| site(s)).collect();
        let mut configs = Vec::new();
        let mut vms = Vec::new();
        for (i, me) in names.iter().enumerate() {
            let n = site_no(i);
            let prefix: Ipv4Network = format!("10.77.{n}.0/24").parse().unwrap();
            let peers = names.iter().filter(|p| *p != me).cloned().collect();
            // As in the lab: the LNDT lists the two VMs, not the whole prefix.
            let lndt = vec![Ipv4Network::from(ip(n, 1)), Ipv4Network::from(ip(n, 2))];
            let mut config = NodeConfig::new(me.clone(), vec![prefix], lndt, peers);
            config.lan = Some(LanIdentity {
                mac: mac(n, 0xfe),
                ip: ip(n, 254),
            });
            configure(&mut config);
            configs.push(config);
            for v in 1..=2 {
                vms.push(Vm {
                    ip: ip(n, v),
                    mac: mac(n, v),
                    at: i,
                });
            }
        }
        let nodes = configs
            .iter()
            .map(|c| Node::new(c.clone(), start))
            .collect();
        let mut world = World {
            start,
            now: start,
            transmitted: vec![Vec::new(); names.len()],
            kernels: vec![BTreeMap::new(); names.len()],
            fibs: vec![None; names.len()],
            lan_copies: vec![BTreeSet::new(); names.len()],
            names,
            configs,
            nodes,
            vms,
            wire: VecDeque::new(),
            delivery: Delivery::InOrder,
            drop_next: None,
            cut: BTreeSet::new(),
            restarted: BTreeSet::new(),
            mute: BTreeSet::new(),
        };
        for i in 0..world.nodes.len() {
            for j in 0..world.nodes.len() {
                if i != j {
                    let peer = world.names[j].clone();
                    let certified = world.configs[j].certified.clone();
                    world.nodes[i].handle_peer_up(peer, certified, start);
                }
            }
        }
        world.settle();
        // Every VM says hello on its LAN once, so its router learns and advertises it.
        for v in 0..world.vms.len() {
            if !silent.contains(&world.vms[v].ip) {
                world.speak(world.vms[v].ip);
            }
        }
        world.settle();
        world
    }

    pub fn index(&self, name: &str) -> usize {
        self.names.iter().position(|s| s.as_str() == name).unwrap()
    }

    pub fn vm(&self, vm_ip: Ipv4Addr) -> usize {
        self.vms.iter().position(|v| v.ip == vm_ip).unwrap()
    }

    /// A frame appears on site `at`'s LAN: its router captures it.
    pub fn lan_frame(&mut self, at: usize, frame: &[u8]) {
        let event = classify(frame).unwrap();
        self.nodes[at].handle_lan_event(event, self.now);
    }

    /// The VM asks its LAN for its home gateway (it has an ARP entry to refresh, or a packet
    /// to send): at a site that does not know it yet, this is a migration found by traffic.
    pub fn speak(&mut self, vm_ip: Ipv4Addr) {
        let vm = self.vms[self.vm(vm_ip)].clone();
        let gateway = Ipv4Addr::new(10, 77, vm_ip.octets()[2], 254);
        self.lan_frame(vm.at, &frames::arp_request(vm.mac, vm.ip, gateway));
        self.pump_or_settle();
    }

    /// Moves the clock, firing every timeout due on the way.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            let next = self.nodes.iter().filter_map(Node::poll_timeout).min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    for node in &mut self.nodes {
                        if node.poll_timeout().is_some_and(|t| t <= self.now) {
                            node.handle_timeout(self.now);
                        }
                    }
                    self.pump_or_settle();
                }
                _ => break,
            }
        }
        self.now = until;
        self.pump_or_settle();
    }

    fn pump_or_settle(&mut self) {
        match self.delivery {
            Delivery::Manual => self.pump(),
            Delivery::InOrder | Delivery::ReversedAndDuplicated => self.settle(),
        }
    }

    /// Applies every router's effects until none is left: messages go on the wire (or are
    /// dropped when their link is down), frames go on the LAN, and the kernel takes every
    /// change at once.
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(effect) = self.nodes[i].poll_effect() {
                    moved = true;
                    match effect {
                        Effect::Send { to, message } => {
                            let j = self.names.iter().position(|s| *s == to).unwrap();
                            if self.link_up(i, j) {
                                self.wire.push_back(Envelope {
                                    from: i,
                                    to: j,
                                    message,
                                });
                            }
                        }
                        Effect::TablesChanged => {
                            self.nodes[i].handle_kernel_applied(self.now);
                            self.fibs[i] = Some(self.nodes[i].fib_snapshot(self.now));
                        }
                        Effect::LanCopies { ip, copy } => {
                            if copy {
                                self.lan_copies[i].insert(ip);
                            } else {
                                self.lan_copies[i].remove(&ip);
                            }
                        }
                        Effect::Kernel(op) => {
                            apply_kernel_op(&mut self.kernels[i], op);
                            self.nodes[i].handle_kernel_applied(self.now);
                        }
                        Effect::Transmit { frame } => self.transmit(i, &frame),
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the routers' effects did not run dry");
    }

    /// Applies effects and delivers messages until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            self.pump();
            if self.wire.is_empty() {
                return;
            }
            let batch: Vec<Envelope> = self.wire.drain(..).collect();
            let batch: Vec<Envelope> = match self.delivery {
                Delivery::InOrder | Delivery::Manual => batch,
                Delivery::ReversedAndDuplicated => {
                    let reversed: Vec<_> = batch.into_iter().rev().collect();
                    reversed
                        .iter()
                        .cloned()
                        .chain(reversed.iter().cloned())
                        .collect()
                }
            };
            for envelope in batch {
                if let Some((f, t, kind)) = self.drop_next {
                    if f == envelope.from && t == envelope.to && envelope.message.kind() == kind {
                        self.drop_next = None;
                        continue;
                    }
                }
                self.hand_over(envelope);
            }
        }
        panic!("the simulation did not settle");
    }

    /// Delivers the message at `pick` (modulo the number in flight), if any.
    pub fn deliver(&mut self, pick: usize) {
        if let Some(envelope) = self.take(pick) {
            self.hand_over(envelope);
            self.pump();
        }
    }

    /// Delivers the message at `pick` and leaves a copy in flight.
    pub fn duplicate(&mut self, pick: usize) {
        if let Some(envelope) = self.take(pick) {
            self.wire.push_back(envelope.clone());
            self.hand_over(envelope);
            self.pump();
        }
    }

    /// Loses the message at `pick`.
    pub fn lose(&mut self, pick: usize) {
        self.take(pick);
    }

    fn take(&mut self, pick: usize) -> Option<Envelope> {
        if self.wire.is_empty() {
            return None;
        }
        let k = pick % self.wire.len();
        self.wire.remove(k)
    }

    fn hand_over(&mut self, envelope: Envelope) {
        // A message sent before its link went down never arrives.
        if self.link_up(envelope.from, envelope.to) {
            let name = self.names[envelope.from].clone();
            self.nodes[envelope.to].handle_message(&name, envelope.message, self.now);
        }
    }

    pub fn link_up(&self, i: usize, j: usize) -> bool {
        !self.cut.contains(&(i.min(j), i.max(j)))
    }

    /// The connection between routers `i` and `j` goes down: both notice, and what was in
    /// flight between them is lost.
    pub fn partition(&mut self, i: usize, j: usize) {
        if i == j || !self.link_up(i, j) {
            return;
        }
        self.cut.insert((i.min(j), i.max(j)));
        self.wire
            .retain(|e| !((e.from == i && e.to == j) || (e.from == j && e.to == i)));
        let (name_i, name_j) = (self.names[i].clone(), self.names[j].clone());
        self.nodes[i].handle_peer_down(&name_j, self.now);
        self.nodes[j].handle_peer_down(&name_i, self.now);
        self.pump_or_settle();
    }

    /// Every cut connection comes back up (each side sends its full table).
    pub fn heal(&mut self) {
        let cut: Vec<(usize, usize)> = std::mem::take(&mut self.cut).into_iter().collect();
        for (i, j) in cut {
            self.connect(i, j);
        }
        self.pump_or_settle();
    }

    /// Router `i` restarts: a fresh core with its configuration and nothing learnt. Its
    /// connections drop and come back (those not cut), and it relearns from its peers.
    pub fn restart(&mut self, i: usize) {
        self.wire.retain(|e| e.from != i && e.to != i);
        let name = self.names[i].clone();
        for j in 0..self.nodes.len() {
            if j != i && self.link_up(i, j) {
                self.nodes[j].handle_peer_down(&name, self.now);
            }
        }
        self.nodes[i] = Node::new(self.configs[i].clone(), self.now);
        self.kernels[i] = full_reconcile(&self.nodes[i]);
        self.fibs[i] = None;
        self.restarted.insert(i);
        for j in 0..self.nodes.len() {
            if j != i && self.link_up(i, j) {
                self.connect(i, j);
            }
        }
        self.pump_or_settle();
    }

    fn connect(&mut self, i: usize, j: usize) {
        let (name_i, name_j) = (self.names[i].clone(), self.names[j].clone());
        let (certified_i, certified_j) = (
            self.configs[i].certified.clone(),
            self.configs[j].certified.clone(),
        );
        self.nodes[i].handle_peer_up(name_j, certified_j, self.now);
        self.nodes[j].handle_peer_up(name_i, certified_i, self.now);
    }

    /// A router sent a frame on its LAN: VMs there answer probes for their address.
    pub fn transmit(&mut self, at: usize, frame: &[u8]) {
        let event = classify(frame).unwrap();
        self.transmitted[at].push(event);
        if let EventKind::Probe {
            mac: router_mac,
            target_ip,
        } = event.kind
        {
            let answer = self
                .vms
                .iter()
                .find(|v| {
                    v.at == at
                        && !self.mute.contains(&v.ip)
                        && v.ip == target_ip
                        && (event.eth_dst == v.mac || event.eth_dst == MacAddr::BROADCAST)
                })
                .map(|v| probe_reply(v.mac, v.ip, router_mac));
            if let Some(reply) = answer {
                self.lan_frame(at, &reply);
            }
        }
    }

    /// The VM leaves its LAN and arrives on site `to`'s, and the hypervisor announces it
    /// (nothing else happens: no settling, no time passing).
    pub fn arrive(&mut self, vm_ip: Ipv4Addr, to: usize, announce: Announce) {
        let v = self.vm(vm_ip);
        self.vms[v].at = to;
        let vm_mac = self.vms[v].mac;
        match announce {
            Announce::RarpBurst => {
                for _ in 0..5 {
                    self.lan_frame(to, &frames::rarp_announce(vm_mac));
                }
            }
            Announce::Garp => self.lan_frame(to, &frames::gratuitous_arp_request(vm_mac, vm_ip)),
            Announce::Silent => {}
        }
        self.pump_or_settle();
    }

    /// The hypervisor at site `at` announces the VM although it is not there (a failed or
    /// duplicated migration, or a spoofer that does not answer): nothing else happens.
    pub fn ghost_announce(&mut self, vm_ip: Ipv4Addr, at: usize, announce: Announce) {
        let vm_mac = self.vms[self.vm(vm_ip)].mac;
        match announce {
            Announce::RarpBurst => self.lan_frame(at, &frames::rarp_announce(vm_mac)),
            Announce::Garp => self.lan_frame(at, &frames::gratuitous_arp_request(vm_mac, vm_ip)),
            Announce::Silent => {}
        }
        self.pump_or_settle();
    }

    /// Live-migrates a VM: it leaves its LAN, arrives on `to`'s, and the hypervisor announces
    /// it as `announce` does (RARP at QEMU's pace); then two seconds pass.
    pub fn migrate(&mut self, vm_ip: Ipv4Addr, to: &str, announce: Detection) {
        let v = self.vm(vm_ip);
        let to = self.index(to);
        self.vms[v].at = to;
        let vm_mac = self.vms[v].mac;
        for node in &mut self.transmitted {
            node.clear();
        }
        match announce {
            Detection::Rarp => {
                // QEMU: 5 RARPs at +0, 50, 200, 450, 800 ms.
                let mut last = 0;
                for at_ms in [0u64, 50, 200, 450, 800] {
                    self.advance(Duration::from_millis(at_ms - last));
                    last = at_ms;
                    self.lan_frame(to, &frames::rarp_announce(vm_mac));
                    self.settle();
                }
            }
            Detection::GratuitousArp => {
                self.lan_frame(to, &frames::gratuitous_arp_request(vm_mac, vm_ip));
                self.settle();
            }
            // No announcement: eventually the VM ARPs for its old gateway.
            Detection::Traffic => self.speak(vm_ip),
            Detection::Peer | Detection::Echo => unreachable!("not an announcement"),
        }
        self.advance(Duration::from_secs(2));
    }

    /// Every router places `addr` at `site`, and exactly that router has it in its LNDT.
    pub fn assert_location(&self, addr: Ipv4Addr, at: &str) {
        for (i, node) in self.nodes.iter().enumerate() {
            assert_eq!(
                node.gndt().owner(addr).map(SiteId::as_str),
                Some(at),
                "router {} places {addr} elsewhere",
                self.names[i]
            );
            assert_eq!(
                node.lndt().contains(addr),
                self.names[i].as_str() == at,
                "LNDT of router {} for {addr}",
                self.names[i]
            );
        }
    }

    /// No router holds a /32 route or LAN host entry it does not need.
    pub fn assert_minimal_kernel_state(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            for route in node.tun_routes() {
                if route.prefix() == 32 {
                    let home = self.home_site(route.ip());
                    let owner = node.gndt().owner(route.ip()).unwrap();
                    assert_ne!(
                        owner, &self.names[home],
                        "router {} keeps a stale /32 {route}",
                        self.names[i]
                    );
                }
            }
            for host in node.lan_hosts().keys() {
                assert_ne!(
                    self.home_site(*host),
                    i,
                    "router {} routes its own host {host} as migrated-in",
                    self.names[i]
                );
            }
        }
    }

    /// Every router's tables and kernel view agree with where the VMs really are: one owner
    /// per VM address (the site it is at), the LNDT of that site alone holding it, exactly
    /// the routes and LAN hosts that placement calls for, and one table digest everywhere.
    ///
    /// One exception: once every router has restarted, a VM away from home whose binding no
    /// router holds any more is forgotten. Nobody can vouch for its MAC, so no site may take
    /// it over, and it must be placed at its home site like any unused address.
    pub fn check_converged(&self) -> Result<(), String> {
        for vm in &self.vms {
            let at = self.expected_at(vm);
            for (i, node) in self.nodes.iter().enumerate() {
                let owner = node.gndt().owner(vm.ip);
                if owner != Some(&self.names[at]) {
                    return Err(format!(
                        "router {} places {} at {owner:?}; it is at {}",
                        self.names[i], vm.ip, self.names[at]
                    ));
                }
                if node.lndt().contains(vm.ip) != (i == at) {
                    return Err(format!(
                        "router {}'s LNDT {} {} (it is at {})",
                        self.names[i],
                        if i == at { "lacks" } else { "holds" },
                        vm.ip,
                        self.names[at]
                    ));
                }
            }
        }
        for i in 0..self.nodes.len() {
            let (tun, lan) = self.expected_kernel(i);
            let node = &self.nodes[i];
            if node.tun_routes() != tun {
                return Err(format!(
                    "router {} routes {:?} into the TUN; expected {tun:?}",
                    self.names[i],
                    node.tun_routes()
                ));
            }
            if node.lan_hosts() != lan {
                return Err(format!(
                    "router {} holds LAN hosts {:?}; expected {lan:?}",
                    self.names[i],
                    node.lan_hosts()
                ));
            }
            if self.kernels[i] != kernel_of(&tun, &lan) {
                return Err(format!(
                    "router {}'s targeted kernel changes left {:?}; expected {:?}",
                    self.names[i],
                    self.kernels[i],
                    kernel_of(&tun, &lan)
                ));
            }
            let mut foreign: Vec<MacAddr> = node
                .gndt()
                .live_entries()
                .filter(|s| s.entry.kind == EntryKind::Host && s.entry.site() != node.me())
                .filter_map(|s| s.entry.mac)
                .collect();
            foreign.sort_unstable();
            foreign.dedup();
            if node.foreign_macs() != foreign {
                return Err(format!(
                    "router {}'s kept foreign MACs {:?} are not its table's {foreign:?}",
                    self.names[i],
                    node.foreign_macs()
                ));
            }
            let full = FibSnapshot::build(node.me(), node.gndt(), node.lndt());
            if let Some(fib) = &self.fibs[i] {
                if !fib.same_tables(&full) {
                    return Err(format!(
                        "router {}'s incremental forwarding snapshot differs from a full build",
                        self.names[i]
                    ));
                }
            }
        }
        self.check_digests_agree()
    }

    /// Every router holds the same GNDT (one digest everywhere).
    pub fn check_digests_agree(&self) -> Result<(), String> {
        let digests: Vec<u64> = self.nodes.iter().map(|n| n.gndt().digest()).collect();
        for (node, digest) in self.nodes.iter().zip(&digests) {
            if *digest != node.gndt().digest_recomputed() {
                return Err(format!("{}'s kept digest is not its table's", node.me()));
            }
        }
        if !digests.windows(2).all(|d| d[0] == d[1]) {
            return Err(format!("table digests differ: {digests:?}"));
        }
        Ok(())
    }

    /// What router `i`'s kernel should hold: every other site's prefix and a /32 for each VM
    /// away from home and not here into the TUN; each VM here from another site on the LAN.
    pub fn expected_kernel(
        &self,
        i: usize,
    ) -> (BTreeSet<Ipv4Network>, BTreeMap<Ipv4Addr, Option<MacAddr>>) {
        let mut tun: BTreeSet<Ipv4Network> = (0..self.nodes.len())
            .filter(|s| *s != i)
            .map(|s| format!("10.77.{}.0/24", site_no(s)).parse().unwrap())
            .collect();
        let mut lan = BTreeMap::new();
        for vm in &self.vms {
            let (home, at) = (self.home_site(vm.ip), self.expected_at(vm));
            if at != home && at != i {
                tun.insert(Ipv4Network::from(vm.ip));
            }
            if at == i && home != i {
                lan.insert(vm.ip, Some(vm.mac));
            }
        }
        (tun, lan)
    }

    /// Where the routers should place `vm`: where it is, unless it is forgotten (see
    /// [`World::check_converged`]).
    fn expected_at(&self, vm: &Vm) -> usize {
        let amnesia = self.restarted.len() == self.nodes.len();
        let known = self.nodes.iter().any(|node| {
            node.gndt()
                .get(Ipv4Network::from(vm.ip))
                .is_some_and(|s| !s.entry.withdrawn && s.entry.mac == Some(vm.mac))
        });
        if amnesia && !known {
            self.home_site(vm.ip)
        } else {
            vm.at
        }
    }

    pub fn home_site(&self, addr: Ipv4Addr) -> usize {
        usize::from(addr.octets()[2]) - 1
    }

    pub fn sent_by(&self, name: &str) -> &[ArpEvent] {
        &self.transmitted[self.index(name)]
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

/// Applies one targeted change to a simulated kernel. The change says what it replaces; the
/// core's idea of that must be what the kernel holds.
fn apply_kernel_op(kernel: &mut BTreeMap<Ipv4Network, KernelRoute>, op: KernelOp) {
    match op {
        KernelOp::Set {
            dst,
            route,
            previous,
        } => {
            assert_eq!(
                kernel.get(&dst).copied(),
                previous,
                "set {dst}: stale previous"
            );
            kernel.insert(dst, route);
        }
        KernelOp::Remove { dst, previous } => {
            assert_eq!(
                kernel.remove(&dst),
                Some(previous),
                "remove {dst}: stale previous"
            );
        }
    }
}

/// What a full reconcile leaves in the kernel for `node`'s tables.
fn full_reconcile(node: &Node) -> BTreeMap<Ipv4Network, KernelRoute> {
    kernel_of(&node.tun_routes(), &node.lan_hosts())
}

/// The kernel routes for a TUN route set and LAN hosts (a LAN host wins over a TUN /32).
fn kernel_of(
    tun: &BTreeSet<Ipv4Network>,
    lan: &BTreeMap<Ipv4Addr, Option<MacAddr>>,
) -> BTreeMap<Ipv4Network, KernelRoute> {
    let mut kernel: BTreeMap<Ipv4Network, KernelRoute> =
        tun.iter().map(|net| (*net, KernelRoute::Tun)).collect();
    for (ip, mac) in lan {
        kernel.insert(Ipv4Network::from(*ip), KernelRoute::Lan { mac: *mac });
    }
    kernel
}

/// The number of the site at index `i` (sites are numbered from 1).
fn site_no(i: usize) -> u8 {
    u8::try_from(i + 1).unwrap()
}

/// Linux answers a probe (sender IP 0.0.0.0) with a reply to the prober's MAC.
pub fn probe_reply(vm_mac: MacAddr, vm_ip: Ipv4Addr, router_mac: MacAddr) -> Vec<u8> {
    frames::proxy_arp_reply(vm_mac, vm_ip, router_mac, Ipv4Addr::UNSPECIFIED).to_vec()
}
