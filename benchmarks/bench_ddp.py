"""Data-parallel scaling on the CPU: 1 rank against 2 ranks (gloo) of the train loop, side by side.

Each measurement is a fresh ``torchrun --standalone --nproc-per-node=K`` of this script's worker: the
tiny config (64 px, batch 8 *per rank*), random uint8 frames in memory, ``train_translator`` as the train
step runs it (DDP-wrapped G and D, projector grads averaged, per-rank frame shards, the per-step
agreement collective), ``--warmup`` steps, then ``--steps`` timed steps; one torch thread per rank.
K=1 and K=2 are interleaved ``--repeats`` times and the medians compared:

* images/s of all ranks (wall) and per rank; scaling efficiency = images/s(2) / (2 x images/s(1));
* images per CPU-second (the ranks' own CPU time): what 2 ranks cost beyond 1 (gloo all-reduce, the
  duplicated work of small tensors), independent of other tenants.

Caveat: this machine has 2 CPU cores, shared with other work. Two ranks take both cores (and contend with
the launcher and anything else running), so the wall figure is a floor, not what 2 GPUs would give; the
GPU figure is ``bench_gpu_ddp.py``'s. Run it niced::

    nice -n 10 .venv/bin/python benchmarks/bench_ddp.py [--steps 60] [--warmup 5] [--repeats 2]
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    """One rank: train the tiny translator on random frames, write this rank's figures to --out."""
    import torch

    from argus_tasks.models import ddp
    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import WeatherTranslator
    from argus_tasks.models.trainer import train_translator

    rank, world, device = ddp.setup()
    torch.set_num_threads(1)
    cfg = load_config("tiny", {"log_every_steps": 10**6, "checkpoint_every_s": 1e9})
    g = torch.Generator().manual_seed(0)
    clear = torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8, generator=g)
    adverse = torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    model = WeatherTranslator(cfg, "fog", device)
    if world > 1:
        model.wrap_ddp(None)
    train_translator(model, clear, adverse, steps=args.warmup, rank=rank)
    cpu = time.process_time()
    out = train_translator(model, clear, adverse, steps=args.steps, rank=rank)
    figures = {"rank": rank, "world": world, "images_per_s": out.images_per_s, "seconds": out.train_seconds,
               "cpu_seconds": time.process_time() - cpu, "images": out.images}
    Path(f"{args.out}.{rank}").write_text(json.dumps(figures))
    ddp.teardown()


def measure(ranks: int, steps: int, warmup: int, tmp: Path) -> dict:
    out = tmp / f"r{ranks}-{time.time_ns()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tasks"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           __file__, "--worker", "--steps", str(steps), "--warmup", str(warmup), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{ranks}-rank run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    per_rank = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(ranks)]
    images = sum(r["images"] for r in per_rank)
    return {"images_per_s": per_rank[0]["images_per_s"],  # all ranks, from rank 0's loop time
            "images_per_rank_s": per_rank[0]["images_per_s"] / ranks,
            "images_per_cpu_s": images / sum(r["cpu_seconds"] for r in per_rank)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for i in range(args.repeats):
            for ranks in ((1, 2) if i % 2 == 0 else (2, 1)):  # interleaved, alternating order
                runs[ranks].append(measure(ranks, args.steps, args.warmup, Path(tmp)))
                print(f"repeat {i + 1}: {ranks} rank(s): {runs[ranks][-1]}", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    eff = med[2]["images_per_s"] / (2 * med[1]["images_per_s"])
    print(f"\ntiny config, batch 8 per rank, {args.steps} timed steps after {args.warmup}, one thread per rank, "
          f"{os.cpu_count()} CPU cores (shared), medians of {args.repeats}")
    print("| ranks | images/s (all ranks) | images/s per rank | images per CPU-second |\n|---:|---:|---:|---:|")
    for k in (1, 2):
        print(f"| {k} | {med[k]['images_per_s']:.1f} | {med[k]['images_per_rank_s']:.1f} | "
              f"{med[k]['images_per_cpu_s']:.1f} |")
    print(f"scaling efficiency (2 ranks vs 2x 1 rank, wall): {eff:.2f}")
    print(json.dumps({"one_rank": med[1], "two_ranks": med[2], "scaling_efficiency": round(eff, 3),
                      "cpu_cores": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
