//! What one handler/client pair's operation tasks share: its connection, its pool slot, its
//! identity and its memory budget.

use std::sync::{Mutex, PoisonError};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::state::State;
use crate::{budget::ConnectionBudget, transport::Connection};

/// Per-connection state shared by its operation tasks.
pub(super) struct Pair {
    pub(super) conn: Connection,
    pub(super) id: u64,
    /// The pool slot; taken (and so released) by `CloseHandler`.
    pub(super) permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// Cancelled when the client asked to close this handler.
    pub(super) closing: CancellationToken,
    /// This pair's operation tasks.
    pub(super) ops: TaskTracker,
    /// The client certificate's name (mutual TLS), `None` for an anonymous client.
    pub(super) identity: Option<String>,
    /// What this connection's operations may hold in memory.
    pub(super) budget: ConnectionBudget,
}

impl Pair {
    pub(super) fn release_slot(&self, shared: &State) {
        let permit = self
            .permit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if permit.is_some() {
            drop(permit);
            shared
                .counters
                .handlers
                .send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}
