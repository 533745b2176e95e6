"""Duplicate detection and file groups: leakage-proof splits (DESIGN.md contract 6, v2).

Each file's *fingerprint* is computed in the worker that tokenises it, on the notes
varemi tokenises (drums dropped, tracks merged, pitches normalised), so it costs one
pass over a numpy array per file:

- ``exact``: a hash of the sorted ``(onset, pitch, duration)`` triples, onsets and
  durations in 1/48 beat (ticks rescaled by the file's ticks per quarter). Tempo
  map, velocities, programs and meta events are ignored: a tempo-scaled or
  velocity-changed copy is an exact duplicate.
- ``transposed``: the same with every pitch minus the file's lowest pitch, so a copy
  shifted by a constant number of semitones has the same hash.
- ``minhash``: a MinHash signature (``NUM_PERM`` 32-bit minima) of the file's set of
  pitch-interval n-grams (``NGRAM`` consecutive intervals of the notes ordered by onset,
  then pitch). Its estimated Jaccard similarity with another file's finds near
  duplicates (a few notes edited, a bar cut, a time stretch, the same piece
  re-arranged), transposed or not. Intervals only, not pitches: with pitch n-grams in
  the set, a copy both transposed and edited shared only a third of its shingles
  and was never found (0 of 40 in ``scripts/dedup_eval.py``); pitches are already
  compared by the exact hash. Over the 909 POP909 songs the largest similarity of
  two different files is 0.14, apart from 017/018 (0.9, which look like one song
  twice), far below ``NEAR_THRESHOLD``.

MinHash and LSH banding are implemented here over numpy (no new dependency: the
project's environment is fixed, and ``datasketch``, the usual library, is not in it;
the signature is a few vectorised lines). A signature is ``NUM_PERM * 4`` bytes, so
the main process holds O(files) small state: the two 8-byte hashes, the signature,
and the LSH buckets. :class:`DuplicateIndex` then groups files: exact and transposed
hashes by equality, near duplicates by LSH candidates (``BANDS`` bands of ``ROWS``
rows) whose estimated similarity is at least ``NEAR_THRESHOLD``. Groups are the
connected components (union-find) of those matches, together with the user's groups
(``--groups CSV``, ``--group-by parent``).

A group's *key* is the user's group name when it has one (the smallest by string
order when matches join several), else its first file's relative path by Python
string order. ``build`` hashes the key instead of the file's path to choose the
split, so a whole group lands in one split; a file in no group keeps its own path as
key, so a corpus without duplicates splits exactly as in format 1.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from varemi.errors import VaremiError

DEDUP_MODES = ("group", "drop", "off")
GROUP_BY = ("parent",)
FINGERPRINT_VERSION = 2
"""Bump when a fingerprint formula changes: cached fingerprints are then recomputed."""

RESOLUTION = 48
"""Onset and duration resolution of the exact hashes, per beat (quarter note)."""
NUM_PERM = 128
"""MinHash permutations (signature length)."""
BANDS, ROWS = 32, 4
"""LSH banding: a pair with similarity s becomes a candidate with probability
``1 - (1 - s**ROWS)**BANDS`` (0.5 at s ~ 0.42, 0.98 at s = 0.6)."""
NGRAM = 4
"""Length of the pitch-interval n-grams (shingles)."""
NEAR_THRESHOLD = 0.5
"""Smallest estimated Jaccard similarity of two near duplicates."""
MIN_NOTES = 16
"""Files with fewer notes take part in exact and transposed matching only."""

_MIX = np.uint64(0x9E3779B97F4A7C15)
_rng = np.random.default_rng(0x5EED_D0D0)
_PERM_A = _rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_PERM_B = _rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)
del _rng


class GroupsError(VaremiError):
    """A bad ``--dedup``, ``--groups`` or ``--group-by`` value or file."""


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
    from varemi import kernels

    if kernels.PURE_PYTHON:
        return None
    from varemi import _native

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


# --------------------------------------------------------------------------- grouping
class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


_KIND_RANK = {"exact": 0, "transposed": 1, "near": 2}


@dataclass
class Grouping:
    """The groups of a corpus.

    Attributes:
        key: The split key of every grouped file (files absent keep their own path).
        rows: ``duplicates.csv`` rows ``(source_file, group, kind, similarity)``, sorted.
        drop: Files ``--dedup drop`` rejects, to the ``(kept file, kind, similarity)``
            they duplicate.
        summary: The ``groups`` entry of ``dataset_info.json``.
    """

    key: dict[str, str] = field(default_factory=dict)
    rows: list[tuple[str, str, str, float]] = field(default_factory=list)
    drop: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


class DuplicateIndex:
    """Collects fingerprints file by file, then forms the groups.

    Memory: two short strings and a ``NUM_PERM``-value signature per file, plus the
    LSH buckets (``BANDS`` small integers per file).

    Args:
        threshold: Smallest estimated similarity of near duplicates.
    """

    def __init__(self, threshold: float = NEAR_THRESHOLD) -> None:
        self.threshold = threshold
        self.names: list[str] = []
        self.sigs: list[np.ndarray] = []
        self.exact: dict[str, int] = {}
        self.transposed: dict[str, int] = {}
        self.buckets: dict[bytes, list[int]] = {}
        self.edges: list[tuple[int, int, str, float]] = []

    def add(self, name: str, fp: Fingerprint) -> None:
        """Add one file and record its matches with the files added before it.

        Args:
            name: The file's relative path.
            fp: Its fingerprint.
        """
        i = len(self.names)
        self.names.append(name)
        self.sigs.append(fp.minhash)
        if fp.notes == 0:
            return
        j = self.exact.setdefault(fp.exact, i)
        if j != i:
            self.edges.append((j, i, "exact", 1.0))
            return  # its transposed hash and signature are those of j
        j = self.transposed.setdefault(fp.transposed, i)
        if j != i:
            self.edges.append((j, i, "transposed", 1.0))
            return
        if fp.notes < MIN_NOTES:
            return
        best: dict[int, float] = {}
        sig = fp.minhash
        for b in range(BANDS):
            band = b.to_bytes(1, "little") + sig[b * ROWS : (b + 1) * ROWS].tobytes()
            members = self.buckets.setdefault(band, [])
            for j in members:
                if j not in best:
                    best[j] = similarity(self.sigs[j], sig)
            members.append(i)
        for j, s in best.items():
            if s >= self.threshold:
                self.edges.append((j, i, "near", s))

    def grouping(
        self, user_groups: dict[str, str] | None = None, mode: str = "group", how: str = ""
    ) -> Grouping:
        """Form the groups from the matches and the user's groups.

        Args:
            user_groups: File -> group name (``--groups`` or ``--group-by``), or None.
            mode: ``group`` or ``drop`` (``drop``: every detected duplicate but the first
                of its group by path is rejected; the user's groups only steer the split).
            how: How the user's groups were formed (recorded in the summary).

        Returns:
            The :class:`Grouping`.
        """
        names = self.names
        user_groups = user_groups or {}
        index = {n: i for i, n in enumerate(names)}
        detected = _UnionFind(len(names))
        for a, b, _, _ in self.edges:
            detected.union(a, b)
        best: dict[int, tuple[str, float]] = {}
        for a, b, kind, s in self.edges:
            for x in (a, b):
                old = best.get(x)
                if old is None or (_KIND_RANK[kind], -s) < (_KIND_RANK[old[0]], -old[1]):
                    best[x] = (kind, s)
        members: dict[int, list[int]] = {}
        for i in best:
            members.setdefault(detected.find(i), []).append(i)
        g = Grouping()
        dropped: set[int] = set()
        if mode == "drop":
            for ids in members.values():
                first = min(ids, key=lambda i: names[i])
                for i in ids:
                    if i != first:
                        kind, s = best[i]
                        g.drop[names[i]] = (names[first], kind, s)
                        dropped.add(i)
        combined = _UnionFind(len(names))
        if mode == "group":
            for a, b, _, _ in self.edges:
                combined.union(a, b)
        by_name: dict[str, int] = {}
        for f, group in user_groups.items():
            i = index.get(f)
            if i is None or i in dropped:
                continue
            j = by_name.setdefault(group, i)
            combined.union(i, j)
        components: dict[int, list[int]] = {}
        for i in range(len(names)):
            if i not in dropped:
                components.setdefault(combined.find(i), []).append(i)
        sizes = []
        for ids in components.values():
            user = sorted({user_groups[names[i]] for i in ids if names[i] in user_groups})
            if len(ids) < 2 and not user:
                continue
            key = user[0] if user else min(names[i] for i in ids)
            sizes.append(len(ids))
            for i in ids:
                g.key[names[i]] = key
                if names[i] in user_groups:
                    kind, s = "user", 1.0
                else:
                    kind, s = best[i]
                g.rows.append((names[i], key, kind, round(s, 4)))
        for f, (kept, kind, s) in g.drop.items():
            g.rows.append((f, kept, f"{kind} (dropped)", round(s, 4)))
        g.rows.sort()
        kinds: dict[str, int] = {}
        for kind, _ in best.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        g.summary = {
            "dedup": mode,
            "user_groups": how or None,
            "detection": {
                "fingerprint_version": FINGERPRINT_VERSION,
                "exact": f"sorted (onset, pitch, duration) in 1/{RESOLUTION} beat",
                "transposed": "the same, pitches minus the lowest",
                "near": f"MinHash {NUM_PERM} x 32 bit over pitch-interval {NGRAM}-grams, "
                f"LSH {BANDS} bands x {ROWS} rows, estimated Jaccard >= {self.threshold}",
            },
            "files_fingerprinted": len(names),
            "files_with_a_duplicate": len(best),
            "matched_by_kind": dict(sorted(kinds.items())),
            "duplicates_dropped": len(g.drop),
            "groups": len(sizes),
            "files_in_groups": sum(sizes),
            "largest_group": max(sizes, default=0),
        }
        return g


# --------------------------------------------------------------------------- user groups
def check_options(dedup: str, groups, group_by: str | None) -> None:
    """Refuse bad ``--dedup``, ``--groups`` and ``--group-by`` values.

    Args:
        dedup: ``group``, ``drop`` or ``off``.
        groups: A CSV path or None.
        group_by: ``parent`` or None.

    Raises:
        GroupsError: naming the option.
    """
    if dedup not in DEDUP_MODES:
        raise GroupsError(f"--dedup must be one of {DEDUP_MODES}, got {dedup!r}")
    if group_by is not None and group_by not in GROUP_BY:
        raise GroupsError(f"--group-by must be one of {GROUP_BY}, got {group_by!r}")
    if groups is not None and group_by is not None:
        raise GroupsError("--groups and --group-by cannot be used together")
    if groups is not None and not groups.is_file():
        raise GroupsError(f"--groups {groups} is not a file")


def read_groups_csv(path, files: list[str]) -> dict[str, str]:
    """Read a ``filename,group`` CSV (filenames relative to the MIDI folder).

    Args:
        path: The CSV.
        files: The corpus's files (rows naming no file are ignored).

    Returns:
        File -> group name.

    Raises:
        GroupsError: the file cannot be read, lacks the columns, names a file twice
            or gives an empty group name.
    """
    known = set(files)
    table: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"filename", "group"} <= set(reader.fieldnames):
                raise GroupsError(f"--groups {path}: needs the columns filename,group")
            for line, row in enumerate(reader, start=2):
                name = PurePosixPath((row["filename"] or "").strip().replace("\\", "/")).as_posix()
                group = (row["group"] or "").strip()
                if not group:
                    raise GroupsError(f"--groups {path} line {line}: empty group")
                if name in table:
                    raise GroupsError(f"--groups {path} line {line}: {name} listed twice")
                if name in known:
                    table[name] = group
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise GroupsError(f"--groups {path}: {type(e).__name__}: {e}") from None
    return table


def parent_groups(files: list[str]) -> dict[str, str]:
    """``--group-by parent``: every file's group is its parent folder (``.`` at the root).

    Args:
        files: Relative POSIX paths.

    Returns:
        File -> parent folder (files at the root are in no group).
    """
    return {f: f.rsplit("/", 1)[0] + "/" for f in files if "/" in f}


def read_duplicates_csv(path) -> dict[str, str]:
    """Read ``duplicates.csv``: the split key of every grouped file (``verify``).

    Args:
        path: ``OUT/duplicates.csv``.

    Returns:
        File -> group key, for rows of kept files (dropped files have no rows in the data).
    """
    keys: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not row["kind"].endswith("(dropped)"):
                keys[row["source_file"]] = row["group"]
    return keys


def write_duplicates_csv(path, rows: list[tuple[str, str, str, float]]) -> None:
    """Write ``duplicates.csv`` (``source_file,group,kind,similarity``).

    Args:
        path: Where.
        rows: From :attr:`Grouping.rows`.
    """
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["source_file", "group", "kind", "similarity"])
        w.writerows(rows)
