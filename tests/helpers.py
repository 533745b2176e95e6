"""Shared helpers of the pipeline tests: tiny MIDI files, CLI runs, dataset readers.

Everything here is offline: MIDI files are generated with symusic, the tokenizer is the
built-in one, and every build either disables the token cache or points it at a
temporary folder.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import varemi

REPO = Path(__file__).resolve().parents[1]
"""The checkout the tests run from (its docs and pyproject.toml; varemi may be installed)."""
SHARED = REPO.parent / "shared"
CORPORA = SHARED / "corpora"
CHECKER = SHARED / "tools" / "check_dataset.py"

# Where the varemi under test lives, so subprocesses import the very same package
# (an installed wheel, or python/ of a source tree run with PYTHONPATH).
VAREMI_ROOT = Path(varemi.__file__).resolve().parents[1]

REQUIRED_INFO_KEYS = (
    "format_version",
    "varemi_version",
    "tokenizer",
    "conditioning_tokens",
    "params",
    "counts",
)
REQUIRED_PARAMS = (
    "window_size",
    "stride",
    "min_window_tokens",
    "bins",
    "binning",
    "train_split",
    "seed",
    "pitch_policy",
    "pitch_range",
    "tracks",
)
COLUMNS = {
    "input_ids": "list<item: int32>",
    "valence": "float",
    "arousal": "float",
    "valence_bin": "int8",
    "arousal_bin": "int8",
    "source_file": "string",
    "window_idx": "int32",
    "augmentation": "string",
}


# --------------------------------------------------------------------------- processes
def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a varemi subprocess: offline, same package, no user cache."""
    env = dict(os.environ)
    site_dirs = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    if VAREMI_ROOT not in site_dirs:  # a source tree: put it first, as in this process
        env["PYTHONPATH"] = os.pathsep.join(
            [str(VAREMI_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env.update(extra)
    return env


def run_cli(
    *args: str | os.PathLike,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run ``python -m varemi ARGS`` and capture its output (text)."""
    return subprocess.run(
        [sys.executable, "-m", "varemi", *map(str, args)],
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(stderr: str) -> list[str]:
    """The ``error: ...`` lines of a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def run_checker(
    out: Path,
    midi_dir: Path,
    *extra: str | os.PathLike,
    labels: Path | None = None,
    tokenizer: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run the shared contract checker (against the builtin tokenizer unless told).

    Skips the calling test when ``../shared`` is absent (a user's clone), so a call
    left unguarded cannot fail the suite there; guard optional checks with
    ``if CHECKER.is_file():`` to keep the rest of a test running.
    """
    if not CHECKER.is_file():
        pytest.skip("../shared/tools/check_dataset.py absent")
    args = [
        sys.executable,
        str(CHECKER),
        "--out",
        str(out),
        "--midi-dir",
        str(midi_dir),
        "--tokenizer",
        str(tokenizer or builtin_tokenizer_path()),
        *map(str, extra),
    ]
    if labels is not None:
        args += ["--labels", str(labels)]
    return subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=600)


def checker_passed(result: subprocess.CompletedProcess) -> bool:
    lines = result.stdout.strip().splitlines()
    return result.returncode == 0 and bool(lines) and lines[-1] == "check: PASS"


# --------------------------------------------------------------------------- MIDI files
def track(
    pitches, *, start=0, step=240, duration=240, velocity=80, program=0, is_drum=False, name="piano"
):
    """A symusic track of one note per step (a chord when an item is a tuple)."""
    from symusic import Note, Track

    t = Track(name=name, program=program, is_drum=is_drum)
    for k, p in enumerate(pitches):
        for q in p if isinstance(p, tuple) else (p,):
            t.notes.append(Note(start + k * step, duration, q, velocity))
    return t


def score(*tracks, qpm: float = 120.0):
    """A 480-ticks-per-quarter score holding ``tracks``."""
    from symusic import Score, Tempo

    s = Score(480)
    s.tempos.append(Tempo(0, qpm=qpm))
    for t in tracks:
        s.tracks.append(t)
    return s


def write_midi(path: Path, *tracks, qpm: float = 120.0) -> Path:
    """Write a score of ``tracks`` to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    score(*tracks, qpm=qpm).dump_midi(path)
    return path


def melody(n: int, seed: int = 0, low: int = 48, high: int = 84) -> list[int]:
    """``n`` deterministic pitches in ``low..high``."""
    rng = np.random.default_rng(seed)
    return [int(p) for p in rng.integers(low, high + 1, size=n)]


def write_tiny_corpus(folder: Path, names, notes: int = 24) -> list[str]:
    """One short single-track file per name, each with a different melody."""
    for k, name in enumerate(names):
        write_midi(folder / name, track(melody(notes + k % 5, seed=k)))
    return sorted(names)


# --------------------------------------------------------------------------- tokenizer
def builtin_tokenizer_path() -> Path:
    from varemi.music.tokenizer import builtin_tokenizer_path as path

    return path()


def base_tokenizer():
    """A fresh builtin base tokenizer (no conditioning tokens)."""
    from miditok import REMI

    return REMI(params=builtin_tokenizer_path())


def music_ids(tokenizer, s) -> list[int]:
    """The token ids MidiTok gives the first (only) track sequence of a score."""
    result = tokenizer.encode(s)
    seqs = result if isinstance(result, list) else [result]
    return [int(i) for i in seqs[0].ids] if seqs else []


def cond_ids(base: int, bins: int, v: int, a: int) -> list[int]:
    """Contract 1: [VAL=v] is base + v + h, [ARO=a] is base + B + a + h."""
    h = (bins - 1) // 2
    return [base + v + h, base + bins + a + h]


def expected_windows(n: int, w: int, s: int, m: int) -> list[int]:
    """Contract 5, written out: the kept window starts of a file of n ids."""
    starts = []
    i = 0
    while True:
        if min(w, n - i) >= m:
            starts.append(i)
        if i + w >= n:
            return starts
        i += s


def split_of(rel: str, seed: int = 42, train_split: float = 0.9) -> str:
    """Contract 6 with hashlib: which split a file belongs to."""
    h = int.from_bytes(
        hashlib.blake2b(
            rel.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little")
        ).digest(),
        "little",
    )
    return "val" if h < math.floor((1 - train_split) * 2**64) else "train"


# --------------------------------------------------------------------------- datasets
def load(out: Path):
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_from_disk(str(out))


def tables(out: Path) -> dict:
    """Each split of a dataset as one pyarrow table."""
    dd = load(out)
    return {s: dd[s].data.table.combine_chunks() for s in ("train", "val")}


def rows(out: Path) -> dict[str, list[dict]]:
    return {s: t.to_pylist() for s, t in tables(out).items()}


def info(out: Path) -> dict:
    import json

    return json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))


def rejects(out: Path) -> dict[str, str]:
    """``rejects.csv`` as {source_file: reason}."""
    with open(out / "rejects.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["source_file", "reason", "detail"]
        return {r["source_file"]: r["reason"] for r in reader}


def same_data(a: Path, b: Path) -> None:
    """Assert two datasets hold identical Arrow tables and counts."""
    ta, tb = tables(a), tables(b)
    for s in ("train", "val"):
        assert ta[s].schema == tb[s].schema, s
        assert ta[s].equals(tb[s]), s
    ia, ib = info(a), info(b)
    for key in ("conditioning_tokens", "counts", "histograms", "tokenizer"):
        assert ia[key] == ib[key], key
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_labels(path: Path, labels: dict[str, tuple], header=("filename", "valence", "arousal")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for name, values in labels.items():
            w.writerow([name, *values])
    return path


def params(midi_dir: Path, out: Path, **kw):
    """BuildParams for a quick offline in-process build (builtin tokenizer, no cache)."""
    from varemi.pipeline.params import BuildParams

    defaults = dict(tokenizer="builtin", workers=1, cache=False, quiet=True)
    defaults.update(kw)
    return BuildParams(midi_dir=Path(midi_dir), out=Path(out), **defaults)


def build(midi_dir: Path, out: Path, **kw):
    from varemi.pipeline.build import build as run_build

    return run_build(params(midi_dir, out, **kw))
