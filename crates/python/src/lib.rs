//! The native half of the `quicswarm` Python package (`quicswarm._native`): the Rust library's
//! gateway, controller and client, with Python functions as subroutines. The Python half
//! (`python/quicswarm`) re-exports these and defines the exception hierarchy.
//!
//! Layout: `runtime` (the one tokio runtime, and how a Python thread waits on it), `gateway`
//! (Python functions as subroutines), `client` (controller and client), `session`, `items`
//! (stream items handed to Python in batches), `files` (list, download, upload), `fleet` (one operation on many gateways), `aio/` (the
//! asyncio client and session), and the conversions: `args` (JSON arguments), `buffer`
//! (Python buffers as bytes), `errors` (the exception hierarchy).

// Python methods take their keyword arguments as Rust parameters: many of them, by design.
#![allow(clippy::too_many_arguments)]

mod aio;
mod args;
mod buffer;
mod client;
mod errors;
mod files;
mod fleet;
mod gateway;
mod items;
mod runtime;
mod session;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<gateway::Gateway>()?;
    m.add_class::<client::Controller>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<items::ItemIter>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<fleet::Fleet>()?;
    m.add_class::<fleet::FleetResults>()?;
    m.add_class::<fleet::FleetResult>()?;
    m.add_class::<aio::AsyncClient>()?;
    m.add_class::<aio::AsyncItemIter>()?;
    m.add_class::<aio::AsyncSession>()?;
    Ok(())
}
