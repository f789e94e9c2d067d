//! Setting up connections to peers: accepting on the WAN endpoint and on the relay endpoint,
//! and one dialer per peer this router dials, straight to its address or through its relay.
//!
//! A router behind NAT dials out and keeps its connections up: QUIC keep-alives every second
//! hold the NAT's mapping open (common NATs forget an idle UDP mapping after 30 s or more), a
//! lost connection is dialed again with backoff, and a new mapping (the NAT rebinds, or this
//! router's own address changes) is QUIC connection migration: the peer validates the new
//! address and carries on, with no new handshake.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skyvine_core::link::{Direction, PeerPath};
use skyvine_tables::SiteId;
use tokio::sync::watch;

use super::{close_code, run_link, LinkContext, HANDSHAKE_TIMEOUT};
use crate::pki;
use crate::relay::RelayEndpoint;

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// How a dialer reaches its peer.
#[derive(Clone, Debug)]
pub(super) enum Dial {
    /// The WAN endpoint, to the peer's configured address.
    Direct {
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        addr: SocketAddr,
    },
    /// The relay endpoint, once the connection to the peer's relay is up.
    Relayed {
        relayed: Arc<RelayEndpoint>,
        relay: SiteId,
    },
}

impl Dial {
    fn path(&self) -> PeerPath {
        match self {
            Dial::Direct { .. } => PeerPath::Direct,
            Dial::Relayed { relay, .. } => PeerPath::Via(relay.clone()),
        }
    }

    /// Where the dial goes, for logs.
    fn describe(&self) -> String {
        match self {
            Dial::Direct { addr, .. } => addr.to_string(),
            Dial::Relayed { relay, .. } => format!("via {relay}"),
        }
    }

    /// The dial can go out now: a relayed one needs the connection to its relay.
    fn ready(&self, connected: &BTreeSet<SiteId>) -> bool {
        match self {
            Dial::Direct { .. } => true,
            Dial::Relayed { relay, .. } => connected.contains(relay),
        }
    }
}

/// Accepts connections on `endpoint` until it closes. With `relayed`, `endpoint` is the relay
/// endpoint: a connection is taken only from a configured relayed peer's synthetic address,
/// with that peer's sizes, and its certificate must name that peer.
pub(super) async fn accept_loop(
    endpoint: quinn::Endpoint,
    relayed: Option<Arc<RelayEndpoint>>,
    ctx: LinkContext,
) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        let relayed = relayed.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let (connecting, path, expected) = match &relayed {
                None => (incoming.accept(), PeerPath::Direct, None),
                Some(relayed) => match relayed.accept_target(remote) {
                    Some((path, server)) => (
                        incoming.accept_with(server),
                        PeerPath::Via(path.relay.clone()),
                        Some(path.peer.clone()),
                    ),
                    None => {
                        tracing::debug!(%remote, "relayed connection from no configured path");
                        incoming.ignore();
                        return;
                    }
                },
            };
            let handshake = async { connecting?.await };
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => {
                    tracing::warn!(%remote, %path, %error, "refused incoming connection");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, %path, "incoming handshake timed out");
                    return;
                }
            };
            match (pki::peer_site(&conn), expected) {
                (Ok(site), Some(expected)) if site != expected => {
                    tracing::warn!(%path, %site, %expected, "refused a relayed connection whose certificate names another site");
                    conn.close(
                        quinn::VarInt::from_u32(close_code::WRONG_SITE),
                        b"wrong site",
                    );
                }
                (Ok(site), _) => run_link(conn, site, Direction::Accepted, path, ctx).await,
                (Err(error), _) => {
                    tracing::warn!(%remote, %error, "refused incoming connection without a site certificate");
                    conn.close(
                        quinn::VarInt::from_u32(close_code::WRONG_SITE),
                        b"no site certificate",
                    );
                }
            }
        });
    }
}

/// Keeps a connection to `site` up: dials when there is none (and the dial can go out), with
/// backoff and jitter after failures.
pub(super) async fn dial_loop(
    dial: Dial,
    site: SiteId,
    ctx: LinkContext,
    mut connected: watch::Receiver<BTreeSet<SiteId>>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    let to = dial.describe();
    loop {
        let (up, ready) = {
            let sites = connected.borrow_and_update();
            (sites.contains(&site), dial.ready(&sites))
        };
        if up || !ready {
            if connected.changed().await.is_err() {
                return;
            }
            continue;
        }
        match connect(&dial, &site).await {
            Ok(conn) => {
                if failures > 0 {
                    tracing::info!(peer = %site, to, failures, "reached peer after failures");
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                run_link(
                    conn,
                    site.clone(),
                    Direction::Dialed,
                    dial.path(),
                    ctx.clone(),
                )
                .await;
            }
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(peer = %site, to, error = format!("{error:#}"), "cannot reach peer; retrying with backoff");
                } else {
                    tracing::debug!(peer = %site, to, failures, error = format!("{error:#}"), "peer still unreachable");
                }
            }
        }
        // Random jitter keeps two routers that lost each other from redialing in lockstep.
        let jitter = Duration::from_millis(fastrand::u64(0..100));
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            _ = connected.changed() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One dial: handshake within the timeout, and the certificate must name `site`.
async fn connect(dial: &Dial, site: &SiteId) -> anyhow::Result<quinn::Connection> {
    let connecting = match dial {
        Dial::Direct {
            endpoint,
            client,
            addr,
        } => endpoint.connect_with(client.clone(), *addr, &pki::server_name(site))?,
        Dial::Relayed { relayed, .. } => {
            let (path, client) = relayed
                .dial_target(site)
                .context("no relayed path to this peer")?;
            relayed
                .endpoint
                .connect_with(client.clone(), path.addr, &pki::server_name(site))?
        }
    };
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .context("handshake timed out")??;
    let actual = pki::peer_site(&conn)?;
    if &actual != site {
        conn.close(
            quinn::VarInt::from_u32(close_code::WRONG_SITE),
            b"wrong site",
        );
        anyhow::bail!("expected site {site}, but the certificate names {actual}");
    }
    Ok(conn)
}
