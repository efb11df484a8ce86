//! `quicswarm.aio.AsyncSession`: a `quicswarm.Session` whose calls and waits are awaited.

use std::sync::Arc;

use pyo3::{
    exceptions::PyRuntimeError,
    prelude::*,
    types::{PyDict, PyTuple},
};
use quicswarm::Json;

use super::{awaitable, bytes, items, ready};
use crate::{
    args,
    client::{self, subscribe_options},
    items::Source,
    session::{state_name, state_reached, Session},
};

/// A session whose operations are awaited: calls wait for the link to come back, and
/// subscriptions resume by themselves after a reconnect. `async with` closes it.
#[pyclass(module = "quicswarm.aio")]
pub(crate) struct AsyncSession {
    inner: std::sync::Mutex<Option<Arc<quicswarm::Session>>>,
}

#[pymethods]
impl AsyncSession {
    /// Wraps a (blocking) session; both may be used.
    #[new]
    fn new(session: PyRef<'_, Session>) -> PyResult<Self> {
        Ok(Self {
            inner: std::sync::Mutex::new(Some(session.handle()?)),
        })
    }

    /// `"connected"`, `"reconnecting"` or `"closed"`.
    #[getter]
    fn state(&self) -> &'static str {
        self.session()
            .map_or("closed", |session| state_name(session.state()))
    }

    /// Reconnections so far.
    #[getter]
    fn reconnects(&self) -> PyResult<u64> {
        Ok(self.session()?.reconnects())
    }

    /// Waits (at most `timeout` seconds) until the state changes; the state then.
    #[pyo3(signature = (timeout=30.0))]
    fn wait_state_change<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let now = self.state();
        let reached = state_reached(&*self.session()?, timeout, move |s| s != now);
        awaitable(py, reached, |py, state| {
            Ok(state.into_pyobject(py)?.into_any().unbind())
        })
    }

    /// Waits (at most `timeout` seconds) for `state`; whether it came.
    #[pyo3(signature = (state, timeout=30.0))]
    fn wait_for<'py>(
        &self,
        py: Python<'py>,
        state: String,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let wanted = state.clone();
        let reached = state_reached(&*self.session()?, timeout, move |s| s == wanted);
        awaitable(py, reached, move |py, now| {
            Ok((now == state)
                .into_pyobject(py)?
                .to_owned()
                .into_any()
                .unbind())
        })
    }

    /// Calls a batch subroutine, waiting for the link if it is down; `hedge_after=` as
    /// `Client.call`'s.
    #[pyo3(signature = (name, *args, hedge_after=None, **kwargs))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        name: String,
        args: &Bound<'py, PyTuple>,
        hedge_after: Option<f64>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let session = self.session()?;
        let json = args::encode(py, args, kwargs)?;
        let hedge = client::seconds("hedge_after", hedge_after)?;
        let call = async move { client::call(session.connected().await?, name, json, hedge).await };
        awaitable(py, call, bytes)
    }

    /// Subscribes to a stream subroutine: `async for` over what it returns, resuming by
    /// itself after a reconnect from the item after the last one received.
    #[pyo3(signature = (name, *args, delivery="reliable", max_age=None, priority=0, deliver_late=false, fec_percent=None, **kwargs))]
    fn subscribe<'py>(
        &self,
        py: Python<'py>,
        name: String,
        args: &Bound<'py, PyTuple>,
        delivery: &str,
        max_age: Option<f64>,
        priority: i32,
        deliver_late: bool,
        fec_percent: Option<u8>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = subscribe_options(delivery, max_age, priority, (deliver_late, fec_percent))?;
        let session = self.session()?;
        let json = args::encode(py, args, kwargs)?;
        awaitable(
            py,
            async move {
                let subscribed = session.subscribe(&name, &Json(json), &options).await;
                subscribed.map(Source::Resuming)
            },
            items,
        )
    }

    /// Stops reconnecting and closes the connection.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(session) = taken else {
            return ready(py, Ok(py.None()));
        };
        awaitable(py, async move { session.close().await }, |py, ()| {
            Ok(py.None())
        })
    }

    fn __aenter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let py = slf.py();
        ready(py, Ok(slf.into_any().unbind()))
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }
}

impl AsyncSession {
    fn session(&self) -> PyResult<Arc<quicswarm::Session>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the session is closed"))
    }
}
