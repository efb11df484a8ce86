//! What one handler/client pair's operation tasks share: its connection, its pool slot, its
//! identity and its memory budget.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::state::State;
use crate::{
    budget::ConnectionBudget,
    transport::{Connection, SendStream},
};

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
    /// Replies finished but perhaps not yet acknowledged, newest last (see [`Pair::replied`]).
    pub(super) unacked: Mutex<VecDeque<SendStream>>,
    /// How many replies `unacked` keeps.
    pub(super) unacked_cap: usize,
}

impl Pair {
    /// A finished reply's stream: kept until the connection is closed by us, since closing it
    /// loses whatever is not yet acknowledged, and a close waits for these first
    /// ([`replies_acknowledged`](Self::replies_acknowledged)). Over TCP, where a kept yamux
    /// stream would count against the client's stream limit, this waits instead until the
    /// reply is handed to TCP (whose close sends what it holds).
    ///
    /// An operation used to wait for its reply's acknowledgement itself: a second wakeup of
    /// its task per call, and a task to spawn for calls that are otherwise done on their
    /// first poll. The newest `unacked_cap` (the operations a client may run at once) are
    /// kept: an older reply has had as many later ones sent behind it, and is acknowledged
    /// unless the link lost nearly everything (then the close loses it, as the link would).
    pub(super) async fn replied(&self, send: SendStream) {
        if self.conn.kind() == crate::TransportKind::Tcp {
            let _ = send.stopped().await;
            return;
        }
        let evicted = {
            let mut unacked = self.unacked.lock().unwrap_or_else(PoisonError::into_inner);
            unacked.push_back(send);
            if unacked.len() > self.unacked_cap {
                unacked.pop_front()
            } else {
                None
            }
        };
        // Dropped outside our lock: a QUIC stream's drop takes the connection's own.
        drop(evicted);
    }

    /// Waits until every reply kept by [`replied`](Self::replied) is acknowledged (or stopped,
    /// or its connection lost). Callers bound it with their grace period.
    pub(super) async fn replies_acknowledged(&self) {
        let streams: Vec<SendStream> = self
            .unacked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        futures_util::future::join_all(streams.iter().map(SendStream::stopped)).await;
    }

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
