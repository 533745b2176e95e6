"""``verify`` finds every kind of damage in a built dataset (and passes a good one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helpers as h  # noqa: E402
import numpy as np
import pyarrow as pa  # noqa: E402
import pytest

from varemi.dataset.verify import verify

NAMES = [f"p{k:02d}.mid" for k in range(10)]
WINDOW = 16


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    midi = root / "midi"
    h.write_tiny_corpus(midi, NAMES, notes=40)
    seed = next(
        s for s in range(10_000) if {h.split_of(n, s, 0.5) for n in NAMES} == {"train", "val"}
    )
    out = root / "out"
    h.build(
        midi, out, window_size=WINDOW, stride=8, min_window_tokens=4, train_split=0.5, seed=seed
    )
    return out


@pytest.fixture
def copy(built, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    return out


def arrow_files(out: Path, split: str) -> list[Path]:
    return sorted((out / split).glob("*.arrow"))


def rewrite_split(out: Path, split: str, change, rechecksum: bool = True) -> None:
    """Rewrite a split's Arrow data in place: ``change(table) -> table``.

    By default the recorded checksums are updated to the new data, so that each test
    sees the one invariant it targets; the checksum tests pass ``rechecksum=False``.
    """
    (path,) = arrow_files(out, split)
    with pa.ipc.open_stream(pa.py_buffer(path.read_bytes())) as reader:
        table = reader.read_all()  # read from memory: the file is rewritten below
    new = change(table)
    with pa.ipc.new_stream(path, new.schema) as writer:
        writer.write_table(new)
    if rechecksum:
        from varemi.dataset.integrity import dataset_checksums

        info = h.info(out)
        info["checksums"] = dataset_checksums(out)
        (out / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")


def with_ids(table: pa.Table, edit) -> pa.Table:
    """A table whose input_ids rows are replaced by ``edit(list_of_rows)``."""
    rows = table.column("input_ids").to_pylist()
    edit(rows)
    i = table.schema.get_field_index("input_ids")
    return table.set_column(i, table.schema.field(i), pa.array(rows, pa.list_(pa.int32())))


def with_column(table: pa.Table, name: str, values, type_=None) -> pa.Table:
    i = table.schema.get_field_index(name)
    field = table.schema.field(i) if type_ is None else pa.field(name, type_)
    return table.set_column(i, field, pa.array(values, field.type))


def failure_names(out: Path) -> list[str]:
    return [f.split(":")[0].removeprefix("FAIL ") for f in verify(out).failures]


def test_a_good_dataset_verifies(built, tmp_path):
    report = verify(built, num_examples=4, plot=None)
    assert report.ok, report.failures
    text = "\n".join(report.lines)
    assert "train" in text and "val" in text
    assert "[VAL=" in text and "[ARO=" in text  # decoded examples show the prefix tokens
    res = h.run_cli("verify", built, "--num-examples", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "verify: OK"


def test_conditioning_id_inside_the_body(copy):
    info = h.info(copy)
    cond = info["conditioning_tokens"]["[VAL=+0]"]

    def edit(rows):
        rows[0][5] = cond

    rewrite_split(copy, "train", lambda t: with_ids(t, edit))
    assert "conditioning_in_body" in failure_names(copy)
    res = h.run_cli("verify", copy)
    assert res.returncode == 1
    assert "FAIL conditioning_in_body" in res.stdout
    assert "verify: FAILED" in res.stdout.splitlines()[-1]


def test_wrong_prefix(copy):
    info = h.info(copy)
    ids = list(info["conditioning_tokens"].values())

    def edit(rows):
        rows[1][0] = ids[0] if rows[1][0] != ids[0] else ids[1]

    rewrite_split(copy, "val", lambda t: with_ids(t, edit))
    assert failure_names(copy) == ["prefix"]


def test_prefix_that_does_not_match_the_bins(copy):
    def change(t):
        vb = t.column("valence_bin").to_pylist()
        vb[0] = -4 if vb[0] != -4 else 4
        return with_column(t, "valence_bin", vb)

    rewrite_split(copy, "train", change)
    assert "prefix" in failure_names(copy)


def test_bins_out_of_range(copy):
    rewrite_split(copy, "train", lambda t: with_column(t, "arousal_bin", [7] * t.num_rows))
    assert "bins" in failure_names(copy)


def test_id_outside_the_vocabulary(copy):
    vocab = h.info(copy)["tokenizer"]["vocab_size"]

    def edit(rows):
        rows[-1][-1] = vocab

    rewrite_split(copy, "train", lambda t: with_ids(t, edit))
    assert "id_range" in failure_names(copy)


def test_example_too_long(copy):
    def edit(rows):
        rows[0].extend(rows[0][2:])

    rewrite_split(copy, "train", lambda t: with_ids(t, edit))
    names = failure_names(copy)
    assert "length" in names and "counts" in names  # the tokens count moved too


def test_rows_out_of_order(copy):
    rewrite_split(copy, "train", lambda t: t.take(pa.array(np.arange(t.num_rows)[::-1])))
    assert "order" in failure_names(copy)


def test_file_in_both_splits(copy):
    val_file = h.tables(copy)["val"].column("source_file")[0].as_py()

    def change(t):
        files = t.column("source_file").to_pylist()
        files = [val_file if f == files[0] else f for f in files]
        return with_column(t, "source_file", files)

    rewrite_split(copy, "train", change)
    names = failure_names(copy)
    assert "file_in_both_splits" in names and "split_rule" in names


def test_window_idx_gap(copy):
    def change(t):
        w = t.column("window_idx").to_pylist()
        w[0] = 50
        return with_column(t, "window_idx", w)

    rewrite_split(copy, "val", change)
    names = failure_names(copy)
    assert "window_idx" in names


def test_counts_in_dataset_info(copy):
    info = h.info(copy)
    info["counts"]["examples"]["train"] += 1
    (copy / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    assert failure_names(copy) == ["counts"]
    res = h.run_cli("verify", copy)
    assert res.returncode == 1 and "FAIL counts" in res.stdout


def test_missing_dataset_info(copy):
    (copy / "dataset_info.json").unlink()
    assert failure_names(copy) == ["dataset_info"]
    res = h.run_cli("verify", copy)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr


def test_not_a_dataset(tmp_path):
    res = h.run_cli("verify", tmp_path / "nothing_here")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "FAIL" in res.stdout


def test_a_missing_split(copy):
    shutil.rmtree(copy / "val")
    dd = json.loads((copy / "dataset_dict.json").read_text())
    dd["splits"] = ["train"]
    (copy / "dataset_dict.json").write_text(json.dumps(dd))
    assert failure_names(copy) == ["splits"]


@pytest.mark.parametrize(
    "key", ["format_version", "varemi_version", "tokenizer", "conditioning_tokens", "params",
            "counts", "tokenizer.vocab_size", "tokenizer.sha256"]
)  # fmt: skip
def test_dataset_info_without_a_required_key(copy, key):
    info = h.info(copy)
    if "." in key:
        outer, inner = key.split(".")
        del info[outer][inner]
    else:
        del info[key]
    (copy / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    (failure,) = verify(copy).failures
    assert failure.startswith("FAIL dataset_info:") and key in failure
    res = h.run_cli("verify", copy)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_tokenizer_that_does_not_belong_to_the_dataset(copy):
    info = h.info(copy)
    info["conditioning_tokens"] = {k: v + 1 for k, v in info["conditioning_tokens"].items()}
    info["tokenizer"]["vocab_size"] += 1
    (copy / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    assert "tokenizer" in failure_names(copy)
    res = h.run_cli("verify", copy)
    assert res.returncode == 1
    assert "FAIL tokenizer" in res.stdout and "Traceback" not in res.stderr


def test_missing_tokenizer_file(copy):
    (copy / "tokenizer.json").unlink()
    assert failure_names(copy) == ["tokenizer"]


def resave(out: Path, change) -> None:
    """Save ``change(DatasetDict)`` over a dataset, keeping its other files."""
    dd = change(h.load(out))
    tmp = out.parent / "resaved"
    dd.save_to_disk(str(tmp))
    for split in ("train", "val"):
        shutil.rmtree(out / split)
        shutil.move(str(tmp / split), str(out / split))


def test_wrong_column_type(copy):
    import datasets

    def change(dd):
        return dd.cast_column("input_ids", datasets.List(datasets.Value("int64")))

    resave(copy, change)
    assert h.load(copy)["train"].features["input_ids"].feature.dtype == "int64"
    assert failure_names(copy) == ["columns", "columns"]


def test_missing_column(copy):
    resave(copy, lambda dd: dd.remove_columns("window_idx"))
    assert failure_names(copy) == ["columns", "columns"]
    res = h.run_cli("verify", copy)
    assert res.returncode == 1 and "Traceback" not in res.stderr


def test_plot_writes_a_png(built, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "va.png"
    report = verify(built, plot=png)
    assert report.ok
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png2 = tmp_path / "cli.png"
    res = h.run_cli("verify", built, "--plot", png2)
    assert res.returncode == 0, res.stderr
    assert png2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- in-range damage
def write_info(out: Path, info: dict) -> None:
    (out / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")


def test_the_build_records_a_checksum_per_split(built):
    from varemi.dataset.integrity import METHOD, table_checksum

    recorded = h.info(built)["checksums"]
    assert recorded["method"] == METHOD
    for s, table in h.tables(built).items():  # one chunk: independent of the Arrow layout
        assert recorded[s] == table_checksum(table) != table_checksum(table.slice(1))


def test_a_label_float_edited_within_its_bin_fails_the_checksum(copy):
    def change(t):
        # every row of the first row's file: its rows still share one label (file scope)
        v, files = t.column("valence").to_pylist(), t.column("source_file").to_pylist()
        edited = float(np.float32(v[0]) + np.float32(1e-4))  # the same bin, the same tokens
        v = [edited if f == files[0] else x for x, f in zip(v, files, strict=True)]
        return with_column(t, "valence", v)

    rewrite_split(copy, "train", change, rechecksum=False)
    assert failure_names(copy) == ["checksum"]
    res = h.run_cli("verify", copy)
    assert res.returncode == 1 and "FAIL checksum: train" in res.stdout


def test_an_in_range_token_swapped_fails_the_checksum(copy):
    def edit(rows):
        rows[0][5] = rows[0][5] + 1 if rows[0][5] < 900 else rows[0][5] - 1  # a music id

    rewrite_split(copy, "val", lambda t: with_ids(t, edit), rechecksum=False)
    assert failure_names(copy) == ["checksum"]


def test_a_label_that_no_longer_matches_its_bin(copy):
    files = h.tables(copy)["train"].column("source_file").to_pylist()

    def change(t):
        # every row of the first file, so its rows still share one label (file scope)
        v = t.column("valence").to_pylist()
        edited = -0.9 if v[0] > 0 else 0.9
        v = [edited if f == files[0] else x for x, f in zip(v, files, strict=True)]
        return with_column(t, "valence", v)

    rewrite_split(copy, "train", change)  # checksum re-recorded: the bin rule alone sees it
    (line,) = verify(copy).failures
    n = files.count(files[0])
    assert line.startswith(f"FAIL bins_vs_labels: train: {n} rows whose valence_bin")


def test_an_edited_files_kept_fails(copy):
    info = h.info(copy)
    info["counts"]["files_kept"] += 1
    write_info(copy, info)
    assert failure_names(copy) == ["counts", "counts"]  # against the data and files_seen


def test_an_edited_files_rejected_fails(copy):
    info = h.info(copy)
    info["counts"]["files_rejected"] += 1
    write_info(copy, info)
    assert "counts" in failure_names(copy)


def test_bins_of_labels_on_a_float32_boundary_verify(tmp_path):
    # 0.375 - 1e-12 bins (float64) to +1 of 9; stored as float32 it reads 0.375, whose bin
    # is +2 (5.5 rounds to even 6): verify must accept the bin the build computed.
    midi = tmp_path / "midi"
    names = h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=30)
    labels = h.write_labels(
        tmp_path / "l.csv", {names[0]: (0.375 - 1e-12, 0.375), names[1]: (-0.125, 0.125)}
    )
    out = tmp_path / "out"
    h.build(midi, out, labels=labels, window_size=16, stride=8, min_window_tokens=4,
            train_split=1.0)  # fmt: skip
    rows = {r["source_file"]: r for r in h.rows(out)["train"]}
    assert (rows["a.mid"]["valence_bin"], rows["a.mid"]["arousal_bin"]) == (1, 2)
    assert rows["a.mid"]["valence"] == 0.375
    assert (rows["b.mid"]["valence_bin"], rows["b.mid"]["arousal_bin"]) == (0, 0)  # 3.5, 4.5
    report = verify(out)
    assert report.ok, report.failures


def test_quantile_bins_are_rederived_from_the_recorded_edges(tmp_path):
    midi = tmp_path / "midi"
    names = h.write_tiny_corpus(midi, [f"q{k}.mid" for k in range(6)], notes=30)
    values = [-0.8, -0.5, -0.1, 0.2, 0.3, 0.9]
    table = {n: (v, -v) for n, v in zip(names, values, strict=True)}
    labels = h.write_labels(tmp_path / "l.csv", table)
    out = tmp_path / "out"
    h.build(midi, out, labels=labels, window_size=16, stride=8, min_window_tokens=4,
            train_split=1.0, bins=3, binning="quantile")  # fmt: skip
    report = verify(out)
    assert report.ok, report.failures
    info = h.info(out)
    edges = info["labels"]["binning_edges"]["valence"]
    assert len(edges) == 2
    # moving the edges changes which bin each label must have
    info["labels"]["binning_edges"]["valence"] = [edges[0] - 1.0, edges[1] - 1.0]
    write_info(out, info)
    assert failure_names(out) == ["bins_vs_labels"]


def test_an_empty_train_split_fails(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["only.mid"], notes=30)
    seed = next(s for s in range(10_000) if h.split_of("only.mid", s, 0.5) == "val")
    out = tmp_path / "out"
    h.build(midi, out, window_size=16, stride=8, min_window_tokens=4, train_split=0.5, seed=seed)
    assert h.info(out)["counts"]["examples"]["train"] == 0
    assert failure_names(out) == ["empty_train"]


def test_verify_into_a_closed_pipe_exits_quietly(built):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "varemi", "verify", str(built), "--num-examples", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=h.subprocess_env(),
    )
    proc.stdout.close()  # what `| head -1` does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_file_scope_rows_of_one_file_that_disagree_fail(copy):
    def change(t):
        # the last row's label moved within its bin: bins and prefix still agree with it
        v = t.column("valence").to_pylist()
        v[-1] = float(np.float32(v[-1]) + np.float32(1e-4))
        return with_column(t, "valence", v)

    files = h.tables(copy)["train"].column("source_file").to_pylist()
    assert files.count(files[-1]) > 1  # the fixture's last file has several windows
    rewrite_split(copy, "train", change)  # checksum re-recorded
    (line,) = verify(copy).failures
    assert line.startswith("FAIL labels_per_file: train: 1 rows whose valence differs")


def test_split_checksum_reads_one_shard_at_a_time(tmp_path, monkeypatch):
    """Every shard kept open (memory-mapped) at once kept the whole dataset resident."""
    import varemi.core.windows
    from varemi.dataset import integrity

    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, [f"f{k:02d}.mid" for k in range(12)], notes=40)
    monkeypatch.setattr(varemi.core.windows, "BATCH_TOKENS", 1)  # one shard per file
    out = h.build(midi, tmp_path / "out", window_size=16, stride=8, min_window_tokens=4).out
    state = json.loads((out / "train" / "state.json").read_text(encoding="utf-8"))
    assert len(state["_data_files"]) > 3
    want = integrity.split_checksum(out / "train")
    opened, most = [], [0]
    os_file, memory_map = pa.OSFile, pa.memory_map

    def counted(real):
        def open_counted(path, *args):
            source = real(path, *args)
            opened.append(source)
            most[0] = max(most[0], sum(not s.closed for s in opened))
            return source

        return open_counted

    monkeypatch.setattr(pa, "OSFile", counted(os_file))
    monkeypatch.setattr(pa, "memory_map", counted(memory_map))
    assert integrity.split_checksum(out / "train") == want
    assert opened and most[0] == 1 and all(s.closed for s in opened)
    assert h.info(out)["checksums"]["train"] == want
