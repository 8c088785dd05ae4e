"""Synthetic per-frame score files and index entries, as ``evaluate`` writes them (no model needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from argus_tasks.hardframes import history
from argus_tasks.hardframes.storage import StoreFiles
from argus_tasks.models import frame_scores as FS
from argus_tasks.store import RunStore

CONDITION = "fog"
FRAMES = [f"clear-val-b00-{i:05d}" for i in range(20)]


def meta(fid: str) -> dict:
    i = int(fid.rsplit("-", 1)[1])
    return {"sequence": f"clear-val-b00-d{i // 8:04d}", "dominant_classes": "building+sky" if i < 6 else "sky+vegetation",
            "brightness_bucket": "dim" if i < 6 else "medium", "time_bucket": "2026-W06",
            "capture_time": pd.Timestamp("2026-02-06 12:00", tz="UTC") + pd.Timedelta(seconds=2 * i),
            "brightness_mean": 0.3 if i < 6 else 0.5, "split": "val"}


def write_evaluation(store, dag_id: str, run_id: str, scored_at: str, fidelity: dict[str, float],
                     realism: dict[str, float] | None = None, condition: str = CONDITION) -> str:
    """Write ``runs/<dag>/<run>/evaluate/<c>/frame_scores.parquet`` for the challenger and its index entry."""
    ids = list(fidelity)
    realism = realism or dict.fromkeys(ids, 1.0)
    n = len(ids)
    m = [meta(f) for f in ids]
    fid = np.array([fidelity[f] for f in ids])
    cols = {"frame_id": ids, "condition": [condition] * n, "source": ["evaluate"] * n, "candidate": ["challenger"] * n,
            "candidate_name": ["argus-weather-fog v1"] * n, "model_name": ["argus-weather-fog"] * n,
            "model_version": ["1"] * n, "model_key": ["argus-weather-fog/1"] * n, "dag_id": [dag_id] * n,
            "run_id": [run_id] * n, "judge_model": ["argus-downstream-segmenter"] * n, "judge_version": ["1"] * n,
            "output_frame_id": [None] * n, "label_fidelity": fid, "realism_distance": [realism[f] for f in ids],
            "realism_ratio": [realism[f] for f in ids], "nn_real_ids": [""] * n, "mean_abs_change": [0.2] * n,
            "finite": [True] * n, "change_ok": [True] * n, "fidelity_ok": list(fid >= 0.2), "realism_ok": [True] * n,
            "candidate_sanity": [True] * n, "flagged": list(fid < 0.2), "reasons": [""] * n,
            "scored_at": [scored_at] * n, "eval_frames_sha256": ["0" * 64] * n,
            **{k: [x[k] for x in m] for k in ("sequence", "dominant_classes", "brightness_bucket", "time_bucket",
                                               "capture_time", "brightness_mean", "split")}}
    run = RunStore(str(store), dag_id, run_id)
    rel = f"evaluate/{condition}/{FS.SCORES_FILE}"
    run.write_dataframe(rel, FS.finish(cols))
    history.register(StoreFiles(str(store)), {
        "condition": condition, "dag_id": dag_id, "run_id": run_id, "source": "evaluate", "scored_at": scored_at,
        "judge_model": "argus-downstream-segmenter", "judge_version": "1", "eval_frames_sha256": "0" * 64,
        "scores": f"runs/{dag_id}/{run_id}/{rel}", "candidate": "challenger", "model_key": "argus-weather-fog/1",
        "n_frames": n})
    return rel


def fidelity_with_worst(worst: list[str], frames=FRAMES) -> dict[str, float]:
    """Every frame at 0.8 (slightly spread), the ``worst`` ones far below."""
    out = {f: 0.8 + 0.001 * i for i, f in enumerate(frames)}
    for i, f in enumerate(worst):
        out[f] = 0.25 - 0.01 * i
    return out
