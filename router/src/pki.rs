//! The site CA, router certificates, and the QUIC TLS configurations built from them.
//!
//! Every router holds a certificate signed by one site CA. Its subject CN is the site id and its
//! only DNS name is `<site>.skyvine` ([`server_name`]). Its subjectAltName also lists the
//! site's *certified prefixes*, one URI each ([`PREFIX_URI`]): `skyvine:prefix:<id>:<cidr>`
//! certifies a prefix in virtual network `id`; the older `skyvine:prefix:<cidr>` certifies it in
//! network 0 only (the network of a config with a single `[lan]`), so certificates issued
//! before several networks existed keep working there. They are the only prefixes peers accept
//! from it, each in its own network (see `skyvine_core::node` trust rules). A certificate
//! without any (issued before certified prefixes existed) is refused, by its own router at
//! start and by every peer; re-issue it with `skyvine cert issue --site S --prefix P`. Connections are mutually authenticated:
//! a server accepts only clients whose certificate chains to the CA, and a client that dials site
//! `b` checks that the server's certificate chains to the CA *and* names `b.skyvine`. After the
//! handshake, [`peer_site`] reads who is on the other end.
//!
//! Only the `ring` crypto provider is used, installed explicitly in every config; the process
//! default provider is never consulted. Trust comes from the site CA alone, never from system
//! roots.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnetwork::Ipv4Network;
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
pub use skyvine_core::networks::CertifiedPrefix;
use skyvine_tables::SiteId;

/// The ALPN protocol both sides must offer; a peer speaking anything else fails the handshake.
pub const ALPN: &[u8] = b"skyvine/1";

/// The DNS suffix of every router's certificate name.
pub const NAME_SUFFIX: &str = ".skyvine";

/// The subjectAltName URI prefix of a certified prefix: `skyvine:prefix:10.77.1.0/24`.
pub const PREFIX_URI: &str = "skyvine:prefix:";

/// Subject CN of the site CA.
const CA_NAME: &str = "skyvine site CA";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
const LEAF_VALIDITY: Duration = Duration::from_secs(5 * 365 * 86_400);
/// Certificates start one day in the past so that small clock skew between sites is harmless.
const BACKDATE: Duration = Duration::from_secs(86_400);

/// Why a certificate could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} already exists; refusing to overwrite it (move it away first)", path.display())]
    Exists { path: PathBuf },
    #[error("{}: no usable PEM {what}: {reason}", path.display())]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "{}: the certificate is for site {found:?}, but this router is site {expected:?} \
         (does the config point at another router's certificate?)",
        path.display()
    )]
    WrongSite {
        path: PathBuf,
        found: String,
        expected: SiteId,
    },
    #[error("{} is not a valid certificate of the CA in {}: {source}", cert.display(), ca.display())]
    NotSignedByCa {
        cert: PathBuf,
        ca: PathBuf,
        source: rustls::Error,
    },
    #[error("{} does not hold the private key of {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        source: rustls::Error,
    },
    #[error("the certificate does not name a skyvine site: {0}")]
    NoSiteName(String),
    #[error(
        "the certificate of site {0} certifies no prefix (issued before certified prefixes?); \
         re-issue it with `skyvine cert issue --dir pki --site {0} --prefix <its prefix>`"
    )]
    NoPrefixes(String),
    #[error("the certificate lists a bad certified prefix {0:?}")]
    BadPrefix(String),
    #[error("a router certificate needs at least one --prefix")]
    NoPrefixToIssue,
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC TLS configuration: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// The TLS server name that router `site` presents and that dialers check: `<site>.skyvine`.
pub fn server_name(site: &SiteId) -> String {
    format!("{site}{NAME_SUFFIX}")
}

/// Creates the site CA: `dir/ca.pem` and `dir/ca.key` (mode 0600). Creates `dir` if missing;
/// refuses to overwrite either file.
pub fn create_ca(dir: &Path) -> Result<(), PkiError> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    refuse_existing(&[&cert_path, &key_path])?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    // A name unique to this CA: with equal names, a certificate from another skyvine CA would
    // fail as a bad signature instead of the clearer "unknown CA".
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, ca_tag(&key));
    // Path length 0: the CA signs router certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = (now + CA_VALIDITY).into();

    let cert = params.self_signed(&key)?;

    create_dir(dir)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Issues the certificate of router `site`, certifying `prefixes`, signed by the CA in `dir`:
/// writes `dir/<site>.pem` and `dir/<site>.key` (mode 0600). Refuses to overwrite either file.
pub fn issue(dir: &Path, site: &SiteId, prefixes: &[CertifiedPrefix]) -> Result<(), PkiError> {
    let now = SystemTime::now();
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    issue_valid(dir, site, prefixes, not_before, now + LEAF_VALIDITY)
}

/// [`issue`] with the given validity (cut to the CA's own expiry); tests use it for expired and
/// not-yet-valid certificates.
pub fn issue_valid(
    dir: &Path,
    site: &SiteId,
    prefixes: &[CertifiedPrefix],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), PkiError> {
    if prefixes.is_empty() {
        return Err(PkiError::NoPrefixToIssue);
    }
    let cert_path = dir.join(format!("{site}.pem"));
    let key_path = dir.join(format!("{site}.key"));
    refuse_existing(&[&cert_path, &key_path])?;

    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let ca_pem = read_to_string(&ca_cert_path)?;
    let ca_key = KeyPair::from_pem(&read_to_string(&ca_key_path)?).map_err(|e| PkiError::Pem {
        path: ca_key_path.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let ca_not_after = ca_expiry(&ca_pem, &ca_cert_path)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::Pem {
        path: ca_cert_path.clone(),
        what: "CA certificate",
        reason: e.to_string(),
    })?;

    let mut params = CertificateParams::new(vec![server_name(site)])?;
    for certified in prefixes {
        let prefix = certified.prefix;
        let canonical = CertifiedPrefix {
            network: certified.network,
            prefix: Ipv4Network::new(prefix.network(), prefix.prefix()).unwrap_or(prefix),
        };
        let uri = rcgen::string::Ia5String::try_from(format!("{PREFIX_URI}{canonical}"))?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
    }
    params
        .distinguished_name
        .push(DnType::CommonName, site.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every router is both a QUIC server (peers dial it) and a client (it dials peers).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = not_before.into();
    params.not_after = not_after.min(ca_not_after).into();

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &issuer)?;

    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// The ring provider with AES-128-GCM as the preferred cipher suite.
///
/// Every tunnelled packet is sealed and opened once, so the cipher is a per-byte cost of the
/// data plane (about 12% of a router's CPU at full rate). AES-128-GCM runs 10 AES rounds to
/// AES-256-GCM's 14: on the development machine `openssl speed -evp aes-128-gcm -bytes 1380`
/// gave 1.63 GB/s against 1.30 GB/s for aes-256-gcm. 128-bit AES-GCM is what QUIC itself uses
/// for its Initial packets and is one of TLS 1.3's mandatory suites. The other suites stay
/// offered (after it), so routers of an older version still connect.
pub fn crypto_provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    provider
}

/// A router's verified TLS material: the site CA, its own certificate chain and key.
pub struct Identity {
    site: SiteId,
    prefixes: Vec<CertifiedPrefix>,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads and checks a router's TLS material: the certificate must chain to the CA, be valid
    /// now for both client and server use, name site `me`, and match the key.
    pub fn load(ca: &Path, cert: &Path, key: &Path, me: &SiteId) -> Result<Identity, PkiError> {
        Identity::load_at(ca, cert, key, me, UnixTime::now())
    }

    /// [`Identity::load`] with the chain checked as of `at` (`skyvine check-config` checks
    /// expiry on its own, then the rest at a moment when both certificates are valid).
    pub fn load_at(
        ca: &Path,
        cert: &Path,
        key: &Path,
        me: &SiteId,
        at: UnixTime,
    ) -> Result<Identity, PkiError> {
        let provider = Arc::new(crypto_provider());
        let ca_der =
            CertificateDer::from_pem_file(ca).map_err(|e| pem_error(ca, "certificate", e))?;
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem_error(cert, "certificate", e))?;
        let leaf = chain.first().ok_or_else(|| PkiError::Pem {
            path: cert.to_owned(),
            what: "certificate",
            reason: "the file holds no certificate".to_owned(),
        })?;
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "private key", e))?;

        // Name first: pointing at another router's certificate is the likelier mistake, and
        // saying so beats a generic name-mismatch error from the verifier.
        let found = site_of(leaf)?;
        if found != me.as_str() {
            return Err(PkiError::WrongSite {
                path: cert.to_owned(),
                found,
                expected: me.clone(),
            });
        }
        let prefixes = certified_prefixes(leaf, me.as_str())?;
        let roots = Arc::new(root_store(&ca_der)?);
        let intermediates = chain.get(1..).unwrap_or_default();
        let not_signed = |source| PkiError::NotSignedByCa {
            cert: cert.to_owned(),
            ca: ca.to_owned(),
            source,
        };
        let name = ServerName::try_from(server_name(me))
            .map_err(|e| not_signed(rustls::Error::General(format!("invalid server name: {e}"))))?;
        let now = at;
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| not_signed(rustls::Error::General(e.to_string())))?
            .verify_server_cert(leaf, intermediates, &name, &[], now)
            .map_err(not_signed)?;
        WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| not_signed(rustls::Error::General(e.to_string())))?
            .verify_client_cert(leaf, intermediates, now)
            .map_err(not_signed)?;
        CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider).map_err(
            |source| PkiError::KeyMismatch {
                key: key.to_owned(),
                cert: cert.to_owned(),
                source,
            },
        )?;

        Ok(Identity {
            site: me.clone(),
            prefixes,
            ca: ca_der,
            chain,
            key: key_der,
            provider,
        })
    }

    /// The site this identity belongs to.
    pub fn site(&self) -> &SiteId {
        &self.site
    }

    /// The prefixes this router's certificate certifies.
    pub fn prefixes(&self) -> &[CertifiedPrefix] {
        &self.prefixes
    }

    /// A QUIC server config that requires a client certificate from the site CA.
    pub fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, PkiError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(root_store(&self.ca)?),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        config.transport_config(transport);
        Ok(config)
    }

    /// A QUIC client config that presents our certificate and trusts the site CA only. Dial with
    /// `endpoint.connect_with(config, addr, &server_name(peer))` so the TLS name check confirms
    /// that the expected router answered.
    pub fn client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, PkiError> {
        let tls = client_tls(&self.provider, &self.ca, Some((&self.chain, &self.key)))?;
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(transport);
        Ok(config)
    }
}

/// The site id of the authenticated peer of `conn`, read from its leaf certificate.
///
/// On the server side the handshake checked only that the client's certificate chains to the
/// CA, so this is how the server learns who dialed. On the client side the TLS name check
/// already matched the dialed site's name (case-insensitively, as DNS names compare), so the
/// caller should still compare the result with the site it meant to reach.
pub fn peer_site(conn: &quinn::Connection) -> Result<SiteId, PkiError> {
    let leaf = peer_leaf(conn)?;
    let site = site_of(&leaf)?;
    SiteId::new(&site).map_err(|e| PkiError::NoSiteName(e.to_string()))
}

/// What a peer's verified certificate says: its site, certified prefixes, serial number and
/// SHA-256 fingerprint (the last two name it in a revocation list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    pub site: SiteId,
    pub prefixes: Vec<CertifiedPrefix>,
    pub id: CertificateId,
}

/// The two names of a certificate in `tls.revoked`: its serial number and its fingerprint,
/// both lowercase hex without separators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateId {
    pub serial: String,
    pub sha256: String,
}

/// Reads the peer certificate of `conn`: site, certified prefixes (a certificate without
/// any is an error) and its names.
pub fn peer_certificate(conn: &quinn::Connection) -> Result<PeerCertificate, PkiError> {
    let leaf = peer_leaf(conn)?;
    describe_certificate(&leaf)
}

/// [`peer_certificate`] of a certificate's DER.
pub fn describe_certificate(der: &CertificateDer<'_>) -> Result<PeerCertificate, PkiError> {
    let site = site_of(der)?;
    let prefixes = certified_prefixes(der, &site)?;
    let site = SiteId::new(&site).map_err(|e| PkiError::NoSiteName(e.to_string()))?;
    Ok(PeerCertificate {
        site,
        prefixes,
        id: certificate_id(der)?,
    })
}

/// The serial and fingerprint of a certificate.
pub fn certificate_id(der: &CertificateDer<'_>) -> Result<CertificateId, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::NoSiteName(format!("unparsable certificate: {e}")))?;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    Ok(CertificateId {
        serial: hex(cert.raw_serial()),
        sha256: hex(digest.as_ref()),
    })
}

fn peer_leaf(conn: &quinn::Connection) -> Result<CertificateDer<'static>, PkiError> {
    let identity = conn.peer_identity().ok_or(PkiError::NoPeerCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| PkiError::NoPeerCertificate)?;
    certs.first().cloned().ok_or(PkiError::NoPeerCertificate)
}

/// The certified prefixes of a router certificate (of `site`, for errors): its
/// `skyvine:prefix:` subjectAltName URIs. None at all is an error.
pub fn certified_prefixes(
    der: &CertificateDer<'_>,
    site: &str,
) -> Result<Vec<CertifiedPrefix>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::NoSiteName(format!("unparsable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::NoSiteName(format!("bad subjectAltName: {e}")))?;
    let mut prefixes = Vec::new();
    for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
        let x509_parser::extensions::GeneralName::URI(uri) = name else {
            continue;
        };
        let Some(text) = uri.strip_prefix(PREFIX_URI) else {
            continue;
        };
        let certified =
            CertifiedPrefix::parse(text).map_err(|_| PkiError::BadPrefix(text.to_owned()))?;
        if certified.prefix.network() != certified.prefix.ip() {
            return Err(PkiError::BadPrefix(text.to_owned()));
        }
        prefixes.push(certified);
    }
    if prefixes.is_empty() {
        return Err(PkiError::NoPrefixes(site.to_owned()));
    }
    Ok(prefixes)
}

/// QUIC transport parameters for a router-to-router connection; the data plane's datagram
/// buffers and packet size come on top from [`crate::dataplane::tune_transport`].
///
/// * Keep-alive every 1 s and a 5 s idle timeout: a dead peer or cut link is noticed within
///   5 s, and NAT bindings stay open.
/// * Control streams: 8 MiB stream window and 16 MiB connection window, so a full table
///   exchange is not throttled by flow control on a long-delay path.
/// * Congestion control: CUBIC, quinn's default. The outer controller must be loss-based and
///   mature: the inner TCP flows do their own congestion control and react to the outer
///   connection's drops as they would to a router's queue. quinn's BBR is marked experimental
///   and NewReno grows its window too slowly on high bandwidth-delay paths.
pub fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            5_000,
        ))))
        .stream_receive_window(quinn::VarInt::from_u32(8 << 20))
        .receive_window(quinn::VarInt::from_u32(16 << 20))
        .send_window(16 << 20)
        .congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()));
    config
}

/// A rustls client config trusting `ca` only, presenting `cert` (chain, key) if given.
fn client_tls(
    provider: &Arc<CryptoProvider>,
    ca: &CertificateDer<'static>,
    cert: Option<(&Vec<CertificateDer<'static>>, &PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, PkiError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(ca)?);
    let mut tls = match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

fn root_store(ca: &CertificateDer<'static>) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(roots)
}

/// The site named by a router certificate: its `<site>.skyvine` DNS name, which must agree with
/// the subject CN when one is present.
fn site_of(der: &CertificateDer<'_>) -> Result<String, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::NoSiteName(format!("unparsable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::NoSiteName(format!("bad subjectAltName: {e}")))?
        .ok_or_else(|| PkiError::NoSiteName("no subjectAltName".to_owned()))?;
    let mut sites = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => dns.strip_suffix(NAME_SUFFIX),
            _ => None,
        });
    let site = match (sites.next(), sites.next()) {
        (Some(site), None) => site.to_owned(),
        (None, _) => {
            return Err(PkiError::NoSiteName(format!(
                "no DNS name ending in {NAME_SUFFIX}"
            )))
        }
        (Some(_), Some(_)) => {
            return Err(PkiError::NoSiteName(format!(
                "several DNS names ending in {NAME_SUFFIX}"
            )))
        }
    };
    for cn in cert.subject().iter_common_name() {
        let cn = cn
            .as_str()
            .map_err(|e| PkiError::NoSiteName(format!("unreadable CN: {e}")))?;
        if cn != site {
            return Err(PkiError::NoSiteName(format!(
                "CN {cn:?} disagrees with DNS name {site}{NAME_SUFFIX}"
            )));
        }
    }
    Ok(site)
}

/// `ca-` and the first 8 bytes of the CA's public key point in hex.
fn ca_tag(key: &KeyPair) -> String {
    let point = key.public_key_raw();
    // Uncompressed P-256 points start with the 0x04 format byte.
    let id: String = point
        .iter()
        .skip(1)
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("ca-{id}")
}

/// When the CA certificate in `pem` expires (router certificates must not outlive it).
fn ca_expiry(pem: &str, path: &Path) -> Result<SystemTime, PkiError> {
    let bad = |reason: String| PkiError::Pem {
        path: path.to_owned(),
        what: "CA certificate",
        reason,
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let secs = u64::try_from(cert.validity().not_after.timestamp())
        .map_err(|_| bad("expires before 1970".to_owned()))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn pem_error(path: &Path, what: &'static str, e: rustls_pki_types::pem::Error) -> PkiError {
    PkiError::Pem {
        path: path.to_owned(),
        what,
        reason: e.to_string(),
    }
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(PkiError::Exists {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PkiError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a new file with `mode`; fails (as [`PkiError::Exists`]) if it already exists.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            PkiError::Exists {
                path: path.to_owned(),
            }
        } else {
            PkiError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

#[cfg(test)]
pub(crate) mod tests;
