"""Label features on pop909: native ``_native.label_features`` against the numpy twin.

Run: ``pytest benches/bench_labels.py --benchmark-only --benchmark-columns=min,mean,rounds``.
Every pop909 file is parsed and turned into note arrays (``varemi.labelling.heuristic.note_arrays``)
once, outside the timing; each benchmark then computes the 19 label features of all
of them on one core (the process is pinned to one CPU):

- ``python``: ``varemi.core.reference.label_features`` (numpy, the specification);
- ``native``: ``varemi._native.label_features`` (Rust, GIL released).

``extra_info`` records ``equal`` (every native feature within 1e-9 relative of the
twin's), the numbers of files and notes. Needs ``../shared/corpora/pop909`` (skipped
otherwise); with ``--benchmark-disable`` or env ``CI`` set, only its first 20 files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from varemi import _native
from varemi.core import reference
from varemi.labelling.heuristic import note_arrays

POP909 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "pop909"
FAST_FILES = 20


@pytest.fixture(scope="module")
def one_core():
    """Pin this process to one CPU for the module's benchmarks."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    yield
    os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def corpus(fast):
    """(note arrays of each file, the twin's features of each file)."""
    if not POP909.is_dir():
        pytest.skip("../shared/corpora/pop909 absent")
    from symusic import Score

    files = sorted(POP909.glob("*.mid"))
    if fast:
        files = files[:FAST_FILES]
    arrays = [note_arrays(Score(path)) for path in files]
    expected = [reference.label_features(*a) for a in arrays]
    return arrays, expected


IMPLS = {"python": reference.label_features, "native": _native.label_features}


@pytest.mark.benchmark(group="label-features-pop909")
@pytest.mark.parametrize("impl", list(IMPLS))
def test_label_features(benchmark, corpus, one_core, impl):
    arrays, expected = corpus
    fn = IMPLS[impl]

    def run():
        return [fn(*a) for a in arrays]

    out = benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info.update(
        impl=impl,
        equal=all(
            np.allclose(o, e, rtol=1e-9, atol=1e-12) for o, e in zip(out, expected, strict=True)
        ),
        files=len(arrays),
        notes=int(sum(len(a.time) for a in arrays)),
    )
    assert benchmark.extra_info["equal"]
