"""``evaluate``: does a run obey the moods it is asked for?

For each (valence, arousal) of a grid over the dataset's bins, sample pieces, label them
with varemi's own labeller and compare requested with measured, against a
shuffled-prompt baseline.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.fileio import write_json
from varemi.dataset import info as info_module
from varemi.dataset.info import half_width, prefix_length
from varemi.labelling.fitted import LabellerError, load_labeller
from varemi.labelling.heuristic import HEURISTIC, LabelError, Labeller, label_score
from varemi.music.tokenizer import DecodeError, decode_music
from varemi.training.data import Collator, conditioning_gain, read_splits
from varemi.training.errors import TrainError, one_line, require_torch
from varemi.training.generation import (
    SamplingParams,
    labels_to_bins,
    load_run,
    prefix_ids,
    resolve_device,
    sample,
)
from varemi.training.run import check_new_folder, read_run


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what scipy.stats.rankdata does by default)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a, b) -> float | None:
    """Spearman's rho (ties averaged); None when either side is constant or too short.

    Args:
        a: Values.
        b: Values, paired with ``a``.

    Returns:
        rho in [-1, 1], or None.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return None if denom == 0 else float((ra * rb).sum() / denom)


def grid_bins(grid: int, half: int) -> list[int]:
    """``grid`` bins spread evenly over ``-half..half`` (both ends included).

    Args:
        grid: Points per axis (2 .. 2 * half + 1).
        half: The dataset's half-width h.

    Returns:
        Distinct increasing bins.
    """
    return sorted({int(round(x)) for x in np.linspace(-half, half, grid)})


def control_metrics(requested: np.ndarray, measured: np.ndarray, bins: np.ndarray, half: int):
    """Controllability figures for paired requested bins and measured labels.

    Args:
        requested: (n, 2) requested (valence, arousal) bins.
        measured: (n, 2) measured (valence, arousal) labels in [-1, 1].
        bins: (n, 2) measured bins.
        half: The dataset's half-width h.

    Returns:
        A dict: ``spearman_valence``, ``spearman_arousal``, ``quadrant_accuracy`` (over
        requests with both bins non-zero: the measured signs match), ``mae_bins_valence``,
        ``mae_bins_arousal``, ``normalised_l1`` (mean |requested / h - measured| / 2 over
        both axes, in [0, 1]) and ``n``.
    """
    res: dict[str, Any] = {"n": int(len(requested))}
    for axis, name in ((0, "valence"), (1, "arousal")):
        res[f"spearman_{name}"] = spearman(requested[:, axis], measured[:, axis])
        res[f"mae_bins_{name}"] = (
            float(np.abs(requested[:, axis] - bins[:, axis]).mean()) if len(bins) else None
        )
    quad = (requested[:, 0] != 0) & (requested[:, 1] != 0)
    if quad.any():
        same = np.sign(requested[quad]) == np.sign(measured[quad])
        res["quadrant_accuracy"] = float(same.all(axis=1).mean())
    else:
        res["quadrant_accuracy"] = None
    res["normalised_l1"] = (
        float((np.abs(requested / max(half, 1) - measured) / 2).mean()) if len(bins) else None
    )
    return res


def dataset_labeller(info: dict) -> tuple[Labeller, dict]:
    """The labeller the dataset's labels came from, to measure generations the same way.

    A dataset built with ``--labeller FILE`` names the file and its sha256 in
    ``dataset_info.json``; that file is used when it is still there with that sha256.

    Args:
        info: The run's (the dataset's) ``dataset_info.json``.

    Returns:
        ``(labeller, record)``: the labeller, and what ``evaluate.json`` records of it
        (``kind``, ``sha256``, ``file``, and a ``note`` when it fell back to the heuristic).

    Raises:
        TrainError: never; a missing or changed file falls back with a ``warning:`` line.
    """
    recorded = (info.get("labels") or {}).get("labeller") or {}
    if recorded.get("kind") != "fitted":
        return HEURISTIC, {"kind": "heuristic", "sha256": None, "file": None}
    path, sha = recorded.get("file"), recorded.get("sha256")
    try:
        labeller = load_labeller(path) if path else None
    except (LabellerError, OSError):
        labeller = None
    if labeller is not None and labeller.sha256 == sha:
        return labeller, {"kind": "fitted", "sha256": sha, "file": path}
    note = (
        f"the dataset's labeller {path} (sha256 {sha}) is missing or changed: generations "
        "are measured with the heuristic, not the labeller the data was labelled with"
    )
    print(f"warning: {note}", file=sys.stderr)
    return HEURISTIC, {"kind": "heuristic", "sha256": None, "file": None, "note": note}


def evaluate(
    run: str | Path,
    grid: int = 3,
    n_per_cell: int = 8,
    sampling: SamplingParams | None = None,
    out: str | Path | None = None,
    quiet: bool = False,
    device: str = "auto",
    allow_unfinished: bool = False,
) -> dict:
    """Controllability of a run: request moods on a grid, label what comes out.

    For each (valence, arousal) of a ``grid`` x ``grid`` grid over the dataset's bins,
    sample ``n_per_cell`` pieces, decode them, label each with the labeller the dataset
    was labelled with (:func:`dataset_labeller`: the heuristic, or the ``--labeller`` file;
    recorded in ``evaluate.json``) and compare requested with measured: Spearman
    rho per axis, quadrant accuracy, mean absolute bin error, normalised L1 error, and
    the fraction of generations that decode to music with notes. The same figures for
    a shuffled-prompt baseline (the requested bins permuted over the same generations)
    show the level of chance.

    Args:
        run: A finetune run folder.
        grid: Points per axis (2 .. bins).
        n_per_cell: Pieces per grid cell.
        sampling: How to sample (default: 512 new tokens, temperature 1, top-k 50).
        out: Folder for ``evaluate.json`` and ``evaluate.png`` (default: ``run``).
        quiet: No progress bar.
        device: ``auto``, ``cpu`` or ``cuda``.
        allow_unfinished: Evaluate a run whose training did not finish.

    Returns:
        The content of ``evaluate.json``.

    Raises:
        TrainError: ``run`` is not a finetune output, or a bad option.
    """
    from tqdm import tqdm

    s = sampling or SamplingParams(max_new_tokens=512)
    s.check()
    if out is not None and str(out) == "":
        raise TrainError("--out is empty; give a path (. for the current folder)")
    run = Path(run)
    out = Path(out) if out is not None else run
    meta = read_run(run, allow_unfinished=allow_unfinished)
    info = info_module.read_dataset_info(run, "RUN")
    check_new_folder(out, "--out")
    half = half_width(info)
    if not (2 <= grid <= 2 * half + 1):
        raise TrainError(f"--grid must be in 2..{2 * half + 1} (the dataset's bins), got {grid}")
    if n_per_cell < 1:
        raise TrainError(f"--n-per-cell must be >= 1, got {n_per_cell}")
    torch, _ = require_torch()
    resolve_device(device, torch)
    r = load_run(run, device, allow_unfinished)
    labeller, labeller_record = dataset_labeller(info)
    axis = grid_bins(grid, half)
    cells = [(v, a) for v in axis for a in axis]
    requested, measured, lengths = [], [], []
    attempts = 0
    bar = tqdm(cells, desc="evaluate", unit="cell", disable=quiet, file=sys.stderr)
    for c, (v, a) in enumerate(bar):
        prompt = prefix_ids(info, meta.get("special_tokens") or r.special, v, a)
        for k, ids in enumerate(sample(r, prompt, n_per_cell, s, s.seed + c)):
            attempts += 1
            lengths.append(len(ids))
            try:
                score = decode_music(r.tokenizer, ids)
                label = label_score(score, f"v{v:+d}_a{a:+d}_{k}", labeller=labeller)
            except (DecodeError, LabelError):  # ids MidiTok cannot read, or no notes
                continue
            requested.append((v, a))
            measured.append((label.valence, label.arousal))
    req = np.array(requested, dtype=np.int64).reshape(-1, 2)
    mea = np.array(measured, dtype=np.float64).reshape(-1, 2)
    mbins = labels_to_bins(info, mea) if len(mea) else np.zeros((0, 2), np.int64)
    result: dict[str, Any] = {
        "run": str(run),
        "grid": axis,
        "n_per_cell": n_per_cell,
        "labeller": labeller_record,
        "sampling": asdict(s),
        "generations": attempts,
        "valid_fraction": len(req) / attempts if attempts else 0.0,
        "mean_new_tokens": float(np.mean(lengths)) if lengths else 0.0,
        "conditioned": control_metrics(req, mea, mbins, half),
    }
    result["conditioning_gain"] = _conditioning_gain(r, meta, info, s.seed)
    rng = np.random.default_rng(s.seed)
    shuffled = req[rng.permutation(len(req))] if len(req) else req
    result["shuffled_baseline"] = control_metrics(shuffled, mea, mbins, half)
    result["cells"] = [
        {
            "valence_bin": v,
            "arousal_bin": a,
            "valid": int(sel.sum()),
            "measured_valence": float(mea[sel, 0].mean()) if sel.any() else None,
            "measured_arousal": float(mea[sel, 1].mean()) if sel.any() else None,
        }
        for v, a in cells
        for sel in [(req[:, 0] == v) & (req[:, 1] == a)]
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluate.json", result)
    result["report"] = str(out / "evaluate.json")
    result["plot"] = _heatmap(result, axis, out / "evaluate.png")
    return result


GAIN_EXAMPLES = 256
"""Val examples the conditioning gain of ``evaluate`` is measured on (the first ones)."""


def _conditioning_gain(r, meta: dict, info: dict, seed: int) -> dict:
    """The run's conditioning gain on its dataset's val split (or why there is none)."""
    data = Path(meta.get("data") or "")  # run.json records the dataset folder, resolved
    try:
        val = read_splits(data, info)["val"]
    except (VaremiError, OSError) as e:
        return {"nats_per_token": None, "ci95": None, "note": f"no val split: {one_line(e)}"}
    rows = np.arange(min(len(val), GAIN_EXAMPLES))
    collate = Collator(pad=int(r.special.get("PAD", 0)), prefix=prefix_length(info))
    return conditioning_gain(r.model, val, rows, collate, 8, r.device, seed)


def _heatmap(result: dict, axis: list[int], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "evaluate.png skipped: matplotlib is not installed (pip install 'varemi[plot]')"
    g = len(axis)
    grids = {k: np.full((g, g), np.nan) for k in ("measured_valence", "measured_arousal")}
    for cell in result["cells"]:
        i, j = axis.index(cell["valence_bin"]), axis.index(cell["arousal_bin"])
        for k, m in grids.items():
            if cell[k] is not None:
                m[i, j] = cell[k]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (k, m) in zip(axes, grids.items(), strict=True):
        im = ax.imshow(m, origin="lower", cmap="coolwarm", vmin=-1, vmax=1)
        ax.set_xticks(range(g), [f"{b:+d}" for b in axis])
        ax.set_yticks(range(g), [f"{b:+d}" for b in axis])
        ax.set_xlabel("requested arousal bin")
        ax.set_ylabel("requested valence bin")
        ax.set_title(k.replace("_", " "))
        for i in range(g):
            for j in range(g):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:+.2f}", ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def format_evaluation(result: dict) -> str:
    """A table of :func:`evaluate`'s figures, conditioned against the shuffled baseline.

    Args:
        result: What :func:`evaluate` returned.

    Returns:
        Text to print.
    """
    c, b = result["conditioned"], result["shuffled_baseline"]
    g = len(result["grid"])
    lines = [
        f"varemi evaluate: {result['run']}  (grid {g}x{g}, bins {result['grid']}, "
        f"{result['n_per_cell']} per cell, {result['generations']} generations)",
        f"  valid fraction {result['valid_fraction']:.3f}, "
        f"mean new tokens {result['mean_new_tokens']:.0f}",
        f"  {'':22s} {'conditioned':>12s} {'shuffled':>12s}",
    ]
    for key in (
        "spearman_valence",
        "spearman_arousal",
        "quadrant_accuracy",
        "mae_bins_valence",
        "mae_bins_arousal",
        "normalised_l1",
    ):
        sign = key.startswith("spearman")
        lines.append(f"  {key:22s} {_num(c[key], sign):>12s} {_num(b[key], sign):>12s}")
    gain = result.get("conditioning_gain") or {}
    if gain.get("nats_per_token") is not None:
        lo, hi = gain["ci95"]
        lines.append(
            f"  conditioning gain {gain['nats_per_token']:+.4f} nats/token "
            f"(95% CI {lo:+.4f} .. {hi:+.4f}, {gain['examples']} val examples): the val "
            "loss with other examples' mood tokens minus with their own"
        )
    else:
        lines.append(f"  conditioning gain: {gain.get('note', 'not measured')}")
    lines.append(f"  report: {result['report']}; plot: {result['plot']}")
    return "\n".join(lines)


def _num(x: float | None, sign: bool) -> str:
    return "-" if x is None else f"{x:+.3f}" if sign else f"{x:.3f}"
