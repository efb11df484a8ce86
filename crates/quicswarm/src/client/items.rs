//! The client's side of a stream subscription: items in order, or routed from per-item
//! streams and datagrams for latest and datagram delivery.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::Stream;
use quicswarm_proto::{ErrorCode, StreamFrame};

use super::ClientInner;
use crate::{error::CallError, io::FrameReader, subscribe::RoutedState};

/// How [`Client::stream_with`](super::Client::stream_with) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOutcome {
    /// Items received.
    pub items: u64,
    /// `true` for a natural end, `false` when the callback aborted.
    pub completed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    Ended,
    Failed,
}

/// Items of a stream subscription, in order.
///
/// # Drop behavior
/// Dropping an unfinished `ItemStream` aborts the subscription: the gateway is told to stop
/// (`STOP_SENDING` with `Cancelled`) and drops the producer before it yields another item.
///
/// # Cancel safety
/// [`next`](Self::next) is not cancel-safe: if its future is dropped part-way, the stream's
/// framing is lost; drop the whole `ItemStream` instead.
pub struct ItemStream {
    reader: FrameReader,
    max_item: usize,
    state: StreamState,
    /// Set for `Latest` and `Datagram` deliveries.
    routed: Option<RoutedState>,
    /// An item whose header was read and whose bytes have not all arrived: kept here so that
    /// a `next` dropped while waiting for them loses nothing.
    pending: Option<(i64, usize)>,
    _client: Arc<ClientInner>,
}

impl std::fmt::Debug for ItemStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStream")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ItemStream {
    /// The items of an accepted subscription, read from `reader` (and from `routed`'s
    /// per-item streams or datagrams).
    pub(super) fn new(
        reader: FrameReader,
        max_item: usize,
        routed: Option<RoutedState>,
        client: Arc<ClientInner>,
    ) -> Self {
        Self {
            reader,
            max_item,
            state: StreamState::Open,
            routed,
            pending: None,
            _client: client,
        }
    }

    /// The next `(ident, bytes)` item; `None` once the producer ended naturally.
    ///
    /// # Cancel safety
    /// Cancel-safe: a `next` dropped before it completes (in `select!`, a timeout, polled
    /// once) loses no item; the next call carries on where it stood.
    ///
    /// # Errors
    /// The producer's failure or panic, a lost connection, or a protocol violation. After an
    /// error the stream is finished.
    pub async fn next(&mut self) -> Result<Option<(i64, Bytes)>, CallError> {
        if self.state != StreamState::Open {
            return Ok(None);
        }
        let result = self.read_item().await;
        match &result {
            Ok(None) => self.state = StreamState::Ended,
            Err(_) => self.state = StreamState::Failed,
            Ok(Some(_)) => {}
        }
        result
    }

    async fn read_item(&mut self) -> Result<Option<(i64, Bytes)>, CallError> {
        if let Some(routed) = &mut self.routed {
            if let Some(deadline) = routed.end_seen {
                // The end overtook items still on their way (they travel apart from it): hand
                // out what arrives until the deadline.
                while let Ok(Some(item)) = tokio::time::timeout_at(deadline, routed.rx.recv()).await
                {
                    if let Some(item) = routed.accept(item) {
                        return Ok(Some(item));
                    }
                }
                return Ok(None);
            }
            loop {
                // Items arrive beside the subscription's stream, which carries only its end.
                tokio::select! {
                    item = routed.rx.recv() => match item {
                        Some(item) => {
                            if let Some(item) = routed.accept(item) {
                                return Ok(Some(item));
                            }
                        }
                        None => return Err(CallError::Protocol("item router stopped".into())),
                    },
                    frame = self.reader.read_frame::<StreamFrame>() => match frame? {
                        Some(StreamFrame::End) => {
                            // Stragglers sent before the end get two round trips to arrive.
                            let grace = (self._client.conn.rtt() * 2).clamp(Duration::from_millis(10), Duration::from_millis(250));
                            routed.end_seen = Some(tokio::time::Instant::now() + grace);
                            return Box::pin(self.read_item()).await;
                        }
                        Some(StreamFrame::Error(reply)) => return Err(reply.into()),
                        Some(StreamFrame::Superseded { ident }) => routed.gateway_superseded(ident),
                        Some(StreamFrame::Item { .. }) => {
                            return Err(CallError::Protocol("inline item on a routed subscription".into()))
                        }
                        None => return Err(CallError::Protocol("stream ended without End".into())),
                    },
                }
            }
        }
        if let Some((ident, len)) = self.pending {
            let data = self.reader.read_bytes(len).await?;
            self.pending = None;
            return Ok(Some((ident, data)));
        }
        match self.reader.read_frame::<StreamFrame>().await? {
            Some(StreamFrame::Item { ident, len }) => {
                if len > self.max_item as u64 {
                    self.reader.stop(ErrorCode::FrameTooLarge);
                    return Err(CallError::TooLarge(format!(
                        "item of {len} bytes exceeds {}",
                        self.max_item
                    )));
                }
                // Cannot truncate: len <= max_item, a usize.
                self.pending = Some((ident, len as usize));
                let data = self.reader.read_bytes(len as usize).await?;
                self.pending = None;
                Ok(Some((ident, data)))
            }
            Some(StreamFrame::End) => Ok(None),
            Some(StreamFrame::Error(reply)) => Err(reply.into()),
            Some(StreamFrame::Superseded { .. }) => Err(CallError::Protocol(
                "superseded items on a reliable stream".into(),
            )),
            None => Err(CallError::Protocol("stream ended without End".into())),
        }
    }

    /// Items superseded so far (`Latest` delivery): cancelled in flight by a newer item, or
    /// arriving after a newer one.
    pub fn superseded(&self) -> u64 {
        self.routed.as_ref().map_or(0, |r| r.superseded)
    }

    /// Items dropped so far for being older than `max_age`.
    pub fn stale(&self) -> u64 {
        self.routed.as_ref().map_or(0, |r| r.stale)
    }

    /// Items rebuilt from recovery shards so far (`Fec` delivery): each would have waited a
    /// round trip for a repair on a stream.
    pub fn repaired(&self) -> u64 {
        self.fec().map_or(0, |f| f.repaired)
    }

    /// Items lost so far (`Fec` delivery): some of their shards came, too few to rebuild
    /// them. An item of which no shard came is not counted.
    pub fn lost(&self) -> u64 {
        self.fec().map_or(0, |f| f.lost)
    }

    fn fec(&self) -> Option<&crate::fec::Assembler> {
        self.routed.as_ref()?.fec.as_ref()
    }

    /// Whether the producer ended naturally (as opposed to still running, failed or aborted).
    pub fn is_complete(&self) -> bool {
        self.state == StreamState::Ended
    }

    /// Aborts the subscription now (same as dropping it).
    pub fn abort(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.state == StreamState::Open {
            self.reader.stop(ErrorCode::Cancelled);
            self.state = StreamState::Failed;
        }
    }

    /// The items as a `futures` [`Stream`]; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<(i64, Bytes), CallError>> + Send {
        futures_util::stream::unfold(self, |mut s| async move {
            match s.next().await {
                Ok(Some(item)) => Some((Ok(item), s)),
                Ok(None) => None,
                // `next` marks the stream failed, so the following poll ends it.
                Err(e) => Some((Err(e), s)),
            }
        })
    }
}

impl Drop for ItemStream {
    fn drop(&mut self) {
        self.stop();
    }
}
