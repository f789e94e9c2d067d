use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};

use quinn::{ConnectionError, Endpoint, TransportErrorCode};
use rustls::AlertDescription;

use super::*;

/// A fresh directory under the system temp dir, removed on drop (also when a test panics).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("skyvine-pki-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn site(id: &str) -> SiteId {
    SiteId::new(id).unwrap()
}

/// A CA with certificates for `sites`.
pub(crate) fn pki(name: &str, sites: &[&str]) -> TempDir {
    let dir = TempDir::new(name);
    create_ca(&dir.0).unwrap();
    for id in sites {
        issue(&dir.0, &site(id), &[prefix_of(id).into()]).unwrap();
    }
    dir
}

/// The prefix test certificates give a site: 10.77.N.0/24, N = 1 for a, 2 for b... (a
/// hash of the name for longer ones).
pub(crate) fn prefix_of(id: &str) -> Ipv4Network {
    let n = match id.as_bytes() {
        [letter @ b'a'..=b'z'] => letter - b'a' + 1,
        name => name.iter().fold(100u8, |acc, b| acc.wrapping_add(*b)),
    };
    Ipv4Network::new(std::net::Ipv4Addr::new(10, 77, n, 0), 24).unwrap()
}

fn identity(dir: &TempDir, id: &str) -> Identity {
    Identity::load(
        &dir.0.join("ca.pem"),
        &dir.0.join(format!("{id}.pem")),
        &dir.0.join(format!("{id}.key")),
        &site(id),
    )
    .unwrap()
}

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn server(identity: &Identity) -> Endpoint {
    let config = identity
        .server_config(Arc::new(transport_config()))
        .unwrap();
    Endpoint::server(config, loopback()).unwrap()
}

/// Dials `server` as `client_config` expecting `name`, accepts there, and returns both
/// sides' outcome. A refused client may complete its own half of the TLS 1.3 handshake
/// before the server rejects its certificate; its outcome is then the close that follows.
async fn handshake(
    server: &Endpoint,
    client_config: quinn::ClientConfig,
    name: &str,
) -> (
    Result<quinn::Connection, ConnectionError>,
    Result<quinn::Connection, ConnectionError>,
) {
    let addr = server.local_addr().unwrap();
    let accept = async {
        let incoming = server.accept().await.expect("endpoint open");
        incoming.await
    };
    let client = Endpoint::client(loopback()).unwrap();
    let dial = async {
        let conn = client
            .connect_with(client_config, addr, name)
            .unwrap()
            .await?;
        Ok(conn)
    };
    let deadline = Duration::from_secs(20);
    let (s, c) = tokio::time::timeout(deadline, async { tokio::join!(accept, dial) })
        .await
        .expect("handshake finished or failed before the deadline");
    (s, c)
}

/// The error that ends a connection the client believes it completed.
async fn client_outcome(c: Result<quinn::Connection, ConnectionError>) -> ConnectionError {
    match c {
        Err(e) => e,
        Ok(conn) => tokio::time::timeout(Duration::from_secs(20), conn.closed())
            .await
            .expect("refused connection closed before the deadline"),
    }
}

fn alert(description: AlertDescription) -> TransportErrorCode {
    TransportErrorCode::crypto(u8::from(description))
}

#[tokio::test]
async fn mutual_auth_names_both_sites_and_carries_datagrams() {
    let dir = pki("ok", &["a", "b"]);
    let (a, b) = (identity(&dir, "a"), identity(&dir, "b"));
    let server = server(&b);
    // The client as the daemon builds it: connection settings plus the data plane's.
    let mut transport = transport_config();
    crate::dataplane::tune_transport(&mut transport, 1380);
    let client_config = a.client_config(Arc::new(transport)).unwrap();

    let (s, c) = handshake(&server, client_config, &server_name(&site("b"))).await;
    let (s, c) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_site(&s).unwrap(), site("a"));
    assert_eq!(peer_site(&c).unwrap(), site("b"));
    assert_eq!(
        s.handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol
            .as_deref(),
        Some(ALPN)
    );
    // A full-size tunnel packet fits in one datagram from the start.
    assert!(
        c.max_datagram_size().unwrap() >= 1380,
        "{:?}",
        c.max_datagram_size()
    );
    c.send_datagram(bytes::Bytes::from_static(b"hello b"))
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), s.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"hello b");
    c.close(0u32.into(), b"done");
    server.close(0u32.into(), b"done");
}

/// A client config built from raw parts: trusting `ca`, presenting `cert` if given.
fn raw_client(trusting: &Identity, cert: Option<&Identity>) -> quinn::ClientConfig {
    let cert = cert.map(|id| (&id.chain, &id.key));
    let tls = client_tls(&trusting.provider, &trusting.ca, cert).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    config.transport_config(Arc::new(transport_config()));
    config
}

/// Both sides of a handshake that the server refused with `expected`.
async fn assert_server_refused(
    (s, c): (
        Result<quinn::Connection, ConnectionError>,
        Result<quinn::Connection, ConnectionError>,
    ),
    expected: AlertDescription,
) {
    match s {
        Err(ConnectionError::TransportError(e)) => assert_eq!(e.code, alert(expected), "{e}"),
        other => panic!("server accepted or failed oddly: {other:?}"),
    }
    match client_outcome(c).await {
        ConnectionError::ConnectionClosed(close) => {
            assert_eq!(close.error_code, alert(expected), "{close}")
        }
        other => panic!("client saw {other:?}"),
    }
}

/// A client-side handshake failure with `expected`.
fn assert_client_refused(
    c: Result<quinn::Connection, ConnectionError>,
    expected: AlertDescription,
) {
    match c {
        Err(ConnectionError::TransportError(e)) => assert_eq!(e.code, alert(expected), "{e}"),
        other => panic!("client accepted the server: {other:?}"),
    }
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let ours = pki("ours", &["b"]);
    let theirs = pki("theirs", &["a"]);
    let b = identity(&ours, "b");
    let rogue = identity(&theirs, "a");
    // The rogue trusts our CA (so it would accept our server) but holds a foreign cert.
    let config = raw_client(&b, Some(&rogue));
    let outcome = handshake(&server(&b), config, &server_name(&site("b"))).await;
    // rustls reports an unknown issuer as the `unknown_ca` alert.
    assert_server_refused(outcome, AlertDescription::UnknownCA).await;
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let dir = pki("nocert", &["b"]);
    let b = identity(&dir, "b");
    let outcome = handshake(&server(&b), raw_client(&b, None), &server_name(&site("b"))).await;
    assert_server_refused(outcome, AlertDescription::CertificateRequired).await;
}

#[tokio::test]
async fn client_refuses_server_from_another_ca_or_with_another_name() {
    let ours = pki("client-side", &["a", "b"]);
    let theirs = pki("client-side-rogue", &["b"]);
    let a = identity(&ours, "a");
    let transport = Arc::new(transport_config());
    let dial_b = |server_site: &str| server_name(&site(server_site));

    // A server with a foreign certificate for "b".
    let rogue = server(&identity(&theirs, "b"));
    let config = a.client_config(transport.clone()).unwrap();
    let (_, c) = handshake(&rogue, config, &dial_b("b")).await;
    assert_client_refused(c, AlertDescription::UnknownCA);

    // The genuine "b" answering where "c" was expected fails the name check.
    let genuine = server(&identity(&ours, "b"));
    let (_, c) = handshake(&genuine, a.client_config(transport).unwrap(), &dial_b("c")).await;
    assert_client_refused(c, AlertDescription::BadCertificate);
}

#[test]
fn routers_prefer_aes_128_gcm_and_still_offer_the_others() {
    let dir = pki("suites", &["a"]);
    let a = identity(&dir, "a");
    let suites: Vec<_> = a.provider.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(
        suites,
        vec![
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ]
    );
}

#[test]
fn load_rejects_wrong_site_foreign_ca_and_wrong_key() {
    let ours = pki("load", &["a", "b"]);
    let theirs = pki("load-rogue", &["a"]);
    // Loads `cert_dir/cert.pem` with `key_dir/key.key` as site "a" against our CA.
    let load = |cert_dir: &TempDir, cert: &str, key: &str| {
        let ca = ours.0.join("ca.pem");
        let cert_path = cert_dir.0.join(format!("{cert}.pem"));
        let key_path = cert_dir.0.join(format!("{key}.key"));
        Identity::load(&ca, &cert_path, &key_path, &site("a")).unwrap_err()
    };

    let err = load(&ours, "b", "b");
    assert!(
        matches!(&err, PkiError::WrongSite { found, .. } if found == "b"),
        "{err}"
    );
    assert!(
        err.to_string().contains("another router's certificate"),
        "{err}"
    );

    let err = load(&theirs, "a", "a");
    assert!(matches!(err, PkiError::NotSignedByCa { .. }), "{err}");

    let err = load(&ours, "a", "b");
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");

    let err = load(&ours, "missing", "a");
    assert!(matches!(err, PkiError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn create_and_issue_refuse_to_overwrite_and_protect_keys() {
    let dir = pki("overwrite", &["a"]);
    let before = fs::read(dir.0.join("a.pem")).unwrap();

    let err = issue(&dir.0, &site("a"), &[prefix_of("a").into()]).unwrap_err();
    assert!(
        matches!(&err, PkiError::Exists { path } if path.ends_with("a.pem")),
        "{err}"
    );
    assert_eq!(fs::read(dir.0.join("a.pem")).unwrap(), before);
    let err = create_ca(&dir.0).unwrap_err();
    assert!(matches!(err, PkiError::Exists { .. }), "{err}");

    for key in ["ca.key", "a.key"] {
        let mode = fs::metadata(dir.0.join(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // Issuing without a CA names the missing file.
    let empty = TempDir::new("no-ca");
    fs::create_dir_all(&empty.0).unwrap();
    let err = issue(&empty.0, &site("a"), &[prefix_of("a").into()]).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn router_certificate_names_its_site() {
    let dir = pki("names", &["site-7"]);
    let der = CertificateDer::from_pem_file(dir.0.join("site-7.pem")).unwrap();
    assert_eq!(site_of(&der).unwrap(), "site-7");
    let ca = CertificateDer::from_pem_file(dir.0.join("ca.pem")).unwrap();
    assert!(matches!(site_of(&ca), Err(PkiError::NoSiteName(_))));
}

#[test]
fn router_certificate_certifies_its_prefixes() {
    let dir = pki("prefixes", &[]);
    let two: Vec<Ipv4Network> = vec![
        "10.77.1.0/24".parse().unwrap(),
        "10.88.0.0/16".parse().unwrap(),
    ];
    let two: Vec<CertifiedPrefix> = two.into_iter().map(CertifiedPrefix::from).collect();
    issue(&dir.0, &site("a"), &two).unwrap();
    let der = CertificateDer::from_pem_file(dir.0.join("a.pem")).unwrap();
    let described = describe_certificate(&der).unwrap();
    assert_eq!(described.prefixes, two);
    assert_eq!(described.site, site("a"));
    assert_eq!(described.id.sha256.len(), 64);
    assert!(!described.id.serial.is_empty());
    // The verifier accepts the prefix URIs beside the site's DNS name.
    let identity = identity(&dir, "a");
    assert_eq!(identity.prefixes(), two.as_slice());
    assert!(matches!(
        issue(&dir.0, &site("b"), &[]),
        Err(PkiError::NoPrefixToIssue)
    ));
}

#[test]
fn a_certificate_without_prefixes_is_refused_with_how_to_reissue() {
    let dir = pki("legacy", &[]);
    // A certificate as issued before certified prefixes: only the site's DNS name.
    let ca_key = KeyPair::from_pem(&fs::read_to_string(dir.0.join("ca.key")).unwrap()).unwrap();
    let ca_pem = fs::read_to_string(dir.0.join("ca.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::new(vec![server_name(&site("old"))]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "old");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let err = describe_certificate(cert.der()).unwrap_err();
    assert!(
        matches!(&err, PkiError::NoPrefixes(s) if s == "old"),
        "{err}"
    );
    assert!(err.to_string().contains("--prefix"), "{err}");
}
