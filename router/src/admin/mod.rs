//! The admin interface: a Unix socket answering the admin CLI (`skyvine tables`, `route`,
//! `peers`, `migrations`, `status`), and optional Prometheus metrics over HTTP.
//!
//! It changes the router's state only for planned-migration hints (`skyvine migration prepare`
//! and `cancel`, handed to the core through [`QueryHandle::command`]); every other answer is
//! copied out of the main loop through [`QueryHandle::ask`] ([`collect`]), then encoded
//! ([`api`]) or rendered for people ([`render`]). Failing to open the socket or the metrics port is logged and does not stop the
//! router: forwarding matters more than observing it.

pub mod api;
pub mod cli;
pub mod collect;
pub mod metrics;
pub mod render;
pub mod server;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::config::Config;
use crate::daemon::QueryHandle;

/// A background task of the admin interface.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the admin socket (and the metrics listener, if configured). The sockets are bound
/// here, so the returned tasks only serve; a socket that cannot be bound is logged at warn.
pub fn start(config: &Config, queries: QueryHandle) -> anyhow::Result<Vec<Task>> {
    let ctx = collect::Context {
        lan_interfaces: config
            .networks()
            .iter()
            .map(|n| (n.name.clone(), n.lan.interface.clone()))
            .collect(),
        peer_addresses: config
            .peers
            .iter()
            .filter_map(|p| p.address.map(|addr| (p.site.clone(), addr)))
            .collect(),
        peer_relays: config
            .peers
            .iter()
            .filter_map(|p| p.via.clone().map(|via| (p.site.clone(), via)))
            .collect(),
    };
    let mut tasks: Vec<Task> = Vec::new();
    let path = config.admin.socket.clone();
    match server::bind(&path) {
        Ok(listener) => {
            let server = server::Server {
                queries: queries.clone(),
                ctx: Arc::new(ctx),
            };
            tasks.push(Box::pin(server.serve(listener, path)));
        }
        Err(error) => {
            tracing::warn!(
                socket = %path.display(),
                error = format!("{error:#}"),
                "no admin socket: `skyvine status` and the other admin commands cannot reach this router"
            );
        }
    }
    if let Some(addr) = config.admin.metrics {
        let bound = std::net::TcpListener::bind(addr)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .with_context(|| format!("binding the metrics address {addr}"));
        match bound {
            Ok(listener) => {
                let exporter = metrics::Exporter {
                    queries,
                    stats: Arc::new(Mutex::new(metrics::MigrationStats::default())),
                };
                tasks.push(Box::pin(exporter.clone().serve(listener)));
                tasks.push(Box::pin(exporter.poll()));
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "no metrics");
            }
        }
    }
    Ok(tasks)
}
