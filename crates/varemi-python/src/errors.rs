//! The one place where errors become Python exceptions.
//!
//! It names the Python exception classes of `varemi._base.errors` (imported lazily, on
//! first use) and maps every error enum of `varemi-core` to its class; the message is the
//! error's `Display`. Argument checks made by the bindings themselves (a wrong dtype, a
//! seed out of range) raise these classes through [`error`].

use std::fmt::Display;

use pyo3::exceptions::{PyMemoryError, PyOverflowError, PyValueError};
use pyo3::{PyErr, PyTypeInfo};
use varemi_core::{bpe, labels, pitch, remi, split, window};

/// The Python module that defines the classes below (imported when `_native` is, so that
/// a broken installation fails at import rather than on the first bad parameter). Keep it
/// equal to the module path of the `import_exception!` lines.
pub const MODULE: &str = "varemi._base.errors";

pyo3::import_exception!(varemi._base.errors, WindowParameterError);
pyo3::import_exception!(varemi._base.errors, OffsetsError);
pyo3::import_exception!(varemi._base.errors, PitchRangeError);
pyo3::import_exception!(varemi._base.errors, SplitParameterError);
pyo3::import_exception!(varemi._base.errors, ConditioningError);
pyo3::import_exception!(varemi._base.errors, UnknownTokenIdError);
pyo3::import_exception!(varemi._base.errors, UnsupportedConfig);
pyo3::import_exception!(varemi._base.errors, UnsupportedScore);
pyo3::import_exception!(varemi._base.errors, LabelInputError);

/// A new exception of class `E` whose message is `message`'s `Display`.
pub fn error<E: PyTypeInfo>(message: impl Display) -> PyErr {
    PyErr::new::<E, _>(message.to_string())
}

/// An error of `varemi-core`, as the Python exception it raises.
pub trait KernelError: Display + Sized {
    fn into_py_err(self) -> PyErr;
}

/// `e` as its Python exception: for `.map_err(py_err)` on any kernel result.
pub fn py_err(e: impl KernelError) -> PyErr {
    e.into_py_err()
}

impl KernelError for pitch::PitchError {
    fn into_py_err(self) -> PyErr {
        error::<PitchRangeError>(self)
    }
}

impl KernelError for window::ParamError {
    fn into_py_err(self) -> PyErr {
        error::<WindowParameterError>(self)
    }
}

impl KernelError for window::OffsetsError {
    fn into_py_err(self) -> PyErr {
        error::<OffsetsError>(self)
    }
}

impl KernelError for window::WindowError {
    fn into_py_err(self) -> PyErr {
        match self {
            window::WindowError::Param(e) => e.into_py_err(),
            window::WindowError::Offsets(e) => e.into_py_err(),
            e @ window::WindowError::TooManyWindows { .. } => error::<PyOverflowError>(e),
            e @ window::WindowError::Memory(_) => error::<PyMemoryError>(e),
        }
    }
}

impl KernelError for window::ConditioningError {
    fn into_py_err(self) -> PyErr {
        match self {
            e @ window::ConditioningError::Memory(_) => error::<PyMemoryError>(e),
            e @ (window::ConditioningError::SpanLengths
            | window::ConditioningError::IdLengths
            | window::ConditioningError::NoIds { .. }
            | window::ConditioningError::Outside { .. }) => error::<ConditioningError>(e),
        }
    }
}

impl KernelError for split::TrainSplitError {
    fn into_py_err(self) -> PyErr {
        error::<SplitParameterError>(self)
    }
}

/// The tables are built by `varemi.music.encoder.remi`, so a refused one is a bug there.
impl KernelError for remi::TableError {
    fn into_py_err(self) -> PyErr {
        error::<PyValueError>(self)
    }
}

/// The caller (`varemi.music.encoder.remi`) catches it and runs MidiTok instead.
impl KernelError for remi::Fallback {
    fn into_py_err(self) -> PyErr {
        error::<UnsupportedScore>(self)
    }
}

impl KernelError for bpe::BpeError {
    fn into_py_err(self) -> PyErr {
        match self {
            e @ bpe::BpeError::UnknownId { .. } => error::<UnknownTokenIdError>(e),
            e @ bpe::BpeError::Offsets(_) => error::<OffsetsError>(e),
        }
    }
}

impl KernelError for labels::LabelInputError {
    fn into_py_err(self) -> PyErr {
        error::<LabelInputError>(self)
    }
}
