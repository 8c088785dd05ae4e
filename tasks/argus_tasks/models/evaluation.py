"""Evaluate a frame translator (learned generator, reference or identity) with the segmenter.

For one candidate on the frozen evaluation frames it produces the metrics (KID, class-wise and
aggregate realism gap, label preservation, sanity gates) and the bootstrap-ready per-frame
records (confusion counts of the segmenter on every generated frame against its source clear
labels, and the encoder features). The real adverse side (predictions, features and the KID
kernel among the real frames) is computed once per condition and shared by every candidate,
which is what makes the comparisons paired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from argus_tasks.models import metrics as M
from argus_tasks.models.segmenter import UNetSegmenter, predict

KID_SUBSETS = 50
KID_SUBSET_SIZE = 100


@dataclass
class RealSide:
    conf: np.ndarray  # (M, C, C)
    features: np.ndarray  # (M, D)
    kernel: np.ndarray | None = field(default=None, repr=False)  # (M, M) KID kernel among the real frames

    def __post_init__(self):
        if self.kernel is None:
            self.kernel = M.poly_kernel(self.features, self.features)


@dataclass
class CandidateRecord:
    name: str
    metrics: dict
    sanity: dict
    per_class: dict  # class name -> {iou_generated, iou_real, abs_gap}
    gen_conf: np.ndarray  # (N, C, C)
    features: np.ndarray  # (N, D)
    samples: torch.Tensor  # a few generated frames (for grids)


def to_float(frames_u8: torch.Tensor) -> torch.Tensor:
    return frames_u8.float().div(255.0)


def real_side(segmenter: UNetSegmenter, frames_u8: torch.Tensor, labels: torch.Tensor) -> RealSide:
    pred, feats = predict(segmenter, to_float(frames_u8))
    conf = M.confusion_per_frame(pred, segmenter.map_labels(labels).numpy(), segmenter.num_classes)
    return RealSide(conf=conf, features=feats)


def evaluate_candidate(name: str, translate_fn: Callable[[torch.Tensor], torch.Tensor], segmenter: UNetSegmenter,
                       source_u8: torch.Tensor, source_labels: torch.Tensor, real: RealSide,
                       class_names: tuple[str, ...], seed: int = 0, n_samples: int = 8) -> CandidateRecord:
    """Translate the source frames with ``translate_fn`` and measure the result against ``real``."""
    source = to_float(source_u8)
    generated = translate_fn(source).float()
    if generated.shape != source.shape:
        raise ValueError(f"{name}: output shape {tuple(generated.shape)} differs from input {tuple(source.shape)}")
    finite = torch.isfinite(generated).all()
    safe = torch.nan_to_num(generated, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    pred, feats = predict(segmenter, safe)
    gen_conf = M.confusion_per_frame(pred, segmenter.map_labels(source_labels).numpy(), segmenter.num_classes)
    gaps = M.realism_gaps(gen_conf, real.conf)
    k = M.kid(feats, real.features, n_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed,
              kernel_bb=real.kernel)
    sanity = M.sanity_gates(generated.numpy(), source.numpy(), feats, real.features)
    miou_generated = M.mean_iou(gen_conf.sum(0))
    label_pres = miou_generated if bool(finite) else float("nan")
    metrics = {
        "kid": k["kid"], "kid_std": k["kid_std"],
        "classwise_gap": gaps["classwise_gap"], "aggregate_gap": gaps["aggregate_gap"],
        "label_preservation": label_pres,
        "miou_generated": miou_generated, "miou_real": M.mean_iou(real.conf.sum(0)),
        "mean_abs_change": sanity["mean_abs_change"], "feature_variance_ratio": sanity["feature_variance_ratio"],
        "sanity_passed": float(sanity["passed"]),
    }
    per_class = {}
    for i, cname in enumerate(class_names[: segmenter.num_classes]):
        ig, ir = float(gaps["iou_generated"][i]), float(gaps["iou_real"][i])
        per_class[cname] = {"iou_generated": ig, "iou_real": ir,
                            "abs_gap": abs(ig - ir) if np.isfinite(ig) and np.isfinite(ir) else float("nan")}
    return CandidateRecord(name=name, metrics=metrics, sanity=sanity["gates"], per_class=per_class,
                           gen_conf=gen_conf, features=feats, samples=safe[:n_samples].clone())
