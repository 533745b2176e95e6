"""Token ids of whole pieces: the native encoder (REMI + BPE in Rust) against MidiTok.

Both encode the same preprocessed scores (drums dropped, tracks merged, pitches
clamped, as ``build`` does) with the built-in tokenizer on one core; outputs are
compared. Under ``--benchmark-disable`` or ``CI`` only 20 files are encoded.

    python -m pytest benches/bench_encoder.py --benchmark-only
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

POP909 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "pop909"
OUTPUTS: dict[str, list[np.ndarray]] = {}

pytestmark = pytest.mark.skipif(not POP909.is_dir(), reason="../shared/corpora/pop909 absent")


@pytest.fixture(scope="module")
def scores(request):
    from miditok.utils import merge_tracks
    from symusic import Score

    files = sorted(POP909.glob("*.mid"))
    if os.environ.get("CI") or request.config.getoption("benchmark_disable"):
        files = files[:20]
    out = []
    for f in files:
        s = Score(str(f))
        s.tracks = [t for t in s.tracks if not t.is_drum]
        if len(s.tracks) > 1:
            merge_tracks(s)
        out.append(s)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    from varemi.music.tokenizer import load_base_tokenizer

    return load_base_tokenizer("builtin").tokenizer


@pytest.mark.parametrize("impl", ["native", "miditok"])
def test_encode_pop909(benchmark, scores, tokenizer, impl):
    from varemi.music.encoder import TokenEncoder

    encoder = TokenEncoder(tokenizer, impl)
    assert encoder.name == impl

    def run():
        # MidiTok preprocesses in place: every round encodes fresh copies.
        return [encoder.encode(s.copy(), first_only=True)[0] for s in scores]

    benchmark.group = f"encode {len(scores)} pop909 files (one core)"
    rounds = 3 if impl == "native" else 1
    ids = benchmark.pedantic(run, rounds=rounds, iterations=1)
    OUTPUTS[impl] = ids
    other = OUTPUTS.get("miditok" if impl == "native" else "native")
    benchmark.extra_info.update(impl=impl, kernel="encode", size=len(scores))
    if other is not None:
        equal = all(np.array_equal(a, b) for a, b in zip(ids, other, strict=True))
        benchmark.extra_info["equal"] = equal
        assert equal
