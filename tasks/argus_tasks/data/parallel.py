"""One way to fan per-frame work out over processes, with progress in the log."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

from argus_tasks.contract import cpu_budget

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Worker processes: the CPUs this step was given (:func:`~argus_tasks.contract.cpu_budget`: its
    pod's CPU request, bounded by the machine's and this process's CPUs), or ``ARGUS_WORKERS`` if set
    and smaller. Each worker is a forked copy of the step, inside the step's memory limit."""
    budget = cpu_budget()
    if os.environ.get("ARGUS_WORKERS"):
        wanted = max(1, int(os.environ["ARGUS_WORKERS"]))
        if wanted > budget:
            log.info("ARGUS_WORKERS=%d, but %d CPUs are given to this step: using %d workers", wanted, budget, budget)
        return min(wanted, budget)
    return budget


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
