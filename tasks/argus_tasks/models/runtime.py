"""CPU thread settings of the model steps.

``ARGUS_TORCH_THREADS`` overrides every step's thread count (default 1). On a shared, oversubscribed CPU one
thread is often faster than two (OpenMP threads spin waiting for each other on small tensors);
the tests set it to 1.
"""

from __future__ import annotations

import contextlib
import os

ENV_THREADS = "ARGUS_TORCH_THREADS"


def cpu_threads(default: int | None) -> int:
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        return max(1, int(env))
    return max(1, int(default or 1))


def set_threads(default: int | None) -> int:
    import torch

    n = cpu_threads(default)
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def single_thread():
    """One torch thread inside the block (many small ops: calibration, statistics)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
