"""End to end over the real corpora in ../shared/corpora, checked by the shared checker.

Skipped when ../shared (beside the project root) is absent, as in a user's fresh clone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import helpers as h
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not h.CORPORA.is_dir(), reason="../shared/corpora absent"),
    pytest.mark.skipif(not h.CHECKER.is_file(), reason="../shared/tools/check_dataset.py absent"),
]

BUILD = ("--tokenizer", "builtin", "--workers", "2", "--no-cache", "--quiet")


def build_cli(midi: Path, out: Path, *args) -> None:
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, *BUILD, *args)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr


def verify_cli(out: Path) -> None:
    res = h.run_cli("verify", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "verify: OK"


def assert_checker_passes(out: Path, midi: Path, *args, labels: Path | None = None) -> None:
    res = h.run_checker(out, midi, "--workers", "2", *args, labels=labels)
    assert h.checker_passed(res), res.stdout + res.stderr


# --------------------------------------------------------------------------- pop909
@pytest.fixture(scope="module")
def pop909(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pop909") / "dataset"
    build_cli(h.CORPORA / "pop909", out)
    return out


def test_pop909_builds_and_verifies(pop909):
    c = h.info(pop909)["counts"]
    assert c["files_seen"] == 909
    assert c["files_rejected"] == 0 and h.rejects(pop909) == {}
    assert c["files_kept"] == c["files"]["train"] + c["files"]["val"] > 900
    assert c["examples"]["train"] > 5000 and c["examples"]["val"] > 300
    verify_cli(pop909)


def test_pop909_passes_the_checker(pop909):
    assert_checker_passes(pop909, h.CORPORA / "pop909", "--sample", "150")


def test_pop909_splits_follow_the_rule(pop909):
    for split, t in h.tables(pop909).items():
        for name in set(t.column("source_file").to_pylist()):
            assert h.split_of(name) == split, name


# --------------------------------------------------------------------------- edge cases
@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """Copies of miditok_tests/ and odd/ (corrupt, empty, multitrack) and a symlink loop."""
    midi = tmp_path_factory.mktemp("odd") / "midi"
    for name in ("miditok_tests", "odd"):
        shutil.copytree(h.CORPORA / name, midi / name)
    (midi / "odd" / "loop").symlink_to("..", target_is_directory=True)
    (midi / "x.mid").write_bytes(bytes(range(256)) * 3)  # random-looking bytes
    (midi / "zero.mid").write_bytes(b"")
    return midi


def test_odd_files_are_rejected_and_the_rest_passes_the_checker(odd_folder, tmp_path):
    out = tmp_path / "out"
    build_cli(odd_folder, out)
    rejected = h.rejects(out)
    assert {
        "x.mid",
        "zero.mid",
        "miditok_tests/MIDIs_corrupted/ValueError_Control168.mid",
        "odd/MIDIs_corrupted/ValueError_Control168.mid",
        "miditok_tests/MIDIs_one_track/empty.mid",
    } <= set(rejected)
    assert rejected["x.mid"] == "unreadable" and rejected["zero.mid"] == "unreadable"
    c = h.info(out)["counts"]
    assert c["files_rejected"] == len(rejected)
    assert sum(c["rejected_by_reason"].values()) == len(rejected)
    kept = {f for t in h.tables(out).values() for f in t.column("source_file").to_pylist()}
    assert not kept & set(rejected)
    assert "miditok_tests/MIDIs_multitrack/Funkytown.mid" in kept
    assert not any("loop" in f for f in kept)  # the symlink loop is not walked again
    assert c["files_seen"] == len(kept) + len(rejected) + c["files_without_windows"]
    verify_cli(out)
    assert_checker_passes(out, odd_folder)


# --------------------------------------------------------------------------- vgmidi
def test_vgmidi_with_human_labels_passes_the_checker(tmp_path):
    midi = h.CORPORA / "vgmidi" / "phrases"
    labels = h.CORPORA / "vgmidi" / "human_labels.csv"
    out = tmp_path / "out"
    build_cli(midi, out, "--labels", labels)
    info = h.info(out)
    assert info["labels"]["source"] == "csv"
    assert not (out / "labels.csv").exists()
    for t in h.tables(out).values():
        assert set(t.column("valence").to_pylist()) <= {-1.0, 1.0}
        assert set(t.column("valence_bin").to_pylist()) <= {-4, 4}
        assert set(t.column("arousal_bin").to_pylist()) <= {-4, 4}
    assert info["counts"]["files_seen"] == 204
    verify_cli(out)
    assert_checker_passes(out, midi, labels=labels)


# --------------------------------------------------------------------------- native encoder
@pytest.mark.parametrize("corpus", ["pop909", "odd"])
def test_native_encoder_builds_exactly_what_miditok_builds(corpus, pop909, odd_folder, tmp_path):
    """A whole build with --encoder native is identical to one with --encoder miditok."""
    midi = h.CORPORA / "pop909" if corpus == "pop909" else odd_folder
    native = pop909 if corpus == "pop909" else tmp_path / "native"
    if corpus != "pop909":
        build_cli(midi, native, "--encoder", "native")
    assert h.info(native)["encoder"]["used"] == "native"
    miditok = tmp_path / "miditok"
    build_cli(midi, miditok, "--encoder", "miditok")
    assert h.info(miditok)["encoder"] == {
        "requested": "miditok",
        "used": "miditok",
        "fallback": None,
    }
    h.same_data(native, miditok)
    assert h.rejects(native) == h.rejects(miditok)
