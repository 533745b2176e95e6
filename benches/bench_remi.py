"""REMI base encoding of ../shared/corpora/pop909: native encoder against MidiTok.

Both sides encode the same parsed scores (parsing is not timed), on one core:
``NativeREMI.encode_base(score)`` against ``tokenizer.encode(score, encode_ids=False)``
with the builtin tokenizer (the Maestro-REMI-bpe20k configuration). The two share the
benchmark group ``remi-pop909``; each records ``impl``, ``files`` and ``equal`` (whether
every file's ids equal the other implementation's) in ``extra_info``.

    python -m pytest benches/bench_remi.py --benchmark-only --benchmark-columns=min,mean,rounds

With ``--benchmark-disable`` or env ``CI`` set, only the first 20 files are encoded,
once each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

POP909 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "pop909"
QUICK_FILES = 20

pytestmark = pytest.mark.skipif(not POP909.is_dir(), reason="../shared/corpora/pop909 absent")


@pytest.fixture(scope="module")
def setup(fast: bool):
    from symusic import Score

    from varemi.music.encoder.remi import NativeREMI
    from varemi.music.tokenizer import load_base_tokenizer

    files = sorted(POP909.glob("*.mid"))
    if fast:
        files = files[:QUICK_FILES]
    scores = [Score(f) for f in files]
    tokenizer = load_base_tokenizer("builtin").tokenizer
    native = NativeREMI.from_tokenizer(tokenizer)
    return tokenizer, native, scores


def miditok_encode(tokenizer, scores) -> list[list[np.ndarray]]:
    out = []
    for score in scores:
        result = tokenizer.encode(score, encode_ids=False)
        out.append([np.asarray(s.ids, dtype=np.int32) for s in result])
    return out


def native_encode(native, scores) -> list[list[np.ndarray]]:
    return [native.encode_base(score) for score in scores]


def same(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("impl", ["native", "miditok"])
def test_remi_encode_pop909(benchmark, setup, fast: bool, impl: str) -> None:
    tokenizer, native, scores = setup
    reference = miditok_encode(tokenizer, [s.copy() for s in scores])
    if impl == "native":

        def run():
            return native_encode(native, scores)
    else:

        def run():
            return miditok_encode(tokenizer, scores)

    benchmark.group = "remi-pop909"
    if fast:
        result = benchmark.pedantic(run, rounds=1, iterations=1)
    else:
        result = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    equal = same(result, reference)
    benchmark.extra_info.update(impl=impl, files=len(scores), equal=equal)
    assert equal
    assert native.fallbacks == 0
