"""The build pipeline through the Python API (docs/contracts.md contracts 1-9).

Every build here is offline: the built-in tokenizer, small generated MIDI files or the
demo corpus, and no user cache (``cache=False`` or a temporary ``cache_dir``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import helpers as h  # noqa: E402
import numpy as np
import pytest
from symusic import Note, Track  # noqa: E402

import varemi  # noqa: E402
import varemi.core.windows as vw
import varemi.corpus.job as vt
import varemi.pipeline.build as vb
from varemi._base.errors import OutputFolderError, VaremiError
from varemi.dataset.verify import verify
from varemi.music.demo import write_demo_corpus

needs_checker = pytest.mark.skipif(not h.CHECKER.is_file(), reason="../shared/tools absent")

BINS = 9
HALF = 4


@pytest.fixture(scope="module")
def base_vocab() -> int:
    return len(h.base_tokenizer())


@pytest.fixture(scope="module")
def demo_midi(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "midi"
    write_demo_corpus(folder)
    return folder


@pytest.fixture(scope="module")
def demo_out(demo_midi, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_out") / "dataset"
    h.build(demo_midi, out)
    return out


def seed_with_both_splits(names, train_split: float = 0.5) -> int:
    """The first seed that puts some of ``names`` in train and some in val."""
    return next(
        s
        for s in range(10_000)
        if {h.split_of(n, s, train_split) for n in names} == {"train", "val"}
    )


# --------------------------------------------------------------------------- exact ids
@pytest.mark.parametrize("window,stride,min_tokens", [(8, 4, 2), (8, 3, 7), (6, 6, 6), (5, 2, 1)])
def test_exact_ids_of_a_hand_computed_example(tmp_path, base_vocab, window, stride, min_tokens):
    midi = tmp_path / "midi"
    files = {
        "a.mid": h.track(h.melody(9, seed=1)),
        "b/c.mid": h.track(h.melody(13, seed=2), step=120, duration=360),
        "d.mid": h.track([60, 64, (67, 72), 71, 67], step=480),
        "short.mid": h.track([60]),
    }
    for name, t in files.items():
        h.write_midi(midi / name, t)
    # label -> bin, B = 9: round((v + 1) / 2 * 8) - 4 with numpy's half-to-even rounding
    labels = {
        "a.mid": (0.125, -0.6),  # 4.5 -> 4 -> 0 ; 1.6 -> 2 -> -2
        "b/c.mid": (-0.375, 0.625),  # 2.5 -> 2 -> -2 ; 6.5 -> 6 -> +2
        "d.mid": (1.0, -1.0),  # 8 -> +4 ; 0 -> -4
        "short.mid": (-0.875, 0.875),  # 0.5 -> 0 -> -4 ; 7.5 -> 8 -> +4
    }
    bins = {"a.mid": (0, -2), "b/c.mid": (-2, 2), "d.mid": (4, -4), "short.mid": (-4, 4)}
    csv_path = h.write_labels(tmp_path / "labels.csv", labels)
    seed = seed_with_both_splits(list(files))
    out = tmp_path / "out"
    result = h.build(
        midi,
        out,
        labels=csv_path,
        window_size=window,
        stride=stride,
        min_window_tokens=min_tokens,
        train_split=0.5,
        seed=seed,
    )

    tok = h.base_tokenizer()
    expected: dict[str, list[dict]] = {"train": [], "val": []}
    starts_seen = 0
    for name in sorted(files):  # Python string order
        ids = h.music_ids(tok, h.score(files[name]))
        starts = h.expected_windows(len(ids), window, stride, min_tokens)
        starts_seen += len(starts)
        vb, ab = bins[name]
        prefix = h.cond_ids(base_vocab, BINS, vb, ab)
        for k, i in enumerate(starts):
            expected[h.split_of(name, seed, 0.5)].append(
                {
                    "input_ids": prefix + ids[i : i + window],
                    "valence": float(np.float32(labels[name][0])),
                    "arousal": float(np.float32(labels[name][1])),
                    "valence_bin": vb,
                    "arousal_bin": ab,
                    "source_file": name,
                    "window_idx": k,
                    "augmentation": "",  # format 2: empty for an original
                }
            )
    assert starts_seen > 4
    got = h.rows(out)
    assert got == expected
    assert result.info == h.info(out)

    # the conditioning ids straight from contract 1 (base + index)
    names = [f"[VAL={v:+d}]" for v in range(-HALF, HALF + 1)]
    names += [f"[ARO={a:+d}]" for a in range(-HALF, HALF + 1)]
    assert h.info(out)["conditioning_tokens"] == {n: base_vocab + k for k, n in enumerate(names)}
    assert h.cond_ids(base_vocab, BINS, 0, -2) == [base_vocab + 4, base_vocab + 9 + 2]


@needs_checker
def test_hand_computed_example_passes_the_checker(tmp_path):
    midi = tmp_path / "midi"
    names = h.write_tiny_corpus(midi, ["a.mid", "b.mid", "sub/c.mid", "sub/d.midi"], notes=30)
    labels = {n: (round(0.25 * k - 0.5, 3), round(0.5 - 0.3 * k, 3)) for k, n in enumerate(names)}
    csv_path = h.write_labels(tmp_path / "labels.csv", labels)
    out = tmp_path / "out"
    h.build(midi, out, labels=csv_path, window_size=16, stride=8, min_window_tokens=4)
    res = h.run_checker(
        out, midi, "--window", "16", "--stride", "8", "--min-window-tokens", "4", labels=csv_path
    )
    assert h.checker_passed(res), res.stdout + res.stderr


# --------------------------------------------------------------------------- output layout
def test_dataset_info_has_every_required_key(demo_out, demo_midi, base_vocab):
    info = h.info(demo_out)
    for key in h.REQUIRED_INFO_KEYS:
        assert key in info, key
    assert info["format_version"] == 3
    assert info["varemi_version"] == varemi.__version__
    tok = info["tokenizer"]
    assert tok["source"] == "builtin"
    assert tok["sha256"] == hashlib.sha256(h.builtin_tokenizer_path().read_bytes()).hexdigest()
    assert tok["base_vocab_size"] == base_vocab
    assert tok["vocab_size"] == base_vocab + 2 * BINS
    assert list(info["conditioning_tokens"].values()) == list(range(base_vocab, base_vocab + 18))
    params = info["params"]
    for key in h.REQUIRED_PARAMS:
        assert key in params, key
    assert params["window_size"] == 1024 and params["stride"] == 512
    assert params["min_window_tokens"] == 256 and params["bins"] == 9
    assert params["binning"] == "uniform" and params["train_split"] == 0.9
    assert params["seed"] == 42 and params["pitch_policy"] == "clamp"
    assert params["pitch_range"] == [21, 108] and params["tracks"] == "merge"
    assert params["midi_dir"] == str(demo_midi)


def test_counts_match_the_data(demo_out):
    info, tables = h.info(demo_out), h.tables(demo_out)
    c = info["counts"]
    assert c["files_seen"] == 20
    assert c["files_rejected"] == 0 and c["rejected_by_reason"] == {}
    files = {s: set(t.column("source_file").to_pylist()) for s, t in tables.items()}
    for s, t in tables.items():
        assert c["examples"][s] == t.num_rows
        assert c["tokens"][s] == sum(len(x) for x in t.column("input_ids").to_pylist())
        assert c["files"][s] == len(files[s])
    assert c["files_kept"] == len(files["train"] | files["val"]) == 20
    # the bin histograms count files and examples
    assert sum(info["histograms"]["valence_bin"].values()) == 20
    assert sum(info["histograms"]["examples_by_bin"].values()) == sum(c["examples"].values())
    assert h.rejects(demo_out) == {}
    # computed labels are written beside the dataset
    labels = (demo_out / "labels.csv").read_text(encoding="utf-8").splitlines()
    assert labels[0].startswith("filename,valence,arousal")
    assert len(labels) == 21


def test_columns_and_dtypes(demo_out):
    import datasets

    dd = h.load(demo_out)
    assert isinstance(dd, datasets.DatasetDict)
    assert sorted(dd) == ["train", "val"]
    for s in ("train", "val"):
        schema = dd[s].data.table.schema
        assert {f.name: str(f.type) for f in schema} == h.COLUMNS
        assert schema.names == list(h.COLUMNS)
        assert dd[s].features["input_ids"].feature.dtype == "int32"


def test_rows_ordered_by_source_file_then_window(demo_out):
    for s, t in h.tables(demo_out).items():
        keys = list(
            zip(
                t.column("source_file").to_pylist(), t.column("window_idx").to_pylist(), strict=True
            )
        )
        assert keys == sorted(keys), s
        per_file = Counter(f for f, _ in keys)
        assert [w for _, w in keys] == [w for f in sorted(per_file) for w in range(per_file[f])]


def test_python_string_order_of_odd_names(tmp_path):
    names = ["B.mid", "a-b.mid", "a.mid", "a/b.mid", "z/\u00fc.midi", "\u00e9.mid", "A b.MID"]
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, names, notes=40)
    seed = seed_with_both_splits(names)
    out = tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4, train_split=0.5, seed=seed)
    got = {s: [r["source_file"] for r in rs] for s, rs in h.rows(out).items()}
    for s in ("train", "val"):
        files = list(dict.fromkeys(got[s]))
        assert files == sorted(n for n in names if h.split_of(n, seed, 0.5) == s)
    assert verify(out).ok


# --------------------------------------------------------------------------- split rule
def test_every_file_follows_the_split_rule(tmp_path):
    names = [f"f{k:02d}.mid" for k in range(30)] + [f"dir/g{k}.mid" for k in range(10)]
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, names)
    out = tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4, train_split=0.6, seed=7)
    files = {s: {r["source_file"] for r in rs} for s, rs in h.rows(out).items()}
    assert files["train"] and files["val"]
    assert not files["train"] & files["val"]
    assert files["train"] | files["val"] == set(names)
    for s, fs in files.items():
        for f in fs:
            assert h.split_of(f, 7, 0.6) == s, f
    # and the rule holds for the default split too
    out2 = tmp_path / "out2"
    h.build(midi, out2, window_size=16, stride=8, min_window_tokens=4)
    for s, rs in h.rows(out2).items():
        assert all(h.split_of(r["source_file"]) == s for r in rs)


def test_adding_files_does_not_move_files_between_splits(tmp_path):
    midi = tmp_path / "midi"
    first = [f"song{k:02d}.mid" for k in range(20)]
    h.write_tiny_corpus(midi, first)
    kw = dict(window_size=16, stride=8, min_window_tokens=4, train_split=0.5, seed=3)
    h.build(midi, tmp_path / "before", **kw)
    for k in range(15):  # new music: a copy of a file would join its group (test_duplicates)
        h.write_midi(midi / "more" / f"x{k}.mid", h.track(h.melody(24, seed=100 + k)))
    (midi / first[0]).unlink()  # removing a file moves no other either
    h.build(midi, tmp_path / "after", **kw)

    def split_per_file(out):
        return {r["source_file"]: s for s, rs in h.rows(out).items() for r in rs}

    before, after = split_per_file(tmp_path / "before"), split_per_file(tmp_path / "after")
    assert len(after) == 34 and set(before) - set(after) == {first[0]}
    assert {f: after[f] for f in before if f in after} == {
        f: s for f, s in before.items() if f != first[0]
    }
    assert set(before.values()) == {"train", "val"}


def test_small_corpus_with_an_empty_val_split(tmp_path):
    candidates = [f"piece{k}.mid" for k in range(40)]
    names = [n for n in candidates if h.split_of(n) == "train"][:3]
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, names)
    out = tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4)
    dd = h.load(out)
    assert dd["val"].num_rows == 0 and dd["train"].num_rows > 0
    assert {f.name: str(f.type) for f in dd["val"].data.table.schema} == h.COLUMNS
    c = h.info(out)["counts"]
    assert c["examples"]["val"] == 0 and c["files"]["val"] == 0 and c["tokens"]["val"] == 0
    report = verify(out)
    assert report.ok, report.failures
    if h.CHECKER.is_file():
        res = h.run_checker(
            out, midi, "--window", "16", "--stride", "8", "--min-window-tokens", "4"
        )
        assert h.checker_passed(res), res.stdout + res.stderr


def test_train_split_one_puts_everything_in_train(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, [f"s{k}.mid" for k in range(12)])
    out = tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4, train_split=1.0)
    dd = h.load(out)
    assert dd["val"].num_rows == 0
    assert len(set(dd["train"]["source_file"])) == 12
    assert verify(out).ok


# --------------------------------------------------------------------------- determinism
def test_one_and_two_workers_give_identical_datasets(demo_midi, demo_out, tmp_path):
    out = tmp_path / "two"
    h.build(demo_midi, out, workers=2)
    h.same_data(demo_out, out)
    assert (demo_out / "labels.csv").read_bytes() == (out / "labels.csv").read_bytes()


# --------------------------------------------------------------------------- output folder
def small_corpus(tmp_path: Path) -> Path:
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, [f"t{k}.mid" for k in range(6)], notes=40)
    return midi


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if "varemi-tmp" in p.name or "varemi-old" in p.name
    )


def test_second_build_without_overwrite_is_refused(tmp_path):
    midi, out = small_corpus(tmp_path), tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4)
    before = h.snapshot(out)
    with pytest.raises(OutputFolderError, match="--overwrite"):
        h.build(midi, out, window_size=32, stride=16, min_window_tokens=4)
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []
    h.build(midi, out, window_size=32, stride=16, min_window_tokens=4, overwrite=True)
    assert h.info(out)["params"]["window_size"] == 32
    assert h.snapshot(out) != before
    assert leftovers(tmp_path) == []
    assert verify(out).ok


def test_overwrite_never_replaces_a_folder_that_is_not_a_dataset(tmp_path):
    midi, out = small_corpus(tmp_path), tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("precious", encoding="utf-8")
    (out / "sub").mkdir()
    (out / "sub" / "dataset_info.json").write_text("{}", encoding="utf-8")
    before = h.snapshot(out)
    for overwrite in (False, True):
        with pytest.raises(OutputFolderError, match="--out"):
            h.build(midi, out, window_size=16, stride=8, min_window_tokens=4, overwrite=overwrite)
        assert h.snapshot(out) == before
    # a dataset_info.json that is not varemi's does not count either
    (out / "dataset_info.json").write_text('{"name": "other"}', encoding="utf-8")
    before = h.snapshot(out)
    with pytest.raises(OutputFolderError):
        h.build(midi, out, window_size=16, stride=8, min_window_tokens=4, overwrite=True)
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_empty_existing_folder_and_file_as_out(tmp_path):
    midi = small_corpus(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    h.build(midi, empty, window_size=16, stride=8, min_window_tokens=4)
    assert verify(empty).ok
    afile = tmp_path / "file.txt"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(OutputFolderError, match="not a folder"):
        h.build(midi, afile, window_size=16, stride=8, min_window_tokens=4, overwrite=True)
    assert afile.read_text(encoding="utf-8") == "x"


@pytest.mark.parametrize("where", ["tokenise", "rejects"])
def test_interrupted_build_leaves_previous_output_intact(tmp_path, monkeypatch, where):

    midi, out = small_corpus(tmp_path), tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4)
    before = h.snapshot(out)
    calls = []
    if where == "tokenise":
        real = vt.encode_midi

        def encode_then_interrupt(*args, **kw):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(*args, **kw)

        monkeypatch.setattr(vt, "encode_midi", encode_then_interrupt)
    else:  # late: the new dataset is already saved in the temporary folder

        def interrupt(*args, **kw):
            calls.append(1)
            assert any("varemi-tmp" in p.name for p in tmp_path.iterdir())
            raise KeyboardInterrupt

        monkeypatch.setattr(vb, "_write_rejects", interrupt)
    with pytest.raises(KeyboardInterrupt):
        h.build(midi, out, window_size=32, stride=16, min_window_tokens=4, overwrite=True)
    assert calls
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []
    assert not [p for p in tmp_path.glob(".*") if "varemi" in p.name]
    assert verify(out).ok


# --------------------------------------------------------------------------- rejects
def write_reject_corpus(midi: Path) -> dict[str, str]:
    """Good files plus one of each kind of bad file; returns the expected reasons."""
    h.write_tiny_corpus(midi, ["good1.mid", "sub/good2.mid", "good3.midi"], notes=30)
    rng = np.random.default_rng(0)
    (midi / "x.mid").write_bytes(rng.integers(0, 256, 600, dtype=np.uint8).tobytes())
    (midi / "empty.mid").write_bytes(b"")
    # over --max-file-mb (4 KiB below): rejected before it is parsed, valid or not
    h.write_midi(midi / "big_valid.mid", h.track(h.melody(900), step=60, duration=60))
    (midi / "big_corrupt.mid").write_bytes(rng.integers(0, 256, 9000, dtype=np.uint8).tobytes())
    # 8 notes of a whole minute each at 120 bpm: 8 minutes > --max-minutes 2
    h.write_midi(
        midi / "long.mid",
        h.track([60, 62, 64, 65, 67, 69, 71, 72], step=480 * 120, duration=480 * 120),
    )
    (midi / "notes.txt").write_text("not midi", encoding="utf-8")
    assert (midi / "big_valid.mid").stat().st_size > 4096
    assert all((midi / n).stat().st_size < 4096 for n in ("good1.mid", "sub/good2.mid", "long.mid"))
    return {
        "x.mid": "unreadable",
        "empty.mid": "unreadable",
        "big_valid.mid": "too_large",
        "big_corrupt.mid": "too_large",
        "long.mid": "too_long",
    }


@pytest.mark.parametrize("labels", ["computed", "csv"])
def test_bad_files_are_rejected_and_the_build_goes_on(tmp_path, labels):
    midi = tmp_path / "midi"
    want = write_reject_corpus(midi)
    kw = dict(window_size=16, stride=8, min_window_tokens=4, max_file_mb=4 / 1024, max_minutes=2)
    if labels == "csv":
        names = ["good1.mid", "sub/good2.mid", "good3.midi", *want]
        kw["labels"] = h.write_labels(tmp_path / "labels.csv", {n: (0.1, -0.2) for n in names})
    out = tmp_path / "out"
    result = h.build(midi, out, **kw)
    got = h.rejects(out)
    assert got == want
    c = h.info(out)["counts"]
    assert c["files_seen"] == 8
    assert c["files_rejected"] == 5
    assert c["rejected_by_reason"] == dict(Counter(want.values()))
    assert c["files_kept"] == 3
    files = {r["source_file"] for rs in h.rows(out).values() for r in rs}
    assert files == {"good1.mid", "sub/good2.mid", "good3.midi"}
    assert result.info["counts"] == c
    assert verify(out).ok


def test_max_minutes_applies_to_cached_tokens(tmp_path):
    midi = tmp_path / "midi"
    write_reject_corpus(midi)
    cache = tmp_path / "cache"
    kw = dict(window_size=16, stride=8, min_window_tokens=4, cache=True, cache_dir=cache)
    h.build(midi, tmp_path / "a", max_minutes=60, **kw)
    assert "long.mid" not in h.rejects(tmp_path / "a")
    h.build(midi, tmp_path / "b", max_minutes=2, **kw)
    assert h.rejects(tmp_path / "b")["long.mid"] == "too_long"
    assert h.info(tmp_path / "b")["cache"].get("hit", 0) >= 3


def test_file_too_short_for_a_window_is_counted(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["long.mid"], notes=60)
    h.write_midi(midi / "tiny.mid", h.track([60]))
    out = tmp_path / "out"
    h.build(midi, out, window_size=64, stride=32, min_window_tokens=32)
    c = h.info(out)["counts"]
    assert c["files_without_windows"] == 1
    assert c["files_kept"] == 1 and c["files_rejected"] == 0
    assert {r["source_file"] for rs in h.rows(out).values() for r in rs} == {"long.mid"}


# --------------------------------------------------------------------------- user labels
def test_user_labels_csv(tmp_path):
    midi = tmp_path / "midi"
    names = h.write_tiny_corpus(
        midi, ["a.mid", "b.mid", "c.mid", "d.mid", "e.mid", "f.mid", "sub/g.mid"], notes=30
    )
    good = {"a.mid": (0.5, -0.5), "b": (-1.0, 1.0), "sub/g.mid": (0.0, 0.25)}
    table = dict(good)
    table.update({"c.mid": ("nan", 0.1), "d.mid": (1.5, 0.0), "e.mid": (0.2, "high")})
    table["not_in_corpus.mid"] = (0.0, 0.0)
    csv_path = h.write_labels(
        tmp_path / "labels.csv", table, header=("Filename", "Valence", "Arousal")
    )
    out = tmp_path / "out"
    h.build(midi, out, labels=csv_path, window_size=16, stride=8, min_window_tokens=4)
    assert h.rejects(out) == {
        "c.mid": "bad_label",
        "d.mid": "bad_label",
        "e.mid": "bad_label",
        "f.mid": "unlabelled",
    }
    by_file = {r["source_file"]: r for rs in h.rows(out).values() for r in rs}
    assert set(by_file) == {"a.mid", "b.mid", "sub/g.mid"}
    assert (by_file["a.mid"]["valence_bin"], by_file["a.mid"]["arousal_bin"]) == (2, -2)
    assert (by_file["b.mid"]["valence_bin"], by_file["b.mid"]["arousal_bin"]) == (-4, 4)
    assert (by_file["sub/g.mid"]["valence_bin"], by_file["sub/g.mid"]["arousal_bin"]) == (0, 1)
    assert by_file["sub/g.mid"]["arousal"] == 0.25
    info = h.info(out)
    assert info["counts"]["rejected_by_reason"] == {"bad_label": 3, "unlabelled": 1}
    assert info["labels"]["source"] == "csv"
    assert not (out / "labels.csv").exists()
    assert verify(out).ok
    assert len(names) == 7
    if h.CHECKER.is_file():  # the checker reads the same CSV (without the bad rows)
        checker_csv = h.write_labels(tmp_path / "good.csv", good)
        res = h.run_checker(
            out,
            midi,
            "--window",
            "16",
            "--stride",
            "8",
            "--min-window-tokens",
            "4",
            labels=checker_csv,
        )
        assert h.checker_passed(res), res.stdout + res.stderr


@pytest.mark.parametrize("missing", ["filename", "valence", "arousal"])
def test_labels_csv_missing_a_column_is_refused(tmp_path, missing):
    midi = small_corpus(tmp_path)
    header = [c for c in ("filename", "valence", "arousal") if c != missing]
    path = tmp_path / "labels.csv"
    path.write_text(",".join(header) + "\n" + ",".join(["t0.mid", "0.1"][: len(header)]) + "\n")
    out = tmp_path / "out"
    with pytest.raises(VaremiError, match=missing):
        h.build(midi, out, labels=path)
    assert not out.exists()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- tracks and pitches
def two_hands() -> tuple[Track, Track]:
    right = h.track([72, 74, 76, 77, 79, 81, 83, 84], name="right")
    left = h.track([36, 43, 36, 43, 41, 48, 43, 36], step=480, duration=480, name="left")
    return right, left


def whole_piece(out: Path, name: str) -> list[int]:
    """The only example of a file (window large enough for the whole piece), less its prefix."""
    (row,) = [r for rs in h.rows(out).values() for r in rs if r["source_file"] == name]
    assert row["window_idx"] == 0
    return row["input_ids"][2:]


def test_tracks_first_and_merge(tmp_path):
    from miditok.utils import merge_tracks

    midi = tmp_path / "midi"
    right, left = two_hands()
    h.write_midi(midi / "duo.mid", right, left)
    drum = h.track([36, 38, 36, 38, 42, 42], is_drum=True, name="drums")
    h.write_midi(midi / "drums_first.mid", drum, right)
    kw = dict(window_size=4096, stride=4096, min_window_tokens=1)
    h.build(midi, tmp_path / "merge", tracks="merge", **kw)
    h.build(midi, tmp_path / "first", tracks="first", **kw)

    tok = h.base_tokenizer()
    merged_score = h.score(*two_hands())
    merge_tracks(merged_score)
    merged = tok.encode(merged_score)[0]
    first = tok.encode(h.score(*two_hands()))[0]
    assert whole_piece(tmp_path / "merge", "duo.mid") == [int(i) for i in merged.ids]
    assert whole_piece(tmp_path / "first", "duo.mid") == [int(i) for i in first.ids]
    assert merged.ids != first.ids
    assert {"Pitch_72", "Pitch_36"} <= set(merged.tokens)  # both hands
    assert "Pitch_72" in first.tokens and "Pitch_36" not in first.tokens

    # drum tracks are dropped: `first` is the first non-drum track, `merge` ignores drums
    right_only = h.music_ids(tok, h.score(two_hands()[0]))
    assert whole_piece(tmp_path / "merge", "drums_first.mid") == right_only
    assert whole_piece(tmp_path / "first", "drums_first.mid") == right_only
    assert h.info(tmp_path / "first")["params"]["tracks"] == "first"
    if h.CHECKER.is_file():
        args = ("--window", "4096", "--stride", "4096", "--min-window-tokens", "1")
        for mode in ("merge", "first"):
            res = h.run_checker(tmp_path / mode, midi, *args, "--multitrack", mode)
            assert h.checker_passed(res), res.stdout + res.stderr


def test_a_file_of_only_drums_has_no_examples(tmp_path):
    midi = tmp_path / "midi"
    h.write_midi(midi / "drums.mid", h.track([36, 38] * 20, is_drum=True))
    h.write_tiny_corpus(midi, ["piano.mid"], notes=40)
    out = tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4)
    files = {r["source_file"] for rs in h.rows(out).values() for r in rs}
    assert "drums.mid" not in files and "piano.mid" in files


WIDE = [10, 60, 115, 64, 20, 109, 108, 21, 127, 0]


@pytest.mark.parametrize(
    "policy,pitch_range,expected",
    [
        ("clamp", None, [21, 60, 108, 64, 21, 108, 108, 21, 108, 21]),
        ("fold", None, [22, 60, 103, 64, 32, 97, 108, 21, 103, 24]),
        ("drop", None, [None, 60, None, 64, None, None, 108, 21, None, None]),
        ("clamp", (36, 96), [36, 60, 96, 64, 36, 96, 96, 36, 96, 36]),
    ],
)
def test_pitch_policy(tmp_path, policy, pitch_range, expected):
    midi = tmp_path / "midi"
    h.write_midi(midi / "wide.mid", h.track(WIDE))
    out = tmp_path / "out"
    h.build(
        midi,
        out,
        pitch_policy=policy,
        pitch_range=pitch_range,
        window_size=4096,
        stride=4096,
        min_window_tokens=1,
    )
    t = Track(name="piano", program=0)
    for k, p in enumerate(expected):
        if p is not None:
            t.notes.append(Note(k * 240, 240, p, 80))
    tok = h.base_tokenizer()
    assert whole_piece(out, "wide.mid") == h.music_ids(tok, h.score(t))
    assert h.info(out)["params"]["pitch_policy"] == policy
    assert h.info(out)["params"]["pitch_range"] == list(pitch_range or (21, 108))
    if policy == "clamp" and pitch_range is None and h.CHECKER.is_file():
        res = h.run_checker(
            out, midi, "--window", "4096", "--stride", "4096", "--min-window-tokens", "1"
        )
        assert h.checker_passed(res), res.stdout + res.stderr


# --------------------------------------------------------------------------- token cache
def test_token_cache_hits_and_damaged_entries(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, [f"c{k}.mid" for k in range(6)], notes=40)
    cache = tmp_path / "cache"
    kw = dict(window_size=16, stride=8, min_window_tokens=4, cache=True, cache_dir=cache)
    h.build(midi, tmp_path / "nocache", window_size=16, stride=8, min_window_tokens=4)

    h.build(midi, tmp_path / "one", **kw)
    assert h.info(tmp_path / "one")["cache"]["miss"] == 6
    assert h.info(tmp_path / "one")["cache"]["dir"] == str(cache)
    entries = sorted(cache.rglob("*.tok"))
    assert len(entries) == 6
    label_entries = sorted(cache.rglob("*.json"))  # computed labels are cached too
    assert len(label_entries) == 12  # and the duplicate-detection fingerprints

    h.build(midi, tmp_path / "two", **kw)
    c2 = h.info(tmp_path / "two")["cache"]
    assert c2.get("hit") == 6 and c2.get("miss", 0) == 0
    h.same_data(tmp_path / "one", tmp_path / "two")
    h.same_data(tmp_path / "nocache", tmp_path / "two")
    labels_csv = (tmp_path / "nocache" / "labels.csv").read_bytes()
    assert (tmp_path / "two" / "labels.csv").read_bytes() == labels_csv

    raw = entries[2].read_bytes()
    entries[2].write_bytes(raw[: len(raw) // 2])  # truncate one entry
    entries[4].write_bytes(raw[:10])  # and one below its header
    h.build(midi, tmp_path / "three", **kw)
    c3 = h.info(tmp_path / "three")["cache"]
    assert (c3.get("damaged"), c3.get("hit"), c3.get("miss", 0)) == (2, 4, 0)
    h.same_data(tmp_path / "one", tmp_path / "three")
    assert (tmp_path / "three" / "labels.csv").read_bytes() == labels_csv

    # a damaged label entry (its token entry intact) recomputes exactly that file
    label_entries[1].write_bytes(label_entries[1].read_bytes()[:20])
    h.build(midi, tmp_path / "three-labels", **kw)
    c3 = h.info(tmp_path / "three-labels")["cache"]
    assert (c3.get("damaged"), c3.get("hit"), c3.get("miss", 0)) == (1, 5, 0)
    h.same_data(tmp_path / "one", tmp_path / "three-labels")
    assert (tmp_path / "three-labels" / "labels.csv").read_bytes() == labels_csv

    h.build(midi, tmp_path / "four", **kw)  # the damaged entries were rewritten
    assert h.info(tmp_path / "four")["cache"].get("hit") == 6

    # a valid entry copied over another file's entry is caught by the key it carries
    entries[0].write_bytes(entries[1].read_bytes())
    h.build(midi, tmp_path / "swapped", **kw)
    assert h.info(tmp_path / "swapped")["cache"].get("damaged") == 1
    h.same_data(tmp_path / "one", tmp_path / "swapped")

    # what determines the tokens is part of the key: another pitch policy misses
    h.build(midi, tmp_path / "five", pitch_policy="drop", **kw)
    assert h.info(tmp_path / "five")["cache"].get("miss") == 6


def test_no_cache_records_off(tmp_path):
    midi = small_corpus(tmp_path)
    h.build(midi, tmp_path / "out", window_size=16, stride=8, min_window_tokens=4)
    cache = h.info(tmp_path / "out")["cache"]
    assert cache["dir"] is None and cache.get("off") == 6


# --------------------------------------------------------------------------- public helpers
def test_load_tokenizer_and_conditioning_ids_match_the_prefixes(demo_out, base_vocab):
    tok = varemi.load_tokenizer(demo_out)
    assert len(tok) == base_vocab + 2 * BINS
    assert tok.vocab["[VAL=-4]"] == base_vocab and tok.vocab["[ARO=+4]"] == base_vocab + 17
    seen = set()
    for rs in h.rows(demo_out).values():
        for r in rs:
            pair = (r["valence_bin"], r["arousal_bin"])
            if pair not in seen:
                seen.add(pair)
                ids = varemi.conditioning_ids(demo_out, *pair)
                assert list(ids) == r["input_ids"][:2]
                assert list(ids) == h.cond_ids(base_vocab, BINS, *pair)
    assert len(seen) > 3
    with pytest.raises(VaremiError):
        varemi.conditioning_ids(demo_out, 5, 0)


def test_bins_parameter(tmp_path, base_vocab):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=30)
    csv_path = h.write_labels(tmp_path / "l.csv", {"a.mid": (0.5, -1.0), "b.mid": (-0.2, 0.9)})
    out = tmp_path / "out"
    h.build(
        midi,
        out,
        labels=csv_path,
        bins=5,
        window_size=16,
        stride=8,
        min_window_tokens=4,
        train_split=1.0,
    )
    info = h.info(out)
    assert list(info["conditioning_tokens"]) == [
        "[VAL=-2]", "[VAL=-1]", "[VAL=+0]", "[VAL=+1]", "[VAL=+2]",
        "[ARO=-2]", "[ARO=-1]", "[ARO=+0]", "[ARO=+1]", "[ARO=+2]",
    ]  # fmt: skip
    assert info["tokenizer"]["vocab_size"] == base_vocab + 10
    # 0.5 -> 3 -> +1 ; -1 -> 0 -> -2 ; -0.2 -> 1.6 -> 2 -> 0 ; 0.9 -> 3.8 -> 4 -> +2
    by_file = {r["source_file"]: r for r in h.rows(out)["train"]}
    assert by_file["a.mid"]["input_ids"][:2] == h.cond_ids(base_vocab, 5, 1, -2)
    assert by_file["b.mid"]["input_ids"][:2] == h.cond_ids(base_vocab, 5, 0, 2)
    assert verify(out).ok


def test_quantile_binning_records_edges(demo_midi, tmp_path):
    out = tmp_path / "q"
    h.build(demo_midi, out, binning="quantile", bins=3)
    info = h.info(out)
    edges = info["labels"]["binning_edges"]
    assert len(edges["valence"]) == 2 and len(edges["arousal"]) == 2
    assert info["params"]["binning"] == "quantile"
    counts = info["histograms"]["valence_bin"]
    assert sum(counts.values()) == 20 and max(counts.values()) - min(counts.values()) <= 2
    assert verify(out).ok


def test_bad_parameters_are_refused_before_any_work(tmp_path):
    midi = small_corpus(tmp_path)
    out = tmp_path / "out"
    cases = [  # (parameters, what the one-line message must say, option first)
        (dict(bins=4), "--bins must be a positive odd integer, got 4"),
        (dict(bins=0), "--bins must be a positive odd integer, got 0"),
        (dict(window_size=0), "--window-size must be >= 1, got 0"),
        (dict(stride=0), "--stride must be >= 1, got 0"),
        (dict(window_size=8, min_window_tokens=9), "--min-window-tokens (9) must not exceed"),
        (dict(train_split=0.0), "--train-split must be in (0, 1], got 0.0"),
        (dict(train_split=1.5), "--train-split must be in (0, 1], got 1.5"),
        (dict(seed=-1), "--seed must be in 0..2**64-1, got -1"),
        (dict(pitch_range=(90, 30)), "--pitch-range low (90) > high (30)"),
        (dict(pitch_range=(10, 100)), "--pitch-range 10 100 is outside the tokenizer's"),
        (dict(pitch_policy="fold", pitch_range=(60, 65)), "--pitch-policy fold needs a"),
        (dict(pitch_policy="bend"), "--pitch-policy must be one of"),
        (dict(tracks="all"), "--tracks must be one of"),
        (dict(binning="log"), "--binning must be one of"),
        (dict(max_minutes=0), "--max-minutes must be > 0"),
        (dict(max_file_mb=-1), "--max-file-mb must be > 0"),
        (dict(workers=0), "--workers must be >= 1, got 0"),
        (dict(jitter=-0.1), "--jitter must be a finite number >= 0, got -0.1"),
        (dict(jitter=float("inf")), "--jitter must be a finite number >= 0, got inf"),
        (dict(jitter=float("nan")), "--jitter must be a finite number >= 0, got nan"),
        (dict(jitter_seed=-1), "--jitter-seed must be an integer in 0..2**64-1, got -1"),
        (dict(jitter_seed=2**64), "--jitter-seed must be an integer in 0..2**64-1"),
        (dict(labels=tmp_path / "missing.csv"), f"--labels {tmp_path / 'missing.csv'} is not"),
        (dict(tokenizer=str(tmp_path / "no_such_tokenizer.json")), "does not exist"),
    ]
    for kw, message in cases:
        with pytest.raises(VaremiError) as err:
            h.build(midi, out, **kw)
        assert message in str(err.value), (kw, str(err.value))
        assert not out.exists(), kw
    with pytest.raises(VaremiError, match="--midi-dir"):
        h.build(tmp_path / "nowhere", out)
    empty = tmp_path / "no_midi"
    empty.mkdir()
    (empty / "readme.txt").write_text("x", encoding="utf-8")
    with pytest.raises(VaremiError, match="--midi-dir"):
        h.build(empty, out)
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_build_result_and_cwd_independence(tmp_path, monkeypatch):
    midi = small_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = h.build(Path("midi"), Path("rel_out"), window_size=16, stride=8, min_window_tokens=4)
    assert result.out == Path("rel_out")
    assert (tmp_path / "rel_out" / "dataset_info.json").is_file()
    assert json.loads((tmp_path / "rel_out" / "dataset_info.json").read_text())["counts"][
        "files_seen"
    ] == len(list(midi.glob("*.mid")))
    assert not [p for p in os.listdir(tmp_path) if "varemi-tmp" in p]


def test_windows_in_small_batches_give_the_same_dataset(tmp_path, monkeypatch):
    """The windows stage hands export one batch per shard; batch size changes no row."""

    midi = small_corpus(tmp_path)
    one, many = tmp_path / "one", tmp_path / "many"
    h.build(midi, one, window_size=16, stride=8, min_window_tokens=4, train_split=0.5)
    monkeypatch.setattr(vw, "BATCH_TOKENS", 40)  # a batch (and a shard) every file or two
    h.build(midi, many, window_size=16, stride=8, min_window_tokens=4, train_split=0.5)
    assert len(list((one / "train").glob("data-*.arrow"))) == 1
    assert len(list((many / "train").glob("data-*.arrow"))) > 1
    assert h.rows(many) == h.rows(one)
    assert h.info(many)["counts"] == h.info(one)["counts"]
    assert verify(many).ok


def test_label_row_spool_writes_the_bytes_of_write_label_rows(tmp_path):
    from varemi.labelling.heuristic import LABEL_COLUMNS
    from varemi.labelling.label_csv import write_label_rows
    from varemi.pipeline.stages import LabelRowSpool

    names = ["a.mid", 'odd, "quoted".mid', "line\nbreak.mid", "é/ü.mid", "b.mid"]
    values = [0.1, np.float32(0.1), np.float64(-1e-300), 3, float("nan"), 2.0 / 3]
    rows = [
        {
            "filename": n,
            **{c: values[(k + j) % len(values)] for j, c in enumerate(LABEL_COLUMNS[1:])},
        }
        for k, n in enumerate(names)
    ]
    for drop in ((), {names[1], names[2]}):
        spool = LabelRowSpool(tmp_path / "_spool.csv")
        spool.extend(rows[:2])
        for row in rows[2:]:
            spool.append(row)
        assert spool.rows == len(rows)
        spool.write(tmp_path / "labels.csv", drop)
        write_label_rows([r for r in rows if r["filename"] not in drop], tmp_path / "want.csv")
        got, want = (tmp_path / "labels.csv").read_bytes(), (tmp_path / "want.csv").read_bytes()
        assert got == want, drop
        assert not (tmp_path / "_spool.csv").exists()  # the spool is gone once written
    spool = LabelRowSpool(tmp_path / "_spool.csv")  # no row: the header alone
    spool.write(tmp_path / "labels.csv")
    assert (tmp_path / "labels.csv").read_text() == ",".join(LABEL_COLUMNS) + "\n"
    spool = LabelRowSpool(tmp_path / "_spool.csv")
    spool.close()  # a failed build: closed and removed, twice is harmless
    spool.close()
    assert not (tmp_path / "_spool.csv").exists()
