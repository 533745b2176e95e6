"""The kernels: native (Rust) and reference (pure Python), held equal.

Hand-computed cases and every refused input run on both implementations through the
``impl`` fixture; property tests compare the two on random inputs and on the edges;
a few tests go through the public API, ``varemi.core.kernels``.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
import sys
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from varemi import _native as native
from varemi._base.errors import (
    ConditioningError,
    OffsetsError,
    PitchRangeError,
    SplitParameterError,
    VaremiError,
    WindowParameterError,
)
from varemi.core import kernels, reference

PITCH_DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64]
KERNELS = ["normalize_pitches", "window_spans", "prepend_conditioning", "split_hashes", "val_mask"]

# The `impl` fixture is a plain module: safe to share between hypothesis examples.
with_impl = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- helpers --------------------------------------------------------------------------


def i32(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def assert_same_array(got: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype, shape and values (and a plain, contiguous, 1-D ndarray)."""
    assert type(got) is np.ndarray
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.ndim == 1 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected, strict=True)


def assert_same_arrays(got: tuple, expected: tuple) -> None:
    assert isinstance(got, tuple) and len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert_same_array(g, e)


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The result of a call, or the exception it raised; a Rust panic fails the test."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared by the caller
        return exc
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            pytest.fail(f"a Rust panic reached Python: {exc!r}")
        raise


def assert_same_outcome(kernel: str, *args: Any, **kwargs: Any) -> Any:
    """Native and reference give equal arrays, or raise the same exception class."""
    got = outcome(getattr(native, kernel), *args, **kwargs)
    expected = outcome(getattr(reference, kernel), *args, **kwargs)
    if isinstance(expected, Exception):
        assert type(got) is type(expected), (got, expected)
    else:
        assert not isinstance(got, Exception), got
        if isinstance(expected, tuple):
            assert_same_arrays(got, expected)
        else:
            assert_same_array(got, expected)
    return expected


def blake(key: str, seed: int) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=seed.to_bytes(8, "little"))
    return int.from_bytes(digest.digest(), "little")


# --- the module itself ----------------------------------------------------------------


def test_native_module_metadata() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", native.__version__)
    assert native.build_profile in ("release", "debug")
    cargo = Path(__file__).resolve().parents[1] / "Cargo.toml"
    if cargo.exists():
        version = re.search(r'^version = "([^"]+)"', cargo.read_text(), re.MULTILINE)
        assert version is not None and native.__version__ == version.group(1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_native_signatures_match_reference(kernel: str) -> None:
    got = inspect.signature(getattr(native, kernel))
    expected = inspect.signature(getattr(reference, kernel))
    assert list(got.parameters) == list(expected.parameters)
    for name, param in expected.parameters.items():
        assert got.parameters[name].default == param.default, name


# --- pitch normalisation (contract 3) ---------------------------------------------------


@pytest.mark.parametrize("dtype", PITCH_DTYPES)
def test_clamp_hand_computed(impl: ModuleType, dtype: type) -> None:
    pitches = np.array([0, 20, 21, 60, 108, 109, 127], dtype=dtype)
    out, keep = impl.normalize_pitches(pitches, 21, 108, "clamp")
    assert_same_array(out, np.array([21, 21, 21, 60, 108, 108, 108], dtype=dtype))
    assert_same_array(keep, np.ones(7, dtype=bool))
    assert not np.shares_memory(out, pitches)


@pytest.mark.parametrize("dtype", PITCH_DTYPES)
def test_fold_hand_computed(impl: ModuleType, dtype: type) -> None:
    pitches = np.array([0, 20, 21, 109, 120, 127], dtype=dtype)
    out, keep = impl.normalize_pitches(pitches, 21, 108, "fold")
    assert_same_array(out, np.array([24, 32, 21, 97, 108, 103], dtype=dtype))
    assert keep.all()


def test_fold_far_outside_the_range(impl: ModuleType) -> None:
    out, _ = impl.normalize_pitches(i64(-1000, 1000, 255), 60, 71, "fold")
    assert_same_array(out, i64(68, 64, 63))
    out, _ = impl.normalize_pitches(np.array([-128, 127], dtype=np.int8), 0, 11, "fold")
    assert_same_array(out, np.array([4, 7], dtype=np.int8))


@pytest.mark.parametrize("dtype", PITCH_DTYPES)
def test_drop_hand_computed(impl: ModuleType, dtype: type) -> None:
    pitches = np.array([20, 21, 60, 108, 109], dtype=dtype)
    out, keep = impl.normalize_pitches(pitches, 21, 108, "drop")
    assert_same_array(out, pitches)
    assert_same_array(keep, np.array([False, True, True, True, False]))


def test_pitch_defaults_are_clamp_21_108(impl: ModuleType) -> None:
    out, keep = impl.normalize_pitches(np.array([0, 64, 127], dtype=np.uint8))
    assert_same_array(out, np.array([21, 64, 108], dtype=np.uint8))
    assert keep.all()


@pytest.mark.parametrize("policy", reference.PITCH_POLICIES)
@pytest.mark.parametrize("dtype", PITCH_DTYPES)
def test_pitch_empty_input(impl: ModuleType, policy: str, dtype: type) -> None:
    out, keep = impl.normalize_pitches(np.array([], dtype=dtype), 21, 108, policy)
    assert_same_array(out, np.array([], dtype=dtype))
    assert_same_array(keep, np.array([], dtype=bool))


@pytest.mark.parametrize(
    ("low", "high", "policy"),
    [
        (108, 21, "clamp"),  # low > high
        (-1, 108, "clamp"),  # outside 0..127
        (21, 128, "drop"),
        (-(2**70), 2**70, "clamp"),  # huge ints: a PitchRangeError, not an OverflowError
        (2**70, 2**71, "clamp"),
        (60, 70, "fold"),  # narrower than an octave
        (60, 60, "fold"),
        (21, 108, "Clamp"),  # unknown policy
        (21, 108, ""),
        (21, 108, None),
        (21, 108, 1),
        (108, 21, "nope"),  # the policy is checked first; same class either way
    ],
)
def test_pitch_bad_parameters(impl: ModuleType, low: int, high: int, policy: Any) -> None:
    with pytest.raises(PitchRangeError):
        impl.normalize_pitches(np.array([60], dtype=np.int16), low, high, policy)


@pytest.mark.parametrize(
    "pitches",
    [
        np.array([60.0]),
        np.array([60], dtype=np.uint16),
        np.array([60], dtype=np.uint64),
        np.array([True]),
        np.array([60], dtype=">i4"),  # byte-swapped int32 is not int32
        np.array([60], dtype=object),
        [60, 61],
        None,
        np.zeros((2, 2), dtype=np.int8),
        np.int8(60),
        np.array(60, dtype=np.int8),
    ],
    ids=repr,
)
def test_pitch_wrong_arrays(impl: ModuleType, pitches: Any) -> None:
    with pytest.raises(TypeError, match="pitches"):
        impl.normalize_pitches(pitches, 21, 108, "clamp")


def test_pitch_type_checked_before_parameters(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.normalize_pitches(np.array([1.0]), 108, 21, "nope")


def pitch_arrays(dtype: type, fold: bool) -> st.SearchStrategy[np.ndarray]:
    info = np.iinfo(dtype)
    # The reference folds one octave per loop turn: keep its loops short.
    lo, hi = (max(info.min, -3000), min(info.max, 3000)) if fold else (info.min, info.max)
    return hnp.arrays(dtype, st.integers(0, 300), elements=st.integers(lo, hi))


@st.composite
def pitch_cases(draw: st.DrawFn) -> tuple[np.ndarray, int, int, str]:
    policy = draw(st.sampled_from(reference.PITCH_POLICIES))
    dtype = draw(st.sampled_from(PITCH_DTYPES))
    low = draw(st.integers(0, 116 if policy == "fold" else 127))
    high = draw(st.integers(low + 11 if policy == "fold" else low, 127))
    return draw(pitch_arrays(dtype, policy == "fold")), low, high, policy


@given(pitch_cases())
def test_pitches_native_equals_reference(case: tuple[np.ndarray, int, int, str]) -> None:
    pitches, low, high, policy = case
    out, keep = assert_same_outcome("normalize_pitches", pitches, low, high, policy)
    kept = out[keep].astype(np.int64)
    assert ((kept >= low) & (kept <= high)).all()
    if policy == "fold":
        assert ((pitches.astype(np.int64) - out.astype(np.int64)) % 12 == 0).all()


@given(
    low=st.one_of(st.integers(-5, 132), st.integers(-(2**80), 2**80)),
    high=st.one_of(st.integers(-5, 132), st.integers(-(2**80), 2**80)),
    policy=st.sampled_from(["clamp", "fold", "drop", "CLAMP", "", "fold "]),
    dtype=st.sampled_from(PITCH_DTYPES),
)
def test_pitch_parameters_native_equals_reference(
    low: int, high: int, policy: str, dtype: type
) -> None:
    pitches = np.array([0, 11, 60, 100, 120, 127], dtype=dtype)
    assert_same_outcome("normalize_pitches", pitches, low, high, policy)


@given(st.integers(-(2**63), 2**63 - 1), st.integers(0, 116))
def test_native_fold_of_any_int64(pitch: int, low: int) -> None:
    # The reference would loop 2**59 times; the native fold is arithmetic.
    out, keep = native.normalize_pitches(i64(pitch), low, low + 11, "fold")
    assert low <= out[0] <= low + 11 and keep[0]
    assert (pitch - int(out[0])) % 12 == 0


# --- windows (contract 5) ---------------------------------------------------------------


def spans(*windows: tuple[int, int, int, int]) -> tuple[np.ndarray, ...]:
    """Expected (file_index, window_index, start, stop) from (file, k, start, stop) rows."""
    cols = list(zip(*windows, strict=True)) if windows else [(), (), (), ()]
    return (i64(*cols[0]), i32(*cols[1]), i64(*cols[2]), i64(*cols[3]))


@pytest.mark.parametrize(
    ("n", "params", "expected"),
    [
        # The docs/contracts.md example: n=1500, W=1024, S=512, min=256.
        (1500, (1024, 512, 256), [(0, 1024), (512, 1500)]),
        # Exactly one window: iteration stops at once when i + W >= n.
        (1024, (1024, 512, 256), [(0, 1024)]),
        # A length that is an exact multiple of the stride.
        (2048, (1024, 512, 256), [(0, 1024), (512, 1536), (1024, 2048)]),
        (1300, (1024, 512, 256), [(0, 1024), (512, 1300)]),
        # A last window shorter than the window size, kept.
        (1600, (1024, 512, 256), [(0, 1024), (512, 1536), (1024, 1600)]),
        # A last window too short to keep.
        (1100, (1024, 1000, 200), [(0, 1024)]),
        (1792, (1024, 512, 256), [(0, 1024), (512, 1536), (1024, 1792)]),
        # Shorter than min_window_tokens: nothing; exactly min_window_tokens: one window.
        (255, (1024, 512, 256), []),
        (256, (1024, 512, 256), [(0, 256)]),
        (0, (1024, 512, 256), []),
        # Stride larger than the window: tokens between windows are skipped.
        (25, (4, 10, 1), [(0, 4), (10, 14), (20, 24)]),
        (24, (4, 10, 4), [(0, 4), (10, 14), (20, 24)]),
        # Window of 1.
        (3, (1, 1, 1), [(0, 1), (1, 2), (2, 3)]),
        (5, (1, 2, 1), [(0, 1), (2, 3), (4, 5)]),
        # min_window_tokens == window_size keeps only full windows.
        (10, (4, 3, 4), [(0, 4), (3, 7), (6, 10)]),
        (11, (4, 3, 4), [(0, 4), (3, 7), (6, 10)]),
    ],
)
def test_windows_of_one_file(
    impl: ModuleType, n: int, params: tuple[int, int, int], expected: list[tuple[int, int]]
) -> None:
    got = impl.window_spans(np.zeros(n, np.int32), i64(0, n), *params)
    assert_same_arrays(got, spans(*[(0, k, a, b) for k, (a, b) in enumerate(expected)]))


def test_windows_of_several_files(impl: ModuleType) -> None:
    # Files of 1500, 0, 200 and 1300 tokens.
    got = impl.window_spans(np.zeros(3000, np.int32), i64(0, 1500, 1500, 1700, 3000))
    expected = spans((0, 0, 0, 1024), (0, 1, 512, 1500), (3, 0, 1700, 2724), (3, 1, 2212, 3000))
    assert_same_arrays(got, expected)


def test_windows_offsets_need_not_start_at_zero_or_cover_all_tokens(impl: ModuleType) -> None:
    got = impl.window_spans(np.zeros(20, np.int32), i64(5, 9, 12), 3, 2, 2)
    assert_same_arrays(got, spans((0, 0, 5, 8), (0, 1, 7, 9), (1, 0, 9, 12)))


def test_windows_empty_batch(impl: ModuleType) -> None:
    assert_same_arrays(impl.window_spans(i32(), i64(0)), spans())
    assert_same_arrays(impl.window_spans(i32(1, 2, 3), i64(3)), spans())


def test_windows_defaults(impl: ModuleType) -> None:
    got = impl.window_spans(np.zeros(1500, np.int32), i64(0, 1500))
    assert_same_arrays(got, spans((0, 0, 0, 1024), (0, 1, 512, 1500)))


@pytest.mark.parametrize(
    "params",
    [
        {"window_size": 0},
        {"window_size": -1},
        {"window_size": -(2**70)},
        {"stride": 0},
        {"stride": -512},
        {"stride": -(2**64)},
        {"min_window_tokens": 0},
        {"min_window_tokens": -3},
        {"min_window_tokens": 1025},
        {"window_size": 8, "min_window_tokens": 9},
        {"window_size": 2**70, "min_window_tokens": 2**70 + 1},  # exact beyond int64
        {"window_size": 2**63 - 1, "min_window_tokens": 2**63},
        {"window_size": 0, "stride": 0, "min_window_tokens": 0},
    ],
)
def test_windows_bad_parameters(impl: ModuleType, params: dict[str, int]) -> None:
    with pytest.raises(WindowParameterError):
        impl.window_spans(np.zeros(10, np.int32), i64(0, 10), **params)


@pytest.mark.parametrize(
    "offsets",
    [
        i64(),  # empty
        i64(-1, 5),  # negative
        i64(-(2**63)),
        i64(0, 5, 4),  # decreasing
        i64(0, 5, 5, 3, 10),
        i64(0, 11),  # past the end of the 10 tokens
        i64(11),
        i64(0, 2**63 - 1),
    ],
    ids=repr,
)
def test_windows_bad_offsets(impl: ModuleType, offsets: np.ndarray) -> None:
    with pytest.raises(OffsetsError):
        impl.window_spans(np.zeros(10, np.int32), offsets, 4, 2, 1)


def test_windows_parameters_checked_before_offsets(impl: ModuleType) -> None:
    with pytest.raises(WindowParameterError):
        impl.window_spans(i32(), i64(), 0, 1, 1)


@pytest.mark.parametrize(
    ("tokens", "offsets"),
    [
        (np.zeros(4, np.int64), i64(0, 4)),
        (np.zeros(4, np.uint32), i64(0, 4)),
        (np.zeros(4, np.float32), i64(0, 4)),
        (np.zeros(4, ">i4"), i64(0, 4)),
        ([0, 0, 0, 0], i64(0, 4)),
        (np.zeros((2, 2), np.int32), i64(0, 4)),
        (np.zeros(4, np.int32), np.array([0, 4], dtype=np.int32)),
        (np.zeros(4, np.int32), np.array([0, 4], dtype=np.uint64)),
        (np.zeros(4, np.int32), [0, 4]),
        (np.zeros(4, np.int32), i64(0, 4).reshape(1, 2)),
        (np.zeros(4, np.int32), np.int64(4)),
    ],
    ids=repr,
)
def test_windows_wrong_arrays(impl: ModuleType, tokens: Any, offsets: Any) -> None:
    with pytest.raises(TypeError, match="tokens|offsets"):
        impl.window_spans(tokens, offsets, 4, 2, 1)
    with pytest.raises(TypeError):  # the dtype is checked before the parameters
        impl.window_spans(tokens, offsets, 0, 0, 0)


@st.composite
def batches(draw: st.DrawFn, max_files: int = 8, max_len: int = 90) -> tuple[np.ndarray, ...]:
    """Flat int32 tokens and int64 offsets of a random batch of files."""
    lengths = draw(st.lists(st.integers(0, max_len), max_size=max_files))
    lead = draw(st.sampled_from([0, 0, 0, 3]))  # offsets[0] may be past 0
    tail = draw(st.sampled_from([0, 0, 0, 2]))  # tokens after the last file
    offsets = np.cumsum([lead, *lengths], dtype=np.int64)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 20_000, int(offsets[-1]) + tail, dtype=np.int32)
    return tokens, offsets


@st.composite
def window_params(draw: st.DrawFn) -> tuple[int, int, int]:
    window_size = draw(st.integers(1, 40))
    stride = draw(st.one_of(st.integers(1, 50), st.sampled_from([window_size, 2 * window_size])))
    min_window_tokens = draw(st.one_of(st.integers(1, window_size), st.just(window_size)))
    return window_size, stride, min_window_tokens


@given(batches(), window_params())
def test_windows_native_equals_reference(
    batch: tuple[np.ndarray, np.ndarray], params: tuple[int, int, int]
) -> None:
    tokens, offsets = batch
    window_size, stride, min_window_tokens = params
    file_index, window_index, start, stop = assert_same_outcome(
        "window_spans", tokens, offsets, *params
    )
    # Independent invariants of contract 5.
    assert ((stop - start >= min_window_tokens) & (stop - start <= window_size)).all()
    assert (start >= offsets[file_index]).all() and (stop <= offsets[file_index + 1]).all()
    assert ((start - offsets[file_index]) == window_index.astype(np.int64) * stride).all()


@given(
    st.lists(st.integers(0, 60), max_size=5),
    st.integers(1, 12),
    st.integers(1, 6),
)
def test_windows_lengths_that_are_multiples_of_the_stride(
    multiples: list[int], stride: int, window_factor: int
) -> None:
    window_size = stride * window_factor
    offsets = np.cumsum([0, *(m * stride for m in multiples)], dtype=np.int64)
    tokens = np.zeros(int(offsets[-1]), np.int32)
    for min_window_tokens in {1, max(1, window_size // 2), window_size}:
        assert_same_outcome("window_spans", tokens, offsets, window_size, stride, min_window_tokens)


@given(
    batches(max_files=4, max_len=40),
    st.lists(
        st.one_of(st.integers(-3, 45), st.integers(-(2**80), 2**80), st.just(2**63 - 1)),
        min_size=3,
        max_size=3,
    ),
)
def test_window_parameters_native_equals_reference(
    batch: tuple[np.ndarray, np.ndarray], params: list[int]
) -> None:
    tokens, offsets = batch
    assert_same_outcome("window_spans", tokens, offsets, *params)


@given(
    st.lists(st.integers(-5, 30), max_size=6).map(lambda v: np.array(v, dtype=np.int64)),
    st.integers(0, 30),
)
def test_window_offsets_native_equals_reference(offsets: np.ndarray, n_tokens: int) -> None:
    assert_same_outcome("window_spans", np.zeros(n_tokens, np.int32), offsets, 4, 3, 2)


# --- conditioning prepending --------------------------------------------------------------


def test_prepend_hand_computed(impl: ModuleType) -> None:
    tokens = i32(10, 11, 12, 13, 14, 15)
    values, offsets = impl.prepend_conditioning(
        tokens, i64(0, 1, 1), i64(0, 2, 6), i64(3, 5, 6), i32(100, 101), i32(200, 201)
    )
    assert_same_array(values, i32(100, 200, 10, 11, 12, 101, 201, 12, 13, 14, 101, 201))
    assert_same_array(offsets, i64(0, 5, 10, 12))


def test_prepend_no_windows(impl: ModuleType) -> None:
    values, offsets = impl.prepend_conditioning(i32(1, 2), i64(), i64(), i64(), i32(5), i32(6))
    assert_same_array(values, i32())
    assert_same_array(offsets, i64(0))
    values, offsets = impl.prepend_conditioning(i32(), i64(), i64(), i64(), i32(), i32())
    assert_same_array(values, i32())
    assert_same_array(offsets, i64(0))


def test_prepend_after_window_spans(impl: ModuleType) -> None:
    tokens = np.arange(3000, dtype=np.int32)
    offsets = i64(0, 1500, 1500, 1700, 3000)
    file_index, _, start, stop = impl.window_spans(tokens, offsets)
    ids = np.arange(20000, 20004, dtype=np.int32)
    values, example_offsets = impl.prepend_conditioning(
        tokens, file_index, start, stop, ids, ids + 9
    )
    assert_same_array(example_offsets, i64(0, 1026, 2016, 3042, 3832))
    assert values[0:2].tolist() == [20000, 20009] and values[1026:1028].tolist() == [20000, 20009]
    assert values[2016:2018].tolist() == [20003, 20012]
    assert_same_array(values[2:1026], tokens[0:1024])
    assert_same_array(values[3044:], tokens[2212:3000])


@pytest.mark.parametrize(
    ("file_index", "start", "stop", "valence", "arousal"),
    [
        (i64(0, 0), i64(0), i64(1), i32(5), i32(6)),  # span lengths differ
        (i64(0), i64(0, 1), i64(1), i32(5), i32(6)),
        (i64(0), i64(0), i64(), i32(5), i32(6)),
        (i64(0), i64(0), i64(1), i32(5, 5), i32(6)),  # id lengths differ
        (i64(), i64(), i64(), i32(), i32(6)),
        (i64(1), i64(0), i64(1), i32(5), i32(6)),  # no ids for the file
        (i64(-1), i64(0), i64(1), i32(5), i32(6)),
        (i64(0), i64(0), i64(1), i32(), i32()),
        (i64(0), i64(2), i64(1), i32(5), i32(6)),  # start > stop
        (i64(0), i64(-1), i64(1), i32(5), i32(6)),  # outside the tokens
        (i64(0), i64(0), i64(4), i32(5), i32(6)),
        (i64(0), i64(-(2**63)), i64(2**63 - 1), i32(5), i32(6)),
        (i64(2**63 - 1), i64(0), i64(1), i32(5), i32(6)),
        (i64(0, 0), i64(0, 0), i64(1, 9), i32(5), i32(6)),  # a later bad window
    ],
)
def test_prepend_bad_inputs(
    impl: ModuleType,
    file_index: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    valence: np.ndarray,
    arousal: np.ndarray,
) -> None:
    with pytest.raises(ConditioningError):
        impl.prepend_conditioning(i32(1, 2, 3), file_index, start, stop, valence, arousal)


PREPEND_ARGS = ["tokens", "file_index", "start", "stop", "valence_ids", "arousal_ids"]


@pytest.mark.parametrize("position", range(6), ids=PREPEND_ARGS)
@pytest.mark.parametrize(
    "make_wrong",
    [
        lambda a: a.astype(np.int64 if a.dtype == np.int32 else np.int32),
        lambda a: a.astype(np.float64),
        lambda a: a.reshape(1, -1),
        lambda a: a.tolist(),
    ],
    ids=["other-int", "float", "2-D", "list"],
)
def test_prepend_wrong_arrays(
    impl: ModuleType, position: int, make_wrong: Callable[[np.ndarray], Any]
) -> None:
    args: list[Any] = [i32(1, 2, 3), i64(0), i64(0), i64(2), i32(5), i32(6)]
    args[position] = make_wrong(args[position])
    with pytest.raises(TypeError, match=PREPEND_ARGS[position]):
        impl.prepend_conditioning(*args)


def test_prepend_types_checked_before_lengths(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.prepend_conditioning(i32(1), i64(0, 0), i64(0), i64(0), i32(5), i64(6))


@given(batches(), window_params(), st.integers(0, 2**32 - 1))
def test_prepend_native_equals_reference(
    batch: tuple[np.ndarray, np.ndarray], params: tuple[int, int, int], seed: int
) -> None:
    tokens, offsets = batch
    file_index, _, start, stop = native.window_spans(tokens, offsets, *params)
    rng = np.random.default_rng(seed)
    n_files = len(offsets) - 1
    valence = rng.integers(20000, 20009, n_files, dtype=np.int32)
    arousal = rng.integers(20009, 20018, n_files, dtype=np.int32)
    values, example_offsets = assert_same_outcome(
        "prepend_conditioning", tokens, file_index, start, stop, valence, arousal
    )
    assert len(example_offsets) == len(start) + 1 and example_offsets[0] == 0
    assert example_offsets[-1] == len(values) == int((stop - start).sum()) + 2 * len(start)


@given(st.data())
def test_prepend_arbitrary_spans_native_equals_reference(data: st.DataObject) -> None:
    n_tokens = data.draw(st.integers(0, 12))
    n_files = data.draw(st.integers(0, 3))
    n_windows = data.draw(st.integers(0, 5))
    ints = st.lists(st.integers(-2, n_tokens + 2), min_size=n_windows, max_size=n_windows)
    file_index = data.draw(
        st.lists(st.integers(-1, n_files), min_size=n_windows, max_size=n_windows)
    )
    assert_same_outcome(
        "prepend_conditioning",
        np.arange(n_tokens, dtype=np.int32),
        np.array(file_index, dtype=np.int64),
        np.array(data.draw(ints), dtype=np.int64),
        np.array(data.draw(ints), dtype=np.int64),
        np.arange(n_files, dtype=np.int32) + 100,
        np.arange(data.draw(st.sampled_from([n_files, n_files, n_files + 1])), dtype=np.int32),
    )


# --- split hashing (contract 6) ---------------------------------------------------------

PATHS = [
    "",
    "a.mid",
    "a/b.mid",
    "dossier/été/ünïcode 🎹.mid",
    "日本語/曲.midi",
    "x" * 1000,
    "with space/and\ttab.mid",
    "\x00",
]

keys_strategy = st.lists(
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40), max_size=30
)
seeds = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 42, 2**63, 2**64 - 1]))


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32, 2**64 - 1])
def test_split_hashes_are_keyed_blake2b(impl: ModuleType, seed: int) -> None:
    got = impl.split_hashes(PATHS, seed)
    assert_same_array(got, np.array([blake(k, seed) for k in PATHS], dtype=np.uint64))


def test_split_hash_known_value(impl: ModuleType) -> None:
    assert impl.split_hashes(["a/b.mid"], 42).tolist() == [0xBBA23C6AFC8A2838]
    assert impl.split_hashes(["a/b.mid"]).tolist() == [0xBBA23C6AFC8A2838]  # seed 42


@with_impl
@given(keys=keys_strategy, seed=seeds)
def test_split_hashes_random_keys(impl: ModuleType, keys: list[str], seed: int) -> None:
    got = impl.split_hashes(keys, seed)
    assert_same_array(got, np.array([blake(k, seed) for k in keys], dtype=np.uint64))


@with_impl
@given(
    keys=keys_strategy,
    seed=seeds,
    train_split=st.one_of(
        st.floats(0, 1, exclude_min=True),
        st.sampled_from([1.0, 0.9, 0.5, 1e-300, 5e-324, 1 - 2**-53]),
    ),
)
def test_val_mask_threshold(
    impl: ModuleType, keys: list[str], seed: int, train_split: float
) -> None:
    threshold = math.floor((1 - train_split) * 2**64)
    expected = np.array([blake(k, seed) < threshold for k in keys], dtype=bool)
    assert_same_array(impl.val_mask(keys, seed, train_split), expected)


def test_val_mask_edges(impl: ModuleType) -> None:
    keys = [f"{i}.mid" for i in range(200)]
    assert not impl.val_mask(keys, 42, 1.0).any()
    # 1 - 1e-300 == 1.0 in float64: the threshold is 2**64 and every file is in val.
    assert impl.val_mask(keys, 42, 1e-300).all()
    assert_same_array(impl.val_mask([], 42, 0.9), np.array([], dtype=bool))
    assert_same_array(impl.split_hashes([], 42), np.array([], dtype=np.uint64))
    in_val = int(impl.val_mask(keys).sum())  # defaults: seed 42, train_split 0.9
    assert 5 <= in_val <= 40


def test_split_accepts_any_iterable_of_str(impl: ModuleType) -> None:
    expected = impl.split_hashes(["a", "b"], 7)
    assert_same_array(impl.split_hashes(("a", "b"), 7), expected)
    assert_same_array(impl.split_hashes(iter(["a", "b"]), 7), expected)
    assert_same_array(impl.val_mask(k for k in ["a", "b"]), impl.val_mask(["a", "b"]))


@pytest.mark.parametrize("seed", [-1, 2**64, -(2**100), 2**200])
def test_split_bad_seed(impl: ModuleType, seed: int) -> None:
    with pytest.raises(SplitParameterError):
        impl.split_hashes(["a"], seed)
    with pytest.raises(SplitParameterError):
        impl.val_mask(["a"], seed, 0.9)
    with pytest.raises(SplitParameterError):  # parameters are checked before the keys
        impl.val_mask([1], seed, 0.9)


@pytest.mark.parametrize(
    "train_split", [0, 0.0, -0.0, -0.5, 1.0000001, 2, math.nan, math.inf, -math.inf, 2**2000]
)
def test_split_bad_train_split(impl: ModuleType, train_split: float) -> None:
    with pytest.raises(SplitParameterError):
        impl.val_mask(["a"], 42, train_split)
    with pytest.raises(SplitParameterError):
        impl.val_mask([1], 42, train_split)


@pytest.mark.parametrize("keys", [["a", 1], [b"a.mid"], [None], ["a", Path("b")]], ids=repr)
def test_split_keys_must_be_str(impl: ModuleType, keys: list[Any]) -> None:
    with pytest.raises(TypeError, match="str"):
        impl.split_hashes(keys, 42)
    with pytest.raises(TypeError, match="str"):
        impl.val_mask(keys, 42, 0.9)


def test_split_keys_must_be_encodable(impl: ModuleType) -> None:
    with pytest.raises(UnicodeEncodeError):
        impl.split_hashes(["ok", "bad \udc80 surrogate"], 42)
    with pytest.raises(TypeError):  # the first bad key wins, as in the reference
        impl.split_hashes(["ok", 3, "bad \udc80"], 42)


def test_split_not_iterable(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.split_hashes(None, 42)


# --- through varemi.core.kernels: views, copies, zero copy --------------------------------------

needs_native_kernels = pytest.mark.skipif(
    kernels.IMPLEMENTATION != "native", reason="varemi.core.kernels runs the reference"
)


def test_native_refuses_views(impl: ModuleType) -> None:
    tokens = np.zeros(20, np.int32)[::2]
    offsets = i64(0, 4, 10)
    if impl is native:
        with pytest.raises(TypeError, match="contiguous"):
            impl.window_spans(tokens, offsets, 4, 2, 1)
        with pytest.raises(TypeError, match="contiguous"):
            impl.normalize_pitches(np.arange(10, dtype=np.int16)[::3])
    else:  # the reference reads views; varemi.core.kernels makes both behave the same
        impl.window_spans(tokens, offsets, 4, 2, 1)


def test_native_refuses_misaligned_arrays() -> None:
    misaligned = np.frombuffer(bytes(41), dtype=np.int32, offset=1)
    assert not misaligned.flags.aligned and misaligned.flags.c_contiguous
    with pytest.raises(TypeError, match="aligned"):
        native.window_spans(misaligned, i64(0, 10), 4, 2, 1)


@given(batches(), window_params(), st.integers(2, 4))
def test_kernels_views_equal_contiguous(
    batch: tuple[np.ndarray, np.ndarray], params: tuple[int, int, int], step: int
) -> None:
    tokens, offsets = batch
    tokens_view = np.repeat(tokens, step)[::step]
    offsets_view = np.repeat(offsets, step)[::step]
    assert not tokens_view.flags.c_contiguous or len(tokens) < 2
    expected = kernels.window_spans(tokens, offsets, *params)
    got = kernels.window_spans(tokens_view, offsets_view, *params)
    assert_same_arrays(tuple(got), tuple(expected))
    assert_same_arrays(tuple(got), reference.window_spans(tokens_view, offsets_view, *params))
    n_files = len(offsets) - 1
    ids = np.arange(n_files * step, dtype=np.int32)
    args = (tokens, *expected[:1], *expected[2:], ids[::step], ids[::step] + 9)
    views = [np.repeat(a, step)[::step] for a in args]
    assert_same_arrays(
        kernels.prepend_conditioning(*views),
        kernels.prepend_conditioning(*(np.ascontiguousarray(a) for a in args)),
    )


@pytest.mark.parametrize("dtype", PITCH_DTYPES)
@pytest.mark.parametrize("policy", reference.PITCH_POLICIES)
def test_kernels_pitch_views_equal_contiguous(dtype: type, policy: str) -> None:
    pitches = np.arange(-60, 200, dtype=np.int64).astype(dtype)
    view = pitches[::-3]
    expected = reference.normalize_pitches(view.copy(), 21, 108, policy)
    assert_same_arrays(kernels.normalize_pitches(view, 21, 108, policy), expected)


def test_kernels_make_examples() -> None:
    tokens = np.arange(3000, dtype=np.int32)
    offsets = i64(0, 1500, 1500, 1700, 3000)
    ids = np.arange(4, dtype=np.int32)
    ex = kernels.make_examples(tokens, offsets, ids, ids + 10)
    file_index, window_index, start, stop = reference.window_spans(tokens, offsets)
    values, example_offsets = reference.prepend_conditioning(
        tokens, file_index, start, stop, ids, ids + 10
    )
    assert_same_arrays(tuple(ex), (values, example_offsets, file_index, window_index))


@needs_native_kernels
def test_kernels_pass_contiguous_arrays_through() -> None:
    tokens = np.zeros(10, np.int32)
    assert kernels._contiguous(tokens) is tokens
    view = tokens[::2]
    copy = kernels._contiguous(view)
    assert copy is not view and copy.flags.c_contiguous and np.shares_memory(view, tokens)


def big_batch(n_tokens: int = 10**7, mean_file: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(mean_file // 2, mean_file * 3 // 2, n_tokens // mean_file * 2)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    offsets = offsets[offsets <= n_tokens].astype(np.int64)
    tokens = rng.integers(0, 20_000, n_tokens, dtype=np.int32)  # touched: resident
    return tokens, offsets


@pytest.fixture(scope="module")
def ten_million_tokens() -> tuple[np.ndarray, np.ndarray]:
    return big_batch()


@pytest.mark.parametrize("entry", ["native", "kernels"])
def test_zero_copy_window_spans_tracemalloc(
    entry: str, ten_million_tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    if entry == "kernels" and kernels.IMPLEMENTATION != "native":
        pytest.skip("varemi.core.kernels runs the reference")
    tokens, offsets = ten_million_tokens
    fn = native.window_spans if entry == "native" else kernels.window_spans
    tracemalloc.start()
    try:
        fn(tokens, offsets)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy reports its allocations to tracemalloc: a copy of the tokens would be 40 MB.
    assert peak < tokens.nbytes // 100, peak


@pytest.mark.parametrize("entry", ["native", "kernels"])
def test_zero_copy_prepend_tracemalloc(
    entry: str, ten_million_tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    if entry == "kernels" and kernels.IMPLEMENTATION != "native":
        pytest.skip("varemi.core.kernels runs the reference")
    tokens, offsets = ten_million_tokens
    file_index, _, start, stop = native.window_spans(tokens, offsets)
    ids = np.zeros(len(offsets) - 1, np.int32)
    fn = native.prepend_conditioning if entry == "native" else kernels.prepend_conditioning
    tracemalloc.start()
    try:
        fn(tokens, file_index, start, stop, ids, ids)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < tokens.nbytes // 100, peak


def _peak_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_zero_copy_rss(ten_million_tokens: tuple[np.ndarray, np.ndarray]) -> None:
    """The Rust side (invisible to tracemalloc) borrows too: peak RSS stays flat."""
    tokens, offsets = ten_million_tokens
    if not _reset_peak_rss():
        pytest.skip("cannot reset the peak RSS")
    before = _peak_rss_kib()
    file_index, _, start, stop = native.window_spans(tokens, offsets)
    grown = (_peak_rss_kib() - before) * 1024
    assert grown < tokens.nbytes // 4, grown
    ids = np.zeros(len(offsets) - 1, np.int32)
    _reset_peak_rss()
    before = _peak_rss_kib()
    values, _ = native.prepend_conditioning(tokens, file_index, start, stop, ids, ids)
    grown = (_peak_rss_kib() - before) * 1024
    # The output itself (about twice the tokens) but no copy of the 40 MB input.
    assert grown < values.nbytes + tokens.nbytes // 4, (grown, values.nbytes)


def test_read_only_inputs(impl: ModuleType) -> None:
    tokens, offsets = np.arange(3000, dtype=np.int32), i64(0, 1500, 3000)
    pitches = np.arange(128, dtype=np.uint8)
    for a in (tokens, offsets, pitches):
        a.flags.writeable = False
    assert_same_arrays(
        impl.window_spans(tokens, offsets), reference.window_spans(tokens.copy(), offsets.copy())
    )
    assert_same_arrays(
        impl.normalize_pitches(pitches, 21, 108, "fold"),
        reference.normalize_pitches(pitches.copy(), 21, 108, "fold"),
    )


def test_equivalent_dtype_spellings(impl: ModuleType) -> None:
    # int64 is also spelled longlong ('q'); on Linux both are the same 8-byte integer.
    offsets = np.array([0, 1500], dtype=np.longlong)
    if offsets.dtype != np.dtype(np.int64):
        pytest.skip("longlong is not int64 here")
    assert_same_arrays(
        impl.window_spans(np.zeros(1500, np.int32), offsets),
        spans((0, 0, 0, 1024), (0, 1, 512, 1500)),
    )


def test_outputs_are_owned_writeable_arrays(impl: ModuleType) -> None:
    outputs = [
        *impl.window_spans(np.zeros(50, np.int32), i64(0, 50), 8, 4, 2),
        *impl.prepend_conditioning(i32(1, 2), i64(0), i64(0), i64(2), i32(5), i32(6)),
        *impl.normalize_pitches(i32(1, 200)),
        impl.split_hashes(["a"]),
        impl.val_mask(["a"]),
    ]
    for out in outputs:
        assert out.flags.writeable and out.flags.c_contiguous and out.flags.aligned
        out[...] = out  # writing is allowed


def test_native_releases_the_gil_safely(
    ten_million_tokens: tuple[np.ndarray, np.ndarray],
) -> None:
    tokens, offsets = ten_million_tokens
    expected = native.window_spans(tokens, offsets, 1024, 512, 256)
    results: list[tuple[np.ndarray, ...]] = []

    def work() -> None:
        results.append(native.window_spans(tokens, offsets, 1024, 512, 256))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for got in results:
        assert_same_arrays(got, expected)


def _counter_advances_during(call: Callable[[], object], repeat: int = 5) -> int:
    """How often a Python thread could run while ``call()`` ran ``repeat`` times.

    The switch interval is raised to 30 s, so the main thread never gives up the GIL
    unless the code it runs releases it; the counter thread gives it up after every
    step (``Event.wait``). While the main thread runs code that holds the GIL the
    counter therefore cannot move at all; while native code runs detached it moves.
    """
    counter = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counter[0] += 1
            stop.wait(0.0001)

    old = sys.getswitchinterval()
    thread = threading.Thread(target=count, daemon=True)
    sys.setswitchinterval(30.0)
    try:
        thread.start()
        while counter[0] == 0:
            stop.wait(0.001)  # releases the GIL until the counter thread runs
        before = counter[0]
        for _ in range(repeat):
            call()
        advanced = counter[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(old)
        thread.join()
    return advanced


def test_gil_probe_sees_a_call_that_holds_the_gil() -> None:
    # The control: pure Python holds the GIL, so the probe must report zero.
    assert _counter_advances_during(lambda: sum(range(300_000))) == 0


@pytest.mark.parametrize("kernel", ["normalize_pitches", "window_spans+prepend"])
def test_native_kernels_let_python_threads_run(
    kernel: str, ten_million_tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    tokens, offsets = ten_million_tokens
    if kernel == "normalize_pitches":
        pitches = (tokens % 128).astype(np.int32)

        def call() -> object:
            return native.normalize_pitches(pitches, 21, 108, "fold")
    else:
        ids = np.arange(len(offsets) - 1, dtype=np.int32)

        def call() -> object:
            fi, _, start, stop = native.window_spans(tokens, offsets, 1024, 512, 256)
            return native.prepend_conditioning(tokens, fi, start, stop, ids, ids + 10)

    assert _counter_advances_during(call) > 0


# --- hostile inputs: no panic may reach Python -----------------------------------------


I64_MAX = 2**63 - 1
HOSTILE_CALLS: list[tuple[str, tuple[Any, ...], type | None]] = [
    ("window_spans", (i32(1, 2), i64(0, I64_MAX), 4, 2, 1), OffsetsError),
    ("window_spans", (i32(1, 2), i64(I64_MAX, I64_MAX), 4, 2, 1), OffsetsError),
    ("window_spans", (i32(1, 2), i64(-(2**63), 0), 4, 2, 1), OffsetsError),
    ("window_spans", (i32(1, 2), i64(0, 2), I64_MAX, I64_MAX, I64_MAX), None),
    ("window_spans", (i32(1, 2), i64(0, 2), I64_MAX, I64_MAX, 1), None),
    ("window_spans", (i32(1, 2), i64(0, 2), 2**200, 2**300, 1), None),
    ("window_spans", (i32(1, 2), i64(0, 2), 2**200, 2**300, 2**199), None),
    ("window_spans", (i32(1, 2), i64(0, 2), 1, 2**200, 1), None),
    ("window_spans", (np.zeros(10**6, np.int32), i64(0, 10**6), 1, 1, 1), None),
    ("window_spans", (i32(1, 2), i64(0, 2), -I64_MAX - 1, 1, 1), WindowParameterError),
    ("window_spans", (i32(1, 2), i64(0, 2), 1.5, 1, 1), TypeError),
    ("window_spans", (i32(1, 2), i64(0, 2), "4", 1, 1), TypeError),
    ("window_spans", (i32(1, 2), i64(0, 2), None, 1, 1), TypeError),
    ("window_spans", (None, None), TypeError),
    ("window_spans", (np.zeros(3, np.int32)[::2], i64(0, 2)), TypeError),
    (
        "prepend_conditioning",
        (i32(1), i64(I64_MAX), i64(0), i64(1), i32(5), i32(6)),
        ConditioningError,
    ),
    (
        "prepend_conditioning",
        (i32(1), i64(-(2**63)), i64(0), i64(1), i32(5), i32(6)),
        ConditioningError,
    ),
    (
        "prepend_conditioning",
        (i32(1), i64(0), i64(-(2**63)), i64(I64_MAX), i32(5), i32(6)),
        ConditioningError,
    ),
    (
        "prepend_conditioning",
        (i32(1), i64(0), i64(I64_MAX), i64(I64_MAX), i32(5), i32(6)),
        ConditioningError,
    ),
    ("prepend_conditioning", (i32(1), i64(0), i64(1), i64(1), i32(5), i32(6)), None),
    ("prepend_conditioning", (i32(), i64(), i64(), i64(), i32(), i32()), None),
    ("prepend_conditioning", (1, 2, 3, 4, 5, 6), TypeError),
    ("normalize_pitches", (i64(-(2**63), I64_MAX, 0), 0, 127, "fold"), None),
    ("normalize_pitches", (i64(-(2**63), I64_MAX), 116, 127, "fold"), None),
    ("normalize_pitches", (np.array([-128, 127], np.int8), 0, 11, "fold"), None),
    ("normalize_pitches", (i64(0), -(2**63), I64_MAX, "clamp"), PitchRangeError),
    ("normalize_pitches", (i64(0), 2**100, 2**100, "fold"), PitchRangeError),
    ("normalize_pitches", (i64(0), 21, 108, "fold\x00"), PitchRangeError),
    ("normalize_pitches", (i64(0), 21, 108, "\udc80"), PitchRangeError),
    ("normalize_pitches", (i64(0), 21.0, 108, "clamp"), TypeError),
    ("split_hashes", (["a"], 2**64 - 1), None),
    ("split_hashes", (["a"], 2**1000), SplitParameterError),
    ("split_hashes", (["a"], -(2**1000)), SplitParameterError),
    ("split_hashes", (["x" * 10**6, ""], 0), None),
    ("split_hashes", (["\udc80"], 0), UnicodeEncodeError),
    ("split_hashes", (["a"], "42"), TypeError),
    ("split_hashes", (42, 42), TypeError),
    ("val_mask", (["a"], 0, 2**2000), SplitParameterError),
    ("val_mask", (["a"], 0, -(2**2000)), SplitParameterError),
    ("val_mask", (["a"], 0, 5e-324), None),
    ("val_mask", (["a"], 0, "0.9"), TypeError),
]


@pytest.mark.parametrize(("kernel", "args", "raises"), HOSTILE_CALLS)
def test_no_panic_on_hostile_inputs(
    kernel: str, args: tuple[Any, ...], raises: type | None
) -> None:
    got = outcome(getattr(native, kernel), *args)
    if raises is None:
        assert not isinstance(got, BaseException), got
    else:
        assert isinstance(got, raises), got
    assert not isinstance(got, BaseException) or isinstance(
        got, (VaremiError, TypeError, ValueError)
    )
