"""The public kernel API: native (Rust) by default, the pure-Python reference on request.

Set ``VAREMI_PURE_PYTHON=1`` before importing varemi to run every kernel on its
pure-Python twin in :mod:`varemi.core.reference` (for debugging, or to check the native
build against its specification).

Arrays are borrowed without copying when they are C-contiguous and of the documented
dtype. A non-contiguous view (``a[::2]``) is copied into a contiguous array first:
that is the one copy this module makes, and only for such views. A wrong dtype is
never converted silently: it raises :class:`TypeError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from varemi import _native
from varemi._base.native import PURE_PYTHON
from varemi.core import reference
from varemi.core.params import check_window_params

_impl = reference if PURE_PYTHON else _native
IMPLEMENTATION = "python" if PURE_PYTHON else "native"
"""Which implementation runs the kernels: ``native`` or ``python`` (``VAREMI_PURE_PYTHON=1``)."""


class WindowSpans(NamedTuple):
    """One entry per kept window: its file, its index within the file, and its span."""

    file_index: np.ndarray
    window_index: np.ndarray
    start: np.ndarray
    stop: np.ndarray


class Examples(NamedTuple):
    """Conditioned examples in Arrow list layout, with each example's origin."""

    values: np.ndarray
    offsets: np.ndarray
    file_index: np.ndarray
    window_index: np.ndarray


def _contiguous(array: object) -> object:
    # Only views need a copy; a contiguous array passes through untouched (zero copy).
    if isinstance(array, np.ndarray) and not (array.flags.c_contiguous and array.flags.aligned):
        return np.ascontiguousarray(array)
    return array


def normalize_pitches(
    pitches: np.ndarray, low: int = 21, high: int = 108, policy: str = "clamp"
) -> tuple[np.ndarray, np.ndarray]:
    """Move pitches into ``[low, high]`` by ``clamp``, ``fold`` or ``drop``.

    See :func:`varemi.core.reference.normalize_pitches` for the exact rule.

    Args:
        pitches: 1-D array of MIDI pitches (int8, uint8, int16, int32 or int64).
        low: Lowest pitch kept, inclusive.
        high: Highest pitch kept, inclusive.
        policy: ``clamp``, ``fold`` or ``drop``.

    Returns:
        New pitches (same dtype) and a boolean keep mask.
    """
    return _impl.normalize_pitches(_contiguous(pitches), low, high, policy)


def window_spans(
    tokens: np.ndarray,
    offsets: np.ndarray,
    window_size: int = 1024,
    stride: int = 512,
    min_window_tokens: int = 256,
) -> WindowSpans:
    """Cut every file of a batch (flat int32 tokens + int64 offsets) into windows.

    See :func:`varemi.core.reference.window_spans` for the exact rule (docs/contracts.md,
    contract 5).

    Args:
        tokens: Flat int32 token ids of all files.
        offsets: int64 array of ``n_files + 1`` positions into ``tokens``.
        window_size: Tokens per window.
        stride: Distance between window starts.
        min_window_tokens: Shortest window kept.

    Returns:
        The kept windows as :class:`WindowSpans`.
    """
    return WindowSpans(
        *_impl.window_spans(
            _contiguous(tokens), _contiguous(offsets), window_size, stride, min_window_tokens
        )
    )


def prepend_conditioning(
    tokens: np.ndarray,
    file_index: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    valence_ids: np.ndarray,
    arousal_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``[VAL id, ARO id] + window`` for every window into flat values + offsets.

    See :func:`varemi.core.reference.prepend_conditioning`.

    Args:
        tokens: Flat int32 token ids of all files.
        file_index: int64 file of each window.
        start: int64 absolute start of each window.
        stop: int64 absolute end (exclusive) of each window.
        valence_ids: int32 valence conditioning id per file.
        arousal_ids: int32 arousal conditioning id per file.

    Returns:
        ``(values, offsets)``: int32 values and int64 offsets of an Arrow list array.
    """
    args = (tokens, file_index, start, stop, valence_ids, arousal_ids)
    return _impl.prepend_conditioning(*(_contiguous(a) for a in args))


def bar_window_spans(
    tokens: np.ndarray,
    offsets: np.ndarray,
    bar_starts: np.ndarray,
    window_size: int = 1024,
    stride: int = 512,
    min_window_tokens: int = 256,
) -> WindowSpans:
    """Windows that start at a bar (``--window-align bar``), for a batch of files.

    The rule is :func:`varemi.core.reference.bar_window_spans` (docs/contracts.md,
    contract 5); this is its vectorised numpy form (one ``searchsorted`` per file), held
    equal to it by property tests. It runs in Python with numpy, not in Rust: its cost is
    a few array operations per file, small beside tokenising.

    Args:
        tokens: Flat int32 token ids of all files.
        offsets: int64 array of ``n_files + 1`` positions into ``tokens``.
        bar_starts: bool per token id: the id's first base token is ``Bar``.
        window_size: Tokens per window.
        stride: Distance between the points whose next bar starts a window.
        min_window_tokens: Shortest window kept.

    Returns:
        :class:`WindowSpans`, as :func:`window_spans` returns them.
    """
    if tokens.dtype != np.int32 or offsets.dtype != np.int64 or bar_starts.dtype != np.bool_:
        return WindowSpans(
            *reference.bar_window_spans(  # the twin raises the TypeError
                tokens, offsets, bar_starts, window_size, stride, min_window_tokens
            )
        )
    check_window_params(window_size, stride, min_window_tokens)
    reference.check_offsets(offsets.tolist(), len(tokens))
    inside = (tokens >= 0) & (tokens < len(bar_starts))
    is_bar = np.zeros(len(tokens), dtype=bool)
    is_bar[inside] = bar_starts[tokens[inside]]
    parts: list[tuple[np.ndarray, ...]] = []
    for f in range(len(offsets) - 1):
        begin, end = int(offsets[f]), int(offsets[f + 1])
        n = end - begin
        bars = np.flatnonzero(is_bar[begin:end])
        if n == 0 or len(bars) == 0:
            continue
        at = np.searchsorted(bars, np.arange(0, n, stride, dtype=np.int64), side="left")
        b = bars[at[at < len(bars)]]
        b = b[np.r_[True, b[1:] != b[:-1]]]  # a bar reached from two points: one window
        last = np.flatnonzero(b + window_size >= n)
        if len(last):
            b = b[: last[0] + 1]
        length = np.minimum(window_size, n - b)
        b, length = b[length >= min_window_tokens], length[length >= min_window_tokens]
        parts.append(
            (
                np.full(len(b), f, dtype=np.int64),
                np.arange(len(b), dtype=np.int32),
                begin + b.astype(np.int64),
                begin + b.astype(np.int64) + length,
            )
        )
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return WindowSpans(empty, np.zeros(0, dtype=np.int32), empty, empty.copy())
    return WindowSpans(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def make_examples(
    tokens: np.ndarray,
    offsets: np.ndarray,
    valence_ids: np.ndarray,
    arousal_ids: np.ndarray,
    window_size: int = 1024,
    stride: int = 512,
    min_window_tokens: int = 256,
    bar_starts: np.ndarray | None = None,
) -> Examples:
    """Window a batch of files and prefix every window with its file's conditioning ids.

    Args:
        tokens: Flat int32 token ids of all files.
        offsets: int64 array of ``n_files + 1`` positions into ``tokens``.
        valence_ids: int32 valence conditioning id per file.
        arousal_ids: int32 arousal conditioning id per file.
        window_size: Tokens per window.
        stride: Distance between window starts.
        min_window_tokens: Shortest window kept.
        bar_starts: With ``--window-align bar``: bool per token id (the id starts a bar);
            windows then start at bars (:func:`bar_window_spans`).

    Returns:
        :class:`Examples` ready for ``pyarrow.ListArray.from_arrays(offsets, values)``.
    """
    if bar_starts is None:
        spans = window_spans(tokens, offsets, window_size, stride, min_window_tokens)
    else:
        spans = bar_window_spans(
            tokens, offsets, bar_starts, window_size, stride, min_window_tokens
        )
    values, example_offsets = prepend_conditioning(
        tokens, spans.file_index, spans.start, spans.stop, valence_ids, arousal_ids
    )
    return Examples(values, example_offsets, spans.file_index, spans.window_index)


def split_hashes(keys: Sequence[str], seed: int = 42) -> np.ndarray:
    """Keyed 8-byte BLAKE2b of each key as uint64 (docs/contracts.md contract 6).

    Args:
        keys: Relative POSIX paths.
        seed: Split seed (the BLAKE2b key, 8 bytes little-endian).

    Returns:
        uint64 array of hashes.
    """
    return _impl.split_hashes(list(keys), seed)


def val_mask(keys: Sequence[str], seed: int = 42, train_split: float = 0.9) -> np.ndarray:
    """True for each file that belongs to the ``val`` split (docs/contracts.md contract 6).

    Args:
        keys: Relative POSIX paths.
        seed: Split seed.
        train_split: Fraction of files meant for ``train``, in (0, 1].

    Returns:
        Boolean array, True for ``val``.
    """
    return _impl.val_mask(list(keys), seed, float(train_split))


def label_features(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The label features of a score's note arrays (:class:`varemi.core.label_features.NoteArrays`).

    Args:
        arrays: ``time, duration, pitch, velocity, note_tracks, pedal_time,
            pedal_duration, pedal_tracks, tempo_time, tempo_qpm`` (float64, with
            ``pitch`` and the two ``*_tracks`` offset arrays int64).

    Returns:
        float64 array, one value per name of :data:`varemi.core.label_features.FEATURE_NAMES`.

    Raises:
        LabelInputError: No notes, arrays of different lengths, or bad track offsets.
        TypeError: An argument that is not a 1-D numpy array of its dtype.
    """
    return _impl.label_features(*(_contiguous(a) for a in arrays))
