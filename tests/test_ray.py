"""``build --engine ray``: the same rows, in the same order, and the same outputs as local.

Every option of the local engine (duplicate groups and drop, augmentation, quantile
bins, user groups) against ``--engine local`` on one corpus. One local Ray session
with 2 CPUs serves the whole module (Ray takes seconds to start); builds run in this
process and find it already initialised (varemi.pipeline.ray_engine uses it).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
from pathlib import Path

import helpers as h
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import varemi.pipeline.ray_engine as vc  # noqa: E402
from varemi._base.errors import VaremiError  # noqa: E402
from varemi.pipeline.ray_engine import ClusterError, blocks  # noqa: E402

KW = dict(window_size=16, stride=8, min_window_tokens=4, workers=2)


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Good files in nested folders (enough for several blocks), plus bad ones."""
    midi = tmp_path_factory.mktemp("ray") / "midi"
    names = [f"a{k:02d}.mid" for k in range(14)] + [f"sub/b{k}.mid" for k in range(6)]
    h.write_tiny_corpus(midi, names, notes=40)
    (midi / "garbage.mid").write_bytes(b"MThd not really")
    (midi / "empty.mid").write_bytes(b"")
    h.write_midi(midi / "drums.mid", h.track([36, 38] * 10, is_drum=True))  # no_notes
    h.write_midi(midi / "long.mid", h.track([60, 62, 64], step=480 * 120, duration=480 * 120))
    # duplicates in other blocks than their first copy: an exact one (other tempo and
    # velocity) of a00.mid, a transposed one of a02.mid (write_tiny_corpus's melodies)
    h.write_midi(midi / "sub/zz_exact.mid", h.track(h.melody(40, seed=0), velocity=50), qpm=90)
    h.write_midi(midi / "sub/zz_up.mid", h.track([p + 3 for p in h.melody(42, seed=2)]))
    return midi


def assert_same_build(a: Path, b: Path) -> None:
    """Every column of both splits, the counts, groups and the CSVs beside the data."""
    h.same_data(a, b)  # every column of train and val, schemas, counts, histograms
    for name in ("rejects.csv", "labels.csv", "duplicates.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ia, ib = h.info(a), h.info(b)
    for key in ("groups", "labels", "conditioning_tokens"):
        assert ia[key] == ib[key], key
    assert {**ia["params"], "out": None} == {**ib["params"], "out": None, "engine": "local"}


def test_blocks_cover_the_files_in_order():
    assert blocks(0, 2) == []
    assert blocks(5, 2) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    got = blocks(10_000, 2)
    assert got[0] == (0, 256) and got[-1][1] == 10_000
    assert all(x[1] == y[0] for x, y in zip(got, got[1:], strict=False))


def test_ray_gives_the_rows_and_rejects_of_local(ray_session, corpus, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    h.build(corpus, local, max_minutes=2, **KW)
    h.build(corpus, remote, max_minutes=2, engine="ray", **KW)
    assert_same_build(local, remote)
    assert h.rejects(remote) == {
        "garbage.mid": "unreadable",
        "empty.mid": "unreadable",
        "drums.mid": "no_notes",
        "long.mid": "too_long",
    }
    info = h.info(remote)
    assert info["params"]["engine"] == "ray"
    with open(remote / "duplicates.csv", newline="", encoding="utf-8") as f:
        groups = {r["source_file"]: r["group"] for r in csv.DictReader(f)}
    assert groups["sub/zz_exact.mid"] == groups["a00.mid"] == "a00.mid"  # found across blocks
    assert groups["sub/zz_up.mid"] == groups["a02.mid"] == "a02.mid"
    assert info["counts"]["examples"]["val"] > 0  # both splits hold rows
    assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in local.iterdir())
    from varemi.dataset.verify import verify

    assert verify(remote).ok


def test_ray_with_csv_labels_and_the_token_cache(ray_session, corpus, tmp_path):
    names = [str(p.relative_to(corpus).as_posix()) for p in corpus.rglob("*.mid")]
    labels = h.write_labels(
        tmp_path / "labels.csv",
        {n: ((k % 7) / 4 - 0.75, 0.5 - (k % 5) / 4) for k, n in enumerate(names)},
    )
    cache = tmp_path / "cache"
    kw = dict(KW, labels=labels, max_minutes=2, cache=True, cache_dir=cache)
    h.build(corpus, tmp_path / "local", **kw)
    h.build(corpus, tmp_path / "cold", engine="ray", **dict(kw, cache_dir=tmp_path / "cache2"))
    h.build(corpus, tmp_path / "warm", engine="ray", **kw)  # served by the local build's cache
    h.same_data(tmp_path / "local", tmp_path / "cold")
    h.same_data(tmp_path / "local", tmp_path / "warm")
    assert h.info(tmp_path / "cold")["cache"]["miss"] > 0
    h.build(corpus, tmp_path / "local2", **kw)  # a warm local build: the same cache use
    warm, local_warm = h.info(tmp_path / "warm")["cache"], h.info(tmp_path / "local2")["cache"]
    assert warm["hit"] == 23  # the 22 good files and long.mid (too long, from its entry)
    assert {**warm, "dir": None} == {**local_warm, "dir": None}


def test_interrupted_ray_build_leaves_previous_output_intact(
    ray_session, corpus, tmp_path, monkeypatch
):
    from varemi.dataset.export import SplitWriter

    out = tmp_path / "out"
    h.build(corpus, out, **KW)
    before = h.snapshot(out)

    def interrupt(self, split_dir):  # every block's shards are already in the tmp folder
        assert any("varemi-tmp" in p.name for p in tmp_path.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(SplitWriter, "finish", interrupt)
    with pytest.raises(KeyboardInterrupt):
        h.build(corpus, out, engine="ray", overwrite=True, **KW)
    assert h.snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if "varemi-" in p.name]


def test_engine_parameters_are_refused_before_any_work(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(ClusterError, match="--ray-address applies to --engine ray only"):
        h.build(corpus, out, ray_address="auto", **KW)
    with pytest.raises(VaremiError, match="--engine must be one of local, ray"):
        h.build(corpus, out, engine="spark", **KW)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no Ray installed
    with pytest.raises(ClusterError, match=r"pip install 'varemi\[ray\]'"):
        h.build(corpus, out, engine="ray", **KW)
    assert not out.exists()


def test_ray_parquet_shards_match_local_parquet(ray_session, corpus, tmp_path):
    import pyarrow.parquet as pq

    for engine in ("local", "ray"):
        h.build(corpus, tmp_path / engine, engine=engine, format="parquet", max_minutes=2, **KW)
    for s in ("train", "val"):
        local = pq.read_table(sorted((tmp_path / "local" / s).glob("*.parquet")))
        remote = pq.read_table(sorted((tmp_path / "ray" / s).glob("*.parquet")))
        assert remote.num_rows > 0 and remote.equals(local), s
    readme = (tmp_path / "ray" / "README.md").read_bytes()
    assert readme == (tmp_path / "local" / "README.md").read_bytes()


@pytest.mark.parametrize(
    "kw",
    [
        dict(dedup="drop"),
        dict(augment_transpose="-1,1"),
        dict(augment_transpose="1", augment_velocity="-4", dedup="drop"),
        dict(binning="quantile"),
        dict(binning="quantile", dedup="off", augment_transpose="2"),
        dict(label_scope="window", augment_transpose="1"),
        dict(label_scope="window", binning="quantile"),
        dict(window_align="bar", label_scope="window"),
        dict(label_time="beats", augment_tempo="20"),
        dict(label_scope="window", label_time="seconds", augment_tempo="20"),
        dict(key_to_c=True, augment_transpose="1", label_scope="window"),
    ],
    ids=[
        "drop",
        "transpose",
        "drop+augment",
        "quantile",
        "quantile+augment",
        "window-labels+augment",
        "window-labels+quantile",
        "bar-windows+window-labels",
        "beat-labels+tempo-copies",
        "seconds-window-labels+tempo-copies",
        "key-to-c+transpose+window-labels",
    ],
)
def test_ray_gives_the_build_of_local_with_every_option(ray_session, corpus, tmp_path, kw):
    local, remote = tmp_path / "local", tmp_path / "ray"
    h.build(corpus, local, max_minutes=2, **KW, **kw)
    h.build(corpus, remote, max_minutes=2, engine="ray", **KW, **kw)
    assert_same_build(local, remote)
    info = h.info(remote)
    assert info["counts"]["examples"]["val"] > 0
    if kw.get("dedup") == "drop":
        assert h.rejects(remote)["sub/zz_exact.mid"] == "duplicate"
        labelled = (remote / "labels.csv").read_text(encoding="utf-8")
        assert "sub/zz_exact.mid" not in labelled and "a00.mid" in labelled
    if "augment_transpose" in kw:
        augs = {r["augmentation"] for rs in h.rows(remote).values() for r in rs}
        assert len(augs) == 1 + len(kw["augment_transpose"].split(",")) + ("augment_velocity" in kw)
    if kw.get("binning") == "quantile":
        assert info["labels"]["binning_edges"]["valence"]
    if kw.get("label_scope") == "window":  # the rows of one file carry several labels
        assert (
            info["labels"]["windows"]["labelled"]
            == info["counts"]["examples"]["train"] + (info["counts"]["examples"]["val"])
        )
        rows = h.rows(remote)["train"]
        per_file = {}
        for r in rows:
            per_file.setdefault((r["source_file"], r["augmentation"]), set()).add(r["valence"])
        assert any(len(v) > 1 for v in per_file.values())
    assert not [p for p in tmp_path.iterdir() if "varemi-tmp" in p.name]


def test_ray_with_groups_csv_and_group_by_parent(ray_session, corpus, tmp_path):
    groups = h.write_labels(
        tmp_path / "groups.csv",
        {"a01.mid": ("g",), "sub/b3.mid": ("g",), "a05.mid": ("h",), "a00.mid": ("h",)},
        header=("filename", "group"),
    )
    for name, kw in (("csv", dict(groups=groups)), ("parent", dict(group_by="parent"))):
        local, remote = tmp_path / f"local-{name}", tmp_path / f"ray-{name}"
        h.build(corpus, local, max_minutes=2, **KW, **kw)
        h.build(corpus, remote, max_minutes=2, engine="ray", **KW, **kw)
        assert_same_build(local, remote)
        assert h.info(remote)["groups"]["user_groups"]


def test_cli_ray_build_with_default_options(corpus, tmp_path):
    """The default --dedup group and quantile bins through the CLI: no refusal, one bar each."""
    r = h.run_cli(
        "build", "--midi-dir", corpus, "--out", tmp_path / "o", "--tokenizer", "builtin",
        "--engine", "ray", "--binning", "quantile", "--workers", "2", "--no-cache",
        "--window-size", "16", "--stride", "8", "--min-window-tokens", "4",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr and "Traceback" not in r.stderr
    assert "tokenise (ray)" in r.stderr and "windows (ray)" in r.stderr


def test_token_ids_reach_the_driver_only_through_the_block_spools(
    ray_session, corpus, tmp_path, monkeypatch
):
    import pickle

    import numpy as np

    seen: dict[str, list] = {}
    run_pass = vc._run_pass

    def spy(p, tasks, fn, spec, desc, total, take):
        def record(s):
            seen.setdefault(desc, []).append(s)
            if desc.startswith("tokenise"):  # the spool is written, as long as the summary says
                spool = Path(pickle.loads(spec)["spool_dir"]) / f"b{s['block']:07d}.i32"
                assert spool.stat().st_size == 4 * sum(it["length"] for it in s["items"])
            take(s)

        run_pass(p, tasks, fn, spec, desc, total, record)

    monkeypatch.setattr(vc, "_run_pass", spy)
    h.build(corpus, tmp_path / "out", max_minutes=2, engine="ray", augment_transpose="1", **KW)
    summaries = seen["tokenise (ray)"]
    assert [s["block"] for s in summaries] == sorted(s["block"] for s in summaries)
    assert sum(s["n_items"] for s in summaries) == 2 * 26  # every file and its copy

    def arrays(x) -> int:
        if isinstance(x, np.ndarray):
            return 1
        if isinstance(x, dict):
            return sum(arrays(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(arrays(v) for v in x)
        return 0

    assert arrays(summaries) == 0  # no token id (nor any array) in what pass 1 returns
    assert len(seen["windows (ray)"]) > 1


def test_ray_gives_the_build_of_local_with_a_fitted_labeller(ray_session, corpus, tmp_path):
    from varemi.pipeline.labelling import fit_corpus

    names = sorted(str(p.relative_to(corpus).as_posix()) for p in corpus.rglob("*.mid"))
    human = h.write_labels(
        tmp_path / "human.csv",
        {n: (1 if k % 2 else -1, 1 if (k // 2) % 2 else -1) for k, n in enumerate(names)},
    )
    labeller = tmp_path / "labeller.json"
    fit_corpus(human, corpus, labeller, workers=1, quiet=True)
    for scope in ("file", "window"):
        kw = dict(KW, labeller=labeller, label_scope=scope)
        local, remote = tmp_path / f"local-{scope}", tmp_path / f"ray-{scope}"
        h.build(corpus, local, max_minutes=2, **kw)
        h.build(corpus, remote, max_minutes=2, engine="ray", **kw)
        assert_same_build(local, remote)
        assert h.info(remote)["labels"]["source"] == "fitted"
