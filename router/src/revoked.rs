//! The revocation list (`tls.revoked`): certificates that may no longer connect, named by
//! serial number or SHA-256 fingerprint.
//!
//! The file holds one certificate per line, in hex (upper or lower case, `:` separators
//! allowed, a `sha256:` prefix optional); `#` starts a comment. `skyvine cert revoke` appends a
//! line naming both the fingerprint and, in its comment, the site and serial. Every router
//! reads the list at start and again on SIGHUP: a connected router whose certificate is listed
//! is cut off at once and what it originated is withdrawn (see
//! `skyvine_core::node::Node::handle_peer_revoked`).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::pki::{self, CertificateId};

/// The certificates that may not connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked(BTreeSet<String>);

impl Revoked {
    /// Reads the list at `path`; no path, no revocations. A missing or malformed file is an
    /// error (better refuse to start than admit a router someone revoked).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Revoked> {
        let Some(path) = path else {
            return Ok(Revoked::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the revocation list {}", path.display()))?;
        Revoked::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the list's text.
    pub fn parse(text: &str) -> anyhow::Result<Revoked> {
        let mut ids = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let id = normalize(line).with_context(|| {
                format!(
                    "line {}: {line:?} is not a serial or fingerprint in hex",
                    n + 1
                )
            })?;
            ids.insert(id);
        }
        Ok(Revoked(ids))
    }

    /// Whether the certificate named by `id` is revoked.
    pub fn contains(&self, id: &CertificateId) -> bool {
        [&id.serial, &id.sha256]
            .into_iter()
            .filter_map(|name| normalize(name))
            .any(|name| self.0.contains(&name))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `skyvine cert revoke`: appends the certificate in `cert` (PEM) to the list at `list`
/// (created if missing); returns what it wrote.
pub fn revoke(cert: &Path, list: &Path) -> anyhow::Result<String> {
    let der = CertificateDer::from_pem_file(cert)
        .map_err(|e| anyhow::anyhow!("{}: no PEM certificate: {e}", cert.display()))?;
    let id = pki::certificate_id(&der).with_context(|| format!("reading {}", cert.display()))?;
    // A certificate without prefixes (refused anyway) still has a site to name.
    let site = pki::describe_certificate(&der)
        .map(|d| d.site.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let line = format!(
        "sha256:{}  # site {site}, serial {}\n",
        id.sha256, id.serial
    );
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
        .with_context(|| format!("opening {}", list.display()))?;
    file.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", list.display()))?;
    Ok(line)
}

/// Lowercase hex without separators, `sha256:` and leading zeros dropped; `None` if not hex.
fn normalize(name: &str) -> Option<String> {
    let name = name.strip_prefix("sha256:").unwrap_or(name);
    let hex: String = name
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tests::pki;

    #[test]
    fn the_list_names_certificates_by_serial_or_fingerprint() {
        let list = Revoked::parse(
            "# revoked routers\n\
             sha256:AB:CD:ef  # site b\n\
             \n\
             00:1f\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        let id = |serial: &str, sha256: &str| CertificateId {
            serial: serial.to_owned(),
            sha256: sha256.to_owned(),
        };
        assert!(list.contains(&id("77", "abcdef")));
        assert!(list.contains(&id("1f", "99")));
        assert!(!list.contains(&id("77", "99")));
        assert!(Revoked::parse("not hex\n").is_err());
    }

    #[test]
    fn revoke_appends_the_certificate_so_that_the_list_names_it() {
        let dir = pki("revoke", &["b"]);
        let list = dir.0.join("revoked");
        let line = revoke(&dir.0.join("b.pem"), &list).unwrap();
        assert!(line.contains("site b"), "{line}");
        let revoked = Revoked::load(Some(&list)).unwrap();
        let der = CertificateDer::from_pem_file(dir.0.join("b.pem")).unwrap();
        assert!(revoked.contains(&pki::certificate_id(&der).unwrap()));
        assert!(Revoked::load(Some(&dir.0.join("missing"))).is_err());
    }
}
