"""The paired cluster bootstrap of the promotion decision (see :mod:`argus_tasks.models.decision`).

Each resample draws whole clusters (sequences: drives) with replacement, separately on the source
side and on the real side, and weights every frame by how often its cluster was drawn. Per-frame
records are summed per cluster once (confusion counts; kernel values per pair of clusters), so a
resample costs one small matrix product whatever the number of frames. Both candidates of a
comparison see the same draws (paired), and the gap and KID comparisons of a pair use the same
draws too (same seed). A side without sequence ids falls back to one cluster per frame, and the
result says so.

Candidates are :class:`argus_tasks.models.decision.Candidate` (only their attributes are read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from argus_tasks.models.metrics import (
    ClusteredSide,
    classwise_gap_from_iou,
    cluster_index,
    cluster_sums,
    iou_from_confusion,
    kernel_cluster_sums,
    weighted_mmd2,
)

if TYPE_CHECKING:  # pragma: no cover - decision imports this module
    from argus_tasks.models.decision import Candidate, Policy

MIN_CLUSTERS = 2  # one drive says nothing about drive-to-drive variation


@dataclass(frozen=True)
class Resampling:
    """The paired draws of one comparison: cluster multiplicities per resample on each side."""

    units: dict  # side -> "sequences" | "frames"
    inv: dict  # side -> cluster of each frame
    n_clusters: dict  # side -> S
    weights: dict  # side -> (B, S) float64 multiplicity of each cluster in each resample

    def describe(self) -> dict:
        out = {"resampled": dict(self.units), "n_clusters": dict(self.n_clusters)}
        flat = [side for side, unit in self.units.items() if unit == "frames"]
        if flat:
            out["note"] = (f"no sequence ids on the {' and '.join(flat)} side: resampled frames as if independent, "
                           "so the interval may be too narrow")
        return out


def _side(name_a: str, seq_a, name_b: str, seq_b, n: int, side: str) -> tuple[np.ndarray, int, str]:
    if seq_a is None and seq_b is None:
        return np.arange(n, dtype=np.int64), n, "frames"
    if seq_a is None or seq_b is None:
        missing = name_a if seq_a is None else name_b
        raise ValueError(f"{side} sequence ids of {missing} are missing while the other has them (not paired)")
    seq_a, seq_b = np.asarray(seq_a), np.asarray(seq_b)
    if seq_a.shape != (n,) or not np.array_equal(seq_a, seq_b):
        raise ValueError(f"{side} sequence ids of {name_a} {seq_a.shape} and {name_b} {seq_b.shape} differ "
                         "(not paired: different evaluation frames)")
    inv, s = cluster_index(seq_a)
    return inv, s, "sequences"


def resampling(a: Candidate, b: Candidate, policy: Policy) -> Resampling:
    """The draws shared by ``a`` and ``b``: whole sequences with replacement, per side, ``policy.n_boot`` times."""
    ga, gb = np.asarray(a.gen_conf), np.asarray(b.gen_conf)
    ra, rb = np.asarray(a.real_conf), np.asarray(b.real_conf)
    if ga.shape != gb.shape or ra.shape != rb.shape:
        raise ValueError(f"records of {a.name} {ga.shape}/{ra.shape} and {b.name} {gb.shape}/{rb.shape} "
                         "are not paired (different evaluation frames)")
    rng = np.random.default_rng(policy.seed)
    units, inv, n_clusters, weights = {}, {}, {}, {}
    for side, n, sa, sb in (("source", ga.shape[0], a.gen_seq, b.gen_seq), ("real", ra.shape[0], a.real_seq, b.real_seq)):
        inv[side], s, units[side] = _side(a.name, sa, b.name, sb, n, side)
        if s < MIN_CLUSTERS:
            unit = units[side][:-1] if s == 1 else units[side]
            raise ValueError(f"the {side} side has only {s} {unit}: a bootstrap cannot estimate the uncertainty; "
                             f"evaluate on at least {MIN_CLUSTERS} drives")
        draws = rng.integers(0, s, (policy.n_boot, s))
        rows = np.arange(policy.n_boot)[:, None] * s
        weights[side] = np.bincount((rows + draws).ravel(), minlength=policy.n_boot * s).reshape(
            policy.n_boot, s).astype(np.float64)
        n_clusters[side] = s
    return Resampling(units, inv, n_clusters, weights)


def _interval(point: float, draws: np.ndarray, policy: Policy) -> dict:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return {"point": point, "lo": float("nan"), "hi": float("nan"), "n_boot": 0}
    alpha = (1.0 - policy.confidence) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return {"point": point, "lo": float(lo), "hi": float(hi), "n_boot": int(draws.size)}


def paired_gap_difference(a: Candidate, b: Candidate, policy: Policy) -> dict:
    """Bootstrap CI of classwise_gap(a) - classwise_gap(b), resampling sequences (or frames) jointly."""
    r = resampling(a, b, policy)
    c = np.asarray(a.gen_conf).shape[1]

    def per_cluster(conf, side):  # (S, C*C): confusion summed over the frames of each cluster
        conf = np.asarray(conf, np.float64)
        return cluster_sums(conf.reshape(len(conf), c * c), r.inv[side], r.n_clusters[side])

    def gaps(cand, w_gen, w_real):
        iou_g = iou_from_confusion((w_gen @ per_cluster(cand.gen_conf, "source")).reshape(-1, c, c))
        iou_r = iou_from_confusion((w_real @ per_cluster(cand.real_conf, "real")).reshape(-1, c, c))
        return classwise_gap_from_iou(iou_g, iou_r)

    ones_g, ones_r = np.ones((1, r.n_clusters["source"])), np.ones((1, r.n_clusters["real"]))
    point = float((gaps(a, ones_g, ones_r) - gaps(b, ones_g, ones_r))[0])
    diff = gaps(a, r.weights["source"], r.weights["real"]) - gaps(b, r.weights["source"], r.weights["real"])
    return {**_interval(point, diff, policy), **r.describe()}


def _features(c: Candidate, attr: str, n: int) -> np.ndarray:
    f = getattr(c, attr)
    what = "generated" if attr == "gen_features" else "real"
    if f is None:
        raise ValueError(f"per-frame segmenter features of the {what} frames of {c.name} are missing")
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != n:
        raise ValueError(f"features of the {what} frames of {c.name} have shape {f.shape}, expected ({n}, D)")
    if not np.isfinite(f).all():
        raise ValueError(f"features of the {what} frames of {c.name} are not all finite")
    return f


def paired_kid_difference(a: Candidate, b: Candidate, policy: Policy) -> dict:
    """Bootstrap CI of KID(a) - KID(b) on the whole sets, with the same draws as the gap comparison."""
    r = resampling(a, b, policy)
    n, m = np.asarray(a.gen_conf).shape[0], np.asarray(a.real_conf).shape[0]
    fa, fb = _features(a, "gen_features", n), _features(b, "gen_features", n)
    ya = _features(a, "real_features", m)
    if b.real_features is not a.real_features and not np.array_equal(ya, _features(b, "real_features", m)):
        raise ValueError(f"real-frame features of {a.name} and {b.name} differ (not paired)")
    if fa.shape[1] != ya.shape[1] or fb.shape[1] != ya.shape[1]:
        raise ValueError(f"feature widths differ: {fa.shape[1]}, {fb.shape[1]} vs real {ya.shape[1]}")
    (ig, sg), (ir, sr) = (r.inv["source"], r.n_clusters["source"]), (r.inv["real"], r.n_clusters["real"])
    real = ClusteredSide(ya, ir, sr)
    out = {}
    for key, f in (("a", fa), ("b", fb)):
        gen = ClusteredSide(f, ig, sg)
        cross = kernel_cluster_sums(f, ig, sg, ya, ir, sr)
        out[key] = (float(weighted_mmd2(np.ones(sg), gen, np.ones(sr), real, cross)[0]),
                    weighted_mmd2(r.weights["source"], gen, r.weights["real"], real, cross))
    kid_a, kid_b = out["a"][0], out["b"][0]
    return {**_interval(kid_a - kid_b, out["a"][1] - out["b"][1], policy), "kid_a": kid_a, "kid_b": kid_b,
            **r.describe()}
