"""Native (Rust) kernels against their pure-Python reference twins.

Run: ``pytest benches/bench_kernels.py --benchmark-only`` (add
``--benchmark-columns=min,mean,rounds --benchmark-sort=name`` for a compact table).
Native and python runs of the same kernel and size share a benchmark ``group``, so the
table shows them side by side; every benchmark records ``impl``, ``kernel``, ``size``
and ``equal`` (whether its output equals the other implementation's) in
``extra_info`` (see ``--benchmark-json``).

With ``--benchmark-disable`` or env ``CI`` set, every case runs once as a plain test
and the 10**7-token cases are skipped (the reference needs seconds for them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from varemi import _native
from varemi.core import reference

IMPLS = {"native": _native, "python": reference}
TOKEN_SIZES = [10**4, 10**6, 10**7]
KEY_SIZES = [10**3, 10**4, 10**5]
NOTES = 10**6
MEAN_FILE_TOKENS = 6000  # a piano piece in REMI+BPE ids: 10**7 tokens ~ 1700 files
SLOW_SIZE = 10**7  # skipped when fast; the reference runs it once (pedantic)
WINDOW_PARAMS = (1024, 512, 256)


# --- inputs (built once per size) -------------------------------------------------------


@functools.cache
def token_batch(n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat int32 tokens and int64 offsets of files of realistic lengths (3000..9000)."""
    rng = np.random.default_rng(n_tokens)
    lengths = rng.integers(MEAN_FILE_TOKENS // 2, MEAN_FILE_TOKENS * 3 // 2, n_tokens // 1000 + 2)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    offsets = np.append(offsets[offsets < n_tokens], n_tokens).astype(np.int64)
    tokens = rng.integers(0, 20_000, n_tokens, dtype=np.int32)
    return tokens, offsets


@functools.cache
def prepend_inputs(n_tokens: int) -> tuple[np.ndarray, ...]:
    tokens, offsets = token_batch(n_tokens)
    file_index, _, start, stop = _native.window_spans(tokens, offsets, *WINDOW_PARAMS)
    rng = np.random.default_rng(1)
    n_files = len(offsets) - 1
    valence = rng.integers(20000, 20009, n_files, dtype=np.int32)
    arousal = rng.integers(20009, 20018, n_files, dtype=np.int32)
    return tokens, file_index, start, stop, valence, arousal


@functools.cache
def split_keys(n_keys: int) -> list[str]:
    composers = ["bach", "chopin", "debussy", "liszt", "satie", "dvořák", "janáček", "grieg"]
    return [f"{composers[i % 8]}/op{i // 8}/movement-{i % 5}-é.mid" for i in range(n_keys)]


@functools.cache
def pitches(n_notes: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    # Piano music around middle C, with a tail outside [21, 108] to move or drop.
    return np.clip(rng.normal(64, 22, n_notes), 0, 127).astype(np.int8)


# --- running and comparing ---------------------------------------------------------------

_outputs: dict[tuple[str, str, Any], Any] = {}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


def run(
    benchmark: Any,
    impl_name: str,
    kernel: str,
    case: Any,
    size: int,
    args: Callable[[], tuple[Any, ...]],
    slow: bool = False,
) -> None:
    """Benchmark ``kernel`` of one implementation and record whether it equals the other."""
    impl: ModuleType = IMPLS[impl_name]
    fn = getattr(impl, kernel)
    call_args = args()
    benchmark.group = f"{kernel} {case}"
    if slow:
        result = benchmark.pedantic(fn, args=call_args, rounds=1, iterations=1)
    else:
        result = benchmark(fn, *call_args)
    _outputs[(kernel, impl_name, case)] = result
    other = "python" if impl_name == "native" else "native"
    if (kernel, other, case) not in _outputs:
        _outputs[(kernel, other, case)] = getattr(IMPLS[other], kernel)(*call_args)
    equal = _same(result, _outputs[(kernel, other, case)])
    if impl_name == "python":  # both sides done: free the memory of this case
        _outputs.pop((kernel, "native", case), None)
        _outputs.pop((kernel, "python", case), None)
    benchmark.extra_info.update(impl=impl_name, kernel=kernel, size=size, equal=equal)
    assert equal, f"{kernel} {case}: native and python outputs differ"


def skip_slow(fast: bool, size: int) -> None:
    if fast and size >= SLOW_SIZE:
        pytest.skip("10**7 tokens: skipped with --benchmark-disable or under CI")


# --- the benchmarks ----------------------------------------------------------------------


@pytest.mark.parametrize("impl_name", list(IMPLS))
@pytest.mark.parametrize("n_tokens", TOKEN_SIZES)
def test_window_spans(benchmark: Any, fast: bool, n_tokens: int, impl_name: str) -> None:
    skip_slow(fast, n_tokens)
    run(
        benchmark,
        impl_name,
        "window_spans",
        f"{n_tokens:.0e} tokens",
        n_tokens,
        lambda: (*token_batch(n_tokens), *WINDOW_PARAMS),
    )


@pytest.mark.parametrize("impl_name", list(IMPLS))
@pytest.mark.parametrize("n_tokens", TOKEN_SIZES)
def test_prepend_conditioning(benchmark: Any, fast: bool, n_tokens: int, impl_name: str) -> None:
    skip_slow(fast, n_tokens)
    run(
        benchmark,
        impl_name,
        "prepend_conditioning",
        f"{n_tokens:.0e} tokens",
        n_tokens,
        lambda: prepend_inputs(n_tokens),
        slow=impl_name == "python" and n_tokens >= 10**6,
    )


@pytest.mark.parametrize("impl_name", list(IMPLS))
@pytest.mark.parametrize("n_keys", KEY_SIZES)
def test_split_hashes(benchmark: Any, n_keys: int, impl_name: str) -> None:
    run(
        benchmark,
        impl_name,
        "split_hashes",
        f"{n_keys:.0e} keys",
        n_keys,
        lambda: (split_keys(n_keys), 42),
    )


@pytest.mark.parametrize("impl_name", list(IMPLS))
@pytest.mark.parametrize("n_keys", KEY_SIZES)
def test_val_mask(benchmark: Any, n_keys: int, impl_name: str) -> None:
    run(
        benchmark,
        impl_name,
        "val_mask",
        f"{n_keys:.0e} keys",
        n_keys,
        lambda: (split_keys(n_keys), 42, 0.9),
    )


@pytest.mark.parametrize("impl_name", list(IMPLS))
@pytest.mark.parametrize("policy", ["clamp", "fold", "drop"])
def test_normalize_pitches(benchmark: Any, fast: bool, policy: str, impl_name: str) -> None:
    n_notes = NOTES // 10 if fast else NOTES
    run(
        benchmark,
        impl_name,
        "normalize_pitches",
        f"{n_notes:.0e} notes {policy}",
        n_notes,
        lambda: (pitches(n_notes), 21, 108, policy),
        slow=impl_name == "python",
    )
