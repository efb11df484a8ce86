//! The gateway side of one handler/client pair: the hello exchange, the pool slot, and one
//! task per operation stream.

use std::sync::{atomic::Ordering, Arc, Mutex, PoisonError};

use crate::transport::{Connection, RecvStream, SendStream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use quicswarm_proto::{
    datagram, Delivery, ErrorCode, ErrorReply, Hello, HelloReply, LatestHeader, Request, Response,
    StreamFrame, SubroutineKind, Welcome, PROTOCOL_VERSION,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::{
    budget::{Charge, ConnectionBudget},
    files,
    gateway::Shared,
    io::{frame_into, varint, write_frame, write_frame_and_bytes, FrameReader},
    subroutine::{Failure, Handler, SinkData, StreamContext},
};

/// Items at least this large are written as their own chunk instead of being copied into the
/// batch buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// Flush the batch buffer once it holds this much.
const BATCH_FLUSH: usize = 64 * 1024;
/// `Latest` items on their way at once. With one, a frame waited for the previous one's
/// acknowledgement (its send time plus a round trip): 40 KB frames at 30 fps over a 20 ms,
/// 40 Mbit/s link got 18 fps. Two keep the link busy; newer items still replace waiting ones.
const LATEST_IN_FLIGHT: usize = 2;

/// Longest `Hello` accepted (its client name is free text).
const MAX_HELLO_LEN: usize = 4096;

/// How long operations still running on a connection whose client closed its handler may
/// finish before the gateway closes the connection.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Per-connection state shared by its operation tasks.
struct Pair {
    conn: Connection,
    id: u64,
    /// The pool slot; taken (and so released) by `CloseHandler`.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// Cancelled when the client asked to close this handler.
    closing: CancellationToken,
    /// This pair's operation tasks.
    ops: TaskTracker,
    /// The client certificate's name (mutual TLS), `None` for an anonymous client.
    identity: Option<String>,
    /// What this connection's operations may hold in memory.
    budget: ConnectionBudget,
}

impl Pair {
    fn release_slot(&self, shared: &Shared) {
        let permit = self
            .permit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if permit.is_some() {
            drop(permit);
            shared.handlers.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    handshake: OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
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
            let (watched, timeout) = (conn.clone(), shared.limits.request_header_timeout);
            tokio::spawn(async move {
                if tokio::time::timeout(timeout, established).await.is_err() {
                    debug!(%remote, "handshake not finished in time");
                    watched.close(varint(ErrorCode::Timeout), b"handshake too slow");
                }
                drop(handshake);
            });
            conn
        }
        Err(connecting) => {
            let finished = tokio::time::timeout(shared.limits.request_header_timeout, connecting);
            let conn = match finished.await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    debug!(%remote, "handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "handshake not finished in time");
                    return;
                }
            };
            drop(handshake);
            conn
        }
    };
    serve_pair(shared, Connection::from(conn), remote).await;
}

/// Serves one TLS-over-TCP connection: the TLS handshake (bounded like a QUIC handshake by
/// the request-header timeout), then the same hello and operations as over QUIC.
pub(crate) async fn serve_tcp(
    shared: Arc<Shared>,
    socket: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake: OwnedSemaphorePermit,
) {
    let Ok(remote) = socket.peer_addr() else {
        return;
    };
    let max_streams = shared.limits.max_concurrent_ops as usize;
    let tls = crate::transport::tcp::accept(socket, acceptor, max_streams);
    let conn = match tokio::time::timeout(shared.limits.request_header_timeout, tls).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(%remote, "TLS over TCP handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!(%remote, "TLS over TCP handshake timed out");
            return;
        }
    };
    drop(handshake);
    serve_pair(shared, Connection::from(conn), remote).await;
}

async fn serve_pair(shared: Arc<Shared>, conn: Connection, remote: std::net::SocketAddr) {
    let Some(pair) = hello(&shared, conn).await else {
        return;
    };
    let client = pair.identity.as_deref().unwrap_or("anonymous");
    let span = info_span!("handler", id = pair.id, %remote, client);
    async {
        info!("handler started");
        loop {
            let stream = tokio::select! {
                _ = shared.stop_accepting.cancelled() => break,
                _ = pair.closing.cancelled() => break,
                stream = pair.conn.accept_bi() => stream,
            };
            match stream {
                Ok((send, recv)) => {
                    let op = operation(shared.clone(), pair.clone(), send, recv);
                    pair.ops.spawn(op.instrument(tracing::Span::current()));
                }
                Err(e) => {
                    debug!("connection ended: {e}");
                    break;
                }
            }
        }
        pair.ops.close();
        if pair.closing.is_cancelled() {
            // CloseHandler: the client is done with this connection. Let its last replies be
            // delivered (bounded), then close it: nothing more is accepted on it.
            let _ = tokio::time::timeout(CLOSE_GRACE, pair.ops.wait()).await;
            pair.conn
                .close(ErrorCode::HandlerClosed.to_u32(), b"handler closed");
        }
        // The slot is held until the connection is really gone (or released by CloseHandler).
        tokio::select! {
            _ = pair.conn.closed() => {}
            _ = shared.stop_accepting.cancelled() => {
                // Shutdown: in-flight operations finish (the gateway bounds this by its grace
                // period), then the client is told why the connection ends.
                tokio::select! {
                    () = pair.ops.wait() => {}
                    () = shared.force_close.cancelled() => {}
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
async fn hello(shared: &Arc<Shared>, conn: Connection) -> Option<Arc<Pair>> {
    let timeout = shared.limits.request_header_timeout;
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
    shared: &Arc<Shared>,
    conn: &Connection,
    send: &mut SendStream,
    hello: &Hello,
) -> Result<Arc<Pair>, ErrorCode> {
    let refuse = |code: ErrorCode, message: String| HelloReply::Refused {
        code,
        pool_size: shared.pool_size,
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
    let permit = match shared.pool.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            warn!(client = %hello.name, remote = %conn.remote_address(), "handler pool full");
            let reply = refuse(
                ErrorCode::PoolFull,
                format!("all {} handlers are in use", shared.pool_size),
            );
            let _ = write_frame(send, &reply).await;
            return Err(ErrorCode::PoolFull);
        }
    };
    let pool_used = shared.pool_size - shared.pool.available_permits() as u32;
    shared.handlers.send_modify(|n| *n += 1);
    let pair = Arc::new(Pair {
        conn: conn.clone(),
        id: shared.next_handler_id.fetch_add(1, Ordering::Relaxed),
        permit: Mutex::new(Some(permit)),
        closing: CancellationToken::new(),
        ops: TaskTracker::new(),
        identity: peer_name(conn),
        budget: shared.budget.connection(),
    });
    let welcome = HelloReply::Welcome(Welcome {
        handler_id: pair.id,
        pool_used,
        pool_size: shared.pool_size,
        max_frame_len: shared.limits.max_frame_len as u64,
        subroutines: shared.registry.list(),
    });
    if write_frame(send, &welcome).await.is_err() {
        pair.release_slot(shared);
        return Err(ErrorCode::Cancelled);
    }
    Ok(pair)
}

/// One operation stream, from its request to its last frame.
async fn operation(
    shared: Arc<Shared>,
    pair: Arc<Pair>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    // A client that stops reading (or sending) mid-operation holds a task, buffers and a
    // stream: after this long without progress the operation ends with `Timeout`.
    send.set_stall_timeout(shared.limits.stall_timeout);
    recv.set_stall_timeout(shared.limits.stall_timeout);
    let mut reader = FrameReader::new(recv, shared.limits.max_frame_len);
    let (request, _request_charge) = match read_request(&shared, &pair, &mut reader).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(RequestError::Frame(e)) => {
            debug!("bad request frame: {e}");
            let code = e.code();
            reader.stop(code);
            let _ = write_frame(
                &mut send,
                &Response::Error(ErrorReply::new(code, e.to_string())),
            )
            .await;
            let _ = send.finish();
            return;
        }
        Err(RequestError::Refused(reply)) => {
            reader.stop(reply.code);
            let _ = write_frame(&mut send, &Response::Error(reply)).await;
            let _ = send.finish();
            return;
        }
        Err(RequestError::Timeout) => {
            reader.stop(ErrorCode::Timeout);
            let _ = send.reset(varint(ErrorCode::Timeout));
            return;
        }
    };
    if reader.is_0rtt() {
        if replay_safe(&shared, &request) {
            shared.early_served.fetch_add(1, Ordering::Relaxed);
        } else {
            // Early data can be replayed by an attacker: only idempotent requests run from it.
            shared.too_early.fetch_add(1, Ordering::Relaxed);
            debug!("request refused in 0-RTT: not replay-safe");
            reader.stop(ErrorCode::TooEarly);
            let reply = ErrorReply::new(
                ErrorCode::TooEarly,
                "not replay-safe: re-send after the handshake",
            );
            let _ = write_frame(&mut send, &Response::Error(reply)).await;
            let _ = send.finish();
            return;
        }
    }
    if let Err(reply) = permitted(&shared, pair.identity.as_deref(), &request) {
        warn!("denied: {}", reply.message);
        // Do not make the client upload what nobody will read.
        reader.stop(ErrorCode::PermissionDenied);
        let _ = write_frame(&mut send, &Response::Error(reply)).await;
        let _ = send.finish();
        return;
    }
    let result = match request {
        Request::Ping { nonce } => write_frame(&mut send, &Response::Pong { nonce })
            .await
            .map_err(drop),
        Request::Call {
            name,
            args,
            deadline_ms,
        } => match lookup(&shared, &name, SubroutineKind::Batch) {
            Ok(Handler::Batch(f)) => {
                let span = info_span!("call", %name);
                let outcome = within_deadline(deadline_ms, f(args).instrument(span)).await;
                reply_value(&mut send, outcome, &name).await
            }
            Ok(_) => unreachable_kind(&mut send).await,
            Err(reply) => write_error(&mut send, reply).await,
        },
        Request::Stream {
            name,
            args,
            resume_after,
            options,
        } => match lookup(&shared, &name, SubroutineKind::Stream) {
            Ok(Handler::Stream(f))
                if options.delivery != Delivery::Reliable
                    && pair.conn.kind() == crate::TransportKind::Tcp =>
            {
                drop(f);
                let reply = ErrorReply::new(
                    ErrorCode::Unsupported,
                    "latest-value and datagram delivery need QUIC; this client is on TCP",
                );
                write_error(&mut send, reply).await
            }
            Ok(Handler::Stream(f)) => {
                let producer = f(args, StreamContext { resume_after });
                send.set_priority(options.priority);
                // Boxed: keeps the common (small) operations' task small to spawn.
                match options.delivery {
                    Delivery::Reliable => Box::pin(run_stream(&mut send, producer, &name)).await,
                    Delivery::Latest { id } => {
                        let conn = &pair.conn;
                        let max_age = options
                            .max_age_ms
                            .map(|ms| std::time::Duration::from_millis(u64::from(ms)));
                        let p = (options.priority, max_age);
                        Box::pin(run_latest(conn, &mut send, producer, &name, id, p)).await
                    }
                    Delivery::Datagram { id } => {
                        Box::pin(run_datagram(&pair.conn, &mut send, producer, &name, id)).await
                    }
                }
            }
            Ok(_) => unreachable_kind(&mut send).await,
            Err(reply) => write_error(&mut send, reply).await,
        },
        Request::Send {
            name,
            args,
            len,
            deadline_ms,
        } => match lookup(&shared, &name, SubroutineKind::Sink) {
            Ok(Handler::Sink(f)) => {
                let data = SinkData::new(reader, len, shared.limits.max_sink_len);
                let span = info_span!("send", %name);
                let outcome = within_deadline(deadline_ms, f(args, data).instrument(span)).await;
                let reply = match outcome {
                    Ok(value) => Response::Count { value },
                    Err(failure) => Response::Error(log_failure(&name, failure)),
                };
                write_frame(&mut send, &reply).await.map_err(drop)
            }
            Ok(_) => unreachable_kind(&mut send).await,
            Err(reply) => {
                // Do not make the client upload a buffer nobody will read.
                let mut reader = reader;
                reader.stop(reply.code);
                write_error(&mut send, reply).await
            }
        },
        Request::List {
            root,
            selector,
            hash,
        } => {
            Box::pin(files::serve::list(
                serve_ctx(&shared, &pair),
                &mut send,
                root,
                selector,
                hash,
            ))
            .await
        }
        Request::Get { root, items } => {
            Box::pin(files::serve::get(
                serve_ctx(&shared, &pair),
                &mut send,
                root,
                items,
            ))
            .await
        }
        Request::PutCheck {
            dest,
            entries,
            range_size,
        } => {
            Box::pin(files::serve::put_check(
                serve_ctx(&shared, &pair),
                &mut send,
                dest,
                entries,
                range_size,
            ))
            .await
        }
        Request::Put {
            dest,
            items,
            range_size,
        } => {
            let mut reader = reader;
            Box::pin(files::serve::put(
                serve_ctx(&shared, &pair),
                &mut send,
                &mut reader,
                dest,
                items,
                range_size,
            ))
            .await
        }
        Request::CloseHandler => {
            // Free the slot before answering, so a client that reconnects right after its
            // close returns finds it free.
            pair.release_slot(&shared);
            pair.closing.cancel();
            write_frame(&mut send, &Response::Done).await.map_err(drop)
        }
        Request::CloseGateway => {
            // Allowed: `permitted` checked it.
            info!("close_gateway requested");
            // Not tracked by the gateway: shutdown waits for the tracked tasks. This
            // operation is still tracked by its pair, so its `Done` is delivered before the
            // connection is closed.
            let s = shared.clone();
            tokio::spawn(async move { s.shutdown(s.limits.shutdown_grace).await });
            write_frame(&mut send, &Response::Done).await.map_err(drop)
        }
    };
    if result.is_ok() && send.finish().is_ok() {
        // Hold the connection until the reply is acknowledged: if this were the last handle
        // (during shutdown), dropping it would close the connection and lose the reply.
        // Bounded by the connection: `stopped` fails when it is lost or times out.
        let _ = send.stopped().await;
    }
}

/// What a file operation of `pair` may use.
fn serve_ctx<'a>(shared: &'a Shared, pair: &'a Pair) -> files::serve::Serve<'a> {
    files::serve::Serve {
        files: &shared.files,
        budget: &pair.budget,
        max_items: shared.limits.request_items(),
    }
}

/// Why a request could not be read.
enum RequestError {
    Frame(crate::io::FrameError),
    Refused(ErrorReply),
    Timeout,
}

/// Reads an operation's request within the header timeout, its decoded size charged to the
/// connection's budget before the body is read: the decoders cap every sequence
/// ([`quicswarm_proto::limits`]), so a request decodes into at most its bytes plus
/// [`DECODED_PER_ELEMENT`] per element.
async fn read_request(
    shared: &Shared,
    pair: &Pair,
    reader: &mut FrameReader,
) -> Result<Option<(Request, Charge)>, RequestError> {
    let timeout = shared.limits.request_header_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let len = match tokio::time::timeout_at(deadline, reader.next_frame_len()).await {
        Ok(Ok(Some(len))) => len as u64,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(e)) => return Err(RequestError::Frame(e)),
        Err(_) => return Err(RequestError::Timeout),
    };
    let elements = len.min(quicswarm_proto::limits::MAX_SEQ_LEN as u64);
    let decoded = len + elements * DECODED_PER_ELEMENT;
    // Pings, calls and other small requests are bounded by the operations a client may run.
    let bytes = if len <= SMALL_REQUEST { 0 } else { decoded };
    let charge = pair
        .budget
        .charge("request", bytes)
        .await
        .map_err(RequestError::Refused)?;
    match tokio::time::timeout_at(deadline, reader.read_frame()).await {
        Ok(Ok(Some(request))) => Ok(Some((request, charge))),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(e)) => Err(RequestError::Frame(e)),
        Err(_) => Err(RequestError::Timeout),
    }
}

/// The most memory one element of a request's sequences decodes into beyond its bytes (a
/// `PutItem`: entry, range, hash and a path's `String`).
const DECODED_PER_ELEMENT: u64 = 160;
/// Requests up to this long are not charged.
const SMALL_REQUEST: u64 = 1024;

/// Checks `request` against the client's permissions. Done for every request, 0-RTT ones
/// included, so an identity downgraded since its session ticket was issued gets no more than
/// it has now.
fn permitted(shared: &Shared, identity: Option<&str>, request: &Request) -> Result<(), ErrorReply> {
    let p = shared.permissions_of(identity);
    let who = identity.map_or_else(
        || "an anonymous client".to_string(),
        |id| format!("client {id:?}"),
    );
    let denied = |what: String| {
        Err(ErrorReply::new(
            ErrorCode::PermissionDenied,
            format!("{who} may not {what}"),
        ))
    };
    match request {
        Request::Call { name, .. } | Request::Stream { name, .. } | Request::Send { name, .. }
            if !p.subroutines.allows(name) =>
        {
            denied(format!("call subroutine {name:?}"))
        }
        Request::List { root, .. } | Request::Get { root, .. } if !p.roots.allows(root) => {
            denied(format!("read root {root:?}"))
        }
        Request::PutCheck { .. } | Request::Put { .. } if !p.upload => {
            denied("upload files".into())
        }
        Request::CloseGateway if !p.close_gateway => {
            denied("close this gateway (close_gateway)".into())
        }
        _ => Ok(()),
    }
}

/// Whether `request` may run from 0-RTT early data, which an attacker can replay: reads
/// (`Ping`, `List`, `Get`) and subroutines registered as replay-safe.
fn replay_safe(shared: &Shared, request: &Request) -> bool {
    match request {
        Request::Ping { .. } | Request::List { .. } | Request::Get { .. } => true,
        Request::Call { name, .. } | Request::Stream { name, .. } => {
            shared.registry.get(name).is_some_and(|e| e.replay_safe)
        }
        _ => false,
    }
}

/// Runs a subroutine until the client's deadline: past it the subroutine's future is dropped
/// (cancelled; a blocking one finishes on its thread but its answer is dropped).
async fn within_deadline<T>(
    deadline_ms: Option<u32>,
    run: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match deadline_ms {
        None => run.await,
        Some(ms) => {
            let limit = std::time::Duration::from_millis(u64::from(ms));
            tokio::time::timeout(limit, run)
                .await
                .unwrap_or(Err(Failure::Timeout(limit)))
        }
    }
}

/// Finds `name` and checks its kind.
fn lookup(shared: &Shared, name: &str, kind: SubroutineKind) -> Result<Handler, ErrorReply> {
    match shared.registry.get(name) {
        None => Err(ErrorReply::new(
            ErrorCode::UnknownSubroutine,
            format!("no subroutine named {name:?}"),
        )),
        Some(entry) if entry.handler.kind() != kind => Err(ErrorReply::new(
            ErrorCode::WrongKind,
            format!(
                "{name:?} is a {:?} subroutine, not {kind:?}",
                entry.handler.kind()
            ),
        )),
        Some(entry) => Ok(entry.handler),
    }
}

async fn unreachable_kind(send: &mut SendStream) -> Result<(), ()> {
    // `lookup` checked the kind; kept as a typed error rather than a panic.
    write_error(send, ErrorReply::new(ErrorCode::Internal, "kind mismatch")).await
}

async fn write_error(send: &mut SendStream, reply: ErrorReply) -> Result<(), ()> {
    write_frame(send, &Response::Error(reply))
        .await
        .map_err(drop)
}

fn log_failure(name: &str, failure: Failure) -> ErrorReply {
    let reply = ErrorReply::from(failure);
    warn!(subroutine = name, code = %reply.code, "subroutine failed: {}", reply.message);
    reply
}

async fn reply_value(
    send: &mut SendStream,
    outcome: Result<Bytes, Failure>,
    name: &str,
) -> Result<(), ()> {
    match outcome {
        Ok(value) => write_frame_and_bytes(
            send,
            &Response::Value {
                len: value.len() as u64,
            },
            value,
        )
        .await
        .map_err(drop),
        Err(failure) => write_error(send, log_failure(name, failure)).await,
    }
}

/// Pumps a producer into the stream. Small items are batched into one write while the producer
/// has more ready; the producer is dropped as soon as the client stops the stream.
async fn run_stream(
    send: &mut SendStream,
    producer: Result<crate::subroutine::ItemStream, Failure>,
    name: &str,
) -> Result<(), ()> {
    let mut producer = match producer {
        Ok(p) => p,
        Err(failure) => return write_error(send, log_failure(name, failure)).await,
    };
    write_frame(send, &Response::Accepted).await.map_err(drop)?;
    // Grows to what the stream needs: a short stream never allocates the full flush size.
    let mut batch: Vec<u8> = Vec::new();
    loop {
        // Take what is ready without waiting; wait (watching for an abort) only when the batch
        // is empty, so nothing sits in the buffer while the producer idles.
        let next = match producer.next().now_or_never() {
            Some(next) => next,
            None => {
                if !batch.is_empty() {
                    send.write_chunk(take_batch(&mut batch))
                        .await
                        .map_err(drop)?;
                }
                tokio::select! {
                    next = producer.next() => next,
                    _ = send.stopped() => {
                        debug!(subroutine = name, "client aborted the stream");
                        return Err(());
                    }
                }
            }
        };
        let frame = match next {
            Some(Ok((ident, _))) if ident < 0 => StreamFrame::End,
            Some(Ok((ident, data))) => {
                frame_into(
                    &StreamFrame::Item {
                        ident,
                        len: data.len() as u64,
                    },
                    &mut batch,
                );
                if data.len() >= COPY_LIMIT {
                    let header = take_batch(&mut batch);
                    send.write_all_chunks(&mut [header, data])
                        .await
                        .map_err(drop)?;
                } else {
                    batch.extend_from_slice(&data);
                    if batch.len() >= BATCH_FLUSH {
                        send.write_chunk(take_batch(&mut batch))
                            .await
                            .map_err(drop)?;
                    }
                }
                continue;
            }
            Some(Err(failure)) => StreamFrame::Error(log_failure(name, failure)),
            None => StreamFrame::End,
        };
        drop(producer);
        frame_into(&frame, &mut batch);
        let last = if is_mostly_full(&batch) {
            Bytes::from(batch)
        } else {
            Bytes::copy_from_slice(&batch)
        };
        return send.write_chunk(last).await.map_err(drop);
    }
}

/// The batch's bytes, to send; `batch` is left empty (with its capacity) for the next one.
fn take_batch(batch: &mut Vec<u8>) -> Bytes {
    if is_mostly_full(batch) {
        let cap = batch.capacity();
        Bytes::from(std::mem::replace(batch, Vec::with_capacity(cap)))
    } else {
        let chunk = Bytes::copy_from_slice(batch);
        batch.clear();
        chunk
    }
}

/// The transport holds what it is given until the peer acknowledges it, so a batch that fills
/// little of its buffer is copied out rather than handed over: a few hundred bytes in flight
/// on a lossy link must not pin a 80 KiB allocation each.
fn is_mostly_full(batch: &Vec<u8>) -> bool {
    batch.len() * 2 >= batch.capacity()
}

/// Microseconds since the Unix epoch, for item timestamps.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The next item, or `None` when the client stopped the subscription.
async fn next_or_abort(
    producer: &mut crate::subroutine::ItemStream,
    send: &mut SendStream,
) -> Option<Option<Result<(i64, Bytes), Failure>>> {
    tokio::select! {
        next = producer.next() => Some(next),
        _ = send.stopped() => None,
    }
}

/// `Latest` delivery: each item on its own unidirectional stream, one in flight at a time.
/// While one is in flight, only the newest item waits; an older waiting item is superseded
/// (never sent) and the client is told. A slow link thus carries fresh items at its own pace
/// instead of a growing backlog.
///
/// The item *in flight* is cancelled for a newer one only once it is older than the
/// subscription's `max_age`: cancelling it whenever a newer one is ready would starve a link
/// slower than the item rate (measured with 40 KB frames at 200 fps over 2 MB/s: one frame in
/// a hundred got through), while letting a fresh one finish delivers the link's capacity in
/// fresh items.
async fn run_latest(
    conn: &Connection,
    send: &mut SendStream,
    producer: Result<crate::subroutine::ItemStream, Failure>,
    name: &str,
    id: u32,
    (priority, max_age): (i32, Option<std::time::Duration>),
) -> Result<(), ()> {
    let mut producer = match producer {
        Ok(p) => p,
        Err(failure) => return write_error(send, log_failure(name, failure)).await,
    };
    write_frame(send, &Response::Accepted).await.map_err(drop)?;
    // Items on their way: (ident, stream, sent at), oldest first.
    let mut in_flight: Vec<(i64, SendStream, std::time::Instant)> = Vec::new();
    let mut waiting: Option<(i64, Bytes)> = None;
    let mut end: Option<StreamFrame> = None;
    loop {
        // Too old to matter and a newer item waits: cancel the oldest one in flight.
        if let (Some(max), Some(_), Some((ident, s, sent_at))) =
            (max_age, &waiting, in_flight.first_mut())
        {
            if sent_at.elapsed() > max && s.reset(varint(ErrorCode::Superseded)).is_ok() {
                let frame = StreamFrame::Superseded { ident: *ident };
                in_flight.remove(0);
                write_frame(send, &frame).await.map_err(drop)?;
            }
        }
        if in_flight.len() < LATEST_IN_FLIGHT {
            if let Some((ident, data)) = waiting.take() {
                let sent_at = std::time::Instant::now();
                if let Some(s) = send_latest(conn, id, ident, data, priority).await? {
                    in_flight.push((ident, s, sent_at));
                }
            }
        }
        if end.is_some() && waiting.is_none() {
            break;
        }
        // Both futures own what they need, so `send` stays free for the frames below.
        let delivered = (!in_flight.is_empty()).then(|| {
            futures_util::future::select_all(
                in_flight.iter().map(|(_, s, _)| Box::pin(s.stopped())),
            )
        });
        let aborted = send.stopped();
        tokio::select! {
            next = producer.next(), if end.is_none() => match next {
                Some(Ok((ident, data))) if ident >= 0 => {
                    if let Some((old, _)) = waiting.replace((ident, data)) {
                        write_frame(send, &StreamFrame::Superseded { ident: old }).await.map_err(drop)?;
                    }
                }
                Some(Ok(_)) | None => end = Some(StreamFrame::End),
                Some(Err(failure)) => end = Some(StreamFrame::Error(log_failure(name, failure))),
            },
            done = async { match delivered { Some(f) => Some(f.await.1), None => std::future::pending().await } } => {
                if let Some(index) = done {
                    in_flight.remove(index);
                }
            }
            _ = aborted => {
                for (_, mut s, _) in in_flight {
                    let _ = s.reset(varint(ErrorCode::Cancelled));
                }
                return Err(());
            }
        }
    }
    drop(producer);
    // Let the last items arrive before saying the subscription ended (bounded).
    for (_, s, _) in in_flight {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.stopped()).await;
    }
    write_frame(send, &end.unwrap_or(StreamFrame::End))
        .await
        .map_err(drop)
}

/// Opens the unidirectional stream of one `Latest` item; `None` if the client stopped it
/// (the next item follows anyway).
async fn send_latest(
    conn: &Connection,
    id: u32,
    ident: i64,
    data: Bytes,
    priority: i32,
) -> Result<Option<SendStream>, ()> {
    let Some(uni) = conn.open_uni().await else {
        return Err(());
    };
    let mut uni = uni.map_err(drop)?;
    uni.set_priority(priority);
    let header = LatestHeader {
        id,
        ident,
        sent_us: now_us(),
        len: data.len() as u64,
    };
    if uni
        .write_all_chunks(&mut [crate::io::frame(&header), data])
        .await
        .is_err()
    {
        return Ok(None);
    }
    let _ = uni.finish();
    Ok(Some(uni))
}

/// `Datagram` delivery: each item in one QUIC datagram; an item too large for the path is a
/// typed error that ends the subscription.
async fn run_datagram(
    conn: &Connection,
    send: &mut SendStream,
    producer: Result<crate::subroutine::ItemStream, Failure>,
    name: &str,
    id: u32,
) -> Result<(), ()> {
    let mut producer = match producer {
        Ok(p) => p,
        Err(failure) => return write_error(send, log_failure(name, failure)).await,
    };
    write_frame(send, &Response::Accepted).await.map_err(drop)?;
    let end = loop {
        let Some(next) = next_or_abort(&mut producer, send).await else {
            return Err(());
        };
        match next {
            Some(Ok((ident, data))) if ident >= 0 => {
                let mut datagram = datagram::header(id, ident, now_us());
                let max = conn.max_datagram_size().unwrap_or(0);
                if datagram.len() + data.len() > max {
                    break StreamFrame::Error(ErrorReply::new(
                        ErrorCode::FrameTooLarge,
                        format!("item {ident} of {} bytes does not fit a datagram ({max} bytes with header)", data.len()),
                    ));
                }
                datagram.extend_from_slice(&data);
                // A full send buffer drops the oldest datagram: latest value wins.
                if let Err(e) = conn.send_datagram(datagram.into()) {
                    break StreamFrame::Error(ErrorReply::new(
                        ErrorCode::Internal,
                        format!("datagram: {e}"),
                    ));
                }
            }
            Some(Ok(_)) | None => break StreamFrame::End,
            Some(Err(failure)) => break StreamFrame::Error(log_failure(name, failure)),
        }
    };
    drop(producer);
    write_frame(send, &end).await.map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_batch_is_copied_out_and_its_buffer_kept() {
        let mut batch = Vec::with_capacity(BATCH_FLUSH + COPY_LIMIT);
        batch.extend_from_slice(b"a few bytes");
        let ptr = batch.as_ptr();
        let chunk = take_batch(&mut batch);
        assert_eq!(&chunk[..], b"a few bytes");
        // The chunk owns a copy: the big buffer stays with the batch, empty, for reuse.
        assert_ne!(chunk.as_ptr(), ptr);
        assert!(batch.is_empty());
        assert_eq!(batch.as_ptr(), ptr);
        assert!(batch.capacity() >= BATCH_FLUSH + COPY_LIMIT);
    }

    #[test]
    fn a_full_batch_is_handed_over_without_a_copy() {
        let mut batch = vec![7u8; BATCH_FLUSH];
        let ptr = batch.as_ptr();
        let chunk = take_batch(&mut batch);
        assert_eq!(chunk.len(), BATCH_FLUSH);
        assert_eq!(chunk.as_ptr(), ptr);
        assert!(batch.is_empty());
        assert!(batch.capacity() >= BATCH_FLUSH);
    }
}
