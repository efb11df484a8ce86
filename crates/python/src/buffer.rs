//! Python buffers as `Bytes` for the runtime, with as few copies as the stable ABI allows.

use bytes::Bytes;
use pyo3::{exceptions::PyTypeError, prelude::*, pybacked::PyBackedBytes};

/// What `send()` says of a buffer it cannot take.
pub(crate) const SEND_TAKES: &str =
    "send() takes bytes, bytearray, memoryview or another object with the buffer protocol";

/// The bytes of anything with the buffer protocol. A `bytes` object is lent as it is, with no
/// copy (it is immutable; the `Bytes` keep it alive until the runtime is done with it); a
/// `bytearray` is copied once; other buffers (memoryview, numpy arrays) once, by
/// `memoryview(...).tobytes()`: the stable ABI of Python 3.9 has no buffer access from Rust.
///
/// # Errors
/// A `TypeError` for an object without the buffer protocol.
pub(crate) fn to_bytes(buffer: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(lent) = buffer.extract::<PyBackedBytes>() {
        return Ok(Bytes::from_owner(lent));
    }
    let py = buffer.py();
    let copied = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((buffer,))
        .map_err(|_| PyTypeError::new_err("no buffer protocol"))?
        .call_method0("tobytes")?;
    Ok(Bytes::from_owner(copied.extract::<PyBackedBytes>()?))
}
