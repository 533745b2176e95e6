"""``build --label-scope window``: each window labelled from the music its tokens hold."""

from __future__ import annotations

from pathlib import Path

import helpers as h
import numpy as np
import pytest

from varemi.errors import VaremiError

WINDOWS = dict(window_size=64, stride=32, min_window_tokens=16)
MAJOR = [60, 64, 67, 72, 67, 64]
MINOR = [57, 60, 64, 69, 64, 60]


@pytest.fixture(scope="module")
def midi(tmp_path_factory) -> Path:
    """Files whose first half is fast, loud and major, the second slow, soft and minor."""
    folder = tmp_path_factory.mktemp("win") / "midi"
    for k in range(6):
        bright = h.track([(p, p + 4, p + 7) for p in MAJOR * 4], step=120, duration=120,
                         velocity=110)  # fmt: skip
        dark = h.track([(p - 12, p - 9, p - 5) for p in MINOR * 2], start=24 * 120,
                       step=960, duration=960, velocity=40)  # fmt: skip
        bright.notes.extend(dark.notes)
        h.write_midi(folder / f"piece{k}.mid", bright, qpm=100 + 10 * k)
    h.write_tiny_corpus(folder, ["short.mid"], notes=30)
    return folder


@pytest.fixture(scope="module")
def built(midi, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("win") / "out"
    h.build(midi, out, label_scope="window", **WINDOWS)
    return out


def test_window_labels_are_those_of_each_decoded_window(built, midi):
    from miditok import REMI
    from symusic import Score

    from varemi.window_labels import window_labels

    info = h.info(built)
    assert info["format_version"] == 2
    assert info["params"]["label_scope"] == "window"
    tokenizer = REMI(params=h.builtin_tokenizer_path())
    file_rows = {r["filename"]: r for r in _labels_csv(built)}
    cond = list(info["conditioning_tokens"].values())
    rows = [r for split in h.rows(built).values() for r in split]
    varied = 0
    for name in sorted({r["source_file"] for r in rows}):
        mine = sorted((r for r in rows if r["source_file"] == name), key=lambda r: r["window_idx"])
        ids = np.array(h.music_ids(tokenizer, Score(midi / name)), dtype=np.int32)
        f = file_rows[name]
        v, a = window_labels(tokenizer, name, ids, (f["valence"], f["arousal"]),
                             f["tempo_bpm"], tuple(WINDOWS.values()))  # fmt: skip
        assert len(v) == len(mine)
        assert [r["valence"] for r in mine] == pytest.approx(v.astype(np.float32).tolist())
        assert [r["arousal"] for r in mine] == pytest.approx(a.astype(np.float32).tolist())
        for r in mine:  # the conditioning tokens are the window's bins
            assert r["valence_bin"] == int(np.round((r["valence"] + 1) * 4) - 4)
            prefix = [cond[r["valence_bin"] + 4], cond[9 + r["arousal_bin"] + 4]]
            assert r["input_ids"][:2] == prefix
        varied += len({(r["valence"], r["arousal"]) for r in mine}) > 1
    assert varied >= 6  # the bright and the dark halves get different labels


def _labels_csv(out: Path) -> list[dict]:
    import csv

    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        return [{k: (v if k == "filename" else float(v)) for k, v in r.items()}
                for r in csv.DictReader(fh)]  # fmt: skip


def test_bright_windows_score_above_dark_ones(built):
    rows = [r for rs in h.rows(built).values() for r in rs if r["source_file"] == "piece0.mid"]
    rows.sort(key=lambda r: r["window_idx"])
    assert rows[0]["valence"] > rows[-1]["valence"]
    assert rows[0]["arousal"] > rows[-1]["arousal"]


def test_windows_of_a_file_keep_its_split_and_verify_passes(built):
    from varemi.verify import verify

    splits = {}
    for split, rows in h.rows(built).items():
        for r in rows:
            splits.setdefault(r["source_file"], set()).add(split)
    assert all(len(s) == 1 for s in splits.values())
    for name, s in splits.items():
        assert s == {h.split_of(name)}
    rep = verify(built)
    assert rep.ok, rep.failures
    assert any(line.startswith("labels: per window") for line in rep.lines)


def test_window_scope_is_the_same_whatever_the_workers(built, midi, tmp_path):
    out = tmp_path / "out2"
    h.build(midi, out, label_scope="window", workers=2, **WINDOWS)
    h.same_data(built, out)


def test_file_scope_gives_every_window_its_files_labels(midi, tmp_path):
    out = tmp_path / "file"
    h.build(midi, out, **WINDOWS)
    assert h.info(out)["params"]["label_scope"] == "file"
    for rows in h.rows(out).values():
        per_file = {}
        for r in rows:
            per_file.setdefault(r["source_file"], set()).add((r["valence"], r["arousal"]))
        assert all(len(x) == 1 for x in per_file.values())


def test_window_scope_refuses_a_labels_csv(midi, tmp_path):
    from varemi.build import check_params

    csv_path = h.write_labels(tmp_path / "l.csv", {"piece0.mid": (0.5, 0.5)})
    with pytest.raises(VaremiError, match="--label-scope window .* --labels"):
        check_params(h.params(midi, tmp_path / "out", labels=csv_path, label_scope="window"))
    with pytest.raises(VaremiError, match="--label-scope must be one of"):
        check_params(h.params(midi, tmp_path / "out", label_scope="bar"))
    res = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "o", "--labels", csv_path,
                    "--label-scope", "window", "--tokenizer", "builtin", "--no-cache")  # fmt: skip
    assert res.returncode == 2 and len(h.error_lines(res.stderr)) == 1
    assert "Traceback" not in res.stderr
