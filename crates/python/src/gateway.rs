//! `quicswarm.Gateway`: registers Python functions as subroutines and serves them.
//!
//! Every Python subroutine runs on tokio's blocking pool, never on the runtime's workers, and
//! takes the GIL only while Python code runs: a slow subroutine holds one thread, not the
//! gateway. A subroutine that raises fails only its request; the caller gets the exception's
//! type and message.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use bytes::Bytes;
use pyo3::{
    exceptions::{PyRuntimeError, PyTypeError, PyValueError},
    prelude::*,
    types::{PyBytes, PyDict, PyString},
};
use quicswarm::{Emitter, Registry};

use crate::{
    args::{self, JsonArgs},
    buffer, errors, runtime,
};

/// A gateway: a server of subroutines and files on one UDP port.
///
/// ```python
/// gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir="certs")
/// gw.add_subroutine("echo", lambda text: text)
/// gw.start()                 # in the background; start(blocking=True) serves until closed
/// print(gw.local_addr, gw.fingerprint)
/// ```
#[pyclass(module = "quicswarm", subclass)]
pub(crate) struct Gateway {
    registry: Registry,
    listen: SocketAddr,
    pool_size: usize,
    cert_dir: PathBuf,
    serve: BTreeMap<String, PathBuf>,
    upload_dir: Option<PathBuf>,
    allow_close: bool,
    client_ca: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    /// Behind a lock, so that `close()` works from inside a subroutine, or from another
    /// thread while `start(blocking=True)` waits.
    running: std::sync::Mutex<Option<quicswarm::Gateway>>,
}

#[pymethods]
impl Gateway {
    #[new]
    #[pyo3(signature = (listen="0.0.0.0:1857", pool_size=5, cert_dir=PathBuf::from("certs"), serve=None, upload_dir=None, allow_close=false, client_ca=None, metrics=None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn new(
        listen: &str,
        pool_size: usize,
        cert_dir: PathBuf,
        serve: Option<BTreeMap<String, PathBuf>>,
        upload_dir: Option<PathBuf>,
        allow_close: bool,
        client_ca: Option<PathBuf>,
        metrics: Option<&str>,
    ) -> PyResult<Self> {
        let listen = listen
            .parse()
            .map_err(|e| PyValueError::new_err(format!("listen={listen:?}: {e}")))?;
        let metrics = metrics
            .map(|addr| {
                addr.parse()
                    .map_err(|e| PyValueError::new_err(format!("metrics={addr:?}: {e}")))
            })
            .transpose()?;
        Ok(Self {
            registry: Registry::new(),
            listen,
            pool_size,
            cert_dir,
            serve: serve.unwrap_or_default(),
            upload_dir,
            allow_close,
            client_ca,
            metrics,
            running: std::sync::Mutex::default(),
        })
    }

    /// Registers `fn` under `name`: a generator function (or an object whose `__call__` is
    /// one) becomes a *stream* subroutine, each item an `(ident, bytes)` pair (an ident below
    /// 0 ends it); any other callable a *batch* one returning `bytes`, `bytearray`,
    /// `memoryview` or `str`. `kind="stream"` or `kind="batch"` says it outright, for a plain
    /// function that returns a generator. `replay_safe=True` declares that running it twice
    /// does no harm (a query, not a command): it may then run from 0-RTT early data, and
    /// clients may hedge its calls.
    #[pyo3(signature = (name, r#fn, kind=None, replay_safe=false))]
    fn add_subroutine(
        &self,
        py: Python<'_>,
        name: &str,
        r#fn: Py<PyAny>,
        kind: Option<&str>,
        replay_safe: bool,
    ) -> PyResult<()> {
        let function = r#fn.bind(py);
        if !function.is_callable() {
            return Err(PyTypeError::new_err(format!("{name}: not callable")));
        }
        let is_generator = match kind {
            Some("stream") => true,
            Some("batch") => false,
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "kind={other:?}: \"stream\" or \"batch\""
                )))
            }
            None => is_generator_function(py, function)?,
        };
        if is_generator {
            self.registry
                .stream_blocking(name, move |value: JsonArgs, emitter: &mut Emitter| {
                    Python::attach(|py| run_generator(py, &r#fn, &value, emitter))
                });
        } else {
            self.registry.batch_blocking(name, move |value: JsonArgs| {
                Python::attach(|py| -> Result<Bytes, String> {
                    let result = call(py, &r#fn, &value, None)?;
                    to_bytes(&result).map_err(|e| describe(py, &e))
                })
            });
        }
        self.registry.set_replay_safe(name, replay_safe);
        Ok(())
    }

    /// Registers `fn` as a *sink* under `name`: it is called with the caller's arguments and
    /// the received buffer as `buffer=` (bytes), and returns an int (nothing counts as 0).
    fn add_sink(&self, py: Python<'_>, name: &str, r#fn: Py<PyAny>) -> PyResult<()> {
        if !r#fn.bind(py).is_callable() {
            return Err(PyTypeError::new_err(format!("{name}: not callable")));
        }
        self.registry
            .sink_blocking(name, move |value: JsonArgs, buffer: Bytes| {
                Python::attach(|py| -> Result<i64, String> {
                    let result = call(py, &r#fn, &value, Some(&buffer))?;
                    if result.is_none() {
                        return Ok(0);
                    }
                    result.extract::<i64>().map_err(|_| {
                        format!(
                            "TypeError: a sink returns an int or None, not {}",
                            type_name(&result)
                        )
                    })
                })
            });
        Ok(())
    }

    /// Starts serving. With `blocking=True`, serves until the gateway is closed (by
    /// `close()`, an allowed `close_gateway`, or Ctrl-C, which closes it).
    #[pyo3(signature = (blocking=false))]
    fn start(&self, py: Python<'_>, blocking: bool) -> PyResult<()> {
        if self.running().is_none() {
            let mut builder = quicswarm::Gateway::builder()
                .listen(self.listen)
                .pool_size(self.pool_size)
                .cert_dir(self.cert_dir.clone())
                .allow_close(self.allow_close)
                .registry(self.registry.clone());
            for (name, dir) in &self.serve {
                builder = builder.serve(name.clone(), dir.clone());
            }
            if let Some(dir) = &self.upload_dir {
                builder = builder.upload_dir(dir.clone());
            }
            if let Some(addr) = self.metrics {
                builder = builder.metrics(addr);
            }
            if let Some(ca) = &self.client_ca {
                // Read at start (a bad file fails `start`) and again by `reload()`.
                builder = builder.client_ca_file(ca.clone());
            }
            // Not under the lock: the wait lets other Python threads run.
            let gateway = runtime::wait(py, builder.spawn())?.map_err(errors::gateway)?;
            // Two threads that started it at once: the second gateway is dropped (closed).
            self.running().get_or_insert(gateway);
        }
        if blocking {
            let closed = self.with_handle(|gateway| gateway.closed_owned())?;
            let served = runtime::wait(py, closed);
            if served.is_err() {
                // Ctrl-C: stop serving, then let the interrupt through.
                self.close(py)?;
            }
            served?;
        }
        Ok(())
    }

    /// Serves `dir` as the read root `name` (before `start`).
    fn serve(&mut self, name: String, dir: PathBuf) -> PyResult<()> {
        if self.running().is_some() {
            return Err(PyRuntimeError::new_err("serve() must come before start()"));
        }
        self.serve.insert(name, dir);
        Ok(())
    }

    /// Stops serving: in-flight operations get a short grace period. From inside a
    /// subroutine, that grace period is spent waiting for the subroutine itself.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.running().take();
        if let Some(gateway) = taken {
            runtime::wait(py, gateway.shutdown(Duration::from_secs(2)))?;
        }
        Ok(())
    }

    /// Reads the certificate folder (`cert_dir`) and the `client_ca` file again and serves
    /// with what they hold now; returns the fingerprint now served. New connections use the
    /// new certificate and CA, connections already up carry on. A file that cannot be read
    /// or parsed raises `quicswarm.Error` and the gateway goes on serving as before.
    fn reload(&self, py: Python<'_>) -> PyResult<String> {
        let reloaded = self.with_handle(quicswarm::Gateway::reload)?;
        let fingerprint = runtime::wait(py, reloaded)?.map_err(errors::gateway)?;
        Ok(fingerprint.to_string())
    }

    /// The certificate's SHA-256 fingerprint, for clients to pin.
    #[getter]
    fn fingerprint(&self) -> PyResult<String> {
        self.with_handle(|gateway| gateway.fingerprint().to_string())
    }

    /// The address the gateway listens on, `host:port`.
    #[getter]
    fn local_addr(&self) -> PyResult<String> {
        self.with_handle(|gateway| gateway.local_addr().to_string())
    }

    /// The metrics endpoint's address, `host:port` (`None` without `metrics=`): scrape
    /// `http://{metrics_addr}/metrics`.
    #[getter]
    fn metrics_addr(&self) -> PyResult<Option<String>> {
        self.with_handle(|gateway| gateway.metrics_addr().map(|a| a.to_string()))
    }

    /// The gateway's metrics now, in the Prometheus text format (what `/metrics` serves;
    /// available without `metrics=`).
    fn metrics(&self) -> PyResult<String> {
        self.with_handle(quicswarm::Gateway::metrics)
    }

    fn __enter__<'a>(slf: PyRef<'a, Self>, py: Python<'a>) -> PyResult<PyRef<'a, Self>> {
        slf.start(py, false)?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl Gateway {
    fn running(&self) -> std::sync::MutexGuard<'_, Option<quicswarm::Gateway>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_handle<T>(&self, f: impl FnOnce(&quicswarm::Gateway) -> T) -> PyResult<T> {
        self.running()
            .as_ref()
            .map(f)
            .ok_or_else(|| PyRuntimeError::new_err("the gateway is not started (call start())"))
    }
}

/// Whether `function` makes a generator: a generator function, one wrapped by decorators or
/// `functools.partial`, or an object whose `__call__` is one.
fn is_generator_function(py: Python<'_>, function: &Bound<'_, PyAny>) -> PyResult<bool> {
    let inspect = py.import("inspect")?;
    let check = |f: &Bound<'_, PyAny>| -> PyResult<bool> {
        let unwrapped = inspect.call_method1("unwrap", (f,))?;
        inspect
            .call_method1("isgeneratorfunction", (unwrapped,))?
            .is_truthy()
    };
    if check(function)? {
        return Ok(true);
    }
    if let Ok(inner) = function.getattr("func") {
        if inner.is_callable() && check(&inner)? {
            return Ok(true);
        }
    }
    match function.getattr("__call__") {
        Ok(call) if !function.is_instance_of::<pyo3::types::PyFunction>() => check(&call),
        _ => Ok(false),
    }
}

/// Calls `function` with the JSON arguments (and `buffer=` for a sink); a Python exception
/// becomes the `type: message` text the caller sees.
fn call<'py>(
    py: Python<'py>,
    function: &Py<PyAny>,
    value: &JsonArgs,
    buffer: Option<&Bytes>,
) -> Result<Bound<'py, PyAny>, String> {
    let (positional, keywords) = args::decode(py, value.text()).map_err(|e| describe(py, &e))?;
    if let Some(buffer) = buffer {
        keywords
            .set_item("buffer", PyBytes::new(py, buffer))
            .map_err(|e| describe(py, &e))?;
    }
    let keywords: Option<&Bound<'_, PyDict>> = (!keywords.is_empty()).then_some(&keywords);
    function
        .bind(py)
        .call(positional, keywords)
        .map_err(|e| describe(py, &e))
}

/// Runs a generator subroutine, emitting each item for the client; stops (closing the
/// generator) when the client has gone. The GIL is let go only while the queue is full.
fn run_generator(
    py: Python<'_>,
    function: &Py<PyAny>,
    value: &JsonArgs,
    emitter: &mut Emitter,
) -> Result<(), String> {
    let generator = call(py, function, value, None)?;
    let mut items = generator.try_iter().map_err(|e| describe(py, &e))?;
    loop {
        let item = match items.next() {
            None => return Ok(()),
            Some(item) => item.map_err(|e| describe(py, &e))?,
        };
        let pair: Result<(i64, Bound<'_, PyAny>), _> = item.extract();
        let Ok((ident, data)) = pair else {
            return Err(format!(
                "TypeError: a stream subroutine yields (ident, bytes) pairs, not {}",
                type_name(&item)
            ));
        };
        if ident < 0 {
            return Ok(());
        }
        let data = to_bytes(&data).map_err(|e| describe(py, &e))?;
        let sent = match emitter.try_emit(ident, data) {
            Ok(None) => Ok(()),
            Ok(Some((ident, data))) => py.detach(|| emitter.emit(ident, data)),
            Err(aborted) => Err(aborted),
        };
        if sent.is_err() {
            // The client has gone: the generator's `finally` blocks run now.
            let _ = generator.call_method0("close");
            return Ok(());
        }
    }
}

/// The bytes of a subroutine's result: `str` as UTF-8, anything with the buffer protocol as
/// [`buffer::to_bytes`] takes it (`bytes` with no copy).
fn to_bytes(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if value.is_instance_of::<PyString>() {
        return Ok(Bytes::from(value.extract::<String>()?));
    }
    buffer::to_bytes(value).map_err(|_| {
        PyTypeError::new_err(format!(
            "a subroutine returns bytes, bytearray, memoryview or str, not {}",
            type_name(value)
        ))
    })
}

/// `Type: message` of a Python exception.
fn describe(py: Python<'_>, error: &PyErr) -> String {
    let kind = error
        .get_type(py)
        .name()
        .map_or_else(|_| "Exception".to_string(), |n| n.to_string());
    format!("{kind}: {}", error.value(py))
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}
