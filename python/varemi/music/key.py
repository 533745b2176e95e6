"""Every piece in C: the key estimate and the shift of ``build --key-to-c``.

A piece's key is the best of the 24 Krumhansl-Kessler profiles
(:data:`varemi.core.label_features.KK_MAJOR` and ``KK_MINOR``, rotated to each tonic)
by Pearson correlation with its duration-weighted pitch-class histogram (non-drum notes,
durations in the score's own time unit). The piece is then moved the nearer way to a
tonic of C (-6..+6 semitones: a tonic of F# goes down 6): major pieces to C major, minor
pieces to C minor, so mode becomes which pitches occur (E or Eb, A or Ab, B or Bb). Drums
keep their pitches (they name instruments).
"""

from __future__ import annotations

import numpy as np

from varemi.core.label_features import KK_MAJOR, KK_MINOR

_PROFILES = [np.roll(p, k) for p in (KK_MAJOR, KK_MINOR) for k in range(12)]
"""The 24 key profiles: C..B major, then C..B minor (tonic at index ``k``)."""


def pitch_class_histogram(score) -> np.ndarray:
    """The duration-weighted pitch-class histogram of a score's non-drum notes.

    Args:
        score: A ``symusic.Score``.

    Returns:
        12 float64 weights, C first.
    """
    hist = np.zeros(12)
    for track in score.tracks:
        if not track.is_drum and track.notes:
            n = track.notes.numpy()
            np.add.at(hist, n["pitch"] % 12, n["duration"].astype(np.float64))
    return hist


def tonic_shift(score) -> int:
    """The shift in semitones that moves a score's estimated tonic to C.

    Args:
        score: A ``symusic.Score`` (not changed).

    Returns:
        ``-tonic`` for a tonic of C..F# (0..6), ``12 - tonic`` for G..B: -6..+5. 0 when
        the score has no pitched notes, or their pitch classes are all equally weighted.
    """
    hist = pitch_class_histogram(score)
    if not np.any(hist - hist.mean()):
        return 0
    tonic = int(np.argmax([np.corrcoef(hist, p)[0, 1] for p in _PROFILES])) % 12
    return -tonic if tonic <= 6 else 12 - tonic  # the nearer way to C


def to_c(score) -> int:
    """Transpose a score's non-drum tracks in place so its estimated tonic is C.

    Pitches are clipped to 0..127 (as :func:`varemi.music.augment.apply` does); notes
    may leave the tokenizer's pitch range, and the caller's pitch handling (``build
    --pitch-policy``) applies after the shift, as for any note.

    Args:
        score: A ``symusic.Score``, changed in place.

    Returns:
        The shift applied (:func:`tonic_shift`).
    """
    shift = tonic_shift(score)
    if shift:
        for track in score.tracks:
            if not track.is_drum and track.notes:
                _shift_track(track, shift)
    return shift


def _shift_track(track, shift: int) -> None:
    pitch = track.notes.numpy()["pitch"]
    if 0 <= int(pitch.min()) + shift and int(pitch.max()) + shift <= 127:
        track.shift_pitch(shift, inplace=True)
        return
    from symusic import Note  # symusic refuses a shift past 0..127: clip those notes

    n = track.notes.numpy()
    pitch = np.clip(n["pitch"].astype(np.int64) + shift, 0, 127).astype(np.int8)
    track.notes = Note.from_numpy(n["time"], n["duration"], pitch, n["velocity"])
