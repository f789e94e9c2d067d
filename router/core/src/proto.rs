//! The control protocol spoken between routers on a QUIC stream.
//!
//! Framing: a 4-byte big-endian length, then that many bytes of one JSON-encoded [`Frame`]: the
//! virtual network the message belongs to and the [`Message`]. A frame longer than
//! [`MAX_MESSAGE_LEN`] or a body that does not decode is an error: the receiver closes the
//! stream with the reason and never allocates more than the limit.
//!
//! The first frame on every control stream, in both directions, is [`Message::Hello`] on
//! [`LINK_NETWORK`], naming the networks the sender carries; a peer with another
//! [`PROTOCOL_VERSION`] is refused. Every later frame names one network: the receiver hands it
//! to that network's tables only if both routers carry the network (see
//! [`crate::networks`]), and drops and counts it otherwise.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use skyvine_tables::{GndtEntry, MacAddr, SiteId};

pub use crate::config::{NetworkId, LINK_NETWORK};

/// The version of this protocol. Peers must agree exactly. 2: planned-migration hints. 3: a
/// router speaks only for itself (full tables carry the sender's own entries), echoes,
/// outranked claims. 4: every message is framed with its network id, the hello lists the
/// sender's networks (and data datagrams carry the network id too).
pub const PROTOCOL_VERSION: u32 = 4;

/// One framed control message: the network it belongs to ([`LINK_NETWORK`] for the hello).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    pub network: NetworkId,
    pub message: Message,
}

impl Frame {
    /// A message of `network`.
    pub fn new(network: NetworkId, message: Message) -> Frame {
        Frame { network, message }
    }
}

/// The largest encoded message accepted (and produced).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// How many entries one [`Message::Entries`] carries at most, so that a full table of any size
/// goes out as messages well under [`MAX_MESSAGE_LEN`].
pub const MAX_ENTRIES_PER_MESSAGE: usize = 2000;

/// One control message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Opens a control stream: who is speaking, which protocol, and which networks it carries.
    Hello {
        version: u32,
        site: SiteId,
        networks: Vec<NetworkId>,
    },
    /// GNDT entries: a chunk of the full table (on connect) or an increment. Only the
    /// sender's own entries: anything else is refused.
    Entries { entries: Vec<GndtEntry> },
    /// On connect: the receiver's own entries for VMs that had migrated to it, as the sender
    /// holds them, so that a restarted router can look for those VMs on its LAN; and, as
    /// withdrawn entries, the bindings of the receiver's hosts that the sender knows from
    /// anything else (a withdrawal, another site's claim, an entry gone), which the receiver
    /// may vouch for. Never installed as such: the receiver probes for each and claims only
    /// one that answers.
    Echo { entries: Vec<GndtEntry> },
    /// Answers a host claim the sender refused because the entry it holds for `ip` (another
    /// site's, the address's home) has sequence number `seq`, not lower. A hint, never an
    /// entry: the claimant re-claims above it only a host it holds itself. (A claimant that
    /// restarted cannot know the number its peers hold.)
    Outranked { ip: Ipv4Addr, seq: u64 },
    /// Marks the end of a full-table transfer; the receiver now knows everything the sender did.
    TableEnd { digest: u64, count: u64 },
    /// The sender's table fingerprint, sent periodically to catch divergence.
    Digest { digest: u64, count: u64 },
    /// Asks the receiver to send its full table (after a digest mismatch).
    TableRequest {},
    /// Asks which IP the host with `mac` has (a RARP carries no IP).
    WhoHas { query: u64, mac: MacAddr },
    /// Answers [`Message::WhoHas`]; `ip` is `None` when the sender does not know.
    IsAt {
        query: u64,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
    },
    /// From the owner of `ip`: the VM at `mac` is about to move to `to`; for `window_ms` send
    /// its packets to both sites.
    Prepare {
        ip: Ipv4Addr,
        mac: MacAddr,
        to: SiteId,
        window_ms: u64,
    },
    /// From the owner of a prepared window: it ended without a move (cancelled, or expired).
    PrepareEnd { ip: Ipv4Addr, mac: MacAddr },
    /// From a destination to the owner: please announce a planned move of the VM at `mac`
    /// (address `ip`, or the one the owner has for `mac`) to the sender.
    PrepareRequest {
        ip: Option<Ipv4Addr>,
        mac: MacAddr,
        window_ms: u64,
    },
    /// From a window's destination to its owner: the move will not happen; end the window.
    PrepareCancel { ip: Ipv4Addr, mac: MacAddr },
}

impl Message {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Entries { .. } => "entries",
            Message::Echo { .. } => "echo",
            Message::Outranked { .. } => "outranked",
            Message::TableEnd { .. } => "table_end",
            Message::Digest { .. } => "digest",
            Message::TableRequest {} => "table_request",
            Message::WhoHas { .. } => "who_has",
            Message::IsAt { .. } => "is_at",
            Message::Prepare { .. } => "prepare",
            Message::PrepareEnd { .. } => "prepare_end",
            Message::PrepareRequest { .. } => "prepare_request",
            Message::PrepareCancel { .. } => "prepare_cancel",
        }
    }
}

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_LEN}")]
    TooLong(usize),
    #[error("message does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Encodes one frame with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, ProtoError> {
    let body = serde_json::to_vec(frame)?;
    if body.len() > MAX_MESSAGE_LEN {
        return Err(ProtoError::TooLong(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::TooLong(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Reads a frame's length prefix, rejecting lengths over the limit before anything is allocated.
pub fn body_len(prefix: [u8; 4]) -> Result<usize, ProtoError> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE_LEN {
        return Err(ProtoError::TooLong(len));
    }
    Ok(len)
}

/// Decodes one frame body (the bytes after the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, ProtoError> {
    Ok(serde_json::from_slice(body)?)
}

/// Splits a byte stream into messages; pure, so it can be fuzzed.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is unusable; the caller closes it.
    pub fn next_message(&mut self) -> Result<Option<Frame>, ProtoError> {
        let Some(prefix) = self.buffer.get(..4) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(prefix);
        let len = body_len(len_bytes)?;
        let Some(body) = self.buffer.get(4..4 + len) else {
            return Ok(None);
        };
        let message = decode_body(body)?;
        self.buffer.drain(..4 + len);
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::Ipv4Network;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    #[test]
    fn messages_round_trip_through_the_decoder_in_pieces() {
        let messages = vec![
            Message::Hello {
                version: PROTOCOL_VERSION,
                site: site("a"),
                networks: vec![0, 2],
            },
            Message::Entries {
                entries: vec![
                    GndtEntry::site_prefix(
                        "10.77.1.0/24".parse::<Ipv4Network>().unwrap(),
                        site("a"),
                        3,
                    ),
                    GndtEntry::host(
                        "10.77.1.2".parse().unwrap(),
                        site("b"),
                        4,
                        Some("52:54:00:77:01:02".parse().unwrap()),
                    ),
                ],
            },
            Message::TableEnd {
                digest: 7,
                count: 2,
            },
            Message::WhoHas {
                query: 9,
                mac: "52:54:00:77:01:02".parse().unwrap(),
            },
            Message::Prepare {
                ip: "10.77.1.2".parse().unwrap(),
                mac: "52:54:00:77:01:02".parse().unwrap(),
                to: site("b"),
                window_ms: 60_000,
            },
            Message::PrepareRequest {
                ip: None,
                mac: "52:54:00:77:01:02".parse().unwrap(),
                window_ms: 60_000,
            },
        ];
        let frames: Vec<Frame> = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| Frame::new(u16::try_from(i).unwrap(), m))
            .collect();
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend(encode(f).unwrap());
        }
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(7) {
            decoder.push(chunk);
            while let Some(m) = decoder.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, frames);
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut decoder = Decoder::default();
        decoder.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decoder.next_message(),
            Err(ProtoError::TooLong(_))
        ));
    }

    #[test]
    fn garbage_and_unknown_fields_are_errors() {
        for body in [
            &b"not json"[..],
            br#"{"network":0,"message":{"type":"launch_missiles"}}"#,
            br#"{"network":0,"message":{"type":"table_request","extra":1}}"#,
            br#"{"network":0,"message":{"type":"hello","version":1,"site":"bad site"}}"#,
            // Version 3's unframed message, and a network id out of range.
            br#"{"type":"table_request"}"#,
            br#"{"network":65536,"message":{"type":"table_request"}}"#,
            br#"{"network":1,"message":{"type":"table_request"},"extra":1}"#,
        ] {
            let mut decoder = Decoder::default();
            decoder.push(&u32::try_from(body.len()).unwrap().to_be_bytes());
            decoder.push(body);
            assert!(
                decoder.next_message().is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
