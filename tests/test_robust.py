"""Build and labels robustness (issue 8): dying workers, odd names, unsafe outputs.

Every build here is offline (built-in tokenizer, generated MIDI, no user cache).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import helpers as h  # noqa: E402
import pytest

import varemi.corpus.cache as cache
import varemi.corpus.job as vc
import varemi.dataset.export as ve
import varemi.dataset.staging as vo
import varemi.labelling.heuristic as heuristic
import varemi.music.encoder as enc
import varemi.music.files as files
import varemi.pipeline.build as vb
from varemi._base import native
from varemi.dataset.verify import verify

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

    main = os.getpid()
    real = files.parse_midi

    def parse(data: bytes):
        if marker in data and os.getpid() != main:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(data)

    monkeypatch.setattr(files, "parse_midi", parse)
    monkeypatch.setattr(enc, "parse_midi", parse)
    monkeypatch.setattr(heuristic, "parse_midi", parse)


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
    from varemi.labelling.heuristic import label_folder

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

    if native.PURE_PYTHON:
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


# --------------------------------------------------------------------------- the output folder
def built(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A corpus and a first dataset built from it, with a snapshot of that dataset."""
    midi, out = tmp_path / "midi", tmp_path / "out"
    corpus(midi)
    h.build(midi, out, **SMALL)
    return midi, out, h.snapshot(out)


def test_overwrite_refuses_inputs_inside_the_old_output(tmp_path):
    from varemi._base.errors import OutputFolderError

    midi, out, _ = built(tmp_path)
    inner = out / "midi"
    corpus(inner)
    (out / "sub").mkdir()
    (out / "sub" / "l.csv").write_bytes((out / "labels.csv").read_bytes())
    before = h.snapshot(out)
    cases = [
        (dict(midi_dir=inner), "--midi-dir"),
        (dict(labels=out / "sub" / "l.csv"), "--labels"),
        (dict(cache=True, cache_dir=out / "cache"), "--cache-dir"),
    ]
    for kw, option in cases:
        args = {"midi_dir": midi, **kw}
        with pytest.raises(OutputFolderError, match=f"{option} .* lies inside --out"):
            h.build(args.pop("midi_dir"), out, overwrite=True, **SMALL, **args)
        assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_overwrite_with_the_outputs_own_edited_labels_keeps_them(tmp_path):
    midi, out, _ = built(tmp_path)
    edited = out / "labels.csv"
    names = [line.split(",")[0] for line in edited.read_text(encoding="utf-8").splitlines()[1:]]
    h.write_labels(edited, {n: (-1.0, 1.0) for n in names})
    text = edited.read_bytes()
    h.build(midi, out, labels=edited, overwrite=True, **SMALL)
    assert edited.read_bytes() == text  # the edited CSV survived the swap
    rows = [r for rs in h.rows(out).values() for r in rs]
    assert rows and {(r["valence_bin"], r["arousal_bin"]) for r in rows} == {(-4, 4)}
    assert verify(out).ok


def test_unusable_cache_folder_warns_once_and_builds_without_it(tmp_path):
    midi = tmp_path / "midi"
    corpus(midi)
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    common = ["build", "--midi-dir", midi, "--tokenizer", "builtin", "--workers", "1", "--quiet"]
    common += ["--window-size", "16", "--stride", "8", "--min-window-tokens", "4"]
    runs = [
        (["--cache-dir", afile / "cache"], h.subprocess_env()),
        ([], h.subprocess_env(XDG_CACHE_HOME="/proc/varemi-no-such-dir")),
    ]
    for k, (extra, env) in enumerate(runs):
        out = tmp_path / f"out{k}"
        r = h.run_cli(*common, "--out", out, *extra, env=env)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
        assert len([w for w in warnings if "token cache" in w]) == 1, r.stderr
        assert h.info(out)["cache"] == {"dir": None, "off": 6}
        assert verify(out).ok


def test_a_build_that_keeps_no_file_fails_and_keeps_the_previous_output(tmp_path):
    midi, out, before = built(tmp_path)
    header_only = h.write_labels(tmp_path / "l.csv", {})
    r = h.run_cli(
        "build", "--midi-dir", midi, "--out", out, "--labels", header_only, "--overwrite",
        "--tokenizer", "builtin", "--no-cache", "--workers", "1", "--quiet",
        "--window-size", "16", "--stride", "8", "--min-window-tokens", "4",
    )  # fmt: skip
    assert r.returncode == 2
    assert h.error_lines(r.stderr) == [
        f"error: no file was kept: 6 seen, 6 rejected (unlabelled: 6); "
        f"nothing was written to --out {out}"
    ]
    assert "Traceback" not in r.stderr
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_an_empty_val_split_is_a_warning(tmp_path, capsys):
    midi, out = tmp_path / "midi", tmp_path / "out"
    corpus(midi)
    h.build(midi, out, **SMALL)  # seed 42 hashes none of these six files into val
    assert h.info(out)["counts"]["examples"]["val"] == 0
    err = capsys.readouterr().err
    assert "warning: the val split is empty: none of the 6 kept files hashed into it" in err
    h.build(midi, tmp_path / "all_train", train_split=1.0, **SMALL)  # asked for: no warning
    assert "warning" not in capsys.readouterr().err


def cli_build(midi: Path, out, *extra: str) -> int:
    from varemi.cli import main

    args = ["build", "--midi-dir", str(midi), "--out", str(out), "--tokenizer", "builtin"]
    args += ["--no-cache", "--quiet", "--window-size", "16", "--stride", "8"]
    args += ["--min-window-tokens", "4", *extra]
    return main(args)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch, capsys, workers):
    import time

    midi, out, before = built(tmp_path)
    main, pids = os.getpid(), tmp_path / "pids"
    real = vc.encode_midi

    def encode_then_terminate(*args, **kw):
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        if os.getpid() == main:
            os.kill(main, signal.SIGTERM)
        else:  # a worker: tell the main process, then hang as a long file would
            os.kill(main, signal.SIGTERM)
            time.sleep(120)
        return real(*args, **kw)

    monkeypatch.setattr(vc, "encode_midi", encode_then_terminate)
    previous = signal.getsignal(signal.SIGTERM)
    rc = cli_build(midi, out, "--overwrite", "--workers", workers)
    assert rc == 143
    assert "terminated: nothing was replaced" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == previous
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []
    for pid in {int(x) for x in pids.read_text().split()} - {main}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the workers were stopped (and reaped)


DEAD_PID = 4_194_304 + 17  # above Linux's largest pid_max: never alive


def test_staging_folders_of_dead_builds_are_removed(tmp_path):
    midi, out, _ = built(tmp_path)
    dead = [tmp_path / f".out.varemi-tmp-{DEAD_PID}", tmp_path / f".out.varemi-old-{DEAD_PID}"]
    alive = tmp_path / f".out.varemi-tmp-{os.getppid()}"  # a build still running
    for folder in [*dead, alive]:
        folder.mkdir()
        (folder / "x").write_text("x", encoding="utf-8")
    h.build(midi, out, overwrite=True, **SMALL)
    assert leftovers(tmp_path) == [alive.name]
    assert verify(out).ok


def test_a_dataset_set_aside_by_a_killed_swap_is_restored(tmp_path):
    from varemi._base.errors import OutputFolderError

    midi, out, before = built(tmp_path)
    aside = tmp_path / f".out.varemi-old-{DEAD_PID}"
    out.rename(aside)  # killed between the two renames of its swap: no `out`
    with pytest.raises(OutputFolderError, match="--overwrite"):
        h.build(midi, out, **SMALL)
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_out_dot_builds_into_the_current_folder(tmp_path, monkeypatch):
    midi = tmp_path / "midi"
    corpus(midi)
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    assert cli_build(midi, ".") == 0
    assert here.stat().st_ino == inode and Path.cwd() == here
    assert verify(here).ok
    assert leftovers(here) == [] and leftovers(tmp_path) == []
    before = h.snapshot(here)
    assert cli_build(midi, ".", "--overwrite", "--window-size", "32") == 0
    assert here.stat().st_ino == inode
    assert h.snapshot(here) != before and h.info(here)["params"]["window_size"] == 32
    assert verify(here).ok
    assert leftovers(here) == [] and leftovers(tmp_path) == []


def test_a_mount_point_is_written_into(tmp_path, monkeypatch):

    midi, mnt = tmp_path / "midi", tmp_path / "mnt"
    corpus(midi)
    mnt.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(vo.os.path, "ismount", lambda p: Path(p) == mnt or real(p))
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        assert Path(src) != mnt and Path(dst) != mnt, "a mount point cannot be renamed"
        renames.append(src)
        return real_replace(src, dst)

    monkeypatch.setattr(vo.os, "replace", replace)
    h.build(midi, mnt, **SMALL)
    h.build(midi, mnt, overwrite=True, **{**SMALL, "window_size": 32})
    assert renames and h.info(mnt)["params"]["window_size"] == 32
    assert verify(mnt).ok
    assert leftovers(mnt) == [] and leftovers(tmp_path) == []


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):

    midi = tmp_path / "midi"
    corpus(midi)
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")

    def no_work(*a, **kw):
        raise AssertionError("work started")

    monkeypatch.setattr(vb, "_load_tokenizer", no_work)
    from varemi._base.errors import OutputFolderError

    with pytest.raises(OutputFolderError, match=f"--out {afile / 'out'}: cannot write into"):
        h.build(midi, afile / "out", **SMALL)
    assert afile.read_text(encoding="utf-8") == "x"


def test_a_failed_swap_restores_the_previous_output(tmp_path, monkeypatch):
    from varemi._base.errors import OutputFolderError

    midi, out, before = built(tmp_path)
    real = os.replace

    def replace(src, dst):
        if ".varemi-tmp-" in str(src):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(vo.os, "replace", replace)
    with pytest.raises(OutputFolderError, match="Input/output error"):
        h.build(midi, out, overwrite=True, **{**SMALL, "window_size": 32})
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_a_full_disk_is_one_error_line(tmp_path, monkeypatch, capsys):
    import errno

    midi, out, before = built(tmp_path)

    def full(self, batch):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.folder))

    monkeypatch.setattr(ve.SplitWriter, "write", full)
    capsys.readouterr()
    assert cli_build(midi, out, "--overwrite", "--workers", "1") == 2
    err = capsys.readouterr().err
    assert h.error_lines(err) == err.strip().splitlines()
    assert len(h.error_lines(err)) == 1
    line = h.error_lines(err)[0]
    assert f"--out {out}" in line and "No space left on device" in line
    assert h.snapshot(out) == before
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- quantile bins
def test_quantile_edges_share_one_bin_per_tie_by_mid_rank():
    import numpy as np

    from varemi.core.conditioning import discretise_quantile, quantile_edges

    def bins(v, b=9):
        v = np.asarray(v, dtype=np.float64)
        return discretise_quantile(v, quantile_edges(v, b), b).tolist()

    assert bins([-1.0] * 5 + [1.0] * 5) == [-2] * 5 + [2] * 5  # sign-only labels
    assert bins([0.7] * 6) == [0] * 6  # all equal: the neutral bin
    assert bins([-1.0] * 9 + [1.0]) == [0] * 9 + [4]
    assert bins([-0.5, -0.5, 0.0, 0.5, 0.5], 3) == [-1, -1, 0, 1, 1]
    distinct = np.linspace(-1, 1, 27)
    assert bins(distinct) == [k // 3 - 4 for k in range(27)]  # equal counts
    assert bins([]) == []


def test_quantile_build_with_tied_labels(tmp_path, capsys):
    midi = tmp_path / "midi"
    names = corpus(midi, 8)
    signs = {n: (-1.0 if k % 2 else 1.0, 0.25) for k, n in enumerate(names)}
    labels = h.write_labels(tmp_path / "l.csv", signs)
    out = tmp_path / "q"
    h.build(midi, out, labels=labels, binning="quantile", **SMALL)
    err = capsys.readouterr().err
    assert "warning: --binning quantile: the valence labels use 2 of 9 bins" in err
    assert "warning: --binning quantile: the arousal labels use 1 of 9 bins" in err
    rows = [r for rs in h.rows(out).values() for r in rs]
    got = {r["source_file"]: (r["valence_bin"], r["arousal_bin"]) for r in rows}
    assert got == {n: (-2 if v < 0 else 2, 0) for n, (v, _) in signs.items()}
    assert not (out / "_quantile_ids.i32").exists()
    # the music tokens went through the spill file unchanged
    uniform = tmp_path / "u"
    h.build(midi, uniform, labels=labels, **SMALL)
    strip = {
        s: [(r["source_file"], r["input_ids"][2:]) for r in rs] for s, rs in h.rows(out).items()
    }
    assert strip == {
        s: [(r["source_file"], r["input_ids"][2:]) for r in rs] for s, rs in h.rows(uniform).items()
    }
    assert verify(out).ok


def test_two_dying_files_among_many_cost_two_files(tmp_path, monkeypatch):
    from varemi.labelling.heuristic import label_folder

    midi = tmp_path / "midi"
    names = corpus(midi, 14)
    for name in ("t1_crash.mid", "t9_crash.mid"):
        h.write_midi(midi / name, h.track(h.melody(30, seed=5), name="CRASHME"))
    crash_in_workers_on(monkeypatch, b"CRASHME")
    df, rejects = label_folder(midi, workers=2, progress=False)
    assert [r[:2] for r in rejects] == [("t1_crash.mid", "crashed"), ("t9_crash.mid", "crashed")]
    ref, _ = label_folder(midi, files=names, workers=1, progress=False)
    assert df.equals(ref)
