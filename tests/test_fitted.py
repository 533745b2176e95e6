"""Labels fitted to human ratings (issue 18): the fitter, the labeller file, the CLI, the cache."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import helpers as h
import numpy as np
import pytest

from varemi.corpus import cache
from varemi.labelling import fitted
from varemi.labelling.fitted import (
    FIT_INPUTS,
    LabellerError,
    fit_labeller,
    group_folds,
    load_labeller,
    write_labeller,
)
from varemi.labelling.heuristic import HEURISTIC, LABEL_FEATURES, label_folder

QUICK = ("--tokenizer", "builtin", "--no-cache", "--quiet", "--workers", "1")
SMALL = ("--window-size", "16", "--stride", "8", "--min-window-tokens", "4")


# --------------------------------------------------------------------------- synthetic data
def synthetic(n: int = 120, seed: int = 0):
    """Features where valence follows local_major and arousal note_density (with noise)."""
    rng = np.random.default_rng(seed)
    features, labels, groups = [], [], []
    for k in range(n):
        f = {name: float(rng.uniform(0.5, 2.0)) for name in LABEL_FEATURES}
        f["local_major"] = float(rng.normal(0.72, 0.1))
        f["note_density"] = float(2 ** rng.normal(3.0, 1.0))
        f["velocity_range"] = float(k % 2)  # half the files: constant velocity (gate closed)
        f["drum_density"] = float(rng.uniform(1, 8)) if k % 3 else 0.0  # a third: no drums
        v = 1.0 if f["local_major"] + rng.normal(0, 0.05) > 0.72 else -1.0
        a = 1.0 if math.log2(f["note_density"]) + rng.normal(0, 0.5) > 3.0 else -1.0
        features.append(f)
        labels.append((v, a))
        groups.append(f"g{k // 4}")
    return features, labels, groups


@pytest.fixture(scope="module")
def model():
    features, labels, groups = synthetic()
    return fit_labeller(features, labels, groups, {"human_csv": "synthetic.csv"})


def weight(model, axis: str, feature: str) -> float:
    m = getattr(model, axis)
    return m.weights[[i.feature for i in model.inputs].index(feature)]


def test_the_fit_finds_the_features_that_carry_each_axis(model):
    assert weight(model, "valence", "local_major") > 0.5
    assert weight(model, "arousal", "note_density") > 0.3
    assert abs(weight(model, "valence", "note_density")) < weight(model, "valence", "local_major")
    for axis in ("valence", "arousal"):
        cv = json.loads(getattr(model, axis).cv)
        assert cv["auc"] > 0.8 and cv["accuracy"] > 0.7
        assert getattr(model, axis).lam in fitted.LAMBDAS
        assert set(cv["log_loss_by_lambda"]) == {f"{x:g}" for x in fitted.LAMBDAS}


def test_the_fit_is_deterministic(model, tmp_path):
    features, labels, groups = synthetic()
    again = fit_labeller(features, labels, groups, {"human_csv": "synthetic.csv"})
    a = write_labeller(model, tmp_path / "a.json")
    b = write_labeller(again, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert a.sha256 == b.sha256 and len(a.sha256) == 64


def test_the_labeller_file_round_trips_and_labels_the_same(model, tmp_path):
    written = write_labeller(model, tmp_path / "m.json")
    loaded = load_labeller(tmp_path / "m.json")
    assert loaded == written
    assert loaded.to_json() == (tmp_path / "m.json").read_text(encoding="utf-8")
    for f in synthetic(10, seed=1)[0]:
        assert loaded.label(f) == model.label(f)
    doc = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert doc["format"] == "varemi-labeller" and doc["format_version"] == 1
    assert [i["feature"] for i in doc["inputs"]] == [i.feature for i in FIT_INPUTS]
    for axis in ("valence", "arousal"):
        assert set(doc[axis]) >= {"bias", "weights", "lambda", "calibration", "cv"}
        assert {"auc", "accuracy"} <= set(doc[axis]["cv"])
    assert doc["cross_validation"]["folds"] == 5 and doc["cross_validation"]["groups"] == 30


def test_labels_are_in_range_and_zero_is_the_learned_boundary(model):
    f = synthetic(1, seed=2)[0][0]
    z = model.z(f)
    for axis, index in (("valence", 0), ("arousal", 1)):
        m = getattr(model, axis)
        score = m.bias + float(np.dot(m.weights, z))
        p = 1.0 / (1.0 + math.exp(-(m.slope * score + m.intercept)))
        assert model.label(f)[index] == pytest.approx(2 * p - 1)  # 2 P(positive) - 1
        assert -1 < model.label(f)[index] < 1
    # a file exactly on the boundary: move local_major until the valence score is 0
    m = model.valence
    j = [i.feature for i in model.inputs].index("local_major")
    target = -(m.intercept / m.slope) - m.bias - float(np.dot(m.weights, z)) + m.weights[j] * z[j]
    f2 = dict(f, local_major=model.centres[j] + target / m.weights[j] * model.scales[j])
    assert model.label(f2)[0] == pytest.approx(0.0, abs=1e-9)


def test_a_file_without_drums_is_neutral_on_drum_density(model):
    j = [i.feature for i in model.inputs].index("drum_density")
    base = synthetic(1, seed=3)[0][0]
    assert model.z(dict(base, drum_density=0.0))[j] == 0.0
    assert model.z(dict(base, drum_density=64.0))[j] > 0.0
    k = [i.feature for i in model.inputs].index("velocity_mean")
    assert model.z(dict(base, velocity_range=0.0, velocity_mean=127.0))[k] == 0.0


def test_folds_keep_groups_together_and_depend_on_group_names_only():
    groups = [f"g{k % 7}" for k in range(50)]
    folds = group_folds(groups, 5)
    for g in set(groups):
        assert len({int(f) for f, x in zip(folds, groups, strict=True) if x == g}) == 1
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    shuffled = groups[::-1]
    back = group_folds(shuffled, 5)[::-1]
    assert back.tolist() == folds.tolist()


def test_ratings_count_with_their_strength():
    features, labels, groups = synthetic()
    soft = [(v * 0.5, a * 0.5) for v, a in labels]  # weaker ratings, same signs
    strong = fit_labeller(features, labels, groups)
    weak = fit_labeller(features, soft, groups)
    f = features[0]
    assert abs(weak.label(f)[0]) < abs(strong.label(f)[0])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, la, g: (f, la, ["one"] * len(g)), "2 groups"),
        (lambda f, la, g: (f, [(1.0, a) for _, a in la], g), "valence"),
    ],
    ids=["one-group", "one-sided-valence"],
)
def test_data_that_cannot_be_fitted_is_refused(change, message):
    with pytest.raises(LabellerError, match=message):
        fit_labeller(*change(*synthetic(40)))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format="other"), "not a varemi labeller"),
        (lambda d: d.update(format_version=99), "format_version"),
        (lambda d: d["valence"].update(bias="x"), "finite number"),
        (lambda d: d["inputs"][0].update(feature="loudness"), "unknown feature"),
        (lambda d: d["inputs"][0].update(scale=0), "scale must be > 0"),
        (lambda d: d["arousal"]["weights"].pop("tempo_bpm"), "weights"),
        (lambda d: d.pop("arousal"), "field"),
    ],
)
def test_a_bad_labeller_file_is_refused_in_one_line(model, tmp_path, edit, message):
    doc = json.loads(model.to_json())
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(LabellerError, match=message) as err:
        load_labeller(path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"{not json")
    with pytest.raises(LabellerError, match="not JSON"):
        load_labeller(path)


# --------------------------------------------------------------------------- cache keys
def test_the_label_key_names_the_labeller(model, tmp_path):
    features, labels, groups = synthetic()
    other = fit_labeller(features, [(v, -a) for v, a in labels], groups)
    a = write_labeller(model, tmp_path / "a.json").sha256
    b = write_labeller(other, tmp_path / "b.json").sha256
    versions = {cache.labeller_version(), cache.labeller_version(a), cache.labeller_version(b)}
    assert len(versions) == 3
    keys = {cache.label_key("f" * 64, v, 0.0, 0, "x.mid") for v in versions}
    assert len(keys) == 3
    assert "labelling/fitted.py" in cache.LABEL_SOURCES


# --------------------------------------------------------------------------- end to end
def write_human(path: Path, files: list[str], quadrants: bool = False) -> Path:
    """Human labels for a tiny corpus: signs from each file's index, groups of two."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["filename", "quadrant", "piece"]
            if quadrants
            else ["filename", "valence", "arousal", "piece"]
        )
        for k, name in enumerate(files):
            v, a = (1 if k % 2 else -1), (1 if (k // 2) % 2 else -1)
            q = {(1, 1): "Q1", (-1, 1): "Q2", (-1, -1): "Q3", (1, -1): "Q4"}[(v, a)]
            w.writerow([f"./{name}", q, f"p{k // 2}"] if quadrants else [name, v, a, f"p{k // 2}"])
    return path


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    """A tiny rated corpus, its human CSV and a labeller fitted with the CLI."""
    root = tmp_path_factory.mktemp("fit")
    midi = root / "midi"
    files = h.write_tiny_corpus(midi, [f"r{k:02d}.mid" for k in range(16)], notes=40)
    human = write_human(root / "human.csv", files)
    out = root / "labeller.json"
    res = h.run_cli("labels", "--fit", human, "--midi-dir", midi, "--out", out, "--groups",
                    "piece", "--workers", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "cross-validated AUC" in res.stderr
    return root, midi, human, out


def test_labels_fit_writes_a_labeller_that_labels_and_builds(rated, tmp_path):
    root, midi, human, out = rated
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["cross_validation"]["groups"] == 8 and doc["training"]["groups"] == "piece"
    model = load_labeller(out)

    # labels --labeller: the model's labels of the features
    csv_out = tmp_path / "labels.csv"
    res = h.run_cli("labels", "--labeller", out, "--midi-dir", midi, "--out", csv_out,
                    "--workers", "2", "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    with open(csv_out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and list(rows[0])[-1] == "drum_density"
    for r in rows:
        features = {k: float(r[k]) for k in LABEL_FEATURES}
        assert (float(r["valence"]), float(r["arousal"])) == model.label(features)

    # build --labeller: the same labels, versioned in dataset_info.json, verify passes
    data = tmp_path / "data"
    res = h.run_cli("build", "--midi-dir", midi, "--out", data, "--labeller", out, *QUICK, *SMALL)
    assert res.returncode == 0, res.stderr
    info = h.info(data)
    assert info["labels"]["source"] == "fitted"
    assert info["labels"]["labeller"] == {
        "kind": "fitted",
        "file": str(out),
        "sha256": model.sha256,
    }
    assert info["params"]["labeller"] == str(out)
    want = {r["filename"]: (float(r["valence"]), float(r["arousal"])) for r in rows}
    for split in h.rows(data).values():
        for r in split:
            v, a = want[r["source_file"]]
            assert (r["valence"], r["arousal"]) == (float(np.float32(v)), float(np.float32(a)))
    res = h.run_cli("verify", data)
    assert res.returncode == 0, res.stdout + res.stderr
    heuristic = tmp_path / "heuristic"
    res = h.run_cli("build", "--midi-dir", midi, "--out", heuristic, *QUICK, *SMALL)
    assert h.info(heuristic)["labels"]["labeller"] == {
        "kind": "heuristic",
        "file": None,
        "sha256": None,
    }


def test_labels_fit_reads_quadrants_and_a_groups_csv(rated, tmp_path):
    root, midi, _, _ = rated
    files = sorted(p.name for p in midi.iterdir())
    human = write_human(tmp_path / "quadrants.csv", files, quadrants=True)
    groups = tmp_path / "groups.csv"
    groups.write_text("filename,group\n" + "".join(f"{f},p{k // 2}\n" for k, f in enumerate(files)))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out, spec in ((a, "piece"), (b, groups)):
        res = h.run_cli("labels", "--fit", human, "--midi-dir", midi, "--out", out, "--groups",
                        spec, "--quiet", "--workers", "1")  # fmt: skip
        assert res.returncode == 0, res.stderr
    assert load_labeller(a).valence == load_labeller(rated[3]).valence  # the same signs
    assert load_labeller(a).arousal == load_labeller(b).arousal


def test_a_build_with_a_labeller_reuses_no_heuristic_label(rated, tmp_path):
    _, midi, _, out = rated
    shared = tmp_path / "cache"
    common = dict(cache=True, cache_dir=shared, window_size=16, stride=8, min_window_tokens=4)
    h.build(midi, tmp_path / "heuristic", **common)
    cached = h.build(midi, tmp_path / "cached", labeller=out, **common)
    fresh = h.build(midi, tmp_path / "fresh", labeller=out, cache=False, window_size=16,
                    stride=8, min_window_tokens=4)  # fmt: skip
    assert (tmp_path / "cached" / "labels.csv").read_bytes() == (
        tmp_path / "fresh" / "labels.csv"
    ).read_bytes()
    assert (tmp_path / "cached" / "labels.csv").read_bytes() != (
        tmp_path / "heuristic" / "labels.csv"
    ).read_bytes()
    h.same_data(tmp_path / "cached", tmp_path / "fresh")
    assert cached.info["cache"].get("hit", 0) == 0  # tokens cached, labels not: computed
    again = h.build(midi, tmp_path / "again", labeller=out, **common)
    assert again.info["cache"]["hit"] == 16  # the labeller's own labels are reused
    assert fresh.info["labels"]["labeller"]["sha256"] == load_labeller(out).sha256


def test_window_scope_labels_windows_with_the_labeller(rated, tmp_path):
    _, midi, _, out = rated
    kw = dict(label_scope="window", window_size=16, stride=8, min_window_tokens=4)
    fitted_rows = h.rows(h.build(midi, tmp_path / "w_fit", labeller=out, **kw).out)
    plain_rows = h.rows(h.build(midi, tmp_path / "w_heur", **kw).out)
    model = load_labeller(out)
    fit_labels = [(r["valence"], r["arousal"]) for s in fitted_rows.values() for r in s]
    heur_labels = [(r["valence"], r["arousal"]) for s in plain_rows.values() for r in s]
    assert len(fit_labels) == len(heur_labels) and fit_labels != heur_labels
    # each window's labels are the labeller's labels of its decoded music
    from symusic import Score

    from varemi.corpus.job import window_labels

    base = h.base_tokenizer()
    first = sorted(p.name for p in midi.iterdir())[0]
    ids = np.array(h.music_ids(base, Score(str(midi / first))), np.int32)
    v, a, _ = window_labels(base, ids, first, (0.0, 0.0), (16, 8, 4), labeller=model)
    rows = [r for s in fitted_rows.values() for r in s if r["source_file"] == first]
    rows.sort(key=lambda r: r["window_idx"])
    assert [(r["valence"], r["arousal"]) for r in rows] == [
        (float(np.float32(x)), float(np.float32(y))) for x, y in zip(v, a, strict=True)
    ]


BAD = [
    (("labels", "--fit", "{human}", "--midi-dir", "{midi}", "--out", "{tmp}/l.csv"), [".json"]),
    (("labels", "--fit", "{human}", "--midi-dir", "{midi}", "--out", "{tmp}/l.json",
      "--labeller", "{labeller}"), ["--labeller", "--fit"]),
    (("labels", "--fit", "{human}", "--midi-dir", "{midi}", "--out", "{tmp}/l.json",
      "--groups", "nosuch"), ["--groups", "column"]),
    (("labels", "--fit", "{tmp}/absent.csv", "--midi-dir", "{midi}", "--out", "{tmp}/l.json"),
     ["not found"]),
    (("labels", "--midi-dir", "{midi}", "--out", "{tmp}/l.csv", "--groups", "piece"),
     ["--groups", "--fit"]),
    (("labels", "--midi-dir", "{midi}", "--out", "{tmp}/l.csv", "--label-range", "1", "9"),
     ["--label-range", "--fit"]),
    (("labels", "--midi-dir", "{midi}", "--out", "{tmp}/l.csv", "--labeller", "{tmp}/no.json"),
     ["--labeller", "not a file"]),
    (("labels", "--midi-dir", "{midi}", "--out", "{tmp}/l.csv", "--labeller", "{human}"),
     ["--labeller", "not json"]),
    (("build", "--midi-dir", "{midi}", "--out", "{tmp}/d", "--labeller", "{labeller}",
      "--labels", "{human}", *QUICK), ["--labeller", "--labels"]),
    (("build", "--midi-dir", "{midi}", "--out", "{tmp}/d", "--labeller", "{tmp}/no.json",
      *QUICK), ["--labeller"]),
]  # fmt: skip


@pytest.mark.parametrize("args, words", BAD, ids=[str(k) for k in range(len(BAD))])
def test_bad_fit_and_labeller_options_are_one_error_line(rated, tmp_path, args, words):
    root, midi, human, labeller = rated
    values = dict(human=human, midi=midi, tmp=tmp_path, labeller=labeller)
    res = h.run_cli(*(a.format(**values) for a in args))
    assert res.returncode == 2, res.stderr
    lines = h.error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_label_folder_with_a_labeller_in_workers_equals_one_process(rated):
    _, midi, _, out = rated
    model = load_labeller(out)
    one, _ = label_folder(midi, workers=1, progress=False, labeller=model)
    two, _ = label_folder(midi, workers=2, progress=False, labeller=model)
    assert one.equals(two)


def test_ratings_on_another_scale_need_label_range(rated, tmp_path):
    _, midi, human, _ = rated
    with open(human, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    ratings = tmp_path / "ratings.csv"
    with open(ratings, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "valence", "arousal", "piece"])
        for r in rows:  # signs on a 1..9 scale: 2 and 8
            w.writerow(
                [r["filename"], 5 + 3 * int(r["valence"]), 5 + 3 * int(r["arousal"]), r["piece"]]
            )
    out = tmp_path / "r.json"
    res = h.run_cli("labels", "--fit", ratings, "--midi-dir", midi, "--out", out, "--quiet")
    assert res.returncode == 2 and "--label-range" in h.error_lines(res.stderr)[0]
    res = h.run_cli("labels", "--fit", ratings, "--midi-dir", midi, "--out", out, "--quiet",
                    "--label-range", "1", "9", "--groups", "piece")  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["training"]["label_range"] == [1.0, 9.0] and doc["training"]["files"] == 16
    assert doc["valence"]["cv"]["human_positive"] == 0.5


def test_evaluate_measures_generations_with_the_datasets_own_labeller(model, tmp_path, capsys):
    # issue 19: a dataset labelled by a fitted labeller is evaluated with that labeller
    from varemi.training.evaluation import dataset_labeller

    heuristic_info = {"labels": {"labeller": {"kind": "heuristic", "file": None}}}
    labeller, record = dataset_labeller(heuristic_info)
    assert labeller is HEURISTIC and record["kind"] == "heuristic"
    written = write_labeller(model, tmp_path / "labeller.json")
    info = {"labels": {"labeller": {"kind": "fitted", "file": str(tmp_path / "labeller.json"),
                                    "sha256": written.sha256}}}  # fmt: skip
    labeller, record = dataset_labeller(info)
    assert labeller.sha256 == written.sha256 and record["kind"] == "fitted"
    (tmp_path / "labeller.json").write_text("{}")  # changed since the build
    labeller, record = dataset_labeller(info)
    assert labeller is HEURISTIC and "missing or changed" in record["note"]
    assert "warning:" in capsys.readouterr().err
