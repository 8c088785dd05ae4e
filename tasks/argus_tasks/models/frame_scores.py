"""Per-frame scores: one row per judged frame, the input of the hard-frame flywheel.

``evaluate`` (every candidate on the frozen evaluation set) and the generation QA (``check-outputs``)
write them as ``frame_scores.parquet`` in their step folder and as an MLflow table. A row is keyed by
the source frame (``frame_id``), the run (``dag_id``, ``run_id``), the model (``model_name`` +
``model_version``; a candidate that is not a registered model, a reference or identity, has
``model_key`` = ``<candidate name>@<dag_id>/<run_id>``) and the judge (``judge_model`` +
``judge_version``). The scores:

* ``label_fidelity``: the judge's mIoU on the generated frame against the source frame's labels;
* ``realism_distance``: mean Euclidean distance, in the judge's feature space, from the generated
  frame to its ``K_NEIGHBOURS`` nearest real frames of the condition; ``realism_ratio`` divides it by
  the median of the same distance among the real frames themselves (leave one out): about 1 means as
  close to real frames as real frames are to one another; ``nn_real_ids`` names the nearest three;
* gate flags: ``finite``, ``change_ok`` (mean absolute change within ``GENERATED_CHANGE_RANGE``),
  ``fidelity_ok`` (at least the per-frame floor), ``realism_ok`` (ratio at most the 95th percentile
  of the real frames' own ratios; informative), ``candidate_sanity`` (the candidate's aggregate gates);
  ``flagged`` when finiteness, fidelity or change fails, with ``reasons``;
* ``hardness`` in [0, 2] within this evaluation and candidate (:func:`argus_tasks.hardframes.selection.hardness`).

Metadata for grouping (:mod:`argus_tasks.hardframes.groups`) travels with every row.
"""

from __future__ import annotations

import warnings

import numpy as np

from argus_tasks.data.schema import GENERATED_CHANGE_RANGE

SCORES_FILE = "frame_scores.parquet"
FIDELITY_FLOOR = 0.2  # the generation DAG's default per-frame floor (Param min_fidelity)
REALISM_QUANTILE = 0.95
K_NEIGHBOURS = 5
SHOWN_NEIGHBOURS = 3
SCHEMA: dict[str, str] = {
    "frame_id": "string", "condition": "string", "source": "string", "candidate": "string",
    "candidate_name": "string", "model_name": "string", "model_version": "string", "model_key": "string",
    "dag_id": "string", "run_id": "string", "judge_model": "string", "judge_version": "string",
    "output_frame_id": "string", "split": "string", "sequence": "string", "capture_time": "datetime64[ns, UTC]",
    "brightness_mean": "float64", "dominant_classes": "string", "time_bucket": "string",
    "brightness_bucket": "string", "label_fidelity": "float64", "realism_distance": "float64",
    "realism_ratio": "float64", "nn_real_ids": "string", "mean_abs_change": "float64", "finite": "boolean",
    "change_ok": "boolean", "fidelity_ok": "boolean", "realism_ok": "boolean", "candidate_sanity": "boolean",
    "flagged": "bool", "reasons": "string", "hardness": "float64", "scored_at": "string",
    "eval_frames_sha256": "string",
}


def fidelity_per_frame(conf: np.ndarray) -> np.ndarray:
    """mIoU of each frame's (C, C) confusion counts (NaN for a frame whose label has no class)."""
    from argus_tasks.models.metrics import iou_from_confusion

    conf = np.asarray(conf)
    if conf.shape[0] == 0:
        return np.zeros(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(iou_from_confusion(conf), axis=-1)


def _knn(a: np.ndarray, b: np.ndarray, k: int, same: bool = False, block: int = 1024):
    """(mean distance to the k nearest rows of b, their indices) for every row of a; ``same``: a is b, skip self."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    b2 = (b * b).sum(1)
    dist, idx = np.zeros(len(a)), np.zeros((len(a), k), np.int64)
    for s in range(0, len(a), block):
        part = a[s:s + block]
        d2 = np.maximum((part * part).sum(1)[:, None] + b2[None, :] - 2.0 * part @ b.T, 0.0)
        if same:
            d2[np.arange(len(part)), np.arange(s, s + len(part))] = np.inf
        near = np.argsort(d2, axis=1, kind="stable")[:, :k]
        dist[s:s + block] = np.sqrt(np.take_along_axis(d2, near, 1)).mean(1)
        idx[s:s + block] = near
    return dist, idx


def realism(gen_feat: np.ndarray, real_feat: np.ndarray, real_ids, k: int = K_NEIGHBOURS) -> dict:
    """Distances of generated frames to the real frames (see the module docstring) and the gate threshold."""
    n, m = len(gen_feat), len(real_feat)
    if m < 2 or n == 0:
        nan = np.full(n, np.nan)
        return {"distance": nan, "ratio": nan, "nn_ids": [""] * n, "threshold": float("nan"), "scale": float("nan")}
    k = min(k, m - 1)
    dist, idx = _knn(gen_feat, real_feat, k)
    own, _ = _knn(real_feat, real_feat, k, same=True)
    scale = float(np.median(own)) or 1.0
    ids = np.asarray(list(real_ids), dtype=str)
    return {"distance": dist, "ratio": dist / scale, "scale": scale,
            "threshold": float(np.quantile(own / scale, REALISM_QUANTILE)),
            "nn_ids": [";".join(ids[row[:SHOWN_NEIGHBOURS]]) for row in idx]}


def gate_flags(fidelity, ratio, finite, change, threshold: float, min_fidelity: float = FIDELITY_FLOOR,
               change_range: tuple[float, float] = GENERATED_CHANGE_RANGE) -> dict[str, list]:
    """Per-frame gate flags; ``flagged`` (with ``reasons``) when a gate that would keep the frame out of a
    dataset fails: not finite, fidelity under the floor, implausible change. ``realism_ok`` informs only:
    the hardness ranks realism already."""
    fidelity, ratio, change = (np.asarray(v, np.float64) for v in (fidelity, ratio, change))
    finite = np.asarray(finite, bool)
    fid_ok = np.isfinite(fidelity) & (fidelity >= min_fidelity)
    change_ok = np.isfinite(change) & (change >= change_range[0]) & (change <= change_range[1])
    real_ok = ~np.isfinite(ratio) | (ratio <= threshold) if np.isfinite(threshold) else np.ones(len(ratio), bool)
    reasons = []
    for i in range(len(fidelity)):
        why = []
        if not finite[i]:
            why.append("output not finite")
        if not fid_ok[i]:
            why.append(f"label fidelity {fidelity[i]:.3f} below {min_fidelity:g}")
        if not change_ok[i]:
            why.append(f"mean abs change {change[i]:.3f} outside {change_range[0]:g}..{change_range[1]:g}")
        reasons.append("; ".join(why))
    flagged = [bool(r) for r in reasons]
    return {"finite": finite.tolist(), "fidelity_ok": fid_ok.tolist(), "change_ok": change_ok.tolist(),
            "realism_ok": real_ok.tolist(), "flagged": flagged, "reasons": reasons}


def model_key(model_name, model_version, candidate_name: str, dag_id: str, run_id: str) -> str:
    if model_name and model_version:
        return f"{model_name}/{model_version}"
    return f"{candidate_name}@{dag_id}/{run_id}"


def finish(columns: dict) -> object:
    """The table in :data:`SCHEMA` order and dtypes, with each (source, candidate, condition)'s hardness."""
    import pandas as pd

    from argus_tasks.hardframes.selection import hardness

    table = pd.DataFrame({name: columns.get(name, []) for name in SCHEMA if name != "hardness"})
    table["hardness"] = np.nan
    for _, part in table.groupby(["source", "candidate", "condition"], sort=False):
        table.loc[part.index, "hardness"] = hardness(part["label_fidelity"], part["realism_ratio"], part["flagged"])
    for name, dtype in SCHEMA.items():
        col = table[name]
        table[name] = pd.to_datetime(col, utc=True) if dtype.startswith("datetime64") else col.astype(dtype)
    return table[list(SCHEMA)]


def for_mlflow(table):
    """A copy MLflow's ``log_table`` can write as JSON: times as ISO strings, nullable types as objects."""
    import pandas as pd

    out = table.copy()
    for name in out.columns:
        col = out[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            out[name] = col.map(lambda t: None if pd.isna(t) else t.isoformat())
        elif isinstance(col.dtype, (pd.StringDtype, pd.BooleanDtype)) or col.dtype == object:
            out[name] = col.astype(object).where(col.notna(), None)
    return out
