"""The judge (the reference segmenter): what it trains on, how well it reads each condition, its floors.

A judge that reads only clear frames cannot tell a generator that keeps the scene from one that
smears it: on real snow a clear-only judge scored 0.13 mIoU. So the judge trains on the labelled
frames of the training split of **every** condition (clear and each adverse one, as ACDC and the
demo dataset label them), drawn condition-balanced (each condition the same share of the batches,
however many frames it has), and it is measured per condition on that condition's held-out
(val+test) real frames.

Floors: clear mIoU at least ``min_clear_miou``; every adverse condition that has held-out frames at
least ``min_adverse_ratio`` x the clear mIoU (a judge that reads fog far worse than clear would
blame the generator for the weather). A frame without any labelled pixel (e.g. an ACDC ``_ref``
frame, imported with an all-ignore label) is not used by the judge: it is a generator source only.

Resolution: the judge trains, is floor-checked and judges at one square resolution, recorded with
the model (``image_size``); see docs/resolution.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from argus_tasks.data.schema import CLASSES, CONDITIONS_ALL, IGNORE_ID

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("val", "test")
# v2: clear + labelled adverse frames, condition-balanced; v1 (untagged) judges were trained on clear frames only
RECIPE = "clear+adverse-balanced-v2"


@dataclass(frozen=True)
class JudgeFloors:
    min_clear_miou: float = 0.75
    min_adverse_ratio: float = 0.8  # adverse mIoU >= this x clear mIoU

    def floor(self, condition: str, clear_miou: float) -> float:
        if condition == "clear":
            return self.min_clear_miou
        return self.min_adverse_ratio * clear_miou


def labelled(labels: torch.Tensor, lut: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) bool: whether each (N, H, W) label map has at least one pixel the judge is scored on."""
    mapped = lut[labels.long()] if lut is not None else labels.long()
    return (mapped != IGNORE_ID).flatten(1).any(1)


def training_frames(manifest, root, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(frames uint8, labels, balanced per-frame draw weights, frames per condition) of the judge's training set.

    Every condition's train split; frames without a labelled pixel are left out. The weights give
    each condition an equal share of the draws.
    """
    from argus_tasks.models import frames as F

    xs, ys, ws, counts = [], [], [], {}
    for condition in CONDITIONS_ALL:
        rows = F.select(manifest, condition, TRAIN_SPLITS)
        if len(rows) == 0:
            continue
        x, y = F.load_frames(root, rows, size=size)
        keep = labelled(y)
        if not bool(keep.any()):
            log.info("judge: the %d %s training frames have no labels: not used", len(rows), condition)
            continue
        x, y = x[keep], y[keep]
        counts[condition] = int(len(x))
        xs.append(x)
        ys.append(y)
        ws.append(torch.full((len(x),), 1.0 / len(x), dtype=torch.float64))
    if not xs:
        return (torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros((0, size, size), dtype=torch.uint8),
                torch.zeros(0, dtype=torch.float64), counts)
    return torch.cat(xs), torch.cat(ys), torch.cat(ws), counts


def measure(model, frames: torch.Tensor, labels: torch.Tensor) -> dict:
    """mIoU and per-class IoU of ``model`` on (N,3,H,W) uint8 frames against their labels."""
    from argus_tasks.models import metrics as M
    from argus_tasks.models.segmenter import predict

    pred, _ = predict(model, frames.float() / 255.0)
    conf = M.confusion_per_frame(pred, model.map_labels(labels).numpy(), model.num_classes).sum(0)
    iou = M.iou_from_confusion(conf)
    return {"miou": M.mean_iou(conf), "n_frames": int(len(frames)),
            "per_class_iou": {CLASSES[i]: (None if iou[i] != iou[i] else round(float(iou[i]), 4))
                              for i in range(model.num_classes)}}


def load_eval_sets(manifest, root, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Held-out (val+test) labelled frames of every condition that has some, at ``size``."""
    from argus_tasks.models import frames as F

    out = {}
    for condition in CONDITIONS_ALL:
        rows = F.select(manifest, condition, EVAL_SPLITS)
        if len(rows) == 0:
            continue
        x, y = F.load_frames(root, rows, size=size)
        keep = labelled(y)
        if bool(keep.any()):
            out[condition] = (x[keep], y[keep])
    return out


def measure_conditions(model, eval_sets: dict) -> dict[str, dict]:
    return {c: measure(model, x, y) for c, (x, y) in eval_sets.items()}


def floor_failures(quality: dict[str, dict], floors: JudgeFloors) -> list[str]:
    """Why the judge with per-condition ``quality`` may not judge (empty: it may). Pure; fails closed on NaN."""
    clear = (quality.get("clear") or {}).get("miou")
    if clear is None or not np.isfinite(clear):
        return ["no clear held-out frames with labels: the judge's clear mIoU cannot be measured"]
    out = []
    for condition, q in quality.items():
        miou, floor = q.get("miou"), floors.floor(condition, clear)
        if miou is None or not np.isfinite(miou) or miou < floor:
            rule = (f"floor {floor:.3f}" if condition == "clear"
                    else f"floor {floor:.3f} = {floors.min_adverse_ratio:g} x clear {clear:.3f}")
            out.append(f"{condition} mIoU {miou if miou is None else round(float(miou), 4)} < {rule} "
                       f"on {q.get('n_frames')} held-out frames")
    return out


def floors_table(quality: dict[str, dict], floors: JudgeFloors) -> dict[str, float]:
    clear = float((quality.get("clear") or {}).get("miou", float("nan")))
    return {c: round(floors.floor(c, clear), 4) for c in quality}


def summary(quality: dict[str, dict]) -> str:
    return ", ".join(f"{c} {q['miou']:.3f}" for c, q in quality.items())
