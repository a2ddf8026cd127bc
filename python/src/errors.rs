//! Core errors to Python exceptions. The classes and the choice among them
//! live in `dialpool/_errors.py`; this only hands over the core's facts.

use dialpool::{Error, Layer};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static FROM_CORE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception for a core error: `dialpool._errors._from_core`
/// picks the class from the code (and for server errors the SQLSTATE).
pub fn core_err(py: Python<'_>, e: &Error) -> PyErr {
    let factory = match FROM_CORE.import(py, "dialpool._errors", "_from_core") {
        Ok(f) => f,
        Err(import_failed) => return import_failed,
    };
    let layer = match e.layer() {
        Layer::None => None,
        other => Some(other.name()),
    };
    let args = (
        format!("DP_{}", e.code().name()),
        e.to_string(),
        layer,
        e.limit(),
        e.sqlstate(),
        e.elapsed().map(|d| d.as_secs_f64()),
        e.is_timeout(),
        e.is_retryable(),
    );
    match factory.call1(args) {
        Ok(exc) => PyErr::from_value(exc),
        Err(failed) => failed,
    }
}

/// Shorthand for a core error built in the binding.
pub fn invalid_argument(py: Python<'_>, message: impl Into<String>) -> PyErr {
    core_err(py, &Error::invalid_argument(message))
}

pub fn invalid_state(py: Python<'_>, message: impl Into<String>) -> PyErr {
    core_err(py, &Error::invalid_state(message))
}
