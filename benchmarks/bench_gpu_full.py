"""The ``full`` config on one GPU: training images/s of the pipeline's loop against a bare loop, and GPU use.

* ``pipeline``: :func:`argus_tasks.models.trainer.train_translator` as the train step runs it (uint8
  frames in host memory, the random-crop batch sampler, host-to-device copies, bf16 autocast,
  channels_last, progress logging);
* ``bare``: the same ``WeatherTranslator.train_step`` on batches already on the GPU.

GPU utilisation and memory are sampled with ``nvidia-smi`` every 200 ms during the pipeline's timed
steps. Needs a CUDA GPU and torch; nothing else of the project (run from the repo root)::

    PYTHONPATH=tasks python3 benchmarks/bench_gpu_full.py [--steps 60] [--warmup 10] [--frames 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch


def sample_gpu() -> subprocess.Popen:
    return subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                             "-lms", "200"], stdout=subprocess.PIPE, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--frames", type=int, default=256, help="frames per side held in host memory")
    ap.add_argument("--size", type=int, default=288, help="stored frame size; the full config crops 256 px")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu_full needs a CUDA GPU")
    from argus_tasks.models.config import load_config, parse_overrides
    from argus_tasks.models.generator import WeatherTranslator
    from argus_tasks.models.trainer import train_translator

    torch.backends.cudnn.benchmark = True
    cfg = load_config("full", {"log_every_steps": 10**6, "checkpoint_every_s": 1e9, **parse_overrides(args.overrides)})
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    clear = torch.randint(0, 256, (args.frames, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    adverse = torch.randint(0, 256, (args.frames, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    model = WeatherTranslator(cfg, "fog", dev)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | full config: {cfg.image_size} px crops, "
          f"batch {cfg.batch_size}, ngf {cfg.ngf}, {cfg.n_blocks} blocks, bf16 {cfg.amp_bf16}, channels_last "
          f"{cfg.channels_last} | generator {model.n_params['generator'] / 1e6:.2f} M params", flush=True)

    # pipeline: warm-up, then the timed steps with nvidia-smi sampling
    train_translator(model, clear, adverse, steps=args.warmup, seed=0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    smi = sample_gpu()
    t = time.perf_counter()
    out = train_translator(model, clear, adverse, steps=args.steps, seed=0)  # no checkpoints: counts from 0
    torch.cuda.synchronize()
    pipe_s = time.perf_counter() - t
    smi.terminate()
    samples = [line.split(",") for line in smi.communicate()[0].strip().splitlines() if "," in line]
    util = [float(u) for u, _ in samples]
    mem = [float(m) for _, m in samples]
    pipe = out.steps * cfg.batch_size / pipe_s
    peak = torch.cuda.max_memory_allocated() / 2**30

    # bare: the same steps on batches already on the GPU
    batches = [(torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=dev),
                torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=dev)) for _ in range(4)]
    for i in range(args.warmup):
        model.train_step(*batches[i % 4])
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(args.steps):
        model.train_step(*batches[i % 4])
    torch.cuda.synchronize()
    bare = args.steps * cfg.batch_size / (time.perf_counter() - t)

    result = {"device": torch.cuda.get_device_name(), "pipeline_images_per_s": round(pipe, 1),
              "bare_images_per_s": round(bare, 1), "ratio": round(pipe / bare, 3),
              "gpu_util_mean_pct": round(statistics.mean(util), 1) if util else None,
              "gpu_util_median_pct": statistics.median(util) if util else None,
              "gpu_mem_used_max_mib": max(mem) if mem else None, "torch_peak_allocated_gib": round(peak, 2),
              "steps": args.steps, "batch": cfg.batch_size, "crop": cfg.image_size}
    print(f"pipeline loop : {pipe:8.1f} images/s ({args.steps} steps after {args.warmup} warm-up)")
    print(f"bare loop     : {bare:8.1f} images/s")
    print(f"ratio         : {pipe / bare:8.3f}")
    if util:
        print(f"GPU util      : mean {statistics.mean(util):.0f}%, median {statistics.median(util):.0f}% "
              f"({len(util)} samples); memory used up to {max(mem):.0f} MiB; torch peak {peak:.2f} GiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
