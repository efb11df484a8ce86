//! Byte budgets: what a gateway's operations may hold in memory, per operation, per connection
//! and for the whole gateway.
//!
//! Every buffer a gateway fills because of a peer's request — a decoded request, file data
//! read ahead for a `Get`, the items of a `Put` waiting to be written — is *charged* before
//! it is allocated. A charge larger than the operation budget is refused at once (a typed
//! `LimitExceeded`); a smaller one waits until its connection and the gateway have that much
//! left, so a peer that asks for more than it reads slows itself down instead of growing the
//! gateway. Charges are released when the buffer is handed on (to the transport, whose own
//! windows bound what it holds, or to the disk).

use std::{sync::Arc, time::Duration};

use quicswarm_proto::{ErrorCode, ErrorReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::LimitHits;

/// The gateway-wide budget, from which each connection's is drawn.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    gateway: Arc<Semaphore>,
    per_operation: u64,
    per_connection: u64,
    /// How long a charge may wait for room before the operation gives up with `Timeout`.
    wait: Option<Duration>,
    /// Where refusals are counted.
    hits: LimitHits,
}

/// One connection's budget.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget {
    budget: Budget,
    connection: Arc<Semaphore>,
}

/// Bytes held; given back on drop.
#[derive(Debug)]
#[must_use = "the bytes are released when the charge is dropped"]
pub(crate) struct Charge {
    _connection: Option<OwnedSemaphorePermit>,
    _gateway: Option<OwnedSemaphorePermit>,
}

impl Budget {
    /// A gateway budget of `gateway` bytes; connections get `per_connection`, operations
    /// `per_operation` (each at most the one above it).
    pub(crate) fn new(
        gateway: u64,
        per_connection: u64,
        per_operation: u64,
        wait: Option<Duration>,
        hits: LimitHits,
    ) -> Self {
        let gateway = permits(gateway).max(1);
        let per_connection = per_connection.clamp(1, gateway as u64);
        Self {
            gateway: Arc::new(Semaphore::new(gateway)),
            per_operation: per_operation.clamp(1, per_connection),
            per_connection,
            wait,
            hits,
        }
    }

    /// The budget of a new connection.
    pub(crate) fn connection(&self) -> ConnectionBudget {
        ConnectionBudget {
            connection: Arc::new(Semaphore::new(permits(self.per_connection))),
            budget: self.clone(),
        }
    }

    /// Bytes free in the gateway-wide budget now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.gateway.available_permits()
    }
}

impl ConnectionBudget {
    /// The most one operation may hold at once.
    pub(crate) fn per_operation(&self) -> u64 {
        self.budget.per_operation
    }

    /// Charges `bytes` for `what`, waiting for room.
    ///
    /// # Errors
    /// `LimitExceeded` (naming `what`) for more than an operation may hold; `Timeout` when no
    /// room came within the wait.
    pub(crate) async fn charge(&self, what: &str, bytes: u64) -> Result<Charge, ErrorReply> {
        let max = self.budget.per_operation;
        if bytes > max {
            self.budget.hits.hit("operation_budget");
            return Err(ErrorReply::new(
                ErrorCode::LimitExceeded,
                format!("{what}: {bytes} bytes is over the operation budget of {max} bytes"),
            ));
        }
        if bytes == 0 {
            return Ok(Charge {
                _connection: None,
                _gateway: None,
            });
        }
        // Cannot fail: `bytes <= per_operation`, far below u32::MAX permits by construction.
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let take = async {
            // Connection first, then gateway, always in that order: no two charges can each
            // hold what the other waits for at the same level.
            let connection = self.connection.clone().acquire_many_owned(n).await.ok()?;
            let gateway = self
                .budget
                .gateway
                .clone()
                .acquire_many_owned(n)
                .await
                .ok()?;
            Some(Charge {
                _connection: Some(connection),
                _gateway: Some(gateway),
            })
        };
        let taken = match self.budget.wait {
            Some(wait) => tokio::time::timeout(wait, take).await.ok().flatten(),
            None => take.await,
        };
        taken.ok_or_else(|| {
            // Waited the stall timeout for the connection's or the gateway's budget.
            self.budget.hits.hit("connection_budget");
            ErrorReply::new(
                ErrorCode::Timeout,
                format!("{what}: no room for {bytes} bytes in the gateway's memory budget in time"),
            )
        })
    }
}

/// `bytes` as semaphore permits (capped at what a semaphore holds).
fn permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_wait_for_room_and_refuse_more_than_an_operation_may_hold() {
        let hits = LimitHits::default();
        let budget = Budget::new(100, 60, 40, Some(Duration::from_millis(50)), hits.clone());
        let a = budget.connection();
        let b = budget.connection();
        let over = a.charge("test", 41).await.unwrap_err();
        assert_eq!(over.code, ErrorCode::LimitExceeded);
        assert!(over.message.contains("test") && over.message.contains("40"));

        let first = a.charge("test", 40).await.unwrap();
        // 20 left on connection a: 30 must wait, and times out.
        let waited = a.charge("test", 30).await.unwrap_err();
        assert_eq!(waited.code, ErrorCode::Timeout);
        // Connection b has its own 60, but the gateway only 60 left.
        let second = b.charge("test", 40).await.unwrap();
        assert_eq!(budget.available(), 20);
        assert_eq!(
            b.charge("test", 30).await.unwrap_err().code,
            ErrorCode::Timeout
        );
        drop(first);
        let third = b.charge("test", 20).await.unwrap();
        assert_eq!(budget.available(), 40);
        drop((second, third));
        assert_eq!(budget.available(), 100);
        assert!(a.charge("empty", 0).await.is_ok());
        // Each refusal is counted against the limit that refused it.
        assert_eq!(hits.count("operation_budget"), 1);
        assert_eq!(hits.count("connection_budget"), 2);
    }
}
