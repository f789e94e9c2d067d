//! In-process multi-site simulation without root: three real router daemons on loopback QUIC,
//! each with an in-memory TUN device and a recording kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use skyvine_core::node::{KernelOp, KernelRoute};
use skyvine_router::admin::api::{PeerRow, PeersView, Reply, Request};
use skyvine_router::config::Config;
use skyvine_router::daemon::{self, KernelOps, NetworkParts, Parts};
use skyvine_router::dataplane::{FakeDevice, FakeHandle};
use skyvine_router::kernel_sync::Desired;
use skyvine_router::pki;
use skyvine_tables::{MacAddr, SiteId};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a router asked the kernel to hold.
#[derive(Debug, Default, Clone, PartialEq)]
struct KernelView {
    tun_routes: BTreeSet<Ipv4Network>,
    lan_hosts: BTreeMap<Ipv4Addr, Option<MacAddr>>,
    route_mtus: BTreeMap<Ipv4Network, u32>,
    cleared: bool,
    /// Targeted changes and repairs that succeeded.
    applied: usize,
    /// Full repairs that succeeded.
    repairs: usize,
    /// Changes and repairs still to fail (a kernel refusing changes for a while).
    fail_next: usize,
}

impl KernelView {
    fn refuse(&mut self) -> anyhow::Result<()> {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            anyhow::bail!("netlink said no (test)");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct RecordingKernel(Arc<Mutex<KernelView>>);

impl KernelOps for RecordingKernel {
    type Applied = KernelView;

    async fn apply_op(&mut self, op: &KernelOp, mtu: Option<u32>) -> anyhow::Result<()> {
        let mut view = self.0.lock().unwrap();
        view.refuse()?;
        view.applied += 1;
        view.cleared = false;
        let dst = op.dst();
        view.tun_routes.remove(&dst);
        view.lan_hosts.remove(&dst.ip());
        view.route_mtus.remove(&dst);
        if let (
            Some(mtu),
            KernelOp::Set {
                route: KernelRoute::Tun,
                ..
            },
        ) = (mtu, op)
        {
            view.route_mtus.insert(dst, mtu);
        }
        match *op {
            KernelOp::Set {
                route: KernelRoute::Tun,
                ..
            } => {
                view.tun_routes.insert(dst);
            }
            KernelOp::Set {
                route: KernelRoute::Lan { mac },
                ..
            } => {
                view.lan_hosts.insert(dst.ip(), mac);
            }
            KernelOp::Remove { .. } => {}
        }
        Ok(())
    }

    fn dump(
        &self,
    ) -> impl std::future::Future<Output = anyhow::Result<KernelView>> + Send + 'static {
        let view = self.0.lock().unwrap().clone();
        async move { Ok(view) }
    }

    async fn repair(
        &mut self,
        _applied: KernelView,
        desired: Desired,
        _skip: BTreeSet<Ipv4Network>,
    ) -> anyhow::Result<()> {
        let mut view = self.0.lock().unwrap();
        view.refuse()?;
        view.applied += 1;
        view.repairs += 1;
        view.tun_routes = desired.tun_routes;
        view.lan_hosts = desired.lan_hosts;
        view.route_mtus = desired.route_mtus;
        view.cleared = false;
        Ok(())
    }

    async fn clear(&mut self) -> anyhow::Result<()> {
        let mut view = self.0.lock().unwrap();
        *view = KernelView {
            cleared: true,
            ..KernelView::default()
        };
        Ok(())
    }
}

struct Site {
    name: &'static str,
    number: u8,
    port: u16,
}

struct Running {
    kernel: RecordingKernel,
    tun: FakeHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

struct Lab {
    dir: PathBuf,
    sites: Vec<Site>,
}

impl Lab {
    fn new(names: &[&'static str]) -> Lab {
        let dir = std::env::temp_dir().join(format!(
            "skyvine-sim-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        // A leftover of a crashed run with the same pid would refuse the new CA.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        pki::create_ca(&dir).unwrap();
        let mut sites = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let prefix: ipnetwork::Ipv4Network = format!("10.77.{}.0/24", i + 1).parse().unwrap();
            pki::issue(&dir, &SiteId::new(name).unwrap(), &[prefix.into()]).unwrap();
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            sites.push(Site {
                name,
                number: u8::try_from(i + 1).unwrap(),
                port,
            });
        }
        Lab { dir, sites }
    }

    fn config(&self, name: &str) -> Config {
        self.config_with(name, "", |peer| {
            Some(format!("address = \"127.0.0.1:{}\"\n", peer.port))
        })
    }

    /// A site's config with `top` lines before its sections and, for each other site that
    /// `peer` lists, the lines it gives after its `site = ...` line.
    fn config_with(&self, name: &str, top: &str, peer: impl Fn(&Site) -> Option<String>) -> Config {
        let me = self.sites.iter().find(|s| s.name == name).unwrap();
        let mut text = format!(
            "site = \"{name}\"\n{top}[lan]\ninterface = \"lan0\"\nprefixes = [\"10.77.{n}.0/24\"]\n\
             [wan]\nlisten = \"127.0.0.1:{port}\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\
             [admin]\nsocket = \"{dir}/{name}.sock\"\n",
            dir = self.dir.display(),
            n = me.number,
            port = me.port
        );
        for other in self.sites.iter().filter(|s| s.name != name) {
            if let Some(lines) = peer(other) {
                text += &format!("[[peers]]\nsite = \"{}\"\n{lines}", other.name);
            }
        }
        Config::parse(&text, &self.dir.join(format!("{name}.toml"))).unwrap()
    }

    fn start(&self, name: &str) -> Running {
        self.start_with(name, RecordingKernel::default())
    }

    fn start_with(&self, name: &str, kernel: RecordingKernel) -> Running {
        self.start_config(self.config(name), kernel)
    }

    fn start_config(&self, config: Config, kernel: RecordingKernel) -> Running {
        let identity = identity_of(&config);
        let socket = bind_retrying(&format!("127.0.0.1:{}", config.wan.listen.port()));
        let (device, tun) = FakeDevice::new(config.tun.mtu);
        let (stop, stopped) = oneshot::channel::<()>();
        let parts = Parts {
            config,
            identity,
            socket,
            networks: vec![NetworkParts {
                device,
                kernel: kernel.clone(),
                lan: None,
            }],
            reload: None,
        };
        let task = tokio::spawn(daemon::run(parts, async move {
            let _ = stopped.await;
        }));
        Running {
            kernel,
            tun,
            stop,
            task,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    fn view(&self) -> KernelView {
        self.kernel.0.lock().unwrap().clone()
    }

    async fn stop(self) -> KernelView {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.kernel.0.lock().unwrap().clone()
    }
}

/// A suffix unique among the labs of this process (tests run in parallel).
fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The certificate identity a site's configuration names.
fn identity_of(config: &Config) -> pki::Identity {
    pki::Identity::load(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
        &config.site,
    )
    .unwrap()
}

/// Rebinding a port just released can race with the kernel; retry briefly.
fn bind_retrying(addr: &str) -> UdpSocket {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UdpSocket::bind(addr) {
            Ok(socket) => return socket,
            Err(e) if Instant::now() < deadline => {
                eprintln!("bind {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

fn routes(list: &[&str]) -> BTreeSet<Ipv4Network> {
    list.iter().map(|s| net(s)).collect()
}

/// A minimal IPv4/UDP packet with a valid header checksum.
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap();
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(&4000u16.to_be_bytes());
    p.extend_from_slice(&4000u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

async fn next_packet(handle: &mut FakeHandle) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(5), handle.sent.recv())
        .await
        .expect("no packet came out of the TUN device within 5 s")
        .expect("device closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_learn_each_others_prefixes_and_forward_packets() {
    let lab = Lab::new(&["a", "b", "c"]);
    let a = lab.start("a");
    let mut b = lab.start("b");
    let c = lab.start("c");
    let expect = [
        (&a, routes(&["10.77.2.0/24", "10.77.3.0/24"])),
        (&b, routes(&["10.77.1.0/24", "10.77.3.0/24"])),
        (&c, routes(&["10.77.1.0/24", "10.77.2.0/24"])),
    ];
    for (router, want) in &expect {
        wait_until(
            "every router routes the other two prefixes",
            Duration::from_secs(15),
            || router.view().tun_routes == *want,
        )
        .await;
    }

    // A host outside A's LNDT may not use the overlay; a host inside may. The bad packet goes
    // first on the same path, so if it were forwarded it would come out first.
    let vm_a: Ipv4Addr = "10.77.1.1".parse().unwrap();
    let vm_b: Ipv4Addr = "10.77.2.1".parse().unwrap();
    let stranger: Ipv4Addr = "192.168.5.5".parse().unwrap();
    a.tun
        .inject
        .send(udp_packet(stranger, vm_b, b"spoof"))
        .await
        .unwrap();
    let good = udp_packet(vm_a, vm_b, b"hello from a");
    a.tun.inject.send(good.clone()).await.unwrap();
    assert_eq!(next_packet(&mut b.tun).await, good);

    for router in [a, b, c] {
        let view = router.stop().await;
        assert!(view.cleared, "shutdown must clear kernel routes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_router_relearns_the_whole_table_from_its_peers() {
    let lab = Lab::new(&["a", "b", "c"]);
    let a = lab.start("a");
    let b = lab.start("b");
    let c = lab.start("c");
    let want_c = routes(&["10.77.1.0/24", "10.77.2.0/24"]);
    wait_until("c converges", Duration::from_secs(15), || {
        c.view().tun_routes == want_c
    })
    .await;
    c.stop().await;
    let c = lab.start("c");
    wait_until(
        "restarted c relearns every prefix",
        Duration::from_secs(15),
        || c.view().tun_routes == want_c,
    )
    .await;
    // The others still route to c after its restart.
    wait_until("a routes c again", Duration::from_secs(15), || {
        a.view().tun_routes.contains(&net("10.77.3.0/24"))
    })
    .await;
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_kernel_apply_is_retried_without_a_new_change() {
    let lab = Lab::new(&["a", "b"]);
    // b learns a's prefix once; its kernel refuses the first three changes (the start-up
    // reconcile, then the targeted change, then the first repair): a repair with backoff
    // catches up without any new change to the tables.
    let a = lab.start("a");
    let kernel = RecordingKernel::default();
    kernel.0.lock().unwrap().fail_next = 3;
    let b = lab.start_with("b", kernel);
    wait_until(
        "b's kernel holds a's prefix after the failures",
        Duration::from_secs(15),
        || {
            let view = b.view();
            view.fail_next == 0 && view.repairs > 0 && view.tun_routes == routes(&["10.77.1.0/24"])
        },
    )
    .await;
    stop_all([a, b]).await;
}

/// Connects to router `to` as site `me` (a valid certificate from the lab CA) and sends raw
/// bytes on the control stream; returns how the router closed the connection.
async fn speak_raw(lab: &Lab, me: &str, to: &str, bytes: Vec<u8>) -> quinn::ConnectionError {
    let identity = identity_of(&lab.config(me));
    let client = identity
        .client_config(Arc::new(pki::transport_config()))
        .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let target = lab.sites.iter().find(|s| s.name == to).unwrap();
    let addr = format!("127.0.0.1:{}", target.port).parse().unwrap();
    let conn = endpoint
        .connect(addr, &pki::server_name(&SiteId::new(to).unwrap()))
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&bytes).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the router must close the connection")
}

fn application_close(error: &quinn::ConnectionError) -> (u64, String) {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_protocol_version_or_an_oversized_message_is_refused() {
    let lab = Lab::new(&["a", "b"]);
    let a = lab.start("a");
    // A certificate-holding peer speaking protocol version 99.
    let hello =
        br#"{"network":65535,"message":{"type":"hello","version":99,"site":"b","networks":[0]}}"#;
    let mut frame = u32::try_from(hello.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(hello);
    let (code, reason) = application_close(&speak_raw(&lab, "b", "a", frame).await);
    assert_eq!(code, 1, "protocol error code");
    assert!(reason.contains("handshake"), "{reason}");

    // A well-formed hello followed by a frame announcing 16 MiB.
    let hello = format!(
        r#"{{"network":65535,"message":{{"type":"hello","version":{},"site":"b","networks":[0]}}}}"#,
        skyvine_core::proto::PROTOCOL_VERSION
    );
    let mut frame = u32::try_from(hello.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(hello.as_bytes());
    frame.extend_from_slice(&(16u32 << 20).to_be_bytes());
    let (code, reason) = application_close(&speak_raw(&lab, "b", "a", frame).await);
    assert_eq!(code, 1);
    assert!(reason.contains("exceeds the limit"), "{reason}");
    a.stop().await;
}

/// Sites b and c that can only reach a (they dial it; neither has the other's address) and
/// reach each other `via` a. `a_lists` says which of b and c a lists; `relay` is a's `relay`.
fn relay_lab(lab: &Lab, relay: bool, a_lists: &[&str]) -> [Config; 3] {
    let top = if relay { "relay = true\n" } else { "" };
    let a = lab.config_with("a", top, |peer| {
        a_lists.contains(&peer.name).then(String::new)
    });
    let end = |name: &str| {
        lab.config_with(name, "", |peer| match peer.name {
            "a" => Some(format!("address = \"127.0.0.1:{}\"\n", peer.port)),
            _ => Some("via = \"a\"\n".to_owned()),
        })
    };
    [a, end("b"), end("c")]
}

/// `skyvine peers` of a running router, through its admin socket (`None` until it is bound).
async fn try_peers_of(config: &Config) -> Option<PeersView> {
    let socket = config.admin.socket.clone();
    let reply = tokio::task::spawn_blocking(move || {
        skyvine_router::admin::cli::ask(&socket, &Request::Peers { network: None })
    })
    .await
    .unwrap();
    match reply {
        Ok(Reply::Peers(view)) => Some(view),
        Ok(other) => panic!("expected peers, got {other:?}"),
        Err(skyvine_router::admin::cli::ClientError::NotRunning(_)) => None,
        Err(error) => panic!("admin socket: {error}"),
    }
}

async fn peers_of(config: &Config) -> PeersView {
    try_peers_of(config).await.expect("the admin socket is up")
}

async fn wait_for_peers(
    what: &str,
    config: &Config,
    mut condition: impl FnMut(&PeersView) -> bool,
) -> PeersView {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = try_peers_of(config).await;
        if let Some(view) = view.as_ref().filter(|v| condition(v)) {
            return view.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; last: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts one router per config, each with a fresh recording kernel.
fn start_all<const N: usize>(lab: &Lab, configs: &[Config; N]) -> [Running; N] {
    configs
        .each_ref()
        .map(|config| lab.start_config(config.clone(), RecordingKernel::default()))
}

/// Stops every router (and checks that each ended cleanly).
async fn stop_all<const N: usize>(routers: [Running; N]) {
    for router in routers {
        router.stop().await;
    }
}

/// Checks that the relay's `view` counts no relayed packet and that b (its admin socket) has
/// no connection to c: b and c must not meet `through` the relay.
async fn assert_relayed_nothing_between_b_and_c(
    view: &PeersView,
    config_b: &Config,
    through: &str,
) {
    assert!(
        view.peers.iter().all(|p| p.relayed_packets == 0),
        "{view:?}"
    );
    let view = peers_of(config_b).await;
    let c_row = peer_row(&view, "c");
    assert!(
        !c_row.connected,
        "b and c must not meet through {through}: {c_row:?}"
    );
}

/// The row of `site` in a `skyvine peers` view.
fn peer_row<'v>(view: &'v PeersView, site: &str) -> &'v PeerRow {
    view.peers
        .iter()
        .find(|p| p.site.as_str() == site)
        .unwrap_or_else(|| panic!("no peer row for {site}: {view:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_that_reach_only_a_relay_talk_end_to_end_through_it() {
    let lab = Lab::new(&["a", "b", "c"]);
    let configs = relay_lab(&lab, true, &["b", "c"]);
    let [config_a, config_b, _] = &configs;
    let [a, mut b, mut c] = start_all(&lab, &configs);
    // Each end learns the other's prefix from the other itself (over the connection through
    // a), with a route MTU that leaves room for the relay header and the inner QUIC packet.
    for (router, far) in [(&b, "10.77.3.0/24"), (&c, "10.77.2.0/24")] {
        wait_until(
            "the far prefix is routed, with its MTU",
            Duration::from_secs(15),
            || {
                let view = router.view();
                view.tun_routes.contains(&net(far)) && view.route_mtus.get(&net(far)) == Some(&1320)
            },
        )
        .await;
        assert_eq!(
            router.view().route_mtus.len(),
            1,
            "only the relayed site has an MTU"
        );
    }
    let vm_b: Ipv4Addr = "10.77.2.1".parse().unwrap();
    let vm_c: Ipv4Addr = "10.77.3.1".parse().unwrap();
    let to_c = udp_packet(vm_b, vm_c, b"hello c, via a");
    b.tun.inject.send(to_c.clone()).await.unwrap();
    assert_eq!(next_packet(&mut c.tun).await, to_c);
    let to_b = udp_packet(vm_c, vm_b, &[7u8; 1200]);
    c.tun.inject.send(to_b.clone()).await.unwrap();
    assert_eq!(next_packet(&mut b.tun).await, to_b);

    let view = peers_of(config_b).await;
    let c_row = peer_row(&view, "c");
    assert!(c_row.connected);
    assert_eq!(c_row.via.as_ref().map(SiteId::as_str), Some("a"));
    assert_eq!(c_row.address, None);
    let a_row = peer_row(&view, "a");
    assert_eq!(a_row.via, None, "b reaches a directly");
    let view = peers_of(config_a).await;
    for end in ["b", "c"] {
        let row = peer_row(&view, end);
        assert!(
            row.relayed_packets > 0,
            "a passed on datagrams from {end}: {row:?}"
        );
    }
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_without_relay_true_refuses_to_relay_and_counts_it() {
    let lab = Lab::new(&["a", "b", "c"]);
    let configs = relay_lab(&lab, false, &["b", "c"]);
    let [config_a, config_b, _] = &configs;
    let [a, b, c] = start_all(&lab, &configs);
    let view = wait_for_peers(
        "a drops the relay datagrams of b's and c's dials",
        config_a,
        |v| v.drops.get("relay_disabled").copied().unwrap_or(0) > 0,
    )
    .await;
    assert_relayed_nothing_between_b_and_c(&view, config_b, "a non-relay").await;
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refuses_a_site_it_does_not_list_and_counts_it() {
    let lab = Lab::new(&["a", "b", "c"]);
    // a relays, but lists only b: c connects with a valid certificate (a admits any certified
    // site), yet may not use a.
    let mut configs = relay_lab(&lab, true, &["b"]);
    let [first, ..] = &mut configs;
    first.tls.any_certified_peer = true;
    let [config_a, config_b, _] = &configs;
    let [a, b, c] = start_all(&lab, &configs);
    let view = wait_for_peers(
        "a drops relay datagrams from or to unlisted c",
        config_a,
        |v| {
            v.drops.get("relay_unlisted").copied().unwrap_or(0) > 0
                && v.peers
                    .iter()
                    .any(|p| p.site.as_str() == "c" && p.connected)
        },
    )
    .await;
    let c_row = peer_row(&view, "c");
    assert!(!c_row.configured, "c dialed in unlisted: {c_row:?}");
    assert_relayed_nothing_between_b_and_c(&view, config_b, "it").await;
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_brings_the_path_through_it_back() {
    let lab = Lab::new(&["a", "b", "c"]);
    let configs = relay_lab(&lab, true, &["b", "c"]);
    let [config_a, config_b, _] = &configs;
    let [a, mut b, c] = start_all(&lab, &configs);
    let through_a = |v: &PeersView| {
        v.peers
            .iter()
            .any(|p| p.site.as_str() == "c" && p.connected && p.via.is_some())
    };
    wait_for_peers("b reaches c via a", config_b, through_a).await;
    // The relay goes away, and with it the path through it.
    a.stop().await;
    wait_for_peers("b's path to c is down with the relay", config_b, |v| {
        v.peers
            .iter()
            .any(|p| p.site.as_str() == "c" && !p.connected)
    })
    .await;
    let a = lab.start_config(config_a.clone(), RecordingKernel::default());
    wait_for_peers("b reaches c via a again", config_b, through_a).await;
    let packet = udp_packet(
        "10.77.3.1".parse().unwrap(),
        "10.77.2.1".parse().unwrap(),
        b"back",
    );
    c.tun.inject.send(packet.clone()).await.unwrap();
    assert_eq!(next_packet(&mut b.tun).await, packet);
    stop_all([a, b, c]).await;
}
