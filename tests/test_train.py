"""finetune / generate / evaluate / decode with the tiny GPT-2 on the demo dataset, and build --bos.

Needs torch and transformers (skipped otherwise). One short fine-tuning run is shared by
the tests of this module; everything runs on CPU in well under a minute.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import helpers as h  # noqa: E402

import varemi  # noqa: E402
from varemi._base.errors import VaremiError  # noqa: E402
from varemi.music.demo import write_demo_corpus  # noqa: E402
from varemi.music.models import window_warning  # noqa: E402
from varemi.training import data as tdata  # noqa: E402
from varemi.training import evaluation as ev  # noqa: E402
from varemi.training import finetune as ft  # noqa: E402
from varemi.training import generation as gen  # noqa: E402
from varemi.training import model as tmodel  # noqa: E402

WINDOW, STRIDE, MIN = 64, 48, 16
STEPS, EVAL = 20, 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    midi = tmp_path_factory.mktemp("train") / "midi"
    write_demo_corpus(midi)
    return midi


@pytest.fixture(scope="module")
def data(corpus):
    out = corpus.parent / "data"
    h.build(corpus, out, window_size=WINDOW, stride=STRIDE, min_window_tokens=MIN, bos=True)
    return out


def _params(data, out, **kw):
    base = dict(
        model="tiny",
        max_steps=STEPS,
        eval_steps=EVAL,
        lr=1e-2,
        warmup=2,
        batch_size=8,
        max_eval_examples=24,
        patience=0,
        device="cpu",
        quiet=True,
    )
    base.update(kw)
    return ft.FinetuneParams(data=data, out=out, **base)


@pytest.fixture(scope="module")
def run(data):
    torch.set_num_threads(2)
    out = data.parent / "run"
    result = ft.finetune(_params(data, out))
    return out, result


# --------------------------------------------------------------------------- build --bos
def test_bos_examples_are_bos_then_the_plain_examples(corpus, data, tmp_path):
    plain = tmp_path / "plain"
    h.build(corpus, plain, window_size=WINDOW, stride=STRIDE, min_window_tokens=MIN)
    info = h.info(data)
    assert info["params"]["bos"] is True and h.info(plain)["params"]["bos"] is False
    assert info["format_version"] == 3
    bos = info["special_tokens"]["BOS"]
    assert bos == varemi.load_tokenizer(data).vocab["BOS_None"]
    with_bos, without = h.rows(data), h.rows(plain)
    for split in ("train", "val"):
        assert len(with_bos[split]) == len(without[split]) > 0
        for a, b in zip(with_bos[split], without[split], strict=True):
            assert a["input_ids"] == [bos] + b["input_ids"]
            assert len(a["input_ids"]) <= WINDOW + 3
    assert max(len(r["input_ids"]) for r in with_bos["train"]) == WINDOW + 3
    assert info["counts"]["tokens"]["train"] == h.info(plain)["counts"]["tokens"]["train"] + len(
        with_bos["train"]
    )


def test_verify_understands_bos(data, tmp_path):
    from varemi.dataset.verify import verify

    assert verify(data, num_examples=1).ok
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    info = h.info(broken)
    info["params"]["bos"] = False  # the data has BOS first, the record says it has not
    (broken / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    failures = verify(broken, num_examples=0).failures
    assert any(f.startswith("FAIL prefix") for f in failures), failures
    assert any(f.startswith("FAIL length") for f in failures), failures


def test_window_warning_for_the_default_model_only():
    assert "384" in window_warning("Natooz/Maestro-REMI-bpe20k", 1024)
    assert window_warning("Natooz/Maestro-REMI-bpe20k", 384) is None
    assert window_warning("builtin", 4096) is None


# --------------------------------------------------------------------------- pieces
def test_labels_ignore_padding_and_the_prefix():
    split = tdata.Split(
        values=np.array([2, 10, 20, 5, 6, 7, 2, 11, 21, 8], dtype=np.int64),
        offsets=np.array([0, 6, 10]),
        vbin=np.zeros(2, np.int64),
        abin=np.zeros(2, np.int64),
    )
    batch = tdata.Collator(pad=0, prefix=3)([split[0], split[1]])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.tolist() == [[2, 10, 20, 5, 6, 7], [2, 11, 21, 8, 0, 0]]
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert labels.tolist() == [[-100, -100, -100, 5, 6, 7], [-100, -100, -100, 8, -100, -100]]


def test_new_embedding_rows_start_at_the_mean():
    model = transformers.GPT2LMHeadModel(tmodel.tiny_config(50, 16, {}))
    old = model.get_input_embeddings().weight.detach().clone()
    assert tmodel.extend_embeddings(model, 56) == 6
    new = model.get_input_embeddings().weight.detach()
    assert new.shape == (56, 64)
    assert torch.equal(new[:50], old)
    for row in new[50:]:
        assert torch.allclose(row, old.mean(dim=0), atol=1e-6)
    assert model.get_output_embeddings().weight.shape[0] == 56


def test_batches_are_length_grouped_and_reproducible():
    lengths = np.array([5, 50, 6, 49, 7, 48, 8, 47] * 4)
    bins = np.zeros(len(lengths), np.int64)
    plan = tdata.batch_plan(lengths, bins, batch_size=4, seed=3, epoch=0)
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(lengths)))
    assert all(np.ptp(lengths[b]) <= 3 for b in plan)  # long with long, short with short
    again = tdata.batch_plan(lengths, bins, batch_size=4, seed=3, epoch=0)
    assert [b.tolist() for b in plan] == [b.tolist() for b in again]
    other = tdata.batch_plan(lengths, bins, batch_size=4, seed=3, epoch=1)
    assert [b.tolist() for b in plan] != [b.tolist() for b in other]


def test_balance_bins_draws_every_bin_about_equally():
    bins = np.array([0] * 90 + [1] * 10)
    plan = tdata.batch_plan(np.full(100, 8), bins, batch_size=10, seed=0, epoch=0, balance=True)
    drawn = np.concatenate(plan)
    assert len(drawn) == 100
    rare = int((drawn >= 90).sum())
    assert 30 <= rare <= 70, rare  # 10 without balancing


def test_spearman_with_ties_matches_the_textbook_value():
    assert ev.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert ev.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks with ties averaged: a -> 1.5 1.5 3 4, b -> 1 2 3 4: pearson of those
    assert ev.spearman([0, 0, 1, 2], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert ev.spearman([1, 1, 1], [1, 2, 3]) is None
    assert ev.grid_bins(3, 4) == [-4, 0, 4]
    assert ev.grid_bins(9, 4) == list(range(-4, 5))


# --------------------------------------------------------------------------- finetune
def test_finetune_writes_a_run_and_the_loss_goes_down(run, data):
    out, result = run
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "dataset_info.json",
        "run.json",
        "training_log.csv",
        "loss.png",
        "val_loss_by_bin.json",
        "val_loss_by_bin.csv",
        "generation_config.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "dataset_info.json").read_bytes() == (data / "dataset_info.json").read_bytes()
    with open(out / "training_log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    assert [int(r["step"]) for r in log] == [0, EVAL, STEPS]
    val = [float(r["val_loss"]) for r in log]
    assert val[0] == pytest.approx(np.log(1018), abs=0.05)  # random init: uniform
    # The demo's BPE vocabulary is learned from these very pieces, so the two val pieces
    # share few tokens with train and their loss barely moves in 20 steps; train's does.
    losses = [float(r["train_loss"]) for r in log[1:]]
    assert losses[-1] < losses[0] < val[0] and losses[-1] < 0.93 * val[0], losses
    assert result.steps == STEPS and result.stopped == "max_steps"
    assert result.best_val_loss == pytest.approx(min(val))
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and meta["prefix"] == 3 and meta["best_step"] in (EVAL, STEPS)
    bins = json.loads((out / "val_loss_by_bin.json").read_text())["bins"]
    val_rows = h.rows(data)["val"]
    present = {(r["valence_bin"], r["arousal_bin"]) for r in val_rows}
    assert {(b["valence_bin"], b["arousal_bin"]) for b in bins} <= present
    assert all(b["loss"] > 0 and b["tokens"] > 0 for b in bins)


def test_the_checkpoint_reloads_with_the_conditioning_vocabulary(run, data):
    out, result = run
    tok = varemi.load_tokenizer(out)
    assert len(tok) == h.info(data)["tokenizer"]["vocab_size"] == 1018
    model = transformers.GPT2LMHeadModel.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.config.pad_token_id == tok.vocab["PAD_None"]
    assert model.config.n_positions >= WINDOW + 3
    # the saved model is the best one: its val loss is the best logged
    split = tdata.torch_dataset(data, "val")
    rows = np.unique(np.linspace(0, len(split) - 1, min(len(split), 24))).astype(np.int64)
    loss, _, _ = tdata.validate(model.eval(), split, rows, tdata.collator(data), 8, "cpu")
    assert loss == pytest.approx(result.best_val_loss, rel=1e-4)
    assert (out / "checkpoints").is_dir() and len(list((out / "checkpoints").iterdir())) <= 2


def test_resume_continues_exactly_where_the_run_stopped(data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    straight = ft.finetune(_params(data, tmp_path / "straight", max_steps=6, eval_steps=3))

    def interrupt(step):
        if step == 3:
            raise KeyboardInterrupt  # Ctrl-C right after the checkpoint of step 3

    monkeypatch.setattr(ft, "_after_checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(_params(data, tmp_path / "cut", max_steps=6, eval_steps=3))
    monkeypatch.setattr(ft, "_after_checkpoint", lambda step: None)
    meta = json.loads((tmp_path / "cut/run.json").read_text())
    assert meta["status"] == "interrupted"
    assert [p.name for p in (tmp_path / "cut/checkpoints").iterdir()] == ["checkpoint-3"]

    resumed = ft.finetune(
        ft.FinetuneParams(data=None, out=tmp_path / "cut", resume=True, quiet=True)
    )  # every option comes from the run
    assert resumed.steps == 6 and [r["step"] for r in resumed.log] == [0, 3, 6]
    # On CPU the resumed run is bit-exact: same weights, same losses.
    a = load_file(tmp_path / "straight/model.safetensors")
    b = load_file(tmp_path / "cut/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [(r["train_loss"], r["val_loss"]) for r in straight.log]
    assert [(r["train_loss"], r["val_loss"]) for r in resumed.log] == losses

    longer = ft.finetune(
        ft.FinetuneParams(data=None, out=tmp_path / "cut", resume=True, max_steps=8, quiet=True)
    )  # a resume may train longer
    assert longer.steps == 8 and [r["step"] for r in longer.log] == [0, 3, 6, 8]
    assert json.loads((tmp_path / "cut/run.json").read_text())["params"]["lr"] == 1e-2


# --------------------------------------------------------------------------- generate, decode
def test_generate_writes_midi_with_notes(run, tmp_path):
    from symusic import Score

    out, _ = run
    sampling = gen.SamplingParams(max_new_tokens=40, seed=1)
    paths = varemi.generate(out, 3, -2, tmp_path / "gen", n=2, sampling=sampling)
    assert [p.name for p in paths] == ["v+3_a-2_000.mid", "v+3_a-2_001.mid"]
    for p in paths:
        assert Score(str(p)).note_num() > 0


def test_decode_strips_the_prefix(data):
    row = h.rows(data)["train"][0]["input_ids"]
    assert row[0] == h.info(data)["special_tokens"]["BOS"]
    with_prefix = varemi.decode(row, data)
    music = varemi.decode(row[3:], data)
    assert with_prefix.note_num() == music.note_num() > 0
    assert [(n.time, n.pitch) for n in with_prefix.tracks[0].notes] == [
        (n.time, n.pitch) for n in music.tracks[0].notes
    ]


def test_evaluate_reports_every_figure(run, tmp_path):
    out, _ = run
    sampling = gen.SamplingParams(max_new_tokens=40)
    result = varemi.evaluate(out, grid=2, n_per_cell=2, sampling=sampling, out=tmp_path, quiet=True)
    assert json.loads((tmp_path / "evaluate.json").read_text())["grid"] == [-4, 4]
    assert (tmp_path / "evaluate.png").is_file()
    assert result["generations"] == 8
    assert 0.0 <= result["valid_fraction"] <= 1.0
    for key in ("conditioned", "shuffled_baseline"):
        m = result[key]
        assert set(m) == {
            "n",
            "spearman_valence",
            "spearman_arousal",
            "quadrant_accuracy",
            "mae_bins_valence",
            "mae_bins_arousal",
            "normalised_l1",
            "ci95",
            "p_permutation",
        }
        assert m["n"] == round(result["valid_fraction"] * 8)
        for k in ("spearman_valence", "spearman_arousal"):
            assert m[k] is None or -1.0 <= m[k] <= 1.0
        assert m["quadrant_accuracy"] is None or 0.0 <= m["quadrant_accuracy"] <= 1.0
        for k in ("mae_bins_valence", "mae_bins_arousal"):
            assert m[k] is None or 0.0 <= m[k] <= 8.0
        assert m["normalised_l1"] is None or 0.0 <= m["normalised_l1"] <= 1.0
    assert len(result["cells"]) == 4


# --------------------------------------------------------------------------- bad input
# The `cli` fixture (conftest.py) runs the CLI's main in-process; test_cli.py covers the
# subprocess wiring.
def test_not_a_varemi_dataset(cli, corpus, tmp_path):
    line = cli("finetune", corpus, "--model", "tiny", "--out", tmp_path / "r")
    assert "is not a varemi dataset" in line
    assert not (tmp_path / "r").exists()


def test_vocabulary_mismatch(cli, data, tmp_path):
    model = transformers.GPT2LMHeadModel(tmodel.tiny_config(500, 80, {}))
    model.save_pretrained(tmp_path / "model")
    line = cli("finetune", data, "--model", tmp_path / "model", "--out", tmp_path / "r")
    assert "vocabulary of 500 ids" in line and "has 1000" in line


def test_offline_hub_model_is_one_line(cli, data, tmp_path):
    line = cli("finetune", data, "--out", tmp_path / "r")
    assert "Natooz/Maestro-REMI-bpe20k" in line and "--model tiny" in line


def test_bad_options_name_the_option(cli, data, tmp_path):
    line = cli("finetune", data, "--model", "tiny", "--out", tmp_path / "r", "--lr", "0")
    assert line == "error: --lr must be > 0, got 0.0"
    line = cli("finetune", data, "--model", "tiny", "--out", tmp_path / "r", "--resume")
    assert "--resume" in line and "no finetune checkpoint" in line


def test_bins_out_of_range(cli, run, tmp_path):
    out, _ = run
    line = cli("generate", out, "--valence", "5", "--arousal", "0", "--out", tmp_path)
    assert "--valence 5 is outside the dataset's bins -4..+4" in line
    assert "--arousal -7 is outside" in cli(
        "generate", out, "--valence", "0", "--arousal", "-7", "--out", tmp_path
    )
    assert "--grid must be in 2..9" in cli("evaluate", out, "--grid", "10")


def test_a_folder_that_is_not_a_run(cli, data, tmp_path):
    line = cli("generate", data, "--valence", "0", "--arousal", "0", "--out", tmp_path / "g")
    assert "is not a varemi finetune output" in line
    assert "is not a varemi finetune output" in cli("evaluate", tmp_path)


def test_an_existing_run_is_not_replaced_without_overwrite(cli, run, data):
    out, _ = run
    line = cli("finetune", data, "--model", "tiny", "--out", out)
    assert "--resume" in line and "--overwrite" in line
    line = cli("finetune", data, "--model", "tiny", "--out", data)
    assert "not a varemi run" in line


def test_the_cli_runs_generate_in_a_subprocess(run, tmp_path):
    out, _ = run
    result = h.run_cli(
        "generate", out, "--valence", "-1", "--arousal", "2", "--n", "1",
        "--max-new-tokens", "24", "--out", tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "v-1_a+2_000.mid")]


def test_without_torch_one_line_names_the_extra(data, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"  # what an environment without torch sees
        "import varemi.training.finetune, varemi.cli\n"
        f"sys.exit(varemi.cli.main(['finetune', {str(data)!r}, '--model', 'tiny', "
        f"'--out', {str(tmp_path / 'r')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=h.subprocess_env(), capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert h.error_lines(result.stderr) == [
        "error: fine-tuning needs torch and transformers (torch is not installed): "
        "pip install 'varemi[train]'"
    ]


def test_importing_varemi_and_its_build_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, varemi, varemi.pipeline.build, varemi.cli, varemi.training.serve; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=h.subprocess_env(), capture_output=True, text=True
    )
    assert result.stdout.strip() == "False", result.stderr


def test_early_stopping_keeps_the_best_checkpoint(data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    scripted = iter([6.0, 5.0, 4.0, 4.5, 4.6, 3.0, 3.0])  # best at the 2nd validation
    real_validate = ft.validate

    def fake_validate(*args, **kwargs):
        loss, per_bin, gain = real_validate(*args, **kwargs)
        return next(scripted), per_bin, gain

    monkeypatch.setattr(ft, "validate", fake_validate)
    out = tmp_path / "run"
    result = ft.finetune(
        _params(data, out, max_steps=10, eval_steps=1, patience=2, lr=1e-3, save_total_limit=1)
    )
    assert result.stopped == "early_stopping"
    assert [r["step"] for r in result.log] == [0, 1, 2, 3, 4]
    assert result.best_step == 2 and result.best_val_loss == 4.0
    meta = json.loads((out / "run.json").read_text())
    assert meta["stopped"] == "early_stopping" and meta["best_step"] == 2
    kept = load_file(out / "model.safetensors")
    best = load_file(out / "checkpoints/checkpoint-2/model.safetensors")
    assert all(torch.equal(kept[k], best[k]) for k in best)  # the best, not the last


# --------------------------------------------------------------------------- issue 16
def test_sampling_options_are_refused_before_any_work(cli, run, tmp_path):
    out, _ = run
    gen_out = tmp_path / "g"
    line = cli("generate", out, "--valence", "0", "--arousal", "0", "--out", gen_out,
               "--temperature", "inf")  # fmt: skip
    assert line == "error: --temperature must be > 0 and finite, got inf"
    assert not gen_out.exists()  # no empty folder left behind
    assert "--temperature" in cli("evaluate", out, "--temperature", "nan", "--out", gen_out)
    line = cli("evaluate", out, "--out", out / "config.json")  # before the evaluation runs
    assert line == f"error: --out {out / 'config.json'} exists and is not a folder"
    line = cli("generate", out, "--valence", "0", "--arousal", "0", "--out", "")
    assert "--out is empty" in line
    line = cli("generate", out, "--valence", "1", "--valence-label", "0.5", "--arousal", "0",
               "--out", gen_out)  # fmt: skip
    assert "--valence (a bin) or --valence-label" in line and "not both" in line
    assert "--arousal-label must be a number in [-1, 1]" in cli(
        "generate", out, "--valence", "0", "--arousal-label", "1.5", "--out", gen_out
    )
    assert "--bars must be an integer >= 1" in cli(
        "generate", out, "--valence", "0", "--arousal", "0", "--bars", "0", "--out", gen_out
    )
    assert not gen_out.exists()


def test_finetune_options_are_refused_before_any_work(cli, data, tmp_path):
    r = tmp_path / "r"
    assert cli("finetune", data, "--model", "tiny", "--out", r, "--epochs", "inf") == (
        "error: --epochs must be finite, got inf"
    )
    assert "--save-total-limit must be >= 1" in cli(
        "finetune", data, "--model", "tiny", "--out", r, "--save-total-limit", "0"
    )
    assert not r.exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_an_out_that_cannot_be_written_is_one_line_exit_2(cli, data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = cli("finetune", data, "--model", "tiny", "--out", locked / "run")
    finally:
        locked.chmod(0o700)
    assert line.startswith(f"error: --out {locked / 'run'}: cannot write there")


def test_interrupted_before_the_first_checkpoint(data, tmp_path, monkeypatch, capsys):
    from varemi.cli import Terminated, main

    out = tmp_path / "run"

    def stop(*a, **kw):
        raise KeyboardInterrupt  # Ctrl-C during the first validation, before any checkpoint

    monkeypatch.setattr(ft, "validate", stop)
    args = ["finetune", str(data), "--model", "tiny", "--out", str(out), "--device", "cpu",
            "--max-steps", "60", "--quiet"]  # fmt: skip
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "warning: --warmup 100 >= the 60 training steps" in err  # --lr never reached
    assert f"interrupted before the first checkpoint: {out} holds nothing to resume" in err
    assert "--overwrite" in err and "--resume continues" not in err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert main([*args, "--resume"]) == 2
    assert "no finetune checkpoint to resume" in capsys.readouterr().err
    assert main(args) == 2  # the rerun's hint is --overwrite only: --resume would fail
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" not in err

    def term(*a, **kw):
        raise Terminated

    monkeypatch.setattr(ft, "validate", term)
    assert main([*args, "--overwrite"]) == 143
    err = capsys.readouterr().err
    assert "terminated before the first checkpoint" in err and "nothing was replaced" not in err


def test_an_unfinished_run_is_not_sampled_without_allow_unfinished(cli, run, tmp_path):
    out, _ = run
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    meta = json.loads((cut / "run.json").read_text())
    (cut / "run.json").write_text(json.dumps({**meta, "status": "interrupted"}))
    line = cli("generate", cut, "--valence", "0", "--arousal", "0", "--out", tmp_path / "g")
    assert "unfinished" in line and "--allow-unfinished" in line
    sampling = gen.SamplingParams(max_new_tokens=8)
    paths = varemi.generate(cut, 0, 0, tmp_path / "g", n=1, sampling=sampling,
                            allow_unfinished=True, device="cpu")  # fmt: skip
    assert len(paths) <= 1


def test_resume_refuses_what_cannot_change_and_names_it(cli, run, data, tmp_path):
    out, _ = run
    other = tmp_path / "other"
    shutil.copytree(data, other)
    before = (out / "run.json").read_bytes()
    line = cli("finetune", other, "--out", out, "--resume", "--lr", "1", "--batch-size", "2")
    assert "--resume cannot change what is trained" in line
    assert f"DATA {other}" in line and "--lr 1.0" in line and "--batch-size 2" in line
    assert (out / "run.json").read_bytes() == before


def test_finetune_reads_a_parquet_build(corpus, tmp_path):
    pq = tmp_path / "pq"
    h.build(corpus, pq, window_size=WINDOW, stride=STRIDE, min_window_tokens=MIN, bos=True,
            format="parquet")  # fmt: skip
    result = ft.finetune(_params(pq, tmp_path / "run", max_steps=2, eval_steps=2))
    assert result.steps == 2 and result.best_val_loss is not None


def test_the_train_extra_can_build_a_trainer(run):
    import tomllib

    pyproject = tomllib.loads((h.REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert any(d.startswith("accelerate") for d in extras["train"])
    assert {d.split(">")[0] for d in extras["serve"]} == {"starlette", "uvicorn"}
    out, _ = run
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    args = transformers.TrainingArguments(output_dir=str(out / "unused"), use_cpu=True)
    transformers.Trainer(model=model, args=args)  # needs accelerate


def test_two_processes_match_one(run, data, tmp_path):
    """torchrun --nproc_per_node 2 (gloo on CPU): one run, world size 2, same val loss."""
    import socket

    out, single = run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = tmp_path / "two"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "varemi", "finetune",
         str(data), "--model", "tiny", "--out", str(two), "--max-steps", str(STEPS),
         "--eval-steps", str(EVAL), "--lr", "1e-2", "--warmup", "2", "--batch-size", "4",
         "--max-eval-examples", "24", "--patience", "0", "--device", "cpu", "--quiet"],
        env=h.subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((two / "run.json").read_text())
    assert meta["world_size"] == 2 and meta["per_device_batch"] == 4
    assert meta["global_batch"] == 8 == json.loads((out / "run.json").read_text())["global_batch"]
    assert meta["steps"] == STEPS and meta["status"] == "done"
    assert meta["best_val_loss"] == pytest.approx(single.best_val_loss, rel=0.03)


def test_a_run_works_with_plain_hugging_face_calls(run, data):
    out, _ = run
    info = h.info(data)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == (out / "run.json").stat(
    ).st_mode & 0o777  # fmt: skip
    prompt = varemi.prompt_ids(out, 3, -2)
    assert prompt == [info["special_tokens"]["BOS"], *varemi.conditioning_ids(out, 3, -2)]
    with pytest.raises(VaremiError):  # a bin, not a label
        varemi.prompt_ids(out, 0.5, 0)
    assert varemi.bins_for_labels(out, 0.99, -0.99) == (4, -4)
    config = json.loads((out / "generation_config.json").read_text())
    banned = set(info["conditioning_tokens"].values()) | {info["special_tokens"]["BOS"]}
    assert banned <= set(config["suppress_tokens"])
    assert info["special_tokens"]["EOS"] not in config["suppress_tokens"]
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    torch.manual_seed(0)
    ids = torch.tensor([prompt] * 3)
    generated = model.generate(ids, max_new_tokens=30, temperature=3.0)  # plain call
    assert not set(generated[:, len(prompt) :].flatten().tolist()) & banned
    scores = varemi.decode(generated, out)  # a batch: a list back
    assert isinstance(scores, list) and len(scores) == 3
    assert varemi.decode(generated[0], out).note_num() == scores[0].note_num()
    assert {"prompt_ids", "bins_for_labels", "finetune", "decode"} <= set(dir(varemi))


def test_generate_labels_bars_numbering_and_records(run, tmp_path):
    out, _ = run
    g = tmp_path / "g"
    s = gen.SamplingParams(max_new_tokens=60, seed=2)
    first = varemi.generate(out, out=g, n=2, sampling=s, valence_label=0.95, arousal_label=-0.95,
                            bars=1, device="cpu", batch_size=1)  # fmt: skip
    again = varemi.generate(out, 4, -4, g, n=1, sampling=s, device="cpu")
    names = sorted(p.name for p in g.glob("*.mid"))
    assert [p.name for p in again] == ["v+4_a-4_002.mid"]  # numbered after the earlier pieces
    assert len(names) == len(first) + 1
    record = json.loads((g / "generated.json").read_text())["pieces"]
    assert record[0]["valence_bin"] == 4 and record[0]["valence_label"] == 0.95
    assert record[0]["bars"] == 1
    loaded = gen.load_run(out, "cpu")
    prompt = varemi.prompt_ids(out, 0, 0)
    for ids in gen.sample(loaded, prompt, 3, s, 5, bars=2):
        assert int(loaded.bars_per_id[ids].sum()) <= 2


DATA_API_EXAMPLE = "docs/finetuning.md"


def test_the_documented_trainer_example_runs(data, tmp_path, monkeypatch):
    text = (h.REPO / DATA_API_EXAMPLE).read_text()
    block = text.split("<!-- trainer-example -->\n```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    shutil.copytree(data, tmp_path / "DATA")
    exec(compile(block.replace("max_steps=100", "max_steps=2"), DATA_API_EXAMPLE, "exec"), {})
    assert (tmp_path / "my-run" / "config.json").is_file()


def test_gradient_checkpointing_trains_the_same_model(data, tmp_path):
    # recomputing activations in the backward pass changes memory, not the arithmetic
    torch.set_num_threads(2)
    kw = dict(max_steps=4, eval_steps=4)
    plain = ft.finetune(_params(data, tmp_path / "plain", **kw))
    checkpointed = ft.finetune(_params(data, tmp_path / "ckpt", gradient_checkpointing=True, **kw))
    assert checkpointed.best_val_loss == pytest.approx(plain.best_val_loss, rel=1e-4)
    meta = json.loads((tmp_path / "ckpt" / "run.json").read_text())
    assert meta["params"]["gradient_checkpointing"] is True


def test_report_to_a_missing_package_is_one_error_before_any_work(data, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(ft.TrainError, match=r"--report-to tensorboard needs .*pip install"):
        ft.finetune(_params(data, tmp_path / "tb", report_to="tensorboard"))
    assert not (tmp_path / "tb").exists()


def test_an_empty_val_split_trains_with_a_warning(corpus, tmp_path, capsys):
    data = tmp_path / "all-train"
    h.build(corpus, data, window_size=WINDOW, stride=STRIDE, min_window_tokens=MIN, train_split=1.0)
    capsys.readouterr()
    result = ft.finetune(_params(data, tmp_path / "run", max_steps=2, eval_steps=2, quiet=False))
    assert "empty val split" in capsys.readouterr().err
    assert result.steps == 2


def test_conditioning_gain_is_zero_when_every_example_has_the_same_mood(run, data):
    # issue 19: the gain compares each example's own mood tokens with another's; with one
    # mood for all it must be exactly zero, whatever the model
    from varemi.training import data as tdata

    loaded = gen.load_run(run[0], "cpu")
    val = tdata.read_splits(data, loaded.info)["val"]
    collate = tdata.Collator(pad=int(loaded.special.get("PAD", 0)), prefix=3)
    same = tdata.Split(val.values.copy(), val.offsets, val.vbin, val.abin)
    starts = same.offsets[:-1]
    same.values[starts + 1], same.values[starts + 2] = same.values[1], same.values[2]
    rows = np.arange(min(len(same), 12))
    gain = tdata.conditioning_gain(loaded.model, same, rows, collate, 4, loaded.device)
    assert gain["nats_per_token"] == 0.0 and gain["ci95"] == [0.0, 0.0]
    mixed = tdata.conditioning_gain(loaded.model, val, rows, collate, 4, loaded.device)
    assert mixed["examples"] == len(rows) and mixed["tokens"] > 0
    lo, hi = mixed["ci95"]
    assert lo <= mixed["nats_per_token"] <= hi


def test_evaluate_reports_the_conditioning_gain(run, tmp_path):
    sampling = gen.SamplingParams(max_new_tokens=16)
    result = varemi.evaluate(
        run[0], grid=2, n_per_cell=1, sampling=sampling, out=tmp_path, quiet=True
    )
    gain = json.loads((tmp_path / "evaluate.json").read_text())["conditioning_gain"]
    assert gain.get("examples", 0) > 0 and gain["nats_per_token"] is not None, gain
    assert "conditioning gain" in ev.format_evaluation(result)
