//! The items of a stream or subscription, handed to Python in batches: one wait on the
//! runtime takes every item ready then (up to [`BATCH`]), and the next calls take them from
//! here without crossing threads. [`ItemIter`] is the blocking iterator; the asyncio one
//! (`quicswarm.aio`) shares [`Items`].

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use pyo3::{prelude::*, types::PyBytes};
use tokio::sync::Mutex;

use crate::{errors, runtime};

/// Most items handed over per wait.
const BATCH: usize = 256;

/// One item: its ident and bytes.
pub(crate) type Item = (i64, Bytes);

/// Where items come from.
pub(crate) enum Source {
    /// A client's stream or subscription.
    Items(quicswarm::ItemStream),
    /// A session's subscription, which resumes after a reconnect.
    Resuming(quicswarm::ResumingStream),
}

impl Source {
    async fn next(&mut self) -> Result<Option<Item>, quicswarm::CallError> {
        match self {
            Self::Items(items) => items.next().await,
            Self::Resuming(items) => items.next().await,
        }
    }

    /// Whether `next` may be polled once and dropped: a resuming stream may be reconnecting.
    fn cancel_safe(&self) -> bool {
        matches!(self, Self::Items(_))
    }
}

/// A source with the items already taken from it but not yet handed out.
pub(crate) struct Items {
    source: Arc<Mutex<Option<Source>>>,
    /// Set by [`abort`](Self::abort): a fetch in flight then drops the source when it ends.
    aborted: Arc<AtomicBool>,
    ready: std::sync::Mutex<VecDeque<Item>>,
    /// A failure that came behind items still to hand out.
    failed: std::sync::Mutex<Option<quicswarm::CallError>>,
}

/// What one wait on the runtime brought: items, and a failure to report after them.
pub(crate) type Batch = Result<(Vec<Item>, Option<quicswarm::CallError>), quicswarm::CallError>;

impl Items {
    pub(crate) fn new(source: Source) -> Self {
        Self {
            source: Arc::new(Mutex::new(Some(source))),
            aborted: Arc::default(),
            ready: std::sync::Mutex::default(),
            failed: std::sync::Mutex::default(),
        }
    }

    /// The next item already here, or the failure that came behind the last one.
    pub(crate) fn take_ready(&self) -> Option<Result<Item, quicswarm::CallError>> {
        if let Some(item) = self.ready.lock().ok()?.pop_front() {
            return Some(Ok(item));
        }
        self.failed.lock().ok()?.take().map(Err)
    }

    /// Waits for the next item, then takes every one ready behind it; run it on the runtime.
    /// An empty batch is the end.
    pub(crate) fn fetch(&self) -> impl std::future::Future<Output = Batch> + Send + 'static {
        let (source, aborted) = (self.source.clone(), self.aborted.clone());
        async move {
            use futures_util::FutureExt as _;
            let mut guard = source.lock().await;
            if aborted.load(Ordering::Acquire) {
                *guard = None;
            }
            let Some(stream) = guard.as_mut() else {
                return Ok((Vec::new(), None));
            };
            let mut batch = match stream.next().await {
                Ok(Some(item)) => vec![item],
                other => {
                    // Ended or failed: nothing more will come.
                    *guard = None;
                    return other.map(|_| (Vec::new(), None));
                }
            };
            let mut failure = None;
            // Whatever is ready already, without waiting (`next` is cancel-safe).
            while batch.len() < BATCH && stream.cancel_safe() {
                match stream.next().now_or_never() {
                    Some(Ok(Some(item))) => batch.push(item),
                    Some(Ok(None)) => {
                        *guard = None;
                        break;
                    }
                    Some(Err(e)) => {
                        // Handed out after these items, at the call that finds none left.
                        failure = Some(e);
                        *guard = None;
                        break;
                    }
                    None => break,
                }
            }
            if aborted.load(Ordering::Acquire) {
                // Aborted while this fetch waited: the stream goes now, not when dropped.
                *guard = None;
            }
            Ok((batch, failure))
        }
    }

    /// Keeps a fetched batch; the first item, `None` at the end.
    pub(crate) fn store(&self, batch: Batch) -> Result<Option<Item>, quicswarm::CallError> {
        let (batch, failure) = batch?;
        if self.aborted.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut batch = batch.into_iter();
        let Some(first) = batch.next() else {
            return Ok(None);
        };
        if let Ok(mut ready) = self.ready.lock() {
            ready.extend(batch);
        }
        if let (Some(failure), Ok(mut failed)) = (failure, self.failed.lock()) {
            *failed = Some(failure);
        }
        Ok(Some(first))
    }

    /// Aborts the stream: the gateway stops its producer. A fetch in flight (it holds the
    /// source) drops it when it returns.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        if let Ok(mut ready) = self.ready.lock() {
            ready.clear();
        }
        if let Ok(mut guard) = self.source.try_lock() {
            guard.take();
        }
    }
}

impl Drop for Items {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The items of a stream subscription: `for ident, data in ...`. Leaving the loop early (or
/// `close()`) aborts the stream on the gateway.
#[pyclass(module = "quicswarm")]
pub(crate) struct ItemIter {
    items: Items,
}

impl ItemIter {
    pub(crate) fn new(source: Source) -> Self {
        Self {
            items: Items::new(source),
        }
    }

    pub(crate) fn abort(&self) {
        self.items.abort();
    }
}

#[pymethods]
impl ItemIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    pub(crate) fn __next__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(i64, Bound<'py, PyBytes>)>> {
        let next = match self.items.take_ready() {
            Some(ready) => ready.map(Some),
            None => match runtime::wait(py, self.items.fetch()) {
                Ok(batch) => self.items.store(batch),
                Err(interrupted) => {
                    // Interrupted mid-read: the stream is abandoned (and so aborted).
                    self.abort();
                    return Err(interrupted);
                }
            },
        };
        Ok(next
            .map_err(errors::call)?
            .map(|(ident, data)| (ident, PyBytes::new(py, &data))))
    }

    /// Aborts the stream: the gateway stops its producer.
    fn close(&self) {
        self.abort();
    }
}
