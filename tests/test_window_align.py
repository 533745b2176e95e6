"""``build --window-align bar``: every window starts at a bar (issue 19, format 3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varemi._base.errors import OffsetsError, WindowParameterError
from varemi.core import kernels, reference

BAR = 1  # in these tables id 1 (and 5) start a bar


def table(size: int = 8, bars=(BAR, 5)) -> np.ndarray:
    t = np.zeros(size, dtype=bool)
    t[list(bars)] = True
    return t


def spans(impl, ids, offsets, w, s, m, bars=None):
    out = impl.bar_window_spans(
        np.asarray(ids, dtype=np.int32),
        np.asarray(offsets, dtype=np.int64),
        table() if bars is None else bars,
        w,
        s,
        m,
    )
    return [a.tolist() for a in out]


@pytest.mark.parametrize("impl", [kernels, reference], ids=["numpy", "twin"])
def test_windows_start_at_the_first_bar_at_or_after_each_stride_point(impl):
    #      0  1  2  3  4  5  6  7  8  9 10 11
    ids = [1, 2, 2, 2, 2, 5, 2, 2, 1, 2, 2, 2]  # bars at 0, 5, 8
    files, index, start, stop = spans(impl, ids, [0, 12], w=6, s=3, m=2)
    # points 0, 3, 6, 9 -> bars 0, 5, 8, none (stop); 8 + 6 >= 12 ends the file anyway
    assert start == [0, 5, 8] and stop == [6, 11, 12]
    assert files == [0, 0, 0] and index == [0, 1, 2]


@pytest.mark.parametrize("impl", [kernels, reference], ids=["numpy", "twin"])
def test_a_bar_reached_from_two_points_gives_one_window_and_short_ones_are_dropped(impl):
    ids = [1, 2, 2, 2, 2, 2, 2, 1, 2, 2]  # bars at 0 and 7
    # points 0, 2, 4, 6, 8: bars 0, 7, 7, 7, none -> windows at 0 and 7 (3 tokens: dropped)
    assert spans(impl, ids, [0, 10], w=4, s=2, m=4)[2:] == [[0], [4]]
    assert spans(impl, ids, [0, 10], w=4, s=2, m=3)[2:] == [[0, 7], [4, 10]]


@pytest.mark.parametrize("impl", [kernels, reference], ids=["numpy", "twin"])
def test_files_without_bars_or_tokens_give_no_window(impl):
    ids = [2, 2, 2, 1, 2, 2]
    files, index, start, stop = spans(impl, ids, [0, 3, 3, 6], w=2, s=1, m=1)
    assert files == [2] and start == [3] and stop == [5] and index == [0]  # one bar: one window


def test_bad_inputs_raise_the_same_errors_on_both():
    for impl in (kernels, reference):
        with pytest.raises(WindowParameterError):
            spans(impl, [1, 2], [0, 2], w=0, s=1, m=1)
        with pytest.raises(OffsetsError):
            spans(impl, [1, 2], [0, 3], w=2, s=1, m=1)
        with pytest.raises(TypeError):
            impl.bar_window_spans(
                np.array([1], np.int64), np.array([0, 1], np.int64), table(), 2, 1, 1
            )


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 60), min_size=0, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    w=st.integers(1, 20),
    s=st.integers(1, 25),
    m=st.integers(1, 20),
    density=st.floats(0.0, 1.0),
)
def test_the_numpy_form_equals_the_twin(lengths, seed, w, s, m, density):
    m = min(m, w)
    rng = np.random.default_rng(seed)
    vocab = 12
    bars = rng.random(vocab) < density
    ids = rng.integers(-1, vocab + 2, size=sum(lengths)).astype(np.int32)  # some off-table
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    fast = kernels.bar_window_spans(ids, offsets, bars, w, s, m)
    twin = reference.bar_window_spans(ids, offsets, bars, w, s, m)
    for a, b in zip(fast, twin, strict=True):
        assert a.dtype == b.dtype and a.tolist() == b.tolist()
    # every window starts at a bar, is at most w long and at least m
    for f, st_, sp in zip(fast.file_index, fast.start, fast.stop, strict=True):
        assert 0 <= ids[st_] < vocab and bars[ids[st_]]
        assert m <= sp - st_ <= w and sp <= offsets[f + 1]
