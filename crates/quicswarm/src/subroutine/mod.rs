//! Registering subroutines: the three kinds, async or blocking, typed with serde.
//!
//! `mod.rs` has the [`Registry`]; `emitter.rs` what a stream subroutine is handed;
//! `sink.rs` what a sink receives and returns.

mod emitter;
mod sink;

use self::emitter::{Queued, EMIT_BYTES, EMIT_QUEUE};

pub use self::{
    emitter::{Aborted, Emitter, StreamContext},
    sink::{SinkData, SinkError, SinkOutput},
};

use std::{
    any::Any,
    collections::HashMap,
    fmt::{self, Display},
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::{Arc, PoisonError, RwLock},
};

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use quicswarm_proto::{Args, ArgsEncoding, ErrorCode, ErrorReply, SubroutineInfo, SubroutineKind};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Semaphore};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Producer = Pin<Box<dyn Stream<Item = Result<(i64, Bytes), Failure>> + Send>>;

/// How a subroutine run failed, before it becomes an [`ErrorReply`].
#[derive(Debug)]
pub(crate) enum Failure {
    BadArgs(String),
    Failed(String),
    Panicked(String),
    TooLarge(String),
    Cancelled,
    Timeout(std::time::Duration),
}

impl From<Failure> for ErrorReply {
    fn from(f: Failure) -> Self {
        match f {
            Failure::BadArgs(m) => Self::new(ErrorCode::BadArgs, m),
            Failure::Failed(m) => Self::new(ErrorCode::SubroutineFailed, m),
            Failure::Panicked(m) => Self::new(ErrorCode::SubroutinePanicked, m),
            Failure::TooLarge(m) => Self::new(ErrorCode::FrameTooLarge, m),
            Failure::Cancelled => Self::new(ErrorCode::Cancelled, "the client stopped sending"),
            Failure::Timeout(d) => Self::new(
                ErrorCode::Timeout,
                format!("cancelled at the client's deadline of {d:?}"),
            ),
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn decode_args<A: DeserializeOwned>(args: &Args) -> Result<A, Failure> {
    match args.encoding {
        ArgsEncoding::Postcard => postcard::from_bytes(&args.bytes)
            .map_err(|e| Failure::BadArgs(format!("postcard: {e}"))),
        ArgsEncoding::Json => {
            // An empty JSON argument means "no arguments": lets `()` subroutines be called bare.
            let text: &[u8] = if args.bytes.iter().all(u8::is_ascii_whitespace) {
                b"null"
            } else {
                &args.bytes
            };
            serde_json::from_slice(text).map_err(|e| Failure::BadArgs(format!("json: {e}")))
        }
    }
}

/// Runs `f` catching a panic as a [`Failure::Panicked`].
fn guarded<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Failure::Panicked(panic_message(p))))
}

/// Awaits a subroutine's future, turning its error and its panic into failures.
async fn run_async<R, E: Display>(fut: impl Future<Output = Result<R, E>>) -> Result<R, Failure> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::Failed(e.to_string())),
        Err(p) => Err(Failure::Panicked(panic_message(p))),
    }
}

/// Awaits `fut` on a blocking thread's result, turning panics into failures.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(move || guarded(f)).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => Err(Failure::Panicked(panic_message(join.into_panic()))),
        Err(_) => Err(Failure::Cancelled),
    }
}

pub(crate) type BatchFn = dyn Fn(Args) -> BoxFuture<Result<Bytes, Failure>> + Send + Sync;
pub(crate) type StreamFn = dyn Fn(Args, StreamContext) -> Result<Producer, Failure> + Send + Sync;
pub(crate) type SinkFn = dyn Fn(Args, SinkData) -> BoxFuture<Result<i64, Failure>> + Send + Sync;

#[derive(Clone)]
pub(crate) enum Subroutine {
    Batch(Arc<BatchFn>),
    Stream(Arc<StreamFn>),
    Sink(Arc<SinkFn>),
}

impl Subroutine {
    pub(crate) fn kind(&self) -> SubroutineKind {
        match self {
            Self::Batch(_) => SubroutineKind::Batch,
            Self::Stream(_) => SubroutineKind::Stream,
            Self::Sink(_) => SubroutineKind::Sink,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) subroutine: Subroutine,
    pub(crate) replay_safe: bool,
}

/// The gateway's named subroutines. Cheap to clone (shared); registering while the gateway
/// runs is allowed and takes effect for the next request.
///
/// Each kind can be registered as an `async` function or as a blocking one (`*_blocking`),
/// which runs on tokio's blocking pool, never on the runtime's workers. A subroutine that
/// returns an error or panics fails only that request: the caller gets a typed error and
/// everyone else goes on.
///
/// # Examples
/// ```
/// use quicswarm::Registry;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Sum { a: i64, b: i64 }
///
/// let registry = Registry::new();
/// registry
///     .batch("add", |args: Sum| async move {
///         Ok::<_, std::convert::Infallible>((args.a + args.b).to_string())
///     })
///     .sink_blocking("len", |_: (), data: bytes::Bytes| Ok::<_, String>(data.len() as i64));
/// assert_eq!(registry.list().len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    /// foldhash, not std's SipHash: looked up on every request (SipHash was about 250
    /// instructions of a call's gateway side), and only the gateway chooses the keys, so
    /// there is no flooding to resist.
    entries: Arc<RwLock<HashMap<String, Entry, foldhash::fast::RandomState>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("subroutines", &self.list())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&self, name: &str, subroutine: Subroutine) -> &Self {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.insert(
            name.to_string(),
            Entry {
                subroutine,
                replay_safe: false,
            },
        );
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Marks a registered subroutine as replay-safe: calling it twice with the same arguments
    /// does no harm (reads, idempotent queries). Only replay-safe subroutines run from 0-RTT
    /// early data, which an attacker could replay; others are refused with `TooEarly` there
    /// and re-sent by the client after the handshake. Off by default. Returns `false` if no
    /// subroutine has that name.
    pub fn set_replay_safe(&self, name: &str, replay_safe: bool) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(name) {
            Some(entry) => {
                entry.replay_safe = replay_safe;
                true
            }
            None => false,
        }
    }

    /// Removes a subroutine; requests already running finish.
    pub fn remove(&self, name: &str) -> bool {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some()
    }

    /// The registered subroutines, sorted by name.
    pub fn list(&self) -> Vec<SubroutineInfo> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<_> = entries
            .iter()
            .map(|(name, e)| SubroutineInfo {
                name: name.clone(),
                kind: e.subroutine.kind(),
                replay_safe: e.replay_safe,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Registers an async *batch* subroutine: arguments in, bytes out, once.
    ///
    /// Its future is first polled on its connection's task, so that a call answered at once
    /// costs no task of its own; one that has to wait moves to a task then. Work that
    /// computes for long before its first `.await` holds that connection's next requests
    /// meanwhile: register it with [`batch_blocking`](Self::batch_blocking) instead.
    pub fn batch<A, F, Fut, R, E>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Into<Bytes>,
        E: Display,
    {
        let f = Arc::new(f);
        self.insert(
            name,
            Subroutine::Batch(Arc::new(move |args| {
                let f = f.clone();
                Box::pin(async move {
                    let args = decode_args::<A>(&args)?;
                    run_async(guarded(|| Ok(f(args)))?).await.map(Into::into)
                })
            })),
        )
    }

    /// Registers a blocking *batch* subroutine; it runs on the blocking thread pool.
    pub fn batch_blocking<A, F, R, E>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        R: Into<Bytes>,
        E: Display,
    {
        let f = Arc::new(f);
        self.insert(
            name,
            Subroutine::Batch(Arc::new(move |args| {
                let f = f.clone();
                Box::pin(async move {
                    let args = decode_args::<A>(&args)?;
                    run_blocking(move || {
                        f(args)
                            .map(Into::into)
                            .map_err(|e| Failure::Failed(e.to_string()))
                    })
                    .await
                })
            })),
        )
    }

    /// Registers an async *stream* subroutine: it returns a `Stream` of `(ident, bytes)`
    /// items. The stream ends when it returns `None`, when it yields an error (sent to the
    /// client as a typed error), or at an item with a negative ident (not sent). The gateway
    /// polls the stream only when it can send, and drops it as soon as the client aborts or
    /// vanishes, so the producer never runs more than one item past an abort.
    pub fn stream<A, F, S, B, E>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A, StreamContext) -> S + Send + Sync + 'static,
        S: Stream<Item = Result<(i64, B), E>> + Send + 'static,
        B: Into<Bytes>,
        E: Display,
    {
        self.insert(
            name,
            Subroutine::Stream(Arc::new(move |args, ctx| {
                let args = decode_args::<A>(&args)?;
                let stream = guarded(|| Ok(f(args, ctx)))?;
                let stream = AssertUnwindSafe(stream)
                    .catch_unwind()
                    .map(|item| match item {
                        Ok(Ok((ident, data))) => Ok((ident, data.into())),
                        Ok(Err(e)) => Err(Failure::Failed(e.to_string())),
                        Err(p) => Err(Failure::Panicked(panic_message(p))),
                    });
                Ok(Box::pin(stream) as Producer)
            })),
        )
    }

    /// Registers a blocking *stream* subroutine: it runs on the blocking thread pool and sends
    /// items through an [`Emitter`]; [`Emitter::emit`] fails with [`Aborted`] once the client
    /// has gone, and the function should then return.
    pub fn stream_blocking<A, F, E>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A, &mut Emitter) -> Result<(), E> + Send + Sync + 'static,
        E: Display,
    {
        let f = Arc::new(f);
        self.insert(
            name,
            Subroutine::Stream(Arc::new(move |args, context| {
                let args = decode_args::<A>(&args)?;
                let (tx, rx) = mpsc::channel(EMIT_QUEUE);
                let f = f.clone();
                let failure_tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    let bytes = Arc::new(Semaphore::new(EMIT_BYTES));
                    let mut emitter = Emitter { tx, bytes, context };
                    let result = guarded(|| {
                        f(args, &mut emitter).map_err(|e| Failure::Failed(e.to_string()))
                    });
                    drop(emitter);
                    if let Err(failure) = result {
                        let _ = failure_tx.blocking_send(Err(failure));
                    }
                });
                // The item's share of the byte budget is given back as the client takes it.
                let items = tokio_stream_from(rx)
                    .map(|queued: Queued| queued.map(|(ident, data, _share)| (ident, data)));
                Ok(Box::pin(items) as Producer)
            })),
        )
    }

    /// Registers an async *sink* subroutine: it receives the client's buffer as a streamed
    /// [`SinkData`] and returns an `i64` (or `()`, sent as 0).
    pub fn sink<A, F, Fut, R, E>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A, SinkData) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: SinkOutput,
        E: Display,
    {
        let f = Arc::new(f);
        self.insert(
            name,
            Subroutine::Sink(Arc::new(move |args, data| {
                let f = f.clone();
                Box::pin(async move {
                    let args = decode_args::<A>(&args)?;
                    run_async(guarded(|| Ok(f(args, data)))?)
                        .await
                        .map(SinkOutput::into_i64)
                })
            })),
        )
    }

    /// Registers a blocking *sink* subroutine: the buffer is collected first (up to the
    /// gateway's `max_sink_len`), then the function runs on the blocking thread pool.
    pub fn sink_blocking<A, F, R, E>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A, Bytes) -> Result<R, E> + Send + Sync + 'static,
        R: SinkOutput,
        E: Display,
    {
        let f = Arc::new(f);
        self.insert(
            name,
            Subroutine::Sink(Arc::new(move |args, data: SinkData| {
                let f = f.clone();
                Box::pin(async move {
                    let args = decode_args::<A>(&args)?;
                    let buffer = data
                        .collect()
                        .await
                        .map_err(|e| Failure::TooLarge(e.to_string()))?;
                    run_blocking(move || {
                        f(args, buffer)
                            .map(SinkOutput::into_i64)
                            .map_err(|e| Failure::Failed(e.to_string()))
                    })
                    .await
                })
            })),
        )
    }
}

/// A receiver as a stream, without pulling in tokio-stream for one adapter.
fn tokio_stream_from<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests;
