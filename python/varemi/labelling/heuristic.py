"""Heuristic valence/arousal labels from musical features, and users' label CSVs.

Every file is labelled from its own notes alone (times in seconds; the drum tracks
count only through the drum onset density), with fixed reference ranges, so a file's
labels never depend on the rest of the corpus. Each feature ``x`` is put on a
reference scale, ``z = (x - centre) / scale``, or ``z = log2(x / centre) / scale`` for
rates and durations; ``z`` is not bounded. A label is one squash of the weighted evidence::

    valence = tanh(0.4 * sum(w * z for the VALENCE_TERMS))
    arousal = tanh(0.5 * sum(w * z for the AROUSAL_TERMS))

so it is a monotone function of every feature (the velocity and drum gates aside), in
(-1, 1), and reaches the extreme bins (|label| > 0.875, evidence above 3.4 for valence,
2.7 for arousal) only on strong evidence from several features at once: the labeller of
version 1 took ``tanh`` of a sum of already-bounded ``tanh`` terms of total weight 3, which
put half of a classical repertoire in the top bin.

Arousal (activity: how many notes, how close together, how loud, how detached, how
busy the drums):

| feature         | weight | z                   | unit            |
|-----------------|-------:|---------------------|-----------------|
| `note_density`  |   1.0  | log2(x / 7)         | notes/s         |
| `ioi_median`    |  -1.0  | log2(x / 0.25)      | s between onsets|
| `log_duration`  |  -0.5  | x + 1               | log2 s          |
| `velocity_mean` |   0.5  | (x - 80) / 20       | MIDI velocity   |
| `tempo_bpm`     |   0.25 | log2(x / 100)       | quarters/minute |
| `articulation`  |  -0.25 | (x - 1.5) / 0.5     | sounding / IOI  |
| `drum_density`  |   1.0  | log2(x / 4)         | drum onsets/s   |

The velocity term counts only when ``velocity_range > 0``: a file whose notes all
share one velocity (an editor's default, 90 of VGMIDI's 204 files) says nothing
about loudness, and its term is 0 rather than "loud" or "soft". The drum term counts
only when the file has drums (``drum_density > 0``): a file without drums is neutral
on it (version 4; YM2413-MDB's listeners call 84% of its tracks with drums aroused
and 55% of those without, and the drum onset density ranks arousal within the tracks
with drums with ROC AUC 0.70). Its centre, 4 onsets a second, is an eighth-note
pulse at 120 bpm: sparser drums (a hit a beat, fills) count as calm, busier (sixteenths,
fast tempos) as aroused.

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
- ``drum_density`` (computed in Python from the drum tracks, which the native kernel
  never sees): the drum tracks' distinct onsets per second, onsets closer than 30 ms
  merged, over the span of every note (drums included, at least 1 s); 0 without drums.
  Per-window labels (``--label-scope window``) and generated music are decoded from
  tokens, which hold no drums: they are neutral on it.
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

import hashlib
import math
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import symusic

from varemi._base.errors import VaremiError
from varemi._base.workers import CRASHED_DETAIL, map_in_workers
from varemi.core import kernels
from varemi.core.label_features import (
    FEATURE_NAMES,
    MIN_SPAN_S,
    ONSET_MERGE_S,
    NoteArrays,
)
from varemi.music.files import (
    RejectedFile,
    list_midi_files,
    parse_midi,
    read_midi_bytes,
    split_bad_names,
)

if TYPE_CHECKING:
    import pandas as pd


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
    Term("drum_density", 1.0, 4.0, 1.0, log=True, gate="drum_density"),
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


DRUM_FEATURES: tuple[str, ...] = ("drum_density",)
"""The features of the drum tracks, computed here (the native kernel sees no drums)."""


LABEL_FEATURES: tuple[str, ...] = (*FEATURE_NAMES, *DRUM_FEATURES)
"""Every feature of a file, in the column order of a labels table: the native kernel's
(:data:`FEATURE_NAMES`), then the drums' (:data:`DRUM_FEATURES`)."""


LABEL_COLUMNS: tuple[str, ...] = ("filename", "valence", "arousal", *LABEL_FEATURES)


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


class LabelParameterError(VaremiError):
    """A bad ``jitter``, ``seed`` or ``workers`` for the labeller."""


@dataclass(frozen=True)
class FileLabel:
    """The labels of one file and the features they come from."""

    valence: float
    arousal: float
    features: dict[str, float] = field(default_factory=dict)


def note_arrays(score: symusic.Score) -> NoteArrays:
    """The arrays :func:`features_of_arrays` reads, from a symusic score.

    Args:
        score: A symusic score in any time unit.

    Returns:
        The non-drum tracks' notes and pedals, and the tempo map, in seconds.

    Raises:
        LabelError: ``"no_notes"`` when the score has no non-drum note.
    """
    return _note_arrays(score.to("second"))


def _note_arrays(sec: symusic.Score) -> NoteArrays:
    """:func:`note_arrays` of a score already in seconds."""
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


def features_of_arrays(a: NoteArrays) -> dict[str, float]:
    """The features of note arrays: native (Rust) unless ``VAREMI_PURE_PYTHON=1``.

    Args:
        a: The notes (at least one), pedals and tempos (see :class:`NoteArrays`).

    Returns:
        A dict with the keys of :data:`FEATURE_NAMES`.
    """
    return dict(zip(FEATURE_NAMES, map(float, kernels.label_features(a)), strict=True))


def drum_density(sec: symusic.Score) -> float:
    """Drum onsets per second: the drum tracks' onsets, those closer than 30 ms merged.

    Taken over the span of every note, drums included, from the first onset to the
    last offset (at least 1 s), like ``note_density``; 0 when there is no drum note.

    Args:
        sec: A symusic score in seconds.

    Returns:
        Onsets per second, >= 0.
    """
    drums = [t.notes.numpy() for t in sec.tracks if t.is_drum and len(t.notes) > 0]
    if not drums:
        return 0.0
    others = [t.notes.numpy() for t in sec.tracks if not t.is_drum and len(t.notes) > 0]
    every = drums + others
    start = min(float(n["time"].min()) for n in every)
    end = max(float((n["time"] + np.maximum(n["duration"], 0.0)).max()) for n in every)
    onsets = np.unique(np.concatenate([n["time"] for n in drums]).astype(np.float64))
    groups = 1 + int(np.count_nonzero(np.diff(onsets) > ONSET_MERGE_S))
    return groups / max(end - start, MIN_SPAN_S)


def extract_features(score: symusic.Score) -> dict[str, float]:
    """The musical features of a score (see the module docstring).

    Args:
        score: A symusic score in any time unit.

    Returns:
        A dict with the keys of :data:`LABEL_FEATURES`, all finite floats: the
        features of the non-drum notes (:data:`FEATURE_NAMES`), then the drums'.

    Raises:
        LabelError: ``"no_notes"`` when the score has no non-drum note.
    """
    sec = score.to("second")
    features = features_of_arrays(_note_arrays(sec))
    features["drum_density"] = drum_density(sec)
    return features


def _combine(terms: Sequence[Term], gain: float, features: Mapping[str, float]) -> float:
    return math.tanh(
        gain
        * sum(
            t.weight * t.z(features[t.feature])
            for t in terms
            if t.gate is None or features[t.gate] > 0.0
        )
    )


class Labeller(Protocol):
    """What turns a file's features into ``(valence, arousal)`` in [-1, 1].

    The heuristic (:data:`HEURISTIC`) and a labeller fitted to human ratings
    (:class:`varemi.labelling.fitted.FittedLabeller`) both are one.

    Attributes:
        kind: ``heuristic`` or ``fitted``.
        sha256: What names this labeller in cache keys and ``dataset_info.json``: the
            hex sha256 of a fitted labeller's JSON file, ``""`` for the heuristic
            (whose sources name it).
    """

    kind: str
    sha256: str

    def label(self, features: Mapping[str, float]) -> tuple[float, float]:
        """``(valence, arousal)`` of a file's features (the keys of :data:`LABEL_FEATURES`)."""
        ...


@dataclass(frozen=True)
class Heuristic:
    """The fixed formula of the module docstring as a :class:`Labeller`."""

    kind: str = "heuristic"
    sha256: str = ""

    def label(self, features: Mapping[str, float]) -> tuple[float, float]:
        """:func:`label_features`."""
        return label_features(features)


def label_features(features: Mapping[str, float]) -> tuple[float, float]:
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


HEURISTIC: Heuristic = Heuristic()
"""The heuristic labeller (the default everywhere)."""


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
    labeller: Labeller | None = None,
) -> FileLabel:
    """Read a MIDI file and label it.

    Args:
        path: The MIDI file.
        jitter: Standard deviation of gaussian noise added to both labels (0: none).
        seed: Seed of the noise (with ``name``).
        name: The file's key for the noise, normally its path relative to the corpus
            root; defaults to the file's name.
        max_file_mb: Reject files larger than this many MiB without reading them.
        labeller: What turns the features into labels (default: the heuristic).

    Returns:
        The labels, in [-1, 1], and the features.

    Raises:
        LabelError: ``"unreadable"`` (missing, unparsable), ``"too_large"`` or
            ``"no_notes"``.
        LabelParameterError: A bad ``jitter`` or ``seed``.
    """
    _check_params(jitter, seed)
    path = Path(path)
    try:  # from bytes, as build reads: symusic would go by the extension's case
        score = parse_midi(read_midi_bytes(path, max_file_mb))
    except RejectedFile as exc:
        raise LabelError(exc.reason, exc.detail) from exc
    name = name if name is not None else path.name
    return label_score(score, name, jitter=jitter, seed=seed, labeller=labeller)


def label_score(
    score: symusic.Score,
    name: str,
    *,
    jitter: float = 0.0,
    seed: int = 0,
    labeller: Labeller | None = None,
) -> FileLabel:
    """Label a parsed score (what :func:`label_file` does after reading the file).

    Args:
        score: The piece; it is not modified.
        name: The file's key for the noise (its path relative to the corpus root).
        jitter: Standard deviation of gaussian noise added to both labels (0: none).
        seed: Seed of the noise.
        labeller: What turns the features into labels (default: the heuristic).

    Returns:
        The labels, in [-1, 1], and the features.

    Raises:
        LabelError: ``"no_notes"``.
        LabelParameterError: A bad ``jitter`` or ``seed``.
    """
    _check_params(jitter, seed)
    features = extract_features(score)
    valence, arousal = (labeller or HEURISTIC).label(features)
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
    return row | {k: float(label.features[k]) for k in LABEL_FEATURES}


def _label_one(
    root: str,
    name: str,
    jitter: float,
    seed: int,
    max_file_mb: float | None,
    labeller: Labeller | None = None,
) -> tuple[str, FileLabel | None, tuple[str, str, str] | None]:
    """Worker: label one file; every failure becomes a reject, nothing is raised."""
    try:
        result = label_file(
            Path(root) / name,
            jitter=jitter,
            seed=seed,
            name=name,
            max_file_mb=max_file_mb,
            labeller=labeller,
        )
        return name, result, None
    except LabelError as exc:
        return name, None, (name, exc.reason, exc.detail)
    except VaremiError as exc:  # a score varemi's own code cannot handle: this file only
        return name, None, (name, "error", f"{type(exc).__name__}: {exc}")


def _label_args(args: tuple) -> tuple[str, FileLabel | None, tuple[str, str, str] | None]:
    """Worker: :func:`_label_one` of one tuple of arguments (the pool passes one item)."""
    return _label_one(*args)


def _crashed(args: tuple) -> tuple[str, None, tuple[str, str, str]]:

    return args[1], None, (args[1], "crashed", CRASHED_DETAIL)


def label_folder(
    midi_dir: Path | str,
    files: Sequence[str] | None = None,
    workers: int | None = None,
    jitter: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    max_file_mb: float | None = None,
    labeller: Labeller | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """Label every MIDI file of a folder, in parallel.

    Args:
        midi_dir: The corpus root.
        files: Paths relative to ``midi_dir`` (POSIX); default: every MIDI file under
            it (:func:`varemi.music.files.list_midi_files`).
        workers: Worker processes; default ``os.cpu_count()``; 1 labels in this process.
        jitter: Standard deviation of per-file gaussian noise (0: none).
        seed: Seed of the noise.
        progress: Show a progress bar on stderr.
        max_file_mb: Reject files larger than this many MiB without reading them.
        labeller: What turns the features into labels (default: the heuristic).

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

    args = [(str(root), name, jitter, seed, max_file_mb, labeller) for name in names]
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
