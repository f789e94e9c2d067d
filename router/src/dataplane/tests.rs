//! Data-plane tests without root: fake devices, real quinn connections on loopback.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use skyvine_tables::{Gndt, GndtEntry, Lndt, SiteId};

use super::*;
use skyvine_core::datagram;
use skyvine_core::fib::FibSnapshot;

const MTU: u16 = 1380;
/// The network the tests' data planes carry.
const NET: NetworkId = 1;

/// `packet` as a datagram of `network`.
fn data(network: NetworkId, packet: &[u8]) -> Vec<u8> {
    let mut datagram = datagram::header(datagram::PACKET, network).to_vec();
    datagram.extend_from_slice(packet);
    datagram
}

/// One network for a peer reader: `dev` and `fib`, with its own counters.
fn one_network<D>(
    id: NetworkId,
    dev: Arc<D>,
    fib: Arc<Fib>,
    counters: &Arc<Counters>,
) -> DataNetwork<D> {
    DataNetwork {
        id,
        device: dev,
        fib,
        counters: Arc::clone(counters),
    }
}

fn site(id: &str) -> SiteId {
    SiteId::new(id).unwrap()
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

/// Sites a, b, c own 10.77.{1,2,3}.0/24; `me` is responsible for its own /24.
fn fib_for(me: &str) -> Arc<Fib> {
    let now = Instant::now();
    let mut gndt = Gndt::new();
    for (id, prefix) in [
        ("a", "10.77.1.0/24"),
        ("b", "10.77.2.0/24"),
        ("c", "10.77.3.0/24"),
    ] {
        gndt.apply(GndtEntry::site_prefix(net(prefix), site(id), 1), now);
    }
    let own = match me {
        "a" => "10.77.1.0/24",
        "b" => "10.77.2.0/24",
        _ => "10.77.3.0/24",
    };
    let lndt = Lndt::new([net(own)], now);
    Arc::new(Fib::new(FibSnapshot::build(&site(me), &gndt, &lndt)))
}

/// A minimal IPv4/UDP packet of `len` bytes (at least 28) with a valid header.
fn ipv4(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let payload = vec![0xab; len - 28];
    let builder = etherparse::PacketBuilder::ipv4(src, dst, 64).udp(5000, 6000);
    let mut packet = Vec::with_capacity(len);
    builder.write(&mut packet, &payload).unwrap();
    packet
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The counters of peer `site` (zero when it has none yet).
fn stats(counters: &Counters, site: &str) -> PeerStats {
    counters
        .snapshot()
        .peers
        .get(site)
        .copied()
        .unwrap_or_default()
}

/// Awaits `future`, failing the test after a generous deadline.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("deadline passed")
}

/// Endpoints (kept alive by the caller) and the client and server side of the connection.
type QuicPair = (
    quinn::Endpoint,
    quinn::Endpoint,
    quinn::Connection,
    quinn::Connection,
);

/// A QUIC connection on loopback, with the data-plane tuning.
async fn quic_pair() -> QuicPair {
    quic_pair_with(|_| {}).await
}

/// [`quic_pair`] with extra transport settings on top of the data-plane tuning.
async fn quic_pair_with(adjust: impl FnOnce(&mut quinn::TransportConfig)) -> QuicPair {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let mut transport = quinn::TransportConfig::default();
    tune_transport(&mut transport, MTU);
    adjust(&mut transport);
    let transport = Arc::new(transport);

    let mut server_config =
        quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into()).unwrap();
    server_config.transport_config(Arc::clone(&transport));
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    client_config.transport_config(transport);
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config);

    let server_addr = server.local_addr().unwrap();
    let accept = async {
        let incoming = server.accept().await.unwrap();
        incoming.await.unwrap()
    };
    let connect = async {
        client
            .connect(server_addr, "localhost")
            .unwrap()
            .await
            .unwrap()
    };
    let (server_conn, client_conn) = tokio::join!(accept, connect);
    (client, server, client_conn, server_conn)
}

#[test]
fn ipv4_addrs_checks_the_header() {
    let good = ipv4([10, 77, 1, 1], [10, 77, 2, 1], 100);
    assert_eq!(
        ipv4_addrs(&good),
        Ok((Ipv4Addr::new(10, 77, 1, 1), Ipv4Addr::new(10, 77, 2, 1)))
    );
    assert_eq!(ipv4_addrs(&good[..19]), Err(DropReason::Malformed));
    assert_eq!(
        ipv4_addrs(&good[..60]),
        Err(DropReason::Malformed),
        "total length > buffer"
    );
    let mut v6 = good.clone();
    v6[0] = 0x60;
    assert_eq!(ipv4_addrs(&v6), Err(DropReason::Malformed));
    assert_eq!(ipv4_addrs(&[]), Err(DropReason::Malformed));
}

#[tokio::test]
async fn outbound_drops_are_counted_by_reason() {
    let (dev, handle) = FakeDevice::new(MTU);
    let counters = Arc::new(Counters::new());
    let peers = Arc::new(PeerTable::new());
    let task = spawn_tun_reader(NET, dev, fib_for("a"), peers, Arc::clone(&counters));

    let mut not_ipv4 = ipv4([10, 77, 1, 1], [10, 77, 2, 1], 64);
    not_ipv4[0] = 0x60;
    let cases = [
        // Source not in a's LNDT.
        (
            ipv4([10, 77, 9, 1], [10, 77, 2, 1], 64),
            DropReason::SourceNotLocal,
        ),
        // No GNDT entry for the destination.
        (
            ipv4([10, 77, 1, 1], [10, 99, 0, 1], 64),
            DropReason::NoRoute,
        ),
        // Destination in a's own prefix.
        (
            ipv4([10, 77, 1, 1], [10, 77, 1, 2], 64),
            DropReason::DestinationLocal,
        ),
        // Routed to b, but b is not connected.
        (
            ipv4([10, 77, 1, 1], [10, 77, 2, 1], 64),
            DropReason::PeerDown,
        ),
        (not_ipv4, DropReason::Malformed),
    ];
    for (packet, _) in &cases {
        handle.inject.send(packet.clone()).await.unwrap();
    }
    wait_for("all five drops", || {
        cases.iter().map(|(_, r)| counters.dropped(*r)).sum::<u64>() == 5
    })
    .await;
    for (_, reason) in cases {
        assert_eq!(counters.dropped(reason), 1, "{reason:?}");
    }
    assert!(counters
        .snapshot()
        .peers
        .values()
        .all(|p| p.tx_packets == 0));
    task.abort();
}

#[tokio::test]
async fn a_good_packet_goes_to_the_owning_peer() {
    let (_client, _server, a_side, b_side) = quic_pair().await;
    let (_c_client, _c_server, a_to_c, c_side) = quic_pair().await;
    let (dev, handle) = FakeDevice::new(MTU);
    let counters = Arc::new(Counters::new());
    let peers = Arc::new(PeerTable::new());
    peers.insert(site("b"), a_side);
    peers.insert(site("c"), a_to_c);
    let task = spawn_tun_reader(
        NET,
        dev,
        fib_for("a"),
        Arc::clone(&peers),
        Arc::clone(&counters),
    );

    let to_c = ipv4([10, 77, 1, 1], [10, 77, 3, 7], 200);
    let to_b = ipv4([10, 77, 1, 1], [10, 77, 2, 7], usize::from(MTU));
    handle.inject.send(to_c.clone()).await.unwrap();
    handle.inject.send(to_b.clone()).await.unwrap();

    let got_b = within(b_side.read_datagram()).await.unwrap();
    assert_eq!(
        &got_b[..],
        &data(NET, &to_b)[..],
        "a full-MTU packet fits one datagram"
    );
    let got_c = within(c_side.read_datagram()).await.unwrap();
    assert_eq!(
        &got_c[..],
        &data(NET, &to_c)[..],
        "the header names the network"
    );
    wait_for("tx counters", || {
        let snap = counters.snapshot();
        snap.peers.get("b").is_some_and(|p| p.tx_packets == 1)
            && snap.peers.get("c").is_some_and(|p| p.tx_packets == 1)
    })
    .await;
    let snap = counters.snapshot();
    assert_eq!(snap.peers["b"].tx_bytes, u64::from(MTU));
    assert_eq!(snap.peers["c"].tx_bytes, 200);
    assert!(snap.drops.values().all(|n| *n == 0), "{:?}", snap.drops);
    task.abort();
}

#[tokio::test]
async fn a_packet_larger_than_a_datagram_is_dropped_too_big() {
    let (_client, _server, a_side, _b_side) = quic_pair().await;
    let (dev, handle) = FakeDevice::new(9000);
    let counters = Arc::new(Counters::new());
    let peers = Arc::new(PeerTable::new());
    peers.insert(site("b"), a_side);
    let task = spawn_tun_reader(NET, dev, fib_for("a"), peers, Arc::clone(&counters));
    handle
        .inject
        .send(ipv4([10, 77, 1, 1], [10, 77, 2, 7], 3000))
        .await
        .unwrap();
    wait_for("too-big drop", || counters.dropped(DropReason::TooBig) == 1).await;
    task.abort();
}

#[tokio::test]
async fn datagrams_pushed_out_of_a_full_send_buffer_are_counted_queue_full() {
    // Room for about four 1000-byte datagrams; the test runtime is single-threaded, so the
    // QUIC driver cannot drain the buffer while the reader works through one batch.
    let (_client, _server, a_side, _b_side) = quic_pair_with(|t| {
        t.datagram_send_buffer_size(4 * 1100);
    })
    .await;
    let (dev, handle) = FakeDevice::new(MTU);
    let counters = Arc::new(Counters::new());
    let peers = Arc::new(PeerTable::new());
    peers.insert(site("b"), a_side);
    for i in 0..20u8 {
        let packet = ipv4([10, 77, 1, 1], [10, 77, 2, i], 1000);
        handle.inject.send(packet).await.unwrap();
    }
    let task = spawn_tun_reader(NET, dev, fib_for("a"), peers, Arc::clone(&counters));
    wait_for("20 sent", || stats(&counters, "b").tx_packets == 20).await;
    assert_eq!(counters.dropped(DropReason::QueueFull), 16);
    task.abort();
}

#[tokio::test]
async fn inbound_spoofed_source_is_dropped_and_good_packets_reach_the_device() {
    let (_client, _server, a_side, b_side) = quic_pair().await;
    let (dev, mut handle) = FakeDevice::new(MTU);
    let counters = Arc::new(Counters::new());
    // Router b reads what site a sends.
    let task = spawn_peer_reader(
        b_side,
        site("a"),
        Arc::new(vec![one_network(NET, dev, fib_for("b"), &counters)]),
        Arc::new(PeerTable::new()),
        Arc::new(Counters::new()),
    );

    let spoofed = ipv4([10, 77, 3, 1], [10, 77, 2, 1], 100);
    let good = ipv4([10, 77, 1, 1], [10, 77, 2, 1], 100);
    let mut garbage = good.clone();
    garbage[0] = 0x45;
    garbage.truncate(10);
    a_side.send_datagram(data(NET, &spoofed).into()).unwrap();
    a_side.send_datagram(data(NET, &garbage).into()).unwrap();
    a_side.send_datagram(data(NET, &good).into()).unwrap();

    let written = within(handle.sent.recv()).await.unwrap();
    assert_eq!(written, good);
    wait_for("both drops", || {
        counters.dropped(DropReason::SpoofedSource) == 1
            && counters.dropped(DropReason::Malformed) == 1
    })
    .await;
    wait_for("rx counters", || stats(&counters, "a").rx_packets == 1).await;
    assert_eq!(counters.snapshot().peers["a"].rx_bytes, 100);
    assert!(handle.sent.try_recv().is_err(), "nothing else was written");

    // The reader ends when the connection closes.
    a_side.close(0u32.into(), b"bye");
    within(task).await.unwrap();
}

#[tokio::test]
async fn packets_cross_between_two_data_planes() {
    let (_client, _server, a_to_b, b_to_a) = quic_pair().await;
    let (dev_a, handle_a) = FakeDevice::new(MTU);
    let (dev_b, mut handle_b) = FakeDevice::new(MTU);
    let (counters_a, counters_b) = (Arc::new(Counters::new()), Arc::new(Counters::new()));
    let peers_a = Arc::new(PeerTable::new());
    peers_a.insert(site("b"), a_to_b.clone());
    let fib_a = fib_for("a");
    let fib_b = fib_for("b");
    let tun_a = spawn_tun_reader(NET, dev_a, fib_a, peers_a, Arc::clone(&counters_a));
    let peer_b = spawn_peer_reader(
        b_to_a,
        site("a"),
        Arc::new(vec![one_network(NET, dev_b, fib_b, &counters_b)]),
        Arc::new(PeerTable::new()),
        Arc::new(Counters::new()),
    );

    let packets: Vec<Vec<u8>> = (0..50u8)
        .map(|i| ipv4([10, 77, 1, 1], [10, 77, 2, i], 100 + usize::from(i)))
        .collect();
    for packet in &packets {
        handle_a.inject.send(packet.clone()).await.unwrap();
    }
    let mut received = Vec::new();
    while received.len() < packets.len() {
        let packet = within(handle_b.sent.recv()).await.unwrap();
        received.push(packet);
    }
    received.sort();
    let mut expected = packets.clone();
    expected.sort();
    assert_eq!(received, expected);
    wait_for("counters", || stats(&counters_b, "a").rx_packets == 50).await;
    assert_eq!(counters_a.snapshot().peers["b"].tx_packets, 50);
    tun_a.abort();
    peer_b.abort();
}

#[tokio::test]
async fn each_datagram_reaches_its_own_networks_device_and_an_unshared_network_none() {
    let (_client, _server, a_side, b_side) = quic_pair().await;
    // Router b carries networks 1 and 2 with the same addresses (a's 10.77.1.0/24 in both);
    // peer a shares both. Network 3 is a's but not b's.
    let (dev_1, mut handle_1) = FakeDevice::new(MTU);
    let (dev_2, mut handle_2) = FakeDevice::new(MTU);
    let (counters_1, counters_2, router) = (
        Arc::new(Counters::new()),
        Arc::new(Counters::new()),
        Arc::new(Counters::new()),
    );
    let task = spawn_peer_reader(
        b_side,
        site("a"),
        Arc::new(vec![
            one_network(1, dev_1, fib_for("b"), &counters_1),
            one_network(2, dev_2, fib_for("b"), &counters_2),
        ]),
        Arc::new(PeerTable::new()),
        Arc::clone(&router),
    );
    let to_1 = ipv4([10, 77, 1, 1], [10, 77, 2, 1], 100);
    let to_2 = ipv4([10, 77, 1, 1], [10, 77, 2, 1], 120);
    let to_3 = ipv4([10, 77, 1, 1], [10, 77, 2, 1], 140);
    a_side.send_datagram(data(3, &to_3).into()).unwrap();
    a_side.send_datagram(data(2, &to_2).into()).unwrap();
    a_side.send_datagram(data(1, &to_1).into()).unwrap();
    // Version 3's bare IPv4 packet names no network: malformed.
    a_side.send_datagram(to_1.clone().into()).unwrap();

    assert_eq!(within(handle_1.sent.recv()).await.unwrap(), to_1);
    assert_eq!(within(handle_2.sent.recv()).await.unwrap(), to_2);
    wait_for("the unshared network's drop", || {
        router.dropped(DropReason::UnknownNetwork) == 1
            && router.dropped(DropReason::Malformed) == 1
    })
    .await;
    wait_for("rx per network", || {
        stats(&counters_1, "a").rx_packets == 1 && stats(&counters_2, "a").rx_packets == 1
    })
    .await;
    assert!(
        handle_1.sent.try_recv().is_err(),
        "network 1 got only its packet"
    );
    assert!(
        handle_2.sent.try_recv().is_err(),
        "network 2 got only its packet"
    );
    assert_eq!(counters_1.dropped(DropReason::UnknownNetwork), 0);
    task.abort();
}

#[tokio::test]
async fn tuned_transport_fits_a_full_tun_packet_from_the_start() {
    let (_client, _server, a_side, b_side) = quic_pair().await;
    for conn in [&a_side, &b_side] {
        let max = conn.max_datagram_size().unwrap();
        assert!(
            max >= usize::from(MTU) + datagram::HEADER_LEN,
            "max datagram {max} < TUN MTU {MTU} + header"
        );
    }
}

#[tokio::test]
async fn peer_table_replaces_and_removes_only_the_same_connection() {
    let (_client, _server, first, _other) = quic_pair().await;
    let (_client2, _server2, second, _other2) = quic_pair().await;
    let table = PeerTable::new();
    let b = site("b");
    assert!(table.insert(b.clone(), first.clone()).is_none());
    let replaced = table.insert(b.clone(), second.clone()).unwrap();
    assert_eq!(replaced.stable_id(), first.stable_id());
    assert!(
        !table.remove_if_same(&b, &first),
        "a stale connection does not remove the new one"
    );
    assert_eq!(table.get(&b).unwrap().stable_id(), second.stable_id());
    assert!(table.remove_if_same(&b, &second));
    assert!(table.get(&b).is_none());
}
