"""The training loop of the weather translator: sampling, checkpoints, resume, progress.

It knows nothing about MLflow or manifests: the caller hands it frames as uint8 tensors already
in memory (the whole 64 px demo set is a few MB, so there is no input pipeline to stall the
step), a :class:`CheckpointStore` and an optional ``on_log`` callback for metrics.

SIGTERM (pod eviction, node drain, ``on_kill``) does not lose the work done since the last
checkpoint: while the loop runs, a handler only sets a flag; at the next step boundary the loop
saves a checkpoint and raises :class:`TransientStepError` (exit 75), so the retry resumes from it.

Under DDP (torchrun, :mod:`argus_tasks.models.ddp`) each rank samples its own shard of the frames, the
ranks agree every step on the SIGTERM flag and on the time budget's progress (so they stop at the same
step and follow the same learning-rate schedule), every rank resumes from the same checkpoint, and rank
0 alone writes checkpoints and logs. ``images_per_s`` counts the images of all ranks.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from argus_tasks.contract import TransientStepError
from argus_tasks.models import ddp
from argus_tasks.models.checkpoints import CheckpointStore
from argus_tasks.models.generator import WeatherTranslator

log = logging.getLogger(__name__)


class StopOnSigterm:
    """While active (in the main thread), SIGTERM sets :attr:`requested` instead of ending the process."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - the signal module's signature
        self.requested = True

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False


@dataclass
class TrainOutcome:
    steps: int
    resumed_from: int
    final_losses: dict[str, float]
    images_per_s: float  # all ranks together
    train_seconds: float
    images: int  # images (clear side) trained on by this call, by this rank
    cpu_seconds: float  # process CPU time of the loop: images / cpu_seconds does not depend on co-tenants
    loss_history: list[dict]


class BatchSampler:
    """Random uint8 batches (random crop to ``size``, horizontal flip) from uint8 frames in host memory.

    ``weights`` (one per frame, >= 0) draws frames in proportion to them, with replacement (the
    hard-frame oversampling); None draws uniformly, as ``torch.randint`` always did.
    """

    def __init__(self, frames: torch.Tensor, batch_size: int, size: int, generator: torch.Generator,
                 weights: torch.Tensor | None = None):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (N, 3, H, W), got {tuple(frames.shape)}")
        if frames.shape[0] == 0:
            raise ValueError("no frames to sample from")
        if frames.shape[2] < size or frames.shape[3] < size:
            raise ValueError(f"frames of {tuple(frames.shape[2:])} px are smaller than the {size} px crop")
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
            if weights.shape[0] != frames.shape[0] or not bool(torch.isfinite(weights).all()) \
                    or bool((weights < 0).any()) or float(weights.sum()) <= 0:
                raise ValueError(f"weights must be {frames.shape[0]} finite values >= 0 with a positive sum")
        self.frames, self.batch_size, self.size, self.gen, self.weights = frames, batch_size, size, generator, weights

    def __call__(self) -> torch.Tensor:
        n, _, h, w = self.frames.shape
        if self.weights is None:
            idx = torch.randint(0, n, (self.batch_size,), generator=self.gen)
        else:
            idx = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.gen)
        batch = self.frames[idx]
        if h > self.size or w > self.size:
            top = int(torch.randint(0, h - self.size + 1, (1,), generator=self.gen))
            left = int(torch.randint(0, w - self.size + 1, (1,), generator=self.gen))
            batch = batch[:, :, top:top + self.size, left:left + self.size]
        flip = torch.rand(self.batch_size, generator=self.gen) < 0.5
        # still uint8: the model converts on its device (a quarter of the bytes to copy, no float work on the host)
        return torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "sampler": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_translator(model: WeatherTranslator, clear: torch.Tensor, adverse: torch.Tensor, *,
                     steps: int, checkpoints: CheckpointStore | None = None, seed: int = 0, rank: int = 0,
                     on_log: Callable[[int, dict], None] | None = None,
                     max_seconds: float | None = None, clock: Callable[[], float] = time.time,
                     clear_weights: torch.Tensor | None = None) -> TrainOutcome:
    """Train ``model`` for ``steps`` optimiser steps in total (resuming from the latest checkpoint).

    ``max_seconds`` stops after that much training time measured by ``clock`` (wall time by
    default; the benchmarks pass ``time.process_time`` for CPU budgets), and the learning-rate
    decay then follows whichever of steps or time runs out first. Only rank 0 writes checkpoints
    and logs. ``clear_weights`` oversamples source frames (:class:`BatchSampler`).
    """
    cfg = model.cfg
    world = ddp.world_size()
    torch.manual_seed(seed + rank)
    gen = torch.Generator().manual_seed(seed * 1000 + rank)
    start_step = 0
    if checkpoints is not None:
        state = checkpoints.load_latest()
        if state is not None:
            model.load_state_dict(state["model"])
            start_step = int(state["step"])
            if rank == 0:  # the saved RNG state is rank 0's; other ranks reseed from the step
                _set_rng_state(gen, state["rng"])
            else:
                torch.manual_seed(seed + rank + 7919 * start_step)
                gen.manual_seed(seed * 1000 + rank + 7919 * start_step)
            log.info("resuming from checkpoint at step %d (%s)", start_step, checkpoints.path(start_step))
    if not ddp.same_everywhere(start_step, model.device):
        raise RuntimeError(f"rank {rank} resumed from step {start_step}, another rank from another step: the ranks "
                           "see different checkpoints (is the run store shared by every node?)")
    clear, adverse = ddp.shard(clear, rank, world), ddp.shard(adverse, rank, world)
    if clear_weights is not None:
        clear_weights = ddp.shard(clear_weights, rank, world)  # the same frames as this rank's clear share
    # constant learning rate for the first half, then linear decay to zero (as in CycleGAN/CUT);
    # progress is the fraction of the steps, or of the time budget when that runs out first
    def set_lr(step: int, time_fraction: float) -> None:
        progress = max(step / max(steps, 1), time_fraction)
        factor = 1.0 if progress < 0.5 else max(0.0, 2.0 * (1.0 - progress))
        for opt in (model.opt_g, model.opt_d):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * factor

    sample_clear = BatchSampler(clear, cfg.batch_size, cfg.image_size, gen, weights=clear_weights)
    sample_adverse = BatchSampler(adverse, cfg.batch_size, cfg.image_size, gen)
    model.G.train()
    model.D.train()

    saved = start_step  # the newest step on disk

    def save(step: int) -> None:
        nonlocal saved
        if checkpoints is not None and rank == 0:
            checkpoints.save(step, {"model": model.state_dict(), "rng": _rng_state(gen), "config": cfg.to_dict()})
        saved = step

    history: list[dict] = []
    losses: dict[str, float] = {}
    step = start_step
    started = clock()
    wall_started = last_ckpt = time.time()
    cpu_started = time.process_time()
    done_images = 0
    with StopOnSigterm() as stop:
        while step < steps:
            # one small collective a step: stop together on SIGTERM or at the time budget (the ranks' clocks differ)
            used = (clock() - started) / max_seconds if max_seconds else 0.0
            stop_requested, time_fraction = ddp.agree_max([stop.requested, used], model.device)
            if stop_requested:
                if step > saved:
                    save(step)
                _stopped_for_retry(step, steps, checkpoints, rank)
            if max_seconds is not None and time_fraction >= 1.0:
                log.info("time budget of %.0fs reached at step %d", max_seconds, step)
                break
            set_lr(step, time_fraction)
            losses = model.train_step(sample_clear(), sample_adverse())
            step += 1
            done_images += cfg.batch_size
            ddp.fault_hook(step, rank)
            if rank == 0 and (step % cfg.log_every_steps == 0 or step == steps):
                now = time.time()
                rate = world * done_images / max(now - wall_started, 1e-9)
                eta = (steps - step) * world * cfg.batch_size / max(rate, 1e-9)
                log.info("step %d/%d %s | %.1f images/s | eta %.0fs", step, steps,
                         " ".join(f"{k} {v:.4f}" for k, v in losses.items()), rate, eta)
                record = {"step": step, **losses, "images_per_s": rate}
                history.append(record)
                if on_log is not None:
                    on_log(step, record)
            if (step % cfg.checkpoint_every_steps == 0 or time.time() - last_ckpt >= cfg.checkpoint_every_s) \
                    and step < steps:
                save(step)
                last_ckpt = time.time()
        elapsed = time.time() - wall_started
        if step > saved:
            save(step)
    images_per_s = world * done_images / elapsed if elapsed > 0 else 0.0
    return TrainOutcome(steps=step, resumed_from=start_step, final_losses=losses, images_per_s=images_per_s,
                        train_seconds=elapsed, images=done_images, cpu_seconds=time.process_time() - cpu_started,
                        loss_history=history)


def _stopped_for_retry(step: int, steps: int, checkpoints: CheckpointStore | None, rank: int) -> None:
    """After SIGTERM and the save of ``step``: exit 75 (TransientStepError), so the retry resumes from it."""
    where = checkpoints.path(step) if checkpoints is not None else "(no checkpoint store)"
    if rank == 0:
        log.warning("SIGTERM received: stopped at step %d/%d with checkpoint %s saved; exiting for a retry (75)",
                    step, steps, where)
    raise TransientStepError(
        f"training was stopped by SIGTERM (eviction, node drain or a kill) at step {step}/{steps}; the checkpoint "
        f"{where} holds that step, and the retry resumes from it")
