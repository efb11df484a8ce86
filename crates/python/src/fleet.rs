//! Fleets from Python: `Fleet(path)` runs one operation on every gateway of a fleet file and
//! returns an iterator of `FleetResult`s in the order the gateways finish. The operation runs
//! on the runtime meanwhile; the iterator waits without the GIL, and dropping it (or leaving
//! the loop) stops what is still running.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use pyo3::{
    exceptions::{PyTypeError, PyValueError},
    prelude::*,
    types::{PyBytes, PyDict, PyTuple},
};
use quicswarm::{
    files::{Listing, TransferOptions, TransferSummary},
    fleet::{FleetError, FleetOptions, FleetResult as Done, Member},
    ErrorCode, Fingerprint, Json,
};
use tokio::sync::{mpsc, Mutex};

use crate::{args, buffer, client::Controller, errors, files, runtime};

/// Results buffered between the runtime and a slow Python loop.
const BUFFERED: usize = 64;

/// Many gateways through one controller; see `quicswarm.Fleet` in the type stubs.
#[pyclass(module = "quicswarm")]
pub(crate) struct Fleet {
    inner: quicswarm::fleet::Fleet,
}

#[pymethods]
impl Fleet {
    /// A fleet read from a fleet file (`path`: `name address [fingerprint]` lines) or given
    /// as `members` (`(name, address)` or `(name, address, fingerprint)` tuples), reached
    /// through `controller` (default: a new `Controller()`). `concurrency` gateways are worked
    /// on at once; `timeout` (seconds) bounds each gateway's part; `swarm` is the number of
    /// connections per gateway for downloads and uploads.
    #[new]
    #[pyo3(signature = (path=None, members=None, controller=None, concurrency=64, timeout=None, swarm=1))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        members: Option<Vec<Bound<'_, PyTuple>>>,
        controller: Option<PyRef<'_, Controller>>,
        concurrency: usize,
        timeout: Option<f64>,
        swarm: usize,
    ) -> PyResult<Self> {
        let members = match (path, members) {
            (Some(path), None) => quicswarm::fleet::load(&path).map_err(invalid)?,
            (None, Some(list)) => list.iter().map(member).collect::<PyResult<Vec<Member>>>()?,
            _ => {
                return Err(PyTypeError::new_err(
                    "give a fleet file path or members=, not both",
                ))
            }
        };
        let controller = match controller {
            Some(c) => c.handle(),
            None => {
                let made = runtime::wait(py, async {
                    quicswarm::Controller::new(quicswarm::ControllerConfig::default())
                })?;
                made.map_err(errors::connect)?
            }
        };
        let timeout = timeout
            .map(Duration::try_from_secs_f64)
            .transpose()
            .map_err(|e| PyValueError::new_err(format!("timeout: {e}")))?;
        let options = FleetOptions {
            concurrency: concurrency.max(1),
            timeout,
            swarm: swarm.max(1),
            observer: None,
        };
        let inner = quicswarm::fleet::Fleet::new(controller, members)
            .map_err(invalid)?
            .with_options(options);
        Ok(Self { inner })
    }

    /// The members as `(name, address, fingerprint or None)`, in the file's order.
    #[getter]
    fn members(&self) -> Vec<(String, String, Option<String>)> {
        self.inner
            .members()
            .map(|m| {
                let fp = m.fingerprint.map(|f| f.to_string());
                (m.name.clone(), m.addr.clone(), fp)
            })
            .collect()
    }

    /// One ping to every gateway; each result's `value` is the round trip in seconds.
    fn ping(&self) -> PyResult<FleetResults> {
        FleetResults::run(self.inner.ping(), |rtt| Value::Seconds(rtt.as_secs_f64()))
    }

    /// Calls the batch subroutine `name` on every gateway; `value` is its bytes.
    #[pyo3(signature = (name, *args, **kwargs))]
    fn call(
        &self,
        py: Python<'_>,
        name: String,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<FleetResults> {
        let json = args::encode(py, args, kwargs)?;
        FleetResults::run(self.inner.call(&name, &Json(json)), Value::Bytes)
    }

    /// Sends `buffer` to the sink subroutine `name` on every gateway; `value` is its int.
    #[pyo3(signature = (name, buffer, *args, **kwargs))]
    fn send(
        &self,
        py: Python<'_>,
        name: String,
        buffer: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<FleetResults> {
        let json = args::encode(py, args, kwargs)?;
        let data =
            buffer::to_bytes(buffer).map_err(|_| PyTypeError::new_err(buffer::SEND_TAKES))?;
        FleetResults::run(self.inner.send(&name, &Json(json), data), Value::Int)
    }

    /// Lists root `root` of every gateway; `value` is a list of dicts as `Client.list` gives.
    #[pyo3(signature = (root, glob=None, regex=None, paths=None, recursive=true))]
    fn list(
        &self,
        root: String,
        glob: Option<String>,
        regex: Option<String>,
        paths: Option<Vec<String>>,
        recursive: bool,
    ) -> PyResult<FleetResults> {
        let selector = files::selector(glob, regex, paths, recursive);
        FleetResults::run(self.inner.list(&root, &selector), Value::Listing)
    }

    /// Downloads root `root` of every gateway into `dest/{name}/` (run again, each moves
    /// only what its folder lacks); `value` is the summary dict `Client.download` returns.
    #[pyo3(signature = (root, dest, glob=None, regex=None, paths=None, recursive=true))]
    fn download(
        &self,
        root: String,
        dest: PathBuf,
        glob: Option<String>,
        regex: Option<String>,
        paths: Option<Vec<String>>,
        recursive: bool,
    ) -> PyResult<FleetResults> {
        let selector = files::selector(glob, regex, paths, recursive);
        let options = TransferOptions::default();
        let done = self.inner.download(&root, &selector, dest, &options);
        FleetResults::run(done, Value::Summary)
    }

    /// Uploads local files and folders into `dest` below every gateway's upload folder.
    #[pyo3(signature = (paths, dest=String::new()))]
    fn upload(&self, paths: Vec<PathBuf>, dest: String) -> PyResult<FleetResults> {
        let done = self
            .inner
            .upload(&paths, &dest, &TransferOptions::default());
        FleetResults::run(done, Value::Summary)
    }

    fn __len__(&self) -> usize {
        self.inner.members().len()
    }
}

fn member(t: &Bound<'_, PyTuple>) -> PyResult<Member> {
    let (name, addr, fp): (String, String, Option<String>) = match t.len() {
        2 => {
            let (name, addr) = t.extract()?;
            (name, addr, None)
        }
        3 => t.extract()?,
        n => {
            return Err(PyTypeError::new_err(format!(
                "a member is (name, address[, fingerprint]), not {n} values"
            )))
        }
    };
    let fingerprint = fp
        .map(|f| f.parse::<Fingerprint>())
        .transpose()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Member::new(name, addr, fingerprint).map_err(invalid)
}

fn invalid(e: quicswarm::fleet::FleetFileError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// What one gateway's part produced, before it becomes a Python object.
enum Value {
    Seconds(f64),
    Bytes(Bytes),
    Int(i64),
    Listing(Listing),
    Summary(TransferSummary),
}

impl Value {
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Self::Seconds(s) => s.into_pyobject(py)?.into_any().unbind(),
            Self::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
            Self::Int(n) => n.into_pyobject(py)?.into_any().unbind(),
            Self::Listing(l) => files::listing_dicts(py, &l)?
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            Self::Summary(s) => files::summary_dict(py, &s)?.into_any().unbind(),
        })
    }
}

/// The exception a failed gateway's part would have raised.
fn exception(py: Python<'_>, e: FleetError) -> Py<PyAny> {
    let err = match e {
        FleetError::Connect(e) => errors::connect(e),
        FleetError::Call(e) => errors::call(e),
        FleetError::Transfer(e) => errors::transfer(e),
        FleetError::Timeout(limit) => errors::raise(
            "Timeout",
            format!("no result within {limit:?}"),
            Some(ErrorCode::Timeout),
        ),
        other => errors::raise("Error", other.to_string(), None),
    };
    err.value(py).clone().into_any().unbind()
}

struct Finished {
    gateway: String,
    addr: String,
    seconds: f64,
    result: Result<Value, FleetError>,
}

/// The results of a fleet operation, as each gateway finishes: iterate it (`for r in ...`)
/// or `list()` it. Leaving the loop early stops the gateways still running.
#[pyclass(module = "quicswarm")]
pub(crate) struct FleetResults {
    rx: Arc<Mutex<mpsc::Receiver<Finished>>>,
    task: tokio::task::AbortHandle,
}

impl FleetResults {
    fn run<T, S>(results: S, value: fn(T) -> Value) -> PyResult<Self>
    where
        S: Stream<Item = Done<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = mpsc::channel(BUFFERED);
        let task = runtime::handle()?.spawn(async move {
            let mut results = std::pin::pin!(results);
            while let Some(done) = results.next().await {
                let finished = Finished {
                    gateway: done.gateway.to_string(),
                    addr: done.addr.to_string(),
                    seconds: done.elapsed.as_secs_f64(),
                    result: done.result.map(value),
                };
                if tx.send(finished).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            rx: Arc::new(Mutex::new(rx)),
            task: task.abort_handle(),
        })
    }
}

impl Drop for FleetResults {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[pymethods]
impl FleetResults {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<FleetResult>> {
        let rx = self.rx.clone();
        let next = runtime::wait(py, async move { rx.lock().await.recv().await });
        let finished = match next {
            Ok(Some(finished)) => finished,
            Ok(None) => return Ok(None),
            Err(interrupted) => {
                self.task.abort();
                return Err(interrupted);
            }
        };
        let (value, error) = match finished.result {
            Ok(v) => (v.into_py(py)?, None),
            Err(e) => (py.None(), Some(exception(py, e))),
        };
        Ok(Some(FleetResult {
            gateway: finished.gateway,
            addr: finished.addr,
            ok: error.is_none(),
            value,
            error,
            seconds: finished.seconds,
        }))
    }

    /// Stops the gateways still running.
    fn close(&self) {
        self.task.abort();
    }
}

/// One gateway's result: `gateway`, `addr`, `ok`, `value` (None on failure), `error` (the
/// exception, e.g. `quicswarm.Timeout`, or None) and `seconds` (its part, connection
/// included).
#[pyclass(module = "quicswarm", get_all)]
pub(crate) struct FleetResult {
    gateway: String,
    addr: String,
    ok: bool,
    value: Py<PyAny>,
    error: Option<Py<PyAny>>,
    seconds: f64,
}

#[pymethods]
impl FleetResult {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let what = match &self.error {
            Some(e) => format!("error={}", e.bind(py).repr()?),
            None => format!("value={}", self.value.bind(py).repr()?),
        };
        Ok(format!(
            "FleetResult(gateway={:?}, ok={}, {what}, seconds={:.4})",
            self.gateway,
            if self.ok { "True" } else { "False" },
            self.seconds
        ))
    }
}
