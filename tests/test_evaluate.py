"""evaluate's figures (issue 19): statistics, per-feature responses, baselines, seeds, grid.

The statistics are tested on synthetic data whose answer is known; the rest on a tiny
GPT-2 fine-tuned for a few steps on the demo dataset (shared by the module).
"""

from __future__ import annotations

import json

import helpers as h
import numpy as np
import pytest

import varemi
from varemi.dataset.info import bins_carried
from varemi.music.demo import write_demo_corpus
from varemi.training import evaluation as ev
from varemi.training import generation as gen
from varemi.training import stats

# --------------------------------------------------------------------------- statistics
N = 40


def test_a_perfect_monotone_relation_is_rho_one_with_the_smallest_p():
    a = np.arange(N, dtype=float)
    b = a**3 + 5  # monotone, not linear
    assert stats.spearman(a, b) == pytest.approx(1.0)
    lo, hi = stats.spearman_interval(a, b, resamples=200)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    assert stats.spearman_pvalue(a, b, permutations=500) == 1 / 501
    generic = stats.permutation_pvalue(lambda o: stats.spearman(a[o], b), N, permutations=200)
    assert generic == 1 / 201
    # one-sided: against a perfect inverse relation every permutation does at least as well
    assert stats.spearman_pvalue(a, -b, permutations=500) == 1.0


def test_independent_data_gives_no_small_p_and_an_interval_around_zero():
    rng = np.random.default_rng(7)
    ps = []
    for _ in range(5):
        a, b = rng.integers(-2, 3, 120), rng.normal(size=120)  # binned requests, like a grid
        ps.append(stats.spearman_pvalue(a, b, permutations=300, seed=1))
        lo, hi = stats.spearman_interval(a, b, resamples=300, seed=1)
        assert lo < stats.spearman(a, b) < hi
        assert lo < 0.25 and hi > -0.25
    assert min(ps) > 0.01 and np.mean(ps) > 0.2, ps


def test_statistics_are_seeded_and_the_vectorised_test_agrees_with_the_generic_one():
    rng = np.random.default_rng(3)
    a = rng.integers(-1, 2, 60)
    b = a * 0.3 + rng.normal(size=60)
    p = stats.spearman_pvalue(a, b, permutations=2000, seed=5)
    assert p == stats.spearman_pvalue(a, b, permutations=2000, seed=5)
    assert stats.spearman_interval(a, b, seed=2) == stats.spearman_interval(a, b, seed=2)
    generic = stats.permutation_pvalue(lambda o: stats.spearman(a[o], b), 60, 2000, seed=9)
    assert abs(p - generic) < 0.02  # the same test, other draws


def test_mean_interval_and_undefined_statistics():
    assert stats.mean_interval([]) == (None, None)
    assert stats.mean_interval([0.5]) == (0.5, None)
    mean, (lo, hi) = stats.mean_interval([0.2] * 5)
    assert mean == lo == hi == pytest.approx(0.2)
    mean, (lo, hi) = stats.mean_interval(np.linspace(-1, 1, 50), seed=4)
    assert lo < mean < hi and -0.4 < lo and hi < 0.4
    assert stats.bootstrap_interval(lambda i: None, 10) is None
    assert stats.permutation_pvalue(lambda o: None, 10) is None
    assert stats.spearman_pvalue([1, 1, 1], [1, 2, 3]) is None


def test_composite_figures_get_intervals_and_p_values():
    control_statistics, quadrant_accuracy = ev.control_statistics, ev.quadrant_accuracy

    grid = np.array([(v, a) for v in (-4, 0, 4) for a in (-4, 0, 4)] * 6)
    measured = grid / 4 * 0.8 + np.random.default_rng(0).normal(0, 0.05, grid.shape)
    assert quadrant_accuracy(grid, measured) == 1.0
    figures = control_statistics(grid, measured, seed=0)
    assert (
        set(figures["ci95"])
        == set(figures["p_permutation"])
        == {
            "spearman_valence",
            "spearman_arousal",
            "quadrant_accuracy",
        }
    )
    assert figures["ci95"]["quadrant_accuracy"] == [1.0, 1.0]
    for p in figures["p_permutation"].values():
        assert p == 1 / (stats.PERMUTATIONS + 1)
    zero = np.zeros((5, 2), dtype=np.int64)
    assert quadrant_accuracy(zero, np.ones((5, 2))) is None
    assert control_statistics(zero, np.ones((5, 2)))["p_permutation"]["quadrant_accuracy"] is None


# --------------------------------------------------------------------------- the grid's bins
def test_bins_carried_and_the_warning_name_exactly_the_absent_bins():
    absent_bins, absent_bins_warning = ev.absent_bins, ev.absent_bins_warning

    info = {"histograms": {"examples_by_bin": {"-2,-4": 3, "+0,+4": 5, "+3,-4": 0}}}
    assert bins_carried(info) == ([-2, 0], [-4, 4])
    per_axis = {"valence_bin": {"-1": 0, "+0": 2, "+1": 1}, "arousal_bin": {"-1": 4, "+0": 0}}
    assert bins_carried({"histograms": per_axis}) == ([0, 1], [-1])
    assert bins_carried({}) is None and bins_carried({"histograms": {"counts": "files"}}) is None
    absent = absent_bins([-4, 0, 4], ([-3, 0, 1, 2, 3], [-4, -2, 0]))
    assert absent == {"valence": [-4, 4], "arousal": [4]}
    assert absent_bins_warning(absent).startswith(
        "warning: the grid asks for valence bins -4, +4 and arousal bin +4 that no training "
        "example carried"
    )
    assert absent_bins_warning({"valence": [], "arousal": [0]}).startswith(
        "warning: the grid asks for arousal bin 0 that"
    )
    assert absent_bins_warning({"valence": [], "arousal": []}) is None
    assert absent_bins([-4, 4], None) is None and absent_bins_warning(None) is None


def test_a_dataset_labelled_in_seconds_is_noted():
    assert ev._label_time_note(None) is None and ev._label_time_note("beats") is None
    note = ev._label_time_note("seconds")
    assert "seconds" in note and "measured in beats" in note


# --------------------------------------------------------------------------- a run
WINDOW = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    midi = tmp_path_factory.mktemp("evaluate") / "midi"
    write_demo_corpus(midi)
    out = midi.parent / "data"
    h.build(midi, out, window_size=WINDOW, stride=48, min_window_tokens=16, bos=True)
    return out


@pytest.fixture(scope="module")
def run(data):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from varemi.training import finetune as ft

    torch.set_num_threads(2)
    out = data.parent / "run"
    ft.finetune(
        ft.FinetuneParams(
            data=data, out=out, model="tiny", max_steps=12, eval_steps=12, lr=1e-2, warmup=2,
            batch_size=8, max_eval_examples=16, patience=0, device="cpu", quiet=True,
        )
    )  # fmt: skip
    return out


@pytest.fixture(autouse=True)
def small_gain(monkeypatch):
    # the conditioning gain is tested in test_train.py; here it only has to be there
    monkeypatch.setattr(ev, "GAIN_EXAMPLES", 8)


def _absent(data, grid: list[int]) -> dict:
    """The grid's bins that the dataset's own histogram counts no example of."""
    pairs = h.info(data)["histograms"]["examples_by_bin"]
    carried = [tuple(int(x) for x in k.split(",")) for k, n in pairs.items() if n]
    return {
        "valence": [b for b in grid if b not in {v for v, _ in carried}],
        "arousal": [b for b in grid if b not in {a for _, a in carried}],
    }


def test_evaluate_json_holds_every_new_figure(run, data, tmp_path, capsys):
    sampling = gen.SamplingParams(max_new_tokens=100)  # more than the tiny model's positions
    result = varemi.evaluate(run, grid=2, n_per_cell=1, sampling=sampling, out=tmp_path, quiet=True)
    doc = json.loads((tmp_path / "evaluate.json").read_text())
    assert doc["grid"] == [-4, 4] and doc["generations"] == 4 and doc["seeds"] == 1
    for key in ("conditioned", "shuffled_baseline"):
        m = doc[key]
        assert {"spearman_valence", "spearman_arousal", "quadrant_accuracy", "n"} <= set(m)
        assert set(m["ci95"]) == set(m["p_permutation"]) == set(ev.COMPOSITE)
        for figure in ev.COMPOSITE:
            ci, p = m["ci95"][figure], m["p_permutation"][figure]
            assert ci is None or (len(ci) == 2 and ci[0] <= ci[1])
            assert p is None or 1 / 1001 <= p <= 1
    assert list(doc["features"]) == list(ev.FEATURES)
    assert [f["axis"] for f in doc["features"].values()] == ["arousal"] * 3 + ["valence"] * 3
    for f in doc["features"].values():
        assert set(f) == {"axis", "rho", "ci95", "p_permutation", "shuffled_rho", "shuffled_ci95"}
    assert len(doc["cells"]) == 4
    for cell in doc["cells"]:
        assert {"measured_valence_ci95", "measured_arousal_ci95", "valid"} <= set(cell)
        assert list(cell["features"]) == list(ev.FEATURES)
    assert len(doc["per_seed"]) == 1 and doc["per_seed"][0]["seed"] == 0
    assert doc["per_seed"][0]["n"] == doc["conditioned"]["n"]
    free = doc["unconditioned"]
    assert free["pieces"] == 2 and free["seed"] == 4 and free["guidance"] == 0.0  # 1 x grid 2
    assert 0 <= free["valid"] <= 2 and list(free["features"]) == list(ev.FEATURES)
    # the cap of the tiny model: 67 positions, 3 of them the prompt
    assert doc["positions"] == WINDOW + 3 and doc["new_tokens_cap"] == WINDOW
    assert doc["new_tokens_capped"] is True
    # a default build labels files in seconds (--label-time auto): evaluate says so
    assert doc["label_time"] == "beats" and doc["dataset_label_time"] == "seconds"
    assert "measured in seconds" in doc["label_time_note"]
    assert doc["statistics"] == {
        "bootstrap_resamples": 1000, "permutations": 1000, "level": 0.95, "seed": 0
    }  # fmt: skip
    # the demo dataset carries no valence -4: named, exactly
    absent = _absent(data, [-4, 4])
    assert absent["valence"] or absent["arousal"]
    assert doc["absent_bins"] == absent
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "that no training example carried" in warnings[0]
    named = ev.absent_bins_warning(absent)
    assert warnings[0] == named
    text = ev.format_evaluation(result)
    for word in ("conditioned [95% CI]", "arousal ~ note_density", "unconditioned", "beats"):
        assert word in text, text
    assert f"capped at {WINDOW} by the model's {WINDOW + 3} positions" in text
    assert (tmp_path / "evaluate.png").is_file()


def test_seeds_repeat_the_grid_and_unconditioned_0_skips(run, tmp_path):
    sampling = gen.SamplingParams(max_new_tokens=12, seed=3)
    one = varemi.evaluate(
        run, grid=2, n_per_cell=1, sampling=sampling, out=tmp_path / "one", quiet=True,
        unconditioned=0,
    )  # fmt: skip
    two = varemi.evaluate(
        run, grid=2, n_per_cell=1, sampling=sampling, out=tmp_path / "two", quiet=True,
        seeds=2, unconditioned=0,
    )  # fmt: skip
    assert one["generations"] == 4 and two["generations"] == 8
    assert one["unconditioned"] is None and two["unconditioned"] is None
    assert [s["seed"] for s in two["per_seed"]] == [3, 7]  # --seed + k x cells
    assert two["per_seed"][0] == one["per_seed"][0]  # seed 0 is the one-seed sampling
    assert sum(c["valid"] for c in two["cells"]) == two["conditioned"]["n"]
    assert "per seed:" in ev.format_evaluation(two)


def test_bad_values_are_one_error_line(cli, run, tmp_path):
    out = tmp_path / "e"
    assert cli("evaluate", run, "--seeds", "0", "--out", out) == (
        "error: --seeds must be an integer >= 1, got 0"
    )
    assert cli("evaluate", run, "--unconditioned", "-1", "--out", out) == (
        "error: --unconditioned must be an integer >= 0, got -1"
    )
    assert not out.exists()
    with pytest.raises(ev.TrainError, match="--seeds"):
        varemi.evaluate(run, seeds=True, out=out)
