//! The two halves of an operation stream over TCP, with QUIC's stop and reset semantics
//! carried by control messages.

use super::{Signals, TcpConnection};
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use quicswarm_proto::{tcp::Control, ErrorCode};
use tokio::sync::watch;

use crate::transport::{Disconnect, ReadError, WriteError};

/// One yamux stream shared by its two halves. futures' `split` would hide the stream, and
/// its state is what tells a reset from a clean end: yamux reads both as the end of the
/// stream, and our reset message travels on another stream, so it may come after.
#[derive(Debug, Clone)]
pub(super) struct Half(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    stream: Mutex<yamux::Stream>,
    /// Our side finished or reset its writes: from then on a closed stream is no evidence
    /// of the peer's reset.
    wrote_end: AtomicBool,
}

impl Half {
    pub(super) fn pair(stream: yamux::Stream) -> (Self, Self) {
        let half = Self(Arc::new(Shared {
            stream: Mutex::new(stream),
            wrote_end: AtomicBool::new(false),
        }));
        (half.clone(), half)
    }

    fn stream(&self) -> MutexGuard<'_, yamux::Stream> {
        // Never held across an await; a poisoned lock still guards a consistent stream.
        self.0.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer reset the stream (yamux's RST closes both directions; its FIN only the
    /// peer's), as far as the stream's state can tell: only while we still write. Once our
    /// side has finished, a reset and a FIN look alike and the reset message alone tells
    /// them apart; the replies read then are framed, so a cut one is still a typed error.
    fn reset_by_peer(&self) -> bool {
        !self.0.wrote_end.load(Ordering::Acquire) && self.stream().is_closed()
    }

    fn wrote_end(&self) {
        self.0.wrote_end.store(true, Ordering::Release);
    }
}

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.stream()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream()).poll_close(cx)
    }
}

/// How long a read that saw the peer's reset waits for the reset's message (and its code),
/// which left right before it on another stream.
const RESET_MESSAGE_WAIT: Duration = Duration::from_secs(1);

/// The sending half of a TCP operation stream.
#[derive(Debug)]
pub(crate) struct TcpSend {
    pub(super) conn: TcpConnection,
    pub(super) w: Option<Half>,
    /// Becomes true once `finish` has flushed the end of the stream.
    pub(super) finished: watch::Sender<bool>,
    pub(super) signals: Arc<Signals>,
}

impl TcpSend {
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), WriteError> {
        let mut stopped = self.signals.stopped.subscribe();
        if let Some(code) = *stopped.borrow() {
            return Err(WriteError::Stopped(code));
        }
        let Some(w) = self.w.as_mut() else {
            return Err(WriteError::ClosedStream);
        };
        // A write blocked on a full window must still see the peer's stop.
        tokio::select! {
            biased;
            written = w.write_all(data) => written.map_err(|_| self.conn.write_error()),
            code = stopped.wait_for(Option::is_some) => Err(match code.ok().and_then(|c| *c) {
                Some(code) => WriteError::Stopped(code),
                None => self.conn.write_error(),
            }),
        }
    }

    pub(crate) fn finish(&mut self) -> Result<(), WriteError> {
        let Some(mut w) = self.w.take() else {
            return Err(WriteError::ClosedStream);
        };
        w.wrote_end();
        let done = self.finished.clone();
        // quinn's finish does not wait; neither does this one (the FIN is flushed behind).
        tokio::spawn(async move {
            let _ = w.close().await;
            done.send_replace(true);
        });
        Ok(())
    }

    /// Abandons the stream: the peer's reads fail with `Reset(code)`.
    pub(crate) fn reset(&mut self, code: ErrorCode) -> Result<(), WriteError> {
        let Some(w) = self.w.take() else {
            return Err(WriteError::ClosedStream);
        };
        w.wrote_end();
        self.conn.signal(Control::Reset {
            stream: self.signals.id,
            code,
        });
        Ok(())
    }

    /// Resolves when the peer stopped the stream (`Some(code)`) or once a `finish` has
    /// flushed the end of the stream (`None`).
    pub(crate) async fn stopped(&self) -> Option<ErrorCode> {
        let mut finished = self.finished.subscribe();
        let mut stopped = self.signals.stopped.subscribe();
        tokio::select! {
            _ = finished.wait_for(|done| *done) => None,
            code = stopped.wait_for(Option::is_some) => code.ok().and_then(|c| *c),
        }
    }
}

/// The receiving half of a TCP operation stream.
#[derive(Debug)]
pub(crate) struct TcpRecv {
    pub(super) conn: TcpConnection,
    pub(super) r: Option<Half>,
    pub(super) eof: bool,
    pub(super) signals: Arc<Signals>,
    /// Reused across reads: each read takes what arrived off its front, so a block is
    /// allocated and zeroed once per [`READ_BLOCK`] received, not once per read.
    pub(super) buf: BytesMut,
}

/// Most bytes one read takes from yamux, and the size of the blocks reads are made into.
const READ_BLOCK: usize = 64 * 1024;
/// The least room a read is given (unless it asks for less): what is left of a block below
/// this is not used, so at most this much of each block is wasted.
const MIN_READ: usize = 4 * 1024;

impl Drop for TcpRecv {
    fn drop(&mut self) {
        // As quinn does for a receive stream dropped before its end: tell the sender (code 0)
        // so a writer blocked on a full window is released.
        if !self.eof {
            self.stop(ErrorCode::NoError);
        }
    }
}

impl TcpRecv {
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let mut reset = self.signals.reset.subscribe();
        let Some(r) = self.r.as_mut() else {
            return Err(ReadError::ClosedStream);
        };
        let want = max.clamp(1, READ_BLOCK);
        if self.buf.len() < want.min(MIN_READ) {
            // A new block once the old one is nearly all handed out.
            self.buf = BytesMut::zeroed(READ_BLOCK);
        }
        let room = want.min(self.buf.len());
        let buf = &mut self.buf[..room];
        let read = tokio::select! {
            biased;
            read = r.read(buf) => read,
            code = reset.wait_for(Option::is_some) => {
                let code = code.ok().and_then(|c| *c).unwrap_or(ErrorCode::NoError);
                return Err(ReadError::Reset(code));
            }
        };
        let reset_code = *reset.borrow();
        match read {
            // The end of the stream, unless the peer reset it (its message may still be on
            // its way; it was sent after the data, so it is here or close behind).
            Ok(0) => {
                if let Some(code) = reset_code {
                    return Err(ReadError::Reset(code));
                }
                // yamux ends every stream of a failed connection as if it had finished; the
                // driver records the failure as it happens, so check it (after letting the
                // driver run) to report a lost connection, not a short stream.
                tokio::task::yield_now().await;
                match self.conn.close_reason() {
                    Some(
                        why @ (Disconnect::Reset | Disconnect::TimedOut | Disconnect::Transport(_)),
                    ) => Err(ReadError::ConnectionLost(why)),
                    // The connection is up, the stream closed both ways while we write: the
                    // peer reset it, never a clean end. Its code is in the message.
                    None if r.reset_by_peer() => {
                        let code = tokio::time::timeout(
                            RESET_MESSAGE_WAIT,
                            reset.wait_for(Option::is_some),
                        )
                        .await
                        .ok()
                        .and_then(|c| c.ok().and_then(|c| *c));
                        Err(ReadError::Reset(code.unwrap_or(ErrorCode::Cancelled)))
                    }
                    // A finished stream, or an orderly close by the peer: the clean end.
                    _ => {
                        self.eof = true;
                        Ok(None)
                    }
                }
            }
            Ok(n) => Ok(Some(self.buf.split_to(n).freeze())),
            Err(_) => Err(ReadError::ConnectionLost(
                self.conn.close_reason().unwrap_or(Disconnect::Reset),
            )),
        }
    }

    /// Stops reading: the peer's writes fail with `Stopped(code)`; what still arrives is
    /// dropped.
    pub(crate) fn stop(&mut self, code: ErrorCode) {
        if self.r.take().is_some() {
            self.conn.signal(Control::Stop {
                stream: self.signals.id,
                code,
            });
        }
    }
}
