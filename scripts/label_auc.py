"""How well the heuristic labels order human-labelled files: ROC AUC per axis.

    PYTHONPATH=python python scripts/label_auc.py \
        [--midi-dir ../shared/corpora/vgmidi/phrases] \
        [--human ../shared/corpora/vgmidi/human_labels.csv] [--labels labels.csv]

The human CSV needs ``filename`` (relative to the MIDI folder), ``valence`` and
``arousal``; a label counts as positive when it is > 0. The AUC is the probability
that a random positive file gets a higher predicted label than a random negative one
(Mann-Whitney U / (n_pos * n_neg), ties counting half).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
VGMIDI = REPO.parent / "shared" / "corpora" / "vgmidi"


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
    """AUC of predicted valence and arousal against the human signs, over shared files."""
    merged = predicted[["filename", "valence", "arousal"]].merge(
        human[["filename", "valence", "arousal"]], on="filename", suffixes=("", "_human")
    )
    return {
        "files": len(merged),
        "valence": roc_auc(merged["valence"], merged["valence_human"] > 0),
        "arousal": roc_auc(merged["arousal"], merged["arousal_human"] > 0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--midi-dir", type=Path, default=VGMIDI / "phrases")
    ap.add_argument("--human", type=Path, default=VGMIDI / "human_labels.csv")
    ap.add_argument("--labels", type=Path, default=None, help="score this labels CSV instead")
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args(argv)

    human = pd.read_csv(a.human, dtype={"filename": str})
    if a.labels is not None:
        predicted = pd.read_csv(a.labels, dtype={"filename": str})
    else:
        from varemi.labels import label_folder

        predicted, rejects = label_folder(a.midi_dir, workers=a.workers, progress=False)
        for name, reason, detail in rejects:
            print(f"rejected {name}: {reason} {detail}", file=sys.stderr)
    result = label_aucs(predicted, human)
    print(f"files: {result['files']} of {len(human)} human-labelled")
    print(f"valence AUC: {result['valence']:.3f}")
    print(f"arousal AUC: {result['arousal']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
