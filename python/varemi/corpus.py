"""Every file of a corpus to token ids (and labels), in worker processes, through the cache.

The entry point is :func:`tokenise_corpus`. Each file is read and parsed once: when
``build`` computes the labels itself, the worker labels the parsed score before
tokenising it. Results come back in the order of the files, whatever the number of
workers (DESIGN.md contract 8). With one worker, cache hits are served in this
process; with several, each worker looks its files up in the cache itself
(:func:`process_file`), so hits are served in parallel and a build resumed half way
costs the remaining files.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from varemi.cache import DamagedEntry, TokenCache, label_key, token_key
from varemi.encoder import EncodeOptions, TokenEncoder, encode_midi
from varemi.files import RejectedFile, read_midi_bytes


@dataclass(frozen=True)
class Job:
    """What every worker needs to know; sent once to each.

    Attributes:
        root: The MIDI folder.
        tokenizer_path: The base tokenizer's JSON file.
        encoder: ``native`` or ``miditok`` (already resolved).
        options: Pitch and track handling, limits.
        tokenizer_sha256: Hex sha256 of the base tokenizer's file (part of the cache key).
        cache_dir: The token cache folder, or None for no cache.
        labels: ``(jitter, jitter_seed, labeller version)`` when the labels are computed
            here, None when they come from the user's CSV.
    """

    root: str
    tokenizer_path: str
    tokenizer_sha256: str
    encoder: str
    options: EncodeOptions
    cache_dir: str | None
    labels: tuple[float, int, str] | None


@dataclass
class FileResult:
    """One file's outcome.

    Attributes:
        ids: int32 music token ids, or None when rejected.
        label: Its row of ``labels.csv`` when labels are computed here, else None.
        reject: ``(reason, detail)`` when the file cannot be used, else None.
        cache: ``hit``, ``miss``, ``damaged`` or ``off``.
        timings: Seconds per stage spent on this file (in a worker).
        peak_rss_mb: The worker's peak resident memory so far.
    """

    ids: np.ndarray | None = None
    label: dict | None = None
    reject: tuple[str, str] | None = None
    cache: str = "off"
    timings: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0


def labeller_version() -> str:
    """A hash of the labeller's source: new formulas never reuse cached labels.

    Returns:
        Hex sha256 of ``varemi/labels.py``.
    """
    from varemi import labels

    return hashlib.sha256(Path(labels.__file__).read_bytes()).hexdigest()


def check_workers(workers: int | None) -> None:
    """Refuse a worker count below 1 (``--workers``; None means every core).

    Args:
        workers: Worker processes, or None.

    Raises:
        VaremiError: ``workers`` < 1.
    """
    from varemi.errors import VaremiError

    if workers is not None and workers < 1:
        raise VaremiError(f"--workers must be >= 1, got {workers}")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB).

    Returns:
        Peak RSS in MiB.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _keys(job: Job, rel: str, data: bytes) -> tuple[str, str | None]:
    digest = hashlib.sha256(data).hexdigest()
    o = job.options
    tokens = token_key(
        digest, job.tokenizer_sha256, o.pitch_policy, o.pitch_range, o.tracks, job.encoder
    )
    if job.labels is None:
        return tokens, None
    jitter, seed, version = job.labels
    return tokens, label_key(digest, version, jitter, seed, rel)


def _cached(job: Job, cache: TokenCache, rel: str) -> FileResult:
    """One file's result from the cache (read by the main process or by a worker).

    Returns a result with ids (a hit) or a reject (unreadable, too large, or a hit
    that lasts too long); otherwise one with neither, whose ``cache`` says why the
    file must be computed (``miss`` or ``damaged``).
    """
    try:
        data = read_midi_bytes(Path(job.root) / rel, job.options.max_file_mb)
    except RejectedFile as e:
        return FileResult(reject=(e.reason, e.detail))
    tkey, lkey = _keys(job, rel, data)
    try:
        hit = cache.get(tkey)
        label = cache.get_json(lkey) if lkey is not None and hit else None
    except DamagedEntry:
        return FileResult(cache="damaged")
    if hit is None or (lkey is not None and label is None):
        return FileResult(cache="miss")
    ids, minutes = hit
    if minutes > job.options.max_minutes:
        reason = ("too_long", f"{minutes:.1f} min > --max-minutes {job.options.max_minutes:g}")
        return FileResult(reject=reason, cache="hit")
    if label is not None:
        label = {**label, "filename": rel}
    return FileResult(ids=ids, label=label, cache="hit")


_WORKER: dict = {}


def _init_worker(job: Job) -> None:
    from miditok import REMI

    _WORKER["job"] = job
    _WORKER["encoder"] = TokenEncoder(REMI(params=job.tokenizer_path), job.encoder)
    _WORKER["cache"] = TokenCache(job.cache_dir) if job.cache_dir else None


def _process(rel: str) -> FileResult:
    """Label (if asked) and tokenise one file; never raises for a bad file."""
    from varemi import labels as labelling

    job: Job = _WORKER["job"]
    result = FileResult(cache="miss" if job.cache_dir else "off")
    try:
        data = read_midi_bytes(Path(job.root) / rel, job.options.max_file_mb)

        def label(score) -> None:
            jitter, seed, _ = job.labels
            try:
                file_label = labelling.label_score(score, rel, jitter=jitter, seed=seed)
            except labelling.LabelError as e:
                raise RejectedFile(e.reason, e.detail) from e
            result.label = labelling.label_row(rel, file_label)

        on_parsed = label if job.labels is not None else None
        ids, minutes = encode_midi(data, _WORKER["encoder"], job.options, result.timings, on_parsed)
        result.ids = ids
        cache: TokenCache | None = _WORKER["cache"]
        if cache is not None:
            tkey, lkey = _keys(job, rel, data)
            try:
                cache.put(tkey, ids, minutes)
                if lkey is not None:
                    cache.put_json(lkey, result.label)
            except OSError:
                pass  # a read-only or full cache only costs speed
    except RejectedFile as e:
        result.ids, result.label, result.reject = None, None, (e.reason, e.detail)
    except Exception as e:  # a bug in a dependency must not lose the run
        result.ids, result.label = None, None
        result.reject = ("tokenize_failed", f"{type(e).__name__}: {e}")
    result.peak_rss_mb = peak_rss_mb()
    return result


def tokenise_corpus(job: Job, files: list[str], workers: int) -> Iterator[FileResult]:
    """Each file's result, in the order of ``files``.

    Args:
        job: What to compute and how.
        files: Paths relative to ``job.root``.
        workers: Worker processes (1: everything in this process).

    Yields:
        One :class:`FileResult` per file, in order.
    """
    if job.cache_dir is not None and workers > 1 and len(files) > 1:
        # The workers look the cache up themselves (process_file), in parallel: a build
        # resumed half way costs the remaining files, not a serial pass over the others.
        yield from _compute(job, files, workers, _lookup_or_process)
        return
    hits: set[int] = set()
    status: dict[int, str] = {}
    if job.cache_dir is not None:
        cache = TokenCache(job.cache_dir)
        for i, rel in enumerate(files):
            result = _cached(job, cache, rel)
            if result.ids is not None or result.reject is not None:
                hits.add(i)  # read again at its turn: a warm corpus's ids are never all held
            else:
                status[i] = result.cache
    misses = [rel for i, rel in enumerate(files) if i not in hits]
    computed = _compute(job, misses, workers)
    for i in range(len(files)):
        if i in hits:
            result = _cached(job, cache, files[i])
            if result.ids is None and result.reject is None:  # changed since the first look
                result = process_file(job, files[i])
            yield result
            continue
        result = next(computed)
        if status.get(i) == "damaged":
            result.cache = "damaged"
        yield result


def _lookup_or_process(rel: str) -> FileResult:
    """A worker's :func:`process_file` (cache, else compute) for the pool's job."""
    return process_file(_WORKER["job"], rel)


def _compute(job: Job, files: list[str], workers: int, fn=_process) -> Iterator[FileResult]:
    if not files:
        return
    if workers <= 1 or len(files) <= 1:
        _init_worker(job)
        for rel in files:
            yield fn(rel)
        return
    if sys.platform.startswith("linux"):
        # fork: workers start at once with every module loaded (a forkserver costs ~0.7 s
        # per build here). The pool starts before this process starts any thread of its
        # own: build turns tqdm's monitor thread off, and nothing has used pyarrow's or
        # the tokenizers' thread pools yet.
        ctx = multiprocessing.get_context("fork")
    elif "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["varemi.corpus", "varemi.labels", "miditok"])
    else:
        ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield from pool.imap(fn, files, chunksize=2)


def process_file(job: Job, rel: str) -> FileResult:
    """One file's result as :func:`tokenise_corpus` gives it, computed in this process.

    The token cache first (when ``job`` has one), else :func:`_process` (read, label,
    tokenise, cache). ``build --engine ray`` calls this on its workers, so both engines
    run the same per-file function.

    Args:
        job: What to compute and how (the worker is set up for it on first use).
        rel: The file's path relative to ``job.root``.

    Returns:
        The file's :class:`FileResult`.
    """
    if _WORKER.get("job") != job:
        _init_worker(job)
    status = None
    if job.cache_dir is not None:
        cached = _cached(job, _WORKER["cache"], rel)
        if cached.ids is not None or cached.reject is not None:
            return cached
        status = cached.cache
    result = _process(rel)
    if status == "damaged":
        result.cache = "damaged"
    return result
