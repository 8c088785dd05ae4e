"""Training throughput of the train step against a bare PyTorch loop of the same model and batch.

* ``pipeline``: ``argus-task train --condition fog`` as the DAG runs it (validated run, frames in
  memory, the batch sampler, MLflow metrics every ``log_every_steps``, atomic checkpoints). Its
  images/s is the training loop's own figure (what the step logs); the whole step's wall time
  (start-up, data loading, MLflow registration) is printed beside it.
* ``bare``: the same ``WeatherTranslator`` (tiny config, batch 8) fed with pre-built float
  batches in a plain ``for`` loop: no sampler, no logging, no checkpoints. Neither side gets a
  warm-up: both are timed from their first step.

Both run in fresh processes with the same thread count, interleaved, ``--repeats`` times; the
medians are compared. Target: pipeline / bare >= 0.9 (the step adds no input bottleneck). Both
images/s (wall) and images per CPU-second (the process's own CPU time, robust to other tenants of
a shared machine) are reported.
Peak RSS of each process comes from ``wait4``. Run it niced on a shared machine::

    nice -n 10 .venv/bin/python benchmarks/bench_throughput.py [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

DAG_ID = "bench_throughput"

BARE = r"""
import json, sys, time, torch
from argus_tasks.models.config import load_config
from argus_tasks.models.generator import WeatherTranslator
from argus_tasks.models.runtime import set_threads
steps, warm = int(sys.argv[1]), int(sys.argv[2])
cfg = load_config("tiny")
set_threads(cfg.threads)
torch.manual_seed(0)
model = WeatherTranslator(cfg, "fog")
g = torch.Generator().manual_seed(0)
batches = [(torch.rand(cfg.batch_size, 3, 64, 64, generator=g), torch.rand(cfg.batch_size, 3, 64, 64, generator=g))
           for _ in range(8)]
for i in range(warm):
    model.train_step(*batches[i % 8])
t, c = time.time(), time.process_time()
for i in range(steps):
    model.train_step(*batches[i % 8])
n = steps * cfg.batch_size
print(json.dumps({"images_per_s": n / (time.time() - t), "images_per_cpu_s": n / (time.process_time() - c)}))
"""


def run_measured(cmd, env) -> tuple[subprocess.CompletedProcess, float, float]:
    """(completed process, wall seconds, peak RSS MiB) of one child process."""
    t = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(), err.read().decode())
    return done, time.time() - t, usage.ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from argus_tasks.data.fixtures import build_validated_run, generate_small_dataset

    with tempfile.TemporaryDirectory(prefix="argus-bench-tp-") as tmp:
        tmp = Path(tmp)
        generate_small_dataset(tmp / "data")
        env = {**os.environ, "ARGUS_STORE": str(tmp / "store"), "ARGUS_DAG_ID": DAG_ID,
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "ARGUS_MLFLOW_ARTIFACTS": str(tmp / "art"),
               "ARGUS_XCOM_RETURN": str(tmp / "return.json")}
        pipe, bare, rss_p, rss_b, walls, pipe_cpu, bare_cpu = [], [], [], [], [], [], []
        for r in range(args.repeats):
            run_id = f"tp-{uuid.uuid4().hex[:6]}"
            build_validated_run(tmp / "data", tmp / "store", DAG_ID, run_id)
            done, wall, rss = run_measured(
                [sys.executable, "-m", "argus_tasks.cli", "train", "--condition", "fog", "--steps", str(args.steps)],
                {**env, "ARGUS_RUN_ID": run_id})
            if done.returncode != 0:
                raise SystemExit(f"train step failed:\n{done.stderr[-3000:]}")
            result = json.loads((tmp / "return.json").read_text())
            pipe.append(result["images_per_s"])
            pipe_cpu.append(result["images_per_cpu_s"])
            walls.append(wall)
            rss_p.append(rss)
            done, _, rss = run_measured([sys.executable, "-c", BARE, str(args.steps), "0"], env)
            if done.returncode != 0:
                raise SystemExit(f"bare loop failed:\n{done.stderr[-3000:]}")
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            bare.append(measured["images_per_s"])
            bare_cpu.append(measured["images_per_cpu_s"])
            rss_b.append(rss)
            print(f"repeat {r + 1}: pipeline {pipe[-1]:.1f} img/s, {pipe_cpu[-1]:.1f} img/CPU-s (step wall {wall:.1f}s, "
                  f"peak RSS {rss_p[-1]:.0f} MiB) | bare {bare[-1]:.1f} img/s, {bare_cpu[-1]:.1f} img/CPU-s "
                  f"(peak RSS {rss:.0f} MiB)", flush=True)
    p, b = statistics.median(pipe), statistics.median(bare)
    print(f"\ntiny config, batch 8, {args.steps} steps, torch threads {os.environ.get('ARGUS_TORCH_THREADS', '1')}")
    print(f"pipeline train step : {p:7.1f} images/s (median of {len(pipe)}), whole step {statistics.median(walls):.1f}s wall")
    print(f"bare PyTorch loop   : {b:7.1f} images/s")
    print(f"ratio pipeline/bare : {p / b:7.3f}   (target >= 0.9; wall clock, sensitive to co-tenants)")
    pc, bc = statistics.median(pipe_cpu), statistics.median(bare_cpu)
    print(f"per CPU-second      : pipeline {pc:.1f}, bare {bc:.1f} images/CPU-s, ratio {pc / bc:.3f} (target >= 0.9)")
    print(f"peak RSS            : pipeline {max(rss_p):.0f} MiB, bare {max(rss_b):.0f} MiB")


if __name__ == "__main__":
    main()
