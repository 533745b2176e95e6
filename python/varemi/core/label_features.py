"""The label features of note arrays: the pure-Python twin of the native kernel.

:func:`features_reference` is the executable specification of
``varemi._native.label_features`` (public as :func:`varemi.core.kernels.label_features`);
the heuristic that weighs these features into valence and arousal is
:mod:`varemi.labelling.heuristic`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    pass


# Krumhansl & Kessler (1982) probe-tone key profiles, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])


KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


ONSET_MERGE_S = 0.03
"""Onsets closer than this (seconds) count as one onset: a chord, a spread hand."""


MIN_SPAN_S = 1.0
"""Rates are taken over at least this many seconds."""


DEFAULT_BPM = 120.0
"""MIDI's tempo when a file sets none."""


MIN_DURATION_S = 1.0 / 32.0


MAX_DURATION_S = 8.0
"""Note lengths are clipped to [MIN_DURATION_S, MAX_DURATION_S] before their log is averaged."""


TRIAD_PRIOR = 10.0
"""Pseudo-count of neutral onsets in ``triad_balance``: a handful of triads is weak evidence."""


FLAT_HISTOGRAM = 1e-9
"""A pitch-class histogram whose deviation from flat is below this share of its
largest bin correlates with no key (rounding noise must not decide a key)."""


SEGMENT_S = 8.0
"""Length (seconds) of the segments whose local key :func:`_local_keys` measures."""


FEATURE_NAMES: tuple[str, ...] = (
    "duration_s",
    "n_notes",
    "tempo_bpm",
    "note_density",
    "onset_rate",
    "ioi_median",
    "note_duration",
    "log_duration",
    "articulation",
    "velocity_mean",
    "pitch_mean",
    "major_corr",
    "minor_corr",
    "mode",
    "key_clarity",
    "triad_balance",
    "local_mode",
    "local_major",
    "velocity_range",
)
"""The features, in the column order of :func:`label_folder`'s DataFrame."""


_ROTATIONS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _rotations(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 rotations of a key profile (tonic C..B), centred, and their norms."""
    rotations = np.stack([np.roll(profile, k) for k in range(12)])
    rz = rotations - rotations.mean(axis=1, keepdims=True)
    return rz, np.linalg.norm(rz, axis=1)


def _key_correlations(hist: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``hist`` with the 12 rotations of ``profile`` (tonic C..B)."""
    if id(profile) not in _ROTATIONS:  # computed once per profile, not once per file
        _ROTATIONS[id(profile)] = _rotations(profile)
    rz, rz_norm = _ROTATIONS[id(profile)]
    hz = hist - hist.sum() / 12.0
    norm = math.sqrt(float(hz @ hz))
    if norm <= FLAT_HISTOGRAM * float(np.abs(hist).max()):  # flat: every key fits equally
        return np.zeros(12)
    return (rz @ hz) / (rz_norm * norm)


def _time_weighted_bpm(times: np.ndarray, qpm: np.ndarray, start: float, end: float) -> float:
    """Mean tempo over [start, end] (seconds), each tempo weighted by how long it lasts."""
    if len(times) == 0:
        return DEFAULT_BPM
    order = np.argsort(times, kind="stable")
    times = times[order]
    qpm = qpm[order]
    seg_start = np.clip(times, start, end)
    seg_end = np.clip(np.append(times[1:], np.inf), start, end)
    weight = seg_end - seg_start
    if weight.sum() <= 0.0:  # all notes at one instant: the tempo in force then
        return float(qpm[max(int(np.searchsorted(times, start, side="right")) - 1, 0)])
    return float((weight * qpm).sum() / weight.sum())


def _triad_counts(
    groups: np.ndarray, time: np.ndarray, offsets: np.ndarray, pitch: np.ndarray
) -> tuple[int, int]:
    """How many onset groups have a major triad, and a minor triad, among their sounding notes.

    A note sounds at an onset group starting at ``g`` when it starts at or before
    ``g + ONSET_MERGE_S`` and ends after it.
    """
    probe = groups + ONSET_MERGE_S
    mask = np.zeros(len(groups), dtype=np.int64)
    pc = pitch % 12
    # Sorted once by (pitch class, time): each class is then one contiguous slice.
    starts = time[np.lexsort((time, pc))]
    ends = offsets[np.lexsort((offsets, pc))]
    bounds = np.searchsorted(np.sort(pc), np.arange(13))
    for c in range(12):
        lo, hi = bounds[c], bounds[c + 1]
        if hi > lo:
            started = np.searchsorted(starts[lo:hi], probe, side="right")
            ended = np.searchsorted(ends[lo:hi], probe, side="right")
            mask |= (started > ended).astype(np.int64) << c
    has_major = np.zeros(len(groups), dtype=bool)
    has_minor = np.zeros(len(groups), dtype=bool)
    for root in range(12):
        fifth = (1 << root) | (1 << (root + 7) % 12)
        major = fifth | (1 << (root + 4) % 12)
        minor = fifth | (1 << (root + 3) % 12)
        has_major |= (mask & major) == major
        has_minor |= (mask & minor) == minor
    return int(has_major.sum()), int(has_minor.sum())


def _sounding(
    onset: np.ndarray, duration: np.ndarray, pedal_time: np.ndarray, pedal_duration: np.ndarray
) -> np.ndarray:
    """How long each note of one track sounds, in seconds.

    A note released while the sustain pedal of its track is down lasts until the
    pedal is lifted (performances hold notes with the pedal, not the keys).
    """
    offset = onset + duration
    if len(pedal_time):
        order = np.argsort(pedal_time, kind="stable")
        down = pedal_time[order]
        up = np.maximum.accumulate((pedal_time + np.maximum(pedal_duration, 0.0))[order])
        k = np.searchsorted(down, offset, side="right") - 1  # last pedal pressed by the release
        held = (k >= 0) & (up[np.maximum(k, 0)] > offset)
        offset = np.where(held, up[np.maximum(k, 0)], offset)
    return offset - onset


def _local_keys(
    time: np.ndarray, pitch: np.ndarray, weights: np.ndarray, start: float
) -> tuple[float, float]:
    """Local mode and local major fit: per-segment key correlations, weighted means.

    Per SEGMENT_S segment: the mode (best major minus best minor key correlation)
    and the best major key correlation, each averaged with the segments' weights.
    Each note belongs to the segment its onset falls in; a segment's histogram and
    weight are its notes' durations (``weights``).

    Returns:
        ``(local_mode, local_major)``.
    """
    seg = np.floor((time - start) / SEGMENT_S).astype(np.int64)
    n_seg = int(seg.max()) + 1
    hists = np.zeros((n_seg, 12))
    np.add.at(hists, (seg, pitch % 12), weights)
    total = 0.0
    total_major = 0.0
    weight = 0.0
    for hist in hists:
        w = float(hist.sum())
        if w > 0.0:
            major = float(_key_correlations(hist, KK_MAJOR).max())
            minor = float(_key_correlations(hist, KK_MINOR).max())
            total += w * (major - minor)
            total_major += w * major
            weight += w
    if weight <= 0.0:
        return 0.0, 0.0
    return total / weight, total_major / weight


def _articulation(onsets: Sequence[np.ndarray], lengths: Sequence[np.ndarray]) -> float:
    """Median over notes of sounding length / (next onset in the same track - onset), in [0, 2]."""
    ratios = []
    for onset, length in zip(onsets, lengths, strict=True):
        distinct = np.unique(onset)
        nxt = np.searchsorted(distinct, onset + ONSET_MERGE_S, side="right")
        has_next = nxt < len(distinct)
        if has_next.any():
            gap = distinct[nxt[has_next]] - onset[has_next]
            ratios.append(np.clip(length[has_next] / gap, 0.0, 2.0))
    return float(np.median(np.concatenate(ratios))) if ratios else 1.0


class NoteArrays(NamedTuple):
    """A score's notes, pedals and tempos in seconds: what the features are computed from.

    The notes of all non-drum tracks are concatenated in track order; ``note_tracks``
    (int64, one more than the tracks) holds where each track's notes start and end,
    ``pedal_tracks`` likewise for the sustain pedals. Floats are float64, ``pitch`` is
    int64; ``duration`` is >= 0.
    """

    time: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    note_tracks: np.ndarray
    pedal_time: np.ndarray
    pedal_duration: np.ndarray
    pedal_tracks: np.ndarray
    tempo_time: np.ndarray
    tempo_qpm: np.ndarray


def features_reference(a: NoteArrays) -> np.ndarray:
    """The features of :data:`FEATURE_NAMES`, in that order: the pure-Python twin.

    ``varemi._native.label_features`` computes the same values (to float rounding)
    in Rust; :func:`features_of_arrays` chooses between them.

    Args:
        a: The notes (at least one), pedals and tempos.

    Returns:
        A float64 array, one value per feature name.
    """
    time, dur, pitch, vel = a.time, a.duration, a.pitch, a.velocity
    start = float(time.min())
    end = float((time + dur).max())
    span = max(end - start, MIN_SPAN_S)

    bounds = list(zip(a.note_tracks[:-1], a.note_tracks[1:], strict=True))
    pedal_bounds = list(zip(a.pedal_tracks[:-1], a.pedal_tracks[1:], strict=True))
    per_track = [
        _sounding(time[lo:hi], dur[lo:hi], a.pedal_time[plo:phi], a.pedal_duration[plo:phi])
        for (lo, hi), (plo, phi) in zip(bounds, pedal_bounds, strict=True)
    ]
    sounding = np.concatenate(per_track)
    onsets = np.unique(time)
    groups = onsets[np.concatenate([[True], np.diff(onsets) > ONSET_MERGE_S])]
    ioi = np.diff(groups)

    weights = dur if dur.sum() > 0.0 else np.ones_like(dur)
    hist = np.bincount(pitch % 12, weights=weights, minlength=12)
    major = float(_key_correlations(hist, KK_MAJOR).max())
    minor = float(_key_correlations(hist, KK_MINOR).max())
    n_major, n_minor = _triad_counts(groups, time, time + dur, pitch)
    log_duration = np.log2(np.clip(sounding, MIN_DURATION_S, MAX_DURATION_S))
    local_mode, local_major = _local_keys(time, pitch, weights, start)

    return np.array(
        [
            end - start,
            float(len(time)),
            _time_weighted_bpm(a.tempo_time, a.tempo_qpm, start, end),
            len(time) / span,
            len(groups) / span,
            float(np.median(ioi)) if len(ioi) else span,
            float(np.median(dur)),
            float(log_duration.sum() / len(log_duration)),
            _articulation([time[lo:hi] for lo, hi in bounds], per_track),
            float(vel.sum() / len(vel)),
            float((pitch * weights).sum() / weights.sum()),
            major,
            minor,
            major - minor,
            max(major, minor),
            (n_major - n_minor) / (n_major + n_minor + TRIAD_PRIOR),
            local_mode,
            local_major,
            float(vel.max() - vel.min()),
        ],
        dtype=np.float64,
    )
