//! What a sink subroutine receives (its buffer, streamed) and returns.

use bytes::Bytes;

use crate::io::{FrameError, FrameReader};

/// What a sink subroutine returns: an `i64`, or nothing (sent as 0).
pub trait SinkOutput {
    /// The value sent to the client.
    fn into_i64(self) -> i64;
}

impl SinkOutput for i64 {
    fn into_i64(self) -> i64 {
        self
    }
}

impl SinkOutput for () {
    fn into_i64(self) -> i64 {
        0
    }
}

/// The buffer a sink subroutine receives, streamed: it need not fit in memory or in one frame.
#[derive(Debug)]
pub struct SinkData {
    reader: FrameReader,
    declared_len: Option<u64>,
    received: u64,
    limit: u64,
}

impl SinkData {
    pub(crate) fn new(reader: FrameReader, declared_len: Option<u64>, limit: u64) -> Self {
        Self {
            reader,
            declared_len,
            received: 0,
            limit,
        }
    }

    /// The length the client announced, if it knew it.
    pub fn declared_len(&self) -> Option<u64> {
        self.declared_len
    }

    /// The next piece of the buffer, `None` at its end.
    ///
    /// # Errors
    /// If the client vanished or cancelled, or sent more (or less) than it announced.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SinkError> {
        match self.reader.next_chunk().await {
            Ok(Some(chunk)) => {
                self.received += chunk.len() as u64;
                if self.declared_len.is_some_and(|len| self.received > len) {
                    return Err(SinkError("more bytes than announced".into()));
                }
                Ok(Some(chunk))
            }
            Ok(None) => match self.declared_len {
                Some(len) if len != self.received => Err(SinkError(format!(
                    "buffer ended after {} of {len} announced bytes",
                    self.received
                ))),
                _ => Ok(None),
            },
            Err(FrameError::Read(crate::transport::ReadError::Stalled(_))) => Err(SinkError(
                "the client sent nothing for the gateway's stall timeout".into(),
            )),
            Err(FrameError::Read(e)) => Err(SinkError(format!("client stopped sending: {e}"))),
            Err(e) => Err(SinkError(e.to_string())),
        }
    }

    /// The whole buffer in one piece, up to the gateway's `max_sink_len`.
    ///
    /// # Errors
    /// As [`chunk`](Self::chunk), or if the buffer exceeds the limit.
    pub async fn collect(mut self) -> Result<Bytes, SinkError> {
        let limit = self.limit;
        if self.declared_len.is_some_and(|len| len > limit) {
            return Err(SinkError(format!(
                "buffer exceeds the limit of {limit} bytes"
            )));
        }
        let mut out = bytes::BytesMut::with_capacity(self.declared_len.unwrap_or(0) as usize);
        while let Some(chunk) = self.chunk().await? {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(SinkError(format!(
                    "buffer exceeds the limit of {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}

/// Receiving a sink's buffer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("sink input: {0}")]
pub struct SinkError(String);
