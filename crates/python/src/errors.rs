//! Rust errors as the Python exceptions of `quicswarm.errors`: one hierarchy under
//! `quicswarm.Error`, each carrying the wire code.

use pyo3::{prelude::*, types::PyDict};
use quicswarm::{files::TransferError, CallError, ConnectError, ErrorCode, GatewayError};

/// Raises `class_name` from `quicswarm.errors` with `message` and the wire `code`.
pub(crate) fn raise(class_name: &str, message: String, code: Option<ErrorCode>) -> PyErr {
    Python::attach(|py| {
        let made = (|| -> PyResult<PyErr> {
            let class = py.import("quicswarm.errors")?.getattr(class_name)?;
            let kwargs = PyDict::new(py);
            if let Some(code) = code {
                kwargs.set_item("code", code.to_u32())?;
            }
            let value = class.call((message.as_str(),), Some(&kwargs))?;
            Ok(PyErr::from_value(value))
        })();
        made.unwrap_or_else(|e| e)
    })
}

/// The exception for a failed operation.
pub(crate) fn call(e: CallError) -> PyErr {
    let code = Some(e.code());
    let message = e.to_string();
    let class = match &e {
        CallError::UnknownSubroutine(_) => "UnknownSubroutine",
        CallError::WrongKind(_) => "WrongKind",
        CallError::BadArgs(_) => "BadArgs",
        CallError::Failed(_) | CallError::Panicked(_) => "SubroutineFailed",
        CallError::PermissionDenied(_) => "PermissionDenied",
        CallError::TooLarge(_) => "TooLarge",
        CallError::LimitExceeded(_) => "LimitExceeded",
        CallError::Timeout(_) => "Timeout",
        CallError::ConnectionLost(_) | CallError::ShuttingDown => "ConnectionLost",
        CallError::Cancelled(_) => "Cancelled",
        CallError::Protocol(_) => "ProtocolError",
        CallError::Unsupported(_) => "Unsupported",
        _ => "Error",
    };
    raise(class, message, code)
}

/// The exception for a failed connection.
pub(crate) fn connect(e: ConnectError) -> PyErr {
    let message = e.to_string();
    let (class, code) = match &e {
        ConnectError::PoolFull { .. } => ("PoolFull", Some(ErrorCode::PoolFull)),
        ConnectError::FingerprintMismatch { .. } => ("FingerprintMismatch", None),
        ConnectError::Timeout { .. } => ("Timeout", Some(ErrorCode::Timeout)),
        _ => ("ConnectError", None),
    };
    raise(class, message, code)
}

/// The exception for a gateway that could not start.
pub(crate) fn gateway(e: GatewayError) -> PyErr {
    raise("Error", e.to_string(), None)
}

/// The exception for a failed transfer: `TransferFailed`, with `failures` listing each
/// failed file's `(path, message)` when only some failed.
pub(crate) fn transfer(e: TransferError) -> PyErr {
    let failures: Vec<(String, String)> = match e {
        TransferError::Call(e) => return call(e),
        TransferError::Partial { ref failed, .. } => failed
            .iter()
            .map(|(path, e)| (path.clone(), e.to_string()))
            .collect(),
        ref other => vec![(String::new(), other.to_string())],
    };
    let error = raise("TransferFailed", e.to_string(), None);
    Python::attach(|py| {
        let _ = error.value(py).setattr("failures", failures);
    });
    error
}
