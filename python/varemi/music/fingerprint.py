"""Duplicate fingerprints of one score: exact and transposed hashes, a pitch MinHash.

The grouping of files by these fingerprints is :mod:`varemi.corpus.grouping`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from varemi import _native
from varemi._base import native

FINGERPRINT_VERSION = 2
"""Bump when a fingerprint formula changes: cached fingerprints are then recomputed."""


RESOLUTION = 48
"""Onset and duration resolution of the exact hashes, per beat (quarter note)."""


NUM_PERM = 128
"""MinHash permutations (signature length)."""


NGRAM = 4
"""Length of the pitch-interval n-grams (shingles)."""


MIN_NOTES = 16
"""Files with fewer notes take part in exact and transposed matching only."""


_MIX = np.uint64(0x9E3779B97F4A7C15)


_rng = np.random.default_rng(0x5EED_D0D0)


_PERM_A = _rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


_PERM_B = _rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)


@dataclass(frozen=True)
class Fingerprint:
    """What duplicate detection keeps of one file.

    Attributes:
        exact: Hex hash of the sorted (onset, pitch, duration) triples.
        transposed: Hex hash of the same with pitches relative to the lowest.
        minhash: uint32 MinHash signature (``NUM_PERM`` values).
        notes: Number of notes.
    """

    exact: str
    transposed: str
    minhash: np.ndarray
    notes: int

    def to_json(self) -> dict:
        """The fingerprint as a JSON-serialisable dict (for the token cache)."""
        return {
            "exact": self.exact,
            "transposed": self.transposed,
            "minhash": self.minhash.astype("<u4").tobytes().hex(),
            "notes": self.notes,
            "version": FINGERPRINT_VERSION,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Fingerprint | None:
        """Read :meth:`to_json`'s output; None when it is of another version or shape."""
        try:
            if obj.get("version") != FINGERPRINT_VERSION:
                return None
            sig = np.frombuffer(bytes.fromhex(obj["minhash"]), dtype="<u4").astype(np.uint32)
            if len(sig) != NUM_PERM:
                return None
            return cls(str(obj["exact"]), str(obj["transposed"]), sig, int(obj["notes"]))
        except (KeyError, TypeError, ValueError):
            return None


def _digest(arr: np.ndarray) -> str:
    return hashlib.blake2b(
        np.ascontiguousarray(arr, dtype="<i8").tobytes(), digest_size=8
    ).hexdigest()


def _ngram_hashes(seq: np.ndarray, n: int, tag: int) -> np.ndarray:
    """One well-mixed uint64 per n-gram of ``seq`` (int64), tagged by kind."""
    if len(seq) < n:
        return np.zeros(0, dtype=np.uint64)
    grams = np.lib.stride_tricks.sliding_window_view(seq.astype(np.uint64), n)
    h = np.full(len(grams), np.uint64((tag * int(_MIX)) % 2**64), dtype=np.uint64)
    for k in range(n):
        h = (h ^ grams[:, k]) * _MIX
    return _splitmix(h)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def minhash(
    shingles: np.ndarray, a: np.ndarray | None = None, b: np.ndarray | None = None
) -> np.ndarray:
    """The MinHash signature of a set of uint64 shingle hashes.

    Permutation k is ``x -> (a_k * x + b_k) mod 2**64`` (``a_k`` odd, so a bijection),
    of which the high 32 bits are kept.

    Args:
        shingles: uint64 hashes (duplicates allowed).
        a: Multipliers (default: varemi's ``NUM_PERM`` fixed ones).
        b: Offsets (same length as ``a``).

    Returns:
        uint32 array of ``len(a)`` minima (all ``2**32 - 1`` for an empty set).
    """
    a = _PERM_A if a is None else a
    b = _PERM_B if b is None else b
    sig = np.full(len(a), np.iinfo(np.uint32).max, dtype=np.uint32)
    x = np.unique(shingles)
    for start in range(0, len(x), 4096):  # bounded temporary memory
        block = x[start : start + 4096]
        values = (a[:, None] * block[None, :] + b[:, None]) >> np.uint64(32)
        np.minimum(sig, values.min(axis=1).astype(np.uint32), out=sig)
    return sig


def fingerprint_notes(
    time: np.ndarray, pitch: np.ndarray, duration: np.ndarray, tpq: int
) -> Fingerprint:
    """The fingerprint of a list of notes.

    Native (``varemi._native.fingerprint_notes``) unless ``VAREMI_PURE_PYTHON=1``; its
    twin and specification is :func:`_fingerprint_notes_py`.

    Args:
        time: Onsets in ticks.
        pitch: MIDI pitches.
        duration: Durations in ticks.
        tpq: The file's ticks per quarter note.

    Returns:
        The file's :class:`Fingerprint`.
    """
    if _NATIVE is None:
        return _fingerprint_notes_py(time, pitch, duration, tpq)
    t, p, d = (np.ascontiguousarray(x, dtype=np.int64) for x in (time, pitch, duration))
    exact, transposed, sig = _NATIVE.fingerprint_notes(
        t, p, d, max(int(tpq), 1), RESOLUTION, NGRAM, _PERM_A, _PERM_B
    )
    return Fingerprint(exact.hex(), transposed.hex(), sig, len(p))


def _fingerprint_notes_py(
    time: np.ndarray, pitch: np.ndarray, duration: np.ndarray, tpq: int
) -> Fingerprint:
    """The pure-Python twin of the native ``fingerprint_notes`` kernel (its specification).

    Onsets and durations are rounded (half to even) to :data:`RESOLUTION` steps per
    quarter; the notes sorted by (onset, pitch, duration) are hashed as little-endian
    int64 triples, once as they are and once with onsets from the first note and
    pitches from the lowest; the MinHash is of the sorted notes' pitches.
    """
    tpq = max(int(tpq), 1)
    onset = np.rint(np.asarray(time, dtype=np.float64) * RESOLUTION / tpq).astype(np.int64)
    dur = np.rint(np.asarray(duration, dtype=np.float64) * RESOLUTION / tpq).astype(np.int64)
    p = np.asarray(pitch, dtype=np.int64)
    order = np.lexsort((dur, p, onset))
    onset, p, dur = onset[order], p[order], dur[order]
    exact = _digest(np.stack([onset, p, dur]).T)
    low = int(p.min()) if len(p) else 0
    transposed = _digest(np.stack([onset - (onset[0] if len(onset) else 0), p - low, dur]).T)
    return Fingerprint(exact, transposed, _pitch_minhash_py(p, NGRAM, _PERM_A, _PERM_B), len(p))


def _pitch_minhash_py(pitches: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The pure-Python twin of the native ``pitch_minhash`` kernel (its specification)."""
    p = np.asarray(pitches, dtype=np.int64)
    return minhash(_ngram_hashes(np.diff(p), n, 1), a, b)


def pitch_minhash(pitches: np.ndarray) -> np.ndarray:
    """The MinHash signature of a note sequence's pitch-interval ``NGRAM``-grams.

    Native (``varemi._native.pitch_minhash``) unless ``VAREMI_PURE_PYTHON=1``.

    Args:
        pitches: Pitches of the notes ordered by onset, then pitch.

    Returns:
        uint32 signature of ``NUM_PERM`` values.
    """
    p = np.ascontiguousarray(pitches, dtype=np.int64)
    if _NATIVE is None:
        return _pitch_minhash_py(p, NGRAM, _PERM_A, _PERM_B)
    return _NATIVE.pitch_minhash(p, NGRAM, _PERM_A, _PERM_B)


def _native_module():

    if native.PURE_PYTHON:
        return None

    return _native


_NATIVE = _native_module()


def fingerprint_score(score) -> Fingerprint:
    """The fingerprint of a preprocessed ``symusic.Score`` (its first track with notes).

    Args:
        score: A score in ticks, after varemi's track merge and pitch normalisation.

    Returns:
        Its :class:`Fingerprint` (of no notes when every track is empty).
    """
    for track in score.tracks:
        if len(track.notes):
            n = track.notes.numpy()
            return fingerprint_notes(n["time"], n["pitch"], n["duration"], score.ticks_per_quarter)
    empty = np.zeros(0, dtype=np.int64)
    return fingerprint_notes(empty, empty, empty, score.ticks_per_quarter)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two MinHash signatures.

    Args:
        a: A signature.
        b: Another signature.

    Returns:
        The fraction of equal minima.
    """
    return float(np.mean(a == b))


del _rng
