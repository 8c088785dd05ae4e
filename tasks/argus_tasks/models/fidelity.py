"""Label fidelity in the promotion decision: point values, paired bootstrap intervals, and its gates.

Label fidelity is the judge's mIoU on a candidate's generated frames against the labels of their
clear source frames (``metrics["label_preservation"]``; per class: the judge's IoU of that class).
It says whether the labels Argus ships with a generated frame still describe it.

From the per-frame confusion counts it is recomputed for every bootstrap draw, with the very draws
of the realism comparison (:func:`argus_tasks.models.bootstrap.resampling`: whole sequences, paired
between the two candidates), so its interval is by drive too.

**The fidelity target.** Real weather itself costs the judge some mIoU (its mIoU on the real frames
of the condition, ``miou_real``): a generated frame that the judge reads exactly as well as a real
one has lost no label, it shows weather. So the fidelity a challenger must keep against another
candidate (the champion, or the physics renderer for a first champion) is that candidate's fidelity,
capped at ``miou_real`` when ``Policy.fidelity_cap_at_real`` (the default); the challenger passes
when the lower end of the CI of ``fidelity(challenger) - target`` is at least ``-fidelity_margin``.
Without the cap, a champion that barely changes its frames (high fidelity, poor realism) could never
be replaced by a realistic challenger.

Pure numpy, like the rest of the decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from argus_tasks.models.bootstrap import _interval, resampling
from argus_tasks.models.metrics import cluster_sums, iou_from_confusion

if TYPE_CHECKING:  # pragma: no cover
    from argus_tasks.models.decision import Candidate, Policy

# The physics renderer of each condition: its most realistic non-learned reference (models/references.py).
# Uniform haze barely changes a frame and identity changes nothing: neither is a fidelity baseline.
PHYSICS_RENDERERS = frozenset({"koschmieder_fog", "rain_render", "snow_render", "night_render"})


def _per_cluster(conf, inv, s) -> np.ndarray:
    conf = np.asarray(conf, np.float64)
    c = conf.shape[1]
    return cluster_sums(conf.reshape(len(conf), c * c), inv, s)


def _iou(weights: np.ndarray, per_cluster: np.ndarray) -> np.ndarray:
    c = int(round(per_cluster.shape[1] ** 0.5))
    return iou_from_confusion((weights @ per_cluster).reshape(-1, c, c))  # (B, C)


def _miou(iou: np.ndarray) -> np.ndarray:
    present = np.isfinite(iou)
    with np.errstate(invalid="ignore"):
        return np.where(present.any(-1), np.nansum(np.where(present, iou, 0.0), -1) / np.maximum(present.sum(-1), 1),
                        np.nan)


def paired_fidelity_difference(a: Candidate, b: Candidate, policy: Policy) -> dict:
    """Bootstrap CI of ``fidelity(a) - target(b)``, target = fidelity(b), capped at miou_real (policy), per draw.

    Also the per-class fidelity of both (point values) and the CI of each class's difference.
    """
    r = resampling(a, b, policy)
    (ig, sg), (ir, sr) = (r.inv["source"], r.n_clusters["source"]), (r.inv["real"], r.n_clusters["real"])
    pa, pb, pr = _per_cluster(a.gen_conf, ig, sg), _per_cluster(b.gen_conf, ig, sg), _per_cluster(a.real_conf, ir, sr)
    ones_g, ones_r = np.ones((1, sg)), np.ones((1, sr))
    wg, wr = r.weights["source"], r.weights["real"]

    def target(w_gen, w_real):
        fid_b = _miou(_iou(w_gen, pb))
        return np.minimum(fid_b, _miou(_iou(w_real, pr))) if policy.fidelity_cap_at_real else fid_b

    iou_a1, iou_b1, iou_r1 = _iou(ones_g, pa)[0], _iou(ones_g, pb)[0], _iou(ones_r, pr)[0]
    fid_a, fid_b, miou_real = float(_miou(iou_a1[None])[0]), float(_miou(iou_b1[None])[0]), float(_miou(iou_r1[None])[0])
    point_target = float(target(ones_g, ones_r)[0])
    draws = _miou(_iou(wg, pa)) - target(wg, wr)
    out = {**_interval(fid_a - point_target, draws, policy), "challenger": fid_a, "other_fidelity": fid_b,
           "miou_real": miou_real, "target": point_target,
           "capped_at_real": bool(policy.fidelity_cap_at_real and miou_real < fid_b), **r.describe()}
    per_class_draws = _iou(wg, pa) - _iou(wg, pb)
    names = policy.class_names or tuple(str(k) for k in range(len(iou_a1)))
    out["per_class"] = {}
    for k, name in enumerate(names[:len(iou_a1)]):
        if not (np.isfinite(iou_a1[k]) and np.isfinite(iou_b1[k])):
            continue
        ci = _interval(float(iou_a1[k] - iou_b1[k]), per_class_draws[:, k], policy)
        out["per_class"][name] = {"challenger": float(iou_a1[k]), "other": float(iou_b1[k]),
                                  "real": float(iou_r1[k]) if np.isfinite(iou_r1[k]) else None,
                                  "diff": ci["point"], "lo": ci["lo"], "hi": ci["hi"]}
    return out


def fidelity_interval(a: Candidate, policy: Policy) -> dict:
    """Point fidelity of ``a`` (from its records) and its bootstrap CI (drawing source sequences)."""
    r = resampling(a, a, policy)
    pa = _per_cluster(a.gen_conf, r.inv["source"], r.n_clusters["source"])
    point = float(_miou(_iou(np.ones((1, r.n_clusters["source"])), pa))[0])
    return {**_interval(point, _miou(_iou(r.weights["source"], pa)), policy), **r.describe()}


def _bad(x) -> bool:
    return x is None or not np.isfinite(x)


def _thin(d: dict, k: int = 3) -> str:
    """The ``k`` classes that lost the most fidelity, for the reason text."""
    worst = sorted(d.get("per_class", {}).items(), key=lambda kv: kv[1]["diff"])[:k]
    return ", ".join(f"{n} {v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" for n, v in worst)


def fidelity_kept(chal: Candidate, other: Candidate, who: str, key: str, policy: Policy, reasons: list[str],
                  comparisons: dict) -> bool:
    """Gate: the challenger keeps the fidelity of ``other`` (capped at real), within ``policy.fidelity_margin``."""
    try:
        d = paired_fidelity_difference(chal, other, policy)
    except ValueError as exc:
        reasons.append(f"[fidelity vs {who}] cannot compare: {exc}")
        return False
    comparisons[key] = {"other": other.name, "margin": policy.fidelity_margin, **d}
    cap = f" (capped at the judge's real-frame mIoU {d['miou_real']:.4f})" if d["capped_at_real"] else ""
    head = (f"[fidelity vs {who}] label fidelity {d['challenger']:.4f} vs {d['other_fidelity']:.4f}, target "
            f"{d['target']:.4f}{cap}: diff {d['point']:+.4f}, {policy.confidence:.0%} CI [{d['lo']:+.4f}, {d['hi']:+.4f}]")
    tail = f"; per class, most lost: {_thin(d)}" if d["per_class"] else ""
    if _bad(d["lo"]) or _bad(d["point"]):
        reasons.append(f"{head}: no finite interval (fails closed){tail}")
        return False
    if d["lo"] >= -policy.fidelity_margin:
        reasons.append(f"{head} >= -{policy.fidelity_margin:g}: labels kept{tail}")
        return True
    reasons.append(f"{head}: lower end below -{policy.fidelity_margin:g}, loses label fidelity{tail}")
    return False


def fidelity_floor(chal: Candidate, policy: Policy, reasons: list[str], comparisons: dict) -> bool:
    """Gate: the challenger's label fidelity (point estimate) is at least ``policy.min_fidelity``."""
    try:
        d = fidelity_interval(chal, policy)
    except ValueError as exc:
        reasons.append(f"[fidelity floor] cannot measure: {exc}")
        return False
    comparisons["fidelity_floor"] = {"floor": policy.min_fidelity, **d}
    head = (f"[fidelity floor] label fidelity {d['point']:.4f}, {policy.confidence:.0%} CI "
            f"[{d['lo']:.4f}, {d['hi']:.4f}]")
    if _bad(d["point"]):
        reasons.append(f"{head}: not a finite number (fails closed)")
        return False
    if d["point"] >= policy.min_fidelity:
        reasons.append(f"{head} >= floor {policy.min_fidelity:g}")
        return True
    reasons.append(f"{head} below the floor {policy.min_fidelity:g}")
    return False
