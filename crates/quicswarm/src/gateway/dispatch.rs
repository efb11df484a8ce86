//! One operation stream, from its request to its last frame: the request read within its
//! limits, admitted (early data, permission, lookup), then run by kind.

use std::sync::Arc;

use bytes::Bytes;
use quicswarm_proto::{
    Args, Delivery, ErrorCode, ErrorReply, Request, Response, StreamOptions, SubroutineKind,
};
use tracing::{debug, error_span, info, warn, Instrument};

use super::{
    deliver,
    pair::Pair,
    reply::{log_failure, write_error},
    state::State,
};
use crate::{
    budget::Charge,
    deadline,
    ended::{Ended, Reply},
    files,
    io::{write_frame, write_frame_and_bytes, FrameReader},
    metrics::{OpKind, Outcome},
    subroutine::{BatchFn, Failure, SinkData, SinkFn, StreamContext, StreamFn, Subroutine},
    transport::{RecvStream, SendStream},
};

/// One operation stream, from its request to its last frame. Returns the bytes it wrote
/// (see `conn::serve_pair`, which lets the connection send them).
pub(super) async fn operation(
    shared: Arc<State>,
    pair: Arc<Pair>,
    mut send: SendStream,
    recv: RecvStream,
) -> u64 {
    // A client that stops reading (or sending) mid-operation holds a task, buffers and a
    // stream: after this long without progress the operation ends with `Timeout`.
    send.set_stall_timeout(shared.policy.limits.stall_timeout);
    let mut reader = FrameReader::new(recv, shared.policy.limits.max_frame_len);
    let mut kind = OpKind::Invalid;
    let admitted = match read_request(&shared, &pair, &mut reader).await {
        Ok(Some((request, charge))) => {
            // Armed only now: the request header timeout bounds the request's own read, and
            // a second timer on the same read cost every call.
            reader.set_stall_timeout(shared.policy.limits.stall_timeout);
            kind = OpKind::of(&request);
            // The `op` span (see `serve_pair`) learns its kind now: every later line says it.
            tracing::Span::current().record("kind", kind.name());
            admit(&shared, &pair, request, reader.is_0rtt()).map(|op| (op, charge))
        }
        Ok(None) => return 0,
        Err(RequestError::Frame(e)) => {
            debug!("bad request frame: {e}");
            Err(ErrorReply::new(e.code(), e.to_string()))
        }
        Err(RequestError::Refused(reply)) => Err(reply),
        Err(RequestError::Timeout) => {
            reader.stop(ErrorCode::Timeout);
            let _ = send.reset(ErrorCode::Timeout);
            shared.metrics.limit_hit("request_header_timeout");
            shared
                .metrics
                .operation(kind, Outcome::Error(ErrorCode::Timeout));
            return 0;
        }
    };
    let (op, _request_charge) = match admitted {
        Ok(admitted) => admitted,
        Err(reply) => {
            // Do not make the client upload what nobody will read.
            reader.stop(reply.code);
            if reply.code == ErrorCode::FrameTooLarge {
                shared.metrics.limit_hit("max_frame_len");
            }
            shared.metrics.operation(kind, Outcome::Error(reply.code));
            let _ = write_error(&mut send, reply).await;
            let _ = send.finish();
            return send.written();
        }
    };
    let ran = run(&shared, &pair, &mut send, reader, op).await;
    let (result, limit) = Outcome::of(&ran, send.answered_error());
    if let Some(limit) = limit {
        shared.metrics.limit_hit(limit);
    }
    shared.metrics.operation(kind, result);
    let written = send.written();
    match ran {
        Ok(()) => {
            if send.finish().is_ok() {
                pair.replied(send).await;
            }
        }
        Err(ended) => debug!("operation ended early: {ended}"),
    }
    written
}

/// A request that may run: its subroutine found, of the right kind.
enum Admitted {
    Ping {
        nonce: u64,
    },
    Call {
        name: String,
        f: Arc<BatchFn>,
        args: Args,
        deadline_ms: Option<u32>,
    },
    Stream {
        name: String,
        f: Arc<StreamFn>,
        args: Args,
        resume_after: Option<i64>,
        options: StreamOptions,
    },
    Send {
        name: String,
        f: Arc<SinkFn>,
        args: Args,
        len: Option<u64>,
        deadline_ms: Option<u32>,
    },
    /// `List`, `Get`, `PutCheck` or `Put`: run by `files::serve`.
    Files(Request),
    CloseHandler,
    CloseGateway,
}

/// Every check a request passes before it runs, in one place: early data only for
/// replay-safe requests, the client's permissions, and the subroutine's name and kind.
fn admit(
    shared: &State,
    pair: &Pair,
    request: Request,
    early: bool,
) -> Result<Admitted, ErrorReply> {
    if early {
        let safe = |name: &str| {
            shared
                .policy
                .registry
                .get(name)
                .is_some_and(|e| e.replay_safe)
        };
        if !request.replay_safe(safe) {
            // Early data can be replayed by an attacker: only idempotent requests run from it.
            shared.metrics.early_data("refused");
            debug!("request refused in 0-RTT: not replay-safe");
            return Err(ErrorReply::new(
                ErrorCode::TooEarly,
                "not replay-safe: re-send after the handshake",
            ));
        }
        shared.metrics.early_data("accepted");
    }
    permitted(shared, pair.identity.as_deref(), &request).inspect_err(|reply| {
        warn!("denied: {}", reply.message);
    })?;
    Ok(match request {
        Request::Ping { nonce } => Admitted::Ping { nonce },
        Request::Call {
            name,
            args,
            deadline_ms,
        } => match lookup(shared, &name, SubroutineKind::Batch)? {
            Subroutine::Batch(f) => Admitted::Call {
                name,
                f,
                args,
                deadline_ms,
            },
            _ => return Err(kind_mismatch()),
        },
        Request::Stream {
            name,
            args,
            resume_after,
            options,
        } => match lookup(shared, &name, SubroutineKind::Stream)? {
            Subroutine::Stream(_)
                if options.delivery != Delivery::Reliable
                    && pair.conn.kind() == crate::TransportKind::Tcp =>
            {
                return Err(ErrorReply::new(
                    ErrorCode::Unsupported,
                    "latest-value and datagram delivery need QUIC; this client is on TCP",
                ))
            }
            Subroutine::Stream(f) => Admitted::Stream {
                name,
                f,
                args,
                resume_after,
                options,
            },
            _ => return Err(kind_mismatch()),
        },
        Request::Send {
            name,
            args,
            len,
            deadline_ms,
        } => match lookup(shared, &name, SubroutineKind::Sink)? {
            Subroutine::Sink(f) => Admitted::Send {
                name,
                f,
                args,
                len,
                deadline_ms,
            },
            _ => return Err(kind_mismatch()),
        },
        files @ (Request::List { .. }
        | Request::Get { .. }
        | Request::PutCheck { .. }
        | Request::Put { .. }) => Admitted::Files(files),
        Request::CloseHandler => Admitted::CloseHandler,
        // Allowed: `permitted` checked it.
        Request::CloseGateway => Admitted::CloseGateway,
    })
}

/// Runs an admitted request: a short arm per kind.
async fn run(
    shared: &Arc<State>,
    pair: &Pair,
    send: &mut SendStream,
    mut reader: FrameReader,
    op: Admitted,
) -> Reply {
    match op {
        Admitted::Ping { nonce } => write_frame(send, &Response::Pong { nonce })
            .await
            .map_err(Ended::from),
        Admitted::Call {
            name,
            f,
            args,
            deadline_ms,
        } => {
            let span = error_span!("call", %name);
            let outcome = within_deadline(deadline_ms, f(args).instrument(span)).await;
            reply_value(send, outcome, &name).await
        }
        Admitted::Stream {
            name,
            f,
            args,
            resume_after,
            options,
        } => {
            let producer = match f(args, StreamContext { resume_after }) {
                Ok(producer) => producer,
                Err(failure) => return write_error(send, log_failure(&name, failure)).await,
            };
            send.set_priority(options.priority);
            write_frame(send, &Response::Accepted).await?;
            // Boxed: keeps the common (small) operations' task small to spawn.
            Box::pin(deliver::run(
                &pair.conn,
                (send, &mut reader),
                producer,
                &name,
                options,
                &shared.metrics,
            ))
            .await
        }
        Admitted::Send {
            name,
            f,
            args,
            len,
            deadline_ms,
        } => {
            let data = SinkData::new(reader, len, shared.policy.limits.max_sink_len);
            let span = error_span!("send", %name);
            let outcome = within_deadline(deadline_ms, f(args, data).instrument(span)).await;
            let reply = match outcome {
                Ok(value) => Response::Count { value },
                Err(failure) => Response::Error(log_failure(&name, failure)),
            };
            write_frame(send, &reply).await.map_err(Ended::from)
        }
        Admitted::Files(request) => Box::pin(run_files(shared, pair, send, reader, request)).await,
        Admitted::CloseHandler => {
            // Free the slot before answering, so a client that reconnects right after its
            // close returns finds it free.
            pair.release_slot(shared);
            pair.closing.cancel();
            write_frame(send, &Response::Done)
                .await
                .map_err(Ended::from)
        }
        Admitted::CloseGateway => {
            info!("close_gateway requested");
            // Not tracked by the gateway: shutdown waits for the tracked tasks. This
            // operation is still tracked by its pair, so its `Done` is delivered before the
            // connection is closed.
            let s = shared.clone();
            tokio::spawn(async move { s.shutdown(s.policy.limits.shutdown_grace).await });
            write_frame(send, &Response::Done)
                .await
                .map_err(Ended::from)
        }
    }
}

/// A file request, run by `files::serve`.
async fn run_files(
    shared: &State,
    pair: &Pair,
    send: &mut SendStream,
    mut reader: FrameReader,
    request: Request,
) -> Reply {
    let ctx = serve_ctx(shared, pair);
    match request {
        Request::List {
            root,
            selector,
            hash,
        } => files::serve::list(ctx, send, root, selector, hash).await,
        Request::Get { root, items } => files::serve::get(ctx, send, root, items).await,
        Request::PutCheck {
            dest,
            entries,
            range_size,
        } => files::serve::put_check(ctx, send, dest, entries, range_size).await,
        Request::Put {
            dest,
            items,
            range_size,
        } => files::serve::put(ctx, send, &mut reader, dest, items, range_size).await,
        _ => write_error(send, kind_mismatch()).await,
    }
}

/// What a file operation of `pair` may use.
fn serve_ctx<'a>(shared: &'a State, pair: &'a Pair) -> files::serve::Serve<'a> {
    files::serve::Serve {
        files: &shared.policy.files,
        budget: &pair.budget,
        max_items: shared.policy.limits.request_items(),
        metrics: &shared.metrics,
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
    shared: &State,
    pair: &Pair,
    reader: &mut FrameReader,
) -> Result<Option<(Request, Charge)>, RequestError> {
    let timeout = shared.policy.limits.request_header_timeout;
    let by = tokio::time::Instant::now() + timeout;
    let len = match deadline::until(by, reader.next_frame_len()).await {
        Some(Ok(Some(len))) => len as u64,
        Some(Ok(None)) => return Ok(None),
        Some(Err(e)) => return Err(RequestError::Frame(e)),
        None => return Err(RequestError::Timeout),
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
    match deadline::until(by, reader.read_frame()).await {
        Some(Ok(Some(request))) => Ok(Some((request, charge))),
        Some(Ok(None)) => Ok(None),
        Some(Err(e)) => Err(RequestError::Frame(e)),
        None => Err(RequestError::Timeout),
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
fn permitted(shared: &State, identity: Option<&str>, request: &Request) -> Result<(), ErrorReply> {
    // Read under the lock, not cloned: two atomic updates per request saved.
    let security = shared
        .security
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let p = security.permissions_of(identity);
    // Formatted only on refusal: an allowed request allocates nothing here.
    let denied = |what: String| {
        let who = identity.map_or_else(
            || "an anonymous client".to_string(),
            |id| format!("client {id:?}"),
        );
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
            deadline::until(tokio::time::Instant::now() + limit, run)
                .await
                .unwrap_or(Err(Failure::Timeout(limit)))
        }
    }
}

/// Finds `name` and checks its kind.
fn lookup(shared: &State, name: &str, kind: SubroutineKind) -> Result<Subroutine, ErrorReply> {
    match shared.policy.registry.get(name) {
        None => Err(ErrorReply::new(
            ErrorCode::UnknownSubroutine,
            format!("no subroutine named {name:?}"),
        )),
        Some(entry) if entry.subroutine.kind() != kind => Err(ErrorReply::new(
            ErrorCode::WrongKind,
            format!(
                "{name:?} is a {:?} subroutine, not {kind:?}",
                entry.subroutine.kind()
            ),
        )),
        Some(entry) => Ok(entry.subroutine),
    }
}

/// A request routed to the wrong arm: `lookup` checked the kind, so this does not happen; a
/// typed error rather than a panic all the same.
fn kind_mismatch() -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, "kind mismatch")
}

async fn reply_value(send: &mut SendStream, outcome: Result<Bytes, Failure>, name: &str) -> Reply {
    match outcome {
        Ok(value) => write_frame_and_bytes(
            send,
            &Response::Value {
                len: value.len() as u64,
            },
            value,
        )
        .await
        .map_err(Ended::from),
        Err(failure) => write_error(send, log_failure(name, failure)).await,
    }
}
