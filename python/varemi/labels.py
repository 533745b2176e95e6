"""Heuristic valence/arousal labels from musical features, and users' label CSVs.

Every file is labelled from its own notes alone (drum tracks ignored, times in
seconds), with fixed reference ranges, so a file's labels never depend on the rest
of the corpus. Each feature ``x`` becomes a bounded term ``tanh(z)`` with
``z = (x - centre) / scale``, or ``z = log2(x / centre) / scale`` for rates and
durations; a label is ``tanh`` of the weighted sum of its terms, so it lies in
(-1, 1)::

    arousal = tanh(sum(w * tanh(z) for the AROUSAL_TERMS))
    valence = tanh(sum(w * tanh(z) for the VALENCE_TERMS))

Arousal (note density carries most of it; transcribed MIDI often has a constant
120 bpm tempo map, so rates are measured in seconds and the tempo map adds little):

| feature         | weight | z                 | unit            |
|-----------------|-------:|-------------------|-----------------|
| `note_density`  |   1.0  | log2(x / 6)       | notes/s         |
| `onset_rate`    |   0.5  | log2(x / 3.5)     | onsets/s        |
| `note_duration` |  -0.5  | log2(x / 0.3)     | s (median)      |
| `velocity_mean` |   0.5  | (x - 80) / 25     | MIDI velocity   |
| `tempo_bpm`     |   0.25 | log2(x / 120)     | quarters/minute |
| `articulation`  |  -0.25 | (x - 1) / 0.25    | duration / IOI  |

Valence (mode carries most of it; louder playing is not reliably more positive, so
velocity has a small negative weight):

| feature         | weight | z                 | unit            |
|-----------------|-------:|-------------------|-----------------|
| `mode`          |   1.0  | x / 0.2           | correlation     |
| `triad_balance` |   1.0  | x / 0.5           | -1..1           |
| `key_clarity`   |   0.5  | (x - 0.75) / 0.15 | correlation     |
| `pitch_mean`    |   0.5  | (x - 60) / 6      | MIDI pitch      |
| `velocity_mean` |  -0.25 | (x - 80) / 25     | MIDI velocity   |

The features:

- ``note_density``: notes per second over the span from the first onset to the last
  offset (at least 1 s); ``onset_rate``: distinct onsets per second, onsets closer
  than 30 ms merged into one (a chord); ``ioi_median``: median interval between
  those onsets.
- ``note_duration``: median note length in seconds; ``articulation``: median of a
  note's length over the gap to the next onset in its track, clipped to [0, 2]
  (below 1 is detached, staccato; 1 is legato).
- ``tempo_bpm``: the tempo map's quarter-notes per minute, weighted by the seconds
  each tempo lasts within the notes' span (120 when the file has no tempo).
- ``velocity_mean``: mean note velocity; ``pitch_mean``: duration-weighted mean pitch.
- ``major_corr``, ``minor_corr``: the best Pearson correlation of the
  duration-weighted pitch-class histogram with the 12 rotations of the
  Krumhansl-Kessler major, and minor, key profiles; ``mode`` is major minus minor
  (positive: major); ``key_clarity`` is the larger of the two (low: chromatic or
  atonal writing).
- ``triad_balance``: (onsets where the notes sounding 30 ms after the onset hold a
  major triad - onsets where they hold a minor triad) / (the sum of the two), 0
  when there are none: chord-by-chord mode, where ``mode`` is the whole piece's.
- ``duration_s``, ``n_notes``, ``ioi_median``, ``major_corr`` and ``minor_corr``
  are reported but not used by the formula.

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
from typing import TYPE_CHECKING

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


@dataclass(frozen=True)
class Term:
    """One feature's contribution to a label: ``weight * tanh(z)``.

    Attributes:
        feature: Key in the features dict.
        weight: Signed weight.
        centre: The feature value that maps to ``z = 0``.
        scale: The change in the feature (in log2 units when ``log``) that maps to ``z = 1``.
        log: Whether ``z = log2(x / centre) / scale`` (for rates and durations)
            rather than ``(x - centre) / scale``.
    """

    feature: str
    weight: float
    centre: float
    scale: float
    log: bool = False

    def z(self, value: float) -> float:
        """The feature value on its reference scale."""
        if self.log:
            return math.log2(max(value, 1e-9) / self.centre) / self.scale
        return (value - self.centre) / self.scale


AROUSAL_TERMS: tuple[Term, ...] = (
    Term("note_density", 1.0, 6.0, 1.0, log=True),
    Term("onset_rate", 0.5, 3.5, 1.0, log=True),
    Term("note_duration", -0.5, 0.3, 1.0, log=True),
    Term("velocity_mean", 0.5, 80.0, 25.0),
    Term("tempo_bpm", 0.25, 120.0, 1.0, log=True),
    Term("articulation", -0.25, 1.0, 0.25),
)
VALENCE_TERMS: tuple[Term, ...] = (
    Term("mode", 1.0, 0.0, 0.2),
    Term("triad_balance", 1.0, 0.0, 0.5),
    Term("key_clarity", 0.5, 0.75, 0.15),
    Term("pitch_mean", 0.5, 60.0, 6.0),
    Term("velocity_mean", -0.25, 80.0, 25.0),
)

FEATURE_NAMES: tuple[str, ...] = (
    "duration_s",
    "n_notes",
    "tempo_bpm",
    "note_density",
    "onset_rate",
    "ioi_median",
    "note_duration",
    "articulation",
    "velocity_mean",
    "pitch_mean",
    "major_corr",
    "minor_corr",
    "mode",
    "key_clarity",
    "triad_balance",
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
    hz = hist - hist.mean()
    norm = float(np.linalg.norm(hz))
    if norm == 0.0:  # flat histogram: every key fits equally (badly)
        return np.zeros(12)
    return (rz @ hz) / (rz_norm * norm)


def _time_weighted_bpm(score: symusic.Score, start: float, end: float) -> float:
    """Mean tempo over [start, end] (seconds), each tempo weighted by how long it lasts."""
    tempos = score.tempos.numpy()
    times = tempos["time"].astype(np.float64)
    if len(times) == 0:
        return DEFAULT_BPM
    order = np.argsort(times, kind="stable")
    times = times[order]
    qpm = 60e6 / np.maximum(tempos["mspq"].astype(np.float64)[order], 1.0)
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


def _articulation(tracks: Sequence[dict[str, np.ndarray]]) -> float:
    """Median over notes of duration / (next onset in the same track - onset), clipped to [0, 2]."""
    ratios = []
    for notes in tracks:
        onset = notes["time"].astype(np.float64)
        distinct = np.unique(onset)
        nxt = np.searchsorted(distinct, onset + ONSET_MERGE_S, side="right")
        has_next = nxt < len(distinct)
        if has_next.any():
            gap = distinct[nxt[has_next]] - onset[has_next]
            length = notes["duration"].astype(np.float64)[has_next]
            ratios.append(np.clip(length / gap, 0.0, 2.0))
    return float(np.median(np.concatenate(ratios))) if ratios else 1.0


def extract_features(score: symusic.Score) -> dict[str, float]:
    """The musical features of a score (see the module docstring), drum tracks ignored.

    Args:
        score: A symusic score in any time unit.

    Returns:
        A dict with the keys of :data:`FEATURE_NAMES`, all finite floats.

    Raises:
        LabelError: ``"no_notes"`` when the score has no non-drum note.
    """
    sec = score.to("second")
    tracks = [t.notes.numpy() for t in sec.tracks if not t.is_drum and len(t.notes) > 0]
    if not tracks:
        raise LabelError("no_notes", "no non-drum notes")
    time = np.concatenate([a["time"] for a in tracks]).astype(np.float64)
    dur = np.maximum(np.concatenate([a["duration"] for a in tracks]).astype(np.float64), 0.0)
    pitch = np.concatenate([a["pitch"] for a in tracks]).astype(np.int64)
    vel = np.concatenate([a["velocity"] for a in tracks]).astype(np.float64)

    start = float(time.min())
    end = float((time + dur).max())
    span = max(end - start, MIN_SPAN_S)

    onsets = np.unique(time)
    groups = onsets[np.concatenate([[True], np.diff(onsets) > ONSET_MERGE_S])]
    ioi = np.diff(groups)

    weights = dur if dur.sum() > 0.0 else np.ones_like(dur)
    hist = np.bincount(pitch % 12, weights=weights, minlength=12)
    major = float(_key_correlations(hist, KK_MAJOR).max())
    minor = float(_key_correlations(hist, KK_MINOR).max())
    n_major, n_minor = _triad_counts(groups, time, time + dur, pitch)

    return {
        "duration_s": end - start,
        "n_notes": float(len(time)),
        "tempo_bpm": _time_weighted_bpm(sec, start, end),
        "note_density": len(time) / span,
        "onset_rate": len(groups) / span,
        "ioi_median": float(np.median(ioi)) if len(ioi) else span,
        "note_duration": float(np.median(dur)),
        "articulation": _articulation(tracks),
        "velocity_mean": float(vel.mean()),
        "pitch_mean": float(np.average(pitch, weights=weights)),
        "major_corr": major,
        "minor_corr": minor,
        "mode": major - minor,
        "key_clarity": max(major, minor),
        "triad_balance": (n_major - n_minor) / (n_major + n_minor) if n_major + n_minor else 0.0,
    }


def _combine(terms: Sequence[Term], features: dict[str, float]) -> float:
    return math.tanh(sum(t.weight * math.tanh(t.z(features[t.feature])) for t in terms))


def label_features(features: dict[str, float]) -> tuple[float, float]:
    """Valence and arousal from features, by the fixed formula of the module docstring.

    Args:
        features: At least the features named in :data:`VALENCE_TERMS` and
            :data:`AROUSAL_TERMS` (as returned by :func:`extract_features`).

    Returns:
        ``(valence, arousal)``, each in (-1, 1).
    """
    return _combine(VALENCE_TERMS, features), _combine(AROUSAL_TERMS, features)


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


def _parse_label(text: str | None) -> float | None:
    """A finite float in [-1, 1], or None."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and -1.0 <= value <= 1.0 else None


def read_labels_csv(
    path: Path | str, files: Sequence[str]
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

    Returns:
        ``(labels, rejects, unmatched)``: ``{file: (valence, arousal)}`` for the files
        with a usable row; ``(file, reason, detail)`` for the others, ``reason``
        ``"bad_label"`` (a value that is not a finite number in [-1, 1], or several
        rows with different values) or ``"unlabelled"`` (no row); and the ``filename``
        values of rows that match no corpus file, in CSV order.

    Raises:
        LabelsCSVError: The CSV is missing or unreadable, or lacks a required column.
    """
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
            v, a = _parse_label(v_text), _parse_label(a_text)
            if v is None or a is None:
                bad = f"row {key!r}: valence={v_text!r}, arousal={a_text!r} not finite in [-1, 1]"
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
