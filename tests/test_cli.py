"""The command line, run for real: ``python -m varemi labels | build | verify``."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import helpers as h  # noqa: E402
import pytest

import varemi  # noqa: E402
import varemi.pipeline.build as vb
from varemi.music.demo import write_demo_corpus

QUICK = ("--tokenizer", "builtin", "--no-cache", "--quiet", "--workers", "1")
SMALL = ("--window-size", "16", "--stride", "8", "--min-window-tokens", "4")


@pytest.fixture(scope="module")
def midi(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "midi"
    h.write_tiny_corpus(folder, [f"m{k}.mid" for k in range(5)] + ["sub/n.mid"], notes=40)
    return folder


def one_error(res, *words: str) -> str:
    """Assert a refusal: exit 2, exactly one ``error:`` line naming ``words``, no traceback."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = h.error_lines(res.stderr)
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    plain = re.sub(r"[-_ ]+", " ", lines[0].lower())
    for w in words:
        if w.startswith("--"):  # an option must be named as the user typed it
            assert w in lines[0], (w, lines[0])
        else:
            assert re.sub(r"[-_ ]+", " ", w.lower()) in plain, (w, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- help, version
@pytest.mark.parametrize(
    "command,options",
    [
        ((), ["labels", "build", "verify", "--version"]),
        (("labels",), ["--midi-dir", "--out", "--workers", "--jitter", "--jitter-seed",
                       "--labeller", "--fit", "--label-range", "--groups"]),
        (
            ("build",),
            ["--midi-dir", "--out", "--labels", "--tokenizer", "--window-size", "--stride",
             "--min-window-tokens", "--bins", "--binning", "--train-split", "--seed",
             "--pitch-policy", "--pitch-range", "--tracks", "--max-minutes", "--max-file-mb",
             "--label-range",
             "--workers", "--cache-dir", "--no-cache", "--overwrite"],
        ),
        (("verify",), ["--plot", "--num-examples"]),
    ],
)  # fmt: skip
def test_help(command, options):
    res = h.run_cli(*command, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage:")
    for option in options:
        assert option in res.stdout, option


def test_version():
    res = h.run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"varemi {varemi.__version__}"


def test_no_command_prints_help():
    res = h.run_cli()
    assert res.returncode == 2 and "usage:" in res.stderr  # a usage error


def test_unknown_option_is_an_argparse_error(tmp_path):
    res = h.run_cli("build", "--no-such-option", "8", cwd=tmp_path)
    assert res.returncode == 2 and "error:" in res.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- demo
def test_demo_build_then_verify(tmp_path):
    res = h.run_cli("build", "--no-cache", "--workers", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    demo = tmp_path / "varemi-demo"
    assert len(list((demo / "midi").rglob("*.mid"))) == 20
    out = demo / "dataset"
    assert "verify" in res.stderr  # the summary says what to do next
    info = h.info(out)
    assert info["tokenizer"]["source"] == "builtin"
    assert info["counts"]["files_kept"] == 20
    res = h.run_cli("verify", "varemi-demo/dataset", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "verify: OK"

    # a second demo build replaces the demo's own previous output (no --overwrite needed)
    res = h.run_cli("build", "--no-cache", "--workers", "1", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    h.same_data(out, out)
    assert h.tables(out)["train"].num_rows == info["counts"]["examples"]["train"]


# --------------------------------------------------------------------------- labels
def test_labels_command_and_api_agree(tmp_path):
    from varemi.labelling.heuristic import label_folder

    midi = tmp_path / "midi"
    write_demo_corpus(midi)
    out_csv = tmp_path / "labels.csv"
    res = h.run_cli("labels", "--midi-dir", midi, "--out", out_csv, "--workers", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    with open(out_csv, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0][:3] == ["filename", "valence", "arousal"]
    assert len(table[0]) > 3  # the features follow
    assert len(table) == 21
    got = {r[0]: (float(r[1]), float(r[2])) for r in table[1:]}
    assert all(-1 <= v <= 1 and -1 <= a <= 1 for v, a in got.values())

    df, rejects = label_folder(midi, workers=1, progress=False)
    assert rejects == []
    want = {f: (v, a) for f, v, a in zip(df["filename"], df["valence"], df["arousal"], strict=True)}
    assert got == want  # written in full precision

    # the CSV feeds a build; the dataset carries the labels as float32
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--labels", out_csv, *QUICK)
    assert res.returncode == 0, res.stderr
    import numpy as np

    for rs in h.rows(out).values():
        for r in rs:
            v, a = want[r["source_file"]]
            assert (r["valence"], r["arousal"]) == (float(np.float32(v)), float(np.float32(a)))


def test_labels_command_and_build_write_the_same_labels(tmp_path):
    """``labels`` and ``build`` (which labels the files itself) agree, features included."""
    midi = tmp_path / "midi"
    write_demo_corpus(midi)
    out_csv = tmp_path / "labels.csv"
    res = h.run_cli("labels", "--midi-dir", midi, "--out", out_csv, "--quiet", "--jitter", "0.1")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--jitter", "0.1", *QUICK)
    assert res.returncode == 0, res.stderr
    with open(out_csv, newline="", encoding="utf-8") as f:
        from_labels = sorted(csv.reader(f))
    with open(out / "labels.csv", newline="", encoding="utf-8") as f:
        from_build = sorted(csv.reader(f))
    assert len(from_labels) == 21 and from_build == from_labels


def test_labels_command_on_a_missing_folder(tmp_path):
    res = h.run_cli("labels", "--midi-dir", tmp_path / "nowhere", "--out", tmp_path / "l.csv")
    one_error(res, "--midi-dir")
    assert not (tmp_path / "l.csv").exists()


def test_labels_command_reports_bad_files(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["ok.mid"])
    (midi / "bad.mid").write_bytes(b"MThd garbage")
    out_csv = tmp_path / "l.csv"
    res = h.run_cli("labels", "--midi-dir", midi, "--out", out_csv, "--workers", "1", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "bad.mid" in res.stderr
    lines = out_csv.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and lines[1].startswith("ok.mid,")


# --------------------------------------------------------------------------- bad parameters
BAD = [
    (("--bins", "4"), ["--bins"]),
    (("--bins", "0"), ["--bins"]),
    (("--bins", "257"), ["--bins"]),  # int8 bins would wrap
    (("--window-size", "0"), ["--window-size"]),
    (("--stride", "0"), ["--stride"]),
    (("--window-size", "10", "--min-window-tokens", "20"), ["--min-window-tokens"]),
    (("--train-split", "0"), ["--train-split"]),
    (("--train-split", "1.5"), ["--train-split"]),
    (("--pitch-range", "90", "30"), ["--pitch-range"]),
    (("--seed", "-1"), ["--seed"]),
    (("--max-minutes", "0"), ["--max-minutes"]),
    (("--workers", "0"), ["--workers"]),
]


@pytest.mark.parametrize("args,words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_parameter_is_refused_before_any_work(tmp_path, midi, args, words):
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--tokenizer", "builtin",
                    "--no-cache", *args)  # fmt: skip
    one_error(res, *words)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_error_message_keeps_user_paths_as_typed(tmp_path):
    # A path holding an option-like word ("bins") was rewritten to ".../--bins".
    missing = tmp_path / "data" / "seed_corpus" / "bins"
    res = h.run_cli("build", "--midi-dir", missing, "--out", tmp_path / "out", *QUICK)
    assert one_error(res, "--midi-dir") == f"error: --midi-dir {missing} is not a folder"


def test_demo_refuses_bad_options_before_writing_its_corpus(tmp_path):
    res = h.run_cli("build", "--bins", "4", "--no-cache", cwd=tmp_path)
    one_error(res, "--bins")
    assert list(tmp_path.iterdir()) == []


def test_missing_midi_dir(tmp_path):
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", tmp_path / "nowhere", "--out", out, *QUICK)
    one_error(res, "--midi-dir")
    assert not out.exists()


def test_out_is_required_with_midi_dir(tmp_path, midi):
    res = h.run_cli("build", "--midi-dir", midi, *QUICK, cwd=tmp_path)
    one_error(res, "--out")
    assert list(tmp_path.iterdir()) == []


def test_labels_csv_missing_a_column(tmp_path, midi):
    bad = tmp_path / "labels.csv"
    bad.write_text("filename,valence\nm0.mid,0.5\n", encoding="utf-8")
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--labels", bad, *QUICK)
    one_error(res, "arousal")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_missing_tokenizer_file(tmp_path, midi):
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--tokenizer",
                    tmp_path / "nope.json", "--no-cache")  # fmt: skip
    one_error(res, "nope.json")
    assert not out.exists()


# --------------------------------------------------------------------------- output folder
def test_existing_output_and_overwrite(tmp_path, midi):
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, *QUICK, *SMALL)
    assert res.returncode == 0, res.stderr
    before = h.snapshot(out)
    bigger = ("--window-size", "32", "--stride", "16", "--min-window-tokens", "4")
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, *QUICK, *bigger)
    one_error(res, "--out", "--overwrite")
    assert h.snapshot(out) == before
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, *QUICK, *bigger, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert h.info(out)["params"]["window_size"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path, midi):
    home = tmp_path / "home"
    (home / "src").mkdir(parents=True)
    (home / "src" / "main.py").write_text("print('hi')\n", encoding="utf-8")
    (home / ".bashrc").write_text("export X=1\n", encoding="utf-8")
    before = h.snapshot(home)
    res = h.run_cli("build", "--midi-dir", midi, "--out", home, *QUICK, *SMALL, "--overwrite")
    one_error(res, "--out")
    assert h.snapshot(home) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_interrupt_exits_130_and_keeps_the_previous_output(tmp_path, midi, monkeypatch, capsys):
    from varemi.cli import main

    out = tmp_path / "out"
    assert main(["build", "--midi-dir", str(midi), "--out", str(out), *QUICK, *SMALL]) == 0
    before = h.snapshot(out)

    def interrupt(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(vb, "_write_rejects", interrupt)
    capsys.readouterr()
    code = main(
        ["build", "--midi-dir", str(midi), "--out", str(out), *QUICK, *SMALL, "--overwrite"]
    )
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert h.snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --------------------------------------------------------------------------- implementations
def build_in_subprocess(midi: Path, out: Path, *args: str, **env: str) -> None:
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, *QUICK, *args,
                    env=h.subprocess_env(**env))  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_pure_python_and_native_builds_are_identical(tmp_path):
    midi = tmp_path / "midi"
    write_demo_corpus(midi)
    h.write_midi(midi / "wide.mid", h.track([10, 60, 115, 64, 20, 109, 108, 21] * 8))
    args = ("--window-size", "200", "--stride", "70", "--min-window-tokens", "50")
    build_in_subprocess(midi, tmp_path / "native", *args, VAREMI_PURE_PYTHON="0")
    build_in_subprocess(midi, tmp_path / "python", *args, VAREMI_PURE_PYTHON="1")
    h.same_data(tmp_path / "native", tmp_path / "python")
    # fold and drop go through the pitch kernel too
    for policy in ("fold", "drop"):
        more = (*args, "--pitch-policy", policy)
        build_in_subprocess(midi, tmp_path / f"n-{policy}", *more, VAREMI_PURE_PYTHON="0")
        build_in_subprocess(midi, tmp_path / f"p-{policy}", *more, VAREMI_PURE_PYTHON="1")
        h.same_data(tmp_path / f"n-{policy}", tmp_path / f"p-{policy}")


def test_workers_do_not_change_the_dataset(tmp_path):
    midi = tmp_path / "midi"
    write_demo_corpus(midi)
    for w in ("1", "2"):
        res = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / w, "--tokenizer",
                        "builtin", "--no-cache", "--quiet", "--workers", w)  # fmt: skip
        assert res.returncode == 0, res.stderr
    h.same_data(tmp_path / "1", tmp_path / "2")


def test_abbreviated_options_are_refused(tmp_path):
    res = h.run_cli("build", "--window", "8", "--no-cache", cwd=tmp_path)
    assert res.returncode == 2 and "unrecognized arguments: --window 8" in res.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- label range
def test_label_range_maps_a_csv_on_another_scale(tmp_path, midi):
    ratings = tmp_path / "ratings.csv"
    names = ["m0.mid", "m1.mid", "m2.mid", "m3.mid", "m4.mid", "sub/n.mid"]
    rows = ["filename,valence,arousal", "m0.mid,1,9", "m1.mid,5,5", "m2.mid,9,1",
            "m3.mid,7,3", "m4.mid,10,5", "n.mid,3,7"]  # fmt: skip
    ratings.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--labels", ratings,
                    "--label-range", "1", "9", *QUICK, *SMALL)  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = h.info(out)
    assert info["params"]["label_range"] == [1.0, 9.0]
    assert info["labels"]["range"] == [1.0, 9.0]
    assert h.rejects(out) == {"m4.mid": "bad_label"}
    expected = {"m0.mid": (-1.0, 1.0), "m1.mid": (0.0, 0.0), "m2.mid": (1.0, -1.0),
                "m3.mid": (0.5, -0.5), "sub/n.mid": (-0.5, 0.5)}  # fmt: skip
    for split_rows in h.rows(out).values():
        for row in split_rows:
            v, a = expected[row["source_file"]]
            assert (row["valence"], row["arousal"]) == (v, a)
            assert row["valence_bin"] == round(v * 4) and row["arousal_bin"] == round(a * 4)
    mapped = (out / "labels.csv").read_text(encoding="utf-8").splitlines()
    assert mapped[0] == "filename,valence,arousal"
    assert sorted(mapped[1:]) == sorted(f"{n},{v!r},{a!r}" for n, (v, a) in expected.items())
    assert set(names) - set(expected) == {"m4.mid"}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--label-range", "9", "1"), ("--label-range", "low", "high")),
        (("--label-range", "1", "nan"), ("--label-range",)),
    ],
)
def test_bad_label_range_is_refused(tmp_path, midi, extra, words):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("filename,valence,arousal\nm0.mid,1,9\n", encoding="utf-8")
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--labels", ratings, *extra, *QUICK)
    one_error(res, *words)
    assert not out.exists()


def test_label_range_needs_a_labels_csv(tmp_path, midi):
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--label-range", "1", "9", *QUICK)
    one_error(res, "--label-range", "--labels")
    assert not out.exists()


# --------------------------------------------------------------------------- issue 18 probes
@pytest.mark.parametrize("content", [[], ["notes.txt"]], ids=["empty", "no-midi"])
def test_labels_command_refuses_a_folder_without_midi_files(tmp_path, content):
    folder = tmp_path / "midi"
    folder.mkdir()
    for name in content:
        (folder / name).write_text("not music", encoding="utf-8")
    out = tmp_path / "l.csv"
    res = h.run_cli("labels", "--midi-dir", folder, "--out", out, "--quiet")
    one_error(res, "--midi-dir", "no .mid or .midi file")
    assert not out.exists()


def test_build_labels_csv_rows_with_dot_slash_or_absolute_paths_match(tmp_path, midi):
    labels = tmp_path / "labels.csv"
    rows = {f"./m{k}.mid": (0.5, -0.5) for k in range(5)}
    rows[str(midi.resolve() / "sub" / "n.mid")] = (-0.5, 0.5)
    h.write_labels(labels, rows)
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--labels", labels, *QUICK, *SMALL)
    assert res.returncode == 0, res.stderr
    assert h.rejects(out) == {}
    by_file = {r["source_file"]: r["valence"] for rs in h.rows(out).values() for r in rs}
    assert by_file["sub/n.mid"] == -0.5 and by_file["m0.mid"] == 0.5


def test_labels_command_refuses_a_folder_where_no_file_can_be_labelled(tmp_path):
    folder = tmp_path / "midi"
    folder.mkdir()
    (folder / "bad.mid").write_bytes(b"MThd garbage")
    out = tmp_path / "l.csv"
    res = h.run_cli("labels", "--midi-dir", folder, "--out", out, "--quiet", "--workers", "1")
    one_error(res, "--midi-dir", "could be labelled", "unreadable")
    assert not out.exists()
