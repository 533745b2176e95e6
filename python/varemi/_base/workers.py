"""The worker pool: a function over many items in worker processes, results in order.

A worker that dies (a native crash, the OOM killer) is replaced and its item retried
once; an item that kills two workers gets :data:`CRASHED_DETAIL`.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from varemi._base.errors import VaremiError


def check_workers(workers: int | None) -> None:
    """Refuse a worker count below 1 (``--workers``; None means every core).

    Args:
        workers: Worker processes, or None.

    Raises:
        VaremiError: ``workers`` < 1.
    """
    if workers is not None and workers < 1:
        raise VaremiError(f"--workers must be >= 1, got {workers}")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB).

    Returns:
        Peak RSS in MiB.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


T = TypeVar("T")


R = TypeVar("R")


CRASHED_DETAIL = "its worker process died twice on it (a native crash or the OOM killer)"
"""The ``detail`` of a ``crashed`` reject."""


def _mp_context() -> multiprocessing.context.BaseContext:
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        # fork: workers start at once with every module loaded (a forkserver costs ~0.7 s
        # per build here). The pool starts before this process starts any thread of its
        # own: build turns tqdm's monitor thread off, and nothing has used pyarrow's or
        # the tokenizers' thread pools yet. The executor forks every worker before it
        # starts its own manager thread.
        return multiprocessing.get_context("fork")
    # Threads are running (Ray or a web server in this process, an embedding
    # application): a forked child could inherit a lock another thread holds and hang.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["varemi.corpus.job", "varemi.labelling.heuristic", "miditok"])
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
        self.others: set = set()  # this process's children that are not this pool's workers

    def get(self) -> ProcessPoolExecutor:
        if self.executor is None:
            self.others = set(multiprocessing.active_children())
            self.executor = ProcessPoolExecutor(
                self.workers,
                mp_context=_mp_context(),
                initializer=_worker_start,
                initargs=(self.initializer, self.initargs),
            )
        return self.executor

    def _kill_workers(self) -> None:
        """SIGKILL this pool's workers (running tasks are abandoned).

        They are the children this process started since the pool was made (the
        executor starts them through multiprocessing, which lists them publicly).
        """
        for process in multiprocessing.active_children():
            if process not in self.others:
                process.kill()

    def close(self, kill: bool = False) -> None:
        executor, self.executor = self.executor, None
        if executor is None:
            return
        if kill:  # interrupted, or the pool is broken: do not wait for running tasks
            self._kill_workers()
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
