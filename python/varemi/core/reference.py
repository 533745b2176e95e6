"""Pure-Python twins of the native kernels: the executable specification.

Each function here is what the matching function of ``varemi._native`` must
compute, written as plainly as possible (loops over Python ints, no numpy
vectorisation) so that it can be read against docs/contracts.md. Tests hold the two
implementations equal; benchmarks race them. Inputs are validated as the native side
validates them and raise the same exception classes; the parameter validators are
those of the modules that own the parameters (:mod:`varemi.core.windows`,
:mod:`varemi.core.split`, :mod:`varemi.core.pitch`), whose messages name the command-line option
(the native kernels' messages name the Python parameter).
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Sequence

import numpy as np

from varemi._base.errors import (
    ConditioningError,
    LabelInputError,
    OffsetsError,
    PitchRangeError,
    SplitParameterError,
    WindowParameterError,
)
from varemi.core.label_features import NoteArrays, features_reference
from varemi.core.params import check_split_params, check_window_params
from varemi.core.pitch import PITCH_POLICIES, check_pitch_params

__all__ = [
    "bar_window_spans",
    "PITCH_POLICIES",
    "PitchRangeError",
    "SplitParameterError",
    "WindowParameterError",
    "normalize_pitches",
    "prepend_conditioning",
    "split_hashes",
    "val_mask",
    "window_spans",
]

PITCH_DTYPES = (np.int8, np.uint8, np.int16, np.int32, np.int64)


def _require_dtype(name: str, array: np.ndarray, dtype: type) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype):
        got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise TypeError(f"{name} must be a 1-D numpy array of {np.dtype(dtype).name}, got {got}")
    if array.ndim != 1:
        raise TypeError(f"{name} must be 1-D, got {array.ndim}-D")


def normalize_pitches(
    pitches: np.ndarray, low: int = 21, high: int = 108, policy: str = "clamp"
) -> tuple[np.ndarray, np.ndarray]:
    """Move pitches into the inclusive range ``[low, high]`` (docs/contracts.md contract 3).

    Args:
        pitches: 1-D array of MIDI pitches, one of int8, uint8, int16, int32, int64.
        low: Lowest pitch kept, inclusive.
        high: Highest pitch kept, inclusive.
        policy: ``clamp`` moves a pitch to the nearest bound; ``fold`` moves it by whole
            octaves until it is inside (the range must span at least 12 semitones);
            ``drop`` leaves the pitch as it is and marks it to be removed.

    Returns:
        The new pitches (same dtype and length) and a boolean keep mask (all True
        except for notes that ``drop`` removes).

    Raises:
        TypeError: ``pitches`` is not a 1-D array of a supported integer dtype.
        PitchRangeError: unknown policy, ``low > high``, bounds outside 0..127, or
            ``fold`` on a range narrower than an octave.
    """
    if not isinstance(pitches, np.ndarray) or pitches.dtype not in [
        np.dtype(d) for d in PITCH_DTYPES
    ]:
        got = pitches.dtype if isinstance(pitches, np.ndarray) else type(pitches).__name__
        raise TypeError(
            f"pitches must be a 1-D array of int8, uint8, int16, int32 or int64, got {got}"
        )
    if pitches.ndim != 1:
        raise TypeError(f"pitches must be 1-D, got {pitches.ndim}-D")
    check_pitch_params(policy, low, high)
    out: list[int] = []
    keep: list[bool] = []
    for p in pitches.tolist():
        k = True
        if policy == "clamp":
            p = min(max(p, low), high)
        elif policy == "fold":
            while p < low:
                p += 12
            while p > high:
                p -= 12
        elif p < low or p > high:
            k = False
        out.append(p)
        keep.append(k)
    return np.array(out, dtype=pitches.dtype), np.array(keep, dtype=bool)


def check_offsets(offsets: list[int], n_tokens: int) -> None:
    if len(offsets) == 0:
        raise OffsetsError("offsets must hold at least one entry (n_files + 1 entries)")
    if offsets[0] < 0:
        raise OffsetsError(f"offsets[0] must be >= 0, got {offsets[0]}")
    for i in range(1, len(offsets)):
        if offsets[i] < offsets[i - 1]:
            raise OffsetsError(f"offsets must be non-decreasing: offsets[{i}] < offsets[{i - 1}]")
    if offsets[-1] > n_tokens:
        raise OffsetsError(f"offsets run past the end: {offsets[-1]} > {n_tokens} tokens")


def window_spans(
    tokens: np.ndarray,
    offsets: np.ndarray,
    window_size: int = 1024,
    stride: int = 512,
    min_window_tokens: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut every file of a batch into windows (docs/contracts.md contract 5).

    File ``f`` holds ``tokens[offsets[f]:offsets[f+1]]``. Windows of a file of length
    ``n`` start at ``i = 0, stride, 2*stride, ...``; the window is ``t[i:i+window_size]``,
    kept iff its length is at least ``min_window_tokens``; iteration stops after the
    first ``i`` with ``i + window_size >= n``.

    Args:
        tokens: Flat int32 token ids of all files (only its length is read).
        offsets: int64 array of ``n_files + 1`` non-decreasing positions into ``tokens``.
        window_size: Tokens per window (W), at least 1.
        stride: Distance between window starts (S), at least 1.
        min_window_tokens: Shortest window kept, in 1..window_size.

    Returns:
        Four arrays with one entry per kept window, in file order then window order:
        ``file_index`` (int64), ``window_index`` (int32, 0.. within the file),
        ``start`` and ``stop`` (int64 absolute positions into ``tokens``).

    Raises:
        TypeError: ``tokens`` is not int32 or ``offsets`` is not int64.
        WindowParameterError: a window parameter out of range.
        OffsetsError: offsets empty, negative, decreasing or past the end.
    """
    _require_dtype("tokens", tokens, np.int32)
    _require_dtype("offsets", offsets, np.int64)
    check_window_params(window_size, stride, min_window_tokens)
    offs = offsets.tolist()
    check_offsets(offs, len(tokens))
    files: list[int] = []
    windows: list[int] = []
    starts: list[int] = []
    stops: list[int] = []
    for f in range(len(offs) - 1):
        begin, n = offs[f], offs[f + 1] - offs[f]
        i = 0
        k = 0
        while True:
            length = max(0, min(window_size, n - i))
            if length >= min_window_tokens:
                files.append(f)
                windows.append(k)
                starts.append(begin + i)
                stops.append(begin + i + length)
                k += 1
            if i + window_size >= n:
                break
            i += stride
    return (
        np.array(files, dtype=np.int64),
        np.array(windows, dtype=np.int32),
        np.array(starts, dtype=np.int64),
        np.array(stops, dtype=np.int64),
    )


def bar_window_spans(
    tokens: np.ndarray,
    offsets: np.ndarray,
    bar_starts: np.ndarray,
    window_size: int = 1024,
    stride: int = 512,
    min_window_tokens: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut every file of a batch into windows that start at a bar (``--window-align bar``).

    Position ``j`` of a file starts a bar when ``bar_starts[t[j]]`` (the id's first base
    token is ``Bar``). For ``k = 0, 1, ...`` while ``k * stride < n``: ``b`` is the first
    bar start at or after ``k * stride`` (none: stop); a ``b`` equal to the previous
    window's start is skipped; the window is ``t[b:b+window_size]``, kept iff its length is
    at least ``min_window_tokens``; iteration stops after the first ``b`` with
    ``b + window_size >= n``. A window is never longer than ``window_size``.

    Args:
        tokens: Flat int32 token ids of all files.
        offsets: int64 array of ``n_files + 1`` non-decreasing positions into ``tokens``.
        bar_starts: bool per token id of the vocabulary; ids past its end start no bar.
        window_size: Tokens per window (W), at least 1.
        stride: Distance between the points whose next bar starts a window (S).
        min_window_tokens: Shortest window kept, in 1..window_size.

    Returns:
        ``file_index``, ``window_index``, ``start``, ``stop`` as :func:`window_spans`.

    Raises:
        TypeError: ``tokens`` is not int32, ``offsets`` not int64, ``bar_starts`` not bool.
        WindowParameterError: a window parameter out of range.
        OffsetsError: offsets empty, negative, decreasing or past the end.
    """
    _require_dtype("tokens", tokens, np.int32)
    _require_dtype("offsets", offsets, np.int64)
    _require_dtype("bar_starts", bar_starts, np.bool_)
    check_window_params(window_size, stride, min_window_tokens)
    offs = offsets.tolist()
    check_offsets(offs, len(tokens))
    table = bar_starts.tolist()
    files: list[int] = []
    windows: list[int] = []
    starts: list[int] = []
    stops: list[int] = []
    for f in range(len(offs) - 1):
        begin, n = offs[f], offs[f + 1] - offs[f]
        ids = tokens[begin : begin + n].tolist()
        bars = [j for j, i in enumerate(ids) if 0 <= i < len(table) and table[i]]
        previous, k = None, 0
        point = 0
        while point < n:
            later = [b for b in bars if b >= point]
            if not later:
                break
            b = later[0]
            point += stride
            if b == previous:
                continue
            previous = b
            length = min(window_size, n - b)
            if length >= min_window_tokens:
                files.append(f)
                windows.append(k)
                starts.append(begin + b)
                stops.append(begin + b + length)
                k += 1
            if b + window_size >= n:
                break
    return (
        np.array(files, dtype=np.int64),
        np.array(windows, dtype=np.int32),
        np.array(starts, dtype=np.int64),
        np.array(stops, dtype=np.int64),
    )


def prepend_conditioning(
    tokens: np.ndarray,
    file_index: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    valence_ids: np.ndarray,
    arousal_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``[VAL id, ARO id] + window`` for every window into one flat array.

    Args:
        tokens: Flat int32 token ids of all files.
        file_index: int64 file of each window (indexes ``valence_ids``/``arousal_ids``).
        start: int64 absolute start of each window in ``tokens``.
        stop: int64 absolute end (exclusive) of each window in ``tokens``.
        valence_ids: int32 valence conditioning id per file.
        arousal_ids: int32 arousal conditioning id per file.

    Returns:
        ``values`` (int32, all examples back to back) and ``offsets`` (int64,
        ``n_windows + 1`` entries starting at 0), the layout of an Arrow list array.

    Raises:
        TypeError: an array of the wrong dtype.
        ConditioningError: arrays of different lengths, a window outside ``tokens``,
            or a file index without conditioning ids.
    """
    _require_dtype("tokens", tokens, np.int32)
    for name, arr in (("file_index", file_index), ("start", start), ("stop", stop)):
        _require_dtype(name, arr, np.int64)
    _require_dtype("valence_ids", valence_ids, np.int32)
    _require_dtype("arousal_ids", arousal_ids, np.int32)
    if not len(file_index) == len(start) == len(stop):
        raise ConditioningError("file_index, start and stop must have the same length")
    if len(valence_ids) != len(arousal_ids):
        raise ConditioningError("valence_ids and arousal_ids must have the same length")
    toks = tokens.tolist()
    vals, aros = valence_ids.tolist(), arousal_ids.tolist()
    values: list[int] = []
    offsets = [0]
    for f, a, b in zip(file_index.tolist(), start.tolist(), stop.tolist(), strict=True):
        if not 0 <= f < len(vals):
            raise ConditioningError(f"file index {f} has no conditioning ids ({len(vals)} files)")
        if not 0 <= a <= b <= len(toks):
            raise ConditioningError(f"window [{a}, {b}) lies outside the {len(toks)} tokens")
        values.append(vals[f])
        values.append(aros[f])
        values.extend(toks[a:b])
        offsets.append(len(values))
    return np.array(values, dtype=np.int32), np.array(offsets, dtype=np.int64)


def split_hashes(keys: Sequence[str], seed: int = 42) -> np.ndarray:
    """Keyed BLAKE2b of each key (docs/contracts.md contract 6), as unsigned 64-bit integers.

    Args:
        keys: File paths relative to the MIDI root, POSIX separators.
        seed: The split seed, used little-endian as the 8-byte BLAKE2b key.

    Returns:
        uint64 array: the 8-byte digest of each key's UTF-8 bytes, read little-endian.

    Raises:
        SplitParameterError: seed outside 0..2**64-1.
        TypeError: a key that is not a string.
    """
    check_split_params(seed, 0.5)
    key = operator.index(seed).to_bytes(8, "little")
    out = []
    for k in keys:
        if not isinstance(k, str):
            raise TypeError(f"split keys must be str, got {type(k).__name__}")
        digest = hashlib.blake2b(k.encode("utf-8"), digest_size=8, key=key).digest()
        out.append(int.from_bytes(digest, "little"))
    return np.array(out, dtype=np.uint64)


def val_mask(keys: Sequence[str], seed: int = 42, train_split: float = 0.9) -> np.ndarray:
    """Which files go to the validation split (docs/contracts.md contract 6).

    Args:
        keys: File paths relative to the MIDI root, POSIX separators.
        seed: The split seed.
        train_split: Fraction of files meant for ``train``, in (0, 1].

    Returns:
        Boolean array, True where the file belongs to ``val``:
        ``hash < floor((1 - train_split) * 2**64)`` in float64.

    Raises:
        SplitParameterError: seed or train_split out of range.
        TypeError: a key that is not a string.
    """
    check_split_params(seed, train_split)
    threshold = math.floor((1 - float(train_split)) * 2**64)
    return np.array([int(h) < threshold for h in split_hashes(keys, seed).tolist()], dtype=bool)


def _check_track_offsets(offsets: np.ndarray, n: int, name: str) -> None:
    ok = (
        len(offsets) > 0
        and offsets[0] == 0
        and bool(np.all(np.diff(offsets) >= 0))
        and int(offsets[-1]) == n
    )
    if not ok:
        raise LabelInputError(
            f"{name} must start at 0, never decrease and end at the number of entries"
        )


def label_features(
    time: np.ndarray,
    duration: np.ndarray,
    pitch: np.ndarray,
    velocity: np.ndarray,
    note_tracks: np.ndarray,
    pedal_time: np.ndarray,
    pedal_duration: np.ndarray,
    pedal_tracks: np.ndarray,
    tempo_time: np.ndarray,
    tempo_qpm: np.ndarray,
) -> np.ndarray:
    """Label features of note arrays, checked: the twin of the native kernel.

    Computed by :func:`varemi.core.label_features.features_reference`.

    Same arguments, checks and errors as ``varemi._native.label_features``.
    """
    for name, array, dtype in (
        ("time", time, np.float64),
        ("duration", duration, np.float64),
        ("pitch", pitch, np.int64),
        ("velocity", velocity, np.float64),
        ("note_tracks", note_tracks, np.int64),
        ("pedal_time", pedal_time, np.float64),
        ("pedal_duration", pedal_duration, np.float64),
        ("pedal_tracks", pedal_tracks, np.int64),
        ("tempo_time", tempo_time, np.float64),
        ("tempo_qpm", tempo_qpm, np.float64),
    ):
        _require_dtype(name, array, dtype)
    n = len(time)
    if not len(duration) == len(pitch) == len(velocity) == n:
        raise LabelInputError("time, duration, pitch and velocity must all have the same length")
    if len(pedal_time) != len(pedal_duration):
        raise LabelInputError("pedal_time and pedal_duration must all have the same length")
    if len(tempo_time) != len(tempo_qpm):
        raise LabelInputError("tempo_time and tempo_qpm must all have the same length")
    if n == 0:
        raise LabelInputError("label features need at least one note")
    _check_track_offsets(note_tracks, n, "note_tracks")
    _check_track_offsets(pedal_tracks, len(pedal_time), "pedal_tracks")
    if len(note_tracks) != len(pedal_tracks):
        raise LabelInputError("note_tracks and pedal_tracks must all have the same length")
    arrays = NoteArrays(
        time, duration, pitch, velocity, note_tracks, pedal_time, pedal_duration,
        pedal_tracks, tempo_time, tempo_qpm,
    )  # fmt: skip
    return features_reference(arrays)
