"""How well varemi's labels agree with humans, on VGMIDI and YM2413-MDB side by side.

    PYTHONPATH=python python scripts/label_auc.py [--workers 2] [--labeller JSON] \
        [--cross] [--tags] [--spread] [--corpus NAME=DIR ...] [--human NAME=CSV ...] \
        [--labels NAME=CSV ...] [--save-labels FOLDER] [--bootstrap 1000]

By default it labels the two human-labelled corpora of ``../shared/corpora``:
``vgmidi`` (204 piano phrases, human signs; groups: the game) and ``ym2413_mdb`` (669
FM game tracks with drums, signs of the quadrant of the top tag; groups: the
``group`` column), with the heuristic, or with ``--labeller JSON`` (``labels --fit``).
``--spread`` adds ``pop909`` and ``miditok_tests`` (no human labels) to the bin
histograms; ``--corpus`` replaces the list, ``--human`` gives a corpus human labels,
``--labels`` scores a labels CSV instead of labelling.

For each corpus with human labels (``filename`` relative to the MIDI folder,
``valence``, ``arousal``; positive when > 0) it prints, per axis, the ROC AUC of the
continuous label against the human sign (Mann-Whitney U / (n_pos * n_neg), ties
counting half) with a 95% bootstrap interval over groups (the groups are drawn with
replacement, ``--bootstrap`` times, seed 0: files of one game are not independent),
the 4-quadrant accuracy (both signs right, against the majority quadrant's share),
the predicted-positive against the human-positive shares, and a last row with the
worst of the corpora on each figure, checked against the goals of issue 18
(:data:`GOALS`). ``--tags`` adds, for corpora with a ``tags`` column, the labels per
top tag and the AUCs without the tags whose quadrant is debatable. ``--cross`` fits
a labeller on each human-labelled corpus (as ``labels --fit`` does, grouped
cross-validation) and scores it on every corpus: the diagonal is the out-of-fold
figure, the rest is fit-on-one / test-on-the-other. It also prints the bin histogram
of each corpus over the ``--bins`` uniform bins (contract 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"
VGMIDI = CORPORA / "vgmidi"
YM = CORPORA / "ym2413_mdb"
HUMAN_CORPORA = {"vgmidi": VGMIDI / "phrases", "ym2413_mdb": YM / "midi"}
SPREAD_CORPORA = {"pop909": CORPORA / "pop909", "miditok_tests": CORPORA / "miditok_tests"}
DEFAULT_HUMAN = {"vgmidi": VGMIDI / "human_labels.csv", "ym2413_mdb": YM / "human_labels.csv"}
GROUP_COLUMNS = ("group", "game")
"""The human CSV's column that groups files (the first present); none: each file alone."""

GOALS = {"valence": 0.82, "arousal": 0.80, "quadrant": 0.55}
"""Issue 18's goals for the heuristic: AUC on the worse corpus, quadrant accuracy on both."""

DEBATABLE_TAGS = ("serious", "bizarre", "dreamy")
"""YM2413-MDB tags whose quadrant (Q3, Q3, Q4) is a debatable choice of the dataset's map."""


def roc_auc(scores, positive) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive``, by Mann-Whitney with mid-ranks."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative example")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_ranks = ends - (counts - 1) / 2.0  # 1-based mean rank of each group of ties
    ranks = mid_ranks[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


TAG_FEATURES = ("note_density", "ioi_median", "tempo_bpm", "velocity_mean", "drum_density")
"""The features shown per top tag (medians; velocity over files whose velocities vary,
drum density over files with drums)."""


def merge_human(predicted: pd.DataFrame, human: pd.DataFrame) -> pd.DataFrame:
    """Predicted and human labels of the files in both, with each file's group."""
    cols = ["filename", "valence", "arousal"]
    features = [c for c in predicted.columns if c not in cols]
    group = next((c for c in GROUP_COLUMNS if c in human.columns), None)
    extra = [c for c in ("tags", "top_tag", "quadrant") if c in human.columns]
    h = human[cols + extra + ([group] if group else [])].copy()
    h["_group"] = h[group].fillna(h["filename"]).astype(str) if group else h["filename"]
    return predicted[cols + features].merge(h, on="filename", suffixes=("", "_human"))


def label_aucs(predicted: pd.DataFrame, human: pd.DataFrame) -> dict[str, float]:
    """Agreement of predicted valence and arousal with the human signs, over shared files.

    Returns:
        ``files``; ``valence`` and ``arousal`` (ROC AUC); ``quadrant`` (share of files
        whose two predicted signs both match the human ones); ``majority`` (the share
        of the most frequent human quadrant); ``valence_pos`` and ``arousal_pos`` (share
        predicted > 0); ``valence_human_pos`` and ``arousal_human_pos`` (share human > 0).
    """
    return _figures(merge_human(predicted, human))


def _figures(merged: pd.DataFrame) -> dict[str, float]:
    result: dict[str, float] = {"files": len(merged)}
    agree = np.ones(len(merged), dtype=bool)
    for axis in ("valence", "arousal"):
        pred_pos = merged[axis].to_numpy() > 0
        human_pos = merged[f"{axis}_human"].to_numpy() > 0
        result[axis] = roc_auc(merged[axis], human_pos)
        result[f"{axis}_pos"] = float(pred_pos.mean())
        result[f"{axis}_human_pos"] = float(human_pos.mean())
        agree &= pred_pos == human_pos
    result["quadrant"] = float(agree.mean())
    quadrants = (merged["valence_human"] > 0).astype(int) * 2 + (merged["arousal_human"] > 0)
    result["majority"] = float(quadrants.value_counts(normalize=True).max())
    return result


def bootstrap(merged: pd.DataFrame, n: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% intervals of the AUCs and the quadrant accuracy, resampling whole groups."""
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    groups = merged["_group"].to_numpy()
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    draws: dict[str, list[float]] = {"valence": [], "arousal": [], "quadrant": []}
    for _ in range(n):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        sample = merged.iloc[pick]
        try:
            r = _figures(sample)
        except ValueError:  # a draw with one class only
            continue
        for k in draws:
            draws[k].append(r[k])
    return {
        k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in draws.items()
    }


def bin_spread(values, bins: int = 9) -> dict:
    """Histogram of ``values`` over the uniform bins, and the extreme and largest shares.

    Returns:
        ``counts`` (a list, bin -h first), ``extremes`` (the share in bins -h and +h,
        each), ``in_extremes`` (their total share) and ``largest`` (the largest bin's share).
    """
    from varemi.core.conditioning import discretise_uniform

    v = np.asarray(values, dtype=np.float64)
    h = (bins - 1) // 2
    b = discretise_uniform(v, bins).astype(np.int64)
    counts = np.bincount(b + h, minlength=bins)
    n = max(len(v), 1)
    return {
        "counts": counts.tolist(),
        "extremes": (counts[0] / n, counts[-1] / n),
        "in_extremes": (counts[0] + counts[-1]) / n,
        "largest": counts.max() / n,
    }


def _pairs(items: list[str], option: str) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: {option} takes NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def _interval(value: float, ci: tuple[float, float] | None) -> str:
    return f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def human_table(results: dict[str, tuple[dict, dict]], goals: bool) -> list[str]:
    """The side-by-side table of the human-labelled corpora, and the worst of them."""
    lines = [
        "| corpus | files | valence AUC (95% CI) | arousal AUC (95% CI) | quadrant acc (95% CI) "
        "| majority quadrant | predicted positive vs human positive |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for name, (r, ci) in results.items():
        lines.append(
            f"| {name} | {r['files']} | {_interval(r['valence'], ci.get('valence'))} "
            f"| {_interval(r['arousal'], ci.get('arousal'))} "
            f"| {_interval(r['quadrant'], ci.get('quadrant'))} | {r['majority']:.3f} "
            f"| valence {r['valence_pos']:.2f} vs {r['valence_human_pos']:.2f}, "
            f"arousal {r['arousal_pos']:.2f} vs {r['arousal_human_pos']:.2f} |"
        )
    if len(results) > 1:
        worst = {k: min(r[k] for r, _ in results.values()) for k in GOALS}
        which = {k: min(results, key=lambda n: results[n][0][k]) for k in GOALS}
        lines.append(
            f"| worst | | {worst['valence']:.3f} ({which['valence']}) "
            f"| {worst['arousal']:.3f} ({which['arousal']}) "
            f"| {worst['quadrant']:.3f} ({which['quadrant']}) | | |"
        )
        if goals:
            met = {k: "met" if worst[k] >= g else "not met" for k, g in GOALS.items()}
            lines.append(
                f"| goal (issue 18) | | >= {GOALS['valence']} ({met['valence']}) "
                f"| >= {GOALS['arousal']} ({met['arousal']}) "
                f"| >= {GOALS['quadrant']} on both ({met['quadrant']}) | | |"
            )
    return lines


def tag_table(name: str, merged: pd.DataFrame) -> list[str]:
    """Labels per top tag, and the AUCs with and without the debatable tags."""
    shown = [c for c in TAG_FEATURES if c in merged.columns]
    lines = [
        f"{name}: per top tag (the dataset's quadrant; mean predicted label and share > 0; "
        "feature medians, velocity over files whose velocities vary, drum density over "
        "files with drums)",
        "",
        "| top tag | quadrant | files | valence mean | valence > 0 | arousal mean | arousal > 0 "
        + "".join(f"| {c} " for c in shown)
        + ("| with drums " if "drum_density" in shown else "")
        + "|",
        "|---|---|--:|--:|--:|--:|--:|" + "--:|" * (len(shown) + ("drum_density" in shown)),
    ]
    for tag, g in sorted(
        merged.groupby("top_tag"), key=lambda kv: (str(kv[1]["quadrant"].iloc[0]), -len(kv[1]))
    ):
        cells = []
        for c in shown:
            keep = {"velocity_mean": g.get("velocity_range", g[c]) > 0, "drum_density": g[c] > 0}
            values = g[c][keep[c]] if c in keep else g[c]
            cells.append(f"{values.median():.3g}" if len(values) else "-")
        if "drum_density" in shown:
            cells.append(f"{(g['drum_density'] > 0).mean():.2f}")
        lines.append(
            f"| {tag} | {g['quadrant'].iloc[0]} | {len(g)} | {g['valence'].mean():+.2f} "
            f"| {(g['valence'] > 0).mean():.2f} | {g['arousal'].mean():+.2f} "
            f"| {(g['arousal'] > 0).mean():.2f} | " + " | ".join(cells) + " |"
        )
    kept = merged[~merged["top_tag"].isin(DEBATABLE_TAGS)]
    r = _figures(kept)
    lines += [
        "",
        f"without the top tags {', '.join(DEBATABLE_TAGS)} ({len(kept)} files): valence AUC "
        f"{r['valence']:.3f}, arousal AUC {r['arousal']:.3f}, quadrant {r['quadrant']:.3f}",
    ]
    return lines


def feature_table(merged: dict[str, pd.DataFrame]) -> list[str]:
    """Each feature alone: its ROC AUC for the human signs of each axis, on each corpus.

    A gated feature (``velocity_mean``: velocities that vary; ``drum_density``: drums)
    is scored over the files whose gate is open, and over all files with the closed
    ones at the open files' median (neutral), as the labellers use it.
    """
    from varemi.labelling.heuristic import LABEL_FEATURES

    names = list(merged)
    head = "| feature | " + " | ".join(f"{n} valence | {n} arousal" for n in names) + " |"
    lines = [head, "|---|" + "--:|" * (2 * len(names))]
    gates = {"velocity_mean": "velocity_range", "drum_density": "drum_density"}
    for feature in LABEL_FEATURES:
        variants = [(feature, None)]
        if feature in gates:
            variants = [
                (f"{feature} (gate open)", "open"),
                (f"{feature} (closed: neutral)", "neutral"),
                (f"{feature} (as it is)", None),
            ]
        for label, how in variants:
            cells = []
            for m in merged.values():
                x = m[feature].to_numpy(dtype=np.float64)
                keep = np.ones(len(m), dtype=bool)
                if how is not None:
                    gate = m[gates[feature]].to_numpy() > 0
                    if how == "open":
                        keep = gate
                    elif gate.any():
                        x = np.where(gate, x, np.median(x[gate]))
                for axis in ("valence", "arousal"):
                    y = m[f"{axis}_human"].to_numpy()[keep] > 0
                    ok = keep.any() and 0 < y.sum() < len(y) and np.ptp(x[keep]) > 0
                    cells.append(f"{roc_auc(x[keep], y):.3f}" if ok else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _label(midi_dir: Path, workers, labeller):
    from varemi.labelling.heuristic import label_folder

    return label_folder(midi_dir, workers=workers, progress=False, labeller=labeller)


def cross_table(
    frames: dict[str, pd.DataFrame], humans: dict[str, pd.DataFrame], heuristic: dict
) -> list[str]:
    """Fit on each human-labelled corpus, score on every one (the diagonal: out of fold)."""
    from varemi.labelling.fitted import fit_labeller
    from varemi.labelling.heuristic import LABEL_FEATURES

    lines = [
        "| fitted on | tested on | valence AUC | arousal AUC | quadrant acc "
        "| predicted positive (valence, arousal) |",
        "|---|---|--:|--:|--:|---|",
    ]
    for train in humans:
        merged = frames[train].merge(
            humans[train][["filename", "valence", "arousal"]].rename(
                columns={"valence": "hv", "arousal": "ha"}
            ),
            on="filename",
        )
        group = next((c for c in GROUP_COLUMNS if c in humans[train].columns), None)
        groups = (
            merged["filename"]
            .map(humans[train].set_index("filename")[group])
            .fillna(merged["filename"])
            if group
            else merged["filename"]
        )
        model = fit_labeller(
            merged[list(LABEL_FEATURES)].to_dict("records"),
            list(zip(merged["hv"], merged["ha"], strict=True)),
            list(groups.astype(str)),
        )
        for test in humans:
            if test == train:
                cv = {a: json.loads(getattr(model, a).cv) for a in ("valence", "arousal")}
                quad = json.loads(model.info)["cross_validation"]["quadrant_accuracy"]
                lines.append(
                    f"| {train} | {test} (cross-validated) | {cv['valence']['auc']:.3f} "
                    f"| {cv['arousal']['auc']:.3f} | {quad:.3f} "
                    f"| {cv['valence']['predicted_positive']:.2f}, "
                    f"{cv['arousal']['predicted_positive']:.2f} |"
                )
                continue
            rows = frames[test].to_dict("records")
            labels = np.array([model.label(r) for r in rows]).reshape(-1, 2)
            predicted = pd.DataFrame(
                {
                    "filename": frames[test]["filename"],
                    "valence": labels[:, 0],
                    "arousal": labels[:, 1],
                }
            )
            r = label_aucs(predicted, humans[test])
            lines.append(
                f"| {train} | {test} | {r['valence']:.3f} | {r['arousal']:.3f} "
                f"| {r['quadrant']:.3f} "
                f"| {r['valence_pos']:.2f}, {r['arousal_pos']:.2f} |"
            )
    for test, r in heuristic.items():
        lines.append(
            f"| (heuristic) | {test} | {r['valence']:.3f} | {r['arousal']:.3f} "
            f"| {r['quadrant']:.3f} | {r['valence_pos']:.2f}, {r['arousal_pos']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--human", action="append", default=[], metavar="NAME=CSV")
    ap.add_argument("--labels", action="append", default=[], metavar="NAME=CSV")
    ap.add_argument("--labeller", type=Path, default=None, metavar="JSON")
    ap.add_argument("--spread", action="store_true", help="add pop909 and miditok_tests")
    ap.add_argument("--tags", action="store_true", help="the per-tag view (a tags column)")
    ap.add_argument("--cross", action="store_true", help="fit on each corpus, test on each")
    ap.add_argument("--features", action="store_true", help="each feature's own AUC")
    ap.add_argument("--save-labels", type=Path, default=None, metavar="FOLDER")
    ap.add_argument("--bins", type=int, default=9)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args(argv)

    if a.corpus:
        corpora = _pairs(a.corpus, "--corpus")
    else:
        corpora = dict(HUMAN_CORPORA) | (dict(SPREAD_CORPORA) if a.spread else {})
    humans = {k: v for k, v in DEFAULT_HUMAN.items() if k in corpora} | _pairs(a.human, "--human")
    given = _pairs(a.labels, "--labels")
    for name in given:
        corpora.setdefault(name, Path())
    labeller = None
    if a.labeller is not None:
        from varemi.labelling.fitted import load_labeller

        labeller = load_labeller(a.labeller)
        print(f"labeller: {a.labeller} (sha256 {labeller.sha256[:12]})", file=sys.stderr)

    spread_rows, results, frames, human_frames, tag_lines, merged_all = [], {}, {}, {}, [], {}
    for name, midi_dir in corpora.items():
        if name in given:
            predicted = pd.read_csv(given[name], dtype={"filename": str})
        elif not midi_dir.is_dir():
            print(f"skipped {name}: {midi_dir} absent", file=sys.stderr)
            continue
        else:
            predicted, rejects = _label(midi_dir, a.workers, labeller)
            print(f"{name}: {len(predicted)} labelled, {len(rejects)} rejected", file=sys.stderr)
            if a.save_labels is not None:
                from varemi.labelling.label_csv import write_labels_csv

                a.save_labels.mkdir(parents=True, exist_ok=True)
                write_labels_csv(predicted, a.save_labels / f"{name}.csv")
        frames[name] = predicted
        row = [name, str(len(predicted))]
        for axis in ("valence", "arousal"):
            s = bin_spread(predicted[axis], a.bins)
            row += [
                " ".join(map(str, s["counts"])),
                f"{s['extremes'][0]:.0%} / {s['extremes'][1]:.0%}",
                f"{s['largest']:.0%}",
            ]
        spread_rows.append(row)
        if name in humans and humans[name].is_file():
            human = pd.read_csv(humans[name], dtype={"filename": str})
            human_frames[name] = human
            merged = merge_human(predicted, human)
            merged_all[name] = merged
            results[name] = (_figures(merged), bootstrap(merged, a.bootstrap))
            if a.tags and "top_tag" in merged.columns:
                tag_lines += ["", *tag_table(name, merged)]

    h = (a.bins - 1) // 2
    print(
        f"| corpus | files | valence bins -{h}..+{h} | -{h} / +{h} | largest "
        f"| arousal bins -{h}..+{h} | -{h} / +{h} | largest |"
    )
    print("|---|--:|---|--:|--:|---|--:|--:|")
    for row in spread_rows:
        print("| " + " | ".join(row) + " |")
    if results:
        print()
        print("\n".join(human_table(results, goals=labeller is None and not given)))
    if tag_lines:
        print("\n".join(tag_lines))
    if a.features and merged_all:
        print()
        print("\n".join(feature_table(merged_all)))
    if a.cross:
        missing = [n for n in human_frames if n in given]
        if missing:
            raise SystemExit(f"error: --cross needs features; {missing} came from --labels")
        print()
        heuristic = {n: r for n, (r, _) in results.items()} if labeller is None else {}
        print("\n".join(cross_table(frames, human_frames, heuristic)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
