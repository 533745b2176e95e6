"""``build --engine ray``: the stages of a build on Ray Data, in two passes.

The entry point is :func:`ray_stages`, which ``build`` calls in place of its local
stages 2-6. It supports every option of the local engine and gives the same rows, in
the same order, and the same ``rejects.csv``, ``labels.csv``, ``duplicates.csv`` and
``dataset_info.json`` counts, histograms and groups (docs/contracts.md contract 8); only the
shard boundaries differ. The driver cuts the usable files (sorted) into contiguous
blocks; a block holds each of its files' items (the file, then its augmented copies,
as ``build._items`` orders them). Both passes run one ``ray.data.from_items`` row per
block through ``map_batches``:

1. :func:`_tokenise_block` runs, for every item, the very function the local pool
   runs (:func:`varemi.corpus.job.process_file`: the token cache, else read, label,
   tokenise, fingerprint), writes the block's token ids to its own spool file in the
   build's temporary folder (``tmp/_ray_spool``) and returns a small summary per item:
   reject, label row, fingerprint (originals, as JSON), with ``--label-scope window``
   each window's labels, number of tokens and offset in the spool, cache status,
   timings, worker memory.
2. The driver takes the summaries in block order and applies the local engine's own
   rules (``build.take_result``, ``build.decide_split``, ``build.bin_items``,
   ``build.record_bins``): rejects, label rows (onto the ``labels.csv`` spool), duplicate
   groups and the split, bins (uniform, or quantile edges over every label the rows
   hold) and the histograms.
3. :func:`_window_block` reads the block's spool back, makes windows + prefix
   (:class:`varemi.core.windows.Windower`) for the kept items and writes the block's own
   shards (:class:`varemi.dataset.export.SplitWriter`); the driver lays them out in block order.

The driver never holds token ids: it holds, per item, the spool offset, length, labels
and bins, the duplicate index (one fingerprint per file, as locally) and one block's
summary at a time (more only while blocks arrive out of order). The spool costs 4 bytes
per token of disk in the temporary folder until the build ends.

On a multi-node cluster the MIDI folder, the output's parent folder (the temporary
folder lies beside it) and the token cache folder must be visible under the same paths
on every node (a shared file system), and varemi must be installed there.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.workers import peak_rss_mb
from varemi.core.windows import Windower
from varemi.corpus.grouping import DuplicateIndex
from varemi.corpus.job import FileResult, process_file
from varemi.dataset.export import SplitWriter, write_dataset_dict
from varemi.music.fingerprint import Fingerprint
from varemi.pipeline import stages
from varemi.pipeline.params import ClusterError

MAX_BLOCK_FILES = 256
"""Most files per Ray block (smaller blocks when the corpus is small, so every CPU works)."""


def blocks(n_files: int, cpus: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges covering ``n_files``, in order.

    About four blocks per CPU, at most :data:`MAX_BLOCK_FILES` files each.

    Args:
        n_files: Usable files.
        cpus: CPUs that will run blocks.

    Returns:
        The ranges, first to last (empty for no file).
    """
    size = max(1, min(MAX_BLOCK_FILES, math.ceil(n_files / (4 * max(1, cpus)))))
    return [(a, min(a + size, n_files)) for a in range(0, n_files, size)]


# --------------------------------------------------------------------------- driver
def ray_stages(
    p, run, job, items: tuple[list, tuple[str, ...]], cond_tokens, bos, bar_starts, tmp: Path
):
    """Run stages 2-6 of a build on Ray Data; fill ``run`` as the local stages do.

    Args:
        p: The build parameters (``BuildParams``).
        run: The build's record (``build.Run``): reads ``usable`` and ``label_table``;
            records rejects, label rows, groups, the split, bins, cache statistics,
            worker timings and memory, stage timings.
        job: The :class:`varemi.corpus.job.Job` every worker runs.
        items: ``build._items``: what is tokenised, in order, and the augmentation names.
        cond_tokens: Conditioning token string to id.
        bos: The BOS id before every example (``--bos``), or None.
        bar_starts: Which ids start a bar (``--window-align bar``), or None.
        tmp: The build's temporary folder (spools under ``tmp/_ray_spool``, shards under
            ``tmp/_shards``, both removed at the end).

    Returns:
        ``{"train": SplitWriter, "val": SplitWriter}`` holding every block's shards, in
        order; the splits are laid out under ``tmp``.

    Raises:
        ClusterError: Ray cannot be started or reached, or a block failed.
    """
    import shutil

    items, copies = items
    n = len(copies)
    spool_dir, shard_dir = tmp / "_ray_spool", tmp / "_shards"
    spool_dir.mkdir()
    shard_dir.mkdir()
    ranges = blocks(len(run.usable), run.workers)  # by file: a file's copies share a block
    spec = pickle.dumps(
        {
            "job": job,
            "cond_tokens": cond_tokens,
            "bos": bos,
            "windows": (p.window_size, p.stride, p.min_window_tokens),
            "bar_starts": bar_starts,
            "spool_dir": str(spool_dir),
            "shard_dir": str(shard_dir),
            "format": p.format,
        }
    )
    tasks = [
        {"block": k, "task": pickle.dumps((k, items[a * n : b * n]))}
        for k, (a, b) in enumerate(ranges)
    ]
    index = DuplicateIndex() if p.dedup != "off" else None
    failed: set[int] = set()
    parked: list[tuple] = []  # per used item: (block, i, aug, offset, length, labels)

    def take(s: dict) -> None:  # one block's summary, in block order: the local rules
        a = ranges[s["block"]][0]
        for k, it in enumerate(s["items"]):
            i, aug = a + k // n, copies[k % n]
            fp = it.pop("fingerprint")
            r = FileResult(**it.pop("result"))
            labels = stages.take_result(p, run, i, aug, r, it["length"], failed)
            if labels is None:
                continue
            if index is not None and not aug:
                index.add(run.usable[i], Fingerprint.from_json(fp) if fp else None)
            parked.append((s["block"], i, aug, it["offset"], it["length"], labels))

    t = time.perf_counter()
    started_here = _connect(p.ray_address, run.workers)
    try:
        _run_pass(p, tasks, _tokenise_batch, spec, "tokenise (ray)", len(items), take)
        drop = stages.decide_split(p, run, index)
        used = [x for x in parked if run.usable[x[1]] not in drop]
        parked.clear()
        stages.bin_items(p, run, [x[5] for x in used])  # uniform or quantile, as locally
        n_used = len(used)
        per_block: dict[int, list] = {}
        for b, i, aug, offset, length, x in used:
            split = "val" if run.is_val[i] else "train"
            window = stages.record_bins(run, x)  # the histograms; per-window labels or None
            bins = (x.valence_bin, x.arousal_bin)
            row = (run.usable[i], aug, offset, length, (x.valence, x.arousal), bins, window, split)
            per_block.setdefault(b, []).append(row)
        tasks = [
            {"block": b, "task": pickle.dumps((b, rows))} for b, rows in sorted(per_block.items())
        ]
        del used, per_block
        summaries: dict[int, dict] = {}
        _run_pass(
            p, tasks, _window_batch, spec, "windows (ray)", n_used,
            lambda s: summaries.__setitem__(s["block"], s),
        )  # fmt: skip
    finally:
        if started_here:
            import ray

            ray.shutdown()
    run.stage["tokenise_wall"] = time.perf_counter() - t - run.stage.get("split", 0.0)

    writers = {s: SplitWriter(s, shard_dir, p.format) for s in ("train", "val")}
    window_seconds = 0.0
    for b in sorted(summaries):  # block order = file order: the rows of --engine local
        s = summaries[b]
        run.worker_rss = max(run.worker_rss, s["peak_rss_mb"])
        window_seconds += s["window_seconds"]
        for split, w in s["writers"].items():
            writers[split].merge(w)
    t = time.perf_counter()
    for split, writer in writers.items():
        writer.finish(tmp / split)
    if p.format == "arrow":
        write_dataset_dict(tmp, list(writers))
    shutil.rmtree(shard_dir, ignore_errors=True)
    shutil.rmtree(spool_dir, ignore_errors=True)
    run.stage["save"] = time.perf_counter() - t
    run.stage["window_prepend"] = window_seconds
    run.stage["export"] = sum(w.seconds for w in writers.values())
    return writers


def _run_pass(p, tasks: list[dict], fn, spec: bytes, desc: str, total: int, take) -> None:
    """One pass: every block row through ``fn`` on Ray Data; ``take`` each summary in order.

    Summaries arrive in any order; those ahead of the next block wait (small) until it
    comes, so ``take`` sees them in block order. One progress bar counts the items.
    """
    import ray.data
    from tqdm import tqdm

    if not tasks:
        return
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
    ds = ds.map_batches(fn, batch_size=1, fn_kwargs={"spec": spec}, num_cpus=1)
    order = collections.deque(t["block"] for t in tasks)
    waiting: dict[int, dict] = {}
    bar = tqdm(total=total, desc=desc, unit="file", disable=p.quiet, file=sys.stderr)
    try:
        for row in ds.iter_rows():
            s = pickle.loads(row["result"])
            waiting[s["block"]] = s
            bar.update(s["n_items"])
            while order and order[0] in waiting:
                take(waiting.pop(order.popleft()))
    except (KeyboardInterrupt, VaremiError):
        raise
    except Exception as e:  # a Ray-side failure: one line, not Ray's traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"--engine ray: the build failed on the cluster: {first}") from e
    finally:
        bar.close()
    if order:  # Ray returned fewer rows than blocks: never silently a partial dataset
        raise ClusterError(f"--engine ray: {len(order)} block(s) gave no result")


def _connect(address: str | None, cpus: int) -> bool:
    """Start a local Ray (``address`` None) or connect to one; whether this call started it.

    A Ray already initialised in this process (a notebook, a test session) is used as is.
    """
    import ray

    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # varemi's own bar counts files
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:
            ray.init(num_cpus=cpus, include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except Exception as e:
        where = "start a local Ray" if address is None else f"connect to --ray-address {address}"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"--engine ray: cannot {where}: {first}") from e
    return True


# --------------------------------------------------------------------------- workers
def _tokenise_batch(batch: dict, spec: bytes) -> dict:
    """``map_batches`` body of pass 1: each block row to its pickled summary."""
    spec = pickle.loads(spec)
    results = [pickle.dumps(_tokenise_block(spec, pickle.loads(t))) for t in batch["task"]]
    return {"block": batch["block"], "result": results}


def _window_batch(batch: dict, spec: bytes) -> dict:
    """``map_batches`` body of pass 2: each block row to its pickled summary."""
    spec = pickle.loads(spec)
    results = [pickle.dumps(_window_block(spec, pickle.loads(t))) for t in batch["task"]]
    return {"block": batch["block"], "result": results}


def _spool_path(spec: dict, block: int) -> Path:
    return Path(spec["spool_dir"]) / f"b{block:07d}.i32"


def _tokenise_block(spec: dict, task: tuple) -> dict:
    """Pass 1 on a worker: a block's items to token ids in its spool file, and a summary.

    The same per-item function as ``build._tokenise_stage``'s pool; the summary holds
    no token id, only where each item's ids lie in the spool.
    """
    block, items = task
    job = spec["job"]
    out = {"block": block, "n_items": len(items), "items": []}
    offset = 0
    with open(_spool_path(spec, block), "wb") as spool:
        for item in items:
            r = process_file(job, item)
            length = 0 if r.ids is None else len(r.ids)
            if r.ids is not None:
                spool.write(np.ascontiguousarray(r.ids, dtype="<i4").tobytes())
            original = isinstance(item, str) or not item[1]
            fp = r.fingerprint.to_json() if r.fingerprint is not None and original else None
            result = {
                "label": r.label,
                "window_labels": r.window_labels,  # --label-scope window: 16 B a window
                "window_fallback": r.window_fallback,
                "reject": r.reject,
                "cache": r.cache,
                "timings": r.timings,
                "peak_rss_mb": peak_rss_mb(),
            }
            out["items"].append(
                {"result": result, "fingerprint": fp, "length": length, "offset": offset}
            )
            offset += length
    out["pid"] = os.getpid()
    return out


def _window_block(spec: dict, task: tuple) -> dict:
    """Pass 2 on a worker: a block's used items from its spool -> windows + prefix -> shards.

    Mirrors ``build._windows_stage`` and ``_export_stage`` for the block's items, in
    their order, with the bins and split the driver decided.
    """
    block, rows = task
    folder = Path(spec["shard_dir"]) / f"b{block:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    splits = ("train", "val")
    windowers = {
        s: Windower(spec["cond_tokens"], *spec["windows"], spec["bos"], spec["bar_starts"])
        for s in splits
    }
    writers = {s: SplitWriter(s, folder, spec["format"]) for s in splits}
    path = _spool_path(spec, block)
    ids = np.memmap(path, dtype="<i4", mode="r") if path.stat().st_size else np.zeros(0, "<i4")
    for rel, aug, offset, length, labels, bins, windows, split in rows:
        music = ids[offset : offset + length].astype(np.int32)
        writers[split].write(windowers[split].add(rel, music, labels, bins, aug, windows))
    for s in splits:
        writers[s].write(windowers[s].flush())
    del ids
    return {
        "block": block,
        "n_items": len(rows),
        "writers": writers,
        "window_seconds": sum(w.seconds for w in windowers.values()),
        "peak_rss_mb": peak_rss_mb(),
        "pid": os.getpid(),
    }
