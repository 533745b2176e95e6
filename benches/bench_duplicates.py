"""Duplicate detection's cost: builds with and without it, and the MinHash kernel.

- ``test_build_dedup``: ``python -m varemi build`` on ../shared/corpora/pop909 with
  ``--dedup off`` and ``--dedup group`` side by side (fresh subprocesses, no token
  cache, every core). ``extra_info`` records the worker CPU seconds per stage, among
  them ``fingerprint`` (the detection's share of the per-file work), and the main
  process's ``groups`` seconds (forming the groups).
- ``test_pitch_minhash``: the native kernel against its pure-Python twin on the notes
  of one POP909 file.

Under ``--benchmark-disable`` or ``CI`` only the first 40 files are built.

    python -m pytest benches/bench_duplicates.py --benchmark-only
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from varemi.music import fingerprint

POP909 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "pop909"

pytestmark = pytest.mark.skipif(not POP909.is_dir(), reason="../shared/corpora/pop909 absent")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fast) -> Path:
    if not fast:
        return POP909
    folder = tmp_path_factory.mktemp("pop909-subset")
    for f in sorted(POP909.glob("*.mid"))[:40]:
        (folder / f.name).symlink_to(f)
    return folder


def _build(corpus: Path, out: Path, dedup: str) -> dict:
    cmd = [sys.executable, "-m", "varemi", "build", "--midi-dir", str(corpus), "--out", str(out)]
    cmd += ["--tokenizer", "builtin", "--quiet", "--overwrite", "--no-cache"]
    cmd += ["--workers", str(os.cpu_count() or 1), "--dedup", dedup]
    subprocess.run(cmd, check=True)
    return json.loads((out / "dataset_info.json").read_text())


@pytest.mark.parametrize("dedup", ["off", "group"])
def test_build_dedup(benchmark, corpus, tmp_path_factory, dedup):
    """The whole build, with and without duplicate detection."""
    out = tmp_path_factory.mktemp(f"dedup-{dedup}") / "out"
    benchmark.group = "build with and without --dedup (pop909, every core)"
    info = benchmark.pedantic(_build, args=(corpus, out, dedup), rounds=1, iterations=1)
    cpu = info["timings_seconds"]["worker_cpu"]
    benchmark.extra_info.update(
        impl=dedup,
        kernel="build",
        size=info["counts"]["files_seen"],
        worker_cpu=cpu,
        fingerprint_share_of_worker_cpu=round(cpu.get("fingerprint", 0.0) / sum(cpu.values()), 4),
        groups_seconds=info["timings_seconds"].get("groups", 0.0),
        groups=info["groups"],
    )
    if dedup == "group":
        assert info["groups"]["files_fingerprinted"] == info["counts"]["files_seen"]


@pytest.fixture(scope="module")
def pitches() -> np.ndarray:
    from miditok.utils import merge_tracks
    from symusic import Score

    score = Score(str(sorted(POP909.glob("*.mid"))[0]))
    merge_tracks(score)
    n = score.tracks[0].notes.numpy()
    order = np.lexsort((n["duration"], n["pitch"], n["time"]))
    return np.ascontiguousarray(n["pitch"][order], dtype=np.int64)


@pytest.mark.parametrize("impl", ["native", "python"])
def test_pitch_minhash(benchmark, pitches, impl):
    """One file's MinHash signature (about 1,700 notes, 3,400 shingles, 128 permutations)."""

    if impl == "native":
        from varemi import _native

        def run():
            return _native.pitch_minhash(
                pitches, fingerprint.NGRAM, fingerprint._PERM_A, fingerprint._PERM_B
            )
    else:

        def run():
            return fingerprint._pitch_minhash_py(
                pitches, fingerprint.NGRAM, fingerprint._PERM_A, fingerprint._PERM_B
            )

    benchmark.group = "pitch_minhash (one pop909 file)"
    sig = benchmark(run)
    benchmark.extra_info.update(impl=impl, kernel="pitch_minhash", size=len(pitches))
    want = fingerprint._pitch_minhash_py(
        pitches, fingerprint.NGRAM, fingerprint._PERM_A, fingerprint._PERM_B
    )
    benchmark.extra_info["equal"] = bool(np.array_equal(sig, want))
    assert benchmark.extra_info["equal"]


@pytest.fixture(scope="module")
def notes() -> tuple:
    from miditok.utils import merge_tracks
    from symusic import Score

    score = Score(str(sorted(POP909.glob("*.mid"))[0]))
    merge_tracks(score)
    n = score.tracks[0].notes.numpy()
    return n["time"], n["pitch"], n["duration"], score.ticks_per_quarter


@pytest.mark.parametrize("impl", ["native", "python"])
def test_fingerprint_notes(benchmark, notes, impl):
    """One file's whole fingerprint: sort, both hashes and the MinHash (about 1,700 notes)."""

    run = fingerprint.fingerprint_notes if impl == "native" else fingerprint._fingerprint_notes_py
    benchmark.group = "fingerprint_notes (one pop909 file)"
    fp = benchmark(run, *notes)
    want = fingerprint._fingerprint_notes_py(*notes)
    benchmark.extra_info.update(impl=impl, kernel="fingerprint_notes", size=fp.notes)
    benchmark.extra_info["equal"] = (fp.exact, fp.transposed) == (
        want.exact,
        want.transposed,
    ) and bool(np.array_equal(fp.minhash, want.minhash))
    assert benchmark.extra_info["equal"]
