"""Heuristic valence/arousal labels from musical features, and users' label CSVs.

Every file is labelled from its own notes alone (drum tracks ignored, times in
seconds), with fixed reference ranges, so a file's labels never depend on the rest
of the corpus. Each feature ``x`` is put on a reference scale, ``z = (x - centre) /
scale``, or ``z = log2(x / centre) / scale`` for rates and durations; ``z`` is not
bounded. A label is one squash of the weighted evidence::

    valence = tanh(0.4 * sum(w * z for the VALENCE_TERMS))
    arousal = tanh(0.5 * sum(w * z for the AROUSAL_TERMS))

so it is a monotone function of every feature (the velocity gate aside), in (-1, 1),
and reaches the extreme bins (|label| > 0.875, evidence above 3.4 for valence, 2.7
for arousal) only on strong evidence from several features at once: the labeller of version 1
took ``tanh`` of a sum of already-bounded ``tanh`` terms of total weight 3, which
put half of a classical repertoire in the top bin.

Arousal (activity: how many notes, how close together, how loud, how detached):

| feature         | weight | z                   | unit            |
|-----------------|-------:|---------------------|-----------------|
| `note_density`  |   1.0  | log2(x / 7)         | notes/s         |
| `ioi_median`    |  -1.0  | log2(x / 0.25)      | s between onsets|
| `log_duration`  |  -0.5  | x + 1               | log2 s          |
| `velocity_mean` |   0.5  | (x - 80) / 20       | MIDI velocity   |
| `tempo_bpm`     |   0.25 | log2(x / 100)       | quarters/minute |
| `articulation`  |  -0.25 | (x - 1.5) / 0.5     | sounding / IOI  |

The velocity term counts only when ``velocity_range > 0``: a file whose notes all
share one velocity (an editor's default, 90 of VGMIDI's 204 files) says nothing
about loudness, and its term is 0 rather than "loud" or "soft".

Valence (harmony first: how well each passage fits a major key, the share of major
vs minor sonorities, how tonal the whole piece is; then register, note length and
articulation):

| feature         | weight | z                   | unit            |
|-----------------|-------:|---------------------|-----------------|
| `local_major`   |   1.0  | (x - 0.725) / 0.1   | correlation     |
| `triad_balance` |   0.5  | (x - 0.05) / 0.4    | -1..1           |
| `key_clarity`   |   0.25 | (x - 0.85) / 0.1    | correlation     |
| `pitch_mean`    |   0.5  | (x - 60) / 6        | MIDI pitch      |
| `log_duration`  |  -0.5  | x + 1               | log2 s          |
| `articulation`  |  -0.5  | (x - 1.5) / 0.5     | sounding / IOI  |

Where the numbers come from. The scales are about one spread (standard deviation)
of the feature within a corpus, so weight 1 means "one typical difference between
two pieces"; the weights are round and their signs are the textbook cues (faster,
denser, louder, more detached: more aroused; major, tonal, higher, shorter and more
detached notes: more positive; Gabrielsson & Lindstrom, "The role of structure in
the musical expression of emotions", 2010). The centres sit between the medians of
three corpora of different styles, so that none of them lands on one side: POP909
(pop piano arrangements, performed with the pedal, real tempo maps), VGMIDI
(video-game piano, loud, short notes, a constant 120 bpm) and the Maestro excerpts
of MidiTok's tests (classical performances, soft, dense, pedalled); the README lists
the three medians of every feature. ``local_major`` (medians 0.79, 0.69, 0.73) is
centred at 0.725, a little on VGMIDI's side of the middle: its listeners call 68% of
it positive although its harmony fits keys less well than POP909's (thinner
textures, more chromatic writing); a centre of 0.7, about VGMIDI's own median, would
call 77% of POP909 positive. Velocity is centred at 80, between the files whose velocities vary
(POP909 86, VGMIDI 77, Maestro 65). The weights and centres were compared on a
coarse grid of round values (weights in {0, 0.25, 0.5, 1}, centres in steps of a
quarter spread) for the ROC AUC against VGMIDI's human signs, on all of it and on
each half of its files (in file order, so that a choice that helps one half only
shows), the predicted-positive shares, the correlation of valence with arousal (the
human labels are uncorrelated), and the spread over the 9 uniform bins of all three
corpora; ``scripts/label_auc.py`` reports them, and the README records the figures.
Velocity carries no arousal in VGMIDI (ROC AUC 0.53, varied velocities or not) but
much in performances, so it keeps weight 0.5; the tempo map is often a constant
120 bpm, so tempo keeps 0.25.

The features:

- ``note_density``: notes per second over the span from the first onset to the last
  offset (at least 1 s); ``onset_rate``: distinct onsets per second, onsets closer
  than 30 ms merged into one (a chord); ``ioi_median``: median interval between
  those onsets (the span when there is one onset).
- ``note_duration``: median note length (key down to key up) in seconds;
  ``log_duration``: mean of log2 of each note's sounding length, clipped to
  [1/32 s, 8 s]: a note released while the sustain pedal (controller 64) of its track
  is down sounds until the pedal is lifted, so pedalled performances, whose keys
  are released early, are not taken for staccato; ``articulation``: median of a
  note's sounding length over the gap to the next onset in its track, clipped to
  [0, 2] (below 1 is detached, staccato; 1 is legato; above 1 overlapping).
- ``tempo_bpm``: the tempo map's quarter-notes per minute, weighted by the seconds
  each tempo lasts within the notes' span (120 when the file has no tempo).
- ``velocity_mean``: mean note velocity; ``velocity_range``: the largest minus the
  smallest note velocity (0: every note has one velocity); ``pitch_mean``:
  duration-weighted mean pitch.
- ``major_corr``, ``minor_corr``: the best Pearson correlation of the
  duration-weighted pitch-class histogram with the 12 rotations of the
  Krumhansl-Kessler major, and minor, key profiles; ``mode`` is major minus minor
  (positive: major); ``key_clarity`` is the larger of the two (low: chromatic or
  atonal writing).
- ``local_mode``: the same major-minus-minor correlation on each 8-second segment
  (a note belongs to the segment of its onset), averaged with the segments' total
  note durations as weights: the local key of each passage, so a piece that
  modulates is judged by its keys, not by one blurred histogram.
- ``local_major``: the best major-key correlation of each 8-second segment, averaged
  the same way: how well each passage fits some major key. High for diatonic major
  writing, lower for minor writing (its tonic weight and raised leading tone fit its
  relative major less well) and lowest for chromatic or atonal passages; alone it
  ranks VGMIDI's human valence signs with ROC AUC 0.83 (``local_mode`` 0.73,
  ``triad_balance`` 0.73).
- ``triad_balance``: (onsets where the notes sounding 30 ms after the onset hold a
  major triad - onsets where they hold a minor triad) / (the sum of the two + 10):
  the share of major vs minor sonorities over time, shrunk towards 0 when a piece
  has only a handful of triads (10 neutral pseudo-onsets).
- ``duration_s``, ``n_notes``, ``onset_rate``, ``note_duration``, ``major_corr``,
  ``minor_corr``, ``mode`` and ``local_mode`` are reported but not used by the
  formula (``velocity_range`` only gates the velocity term).

Optional jitter adds gaussian noise of standard deviation ``jitter`` to both labels,
from ``numpy.random.default_rng([seed, h])`` where ``h`` is the 64-bit little-endian
blake2b hash of the file's relative path (UTF-8), then clips to [-1, 1]: the same
file, seed and jitter always get the same noise, whatever the other files and the
number of workers.
"""

from __future__ import annotations

import csv
import hashlib
import math
import numbers
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import symusic

from varemi.errors import VaremiError
from varemi.files import list_midi_files, split_bad_names

if TYPE_CHECKING:
    import pandas as pd

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


@dataclass(frozen=True)
class Term:
    """One feature's contribution to a label's evidence: ``weight * z``.

    Attributes:
        feature: Key in the features dict.
        weight: Signed weight.
        centre: The feature value that maps to ``z = 0``.
        scale: The change in the feature (in log2 units when ``log``) that maps to ``z = 1``.
        log: Whether ``z = log2(x / centre) / scale`` (for rates and durations)
            rather than ``(x - centre) / scale``.
        gate: A feature that must be > 0 for the term to count (``z = 0`` otherwise):
            ``velocity_range`` for loudness, which a file whose notes all share one
            velocity does not tell.
    """

    feature: str
    weight: float
    centre: float
    scale: float
    log: bool = False
    gate: str | None = None

    def z(self, value: float) -> float:
        """The feature value on its reference scale."""
        if self.log:
            return math.log2(max(value, 1e-9) / self.centre) / self.scale
        return (value - self.centre) / self.scale


AROUSAL_TERMS: tuple[Term, ...] = (
    Term("note_density", 1.0, 7.0, 1.0, log=True),
    Term("ioi_median", -1.0, 0.25, 1.0, log=True),
    Term("log_duration", -0.5, -1.0, 1.0),
    Term("velocity_mean", 0.5, 80.0, 20.0, gate="velocity_range"),
    Term("tempo_bpm", 0.25, 100.0, 1.0, log=True),
    Term("articulation", -0.25, 1.5, 0.5),
)
VALENCE_TERMS: tuple[Term, ...] = (
    Term("local_major", 1.0, 0.725, 0.1),
    Term("triad_balance", 0.5, 0.05, 0.4),
    Term("key_clarity", 0.25, 0.85, 0.1),
    Term("pitch_mean", 0.5, 60.0, 6.0),
    Term("log_duration", -0.5, -1.0, 1.0),
    Term("articulation", -0.5, 1.5, 0.5),
)
AROUSAL_GAIN = 0.5
"""``arousal = tanh(AROUSAL_GAIN * sum of weight * z over AROUSAL_TERMS)``."""
VALENCE_GAIN = 0.4
"""``valence = tanh(VALENCE_GAIN * sum of weight * z over VALENCE_TERMS)``."""

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

LABEL_COLUMNS: tuple[str, ...] = ("filename", "valence", "arousal", *FEATURE_NAMES)


class LabelError(Exception):
    """A file that cannot be labelled.

    Attributes:
        reason: Short machine-readable reason (``"no_notes"``, ``"unreadable"``, ...).
        detail: Human-readable detail.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class LabelsCSVError(VaremiError):
    """A labels CSV that is missing, unreadable or lacks a required column."""


class LabelsCSVWarning(UserWarning):
    """A labels CSV row that labels several different files (a basename or stem match)."""


class LabelParameterError(VaremiError):
    """A bad ``jitter``, ``seed`` or ``workers`` for the labeller."""


@dataclass(frozen=True)
class FileLabel:
    """The labels of one file and the features they come from."""

    valence: float
    arousal: float
    features: dict[str, float] = field(default_factory=dict)


def _rotations(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 rotations of a key profile (tonic C..B), centred, and their norms."""
    rotations = np.stack([np.roll(profile, k) for k in range(12)])
    rz = rotations - rotations.mean(axis=1, keepdims=True)
    return rz, np.linalg.norm(rz, axis=1)


_ROTATIONS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


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


def note_arrays(score: symusic.Score) -> NoteArrays:
    """The arrays :func:`features_of_arrays` reads, from a symusic score.

    Args:
        score: A symusic score in any time unit.

    Returns:
        The non-drum tracks' notes and pedals, and the tempo map, in seconds.

    Raises:
        LabelError: ``"no_notes"`` when the score has no non-drum note.
    """
    sec = score.to("second")
    kept = [t for t in sec.tracks if not t.is_drum and len(t.notes) > 0]
    if not kept:
        raise LabelError("no_notes", "no non-drum notes")
    notes = [t.notes.numpy() for t in kept]
    pedals = [t.pedals.numpy() for t in kept]
    tempos = sec.tempos.numpy()

    def cat(arrays: list[dict[str, np.ndarray]], key: str, dtype: type) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([a[key] for a in arrays]), dtype=dtype)

    def offsets(arrays: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(a["time"]) for a in arrays])]).astype(np.int64)

    return NoteArrays(
        time=cat(notes, "time", np.float64),
        duration=np.maximum(cat(notes, "duration", np.float64), 0.0),
        pitch=cat(notes, "pitch", np.int64),
        velocity=cat(notes, "velocity", np.float64),
        note_tracks=offsets(notes),
        pedal_time=cat(pedals, "time", np.float64),
        pedal_duration=np.maximum(cat(pedals, "duration", np.float64), 0.0),
        pedal_tracks=offsets(pedals),
        tempo_time=np.ascontiguousarray(tempos["time"], dtype=np.float64),
        tempo_qpm=60e6 / np.maximum(np.asarray(tempos["mspq"], dtype=np.float64), 1.0),
    )


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


def features_of_arrays(a: NoteArrays) -> dict[str, float]:
    """The features of note arrays: native (Rust) unless ``VAREMI_PURE_PYTHON=1``.

    Args:
        a: The notes (at least one), pedals and tempos (see :class:`NoteArrays`).

    Returns:
        A dict with the keys of :data:`FEATURE_NAMES`.
    """
    from varemi import kernels

    return dict(zip(FEATURE_NAMES, map(float, kernels.label_features(a)), strict=True))


def extract_features(score: symusic.Score) -> dict[str, float]:
    """The musical features of a score (see the module docstring), drum tracks ignored.

    Args:
        score: A symusic score in any time unit.

    Returns:
        A dict with the keys of :data:`FEATURE_NAMES`, all finite floats.

    Raises:
        LabelError: ``"no_notes"`` when the score has no non-drum note.
    """
    return features_of_arrays(note_arrays(score))


def _combine(terms: Sequence[Term], gain: float, features: dict[str, float]) -> float:
    return math.tanh(
        gain
        * sum(
            t.weight * t.z(features[t.feature])
            for t in terms
            if t.gate is None or features[t.gate] > 0.0
        )
    )


def label_features(features: dict[str, float]) -> tuple[float, float]:
    """Valence and arousal from features, by the fixed formula of the module docstring.

    Args:
        features: At least the features named in :data:`VALENCE_TERMS` and
            :data:`AROUSAL_TERMS` (as returned by :func:`extract_features`).

    Returns:
        ``(valence, arousal)``, each in (-1, 1).
    """
    return (
        _combine(VALENCE_TERMS, VALENCE_GAIN, features),
        _combine(AROUSAL_TERMS, AROUSAL_GAIN, features),
    )


def check_label_params(
    jitter: float, seed: int, jitter_option: str = "--jitter", seed_option: str = "--seed"
) -> None:
    """Refuse a label noise or seed out of range, naming the option.

    Args:
        jitter: Standard deviation of the label noise: a finite number >= 0.
        seed: Seed of the noise, in 0..2**64-1.
        jitter_option: The option's name in messages (``--jitter``).
        seed_option: The seed option's name (``--seed`` for ``labels``,
            ``--jitter-seed`` for ``build``).

    Raises:
        LabelParameterError: either is out of range (NaN and infinity included).
    """
    if not (isinstance(jitter, numbers.Real) and math.isfinite(jitter) and jitter >= 0):
        raise LabelParameterError(f"{jitter_option} must be a finite number >= 0, got {jitter!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise LabelParameterError(f"{seed_option} must be an integer in 0..2**64-1, got {seed!r}")


def _check_params(jitter: float, seed: int) -> None:
    check_label_params(jitter, seed, "jitter", "seed")


def _jitter_rng(name: str, seed: int) -> np.random.Generator:
    """A generator that depends only on the seed and the file's relative path."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest, "little")])


def label_file(
    path: Path | str,
    *,
    jitter: float = 0.0,
    seed: int = 0,
    name: str | None = None,
    max_file_mb: float | None = None,
) -> FileLabel:
    """Read a MIDI file and label it.

    Args:
        path: The MIDI file.
        jitter: Standard deviation of gaussian noise added to both labels (0: none).
        seed: Seed of the noise (with ``name``).
        name: The file's key for the noise, normally its path relative to the corpus
            root; defaults to the file's name.
        max_file_mb: Reject files larger than this many MiB without reading them.

    Returns:
        The labels, in [-1, 1], and the features.

    Raises:
        LabelError: ``"unreadable"`` (missing, unparsable), ``"too_large"`` or
            ``"no_notes"``.
        LabelParameterError: A bad ``jitter`` or ``seed``.
    """
    from varemi.files import RejectedFile, parse_midi, read_midi_bytes

    _check_params(jitter, seed)
    path = Path(path)
    try:  # from bytes, as build reads: symusic would go by the extension's case
        score = parse_midi(read_midi_bytes(path, max_file_mb))
    except RejectedFile as exc:
        raise LabelError(exc.reason, exc.detail) from exc
    return label_score(score, name if name is not None else path.name, jitter=jitter, seed=seed)


def label_score(
    score: symusic.Score, name: str, *, jitter: float = 0.0, seed: int = 0
) -> FileLabel:
    """Label a parsed score (what :func:`label_file` does after reading the file).

    Args:
        score: The piece; it is not modified.
        name: The file's key for the noise (its path relative to the corpus root).
        jitter: Standard deviation of gaussian noise added to both labels (0: none).
        seed: Seed of the noise.

    Returns:
        The labels, in [-1, 1], and the features.

    Raises:
        LabelError: ``"no_notes"``.
        LabelParameterError: A bad ``jitter`` or ``seed``.
    """
    _check_params(jitter, seed)
    features = extract_features(score)
    valence, arousal = label_features(features)
    if jitter > 0:
        noise = _jitter_rng(name, seed).normal(0.0, jitter, 2)
        valence = float(np.clip(valence + noise[0], -1.0, 1.0))
        arousal = float(np.clip(arousal + noise[1], -1.0, 1.0))
    return FileLabel(valence=valence, arousal=arousal, features=features)


def label_row(name: str, label: FileLabel) -> dict:
    """One row of a labels table (:data:`LABEL_COLUMNS`) for a labelled file.

    Args:
        name: The file's relative path.
        label: Its labels and features.

    Returns:
        ``{"filename": name, "valence": ..., "arousal": ..., feature: value, ...}``.
    """
    row = {"filename": name, "valence": float(label.valence), "arousal": float(label.arousal)}
    return row | {k: float(label.features[k]) for k in FEATURE_NAMES}


def _label_one(
    root: str, name: str, jitter: float, seed: int, max_file_mb: float | None
) -> tuple[str, FileLabel | None, tuple[str, str, str] | None]:
    """Worker: label one file; every failure becomes a reject, nothing is raised."""
    try:
        result = label_file(
            Path(root) / name, jitter=jitter, seed=seed, name=name, max_file_mb=max_file_mb
        )
        return name, result, None
    except LabelError as exc:
        return name, None, (name, exc.reason, exc.detail)
    except Exception as exc:  # a bug or an odd file must not lose the run
        return name, None, (name, "error", f"{type(exc).__name__}: {exc}")


def _label_args(args: tuple) -> tuple[str, FileLabel | None, tuple[str, str, str] | None]:
    """Worker: :func:`_label_one` of one tuple of arguments (the pool passes one item)."""
    return _label_one(*args)


def _crashed(args: tuple) -> tuple[str, None, tuple[str, str, str]]:
    from varemi.corpus import CRASHED_DETAIL

    return args[1], None, (args[1], "crashed", CRASHED_DETAIL)


def label_folder(
    midi_dir: Path | str,
    files: Sequence[str] | None = None,
    workers: int | None = None,
    jitter: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    max_file_mb: float | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """Label every MIDI file of a folder, in parallel.

    Args:
        midi_dir: The corpus root.
        files: Paths relative to ``midi_dir`` (POSIX); default: every MIDI file under
            it (:func:`varemi.files.list_midi_files`).
        workers: Worker processes; default ``os.cpu_count()``; 1 labels in this process.
        jitter: Standard deviation of per-file gaussian noise (0: none).
        seed: Seed of the noise.
        progress: Show a progress bar on stderr.
        max_file_mb: Reject files larger than this many MiB without reading them.

    Returns:
        ``(labels, rejects)``: a DataFrame with columns :data:`LABEL_COLUMNS`
        (``filename, valence, arousal``, then the features), one row per labelled
        file sorted by filename, the same whatever the number of workers; and the
        files that could not be labelled as ``(filename, reason, detail)``, sorted.

    Raises:
        FileNotFoundError: ``midi_dir`` does not exist.
        NotADirectoryError: ``midi_dir`` is not a directory.
        LabelParameterError: A bad ``workers``, ``jitter`` or ``seed``.
    """
    from tqdm import tqdm

    _check_params(jitter, seed)
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LabelParameterError(f"workers must be a positive integer, got {workers!r}")
    root = Path(midi_dir)
    if not root.exists():
        raise FileNotFoundError(f"MIDI folder not found: {root}")
    names = list_midi_files(root) if files is None else sorted(set(files))
    names, bad_names = split_bad_names(names)  # their names cannot be hashed or written

    args = [(str(root), name, jitter, seed, max_file_mb) for name in names]
    workers = min(workers, max(len(args), 1))
    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked
    with tqdm(
        total=len(args), desc="labels", unit="file", file=sys.stderr, disable=not progress
    ) as bar:
        if workers == 1:
            results = []
            for a in args:
                results.append(_label_one(*a))
                bar.update(1)
        else:  # the shared crash-tolerant pool: a worker that dies costs one file
            from varemi.corpus import map_in_workers

            results = []
            for r in map_in_workers(_label_args, args, workers, None, (), _crashed):
                results.append(r)
                bar.update(1)

    rows = []
    rejects = list(bad_names)
    for name, result, reject in sorted(results, key=lambda r: r[0]):
        if result is None:
            rejects.append(reject)
        else:
            rows.append(label_row(name, result))
    import pandas as pd  # only here: workers that label single files never import it

    df = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    df = df.astype({c: "float64" for c in LABEL_COLUMNS[1:]}).reset_index(drop=True)
    return df, sorted(rejects)


def write_labels_csv(df: pd.DataFrame, path: Path | str) -> None:
    """Write labels as CSV, floats in full precision (``repr``), so they read back exactly.

    The file is written beside ``path`` and renamed into place, so an interrupted
    write never leaves a half-written CSV.

    Args:
        df: A labels DataFrame (as from :func:`label_folder`); any columns.
        path: The CSV to write.
    """
    write_label_rows(df.to_dict("records"), path, columns=list(df.columns))


def write_label_rows(rows: Sequence[dict], path: Path | str, columns: Sequence[str] = ()) -> None:
    """Write label rows (as from :func:`label_row`) as CSV, without pandas.

    Args:
        rows: One dict per file.
        path: The CSV to write (written beside it, then renamed into place).
        columns: The columns, in order (default: :data:`LABEL_COLUMNS`).
    """
    path = Path(path)
    columns = list(columns) or list(LABEL_COLUMNS)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [
                    repr(float(v)) if isinstance(v, (float, np.floating)) else v
                    for v in (row[c] for c in columns)
                ]
            )
    os.replace(tmp, path)


class LabelRangeError(VaremiError):
    """A ``--label-range`` that is not two finite numbers with LOW < HIGH."""


def check_label_range(label_range: Sequence[float] | None) -> tuple[float, float] | None:
    """A labels CSV's scale as ``(low, high)``, checked (None: the CSV is in [-1, 1]).

    Args:
        label_range: ``(low, high)`` or None.

    Returns:
        ``(float(low), float(high))``, or None.

    Raises:
        LabelRangeError: Not two finite numbers with ``low < high``.
    """
    if label_range is None:
        return None
    try:
        low, high = (float(v) for v in label_range)
    except (TypeError, ValueError):
        raise LabelRangeError(
            f"--label-range takes two numbers LOW HIGH, got {label_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise LabelRangeError(
            f"--label-range needs finite LOW < HIGH, got {label_range[0]!r} {label_range[1]!r}"
        )
    return low, high


def _parse_label(text: str | None, label_range: tuple[float, float] | None = None) -> float | None:
    """A finite float in [-1, 1] (or in ``label_range``, mapped linearly to [-1, 1]), or None."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    low, high = label_range or (-1.0, 1.0)
    if not (math.isfinite(value) and low <= value <= high):
        return None
    if label_range is None:
        return value
    return -1.0 + 2.0 * (value - low) / (high - low)


def read_labels_csv(
    path: Path | str, files: Sequence[str], label_range: Sequence[float] | None = None
) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str, str]], list[str]]:
    """Read a user's labels CSV and match its rows to the corpus files.

    The CSV needs columns ``filename``, ``valence`` and ``arousal`` (headers are
    case-insensitive; other columns are ignored). A corpus file matches the rows
    whose ``filename`` equals its relative path; failing that, its basename; failing
    that, its basename without extension. A row that labels several different
    files that way (``a/x.mid`` and ``b/x.mid`` from one row ``x.mid``) is used for
    each of them, with a :class:`LabelsCSVWarning`.

    Args:
        path: The CSV (UTF-8, an optional byte-order mark).
        files: The corpus files, as paths relative to the MIDI root.
        label_range: ``(low, high)``: the CSV's values lie in [low, high] and are
            mapped linearly to [-1, 1] (low to -1, high to +1); None: they are in
            [-1, 1] already.

    Returns:
        ``(labels, rejects, unmatched)``: ``{file: (valence, arousal)}`` for the files
        with a usable row, in [-1, 1]; ``(file, reason, detail)`` for the others,
        ``reason`` ``"bad_label"`` (a value that is not a finite number in [-1, 1], or
        in ``label_range``, or several rows with different values) or ``"unlabelled"``
        (no row); and the ``filename`` values of rows that match no corpus file, in
        CSV order.

    Raises:
        LabelsCSVError: The CSV is missing or unreadable, or lacks a required column.
        LabelRangeError: A bad ``label_range``.
    """
    scale = check_label_range(label_range)
    low, high = scale or (-1.0, 1.0)
    path = Path(path)
    if not path.is_file():
        raise LabelsCSVError(f"labels CSV not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsCSVError(f"labels CSV {path} is unreadable: {exc}") from exc
    if not table:
        raise LabelsCSVError(f"labels CSV {path} is empty (no header row)")
    header = [h.strip().lower() for h in table[0]]
    columns = {}
    for required in ("filename", "valence", "arousal"):
        if header.count(required) != 1:
            problem = "lacks" if required not in header else "has more than one"
            raise LabelsCSVError(f"labels CSV {path} {problem} a {required!r} column")
        columns[required] = header.index(required)

    rows: dict[str, list[tuple[str | None, str | None]]] = {}
    for record in table[1:]:
        if not any(cell.strip() for cell in record):
            continue  # blank line
        cells = [record[columns[c]] if columns[c] < len(record) else None for c in columns]
        rows.setdefault(cells[0] or "", []).append((cells[1], cells[2]))

    labels: dict[str, tuple[float, float]] = {}
    rejects: list[tuple[str, str, str]] = []
    used: dict[str, list[str]] = {}  # row key -> the files it labels
    for name in files:
        base = PurePosixPath(name).name
        key = next((k for k in (name, base, os.path.splitext(base)[0]) if k in rows), None)
        if key is None:
            rejects.append((name, "unlabelled", "no row in the labels CSV"))
            continue
        used.setdefault(key, []).append(name)
        values = set()
        bad = None
        for v_text, a_text in rows[key]:
            v, a = _parse_label(v_text, scale), _parse_label(a_text, scale)
            if v is None or a is None:
                bad = (
                    f"row {key!r}: valence={v_text!r}, arousal={a_text!r} "
                    f"not finite in [{low:g}, {high:g}]"
                )
                break
            values.add((v, a))
        if bad is not None:
            rejects.append((name, "bad_label", bad))
        elif len(values) > 1:
            rejects.append((name, "bad_label", f"conflicting duplicate rows for {key!r}"))
        else:
            labels[name] = values.pop()
    for key, names in used.items():
        if len(names) > 1:  # only a basename or stem match can serve two files
            shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            warnings.warn(
                f"row {key!r} of {path} labels {len(names)} different files by name alone: "
                f"{shown}; give each its relative path to label them apart",
                LabelsCSVWarning,
                stacklevel=2,
            )
    unmatched = [k for k in rows if k not in used]
    return labels, rejects, unmatched
