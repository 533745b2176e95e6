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


# --------------------------------------------------------------------------- builds
import helpers as h  # noqa: E402

from varemi.dataset.verify import verify  # noqa: E402
from varemi.labelling.heuristic import label_score  # noqa: E402
from varemi.music.demo import write_demo_corpus  # noqa: E402
from varemi.music.tokenizer import bar_start_table, decode_music, ids_to_tokens  # noqa: E402

WINDOWS = dict(window_size=96, stride=48, min_window_tokens=24)


@pytest.fixture(scope="module")
def demo_midi(tmp_path_factory):
    midi = tmp_path_factory.mktemp("demo") / "midi"
    write_demo_corpus(midi)
    return midi


def music_ids(row, prefix):
    return row["input_ids"][prefix:]


@pytest.mark.parametrize("bos", [False, True])
def test_every_example_starts_with_a_bar_and_verify_holds(demo_midi, tmp_path, bos):
    out = tmp_path / "out"
    result = h.build(demo_midi, out, window_align="bar", bos=bos, **WINDOWS)
    assert result.info["format_version"] == 3
    assert result.info["params"]["window_align"] == "bar"
    assert result.info["tokenizer"]["encode_ids_split"] == "bar"
    assert result.info["tokenizer"]["encode_ids_split_stated"] is True
    base = h.base_tokenizer()
    rows = h.rows(out)["train"] + h.rows(out)["val"]
    assert rows
    prefix = 3 if bos else 2
    for row in rows:
        body = music_ids(row, prefix)
        assert ids_to_tokens(base, body[:1])[:1] == ["Bar_None"], row["source_file"]
        assert WINDOWS["min_window_tokens"] <= len(body) <= WINDOWS["window_size"]
    report = verify(out)
    assert report.ok, report.failures


def test_token_windows_mostly_do_not_start_at_a_bar(demo_midi, tmp_path):
    # what the option changes: with token windows most examples start mid-bar
    out = tmp_path / "out"
    h.build(demo_midi, out, **WINDOWS)
    table = bar_start_table(h.base_tokenizer())
    rows = h.rows(out)["train"] + h.rows(out)["val"]
    at_bar = sum(bool(table[r["input_ids"][2]]) for r in rows)
    assert at_bar < len(rows) / 2


def test_the_windows_are_the_rule_applied_to_each_files_ids(demo_midi, tmp_path):
    out, whole = tmp_path / "out", tmp_path / "whole"
    h.build(demo_midi, out, window_align="bar", **WINDOWS)
    # one window per file holding all its ids: what the windows are cut from
    h.build(demo_midi, whole, window_size=10**6, stride=10**6, min_window_tokens=1)
    file_ids = {r["source_file"]: r["input_ids"][2:] for s, rs in h.rows(whole).items() for r in rs}
    table = bar_start_table(h.base_tokenizer())
    by_file: dict[str, list] = {}
    for row in h.rows(out)["train"] + h.rows(out)["val"]:
        by_file.setdefault(row["source_file"], []).append(row)
    assert set(by_file) == set(file_ids)
    for name, rows in by_file.items():
        ids = np.asarray(file_ids[name], dtype=np.int32)
        spans = reference.bar_window_spans(
            ids, np.array([0, len(ids)], np.int64), table, *WINDOWS.values()
        )
        rows.sort(key=lambda r: r["window_idx"])
        assert [r["input_ids"][2:] for r in rows] == [
            ids[a:b].tolist() for a, b in zip(spans[2], spans[3], strict=True)
        ], name


def test_window_labels_follow_the_bar_windows(demo_midi, tmp_path):
    out = tmp_path / "out"
    h.build(demo_midi, out, window_align="bar", label_scope="window", **WINDOWS)
    base = h.base_tokenizer()
    rows = h.rows(out)["train"] + h.rows(out)["val"]
    for row in rows[:12]:
        label = label_score(decode_music(base, row["input_ids"][2:]), row["source_file"])
        assert row["valence"] == np.float32(label.valence)
        assert row["arousal"] == np.float32(label.arousal)
    assert verify(out).ok


def test_verify_catches_an_example_that_does_not_start_at_a_bar(demo_midi, tmp_path):
    import json

    out = tmp_path / "out"
    h.build(demo_midi, out, **WINDOWS)  # token windows ...
    info_path = out / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["params"]["window_align"] = "bar"  # ... claimed to be bar windows
    info_path.write_text(json.dumps(info))
    report = verify(out)
    assert not report.ok
    assert any(
        line.startswith("window_align") or "window_align" in line for line in report.failures
    )


def test_a_bad_window_align_is_refused_naming_the_option(demo_midi, tmp_path):
    res = h.run_cli(
        "build", "--midi-dir", demo_midi, "--out", tmp_path / "o", "--tokenizer", "builtin",
        "--window-align", "beat",
    )  # fmt: skip
    assert res.returncode == 2
    assert "--window-align" in res.stderr and "Traceback" not in res.stderr
