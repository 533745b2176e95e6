"""Content checksums of a dataset's splits, recorded by ``build`` and checked by ``verify``.

A split's checksum is a SHA-256 over its columns in schema order, each column's values
in row order (list columns: their lengths, then their flat values; string columns:
their UTF-8 lengths, then their bytes). It depends on the rows alone, not on how they
are cut into Arrow files or record batches, so it catches damage that stays in range
(a label float edited, one token id swapped for another valid one) that no invariant
can see.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

METHOD = "sha256 over each column's values in row order (varemi.integrity, v1)"
"""What ``dataset_info.json``'s ``checksums.method`` records (a recorded name: it keeps the
module's old path so that datasets stay byte-identical)."""


def _streams(name: str, column, digests: dict, row_base: int) -> None:
    """Feed one column of one record batch into its named hash streams."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def feed(key: str, data) -> None:
        digests.setdefault(f"{name}.{key}", hashlib.sha256()).update(data)

    if column.null_count:
        nulls = np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False)) + row_base
        feed("nulls", nulls.astype("<i8").tobytes())
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        feed("lengths", lengths.astype("<i8").tobytes())
        _streams(f"{name}.values", column.flatten(), digests, 0)
    elif pa.types.is_string(kind) or pa.types.is_binary(kind):
        offsets = np.frombuffer(column.buffers()[1], dtype="<i4")
        offsets = offsets[column.offset : column.offset + len(column) + 1]
        feed("lengths", np.diff(offsets).astype("<i8").tobytes())
        data = column.buffers()[2]
        start, end = int(offsets[0]), int(offsets[-1])
        feed("bytes", memoryview(data)[start:end] if data is not None else b"")
    else:
        values = column.fill_null(0) if column.null_count else column
        array = values.to_numpy(zero_copy_only=False)
        feed("values", np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())


def batches_checksum(schema, batches: Iterable) -> str:
    """The checksum of a table given as record batches (any cutting of the same rows).

    Args:
        schema: The ``pyarrow.Schema`` of the batches.
        batches: ``pyarrow.RecordBatch`` objects, in row order.

    Returns:
        ``"sha256:<hex>"``.
    """
    digests: dict[str, hashlib._Hash] = {}
    rows = 0
    for batch in batches:
        if batch.num_rows == 0:  # an empty batch (as in an empty split's file) adds nothing
            continue
        for name, column in zip(schema.names, batch.columns, strict=True):
            _streams(name, column, digests, rows)
        rows += batch.num_rows
    total = hashlib.sha256(f"varemi-checksum-v1 rows={rows}\n".encode())
    for field in schema:
        total.update(f"{field.name}: {field.type}\n".encode())
    for key in sorted(digests):
        total.update(f"{key} {digests[key].hexdigest()}\n".encode())
    return "sha256:" + total.hexdigest()


def table_checksum(table) -> str:
    """The checksum of a ``pyarrow.Table`` (as ``datasets`` loads a split).

    Args:
        table: The split's rows.

    Returns:
        ``"sha256:<hex>"``.
    """
    return batches_checksum(table.schema, table.to_batches())


def split_checksum(split_dir: Path) -> str:
    """The checksum of a saved split, read from its Arrow files (without ``datasets``).

    Args:
        split_dir: ``OUT/train`` or ``OUT/val``, as :class:`varemi.dataset.export.SplitWriter`
            (or ``datasets.Dataset.save_to_disk``) lays it out.

    Returns:
        ``"sha256:<hex>"``.
    """
    import pyarrow as pa

    if not (split_dir / "state.json").is_file():  # --format parquet: data-*.parquet shards
        import pyarrow.parquet as pq

        files = [pq.ParquetFile(f) for f in sorted(split_dir.glob("*.parquet"))]
        return batches_checksum(files[0].schema_arrow, (b for f in files for b in f.iter_batches()))
    state = json.loads((split_dir / "state.json").read_text(encoding="utf-8"))
    paths = [split_dir / f["filename"] for f in state["_data_files"]]
    with pa.OSFile(str(paths[0])) as f:
        schema = pa.ipc.open_stream(f).schema

    def batches():
        # Plain reads, one file at a time: the pages of a memory map that has been read
        # would count in the build's resident memory (the whole dataset, at the end).
        for path in paths:
            with pa.OSFile(str(path)) as f:
                yield from pa.ipc.open_stream(f)

    return batches_checksum(schema, batches())


def dataset_checksums(out: Path, splits: Iterable[str] = ("train", "val")) -> dict:
    """What ``dataset_info.json`` records under ``checksums``.

    Args:
        out: The dataset folder.
        splits: The split folders to checksum.

    Returns:
        ``{"method": METHOD, split: "sha256:<hex>", ...}``.
    """
    return {"method": METHOD, **{s: split_checksum(Path(out) / s) for s in splits}}
