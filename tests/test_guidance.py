"""Condition dropout (``finetune --cond-dropout``) and classifier-free guidance (``--guidance``).

Issue 19: the mood is two tokens at the start; dropout teaches the model the music
without them, guidance contrasts the two contexts at sampling time. These tests pin the
collator's dropout rule, the guided logits step by step (the unconditioned branch keeps
its own cache), and the option checks.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import helpers as h  # noqa: E402

from varemi.music.demo import write_demo_corpus  # noqa: E402
from varemi.training import data as tdata  # noqa: E402
from varemi.training import finetune as ft  # noqa: E402
from varemi.training import generation as gen  # noqa: E402
from varemi.training.errors import TrainError  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    midi = tmp_path_factory.mktemp("guidance") / "midi"
    write_demo_corpus(midi)
    out = midi.parent / "data"
    h.build(midi, out, window_size=64, stride=48, min_window_tokens=16, bos=True)
    return out


@pytest.fixture(scope="module")
def run(data):
    torch.set_num_threads(2)
    out = data.parent / "run"
    ft.finetune(
        ft.FinetuneParams(
            data=data, out=out, model="tiny", max_steps=12, eval_steps=6, lr=1e-2, warmup=2,
            batch_size=8, max_eval_examples=16, patience=0, device="cpu", quiet=True,
            cond_dropout=0.3,
        )
    )  # fmt: skip
    return out


def _split(rows: list[list[int]]) -> tdata.Split:
    lengths = [len(r) for r in rows]
    return tdata.Split(
        np.concatenate([np.asarray(r, np.int64) for r in rows]),
        np.concatenate([[0], np.cumsum(lengths)]),
        np.zeros(len(rows), np.int64),
        np.zeros(len(rows), np.int64),
    )


def test_dropped_examples_start_with_bos_alone_and_learn_every_music_token():
    rows = [[2, 20000 + k % 9, 20009 + k % 9, 5 + k, 6, 7] for k in range(400)]
    collate = tdata.Collator(pad=0, prefix=3, cond_dropout=0.25, unconditioned=(2,), seed=3)
    batch = collate(rows)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    dropped = mask.sum(dim=1) == 4
    kept = mask.sum(dim=1) == 6
    assert bool((dropped | kept).all())
    assert 70 <= int(dropped.sum()) <= 130  # about 100 of 400
    for k in np.nonzero(dropped.numpy())[0]:
        assert ids[k].tolist() == [2, 5 + k, 6, 7, 0, 0]
        assert labels[k].tolist() == [-100, 5 + k, 6, 7, -100, -100]
    for k in np.nonzero(kept.numpy())[0]:
        assert ids[k].tolist() == rows[k]
        assert labels[k].tolist() == [-100, -100, -100, 5 + k, 6, 7]
    # the draws are reproducible from the seed and move on with every batch
    again = tdata.Collator(pad=0, prefix=3, cond_dropout=0.25, unconditioned=(2,), seed=3)
    assert torch.equal(again(rows)["input_ids"], ids)
    assert not torch.equal(again(rows)["input_ids"], ids)


def test_without_dropout_the_collator_is_unchanged():
    rows = [[2, 20001, 20010, 5, 6, 7], [2, 20002, 20011, 8]]
    plain = tdata.Collator(pad=0, prefix=3)(rows)
    want = [[-100, -100, -100, 5, 6, 7], [-100, -100, -100, 8, -100, -100]]
    assert plain["labels"].tolist() == want


def test_a_dataset_without_bos_drops_to_bos_too():
    collate = tdata.Collator(pad=0, prefix=2, cond_dropout=0.999, unconditioned=(2,), seed=0)
    batch = collate([[20001, 20010, 5, 6]])
    assert batch["input_ids"].tolist() == [[2, 5, 6]]
    assert batch["labels"].tolist() == [[-100, 5, 6]]


@pytest.mark.parametrize("p", [-0.1, 1.0, float("nan")])
def test_bad_dropout_is_refused(p):
    with pytest.raises(TrainError, match="--cond-dropout must be in"):
        tdata.Collator(pad=0, prefix=3, cond_dropout=p, unconditioned=(2,))
    with pytest.raises(TrainError, match="--cond-dropout must be"):
        ft.check_finetune_params(ft.FinetuneParams(data=None, out="x", cond_dropout=p))


def test_no_bos_token_no_unconditioned_prefix():
    with pytest.raises(TrainError, match="no BOS token"):
        tdata.unconditioned_prefix({"PAD": 0, "EOS": 1})
    assert tdata.unconditioned_prefix({"PAD": 0, "BOS": 7}) == [7]


def test_the_run_records_dropout_and_logs_the_conditioning_gain(run):
    meta = json.loads((run / "run.json").read_text())
    assert meta["params"]["cond_dropout"] == 0.3
    rows = list(csv.DictReader(open(run / "training_log.csv", encoding="utf-8")))
    assert [r["step"] for r in rows] == ["0", "6", "12"]
    gains = [float(r["conditioning_gain"]) for r in rows]
    assert gains[0] == 0.0  # new conditioning rows all start at the same mean embedding
    assert all(np.isfinite(gains))
    per_bin = json.loads((run / "val_loss_by_bin.json").read_text())["bins"]
    assert per_bin and all("conditioning_gain" in b for b in per_bin)


def _guided_greedy(model, cond, uncond, g: float, steps: int, suppress) -> list[int]:
    """The reference: log-softmax of both contexts, uncond + g * (cond - uncond), argmax."""
    cond, uncond, out = list(cond), list(uncond), []
    with torch.no_grad():
        for _ in range(steps):
            lc = torch.log_softmax(model(torch.tensor([cond])).logits[0, -1], -1)
            lu = torch.log_softmax(model(torch.tensor([uncond])).logits[0, -1], -1)
            scores = lu + g * (lc - lu)
            scores[suppress] = -float("inf")  # conditioning tokens are never sampled
            nxt = int(scores.argmax())
            out.append(nxt)
            cond.append(nxt)
            uncond.append(nxt)
    return out


@pytest.fixture(scope="module")
def noisy(run):
    """The run with noise on its weights: the mood tokens change every prediction."""
    loaded = gen.load_run(run, "cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    loaded.special.pop("EOS", None)  # run the full length: compare every step
    return loaded


def test_guided_sampling_follows_the_guidance_formula_step_by_step(run, noisy):
    prompt, bos = gen.prompt_ids(run, 2, -1), [int(noisy.special["BOS"])]
    seen = []
    for g in (0.0, 1.0, 3.0):
        s = gen.SamplingParams(max_new_tokens=8, top_k=1, guidance=g, seed=1)
        got = gen.sample(noisy, prompt, 2, s, seed=1)
        want = _guided_greedy(noisy.model, prompt, bos, g, 8, noisy.suppress)
        assert got == [want] * 2, g
        seen.append(got[0])
    assert len({tuple(x) for x in seen}) == 3  # the three scales choose differently


def test_guidance_differs_from_plain_sampling_and_zero_ignores_the_mood(run):
    loaded = gen.load_run(run, "cpu")
    s0 = gen.SamplingParams(max_new_tokens=24, guidance=0.0, seed=4)
    a = gen.sample(loaded, gen.prompt_ids(run, -2, -2), 3, s0, seed=4)
    b = gen.sample(loaded, gen.prompt_ids(run, 2, 2), 3, s0, seed=4)
    assert a == b  # guidance 0: the mood tokens play no part


@pytest.mark.parametrize("g", [-1.0, float("inf"), float("nan")])
def test_bad_guidance_is_refused(g):
    with pytest.raises(TrainError, match="--guidance must be >= 0 and finite"):
        gen.SamplingParams(guidance=g).check()


def test_the_cli_takes_guidance_and_cond_dropout(run, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "g"
    r = subprocess.run(
        [sys.executable, "-m", "varemi", "generate", str(run), "--valence", "1", "--arousal",
         "1", "--n", "1", "--max-new-tokens", "16", "--guidance", "-2", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --guidance must be >= 0 and finite, got -2.0"
    )
    assert not out.exists()
    r = subprocess.run(
        [sys.executable, "-m", "varemi", "finetune", "--help"], capture_output=True, text=True
    )
    assert "--cond-dropout" in r.stdout


def test_validation_rows_are_spread_over_the_split():
    assert tdata.validation_rows(10, 4).tolist() == [0, 3, 6, 9]
    assert tdata.validation_rows(3, 10).tolist() == [0, 1, 2]
    assert tdata.validation_rows(0, 5).tolist() == []


def test_one_axis_swaps_only_its_own_token():
    rows = [np.array([2, 20000 + k, 20009 + k, 5, 6]) for k in range(6)]
    rng = np.random.default_rng(0)
    for axis, position in (("valence", 1), ("arousal", 2)):
        out = tdata._with_other_moods(rows, 3, np.random.default_rng(1), axis)
        for before, after in zip(rows, out, strict=True):
            untouched = [i for i in range(5) if i != position]
            assert after[untouched].tolist() == before[untouched].tolist()
        assert sorted(int(e[position]) for e in out) == sorted(int(e[position]) for e in rows)
    both = tdata._with_other_moods(rows, 3, rng)
    assert [(int(e[1]) - 20000, int(e[2]) - 20009) for e in both] == [
        (int(e[1]) - 20000,) * 2 for e in both
    ]  # both tokens travel together from one donor


def test_the_gain_of_an_axis_whose_token_never_varies_is_zero(run, data):
    loaded = gen.load_run(run, "cpu")
    val = tdata.read_splits(data, loaded.info)["val"]
    same_arousal = tdata.Split(val.values.copy(), val.offsets, val.vbin, val.abin)
    starts = same_arousal.offsets[:-1]
    same_arousal.values[starts + 2] = same_arousal.values[2]
    collate = tdata.Collator(pad=int(loaded.special.get("PAD", 0)), prefix=3)
    rows = tdata.validation_rows(len(val), 12)
    gain = tdata.conditioning_gain(
        loaded.model, same_arousal, rows, collate, 4, loaded.device, axis="arousal"
    )
    assert gain["nats_per_token"] == 0.0
    valence = tdata.conditioning_gain(
        loaded.model, same_arousal, rows, collate, 4, loaded.device, axis="valence"
    )
    assert valence["examples"] == len(rows) and np.isfinite(valence["nats_per_token"])
