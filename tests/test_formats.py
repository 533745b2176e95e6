"""``build --format arrow|parquet`` and the streaming readers of each layout."""

from __future__ import annotations

from pathlib import Path

import helpers as h
import pytest

KW = dict(window_size=16, stride=8, min_window_tokens=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The same corpus built in both formats (with a bad file)."""
    root = tmp_path_factory.mktemp("formats")
    midi = root / "midi"
    h.write_tiny_corpus(midi, [f"f{k:02d}.mid" for k in range(12)] + ["sub/g.mid"], notes=40)
    (midi / "bad.mid").write_bytes(b"not midi")
    seed = next(
        s
        for s in range(100)
        if {h.split_of(f"f{k:02d}.mid", s) for k in range(12)} == {"train", "val"}
    )
    out = {}
    for fmt in ("arrow", "parquet"):
        out[fmt] = root / fmt
        h.build(midi, out[fmt], format=fmt, seed=seed, **KW)
    return out


def test_parquet_layout(built):
    pq_out = built["parquet"]
    names = sorted(p.relative_to(pq_out).as_posix() for p in pq_out.rglob("*") if p.is_file())
    assert [n for n in names if n.startswith(("train/", "val/"))] == [
        "train/data-00000-of-00001.parquet",
        "val/data-00000-of-00001.parquet",
    ]
    assert "dataset_dict.json" not in names and "README.md" in names
    assert h.info(pq_out)["params"]["format"] == "parquet"
    assert (pq_out / "rejects.csv").read_bytes() == (built["arrow"] / "rejects.csv").read_bytes()


@pytest.mark.parametrize("streaming", [False, True])
def test_parquet_loads_with_load_dataset_as_the_arrow_rows(built, tmp_path, streaming):
    import datasets

    datasets.disable_progress_bars()
    want = h.rows(built["arrow"])
    dd = datasets.load_dataset(str(built["parquet"]), cache_dir=str(tmp_path), streaming=streaming)
    assert sorted(dd) == ["train", "val"]  # the card keeps the name `val`
    for s in ("train", "val"):
        assert list(dd[s]) == want[s]
        assert dd[s].features == h.load(built["arrow"])[s].features
    # the plain parquet loader works too, but names the val/ folder `validation`
    plain = datasets.load_dataset(
        "parquet", data_dir=str(built["parquet"]), cache_dir=str(tmp_path), streaming=streaming
    )
    assert sorted(plain) == ["train", "validation"]
    assert list(plain["validation"]) == want["val"]


def test_arrow_layout_streams_with_the_arrow_loader(built, tmp_path):
    import datasets

    out = built["arrow"]
    files = {s: sorted(str(p) for p in (out / s).glob("*.arrow")) for s in ("train", "val")}
    dd = datasets.load_dataset("arrow", data_files=files, streaming=True, cache_dir=str(tmp_path))
    assert isinstance(dd["train"], datasets.IterableDataset)
    want = h.rows(out)
    for s in ("train", "val"):
        assert list(dd[s]) == want[s]


def test_verify_accepts_both_formats_and_catches_a_bad_parquet_row(built, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from varemi.dataset.verify import verify

    for out in built.values():
        assert verify(out).ok
    bad = tmp_path / "bad"
    shutil.copytree(built["parquet"], bad)
    shard = bad / "train" / "data-00000-of-00001.parquet"
    table = pq.read_table(shard)
    widx = table.column("window_idx")
    table = table.set_column(6, "window_idx", pc.add(widx, pa.scalar(1, pa.int32())))
    pq.write_table(table, shard)
    report = verify(bad)
    assert not report.ok


def test_parquet_with_an_empty_val_split(tmp_path):
    import datasets
    import pyarrow.parquet as pq

    from varemi.dataset.verify import verify

    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=40)
    out = tmp_path / "out"
    h.build(midi, out, format="parquet", train_split=1.0, **KW)
    assert pq.read_table(out / "val").num_rows == 0  # the schema-only shard
    assert "split: val" not in (out / "README.md").read_text(encoding="utf-8")
    dd = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert sorted(dd) == ["train"]
    assert verify(out).ok


def test_bad_format_is_refused(tmp_path):
    from varemi._base.errors import VaremiError

    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid"])
    with pytest.raises(VaremiError, match="--format must be one of arrow, parquet"):
        h.build(midi, tmp_path / "o", format="csv")
    r = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "o", "--format", "csv")
    assert r.returncode == 2 and "--format" in r.stderr
