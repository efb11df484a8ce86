//! What a stream subroutine is handed: its context, and (for a blocking one) the emitter its
//! items go through.

use std::fmt::{self, Display};

use bytes::Bytes;
use tokio::sync::mpsc;

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

/// The sending side handed to a blocking stream subroutine.
#[derive(Debug)]
pub struct Emitter {
    pub(super) tx: mpsc::Sender<Result<(i64, Bytes), Failure>>,
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
        self.tx
            .blocking_send(Ok((ident, data.into())))
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
        match self.tx.try_send(Ok((ident, data.into()))) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(Ok(item))) => Ok(Some(item)),
            Err(_) => Err(Aborted),
        }
    }

    /// The subscription's context.
    pub fn context(&self) -> &StreamContext {
        &self.context
    }
}
