"""Edge cases of the command line a hostile or careless user hits (issue 8).

``labels --out`` that would replace a folder, a MIDI or someone's file; empty path
options; suspicious parameters that deserve a warning; the help text; the demo run
twice; dangling symlinks; and the default configuration (worker pool + the user
cache folder) end to end.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from pathlib import Path

import helpers as h  # noqa: E402
import pytest

QUICK = ("--tokenizer", "builtin", "--no-cache", "--workers", "1")
SMALL = ("--window-size", "16", "--stride", "8", "--min-window-tokens", "4")


@pytest.fixture(scope="module")
def midi(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("edges") / "midi"
    h.write_tiny_corpus(folder, ["001.mid", "002.mid", "sub/003.mid"], notes=40)
    return folder


def one_error(res: subprocess.CompletedProcess, option: str) -> str:
    """Assert a refusal: exit 2, one ``error:`` line naming ``option``, no traceback."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = h.error_lines(res.stderr)
    assert len(lines) == 1 and option in lines[0], res.stderr
    return lines[0]


# --------------------------------------------------------------------------- labels --out
def test_labels_out_at_a_folder_or_in_a_missing_folder(tmp_path, midi):
    folder = tmp_path / "existing"
    folder.mkdir()
    line = one_error(h.run_cli("labels", "--midi-dir", midi, "--out", folder), "--out")
    assert "folder" in line and list(folder.iterdir()) == []
    missing = tmp_path / "nowhere" / "labels.csv"
    line = one_error(h.run_cli("labels", "--midi-dir", midi, "--out", missing), "--out")
    assert "does not exist" in line and not (tmp_path / "nowhere").exists()


def test_labels_out_never_replaces_a_midi_file(tmp_path):
    midi = tmp_path / "m"
    h.write_tiny_corpus(midi, ["001.mid", "002.mid"], notes=30)
    before = h.snapshot(midi)
    res = h.run_cli("labels", "--midi-dir", midi, "--out", midi / "001.mid", "--quiet")
    one_error(res, "--out")
    # a MIDI file without a MIDI extension is refused by its content (not a labels CSV)
    raw = midi / "003"
    raw.write_bytes((midi / "002.mid").read_bytes())
    before["003"] = raw.read_bytes()
    res = h.run_cli("labels", "--midi-dir", midi, "--out", raw, "--quiet")
    assert "not a labels CSV" in one_error(res, "--out")
    assert h.snapshot(midi) == before


def test_labels_out_replaces_only_a_labels_csv(tmp_path, midi):
    notes = tmp_path / "notes.csv"
    notes.write_text("title,composer\nx,y\n", encoding="utf-8")
    res = h.run_cli("labels", "--midi-dir", midi, "--out", notes, "--quiet")
    assert "not a labels CSV" in one_error(res, "--out")
    assert notes.read_text(encoding="utf-8") == "title,composer\nx,y\n"

    old = h.write_labels(tmp_path / "labels.csv", {"001.mid": (0.1, 0.2)})
    res = h.run_cli("labels", "--midi-dir", midi, "--out", old, "--quiet", "--workers", "1")
    assert res.returncode == 0, res.stderr
    lines = old.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and lines[0].startswith("filename,valence,arousal")


def test_labels_out_may_be_a_new_csv_inside_the_midi_folder(tmp_path):
    midi = tmp_path / "m"
    h.write_tiny_corpus(midi, ["001.mid", "002.mid"], notes=30)
    res = h.run_cli("labels", "--midi-dir", midi, "--out", midi / "labels.csv", "--quiet",
                    "--workers", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "d", "--labels",
                    midi / "labels.csv", *QUICK, *SMALL, "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert h.info(tmp_path / "d")["counts"]["files_seen"] == 2  # the CSV is not a MIDI file


@pytest.mark.parametrize("command", ["labels", "build"])
def test_empty_midi_dir_is_refused_not_the_current_folder(tmp_path, command):
    h.write_tiny_corpus(tmp_path, ["here.mid"], notes=30)  # the current folder holds MIDI
    before = h.snapshot(tmp_path)
    out = ("--out", "labels.csv") if command == "labels" else ("--out", "data", *QUICK)
    res = h.run_cli(command, "--midi-dir", "", *out, cwd=tmp_path)
    assert "empty" in one_error(res, "--midi-dir")
    assert h.snapshot(tmp_path) == before


def test_empty_path_options_are_refused(tmp_path, midi):
    for args, option in [
        (("build", "--midi-dir", midi, "--out", "", *QUICK), "--out"),
        (("build", "--midi-dir", midi, "--out", "d", "--labels", "", *QUICK), "--labels"),
        (("build", "--midi-dir", midi, "--out", "d", "--cache-dir", ""), "--cache-dir"),
        (("labels", "--midi-dir", midi, "--out", ""), "--out"),
    ]:
        one_error(h.run_cli(*args, cwd=tmp_path), option)
    assert list(tmp_path.iterdir()) == []
    res = h.run_cli("verify", "", cwd=tmp_path)
    assert res.returncode == 2 and "dataset folder is empty" in res.stderr


def test_build_api_refuses_an_empty_midi_dir(tmp_path):
    from varemi._base.errors import VaremiError
    from varemi.pipeline.build import build
    from varemi.pipeline.params import BuildParams

    with pytest.raises(VaremiError, match="--midi-dir is empty"):
        build(BuildParams(midi_dir="", out=tmp_path / "d", tokenizer="builtin"))


# --------------------------------------------------------------------------- warnings
def warning_lines(stderr: str) -> list[str]:
    """The warning lines, less the empty-val one (these tiny corpora often have no val)."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("warning:") and not line.startswith("warning: the val split is empty")
    ]


def test_bins_1_and_stride_beyond_the_window_warn(tmp_path, midi):
    res = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "plain", *QUICK, *SMALL)
    assert res.returncode == 0 and warning_lines(res.stderr) == [], res.stderr

    res = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "one", *QUICK, *SMALL,
                    "--bins", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    (line,) = warning_lines(res.stderr)
    assert "--bins 1" in line and "no conditioning signal" in line
    assert h.info(tmp_path / "one")["conditioning_tokens"] == {"[VAL=+0]": 1000, "[ARO=+0]": 1001}

    gap = ("--window-size", "16", "--stride", "20", "--min-window-tokens", "4")
    res = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "gap", *QUICK, *gap)
    assert res.returncode == 0, res.stderr
    (line,) = warning_lines(res.stderr)
    assert "--stride 20" in line and "--window-size 16" in line and "4 tokens" in line


def test_bins_above_255_are_refused(tmp_path, midi):
    from varemi._base.errors import BinsError
    from varemi.core.conditioning import check_bins

    assert check_bins(255) == 127
    for bins in (257, 301):
        with pytest.raises(BinsError, match="at most 255"):
            check_bins(bins)
        out = tmp_path / f"b{bins}"
        res = h.run_cli("build", "--midi-dir", midi, "--out", out, *QUICK, "--bins", str(bins))
        assert "255" in one_error(res, "--bins")
        assert not out.exists()


def test_a_row_that_labels_two_files_by_basename_warns(tmp_path):
    from varemi.labelling.label_csv import LabelsCSVWarning, read_labels_csv

    path = h.write_labels(tmp_path / "l.csv", {"x.mid": (0.5, -0.5), "b/y.mid": (0.1, 0.1)})
    with pytest.warns(LabelsCSVWarning, match=r"'x.mid'.*2 different files.*a/x.mid, b/x.mid"):
        labels, rejects, _ = read_labels_csv(path, ["a/x.mid", "b/x.mid", "b/y.mid"])
    assert labels["a/x.mid"] == labels["b/x.mid"] == (0.5, -0.5) and rejects == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one row per file: no warning
        read_labels_csv(path, ["a/x.mid", "b/y.mid"])

    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a/x.mid", "b/x.mid", "b/y.mid"], notes=30)
    res = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "d", "--labels", path,
                    *QUICK, *SMALL)  # fmt: skip
    assert res.returncode == 0, res.stderr
    (line,) = warning_lines(res.stderr)
    assert "'x.mid'" in line and "a/x.mid, b/x.mid" in line


# --------------------------------------------------------------------------- files
def test_dangling_symlinks_are_listed_and_rejected_as_unreadable(tmp_path):
    from varemi.music.files import list_midi_files

    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=30)
    os.symlink(tmp_path / "gone.mid", midi / "gone.mid")
    os.symlink(tmp_path / "gone.txt", midi / "gone.txt")  # not a MIDI name: not listed
    assert list_midi_files(midi) == ["a.mid", "b.mid", "gone.mid"]

    out = tmp_path / "d"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, *QUICK, *SMALL, "--quiet")
    assert res.returncode == 0, res.stderr
    assert h.rejects(out) == {"gone.mid": "unreadable"}
    assert h.info(out)["counts"]["files_seen"] == 3

    res = h.run_cli("labels", "--midi-dir", midi, "--out", tmp_path / "l.csv", "--quiet",
                    "--workers", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert re.search(r"skipped gone\.mid: unreadable", res.stderr), res.stderr


# --------------------------------------------------------------------------- help, usage
def option_entries(help_text: str) -> list[str]:
    """Each option's entry of an argparse help text, continuation lines joined."""
    entries: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif entries and line.startswith("      ") and line.strip():
            entries[-1] += " " + line.strip()
        elif not line.strip():
            entries.append("")
    return [e for e in entries if e]


@pytest.mark.parametrize("command", ["labels", "build", "verify"])
def test_help_names_each_default_once_and_never_none(command):
    res = h.run_cli(command, "--help")
    assert res.returncode == 0, res.stderr
    assert "(default: None)" not in res.stdout and "(default: False)" not in res.stdout
    entries = option_entries(res.stdout)
    assert len(entries) >= 3
    for entry in entries:
        assert entry.count("default") <= 1, entry
    if command == "build":
        by_option = {e.split()[0].rstrip(","): e for e in entries}
        assert by_option["--window-size"].endswith("(default: 1024)")
        assert by_option["--workers"].endswith("processes (default: all cores)")


def test_no_command_is_a_usage_error():
    res = h.run_cli()
    assert res.returncode == 2
    assert res.stdout == "" and res.stderr.startswith("usage:")


# --------------------------------------------------------------------------- demo
def test_demo_twice_replaces_only_its_own_output(tmp_path, midi):
    args = ("build", "--no-cache", "--workers", "1", "--window-size", "64", "--stride", "64",
            "--min-window-tokens", "16")  # fmt: skip
    first = h.run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "varemi-demo" / "dataset"
    rows = h.tables(out)["train"].num_rows
    second = h.run_cli(*args, cwd=tmp_path)  # the README's one-liner, run again
    assert second.returncode == 0, second.stderr
    assert h.tables(out)["train"].num_rows == rows

    # the closing hint does not send anyone's own music to the builtin tokenizer
    hint = second.stderr[second.stderr.index("your own music:") :]
    assert "--tokenizer builtin" not in hint
    assert "Natooz/Maestro-REMI-bpe20k" in hint and "tokenizer.json" in hint
    assert "trying things out" in hint

    # a demo into a folder the user named is never replaced without --overwrite
    mine = tmp_path / "mine"
    assert h.run_cli(*args, "--out", mine, "--quiet", cwd=tmp_path).returncode == 0
    one_error(h.run_cli(*args, "--out", mine, cwd=tmp_path), "--overwrite")

    # nor is a user's dataset that sits where the demo writes
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, *QUICK, *SMALL, "--overwrite",
                    "--quiet", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    before = h.snapshot(out)
    one_error(h.run_cli(*args, cwd=tmp_path), "--overwrite")
    assert h.snapshot(out) == before


# --------------------------------------------------------------------------- defaults
def test_default_configuration_end_to_end(tmp_path, midi):
    """A worker pool (2 workers) and the token cache in the user cache folder."""
    home = tmp_path / "home"
    home.mkdir()
    env = h.subprocess_env(HOME=str(home))
    env.pop("XDG_CACHE_HOME", None)
    args = ("build", "--midi-dir", midi, "--tokenizer", "builtin", "--workers", "2", *SMALL)
    first = h.run_cli(*args, "--out", tmp_path / "first", env=env)
    assert first.returncode == 0, first.stderr
    cache = home / ".cache" / "varemi"
    info = h.info(tmp_path / "first")
    assert info["cache"]["dir"] == str(cache) and info["cache"]["miss"] == 3
    assert info["timings_seconds"]["workers"] == 2
    assert len(list(cache.rglob("*.tok"))) == 3

    second = h.run_cli(*args, "--out", tmp_path / "second", env=env)
    assert second.returncode == 0, second.stderr
    assert h.info(tmp_path / "second")["cache"].get("hit") == 3

    xdg = tmp_path / "xdg"
    third = h.run_cli(*args, "--out", tmp_path / "third", env={**env, "XDG_CACHE_HOME": str(xdg)})
    assert third.returncode == 0, third.stderr
    assert h.info(tmp_path / "third")["cache"]["dir"] == str(xdg / "varemi")

    h.build(midi, tmp_path / "reference", window_size=16, stride=8, min_window_tokens=4)
    for name in ("first", "second", "third"):
        h.same_data(tmp_path / "reference", tmp_path / name)
    verified = h.run_cli("verify", tmp_path / "second", env=env)
    assert verified.returncode == 0, verified.stdout
