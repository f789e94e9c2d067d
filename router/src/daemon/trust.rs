//! Who may connect: certificates with certified prefixes, not revoked, of a listed site that
//! is not ourselves; and the revocation list re-read on SIGHUP.

use std::time::Instant;

use skyvine_core::config::{Config, Network};
use skyvine_core::networks::certified_in;
use skyvine_core::node::NodeConfig;
use skyvine_tables::SiteId;
use tokio::sync::mpsc;

use super::{close_code, Input, LanPort, Link, LinkContext, MainLoop};
use crate::dataplane::PacketDevice;
use crate::kernel_sync::KernelOps;
use crate::pki::{self, Identity};
use crate::revoked::Revoked;

/// The core's configuration of `network`: the config file's, with the prefixes our own
/// certificate certifies in that network. A configured prefix outside them is advertised
/// anyway but every peer refuses it: that is worth a warning.
pub(super) fn node_config(
    config: &Config,
    network: &Network,
    identity: &Identity,
    lan: Option<&LanPort>,
) -> NodeConfig {
    let mut node = config.node_config(network, lan.map(|l| l.identity));
    node.certified = certified_in(identity.prefixes(), network.id);
    for prefix in &network.lan.prefixes {
        let certified = node
            .certified
            .iter()
            .any(|c| c.prefix() <= prefix.prefix() && c.contains(prefix.network()));
        if !certified {
            tracing::warn!(network = %network.name, id = network.id, %prefix, certified = ?node.certified, "configured prefix outside this router's certified prefixes: peers will refuse it (re-issue the certificate with `skyvine cert issue --prefix ID:PREFIX`)");
        }
    }
    node
}

/// Reads the peer certificate of a fresh connection: it must certify prefixes and not be
/// revoked. `None` (the connection closed) otherwise.
pub(super) fn check_certificate(
    conn: &quinn::Connection,
    site: &SiteId,
    ctx: &LinkContext,
) -> Option<pki::PeerCertificate> {
    let certificate = match pki::peer_certificate(conn) {
        Ok(certificate) => certificate,
        Err(error) => {
            tracing::warn!(peer = %site, %error, "refused a peer certificate");
            conn.close(
                quinn::VarInt::from_u32(close_code::WRONG_SITE),
                b"certificate without certified prefixes",
            );
            return None;
        }
    };
    let revoked = ctx
        .revoked
        .read()
        .map(|list| list.contains(&certificate.id))
        // A poisoned lock means a panic elsewhere: refuse rather than admit.
        .unwrap_or(true);
    if revoked {
        tracing::warn!(peer = %site, serial = certificate.id.serial, sha256 = certificate.id.sha256, "refused a revoked certificate");
        conn.close(quinn::VarInt::from_u32(close_code::REVOKED), b"revoked");
        return None;
    }
    Some(certificate)
}

/// Passes reload requests (SIGHUP) to the main loop.
pub(super) async fn forward_reloads(mut reload: mpsc::Receiver<()>, inputs: mpsc::Sender<Input>) {
    while reload.recv().await.is_some() {
        if inputs.send(Input::Reload).await.is_err() {
            return;
        }
    }
}

impl<D: PacketDevice, K: KernelOps> MainLoop<D, K> {
    /// Whether the core admits `site` (listed, not ourselves); closes the connection if not.
    pub(super) fn admitted(&self, site: &SiteId, link: &Link) -> bool {
        match self.networks.admit(site) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(peer = %site, %error, "refused a peer");
                link.conn.close(
                    quinn::VarInt::from_u32(close_code::NOT_ADMITTED),
                    b"not admitted",
                );
                false
            }
        }
    }

    /// Re-reads the revocation list; a connected peer it now lists is cut off and what it
    /// originated withdrawn. A list that does not read keeps the previous one.
    pub(super) fn reload_revoked(&mut self, now: Instant) {
        let list = match Revoked::load(self.revoked_path.as_deref()) {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot re-read the revocation list; keeping the previous one"
                );
                return;
            }
        };
        tracing::info!(revoked = list.len(), "revocation list re-read");
        let cut: Vec<SiteId> = self
            .links
            .iter()
            .filter(|(_, link)| list.contains(&link.certificate.id))
            .map(|(site, _)| site.clone())
            .collect();
        match self.revoked.write() {
            Ok(mut shared) => *shared = list,
            Err(poisoned) => *poisoned.into_inner() = list,
        }
        for site in cut {
            if let Some(link) = self.links.remove(&site) {
                link.conn
                    .close(quinn::VarInt::from_u32(close_code::REVOKED), b"revoked");
                self.shared.peers.remove_if_same(&site, &link.conn);
            }
            self.networks.handle_peer_revoked(&site, now);
            self.close_relayed_via(&site);
        }
    }
}
