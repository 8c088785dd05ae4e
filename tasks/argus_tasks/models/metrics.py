"""Evaluation metrics in plain numpy (so the promotion decision needs no torch).

* per-frame confusion counts, IoU from (summed) confusion counts;
* the class-wise realism gap ``mean_k |IoU_k(generated) - IoU_k(real adverse)|`` over the classes
  present in both sets, and the aggregate gap ``|mIoU(generated) - mIoU(real)|``;
* KID: unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged
  over random subsets;
* sanity gates of a generator's output.
"""

from __future__ import annotations

import math

import numpy as np

IGNORE_ID = 255


def confusion_per_frame(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C, C) int64 counts; rows = ground truth, columns = prediction; ignore id skipped."""
    pred = np.asarray(pred).reshape(pred.shape[0], -1).astype(np.int64)
    label = np.asarray(label).reshape(label.shape[0], -1).astype(np.int64)
    out = np.zeros((pred.shape[0], num_classes, num_classes), dtype=np.int64)
    for i in range(pred.shape[0]):
        keep = label[i] < num_classes
        idx = label[i][keep] * num_classes + pred[i][keep]
        out[i] = np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return out


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU from a (..., C, C) confusion matrix; NaN where the class is absent from the truth."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    gt = conf.sum(axis=-1)
    pr = conf.sum(axis=-2)
    union = gt + pr - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    return np.where(gt > 0, iou, np.nan)


def mean_iou(conf: np.ndarray) -> float:
    iou = iou_from_confusion(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def classwise_gap_from_iou(iou_gen: np.ndarray, iou_real: np.ndarray) -> np.ndarray:
    """Gap over the last axis, classes present in both (NaN-aware); works on (B, C) batches."""
    diff = np.abs(iou_gen - iou_real)
    present = np.isfinite(diff)
    with np.errstate(invalid="ignore"):
        return np.where(present.any(-1), np.nansum(diff, -1) / np.maximum(present.sum(-1), 1), np.nan)


def realism_gaps(gen_conf: np.ndarray, real_conf: np.ndarray) -> dict[str, object]:
    """Class-wise (primary) and aggregate (secondary) realism gaps from per-frame confusions."""
    iou_g = iou_from_confusion(np.asarray(gen_conf).sum(0))
    iou_r = iou_from_confusion(np.asarray(real_conf).sum(0))
    both = np.isfinite(iou_g) & np.isfinite(iou_r)
    return {
        "classwise_gap": float(classwise_gap_from_iou(iou_g, iou_r)),
        "aggregate_gap": float(abs(np.nanmean(iou_g[both]) - np.nanmean(iou_r[both]))) if both.any() else float("nan"),
        "iou_generated": iou_g,
        "iou_real": iou_r,
    }


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a.shape[1]
    return (a @ b.T / d + 1.0) ** 3


def kid(feat_a: np.ndarray, feat_b: np.ndarray, n_subsets: int = 50, subset_size: int = 100,
        seed: int = 0) -> dict[str, float]:
    """Kernel Inception Distance (in any feature space): mean and std of unbiased MMD^2 over subsets."""
    a = np.asarray(feat_a, dtype=np.float64)
    b = np.asarray(feat_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two (n, d) feature arrays of the same d, got {a.shape} and {b.shape}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        return {"kid": float("nan"), "kid_std": float("nan")}
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals.append(off - 2.0 * kxy.mean())
    vals = np.asarray(vals)
    return {"kid": float(vals.mean()), "kid_std": float(vals.std())}


def sanity_gates(generated: np.ndarray, source: np.ndarray, gen_feat: np.ndarray, real_feat: np.ndarray,
                 min_change: float = 0.01, min_variance_ratio: float = 0.5) -> dict[str, object]:
    """Gates a generator must pass before any comparison counts.

    * ``finite_in_range``: every value finite and within [0, 1];
    * ``differs_from_input``: mean absolute change of at least ``min_change``;
    * ``no_collapse``: total feature variance of the generated frames at least
      ``min_variance_ratio`` times that of the real adverse frames.
    """
    gen = np.asarray(generated, dtype=np.float32)
    finite = bool(np.isfinite(gen).all())
    in_range = finite and float(gen.min(initial=0.0)) >= -1e-4 and float(gen.max(initial=1.0)) <= 1 + 1e-4
    change = float(np.abs(gen - np.asarray(source, dtype=np.float32)).mean()) if finite else float("nan")
    var_gen = float(np.asarray(gen_feat, dtype=np.float64).var(0).sum())
    var_real = float(np.asarray(real_feat, dtype=np.float64).var(0).sum())
    ratio = var_gen / var_real if var_real > 0 else float("nan")
    gates = {
        "finite_in_range": bool(in_range),
        "differs_from_input": bool(finite and change >= min_change),
        "no_collapse": bool(math.isfinite(ratio) and ratio >= min_variance_ratio),
    }
    return {"gates": gates, "passed": all(gates.values()), "mean_abs_change": change,
            "feature_variance_ratio": ratio}
