"""The encoder: one MIDI file to one sequence of music token ids (contracts 3, 4, 9).

This is the per-file work that ``build`` runs in worker processes (through
:mod:`varemi.corpus.job`): parse, reject what cannot be used, drop drum tracks, merge (or
pick) tracks, normalise pitches with the native kernel, and encode. Encoding is native
(:mod:`varemi.music.encoder.remi` then :mod:`varemi.music.encoder.bpe`, ids equal to MidiTok's) when
the tokenizer's configuration is covered exactly, and MidiTok's own ``tokenizer.encode``
otherwise (the fallback, see :class:`TokenEncoder`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from varemi._base import native
from varemi._base.errors import UnsupportedConfig, VaremiError
from varemi._base.options import ENCODERS, TRACK_MODES
from varemi.core import kernels
from varemi.music.encoder.bpe import NativeBPE
from varemi.music.encoder.remi import NativeREMI
from varemi.music.files import RejectedFile, parse_midi, read_midi_bytes

__all__ = [
    "ENCODERS",
    "TRACK_MODES",
    "EncodeOptions",
    "RejectedFile",
    "TokenEncoder",
    "check_encode_params",
    "encode_midi",
    "read_midi_bytes",
]


@dataclass(frozen=True)
class EncodeOptions:
    """How a file becomes token ids; part of the token cache key.

    Attributes:
        pitch_policy: ``clamp``, ``fold`` or ``drop``.
        pitch_range: Inclusive ``(low, high)`` pitch range.
        tracks: ``merge`` (all non-drum tracks into one) or ``first``.
        max_minutes: Longest duration accepted.
        max_file_mb: Largest file size accepted, in MiB.
    """

    pitch_policy: str = "clamp"
    pitch_range: tuple[int, int] = (21, 108)
    tracks: str = "merge"
    max_minutes: float = 60.0
    max_file_mb: float = 64.0


def check_encode_params(encoder: str, tracks: str, max_minutes: float, max_file_mb: float) -> None:
    """Refuse encoder, track and limit options out of range, naming the option.

    Args:
        encoder: ``--encoder``: one of :data:`ENCODERS`.
        tracks: ``--tracks``: one of :data:`TRACK_MODES`.
        max_minutes: ``--max-minutes``, > 0.
        max_file_mb: ``--max-file-mb``, > 0.

    Raises:
        VaremiError: the first bad option.
    """
    if encoder not in ENCODERS:
        raise VaremiError(f"--encoder must be one of {ENCODERS}, got {encoder!r}")
    if tracks not in TRACK_MODES:
        raise VaremiError(f"--tracks must be one of {TRACK_MODES}, got {tracks!r}")
    if not (max_minutes > 0):
        raise VaremiError(f"--max-minutes must be > 0, got {max_minutes}")
    if not (max_file_mb > 0):
        raise VaremiError(f"--max-file-mb must be > 0, got {max_file_mb}")


def _normalise_track_pitches(track, options: EncodeOptions) -> None:
    from symusic import Note

    notes = track.notes.numpy()
    pitches = notes["pitch"]
    low, high = options.pitch_range
    if len(pitches) == 0 or (int(pitches.min()) >= low and int(pitches.max()) <= high):
        return  # nothing to move: keep symusic's own note objects untouched
    new, keep = kernels.normalize_pitches(pitches, low, high, options.pitch_policy)
    track.notes = Note.from_numpy(
        notes["time"][keep],
        notes["duration"][keep],
        new[keep],
        notes["velocity"][keep],
        ttype="tick",
    )


class TokenEncoder:
    """A preprocessed score's token ids, natively or with MidiTok.

    Native (Rust REMI + BPE, ids equal to MidiTok's) when the tokenizer's configuration
    is covered exactly, otherwise MidiTok's own ``tokenizer.encode``.

    Args:
        tokenizer: The base MidiTok tokenizer (without conditioning tokens).
        requested: ``auto`` (native when covered, else MidiTok), ``native`` (refuse a
            tokenizer it does not cover) or ``miditok``.

    Attributes:
        name: ``native`` or ``miditok``: what computes the ids.
        reason: Why ``auto`` fell back to MidiTok, else None.

    Raises:
        UnsupportedConfig: ``requested`` is ``native`` and the tokenizer is not covered.
    """

    def __init__(self, tokenizer, requested: str = "auto") -> None:

        if requested not in ENCODERS:
            raise VaremiError(f"--encoder must be one of {ENCODERS}, got {requested!r}")
        self.tokenizer = tokenizer
        self.name, self.reason = "miditok", None
        if requested == "miditok":
            return
        if native.PURE_PYTHON:  # the reference pipeline runs no native code at all
            if requested == "native":
                raise UnsupportedConfig(
                    "--encoder native: VAREMI_PURE_PYTHON=1 turns native code off"
                )
            self.reason = "VAREMI_PURE_PYTHON=1 turns native code off"
            return
        try:
            self._remi = NativeREMI.from_tokenizer(tokenizer)
            self._bpe = NativeBPE.from_tokenizer(tokenizer)
            self.name = "native"
        except UnsupportedConfig as e:
            if requested == "native":
                raise UnsupportedConfig(
                    f"--encoder native cannot encode this tokenizer: {e}"
                ) from e
            self.reason = str(e)

    def encode(self, score, first_only: bool = False) -> list[np.ndarray]:
        """Token ids per sequence (one per track MidiTok keeps), as ``tokenizer.encode``.

        Args:
            score: A ``symusic.Score`` (modified in place by MidiTok's preprocessing).
            first_only: Only the first sequence is needed (the others may be skipped).

        Returns:
            int32 id arrays.
        """
        if self.name == "native":
            base = self._remi.encode_base(score)
            return [self._bpe.encode(b) for b in (base[:1] if first_only else base)]
        result = self.tokenizer.encode(score)
        sequences = result if isinstance(result, list) else [result]
        return [np.asarray(s.ids, dtype=np.int32) for s in sequences]


def encode_midi(
    data: bytes,
    tokenizer,
    options: EncodeOptions,
    timings: dict[str, float] | None = None,
    on_parsed: Callable[[object], None] | None = None,
    on_ready: Callable[[object], None] | None = None,
    augment: Callable[[object], None] | None = None,
) -> tuple[np.ndarray, float]:
    """Turn a MIDI file's bytes into music token ids.

    Args:
        data: The MIDI file's bytes.
        tokenizer: A :class:`TokenEncoder`, or the base MidiTok tokenizer itself.
        options: Pitch and track handling, duration limit.
        timings: If given, seconds spent per stage are added to it under ``parse``,
            ``tracks_pitches`` and ``tokenize`` (and ``labels``, with ``on_parsed``).
        on_parsed: Called with the parsed ``symusic.Score`` before anything changes it
            (``build`` labels the file there, so that each file is parsed once); what it
            raises propagates.
        on_ready: Called with the score after the track merge and pitch normalisation,
            just before tokenisation (``build`` fingerprints the notes there; its
            time is added under ``fingerprint``).
        augment: Called with the parsed score first, to change it in place (an
            augmented copy: it is then labelled and preprocessed like any file).

    Returns:
        int32 token ids of the whole piece (possibly empty) and its length in minutes.

    Raises:
        RejectedFile: ``unreadable`` (symusic cannot parse it), ``too_long`` (lasts
            longer than ``max_minutes``) or ``tokenize_failed`` (MidiTok raised).
    """
    clock = _Clock(timings)
    score = parse_midi(data)
    try:
        minutes = score.to("second").end() / 60.0
    except Exception as e:
        raise RejectedFile("unreadable", f"{type(e).__name__}: {e}") from e
    if minutes > options.max_minutes:
        raise RejectedFile("too_long", f"{minutes:.1f} min > --max-minutes {options.max_minutes:g}")
    clock.lap("parse")
    if augment is not None:
        augment(score)
        clock.lap("augment")
    if on_parsed is not None:
        on_parsed(score)
        clock.lap("labels")
    score.tracks = [t for t in score.tracks if not t.is_drum]
    if options.tracks == "merge" and len(score.tracks) > 1:
        from miditok.utils import merge_tracks

        merge_tracks(score)
    for track in score.tracks:
        _normalise_track_pitches(track, options)
    clock.lap("tracks_pitches")
    if on_ready is not None:
        on_ready(score)
        clock.lap("fingerprint")
    encoder = (
        tokenizer if isinstance(tokenizer, TokenEncoder) else TokenEncoder(tokenizer, "miditok")
    )
    try:
        sequences = encoder.encode(score, first_only=True)
    except Exception as e:
        raise RejectedFile("tokenize_failed", f"{type(e).__name__}: {e}") from e
    # `first` takes the first sequence MidiTok returns: it drops empty tracks itself.
    ids = sequences[0] if sequences else np.zeros(0, dtype=np.int32)
    clock.lap("tokenize")
    return ids, minutes


class _Clock:
    """Adds the seconds since the previous lap to a stage of ``timings`` (if any)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now
