//! Decisions about a control connection to a peer router that the IO layer must not make on
//! its own: whether the peer's hello is acceptable, and which of two connections to the same
//! peer to keep (a direct one beats one through a relay; one from the site's other router
//! beats both). The daemon authenticates the connection (TLS against the site CA) and then
//! asks these.

use skyvine_tables::SiteId;

use crate::proto::{Frame, Message, NetworkId, LINK_NETWORK, PROTOCOL_VERSION};

/// Why a peer's first control message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("peer speaks protocol version {theirs}, this router speaks {PROTOCOL_VERSION}")]
    Version { theirs: u32 },
    #[error("peer says it is site {said}, its certificate says {certified}")]
    WrongSite { said: SiteId, certified: SiteId },
    #[error("expected hello, got {0}")]
    NotHello(&'static str),
}

/// The hello this router opens every control stream with: its site and its networks.
pub fn hello(me: &SiteId, networks: &[NetworkId]) -> Frame {
    Frame::new(
        LINK_NETWORK,
        Message::Hello {
            version: PROTOCOL_VERSION,
            site: me.clone(),
            networks: networks.to_vec(),
        },
    )
}

/// Checks the peer's first frame: a hello on [`LINK_NETWORK`] of our protocol version from
/// the site its certificate names (`certified`). Returns the networks it says it carries.
pub fn check_hello(frame: &Frame, certified: &SiteId) -> Result<Vec<NetworkId>, HelloError> {
    if frame.network != LINK_NETWORK {
        return Err(HelloError::NotHello("a message of a network"));
    }
    match &frame.message {
        Message::Hello { version, .. } if *version != PROTOCOL_VERSION => {
            Err(HelloError::Version { theirs: *version })
        }
        Message::Hello { site, .. } if site != certified => Err(HelloError::WrongSite {
            said: site.clone(),
            certified: certified.clone(),
        }),
        Message::Hello { networks, .. } => Ok(networks.clone()),
        other => Err(HelloError::NotHello(other.kind())),
    }
}

/// Why a peer with a valid certificate may not connect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("the certificate names this router's own site {0}")]
    Myself(SiteId),
    #[error("site {0} is not listed in [[peers]] (set tls.any_certified_peer to admit any site the CA certified)")]
    Unlisted(SiteId),
}

/// Whether `peer` (authenticated by the CA) may connect to `me`: never under our own id, and
/// only when listed in `peers` unless `any_certified`.
pub fn admit(
    me: &SiteId,
    peer: &SiteId,
    peers: &[SiteId],
    any_certified: bool,
) -> Result<(), AdmitError> {
    if peer == me {
        return Err(AdmitError::Myself(peer.clone()));
    }
    if !any_certified && !peers.contains(peer) {
        return Err(AdmitError::Unlisted(peer.clone()));
    }
    Ok(())
}

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This router dialed the peer.
    Dialed,
    /// The peer dialed this router.
    Accepted,
}

/// How a connection to a peer travels. A next hop is a connection: packets for a site go on
/// its connection, whatever path that connection takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerPath {
    /// Between the two routers' WAN endpoints (through any NAT on the way).
    Direct,
    /// End to end through relay router `0`, inside relay datagrams (see [`crate::relay`]).
    Via(SiteId),
}

impl PeerPath {
    /// The relay, for a relayed path.
    pub fn relay(&self) -> Option<&SiteId> {
        match self {
            PeerPath::Direct => None,
            PeerPath::Via(relay) => Some(relay),
        }
    }
}

impl std::fmt::Display for PeerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerPath::Direct => f.write_str("direct"),
            PeerPath::Via(relay) => write!(f, "via {relay}"),
        }
    }
}

/// Which of two connections to one peer survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Close the existing connection and use the new one.
    New,
    /// Close the new connection.
    Existing,
}

/// A second connection to `peer` came up while one was already established.
///
/// When both routers dialed each other at once, both must keep the same connection, whatever
/// the order they noticed them in: the one dialed by the lower site id. A new connection in
/// the same direction as the existing one replaces it: the peer (or we) dialed again because
/// the old one is dead and not yet noticed.
pub fn tie_break(me: &SiteId, peer: &SiteId, existing: Direction, new: Direction) -> Keep {
    let dialed_by_lower = if me < peer {
        Direction::Dialed
    } else {
        Direction::Accepted
    };
    if new == existing || new == dialed_by_lower {
        Keep::New
    } else {
        Keep::Existing
    }
}

/// [`tie_break`] between connections that may travel different paths: a direct connection
/// beats a relayed one (both ends see the same paths, so they agree); between two of the same
/// kind, the directions decide.
pub fn tie_break_paths(
    me: &SiteId,
    peer: &SiteId,
    (existing, existing_path): (Direction, &PeerPath),
    (new, new_path): (Direction, &PeerPath),
) -> Keep {
    match (existing_path, new_path) {
        (PeerPath::Direct, PeerPath::Via(_)) => Keep::Existing,
        (PeerPath::Via(_), PeerPath::Direct) => Keep::New,
        (PeerPath::Direct, PeerPath::Direct) | (PeerPath::Via(_), PeerPath::Via(_)) => {
            tie_break(me, peer, existing, new)
        }
    }
}

/// Whether a new connection reaches the same router of the peer's site as the one already up.
/// A site may run two routers (active and standby): each has its own certificate for the site,
/// and only the active one connects. The daemon tells them apart by the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRouter {
    /// The same certificate as the existing connection's.
    Same,
    /// Another certificate of the same site: its other router took over.
    Other,
}

/// [`tie_break_paths`] between connections that may come from different routers of the peer's
/// site. A connection from the site's other router always replaces the existing one: that
/// router became the site's active router (its predecessor failed, or handed over), and the
/// existing connection is to a router that is gone or about to be. Waiting for the old
/// connection's idle timeout instead would add that timeout to every failover, and when the
/// peer's id is lower and the old connection was dialed by this router, the plain tie-break
/// would refuse the new router until then.
pub fn tie_break_link(
    me: &SiteId,
    peer: &SiteId,
    existing: (Direction, &PeerPath),
    new: (Direction, &PeerPath),
    router: PeerRouter,
) -> Keep {
    match router {
        PeerRouter::Other => Keep::New,
        PeerRouter::Same => tie_break_paths(me, peer, existing, new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    #[test]
    fn a_hello_must_carry_our_version_and_the_certified_site() {
        let b = site("b");
        assert_eq!(check_hello(&hello(&b, &[0, 7]), &b), Ok(vec![0, 7]));
        let old = Frame::new(
            LINK_NETWORK,
            Message::Hello {
                version: PROTOCOL_VERSION + 1,
                site: b.clone(),
                networks: vec![0],
            },
        );
        assert_eq!(
            check_hello(&old, &b),
            Err(HelloError::Version {
                theirs: PROTOCOL_VERSION + 1
            })
        );
        let err = check_hello(&hello(&site("c"), &[0]), &b).unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer says it is site c, its certificate says b"
        );
        assert_eq!(
            check_hello(&Frame::new(LINK_NETWORK, Message::TableRequest {}), &b),
            Err(HelloError::NotHello("table_request"))
        );
        // A hello framed as a network's message is not the link's hello.
        let mut in_network = hello(&b, &[0]);
        in_network.network = 0;
        assert_eq!(
            check_hello(&in_network, &b),
            Err(HelloError::NotHello("a message of a network"))
        );
    }

    #[test]
    fn only_listed_sites_other_than_ourselves_are_admitted() {
        let peers = [site("b")];
        assert_eq!(admit(&site("a"), &site("b"), &peers, false), Ok(()));
        assert_eq!(
            admit(&site("a"), &site("a"), &peers, true),
            Err(AdmitError::Myself(site("a")))
        );
        assert_eq!(
            admit(&site("a"), &site("z"), &peers, false),
            Err(AdmitError::Unlisted(site("z")))
        );
        assert_eq!(admit(&site("a"), &site("z"), &peers, true), Ok(()));
    }

    #[test]
    fn simultaneous_dials_keep_the_same_connection_at_both_ends() {
        let (a, b) = (site("a"), site("b"));
        // a and b dial each other; each sees the two connections in either order.
        for (existing, new) in [
            (Direction::Dialed, Direction::Accepted),
            (Direction::Accepted, Direction::Dialed),
        ] {
            let keep_at_a = tie_break(&a, &b, existing, new);
            let kept_at_a = if keep_at_a == Keep::New {
                new
            } else {
                existing
            };
            // The connection a dialed is the one b accepted.
            for (b_existing, b_new) in [
                (Direction::Dialed, Direction::Accepted),
                (Direction::Accepted, Direction::Dialed),
            ] {
                let keep_at_b = tie_break(&b, &a, b_existing, b_new);
                let kept_at_b = if keep_at_b == Keep::New {
                    b_new
                } else {
                    b_existing
                };
                assert_eq!(kept_at_a, Direction::Dialed, "a dialed: a's is kept");
                assert_eq!(kept_at_b, Direction::Accepted, "b keeps the one a dialed");
            }
        }
    }

    #[test]
    fn a_direct_connection_beats_a_relayed_one_in_any_order() {
        let (a, b) = (site("a"), site("b"));
        let direct = PeerPath::Direct;
        let relayed = PeerPath::Via(site("r"));
        for (d1, d2) in [
            (Direction::Dialed, Direction::Accepted),
            (Direction::Accepted, Direction::Dialed),
            (Direction::Dialed, Direction::Dialed),
        ] {
            for (me, peer) in [(&a, &b), (&b, &a)] {
                assert_eq!(
                    tie_break_paths(me, peer, (d1, &direct), (d2, &relayed)),
                    Keep::Existing
                );
                assert_eq!(
                    tie_break_paths(me, peer, (d1, &relayed), (d2, &direct)),
                    Keep::New
                );
                assert_eq!(
                    tie_break_paths(me, peer, (d1, &relayed), (d2, &relayed)),
                    tie_break(me, peer, d1, d2)
                );
            }
        }
        assert_eq!(relayed.to_string(), "via r");
        assert_eq!(relayed.relay(), Some(&site("r")));
        assert_eq!(direct.relay(), None);
    }

    #[test]
    fn a_connection_from_the_sites_other_router_replaces_the_existing_one() {
        let (a, c) = (site("a"), site("c"));
        let direct = PeerPath::Direct;
        let relayed = PeerPath::Via(site("r"));
        // At a (lower id), the kept connection to c's first router is the one a dialed: the
        // plain tie-break refuses a connection that c's standby dials, until the old one times
        // out. From the other router it is taken at once, whatever the paths and directions.
        assert_eq!(
            tie_break_link(
                &a,
                &c,
                (Direction::Dialed, &direct),
                (Direction::Accepted, &direct),
                PeerRouter::Same
            ),
            Keep::Existing
        );
        for (d1, d2) in [
            (Direction::Dialed, Direction::Accepted),
            (Direction::Accepted, Direction::Dialed),
            (Direction::Accepted, Direction::Accepted),
        ] {
            for (existing, new) in [(&direct, &direct), (&direct, &relayed), (&relayed, &direct)] {
                for (me, peer) in [(&a, &c), (&c, &a)] {
                    assert_eq!(
                        tie_break_link(me, peer, (d1, existing), (d2, new), PeerRouter::Other),
                        Keep::New
                    );
                    assert_eq!(
                        tie_break_link(me, peer, (d1, existing), (d2, new), PeerRouter::Same),
                        tie_break_paths(me, peer, (d1, existing), (d2, new))
                    );
                }
            }
        }
    }

    #[test]
    fn a_redial_in_the_same_direction_replaces_the_old_connection() {
        let (a, b) = (site("a"), site("b"));
        for direction in [Direction::Dialed, Direction::Accepted] {
            assert_eq!(tie_break(&a, &b, direction, direction), Keep::New);
            assert_eq!(tie_break(&b, &a, direction, direction), Keep::New);
        }
    }
}
