//! The gateway side of one handler/client pair: the hello exchange, the pool slot, one task
//! per operation stream, and the close.

use std::sync::{atomic::Ordering, Arc, Mutex};

use quicswarm_proto::{ErrorCode, Hello, HelloReply, Welcome, PROTOCOL_VERSION};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error_span, info, warn, Instrument};

use super::{
    dispatch::operation,
    inline::{first_poll, Polled, Unsent},
    pair::Pair,
    state::State,
};
use crate::{
    io::{write_frame, FrameReader},
    transport::{Connection, SendStream},
};

/// Longest `Hello` accepted (its client name is free text).
const MAX_HELLO_LEN: usize = 4096;

/// How long operations still running on a connection whose client closed its handler may
/// finish before the gateway closes the connection.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn serve_connection(
    shared: Arc<State>,
    incoming: quinn::Incoming,
    handshake: OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    let accepted = match &shared.qlog {
        // Its own transport config, holding the connection's qlog file.
        Some(qlog) => {
            let mut config = shared.security().quic.clone();
            let mut transport = shared.transport.quinn();
            qlog.attach(&mut transport, "gateway", remote);
            config.transport = Arc::new(transport);
            incoming.accept_with(Arc::new(config))
        }
        None => incoming.accept(),
    };
    let connecting = match accepted {
        Ok(connecting) => connecting,
        Err(e) => {
            debug!(%remote, "refused: {e}");
            return;
        }
    };
    // Accept 0-RTT: requests may arrive as early data, and each operation checks whether its
    // request is replay-safe before running it (see `operation`).
    let conn = match connecting.into_0rtt() {
        Ok((conn, established)) => {
            // The handshake is still finishing: its permit is held until it has (or the
            // request-header timeout closes the connection), so the bound on handshakes in
            // progress holds for 0-RTT ones too.
            let (watched, timeout) = (conn.clone(), shared.policy.limits.request_header_timeout);
            let metrics = shared.metrics.clone();
            tokio::spawn(
                async move {
                    match tokio::time::timeout(timeout, established).await {
                        Ok(true) => metrics.handshake("established_0rtt"),
                        // The early data was refused: the handshake went on as a full one.
                        Ok(false) => metrics.handshake("established"),
                        Err(_) => {
                            debug!(%remote, "handshake not finished in time");
                            metrics.handshake("timeout");
                            metrics.limit_hit("request_header_timeout");
                            watched.close(
                                crate::transport::quic_code(ErrorCode::Timeout),
                                b"handshake too slow",
                            );
                        }
                    }
                    drop(handshake);
                }
                .in_current_span(),
            );
            conn
        }
        Err(connecting) => {
            let finished =
                tokio::time::timeout(shared.policy.limits.request_header_timeout, connecting);
            let conn = match finished.await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    debug!(%remote, "handshake failed: {e}");
                    shared.metrics.handshake("failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "handshake not finished in time");
                    shared.metrics.handshake("timeout");
                    shared.metrics.limit_hit("request_header_timeout");
                    return;
                }
            };
            shared.metrics.handshake("established");
            drop(handshake);
            conn
        }
    };
    serve_pair(shared, Connection::from(conn), remote).await;
}

/// Serves one TLS-over-TCP connection: the TLS handshake (bounded like a QUIC handshake by
/// the request-header timeout), then the same hello and operations as over QUIC.
pub(super) async fn serve_tcp(
    shared: Arc<State>,
    socket: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake: OwnedSemaphorePermit,
) {
    let Ok(remote) = socket.peer_addr() else {
        return;
    };
    let max_streams = shared.policy.limits.max_concurrent_ops as usize;
    let tls = crate::transport::tcp::accept(socket, acceptor, max_streams);
    let conn = match tokio::time::timeout(shared.policy.limits.request_header_timeout, tls).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(%remote, "TLS over TCP handshake failed: {e}");
            shared.metrics.handshake("failed");
            return;
        }
        Err(_) => {
            debug!(%remote, "TLS over TCP handshake timed out");
            shared.metrics.handshake("timeout");
            shared.metrics.limit_hit("request_header_timeout");
            return;
        }
    };
    shared.metrics.handshake("established");
    drop(handshake);
    serve_pair(shared, Connection::from(conn), remote).await;
}

async fn serve_pair(shared: Arc<State>, conn: Connection, remote: std::net::SocketAddr) {
    let Some(pair) = hello(&shared, conn).await else {
        return;
    };
    let client = pair.identity.as_deref().unwrap_or("anonymous");
    // Reported per client from now on, and its bytes counted when it ends.
    let _live = shared.metrics.live.track(&pair.conn, client);
    // Error-level spans: enabled whenever any line is, so every line of this handler (a
    // warning with `RUST_LOG=warn` too) carries its id, address and client identity.
    let span = error_span!("handler", id = pair.id, %remote, client);
    async {
        info!("handler started");
        // Made once, not per stream: each new one joins (and on drop leaves) its token's
        // waiter list under a lock, which cost every operation.
        let stopping = shared.lifecycle.stop_accepting.cancelled();
        let closing = pair.closing.cancelled();
        tokio::pin!(stopping, closing);
        let mut unsent = Unsent::new(&pair.conn);
        loop {
            let stream = tokio::select! {
                // In order: no random draw per stream, and a stop is seen first.
                biased;
                () = &mut stopping => break,
                () = &mut closing => break,
                stream = pair.conn.accept_bi() => stream,
            };
            match stream {
                Ok((send, recv)) => {
                    // Boxed: polled here first, then (if it has to wait) moved into a task
                    // without moving the future itself.
                    let op = Box::pin(operation(shared.clone(), pair.clone(), send, recv));
                    let span = error_span!("op", kind = tracing::field::Empty);
                    match first_poll(op.instrument(span)).await {
                        Polled::Done(written) => {
                            if unsent.add(written) {
                                unsent.turn(&pair.conn).await;
                            }
                        }
                        Polled::Pending(op) => {
                            pair.ops.spawn(op);
                        }
                    }
                }
                Err(e) => {
                    debug!("connection ended: {e}");
                    break;
                }
            }
        }
        pair.ops.close();
        // Every operation is done (or may run on after a close), and their replies
        // acknowledged: closing the connection loses what is not.
        let replied = || async {
            pair.ops.wait().await;
            pair.replies_acknowledged().await;
        };
        if pair.closing.is_cancelled() {
            // CloseHandler: the client is done with this connection. Let its last replies be
            // delivered (bounded), then close it: nothing more is accepted on it.
            let _ = tokio::time::timeout(CLOSE_GRACE, replied()).await;
            pair.conn
                .close(ErrorCode::HandlerClosed.to_u32(), b"handler closed");
        }
        // The slot is held until the connection is really gone (or released by CloseHandler).
        tokio::select! {
            _ = pair.conn.closed() => {}
            _ = shared.lifecycle.stop_accepting.cancelled() => {
                // Shutdown: in-flight operations finish (the gateway bounds this by its grace
                // period), then the client is told why the connection ends.
                tokio::select! {
                    () = replied() => {}
                    () = shared.lifecycle.force_close.cancelled() => {}
                }
                pair.conn.close(ErrorCode::ShuttingDown.to_u32(), b"gateway shutting down");
            }
        }
        pair.release_slot(&shared);
        info!("handler ended");
    }
    .instrument(span)
    .await;
}

/// The name in the client's certificate, if it presented one.
fn peer_name(conn: &Connection) -> Option<String> {
    let certs = conn.peer_certificates()?;
    certs.first().and_then(crate::tls::certificate_name)
}

/// Reads `Hello`, takes a pool slot and answers. `None` when the pair was refused.
async fn hello(shared: &Arc<State>, conn: Connection) -> Option<Arc<Pair>> {
    let timeout = shared.policy.limits.request_header_timeout;
    let exchange = async {
        let (mut send, recv) = conn.accept_bi().await.ok()?;
        // Before it holds a pool slot a connection may cost little: a hello is a few bytes.
        let mut reader = FrameReader::new(recv, MAX_HELLO_LEN);
        let hello: Hello = match reader.expect_frame().await {
            Ok(hello) => hello,
            Err(e) => {
                conn.close(e.code().to_u32(), b"bad hello");
                return None;
            }
        };
        Some((
            send_hello_reply(shared, &conn, &mut send, &hello).await,
            send,
        ))
    };
    let (outcome, mut send) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Some(v)) => v,
        Ok(None) => return None,
        Err(_) => {
            conn.close(ErrorCode::Timeout.to_u32(), b"no hello in time");
            return None;
        }
    };
    let _ = send.finish();
    match outcome {
        Ok(pair) => Some(pair),
        Err(code) => {
            // Let the client read the refusal and close first; bounded in case it vanished.
            let _ = tokio::time::timeout(
                timeout.min(std::time::Duration::from_secs(2)),
                conn.closed(),
            )
            .await;
            conn.close(code.to_u32(), code.reason().as_bytes());
            None
        }
    }
}

async fn send_hello_reply(
    shared: &Arc<State>,
    conn: &Connection,
    send: &mut SendStream,
    hello: &Hello,
) -> Result<Arc<Pair>, ErrorCode> {
    let refuse = |code: ErrorCode, message: String| HelloReply::Refused {
        code,
        pool_size: shared.admission.pool_size,
        message,
    };
    if hello.version != PROTOCOL_VERSION {
        let reply = refuse(
            ErrorCode::UnsupportedVersion,
            format!(
                "gateway speaks version {PROTOCOL_VERSION}, client {}",
                hello.version
            ),
        );
        let _ = write_frame(send, &reply).await;
        return Err(ErrorCode::UnsupportedVersion);
    }
    let permit = match shared.admission.pool.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            warn!(client = %hello.name, remote = %conn.remote_address(), "handler pool full");
            shared.metrics.limit_hit("pool_size");
            let reply = refuse(
                ErrorCode::PoolFull,
                format!("all {} handlers are in use", shared.admission.pool_size),
            );
            let _ = write_frame(send, &reply).await;
            return Err(ErrorCode::PoolFull);
        }
    };
    let pool_used = shared.admission.pool_size - shared.admission.pool.available_permits() as u32;
    shared.counters.handlers.send_modify(|n| *n += 1);
    let pair = Arc::new(Pair {
        conn: conn.clone(),
        id: shared
            .admission
            .next_handler_id
            .fetch_add(1, Ordering::Relaxed),
        permit: Mutex::new(Some(permit)),
        closing: CancellationToken::new(),
        ops: TaskTracker::new(),
        // Read after the hello: with 0-RTT the handshake (and so the certificate) may not
        // be complete before.
        identity: peer_name(conn),
        budget: shared.admission.budget.connection(),
        unacked: Mutex::new(std::collections::VecDeque::new()),
        unacked_cap: shared.policy.limits.max_concurrent_ops as usize,
    });
    let welcome = HelloReply::Welcome(Welcome {
        handler_id: pair.id,
        pool_used,
        pool_size: shared.admission.pool_size,
        max_frame_len: shared.policy.limits.max_frame_len as u64,
        subroutines: shared.policy.registry.list(),
    });
    if write_frame(send, &welcome).await.is_err() {
        pair.release_slot(shared);
        return Err(ErrorCode::Cancelled);
    }
    Ok(pair)
}
