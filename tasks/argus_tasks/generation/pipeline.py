"""The inner loop of ``generate``: read source frames, run the model, blend, write; with progress.

:func:`run_shard` takes the shard's manifest rows, a **runner** (any callable ``uint8 (N,H,W,3) ->
uint8 (N,H,W,3)``: the exported model of :func:`argus_tasks.models.export.load_runner`, or an eager
generator in tests and benchmarks) and the shard's :class:`~argus_tasks.generation.writer.ShardOutputs`.
Frames an earlier try already wrote (and whose files still match) are kept; the rest go through
the model in batches of frames of one size.

Reading the next batch and writing the last one run on ``io_workers`` threads while the model works
on the current batch (PNG decoding and encoding release the GIL, and so does the model), so the
step's throughput stays close to the bare model loop. Every ``progress_every_s`` seconds the log
gets frames done/total, frames/s and the ETA, and the shard's journal is saved, so a try killed
mid-way is resumed from there by the next one. A try that fails or is stopped (SIGTERM) first
finishes writing the frames it has generated and saves the journal on its way out.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from argus_tasks.contract import PermanentStepError
from argus_tasks.generation.writer import ShardOutputs, blend, sha256

log = logging.getLogger("argus.generate")


@dataclass
class ShardStats:
    n_frames: int
    n_written: int
    n_reused: int
    seconds: float  # wall time of the model loop (reads, model, writes)

    @property
    def frames_per_s(self) -> float:
        return round(self.n_written / self.seconds, 3) if self.n_written and self.seconds > 0 else 0.0


def read_source(run, row) -> tuple[np.ndarray, bytes]:
    """(RGB uint8 HxWx3, label bytes) of a manifest row of the run's ``data/``; PermanentStepError when broken."""
    from PIL import Image

    fid = str(row["frame_id"])
    frame_rel, label_rel = f"data/{row['frame_path']}", f"data/{row['label_path']}"
    try:
        path = Path(run.localize(frame_rel))
        with Image.open(path) as im:
            frame = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # missing, truncated, not an image: the frame is bad, a retry cannot help
        raise PermanentStepError(f"source frame {fid} ({run.url(frame_rel)}) does not decode: "
                                 f"{type(exc).__name__}: {exc}. Fix or drop the frame in the dataset (a new "
                                 "revision) and rerun the generation") from exc
    try:
        label = Path(run.localize(label_rel)).read_bytes()
    except OSError as exc:
        raise PermanentStepError(f"label of source frame {fid} ({run.url(label_rel)}) cannot be read: {exc}") from exc
    want = row.get("label_sha256")
    if want and sha256(label) != want:
        raise PermanentStepError(f"label of source frame {fid} ({run.url(label_rel)}) does not match its manifest "
                                 f"hash {str(want)[:12]}: the pulled data changed; rerun pull and validate")
    return frame, label


def _batches(rows: list[dict], batch_size: int) -> list[list[dict]]:
    """Consecutive frames of one size, at most ``batch_size`` each (a batch is one array)."""
    out: list[list[dict]] = []
    for row in rows:
        size = (row.get("width"), row.get("height"))
        if out and len(out[-1]) < batch_size and (out[-1][0].get("width"), out[-1][0].get("height")) == size:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def _stack(run, batch: list[dict]):
    read = [read_source(run, r) for r in batch]
    shapes = {f.shape for f, _ in read}
    if len(shapes) > 1:
        sizes = {str(r["frame_id"]): f.shape[:2] for r, (f, _) in zip(batch, read, strict=True)}
        raise PermanentStepError(f"source frames of one size in the manifest decode to different sizes: {sizes}; "
                                 "the manifest's width/height are wrong: rerun validate")
    return np.stack([f for f, _ in read]), [lab for _, lab in read]


def _generate(runner, src: np.ndarray, batch: list[dict]) -> np.ndarray:
    """``runner(frames)``, or ``runner(frames, frame_ids)`` for a runner that seeds each frame by its id."""
    if getattr(runner, "takes_frame_ids", False):
        out = np.asarray(runner(src, [str(r["frame_id"]) for r in batch]))
    else:
        out = np.asarray(runner(src))
    if out.shape != src.shape or out.dtype != np.uint8:
        raise PermanentStepError(f"the model returned {out.dtype} {tuple(out.shape)} for a uint8 {tuple(src.shape)} "
                                 f"batch (frames {batch[0]['frame_id']} ..): the exported artifact breaks the "
                                 "uint8 NHWC in / same-size out contract; re-export the model")
    return out


class _Progress:
    def __init__(self, shard_id: str, total: int, reused: int, every_s: float):
        self.shard_id, self.total, self.reused, self.every_s = shard_id, total, reused, every_s
        self.start = self.last = time.perf_counter()
        self.written = 0

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.every_s

    def report(self) -> None:
        now = time.perf_counter()
        self.last = now
        rate = self.written / max(now - self.start, 1e-9)
        done = self.reused + self.written
        left = self.total - done
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        log.info("generate %s: %d/%d frames (%.0f%%; %d kept from an earlier try), %.2f frames/s, ETA %s",
                 self.shard_id, done, self.total, 100.0 * done / max(self.total, 1), self.reused, rate, eta)


def run_shard(run, rows: list[dict], runner, outputs: ShardOutputs, strength: float, batch_size: int = 16,
              io_workers: int = 2, progress_every_s: float = 5.0) -> ShardStats:
    """Generate every frame of ``rows`` not kept from an earlier try (see the module docstring)."""
    frame_ids = [str(r["frame_id"]) for r in rows]
    todo = [r for r in rows if not outputs.keep(str(r["frame_id"]), r.get("frame_sha256"))]
    n_reused = len(rows) - len(todo)
    if n_reused:
        log.info("generate %s: %d of %d frames kept from an earlier try (files match their recorded hashes)",
                 outputs.shard["shard_id"], n_reused, len(rows))
    progress = _Progress(outputs.shard["shard_id"], len(rows), n_reused, progress_every_s)
    batches = _batches(todo, max(1, batch_size))
    pool = ThreadPoolExecutor(max(1, io_workers), thread_name_prefix="argus-gen-io")
    pending: deque = deque()  # (batch rows, [futures]) written in the background

    def settle(block: bool) -> None:
        while pending and (block or all(f.done() for f in pending[0][1])):
            for f in pending.popleft()[1]:
                entry = f.result()  # re-raises a failed write here
                outputs.done[entry["frame_id"]] = entry
                progress.written += 1
            if progress.due():
                outputs.save_journal(frame_ids)
                progress.report()

    nxt = None
    try:
        nxt = pool.submit(_stack, run, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            src, labels = nxt.result()
            nxt = pool.submit(_stack, run, batches[i + 1]) if i + 1 < len(batches) else None
            out = blend(src, _generate(runner, src, batch), strength)
            pending.append((batch, [pool.submit(outputs.write_frame, str(r["frame_id"]), out[j], labels[j],
                                                r.get("frame_sha256")) for j, r in enumerate(batch)]))
            while len(pending) > 2:  # bound the frames held in memory while writes catch up
                for f in pending[0][1]:
                    f.result()
                settle(block=False)
            settle(block=False)
        settle(block=True)
    except BaseException:
        if nxt is not None:
            nxt.cancel()
        pool.shutdown(wait=True)  # the frames already generated are written (a few batches at most)
        for _, futures in pending:  # and count as done
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is None:
                    outputs.done[f.result()["frame_id"]] = f.result()
                    progress.written += 1
        if progress.written:
            try:  # keep what was finished for the next try
                outputs.save_journal(frame_ids)
            except Exception as exc:  # the store may be what failed
                log.warning("could not save the journal of %s: %s", outputs.shard["shard_id"], exc)
        raise
    pool.shutdown(wait=True)
    seconds = time.perf_counter() - progress.start
    if todo:
        progress.report()
    return ShardStats(len(rows), progress.written, n_reused, seconds)
