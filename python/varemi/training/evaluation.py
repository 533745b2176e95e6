"""``evaluate``: does a run obey the moods it is asked for?

For each (valence, arousal) of a grid over the dataset's bins, sample pieces (``--seeds``
times, each time with other seeds), label them with the dataset's own labeller and
compare requested with measured: the labeller's composite valence and arousal, and the
features the model must move (note density, velocity and onset rate for arousal;
major-key fit, triad balance and mean pitch for valence), each with a 95% bootstrap
interval over pieces and a one-sided permutation p-value (:mod:`varemi.training.stats`).
Two baselines give the level of chance: the same generations with the requested bins
shuffled, and pieces sampled with no mood at all (guidance 0: the ``[BOS]`` prompt).
"""

from __future__ import annotations

import dataclasses
import numbers
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.fileio import write_json
from varemi.dataset import info as info_module
from varemi.dataset.info import bins_carried, half_width, prefix_length
from varemi.labelling.fitted import LabellerError, load_labeller
from varemi.labelling.heuristic import HEURISTIC, LabelError, Labeller, label_score
from varemi.music.tokenizer import DecodeError, decode_music
from varemi.training import stats
from varemi.training.data import (
    AXES,
    Collator,
    conditioning_gain,
    read_splits,
    unconditioned_prefix,
    validation_rows,
)
from varemi.training.errors import TrainError, one_line, require_torch
from varemi.training.generation import (
    SamplingParams,
    labels_to_bins,
    load_run,
    prefix_ids,
    resolve_device,
    sample,
)
from varemi.training.model import positions
from varemi.training.run import check_new_folder, read_run
from varemi.training.stats import spearman

__all__ = ["evaluate", "format_evaluation", "spearman"]

FEATURES: dict[str, str] = {
    "note_density": "arousal",
    "velocity_mean": "arousal",
    "onset_rate": "arousal",
    "major_fit": "valence",
    "triad_balance": "valence",
    "pitch_mean": "valence",
}
"""The per-feature responses ``evaluate`` reports, and the requested axis each answers.

All are label features (:data:`varemi.core.label_features.FEATURE_NAMES`) of the decoded
piece, except ``major_fit`` = ``major_corr - minor_corr`` (how much better the pitches fit
their best major key than their best minor key). Generations are decoded at 120 qpm, so
``note_density`` and ``onset_rate`` (per second) are twice the per-beat figures: same
ranks, same rho.
"""

LABEL_TIME = "beats"
"""How generations are measured: they carry no tempo tokens and decode at 120 qpm."""

COMPOSITE = ("spearman_valence", "spearman_arousal", "quadrant_accuracy")
"""The composite figures that get an interval and a permutation p-value."""


def piece_features(features: dict[str, float]) -> list[float]:
    """The :data:`FEATURES` of one piece, in order, from its label features.

    Args:
        features: What the labeller computed (``FileLabel.features``).

    Returns:
        One float per name of :data:`FEATURES`.
    """
    derived = {"major_fit": features["major_corr"] - features["minor_corr"]}
    return [float(derived.get(k, features.get(k, np.nan))) for k in FEATURES]


def quadrant_accuracy(requested: np.ndarray, measured: np.ndarray) -> float | None:
    """The share of requests with both bins non-zero whose measured labels have their signs.

    Args:
        requested: (n, 2) requested bins.
        measured: (n, 2) measured labels.

    Returns:
        The share, or None without such a request.
    """
    quad = (requested[:, 0] != 0) & (requested[:, 1] != 0)
    if not quad.any():
        return None
    same = np.sign(requested[quad]) == np.sign(measured[quad])
    return float(same.all(axis=1).mean())


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
    res["quadrant_accuracy"] = quadrant_accuracy(requested, measured)
    res["normalised_l1"] = (
        float((np.abs(requested / max(half, 1) - measured) / 2).mean()) if len(bins) else None
    )
    return res


def control_statistics(requested: np.ndarray, measured: np.ndarray, seed: int = 0) -> dict:
    """95% bootstrap intervals and permutation p-values of the composite figures.

    Pieces are resampled with replacement for the intervals; the requested rows
    (valence and arousal bins together) are permuted over the measured labels for the
    one-sided p-values (:mod:`varemi.training.stats`; :data:`~varemi.training.stats.
    RESAMPLES` and :data:`~varemi.training.stats.PERMUTATIONS` of each, seeded).

    Args:
        requested: (n, 2) requested (valence, arousal) bins.
        measured: (n, 2) measured (valence, arousal) labels.
        seed: Seed of the resamples and permutations.

    Returns:
        ``{"ci95": {figure: [low, high] | None}, "p_permutation": {figure: p | None}}``
        for ``spearman_valence``, ``spearman_arousal`` and ``quadrant_accuracy``.
    """
    n = len(requested)
    ci: dict[str, Any] = {}
    p: dict[str, Any] = {}
    for axis, name in ((0, "valence"), (1, "arousal")):
        x, y = requested[:, axis], measured[:, axis]
        ci[f"spearman_{name}"] = stats.spearman_interval(x, y, seed=seed)
        p[f"spearman_{name}"] = stats.spearman_pvalue(x, y, seed=seed)
    ci["quadrant_accuracy"] = stats.bootstrap_interval(
        lambda i: quadrant_accuracy(requested[i], measured[i]), n, seed=seed
    )
    p["quadrant_accuracy"] = stats.permutation_pvalue(
        lambda order: quadrant_accuracy(requested[order], measured), n, seed=seed
    )
    return {"ci95": ci, "p_permutation": p}


def feature_responses(
    requested: np.ndarray, shuffled: np.ndarray, features: np.ndarray, seed: int = 0
) -> dict:
    """Each of :data:`FEATURES` against the requested bin of its axis.

    Args:
        requested: (n, 2) requested (valence, arousal) bins.
        shuffled: (n, 2) the same requests permuted over the pieces (the baseline).
        features: (n, len(FEATURES)) the pieces' features (:func:`piece_features`).
        seed: Seed of the resamples and permutations.

    Returns:
        ``{feature: {"axis", "rho", "ci95", "p_permutation", "shuffled_rho",
        "shuffled_ci95"}}``: Spearman rho of requested bin and feature, its 95% bootstrap
        interval over pieces, the one-sided permutation p-value, and the same rho and
        interval with the shuffled requests.
    """
    out = {}
    for f, (name, axis_name) in enumerate(FEATURES.items()):
        axis = 0 if axis_name == "valence" else 1
        x, xs, y = requested[:, axis], shuffled[:, axis], features[:, f]
        out[name] = {
            "axis": axis_name,
            "rho": spearman(x, y),
            "ci95": stats.spearman_interval(x, y, seed=seed),
            "p_permutation": stats.spearman_pvalue(x, y, seed=seed),
            "shuffled_rho": spearman(xs, y),
            "shuffled_ci95": stats.spearman_interval(xs, y, seed=seed),
        }
    return out


def absent_bins(grid: list[int], carried: tuple[list[int], list[int]] | None) -> dict | None:
    """The grid's bins that no example of the dataset carries, per axis.

    Args:
        grid: The requested bins of each axis.
        carried: :func:`~varemi.dataset.info.bins_carried` of the dataset (None: unknown).

    Returns:
        ``{"valence": [...], "arousal": [...]}``, or None when the dataset does not say.
    """
    if carried is None:
        return None
    return {
        name: [b for b in grid if b not in set(have)]
        for name, have in zip(("valence", "arousal"), carried, strict=True)
    }


def absent_bins_warning(absent: dict | None) -> str | None:
    """The ``warning:`` line naming the grid's bins no example carried (None: no such bin).

    Args:
        absent: What :func:`absent_bins` returned.

    Returns:
        ``warning: the grid asks for valence bins -4, +4 and arousal bin +4 that no
        training example carried ...``, or None.
    """
    if not absent:
        return None
    parts = [
        f"{name} bin{'s' if len(bins) > 1 else ''} {', '.join(_bin(b) for b in bins)}"
        for name, bins in absent.items()
        if bins
    ]
    if not parts:
        return None
    return (
        f"warning: the grid asks for {' and '.join(parts)} that no training example carried "
        "(dataset_info.json histograms, train and val examples): the model never saw "
        "those mood tokens"
    )


def _bin(b: int) -> str:
    return f"{b:+d}" if b else "0"


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
    seeds: int = 1,
    unconditioned: int | None = None,
) -> dict:
    """Controllability of a run: request moods on a grid, label what comes out.

    For each (valence, arousal) of a ``grid`` x ``grid`` grid over the dataset's bins,
    sample ``n_per_cell`` pieces, ``seeds`` times (seed k samples cell c with seed
    ``sampling.seed + k * cells + c``: every batch its own seed, and ``seeds 1`` is the
    sampling of earlier versions), decode them, label each with the labeller the dataset
    was labelled with (:func:`dataset_labeller`; recorded in ``evaluate.json``) and
    compare requested with measured:

    - the labeller's composite: Spearman rho per axis, quadrant accuracy (each with a 95%
      bootstrap interval over pieces and a one-sided permutation p-value), mean absolute
      bin error, normalised L1 error, the fraction of generations that decode to music
      with notes;
    - per-feature responses (:data:`FEATURES`): Spearman rho of the requested bin of an
      axis and a feature the model must move for it, with interval and p-value;
    - per cell, the mean measured valence and arousal with 95% bootstrap intervals, and
      the feature means; per seed, the composite figures.

    Two baselines: the same figures with the requested bins permuted over the same
    generations (``shuffled_baseline``), and ``unconditioned`` pieces sampled with
    guidance 0 (the ``[BOS]`` prompt alone, seed ``sampling.seed + seeds * cells``),
    their mean measured labels and features with intervals: what the model writes with
    no mood. The conditioning gain (no sampling) says whether the model uses the mood
    tokens at all. ``evaluate.json`` also records the grid's bins that no training
    example carried (with a ``warning:`` line), the cap the model's positions put on new
    tokens, and how the generations were measured (``label_time``: in beats, decoded at
    120 qpm).

    Args:
        run: A finetune run folder.
        grid: Points per axis (2 .. bins).
        n_per_cell: Pieces per grid cell (per seed).
        sampling: How to sample (default: 512 new tokens, temperature 1, top-k 50).
        out: Folder for ``evaluate.json`` and ``evaluate.png`` (default: ``run``).
        quiet: No progress bar.
        device: ``auto``, ``cpu`` or ``cuda``.
        allow_unfinished: Evaluate a run whose training did not finish.
        seeds: How many times the whole grid is sampled (>= 1).
        unconditioned: Pieces of the unconditioned baseline (default ``n_per_cell`` x
            ``grid``, one grid row's worth; 0: none).

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
    if _not_int(seeds) or seeds < 1:
        raise TrainError(f"--seeds must be an integer >= 1, got {seeds}")
    if unconditioned is not None and (_not_int(unconditioned) or unconditioned < 0):
        raise TrainError(f"--unconditioned must be an integer >= 0, got {unconditioned}")
    axis = grid_bins(grid, half)
    cells = [(v, a) for v in axis for a in axis]
    n_free = n_per_cell * len(axis) if unconditioned is None else int(unconditioned)
    carried = bins_carried(info)
    absent = absent_bins(axis, carried)
    torch, _ = require_torch()
    resolve_device(device, torch)
    if warning := absent_bins_warning(absent):
        print(warning, file=sys.stderr)
    r = load_run(run, device, allow_unfinished)
    labeller, labeller_record = dataset_labeller(info)
    special = meta.get("special_tokens") or r.special
    cap = positions(r.model) - prefix_length(info)
    pieces = _Pieces()
    bar = tqdm(
        total=seeds * len(cells) + (1 if n_free else 0),
        desc="evaluate",
        unit="cell",
        disable=quiet,
        file=sys.stderr,
    )
    for k in range(seeds):
        for c, (v, a) in enumerate(cells):
            prompt = prefix_ids(info, special, v, a)
            for j, ids in enumerate(sample(r, prompt, n_per_cell, s, s.seed + k * len(cells) + c)):
                pieces.add(r, ids, f"v{v:+d}_a{a:+d}_{k}_{j}", labeller, (v, a), k)
            bar.update()
    free = _Pieces()
    free_seed = s.seed + seeds * len(cells)
    if n_free:
        plain = dataclasses.replace(s, guidance=0.0)  # sample() then prompts with [BOS]
        for j, ids in enumerate(
            sample(
                r, unconditioned_prefix(r.special), n_free, plain, free_seed, batch_size=n_per_cell
            )
        ):
            free.add(r, ids, f"unconditioned_{j}", labeller, (0, 0), 0)
        bar.update()
    bar.close()
    req, mea, feats, seed_of = pieces.arrays()
    mbins = labels_to_bins(info, mea) if len(mea) else np.zeros((0, 2), np.int64)
    dataset_time = info_module.label_time(info)
    result: dict[str, Any] = {
        "run": str(run),
        "grid": axis,
        "n_per_cell": n_per_cell,
        "seeds": seeds,
        "labeller": labeller_record,
        "label_time": LABEL_TIME,
        "dataset_label_time": dataset_time,
        "label_time_note": _label_time_note(dataset_time),
        "sampling": asdict(s),
        "generations": pieces.attempts,
        "valid_fraction": len(req) / pieces.attempts if pieces.attempts else 0.0,
        "mean_new_tokens": float(np.mean(pieces.lengths)) if pieces.lengths else 0.0,
        "positions": int(positions(r.model)),
        "new_tokens_cap": int(cap),
        "new_tokens_capped": bool(s.max_new_tokens > cap),
        "bins_carried": None
        if carried is None
        else {"valence": list(carried[0]), "arousal": list(carried[1])},
        "absent_bins": absent,
        "statistics": {
            "bootstrap_resamples": stats.RESAMPLES,
            "permutations": stats.PERMUTATIONS,
            "level": stats.LEVEL,
            "seed": s.seed,
        },
        "conditioned": control_metrics(req, mea, mbins, half),
    }
    result["conditioned"].update(control_statistics(req, mea, s.seed))
    result["conditioning_gain"] = _conditioning_gain(r, meta, info, s.seed)
    rng = np.random.default_rng(s.seed)
    shuffled = req[rng.permutation(len(req))] if len(req) else req
    result["shuffled_baseline"] = control_metrics(shuffled, mea, mbins, half)
    result["shuffled_baseline"].update(control_statistics(shuffled, mea, s.seed))
    result["features"] = feature_responses(req, shuffled, feats, s.seed)
    result["per_seed"] = [
        {
            "seed": s.seed + k * len(cells),
            "n": int(sel.sum()),
            "spearman_valence": spearman(req[sel, 0], mea[sel, 0]),
            "spearman_arousal": spearman(req[sel, 1], mea[sel, 1]),
            "quadrant_accuracy": quadrant_accuracy(req[sel], mea[sel]),
        }
        for k in range(seeds)
        for sel in [seed_of == k]
    ]
    result["unconditioned"] = _unconditioned(free, n_free, free_seed, s.seed) if n_free else None
    result["cells"] = [_cell(v, a, mea[sel], feats[sel], s.seed) for v, a in cells
                       for sel in [(req[:, 0] == v) & (req[:, 1] == a)]]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluate.json", result)
    result["report"] = str(out / "evaluate.json")
    result["plot"] = _heatmap(result, axis, out / "evaluate.png")
    return result


def _not_int(x) -> bool:
    return isinstance(x, bool) or not isinstance(x, numbers.Integral)


class _Pieces:
    """The valid generations of one sampling: requests, labels, features, seed index."""

    def __init__(self) -> None:
        self.requested: list[tuple[int, int]] = []
        self.measured: list[tuple[float, float]] = []
        self.features: list[list[float]] = []
        self.seed_index: list[int] = []
        self.lengths: list[int] = []
        self.attempts = 0

    def add(self, r, ids: list[int], name: str, labeller, request: tuple[int, int], k: int):
        """Decode and label one generation; one that cannot be (no notes) only counts."""
        self.attempts += 1
        self.lengths.append(len(ids))
        try:
            score = decode_music(r.tokenizer, ids)
            label = label_score(score, name, labeller=labeller)
        except (DecodeError, LabelError):  # ids MidiTok cannot read, or no notes
            return
        self.requested.append(request)
        self.measured.append((label.valence, label.arousal))
        self.features.append(piece_features(label.features))
        self.seed_index.append(k)

    def arrays(self):
        """``(requested (n, 2) int, measured (n, 2), features (n, F), seed index (n,))``."""
        return (
            np.array(self.requested, dtype=np.int64).reshape(-1, 2),
            np.array(self.measured, dtype=np.float64).reshape(-1, 2),
            np.array(self.features, dtype=np.float64).reshape(-1, len(FEATURES)),
            np.array(self.seed_index, dtype=np.int64),
        )


def _label_time_note(dataset_time) -> str | None:
    """Why generations and the dataset's labels may be measured on different clocks."""
    if dataset_time in (None, LABEL_TIME):
        return None
    return (
        f"the dataset's labels were measured in {dataset_time} (build --label-time "
        f"{dataset_time}); generations carry no tempo tokens and decode at 120 qpm, so "
        "they are measured in beats"
    )


def _cell(v: int, a: int, measured: np.ndarray, features: np.ndarray, seed: int) -> dict:
    """One cell of ``evaluate.json``: its pieces' mean labels (with intervals) and features."""
    mv, mv_ci = stats.mean_interval(measured[:, 0], seed=seed)
    ma, ma_ci = stats.mean_interval(measured[:, 1], seed=seed)
    return {
        "valence_bin": v,
        "arousal_bin": a,
        "valid": int(len(measured)),
        "measured_valence": mv,
        "measured_arousal": ma,
        "measured_valence_ci95": mv_ci,
        "measured_arousal_ci95": ma_ci,
        "features": {
            name: float(features[:, f].mean()) if len(features) else None
            for f, name in enumerate(FEATURES)
        },
    }


def _unconditioned(free: _Pieces, n: int, seed: int, stats_seed: int) -> dict:
    """The unconditioned baseline of ``evaluate.json``: mean labels and features, intervals."""
    _, mea, feats, _ = free.arrays()
    mv, mv_ci = stats.mean_interval(mea[:, 0], seed=stats_seed)
    ma, ma_ci = stats.mean_interval(mea[:, 1], seed=stats_seed)
    features = {}
    for f, name in enumerate(FEATURES):
        mean, ci = stats.mean_interval(feats[:, f], seed=stats_seed)
        features[name] = {"mean": mean, "ci95": ci}
    return {
        "pieces": n,
        "valid": int(len(mea)),
        "seed": seed,
        "guidance": 0.0,
        "mean_new_tokens": float(np.mean(free.lengths)) if free.lengths else 0.0,
        "measured_valence": mv,
        "measured_valence_ci95": mv_ci,
        "measured_arousal": ma,
        "measured_arousal_ci95": ma_ci,
        "features": features,
    }


GAIN_EXAMPLES = 256
"""Val examples the conditioning gain of ``evaluate`` is measured on (evenly spread)."""


def _conditioning_gain(r, meta: dict, info: dict, seed: int) -> dict:
    """The run's conditioning gain on its dataset's val split (or why there is none)."""
    data = Path(meta.get("data") or "")  # run.json records the dataset folder, resolved
    try:
        val = read_splits(data, info)["val"]
    except (VaremiError, OSError) as e:
        return {"nats_per_token": None, "ci95": None, "note": f"no val split: {one_line(e)}"}
    rows = validation_rows(len(val), GAIN_EXAMPLES)
    collate = Collator(pad=int(r.special.get("PAD", 0)), prefix=prefix_length(info))
    gain = conditioning_gain(r.model, val, rows, collate, 8, r.device, seed)
    for axis in AXES:  # which token the model uses: swap one axis at a time
        gain[axis] = conditioning_gain(r.model, val, rows, collate, 8, r.device, seed, axis=axis)
    return gain


def _heatmap(result: dict, axis: list[int], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "evaluate.png skipped: matplotlib is not installed (pip install 'varemi[plot]')"
    g = len(axis)
    keys = ("measured_valence", "measured_arousal")
    grids = {k: np.full((g, g), np.nan) for k in keys}
    halves = {k: np.full((g, g), np.nan) for k in keys}
    for cell in result["cells"]:
        i, j = axis.index(cell["valence_bin"]), axis.index(cell["arousal_bin"])
        for k in keys:
            if cell[k] is not None:
                grids[k][i, j] = cell[k]
            if cell.get(f"{k}_ci95"):
                lo, hi = cell[f"{k}_ci95"]
                halves[k][i, j] = (hi - lo) / 2
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, k in zip(axes, keys, strict=True):
        m = grids[k]
        im = ax.imshow(m, origin="lower", cmap="coolwarm", vmin=-1, vmax=1)
        ax.set_xticks(range(g), [f"{b:+d}" for b in axis])
        ax.set_yticks(range(g), [f"{b:+d}" for b in axis])
        ax.set_xlabel("requested arousal bin")
        ax.set_ylabel("requested valence bin")
        ax.set_title(f"{k.replace('_', ' ')}: mean ± 95% half-width")
        for i in range(g):
            for j in range(g):
                if np.isnan(m[i, j]):
                    continue
                hw = halves[k][i, j]
                text = f"{m[i, j]:+.2f}" + ("" if np.isnan(hw) else f"\n±{hw:.2f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax)
    seeds = result.get("seeds", 1)
    free = result.get("unconditioned")
    fig.suptitle(
        f"{result['n_per_cell']} pieces per cell x {seeds} seed{'s' if seeds > 1 else ''}; "
        f"{result['conditioned']['n']} valid of {result['generations']}"
        + (
            f"; unconditioned (no mood): valence {_num(free['measured_valence'], True)}, "
            f"arousal {_num(free['measured_arousal'], True)}"
            if free and free["valid"]
            else ""
        ),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def format_evaluation(result: dict) -> str:
    """A table of :func:`evaluate`'s figures, conditioned against the shuffled baseline.

    Each figure: conditioned value [95% interval], the shuffled baseline's value
    [interval], and the permutation p-value of the conditioned figure; then the
    per-feature responses, the seeds, the unconditioned baseline and the conditioning
    gain.

    Args:
        result: What :func:`evaluate` returned.

    Returns:
        Text to print.
    """
    c, b = result["conditioned"], result["shuffled_baseline"]
    g = len(result["grid"])
    seeds = result.get("seeds", 1)
    lines = [
        f"varemi evaluate: {result['run']}  (grid {g}x{g}, bins {result['grid']}, "
        f"{result['n_per_cell']} per cell x {seeds} seed{'s' if seeds > 1 else ''}, "
        f"{result['generations']} generations)",
        f"  valid fraction {result['valid_fraction']:.3f}, "
        f"mean new tokens {result['mean_new_tokens']:.0f}" + _cap_text(result),
        f"  measured with the {result['labeller']['kind']} labeller, in "
        f"{result.get('label_time', LABEL_TIME)} (decoded at 120 qpm)"
        + (f"; {result['label_time_note']}" if result.get("label_time_note") else ""),
    ]
    if result.get("absent_bins") and any(result["absent_bins"].values()):
        lines.append(
            "  no training example carried grid bins "
            + "; ".join(
                f"{k} {', '.join(_bin(x) for x in v)}"
                for k, v in result["absent_bins"].items()
                if v
            )
        )
    w = 24
    lines.append(
        f"  {'figure':{w}s} {'conditioned [95% CI]':>26s} {'shuffled [95% CI]':>26s} {'p':>6s}"
    )
    for key in ("spearman_valence", "spearman_arousal", "quadrant_accuracy"):
        sign = key.startswith("spearman")
        ci, bci = (c.get("ci95") or {}).get(key), (b.get("ci95") or {}).get(key)
        p = (c.get("p_permutation") or {}).get(key)
        lines.append(
            f"  {key:{w}s} {_with_ci(c[key], ci, sign):>26s} {_with_ci(b[key], bci, sign):>26s} "
            f"{_p(p):>6s}"
        )
    for key in ("mae_bins_valence", "mae_bins_arousal", "normalised_l1"):
        lines.append(f"  {key:{w}s} {_num(c[key], False):>26s} {_num(b[key], False):>26s}")
    for name, f in (result.get("features") or {}).items():
        label = f"{f['axis']} ~ {name}"
        lines.append(
            f"  {label:{w}s} {_with_ci(f['rho'], f['ci95'], True):>26s} "
            f"{_with_ci(f['shuffled_rho'], f['shuffled_ci95'], True):>26s} "
            f"{_p(f['p_permutation']):>6s}"
        )
    if seeds > 1:
        per = result.get("per_seed") or []
        lines.append(
            "  per seed: spearman valence "
            + " ".join(_num(x["spearman_valence"], True) for x in per)
            + "; arousal "
            + " ".join(_num(x["spearman_arousal"], True) for x in per)
        )
    free = result.get("unconditioned")
    if free:
        lines.append(
            f"  unconditioned (guidance 0, {free['valid']} of {free['pieces']} valid): "
            f"valence {_with_ci(free['measured_valence'], free['measured_valence_ci95'], True)}, "
            f"arousal {_with_ci(free['measured_arousal'], free['measured_arousal_ci95'], True)}"
        )
    gain = result.get("conditioning_gain") or {}
    if gain.get("nats_per_token") is not None:
        lo, hi = gain["ci95"]
        lines.append(
            f"  conditioning gain {gain['nats_per_token']:+.4f} nats/token "
            f"(95% CI {lo:+.4f} .. {hi:+.4f}, {gain['examples']} val examples): the val "
            "loss with other examples' mood tokens minus with their own"
        )
        per_axis = [
            f"{axis} token alone {g['nats_per_token']:+.4f} ({g['ci95'][0]:+.4f} .. "
            f"{g['ci95'][1]:+.4f})"
            for axis in AXES
            if (g := gain.get(axis)) and g.get("nats_per_token") is not None
        ]
        if per_axis:
            lines.append("    " + "; ".join(per_axis))
    else:
        lines.append(f"  conditioning gain: {gain.get('note', 'not measured')}")
    lines.append(f"  report: {result['report']}; plot: {result['plot']}")
    return "\n".join(lines)


def _cap_text(result: dict) -> str:
    cap = result.get("new_tokens_cap")
    if cap is None:
        return ""
    asked = result["sampling"]["max_new_tokens"]
    if result.get("new_tokens_capped"):
        return (
            f"; new tokens capped at {cap} by the model's {result['positions']} positions "
            f"(--max-new-tokens {asked})"
        )
    return f"; new tokens up to {asked} (the model's positions allow {cap})"


def _with_ci(x: float | None, ci: list | None, sign: bool) -> str:
    if x is None:
        return "-"
    f = "{:+.3f}" if sign else "{:.3f}"
    text = f.format(x)
    return text + (f" [{f.format(ci[0])} {f.format(ci[1])}]" if ci else "")


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3f}"


def _num(x: float | None, sign: bool) -> str:
    return "-" if x is None else f"{x:+.3f}" if sign else f"{x:.3f}"
