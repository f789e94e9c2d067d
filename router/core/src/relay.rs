//! Relaying between two sites that cannot reach each other (both behind NAT): the framing of
//! relay datagrams and what a router does with one, sans IO.
//!
//! Sites b and c that can both reach router r, but not each other, run their own QUIC
//! connection end to end *through* r. Every UDP payload of that inner connection travels as a
//! relay datagram (a QUIC datagram) on the sender's connection to r, and r passes it on,
//! byte for byte, on its connection to the other end. r reads nothing but the header below: the
//! inner packets stay encrypted and authenticated between b and c, who check each other's
//! certificates exactly as on a direct path. Every trust rule therefore holds end to end
//! unchanged (an entry's origin is the authenticated sender of the inner connection), and r
//! can neither read nor forge what b and c tell each other.
//!
//! ## Framing
//!
//! | offset    | bytes | field |
//! |-----------|-------|-------|
//! | 0         | 1     | kind: [`KIND`] (an IPv4 packet starts with `0x4_`, a packet relayed by a host's old site with `0x00`) |
//! | 1         | 2     | network id, big-endian: [`DEFAULT_NETWORK`] for now (several networks on one router will use it) |
//! | 3         | 1     | length S of the source site id, 1..=32 |
//! | 4         | S     | source site id (ASCII) |
//! | 4+S       | 1     | length D of the destination site id, 1..=32 |
//! | 5+S       | D     | destination site id |
//! | 5+S+D     | rest  | payload: one UDP payload of the inner QUIC connection, opaque to the relay |
//!
//! Both ends are named so that the relay forwards the datagram unchanged (no copy, the same
//! size in both directions) and the receiver knows who it comes from.
//!
//! ## Decisions
//!
//! [`RelayPolicy::judge`] takes a relay datagram and the peer whose connection it arrived on:
//! - addressed to another site: passed on only by a router with `relay = true`, only when the
//!   header's source is the sending peer and both ends are listed peers that this router
//!   reaches directly;
//! - addressed to this router: delivered to the inner connection only when the source is a
//!   peer configured `via` the sending peer.
//!
//! Everything else is dropped with a [`DropReason`] that the data plane counts.

use std::collections::{BTreeMap, BTreeSet};

use skyvine_tables::SiteId;

use crate::fib::DropReason;

/// First byte of a relay datagram.
pub const KIND: u8 = 0x01;
/// The network id of the one virtual network a router carries today.
pub const DEFAULT_NETWORK: u16 = 0;
/// The header without the two site ids: kind, network id, two length bytes.
const FIXED_LEN: usize = 5;
/// The longest header: both site ids at their maximum length.
pub const MAX_HEADER_LEN: usize = FIXED_LEN + 2 * SiteId::MAX_LEN;
/// The smallest UDP payload a QUIC connection must be able to send (RFC 9000, 14.1).
pub const QUIC_MIN_UDP_PAYLOAD: usize = 1200;

/// The header length of relay datagrams between `a` and `b` (either way).
pub fn header_len(a: &SiteId, b: &SiteId) -> usize {
    FIXED_LEN + a.as_str().len() + b.as_str().len()
}

/// The largest UDP payload of the inner connection between `me` and `peer` when the relay
/// datagram that carries it may be `datagram_room` bytes long.
pub fn inner_udp_payload(datagram_room: usize, me: &SiteId, peer: &SiteId) -> usize {
    datagram_room.saturating_sub(header_len(me, peer))
}

/// The smallest TUN MTU that lets `me` reach `peer` through a relay: the TUN MTU is the
/// datagram size a router's WAN path carries, and the inner connection needs QUIC's minimum
/// inside it.
pub fn min_tun_mtu(me: &SiteId, peer: &SiteId) -> usize {
    QUIC_MIN_UDP_PAYLOAD + header_len(me, peer)
}

/// Why bytes are not a relay datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("first byte {0:#04x} is not a relay datagram")]
    NotRelay(u8),
    #[error("the header is cut short")]
    Truncated,
    #[error("a site id of {0} bytes (1 to 32 allowed)")]
    SiteLength(u8),
    #[error("a site id that is not ASCII letters, digits, '-' or '_'")]
    SiteBytes,
}

/// A relay datagram, borrowed from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayDatagram<'a> {
    pub network: u16,
    pub source: &'a str,
    pub destination: &'a str,
    /// Where the payload starts in the bytes parsed.
    pub payload_offset: usize,
    pub payload: &'a [u8],
}

impl<'a> RelayDatagram<'a> {
    /// Checks and splits a received datagram; never reads past its end.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let (&kind, rest) = bytes.split_first().ok_or(WireError::Truncated)?;
        if kind != KIND {
            return Err(WireError::NotRelay(kind));
        }
        let (network, rest) = rest.split_first_chunk::<2>().ok_or(WireError::Truncated)?;
        let (source, rest) = site_field(rest)?;
        let (destination, payload) = site_field(rest)?;
        Ok(RelayDatagram {
            network: u16::from_be_bytes(*network),
            source,
            destination,
            payload_offset: bytes.len() - payload.len(),
            payload,
        })
    }
}

/// One length-prefixed site id, and what follows it.
fn site_field(bytes: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let (&len, rest) = bytes.split_first().ok_or(WireError::Truncated)?;
    if len == 0 || usize::from(len) > SiteId::MAX_LEN {
        return Err(WireError::SiteLength(len));
    }
    let (id, rest) = rest
        .split_at_checked(usize::from(len))
        .ok_or(WireError::Truncated)?;
    if !id
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Err(WireError::SiteBytes);
    }
    let id = std::str::from_utf8(id).map_err(|_| WireError::SiteBytes)?;
    Ok((id, rest))
}

/// Appends the header of a relay datagram from `source` to `destination` to `out`; the
/// payload goes right after it.
pub fn emit_header(out: &mut Vec<u8>, network: u16, source: &SiteId, destination: &SiteId) {
    out.push(KIND);
    out.extend_from_slice(&network.to_be_bytes());
    for site in [source, destination] {
        let id = site.as_str().as_bytes();
        // A SiteId is 1..=32 bytes by construction.
        out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(id);
    }
}

/// What to do with a relay datagram that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Pass the datagram on, unchanged, on the direct connection to `to`.
    Forward { to: SiteId },
    /// A packet of the inner connection from `source`, relayed by the sending peer: hand the
    /// payload (from `payload_offset`) to that connection.
    Deliver {
        source: SiteId,
        payload_offset: usize,
    },
}

/// Who may relay through this router and whom it reaches through relays; from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayPolicy {
    me: SiteId,
    /// `relay = true`: pass datagrams on between listed peers.
    relays: bool,
    /// Listed peers reached directly: the only ends a relayed datagram may have here.
    direct: BTreeSet<SiteId>,
    /// Listed peers reached through a relay: peer -> relay.
    via: BTreeMap<SiteId, SiteId>,
}

impl RelayPolicy {
    /// `peers` are the listed peers with the relay each one is reached through, if any.
    pub fn new(
        me: SiteId,
        relays: bool,
        peers: impl IntoIterator<Item = (SiteId, Option<SiteId>)>,
    ) -> Self {
        let mut direct = BTreeSet::new();
        let mut via = BTreeMap::new();
        for (site, relay) in peers {
            match relay {
                Some(relay) => {
                    via.insert(site, relay);
                }
                None => {
                    direct.insert(site);
                }
            }
        }
        RelayPolicy {
            me,
            relays,
            direct,
            via,
        }
    }

    /// Whether this router passes relay datagrams on.
    pub fn relays(&self) -> bool {
        self.relays
    }

    /// The peers reached through a relay, with their relay.
    pub fn relayed_peers(&self) -> &BTreeMap<SiteId, SiteId> {
        &self.via
    }

    /// The relay `peer` is reached through, if any.
    pub fn via(&self, peer: &SiteId) -> Option<&SiteId> {
        self.via.get(peer)
    }

    /// Judges a relay datagram that arrived on the connection from peer `from`.
    pub fn judge(&self, from: &SiteId, bytes: &[u8]) -> Result<Decision, DropReason> {
        let datagram = RelayDatagram::parse(bytes).map_err(|_| DropReason::Malformed)?;
        if datagram.network != DEFAULT_NETWORK {
            return Err(DropReason::RelayNetwork);
        }
        if datagram.destination == self.me.as_str() {
            return match self.via.get_key_value(datagram.source) {
                Some((source, relay)) if relay == from => Ok(Decision::Deliver {
                    source: source.clone(),
                    payload_offset: datagram.payload_offset,
                }),
                _ => Err(DropReason::RelayUnexpected),
            };
        }
        if !self.relays {
            return Err(DropReason::RelayDisabled);
        }
        if datagram.source != from.as_str() || datagram.destination == from.as_str() {
            return Err(DropReason::RelaySpoofed);
        }
        if !self.direct.contains(from) {
            return Err(DropReason::RelayUnlisted);
        }
        match self.direct.get(datagram.destination) {
            Some(to) => Ok(Decision::Forward { to: to.clone() }),
            None => Err(DropReason::RelayUnlisted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    /// b -> c on network 0, payload "quic": what `emit_header` must produce.
    const B_TO_C: [u8; 11] = [0x01, 0x00, 0x00, 1, b'b', 1, b'c', b'q', b'u', b'i', b'c'];

    fn datagram(network: u16, source: &str, destination: &str) -> Vec<u8> {
        let mut out = Vec::new();
        emit_header(&mut out, network, &site(source), &site(destination));
        out.extend_from_slice(b"quic");
        out
    }

    #[test]
    fn emit_and_parse_agree_with_the_documented_layout() {
        assert_eq!(datagram(0, "b", "c"), B_TO_C);
        let parsed = RelayDatagram::parse(&B_TO_C).unwrap();
        assert_eq!(
            parsed,
            RelayDatagram {
                network: 0,
                source: "b",
                destination: "c",
                payload_offset: 7,
                payload: b"quic",
            }
        );
        assert_eq!(header_len(&site("b"), &site("c")), 7);
        let long = "x".repeat(SiteId::MAX_LEN);
        let bytes = datagram(0x1234, &long, &long);
        assert_eq!(bytes.len(), MAX_HEADER_LEN + 4);
        let parsed = RelayDatagram::parse(&bytes).unwrap();
        assert_eq!(parsed.network, 0x1234);
        assert_eq!(parsed.destination, long);
    }

    #[test]
    fn every_cut_and_bad_field_is_an_error_not_a_panic() {
        for end in 0..7 {
            assert!(
                RelayDatagram::parse(&B_TO_C[..end]).is_err(),
                "cut at {end}"
            );
        }
        // The payload may be empty (the header alone parses).
        assert!(RelayDatagram::parse(&B_TO_C[..7]).is_ok());
        let mut ipv4 = B_TO_C;
        ipv4[0] = 0x45;
        assert_eq!(RelayDatagram::parse(&ipv4), Err(WireError::NotRelay(0x45)));
        for bad_len in [0u8, 33, 255] {
            let mut bytes = B_TO_C;
            bytes[3] = bad_len;
            assert_eq!(
                RelayDatagram::parse(&bytes),
                Err(WireError::SiteLength(bad_len))
            );
        }
        let mut bytes = B_TO_C;
        bytes[6] = b' ';
        assert_eq!(RelayDatagram::parse(&bytes), Err(WireError::SiteBytes));
        let mut bytes = B_TO_C;
        bytes[4] = 0xc3;
        assert_eq!(RelayDatagram::parse(&bytes), Err(WireError::SiteBytes));
    }

    /// Relay a (relay = true) with peers b and c reached directly; d reached via b.
    fn relay_a() -> RelayPolicy {
        RelayPolicy::new(
            site("a"),
            true,
            [
                (site("b"), None),
                (site("c"), None),
                (site("d"), Some(site("b"))),
            ],
        )
    }

    #[test]
    fn a_relay_passes_datagrams_on_between_listed_direct_peers_only() {
        let a = relay_a();
        assert_eq!(
            a.judge(&site("b"), &datagram(0, "b", "c")),
            Ok(Decision::Forward { to: site("c") })
        );
        assert_eq!(
            a.judge(&site("c"), &datagram(0, "c", "b")),
            Ok(Decision::Forward { to: site("b") })
        );
        // An unlisted destination, a destination reached only through another relay, and an
        // unlisted sender (even one with a valid certificate that connected to us).
        assert_eq!(
            a.judge(&site("b"), &datagram(0, "b", "x")),
            Err(DropReason::RelayUnlisted)
        );
        assert_eq!(
            a.judge(&site("b"), &datagram(0, "b", "d")),
            Err(DropReason::RelayUnlisted)
        );
        assert_eq!(
            a.judge(&site("x"), &datagram(0, "x", "c")),
            Err(DropReason::RelayUnlisted)
        );
        // A source that is not the sender, and a datagram back to its sender.
        assert_eq!(
            a.judge(&site("b"), &datagram(0, "c", "b")),
            Err(DropReason::RelaySpoofed)
        );
        assert_eq!(
            a.judge(&site("b"), &datagram(0, "x", "c")),
            Err(DropReason::RelaySpoofed)
        );
        assert_eq!(
            a.judge(&site("b"), &datagram(0, "b", "b")),
            Err(DropReason::RelaySpoofed)
        );
        assert_eq!(
            a.judge(&site("b"), &datagram(7, "b", "c")),
            Err(DropReason::RelayNetwork)
        );
        assert_eq!(
            a.judge(&site("b"), &B_TO_C[..5]),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn a_router_without_relay_true_refuses_to_relay() {
        let a = RelayPolicy::new(site("a"), false, [(site("b"), None), (site("c"), None)]);
        assert!(!a.relays());
        assert_eq!(
            a.judge(&site("b"), &datagram(0, "b", "c")),
            Err(DropReason::RelayDisabled)
        );
    }

    #[test]
    fn an_end_takes_relayed_packets_only_from_its_configured_relay() {
        // c reaches b via a, and d directly.
        let c = RelayPolicy::new(
            site("c"),
            false,
            [
                (site("a"), None),
                (site("b"), Some(site("a"))),
                (site("d"), None),
            ],
        );
        assert_eq!(c.via(&site("b")), Some(&site("a")));
        assert_eq!(
            c.judge(&site("a"), &datagram(0, "b", "c")),
            Ok(Decision::Deliver {
                source: site("b"),
                payload_offset: 7
            })
        );
        // The right source through another relay, a source not relayed at all, and one not
        // listed: all unexpected.
        for (relay, source) in [("d", "b"), ("a", "d"), ("a", "x")] {
            assert_eq!(
                c.judge(&site(relay), &datagram(0, source, "c")),
                Err(DropReason::RelayUnexpected),
                "{source} via {relay}"
            );
        }
    }

    #[test]
    fn room_for_the_inner_connection() {
        let (b, c) = (site("b"), site("c"));
        assert_eq!(inner_udp_payload(1380, &b, &c), 1373);
        assert_eq!(min_tun_mtu(&b, &c), 1207);
        assert_eq!(inner_udp_payload(3, &b, &c), 0);
    }
}
