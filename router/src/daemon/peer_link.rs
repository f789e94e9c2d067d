//! One authenticated peer connection's control stream: the hello exchange, then the peer's
//! messages to the main loop and the main loop's messages to the peer until it closes.

use std::sync::Arc;

use skyvine_core::config::NetworkId;
use skyvine_core::link::{self, Direction, PeerPath};
use skyvine_core::proto::{self, Frame, ProtoError};
use skyvine_tables::SiteId;
use tokio::sync::mpsc;

use super::{close_code, Input, Link, HANDSHAKE_TIMEOUT, OUTBOX_CAPACITY};

#[derive(Clone)]
pub(super) struct LinkContext {
    pub(super) me: SiteId,
    /// The networks this router carries, for its hello.
    pub(super) networks: Vec<NetworkId>,
    pub(super) inputs: mpsc::Sender<Input>,
    pub(super) ids: Arc<std::sync::atomic::AtomicU64>,
    pub(super) revoked: Arc<std::sync::RwLock<crate::revoked::Revoked>>,
}

/// Runs one authenticated connection: hello exchange, then control messages until it closes.
pub(super) async fn run_link(
    conn: quinn::Connection,
    site: SiteId,
    direction: Direction,
    path: PeerPath,
    ctx: LinkContext,
) {
    let id = ctx.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(certificate) = super::trust::check_certificate(&conn, &site, &ctx) else {
        return;
    };
    let (send, mut recv, networks) = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        hello(&conn, &site, direction, &ctx),
    )
    .await
    {
        Ok(Ok(streams)) => streams,
        Ok(Err(error)) => {
            tracing::warn!(peer = %site, error = format!("{error:#}"), "control handshake failed; closing");
            conn.close(
                quinn::VarInt::from_u32(close_code::PROTOCOL),
                b"handshake failed",
            );
            return;
        }
        Err(_) => {
            tracing::warn!(peer = %site, "control handshake timed out; closing");
            conn.close(
                quinn::VarInt::from_u32(close_code::PROTOCOL),
                b"handshake timeout",
            );
            return;
        }
    };
    let (outbox, outbox_rx) = mpsc::channel(OUTBOX_CAPACITY);
    let link = Link {
        id,
        certificate,
        networks,
        conn: conn.clone(),
        outbox,
        direction,
        path,
    };
    if ctx
        .inputs
        .send(Input::Connected {
            site: site.clone(),
            link,
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(write_messages(send, outbox_rx));
    read_messages(&conn, &site, id, &mut recv, &ctx).await;
    writer.abort();
    // Best effort: the main loop may already be gone at shutdown.
    let _ = ctx.inputs.send(Input::Disconnected { site, id }).await;
}

/// Hands the peer's control messages to the main loop until the stream or connection ends;
/// a message that does not decode closes the connection with the reason.
async fn read_messages(
    conn: &quinn::Connection,
    site: &SiteId,
    id: u64,
    recv: &mut quinn::RecvStream,
    ctx: &LinkContext,
) {
    loop {
        tokio::select! {
            read = read_message(recv) => match read {
                Ok(Some(frame)) => {
                    let input = Input::Message { site: site.clone(), id, frame };
                    if ctx.inputs.send(input).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    tracing::info!(peer = %site, "peer closed its control stream");
                    return;
                }
                Err(LinkError::Proto(error)) => {
                    tracing::warn!(peer = %site, %error, "bad control message; closing the connection");
                    conn.close(quinn::VarInt::from_u32(close_code::PROTOCOL), error.to_string().as_bytes());
                    return;
                }
                Err(LinkError::Read(error)) => {
                    tracing::debug!(peer = %site, %error, "control stream ended");
                    return;
                }
            },
            reason = conn.closed() => {
                tracing::info!(peer = %site, %reason, "connection closed");
                return;
            }
        }
    }
}

/// Opens (or accepts) the control stream and exchanges hellos; the core judges the peer's.
/// Returns the streams and the networks the peer says it carries.
async fn hello(
    conn: &quinn::Connection,
    site: &SiteId,
    direction: Direction,
    ctx: &LinkContext,
) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream, Vec<NetworkId>)> {
    let (mut send, mut recv) = match direction {
        Direction::Dialed => conn.open_bi().await?,
        Direction::Accepted => conn.accept_bi().await?,
    };
    send.write_all(&proto::encode(&link::hello(&ctx.me, &ctx.networks))?)
        .await?;
    match read_message(&mut recv).await {
        Ok(Some(theirs)) => {
            let networks = link::check_hello(&theirs, site)?;
            Ok((send, recv, networks))
        }
        Ok(None) => anyhow::bail!("peer closed the stream before hello"),
        Err(error) => Err(anyhow::anyhow!("{error}")),
    }
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Read(String),
}

/// Reads one length-prefixed frame; `Ok(None)` at a clean end of stream.
async fn read_message(recv: &mut quinn::RecvStream) -> Result<Option<Frame>, LinkError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(error) => return Err(LinkError::Read(error.to_string())),
    }
    let len = proto::body_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| LinkError::Read(e.to_string()))?;
    Ok(Some(proto::decode_body(&body)?))
}

async fn write_messages(mut send: quinn::SendStream, mut outbox: mpsc::Receiver<Frame>) {
    while let Some(message) = outbox.recv().await {
        let frame = match proto::encode(&message) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, network = message.network, kind = message.message.kind(), "cannot encode control message; dropped");
                continue;
            }
        };
        if let Err(error) = send.write_all(&frame).await {
            tracing::debug!(%error, "control stream write failed");
            return;
        }
    }
}
