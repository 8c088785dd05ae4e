"""Generation throughput: the generate step's inner loop against a bare inference loop, memory, shard size.

* ``bare``: the runner (uint8 NHWC -> uint8 NHWC) called on in-memory batches of the decoded source
  frames in a plain ``for`` loop: no decoding, no blending, no PNG encoding, no hashing, no writes.
* ``step``: :func:`argus_tasks.generation.pipeline.run_shard`, what ``argus-task generate`` runs for a
  shard: decode each source PNG from the run store, the same runner on batches of the same size,
  strength blend, PNG encode, sha256, atomic writes of frame and label, journal and progress. Reads
  and writes overlap the model on the step's I/O threads. Every repeat writes a fresh output key, so
  nothing is reused.

Both use the same frames (procedural clear scenes at 64 and 256 px), the same model object, one torch
thread and batch 16, measured side by side in one process as interleaved (bare, step) pairs,
``--repeats`` times: step / bare is the median of the pairs' ratios (each pair's ratio is printed).
Target: step / bare >= 0.9. On a shared machine the model's own speed varies between runs more than
the step adds, so two noise-robust figures are printed beside it: the share of the step's wall time
spent inside the runner (100% = the step adds nothing on the critical path), and CPU ms per frame
(this process, all threads): the step's I/O threads cost CPU the bare loop does not spend.

**Shard size.** One fresh process per shard size (16 / 64 / 256 frames at 64 px, and 64 at 256 px)
runs one shard as a pod would: interpreter start, imports, model build, the loop. Printed: the loop's
frames/s, the model load, the process wall time and the end-to-end frames/s (what a mapped task gets),
and memory: peak RSS before and after the shard (``ru_maxrss``) and the tracemalloc peak of the loop
(Python and numpy buffers; torch's own allocator is not traced, the RSS delta covers it).

**Runners are pluggable** (:data:`RUNNERS`): ``eager`` is an untrained tiny generator run eagerly
(:mod:`argus_tasks.generation.eager`); the exported artifact (``argus_tasks.models.export.load_runner``)
goes in as another entry with the same signature ``(size) -> runner``. Choose with ``--runner``.
Default run: about a minute on 2 cores::

    .venv/bin/python benchmarks/bench_generation.py [--runner eager] [--repeats 3] [--frames-64 128] [--frames-256 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ARGUS_TORCH_THREADS", "1")
BATCH = 16


def eager(size: int):
    from argus_tasks.generation.eager import eager_runner, untrained_generator

    return eager_runner(untrained_generator("fog", seed=0), seed=0)


def exported(size: int):
    """The same untrained generator exported to ONNX (what the DAG's generate runs), through load_runner."""
    from argus_tasks.generation.eager import untrained_generator
    from argus_tasks.models.export import export_onnx, load_runner

    path = Path(tempfile.mkdtemp(prefix="argus-bench-onnx-")) / "generator.onnx"
    export_onnx(untrained_generator("fog", seed=0), path)
    runner = load_runner(str(path), device="cpu", threads=1)
    return lambda frames: runner(frames, 0)


RUNNERS = {"eager": eager, "exported": exported}  # name -> (frame size) -> runner


def make_source(root: Path, size: int, n: int):
    """A run store whose ``data/`` holds ``n`` clear frames of ``size`` px; (RunStore, manifest rows)."""
    from argus_tasks.data.generate import generate_dataset
    from argus_tasks.store import RunStore

    run = RunStore(str(root), "bench_generation", f"px{size}")
    manifest = generate_dataset(run.local_dir("data"), size=size, counts={"clear": {"test": n}}, seed=size,
                                workers=2)
    return run, manifest.to_dict("records")


def decoded(run, rows):
    import numpy as np

    from argus_tasks.generation.pipeline import read_source

    return np.stack([read_source(run, r)[0] for r in rows])


def step_once(run, rows, runner, tag: str, batch: int = BATCH, io_workers: int = 2):
    """One shard through the step's loop into a fresh output key; (wall s, cpu s, stats)."""
    from argus_tasks.generation.pipeline import run_shard
    from argus_tasks.generation.writer import ShardOutputs

    shard = {"shard_id": f"bench-{tag}", "condition": "fog", "index": 0, "shard_sha256": tag}
    key = {"model_name": "bench", "model_version": "0", "config_hash": tag, "config": {"tag": tag}}
    outputs = ShardOutputs(run, shard, key, f"generate/outputs/fog/0/{tag}")
    t, c = time.perf_counter(), time.process_time()
    stats = run_shard(run, rows, runner, outputs, 1.0, batch_size=batch, io_workers=io_workers,
                      progress_every_s=3600)
    return time.perf_counter() - t, time.process_time() - c, stats


def bare_once(frames, runner, batch: int = BATCH):
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, len(frames), batch):
        runner(frames[i:i + batch])
    return time.perf_counter() - t, time.process_time() - c


class Timed:
    """The runner, timing its calls: how much of the step's wall time is the model's."""

    def __init__(self, runner):
        self.runner, self.seconds = runner, 0.0

    def __call__(self, frames):
        t = time.perf_counter()
        try:
            return self.runner(frames)
        finally:
            self.seconds += time.perf_counter() - t


def side_by_side(run, rows, runner, repeats: int) -> dict:
    """Interleaved pairs (bare, step) on the same frames; medians, and the median of the pairs' ratios."""
    frames = decoded(run, rows)
    runner(frames[:BATCH])  # warm-up, shared by both
    bare, step, ratios, model_share = [], [], [], []
    for rep in range(repeats):
        bare.append(bare_once(frames, runner))
        timed = Timed(runner)
        wall, cpu, stats = step_once(run, rows, timed, f"r{rep}")
        assert stats.n_written == len(rows), stats
        step.append((wall, cpu))
        ratios.append(bare[-1][0] / wall)
        model_share.append(timed.seconds / wall)
    n = len(rows)
    return {"frames": n, "bare_fps": n / statistics.median(w for w, _ in bare),
            "step_fps": n / statistics.median(w for w, _ in step), "ratio": statistics.median(ratios),
            "ratios": ratios, "model_share": statistics.median(model_share),
            "bare_cpu_ms": 1000 * statistics.median(c for _, c in bare) / n,
            "step_cpu_ms": 1000 * statistics.median(c for _, c in step) / n}


def rss_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (Linux; ru_maxrss would carry the parent's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


CHILD_ENTRY = "--child"


def child(args) -> None:
    """One shard in a fresh process (what a pod runs): prints a JSON line of timings and memory."""
    import tracemalloc

    started = time.perf_counter()
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.store import RunStore

    set_threads(None)
    run = RunStore(args.store, "bench_generation", f"px{args.size}")
    rows = run.read_dataframe("data/manifest.parquet").to_dict("records")[: args.shard]
    t = time.perf_counter()
    runner = RUNNERS[args.runner](args.size)
    load_s = time.perf_counter() - t
    reset_peak_rss()
    rss_before = rss_mb("VmRSS")
    tracemalloc.start()
    wall, _, stats = step_once(run, rows, runner, f"child-{args.shard}-{os.getpid()}")
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = rss_mb("VmHWM")
    print(json.dumps({"shard": args.shard, "size": args.size, "loop_fps": stats.n_written / wall, "load_s": load_s,
                      "in_process_s": time.perf_counter() - started, "rss_before_mb": rss_before,
                      "rss_peak_mb": rss_peak, "traced_peak_mb": traced_peak / 2**20}))


def shard_in_child(store: Path, size: int, shard: int, runner: str) -> dict:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, CHILD_ENTRY, "--store", str(store), "--size", str(size),
                          "--shard", str(shard), "--runner", runner], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    doc["process_wall_s"] = time.perf_counter() - t
    doc["end_to_end_fps"] = shard / doc["process_wall_s"]
    return doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", choices=sorted(RUNNERS), default="eager")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frames-64", type=int, default=128)
    p.add_argument("--frames-256", type=int, default=32)
    p.add_argument("--shard-sizes", default="16,64,256", help="shard sizes of the per-process sweep at 64 px")
    p.add_argument(CHILD_ENTRY, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--shard", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0

    from argus_tasks.models.runtime import set_threads

    threads = set_threads(None)
    load0 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    sweep = [int(s) for s in args.shard_sizes.split(",") if s.strip()]
    root = Path(tempfile.mkdtemp(prefix="argus-bench-gen-"))
    try:
        t0 = time.perf_counter()
        sources = {64: make_source(root, 64, max(args.frames_64, *sweep)), 256: make_source(root, 256, args.frames_256)}
        print(f"rendered the source frames in {time.perf_counter() - t0:.1f}s; runner {args.runner}, {threads} torch "
              f"thread(s), batch {BATCH}, {args.repeats} repeats (median)", flush=True)
        runner = RUNNERS[args.runner]
        rows_out = []
        for size, (run, rows) in sources.items():
            n = args.frames_64 if size == 64 else args.frames_256
            rows_out.append((size, side_by_side(run, rows[:n], runner(size), args.repeats)))
        children = [shard_in_child(root, 64, s, args.runner) for s in sweep]
        children.append(shard_in_child(root, 256, min(64, args.frames_256), args.runner))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nstep loop vs bare inference loop ({args.runner} runner, CPU, same frames and model, side by side)\n")
    print("| size | frames | bare frames/s | step frames/s | step / bare (pairs) | model share of step wall | "
          "bare CPU ms/frame | step CPU ms/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for size, r in rows_out:
        pairs = ", ".join(f"{x:.2f}" for x in r["ratios"])
        print(f"| {size} px | {r['frames']} | {r['bare_fps']:.1f} | {r['step_fps']:.1f} | {r['ratio']:.2f} ({pairs}) | "
              f"{100 * r['model_share']:.0f}% | {r['bare_cpu_ms']:.1f} | {r['step_cpu_ms']:.1f} |")
    print("\none shard per fresh process (as a mapped task runs it)\n")
    print("| size | shard frames | loop frames/s | model load s | process wall s | end-to-end frames/s | "
          "RSS before MB | RSS peak MB | RSS growth MB | tracemalloc peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in children:
        print(f"| {c['size']} px | {c['shard']} | {c['loop_fps']:.1f} | {c['load_s']:.2f} | {c['process_wall_s']:.1f} | "
              f"{c['end_to_end_fps']:.1f} | {c['rss_before_mb']:.0f} | {c['rss_peak_mb']:.0f} | "
              f"{c['rss_peak_mb'] - c['rss_before_mb']:.0f} | {c['traced_peak_mb']:.1f} |")
    worst = min(r["ratio"] for _, r in rows_out)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nstep / bare, worst size: {worst:.2f} (target >= 0.9); {os.cpu_count()} CPUs, load average now {load} "
          f"(at the start: {load0})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
