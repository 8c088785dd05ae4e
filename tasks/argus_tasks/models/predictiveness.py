"""Downstream predictiveness: does a generated condition rank classes the way the real condition does?

An ADAS team tests a perception model on generated fog to learn where it will fail in real fog.
That works when the generated frames are hard for the same classes as real fog is: the judge's
per-class IoU on the generated frames (against the source labels) and on the real frames of the
condition (against their labels) should be ordered alike. The figure is Spearman's rank
correlation between the two per-class IoU vectors, over the classes present on both sides, with a
bootstrap interval that redraws whole sequences (drives), each side on its own (the two sides are
different frames), as the rest of the evaluation does.

Reported, not gated. Pure numpy; :func:`class_rank_correlation` takes the per-frame confusion
records that evaluate writes (and a benchmark has from ``evaluate_candidate``).
"""

from __future__ import annotations

import numpy as np

from argus_tasks.models.metrics import cluster_index, cluster_sums, iou_from_confusion

MIN_CLASSES = 3  # a rank correlation over two classes is +1 or -1 and says nothing


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties get their average rank."""
    order = np.argsort(x, axis=-1, kind="stable")
    ranks = np.empty_like(x, dtype=np.float64)
    np.put_along_axis(ranks, order, np.arange(x.shape[-1], dtype=np.float64)[None].repeat(len(x), 0), axis=-1)
    for row in range(len(x)):  # few classes: average the ties row by row
        values = x[row]
        for v in np.unique(values):
            tied = values == v
            if tied.sum() > 1:
                ranks[row, tied] = ranks[row, tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (B, K) arrays (NaN where a side has no spread)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    den = np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / den, np.nan)


def _clusters(seq, n: int) -> tuple[np.ndarray, int, str]:
    if seq is None:
        return np.arange(n, dtype=np.int64), n, "frames"
    inv, s = cluster_index(np.asarray(seq))
    return inv, s, "sequences"


def class_rank_correlation(gen_conf: np.ndarray, real_conf: np.ndarray, gen_seq=None, real_seq=None,
                           class_names: tuple[str, ...] = (), n_boot: int = 1000, seed: int = 0,
                           confidence: float = 0.95) -> dict:
    """Spearman rho of per-class IoU, generated vs real, with its bootstrap CI by sequence.

    ``gen_conf`` (N, C, C): the judge on generated frames against the source labels; ``real_conf``
    (M, C, C): the judge on the real condition frames against their labels. Returns
    ``{"spearman", "lo", "hi", "n_classes", "classes", "iou_generated", "iou_real", "resampled", "n_boot"}``;
    NaN figures when fewer than :data:`MIN_CLASSES` classes are present on both sides.
    """
    gen_conf, real_conf = np.asarray(gen_conf, np.float64), np.asarray(real_conf, np.float64)
    if gen_conf.ndim != 3 or real_conf.ndim != 3 or gen_conf.shape[1:] != real_conf.shape[1:]:
        raise ValueError(f"confusion records of shapes {gen_conf.shape} and {real_conf.shape} do not match")
    c = gen_conf.shape[1]
    names = tuple(class_names) or tuple(str(k) for k in range(c))
    iou_g, iou_r = iou_from_confusion(gen_conf.sum(0)), iou_from_confusion(real_conf.sum(0))
    both = np.isfinite(iou_g) & np.isfinite(iou_r)
    out = {"classes": [names[k] for k in range(c) if both[k]], "n_classes": int(both.sum()),
           "iou_generated": {names[k]: float(iou_g[k]) for k in range(c) if both[k]},
           "iou_real": {names[k]: float(iou_r[k]) for k in range(c) if both[k]}}
    nan = {"spearman": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_boot": 0}
    if both.sum() < MIN_CLASSES:
        return {**out, **nan, "note": f"only {int(both.sum())} classes present on both sides"}
    out["spearman"] = float(spearman(iou_g[both], iou_r[both])[0])
    (ig, sg, ug), (ir, sr, ur) = _clusters(gen_seq, len(gen_conf)), _clusters(real_seq, len(real_conf))
    out["resampled"] = {"source": ug, "real": ur}
    if sg < 2 or sr < 2 or n_boot <= 0:
        return {**out, "lo": float("nan"), "hi": float("nan"), "n_boot": 0}
    pg = cluster_sums(gen_conf.reshape(len(gen_conf), c * c), ig, sg)
    pr = cluster_sums(real_conf.reshape(len(real_conf), c * c), ir, sr)
    rng = np.random.default_rng(seed)

    def draw(s):
        picks = rng.integers(0, s, (n_boot, s))
        return np.stack([np.bincount(row, minlength=s) for row in picks]).astype(np.float64)

    wg, wr = draw(sg), draw(sr)
    bg = iou_from_confusion((wg @ pg).reshape(-1, c, c))[:, both]
    br = iou_from_confusion((wr @ pr).reshape(-1, c, c))[:, both]
    keep = np.isfinite(bg).all(1) & np.isfinite(br).all(1)  # a draw that lost a class is left out
    rho = spearman(bg[keep], br[keep]) if keep.any() else np.zeros(0)
    rho = rho[np.isfinite(rho)]
    if rho.size == 0:
        return {**out, "lo": float("nan"), "hi": float("nan"), "n_boot": 0}
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(rho, [alpha, 1 - alpha])
    return {**out, "lo": float(lo), "hi": float(hi), "n_boot": int(rho.size)}


def metrics_of(result: dict) -> dict[str, float]:
    """The flat metrics of a :func:`class_rank_correlation` result (for MLflow and the step's result)."""
    return {"class_rank_spearman": result["spearman"], "class_rank_spearman_lo": result["lo"],
            "class_rank_spearman_hi": result["hi"]}


def format_figure(result: dict) -> str:
    """``+0.81 [+0.62, +0.95]`` (or ``-`` when there is no figure): for reports and benchmark tables."""
    rho = result.get("spearman")
    if rho is None or not np.isfinite(rho):
        return "-"
    lo, hi = result.get("lo"), result.get("hi")
    ci = f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None and np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{rho:+.2f}{ci}"
