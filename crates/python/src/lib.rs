//! The native half of the `quicswarm` Python package (`quicswarm._native`): the Rust library's
//! gateway, controller and client, with Python functions as subroutines. The Python half
//! (`python/quicswarm`) re-exports these and defines the exception hierarchy.

mod args;
mod client;
mod errors;
mod gateway;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<gateway::Gateway>()?;
    m.add_class::<client::Controller>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::ItemIter>()?;
    Ok(())
}
