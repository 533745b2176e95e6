"""The export writes what datasets.save_to_disk writes, without importing datasets."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from varemi.core import windows
from varemi.dataset import export


def expected_features() -> datasets.Features:
    return datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "valence": datasets.Value("float32"),
            "arousal": datasets.Value("float32"),
            "valence_bin": datasets.Value("int8"),
            "arousal_bin": datasets.Value("int8"),
            "source_file": datasets.Value("string"),
            "window_idx": datasets.Value("int32"),
            "augmentation": datasets.Value("string"),
        }
    )


def test_schema_and_features_are_those_datasets_derives():
    want = expected_features()
    assert export.features() == want
    assert export.arrow_schema().equals(want.arrow_schema, check_metadata=True)


def windower():
    names = [f"[VAL={v:+d}]" for v in range(-4, 5)] + [f"[ARO={a:+d}]" for a in range(-4, 5)]
    return windows.Windower(dict(zip(names, range(100, 118), strict=True)), 4, 2, 2)


def test_split_written_by_shards_loads_with_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(windows, "BATCH_TOKENS", 5)  # force several shards
    shards = tmp_path / "shards"
    shards.mkdir()
    w, win = export.SplitWriter("train", shards), windower()
    w.write(win.add("a.mid", np.arange(7, dtype=np.int32), (0.5, -0.25), (2, -1)))
    w.write(win.add("b.mid", np.arange(3, dtype=np.int32), (-1.0, 1.0), (-4, 4), "t+1"))
    w.write(win.flush())
    w.finish(tmp_path / "out" / "train")
    e = export.SplitWriter("val", shards)
    e.finish(tmp_path / "out" / "val")
    export.write_dataset_dict(tmp_path / "out", ["train", "val"])
    assert list(shards.iterdir()) == []  # moved, not copied
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(dd["val"]) == 0 and dd["val"].features == expected_features()
    rows = dd["train"].to_list()
    # VAL=+2 is id 100 + 4 + 2, ARO=-1 is 109 + 4 - 1
    # a: 7 tokens, W=4 S=2 -> starts 0, 2, 4 (4+4 >= 7 stops); b: 3 tokens -> start 0
    assert [r["input_ids"] for r in rows] == [
        [106, 112, 0, 1, 2, 3],
        [106, 112, 2, 3, 4, 5],
        [106, 112, 4, 5, 6],
        [100, 117, 0, 1, 2],
    ]
    assert [(r["source_file"], r["window_idx"], r["augmentation"]) for r in rows] == [
        ("a.mid", 0, ""),
        ("a.mid", 1, ""),
        ("a.mid", 2, ""),
        ("b.mid", 0, "t+1"),
    ]
    assert rows[0]["valence"] == 0.5 and rows[3]["arousal_bin"] == 4
    assert (w.examples, w.tokens, w.files_with_examples) == (4, 22, 2)
    assert len(sorted((tmp_path / "out" / "train").glob("data-*.arrow"))) == 2
    assert pa.types.is_int32(dd["train"].data.table.schema.field("window_idx").type)
