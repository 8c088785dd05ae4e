"""Champion history: per condition, the champion's and each challenger's key metrics across runs, with intervals.

Every ``promote`` records one **history point** for its run (the challenger and the champion it was
compared with, as evaluate measured them), and every rollback check one for the version it
re-evaluated. A point holds, per model, KID, class-wise gap and label fidelity
(``label_preservation``), each with a 95 % interval from a cluster bootstrap over drives
(:func:`candidate_intervals`, the resampling of :mod:`argus_tasks.models.bootstrap` applied to one
model alone), plus the judge version and the evaluation frame-list hash (points judged by another
judge or on other frames are not comparable; the plot marks judge changes).

Points live in the store, ``<store>/history/<model>/points/<dag_id>__<run_id>__<source>.json`` (a
rerun of the same run replaces its own point). :func:`refresh` draws the plot
(:mod:`argus_tasks.models.history_plot`) from every point and the audit log (promotions and
rollbacks marked) into ``<store>/history/<model>/champion_history.png``; promote and rollback call
it each time, so the plot is regenerated whenever the champion moves, and put a copy in their run
folder and their MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings

import numpy as np

from argus_tasks.models.audit_log import StoreFiles
from argus_tasks.models.audit_trail import now

log = logging.getLogger(__name__)
METRICS = ("kid", "classwise_gap", "label_preservation")
PLOT = "champion_history.png"
N_BOOT = 200


def _interval(point: float, draws: np.ndarray, confidence: float) -> dict:
    draws = draws[np.isfinite(draws)]
    if not math.isfinite(point):
        return {"point": None, "lo": None, "hi": None}
    if draws.size == 0:
        return {"point": point, "lo": None, "hi": None}
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return {"point": point, "lo": float(lo), "hi": float(hi)}


def candidate_intervals(gen_conf, real_conf, gen_features=None, real_features=None, gen_seq=None, real_seq=None,
                        n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95) -> dict:
    """``{metric: {"point", "lo", "hi"}}`` of one model, resampling whole drives (frames without sequence ids).

    The point is the statistic on the whole sets (KID without subsets), so it sits inside its own
    interval; ``lo``/``hi`` are None when there are fewer than two drives on a side.
    """
    from argus_tasks.models import metrics as M
    from argus_tasks.models.bootstrap import resampling
    from argus_tasks.models.decision import Candidate, Policy

    gen_conf, real_conf = np.asarray(gen_conf, np.float64), np.asarray(real_conf, np.float64)
    c = gen_conf.shape[1]
    one = Candidate(name="history", gen_conf=gen_conf, real_conf=real_conf, gen_seq=gen_seq, real_seq=real_seq)
    try:
        r = resampling(one, one, Policy(n_boot=n_boot, seed=seed, confidence=confidence))
        inv, n_cl, weights = r.inv, r.n_clusters, r.weights
    except ValueError as exc:  # one drive only: points without intervals
        log.info("history: no interval (%s)", exc)
        inv = {"source": np.arange(len(gen_conf)), "real": np.arange(len(real_conf))}
        n_cl = {"source": len(gen_conf), "real": len(real_conf)}
        weights = None
    ones = {side: np.ones((1, n_cl[side])) for side in n_cl}
    per_g = M.cluster_sums(gen_conf.reshape(len(gen_conf), c * c), inv["source"], n_cl["source"])
    per_r = M.cluster_sums(real_conf.reshape(len(real_conf), c * c), inv["real"], n_cl["real"])

    def gap_and_fidelity(wg, wr):
        iou_g = M.iou_from_confusion((wg @ per_g).reshape(-1, c, c))
        iou_r = M.iou_from_confusion((wr @ per_r).reshape(-1, c, c))
        with warnings.catch_warnings():  # a resample without any class present: NaN, dropped from the interval
            warnings.simplefilter("ignore", RuntimeWarning)
            fidelity = np.nanmean(iou_g, axis=1)
        return M.classwise_gap_from_iou(iou_g, iou_r), fidelity

    point_gap, point_fid = gap_and_fidelity(ones["source"], ones["real"])
    out = {}
    if weights is not None:
        gaps, fids = gap_and_fidelity(weights["source"], weights["real"])
    else:
        gaps = fids = np.zeros(0)
    out["classwise_gap"] = _interval(float(point_gap[0]), gaps, confidence)
    out["label_preservation"] = _interval(float(point_fid[0]), fids, confidence)
    out["kid"] = {"point": None, "lo": None, "hi": None}
    if gen_features is not None and real_features is not None and len(gen_features) > 1 and len(real_features) > 1:
        gen = M.ClusteredSide(gen_features, inv["source"], n_cl["source"])
        real = M.ClusteredSide(real_features, inv["real"], n_cl["real"])
        cross = M.kernel_cluster_sums(gen.features, inv["source"], n_cl["source"], real.features, inv["real"],
                                      n_cl["real"])
        point = float(M.weighted_mmd2(ones["source"], gen, ones["real"], real, cross)[0])
        draws = (M.weighted_mmd2(weights["source"], gen, weights["real"], real, cross) if weights is not None
                 else np.zeros(0))
        out["kid"] = _interval(point, draws, confidence)
    return out


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value))


def history_files(store_root: str, model: str) -> StoreFiles:
    return StoreFiles(store_root, f"history/{model}")


def model_point(role: str, version, metrics: dict | None, rec: dict | None, real: dict | None,
                n_boot: int = N_BOOT) -> dict:
    """One model's entry of a history point, from its evaluate record (``conf``, ``features``, ``sequence``)."""
    entry = {"role": role, "version": None if version is None else str(version),
             "reported": {k: (metrics or {}).get(k) for k in METRICS}}
    if rec is not None and real is not None:
        entry["intervals"] = candidate_intervals(rec["conf"], real["conf"], rec.get("features"), real.get("features"),
                                                 rec.get("sequence"), real.get("sequence"), n_boot=n_boot)
    else:
        entry["intervals"] = {k: {"point": (metrics or {}).get(k), "lo": None, "hi": None} for k in METRICS}
    return entry


def record_point(store_root: str, model: str, ctx, source: str, models: list[dict], extra: dict) -> str:
    """Write this run's history point (replacing an earlier try's); returns its location."""
    point = {"at": now(), "dag_run": f"{ctx.dag_id}/{ctx.run_id}", "source": source, "models": models, **extra}
    files = history_files(store_root, model)
    rel = f"points/{_safe(ctx.dag_id)}__{_safe(ctx.run_id)}__{source}.json"
    files.write(rel, json.dumps(point, indent=1, sort_keys=True, default=str).encode())
    return files.url(rel)


def load_points(store_root: str, model: str) -> list[dict]:
    files = StoreFiles(store_root, f"history/{model}/points")
    points = []
    for name in files.list():
        if name.endswith(".json"):
            try:
                points.append(files.read_json(name))
            except (OSError, ValueError) as exc:
                log.warning("history point %s is unreadable (%s): skipped", files.url(name), exc)
    return sorted(points, key=lambda p: str(p.get("at", "")))


def refresh(registry, store_root: str, model: str, condition: str) -> tuple[bytes, str]:
    """Redraw the history plot of ``model`` from every point and the audit log; ``(png, store location)``."""
    from argus_tasks.models.audit_log import AuditLog
    from argus_tasks.models.history_plot import render
    from argus_tasks.models.registry_adapter import CHAMPION

    entries = AuditLog(registry, store_root, model, CHAMPION).entries()
    current = registry.alias(model, CHAMPION)
    png = render(model, condition, load_points(store_root, model), entries,
                 str(current.version) if current is not None else None)
    files = history_files(store_root, model)
    files.write(PLOT, png)
    return png, files.url(PLOT)
