//! The header of a data datagram between two routers: a kind byte and the network id, then the
//! IPv4 packet.
//!
//! | offset | bytes | field |
//! |--------|-------|-------|
//! | 0      | 1     | kind: [`PACKET`] (as it left the sending site's LAN) or [`RELAYED`] (relayed in flight by a host's old site); a relay datagram starts with [`crate::relay::KIND`] instead |
//! | 1      | 2     | network id, big-endian |
//! | 3      | ...   | the IPv4 packet |
//!
//! The receiver hands the packet to that network's tables and TUN device only if the sending
//! peer shares the network ([`crate::networks::SharedNetworks`]); otherwise it is dropped and
//! counted as [`DropReason::UnknownNetwork`].

use crate::config::NetworkId;
use crate::fib::DropReason;
use crate::networks::SharedNetworks;

/// Kind of a packet as it left the sending site's LAN.
pub const PACKET: u8 = 0x02;
/// Kind of a packet relayed in flight by the destination host's old site.
pub const RELAYED: u8 = 0x03;
/// Bytes in front of every packet.
pub const HEADER_LEN: usize = 3;

/// The header of a datagram of `kind` ([`PACKET`] or [`RELAYED`]) in `network`.
pub fn header(kind: u8, network: NetworkId) -> [u8; HEADER_LEN] {
    let [hi, lo] = network.to_be_bytes();
    [kind, hi, lo]
}

/// A data datagram, its header checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Relayed in flight by the host's old site.
    pub relayed: bool,
    pub network: NetworkId,
    pub packet: &'a [u8],
}

/// Reads a data datagram's header: a known kind, and a network `shared` holds.
pub fn parse<'a>(datagram: &'a [u8], shared: &SharedNetworks) -> Result<Datagram<'a>, DropReason> {
    let Some(([kind, hi, lo], packet)) = datagram.split_first_chunk::<HEADER_LEN>() else {
        return Err(DropReason::Malformed);
    };
    let relayed = match *kind {
        PACKET => false,
        RELAYED => true,
        _ => return Err(DropReason::Malformed),
    };
    let network = u16::from_be_bytes([*hi, *lo]);
    if !shared.contains(network) {
        return Err(DropReason::UnknownNetwork);
    }
    Ok(Datagram {
        relayed,
        network,
        packet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(ids: &[NetworkId]) -> SharedNetworks {
        SharedNetworks::from_iter(ids.iter().copied())
    }

    #[test]
    fn a_datagram_of_a_shared_network_parses() {
        let mut datagram = header(PACKET, 0x0102).to_vec();
        datagram.extend_from_slice(&[0x45, 0, 0, 20]);
        let parsed = parse(&datagram, &shared(&[0x0102])).unwrap();
        assert_eq!(
            parsed,
            Datagram {
                relayed: false,
                network: 0x0102,
                packet: &[0x45, 0, 0, 20]
            }
        );
        datagram[0] = RELAYED;
        assert!(parse(&datagram, &shared(&[0x0102])).unwrap().relayed);
    }

    #[test]
    fn a_datagram_of_another_network_is_refused() {
        let mut datagram = header(PACKET, 2).to_vec();
        datagram.extend_from_slice(&[0x45, 0, 0, 20]);
        assert_eq!(
            parse(&datagram, &shared(&[1])),
            Err(DropReason::UnknownNetwork)
        );
        assert_eq!(
            parse(&datagram, &shared(&[])),
            Err(DropReason::UnknownNetwork)
        );
    }

    #[test]
    fn truncated_or_unknown_kinds_are_malformed() {
        assert_eq!(
            parse(&[PACKET, 0], &shared(&[0])),
            Err(DropReason::Malformed)
        );
        // A version-3 datagram: a bare IPv4 packet.
        assert_eq!(
            parse(&[0x45, 0, 0, 20], &shared(&[0])),
            Err(DropReason::Malformed)
        );
    }
}
