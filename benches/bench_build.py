"""End-to-end benchmarks of ``python -m varemi build`` on ../shared/corpora/pop909.

Each run is a fresh subprocess (interpreter start included), so the pure-Python
reference (``VAREMI_PURE_PYTHON=1``, one worker) and the native build (every core)
are timed the same way. The token cache is off except in the cache benchmarks.
Under ``--benchmark-disable`` or ``CI`` only the first 40 files are built, so the
suite stays cheap while still running every code path.

    python -m pytest benches/bench_build.py --benchmark-only
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

POP909 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "pop909"
RESULTS: dict[str, Path] = {}

pytestmark = pytest.mark.skipif(not POP909.is_dir(), reason="../shared/corpora/pop909 absent")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, request) -> Path:
    quick = os.environ.get("CI") or request.config.getoption("benchmark_disable")
    if not quick:
        return POP909
    folder = tmp_path_factory.mktemp("pop909-subset")
    for f in sorted(POP909.glob("*.mid"))[:40]:
        (folder / f.name).symlink_to(f)
    return folder


def _build(corpus: Path, out: Path, *args: str, pure: bool = False) -> dict:
    env = dict(os.environ)
    env.pop("VAREMI_PURE_PYTHON", None)
    if pure:
        env["VAREMI_PURE_PYTHON"] = "1"
    cmd = [sys.executable, "-m", "varemi", "build", "--midi-dir", str(corpus), "--out", str(out)]
    cmd += ["--tokenizer", "builtin", "--quiet", "--overwrite", *args]
    subprocess.run(cmd, env=env, check=True)
    return json.loads((out / "dataset_info.json").read_text())


def _same_dataset(a: Path, b: Path) -> bool:
    import datasets

    da, db = datasets.load_from_disk(str(a)), datasets.load_from_disk(str(b))
    return all(da[s].data.table.equals(db[s].data.table) for s in ("train", "val"))


@pytest.mark.parametrize("impl", ["native", "python"])
def test_build_pop909(benchmark, corpus, tmp_path_factory, impl):
    """Native kernels on every core against the pure-Python reference on one worker."""
    out = tmp_path_factory.mktemp(f"build-{impl}") / "out"
    workers = str(os.cpu_count() or 1) if impl == "native" else "1"
    benchmark.group = "build end to end (pop909)"
    info = benchmark.pedantic(
        _build,
        args=(corpus, out, "--workers", workers, "--no-cache"),
        kwargs={"pure": impl == "python"},
        rounds=1,
        iterations=1,
    )
    RESULTS[impl] = out
    other = RESULTS.get("native" if impl == "python" else "python")
    benchmark.extra_info.update(
        impl=impl,
        kernel="build",
        size=info["counts"]["files_seen"],
        workers=int(workers),
        timings=info["timings_seconds"],
        peak_rss_mb=info["peak_rss_mb"],
    )
    if other is not None:
        benchmark.extra_info["equal"] = _same_dataset(out, other)
        assert benchmark.extra_info["equal"]


@pytest.mark.parametrize("encoder", ["miditok", "native"])
@pytest.mark.parametrize("phase", ["cold", "warm"])
def test_build_cache(benchmark, corpus, tmp_path_factory, encoder, phase):
    """A rebuild that changes only the windows reuses every file's cached token ids.

    Parametrised by encoder: the cache matters most when MidiTok encodes (the cold
    build is then dominated by tokenisation); with the native encoder the cold build is
    already fast and the warm one is bounded by interpreter start and imports.
    """
    cache = tmp_path_factory.getbasetemp() / f"token-cache-{encoder}"
    out = tmp_path_factory.mktemp(f"cache-{encoder}-{phase}") / "out"
    window = ["--window-size", "1024"] if phase == "cold" else ["--window-size", "512"]
    args = ["--workers", str(os.cpu_count() or 1), "--encoder", encoder]
    benchmark.group = f"token cache, --encoder {encoder} (pop909, every core)"
    info = benchmark.pedantic(
        _build,
        args=(corpus, out, *args, "--cache-dir", str(cache), *window),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(impl=phase, kernel="build", cache=info["cache"])
    if phase == "warm":
        reference = tmp_path_factory.mktemp(f"cache-ref-{encoder}") / "out"
        _build(corpus, reference, *args, "--no-cache", *window)
        benchmark.extra_info["equal"] = _same_dataset(out, reference)
        assert benchmark.extra_info["equal"]
        assert info["cache"].get("hit", 0) == info["counts"]["files_seen"]


SEED = POP909.parents[1] / "tools" / "seed_baseline.py"


def _seed(corpus: Path, out: Path, labels: Path, tokenizer: Path) -> str:
    cmd = [sys.executable, str(SEED), "--midi-dir", str(corpus), "--out", str(out)]
    cmd += ["--tokenizer", str(tokenizer), "--labels", str(labels), "--multitrack", "merge"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def _rows(folder: Path) -> dict[tuple[str, int], tuple[int, ...]]:
    """Every example by (source_file, window_idx), whichever split holds it."""
    import datasets

    d = datasets.load_from_disk(str(folder))
    rows = {}
    for s in d:
        t = d[s].select_columns(["source_file", "window_idx", "input_ids"]).to_dict()
        for f, k, ids in zip(t["source_file"], t["window_idx"], t["input_ids"], strict=True):
            rows[f, k] = tuple(ids)
    return rows


@pytest.mark.skipif(not SEED.is_file(), reason="../shared/tools/seed_baseline.py absent")
@pytest.mark.parametrize("impl", ["varemi", "seed"])
def test_build_vs_seed(benchmark, corpus, tmp_path_factory, impl):
    """The whole varemi build (its own labels, duplicate groups, every core) against the
    seed-style pipeline of ../shared/tools (one process, labels read from varemi's CSV).

    The seed gets varemi's labels for free, so the ratio understates varemi's lead.
    ``equal``: the same examples by (source_file, window_idx) in both (splits may
    differ where varemi groups duplicates).
    """
    out = tmp_path_factory.mktemp(f"seed-cmp-{impl}") / "out"
    benchmark.group = "whole build vs seed pipeline (pop909)"
    if impl == "varemi":
        args = ("--workers", str(os.cpu_count() or 1), "--no-cache")
        info = benchmark.pedantic(_build, args=(corpus, out, *args), rounds=1, iterations=1)
        benchmark.extra_info.update(impl="varemi", timings=info["timings_seconds"])
        RESULTS["seed-cmp-varemi"] = out
        return
    varemi_out = RESULTS.get("seed-cmp-varemi")
    if varemi_out is None:
        pytest.skip("needs the varemi half of this benchmark first")
    tokenizer = Path(__import__("varemi").__file__).parent / "data" / "builtin_tokenizer.json"
    labels = varemi_out / "labels.csv"
    last = benchmark.pedantic(_seed, args=(corpus, out, labels, tokenizer), rounds=1, iterations=1)
    benchmark.extra_info.update(impl="seed", summary=last, workers=1)
    benchmark.extra_info["equal"] = _rows(out) == _rows(varemi_out)
