"""Duplicate detection and file groups: leakage-proof splits (docs/contracts.md contract 6, v2).

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
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.options import DEDUP_MODES, GROUP_BY
from varemi.music.fingerprint import (
    FINGERPRINT_VERSION,
    MIN_NOTES,
    NGRAM,
    NUM_PERM,
    RESOLUTION,
    Fingerprint,
    similarity,
)

BANDS, ROWS = 32, 4


"""LSH banding: a pair with similarity s becomes a candidate with probability
``1 - (1 - s**ROWS)**BANDS`` (0.5 at s ~ 0.42, 0.98 at s = 0.6)."""


NEAR_THRESHOLD = 0.5
"""Smallest estimated Jaccard similarity of two near duplicates."""


class GroupsError(VaremiError):
    """A bad ``--dedup``, ``--groups`` or ``--group-by`` value or file."""


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

    Memory: per file its name, two short hash strings and one row of a
    ``NUM_PERM``-column uint32 array (about 0.8 KB in all). The LSH buckets are not
    kept as the files come: :meth:`grouping` finds the files that share a band by
    sorting each band's column block once (a dict of buckets cost about 6 KB a file).

    Args:
        threshold: Smallest estimated similarity of near duplicates.
    """

    def __init__(self, threshold: float = NEAR_THRESHOLD) -> None:
        self.threshold = threshold
        self.names: list[str] = []
        self.exact: dict[str, int] = {}
        self.transposed: dict[str, int] = {}
        self.edges: list[tuple[int, int, str, float]] = []  # exact and transposed matches
        self._sigs = np.empty((1024, NUM_PERM), dtype=np.uint32)
        self._banded = np.zeros(1024, dtype=bool)  # whether a file enters the LSH bands

    def add(self, name: str, fp: Fingerprint) -> None:
        """Add one file and record its exact or transposed match with an earlier file.

        Args:
            name: The file's relative path.
            fp: Its fingerprint.
        """
        i = len(self.names)
        self.names.append(name)
        if i == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
            self._banded = np.concatenate([self._banded, np.zeros_like(self._banded)])
        self._sigs[i] = fp.minhash
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
        self._banded[i] = fp.notes >= MIN_NOTES

    def near_edges(self) -> list[tuple[int, int, str, float]]:
        """The near-duplicate matches: pairs of banded files that share an LSH band.

        A pair ``(j, i)``, ``j < i``, sharing any of the ``BANDS`` blocks of ``ROWS``
        signature values is a candidate; it matches when its estimated similarity is
        at least the threshold.

        Returns:
            ``(j, i, "near", similarity)`` per match, ordered by ``i``, then ``j``.
        """
        n = len(self.names)
        files = np.flatnonzero(self._banded[:n])
        candidates: set[tuple[int, int]] = set()
        for b in range(BANDS):
            block = self._sigs[files, b * ROWS : (b + 1) * ROWS]
            order = np.lexsort(block.T[::-1])
            block = block[order]
            starts = np.flatnonzero(np.r_[True, np.any(block[1:] != block[:-1], axis=1)])
            stops = np.r_[starts[1:], len(block)]
            for a, z in zip(starts[stops - starts > 1], stops[stops - starts > 1], strict=True):
                members = np.sort(files[order[a:z]]).tolist()
                for k, i in enumerate(members):
                    candidates.update((j, i) for j in members[:k])
        edges = []
        for j, i in sorted(candidates, key=lambda pair: (pair[1], pair[0])):
            sim = similarity(self._sigs[j], self._sigs[i])
            if sim >= self.threshold:
                edges.append((j, i, "near", sim))
        return edges

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
        edges = self.edges + self.near_edges()
        detected = _UnionFind(len(names))
        for a, b, _, _ in edges:
            detected.union(a, b)
        best: dict[int, tuple[str, float]] = {}
        for a, b, kind, s in edges:
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
            for a, b, _, _ in edges:
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
