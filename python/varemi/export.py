"""Export: conditioned examples to a Hugging Face dataset folder, shard by shard.

The entry point is :class:`SplitWriter`: ``add`` one file's token ids at a time,
``finish`` into ``OUT/<split>``. Examples are built by the native kernels straight
into the flat values + offsets of an Arrow list column (no per-token Python object)
and written as Arrow shards while files are still being tokenised, so memory does
not grow with the corpus. ``finish`` lays the shards out exactly as
``datasets.Dataset.save_to_disk`` would (Arrow stream files, ``state.json``,
``dataset_info.json``) without copying them and without importing ``datasets``,
whose import alone costs a second; ``datasets.load_from_disk`` reads the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from varemi import kernels

SHARD_TOKENS = 1 << 21
"""Music tokens buffered per split before a shard is written."""

# The output columns (DESIGN.md contract 7) as `datasets` (>= 4) serialises them.
FEATURES = {
    "input_ids": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "List"},
    "valence": {"dtype": "float32", "_type": "Value"},
    "arousal": {"dtype": "float32", "_type": "Value"},
    "valence_bin": {"dtype": "int8", "_type": "Value"},
    "arousal_bin": {"dtype": "int8", "_type": "Value"},
    "source_file": {"dtype": "string", "_type": "Value"},
    "window_idx": {"dtype": "int32", "_type": "Value"},
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
    """Streams one split's examples into Arrow shards as files are tokenised.

    Args:
        split: ``train`` or ``val``.
        folder: Where shards wait until :meth:`finish`.
        valence_ids: Conditioning id per valence bin, ``-h..h`` in order (int32).
        arousal_ids: Conditioning id per arousal bin (int32).
        window_size: Tokens per window.
        stride: Distance between window starts.
        min_window_tokens: Shortest window kept.
    """

    def __init__(
        self,
        split: str,
        folder: Path,
        valence_ids: np.ndarray,
        arousal_ids: np.ndarray,
        window_size: int,
        stride: int,
        min_window_tokens: int,
    ) -> None:
        self.split, self.folder = split, folder
        self.valence_ids, self.arousal_ids = valence_ids, arousal_ids
        self.half = len(valence_ids) // 2
        self.windows = (window_size, stride, min_window_tokens)
        self.schema = arrow_schema()
        self.pending: list[tuple[str, np.ndarray, float, float, int, int]] = []
        self.pending_tokens = 0
        self.shards: list[Path] = []
        self.examples = 0
        self.tokens = 0
        self.files_with_examples = 0
        self.bin_counts: Counter = Counter()
        self.seconds = {"window_prepend": 0.0, "export": 0.0}

    def add(
        self,
        rel: str,
        ids: np.ndarray,
        labels: tuple[float, float],
        bins: tuple[int, int],
        window_labels: tuple[np.ndarray, ...] | None = None,
    ) -> None:
        """Queue one file; a shard is written once enough tokens are queued.

        Args:
            rel: The file's path relative to the MIDI root.
            ids: Its int32 music token ids.
            labels: Its (valence, arousal).
            bins: Its (valence bin, arousal bin).
            window_labels: ``(valence, arousal, valence_bin, arousal_bin)`` arrays, one
                entry per kept window (``--label-scope window``); they replace the
                file's labels and bins, conditioning tokens included.
        """
        self.pending.append((rel, ids, *labels, *bins, window_labels))
        self.pending_tokens += len(ids)
        if self.pending_tokens >= SHARD_TOKENS:
            self.flush()

    def flush(self) -> None:
        """Write the queued files' examples as one shard (nothing when none are queued)."""
        import pyarrow as pa

        if not self.pending:
            return
        t0 = time.perf_counter()
        rels = [x[0] for x in self.pending]
        tokens = np.concatenate([x[1] for x in self.pending]).astype(np.int32, copy=False)
        offsets = np.zeros(len(self.pending) + 1, dtype=np.int64)
        np.cumsum([len(x[1]) for x in self.pending], out=offsets[1:])
        vbin = np.array([x[4] for x in self.pending], dtype=np.int8)
        abin = np.array([x[5] for x in self.pending], dtype=np.int8)
        ex = kernels.make_examples(
            tokens,
            offsets,
            self.valence_ids[vbin.astype(np.int64) + self.half],
            self.arousal_ids[abin.astype(np.int64) + self.half],
            *self.windows,
        )
        fi = ex.file_index
        val = np.array([x[2] for x in self.pending], np.float32)[fi]
        aro = np.array([x[3] for x in self.pending], np.float32)[fi]
        vb, ab = vbin[fi], abin[fi]
        if any(x[6] is not None for x in self.pending):
            self._window_labels(ex, val, aro, vb, ab)
        t1 = time.perf_counter()
        columns = [
            pa.ListArray.from_arrays(_arrow(ex.offsets.astype(np.int32)), _arrow(ex.values)),
            _arrow(val),
            _arrow(aro),
            _arrow(vb),
            _arrow(ab),
            _strings(rels).take(_arrow(fi)),
            _arrow(ex.window_index),
        ]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        path = self.folder / f"{self.split}-{len(self.shards):05d}.arrow"
        with pa.ipc.new_stream(path, self.schema) as writer:
            writer.write_table(table)
        self.shards.append(path)
        lengths = np.diff(ex.offsets)
        self.examples += len(lengths)
        self.tokens += int(lengths.sum())
        self.files_with_examples += len(np.unique(fi))
        self.bin_counts.update(zip(vb.tolist(), ab.tolist(), strict=True))
        self.pending, self.pending_tokens = [], 0
        self.seconds["window_prepend"] += t1 - t0
        self.seconds["export"] += time.perf_counter() - t1

    def _window_labels(self, ex, val, aro, vb, ab) -> None:
        """Give the examples of files queued with window labels those labels, in place."""
        first = np.searchsorted(ex.file_index, np.arange(len(self.pending) + 1))
        for k, x in enumerate(self.pending):
            if x[6] is None:
                continue
            lo, hi = int(first[k]), int(first[k + 1])
            if any(len(column) != hi - lo for column in x[6]):
                raise ValueError(f"{x[0]}: {hi - lo} windows but window labels for another count")
            val[lo:hi], aro[lo:hi], vb[lo:hi], ab[lo:hi] = x[6]
        starts = ex.offsets[:-1]
        ex.values[starts] = self.valence_ids[vb.astype(np.int64) + self.half]
        ex.values[starts + 1] = self.arousal_ids[ab.astype(np.int64) + self.half]

    def finish(self, split_dir: Path) -> None:
        """Move the shards into ``split_dir`` as the data files of a saved dataset.

        Args:
            split_dir: The split's folder (``OUT/train`` or ``OUT/val``); created.
        """
        import pyarrow as pa

        self.flush()
        split_dir.mkdir(parents=True, exist_ok=True)
        if not self.shards:
            # One file holding an empty batch: a split saved with no file fails to load.
            empty = self.folder / f"{self.split}-empty.arrow"
            with pa.ipc.new_stream(empty, self.schema) as writer:
                writer.write_batch(pa.RecordBatch.from_pylist([], schema=self.schema))
            self.shards.append(empty)
        n = len(self.shards)
        names = [f"data-{k:05d}-of-{n:05d}.arrow" for k in range(n)]
        for shard, name in zip(self.shards, names, strict=True):
            os.replace(shard, split_dir / name)
        info = {"citation": "", "description": "", "features": FEATURES, "homepage": ""}
        _write_json(split_dir / "dataset_info.json", {**info, "license": ""})
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
        _write_json(split_dir / "state.json", state)


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


def write_dataset_dict(out: Path, splits: list[str]) -> None:
    """Write ``dataset_dict.json``, which makes ``out`` load as a ``DatasetDict``.

    Args:
        out: The dataset folder.
        splits: The split names, in order.
    """
    _write_json(out / "dataset_dict.json", {"splits": splits})


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
