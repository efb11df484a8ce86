//! The driver: one task owns the yamux connection, opens the streams asked for, hands out the
//! streams the peer opens, and reads and sends the control messages.

use super::{set_reason, Io, Reason, Registry, Signals, CLOSE_LINGER};
use std::{
    collections::VecDeque,
    future::poll_fn,
    io,
    sync::{Arc, PoisonError, Weak},
    task::Poll,
};

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use quicswarm_proto::tcp::{Control, ControlError, MAX_CONTROL_LEN, OPERATION};
use tokio::sync::{mpsc, oneshot};

use crate::transport::Disconnect;

pub(super) enum Cmd {
    Open(oneshot::Sender<yamux::Stream>),
    /// A control message to send on a stream of its own.
    Control(Control),
}

enum Pending {
    Open(oneshot::Sender<yamux::Stream>),
    Control(Control),
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
    msg: Control,
    shutdown: mpsc::UnboundedSender<()>,
) {
    let closing = msg.is_close();
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let _ = stream.write_all(&msg.encode()).await;
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

/// Reads a new inbound stream's kind byte and routes it: an operation to `accept_bi`, a
/// control message (see [`quicswarm_proto::tcp`]) to the stream or connection it names.
async fn classify(mut stream: yamux::Stream, routes: Routes, shutdown: mpsc::UnboundedSender<()>) {
    let mut kind = [0u8; 1];
    if stream.read_exact(&mut kind).await.is_err() {
        return;
    }
    if kind[0] == OPERATION {
        return route_operation(stream, &routes).await;
    }
    let mut msg = kind.to_vec();
    // Bounded: a control message is short, and a longer stream is malformed anyway.
    let _ = (&mut stream)
        .take(MAX_CONTROL_LEN as u64)
        .read_to_end(&mut msg)
        .await;
    match Control::decode(&msg) {
        Ok(Control::Close { code, reason }) => {
            let reason = String::from_utf8_lossy(&reason).into_owned();
            set_reason(&routes.reason, Disconnect::Closed { code, reason });
            let _ = shutdown.send(());
        }
        Ok(Control::Stop { stream, code }) => {
            if let Some(signals) = registered(&routes.registry, stream) {
                signals.stopped.send_replace(Some(code));
            }
        }
        Ok(Control::Reset { stream, code }) => {
            if let Some(signals) = registered(&routes.registry, stream) {
                signals.reset.send_replace(Some(code));
            }
        }
        // A kind from a later version: dropping the stream resets it.
        Err(e @ ControlError::UnknownKind(_)) => tracing::debug!(error = %e, "control stream"),
        // A malformed message is a protocol violation, as a malformed frame is in QUIC.
        Err(e) => {
            set_reason(&routes.reason, Disconnect::Transport(e.to_string()));
            let _ = shutdown.send(());
        }
    }
}

/// Hands an operation stream to `accept_bi`, or refuses it over the limit.
async fn route_operation(stream: yamux::Stream, routes: &Routes) {
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

/// The live stream `id`'s signals; none when it is already gone here (nothing to tell).
fn registered(registry: &Registry, id: u32) -> Option<Arc<Signals>> {
    registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .and_then(Weak::upgrade)
}
