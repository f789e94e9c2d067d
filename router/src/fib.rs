//! Publishes the core's forwarding view ([`FibSnapshot`]) to the data plane.
//!
//! The control plane stores a new immutable snapshot whenever the GNDT or LNDT changes;
//! packet tasks load the current snapshot once per batch (an `Arc` clone) and never wait for
//! the control plane.

use std::sync::{Arc, RwLock};

use skyvine_core::fib::FibSnapshot;

/// The current snapshot, shared by the control plane (writer) and packet tasks (readers).
#[derive(Debug)]
pub struct Fib {
    current: RwLock<Arc<FibSnapshot>>,
}

impl Fib {
    pub fn new(snapshot: impl Into<Arc<FibSnapshot>>) -> Self {
        Fib {
            current: RwLock::new(snapshot.into()),
        }
    }

    /// The snapshot to use for the next batch of packets.
    pub fn load(&self) -> Arc<FibSnapshot> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Publishes a new snapshot. The old one is dropped here: packet tasks hold theirs only
    /// for a batch, so the core can reuse it for the next snapshot (see `FibWriter`).
    pub fn store(&self, snapshot: Arc<FibSnapshot>) {
        match self.current.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}
