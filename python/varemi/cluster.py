"""``build --engine ray``: the tokenise, bins, windows and export stages on Ray Data.

The entry point is :func:`ray_stages`, which ``build`` calls in place of its local
stages 3-6. The driver cuts the (sorted) list of usable files into contiguous
blocks, :func:`ray.data.from_items` makes one row per block, and ``map_batches`` runs
:func:`_run_block` on each: for every file of the block the very function the local
engine runs (:func:`varemi.corpus.process_file`: the token cache, else read, label,
tokenise), then the uniform bins, windows + prefix (:class:`varemi.windows.Windower`)
and the block's own Arrow shards (:class:`varemi.export.SplitWriter`), written by the
worker into the build's temporary folder. What comes back to the driver is a small
summary per block (shard paths, counts, rejects, label rows): the driver never holds
the corpus's token ids. It then lays the shards out in block order, so the rows are
those of ``--engine local``, in the same order (DESIGN.md contract 8); only the shard
boundaries differ.

On a multi-node cluster the MIDI folder, the output's parent folder and the token
cache folder must be visible under the same paths on every node (a shared file
system), and varemi must be installed there.

``--binning quantile`` is refused with this engine: equal-count bins need every
file's labels before any window can be written, which would need a second pass over
the corpus.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import pickle
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from varemi.errors import VaremiError

ENGINES = ("local", "ray")
"""The values of ``--engine``."""

MAX_BLOCK_FILES = 256
"""Most files per Ray block (smaller blocks when the corpus is small, so every CPU works)."""


class ClusterError(VaremiError):
    """Ray is missing, cannot be reached, or a block failed on the cluster."""


def check_engine(engine: str, ray_address: str | None, binning: str) -> None:
    """Refuse ``--engine`` / ``--ray-address`` values that cannot work, before any work.

    Args:
        engine: ``local`` or ``ray`` (``--engine``).
        ray_address: ``--ray-address`` (None: start a local Ray).
        binning: ``--binning`` (``quantile`` is refused with ``ray``).

    Raises:
        ClusterError: an unknown engine, ``--ray-address`` without ``--engine ray``,
            ``--binning quantile`` with ``--engine ray``, or Ray Data not installed.
    """
    if engine not in ENGINES:
        raise ClusterError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        if ray_address is not None:
            raise ClusterError("--ray-address applies to --engine ray only")
        return
    if binning == "quantile":
        raise ClusterError(
            "--binning quantile is not supported with --engine ray (equal-count bins need "
            "every label before the first window); use --binning uniform or --engine local"
        )
    if importlib.util.find_spec("ray") is None:
        raise ClusterError("--engine ray needs Ray Data: pip install 'varemi[ray]'")


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
def ray_stages(p, run, job, cond_tokens: dict[str, int], bos: int | None, tmp: Path) -> dict:
    """Run stages 3-6 of a build on Ray Data; fill ``run`` as the local stages do.

    Args:
        p: The build parameters (``BuildParams``).
        run: The build's record (``build._Run``): reads ``usable``, ``is_val``,
            ``label_table``; appends rejects, label rows, bins, cache statistics,
            worker timings and memory, stage timings.
        job: The :class:`varemi.corpus.Job` every worker runs.
        cond_tokens: Conditioning token string to id.
        bos: The BOS id before every example (``--bos``), or None.
        tmp: The build's temporary folder (shards are written under ``tmp/_shards``).

    Returns:
        ``{"train": SplitWriter, "val": SplitWriter}`` holding every block's shards, in
        order; the splits are laid out under ``tmp``.

    Raises:
        ClusterError: Ray cannot be started or reached, or a block failed.
    """
    from tqdm import tqdm

    from varemi.export import SplitWriter, write_dataset_dict

    shard_dir = tmp / "_shards"
    shard_dir.mkdir()
    ranges = blocks(len(run.usable), run.workers)
    spec = pickle.dumps(
        {
            "job": job,
            "cond_tokens": cond_tokens,
            "bos": bos,
            "windows": (p.window_size, p.stride, p.min_window_tokens),
            "bins": p.bins,
            "min_window_tokens": p.min_window_tokens,
            "shard_dir": str(shard_dir),
            "format": p.format,
        }
    )
    items = []
    for k, (a, b) in enumerate(ranges):
        files = run.usable[a:b]
        labels = [run.label_table[f] for f in files] if run.label_table is not None else None
        task = (k, files, [bool(v) for v in run.is_val[a:b]], labels)
        items.append({"block": k, "task": pickle.dumps(task)})

    summaries: dict[int, dict] = {}
    t = time.perf_counter()
    started_here = _connect(p.ray_address, run.workers)
    try:
        import ray.data

        if items:
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(_block_batch, batch_size=1, fn_kwargs={"spec": spec}, num_cpus=1)
            bar = tqdm(
                total=len(run.usable),
                desc="tokenise (ray)",
                unit="file",
                disable=p.quiet,
                file=sys.stderr,
            )
            try:
                for row in ds.iter_rows():
                    s = pickle.loads(row["result"])
                    summaries[s["block"]] = s
                    bar.update(s["n_files"])
            except (KeyboardInterrupt, VaremiError):
                raise
            except Exception as e:  # a Ray-side failure: one line, not Ray's traceback
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ClusterError(f"--engine ray: the build failed on the cluster: {first}") from e
            finally:
                bar.close()
    finally:
        if started_here:
            import ray

            ray.shutdown()
    run.stage["tokenise_wall"] = time.perf_counter() - t

    writers = {s: SplitWriter(s, shard_dir, p.format) for s in ("train", "val")}
    window_seconds = 0.0
    for k in range(len(ranges)):  # block order = file order: the rows of --engine local
        s = summaries[k]
        run.rejects.extend(s["rejects"])
        if run.label_rows is not None:  # computed labels: onto the spool, in block order
            run.label_rows.extend(s["label_rows"])
        run.vbins.extend(s["vbins"])
        run.abins.extend(s["abins"])
        run.no_windows += s["no_windows"]
        run.cache_stats.update(s["cache_stats"])
        run.worker_seconds.update(s["worker_seconds"])
        run.worker_rss = max(run.worker_rss, s["peak_rss_mb"])
        window_seconds += s["window_seconds"]
        for split, w in s["writers"].items():
            writers[split].merge(w)
    t = time.perf_counter()
    for split, writer in writers.items():
        writer.finish(tmp / split)
    if p.format == "arrow":
        write_dataset_dict(tmp, list(writers))
    import shutil

    shutil.rmtree(shard_dir, ignore_errors=True)
    run.stage["save"] = time.perf_counter() - t
    run.stage["window_prepend"] = window_seconds
    run.stage["export"] = sum(w.seconds for w in writers.values())
    return writers


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
def _block_batch(batch: dict, spec: bytes) -> dict:
    """``map_batches`` body: each block row to its pickled summary."""
    results = [pickle.dumps(_run_block(pickle.loads(spec), pickle.loads(t))) for t in batch["task"]]
    return {"block": batch["block"], "result": results}


def _run_block(spec: dict, task: tuple) -> dict:
    """One block on a worker: files -> token ids -> bins -> windows + prefix -> shards.

    Mirrors ``build._tokenise_stage``, ``_bins_stage`` (uniform), ``_windows_stage`` and
    ``_export_stage`` for the block's files, in their order.
    """
    from varemi import conditioning
    from varemi.corpus import peak_rss_mb, process_file
    from varemi.export import SplitWriter
    from varemi.windows import Windower

    block, files, is_val, csv_labels = task
    job = spec["job"]
    folder = Path(spec["shard_dir"]) / f"b{block:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    splits = ("train", "val")
    windowers = {s: Windower(spec["cond_tokens"], *spec["windows"], spec["bos"]) for s in splits}
    writers = {s: SplitWriter(s, folder, spec["format"]) for s in splits}
    out = {
        "block": block,
        "n_files": len(files),
        "rejects": [],
        "label_rows": [],
        "vbins": [],
        "abins": [],
        "no_windows": 0,
        "cache_stats": Counter(),
        "worker_seconds": Counter(),
        "peak_rss_mb": 0.0,
    }
    for k, rel in enumerate(files):
        r = process_file(job, rel)
        out["cache_stats"][r.cache] += 1
        out["worker_seconds"].update(r.timings)
        if r.reject is not None:
            out["rejects"].append((rel, *r.reject))
            continue
        if r.label is not None:
            out["label_rows"].append(r.label)
            valence, arousal = r.label["valence"], r.label["arousal"]
        else:
            valence, arousal = csv_labels[k]
        if len(r.ids) < spec["min_window_tokens"]:
            out["no_windows"] += 1
        vb, ab = conditioning.discretise_uniform(np.array([valence, arousal]), spec["bins"])
        vb, ab = int(vb), int(ab)
        out["vbins"].append(vb)
        out["abins"].append(ab)
        s = "val" if is_val[k] else "train"
        writers[s].write(windowers[s].add(rel, r.ids, (valence, arousal), (vb, ab)))
    for s in splits:
        writers[s].write(windowers[s].flush())
    out["window_seconds"] = sum(w.seconds for w in windowers.values())
    out["writers"] = writers
    out["peak_rss_mb"] = peak_rss_mb()
    out["pid"] = os.getpid()
    return out
