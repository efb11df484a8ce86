//! What a stream subroutine is handed: its context, and (for a blocking one) the emitter its
//! items go through.

use std::{
    fmt::{self, Display},
    sync::Arc,
};

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::Failure;

/// Context handed to a stream subroutine.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StreamContext {
    /// When a client resumes a subscription, the last ident it already holds: the producer may
    /// continue after it.
    pub resume_after: Option<i64>,
}

/// Items a blocking producer may run ahead of its client. Handing them over one by one (a
/// queue of two) cost a thread switch per item; with room for a few dozen the producer runs
/// while the connection drains, and an abort still reaches it within this many items.
pub(super) const EMIT_QUEUE: usize = 64;

/// Bytes a blocking producer may run ahead of its client, whatever its items' size (a
/// peer's arguments may choose it): 64 items of 64 KiB on every stream of every client would
/// be gigabytes. An item larger than this waits until the queue is empty, then goes alone.
pub(super) const EMIT_BYTES: usize = 1 << 20;

/// A queued item and the share of [`EMIT_BYTES`] it holds until the client takes it.
pub(super) type Queued = Result<(i64, Bytes, Option<OwnedSemaphorePermit>), Failure>;

/// The sending side handed to a blocking stream subroutine.
#[derive(Debug)]
pub struct Emitter {
    pub(super) tx: mpsc::Sender<Queued>,
    pub(super) bytes: Arc<Semaphore>,
    pub(super) context: StreamContext,
}

/// The client has gone: a blocking producer should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted;

impl Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client aborted the stream")
    }
}

impl std::error::Error for Aborted {}

impl Emitter {
    /// Sends one item, waiting while the client is slower than the producer.
    ///
    /// # Errors
    /// [`Aborted`] once the client has aborted or vanished: stop producing and return.
    pub fn emit(&mut self, ident: i64, data: impl Into<Bytes>) -> Result<(), Aborted> {
        let data = data.into();
        // On a blocking thread: waiting for the client's side to take items is what it is for.
        let permit = tokio::runtime::Handle::current()
            .block_on(self.bytes.clone().acquire_many_owned(share(&data)))
            .map_err(|_| Aborted)?;
        self.tx
            .blocking_send(Ok((ident, data, Some(permit))))
            .map_err(|_| Aborted)
    }

    /// Sends one item if the queue has room now, without waiting; a full queue hands the
    /// item back (`Ok(Some(item))`), so the caller can let go of what it holds (a Python
    /// producer, its GIL) before it [`emit`](Self::emit)s it.
    ///
    /// # Errors
    /// [`Aborted`] once the client has aborted or vanished.
    pub fn try_emit(
        &mut self,
        ident: i64,
        data: impl Into<Bytes>,
    ) -> Result<Option<(i64, Bytes)>, Aborted> {
        let data = data.into();
        let permit = match self.bytes.clone().try_acquire_many_owned(share(&data)) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => return Ok(Some((ident, data))),
            Err(TryAcquireError::Closed) => return Err(Aborted),
        };
        match self.tx.try_send(Ok((ident, data, Some(permit)))) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(Ok((ident, data, _)))) => Ok(Some((ident, data))),
            Err(_) => Err(Aborted),
        }
    }

    /// The subscription's context.
    pub fn context(&self) -> &StreamContext {
        &self.context
    }
}

/// The share of [`EMIT_BYTES`] an item holds.
fn share(data: &Bytes) -> u32 {
    // At most all of it, so that an item larger than the budget still goes (alone).
    data.len().min(EMIT_BYTES) as u32
}
