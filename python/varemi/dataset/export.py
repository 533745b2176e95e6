"""Export: conditioned examples to a Hugging Face dataset folder, shard by shard.

The entry point is :class:`SplitWriter`: ``write`` one batch of examples (made by
:mod:`varemi.core.windows`, already in the flat values + offsets of an Arrow list column:
no per-token Python object) at a time as one Arrow shard, while files are still being
tokenised, so memory does not grow with the corpus. ``finish`` moves them into
``OUT/<split>``, laid out exactly as ``datasets.Dataset.save_to_disk`` would (Arrow
stream files, ``state.json``, ``dataset_info.json``) without copying them and without
importing ``datasets``, whose import alone costs a second; ``datasets.load_from_disk``
reads the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from varemi._base.fileio import write_json
from varemi._base.options import FORMATS
from varemi.core.windows import ExampleBatch

# The output columns (docs/contracts.md contract 7) as `datasets` (>= 4) serialises them.
FEATURES = {
    "input_ids": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "List"},
    "valence": {"dtype": "float32", "_type": "Value"},
    "arousal": {"dtype": "float32", "_type": "Value"},
    "valence_bin": {"dtype": "int8", "_type": "Value"},
    "arousal_bin": {"dtype": "int8", "_type": "Value"},
    "source_file": {"dtype": "string", "_type": "Value"},
    "window_idx": {"dtype": "int32", "_type": "Value"},
    "augmentation": {"dtype": "string", "_type": "Value"},  # format 2: empty for originals
}


def arrow_schema():
    """The Arrow schema of a split, with the ``datasets`` features in its metadata.

    Returns:
        A ``pyarrow.Schema``.
    """
    import pyarrow as pa

    fields = [
        ("input_ids", pa.list_(pa.int32())),
        ("valence", pa.float32()),
        ("arousal", pa.float32()),
        ("valence_bin", pa.int8()),
        ("arousal_bin", pa.int8()),
        ("source_file", pa.string()),
        ("window_idx", pa.int32()),
        ("augmentation", pa.string()),
    ]
    meta = {"huggingface": json.dumps({"info": {"features": FEATURES}})}
    return pa.schema(fields, metadata=meta)


def features():
    """The output columns as ``datasets.Features`` (imports ``datasets``).

    Returns:
        ``datasets.Features`` of the ``train`` and ``val`` splits.
    """
    import datasets

    return datasets.Features.from_dict(FEATURES)


class SplitWriter:
    """Writes one split's examples, a batch at a time, as Arrow shards.

    Export only writes the examples it is given: windowing and prefixing happen before,
    in :mod:`varemi.core.windows`.

    Args:
        split: ``train`` or ``val``.
        folder: Where shards wait until :meth:`finish`.
        fmt: ``arrow`` (the ``save_to_disk`` layout) or ``parquet`` (``--format``).

    Attributes:
        examples: Rows written so far.
        tokens: Ids written so far (conditioning tokens included).
        files_with_examples: Files that gave at least one row.
        bin_counts: Rows per (valence bin, arousal bin).
        seconds: Wall seconds spent writing.
    """

    def __init__(self, split: str, folder: Path, fmt: str = "arrow") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.split, self.folder, self.fmt = split, folder, fmt
        self.schema = arrow_schema()
        self.last_file: str | None = None  # the copies of a file count as one file
        self.shards: list[Path] = []
        self.examples = 0
        self.tokens = 0
        self.files_with_examples = 0
        self.bin_counts: Counter = Counter()
        self.seconds = 0.0

    def write(self, batch: ExampleBatch | None) -> None:
        """Write one batch's examples as one shard (nothing for None).

        Args:
            batch: From :meth:`varemi.core.windows.Windower.add` or ``flush``.
        """
        import pyarrow as pa

        if batch is None:
            return
        t0 = time.perf_counter()
        ex = batch.examples
        fi = ex.file_index
        valence, arousal, valence_bin, arousal_bin = batch.rows()
        columns = [
            pa.ListArray.from_arrays(_arrow(ex.offsets.astype(np.int32)), _arrow(ex.values)),
            _arrow(valence),
            _arrow(arousal),
            _arrow(valence_bin),
            _arrow(arousal_bin),
            _strings(batch.files).take(_arrow(fi)),
            _arrow(ex.window_index),
            _strings(batch.augmentation).take(_arrow(fi)),
        ]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        path = self.folder / f"{self.split}-{len(self.shards):05d}.{self.fmt}"
        self._write_table(path, table)
        self.shards.append(path)
        lengths = np.diff(ex.offsets)
        self.examples += len(lengths)
        self.tokens += int(lengths.sum())
        for j in np.unique(fi).tolist():  # the copies of a file count as one file
            if batch.files[j] != self.last_file:
                self.files_with_examples += 1
                self.last_file = batch.files[j]
        self.bin_counts.update(zip(valence_bin.tolist(), arousal_bin.tolist(), strict=True))
        self.seconds += time.perf_counter() - t0

    def _write_table(self, path: Path, table) -> None:
        import pyarrow as pa

        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, path)
            return
        with pa.ipc.new_stream(path, self.schema) as writer:
            writer.write_table(table)

    def merge(self, other: SplitWriter) -> None:
        """Take over the shards and counts of another writer of the same split, after ours.

        ``build --engine ray`` writes each block's shards on a worker and merges the
        writers on the driver in block order.

        Args:
            other: A writer whose shards follow this one's.
        """
        self.shards.extend(other.shards)
        self.examples += other.examples
        self.tokens += other.tokens
        self.files_with_examples += other.files_with_examples
        self.bin_counts.update(other.bin_counts)
        self.seconds += other.seconds

    def finish(self, split_dir: Path) -> None:
        """Move the shards into ``split_dir`` as the data files of a saved dataset.

        Args:
            split_dir: The split's folder (``OUT/train`` or ``OUT/val``); created.
        """
        import pyarrow as pa

        split_dir.mkdir(parents=True, exist_ok=True)
        if not self.shards:
            # One file holding an empty batch: a split saved with no file fails to load.
            empty = self.folder / f"{self.split}-empty.{self.fmt}"
            if self.fmt == "parquet":  # no row group: `datasets` cannot read an empty one
                import pyarrow.parquet as pq

                pq.ParquetWriter(empty, self.schema).close()
            else:
                with pa.ipc.new_stream(empty, self.schema) as writer:
                    writer.write_batch(pa.RecordBatch.from_pylist([], schema=self.schema))
            self.shards.append(empty)
        n = len(self.shards)
        names = [f"data-{k:05d}-of-{n:05d}.{self.fmt}" for k in range(n)]
        for shard, name in zip(self.shards, names, strict=True):
            os.replace(shard, split_dir / name)
        if self.fmt == "parquet":  # plain Parquet shards: no save_to_disk metadata
            return
        info = {"citation": "", "description": "", "features": FEATURES, "homepage": ""}
        write_json(split_dir / "dataset_info.json", {**info, "license": ""})
        fingerprint = hashlib.sha256(f"{self.split} {self.examples} {self.tokens}".encode())
        state = {
            "_data_files": [{"filename": name} for name in names],
            "_fingerprint": fingerprint.hexdigest()[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        write_json(split_dir / "state.json", state)


def _arrow(values: np.ndarray):
    """A numpy array as an Arrow array over the same memory (no copy).

    ``pyarrow.array`` would do, but it imports pandas (a third of a second) to check
    for pandas types, and a cached rebuild takes about a second in all.
    """
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)]
    )


def _strings(texts: list[str]):
    """A list of str as an Arrow string array, built from its UTF-8 bytes and offsets."""
    import pyarrow as pa

    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)


def write_parquet_card(out: Path, splits: list[str]) -> None:
    """Write ``README.md`` whose YAML maps each split to its Parquet shards.

    With it, ``datasets.load_dataset(str(out))`` (``streaming=True`` too) gives the
    splits under their own names (``val`` stays ``val``; without the card ``datasets``
    would call a ``val/`` folder ``validation``).

    Args:
        out: The dataset folder.
        splits: The split names, in order.
    """
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for s in splits:
        lines += [f"  - split: {s}", f"    path: {s}/*.parquet"]
    lines += [
        "---",
        "",
        "An emotion-conditioned REMI+BPE dataset built by varemi (Parquet shards).",
        "See dataset_info.json for its parameters and counts.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def write_dataset_dict(out: Path, splits: list[str]) -> None:
    """Write ``dataset_dict.json``, which makes ``out`` load as a ``DatasetDict``.

    Args:
        out: The dataset folder.
        splits: The split names, in order.
    """
    write_json(out / "dataset_dict.json", {"splits": splits})
