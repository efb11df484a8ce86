//! `quicswarm.Controller` and `quicswarm.Client`: the calling side, blocking, with the GIL
//! released while waiting (other Python threads run) and Ctrl-C interrupting any wait.

use std::path::PathBuf;

use pyo3::{
    exceptions::{PyRuntimeError, PyTypeError},
    prelude::*,
    types::{PyBytes, PyDict, PyTuple},
};
use quicswarm::{ControllerConfig, Delivery, Fingerprint, Identity, Json, SubscribeOptions, Trust};

use crate::{
    args, buffer, errors, files,
    items::{ItemIter, Source},
    runtime,
};

/// One endpoint reaching any number of gateways.
///
/// Trust: a private CA (`ca=`), one pinned fingerprint (`fingerprint=`), or else trust on
/// first use pinned in a `known_gateways` file (the CLI's, unless `known_gateways=` names
/// another).
///
/// ```python
/// controller = quicswarm.Controller(fingerprint=gw.fingerprint)
/// with controller.get_client(gw.local_addr) as client:
///     print(client.call("echo", "hi"))
/// ```
#[pyclass(module = "quicswarm")]
pub(crate) struct Controller {
    inner: quicswarm::Controller,
}

#[pymethods]
impl Controller {
    #[new]
    #[pyo3(signature = (known_gateways=None, ca=None, fingerprint=None, cert=None, key=None, timeout=30.0))]
    fn new(
        py: Python<'_>,
        known_gateways: Option<PathBuf>,
        ca: Option<PathBuf>,
        fingerprint: Option<String>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        timeout: f64,
    ) -> PyResult<Self> {
        let trust = match (ca, fingerprint) {
            (Some(ca), _) => {
                Trust::ca_file(&ca).map_err(|e| errors::raise("Error", e.to_string(), None))?
            }
            (None, Some(fp)) => Trust::Fingerprints(vec![fp
                .parse::<Fingerprint>()
                .map_err(|e| errors::raise("Error", e.to_string(), None))?]),
            (None, None) => {
                Trust::KnownGateways(known_gateways.unwrap_or_else(Trust::default_known_gateways))
            }
        };
        let mut config = ControllerConfig::with_trust(trust);
        let timeout = std::time::Duration::try_from_secs_f64(timeout)
            .map_err(|e| PyTypeError::new_err(format!("timeout: {e}")))?;
        config.connect_timeout = timeout;
        config.call_timeout = Some(timeout);
        config.name = "quicswarm-python".into();
        match (cert, key) {
            (Some(cert), Some(key)) => {
                config.identity = Some(
                    Identity::from_pem_files(&cert, &key)
                        .map_err(|e| errors::raise("Error", e.to_string(), None))?,
                );
            }
            (None, None) => {}
            _ => return Err(PyTypeError::new_err("cert= and key= go together")),
        }
        // The endpoint's socket is registered with the runtime it is made on.
        let made = runtime::wait(py, async move { quicswarm::Controller::new(config) })?;
        Ok(Self {
            inner: made.map_err(errors::connect)?,
        })
    }

    /// A client of the gateway at `addr` (`host:port`, or `tcp://host:port`): one
    /// connection, one handler slot of the gateway's pool.
    fn get_client(&self, py: Python<'_>, addr: String) -> PyResult<Client> {
        let controller = self.inner.clone();
        let target = addr.clone();
        let client = runtime::wait(py, async move { controller.get_client(&target).await })?
            .map_err(errors::connect)?;
        Ok(Client {
            inner: std::sync::Mutex::new(Some(client)),
            controller: self.inner.clone(),
            addr,
        })
    }
}

impl Controller {
    /// The Rust controller, for sessions.
    pub(crate) fn handle(&self) -> quicswarm::Controller {
        self.inner.clone()
    }
}

/// A `delivery=` argument.
fn parse_delivery(delivery: &str) -> PyResult<Delivery> {
    match delivery {
        "reliable" => Ok(Delivery::Reliable),
        "latest" => Ok(Delivery::Latest),
        "datagram" => Ok(Delivery::Datagram),
        "unordered" => Ok(Delivery::Unordered),
        "redundant" => Ok(Delivery::Redundant),
        "fec" => Ok(Delivery::Fec),
        other => Err(PyTypeError::new_err(format!(
            "delivery={other:?}: \"reliable\", \"latest\", \"datagram\", \"unordered\", \"redundant\" or \"fec\""
        ))),
    }
}

/// The options of `subscribe(delivery=, max_age=, priority=, deliver_late=, fec_percent=)`.
pub(crate) fn subscribe_options(
    delivery: &str,
    max_age: Option<f64>,
    priority: i32,
    (deliver_late, fec_percent): (bool, Option<u8>),
) -> PyResult<SubscribeOptions> {
    let mut options = SubscribeOptions::delivery(parse_delivery(delivery)?);
    options.priority = priority;
    options.deliver_late = deliver_late;
    options.fec_percent = fec_percent;
    options.max_age = seconds("max_age", max_age)?;
    Ok(options)
}

/// An optional number of seconds from Python, checked (not negative, not NaN).
pub(crate) fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<std::time::Duration>> {
    value
        .map(std::time::Duration::try_from_secs_f64)
        .transpose()
        .map_err(|e| PyTypeError::new_err(format!("{name}: {e}")))
}

/// A call, hedged after `hedge` when given (both clients' `call`).
pub(crate) async fn call(
    client: quicswarm::Client,
    name: String,
    args: String,
    hedge: Option<std::time::Duration>,
) -> Result<bytes::Bytes, quicswarm::CallError> {
    match hedge {
        Some(after) => client.call_hedged(&name, &Json(args), after).await,
        None => client.call(&name, &Json(args)).await,
    }
}

/// A client's connection statistics as a dict.
pub(crate) fn stats_dict<'py>(
    py: Python<'py>,
    client: &quicswarm::Client,
) -> PyResult<Bound<'py, PyDict>> {
    let s = client.stats();
    let d = PyDict::new(py);
    d.set_item("rtt", s.rtt.as_secs_f64())?;
    d.set_item("sent_packets", s.sent_packets)?;
    d.set_item("lost_packets", s.lost_packets)?;
    d.set_item("congestion_events", s.congestion_events)?;
    d.set_item("cwnd", s.cwnd)?;
    d.set_item("bytes_sent", s.bytes_sent)?;
    d.set_item("bytes_received", s.bytes_received)?;
    Ok(d)
}

/// One handler/client pair: a connection to a gateway. Every operation is its own stream, so
/// a ping is answered while a big stream runs. A context manager: leaving it closes the
/// client and frees its handler slot.
#[pyclass(module = "quicswarm")]
pub(crate) struct Client {
    /// Behind a lock, so that `close()` works from inside a callback of this client's own
    /// `stream()`.
    inner: std::sync::Mutex<Option<quicswarm::Client>>,
    /// For the extra connections of a swarm transfer.
    controller: quicswarm::Controller,
    addr: String,
}

#[pymethods]
impl Client {
    /// A round trip; returns it in seconds.
    fn ping(&self, py: Python<'_>) -> PyResult<f64> {
        let client = self.client()?;
        let rtt = runtime::wait(py, async move { client.ping().await })?.map_err(errors::call)?;
        Ok(rtt.as_secs_f64())
    }

    /// Calls the batch subroutine `name`; returns its bytes. With `hedge_after=` (seconds),
    /// a replay-safe subroutine's call is sent again when no answer has come by then, and the
    /// first answer wins (`Client::call_hedged` in Rust): a lost packet on a lossy link then
    /// costs that long instead of QUIC's probe timeout.
    #[pyo3(signature = (name, *args, hedge_after=None, **kwargs))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        name: String,
        args: &Bound<'py, PyTuple>,
        hedge_after: Option<f64>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let client = self.client()?;
        let json = args::encode(py, args, kwargs)?;
        let hedge = seconds("hedge_after", hedge_after)?;
        let reply = runtime::wait(py, call(client, name, json, hedge))?.map_err(errors::call)?;
        Ok(PyBytes::new(py, &reply))
    }

    /// Subscribes to the stream subroutine `name`: an iterator of `(ident, bytes)`. Leaving
    /// the loop early (or closing the iterator) aborts the stream on the gateway.
    ///
    /// With `callback=`, pynetwork's style: `callback(name, ident, data)` is called for each
    /// item (returning `False` aborts the stream), then `eos_callback(name)` at its end; the
    /// call returns the number of items received.
    #[pyo3(signature = (name, *args, callback=None, eos_callback=None, **kwargs))]
    fn stream(
        &self,
        py: Python<'_>,
        name: String,
        args: &Bound<'_, PyTuple>,
        callback: Option<Py<PyAny>>,
        eos_callback: Option<Py<PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let client = self.client()?;
        let json = args::encode(py, args, kwargs)?;
        let target = name.clone();
        let items = runtime::wait(py, async move { client.stream(&target, &Json(json)).await })?
            .map_err(errors::call)?;
        let iter = ItemIter::new(Source::Items(items));
        let Some(callback) = callback else {
            return Ok(Py::new(py, iter)?.into_any());
        };
        let mut received = 0u64;
        while let Some((ident, data)) = iter.__next__(py)? {
            received += 1;
            let verdict = callback.call1(py, (&name, ident, data))?;
            if verdict.bind(py).is_instance_of::<pyo3::types::PyBool>()
                && !verdict.bind(py).is_truthy()?
            {
                iter.abort();
                return Ok(received.into_pyobject(py)?.into_any().unbind());
            }
        }
        if let Some(eos) = eos_callback {
            eos.call1(py, (&name,))?;
        }
        Ok(received.into_pyobject(py)?.into_any().unbind())
    }

    /// Subscribes to a stream subroutine for a feed: `delivery="reliable"` (every item, in
    /// order), `"latest"` (each item on its own stream; a newer one replaces one not yet
    /// delivered: camera frames), `"datagram"` (one unreliable datagram each: small sensor
    /// readings), `"unordered"` (every item, each on its own stream, handed out as it
    /// arrives: readings that must all arrive without waiting behind a lost one) or
    /// `"redundant"` (as `"unordered"`, plus a datagram copy of each small item) or `"fec"`
    /// (as `"latest"`, over datagrams with 25% Reed–Solomon recovery shards: a lost packet
    /// costs no round trip; camera frames on a lossy link; `fec_percent=` sets the recovery
    /// share, 0–100). `max_age` (seconds) cancels a `latest` item in flight that long once a newer
    /// one is ready; `priority` orders this feed against others (higher first);
    /// `deliver_late=True` hands out a `latest` item that arrives after a newer one instead of
    /// dropping it (for consumers that use every frame, not for a display).
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
        let client = self.client()?;
        let json = args::encode(py, args, kwargs)?;
        let items = runtime::wait(py, async move {
            client.subscribe(&name, &Json(json), &options).await
        })?
        .map_err(errors::call)?;
        Ok(ItemIter::new(Source::Items(items)))
    }

    /// The files of gateway root `root` picked by a glob, a regex or explicit paths, as
    /// dicts (`path`, `size`, `mtime`, `mode`, `hash` when asked for).
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
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let selector = files::selector(glob, regex, paths, recursive);
        files::list(py, self.client()?, root, selector, hash)
    }

    /// Downloads the files of `root` that the selection picks into `dest`, verified and
    /// written atomically, over `swarm` connections; `progress(dict)` is called as they land.
    /// Returns a summary dict (`files`, `bytes`, `skipped`, `seconds`, `verified`).
    #[pyo3(signature = (root, dest, glob=None, regex=None, paths=None, recursive=true, swarm=4, progress=None))]
    fn download<'py>(
        &self,
        py: Python<'py>,
        root: String,
        dest: PathBuf,
        glob: Option<String>,
        regex: Option<String>,
        paths: Option<Vec<String>>,
        recursive: bool,
        swarm: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let selector = files::selector(glob, regex, paths, recursive);
        let direction = files::Direction::Download {
            root,
            selector,
            dest,
        };
        let (controller, addr) = (self.controller.clone(), self.addr.clone());
        files::transfer(
            py,
            controller,
            self.client()?,
            addr,
            swarm,
            direction,
            progress,
        )
    }

    /// Uploads local files and folders into `dest` below the gateway's upload folder.
    #[pyo3(signature = (paths, dest=String::new(), swarm=4, progress=None))]
    fn upload<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        dest: String,
        swarm: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let direction = files::Direction::Upload { paths, dest };
        let (controller, addr) = (self.controller.clone(), self.addr.clone());
        files::transfer(
            py,
            controller,
            self.client()?,
            addr,
            swarm,
            direction,
            progress,
        )
    }

    /// The connection's statistics: `rtt` (seconds), packets sent and lost, congestion
    /// window, bytes each way.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.client()?)
    }

    /// Sends `buffer` (anything with the buffer protocol: bytes, bytearray, memoryview, a
    /// numpy array) to the sink subroutine `name`; returns its int.
    #[pyo3(signature = (name, buffer, *args, **kwargs))]
    fn send(
        &self,
        py: Python<'_>,
        name: String,
        buffer: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<i64> {
        let client = self.client()?;
        let json = args::encode(py, args, kwargs)?;
        let data =
            buffer::to_bytes(buffer).map_err(|_| PyTypeError::new_err(buffer::SEND_TAKES))?;
        runtime::wait(
            py,
            async move { client.send(&name, &Json(json), data).await },
        )?
        .map_err(errors::call)
    }

    /// Asks the gateway to shut down (it must allow it: `Gateway(allow_close=True)`).
    fn close_gateway(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.client()?;
        runtime::wait(py, async move { client.close_gateway().await })?.map_err(errors::call)
    }

    /// Closes the client politely: the gateway frees its handler slot.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(client) = taken {
            runtime::wait(py, async move { client.close().await })?.map_err(errors::call)?;
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

impl Client {
    /// The connection, for the asyncio client that shares it.
    pub(crate) fn connection(&self) -> PyResult<quicswarm::Client> {
        self.client()
    }

    /// The controller and address a swarm's extra connections are made with.
    pub(crate) fn swarm_parts(&self) -> (quicswarm::Controller, String) {
        (self.controller.clone(), self.addr.clone())
    }

    fn client(&self) -> PyResult<quicswarm::Client> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the client is closed"))
    }
}
