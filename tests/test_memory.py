"""Reading back what a build wrote must not map it into the build's memory.

A memory map's pages count in the process's resident memory once read: the build's
checksum pass over the saved dataset and its token spool each made the main process
look (and be accounted) as large as the data by the end of a big build.
"""

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from varemi.dataset.integrity import batches_checksum, split_checksum
from varemi.pipeline.stages import TokenSpool

MB = 1 << 20


def _status_mb(field: str) -> float:
    m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    if m is None:
        pytest.skip(f"this kernel does not report {field}")
    return int(m.group(1)) / 1024


def _reset_peak() -> float:
    """Reset the peak resident memory (VmHWM) to now; the current resident memory."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("needs /proc/self/clear_refs (Linux) to measure a peak")
    return _status_mb("VmRSS")


def _peak_growth_mb(before: float) -> float:
    return _status_mb("VmHWM") - before


def _split(folder: Path, batches: int, ids_per_batch: int) -> list[pa.RecordBatch]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = []
    for k in range(2):
        name = f"data-{k:05d}-of-00002.arrow"
        with pa.OSFile(str(folder / name), "wb") as f, pa.ipc.new_stream(f, _SCHEMA) as w:
            for _ in range(batches):
                values = pa.array(rng.integers(0, 20000, ids_per_batch, dtype=np.int32))
                offsets = pa.array(np.arange(0, ids_per_batch + 1, 1024, dtype=np.int32))
                batch = pa.record_batch([pa.ListArray.from_arrays(offsets, values)], _SCHEMA)
                w.write_batch(batch)
                out.append(batch)
    state = {"_data_files": [{"filename": f"data-{k:05d}-of-00002.arrow"} for k in range(2)]}
    (folder / "state.json").write_text(json.dumps(state))
    return out


_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32()))])


def test_split_checksum_reads_without_mapping_the_split(tmp_path):
    batches = _split(tmp_path / "train", batches=32, ids_per_batch=256 * 1024)  # 64 MB
    before = _reset_peak()
    got = split_checksum(tmp_path / "train")
    grown = _peak_growth_mb(before)
    assert got == batches_checksum(_SCHEMA, batches)
    assert grown < 16, f"checksumming a 64 MB split mapped {grown:.0f} MB into memory"


def test_spool_reads_back_without_mapping_the_spool(tmp_path):
    spool = TokenSpool(tmp_path / "spool.bin")
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 20000, 1 << 20, dtype=np.int32) for _ in range(16)]  # 64 MB
    refs = [spool.put(p) for p in parts]
    before = _reset_peak()
    try:
        for ref, part in zip(refs, parts, strict=True):
            back = spool.get(ref)
            assert back.dtype == np.int32 and np.array_equal(back, part)
        grown = _peak_growth_mb(before)
        back[0] = -1  # the caller owns (and may change) what it reads
    finally:
        spool.close()
    assert not (tmp_path / "spool.bin").exists()
    assert grown < 16, f"reading a 64 MB spool mapped {grown:.0f} MB into memory"
