"""One way to fan per-frame work out over processes, with progress in the log."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Worker processes: ``ARGUS_WORKERS`` if set, else the CPUs this process may use."""
    if os.environ.get("ARGUS_WORKERS"):
        return max(1, int(os.environ["ARGUS_WORKERS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parallel_map(fn: Callable, items: list, *, workers: int | None = None, what: str = "items",
                 chunksize: int | None = None, log_every: int = 1000) -> Iterator:
    """``map(fn, items)`` over a fork-based process pool (in order), logging progress.

    Small jobs, or ``workers == 1``, run in this process: a pool costs more than it saves there.
    """
    workers = workers or default_workers()
    started, n = time.time(), len(items)
    if workers == 1 or n < 32:
        results: Iterable = map(fn, items)
        pool = None
    else:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
        results = pool.map(fn, items, chunksize=chunksize or max(1, min(256, n // (workers * 8))))
    try:
        for i, result in enumerate(results, 1):
            if i % log_every == 0 or i == n:
                log.info("%s: %d/%d (%.1fs)", what, i, n, time.time() - started)
            yield result
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
