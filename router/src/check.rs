//! `skyvine check-config`: the checks beyond parsing a configuration file.
//!
//! [`check_certificates`] loads the CA, the router's certificate and its key, and checks that
//! the certificate is signed by the CA, names the configured site, matches the key and is valid
//! now. [`check_host`] (`--host`) checks the machine the router is about to run on: forwarding
//! and reverse-path sysctls, the LAN interface, the WAN port, the TUN name.
//!
//! Every finding is a [`Problem`]: one line that names the file or key, says what is wrong and
//! what to do. The checks never change anything; the clock and the `/proc` and `/sys` roots are
//! arguments, so tests run them against certificates made for the purpose and fake trees.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use skyvine_tables::SiteId;

use crate::config::Config;
use crate::pki::{Identity, PkiError};

/// A certificate expiring sooner than this gets a warning (it is still valid).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// `IFF_TUN` in `/sys/class/net/NAME/tun_flags`: a TUN (layer 3) device, not a TAP.
const IFF_TUN: u32 = 0x0001;

/// One thing wrong: `subject` is the config key, file or setting concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config key (`tls.cert`) or system setting (`net.ipv4.ip_forward`) concerned.
    pub subject: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Problem {
    fn new(subject: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            subject: subject.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.subject, self.message)
    }
}

/// What [`check_certificates`] found when the certificates are usable.
#[derive(Debug, Clone)]
pub struct CertSummary {
    /// The router certificate's expiry, as written in it.
    pub cert_expires: String,
    /// Whole days until the router certificate expires.
    pub cert_days_left: u64,
    /// The CA certificate's expiry, as written in it.
    pub ca_expires: String,
    /// Certificates that are valid but expire within [`EXPIRY_WARNING`].
    pub warnings: Vec<String>,
}

/// One certificate file's validity window, read from the certificate.
struct Validity {
    not_before: i64,
    not_after: i64,
    not_after_text: String,
    not_before_text: String,
}

/// Checks `config`'s certificate files as of `now`: all problems found, or a summary.
pub fn check_certificates(config: &Config, now: SystemTime) -> Result<CertSummary, Vec<Problem>> {
    let tls = &config.tls;
    let files = [
        ("tls.ca", &tls.ca, "the site CA certificate"),
        ("tls.cert", &tls.cert, "this router's certificate"),
        ("tls.key", &tls.key, "this router's private key"),
    ];
    let mut problems: Vec<Problem> = files
        .iter()
        .filter_map(|(key, path, what)| unreadable(key, path, what, &config.site))
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    problems.extend(world_readable_key(&tls.key));

    let now_s = unix_seconds(now);
    let ca = validity("tls.ca", &tls.ca);
    let cert = validity("tls.cert", &tls.cert);
    let (ca, cert) = match (ca, cert) {
        (Ok(ca), Ok(cert)) => (ca, cert),
        (ca, cert) => {
            problems.extend(ca.err());
            problems.extend(cert.err());
            return Err(problems);
        }
    };
    problems.extend(expiry_problems(config, &ca, &cert, now_s));
    problems.extend(chain_problem(config, &ca, &cert, now_s));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(summary(config, ca, cert, now_s))
}

/// Either certificate expired or not yet valid at `now`.
fn expiry_problems(config: &Config, ca: &Validity, cert: &Validity, now: i64) -> Vec<Problem> {
    let tls = &config.tls;
    let renew_ca = "create a new CA (`skyvine cert ca`) and issue every router's certificate again";
    let renew_cert = format!(
        "issue a new one (`skyvine cert issue --dir pki --site {}`) and restart the router",
        config.site
    );
    [
        dates("tls.ca", &tls.ca, ca, now, renew_ca),
        dates("tls.cert", &tls.cert, cert, now, &renew_cert),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Signature, site and key, checked at a moment when both certificates are valid, so that an
/// expired certificate is reported once, as expired, not again as "not signed by the CA".
/// Without such a moment one of them is invalid now, which [`expiry_problems`] reports.
fn chain_problem(config: &Config, ca: &Validity, cert: &Validity, now: i64) -> Option<Problem> {
    let start = ca.not_before.max(cert.not_before);
    let end = ca.not_after.min(cert.not_after);
    if start > end {
        return None;
    }
    let at = u64::try_from(now.clamp(start, end)).unwrap_or(0);
    let at = UnixTime::since_unix_epoch(Duration::from_secs(at));
    let tls = &config.tls;
    Identity::load_at(&tls.ca, &tls.cert, &tls.key, &config.site, at)
        .err()
        .map(|error| identity_problem(error, config))
}

/// When the certificates expire, with a warning for each that does within [`EXPIRY_WARNING`].
fn summary(config: &Config, ca: Validity, cert: Validity, now: i64) -> CertSummary {
    let tls = &config.tls;
    let left = |v: &Validity| u64::try_from(v.not_after.saturating_sub(now)).unwrap_or(0);
    let warnings = [("tls.ca", &tls.ca, &ca), ("tls.cert", &tls.cert, &cert)]
        .into_iter()
        .filter(|(_, _, v)| left(v) < EXPIRY_WARNING.as_secs())
        .map(|(key, path, v)| {
            format!(
                "`{key}`: {} expires in {} day(s), on {}: renew it soon (deploy/README.md, \
                 Certificates)",
                path.display(),
                left(v) / 86_400,
                v.not_after_text
            )
        })
        .collect::<Vec<String>>();
    let mut warnings = warnings;
    warnings.extend(uncertified_prefixes(config));
    CertSummary {
        cert_days_left: left(&cert) / 86_400,
        cert_expires: cert.not_after_text,
        ca_expires: ca.not_after_text,
        warnings,
    }
}

/// Each network's configured prefixes that the router certificate does not certify in that
/// network: the router advertises them, and every peer refuses them.
fn uncertified_prefixes(config: &Config) -> Vec<String> {
    let certified = CertificateDer::from_pem_file(&config.tls.cert)
        .ok()
        .and_then(|der| crate::pki::certified_prefixes(&der, config.site.as_str()).ok())
        .unwrap_or_default();
    let mut warnings = Vec::new();
    for network in config.networks() {
        let ours = skyvine_core::networks::certified_in(&certified, network.id);
        for prefix in &network.lan.prefixes {
            let covered = ours
                .iter()
                .any(|c| c.prefix() <= prefix.prefix() && c.contains(prefix.network()));
            if !covered {
                warnings.push(format!(
                    "network {} (id {}): {prefix} is not certified for it by {} (it certifies {}): \
                     peers will refuse it; issue the certificate with `--prefix {}`",
                    network.name,
                    network.id,
                    config.tls.cert.display(),
                    if ours.is_empty() { "nothing in this network".to_owned() } else { ours.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") },
                    skyvine_core::networks::CertifiedPrefix { network: network.id, prefix: *prefix },
                ));
            }
        }
    }
    warnings
}

/// Where [`check_host`] reads the kernel's state: `/proc/sys/net` and `/sys/class/net` on a
/// real machine.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub proc_sys_net: PathBuf,
    pub sys_class_net: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc_sys_net: PathBuf::from("/proc/sys/net"),
            sys_class_net: PathBuf::from("/sys/class/net"),
        }
    }
}

/// Checks the machine for `config`: forwarding, reverse-path filtering on `all` and the LAN
/// interface (0 or 2), the LAN interface exists, the WAN UDP address can be bound, and the TUN
/// name is free or already a TUN device. One [`Problem`] per finding.
pub fn check_host(config: &Config, paths: &HostPaths) -> Vec<Problem> {
    let mut problems = Vec::new();
    problems.extend(check_forwarding(paths));
    let mut rp_scopes = vec!["all".to_owned()];
    let single = config.lan.is_some();
    for network in config.networks() {
        let lan = &network.lan.interface;
        let (key, which) = if single {
            ("lan.interface", String::new())
        } else {
            (
                "networks.lan.interface",
                format!("network {}: ", network.name),
            )
        };
        if paths.sys_class_net.join(lan).exists() {
            rp_scopes.push(lan.clone());
        } else {
            problems.push(Problem::new(
                key,
                format!(
                    "{which}there is no interface {lan} on this machine (interfaces: {}); set \
                     {key} to the LAN interface where the site's VMs are",
                    interfaces(&paths.sys_class_net)
                ),
            ));
        }
        problems.extend(check_tun_name(&network.tun, paths));
    }
    for scope in rp_scopes {
        problems.extend(check_rp_filter(paths, &scope));
    }
    problems.extend(check_wan_port(config.wan.listen));
    problems
}

fn check_forwarding(paths: &HostPaths) -> Option<Problem> {
    let key = "net.ipv4.ip_forward";
    match read_sysctl(&paths.proc_sys_net.join("ipv4/ip_forward")) {
        Ok(1) => None,
        Ok(value) => Some(Problem::new(
            key,
            format!(
                "is {value}: the kernel will not forward between the LAN and the overlay; set \
                 `{key} = 1` in /etc/sysctl.d/60-skyvine.conf and run `sysctl --system`"
            ),
        )),
        Err(message) => Some(Problem::new(key, message)),
    }
}

fn check_rp_filter(paths: &HostPaths, scope: &str) -> Option<Problem> {
    let key = format!("net.ipv4.conf.{scope}.rp_filter");
    let file = paths
        .proc_sys_net
        .join(format!("ipv4/conf/{scope}/rp_filter"));
    match read_sysctl(&file) {
        Ok(0 | 2) => None,
        Ok(value) => Some(Problem::new(
            &key,
            format!(
                "is {value} (strict): it drops a migrated VM's packets, whose source is another \
                 site's prefix; set `{key} = 0` (or 2, loose) in /etc/sysctl.d/60-skyvine.conf \
                 and run `sysctl --system` (the kernel applies the higher of `all` and the \
                 interface's value)"
            ),
        )),
        Err(message) => Some(Problem::new(key, message)),
    }
}

fn check_wan_port(listen: SocketAddr) -> Option<Problem> {
    let error = UdpSocket::bind(listen).err()?;
    let advice = match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "another program holds UDP {listen} (a router already running? `skyvine status`, \
             `ss -ulpn 'sport = :{}'`)",
            listen.port()
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine; use one of its addresses or 0.0.0.0",
            listen.ip()
        ),
        io::ErrorKind::PermissionDenied => {
            format!(
                "binding port {} needs root or CAP_NET_BIND_SERVICE",
                listen.port()
            )
        }
        _ => format!("cannot bind UDP {listen}: {error}"),
    };
    Some(Problem::new("wan.listen", advice))
}

fn check_tun_name(name: &str, paths: &HostPaths) -> Option<Problem> {
    let dev = paths.sys_class_net.join(name);
    if !dev.exists() {
        return None;
    }
    let flags = std::fs::read_to_string(dev.join("tun_flags"))
        .ok()
        .and_then(|text| parse_hex(text.trim()));
    match flags {
        // A TUN device of that name: the router's own (running, or left persistent) is reused.
        Some(flags) if flags & IFF_TUN != 0 => None,
        Some(_) => Some(Problem::new(
            "tun.name",
            format!("{name} exists and is a TAP device, not TUN: pick another tun.name or delete it (`ip link del {name}`)"),
        )),
        None => Some(Problem::new(
            "tun.name",
            format!("an interface {name} exists and is not a TUN device: pick another tun.name or delete that interface"),
        )),
    }
}

/// A problem when `path` cannot be read, with the step that makes the file.
fn unreadable(key: &str, path: &Path, what: &str, site: &SiteId) -> Option<Problem> {
    let error = std::fs::File::open(path).err()?;
    let make = match key {
        "tls.ca" => "copy ca.pem from the machine where you ran `skyvine cert ca --dir pki`".to_owned(),
        "tls.cert" => format!("issue it with `skyvine cert issue --dir pki --site {site}` and copy pki/{site}.pem to that path"),
        _ => format!("copy pki/{site}.key, made by `skyvine cert issue --dir pki --site {site}`, to that path (mode 0600)"),
    };
    let reason = match error.kind() {
        io::ErrorKind::NotFound => "does not exist".to_owned(),
        io::ErrorKind::PermissionDenied => {
            "is not readable by this user (run as root or as the router's user)".to_owned()
        }
        _ => format!("cannot be read: {error}"),
    };
    Some(Problem::new(
        key,
        format!("{} ({what}) {reason}; {make}", path.display()),
    ))
}

fn world_readable_key(key: &Path) -> Option<Problem> {
    let mode = std::fs::metadata(key).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        Problem::new(
            "tls.key",
            format!(
                "{} is readable by every user (mode {:04o}): `chmod 600 {0}`",
                key.display(),
                mode & 0o7777
            ),
        )
    })
}

fn validity(key: &str, path: &Path) -> Result<Validity, Problem> {
    let bad = |reason: String| {
        Problem::new(
            key,
            format!(
                "{} holds no usable PEM certificate: {reason}",
                path.display()
            ),
        )
    };
    let der = CertificateDer::from_pem_file(path).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let v = cert.validity();
    Ok(Validity {
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
        not_before_text: v.not_before.to_string(),
        not_after_text: v.not_after.to_string(),
    })
}

/// Problems with `v` as of `now`: not yet valid, or expired.
fn dates(key: &str, path: &Path, v: &Validity, now: i64, renew: &str) -> Option<Problem> {
    if now < v.not_before {
        return Some(Problem::new(
            key,
            format!(
                "{} is not valid before {} ({} from now): is this machine's clock right? (`date -u`)",
                path.display(),
                v.not_before_text,
                human_duration(v.not_before - now)
            ),
        ));
    }
    (now > v.not_after).then(|| {
        Problem::new(
            key,
            format!(
                "{} expired on {} ({} ago): {renew}",
                path.display(),
                v.not_after_text,
                human_duration(now - v.not_after)
            ),
        )
    })
}

/// The problem behind a failed [`Identity::load_at`], under the key that needs fixing.
fn identity_problem(error: PkiError, config: &Config) -> Problem {
    let tls = &config.tls;
    let site = &config.site;
    match &error {
        PkiError::WrongSite { .. } => Problem::new(
            "tls.cert",
            format!("{error}; issue one with `skyvine cert issue --dir pki --site {site}`"),
        ),
        PkiError::NotSignedByCa { .. } => Problem::new(
            "tls.cert",
            format!(
                "{error}; tls.ca and tls.cert must come from the same `skyvine cert ca` directory"
            ),
        ),
        PkiError::KeyMismatch { .. } => Problem::new(
            "tls.key",
            format!(
                "{error}; copy the .key issued together with {}",
                tls.cert.display()
            ),
        ),
        PkiError::Pem { path, .. } => {
            let key = if path == &tls.ca {
                "tls.ca"
            } else if path == &tls.key {
                "tls.key"
            } else {
                "tls.cert"
            };
            Problem::new(key, error.to_string())
        }
        _ => Problem::new("tls.cert", format!("{}: {error}", tls.cert.display())),
    }
}

fn read_sysctl(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} holds {:?}, not a number", path.display(), text.trim()))
}

fn interfaces(sys_class_net: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_net)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        "none found".to_owned()
    } else {
        names.join(", ")
    }
}

fn parse_hex(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn human_duration(seconds: i64) -> String {
    let days = seconds / 86_400;
    if days >= 1 {
        format!("{days} day(s)")
    } else {
        format!("{} hour(s)", (seconds / 3_600).max(0))
    }
}

#[cfg(test)]
mod tests;
