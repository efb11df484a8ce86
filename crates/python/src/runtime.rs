//! The one tokio runtime behind every Python object, and how a Python thread waits on it:
//! it drives the operation itself without the GIL, in 50 ms slices between which Python runs
//! its signal handlers, so Ctrl-C interrupts a blocking call promptly (and cancels the
//! operation it was waiting for).

use std::{future::Future, sync::OnceLock, time::Duration};

use pyo3::{exceptions::PyRuntimeError, prelude::*};

/// The runtime and the process it was made in.
struct Runtime {
    tokio: tokio::runtime::Runtime,
    pid: u32,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// How often a waiting thread takes the GIL back to check for signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The runtime, made on first use. In a child made by `os.fork()` the parent's runtime has
/// no threads: a clear error instead of a hang.
pub(crate) fn handle() -> PyResult<&'static tokio::runtime::Runtime> {
    let runtime = match RUNTIME.get() {
        Some(runtime) => runtime,
        None => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            // Half the cores (tokio's own TOKIO_WORKER_THREADS overrides it): each blocking
            // call drives its operation on the caller's thread, so Python threads are busy
            // too, and fewer workers are fewer thread hops and wake-ups per call (on 2 cores,
            // one worker made 6,500 calls/s against two workers' 5,900).
            if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                builder.worker_threads((cores / 2).max(1));
            }
            let tokio = builder
                .thread_name("quicswarm")
                .enable_all()
                .build()
                .map_err(|e| {
                    PyRuntimeError::new_err(format!("cannot start quicswarm's runtime: {e}"))
                })?;
            let _ = RUNTIME.set(Runtime {
                tokio,
                pid: std::process::id(),
            });
            RUNTIME
                .get()
                .ok_or_else(|| PyRuntimeError::new_err("quicswarm's runtime did not start"))?
        }
    };
    if runtime.pid != std::process::id() {
        return Err(PyRuntimeError::new_err(
            "quicswarm was started before os.fork(): its threads did not follow into this child. \
             Import and use quicswarm in the child only, or use multiprocessing's 'spawn' start method",
        ));
    }
    Ok(&runtime.tokio)
}

/// Runs `fut` on the runtime and waits for it with the GIL released. A signal handler that
/// raises (Ctrl-C's `KeyboardInterrupt`) cancels the future and raises here.
pub(crate) fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    wait_reporting(py, fut, |_| Ok(()))
}

/// [`wait`], calling `report` with the GIL between waits (for progress callbacks, which so
/// run on the caller's thread); an exception from it cancels the future too.
pub(crate) fn wait_reporting<T, F>(
    py: Python<'_>,
    fut: F,
    report: impl Fn(Python<'_>) -> PyResult<()>,
) -> PyResult<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let runtime = handle()?;
    // Driven on this thread (no hand-over to a worker and back), in slices so that signals
    // are looked at between them; dropping it on an interrupt cancels the operation.
    let mut fut = Box::pin(fut);
    loop {
        // The timer is made inside the runtime's context, which `block_on` enters.
        let slice = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK, fut.as_mut()).await })
        });
        if let Ok(value) = slice {
            return Ok(value);
        }
        py.check_signals().and_then(|()| report(py))?;
    }
}
