"""Build and labels robustness (issue 8): dying workers, odd names, unsafe outputs.

Every build here is offline (built-in tokenizer, generated MIDI, no user cache).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("symusic")
pytest.importorskip("miditok")
pytest.importorskip("datasets")

import helpers as h  # noqa: E402

from varemi.verify import verify  # noqa: E402

SMALL = dict(window_size=16, stride=8, min_window_tokens=4)


def corpus(folder: Path, n: int = 6) -> list[str]:
    return h.write_tiny_corpus(folder, [f"t{k}.mid" for k in range(n)], notes=40)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".varemi-" in p.name)


# --------------------------------------------------------------------------- dying workers
def crash_in_workers_on(monkeypatch, marker: bytes) -> None:
    """Make any worker process kill itself (SIGKILL) when it parses a file holding ``marker``.

    Workers are forked, so they inherit the patched parser; the main process never dies.
    """
    import varemi.encoder as enc
    import varemi.files as files

    main = os.getpid()
    real = files.parse_midi

    def parse(data: bytes):
        if marker in data and os.getpid() != main:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(data)

    monkeypatch.setattr(files, "parse_midi", parse)
    monkeypatch.setattr(enc, "parse_midi", parse)


def write_crasher(midi: Path) -> None:
    h.write_midi(midi / "t3_crash.mid", h.track(h.melody(40, seed=9), name="CRASHME"))


@pytest.mark.parametrize("labels", ["computed", "csv"])
def test_a_worker_that_dies_costs_one_file_in_build(tmp_path, monkeypatch, labels):
    midi, out = tmp_path / "midi", tmp_path / "out"
    names = corpus(midi)
    write_crasher(midi)
    kw = dict(SMALL)
    if labels == "csv":
        rows = {n: (0.1, -0.2) for n in [*names, "t3_crash.mid"]}
        kw["labels"] = h.write_labels(tmp_path / "labels.csv", rows)
    crash_in_workers_on(monkeypatch, b"CRASHME")
    h.build(midi, out, workers=2, **kw)
    assert h.rejects(out) == {"t3_crash.mid": "crashed"}
    info = h.info(out)
    assert info["counts"]["files_kept"] == len(names)
    assert info["counts"]["rejected_by_reason"] == {"crashed": 1}
    # the same rows as a build without the crashing file
    (midi / "t3_crash.mid").unlink()
    h.build(midi, tmp_path / "ref", workers=1, **kw)
    assert h.rows(out) == h.rows(tmp_path / "ref")
    assert leftovers(tmp_path) == []
    assert verify(out).ok


def test_a_worker_that_dies_costs_one_file_in_labels(tmp_path, monkeypatch):
    from varemi.labels import label_folder

    midi = tmp_path / "midi"
    names = corpus(midi)
    write_crasher(midi)
    crash_in_workers_on(monkeypatch, b"CRASHME")
    df, rejects = label_folder(midi, workers=2, progress=False)
    assert [r[:2] for r in rejects] == [("t3_crash.mid", "crashed")]
    assert list(df["filename"]) == names
    ref, _ = label_folder(midi, files=names, workers=1, progress=False)
    assert df.equals(ref)


# --------------------------------------------------------------------------- cache key
def test_token_key_names_the_native_build_and_the_dependency_versions(monkeypatch):
    from importlib.metadata import version

    import varemi.cache as cache
    from varemi import kernels

    if kernels.PURE_PYTHON:
        pytest.skip("pure-Python kernels: the native build is not loaded")
    from varemi import _native

    assert len(_native.source_hash) == 16 and int(_native.source_hash, 16) >= 0
    line = cache.encoder_version()
    for part in (
        f"native {_native.source_hash}",
        f"miditok {version('miditok')}",
        f"symusic {version('symusic')}",
    ):
        assert part in line
    args = ("0" * 64, "1" * 64, "clamp", (21, 108), "merge", "native")
    key = cache.token_key(*args)
    monkeypatch.setattr(cache, "encoder_version", lambda: line.replace("native ", "native x"))
    assert cache.token_key(*args) != key


# --------------------------------------------------------------------------- bad names
BAD = os.fsdecode(b"n/bad\xff.mid")  # not valid UTF-8: a surrogate in the str


def write_bad_name(midi: Path) -> None:
    (midi / "n").mkdir(parents=True, exist_ok=True)
    (midi / BAD).write_bytes((midi / "t0.mid").read_bytes())


@pytest.mark.parametrize("labels", ["computed", "csv"])
def test_a_name_that_is_not_utf8_is_rejected_as_bad_name_in_build(tmp_path, labels):
    midi, out = tmp_path / "midi", tmp_path / "out"
    names = corpus(midi)
    write_bad_name(midi)
    kw = dict(SMALL)
    if labels == "csv":
        kw["labels"] = h.write_labels(tmp_path / "labels.csv", {n: (0.5, 0.5) for n in names})
    h.build(midi, out, **kw)
    assert h.rejects(out) == {"n/bad\\xff.mid": "bad_name"}
    c = h.info(out)["counts"]
    assert (c["files_seen"], c["files_kept"], c["files_rejected"]) == (len(names) + 1, 6, 1)
    assert verify(out).ok


def test_a_name_that_is_not_utf8_is_rejected_as_bad_name_in_labels(tmp_path):
    midi = tmp_path / "midi"
    names = corpus(midi)
    write_bad_name(midi)
    r = h.run_cli("labels", "--midi-dir", midi, "--out", tmp_path / "l.csv", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "skipped n/bad\\xff.mid: bad_name" in r.stderr
    lines = (tmp_path / "l.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == names
