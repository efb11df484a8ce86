//! `quicswarm.aio`: the client and the session with `async` methods, for asyncio.
//!
//! Each operation runs on quicswarm's own runtime; its result is handed to the caller's event
//! loop with `call_soon_threadsafe`, so nothing blocks the loop. Cancelling the awaiting task
//! (a timeout, `task.cancel()`) aborts the operation: its stream is reset and the gateway
//! stops the subroutine.
//!
//! The bridge is our own, a few dozen lines: pyo3-async-runtimes, which does the same (a
//! future of the running loop, completed with `call_soon_threadsafe`), is built on PyO3 0.29
//! in its newest release, and this crate is on 0.30.

mod client;
mod session;

use std::{future::Future, sync::Arc};

use pyo3::{
    exceptions::PyStopAsyncIteration,
    prelude::*,
    types::{PyBytes, PyString, PyTuple},
    IntoPyObjectExt,
};

pub(crate) use self::{client::AsyncClient, session::AsyncSession};
use crate::{
    errors,
    items::{Items, Source},
    runtime,
};

/// Runs `fut` on the runtime and returns an asyncio future of the running loop that gets its
/// result, converted by `convert` with the GIL; cancelling that future (or completing it
/// otherwise, as a failed progress callback does) aborts `fut`.
fn awaitable<'py, T, F, C>(py: Python<'py>, fut: F, convert: C) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    awaitable_with(py, |_| fut, convert)
}

/// [`awaitable`], with the future made by `make` from the [`Target`] it completes (for an
/// operation that posts to the loop before its result, as progress reports do).
fn awaitable_with<'py, T, F, C>(
    py: Python<'py>,
    make: impl FnOnce(Target) -> F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let (event_loop, future) = new_future(py)?;
    let target = Target {
        event_loop: event_loop.unbind(),
        future: future.clone().unbind(),
    };
    let fut = make(Target {
        event_loop: target.event_loop.clone_ref(py),
        future: target.future.clone_ref(py),
    });
    let task = runtime::handle()?.spawn(async move {
        let output = fut.await;
        Python::attach(|py| {
            let (setter, value) = match convert(py, output) {
                Ok(value) => ("set_result", value),
                Err(error) => ("set_exception", error.into_value(py).into_any()),
            };
            let setter = PyString::new(py, setter).into_any().unbind();
            // A closed loop: nobody is waiting any more.
            let _ = target.post(
                py,
                "_deliver",
                vec![target.future.clone_ref(py), setter, value],
            );
        });
    });
    let abort = Abort {
        task: Some(task.abort_handle()),
    };
    future.call_method1("add_done_callback", (Py::new(py, abort)?,))?;
    Ok(future)
}

/// The asyncio future an operation completes, and its loop.
struct Target {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
}

impl Target {
    /// Calls `quicswarm.aio.<helper>(*args)` on the loop's thread.
    fn post(&self, py: Python<'_>, helper: &str, args: Vec<Py<PyAny>>) -> PyResult<()> {
        let mut call = vec![py.import("quicswarm.aio")?.getattr(helper)?.unbind()];
        call.extend(args);
        self.event_loop
            .call_method1(py, "call_soon_threadsafe", PyTuple::new(py, call)?)?;
        Ok(())
    }
}

/// The running loop and a new future of it.
fn new_future(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Bound<'_, PyAny>)> {
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    Ok((event_loop, future))
}

/// An operation's value as Python's (its error as the typed exception).
fn value<T>(py: Python<'_>, result: Result<T, quicswarm::CallError>) -> PyResult<Py<PyAny>>
where
    T: for<'py> IntoPyObject<'py>,
{
    let value = result.map_err(errors::call)?;
    value.into_py_any(py)
}

/// An operation's bytes as Python's `bytes`.
fn bytes(
    py: Python<'_>,
    result: Result<bytes::Bytes, quicswarm::CallError>,
) -> PyResult<Py<PyAny>> {
    Ok(PyBytes::new(py, &result.map_err(errors::call)?)
        .into_any()
        .unbind())
}

/// An operation that returns nothing: `None`.
fn done(py: Python<'_>, result: Result<(), quicswarm::CallError>) -> PyResult<Py<PyAny>> {
    result.map_err(errors::call)?;
    Ok(py.None())
}

/// A stream's items, for `async for`.
fn items(py: Python<'_>, source: Result<Source, quicswarm::CallError>) -> PyResult<Py<PyAny>> {
    let iter = AsyncItemIter::new(source.map_err(errors::call)?);
    Ok(Py::new(py, iter)?.into_any())
}

/// An asyncio future that is already done, for an answer at hand (no thread crossing).
fn ready(py: Python<'_>, value: PyResult<Py<PyAny>>) -> PyResult<Bound<'_, PyAny>> {
    let (_, future) = new_future(py)?;
    match value {
        Ok(value) => future.call_method1("set_result", (value,))?,
        Err(error) => future.call_method1("set_exception", (error.into_value(py),))?,
    };
    Ok(future)
}

/// Aborts an operation when its asyncio future is done before the operation is: cancelled,
/// or failed by a progress callback.
#[pyclass(module = "quicswarm.aio")]
struct Abort {
    task: Option<tokio::task::AbortHandle>,
}

#[pymethods]
impl Abort {
    fn __call__(&mut self, _future: &Bound<'_, PyAny>) {
        if let Some(task) = self.task.take() {
            // A no-op when the operation is what completed the future.
            task.abort();
        }
    }
}

/// The items of a stream, for `async for`; leaving the loop (or `aclose()`) aborts it.
/// Items already received are handed out in batches, as by the blocking iterator.
#[pyclass(module = "quicswarm.aio")]
pub(crate) struct AsyncItemIter {
    items: Arc<Items>,
}

impl AsyncItemIter {
    fn new(source: Source) -> Self {
        Self {
            items: Arc::new(Items::new(source)),
        }
    }
}

/// An item as Python's `(ident, bytes)`.
fn item_tuple(py: Python<'_>, (ident, data): crate::items::Item) -> PyResult<Py<PyAny>> {
    Ok((ident, PyBytes::new(py, &data))
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

#[pymethods]
impl AsyncItemIter {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let next = |py: Python<'_>, item: Result<Option<crate::items::Item>, _>| match item
            .map_err(errors::call)?
        {
            Some(item) => item_tuple(py, item),
            None => Err(PyStopAsyncIteration::new_err(())),
        };
        if let Some(item) = self.items.take_ready() {
            return ready(py, next(py, item.map(Some)));
        }
        let items = self.items.clone();
        awaitable(py, self.items.fetch(), move |py, batch| {
            next(py, items.store(batch))
        })
    }

    /// Aborts the stream.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.items.abort();
        ready(py, Ok(py.None()))
    }
}
