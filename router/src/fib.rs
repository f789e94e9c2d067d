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
    pub fn new(snapshot: FibSnapshot) -> Self {
        Fib {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// The snapshot to use for the next batch of packets.
    pub fn load(&self) -> Arc<FibSnapshot> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Publishes a new snapshot.
    pub fn store(&self, snapshot: FibSnapshot) {
        let snapshot = Arc::new(snapshot);
        match self.current.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}
