//! `varemi._native`: the hot array kernels of varemi, over borrowed numpy arrays.
//!
//! This crate holds only the Python boundary: argument extraction and validation, the
//! borrowing of numpy arrays (never copied: a non-contiguous or misaligned array is
//! refused with `TypeError`), the release of the GIL around the work, and the mapping
//! of Rust errors to Python exception classes (in one place: `src/errors.rs`). The kernels
//! themselves are pure Rust on slices, in the `varemi-core` crate (`crates/varemi-core`):
//! [`pitch`], [`window`], [`split`], [`remi`], [`bpe`], [`duplicates`] and [`labels`].
//!
//! Every array kernel function (pitch normalisation, windowing, prepending, split
//! hashing) has a pure-Python twin in `varemi.core.reference` (its specification): same
//! arguments, same results, same exception class for the same bad input, raised after
//! the same checks in the same order. `RemiEncoder` and `BpeModel` have no Python twin:
//! their specification is MidiTok itself (REMI's `encode` and its BPE step), and tests
//! hold their ids equal to MidiTok's.

mod errors;

use numpy::{
    Element, IntoPyArray, PyArray1, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use pyo3::Borrowed;

use varemi_core::pitch::{Pitch, PitchRange, Policy};
use varemi_core::{bpe, duplicates, labels, pitch, remi, split, window};

use crate::errors::{
    error, py_err, SplitParameterError, UnsupportedConfig, MODULE as ERRORS_MODULE,
};

// ---------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------

/// An integer parameter of any size, saturated to `i64`.
///
/// Python ints are unbounded: a negative or huge value must raise the parameter's
/// `VaremiError` subclass (as the reference does), never `OverflowError`. Values outside
/// `i64` are saturated to `i64::MIN`/`i64::MAX`, which every range check treats as the
/// original; the original object is kept for the one comparison between two parameters
/// (`min_window_tokens > window_size`).
pub struct IntArg<'py> {
    value: i64,
    /// The original int, when it did not fit in `i64`.
    big: Option<Bound<'py, PyAny>>,
}

impl IntArg<'_> {
    const fn new(value: i64) -> Self {
        IntArg { value, big: None }
    }

    /// `self > other`, exactly, even for ints outside `i64`.
    fn gt(&self, other: &IntArg<'_>, py: Python<'_>) -> PyResult<bool> {
        match (&self.big, &other.big) {
            (None, None) => Ok(self.value > other.value),
            (Some(a), Some(b)) => a.gt(b),
            (Some(a), None) => a.gt(other.value),
            (None, Some(b)) => self.value.into_pyobject(py)?.gt(b),
        }
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for IntArg<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i64>() {
            Ok(value) => Ok(IntArg::new(value)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                let value = if obj.lt(0)? { i64::MIN } else { i64::MAX };
                Ok(IntArg {
                    value,
                    big: Some(obj.to_owned()),
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// The pitch policy argument: any object; only the strings `clamp`, `fold`, `drop` pass.
pub struct PolicyArg {
    name: Option<String>,
    repr: String,
}

impl PolicyArg {
    fn clamp() -> Self {
        PolicyArg {
            name: Some("clamp".into()),
            repr: "'clamp'".into(),
        }
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for PolicyArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let name = match obj.cast::<PyString>() {
            Ok(s) => s.to_str().ok().map(str::to_owned),
            Err(_) => None,
        };
        let repr = obj.repr()?.to_string_lossy().into_owned();
        Ok(PolicyArg { name, repr })
    }
}

/// The split seed: an int in 0..2**64-1, else `SplitParameterError`.
pub struct SeedArg(u64);

impl<'a, 'py> FromPyObject<'a, 'py> for SeedArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<u64>() {
            Ok(seed) => Ok(SeedArg(seed)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                Err(error::<SplitParameterError>(format_args!(
                    "seed must be in 0..2**64-1, got {}",
                    &*obj
                )))
            }
            Err(e) => Err(e),
        }
    }
}

/// `train_split` as a float64; an int too large for a float becomes an infinity (and is
/// then refused, like the reference refuses it).
pub struct TrainSplitArg(f64);

impl<'a, 'py> FromPyObject<'a, 'py> for TrainSplitArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<f64>() {
            Ok(value) => Ok(TrainSplitArg(value)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                let sign = if obj.lt(0)? { -1.0 } else { 1.0 };
                Ok(TrainSplitArg(sign * f64::INFINITY))
            }
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Borrowing numpy arrays
// ---------------------------------------------------------------------------------------

/// `obj` as a numpy array, else `TypeError` naming the argument and the expected dtype.
fn ndarray<'a, 'py>(
    obj: &'a Bound<'py, PyAny>,
    name: &str,
    expected: &str,
) -> PyResult<&'a Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().map_err(|_| {
        let got = obj
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string_lossy().into_owned());
        error::<PyTypeError>(format_args!(
            "{name} must be a 1-D numpy array of {expected}, got {got}"
        ))
    })
}

/// Refuses anything but a 1-D, C-contiguous, aligned array (the kernels borrow the
/// memory as a slice and never copy it).
fn check_layout(array: &Bound<'_, PyUntypedArray>, name: &str) -> PyResult<()> {
    if array.ndim() != 1 {
        return Err(error::<PyTypeError>(format_args!(
            "{name} must be 1-D, got {}-D",
            array.ndim()
        )));
    }
    if array.len() > 0 && !array.is_contiguous() {
        return Err(error::<PyTypeError>(format_args!(
            "{name} must be C-contiguous: varemi._native borrows arrays without copying; \
             pass np.ascontiguousarray({name}) or call varemi.core.kernels, which copies views"
        )));
    }
    if array.len() > 0 && !array.is_aligned() {
        return Err(error::<PyTypeError>(format_args!(
            "{name} must be aligned: varemi._native borrows arrays without copying; \
             pass a copy (np.array({name}))"
        )));
    }
    Ok(())
}

/// Borrows `obj` as a read-only 1-D array of `T` (numpy dtype `expected`).
fn borrow<'py, T: Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    expected: &str,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    let array = ndarray(obj, name, expected)?;
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<T>(obj.py())) {
        return Err(error::<PyTypeError>(format_args!(
            "{name} must be a 1-D numpy array of {expected}, got {dtype}"
        )));
    }
    check_layout(array, name)?;
    read_only(array, name)
}

fn read_only<'py, T: Element>(
    array: &Bound<'py, PyUntypedArray>,
    name: &str,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    let typed = array.cast::<PyArray1<T>>()?;
    typed
        .try_readonly()
        .map_err(|e| error::<PyTypeError>(format_args!("{name} cannot be borrowed: {e}")))
}

/// The borrowed array's memory (its layout was checked by [`check_layout`]).
fn slice<'a, T: Element>(array: &'a PyReadonlyArray1<'_, T>, name: &str) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|_| {
        error::<PyTypeError>(format_args!("{name} must be a C-contiguous, aligned array"))
    })
}

// ---------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------

const PITCH_DTYPES: &str = "int8, uint8, int16, int32 or int64";

fn normalize_as<'py, T: Pitch + Element>(
    array: &Bound<'py, PyUntypedArray>,
    policy: Policy,
    range: PitchRange,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = array.py();
    let pitches = read_only::<T>(array, "pitches")?;
    let pitches = slice(&pitches, "pitches")?;
    let (out, keep) = py.detach(|| pitch::normalize(pitches, policy, range));
    Ok((
        out.into_pyarray(py).into_any(),
        keep.into_pyarray(py).into_any(),
    ))
}

/// Move pitches into ``[low, high]`` (clamp, fold or drop): see varemi.core.reference.
#[pyfunction]
#[pyo3(name = "normalize_pitches")]
#[pyo3(
    signature = (pitches, low = IntArg::new(21), high = IntArg::new(108), policy = PolicyArg::clamp()),
    text_signature = "(pitches, low=21, high=108, policy='clamp')"
)]
fn py_normalize_pitches<'py>(
    pitches: &Bound<'py, PyAny>,
    low: IntArg<'py>,
    high: IntArg<'py>,
    policy: PolicyArg,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = pitches.py();
    let array = ndarray(pitches, "pitches", PITCH_DTYPES)?;
    let dtype = array.dtype();
    let is = |other: Bound<'py, numpy::PyArrayDescr>| dtype.is_equiv_to(&other);
    let kind = [
        is(numpy::dtype::<i8>(py)),
        is(numpy::dtype::<u8>(py)),
        is(numpy::dtype::<i16>(py)),
        is(numpy::dtype::<i32>(py)),
        is(numpy::dtype::<i64>(py)),
    ]
    .iter()
    .position(|&equal| equal)
    .ok_or_else(|| {
        error::<PyTypeError>(format_args!(
            "pitches must be a 1-D array of {PITCH_DTYPES}, got {dtype}"
        ))
    })?;
    check_layout(array, "pitches")?;
    let (policy, range) =
        pitch::check_params(policy.name.as_deref(), &policy.repr, low.value, high.value)
            .map_err(py_err)?;
    match kind {
        0 => normalize_as::<i8>(array, policy, range),
        1 => normalize_as::<u8>(array, policy, range),
        2 => normalize_as::<i16>(array, policy, range),
        3 => normalize_as::<i32>(array, policy, range),
        _ => normalize_as::<i64>(array, policy, range),
    }
}

type SpansOut<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
);

/// Cut every file of a batch into windows: see varemi.core.reference.window_spans.
#[pyfunction]
#[pyo3(name = "window_spans")]
#[pyo3(
    signature = (
        tokens,
        offsets,
        window_size = IntArg::new(1024),
        stride = IntArg::new(512),
        min_window_tokens = IntArg::new(256),
    ),
    text_signature = "(tokens, offsets, window_size=1024, stride=512, min_window_tokens=256)"
)]
fn py_window_spans<'py>(
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    window_size: IntArg<'py>,
    stride: IntArg<'py>,
    min_window_tokens: IntArg<'py>,
) -> PyResult<SpansOut<'py>> {
    let py = tokens.py();
    let tokens = borrow::<i32>(tokens, "tokens", "int32")?;
    let offsets = borrow::<i64>(offsets, "offsets", "int64")?;
    let min_above_window = min_window_tokens.gt(&window_size, py)?;
    let params = window::check_params(
        window_size.value,
        stride.value,
        min_window_tokens.value,
        min_above_window,
    )
    .map_err(py_err)?;
    let n_tokens = tokens.len();
    let offsets = slice(&offsets, "offsets")?;
    let spans = py
        .detach(|| window::window_spans(n_tokens, offsets, &params))
        .map_err(py_err)?;
    Ok((
        spans.file_index.into_pyarray(py),
        spans.window_index.into_pyarray(py),
        spans.start.into_pyarray(py),
        spans.stop.into_pyarray(py),
    ))
}

type ExamplesOut<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>);

/// Write ``[VAL id, ARO id] + window`` for every window: see varemi.core.reference.
#[pyfunction]
#[pyo3(name = "prepend_conditioning")]
fn py_prepend_conditioning<'py>(
    tokens: &Bound<'py, PyAny>,
    file_index: &Bound<'py, PyAny>,
    start: &Bound<'py, PyAny>,
    stop: &Bound<'py, PyAny>,
    valence_ids: &Bound<'py, PyAny>,
    arousal_ids: &Bound<'py, PyAny>,
) -> PyResult<ExamplesOut<'py>> {
    let py = tokens.py();
    let tokens = borrow::<i32>(tokens, "tokens", "int32")?;
    let file_index = borrow::<i64>(file_index, "file_index", "int64")?;
    let start = borrow::<i64>(start, "start", "int64")?;
    let stop = borrow::<i64>(stop, "stop", "int64")?;
    let valence_ids = borrow::<i32>(valence_ids, "valence_ids", "int32")?;
    let arousal_ids = borrow::<i32>(arousal_ids, "arousal_ids", "int32")?;
    let (t, f) = (slice(&tokens, "tokens")?, slice(&file_index, "file_index")?);
    let (a, b) = (slice(&start, "start")?, slice(&stop, "stop")?);
    let (v, r) = (
        slice(&valence_ids, "valence_ids")?,
        slice(&arousal_ids, "arousal_ids")?,
    );
    let (values, offsets) = py
        .detach(|| window::prepend_conditioning(t, f, a, b, v, r))
        .map_err(py_err)?;
    Ok((values.into_pyarray(py), offsets.into_pyarray(py)))
}

/// The keys as `str` objects, checked one by one in order as the reference does: a key
/// that is not a `str` raises `TypeError`, one that cannot be encoded in UTF-8 (a lone
/// surrogate) raises `UnicodeEncodeError`.
fn key_strings<'py>(keys: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyString>>> {
    let mut out = Vec::new();
    for key in keys.try_iter()? {
        let key = key?;
        let key = key.cast_into::<PyString>().map_err(|e| {
            let got = e
                .into_inner()
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string_lossy().into_owned());
            error::<PyTypeError>(format_args!("split keys must be str, got {got}"))
        })?;
        key.to_str()?;
        out.push(key);
    }
    Ok(out)
}

/// Keyed 8-byte BLAKE2b of each key as uint64: see varemi.core.reference.split_hashes.
#[pyfunction]
#[pyo3(name = "split_hashes")]
#[pyo3(signature = (keys, seed = SeedArg(42)), text_signature = "(keys, seed=42)")]
fn py_split_hashes<'py>(
    keys: &Bound<'py, PyAny>,
    seed: SeedArg,
) -> PyResult<Bound<'py, PyArray1<u64>>> {
    let py = keys.py();
    let strings = key_strings(keys)?;
    let keys = strings
        .iter()
        .map(|s| s.to_str())
        .collect::<PyResult<Vec<&str>>>()?;
    let hashes = py.detach(|| split::split_hashes(&keys, seed.0));
    Ok(hashes.into_pyarray(py))
}

/// True for each file that belongs to ``val``: see varemi.core.reference.val_mask.
#[pyfunction]
#[pyo3(name = "val_mask")]
#[pyo3(
    signature = (keys, seed = SeedArg(42), train_split = TrainSplitArg(0.9)),
    text_signature = "(keys, seed=42, train_split=0.9)"
)]
fn py_val_mask<'py>(
    keys: &Bound<'py, PyAny>,
    seed: SeedArg,
    train_split: TrainSplitArg,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let py = keys.py();
    split::check_train_split(train_split.0).map_err(py_err)?;
    let strings = key_strings(keys)?;
    let keys = strings
        .iter()
        .map(|s| s.to_str())
        .collect::<PyResult<Vec<&str>>>()?;
    let mask = py
        .detach(|| split::val_mask(&keys, seed.0, train_split.0))
        .map_err(py_err)?;
    Ok(mask.into_pyarray(py))
}

// ---------------------------------------------------------------------------------------
// REMI base-token encoder
// ---------------------------------------------------------------------------------------

/// A nearest-value table given from Python: ``(values, ids)``.
type ValueTableArg = (Vec<i32>, Vec<i32>);

/// MidiTok REMI base-token encoder over fixed vocabulary tables: see varemi.music.encoder.remi.
#[pyclass(frozen, name = "RemiEncoder", module = "varemi._native")]
struct PyRemiEncoder {
    tables: remi::RemiTables,
}

#[pymethods]
impl PyRemiEncoder {
    #[new]
    #[pyo3(signature = (
        tpq,
        bar_id,
        bar_end_id,
        trailing_bars,
        position_ids,
        pitch_tables,
        velocities,
        durations,
        remove_duplicated_notes,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        tpq: i32,
        bar_id: i32,
        bar_end_id: Option<i32>,
        trailing_bars: bool,
        position_ids: Vec<i32>,
        pitch_tables: Vec<(i32, Vec<i32>)>,
        velocities: Option<ValueTableArg>,
        durations: ValueTableArg,
        remove_duplicated_notes: bool,
    ) -> PyResult<Self> {
        let value_table = |(values, ids): ValueTableArg| remi::ValueTable { values, ids };
        let tables = remi::RemiTables {
            tpq,
            bar_id,
            bar_end_id,
            trailing_bars,
            position_ids,
            pitches: pitch_tables
                .into_iter()
                .map(|(low, ids)| remi::PitchTable { low, ids })
                .collect(),
            velocities: velocities.map(value_table),
            durations: value_table(durations),
            remove_duplicated_notes,
        };
        tables.check().map_err(py_err)?;
        Ok(PyRemiEncoder { tables })
    }

    /// One track's base ids, or None when MidiTok drops the track.
    #[pyo3(signature = (time, duration, pitch, velocity, ticks_per_quarter, pitch_table, use_durations))]
    #[allow(clippy::too_many_arguments)]
    fn encode_track<'py>(
        &self,
        time: &Bound<'py, PyAny>,
        duration: &Bound<'py, PyAny>,
        pitch: &Bound<'py, PyAny>,
        velocity: &Bound<'py, PyAny>,
        ticks_per_quarter: i64,
        pitch_table: usize,
        use_durations: bool,
    ) -> PyResult<Option<Bound<'py, PyArray1<i32>>>> {
        let py = time.py();
        let time = borrow::<i32>(time, "time", "int32")?;
        let duration = borrow::<i32>(duration, "duration", "int32")?;
        let pitch = borrow::<i8>(pitch, "pitch", "int8")?;
        let velocity = borrow::<i8>(velocity, "velocity", "int8")?;
        if pitch_table >= self.tables.pitches.len() {
            return Err(error::<PyValueError>(format_args!(
                "pitch_table must be below {}, got {pitch_table}",
                self.tables.pitches.len()
            )));
        }
        let notes = remi::Notes {
            time: slice(&time, "time")?,
            duration: slice(&duration, "duration")?,
            pitch: slice(&pitch, "pitch")?,
            velocity: slice(&velocity, "velocity")?,
        };
        let options = remi::TrackOptions {
            score_tpq: ticks_per_quarter,
            pitch_table,
            use_durations,
        };
        let tables = &self.tables;
        let ids = py
            .detach(|| remi::encode_track(notes, options, tables))
            .map_err(py_err)?;
        Ok(ids.map(|ids| ids.into_pyarray(py)))
    }
}

// ---------------------------------------------------------------------------------------
// BPE
// ---------------------------------------------------------------------------------------

/// MidiTok's BPE step over base ids, built once per tokenizer: see varemi.music.encoder.bpe.NativeBPE.
///
/// The chunk cache is shared by every call and guarded by a mutex (taken with the GIL
/// released), so one model can serve several threads.
#[pyclass(name = "BpeModel", module = "varemi._native", frozen)]
struct PyBpeModel {
    bpe: bpe::Bpe,
    cache: std::sync::Mutex<bpe::ChunkCache>,
}

fn model_id(value: i64, what: &str) -> PyResult<u32> {
    u32::try_from(value)
        .ok()
        .filter(|&v| i32::try_from(v).is_ok())
        .ok_or_else(|| {
            error::<UnsupportedConfig>(format_args!("{what} {value} does not fit in int32"))
        })
}

#[pymethods]
impl PyBpeModel {
    /// Build the model from arrays (varemi.music.encoder.bpe.NativeBPE.from_tokenizer computes them).
    #[new]
    #[pyo3(signature = (symbols, added, prefix, merges_left, merges_right, merges_new))]
    fn new(
        symbols: &Bound<'_, PyAny>,
        added: &Bound<'_, PyAny>,
        prefix: Option<i64>,
        merges_left: &Bound<'_, PyAny>,
        merges_right: &Bound<'_, PyAny>,
        merges_new: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let symbols = borrow::<i64>(symbols, "symbols", "int64")?;
        let added = borrow::<bool>(added, "added", "bool")?;
        let left = borrow::<i64>(merges_left, "merges_left", "int64")?;
        let right = borrow::<i64>(merges_right, "merges_right", "int64")?;
        let new_ids = borrow::<i64>(merges_new, "merges_new", "int64")?;
        let (symbols, added) = (slice(&symbols, "symbols")?, slice(&added, "added")?);
        let (left, right) = (slice(&left, "merges_left")?, slice(&right, "merges_right")?);
        let new_ids = slice(&new_ids, "merges_new")?;
        if symbols.len() != added.len() {
            return Err(error::<UnsupportedConfig>(format_args!(
                "symbols and added differ in length ({} != {})",
                symbols.len(),
                added.len()
            )));
        }
        if left.len() != right.len() || left.len() != new_ids.len() {
            return Err(error::<UnsupportedConfig>(
                "merges_left, merges_right and merges_new differ in length",
            ));
        }
        let table = symbols
            .iter()
            .zip(added)
            .map(|(&s, &is_added)| match s {
                -1 => Ok(bpe::BaseSymbol::Unknown),
                -2 => Ok(bpe::BaseSymbol::Dropped),
                s if is_added => model_id(s, "added token id").map(bpe::BaseSymbol::Added),
                s => model_id(s, "model id").map(bpe::BaseSymbol::Model),
            })
            .collect::<PyResult<Vec<_>>>()?;
        let prefix = prefix.map(|p| model_id(p, "prefix id")).transpose()?;
        let merges = left
            .iter()
            .zip(right)
            .zip(new_ids)
            .map(|((&a, &b), &n)| {
                Ok((
                    model_id(a, "merge id")?,
                    model_id(b, "merge id")?,
                    model_id(n, "merge id")?,
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyBpeModel {
            bpe: bpe::Bpe::new(table, prefix, &merges),
            cache: std::sync::Mutex::new(bpe::ChunkCache::default()),
        })
    }

    /// Encode base ids cut into chunks at ``split_offsets``; returns the model's ids.
    fn encode<'py>(
        &self,
        base_ids: &Bound<'py, PyAny>,
        split_offsets: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let py = base_ids.py();
        let base = borrow::<i32>(base_ids, "base_ids", "int32")?;
        let offsets = borrow::<i64>(split_offsets, "split_offsets", "int64")?;
        let (base, offsets) = (slice(&base, "base_ids")?, slice(&offsets, "split_offsets")?);
        let out = py
            .detach(|| {
                let mut cache = self
                    .cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.bpe.encode_chunks(base, offsets, &mut cache)
            })
            .map_err(py_err)?;
        // Every id was checked to fit in int32 when the model was built.
        let out: Vec<i32> = out.into_iter().map(|v| v as i32).collect();
        Ok(out.into_pyarray(py))
    }

    /// Empty the chunk cache.
    fn clear_cache(&self) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Number of distinct chunks cached.
    #[getter]
    fn cache_size(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Number of base ids the model's table covers.
    #[getter]
    fn base_vocab_size(&self) -> usize {
        self.bpe.base_len()
    }
}

/// The label features of a score's note arrays (see `varemi.core.label_features.features_reference`).
#[pyfunction]
#[pyo3(
    name = "label_features",
    text_signature = "(time, duration, pitch, velocity, note_tracks, pedal_time, \
                      pedal_duration, pedal_tracks, tempo_time, tempo_qpm)"
)]
#[allow(clippy::too_many_arguments)]
fn py_label_features<'py>(
    time: &Bound<'py, PyAny>,
    duration: &Bound<'py, PyAny>,
    pitch: &Bound<'py, PyAny>,
    velocity: &Bound<'py, PyAny>,
    note_tracks: &Bound<'py, PyAny>,
    pedal_time: &Bound<'py, PyAny>,
    pedal_duration: &Bound<'py, PyAny>,
    pedal_tracks: &Bound<'py, PyAny>,
    tempo_time: &Bound<'py, PyAny>,
    tempo_qpm: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let py = time.py();
    let f64s = |obj, name| borrow::<f64>(obj, name, "float64");
    let i64s = |obj, name| borrow::<i64>(obj, name, "int64");
    let (time, duration) = (f64s(time, "time")?, f64s(duration, "duration")?);
    let (pitch, velocity) = (i64s(pitch, "pitch")?, f64s(velocity, "velocity")?);
    let note_tracks = i64s(note_tracks, "note_tracks")?;
    let pedal_time = f64s(pedal_time, "pedal_time")?;
    let pedal_duration = f64s(pedal_duration, "pedal_duration")?;
    let pedal_tracks = i64s(pedal_tracks, "pedal_tracks")?;
    let (tempo_time, tempo_qpm) = (
        f64s(tempo_time, "tempo_time")?,
        f64s(tempo_qpm, "tempo_qpm")?,
    );
    let arrays = labels::NoteArrays {
        time: slice(&time, "time")?,
        duration: slice(&duration, "duration")?,
        pitch: slice(&pitch, "pitch")?,
        velocity: slice(&velocity, "velocity")?,
        note_tracks: slice(&note_tracks, "note_tracks")?,
        pedal_time: slice(&pedal_time, "pedal_time")?,
        pedal_duration: slice(&pedal_duration, "pedal_duration")?,
        pedal_tracks: slice(&pedal_tracks, "pedal_tracks")?,
        tempo_time: slice(&tempo_time, "tempo_time")?,
        tempo_qpm: slice(&tempo_qpm, "tempo_qpm")?,
    };
    let values = py.detach(|| labels::features(&arrays)).map_err(py_err)?;
    Ok(values.to_vec().into_pyarray(py))
}

/// MinHash of pitch-interval n-grams: see varemi.music.fingerprint._pitch_minhash_py.
#[pyfunction]
#[pyo3(name = "pitch_minhash")]
fn py_pitch_minhash<'py>(
    pitches: PyReadonlyArray1<'py, i64>,
    n: usize,
    a: PyReadonlyArray1<'py, u64>,
    b: PyReadonlyArray1<'py, u64>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let py = pitches.py();
    let (p, a, b) = (pitches.as_slice()?, a.as_slice()?, b.as_slice()?);
    let sig = py.detach(|| duplicates::pitch_minhash(p, n, a, b));
    Ok(sig.into_pyarray(py))
}

/// A file's fingerprint: see varemi.music.fingerprint._fingerprint_notes_py.
/// Returns (exact digest bytes, transposed digest bytes, MinHash signature).
#[pyfunction]
#[pyo3(name = "fingerprint_notes")]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn py_fingerprint_notes<'py>(
    time: PyReadonlyArray1<'py, i64>,
    pitch: PyReadonlyArray1<'py, i64>,
    duration: PyReadonlyArray1<'py, i64>,
    tpq: i64,
    resolution: i64,
    n: usize,
    a: PyReadonlyArray1<'py, u64>,
    b: PyReadonlyArray1<'py, u64>,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyArray1<u32>>,
)> {
    let py = time.py();
    let (t, p, d) = (time.as_slice()?, pitch.as_slice()?, duration.as_slice()?);
    if t.len() != p.len() || t.len() != d.len() {
        return Err(PyValueError::new_err(format!(
            "time, pitch and duration must have one value per note, got {}, {} and {}",
            t.len(),
            p.len(),
            d.len()
        )));
    }
    let (a, b) = (a.as_slice()?, b.as_slice()?);
    let params = duplicates::MinHashParams { n, a, b };
    let fp = py.detach(|| duplicates::fingerprint_notes(t, p, d, (tpq, resolution), &params));
    Ok((
        PyBytes::new(py, &fp.exact),
        PyBytes::new(py, &fp.transposed),
        fp.minhash.into_pyarray(py),
    ))
}

/// The native kernels of varemi (see varemi.core.kernels for the public API).
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The exception classes are imported lazily on first use; importing them now makes a
    // broken installation fail here, at import, rather than on the first bad parameter.
    m.py().import(ERRORS_MODULE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // A hash of both crates' sources and manifests and of Cargo.lock (build.rs): part of the
    // token-cache key.
    m.add("source_hash", env!("VAREMI_SOURCE_HASH"))?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    m.add_function(wrap_pyfunction!(py_normalize_pitches, m)?)?;
    m.add_function(wrap_pyfunction!(py_window_spans, m)?)?;
    m.add_function(wrap_pyfunction!(py_prepend_conditioning, m)?)?;
    m.add_function(wrap_pyfunction!(py_split_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(py_val_mask, m)?)?;
    m.add_function(wrap_pyfunction!(py_pitch_minhash, m)?)?;
    m.add_function(wrap_pyfunction!(py_fingerprint_notes, m)?)?;
    m.add_function(wrap_pyfunction!(py_label_features, m)?)?;
    m.add_class::<PyRemiEncoder>()?;
    m.add_class::<PyBpeModel>()?;
    Ok(())
}
