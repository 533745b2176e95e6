//! Windowing with stride (docs/contracts.md contract 5) and conditioning-token prepending,
//! pure Rust on slices.
//!
//! The Python twins are `varemi.core.reference.window_spans` and
//! `varemi.core.reference.prepend_conditioning`; both must agree on every input, including
//! which inputs are refused and in which order the checks run.

use std::collections::TryReserveError;
use std::fmt;

/// A refused window parameter (raised as `varemi._base.errors.WindowParameterError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamError {
    WindowSize(i64),
    Stride(i64),
    MinWindowTokens(i64),
    MinAboveWindow {
        min_window_tokens: i64,
        window_size: i64,
    },
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::WindowSize(v) => write!(f, "window_size must be >= 1, got {v}"),
            ParamError::Stride(v) => write!(f, "stride must be >= 1, got {v}"),
            ParamError::MinWindowTokens(v) => {
                write!(f, "min_window_tokens must be >= 1, got {v}")
            }
            ParamError::MinAboveWindow { min_window_tokens, window_size } => write!(
                f,
                "min_window_tokens ({min_window_tokens}) must not exceed window_size ({window_size})"
            ),
        }
    }
}

/// Refused offsets (raised as `varemi._base.errors.OffsetsError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsError {
    Empty,
    Negative(i64),
    Decreasing(usize),
    PastEnd { last: i64, n_tokens: usize },
}

impl fmt::Display for OffsetsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetsError::Empty => {
                write!(
                    f,
                    "offsets must hold at least one entry (n_files + 1 entries)"
                )
            }
            OffsetsError::Negative(v) => write!(f, "offsets[0] must be >= 0, got {v}"),
            OffsetsError::Decreasing(i) => write!(
                f,
                "offsets must be non-decreasing: offsets[{i}] < offsets[{}]",
                i - 1
            ),
            OffsetsError::PastEnd { last, n_tokens } => {
                write!(f, "offsets run past the end: {last} > {n_tokens} tokens")
            }
        }
    }
}

/// Why [`window_spans`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowError {
    Param(ParamError),
    Offsets(OffsetsError),
    /// A file with more than `i32::MAX + 1` windows (its window index overflows int32).
    TooManyWindows {
        file: usize,
        windows: u64,
    },
    /// The output could not be allocated.
    Memory(TryReserveError),
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowError::Param(e) => e.fmt(f),
            WindowError::Offsets(e) => e.fmt(f),
            WindowError::TooManyWindows { file, windows } => write!(
                f,
                "file {file} has {windows} windows: its window index does not fit in int32"
            ),
            WindowError::Memory(e) => write!(f, "cannot allocate the window spans: {e}"),
        }
    }
}

/// Validated window parameters: all at least 1 and `min_window_tokens <= window_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowParams {
    pub window_size: i64,
    pub stride: i64,
    pub min_window_tokens: i64,
}

/// Validates the parameters in the reference's order.
///
/// `min_above_window` is whether `min_window_tokens > window_size`; it is passed in
/// (rather than compared here) so that a caller holding arbitrarily large Python ints,
/// saturated to `i64` here, can compare the originals exactly.
pub fn check_params(
    window_size: i64,
    stride: i64,
    min_window_tokens: i64,
    min_above_window: bool,
) -> Result<WindowParams, ParamError> {
    if window_size < 1 {
        return Err(ParamError::WindowSize(window_size));
    }
    if stride < 1 {
        return Err(ParamError::Stride(stride));
    }
    if min_window_tokens < 1 {
        return Err(ParamError::MinWindowTokens(min_window_tokens));
    }
    if min_above_window {
        return Err(ParamError::MinAboveWindow {
            min_window_tokens,
            window_size,
        });
    }
    Ok(WindowParams {
        window_size,
        stride,
        min_window_tokens,
    })
}

/// Validates per-file offsets against a token array of `n_tokens` ids.
pub fn check_offsets(offsets: &[i64], n_tokens: usize) -> Result<(), OffsetsError> {
    let (&first, &last) = match (offsets.first(), offsets.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(OffsetsError::Empty),
    };
    if first < 0 {
        return Err(OffsetsError::Negative(first));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(OffsetsError::Decreasing(i + 1));
    }
    if i64::try_from(n_tokens).is_ok_and(|n| last > n) {
        return Err(OffsetsError::PastEnd { last, n_tokens });
    }
    Ok(())
}

/// How many windows of a file of `n` tokens are kept.
///
/// Windows start at `j * stride` for `j = 0, 1, ...` and iteration stops after the
/// first start `i` with `i + window_size >= n`. A window's length
/// `min(window_size, n - i)` never grows with `i`, so the kept windows (length at least
/// `min_window_tokens`) are a prefix of the iterations: `j` is kept iff
/// `j * stride <= n - min_window_tokens` (as `min_window_tokens <= window_size`).
pub fn kept_windows(n: i64, p: &WindowParams) -> u64 {
    if n < p.min_window_tokens {
        return 0;
    }
    // n >= min_window_tokens >= 1, so every difference below is non-negative.
    let iterations = if n <= p.window_size {
        1
    } else {
        (n - p.window_size - 1) / p.stride + 2
    };
    let by_length = (n - p.min_window_tokens) / p.stride + 1;
    // Both are positive: n - ... >= 0 and stride >= 1.
    iterations.min(by_length).unsigned_abs()
}

/// The kept windows of a batch, one entry per window (in file order, then window order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spans {
    pub file_index: Vec<i64>,
    pub window_index: Vec<i32>,
    pub start: Vec<i64>,
    pub stop: Vec<i64>,
}

fn reserve<T>(n: usize) -> Result<Vec<T>, WindowError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(WindowError::Memory)?;
    Ok(v)
}

/// Cuts every file of a batch into windows.
///
/// File `f` holds `tokens[offsets[f]..offsets[f + 1]]` of a token array of `n_tokens`
/// ids. The parameters must come from [`check_params`]; the offsets are checked here.
/// The outputs are allocated once, at their exact size.
pub fn window_spans(
    n_tokens: usize,
    offsets: &[i64],
    p: &WindowParams,
) -> Result<Spans, WindowError> {
    check_offsets(offsets, n_tokens).map_err(WindowError::Offsets)?;
    let mut total: u64 = 0;
    for (file, w) in offsets.windows(2).enumerate() {
        let windows = kept_windows(w[1] - w[0], p);
        if windows > u64::from(i32::MAX.unsigned_abs()) + 1 {
            return Err(WindowError::TooManyWindows { file, windows });
        }
        // Kept windows never outnumber tokens + files, so this cannot overflow.
        total = total.saturating_add(windows);
    }
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let mut spans = Spans {
        file_index: reserve(total)?,
        window_index: reserve(total)?,
        start: reserve(total)?,
        stop: reserve(total)?,
    };
    for (file, w) in offsets.windows(2).enumerate() {
        let (begin, n) = (w[0], w[1] - w[0]);
        let file = i64::try_from(file).unwrap_or(i64::MAX);
        let mut i: i64 = 0;
        for j in 0..kept_windows(n, p) {
            // j <= i32::MAX (checked above); i = j * stride <= n - min_window_tokens.
            spans.file_index.push(file);
            spans
                .window_index
                .push(i32::try_from(j).unwrap_or(i32::MAX));
            spans.start.push(begin + i);
            spans.stop.push(begin + i + p.window_size.min(n - i));
            i = i.saturating_add(p.stride);
        }
    }
    Ok(spans)
}

/// Why [`prepend_conditioning`] failed (raised as `varemi._base.errors.ConditioningError`,
/// except `Memory`, raised as `MemoryError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditioningError {
    /// `file_index`, `start` and `stop` differ in length.
    SpanLengths,
    /// `valence_ids` and `arousal_ids` differ in length.
    IdLengths,
    /// A window whose file has no conditioning ids.
    NoIds { file: i64, n_files: usize },
    /// A window outside the token array (or with `start > stop`).
    Outside {
        start: i64,
        stop: i64,
        n_tokens: usize,
    },
    /// The output is too large to allocate.
    Memory(String),
}

impl fmt::Display for ConditioningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditioningError::SpanLengths => {
                write!(f, "file_index, start and stop must have the same length")
            }
            ConditioningError::IdLengths => {
                write!(f, "valence_ids and arousal_ids must have the same length")
            }
            ConditioningError::NoIds { file, n_files } => write!(
                f,
                "file index {file} has no conditioning ids ({n_files} files)"
            ),
            ConditioningError::Outside {
                start,
                stop,
                n_tokens,
            } => write!(
                f,
                "window [{start}, {stop}) lies outside the {n_tokens} tokens"
            ),
            ConditioningError::Memory(e) => write!(f, "cannot allocate the examples: {e}"),
        }
    }
}

/// The validated `(file, start, stop)` of one window, as indexes.
#[inline]
fn window_at(
    file: i64,
    start: i64,
    stop: i64,
    n_files: usize,
    n_tokens: usize,
) -> Result<(usize, usize, usize), ConditioningError> {
    let f = usize::try_from(file)
        .ok()
        .filter(|&f| f < n_files)
        .ok_or(ConditioningError::NoIds { file, n_files })?;
    let outside = ConditioningError::Outside {
        start,
        stop,
        n_tokens,
    };
    let a = usize::try_from(start).map_err(|_| outside.clone())?;
    let b = usize::try_from(stop).map_err(|_| outside.clone())?;
    if a > b || b > n_tokens {
        return Err(outside);
    }
    Ok((f, a, b))
}

/// Writes `[valence id, arousal id] + tokens[start..stop]` for every window into one
/// flat array, and the `n_windows + 1` offsets (from 0) of the examples in it: the
/// layout of an Arrow list array.
///
/// Every window is validated (in order, file before span) before anything is written;
/// the values are then allocated once, at their exact size.
pub fn prepend_conditioning(
    tokens: &[i32],
    file_index: &[i64],
    start: &[i64],
    stop: &[i64],
    valence_ids: &[i32],
    arousal_ids: &[i32],
) -> Result<(Vec<i32>, Vec<i64>), ConditioningError> {
    if file_index.len() != start.len() || start.len() != stop.len() {
        return Err(ConditioningError::SpanLengths);
    }
    if valence_ids.len() != arousal_ids.len() {
        return Err(ConditioningError::IdLengths);
    }
    let n_files = valence_ids.len();
    let windows = file_index.iter().zip(start).zip(stop);
    let mut total: usize = 0;
    for ((&f, &a), &b) in windows.clone() {
        let (_, a, b) = window_at(f, a, b, n_files, tokens.len())?;
        total = total
            .checked_add(b - a + 2)
            .ok_or_else(|| ConditioningError::Memory("more than usize::MAX values".into()))?;
    }
    let memory = |e: TryReserveError| ConditioningError::Memory(e.to_string());
    let mut values: Vec<i32> = Vec::new();
    values.try_reserve_exact(total).map_err(memory)?;
    let mut offsets: Vec<i64> = Vec::new();
    offsets
        .try_reserve_exact(file_index.len() + 1)
        .map_err(memory)?;
    offsets.push(0);
    for ((&f, &a), &b) in windows {
        let (f, a, b) = window_at(f, a, b, n_files, tokens.len())?;
        // Validated above: these lookups are in bounds.
        let (Some(&val), Some(&aro), Some(window)) =
            (valence_ids.get(f), arousal_ids.get(f), tokens.get(a..b))
        else {
            return Err(ConditioningError::Outside {
                start: i64::try_from(a).unwrap_or(i64::MAX),
                stop: i64::try_from(b).unwrap_or(i64::MAX),
                n_tokens: tokens.len(),
            });
        };
        values.push(val);
        values.push(aro);
        values.extend_from_slice(window);
        offsets.push(i64::try_from(values.len()).unwrap_or(i64::MAX));
    }
    Ok((values, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window_size: i64, stride: i64, min_window_tokens: i64) -> WindowParams {
        check_params(
            window_size,
            stride,
            min_window_tokens,
            min_window_tokens > window_size,
        )
        .expect("valid parameters")
    }

    /// The reference's loop, for comparison: (window index, start, stop) within a file.
    fn windows_by_loop(n: i64, p: &WindowParams) -> Vec<(i32, i64, i64)> {
        let mut out = Vec::new();
        let (mut i, mut k) = (0i64, 0i32);
        loop {
            let length = p.window_size.min(n - i).max(0);
            if length >= p.min_window_tokens {
                out.push((k, i, i + length));
                k += 1;
            }
            if i + p.window_size >= n {
                break;
            }
            i += p.stride;
        }
        out
    }

    #[test]
    fn design_example() {
        let p = params(1024, 512, 256);
        let spans = window_spans(1500, &[0, 1500], &p).expect("windows");
        assert_eq!(spans.file_index, vec![0, 0]);
        assert_eq!(spans.window_index, vec![0, 1]);
        assert_eq!(spans.start, vec![0, 512]);
        assert_eq!(spans.stop, vec![1024, 1500]);
    }

    #[test]
    fn several_files_use_absolute_positions() {
        let p = params(4, 2, 2);
        // Files of 5, 0, 1 and 4 tokens.
        let spans = window_spans(12, &[2, 7, 7, 8, 12], &p).expect("windows");
        assert_eq!(spans.file_index, vec![0, 0, 3]);
        assert_eq!(spans.window_index, vec![0, 1, 0]);
        assert_eq!(spans.start, vec![2, 4, 8]);
        assert_eq!(spans.stop, vec![6, 7, 12]);
    }

    #[test]
    fn kept_windows_match_the_reference_loop() {
        for window_size in 1..=9 {
            for stride in 1..=11 {
                for min_window_tokens in 1..=window_size {
                    let p = params(window_size, stride, min_window_tokens);
                    for n in 0..=40 {
                        let expected = windows_by_loop(n, &p);
                        assert_eq!(kept_windows(n, &p), expected.len() as u64, "n={n} {p:?}");
                        let spans = window_spans(n as usize, &[0, n], &p).expect("windows");
                        let got: Vec<(i32, i64, i64)> = spans
                            .window_index
                            .iter()
                            .zip(&spans.start)
                            .zip(&spans.stop)
                            .map(|((&k, &a), &b)| (k, a, b))
                            .collect();
                        assert_eq!(got, expected, "n={n} {p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_parameters_do_not_overflow() {
        let n = 1000;
        let p = params(i64::MAX, i64::MAX, i64::MAX);
        assert_eq!(kept_windows(n, &p), 0);
        let p = params(i64::MAX, i64::MAX, 1);
        assert_eq!(kept_windows(n, &p), 1);
        let p = params(10, i64::MAX, 1);
        assert_eq!(kept_windows(n, &p), 1);
        let p = params(1, 1, 1);
        assert_eq!(kept_windows(i64::MAX, &p), i64::MAX.unsigned_abs());
        let spans = window_spans(n as usize, &[0, n], &params(i64::MAX, 1, 1)).expect("windows");
        assert_eq!((spans.start, spans.stop), (vec![0], vec![n]));
    }

    #[test]
    fn empty_batch_and_empty_files() {
        let p = params(1024, 512, 256);
        assert_eq!(window_spans(0, &[0], &p), Ok(Spans::default()));
        assert_eq!(window_spans(10, &[3, 3, 3], &p), Ok(Spans::default()));
        assert_eq!(window_spans(300, &[0, 255, 300], &p), Ok(Spans::default()));
    }

    #[test]
    fn refuses_bad_parameters_in_order() {
        assert_eq!(check_params(0, 0, 0, false), Err(ParamError::WindowSize(0)));
        assert_eq!(check_params(1, -3, 0, false), Err(ParamError::Stride(-3)));
        assert_eq!(
            check_params(1, 1, 0, false),
            Err(ParamError::MinWindowTokens(0))
        );
        assert_eq!(
            check_params(4, 1, 5, true),
            Err(ParamError::MinAboveWindow {
                min_window_tokens: 5,
                window_size: 4
            })
        );
        assert!(ParamError::Stride(0).to_string().contains("stride"));
    }

    #[test]
    fn refuses_bad_offsets() {
        let p = params(4, 2, 1);
        let offsets_error = |offsets: &[i64], n| match window_spans(n, offsets, &p) {
            Err(WindowError::Offsets(e)) => e,
            other => panic!("expected an offsets error, got {other:?}"),
        };
        assert_eq!(offsets_error(&[], 5), OffsetsError::Empty);
        assert_eq!(offsets_error(&[-1, 2], 5), OffsetsError::Negative(-1));
        assert_eq!(offsets_error(&[0, 3, 2], 5), OffsetsError::Decreasing(2));
        assert_eq!(
            offsets_error(&[0, 6], 5),
            OffsetsError::PastEnd {
                last: 6,
                n_tokens: 5
            }
        );
        assert_eq!(
            offsets_error(&[0, i64::MAX], 5),
            OffsetsError::PastEnd {
                last: i64::MAX,
                n_tokens: 5
            }
        );
        assert_eq!(
            offsets_error(&[i64::MIN], 5),
            OffsetsError::Negative(i64::MIN)
        );
        assert!(OffsetsError::Decreasing(2)
            .to_string()
            .contains("offsets[1]"));
    }

    #[test]
    fn prepends_conditioning_ids() {
        let tokens = [10, 11, 12, 13, 14, 15];
        let (values, offsets) = prepend_conditioning(
            &tokens,
            &[0, 1, 1],
            &[0, 2, 6],
            &[3, 5, 6],
            &[100, 101],
            &[200, 201],
        )
        .expect("examples");
        assert_eq!(
            values,
            vec![100, 200, 10, 11, 12, 101, 201, 12, 13, 14, 101, 201]
        );
        assert_eq!(offsets, vec![0, 5, 10, 12]);
        assert_eq!(values.capacity(), values.len());
    }

    #[test]
    fn prepends_nothing_for_no_windows() {
        let (values, offsets) =
            prepend_conditioning(&[], &[], &[], &[], &[], &[]).expect("examples");
        assert!(values.is_empty());
        assert_eq!(offsets, vec![0]);
    }

    #[test]
    fn refuses_bad_conditioning_inputs() {
        let t = [1, 2, 3];
        assert_eq!(
            prepend_conditioning(&t, &[0], &[0, 1], &[1], &[5], &[6]),
            Err(ConditioningError::SpanLengths)
        );
        assert_eq!(
            prepend_conditioning(&t, &[0], &[0], &[1], &[5], &[]),
            Err(ConditioningError::IdLengths)
        );
        assert_eq!(
            prepend_conditioning(&t, &[1], &[0], &[1], &[5], &[6]),
            Err(ConditioningError::NoIds {
                file: 1,
                n_files: 1
            })
        );
        assert_eq!(
            prepend_conditioning(&t, &[-1], &[0], &[1], &[5], &[6]),
            Err(ConditioningError::NoIds {
                file: -1,
                n_files: 1
            })
        );
        for (a, b) in [(2, 1), (-1, 1), (0, 4), (i64::MIN, i64::MAX)] {
            assert_eq!(
                prepend_conditioning(&t, &[0], &[a], &[b], &[5], &[6]),
                Err(ConditioningError::Outside {
                    start: a,
                    stop: b,
                    n_tokens: 3
                })
            );
        }
        // The first bad window wins, and a bad file index before a bad span.
        assert_eq!(
            prepend_conditioning(&t, &[0, 7, 0], &[0, 0, 9], &[1, 9, 9], &[5], &[6]),
            Err(ConditioningError::NoIds {
                file: 7,
                n_files: 1
            })
        );
    }
}
