//! Arguments between Python and the wire: JSON, through Python's own `json` module.
//!
//! A client's `*args, **kwargs` travel as one JSON value that a Rust subroutine can decode
//! into its own type too: nothing is `null`; one positional argument is itself (a list or a
//! dict is wrapped in an array, so that a Python gateway passes it whole); several are an
//! array; keyword arguments alone are an object; both are `{"args": [...], "kwargs": {...}}`.
//! A Python gateway calls its function with the reverse: `null` → `f()`, an array →
//! `f(*array)`, an object → `f(**object)` (the `args`/`kwargs` form → `f(*args, **kwargs)`),
//! anything else → `f(value)`.

use pyo3::{
    prelude::*,
    types::{PyDict, PyList, PyTuple},
};

/// The JSON text of a call's arguments.
pub(crate) fn encode(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<String> {
    let kwargs = kwargs.filter(|k| !k.is_empty());
    let value: Bound<'_, PyAny> = match (args.len(), kwargs) {
        (0, None) => py.None().into_bound(py),
        (1, None) => {
            let only = args.get_item(0)?;
            if only.is_instance_of::<PyList>()
                || only.is_instance_of::<PyDict>()
                || only.is_instance_of::<PyTuple>()
            {
                PyList::new(py, [only])?.into_any()
            } else {
                only
            }
        }
        (_, None) => PyList::new(py, args.iter())?.into_any(),
        (0, Some(kwargs)) => kwargs.clone().into_any(),
        (_, Some(kwargs)) => {
            let both = PyDict::new(py);
            both.set_item("args", PyList::new(py, args.iter())?)?;
            both.set_item("kwargs", kwargs)?;
            both.into_any()
        }
    };
    py.import("json")?
        .call_method1("dumps", (value,))?
        .extract()
}

/// The positional and keyword arguments for a Python subroutine called with `json`.
pub(crate) fn decode<'py>(
    py: Python<'py>,
    json: &str,
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    let value = py.import("json")?.call_method1("loads", (json,))?;
    let kwargs = PyDict::new(py);
    if value.is_none() {
        return Ok((PyTuple::empty(py), kwargs));
    }
    if let Ok(list) = value.cast::<PyList>() {
        return Ok((list.to_tuple(), kwargs));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let envelope = dict.len() <= 2
            && dict.keys().iter().all(|k| {
                k.extract::<String>()
                    .is_ok_and(|k| k == "args" || k == "kwargs")
            });
        if envelope && !dict.is_empty() {
            let args = match dict.get_item("args")? {
                Some(a) => a.cast::<PyList>()?.to_tuple(),
                None => PyTuple::empty(py),
            };
            if let Some(k) = dict.get_item("kwargs")? {
                kwargs.update(k.cast::<PyDict>()?.as_mapping())?;
            }
            return Ok((args, kwargs));
        }
        return Ok((PyTuple::empty(py), dict.clone()));
    }
    Ok((PyTuple::new(py, [value])?, kwargs))
}

/// Most bytes of JSON arguments a Python subroutine takes: `json.loads` turns them into
/// Python objects several times their size, so a peer's arguments are bounded first.
pub(crate) const MAX_ARGS_LEN: usize = 1 << 20;

/// A call's JSON arguments as received: the text, not a decoded tree (a `serde_json::Value`
/// costs tens of bytes per element), at most [`MAX_ARGS_LEN`] long.
pub(crate) struct JsonArgs(Box<serde_json::value::RawValue>);

impl JsonArgs {
    pub(crate) fn text(&self) -> &str {
        self.0.get()
    }
}

impl<'de> serde::Deserialize<'de> for JsonArgs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        if raw.get().len() > MAX_ARGS_LEN {
            return Err(serde::de::Error::custom(format!(
                "{} bytes of arguments: a Python subroutine takes at most {MAX_ARGS_LEN}",
                raw.get().len()
            )));
        }
        Ok(Self(raw))
    }
}
