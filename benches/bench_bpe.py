"""MidiTok's BPE step on pop909: native ``NativeBPE.encode`` against ``encode_token_ids``.

Run: ``pytest benches/bench_bpe.py --benchmark-only --benchmark-columns=min,mean,rounds``.
The base (pre-BPE) sequences of every pop909 file (one per track, builtin tokenizer) are
computed once; each benchmark then runs the BPE step alone over all of them, on one
core (the process is pinned to one CPU and Hugging Face's thread pool is off):

- ``miditok``: ``tokenizer.encode_token_ids(seq)`` per sequence, as ``tokenizer.encode``
  does it (on fresh copies made outside the timing);
- ``native-cold``: ``NativeBPE.encode(ids)`` per sequence, chunk cache emptied before
  each round (what one build over the corpus costs);
- ``native-warm``: the same with the cache left from the previous round.

``extra_info`` records ``equal`` (every native output equals MidiTok's), the numbers of
sequences and tokens. Needs ``../shared/corpora/pop909`` (skipped otherwise); with
``--benchmark-disable`` or env ``CI`` set, only its first 20 files are used.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from varemi.music.encoder.bpe import NativeBPE
from varemi.music.tokenizer import builtin_tokenizer_path

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
    """(tokenizer, base TokSequences, their ids as int32 arrays, MidiTok's BPE ids)."""
    if not POP909.is_dir():
        pytest.skip("../shared/corpora/pop909 absent")
    from miditok import REMI
    from symusic import Score

    tokenizer = REMI(params=builtin_tokenizer_path())
    files = sorted(POP909.glob("*.mid"))
    if fast:
        files = files[:FAST_FILES]
    seqs = []
    for path in files:
        result = tokenizer.encode(Score(path), encode_ids=False)
        seqs.extend(result if isinstance(result, list) else [result])
    arrays = [np.array(s.ids, dtype=np.int32) for s in seqs]
    expected = []
    for fresh in fresh_copies(seqs):
        tokenizer.encode_token_ids(fresh)
        expected.append(list(fresh.ids))
    return tokenizer, seqs, arrays, expected


def fresh_copies(seqs):
    return [replace(s, ids=list(s.ids), bytes="", are_ids_encoded=False) for s in seqs]


def record(benchmark, impl: str, outputs, corpus) -> None:
    _, seqs, arrays, expected = corpus
    benchmark.extra_info.update(
        impl=impl,
        equal=[list(o) for o in outputs] == expected,
        sequences=len(seqs),
        base_tokens=int(sum(len(a) for a in arrays)),
        bpe_tokens=int(sum(len(e) for e in expected)),
    )
    assert benchmark.extra_info["equal"]


@pytest.mark.benchmark(group="bpe-pop909")
def test_miditok_encode_token_ids(benchmark, corpus, one_core):
    tokenizer, seqs, _, _ = corpus

    def run(copies):
        for seq in copies:
            tokenizer.encode_token_ids(seq)
        return copies

    out = benchmark.pedantic(run, setup=lambda: ((fresh_copies(seqs),), {}), rounds=3, iterations=1)
    record(benchmark, "miditok", [s.ids for s in out], corpus)


@pytest.mark.benchmark(group="bpe-pop909")
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_native_encode(benchmark, corpus, one_core, cache):
    tokenizer, _, arrays, _ = corpus
    native = NativeBPE.from_tokenizer(tokenizer)

    def setup():
        if cache == "cold":
            native._model.clear_cache()
        return (), {}

    def run():
        return [native.encode(a) for a in arrays]

    if cache == "warm":
        run()
    out = benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    record(benchmark, f"native-{cache}", out, corpus)
    benchmark.extra_info["cached_chunks"] = native._model.cache_size
