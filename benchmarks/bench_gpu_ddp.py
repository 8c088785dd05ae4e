"""The full config on GPUs: DDP scaling efficiency and model-FLOPs utilisation (MFU), before and after tuning.

``bench_gpu_full.py`` measures one GPU (the pipeline's loop against a bare loop, GPU utilisation). This one
asks two other questions, with the same ``train_translator`` the train step runs:

* **scaling**: images/s per GPU with N GPUs (one torchrun rank each, DDP, batch per rank fixed) against 1;
  efficiency = per-GPU images/s at N / at 1, for N = 1, 2, 4, ... up to the GPUs there are;
* **MFU**: FLOPs per training image, counted once with ``torch.utils.flop_counter.FlopCounterMode`` over
  one whole train step (G forward on clear + identity half, D forward/backward on real + fake, G/projector
  forward/backward: every matmul and convolution, forward and backward), times images/s per GPU, against
  the GPU's dense bf16 peak (table :data:`BF16_PEAK_TFLOPS` by device name; ``--peak-tflops`` for others);
* **variants**: the same measurement with ``--compile`` (``torch.compile`` of G and D; ``--compile-mode
  reduce-overhead`` captures CUDA graphs) and larger batches (``--batches 16,32,64``), so before/after is one
  table.

Each variant and N is a fresh ``torchrun --standalone --nproc-per-node=N`` of this file's worker. Needs CUDA
GPUs and torch, nothing else of the project (run from the repo root)::

    PYTHONPATH=tasks python3 benchmarks/bench_gpu_ddp.py [--gpus 1,2,4,8] [--steps 40] [--warmup 10]
        [--batches 16,32] [--compile] [--compile-mode reduce-overhead]

Without a GPU it says so and exits 0 (``make bench`` goes on); ``--device cpu --config tiny --gpus 1,2``
runs the same code paths on the CPU (gloo) as a smoke test of the script itself, not a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; matched by substring of
# torch.cuda.get_device_name(), most specific first.
BF16_PEAK_TFLOPS = [
    ("GB200", 2500.0), ("B200", 2250.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0),
    ("H100", 989.0), ("GH200", 989.0), ("H800", 989.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
    ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("A30", 165.0), ("RTX 6000 Ada", 364.0),
    ("RTX 4090", 165.0), ("RTX A6000", 155.0), ("MI300X", 1307.0), ("MI250X", 383.0),
]


def peak_tflops(device_name: str) -> float | None:
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def flops_per_image(model, clear, adverse) -> float:
    """Counted FLOPs of one train step (forward and backward of every network) per clear image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.train_step(clear, adverse)
    return counter.get_total_flops() / clear.shape[0]


def worker(args) -> None:
    import torch

    from argus_tasks.models import ddp
    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import WeatherTranslator
    from argus_tasks.models.trainer import train_translator

    rank, world, device = ddp.setup()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(1)
    overrides = {"log_every_steps": 10**6, "checkpoint_every_s": 1e9}
    if args.batch:
        overrides["batch_size"] = args.batch
    cfg = load_config(args.config, overrides)
    size = cfg.image_size + (32 if cfg.random_crop else 0)
    g = torch.Generator().manual_seed(rank)
    clear = torch.randint(0, 256, (args.frames, 3, size, size), dtype=torch.uint8, generator=g)
    adverse = torch.randint(0, 256, (args.frames, 3, size, size), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    model = WeatherTranslator(cfg, "fog", device)
    flops = None
    if rank == 0 and args.count_flops:  # eager, before compile and DDP: the model's own arithmetic
        flops = flops_per_image(model, clear[: cfg.batch_size, :, : cfg.image_size, : cfg.image_size],
                                adverse[: cfg.batch_size, :, : cfg.image_size, : cfg.image_size])
    if world > 1:
        model.wrap_ddp([device.index] if device.type == "cuda" else None)
    if args.compile:  # the modules the train step runs its forwards through (DDP-wrapped under torchrun)
        model.g_train = torch.compile(model.g_train, mode=args.compile_mode)
        model.d_train = torch.compile(model.d_train, mode=args.compile_mode)
    train_translator(model, clear, adverse, steps=args.warmup, rank=rank)
    if device.type == "cuda":
        torch.cuda.synchronize()
    out = train_translator(model, clear, adverse, steps=args.steps, rank=rank)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if rank == 0:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        Path(args.out).write_text(json.dumps({
            "device": name, "world": world, "batch_per_rank": cfg.batch_size, "images_per_s": out.images_per_s,
            "images_per_s_per_gpu": out.images_per_s / world, "flops_per_image": flops,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}))
    ddp.teardown()


def measure(args, gpus: int, batch: int | None, compiled: bool, tmp: Path, count_flops: bool) -> dict:
    out = tmp / f"n{gpus}-b{batch}-c{int(compiled)}-{time.time_ns()}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}", __file__,
           "--worker", "--config", args.config, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--frames", str(args.frames), "--out", str(out), "--compile-mode", args.compile_mode]
    cmd += ["--batch", str(batch)] if batch else []
    cmd += ["--compile"] if compiled else []
    cmd += ["--count-flops"] if count_flops else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tasks"), os.environ.get("PYTHONPATH", "")])}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"{gpus} GPU(s), batch {batch}, compile {compiled}: failed ({proc.returncode})\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", default="", help="GPU counts to measure, e.g. 1,2,4,8 (default: 1 and every power "
                                               "of two up to the GPUs there are)")
    ap.add_argument("--config", default="full")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--frames", type=int, default=128, help="frames per side held in host memory, per rank")
    ap.add_argument("--batches", default="", help="extra per-rank batch sizes to try, e.g. 32,64")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile'd G and D")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (reduce-overhead: CUDA graphs)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_ddp: NOT RUN - no CUDA GPU on this machine (see benchmarks/RESULTS.md); "
              "`--device cpu --config tiny` smoke-tests the script on the CPU")
        return 0
    available = torch.cuda.device_count() if args.device == "cuda" else 2
    counts = [int(n) for n in args.gpus.split(",") if n] or sorted({1, *(2**k for k in range(1, 4)
                                                                      if 2**k <= available)})
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-ddp-") as tmp:
        variants = [(None, False)] + [(int(b), False) for b in args.batches.split(",") if b]
        if args.compile:
            variants += [(b, True) for b, _ in list(variants)]
        base = None
        for batch, compiled in variants:
            for n in counts:
                r = measure(args, n, batch, compiled, Path(tmp), count_flops=(n == counts[0]))
                if n == counts[0]:
                    flops = r["flops_per_image"]
                    one = r["images_per_s_per_gpu"]
                r.update(compiled=compiled, efficiency=r["images_per_s_per_gpu"] / one, flops_per_image=flops)
                peak = args.peak_tflops or peak_tflops(r["device"])
                r["mfu"] = (r["images_per_s_per_gpu"] * flops / (peak * 1e12)) if (peak and flops) else None
                base = base or r
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"\n{rows[0]['device']} | config {args.config} | {args.steps} timed steps after {args.warmup} | "
          f"{base['flops_per_image'] / 1e9:.1f} GFLOP per image (train step, counted)")
    print("| variant | GPUs | batch/GPU | images/s | images/s per GPU | scaling eff. | MFU (bf16) | peak mem GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "n/a"
        print(f"| {'compiled' if r['compiled'] else 'eager'} | {r['world']} | {r['batch_per_rank']} | "
              f"{r['images_per_s']:.1f} | {r['images_per_s_per_gpu']:.1f} | {r['efficiency']:.2f} | {mfu} | {mem} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
