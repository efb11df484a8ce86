//! Frames over quinn streams: a buffered reader that checks lengths before allocating, and
//! writers that send bulk bytes after their header without copying them.

use bytes::{Buf, Bytes, BytesMut};
use quicswarm_proto::codec::{self, DecodeError};
use serde::{de::DeserializeOwned, Serialize};

use quicswarm_proto::ErrorCode;

use crate::transport::{RecvStream, SendStream};

/// Most bytes taken from quinn per read of raw sink data.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks taken from quinn per read of a large run (each at most one packet's payload, so
/// this also bounds what one read can make us buffer).
const CHUNKS_PER_READ: usize = 32;
/// Read many chunks at once when this much room has been reserved for a pending run.
const READ_MANY_ABOVE: usize = 16 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error(transparent)]
    Read(#[from] crate::transport::ReadError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("stream ended inside a frame")]
    Truncated,
}

impl FrameError {
    /// The code to reset or stop the stream with.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::Decode(DecodeError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
            Self::Read(_) => ErrorCode::Cancelled,
            _ => ErrorCode::Protocol,
        }
    }
}

impl From<FrameError> for crate::CallError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Read(e) => e.into(),
            FrameError::Decode(e) => e.into(),
            FrameError::Truncated => Self::Protocol("stream ended inside a frame".into()),
        }
    }
}

/// Reads frames and raw byte runs from one QUIC receive stream.
#[derive(Debug)]
pub(crate) struct FrameReader {
    recv: RecvStream,
    buf: BytesMut,
    max_frame: usize,
    eof: bool,
    /// Reused across reads of large runs.
    chunks: Option<Box<[Bytes; CHUNKS_PER_READ]>>,
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        // quinn sends STOP_SENDING for a receive stream dropped before its end was seen. The
        // peer's FIN usually came with the last frame: look for it without waiting, so a
        // finished exchange costs no extra frame.
        if !self.eof && self.buf.is_empty() && self.recv.ended_now() {
            self.eof = true;
        }
    }
}

impl FrameReader {
    pub(crate) fn new(recv: RecvStream, max_frame: usize) -> Self {
        Self {
            recv,
            buf: BytesMut::new(),
            max_frame,
            eof: false,
            chunks: None,
        }
    }

    /// See [`RecvStream::set_stall_timeout`]: bounds every later read by the time it may go
    /// without progress.
    pub(crate) fn set_stall_timeout(&mut self, stall: Option<std::time::Duration>) {
        self.recv.set_stall_timeout(stall);
    }

    /// Pulls more data from quinn into the buffer; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, FrameError> {
        if self.eof {
            return Ok(false);
        }
        // quinn hands out one chunk per received STREAM frame (about a packet) and takes the
        // connection lock per call: big reads take many chunks at once. Small exchanges never
        // allocate the chunk array.
        let got = if self.buf.len() + READ_MANY_ABOVE > self.buf.capacity() {
            self.recv.read_chunk(READ_CHUNK).await?.map(|chunk| {
                self.buf.extend_from_slice(&chunk);
            })
        } else {
            let chunks = self.chunks.get_or_insert_with(Default::default);
            self.recv.read_chunks(&mut chunks[..]).await?.map(|n| {
                for chunk in &mut chunks[..n] {
                    self.buf.extend_from_slice(chunk);
                    *chunk = Bytes::new();
                }
            })
        };
        if got.is_none() {
            self.eof = true;
        }
        Ok(got.is_some())
    }

    /// The body length of the next frame, once its length prefix has arrived (checked against
    /// the limit); `None` if the stream ended cleanly first. Nothing of the body is awaited.
    pub(crate) async fn next_frame_len(&mut self) -> Result<Option<usize>, FrameError> {
        loop {
            if let Some((_, len)) = codec::frame_len(&self.buf, self.max_frame)? {
                return Ok(Some(len));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// The next frame, or `None` if the stream ended cleanly between frames.
    pub(crate) async fn read_frame<T: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<T>, FrameError> {
        loop {
            if let Some((header, len)) = codec::frame_len(&self.buf, self.max_frame)? {
                if self.buf.len() >= header + len {
                    // Decoded in place, then skipped: `split_to` would make the buffer
                    // shared, an allocation per frame.
                    let frame = codec::decode_body(&self.buf[header..header + len]);
                    self.buf.advance(header + len);
                    return Ok(Some(frame?));
                }
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// The next frame; the stream ending first is an error.
    pub(crate) async fn expect_frame<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        self.read_frame().await?.ok_or(FrameError::Truncated)
    }

    /// Exactly `len` raw bytes. The caller has checked `len` against its limit.
    pub(crate) async fn read_bytes(&mut self, len: usize) -> Result<Bytes, FrameError> {
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
        }
        while self.buf.len() < len {
            if !self.fill().await? {
                return Err(FrameError::Truncated);
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// Fills `out` with the next `out.len()` raw bytes: what is buffered first, then each
    /// chunk quinn hands out copied straight into place (one copy, into memory the caller
    /// chose: a reused, page-aligned buffer for a piece of a big file).
    pub(crate) async fn read_into(&mut self, out: &mut [u8]) -> Result<(), FrameError> {
        let mut filled = self.buf.len().min(out.len());
        out[..filled].copy_from_slice(&self.buf[..filled]);
        self.buf.advance(filled);
        while filled < out.len() {
            if self.eof {
                return Err(FrameError::Truncated);
            }
            let chunks = self.chunks.get_or_insert_with(Default::default);
            let Some(n) = self.recv.read_chunks(&mut chunks[..]).await? else {
                self.eof = true;
                return Err(FrameError::Truncated);
            };
            for chunk in &mut chunks[..n] {
                let chunk = std::mem::take(chunk);
                let fit = chunk.len().min(out.len() - filled);
                out[filled..filled + fit].copy_from_slice(&chunk[..fit]);
                filled += fit;
                // Past the run: the next frame's bytes, kept for the next read.
                self.buf.extend_from_slice(&chunk[fit..]);
            }
        }
        Ok(())
    }

    /// The next run of raw bytes up to the end of the stream (buffered bytes first).
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, FrameError> {
        if !self.buf.is_empty() {
            return Ok(Some(self.buf.split().freeze()));
        }
        if self.eof {
            return Ok(None);
        }
        match self.recv.read_chunk(READ_CHUNK).await? {
            Some(chunk) => Ok(Some(chunk)),
            None => {
                self.eof = true;
                Ok(None)
            }
        }
    }

    /// Whether the stream arrived as 0-RTT early data.
    pub(crate) fn is_0rtt(&self) -> bool {
        self.recv.is_0rtt()
    }

    /// Tells the peer to stop sending (`STOP_SENDING` with `code`).
    pub(crate) fn stop(&mut self, code: ErrorCode) {
        // Already finished or reset: nothing to stop.
        self.recv.stop(code);
    }
}

/// Encodes `msg` as a frame into a fresh buffer.
pub(crate) fn frame<T: Serialize>(msg: &T) -> Bytes {
    // postcard cannot fail on our message types: they hold no maps or unsized sequences.
    codec::encode_to_vec(msg)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Appends `msg` as a frame to `buf`.
pub(crate) fn frame_into<T: Serialize>(msg: &T, buf: &mut Vec<u8>) {
    // As in `frame`: cannot fail for our message types.
    let _ = codec::encode(msg, buf);
}

/// A message written as a frame on a stream. One that carries an error reply says so, and
/// the stream notes its code ([`SendStream::answered_error`]): every error answer is then
/// counted by the gateway's metrics, whichever step wrote it.
pub(crate) trait Frame: Serialize {
    /// The error code this message answers with, if it is an error reply.
    fn error_code(&self) -> Option<ErrorCode> {
        None
    }
}

/// Writes one frame.
pub(crate) async fn write_frame<T: Frame>(
    send: &mut SendStream,
    msg: &T,
) -> Result<(), crate::transport::WriteError> {
    if let Some(code) = msg.error_code() {
        send.note_error(code);
    }
    send.write_chunk(frame(msg)).await
}

/// Writes a header frame followed by raw bytes, without copying the bytes.
pub(crate) async fn write_frame_and_bytes<T: Frame>(
    send: &mut SendStream,
    msg: &T,
    body: Bytes,
) -> Result<(), crate::transport::WriteError> {
    if let Some(code) = msg.error_code() {
        send.note_error(code);
    }
    send.write_all_chunks(&mut [frame(msg), body]).await
}

impl Frame for quicswarm_proto::Response {
    fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Error(e) => Some(e.code),
            _ => None,
        }
    }
}

impl Frame for quicswarm_proto::StreamFrame {
    fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Error(e) => Some(e.code),
            _ => None,
        }
    }
}

impl Frame for quicswarm_proto::HelloReply {
    fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Welcome(_) => None,
        }
    }
}

impl Frame for quicswarm_proto::transfer::ListFrame {
    fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Error(e) => Some(e.code),
            _ => None,
        }
    }
}

// One file's failure (`FileFrame::Failed`) is that item's answer, not the operation's.
impl Frame for quicswarm_proto::transfer::FileFrame {}
impl Frame for quicswarm_proto::Hello {}
impl Frame for quicswarm_proto::Request {}
