"""``verify``: statistics, decoded examples and every invariant of a built dataset.

The entry point is :func:`verify`. Checks run vectorised over each split's flat
token array, so verifying a large dataset takes seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from varemi import kernels
from varemi.errors import VaremiError

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
        "values": values,
        "offsets": offsets,
        "lengths": lengths,
        "valence_bin": column("valence_bin", np.int64),
        "arousal_bin": column("arousal_bin", np.int64),
        "valence": column("valence", np.float64),
        "arousal": column("arousal", np.float64),
        "window_idx": column("window_idx", np.int64),
        "source_file": table.column("source_file").to_pylist(),
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

    from varemi.tokenizer import ids_to_tokens, load_tokenizer

    out = Path(out)
    rep = Report()
    try:
        info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        rep.fail("dataset_info", f"cannot read {out / 'dataset_info.json'}: {e}")
        return rep
    missing = _missing_info_keys(info)
    if missing:
        rep.fail("dataset_info", f"{out / 'dataset_info.json'} lacks {', '.join(missing)}")
        return rep
    datasets.disable_progress_bars()
    try:
        dd = datasets.load_from_disk(str(out))
    except Exception as e:
        rep.fail("load_from_disk", f"{type(e).__name__}: {e}")
        return rep
    if not isinstance(dd, datasets.DatasetDict) or sorted(dd.keys()) != ["train", "val"]:
        found = sorted(dd.keys()) if isinstance(dd, datasets.DatasetDict) else type(dd).__name__
        rep.fail("splits", f"expected a DatasetDict of train and val, found {found}")
        return rep
    if not _check_columns(rep, dd):
        return rep

    params = info.get("params", {})
    bins = int(params.get("bins", 9))
    half = bins // 2
    window = int(params.get("window_size", 1024))
    min_tokens = int(params.get("min_window_tokens", 1))
    vocab = int(info["tokenizer"]["vocab_size"])
    cond = info["conditioning_tokens"]
    cond_ids = np.array(list(cond.values()), dtype=np.int64)
    val_ids, aro_ids = cond_ids[:bins], cond_ids[bins:]
    try:
        tokenizer = load_tokenizer(out)
    except VaremiError as e:
        rep.fail("tokenizer", str(e))
        tokenizer = None

    arrays = {s: _split_arrays(dd[s]) for s in ("train", "val")}
    files_of = {s: set(a["source_file"]) for s, a in arrays.items()}
    _check_examples(rep, arrays, vocab, val_ids, aro_ids, half, window, min_tokens)
    _check_splits(rep, arrays, files_of, params)
    _check_counts(rep, arrays, files_of, info)
    scope_line = _check_label_scope(rep, arrays, params)

    rep.lines += _statistics(arrays, files_of, half)
    rep.lines.append(scope_line)
    rep.lines.append("")
    if tokenizer is not None:
        rep.lines += _decoded(arrays, tokenizer, ids_to_tokens, num_examples)
    if plot is not None:
        rep.lines.append(_plot(arrays, half, Path(plot)))
    return rep


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
    from varemi.export import features

    want = features()
    usable = True
    for s in ("train", "val"):
        if dd[s].features != want:
            got = {k: str(v) for k, v in dd[s].features.items()}
            rep.fail("columns", f"{s}: columns {got}, expected those of contract 7")
            usable = usable and set(want) <= set(got)
    return usable


def _check_examples(rep, arrays, vocab, val_ids, aro_ids, half, window, min_tokens) -> None:
    for s, a in arrays.items():
        if a["n"] == 0:
            continue
        vals, offs, lens = a["values"], a["offsets"], a["lengths"]
        bad = np.nonzero((vals < 0) | (vals >= vocab))[0]
        if len(bad):
            rep.fail("id_range", f"{s}: {len(bad)} ids outside [0, {vocab}), e.g. {vals[bad[0]]}")
        long_rows = np.nonzero(lens > window + 2)[0]
        if len(long_rows):
            rep.fail("length", f"{s}: {len(long_rows)} examples longer than window_size + 2")
        short_rows = np.nonzero(lens < min_tokens + 2)[0]
        if len(short_rows):
            rep.fail(
                "length", f"{s}: {len(short_rows)} examples shorter than min_window_tokens + 2"
            )
        vb, ab = a["valence_bin"], a["arousal_bin"]
        out_of_range = (vb < -half) | (vb > half) | (ab < -half) | (ab > half)
        if out_of_range.any():
            rep.fail("bins", f"{s}: {int(out_of_range.sum())} rows with bins outside ±{half}")
            continue
        has_prefix = lens >= 2
        first = np.where(has_prefix, vals[np.minimum(offs[:-1], len(vals) - 1)], -1)
        second = np.where(has_prefix, vals[np.minimum(offs[:-1] + 1, len(vals) - 1)], -1)
        wrong = np.nonzero((first != val_ids[vb + half]) | (second != aro_ids[ab + half]))[0]
        if len(wrong):
            r = int(wrong[0])
            rep.fail(
                "prefix",
                f"{s} row {r}: starts ({first[r]}, {second[r]}), bins ({vb[r]}, {ab[r]}) "
                f"want ({val_ids[vb[r] + half]}, {aro_ids[ab[r] + half]})",
            )
        body = np.ones(len(vals), dtype=bool)
        body[offs[:-1][has_prefix]] = False
        body[offs[:-1][has_prefix] + 1] = False
        stray = body & np.isin(vals, np.concatenate([val_ids, aro_ids]))
        if stray.any():
            rows = np.unique(np.searchsorted(offs, np.nonzero(stray)[0], side="right") - 1)
            rep.fail("conditioning_in_body", f"{s}: {len(rows)} examples, e.g. row {rows[0]}")


def _check_splits(rep, arrays, files_of, params) -> None:
    both = files_of["train"] & files_of["val"]
    if both:
        rep.fail("file_in_both_splits", f"{len(both)} files, e.g. {sorted(both)[0]}")
    seed, train_split = int(params.get("seed", 42)), float(params.get("train_split", 0.9))
    for s, a in arrays.items():
        names = sorted(files_of[s])
        if names:
            in_val = kernels.val_mask(names, seed, train_split)
            wrong = [n for n, v in zip(names, in_val, strict=True) if v != (s == "val")]
            if wrong:
                rep.fail(
                    "split_rule", f"{len(wrong)} files in {s} against the hash rule: {wrong[0]}"
                )
        keys = list(zip(a["source_file"], a["window_idx"].tolist(), strict=True))
        if keys != sorted(keys):
            rep.fail("order", f"{s}: rows not ordered by source_file then window_idx")
        per_file: dict[str, list[int]] = {}
        for f, w in keys:
            per_file.setdefault(f, []).append(w)
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


def _check_label_scope(rep, arrays, params) -> str:
    """Check the labels against ``params.label_scope``; return a report line.

    With scope ``file`` (the default) all rows of a file share its labels; with either
    scope and uniform bins, every row's bins are its labels' bins.
    """
    from varemi.conditioning import discretise_uniform

    scope = params.get("label_scope", "file")
    bins = int(params.get("bins", 9))
    varying = total = 0
    for s, a in arrays.items():
        if a["n"] == 0:
            continue
        if params.get("binning", "uniform") == "uniform":
            for axis in ("valence", "arousal"):
                want = discretise_uniform(a[axis], bins).astype(np.int64)
                wrong = np.nonzero(want != a[f"{axis}_bin"])[0]
                if len(wrong):
                    r = int(wrong[0])
                    rep.fail("bins_vs_labels", f"{s} row {r}: {axis} {a[axis][r]} in bin "
                             f"{a[f'{axis}_bin'][r]}, not {want[r]}")  # fmt: skip
        labels: dict[str, set] = {}
        for f, v, ar in zip(a["source_file"], a["valence"], a["arousal"], strict=True):
            labels.setdefault(f, set()).add((v, ar))
        total += len(labels)
        varying += sum(len(x) > 1 for x in labels.values())
    if scope == "window":
        return f"labels: per window (label scope window); {varying} of {total} files vary"
    if varying:
        rep.fail("file_labels", f"{varying} files whose windows have different labels")
    return "labels: per file (label scope file)"


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
