//! `quicswarm.aio.AsyncClient`: every operation of `quicswarm.Client`, awaited.

use std::sync::Arc;

use pyo3::{
    exceptions::PyTypeError,
    prelude::*,
    types::{PyDict, PyTuple},
};
use quicswarm::{
    files::{Progress, TransferOptions},
    Json,
};

use super::{awaitable, awaitable_with, bytes, done, items, ready, value, Target};
use crate::{
    args, buffer,
    client::{call, seconds, stats_dict, subscribe_options, Client},
    errors,
    files::{self, Direction},
    items::Source,
};

/// A client whose operations are awaited: `await client.call("echo", "hi")`. Cancelling the
/// task that awaits one cancels it on the gateway. `async with` closes it.
#[pyclass(module = "quicswarm.aio")]
pub(crate) struct AsyncClient {
    inner: quicswarm::Client,
    /// For the extra connections of a swarm transfer.
    controller: quicswarm::Controller,
    addr: String,
}

#[pymethods]
impl AsyncClient {
    /// Wraps a (blocking) client's connection; both may be used.
    #[new]
    fn new(client: PyRef<'_, Client>) -> PyResult<Self> {
        let (controller, addr) = client.swarm_parts();
        Ok(Self {
            inner: client.connection()?,
            controller,
            addr,
        })
    }

    /// A round trip, in seconds.
    fn ping<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        let rtt = async move { client.ping().await.map(|rtt| rtt.as_secs_f64()) };
        awaitable(py, rtt, value)
    }

    /// Calls a batch subroutine; its bytes. `hedge_after=` as `Client.call`'s.
    #[pyo3(signature = (name, *args, hedge_after=None, **kwargs))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        name: String,
        args: &Bound<'py, PyTuple>,
        hedge_after: Option<f64>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let json = args::encode(py, args, kwargs)?;
        let hedge = seconds("hedge_after", hedge_after)?;
        awaitable(py, call(self.inner.clone(), name, json, hedge), bytes)
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
        let data =
            buffer::to_bytes(buffer).map_err(|_| PyTypeError::new_err(buffer::SEND_TAKES))?;
        let client = self.inner.clone();
        awaitable(
            py,
            async move { client.send(&name, &Json(json), data).await },
            value,
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
            async move { client.stream(&name, &Json(json)).await.map(Source::Items) },
            items,
        )
    }

    /// Subscribes to a feed with `delivery="reliable" | "latest" | "datagram" | "unordered" |
    /// "redundant" | "fec"`, `max_age`
    /// and `priority` as `quicswarm.Client.subscribe` does: `async for` over what it returns.
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
        let json = args::encode(py, args, kwargs)?;
        let client = self.inner.clone();
        awaitable(
            py,
            async move {
                let subscribed = client.subscribe(&name, &Json(json), &options).await;
                subscribed.map(Source::Items)
            },
            items,
        )
    }

    /// The files of gateway root `root` the selection picks, as dicts (as
    /// `quicswarm.Client.list`).
    #[pyo3(signature = (root, glob=None, regex=None, paths=None, recursive=true, hash=false))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        root: String,
        glob: Option<String>,
        regex: Option<String>,
        paths: Option<Vec<String>>,
        recursive: bool,
        hash: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let selector = files::selector(glob, regex, paths, recursive);
        let client = self.inner.clone();
        awaitable(
            py,
            async move { client.list_with(&root, &selector, hash).await },
            |py, listing| {
                let dicts = files::listing_dicts(py, &listing.map_err(errors::call)?)?;
                Ok(dicts.into_pyobject(py)?.into_any().unbind())
            },
        )
    }

    /// Downloads as `quicswarm.Client.download` does; `progress(dict)` runs on the event loop,
    /// and an exception from it cancels the download and is raised here.
    #[pyo3(signature = (root, dest, glob=None, regex=None, paths=None, recursive=true, swarm=4, progress=None))]
    fn download<'py>(
        &self,
        py: Python<'py>,
        root: String,
        dest: std::path::PathBuf,
        glob: Option<String>,
        regex: Option<String>,
        paths: Option<Vec<String>>,
        recursive: bool,
        swarm: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let selector = files::selector(glob, regex, paths, recursive);
        let direction = Direction::Download {
            root,
            selector,
            dest,
        };
        self.transfer(py, swarm, direction, progress)
    }

    /// Uploads as `quicswarm.Client.upload` does, with `progress` as for `download`.
    #[pyo3(signature = (paths, dest=String::new(), swarm=4, progress=None))]
    fn upload<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<std::path::PathBuf>,
        dest: String,
        swarm: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.transfer(py, swarm, Direction::Upload { paths, dest }, progress)
    }

    /// The connection's statistics (not awaited: nothing to wait for).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.inner)
    }

    /// Asks the gateway to shut down (it must allow it).
    fn close_gateway<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        awaitable(py, async move { client.close_gateway().await }, done)
    }

    /// Closes the client politely.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        awaitable(py, async move { client.close().await }, done)
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

impl AsyncClient {
    /// A swarm transfer whose progress reports are posted to the loop before its result.
    fn transfer<'py>(
        &self,
        py: Python<'py>,
        swarm: usize,
        direction: Direction,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (tx, mut rx) = tokio::sync::watch::channel(None::<Progress>);
        let mut options = TransferOptions::default();
        if progress.is_some() {
            options.progress = Some(Arc::new(move |p: &Progress| {
                tx.send_replace(Some(*p));
            }));
        }
        // The job owns the sender: when it ends, the reporter has seen its last report.
        let job = files::job(
            self.controller.clone(),
            self.inner.clone(),
            self.addr.clone(),
            swarm,
            direction,
            options,
        );
        awaitable_with(
            py,
            move |target: Target| async move {
                let report = async move {
                    let Some(callback) = progress else { return };
                    // Reports that came while one was being posted are folded into the latest.
                    while rx.changed().await.is_ok() {
                        let Some(p) = *rx.borrow_and_update() else {
                            continue;
                        };
                        Python::attach(|py| {
                            let posted = files::progress_dict(py, &p).and_then(|d| {
                                let args = vec![
                                    callback.clone_ref(py),
                                    target.future.clone_ref(py),
                                    d.into_any().unbind(),
                                ];
                                target.post(py, "_progress", args)
                            });
                            // A closed loop: nobody to report to.
                            drop(posted);
                        });
                    }
                };
                let (summary, ()) = tokio::join!(job, report);
                summary
            },
            |py, summary| {
                let summary = summary.map_err(files::JobError::into_py)?;
                Ok(files::summary_dict(py, &summary)?.into_any().unbind())
            },
        )
    }
}
