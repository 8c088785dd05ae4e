"""CPU thread settings of the model steps.

``ARGUS_TORCH_THREADS`` overrides every step's thread count (default 1). On a shared, oversubscribed CPU one
thread is often faster than two (OpenMP threads spin waiting for each other on small tensors);
the tests set it to 1.

The same count applies to numpy's BLAS (OpenBLAS starts one thread per core by default): the
metrics do many small matrix products (KID kernels, bootstrap sums), and on a loaded 2-core
machine a two-thread OpenBLAS product of an 80x224 matrix measured 30x slower than one thread.

Whatever is asked, a step never runs more threads than the CPUs it was given
(:func:`argus_tasks.contract.cpu_budget`: its pod's CPU request, ``ARGUS_CPU_REQUEST``, bounded by
the CPUs of the machine and of this process's affinity): a pod sees every CPU of its node.
"""

from __future__ import annotations

import contextlib
import logging
import os

from argus_tasks.contract import cpu_budget

ENV_THREADS = "ARGUS_TORCH_THREADS"
log = logging.getLogger(__name__)


def cpu_threads(default: int | None) -> int:
    """``ARGUS_TORCH_THREADS``, else ``default``, else 1; at most :func:`cpu_budget`."""
    env = os.environ.get(ENV_THREADS, "").strip()
    wanted = max(1, int(env) if env else int(default or 1))
    budget = cpu_budget()
    if wanted > budget:
        log.info("%d CPU threads asked, %d CPUs given to this step (ARGUS_CPU_REQUEST / affinity): using %d",
                 wanted, budget, budget)
    return min(wanted, budget)


def limit_blas_threads(n: int):
    """Limit numpy's BLAS thread pool to ``n`` threads (a no-op without threadpoolctl).

    Returns the limiter: applied at once, and usable as a context manager that restores the
    previous limits on exit.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is pinned in requirements
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def set_threads(default: int | None) -> int:
    import torch

    n = cpu_threads(default)
    torch.set_num_threads(n)
    limit_blas_threads(n)
    return n


@contextlib.contextmanager
def single_thread():
    """One torch (and BLAS) thread inside the block (many small ops: calibration, statistics)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with limit_blas_threads(1):
            yield
    finally:
        torch.set_num_threads(before)
