"""Precision and recall of duplicate grouping on perturbed copies of real files.

Copies shared POP909 files (``../shared/corpora/pop909``) into a temporary folder
together with perturbed copies of some of them, runs the real ``varemi build`` on
it (with ``--dedup group``), and reads ``duplicates.csv``:

- recall per perturbation: the fraction of copies put in their original's group,
  and by which kind of match (``exact``, ``transposed``, ``near``);
- false groups: pairs of files of different origins that share a group (among the
  distinct originals, and among everything).

Usage (about a minute with 2 workers)::

    python scripts/dedup_eval.py --originals 100 --copies 40 --workers 2

Perturbations (each applied to every non-drum track):

- ``transpose``: every pitch +3 semitones;
- ``tempo_map``: every tempo x 1.25 (the ticks stay: the notes are the same);
- ``time_stretch``: every onset and duration x 1.25 in ticks (the same tempo map:
  a slower rendering, so onsets differ and only the near matcher can find it);
- ``velocity``: every velocity moved by a random -10..10;
- ``edit_notes``: 1% of the notes (at least 5) moved by 1 or 2 semitones;
- ``bar_cut``: the 4 beats in the middle of the piece removed, later notes moved back;
- ``transpose_edit``: ``transpose`` then ``edit_notes``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POP909 = ROOT.parent / "shared" / "corpora" / "pop909"


def _retrack(track, time, duration, pitch, velocity) -> None:
    from symusic import Note

    track.notes = Note.from_numpy(
        time.astype(np.int32),
        duration.astype(np.int32),
        pitch.astype(np.int8),
        velocity.astype(np.int8),
    )


def perturb(score, kind: str, rng: np.random.Generator):
    """A perturbed copy of ``score`` (a ``symusic.Score`` in ticks)."""
    from symusic import Tempo

    s = score.copy()
    tpq = s.ticks_per_quarter
    if kind == "tempo_map":
        t = s.tempos.numpy()
        s.tempos = Tempo.from_numpy(t["time"], (t["mspq"] / 1.25).astype(np.int32))
        return s
    ends = [int(tr.notes.numpy()["time"].max()) for tr in s.tracks if len(tr.notes)]
    middle = (max(ends) // 2 // (4 * tpq)) * 4 * tpq if ends else 0
    for tr in s.tracks:
        if tr.is_drum or not len(tr.notes):
            continue
        n = {k: v.astype(np.int64) for k, v in tr.notes.numpy().items()}
        time, dur, pitch, vel = n["time"], n["duration"], n["pitch"], n["velocity"]
        if kind in ("transpose", "transpose_edit"):
            pitch = pitch + 3
        if kind in ("edit_notes", "transpose_edit"):
            k = max(5, len(pitch) // 100)
            at = rng.choice(len(pitch), size=min(k, len(pitch)), replace=False)
            pitch[at] += rng.choice([-2, -1, 1, 2], size=len(at))
        if kind == "time_stretch":
            time, dur = np.rint(time * 1.25), np.rint(dur * 1.25)
        if kind == "velocity":
            vel = np.clip(vel + rng.integers(-10, 11, size=len(vel)), 1, 127)
        if kind == "bar_cut":
            keep = (time < middle) | (time >= middle + 4 * tpq)
            time, dur, pitch, vel = time[keep], dur[keep], pitch[keep], vel[keep]
            time = np.where(time >= middle + 4 * tpq, time - 4 * tpq, time)
        _retrack(tr, time, dur, np.clip(pitch, 0, 127), vel)
    return s


KINDS = (
    "transpose",
    "tempo_map",
    "time_stretch",
    "velocity",
    "edit_notes",
    "bar_cut",
    "transpose_edit",
)


def main() -> int:
    """Run the evaluation and print the report (also as JSON with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--originals", type=int, default=100, help="POP909 files used (first N)")
    ap.add_argument("--copies", type=int, default=40, help="originals that get perturbed copies")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    if not POP909.is_dir():
        print(f"error: {POP909} is absent", file=sys.stderr)
        return 2
    from symusic import Score

    rng = np.random.default_rng(a.seed)
    originals = sorted(p.name for p in POP909.glob("*.mid"))[: a.originals]
    tmp = Path(tempfile.mkdtemp(prefix="varemi-dedup-eval-"))
    try:
        midi = tmp / "midi"
        (midi / "orig").mkdir(parents=True)
        origin: dict[str, str] = {}
        for name in originals:
            shutil.copy(POP909 / name, midi / "orig" / name)
            origin[f"orig/{name}"] = name
        for name in originals[: a.copies]:
            score = Score(str(POP909 / name))
            for kind in KINDS:
                rel = f"{kind}/{name}"
                (midi / kind).mkdir(exist_ok=True)
                perturb(score, kind, rng).dump_midi(str(midi / rel))
                origin[rel] = name
        out = tmp / "out"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
        started = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "varemi", "build", "--midi-dir", str(midi), "--out", str(out),
             "--tokenizer", "builtin", "--workers", str(a.workers), "--no-cache", "--quiet"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            return 1
        info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
        with open(out / "duplicates.csv", newline="", encoding="utf-8") as f:
            rows = {r["source_file"]: r for r in csv.DictReader(f)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    group = {f: rows[f]["group"] if f in rows else f for f in origin}
    report: dict = {"files": len(origin), "originals": len(originals), "kinds": {}}
    print(
        f"{len(origin)} files: {len(originals)} POP909 originals, {a.copies} x {len(KINDS)} copies"
    )
    print(f"{'perturbation':15s} {'found':>7s}  matched as")
    for kind in KINDS:
        copies = [f for f in origin if f.startswith(kind + "/")]
        found = [f for f in copies if group[f] == group[f"orig/{origin[f]}"]]
        how = Counter(rows[f]["kind"] for f in found)
        sims = [float(rows[f]["similarity"]) for f in found if rows[f]["kind"] == "near"]
        report["kinds"][kind] = {"copies": len(copies), "found": len(found), "as": dict(how)}
        extra = f", near similarity min {min(sims):.2f}" if sims else ""
        print(f"{kind:15s} {len(found):3d}/{len(copies):<3d}  {dict(sorted(how.items()))}{extra}")
    members: dict[str, list[str]] = {}
    for f, g in group.items():
        members.setdefault(g, []).append(f)
    pairs = true_pairs = 0
    false_examples = []
    for files in members.values():
        for x, y in itertools.combinations(sorted(files), 2):
            pairs += 1
            if origin[x] == origin[y]:
                true_pairs += 1
            elif len(false_examples) < 5:
                false_examples.append((x, y))
    orig_groups = Counter(group[f"orig/{n}"] for n in originals)
    false_orig = sum(c * (c - 1) // 2 for c in orig_groups.values())
    want = a.copies * (len(KINDS) + 1) * len(KINDS) // 2  # pairs within each true group
    report.update(
        pairs_grouped=pairs,
        pairs_correct=true_pairs,
        pairs_expected=want,
        precision=true_pairs / pairs if pairs else 1.0,
        recall=true_pairs / want if want else 1.0,
        false_pairs_among_originals=false_orig,
        false_pair_examples=false_examples,
        build_seconds=round(wall, 2),
        worker_fingerprint_seconds=info["timings_seconds"]["worker_cpu"].get("fingerprint"),
        worker_cpu_seconds=round(sum(info["timings_seconds"]["worker_cpu"].values()), 3),
        groups_seconds=info["timings_seconds"].get("groups"),
    )
    print(
        f"pairs in one group: {pairs}, of one origin: {true_pairs} of {want} expected "
        f"(precision {report['precision']:.3f}, recall {report['recall']:.3f})"
    )
    print(f"false pairs among the distinct originals: {false_orig} {false_examples[:3]}")
    print(
        f"build {wall:.1f} s; worker CPU {report['worker_cpu_seconds']:.1f} s of which "
        f"fingerprints {report['worker_fingerprint_seconds']} s; grouping "
        f"{report['groups_seconds']} s"
    )
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
