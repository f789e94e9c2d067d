//! `skyvine-xfer`: a TCP transfer in which every byte is checked. The client sends N bytes of
//! a deterministic pseudo-random stream (optionally paced, so a transfer can span a
//! migration); the server regenerates the stream from the seed in the header and compares each
//! byte, then returns its count and FNV-1a hash, which the client compares with its own. Any
//! reset, short read, wrong byte or hash mismatch exits non-zero.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use skyvine_labtools::parse_size;
use skyvine_labtools::stream::{ByteStream, Fnv64};

/// Byte-checked TCP transfer for the lab.
#[derive(Debug, Parser)]
#[command(version)]
enum Command {
    /// Receive transfers and check every byte.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7800")]
        listen: SocketAddr,
        /// Handle this many connections (concurrently), then exit; non-zero if any failed.
        /// 0 serves until killed (the lab's QEMU guest), printing each result as it ends.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Fail a connection that delivers nothing for this long (seconds).
        #[arg(long, default_value_t = 60)]
        idle_timeout_s: u64,
    },
    /// Send a transfer.
    Client {
        /// The server, e.g. 10.77.1.1:7800.
        #[arg(long)]
        to: SocketAddr,
        /// Bytes to send (suffixes K, M, G).
        #[arg(long, value_parser = parse_size, default_value = "16M")]
        bytes: u64,
        /// Seed of the pseudo-random stream.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Pace the transfer to this rate (megabits per second); unpaced by default.
        #[arg(long)]
        rate_mbps: Option<f64>,
        /// Give up connecting after this many seconds.
        #[arg(long, default_value_t = 10)]
        connect_timeout_s: u64,
        /// Fail if the connection makes no progress for this long (seconds).
        #[arg(long, default_value_t = 60)]
        idle_timeout_s: u64,
    },
}

const MAGIC: &[u8; 4] = b"SVXF";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 24;
const CHUNK: usize = 64 * 1024;

fn main() -> Result<()> {
    match Command::parse() {
        Command::Server {
            listen,
            connections,
            idle_timeout_s,
        } => server(listen, connections, Duration::from_secs(idle_timeout_s)),
        Command::Client {
            to,
            bytes,
            seed,
            rate_mbps,
            connect_timeout_s,
            idle_timeout_s,
        } => {
            if let Some(rate) = rate_mbps {
                if !(rate.is_finite() && rate > 0.0) {
                    bail!("--rate-mbps must be a positive number, got {rate}");
                }
            }
            let client = Client {
                to,
                bytes,
                seed,
                rate_mbps,
                connect_timeout: Duration::from_secs(connect_timeout_s),
                idle_timeout: Duration::from_secs(idle_timeout_s),
            };
            client.run()
        }
    }
}

/// Header: magic, version, 3 reserved bytes, seed, length (big-endian).
/// Trailer from the server: magic, status (0 = every byte matched), 3 reserved, count, hash.
fn encode(status_or_version: u8, a: u64, b: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4] = status_or_version;
    out[8..16].copy_from_slice(&a.to_be_bytes());
    out[16..24].copy_from_slice(&b.to_be_bytes());
    out
}

fn decode(buf: &[u8; HEADER_LEN]) -> Option<(u8, u64, u64)> {
    if !buf.starts_with(MAGIC) {
        return None;
    }
    let word = |at: usize| {
        buf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    };
    Some((buf[4], word(8)?, word(16)?))
}

fn server(listen: SocketAddr, connections: usize, idle: Duration) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    println!("skyvine-xfer server listening on {listen}");
    io::stdout().flush().context("writing to stdout")?;
    let failures = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let limit = if connections == 0 {
            usize::MAX
        } else {
            connections
        };
        for _ in 0..limit {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("xfer-server accept failed: {e}");
                    return connections;
                }
            };
            handles.push(scope.spawn(move || match receive(stream, idle) {
                Ok(line) => {
                    println!("xfer-server peer={peer} {line} ok");
                    0
                }
                Err(e) => {
                    println!("xfer-server peer={peer} FAILED: {e:#}");
                    1
                }
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(1))
            .sum::<usize>()
    });
    if failures > 0 {
        bail!("{failures} of {connections} transfers failed");
    }
    Ok(())
}

fn receive(mut stream: TcpStream, idle: Duration) -> Result<String> {
    stream
        .set_read_timeout(Some(idle))
        .context("setting read timeout")?;
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .context("reading the header")?;
    let Some((version, seed, length)) = decode(&header) else {
        bail!("not a skyvine-xfer header");
    };
    if version != VERSION {
        bail!("unsupported xfer version {version}");
    }
    let mut expected = ByteStream::new(seed);
    let mut hash = Fnv64::default();
    let mut buf = vec![0u8; CHUNK];
    let mut scratch = Vec::with_capacity(CHUNK);
    let mut received: u64 = 0;
    let mut first_mismatch: Option<u64> = None;
    while received < length {
        let want = usize::try_from((length - received).min(CHUNK as u64)).unwrap_or(CHUNK);
        let slot = buf.get_mut(..want).unwrap_or_default();
        let n = match stream.read(slot) {
            Ok(0) => bail!("short read: connection closed after {received} of {length} bytes"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("after {received} of {length} bytes")),
        };
        let data = slot.get(..n).unwrap_or_default();
        if let Some(at) = expected.check(data, &mut scratch) {
            first_mismatch.get_or_insert(received + at as u64);
        }
        hash.update(data);
        received += n as u64;
    }
    let status = u8::from(first_mismatch.is_some());
    stream
        .write_all(&encode(status, received, hash.finish()))
        .context("sending the result")?;
    stream.shutdown(Shutdown::Write).context("closing")?;
    if let Some(at) = first_mismatch {
        bail!(
            "bytes={received} fnv64={:016x}: first wrong byte at offset {at}",
            hash.finish()
        );
    }
    Ok(format!(
        "bytes={received} fnv64={:016x} seed={seed}",
        hash.finish()
    ))
}

struct Client {
    to: SocketAddr,
    bytes: u64,
    seed: u64,
    rate_mbps: Option<f64>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Client {
    fn run(&self) -> Result<()> {
        let start = Instant::now();
        let mut stream = TcpStream::connect_timeout(&self.to, self.connect_timeout)
            .with_context(|| format!("connecting to {}", self.to))?;
        stream
            .set_write_timeout(Some(self.idle_timeout))
            .context("setting write timeout")?;
        stream
            .set_read_timeout(Some(self.idle_timeout))
            .context("setting read timeout")?;
        stream
            .write_all(&encode(VERSION, self.seed, self.bytes))
            .context("sending the header")?;
        let mut source = ByteStream::new(self.seed);
        let mut hash = Fnv64::default();
        let mut buf = vec![0u8; CHUNK];
        let mut sent: u64 = 0;
        while sent < self.bytes {
            let len = usize::try_from((self.bytes - sent).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = buf.get_mut(..len).unwrap_or_default();
            source.fill(chunk);
            hash.update(chunk);
            stream
                .write_all(chunk)
                .with_context(|| format!("sending after {sent} of {} bytes", self.bytes))?;
            sent += len as u64;
            if let Some(rate) = self.rate_mbps {
                let due = start + Duration::from_secs_f64(sent as f64 * 8.0 / (rate * 1e6));
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
        stream
            .shutdown(Shutdown::Write)
            .context("closing the send side")?;
        let mut trailer = [0u8; HEADER_LEN];
        stream
            .read_exact(&mut trailer)
            .context("reading the server's result (connection reset or closed early?)")?;
        let Some((status, count, server_hash)) = decode(&trailer) else {
            bail!("malformed result from the server");
        };
        let secs = start.elapsed().as_secs_f64();
        let line = format!(
            "bytes={sent} fnv64={:016x} seed={} server_bytes={count} server_fnv64={server_hash:016x} \
             seconds={secs:.3} mbps={:.1}",
            hash.finish(),
            self.seed,
            sent as f64 * 8.0 / secs.max(1e-9) / 1e6
        );
        if status != 0 || count != sent || server_hash != hash.finish() {
            bail!("xfer-client MISMATCH {line} status={status}");
        }
        println!("xfer-client {line} ok");
        Ok(())
    }
}
