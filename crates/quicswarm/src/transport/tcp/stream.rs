//! The two halves of an operation stream over TCP, with QUIC's stop and reset semantics
//! carried by control messages.

use super::{Signals, TcpConnection};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use quicswarm_proto::{tcp::Control, ErrorCode};
use tokio::sync::watch;

use crate::transport::{Disconnect, ReadError, WriteError};

/// The sending half of a TCP operation stream.
#[derive(Debug)]
pub(crate) struct TcpSend {
    pub(super) conn: TcpConnection,
    pub(super) w: Option<WriteHalf<yamux::Stream>>,
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
        if self.w.take().is_none() {
            return Err(WriteError::ClosedStream);
        }
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
    pub(super) r: Option<ReadHalf<yamux::Stream>>,
    pub(super) eof: bool,
    pub(super) signals: Arc<Signals>,
}

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
        let mut buf = BytesMut::zeroed(max.clamp(1, 64 * 1024));
        let read = tokio::select! {
            biased;
            read = r.read(&mut buf) => read,
            code = reset.wait_for(Option::is_some) => {
                let code = code.ok().and_then(|c| *c).unwrap_or(ErrorCode::NoError);
                return Err(ReadError::Reset(code));
            }
        };
        let reset_code = *reset.borrow();
        match read {
            // The end of the stream, unless the peer reset it (its message may still be on
            // its way; it was sent after the data, so it is here or close behind).
            Ok(0) => match reset_code {
                Some(code) => Err(ReadError::Reset(code)),
                None => {
                    // yamux ends every stream of a failed connection as if it had finished;
                    // the driver records the failure as it happens, so check it (after
                    // letting the driver run) to report a lost connection, not a short
                    // stream. An orderly close by the peer keeps the clean end.
                    tokio::task::yield_now().await;
                    match self.conn.close_reason() {
                        Some(
                            why @ (Disconnect::Reset
                            | Disconnect::TimedOut
                            | Disconnect::Transport(_)),
                        ) => Err(ReadError::ConnectionLost(why)),
                        _ => {
                            self.eof = true;
                            Ok(None)
                        }
                    }
                }
            },
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf.freeze()))
            }
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
