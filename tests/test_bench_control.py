"""scripts/bench_control.py runs end to end at toy size, and its pieces do what they say.

The figures of the ablation are in the README; this holds the script's machinery: the
cached pre-trained model and datasets, the arms, the table, the key-to-C probe.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import REPO  # noqa: E402

from varemi.music.demo import write_demo_corpus  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
import bench_control as bc  # noqa: E402


def test_a_toy_ablation_runs_and_reuses_what_it_made(tmp_path):
    corpus = tmp_path / "corpus"
    write_demo_corpus(corpus)
    work = tmp_path / "work"
    argv = ["--preset", "quick", "--corpus", str(corpus), "--work", str(work), "--files", "40",
            "--window", "64", "--pretrain-steps", "4", "--finetune-steps", "4",
            "--n-per-cell", "1", "--max-new-tokens", "16", "--grid", "2", "--arms",
            "cond-dropout,key-to-c"]  # fmt: skip
    assert bc.main(argv) == 0
    report = json.loads((work / "bench_control.json").read_text())
    rows = [(r["arm"], r["guidance"]) for r in report["arms"]]
    assert rows == [("cond-dropout", 1.0), ("cond-dropout", 1.5), ("cond-dropout", 3.0),
                    ("key-to-c", 1.0), ("key-to-c", 3.0)]  # fmt: skip
    assert report["arms"][0]["data"] == {"label_scope": "window", "window_align": "bar"}
    assert report["arms"][3]["data"]["corpus"] == "key-to-c"
    run = json.loads((work.glob("run-cond-dropout-*").__next__() / "run.json").read_text())
    assert run["params"]["cond_dropout"] == 0.2
    assert len(list(work.glob("pretrained-*"))) == 1  # one pre-trained model for all arms

    def made() -> dict:  # every folder (the report itself is rewritten each time)
        return {p.name: p.stat().st_mtime_ns for p in work.iterdir() if p.is_dir()}

    before = made()
    assert bc.main(argv) == 0  # again: every dataset, model and evaluation is reused
    assert made() == before


def test_key_to_c_moves_each_file_to_a_c_tonic(tmp_path):
    import symusic

    midi, out = tmp_path / "midi", tmp_path / "c"
    midi.mkdir()
    score = symusic.Score(480)
    track = symusic.Track("piano", 0, False)
    scale = [62, 64, 66, 67, 69, 71, 73, 74]  # D major, tonic D: two semitones above C
    for k, pitch in enumerate(scale * 4):
        track.notes.append(symusic.Note(k * 480, 480 if pitch % 12 != 2 else 960, pitch, 80))
    score.tracks.append(track)
    score.dump_midi(str(midi / "d.mid"))
    bc._key_to_c(midi, out)
    moved = symusic.Score(str(out / "d.mid")).tracks[0].notes.numpy()["pitch"]
    assert sorted(set(int(p) % 12 for p in moved)) == [0, 2, 4, 5, 7, 9, 11]  # C major
    assert int(np.min(moved)) == 60
