"""Evaluate a frame translator (learned generator, reference or identity) with the segmenter.

For one candidate on the frozen evaluation frames it produces the metrics (KID, class-wise and
aggregate realism gap, label preservation, sanity gates) and the bootstrap-ready per-frame
records (confusion counts of the segmenter on every generated frame against its source clear
labels, and the encoder features). The real adverse side (predictions, features and the KID
kernel among the real frames) is computed once per condition and shared by every candidate,
which is what makes the comparisons paired.

Frames stay uint8 on the CPU; they go through translation and the segmenter in batches, on
``device`` (a GPU when the step has one), so memory does not grow with the evaluation set. Only
per-frame confusion counts, features and running sanity statistics come back to the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from argus_tasks.models import metrics as M
from argus_tasks.models.segmenter import UNetSegmenter

KID_SUBSETS = 50
KID_SUBSET_SIZE = 100
BATCH_SIZE = 64


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
    samples: torch.Tensor  # a few generated frames (for grids), on the CPU


def to_float(frames_u8: torch.Tensor) -> torch.Tensor:
    return frames_u8.float().div(255.0)


def _device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def _segment(segmenter: UNetSegmenter, x: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """(confusion (n, C, C), features (n, D)) of one batch ``x`` in [0, 1] against ``labels`` (CPU)."""
    with torch.inference_mode():
        x = x.to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
        logits, feats = segmenter.forward_with_features(x)
        pred = logits.argmax(1).to(torch.uint8).cpu().numpy()
        feats = feats.float().cpu().numpy()
    mapped = segmenter.label_lut.cpu()[labels.long()].numpy()
    return M.confusion_per_frame(pred, mapped, segmenter.num_classes), feats


def _empty(segmenter: UNetSegmenter) -> tuple[np.ndarray, np.ndarray]:
    c = segmenter.num_classes
    return np.zeros((0, c, c), np.int64), np.zeros((0, segmenter.feature_dim), np.float32)


def real_side(segmenter: UNetSegmenter, frames_u8: torch.Tensor, labels: torch.Tensor, device=None,
              batch_size: int = BATCH_SIZE) -> RealSide:
    dev = _device(device)
    confs, feats = [], []
    for i in range(0, frames_u8.shape[0], batch_size):
        conf, f = _segment(segmenter, to_float(frames_u8[i:i + batch_size]), labels[i:i + batch_size], dev)
        confs.append(conf)
        feats.append(f)
    if not confs:
        return RealSide(*_empty(segmenter))
    return RealSide(conf=np.concatenate(confs), features=np.concatenate(feats).astype(np.float32))


def evaluate_candidate(name: str, translate_fn: Callable[[torch.Tensor], torch.Tensor], segmenter: UNetSegmenter,
                       source_u8: torch.Tensor, source_labels: torch.Tensor, real: RealSide,
                       class_names: tuple[str, ...], seed: int = 0, n_samples: int = 8, device=None,
                       batch_size: int = BATCH_SIZE) -> CandidateRecord:
    """Translate the source frames with ``translate_fn`` batch by batch and measure the result against ``real``.

    ``translate_fn`` gets a float batch in [0, 1] on ``device`` and may return it on any device.
    """
    dev = _device(device)
    confs, feats, samples = [], [], []
    finite, vmin, vmax, abs_change, values = True, float("inf"), float("-inf"), 0.0, 0
    for i in range(0, source_u8.shape[0], batch_size):
        source = to_float(source_u8[i:i + batch_size]).to(dev, non_blocking=True)
        with torch.inference_mode():
            generated = translate_fn(source).float()
        if generated.shape != source.shape:
            raise ValueError(f"{name}: output shape {tuple(generated.shape)} differs from input {tuple(source.shape)}")
        source = source.to(generated.device)
        if finite and bool(torch.isfinite(generated).all()):
            vmin, vmax = min(vmin, float(generated.min())), max(vmax, float(generated.max()))
            abs_change += float((generated - source).abs().sum())
            values += generated.numel()
        else:
            finite = False
        safe = torch.nan_to_num(generated, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
        conf, f = _segment(segmenter, safe, source_labels[i:i + batch_size], dev)
        confs.append(conf)
        feats.append(f)
        if sum(len(s) for s in samples) < n_samples:
            samples.append(safe[:n_samples - sum(len(s) for s in samples)].cpu().clone())
    if confs:
        gen_conf, feats = np.concatenate(confs), np.concatenate(feats).astype(np.float32)
    else:
        gen_conf, feats = _empty(segmenter)
    gaps = M.realism_gaps(gen_conf, real.conf)
    k = M.kid(feats, real.features, n_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed,
              kernel_bb=real.kernel)
    sanity = M.sanity_from_stats(finite, vmin, vmax, abs_change / max(values, 1), feats, real.features)
    miou_generated = M.mean_iou(gen_conf.sum(0))
    label_pres = miou_generated if finite else float("nan")
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
    shape = (0, *source_u8.shape[1:])
    return CandidateRecord(name=name, metrics=metrics, sanity=sanity["gates"], per_class=per_class,
                           gen_conf=gen_conf, features=feats,
                           samples=torch.cat(samples) if samples else torch.zeros(shape))
