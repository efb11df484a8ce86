//! The driver: one task owns the yamux connection, opens the streams asked for, hands out the
//! streams the peer opens, and reads and sends the control messages.

use super::{
    set_reason, Io, Reason, Registry, Signals, CLOSE_LINGER, KIND_BI, KIND_CLOSE, KIND_RESET,
    KIND_STOP, MAX_REASON,
};
use std::{
    collections::VecDeque,
    future::poll_fn,
    io,
    sync::{Arc, PoisonError, Weak},
    task::Poll,
};

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use quicswarm_proto::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::transport::Disconnect;

pub(super) enum Cmd {
    Open(oneshot::Sender<yamux::Stream>),
    /// A control message to send on a stream of its own.
    Control(Vec<u8>),
}

enum Pending {
    Open(oneshot::Sender<yamux::Stream>),
    Control(Vec<u8>),
}

/// Where the driver sends what arrives.
#[derive(Clone)]
pub(super) struct Routes {
    pub(super) accept: mpsc::Sender<(yamux::Stream, Arc<Signals>)>,
    pub(super) reason: Reason,
    pub(super) registry: Registry,
    /// Operation streams the peer may have open at once.
    pub(super) max_streams: usize,
}

/// Owns the yamux connection: opens streams asked for, hands out streams the peer opens,
/// and closes when asked or when every handle is gone.
pub(super) async fn drive(
    mut conn: yamux::Connection<Io>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    routes: Routes,
) {
    let reason = routes.reason.clone();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel::<()>();
    let mut closing = false;
    let outcome = poll_fn(|cx| {
        if !closing {
            loop {
                match cmds.poll_recv(cx) {
                    Poll::Ready(Some(Cmd::Open(tx))) => pending.push_back(Pending::Open(tx)),
                    Poll::Ready(Some(Cmd::Control(msg))) => {
                        pending.push_back(Pending::Control(msg));
                    }
                    // Every handle is gone: nobody can use the connection any more.
                    Poll::Ready(None) => {
                        set_reason(&reason, Disconnect::Local);
                        closing = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if shutdown_rx.poll_recv(cx).is_ready() {
                closing = true;
            }
        }
        if closing {
            return conn.poll_close(cx);
        }
        while !pending.is_empty() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => match pending.pop_front() {
                    Some(Pending::Open(tx)) => {
                        // The opener may have given up meanwhile: the stream is dropped.
                        let _ = tx.send(stream);
                    }
                    Some(Pending::Control(msg)) => {
                        tokio::spawn(send_control(stream, msg, shutdown_tx.clone()));
                    }
                    None => {}
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    tokio::spawn(classify(stream, routes.clone(), shutdown_tx.clone()));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    let why = match outcome {
        // The peer hung up without a close message (or after ours).
        Ok(()) => Disconnect::Reset,
        Err(yamux::ConnectionError::Io(e)) => io_reason(&e),
        Err(_) => Disconnect::Reset,
    };
    set_reason(&reason, why);
}

/// What an I/O error on the connection means: a timeout, a TLS alert (the peer refused our
/// certificate, say: kept with its text, as QUIC reports it), or a reset.
fn io_reason(e: &io::Error) -> Disconnect {
    if e.kind() == io::ErrorKind::TimedOut {
        return Disconnect::TimedOut;
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Disconnect::Transport(format!("TLS: {tls}")),
        None => Disconnect::Reset,
    }
}

/// Writes a control message on its own stream. After a close message, waits a little for
/// the peer to hang up before closing the connection ourselves.
async fn send_control(
    mut stream: yamux::Stream,
    msg: Vec<u8>,
    shutdown: mpsc::UnboundedSender<()>,
) {
    let closing = msg.first() == Some(&KIND_CLOSE);
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let _ = stream.write_all(&msg).await;
        let _ = stream.close().await;
        if closing {
            // The peer closes the connection once it has read the message.
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        }
    })
    .await;
    if closing {
        let _ = shutdown.send(());
    }
}

/// A stop or reset message for stream `id`.
pub(super) fn stream_signal(kind: u8, id: u32, code: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(9);
    msg.push(kind);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&code.to_be_bytes());
    msg
}

/// Reads a new inbound stream's kind byte and routes it.
async fn classify(mut stream: yamux::Stream, routes: Routes, shutdown: mpsc::UnboundedSender<()>) {
    let mut kind = [0u8; 1];
    if stream.read_exact(&mut kind).await.is_err() {
        return;
    }
    let reason = &routes.reason;
    match kind[0] {
        KIND_BI => {
            let open = routes
                .registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            if open >= routes.max_streams {
                // Over the limit. QUIC would make the peer wait for a stream credit; yamux
                // cannot, so the stream is refused: dropping it resets it.
                return;
            }
            // Registered before it is accepted: a reset may come before the accept.
            let signals = Signals::register(&routes.registry, stream.id().val());
            // Full queue: the peer opens faster than the gateway accepts; it waits (yamux
            // bounds the streams it may open).
            let _ = routes.accept.send((stream, signals)).await;
        }
        kind @ (KIND_STOP | KIND_RESET) => {
            let mut msg = [0u8; 8];
            if stream.read_exact(&mut msg).await.is_err() {
                return;
            }
            let id = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
            let code = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
            let signals = routes
                .registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .and_then(Weak::upgrade);
            // Unknown: the stream is already gone here, nothing to tell.
            if let Some(signals) = signals {
                let target = if kind == KIND_STOP {
                    &signals.stopped
                } else {
                    &signals.reset
                };
                target.send_replace(Some(ErrorCode::from(code)));
            }
        }
        KIND_CLOSE => {
            let mut msg = Vec::new();
            let _ = (&mut stream)
                .take((4 + MAX_REASON) as u64)
                .read_to_end(&mut msg)
                .await;
            if msg.len() >= 4 {
                let code = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
                set_reason(
                    reason,
                    Disconnect::Closed {
                        code: ErrorCode::from(code),
                        reason: String::from_utf8_lossy(&msg[4..]).into_owned(),
                    },
                );
            }
            let _ = shutdown.send(());
        }
        // Not ours: dropping the stream resets it.
        _ => {}
    }
}
