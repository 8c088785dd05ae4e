"""Threads and worker processes are bounded by the CPUs a step was given, not by the node's CPU count.

A pod sees every CPU of its node; ``validate`` used to fork one process per node CPU inside its 4 GiB
limit. The runtimes pass the step's CPU request as ``ARGUS_CPU_REQUEST``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from argus_tasks.data.parallel import default_workers, parallel_map
from argus_tasks.models.runtime import cpu_threads

MACHINE_CPUS = len(os.sched_getaffinity(0))
needs_two_cpus = pytest.mark.skipif(MACHINE_CPUS < 2, reason="needs a machine with 2+ CPUs to tell the bound apart")


def _pid(_):
    return os.getpid()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("ARGUS_CPU_REQUEST", "ARGUS_WORKERS", "ARGUS_TORCH_THREADS"):
        monkeypatch.delenv(name, raising=False)


@needs_two_cpus
def test_a_one_cpu_step_forks_no_worker_on_a_bigger_machine(monkeypatch):
    monkeypatch.setenv("ARGUS_CPU_REQUEST", "1")
    assert default_workers() == 1
    pids = set(parallel_map(_pid, list(range(64)), what="probe"))
    assert pids == {os.getpid()}, f"{len(pids)} processes for a step that was given 1 CPU"


@needs_two_cpus
def test_without_a_request_the_machine_bounds_the_workers(monkeypatch):
    assert default_workers() == MACHINE_CPUS
    monkeypatch.setenv("ARGUS_CPU_REQUEST", str(MACHINE_CPUS * 8))  # a request larger than the machine
    assert default_workers() == MACHINE_CPUS


@needs_two_cpus
@pytest.mark.parametrize("request_, expected", [("1", 1), ("500m", 1), ("1500m", 1), ("2", 2), ("2000m", 2)])
def test_kubernetes_cpu_quantities(monkeypatch, request_, expected):
    from argus_tasks.contract import cpu_budget

    monkeypatch.setenv("ARGUS_CPU_REQUEST", request_)
    assert cpu_budget() == min(expected, MACHINE_CPUS)


@needs_two_cpus
def test_explicit_thread_and_worker_counts_are_capped_by_the_request(monkeypatch):
    monkeypatch.setenv("ARGUS_CPU_REQUEST", "1")
    monkeypatch.setenv("ARGUS_WORKERS", "8")
    monkeypatch.setenv("ARGUS_TORCH_THREADS", "8")
    assert default_workers() == 1
    assert cpu_threads(None) == 1
    monkeypatch.delenv("ARGUS_TORCH_THREADS")
    assert cpu_threads(4) == 1


def test_the_cpu_affinity_of_the_process_bounds_the_budget():
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from argus_tasks.data.parallel import default_workers; from argus_tasks.models.runtime import cpu_threads; "
            "print(default_workers(), cpu_threads(4))")
    env = {**os.environ, "ARGUS_CPU_REQUEST": "8"}
    env.pop("ARGUS_WORKERS", None)
    env.pop("ARGUS_TORCH_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1"]


def test_a_malformed_request_is_ignored_not_fatal(monkeypatch):
    from argus_tasks.contract import cpu_budget

    monkeypatch.setenv("ARGUS_CPU_REQUEST", "lots")
    assert cpu_budget() == MACHINE_CPUS
