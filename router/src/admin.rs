//! The admin interface: a Unix socket answering the admin CLI, and Prometheus metrics.
//! (Being written; `start` is the daemon's entry point.)

use std::future::Future;
use std::pin::Pin;

use crate::config::Config;
use crate::daemon::QueryHandle;

/// A background task of the admin interface.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the admin socket (and the metrics listener, if configured).
pub fn start(_config: &Config, _queries: QueryHandle) -> anyhow::Result<Vec<Task>> {
    Ok(Vec::new())
}
