//! The admin socket: a Unix stream socket answering JSON lines (see [`super::api`]).
//!
//! Only root (or the daemon's own user) may ask: the socket is mode 0600, and each connection's
//! peer credentials are checked again (SO_PEERCRED) in case the mode was loosened.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinSet;

use super::api::{MigrationsView, Reply, Request, Response, MAX_LINE};
use super::collect::{self, Context};
use crate::daemon::{select_network, QueryHandle};
use skyvine_core::networks::{NetworkNode, Networks};
use skyvine_core::node::{HintError, HintOutcome, Node};
use std::time::Instant;

/// Creates the socket: parent directory (0755) if missing, a stale socket file replaced, mode
/// 0600. A socket some other router still answers on is left alone (an error).
pub fn bind(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!("another router already answers on {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("checking {}", path.display())),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} mode 0600", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("making the admin socket non-blocking")?;
    Ok(listener)
}

/// Answers requests on the admin socket.
#[derive(Clone, Debug)]
pub struct Server {
    pub queries: QueryHandle,
    pub ctx: Arc<Context>,
}

/// Removes the socket file when the serving task ends (or is aborted at shutdown).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Best effort: the file may already be gone.
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Server {
    /// Accepts connections until aborted; each connection is served concurrently.
    pub async fn serve(self, listener: std::os::unix::net::UnixListener, path: PathBuf) {
        let _remove = RemoveOnDrop(path.clone());
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, socket = %path.display(), "admin socket unusable; the admin CLI cannot reach this router");
                return;
            }
        };
        tracing::info!(socket = %path.display(), "admin socket listening");
        // Dropping the set (when this task is aborted) aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    connections.spawn(self.clone().connection(stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            while connections.try_join_next().is_some() {}
        }
    }

    async fn connection(self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        match read.as_ref().peer_cred() {
            Ok(cred) if allowed(cred.uid()) => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "admin connection from a non-root user refused");
                let refusal =
                    Response::Error("permission denied: the admin socket answers root only".into());
                let _ = write.write_all(&encode(&refusal)).await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read admin peer credentials; closing");
                return;
            }
        }
        let mut reader = BufReader::new(read);
        loop {
            let mut line = Vec::new();
            let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
            match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "admin connection read failed");
                    return;
                }
            }
            if !line.ends_with(b"\n") && line.len() >= MAX_LINE {
                let error =
                    Response::Error(format!("request longer than {MAX_LINE} bytes; closing"));
                let _ = write.write_all(&encode(&error)).await;
                return;
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let response = self.handle_line(&line).await;
            if write.write_all(&encode(&response)).await.is_err() {
                return;
            }
        }
    }

    /// Parses one request line and answers it; malformed requests get an error response.
    pub async fn handle_line(&self, line: &[u8]) -> Response {
        match parse(line) {
            Ok(request) => {
                tracing::debug!(?request, "admin request");
                self.answer(request).await
            }
            Err(error) => Response::Error(error),
        }
    }

    async fn answer(&self, request: Request) -> Response {
        let ctx = Arc::clone(&self.ctx);
        let reply = match request {
            Request::Status { network } => {
                let ip_forward = crate::kernel::check_forwarding().ok();
                self.queries
                    .ask(move |networks, _, now| {
                        let chosen = match network {
                            Some(name) => select_network(networks, Some(&name))?,
                            None => networks
                                .iter()
                                .next()
                                .ok_or_else(|| "no network".to_owned())?,
                        };
                        let mut view =
                            collect::status((&chosen.name, &chosen.node), &ctx, ip_forward, now);
                        view.networks = networks.iter().map(|n| n.name.clone()).collect();
                        Ok(Reply::Status(view))
                    })
                    .await
            }
            Request::Tables { table, network } => {
                self.queries
                    .ask_network(network, move |n, _, now| {
                        let mut view = collect::tables(&n.node, table, now);
                        view.network.clone_from(&n.name);
                        Reply::Tables(view)
                    })
                    .await
            }
            Request::Route { address, network } => {
                self.queries
                    .ask_network(network, move |n, _, now| {
                        let mut view = collect::route(&n.node, address, now);
                        view.network.clone_from(&n.name);
                        Reply::Route(view)
                    })
                    .await
            }
            Request::Peers { network } => {
                self.queries
                    .ask(move |networks, shared, now| {
                        let chosen = chosen(networks, network.as_deref())?;
                        let me = networks
                            .first()
                            .map(|n| n.me().clone())
                            .ok_or_else(|| "no network".to_owned())?;
                        let mut view = collect::peers(&me, chosen.into_iter(), shared, &ctx, now);
                        // Control messages for a network the peer does not share.
                        for (reason, n) in crate::admin::metrics::control_drops(networks) {
                            view.drops.insert(format!("control_{reason}"), n);
                        }
                        Ok(Reply::Peers(view))
                    })
                    .await
            }
            Request::Migrations { network } => {
                self.queries
                    .ask(move |networks, _, now| {
                        let chosen = chosen(networks, network.as_deref())?;
                        let mut all: Option<MigrationsView> = None;
                        for n in chosen {
                            let mut view = collect::migrations(&n.node, now);
                            for row in &mut view.migrations {
                                row.network.clone_from(&n.name);
                            }
                            for row in &mut view.prepared {
                                row.network.clone_from(&n.name);
                            }
                            match &mut all {
                                None => all = Some(view),
                                Some(all) => {
                                    all.migrations.extend(view.migrations);
                                    all.prepared.extend(view.prepared);
                                }
                            }
                        }
                        all.map(Reply::Migrations)
                            .ok_or_else(|| "no network".to_owned())
                    })
                    .await
            }
            Request::Prepare {
                ip,
                mac,
                to,
                window_s,
                network,
            } => {
                let window = window_s.map(std::time::Duration::from_secs);
                tracing::info!(?ip, %mac, %to, ?window_s, ?network, "admin: migration prepare");
                return self
                    .hint(network, move |node, now| {
                        node.prepare(ip, mac, to, window, now)
                    })
                    .await;
            }
            Request::Cancel { ip, mac, network } => {
                tracing::info!(?ip, ?mac, ?network, "admin: migration cancel");
                return self
                    .hint(network, move |node, now| node.cancel_prepared(ip, mac, now))
                    .await;
            }
        };
        match reply {
            Some(Ok(reply)) => Response::Ok(Box::new(reply)),
            Some(Err(error)) => Response::Error(error),
            None => Response::Error("the router is shutting down".into()),
        }
    }
}

/// The network named `name`, or every network without a name.
fn chosen<'a>(networks: &'a Networks, name: Option<&str>) -> Result<Vec<&'a NetworkNode>, String> {
    match name {
        Some(name) => Ok(vec![select_network(networks, Some(name))?]),
        None => Ok(networks.iter().collect()),
    }
}

impl Server {
    /// Runs a hint command on the core of `network`; its refusal is the answer's error.
    async fn hint(
        &self,
        network: Option<String>,
        command: impl FnOnce(&mut Node, Instant) -> Result<HintOutcome, HintError> + Send + 'static,
    ) -> Response {
        let answer = self
            .queries
            .command(network, move |node, now| {
                command(node, now).map(|outcome| collect::hint(node, &outcome))
            })
            .await;
        match answer {
            Some(Ok(Ok(view))) => Response::Ok(Box::new(Reply::Hint(view))),
            Some(Ok(Err(error))) => Response::Error(error.to_string()),
            Some(Err(error)) => Response::Error(error),
            None => Response::Error("the router is shutting down".into()),
        }
    }
}

/// Root, or the user the daemon runs as (a non-root deployment with capabilities).
fn allowed(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Parses a request line; the error explains what is wrong.
pub fn parse(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line.trim_ascii())
        .map_err(|_| "bad request: not UTF-8 text".to_owned())?;
    serde_json::from_str(text).map_err(|error| {
        format!(
            "bad request: {error} (expected e.g. {{\"request\":\"status\"}}; requests: status, tables, route, peers, migrations, prepare, cancel)"
        )
    })
}

/// One response line.
pub fn encode(response: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|error| {
        format!("{{\"error\":\"cannot encode the response: {error}\"}}").into_bytes()
    });
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::TableName;

    #[test]
    fn requests_parse_from_json_lines() {
        assert_eq!(
            parse(b"{\"request\":\"status\"}\n"),
            Ok(Request::Status { network: None })
        );
        assert_eq!(
            parse(b" {\"request\":\"tables\",\"table\":\"gndt\"} "),
            Ok(Request::Tables {
                table: Some(TableName::Gndt),
                network: None,
            })
        );
        assert_eq!(
            parse(b"{\"request\":\"tables\"}"),
            Ok(Request::Tables {
                table: None,
                network: None
            })
        );
        assert_eq!(
            parse(b"{\"request\":\"route\",\"address\":\"10.77.1.1\"}"),
            Ok(Request::Route {
                address: "10.77.1.1".parse().unwrap(),
                network: None,
            })
        );
        assert_eq!(
            parse(b"{\"request\":\"tables\",\"network\":\"red\"}"),
            Ok(Request::Tables {
                table: None,
                network: Some("red".into())
            })
        );
        let line = serde_json::to_string(&Request::Peers { network: None }).unwrap();
        assert_eq!(line, "{\"request\":\"peers\"}");
    }

    #[test]
    fn bad_requests_are_explained() {
        let cases: [&[u8]; 6] = [
            b"garbage",
            b"\xff\xfe\x00",
            b"{\"request\":\"reboot\"}",
            b"{\"request\":\"route\",\"address\":\"10.77.1\"}",
            b"{\"request\":\"status\",\"extra\":1}",
            b"[1,2,3]",
        ];
        for case in cases {
            let error = parse(case).unwrap_err();
            assert!(error.starts_with("bad request: "), "{error}");
        }
        assert!(parse(b"{\"request\":\"reboot\"}")
            .unwrap_err()
            .contains("reboot"));
    }

    #[test]
    fn responses_are_single_lines() {
        let line = encode(&Response::Error("no\nnewline".into()));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.starts_with(b"{\"error\":"));
    }

    #[test]
    fn bind_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = std::env::temp_dir().join(format!("skyvine-admin-bind-{}", std::process::id()));
        let path = dir.join("sub/skyvine.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(bind(&path)
            .unwrap_err()
            .to_string()
            .contains("already answers"));
        drop(first);
        // The file is left behind by a dead listener: stale, replaced.
        let second = bind(&path).unwrap();
        drop(second);
        std::fs::write(dir.join("plain"), b"x").unwrap();
        assert!(bind(&dir.join("plain"))
            .unwrap_err()
            .to_string()
            .contains("not a socket"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
