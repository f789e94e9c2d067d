//! Small validated value types shared by every table: site ids, MAC addresses, versions.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// Why a textual value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("site id {0:?} must be 1 to 32 characters of a-z, A-Z, 0-9, '-' or '_'")]
    SiteId(String),
    #[error("MAC address {0:?} must be six hex octets separated by ':' (e.g. 52:54:00:12:34:56)")]
    Mac(String),
}

/// The id of a site (and of its router). Ordered as strings; the order breaks version ties.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(Arc<str>);

impl SiteId {
    /// The longest id accepted.
    pub const MAX_LEN: usize = 32;

    pub fn new(id: &str) -> Result<Self, ParseError> {
        let valid = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(SiteId(Arc::from(id)))
        } else {
            Err(ParseError::SiteId(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lookups by `&str` in maps keyed by site (a relay datagram names sites as bytes): the order
/// and hash of a `SiteId` are those of its string.
impl std::borrow::Borrow<str> for SiteId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SiteId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SiteId::new(&value)
    }
}

impl From<SiteId> for String {
    fn from(value: SiteId) -> Self {
        value.0.to_string()
    }
}

impl FromStr for SiteId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SiteId::new(s)
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteId({})", self.0)
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Multicast or broadcast (group bit set): never a host's address.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl FromStr for MacAddr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| ParseError::Mac(s.to_owned()))?;
            if part.len() != 2 {
                return Err(ParseError::Mac(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseError::Mac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(ParseError::Mac(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<MacAddr> for String {
    fn from(value: MacAddr) -> Self {
        value.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The version of a GNDT entry: (sequence number, origin site).
///
/// The merge rule: the higher sequence wins; on equal sequences the greater origin site id
/// wins. The derived `Ord` (field order matters) is exactly that rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub seq: u64,
    pub origin: SiteId,
}

/// Whether an entry describes a site's prefix or a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A prefix a site is the gateway for (its slice of the virtual network).
    SitePrefix,
    /// One host (/32): a VM's binding advertised by the site it is at, or a migrated VM.
    Host,
}

/// One GNDT entry as it travels between routers.
///
/// The site that owns the prefix is always the entry's origin (`version.origin`): a router only
/// ever advertises what it is the gateway for. `withdrawn` entries are tombstones: they win the
/// merge like any entry but never match a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GndtEntry {
    pub prefix: Ipv4Network,
    pub kind: EntryKind,
    pub version: Version,
    /// For host entries: the host's MAC, when the owning router has seen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
    /// Set on a host entry re-taken by its site after a conflicting claim (the host still
    /// answered there): every router then refuses moves of the address for the freeze period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

impl GndtEntry {
    /// The site that owns this entry.
    pub fn site(&self) -> &SiteId {
        &self.version.origin
    }

    /// A host entry for `ip` at `site`.
    pub fn host(ip: Ipv4Addr, site: SiteId, seq: u64, mac: Option<MacAddr>) -> Self {
        GndtEntry {
            prefix: Ipv4Network::from(ip),
            kind: EntryKind::Host,
            version: Version { seq, origin: site },
            mac,
            withdrawn: false,
            frozen: false,
        }
    }

    /// A site prefix entry.
    pub fn site_prefix(prefix: Ipv4Network, site: SiteId, seq: u64) -> Self {
        GndtEntry {
            prefix,
            kind: EntryKind::SitePrefix,
            version: Version { seq, origin: site },
            mac: None,
            withdrawn: false,
            frozen: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids_are_validated() {
        assert!(SiteId::new("site-a_1").is_ok());
        assert!(SiteId::new("").is_err());
        assert!(SiteId::new("a b").is_err());
        assert!(SiteId::new(&"x".repeat(33)).is_err());
    }

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:12:34:56");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn version_order_is_seq_then_site() {
        let a = SiteId::new("a").unwrap();
        let b = SiteId::new("b").unwrap();
        let v = |seq, origin: &SiteId| Version {
            seq,
            origin: origin.clone(),
        };
        assert!(v(2, &a) > v(1, &b));
        assert!(v(1, &b) > v(1, &a));
    }
}
