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
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from varemi.cache import DamagedEntry, TokenCache, fingerprint_key, label_key, token_key
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
        fingerprint: Also compute each file's duplicate-detection fingerprint
            (:mod:`varemi.duplicates`), cached beside its tokens.
        window_labels: ``(window_size, stride, min_window_tokens)`` with ``build
            --label-scope window``: also label every window from its own decoded music
            (:func:`window_labels`), cached beside its tokens; None otherwise.
    """

    root: str
    tokenizer_path: str
    tokenizer_sha256: str
    encoder: str
    options: EncodeOptions
    cache_dir: str | None
    labels: tuple[float, int, str] | None
    fingerprint: bool = False
    window_labels: tuple[int, int, int] | None = None


@dataclass
class FileResult:
    """One file's outcome.

    Attributes:
        ids: int32 music token ids, or None when rejected.
        label: Its row of ``labels.csv`` when labels are computed here, else None.
        reject: ``(reason, detail)`` when the file cannot be used, else None.
        fingerprint: Its :class:`varemi.duplicates.Fingerprint` when asked, else None.
        window_labels: ``(valence, arousal)`` float64 arrays, one entry per window
            (``Job.window_labels``), else None.
        window_fallback: How many of those windows could not be labelled from their
            own music (no notes) and took the file's label.
        cache: ``hit``, ``miss``, ``damaged`` or ``off``.
        timings: Seconds per stage spent on this file (in a worker).
        peak_rss_mb: The worker's peak resident memory so far.
    """

    ids: np.ndarray | None = None
    label: dict | None = None
    reject: tuple[str, str] | None = None
    fingerprint: object = None
    window_labels: tuple[np.ndarray, np.ndarray] | None = None
    window_fallback: int = 0
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


def _keys(job: Job, rel: str, data: bytes, aug: str = "") -> tuple[str, str | None]:
    digest = hashlib.sha256(data).hexdigest()
    o = job.options
    tokens = token_key(
        digest, job.tokenizer_sha256, o.pitch_policy, o.pitch_range, o.tracks, job.encoder, aug
    )
    if job.labels is None:
        return tokens, None
    jitter, seed, version = job.labels
    return tokens, label_key(digest, version, jitter, seed, rel, aug)


def _item(x) -> tuple[str, str]:
    """A work item: a file, or ``(file, augmentation)`` (empty for the original)."""
    return (x, "") if isinstance(x, str) else (x[0], x[1])


def _cached(job: Job, cache: TokenCache, item, windows: bool = True) -> FileResult:
    """One file's (or copy's) result from the cache (read by the main process or a worker).

    Returns a result with ids (a hit) or a reject (unreadable, too large, or a hit
    that lasts too long); otherwise one with neither, whose ``cache`` says why the
    file must be computed (``miss`` or ``damaged``). With ``job.window_labels`` and
    ``windows``, a hit also carries its window labels: cached ones, or computed now
    from the cached ids (and cached); ``windows=False`` only looks the tokens up.
    """
    rel, aug = _item(item)
    try:
        data = read_midi_bytes(Path(job.root) / rel, job.options.max_file_mb)
    except RejectedFile as e:
        return FileResult(reject=(e.reason, e.detail))
    tkey, lkey = _keys(job, rel, data, aug)
    fingerprint = job.fingerprint and not aug
    try:
        hit = cache.get(tkey)
        label = cache.get_json(lkey) if lkey is not None and hit else None
        fp = None
        if fingerprint and hit:
            from varemi.duplicates import Fingerprint

            entry = cache.get_json(fingerprint_key(tkey))
            fp = Fingerprint.from_json(entry) if entry is not None else None
    except DamagedEntry:
        return FileResult(cache="damaged")
    if hit is None or (lkey is not None and label is None) or (fingerprint and fp is None):
        return FileResult(cache="miss")
    ids, minutes = hit
    if minutes > job.options.max_minutes:
        reason = ("too_long", f"{minutes:.1f} min > --max-minutes {job.options.max_minutes:g}")
        return FileResult(reject=reason, cache="hit")
    if label is not None:
        label = {**label, "filename": rel}
    result = FileResult(ids=ids, label=label, fingerprint=fp, cache="hit")
    if windows and job.window_labels is not None and label is not None:
        _add_window_labels(job, result, rel, cache, lkey)
    return result


WINDOW_LABELS_VERSION = "1"
"""Bump when the way windows are cut, decoded or labelled changes (part of the cache key)."""


def window_labels(
    tokenizer,
    ids: np.ndarray,
    name: str,
    file_label: tuple[float, float],
    windows: tuple[int, int, int],
    jitter: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each window's labels from its own music (``build --label-scope window``).

    The windows are the ones :func:`varemi.kernels.make_examples` cuts from ``ids``
    (a pure function of ``len(ids)`` and the window parameters). Each window's music
    ids are decoded with ``tokenizer`` to a score and labelled by
    :func:`varemi.labels.label_score`, with the file's noise (``name``, ``jitter``,
    ``seed``): the label describes what the model sees after the conditioning tokens.
    A window that cannot be labelled (no notes, or ids that do not decode) takes
    ``file_label``.

    Args:
        tokenizer: The base MidiTok tokenizer the ids were made with.
        ids: The file's int32 music token ids.
        name: The file's path relative to the MIDI root (the noise key).
        file_label: The file's (valence, arousal).
        windows: ``(window_size, stride, min_window_tokens)``.
        jitter: ``--jitter``.
        seed: ``--jitter-seed``.

    Returns:
        ``(valence, arousal, fallback)``: float64 arrays, one entry per window, and how
        many windows took the file's label.
    """
    from varemi import kernels
    from varemi import labels as labelling
    from varemi.vocab import decode_music

    ids = np.ascontiguousarray(ids, dtype=np.int32)
    spans = kernels.window_spans(ids, np.array([0, len(ids)], dtype=np.int64), *windows)
    valence = np.empty(len(spans.start), dtype=np.float64)
    arousal = np.empty(len(spans.start), dtype=np.float64)
    fallback = 0
    for k, (start, stop) in enumerate(zip(spans.start.tolist(), spans.stop.tolist(), strict=True)):
        try:
            score = decode_music(tokenizer, ids[start:stop].tolist())
            label = labelling.label_score(score, name, jitter=jitter, seed=seed)
            valence[k], arousal[k] = label.valence, label.arousal
        except Exception:  # noqa: BLE001 - no notes, or a window MidiTok cannot decode
            valence[k], arousal[k] = file_label
            fallback += 1
    return valence, arousal, fallback


def _window_key(job: Job, label_key_: str) -> str:
    from varemi.cache import cache_key

    return cache_key(label_key_, "window_labels", job.window_labels, WINDOW_LABELS_VERSION)


def _add_window_labels(
    job: Job, result: FileResult, rel: str, cache: TokenCache | None, lkey: str | None
) -> None:
    """Put the window labels of a labelled result into it: from the cache, else computed."""
    key = _window_key(job, lkey) if cache is not None and lkey is not None else None
    if key is not None:
        try:
            entry = cache.get_json(key)
        except DamagedEntry:
            entry = None
        if entry is not None and len(entry.get("valence", ())) == len(entry.get("arousal", ())):
            result.window_labels = (
                np.array(entry["valence"], dtype=np.float64),
                np.array(entry["arousal"], dtype=np.float64),
            )
            result.window_fallback = int(entry.get("fallback", 0))
            return
    if _WORKER.get("job") != job:
        _init_worker(job)
    jitter, seed, _ = job.labels
    file_label = (result.label["valence"], result.label["arousal"])
    t = time.perf_counter()
    v, a, fallback = window_labels(
        _WORKER["encoder"].tokenizer, result.ids, rel, file_label, job.window_labels, jitter, seed
    )
    result.timings["window_labels"] = result.timings.get("window_labels", 0.0) + (
        time.perf_counter() - t
    )
    result.window_labels, result.window_fallback = (v, a), fallback
    if key is not None:
        try:
            cache.put_json(
                key, {"valence": v.tolist(), "arousal": a.tolist(), "fallback": fallback}
            )
        except OSError:
            pass  # a read-only or full cache only costs speed


T = TypeVar("T")
R = TypeVar("R")

_WORKER: dict = {}


def _init_worker(job: Job) -> None:
    from varemi.vocab import import_miditok

    _WORKER["job"] = job
    _WORKER["encoder"] = TokenEncoder(import_miditok().REMI(params=job.tokenizer_path), job.encoder)
    _WORKER["cache"] = TokenCache(job.cache_dir) if job.cache_dir else None


def _process(item) -> FileResult:
    """Label (if asked) and tokenise one file (or a copy); never raises for a bad file."""
    from varemi import labels as labelling

    rel, aug = _item(item)
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

        def fingerprint(score) -> None:
            from varemi.duplicates import fingerprint_score

            result.fingerprint = fingerprint_score(score)

        on_parsed = label if job.labels is not None else None
        on_ready = fingerprint if job.fingerprint and not aug else None
        augment = None
        if aug:
            from varemi.augment import apply

            def augment(score) -> None:
                apply(score, aug)

        ids, minutes = encode_midi(
            data, _WORKER["encoder"], job.options, result.timings, on_parsed, on_ready, augment
        )
        result.ids = ids
        cache: TokenCache | None = _WORKER["cache"]
        tkey, lkey = _keys(job, rel, data, aug)
        if job.window_labels is not None and result.label is not None:
            _add_window_labels(job, result, rel, cache, lkey)
        if cache is not None:
            try:
                cache.put(tkey, ids, minutes)
                if lkey is not None:
                    cache.put_json(lkey, result.label)
                if result.fingerprint is not None:
                    cache.put_json(fingerprint_key(tkey), result.fingerprint.to_json())
            except OSError:
                pass  # a read-only or full cache only costs speed
    except RejectedFile as e:
        result.ids, result.label, result.reject = None, None, (e.reason, e.detail)
        result.fingerprint, result.window_labels = None, None
    except Exception as e:  # a bug in a dependency must not lose the run
        result.ids, result.label, result.fingerprint = None, None, None
        result.window_labels = None
        result.reject = ("tokenize_failed", f"{type(e).__name__}: {e}")
    result.peak_rss_mb = peak_rss_mb()
    return result


def tokenise_corpus(job: Job, files: list, workers: int) -> Iterator[FileResult]:
    """Each file's result, in the order of ``files``.

    Args:
        job: What to compute and how.
        files: Paths relative to ``job.root``, or ``(path, augmentation)`` pairs
            (:mod:`varemi.augment`; an empty augmentation is the original).
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
            result = _cached(job, cache, rel, windows=False)
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


def _lookup_or_process(item) -> FileResult:
    """A worker's :func:`process_file` (cache, else compute) for the pool's job."""
    return process_file(_WORKER["job"], item)


def _compute(job: Job, files: list, workers: int, fn=_process) -> Iterator[FileResult]:
    if not files:
        return
    if workers <= 1 or len(files) <= 1:
        _init_worker(job)
        for rel in files:
            yield fn(rel)
        return

    def crashed(rel: str) -> FileResult:
        return FileResult(
            reject=("crashed", CRASHED_DETAIL), cache="miss" if job.cache_dir else "off"
        )

    yield from map_in_workers(fn, files, workers, _init_worker, (job,), crashed)


CRASHED_DETAIL = "its worker process died twice on it (a native crash or the OOM killer)"
"""The ``detail`` of a ``crashed`` reject."""


def _mp_context() -> multiprocessing.context.BaseContext:
    if sys.platform.startswith("linux"):
        # fork: workers start at once with every module loaded (a forkserver costs ~0.7 s
        # per build here). The pool starts before this process starts any thread of its
        # own: build turns tqdm's monitor thread off, and nothing has used pyarrow's or
        # the tokenizers' thread pools yet. The executor forks every worker before it
        # starts its own manager thread.
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["varemi.corpus", "varemi.labels", "miditok"])
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_start(initializer: Callable | None, initargs: tuple) -> None:
    # The main process handles Ctrl-C and SIGTERM and stops the workers itself: a
    # terminal's Ctrl-C reaches the whole process group, and a worker must not print
    # a traceback for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


class _Pool:
    """A ProcessPoolExecutor that can be replaced when a worker dies, and stopped at once."""

    def __init__(self, workers: int, initializer: Callable | None, initargs: tuple) -> None:
        self.workers, self.initializer, self.initargs = workers, initializer, initargs
        self.executor: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                self.workers,
                mp_context=_mp_context(),
                initializer=_worker_start,
                initargs=(self.initializer, self.initargs),
            )
        return self.executor

    def close(self, kill: bool = False) -> None:
        executor, self.executor = self.executor, None
        if executor is None:
            return
        if kill:  # interrupted, or the pool is broken: do not wait for running tasks
            for proc in list((getattr(executor, "_processes", None) or {}).values()):
                try:
                    proc.kill()
                except (OSError, ValueError, AttributeError):
                    pass
        executor.shutdown(wait=True, cancel_futures=True)


def map_in_workers(
    func: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    initializer: Callable | None,
    initargs: tuple,
    crashed: Callable[[T], R],
) -> Iterator[R]:
    """``func`` over ``items`` in worker processes, in order, surviving workers that die.

    The one worker pool of varemi (``labels`` and ``build`` share it). At most
    ``4 * workers`` items are in flight, so results do not pile up in memory. When a
    worker dies (a segfault in a parser, the OOM killer), the pool is replaced, and
    every item that was in flight and unfinished is run again alone, one at a time, in
    a pool of one worker: the item that kills that worker too is given up on
    (``crashed(item)`` is yielded for it); then the other items go on in parallel.
    On an exception in the caller (Ctrl-C, SIGTERM) the workers are killed at once.

    Args:
        func: A picklable function of one item; it should not raise.
        items: The work, in order.
        workers: Worker processes (>= 1).
        initializer: Run once in each worker with ``initargs``.
        initargs: Arguments of ``initializer``.
        crashed: The result to yield for an item whose worker died twice on it.

    Yields:
        ``func(item)`` (or ``crashed(item)``) for each item, in the order of ``items``.
    """
    pool = _Pool(workers, initializer, initargs)
    solo = _Pool(1, initializer, initargs)
    ahead = 4 * workers
    pending: deque = deque()  # (item, future) in item order
    suspects: deque = deque()  # items that were in flight when a worker died
    it = iter(items)
    clean = False
    try:
        while True:
            while suspects:  # each alone: the one that kills its worker is the culprit
                item, done = suspects.popleft()
                if done is not None:
                    yield done
                    continue
                try:
                    yield solo.get().submit(func, item).result()
                except BrokenProcessPool:
                    solo.close(kill=True)
                    yield crashed(item)
            solo.close()  # one executor at a time: each forks with no other pool's threads
            try:
                while len(pending) < ahead:
                    item = next(it, _END)
                    if item is _END:
                        break
                    pending.append((item, None))  # a submit to a broken pool raises too
                    pending[-1] = (item, pool.get().submit(func, item))
                if not pending:
                    break
                result = pending[0][1].result()
            except BrokenProcessPool:
                pool.close(kill=True)
                suspects.extend((i, _finished(f)) for i, f in pending)  # in order
                pending.clear()
                continue
            pending.popleft()
            yield result
        clean = True
    finally:
        pool.close(kill=not clean)
        solo.close(kill=not clean)


_END = object()


def _finished(future) -> object | None:
    """A future's result when it completed before the pool broke, else None."""
    if future is None or not future.done() or future.cancelled():
        return None
    return future.result() if future.exception() is None else None


def process_file(job: Job, item) -> FileResult:
    """One file's result as :func:`tokenise_corpus` gives it, computed in this process.

    The token cache first (when ``job`` has one), else :func:`_process` (read, label,
    tokenise, cache). ``build --engine ray`` calls this on its workers, so both engines
    run the same per-file function.

    Args:
        job: What to compute and how (the worker is set up for it on first use).
        item: The file's path relative to ``job.root``, or ``(path, augmentation)``.

    Returns:
        The file's :class:`FileResult`.
    """
    if _WORKER.get("job") != job:
        _init_worker(job)
    status = None
    if job.cache_dir is not None:
        cached = _cached(job, _WORKER["cache"], item)
        if cached.ids is not None or cached.reject is not None:
            return cached
        status = cached.cache
    result = _process(item)
    if status == "damaged":
        result.cache = "damaged"
    return result
