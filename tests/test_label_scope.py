"""``build --label-scope file|window``: per-file or per-window labels (issue 10).

With ``window`` scope each window is labelled from its own music. The expected labels
here are computed from each row's own ids (decoded and labelled in the test), never
from the build's window spans, so a row whose labels belong to another window fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import helpers as h
import numpy as np
import pytest
from symusic import Note, Track

import varemi.corpus.job
from varemi._base.errors import VaremiError
from varemi.core import conditioning
from varemi.dataset.verify import verify
from varemi.labelling.heuristic import label_score
from varemi.music.tokenizer import decode_music
from varemi.pipeline.params import check_params

WINDOWS = dict(window_size=256, stride=256, min_window_tokens=64)


def write_mood_change(path: Path) -> Path:
    """A piece whose first half is slow, quiet, minor and low, its second fast, loud, major."""
    t = Track(name="piano", program=0)
    tick = 0
    for _ in range(64):  # A minor chords, a whole note each, pianissimo
        for q in (45, 48, 52):
            t.notes.append(Note(tick, 960, q, 30))
        tick += 960
    major = (72, 76, 79)
    for k in range(512):  # C major arpeggio in eighths, fortissimo
        t.notes.append(Note(tick, 120, major[k % 3] + 12 * (k % 2), 120))
        tick += 120
    path.parent.mkdir(parents=True, exist_ok=True)
    h.score(t).dump_midi(path)
    return path


def expected_labels(base, row: dict, jitter: float = 0.0, seed: int = 0) -> tuple[float, float]:
    """The labels of the music a row holds: its ids after the prefix, decoded and labelled."""
    label = label_score(
        decode_music(base, row["input_ids"][2:]), row["source_file"], jitter=jitter, seed=seed
    )
    return label.valence, label.arousal


def all_rows(out: Path) -> list[dict]:
    rows = h.rows(out)
    return rows["train"] + rows["val"]


@pytest.mark.parametrize("jitter", [0.0, 0.1])
def test_window_labels_are_those_of_each_windows_own_music(tmp_path, jitter):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    out = tmp_path / "out"
    result = h.build(midi, out, label_scope="window", jitter=jitter, jitter_seed=3, **WINDOWS)
    rows = [r for r in all_rows(out) if r["source_file"] == "mood.mid"]
    rows.sort(key=lambda r: r["window_idx"])
    assert len(rows) >= 4
    base = h.base_tokenizer()
    cond_base = result.info["conditioning_tokens"]["[VAL=-4]"]
    for row in rows:
        v, a = expected_labels(base, row, jitter, 3)
        assert row["valence"] == np.float32(v), row["window_idx"]
        assert row["arousal"] == np.float32(a), row["window_idx"]
        vb, ab = (int(conditioning.discretise_uniform(np.array(x), 9)) for x in (v, a))
        assert (row["valence_bin"], row["arousal_bin"]) == (vb, ab)
        assert row["input_ids"][:2] == h.cond_ids(cond_base, 9, vb, ab)
    first, last = rows[0], rows[-1]
    # the mood changes: a sad, calm window first, a happy, excited one last
    assert first["valence_bin"] < 0 < last["valence_bin"]
    assert first["arousal_bin"] < 0 < last["arousal_bin"]
    assert first["input_ids"][:2] != last["input_ids"][:2]
    info = h.info(out)
    assert info["params"]["label_scope"] == "window"
    assert info["labels"]["scope"] == "window"
    assert info["labels"]["windows"]["labelled"] == len(rows)
    assert info["labels"]["windows"]["from_file_label"] == 0
    assert info["histograms"]["counts"] == "windows"
    assert sum(info["histograms"]["valence_bin"].values()) == len(rows)
    # labels.csv keeps the file's own label (one row, the whole piece)
    labels_csv = (out / "labels.csv").read_text().splitlines()
    assert len(labels_csv) == 2 and labels_csv[1].startswith("mood.mid,")


def test_augmented_copies_are_labelled_from_their_own_music(tmp_path):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    out = tmp_path / "out"
    h.build(midi, out, label_scope="window", augment_velocity="-20", **WINDOWS)
    rows = all_rows(out)
    base = h.base_tokenizer()
    by_copy: dict[str, dict[int, float]] = {}
    for row in rows:
        v, a = expected_labels(base, row)
        assert (row["valence"], row["arousal"]) == (np.float32(v), np.float32(a))
        by_copy.setdefault(row["augmentation"], {})[row["window_idx"]] = row["arousal"]
    assert sorted(by_copy) == ["", "v-20"]
    # the copy's music is not the original's (other velocities, other BPE merges, even
    # another number of windows): its windows' labels are its own
    assert by_copy["v-20"] != by_copy[""]


def test_a_window_without_notes_takes_its_files_label(tmp_path):
    midi = tmp_path / "midi"
    t = h.track(h.melody(60), velocity=90)
    for k, p in enumerate(h.melody(60, seed=1)):  # after 200 silent bars
        t.notes.append(Note(200 * 1920 + 60 * 240 + k * 240, 240, p, 90))
    h.write_midi(midi / "gap.mid", t)
    out = tmp_path / "out"
    h.build(midi, out, label_scope="window", window_size=64, stride=64, min_window_tokens=8)
    info = h.info(out)
    fallback = info["labels"]["windows"]["from_file_label"]
    assert fallback >= 1
    file_v, file_a = (
        float(x) for x in (out / "labels.csv").read_text().splitlines()[1].split(",")[1:3]
    )
    same_as_file = [
        r
        for r in all_rows(out)
        if (r["valence"], r["arousal"]) == (np.float32(file_v), np.float32(file_a))
    ]
    assert len(same_as_file) >= fallback
    rep = verify(out)
    assert rep.ok, rep.failures


def test_file_scope_is_unchanged_every_row_carries_its_files_labels(tmp_path):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=200)
    out = tmp_path / "out"
    h.build(midi, out, **WINDOWS)
    with open(out / "labels.csv", encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    cols = header.split(",")
    table = {
        r[0]: (float(r[cols.index("valence")]), float(r[cols.index("arousal")]))
        for r in (line.split(",") for line in lines)
    }
    rows = all_rows(out)
    assert {r["source_file"] for r in rows} == set(table)
    for row in rows:
        v, a = table[row["source_file"]]
        assert (row["valence"], row["arousal"]) == (np.float32(v), np.float32(a))
    info = h.info(out)
    assert info["params"]["label_scope"] == "file"
    assert info["labels"]["scope"] == "file" and info["labels"]["windows"] is None
    assert info["histograms"]["counts"] == "files"
    rep = verify(out)
    assert rep.ok, rep.failures
    assert any("label_scope file" in line for line in rep.lines)
    if h.CHECKER.is_file():
        res = h.run_checker(out, midi, "--window", "256", "--stride", "256",
                            "--min-window-tokens", "64")  # fmt: skip
        assert h.checker_passed(res), res.stdout[-2000:]


def test_windows_of_one_file_share_its_split(tmp_path):
    midi = tmp_path / "midi"
    names = [f"f{k:02d}.mid" for k in range(12)]
    h.write_tiny_corpus(midi, names, notes=300)
    out = tmp_path / "out"
    h.build(midi, out, label_scope="window", train_split=0.6, **WINDOWS)
    splits: dict[str, set[str]] = {}
    labels: dict[str, set[float]] = {}
    for s, rows in h.rows(out).items():
        for row in rows:
            splits.setdefault(row["source_file"], set()).add(s)
            labels.setdefault(row["source_file"], set()).add(row["valence"])
    assert set(splits) == set(names)
    for name, found in splits.items():
        assert found == {h.split_of(name, train_split=0.6)}, name
    assert {"train", "val"} == set().union(*splits.values())
    assert any(len(v) > 1 for v in labels.values())  # windows do get labels of their own


def test_verify_reports_the_scope_and_checks_file_scope_rows(tmp_path):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=200)  # b.mid hashes into train
    out = tmp_path / "out"
    h.build(midi, out, label_scope="window", **WINDOWS)
    rep = verify(out)
    assert rep.ok, rep.failures
    text = "\n".join(rep.lines)
    assert "label_scope window" in text and "within-file std" in text
    # the same rows declared file-scoped: verify sees that one file has several labels
    info_path = out / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["params"]["label_scope"] = "file"
    info_path.write_text(json.dumps(info))
    rep = verify(out)
    assert any(f.startswith("FAIL labels_per_file") for f in rep.failures), rep.failures


def test_a_resumed_build_reads_window_labels_from_the_cache(tmp_path, monkeypatch):

    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=200)
    kw = dict(label_scope="window", cache=True, cache_dir=tmp_path / "cache", **WINDOWS)
    h.build(midi, tmp_path / "one", **kw)

    def no_decoding(*args, **kwargs):
        raise AssertionError("window labels were computed again despite the cache")

    monkeypatch.setattr(varemi.corpus.job, "window_labels", no_decoding)
    h.build(midi, tmp_path / "two", **kw)
    h.same_data(tmp_path / "one", tmp_path / "two")
    assert h.info(tmp_path / "two")["cache"].get("hit") == 3
    # other window parameters are another cache entry: computed, not reused
    with pytest.raises(AssertionError, match="computed again"):
        h.build(midi, tmp_path / "three", **{**kw, "stride": 128})


def test_one_worker_and_two_give_the_same_rows(tmp_path):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    h.write_tiny_corpus(midi, ["a.mid", "b.mid", "c.mid"], notes=200)
    kw = dict(label_scope="window", jitter=0.05, **WINDOWS)
    h.build(midi, tmp_path / "w1", workers=1, **kw)
    h.build(midi, tmp_path / "w2", workers=2, **kw)
    h.same_data(tmp_path / "w1", tmp_path / "w2")
    # and through a shared cache, the workers reading it themselves
    cached = dict(kw, cache=True, cache_dir=tmp_path / "cache")
    h.build(midi, tmp_path / "c1", workers=2, **cached)
    h.build(midi, tmp_path / "c2", workers=2, **cached)
    h.same_data(tmp_path / "w1", tmp_path / "c2")


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(label_scope="bar"), "--label-scope must be one of file, window"),
        (dict(label_scope="window", labels="LABELS"), "per-file labels only"),
    ],
)
def test_refused_combinations_name_the_option(tmp_path, kw, words):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid"])
    if kw.get("labels") == "LABELS":
        kw = dict(kw, labels=h.write_labels(tmp_path / "l.csv", {"a.mid": (0.1, 0.2)}))
    p = h.params(midi, tmp_path / "out", **kw)
    with pytest.raises(VaremiError, match="--label-scope") as e:
        check_params(p)
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VaremiError, match="--label-scope"):
        h.build(midi, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_cli_builds_window_scope_and_refuses_a_bad_value(tmp_path):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    h.write_tiny_corpus(midi, ["b.mid"], notes=200)  # hashes into train
    out = tmp_path / "out"
    common = ["--midi-dir", midi, "--tokenizer", "builtin", "--no-cache", "--quiet"]
    common += ["--window-size", "256", "--stride", "256", "--min-window-tokens", "64"]
    res = h.run_cli("build", *common, "--out", out, "--label-scope", "window", "--workers", "1")
    assert res.returncode == 0, res.stderr
    info = h.info(out)
    assert info["params"]["label_scope"] == "window"
    assert len({r["valence_bin"] for r in all_rows(out)}) > 1
    res = h.run_cli("build", *common, "--out", tmp_path / "bad", "--label-scope", "song")
    assert res.returncode != 0
    assert h.error_lines(res.stderr) == [
        "error: --label-scope must be one of file, window, got 'song'"
    ]
    res = h.run_cli("verify", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "label_scope window" in res.stdout


def test_quantile_bins_are_cut_over_the_windows_labels(tmp_path):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=200)
    out = tmp_path / "out"
    h.build(midi, out, label_scope="window", binning="quantile", **WINDOWS)
    rows = all_rows(out)
    edges = h.info(out)["labels"]["binning_edges"]
    for axis in ("valence", "arousal"):
        values = np.array([r[axis] for r in rows], dtype=np.float64)
        # the edges are those of the rows' own (window) labels, not of the three files'
        want = conditioning.quantile_edges(values, 9)
        assert np.allclose(edges[axis], want, atol=1e-6)
        got = np.array([r[f"{axis}_bin"] for r in rows])
        want_bins = conditioning.discretise_quantile(values, np.array(edges[axis]), 9)
        # rows hold float32 labels: one equal to an edge may round to either side of it
        clear = np.abs(values[:, None] - np.array(edges[axis])[None, :]).min(axis=1) > 1e-6
        assert clear.any()
        assert (got[clear] == want_bins[clear]).all()
    rep = verify(out)
    assert rep.ok, rep.failures


def test_window_bins_sit_after_bos_with_bos(tmp_path):
    midi = tmp_path / "midi"
    write_mood_change(midi / "mood.mid")
    h.write_tiny_corpus(midi, ["b.mid"], notes=200)
    out = tmp_path / "out"
    info = h.build(midi, out, label_scope="window", bos=True, **WINDOWS).info
    cond_base = info["conditioning_tokens"]["[VAL=-4]"]
    bos = info["special_tokens"]["BOS"]
    for row in all_rows(out):
        assert row["input_ids"][0] == bos
        vb, ab = row["valence_bin"], row["arousal_bin"]
        assert row["input_ids"][1:3] == h.cond_ids(cond_base, 9, vb, ab)
    assert len({(r["valence_bin"], r["arousal_bin"]) for r in all_rows(out)}) > 2
    rep = verify(out)
    assert rep.ok, rep.failures
