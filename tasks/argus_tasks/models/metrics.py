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
    pred, label = np.asarray(pred), np.asarray(label)
    n, pixels = pred.shape[0], int(np.prod(pred.shape[1:]))
    pred = pred.reshape(n, pixels).astype(np.int64)
    label = label.reshape(n, pixels).astype(np.int64)
    cells = num_classes * num_classes
    keep = label < num_classes
    # one bincount over all frames: frame i's cells are offset by i * C * C
    idx = (np.arange(n, dtype=np.int64)[:, None] * cells + label * num_classes + pred)[keep]
    return np.bincount(idx, minlength=n * cells).reshape(n, num_classes, num_classes)


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


def poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The KID kernel ``(a.b / d + 1)^3`` between every row of ``a`` and every row of ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    k = a @ b.T / a.shape[1] + 1.0
    return k * k * k


def kid(feat_a: np.ndarray, feat_b: np.ndarray, n_subsets: int = 50, subset_size: int = 100,
        seed: int = 0, kernel_bb: np.ndarray | None = None) -> dict[str, float]:
    """Kernel Inception Distance (in any feature space): mean and std of unbiased MMD^2 over subsets.

    Each subset draws ``m = min(subset_size, n_a, n_b)`` rows of each side without replacement;
    its MMD^2 uses the kernel values among those rows. The kernel is evaluated once between all
    rows (three matrix products instead of three per subset); ``kernel_bb`` is
    ``poly_kernel(feat_b, feat_b)`` when the caller already has it (the real side, shared by
    every candidate of an evaluation).
    """
    a = np.asarray(feat_a, dtype=np.float64)
    b = np.asarray(feat_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two (n, d) feature arrays of the same d, got {a.shape} and {b.shape}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        return {"kid": float("nan"), "kid_std": float("nan")}
    if kernel_bb is None:
        kernel_bb = poly_kernel(b, b)
    elif kernel_bb.shape != (b.shape[0], b.shape[0]):
        raise ValueError(f"kernel_bb has shape {kernel_bb.shape}, expected {(b.shape[0], b.shape[0])}")
    kaa, kab = poly_kernel(a, a), poly_kernel(a, b)
    rng = np.random.default_rng(seed)
    vals = np.empty(n_subsets)
    for s in range(n_subsets):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        kxx, kyy = kaa[np.ix_(ia, ia)], kernel_bb[np.ix_(ib, ib)]
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals[s] = off - 2.0 * kab[np.ix_(ia, ib)].mean()
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
