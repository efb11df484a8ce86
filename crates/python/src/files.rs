//! Files from Python: `list`, `download` and `upload`, spread over a swarm of connections to
//! the client's gateway. The blocking client reports progress on the caller's thread (the
//! callback runs where the call waits, never on the runtime's workers); the asyncio client on
//! its event loop. Both run the same [`job`].

use std::{path::PathBuf, sync::Arc};

use pyo3::{prelude::*, types::PyDict};
use quicswarm::files::{
    Listing, Progress, Selector, Swarm, TransferError, TransferOptions, TransferSummary,
};

use crate::{errors, runtime};

/// The selector of a listing or download.
pub(crate) fn selector(
    glob: Option<String>,
    regex: Option<String>,
    paths: Option<Vec<String>>,
    recursive: bool,
) -> Selector {
    Selector {
        glob,
        regex,
        paths: paths.unwrap_or_default(),
        recursive,
        ..Selector::default()
    }
}

/// The files of `root` that `selector` picks, as dicts.
pub(crate) fn list<'py>(
    py: Python<'py>,
    client: quicswarm::Client,
    root: String,
    selector: Selector,
    hash: bool,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let listing = runtime::wait(
        py,
        async move { client.list_with(&root, &selector, hash).await },
    )?
    .map_err(errors::call)?;
    listing_dicts(py, &listing)
}

/// A listing as dicts: `path`, `size`, `mtime` (seconds), `mode`, `hash` (hex, or `None`).
pub(crate) fn listing_dicts<'py>(
    py: Python<'py>,
    listing: &Listing,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    listing
        .entries
        .iter()
        .map(|e| {
            let d = PyDict::new(py);
            d.set_item("path", &e.path)?;
            d.set_item("size", e.size)?;
            d.set_item(
                "mtime",
                e.mtime.secs as f64 + f64::from(e.mtime.nanos) / 1e9,
            )?;
            d.set_item("mode", e.mode)?;
            d.set_item(
                "hash",
                e.hash
                    .map(|h| h.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            )?;
            Ok(d)
        })
        .collect()
}

/// Where a transfer goes.
pub(crate) enum Direction {
    Download {
        root: String,
        selector: Selector,
        dest: PathBuf,
    },
    Upload {
        paths: Vec<PathBuf>,
        dest: String,
    },
}

/// A transfer over `swarm` connections: the client's and `swarm - 1` more (fewer if the
/// gateway's pool fills up), closed after.
pub(crate) async fn job(
    controller: quicswarm::Controller,
    client: quicswarm::Client,
    addr: String,
    swarm: usize,
    direction: Direction,
    options: TransferOptions,
) -> Result<TransferSummary, JobError> {
    let swarm = Swarm::around(&controller, &addr, client, swarm)
        .await
        .map_err(JobError::Connect)?;
    let result = match direction {
        Direction::Download {
            root,
            selector,
            dest,
        } => swarm.download(&root, &selector, dest, &options).await,
        Direction::Upload { paths, dest } => swarm.upload(&paths, &dest, &options).await,
    }
    .map_err(JobError::Transfer);
    // The caller's own client stays open.
    for c in &swarm.clients()[1..] {
        let _ = c.clone().close().await;
    }
    result
}

/// Why a transfer job failed: opening its extra connections, or the transfer.
pub(crate) enum JobError {
    Connect(quicswarm::ConnectError),
    Transfer(TransferError),
}

impl JobError {
    /// The Python exception.
    pub(crate) fn into_py(self) -> PyErr {
        match self {
            Self::Connect(e) => errors::connect(e),
            Self::Transfer(e) => errors::transfer(e),
        }
    }
}

/// Runs a transfer, waiting on the caller's thread, and returns its summary as a dict;
/// `progress(dict)` is called there as files and ranges land.
pub(crate) fn transfer<'py>(
    py: Python<'py>,
    controller: quicswarm::Controller,
    client: quicswarm::Client,
    addr: String,
    swarm: usize,
    direction: Direction,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let (tx, rx) = std::sync::mpsc::channel::<Progress>();
    let mut options = TransferOptions::default();
    if progress.is_some() {
        options.progress = Some(Arc::new(move |p: &Progress| {
            // The receiver is gone once the transfer has returned: nothing to report to.
            let _ = tx.send(*p);
        }));
    }
    let report = |py: Python<'_>| -> PyResult<()> {
        if let Some(callback) = &progress {
            for p in rx.try_iter() {
                callback.call1(py, (progress_dict(py, &p)?,))?;
            }
        }
        Ok(())
    };
    let job = job(controller, client, addr, swarm, direction, options);
    let summary = runtime::wait_reporting(py, job, report)?;
    report(py)?;
    summary_dict(py, &summary.map_err(JobError::into_py)?)
}

/// A progress report as a dict.
pub(crate) fn progress_dict<'py>(py: Python<'py>, p: &Progress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("files_done", p.files_done)?;
    d.set_item("files_total", p.files_total)?;
    d.set_item("bytes_done", p.bytes_done)?;
    d.set_item("bytes_total", p.bytes_total)?;
    d.set_item("skipped", p.skipped)?;
    d.set_item("seconds", p.elapsed.as_secs_f64())?;
    Ok(d)
}

/// A transfer's summary as a dict.
pub(crate) fn summary_dict<'py>(
    py: Python<'py>,
    s: &TransferSummary,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("files", s.files)?;
    d.set_item("bytes", s.bytes)?;
    d.set_item("skipped", s.skipped)?;
    d.set_item("seconds", s.seconds)?;
    d.set_item("verified", &s.verified)?;
    Ok(d)
}
