//! `quicswarm.Session`: a client that reconnects by itself after an outage or a gateway
//! restart, resuming its subscriptions after the last item received.

use std::sync::Arc;

use pyo3::{
    exceptions::PyRuntimeError,
    prelude::*,
    types::{PyBytes, PyDict, PyTuple},
};
use quicswarm::{Json, LinkState, ReconnectPolicy};

use crate::{
    args,
    client::{self, subscribe_options},
    errors,
    items::{ItemIter, Source},
    runtime,
};

/// A client to one gateway that survives outages: calls wait for the link to come back
/// (within the timeout), subscriptions resume by themselves. `state` is `"connected"`,
/// `"reconnecting"` or `"closed"`; `wait_state_change()` blocks until it changes.
///
/// ```python
/// session = quicswarm.Session(controller, "robot.local:1857")
/// for ident, frame in session.subscribe("camera", delivery="latest"):
///     ...  # keeps going across Wi-Fi drops
/// ```
#[pyclass(module = "quicswarm")]
pub(crate) struct Session {
    /// Behind a lock, so that `close()` works while another thread's call waits on it.
    inner: std::sync::Mutex<Option<Arc<quicswarm::Session>>>,
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (controller, addr, max_attempts=None))]
    fn new(
        py: Python<'_>,
        controller: PyRef<'_, client::Controller>,
        addr: String,
        max_attempts: Option<u32>,
    ) -> PyResult<Self> {
        let controller = controller.handle();
        let mut policy = ReconnectPolicy::default();
        policy.max_attempts = max_attempts;
        let session = runtime::wait(py, async move {
            quicswarm::Session::connect(&controller, &addr, policy).await
        })?
        .map_err(errors::connect)?;
        Ok(Self {
            inner: std::sync::Mutex::new(Some(Arc::new(session))),
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

    /// Waits (at most `timeout` seconds) until the state is no longer what it is now;
    /// returns the state then (unchanged if the time ran out).
    #[pyo3(signature = (timeout=30.0))]
    fn wait_state_change(&self, py: Python<'_>, timeout: f64) -> PyResult<&'static str> {
        let now = self.state();
        self.wait_until(py, timeout, move |s| s != now)
    }

    /// Waits (at most `timeout` seconds) for `state`; whether it came.
    #[pyo3(signature = (state, timeout=30.0))]
    fn wait_for(&self, py: Python<'_>, state: String, timeout: f64) -> PyResult<bool> {
        let reached = self.wait_until(py, timeout, move |s| s == state)?;
        Ok(reached == self.state())
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
    ) -> PyResult<Bound<'py, PyBytes>> {
        let session = self.session()?;
        let json = args::encode(py, args, kwargs)?;
        let hedge = client::seconds("hedge_after", hedge_after)?;
        let call = async move { client::call(session.connected().await?, name, json, hedge).await };
        let reply = runtime::wait(py, call)?.map_err(errors::call)?;
        Ok(PyBytes::new(py, &reply))
    }

    /// Subscribes to a stream subroutine; the iterator (a `quicswarm.ItemIter`) resumes by
    /// itself after a reconnect, from the item after the last one received.
    #[pyo3(signature = (name, *args, delivery="reliable", max_age=None, priority=0, deliver_late=false, fec_percent=None, **kwargs))]
    fn subscribe(
        &self,
        py: Python<'_>,
        name: String,
        args: &Bound<'_, PyTuple>,
        delivery: &str,
        max_age: Option<f64>,
        priority: i32,
        deliver_late: bool,
        fec_percent: Option<u8>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ItemIter> {
        let options = subscribe_options(delivery, max_age, priority, (deliver_late, fec_percent))?;
        let session = self.session()?;
        let json = args::encode(py, args, kwargs)?;
        let stream = runtime::wait(py, async move {
            session.subscribe(&name, &Json(json), &options).await
        })?
        .map_err(errors::call)?;
        Ok(ItemIter::new(Source::Resuming(stream)))
    }

    /// Stops reconnecting and closes the connection.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(session) = taken {
            runtime::wait(py, async move { session.close().await })?;
        }
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl Session {
    /// Waits until `done(state name)` holds or `timeout` passes; the state name then.
    fn wait_until(
        &self,
        py: Python<'_>,
        timeout: f64,
        done: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> PyResult<&'static str> {
        let session = self.session()?;
        runtime::wait(py, state_reached(&session, timeout, done))
    }

    /// The Rust session, for the asyncio one that shares it.
    pub(crate) fn handle(&self) -> PyResult<Arc<quicswarm::Session>> {
        self.session()
    }

    fn session(&self) -> PyResult<Arc<quicswarm::Session>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the session is closed"))
    }
}

/// Waits until `done(state name)` holds or `timeout` (seconds) passes; the state name then.
pub(crate) fn state_reached(
    session: &quicswarm::Session,
    timeout: f64,
    done: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> impl std::future::Future<Output = &'static str> + Send + 'static {
    let mut states = session.watch_state();
    let limit = std::time::Duration::from_secs_f64(timeout.max(0.0));
    async move {
        let reached = tokio::time::timeout(limit, states.wait_for(|s| done(state_name(*s))))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|state| state_name(*state));
        reached.unwrap_or_else(|| state_name(*states.borrow()))
    }
}

/// How Python names a link state.
pub(crate) fn state_name(state: LinkState) -> &'static str {
    match state {
        LinkState::Connected => "connected",
        LinkState::Reconnecting { .. } => "reconnecting",
        _ => "closed",
    }
}
