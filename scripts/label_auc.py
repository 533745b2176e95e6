"""How the heuristic labels spread over the bins, and how well they agree with humans.

    PYTHONPATH=python python scripts/label_auc.py [--workers 2] \
        [--corpus NAME=DIR ...] [--human NAME=CSV ...] [--labels NAME=CSV ...] \
        [--save-labels FOLDER]

By default it labels the shared corpora: ``vgmidi`` (``../shared/corpora/vgmidi/phrases``,
with ``human_labels.csv``), ``pop909`` and ``miditok_tests`` (every MIDI file under it;
the corrupt and empty ones are rejected). ``--corpus`` replaces that list; ``--human``
gives a corpus human labels; ``--labels`` scores a labels CSV instead of labelling.

For each corpus and axis it prints the histogram over the ``--bins`` uniform bins
(contract 2: ``round((v + 1) / 2 * (B - 1)) - h``), the share of files in the two
extreme bins and in the largest bin. With human labels (``filename`` relative to the
MIDI folder, ``valence``, ``arousal``; a label is positive when > 0) it adds, per axis,
the ROC AUC of the continuous label against the human sign (Mann-Whitney U /
(n_pos * n_neg), ties counting half), the fraction predicted positive (> 0) against
the fraction human positive, and the accuracy of the 4 quadrants from the two signs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"
VGMIDI = CORPORA / "vgmidi"
DEFAULT_CORPORA = {
    "vgmidi": VGMIDI / "phrases",
    "pop909": CORPORA / "pop909",
    "miditok_tests": CORPORA / "miditok_tests",
}
DEFAULT_HUMAN = {"vgmidi": VGMIDI / "human_labels.csv"}


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


def label_aucs(predicted: pd.DataFrame, human: pd.DataFrame) -> dict[str, float]:
    """Agreement of predicted valence and arousal with the human signs, over shared files.

    Returns:
        ``files``; ``valence`` and ``arousal`` (ROC AUC); ``quadrant`` (share of files
        whose two predicted signs both match the human ones); ``valence_pos`` and
        ``arousal_pos`` (share predicted > 0); ``valence_human_pos`` and
        ``arousal_human_pos`` (share human > 0).
    """
    merged = predicted[["filename", "valence", "arousal"]].merge(
        human[["filename", "valence", "arousal"]], on="filename", suffixes=("", "_human")
    )
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
    return result


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--human", action="append", default=[], metavar="NAME=CSV")
    ap.add_argument("--labels", action="append", default=[], metavar="NAME=CSV")
    ap.add_argument("--save-labels", type=Path, default=None, metavar="FOLDER")
    ap.add_argument("--bins", type=int, default=9)
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args(argv)

    corpora = _pairs(a.corpus, "--corpus") if a.corpus else dict(DEFAULT_CORPORA)
    humans = {k: v for k, v in DEFAULT_HUMAN.items() if k in corpora} | _pairs(a.human, "--human")
    given = _pairs(a.labels, "--labels")
    for name in given:
        corpora.setdefault(name, Path())

    spread_rows = []
    human_rows = []
    for name, midi_dir in corpora.items():
        if name in given:
            predicted = pd.read_csv(given[name], dtype={"filename": str})
        elif not midi_dir.is_dir():
            print(f"skipped {name}: {midi_dir} absent", file=sys.stderr)
            continue
        else:
            from varemi.labelling.heuristic import label_folder
            from varemi.labelling.label_csv import write_labels_csv

            predicted, rejects = label_folder(midi_dir, workers=a.workers, progress=False)
            print(f"{name}: {len(predicted)} labelled, {len(rejects)} rejected", file=sys.stderr)
            if a.save_labels is not None:
                a.save_labels.mkdir(parents=True, exist_ok=True)
                write_labels_csv(predicted, a.save_labels / f"{name}.csv")
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
            r = label_aucs(predicted, pd.read_csv(humans[name], dtype={"filename": str}))
            human_rows.append(
                [
                    name,
                    str(r["files"]),
                    f"{r['valence']:.3f}",
                    f"{r['arousal']:.3f}",
                    f"{r['quadrant']:.3f}",
                    f"valence {r['valence_pos']:.2f} vs {r['valence_human_pos']:.2f}, "
                    f"arousal {r['arousal_pos']:.2f} vs {r['arousal_human_pos']:.2f}",
                ]
            )

    h = (a.bins - 1) // 2
    print(
        f"| corpus | files | valence bins -{h}..+{h} | -{h} / +{h} | largest "
        f"| arousal bins -{h}..+{h} | -{h} / +{h} | largest |"
    )
    print("|---|--:|---|--:|--:|---|--:|--:|")
    for row in spread_rows:
        print("| " + " | ".join(row) + " |")
    if human_rows:
        print()
        print(
            "| corpus | files | valence AUC | arousal AUC | quadrant acc "
            "| predicted positive vs human positive |"
        )
        print("|---|--:|--:|--:|--:|---|")
        for row in human_rows:
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
