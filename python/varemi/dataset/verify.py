"""``verify``: statistics, decoded examples and every invariant of a built dataset.

The entry point is :func:`verify`. Checks run vectorised over each split's flat
token array, so verifying a large dataset takes seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from varemi._base.errors import VaremiError
from varemi.core import conditioning, kernels
from varemi.core.conditioning import bin_token_ids
from varemi.corpus.grouping import read_duplicates_csv
from varemi.dataset.export import features
from varemi.dataset.info import (
    DatasetInfoError,
    bins_of,
    half_width,
    prefix_length,
    read_dataset_info,
)
from varemi.dataset.integrity import METHOD, table_checksum
from varemi.dataset.vocabulary import load_tokenizer
from varemi.music.tokenizer import bar_start_table, ids_to_tokens

_INFO_KEYS = (
    "format_version",
    "varemi_version",
    "tokenizer",
    "conditioning_tokens",
    "params",
    "counts",
)
_TOKENIZER_KEYS = ("source", "sha256", "base_vocab_size", "vocab_size")


@dataclass
class Report:
    """The outcome of :func:`verify`.

    Attributes:
        lines: Statistics and decoded examples, ready to print.
        failures: One line per failed invariant; empty when all hold.
    """

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return not self.failures

    def fail(self, name: str, detail: str) -> None:
        """Record a failed invariant.

        Args:
            name: Short name of the invariant.
            detail: One example of the failure.
        """
        self.failures.append(f"FAIL {name}: {detail}")


def _split_arrays(ds) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = ds.data.table
    ids = table.column("input_ids")
    ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.list_(pa.int32()))
    lengths = pc.list_value_length(ids).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def column(name: str, dtype) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype)

    return {
        "n": table.num_rows,
        "table": table,
        "values": values,
        "offsets": offsets,
        "lengths": lengths,
        "valence_bin": column("valence_bin", np.int64),
        "arousal_bin": column("arousal_bin", np.int64),
        "valence": column("valence", np.float32),
        "arousal": column("arousal", np.float32),
        "window_idx": column("window_idx", np.int64),
        "source_file": table.column("source_file").to_pylist(),
        "augmentation": (
            table.column("augmentation").to_pylist()
            if "augmentation" in table.column_names
            else [""] * table.num_rows
        ),
    }


def verify(out: str | Path, num_examples: int = 3, plot: str | Path | None = None) -> Report:
    """Check a dataset built by varemi and describe it.

    Args:
        out: The dataset folder (what ``build --out`` wrote).
        num_examples: How many examples to decode to token strings.
        plot: Where to write a PNG heat map of the valence x arousal bins (needs
            matplotlib: ``pip install 'varemi[plot]'``); None for no plot.

    Returns:
        A :class:`Report`; ``report.ok`` is True when every invariant holds.
    """
    import datasets

    out = Path(out)
    rep = Report()
    try:
        info = read_dataset_info(out, "dataset")
    except DatasetInfoError as e:
        rep.fail("dataset_info", str(e))
        return rep
    missing = _missing_info_keys(info)
    if missing:
        rep.fail("dataset_info", f"{out / 'dataset_info.json'} lacks {', '.join(missing)}")
        return rep
    datasets.disable_progress_bars()
    try:
        dd = load_splits(out, info)
    except Exception as e:
        rep.fail("load_from_disk", f"{type(e).__name__}: {e}")
        return rep
    if not isinstance(dd, datasets.DatasetDict) or sorted(dd.keys()) != ["train", "val"]:
        found = sorted(dd.keys()) if isinstance(dd, datasets.DatasetDict) else type(dd).__name__
        rep.fail("splits", f"expected a DatasetDict of train and val, found {found}")
        return rep
    if not _check_columns(rep, dd):
        return rep
    columns_as_built = not rep.failures  # a checksum of other column types cannot match

    params = info["params"]
    half = half_width(info)
    window = int(params.get("window_size", 1024))
    min_tokens = int(params.get("min_window_tokens", 1))
    vocab = int(info["tokenizer"]["vocab_size"])
    try:  # each bin's ids, as build maps them
        val_ids, aro_ids = (
            ids.astype(np.int64)
            for ids in bin_token_ids(
                info["conditioning_tokens"], np.arange(-half, half + 1), np.arange(-half, half + 1)
            )
        )
    except VaremiError as e:
        rep.fail("conditioning_tokens", str(e))
        return rep
    try:
        tokenizer = load_tokenizer(out)
    except VaremiError as e:
        rep.fail("tokenizer", str(e))
        tokenizer = None

    arrays = {s: _split_arrays(dd[s]) for s in ("train", "val")}
    files_of = {s: set(a["source_file"]) for s, a in arrays.items()}
    if arrays["train"]["n"] == 0:
        rep.fail("empty_train", "the train split holds no example: nothing to fine-tune on")
    bos = _bos_id(rep, info) if params.get("bos") else None
    _check_examples(rep, arrays, vocab, val_ids, aro_ids, half, window, min_tokens, bos)
    if params.get("window_align", "token") == "bar" and tokenizer is not None:
        _check_bar_starts(rep, arrays, bar_start_table(tokenizer), prefix_length(info))
    _check_bins_match_labels(rep, arrays, info)
    scope_lines = _check_label_scope(rep, arrays, params)
    _check_splits(rep, arrays, files_of, params, _group_keys(rep, out, info))
    _check_counts(rep, arrays, files_of, info)
    _check_file_counts(rep, out, files_of, info)
    if columns_as_built:
        _check_checksums(rep, arrays, info)

    rep.lines += _statistics(arrays, files_of, half)
    rep.lines += ["", *scope_lines]
    rep.lines.append("")
    if tokenizer is not None:
        rep.lines += _decoded(arrays, tokenizer, ids_to_tokens, num_examples)
    if plot is not None:
        rep.lines.append(_plot(arrays, half, Path(plot)))
    return rep


def load_splits(out: Path, info: dict):
    """The splits as a ``DatasetDict``, as ``params.format`` says they were written.

    ``load_from_disk`` for ``--format arrow``; for ``--format parquet``, the Parquet
    shards of each split folder in name order. ``verify`` and ``finetune`` read a
    dataset through it.

    Args:
        out: The dataset folder.
        info: Its ``dataset_info.json``.

    Returns:
        A ``datasets.DatasetDict`` with ``train`` and ``val``.
    """
    import datasets

    if info.get("params", {}).get("format", "arrow") != "parquet":
        return datasets.load_from_disk(str(out))
    import pyarrow as pa
    import pyarrow.parquet as pq

    splits = {}
    for s in ("train", "val"):
        shards = sorted((out / s).glob("*.parquet"))
        if not shards:
            raise FileNotFoundError(f"no Parquet shard in {out / s}")
        splits[s] = datasets.Dataset(pa.concat_tables([pq.read_table(f) for f in shards]))
    return datasets.DatasetDict(splits)


def _missing_info_keys(info) -> list[str]:
    """The keys of contract 7 that ``dataset_info.json`` lacks (or holds in the wrong shape)."""
    if not isinstance(info, dict):
        return ["everything (it is not a JSON object)"]
    missing = [k for k in _INFO_KEYS if k not in info]
    for k in ("tokenizer", "conditioning_tokens", "params", "counts"):
        if k in info and not isinstance(info[k], dict):
            missing.append(f"{k} (not an object)")
    if isinstance(info.get("tokenizer"), dict):
        missing += [f"tokenizer.{k}" for k in _TOKENIZER_KEYS if k not in info["tokenizer"]]
    return missing


def _check_columns(rep, dd) -> bool:
    """Record columns that differ from contract 7; False when one is missing altogether."""
    want = features()
    usable = True
    for s in ("train", "val"):
        if dd[s].features != want:
            got = {k: str(v) for k, v in dd[s].features.items()}
            rep.fail("columns", f"{s}: columns {got}, expected those of contract 7")
            usable = usable and set(want) <= set(got)
    return usable


def _bos_id(rep, info) -> int:
    """The BOS id of a ``build --bos`` dataset (-1, with a failure, when unrecorded)."""
    bos = info.get("special_tokens", {}).get("BOS")
    if not isinstance(bos, int):
        rep.fail("dataset_info", "params.bos is set but special_tokens.BOS is not recorded")
        return -1
    return bos


def _check_examples(
    rep, arrays, vocab, val_ids, aro_ids, half, window, min_tokens, bos=None
) -> None:
    k = 2 if bos is None else 3  # prefix length: [VAL, ARO] or [BOS, VAL, ARO]
    for s, a in arrays.items():
        if a["n"] == 0:
            continue
        vals, offs, lens = a["values"], a["offsets"], a["lengths"]
        bad = np.nonzero((vals < 0) | (vals >= vocab))[0]
        if len(bad):
            rep.fail("id_range", f"{s}: {len(bad)} ids outside [0, {vocab}), e.g. {vals[bad[0]]}")
        long_rows = np.nonzero(lens > window + k)[0]
        if len(long_rows):
            rep.fail("length", f"{s}: {len(long_rows)} examples longer than window_size + {k}")
        short_rows = np.nonzero(lens < min_tokens + k)[0]
        if len(short_rows):
            rep.fail(
                "length", f"{s}: {len(short_rows)} examples shorter than min_window_tokens + {k}"
            )
        vb, ab = a["valence_bin"], a["arousal_bin"]
        out_of_range = (vb < -half) | (vb > half) | (ab < -half) | (ab > half)
        if out_of_range.any():
            rep.fail("bins", f"{s}: {int(out_of_range.sum())} rows with bins outside ±{half}")
            continue
        has_prefix = lens >= k
        if bos is not None:
            starts = np.where(has_prefix, vals[np.minimum(offs[:-1], len(vals) - 1)], -1)
            no_bos = np.nonzero(starts != bos)[0]
            if len(no_bos):
                r = int(no_bos[0])
                rep.fail("bos", f"{s} row {r}: starts with {starts[r]}, not BOS {bos}")
        at = offs[:-1] + (k - 2)  # where the VAL token sits
        first = np.where(has_prefix, vals[np.minimum(at, len(vals) - 1)], -1)
        second = np.where(has_prefix, vals[np.minimum(at + 1, len(vals) - 1)], -1)
        wrong = np.nonzero((first != val_ids[vb + half]) | (second != aro_ids[ab + half]))[0]
        if len(wrong):
            r = int(wrong[0])
            rep.fail(
                "prefix",
                f"{s} row {r}: starts ({first[r]}, {second[r]}), bins ({vb[r]}, {ab[r]}) "
                f"want ({val_ids[vb[r] + half]}, {aro_ids[ab[r] + half]})",
            )
        body = np.ones(len(vals), dtype=bool)
        body[at[has_prefix]] = False
        body[at[has_prefix] + 1] = False
        stray = body & np.isin(vals, np.concatenate([val_ids, aro_ids]))
        if stray.any():
            rows = np.unique(np.searchsorted(offs, np.nonzero(stray)[0], side="right") - 1)
            rep.fail("conditioning_in_body", f"{s}: {len(rows)} examples, e.g. row {rows[0]}")


def _check_bar_starts(rep, arrays, bar_starts: np.ndarray, prefix: int) -> None:
    """``--window-align bar`` (format 3): the first music id of every example starts a bar."""
    for s, a in arrays.items():
        vals, offs, lens = a["values"], a["offsets"], a["lengths"]
        rows = np.nonzero(lens > prefix)[0]
        if not len(rows):
            continue
        first = vals[offs[rows] + prefix]
        known = (first >= 0) & (first < len(bar_starts))
        ok = np.zeros(len(rows), dtype=bool)
        ok[known] = bar_starts[first[known]]
        if not ok.all():
            r = int(rows[np.nonzero(~ok)[0][0]])
            rep.fail(
                "window_align",
                f"{s}: {int((~ok).sum())} examples do not start at a bar, e.g. row {r} "
                f"({a['source_file'][r]}#{int(a['window_idx'][r])}) starts with id "
                f"{vals[offs[r] + prefix]}",
            )


def _bin_bounds(values: np.ndarray, derive) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest bin that any float64 label stored as ``values`` can have.

    Labels are binned in float64 and stored as float32: the label lies between the
    float32 neighbours of its stored value, and binning is monotone.
    """
    v = np.asarray(values, dtype=np.float32)
    low = np.nextafter(v, np.float32(-np.inf)).astype(np.float64)
    high = np.nextafter(v, np.float32(np.inf)).astype(np.float64)
    return derive(low).astype(np.int64), derive(high).astype(np.int64)


def _check_bins_match_labels(rep, arrays, info) -> None:
    """Re-derive every bin from its stored float label (docs/contracts.md contract 2)."""
    params = info["params"]
    bins, binning = bins_of(info), params.get("binning", "uniform")
    edges = (info.get("labels") or {}).get("binning_edges") or {}
    for axis in ("valence", "arousal"):
        if binning == "uniform":

            def derive(v):
                return conditioning.discretise_uniform(v, bins)

        elif binning == "quantile" and (axis in edges or bins == 1):
            axis_edges = np.asarray(edges.get(axis) or [], dtype=np.float64)

            def derive(v, axis_edges=axis_edges):
                return conditioning.discretise_quantile(v, axis_edges, bins)

        else:
            if any(a["n"] for a in arrays.values()):
                rep.fail("bins_vs_labels", f"no rule to re-derive {binning!r} {axis} bins from")
            return
        for s, a in arrays.items():
            if a["n"] == 0:
                continue
            low, high = _bin_bounds(a[axis], derive)
            stored = a[f"{axis}_bin"]
            wrong = np.nonzero((stored < low) | (stored > high))[0]
            if len(wrong):
                r = int(wrong[0])
                rep.fail(
                    "bins_vs_labels",
                    f"{s}: {len(wrong)} rows whose {axis}_bin is not the {binning} bin of "
                    f"their {axis}, e.g. row {r}: {axis} {float(a[axis][r])!r} has bin "
                    f"{int(stored[r])}, want {int(low[r])}",
                )


def _file_groups(a) -> tuple[np.ndarray, int]:
    """Each row's (source_file, augmentation) as a group number, and how many there are."""
    keys: dict[tuple[str, str], int] = {}
    group = np.array(
        [
            keys.setdefault(k, len(keys))
            for k in zip(a["source_file"], a["augmentation"], strict=True)
        ],
        dtype=np.int64,
    )
    return group, len(keys)


def _check_label_scope(rep, arrays, params) -> list[str]:
    """Labels per file or per window, as ``params.label_scope`` says; lines to report.

    With ``file`` scope (the default, and every dataset built before the option) all
    rows of one file (one ``source_file`` and ``augmentation``) carry one label pair.
    With ``window`` scope each window has its own labels: the spread within files is
    reported instead (their bins are checked against their labels like any row's).
    """
    scope = params.get("label_scope", "file")
    if scope not in ("file", "window"):
        rep.fail("label_scope", f"params.label_scope is {scope!r}, not file or window")
        return []
    stds: list[np.ndarray] = []
    for s, a in arrays.items():
        if a["n"] == 0:
            continue
        group, n = _file_groups(a)
        for axis in ("valence", "arousal"):
            if scope == "file":
                first = np.unique(group, return_index=True)[1]  # each group's first row
                differs = np.nonzero(a[axis] != a[axis][first[group]])[0]
                if len(differs):
                    r = int(differs[0])
                    rep.fail(
                        "labels_per_file",
                        f"{s}: {len(differs)} rows whose {axis} differs from their file's "
                        f"other rows (label_scope file), e.g. row {r} of {a['source_file'][r]}",
                    )
            else:
                v = a[axis].astype(np.float64)
                count = np.bincount(group, minlength=n)
                mean = np.bincount(group, v, minlength=n) / count
                var = np.bincount(group, (v - mean[group]) ** 2, minlength=n) / count
                stds.append(np.sqrt(var))
    if scope == "file":
        return ["labels: one (valence, arousal) per file (label_scope file)"]
    if not stds:
        return ["labels: per window (label_scope window); no rows"]
    valence_std = np.concatenate(stds[0::2])
    arousal_std = np.concatenate(stds[1::2])
    varied = int(((valence_std > 0) | (arousal_std > 0)).sum())
    return [
        "labels: per window (label_scope window): each window labelled from its own music",
        f"  within-file std, mean over {len(valence_std)} files: valence "
        f"{valence_std.mean():.3f}, arousal {arousal_std.mean():.3f}; "
        f"{varied} files have windows of different labels",
    ]


def _check_file_counts(rep, out, files_of, info) -> None:
    """``counts``' file totals agree with the data and with ``rejects.csv``."""
    counts = info["counts"]
    kept = len(files_of["train"]) + len(files_of["val"])
    if counts.get("files_kept") != kept:
        rep.fail("counts", f"dataset_info.json says files_kept = {counts.get('files_kept')}, "
                           f"the data holds examples of {kept} files")  # fmt: skip
    rejected = counts.get("files_rejected")
    by_reason = counts.get("rejected_by_reason")
    if isinstance(by_reason, dict) and sum(by_reason.values()) != rejected:
        rep.fail("counts", f"rejected_by_reason sums to {sum(by_reason.values())}, "
                           f"files_rejected = {rejected}")  # fmt: skip
    parts = [counts.get(k) for k in ("files_kept", "files_rejected", "files_without_windows")]
    if all(isinstance(x, int) for x in parts) and sum(parts) != counts.get("files_seen"):
        rep.fail("counts", f"files_seen = {counts.get('files_seen')}, but kept + rejected + "
                           f"without windows = {sum(parts)}")  # fmt: skip
    rejects_csv = out / "rejects.csv"
    if rejects_csv.is_file():
        import csv

        with open(rejects_csv, newline="", encoding="utf-8") as f:
            n = max(sum(1 for _ in csv.reader(f)) - 1, 0)
        if n != rejected:
            rep.fail("counts", f"rejects.csv lists {n} files, files_rejected = {rejected}")


def _check_checksums(rep, arrays, info) -> None:
    """Each split's content checksum equals the one recorded at build time."""
    recorded = info.get("checksums")
    if not isinstance(recorded, dict):
        rep.lines.append("checksums: none recorded (built before varemi recorded them)")
        return
    if recorded.get("method") != METHOD:
        rep.fail("checksum", f"unknown checksum method {recorded.get('method')!r}")
        return
    for s, a in arrays.items():
        got = table_checksum(a["table"])
        if recorded.get(s) != got:
            rep.fail(
                "checksum",
                f"{s}: the data's checksum {got[:19]}... differs from the one recorded at "
                f"build time {str(recorded.get(s))[:19]}...: the split was changed after the build",
            )


def _group_keys(rep, out: Path, info: dict) -> dict[str, str]:
    """Each grouped file's split key from ``duplicates.csv`` (format 2; none in format 1)."""
    path = out / "duplicates.csv"
    if not path.is_file():
        if int(info.get("format_version", 1)) >= 2:
            rep.fail("duplicates_csv", f"{path} is missing (format_version 2 writes it)")
        return {}
    try:
        return read_duplicates_csv(path)
    except (OSError, KeyError, ValueError) as e:
        rep.fail("duplicates_csv", f"cannot read {path}: {type(e).__name__}: {e}")
        return {}


def _check_splits(rep, arrays, files_of, params, group_key: dict[str, str]) -> None:
    both = files_of["train"] & files_of["val"]
    if both:
        rep.fail("file_in_both_splits", f"{len(both)} files, e.g. {sorted(both)[0]}")
    split_of_group: dict[str, set[str]] = {}
    for s in ("train", "val"):
        for f in files_of[s]:
            split_of_group.setdefault(group_key.get(f, f), set()).add(s)
    spanning = sorted(g for g, splits in split_of_group.items() if len(splits) > 1)
    if spanning:
        rep.fail("group_in_both_splits", f"{len(spanning)} groups, e.g. {spanning[0]}")
    seed, train_split = int(params.get("seed", 42)), float(params.get("train_split", 0.9))
    for s, a in arrays.items():
        names = sorted(files_of[s])
        if names:
            in_val = kernels.val_mask([group_key.get(n, n) for n in names], seed, train_split)
            wrong = [n for n, v in zip(names, in_val, strict=True) if v != (s == "val")]
            if wrong:
                rep.fail(
                    "split_rule", f"{len(wrong)} files in {s} against the hash rule: {wrong[0]}"
                )
        keys = list(zip(a["source_file"], a["augmentation"], a["window_idx"].tolist(), strict=True))
        if keys != sorted(keys):
            rep.fail("order", f"{s}: rows not ordered by source_file, augmentation, window_idx")
        per_file: dict[tuple[str, str], list[int]] = {}
        for f, aug, w in keys:
            per_file.setdefault((f, aug), []).append(w)
        gaps = [f for f, ws in per_file.items() if sorted(ws) != list(range(len(ws)))]
        if gaps:
            rep.fail("window_idx", f"{s}: {len(gaps)} files without windows 0..k-1: {gaps[0]}")


def _check_counts(rep, arrays, files_of, info) -> None:
    counts = info.get("counts", {})
    for s, a in arrays.items():
        want = {
            "examples": a["n"],
            "tokens": int(a["lengths"].sum()),
            "files": len(files_of[s]),
        }
        for key, value in want.items():
            recorded = counts.get(key, {}).get(s)
            if recorded != value:
                rep.fail(
                    "counts", f"dataset_info.json says {key}[{s}] = {recorded}, data has {value}"
                )


def _statistics(arrays, files_of, half) -> list[str]:
    lines = ["split   files  examples      tokens   length min / median / max"]
    for s, a in arrays.items():
        lens = a["lengths"]
        stats = f"{lens.min()} / {int(np.median(lens))} / {lens.max()}" if a["n"] else "-"
        lines.append(f"{s:5s} {len(files_of[s]):7d} {a['n']:9d} {int(lens.sum()):11d}   {stats}")
    counts = Counter()
    for a in arrays.values():
        counts.update(zip(a["valence_bin"].tolist(), a["arousal_bin"].tolist(), strict=True))
    lines += ["", "examples per bin (rows: valence, columns: arousal)"]
    lines.append("       " + "".join(f"{b:+6d}" for b in range(-half, half + 1)))
    for v in range(half, -half - 1, -1):
        cells = "".join(f"{counts.get((v, a), 0):6d}" for a in range(-half, half + 1))
        lines.append(f"  {v:+3d}  {cells}")
    return lines


def _decoded(arrays, tokenizer, ids_to_tokens, num_examples: int) -> list[str]:
    lines = []
    shown = 0
    for s, a in arrays.items():
        for r in range(min(a["n"], num_examples - shown)):
            ids = a["values"][a["offsets"][r] : a["offsets"][r + 1]].tolist()
            toks = ids_to_tokens(tokenizer, ids[:24])
            lines.append(
                f"{s} #{r} {a['source_file'][r]} window {a['window_idx'][r]} ({len(ids)} ids):"
            )
            lines.append("    " + " ".join(toks) + (" ..." if len(ids) > 24 else ""))
            shown += 1
    return lines


def _plot(arrays, half: int, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot: matplotlib is not installed; pip install 'varemi[plot]' for --plot"
    grid = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.int64)
    for a in arrays.values():
        np.add.at(grid, (a["valence_bin"] + half, a["arousal_bin"] + half), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(grid, origin="lower", cmap="viridis", extent=(-half - 0.5, half + 0.5) * 2)
    ax.set_xlabel("arousal bin")
    ax.set_ylabel("valence bin")
    ax.set_title("examples per valence x arousal bin")
    fig.colorbar(im, ax=ax, label="examples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: wrote {path}"
