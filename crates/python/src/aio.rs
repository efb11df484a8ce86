//! `quicswarm.aio`: the client with `async` methods, for asyncio.
//!
//! Each operation runs on quicswarm's own runtime; its result is handed to the caller's event
//! loop with `call_soon_threadsafe`, so nothing blocks the loop. Cancelling the awaiting task
//! (a timeout, `task.cancel()`) aborts the operation: its stream is reset and the gateway
//! stops the subroutine.

use std::{future::Future, sync::Arc};

use pyo3::{
    exceptions::PyStopAsyncIteration,
    prelude::*,
    types::{PyBytes, PyDict, PyTuple},
};
use quicswarm::Json;
use tokio::sync::Mutex;

use crate::{args, buffer, client::Client, errors, runtime};

/// Runs `fut` on the runtime and returns an asyncio future of the running loop that gets its
/// result, converted by `convert` with the GIL; cancelling that future aborts `fut`.
fn awaitable<'py, T, F, C>(py: Python<'py>, fut: F, convert: C) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let asyncio = py.import("asyncio")?;
    let event_loop = asyncio.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let (loop_ref, future_ref) = (event_loop.clone().unbind(), future.clone().unbind());
    let task = runtime::handle()?.spawn(async move {
        let output = fut.await;
        Python::attach(|py| {
            let (setter, value) = match convert(py, output) {
                Ok(value) => ("set_result", value),
                Err(error) => ("set_exception", error.into_value(py).into_any()),
            };
            let deliver = py
                .import("quicswarm.aio")
                .and_then(|m| m.getattr("_deliver"))
                .and_then(|deliver| {
                    loop_ref.call_method1(
                        py,
                        "call_soon_threadsafe",
                        (deliver, future_ref, setter, value),
                    )
                });
            // The loop is closed: nobody is waiting any more.
            drop(deliver);
        });
    });
    let abort = Abort {
        task: Some(task.abort_handle()),
    };
    future.call_method1("add_done_callback", (Py::new(py, abort)?,))?;
    Ok(future)
}

/// Aborts an operation when its asyncio future is cancelled.
#[pyclass(module = "quicswarm.aio")]
struct Abort {
    task: Option<tokio::task::AbortHandle>,
}

#[pymethods]
impl Abort {
    fn __call__(&mut self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
        Ok(())
    }
}

/// A client whose operations are awaited: `await client.call("echo", "hi")`.
#[pyclass(module = "quicswarm.aio")]
pub(crate) struct AsyncClient {
    inner: quicswarm::Client,
}

#[pymethods]
impl AsyncClient {
    /// Wraps a (blocking) client's connection.
    #[new]
    fn new(client: PyRef<'_, Client>) -> PyResult<Self> {
        Ok(Self {
            inner: client.connection()?,
        })
    }

    /// A round trip, in seconds.
    fn ping<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        awaitable(py, async move { client.ping().await }, |py, rtt| {
            Ok(rtt
                .map_err(errors::call)?
                .as_secs_f64()
                .into_pyobject(py)?
                .into_any()
                .unbind())
        })
    }

    /// Calls a batch subroutine; its bytes.
    #[pyo3(signature = (name, *args, **kwargs))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        name: String,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let json = args::encode(py, args, kwargs)?;
        let client = self.inner.clone();
        awaitable(
            py,
            async move { client.call(&name, &Json(json)).await },
            |py, reply| {
                Ok(PyBytes::new(py, &reply.map_err(errors::call)?)
                    .into_any()
                    .unbind())
            },
        )
    }

    /// Sends a buffer to a sink subroutine; its int.
    #[pyo3(signature = (name, buffer, *args, **kwargs))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        name: String,
        buffer: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let json = args::encode(py, args, kwargs)?;
        let data = buffer::to_bytes(buffer)
            .map_err(|_| pyo3::exceptions::PyTypeError::new_err(buffer::SEND_TAKES))?;
        let client = self.inner.clone();
        awaitable(
            py,
            async move { client.send(&name, &Json(json), data).await },
            |py, n| {
                Ok(n.map_err(errors::call)?
                    .into_pyobject(py)?
                    .into_any()
                    .unbind())
            },
        )
    }

    /// Subscribes to a stream subroutine: `async for ident, data in await client.stream(...)`.
    #[pyo3(signature = (name, *args, **kwargs))]
    fn stream<'py>(
        &self,
        py: Python<'py>,
        name: String,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let json = args::encode(py, args, kwargs)?;
        let client = self.inner.clone();
        awaitable(
            py,
            async move { client.stream(&name, &Json(json)).await },
            |py, items| {
                let items = items.map_err(errors::call)?;
                let iter = AsyncItemIter {
                    items: Arc::new(Mutex::new(Some(items))),
                };
                Ok(Py::new(py, iter)?.into_any())
            },
        )
    }

    /// Closes the client politely.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        awaitable(py, async move { client.close().await }, |py, done| {
            done.map_err(errors::call)?;
            Ok(py.None())
        })
    }
}

/// The items of a stream, for `async for`; leaving the loop (or `aclose()`) aborts it.
#[pyclass(module = "quicswarm.aio")]
pub(crate) struct AsyncItemIter {
    items: Arc<Mutex<Option<quicswarm::ItemStream>>>,
}

#[pymethods]
impl AsyncItemIter {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let items = self.items.clone();
        let next = async move {
            let mut guard = items.lock().await;
            let Some(stream) = guard.as_mut() else {
                return Ok(None);
            };
            let next = stream.next().await;
            if !matches!(next, Ok(Some(_))) {
                *guard = None;
            }
            next
        };
        awaitable(py, next, |py, next| match next.map_err(errors::call)? {
            Some((ident, data)) => Ok((ident, PyBytes::new(py, &data))
                .into_pyobject(py)?
                .into_any()
                .unbind()),
            None => Err(PyStopAsyncIteration::new_err(())),
        })
    }

    /// Aborts the stream.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let items = self.items.clone();
        awaitable(py, async move { items.lock().await.take() }, |py, _| {
            Ok(py.None())
        })
    }
}
