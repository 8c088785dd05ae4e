"""Evaluation metrics in plain numpy (so the promotion decision needs no torch).

* per-frame confusion counts, IoU from (summed) confusion counts;
* the class-wise realism gap ``mean_k |IoU_k(generated) - IoU_k(real adverse)|`` over the classes
  present in both sets, and the aggregate gap ``|mIoU(generated) - mIoU(real)|``;
* KID: unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged
  over random subsets;
* the pieces of a cluster bootstrap (resampling whole sequences): cluster indices, per-cluster
  sums of confusion counts and of kernel values, and MMD^2 for many cluster weightings at once;
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


def cluster_index(ids) -> tuple[np.ndarray, int]:
    """(cluster of every item, in ``0..S-1``, and ``S``) for per-item cluster ids (e.g. sequences)."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64), 0
    _, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    return inv, int(inv.max()) + 1


def cluster_sums(values: np.ndarray, inv: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum of ``values`` (N, ...) over the items of each cluster: (S, ...) float64."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros((n_clusters, *values.shape[1:]), dtype=np.float64)
    np.add.at(out, inv, values)
    return out


def kernel_cluster_sums(a: np.ndarray, inv_a: np.ndarray, sa: int, b: np.ndarray, inv_b: np.ndarray, sb: int,
                        chunk: int = 1024) -> np.ndarray:
    """(Sa, Sb): the sum of ``poly_kernel(a_i, b_j)`` over the items i of each a-cluster and j of each b-cluster.

    Computed in row chunks, so memory stays ``O(chunk * N_b + Sa * Sb)`` however many frames there are.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    onehot_b = np.zeros((b.shape[0], sb), dtype=np.float64)
    onehot_b[np.arange(b.shape[0]), inv_b] = 1.0
    out = np.zeros((sa, sb), dtype=np.float64)
    for i in range(0, a.shape[0], chunk):
        np.add.at(out, inv_a[i:i + chunk], poly_kernel(a[i:i + chunk], b) @ onehot_b)
    return out


class ClusteredSide:
    """One feature set grouped by cluster, ready for MMD^2 under any cluster weighting.

    ``sums[s, t]`` is the kernel summed over the items of clusters s and t, ``diag[s]`` the sum of
    ``k(x_i, x_i)`` over the items of s, ``sizes[s]`` the number of items of s.
    """

    def __init__(self, features: np.ndarray, inv: np.ndarray, n_clusters: int):
        self.features = np.asarray(features, dtype=np.float64)
        if self.features.ndim != 2 or self.features.shape[0] != len(inv):
            raise ValueError(f"features of shape {self.features.shape} do not match {len(inv)} cluster labels")
        self.inv, self.n_clusters = np.asarray(inv), int(n_clusters)
        self.sums = kernel_cluster_sums(self.features, self.inv, self.n_clusters, self.features, self.inv,
                                        self.n_clusters)
        d = self.features.shape[1]
        self_k = ((self.features * self.features).sum(1) / d + 1.0) ** 3
        self.diag = cluster_sums(self_k, self.inv, self.n_clusters)
        self.sizes = np.bincount(self.inv, minlength=self.n_clusters).astype(np.float64)

    def within(self, w: np.ndarray) -> np.ndarray:
        """Mean kernel over the pairs of distinct frames of each weighting ``w`` (B, S) of the clusters.

        A frame drawn twice (its cluster drawn twice) is not paired with itself: the pairs of
        copies of one frame are left out, so ``w = 1`` gives the usual unbiased estimate.
        """
        total = ((w @ self.sums) * w).sum(1)
        same = (w * w) @ self.diag
        n = w @ self.sizes
        pairs = n * n - (w * w) @ self.sizes
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total - same) / pairs


def weighted_mmd2(wx: np.ndarray, x: ClusteredSide, wy: np.ndarray, y: ClusteredSide,
                  cross: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 (the KID statistic) for each row of cluster weightings ``wx`` (B, Sx), ``wy`` (B, Sy).

    ``cross`` is ``kernel_cluster_sums`` between the clusters of x and of y. With all weights 1
    it is the KID of the whole sets (no subsets).
    """
    wx, wy = np.atleast_2d(np.asarray(wx, np.float64)), np.atleast_2d(np.asarray(wy, np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        xy = ((wx @ cross) * wy).sum(1) / ((wx @ x.sizes) * (wy @ y.sizes))
    return x.within(wx) + y.within(wy) - 2.0 * xy


def sanity_from_stats(finite: bool, vmin: float, vmax: float, mean_abs_change: float, gen_feat: np.ndarray,
                      real_feat: np.ndarray, min_change: float = 0.01,
                      min_variance_ratio: float = 0.5) -> dict[str, object]:
    """:func:`sanity_gates` from running statistics of the generated frames (for batched evaluation)."""
    in_range = bool(finite) and vmin >= -1e-4 and vmax <= 1 + 1e-4
    change = float(mean_abs_change) if finite else float("nan")
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
    vmin, vmax = (float(gen.min(initial=0.0)), float(gen.max(initial=1.0))) if finite else (float("nan"),) * 2
    change = float(np.abs(gen - np.asarray(source, dtype=np.float32)).mean()) if finite else float("nan")
    return sanity_from_stats(finite, vmin, vmax, change, gen_feat, real_feat, min_change, min_variance_ratio)
