"""The stage rules both engines share: what is recorded per item, the split, the bins."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from varemi._base.fileio import atomic_write
from varemi.core import conditioning
from varemi.core.split import val_mask
from varemi.labelling.heuristic import LABEL_COLUMNS
from varemi.pipeline.params import BuildParams


@dataclass
class Run:
    """What the stages of one build record as they go (for ``dataset_info.json``)."""

    files: list[str]
    workers: int
    cache_dir: str | None
    started: float
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
    label_table: dict[str, tuple[float, float]] | None = None
    label_rows: LabelRowSpool | None = None  # computed labels only
    labeller: object = None  # computed labels: the heuristic or a fitted labeller
    usable: list[str] = field(default_factory=list)
    user_groups: dict[str, str] = field(default_factory=dict)
    groups_how: str = ""
    grouping: object = None  # varemi.corpus.grouping.Grouping, unless --dedup off
    is_val: np.ndarray | None = None
    edges: list[np.ndarray] | None = None
    vbins: list[int] = field(default_factory=list)
    abins: list[int] = field(default_factory=list)
    no_windows: int = 0
    windows_labelled: int = 0
    window_fallback: int = 0
    cache_stats: Counter = field(default_factory=Counter)
    worker_seconds: Counter = field(default_factory=Counter)
    worker_rss: float = 0.0
    stage: dict[str, float] = field(default_factory=dict)
    checksums: dict | None = None
    tmp: Path | None = None


def take_result(
    p: BuildParams, run: Run, i: int, aug: str, r, n_tokens: int, failed: set[int]
) -> ItemLabels | None:
    """Record one item's result as both engines do; its labels when it is used.

    The rules: the item's cache status, timings and worker memory are counted; a reject
    is recorded (a copy's detail names its augmentation), and a rejected original drops
    its copies (``failed``); a computed label row of an original goes to ``labels.csv``;
    an original shorter than a window counts as ``files_without_windows``.

    Args:
        p: The build parameters.
        run: The build's record (updated).
        i: The file's index in ``run.usable``.
        aug: The augmentation (``""``: the original).
        r: Its :class:`varemi.corpus.job.FileResult` (``ids`` may be absent: ``n_tokens``
            says how many there are).
        n_tokens: Its number of token ids (0 when rejected).
        failed: Indices of the files whose original was rejected (updated).

    Returns:
        Its :class:`ItemLabels` (with its windows' labels when ``r`` has them), or None
        when the item is rejected or its original was.
    """
    run.cache_stats[r.cache] += 1
    run.worker_rss = max(run.worker_rss, r.peak_rss_mb)
    run.worker_seconds.update(r.timings)
    if i in failed:
        return None
    if r.reject is not None:
        reason, detail = r.reject
        detail = f"augmentation {aug}: {detail}" if aug else detail
        run.rejects.append((run.usable[i], reason, detail))
        if not aug:  # the original failed: its copies are not used either
            failed.add(i)
        return None
    if r.label is not None:
        if not aug:  # labels.csv lists the originals; copies carry theirs in the rows
            run.label_rows.append(r.label)
        valence, arousal = r.label["valence"], r.label["arousal"]
    else:
        valence, arousal = run.label_table[run.usable[i]]
    if n_tokens < p.min_window_tokens and not aug:
        run.no_windows += 1
    labels = ItemLabels(valence, arousal)
    if r.window_labels is not None:  # --label-scope window
        labels.window_valence, labels.window_arousal = r.window_labels
        labels.window_fallback = r.window_fallback
    return labels


def decide_split(p: BuildParams, run: Run, index) -> dict:
    """Form the groups and the split, once every file's fingerprint is known (both engines).

    Sets ``run.grouping`` and ``run.is_val`` (contract 6: a grouped file hashes its
    group's key) and records ``--dedup drop``'s rejects.

    Args:
        p: The build parameters.
        run: The build's record (updated).
        index: The :class:`varemi.corpus.grouping.DuplicateIndex` of every used original, in
            file order; None with ``--dedup off`` (the user's groups only).

    Returns:
        The files ``--dedup drop`` rejects (empty otherwise): they and their copies are
        left out of the data and of ``labels.csv``.
    """
    t = time.perf_counter()
    if index is None:
        run.is_val = val_mask(run.usable, p.seed, p.train_split, run.user_groups)
        run.stage["split"] = time.perf_counter() - t
        return {}
    run.grouping = grouping = index.grouping(run.user_groups, p.dedup, run.groups_how)
    run.is_val = val_mask(run.usable, p.seed, p.train_split, grouping.key)
    for f, (first, kind, sim) in sorted(grouping.drop.items()):
        run.rejects.append((f, "duplicate", f"{kind} duplicate of {first} (similarity {sim:.3f})"))
    run.stage["split"] = time.perf_counter() - t
    return grouping.drop


@dataclass
class ItemLabels:
    """A file's (or copy's) labels and bins as they go through the stages.

    With ``--label-scope window`` the ``window_*`` arrays hold one entry per window
    (the windows :func:`varemi.core.kernels.make_examples` cuts, in order); else None.
    """

    valence: float
    arousal: float
    window_valence: np.ndarray | None = None
    window_arousal: np.ndarray | None = None
    window_fallback: int = 0
    valence_bin: int = 0
    arousal_bin: int = 0
    window_valence_bin: np.ndarray | None = None
    window_arousal_bin: np.ndarray | None = None


def bin_items(p: BuildParams, run: Run, items: list[ItemLabels]) -> None:
    """Set the bins of used items' labels, and of their windows' (both engines).

    Uniform bins depend on each label alone, so any subset of the items can be binned
    at a time. Quantile edges are cut over what the rows hold: every window's labels
    with ``--label-scope window``, else every item's; ``items`` must then be every used
    item, in order (their edges go to ``run.edges``, see :func:`label_bins`).

    Args:
        p: The build parameters.
        run: The build's record.
        items: The items' labels (updated in place).
    """
    if p.binning == "uniform":

        def derive(v, axis):
            return conditioning.discretise_uniform(v, p.bins)

    else:
        per_row = [
            np.column_stack([x.window_valence, x.window_arousal])
            if x.window_valence is not None
            else np.array([[x.valence, x.arousal]])
            for x in items
        ]
        values = np.concatenate(per_row or [np.zeros((0, 2))]).astype(np.float64).reshape(-1, 2)
        label_bins(p, run, values)  # the edges (run.edges) and their warnings

        def derive(v, axis):
            return conditioning.discretise_quantile(v, run.edges[axis], p.bins)

    for x in items:
        _apply_bins(x, derive)


def record_bins(run: Run, x: ItemLabels) -> tuple | None:
    """Count an item's bins in the histograms (what its rows hold); its windows' labels.

    Returns:
        With ``--label-scope window``, the ``windows`` argument of
        :meth:`varemi.core.windows.Windower.add` (labels and bins per window); else None.
    """
    if x.window_valence is None:
        run.vbins.append(x.valence_bin)
        run.abins.append(x.arousal_bin)
        return None
    run.windows_labelled += len(x.window_valence)
    run.window_fallback += x.window_fallback
    # the histograms count what the rows hold: one entry per window
    run.vbins.extend(x.window_valence_bin.tolist())
    run.abins.extend(x.window_arousal_bin.tolist())
    return (x.window_valence, x.window_arousal, x.window_valence_bin, x.window_arousal_bin)


def label_bins(p: BuildParams, run: Run, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (valence, arousal) bins of labels (contract 2), as both engines compute them.

    Uniform bins depend on each label alone. Quantile bins are equal-count bins over
    ``values``, which must then be every used item's labels, in order: their edges go
    to ``run.edges``, with a warning for an axis whose tied labels leave bins empty.

    Args:
        p: The build parameters.
        run: The build's record (``edges`` set with ``--binning quantile``).
        values: ``(n, 2)`` labels, valence then arousal.

    Returns:
        int8 valence bins and arousal bins, one per row of ``values``.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    if p.binning == "uniform":
        return tuple(conditioning.discretise_uniform(values[:, axis], p.bins) for axis in (0, 1))
    run.edges = [conditioning.quantile_edges(values[:, axis], p.bins) for axis in (0, 1)]
    vq = conditioning.discretise_quantile(values[:, 0], run.edges[0], p.bins)
    aq = conditioning.discretise_quantile(values[:, 1], run.edges[1], p.bins)
    for axis, (name, q) in enumerate((("valence", vq), ("arousal", aq))):
        used = int(np.unique(q).size)
        if 0 < used < p.bins:
            distinct = int(np.unique(values[:, axis]).size)
            print(
                f"warning: --binning quantile: the {name} labels use {used} of {p.bins} "
                f"bins (only {distinct} distinct values; tied labels share one bin)",
                file=sys.stderr,
            )
    return vq, aq


def _apply_bins(labels: ItemLabels, derive) -> None:
    """Set the bins of a file's labels (and of its windows') by ``derive(values, axis)``."""

    def bins(v, a):
        return derive(np.asarray(v, np.float64), 0), derive(np.asarray(a, np.float64), 1)

    vb, ab = bins(labels.valence, labels.arousal)
    labels.valence_bin, labels.arousal_bin = int(np.ravel(vb)[0]), int(np.ravel(ab)[0])
    if labels.window_valence is not None:
        wv, wa = bins(labels.window_valence, labels.window_arousal)
        labels.window_valence_bin = np.asarray(wv, np.int8).ravel()
        labels.window_arousal_bin = np.asarray(wa, np.int8).ravel()


class LabelRowSpool:
    """The computed label rows of a build, appended to a CSV spool file as they arrive.

    The main process holds one open file instead of every row (~3 KB each): at the end,
    :meth:`write` writes ``labels.csv`` from the spool, less the files ``--dedup drop``
    rejected, in arrival order, formatted as :func:`varemi.labelling.label_csv.write_label_rows`
    formats rows, so the file is byte for byte the one written from a list of rows.
    Both engines append to it (``--engine ray`` block summary by block summary).

    Args:
        path: The spool file (in the build's temporary folder); created.
        columns: The columns, in order (default: :data:`varemi.labelling.heuristic.LABEL_COLUMNS`).

    Attributes:
        rows: Rows appended so far.
    """

    def __init__(self, path: Path, columns: tuple[str, ...] = ()) -> None:
        import csv

        self.path = Path(path)
        self.columns = list(columns) or list(LABEL_COLUMNS)
        # Line-buffered: a row is on disk once appended (one write per file is nothing
        # next to tokenising it), so the main process never buffers more than a row.
        self.file = open(self.path, "w", 1, newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file, lineterminator="\n")
        self.rows = 0

    def append(self, row: dict) -> None:
        """Append one row (a dict holding every column, as from ``labels.label_row``).

        Args:
            row: The file's label row.
        """
        # The formatting of write_label_rows, repeated rather than shared: labels.py's
        # source hash is the labeller version, so editing it would void cached labels.
        self.writer.writerow(
            [
                repr(float(v)) if isinstance(v, (float, np.floating)) else v
                for v in (row[c] for c in self.columns)
            ]
        )
        self.rows += 1

    def extend(self, rows) -> None:
        """Append several rows, in order.

        Args:
            rows: Label row dicts.
        """
        for row in rows:
            self.append(row)

    def write(self, path: Path, drop=()) -> None:
        """Write the final CSV from the spool (written beside ``path``, then renamed).

        Args:
            path: The CSV to write (``labels.csv``).
            drop: File names whose rows are left out (``Grouping.drop``).
        """
        import csv

        self.file.close()
        path = Path(path)
        key = self.columns.index("filename")
        with (
            open(self.path, newline="", encoding="utf-8") as src,
            atomic_write(path, newline="") as dst,
        ):
            writer = csv.writer(dst, lineterminator="\n")
            writer.writerow(self.columns)
            if not drop:
                shutil.copyfileobj(src, dst)
            else:  # a row read back and written again is the same line (csv round trip)
                writer.writerows(row for row in csv.reader(src) if row[key] not in drop)
        self.close()

    def close(self) -> None:
        """Close and remove the spool file (again: nothing)."""
        self.file.close()
        self.path.unlink(missing_ok=True)


class TokenSpool:
    """Token ids parked on disk until the split is known (memory stays flat).

    Read back with plain reads, not a memory map: the pages of a map that has been read
    count in the process's resident memory (the whole spool, by the end of a build).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "w+b")  # noqa: SIM115 (closed in close())
        self.size = 0
        self.reading = False

    def put(self, ids: np.ndarray) -> tuple[int, int]:
        """Append one file's ids; returns where they are (offset, length)."""
        data = np.ascontiguousarray(ids, dtype="<i4").tobytes()
        self.file.write(data)
        ref = (self.size, len(ids))
        self.size += len(data)
        return ref

    def get(self, ref: tuple[int, int]) -> np.ndarray:
        """Read back the ids that :meth:`put` stored at ``ref``."""
        if not self.reading:
            self.file.flush()
            self.reading = True
        offset, n = ref
        data = os.pread(self.file.fileno(), 4 * n, offset)
        if len(data) != 4 * n:
            raise OSError(f"{self.path}: the spool file is shorter than what was written")
        return np.frombuffer(data, dtype="<i4").astype(np.int32)

    def close(self) -> None:
        """Close and delete the spool file."""
        self.file.close()
        self.path.unlink(missing_ok=True)


def histogram(bins: np.ndarray, n: int) -> dict[str, int]:
    """Examples (or files) per bin, every one of the ``n`` bins named (``-4`` .. ``+4``)."""
    h = conditioning.check_bins(n)
    counts = Counter(bins.tolist())
    return {f"{b:+d}": counts.get(b, 0) for b in range(-h, h + 1)}
