"""One declaration per option (issue 17): the CLI, BuildParams and dataset_info derive from it."""

from __future__ import annotations

import copy
import dataclasses
import os
import time

import helpers as h
import pytest

import varemi.cli as cli
from varemi._base import options
from varemi._base.workers import _Pool
from varemi.pipeline.params import BuildParams


def test_build_params_are_the_declared_options_in_order_with_their_defaults():
    fields = dataclasses.fields(BuildParams)
    assert [f.name for f in fields] == [o.dest for o in options.BUILD_OPTIONS]
    for f, o in zip(fields, options.BUILD_OPTIONS, strict=True):
        if f.default is not dataclasses.MISSING:
            assert f.default == o.default, f.name


def test_training_params_are_the_declared_options_in_order_with_their_defaults():
    from varemi.training.finetune import FinetuneParams
    from varemi.training.generation import SamplingParams

    for cls, declared in (
        (FinetuneParams, options.FINETUNE_OPTIONS),
        (SamplingParams, options.SAMPLING_OPTIONS),
    ):
        fields = dataclasses.fields(cls)
        assert [f.name for f in fields] == [o.dest for o in declared]
        for f, o in zip(fields, declared, strict=True):
            if f.default is not dataclasses.MISSING:
                assert f.default == o.default, f.name


def test_every_training_option_is_on_the_command_line(capsys):
    for command, declared in (
        ("finetune", options.FINETUNE_OPTIONS),
        ("generate", options.GENERATE_OPTIONS + options.SAMPLING_OPTIONS),
        ("evaluate", options.EVALUATE_OPTIONS + options.SAMPLING_OPTIONS),
        ("serve", options.SERVE_OPTIONS),
    ):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        for o in declared:
            assert o.name in text or not o.cli, (command, o.name)


def test_every_build_option_is_on_the_command_line_under_its_group(capsys):
    with pytest.raises(SystemExit):
        cli.main(["build", "--help"])
    text = capsys.readouterr().out
    for o in options.BUILD_OPTIONS:
        assert o.name in text, o.name
    positions = [text.index(f"\n{group}:\n") for group in options.GROUPS]
    assert positions == sorted(positions)  # the sections come in the order of the stages


def test_dataset_info_params_are_the_recorded_options(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=40)
    result = h.build(midi, tmp_path / "out", window_size=16, stride=8, min_window_tokens=4)
    recorded = [o.dest for o in options.BUILD_OPTIONS if o.record]
    assert list(result.info["params"]) == recorded
    assert result.info["params"]["pitch_range"] == [21, 108]
    assert result.info["params"]["midi_dir"] == str(midi)


def test_build_leaves_the_callers_parameters_as_they_were(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=40)
    p = h.params(str(midi), str(tmp_path / "out"), window_size=16, stride=8, min_window_tokens=4)
    before = copy.deepcopy(p)
    from varemi.pipeline.build import build

    build(p)
    assert p == before  # midi_dir and out stay strings, pitch_range stays None


def test_the_cli_fills_in_declared_defaults():
    parser = cli._parser()
    a = parser.parse_args(["build", "--midi-dir", "m", "--out", "o", "--no-cache"])
    given = options.values(a, options.BUILD_OPTIONS)
    assert given["window_size"] == 1024 and given["tokenizer"] == options.DEFAULT_MODEL
    assert given["cache"] is False and given["bos"] is False
    assert BuildParams(**given).stride == 512


def test_labels_seed_is_now_jitter_seed(tmp_path, capsys):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid"], notes=40)
    out_new, out_old = tmp_path / "new.csv", tmp_path / "old.csv"
    args = ["labels", "--midi-dir", str(midi), "--jitter", "0.2", "--quiet", "--workers", "1"]
    assert cli.main([*args, "--out", str(out_new), "--jitter-seed", "5"]) == 0
    assert cli.main([*args, "--out", str(out_old), "--seed", "5"]) == 0
    assert "--jitter-seed" in capsys.readouterr().err
    assert out_new.read_bytes() == out_old.read_bytes()


def test_an_internal_error_is_one_line_that_asks_for_a_bug_report(monkeypatch, capsys, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "verify", broken)
    monkeypatch.delenv("VAREMI_TRACEBACK", raising=False)
    assert cli.main(["verify", str(tmp_path)]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: internal error (RuntimeError: boom)")
    assert "bug" in err and "Traceback" not in err
    monkeypatch.setenv("VAREMI_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        cli.main(["verify", str(tmp_path)])


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_the_pool_stops_its_workers_at_once_without_private_state():
    pool = _Pool(2, None, ())
    futures = [pool.get().submit(_sleep, 60) for _ in range(2)]
    time.sleep(1.0)  # both workers started and announced themselves
    started = time.monotonic()
    pool.close(kill=True)
    assert time.monotonic() - started < 10  # not the 60 s the tasks would take
    for f in futures:
        assert f.done()


@pytest.mark.parametrize("count", [0, 4, 16, 2 * 257])
def test_conditioning_tokens_of_an_even_or_huge_bin_count_are_refused_in_one_error(count):
    # an even number of bins per axis used to end in an IndexError while formatting
    from varemi._base.errors import ConditioningError
    from varemi.core.conditioning import bin_token_ids

    tokens = {f"[VAL={k}]": 1000 + k for k in range(count)}
    with pytest.raises(ConditioningError, match="not those of contract 1"):
        bin_token_ids(tokens, 0, 0)


def test_workers_are_not_forked_while_other_threads_run():
    # a forked child inherits locks other threads hold (Ray's, a server's): it could hang
    import threading

    from varemi._base.workers import _mp_context

    assert threading.active_count() == 1 or _mp_context().get_start_method() != "fork"
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert _mp_context().get_start_method() in ("forkserver", "spawn")
    finally:
        stop.set()
        thread.join()


def test_a_preset_fills_what_was_left_out_and_what_was_given_wins():
    parser = cli._parser()
    a = parser.parse_args(["build", "--midi-dir", "m", "--out", "o", "--preset", "control"])
    given = options.values(a, options.BUILD_OPTIONS, "build")
    assert (given["label_scope"], given["window_align"], given["bos"]) == ("window", "bar", True)
    assert given["key_to_c"] is True
    assert given["preset"] == "control" and given["window_size"] == 1024
    a = parser.parse_args(["build", "--midi-dir", "m", "--out", "o", "--preset", "control",
                           "--label-scope", "file"])  # fmt: skip
    given = options.values(a, options.BUILD_OPTIONS, "build")
    assert (given["label_scope"], given["window_align"]) == ("file", "bar")
    plain = options.values(parser.parse_args(["build", "--midi-dir", "m", "--out", "o"]),
                           options.BUILD_OPTIONS, "build")  # fmt: skip
    assert (plain["label_scope"], plain["window_align"], plain["bos"]) == ("file", "token", False)
    a = parser.parse_args(["finetune", "d", "--out", "r", "--preset", "control"])
    assert options.values(a, options.FINETUNE_OPTIONS, "finetune")["cond_dropout"] == 0.2
    a = parser.parse_args(["finetune", "d", "--out", "r", "--preset", "control",
                           "--cond-dropout", "0.1"])  # fmt: skip
    assert options.values(a, options.FINETUNE_OPTIONS, "finetune")["cond_dropout"] == 0.1


def test_a_preset_build_records_it_and_an_unknown_one_is_refused(tmp_path, capsys):
    from varemi.music.demo import write_demo_corpus

    midi = tmp_path / "midi"
    write_demo_corpus(midi)
    out = tmp_path / "data"
    code = cli.main(["build", "--midi-dir", str(midi), "--out", str(out), "--tokenizer",
                     "builtin", "--window-size", "64", "--stride", "32", "--min-window-tokens",
                     "16", "--preset", "control", "--quiet", "--workers", "1"])  # fmt: skip
    assert code == 0
    info = __import__("json").loads((out / "dataset_info.json").read_text())
    p = info["params"]
    assert p["key_to_c"] is True
    assert (p["preset"], p["label_scope"], p["window_align"], p["bos"]) == (
        "control",
        "window",
        "bar",
        True,
    )
    with pytest.raises(Exception, match="--preset must be one of control, got 'bogus'"):
        from varemi.pipeline.build import build

        build(BuildParams(midi_dir=midi, out=tmp_path / "x", preset="bogus"))
