"""Writing the per-frame scores of ``evaluate`` and ``check-outputs``: Parquet, index entry, thumbnails.

The steps call one function each after they have judged their frames and then log the table to
MLflow inside their own MLflow run (:func:`log_table`). Files, in the step's folder:

* ``frame_scores.parquet`` (:data:`argus_tasks.models.frame_scores.SCHEMA`);
* for ``evaluate``, ``records/challenger_thumbs.npz``: ``frame_id`` and ``thumbs`` (N, H, W, 3 uint8),
  the challenger's generated frames exactly as scored, for the ``THUMBS_KEEP`` hardest frames and every
  frame of the condition's current hard set (what the gallery shows).

and one entry in the store's score index (:mod:`argus_tasks.hardframes.history`).
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np

from argus_tasks.hardframes import history, versioning
from argus_tasks.hardframes.groups import frame_groups
from argus_tasks.hardframes.storage import StoreFiles
from argus_tasks.models import frame_scores as FS

log = logging.getLogger(__name__)
THUMBS_KEEP = 512
THUMBS_FILE = "records/challenger_thumbs.npz"
COUNTED = {"evaluate": "challenger", "generation-qa": "generated"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def base_keys(ctx, condition: str, source: str, judge: dict, eval_sha: str, files: StoreFiles) -> dict:
    return {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "condition": condition, "source": source,
            "judge_model": judge.get("model_name"), "judge_version": str(judge.get("version")),
            "eval_frames_sha256": eval_sha,
            "scored_at": history.scored_at(files, condition, ctx.dag_id, ctx.run_id, source, _now())}


def candidate_columns(base: dict, key: str, cand: dict, rows, groups: dict, fidelity, features, real_features,
                      real_ids, finite, change, sanity, min_fidelity: float = FS.FIDELITY_FLOOR,
                      output_ids=None, change_range=None) -> dict:
    """The score columns of one candidate over ``rows`` (the source frames it translated)."""
    n = len(rows)
    fidelity = np.asarray(fidelity, np.float64)
    r = FS.realism(features, real_features, real_ids)
    gates = FS.gate_flags(fidelity, r["ratio"], finite, change, r["threshold"], min_fidelity,
                          **({"change_range": change_range} if change_range else {}))
    name, version = cand.get("model_name"), cand.get("version")
    return {**{k: [v] * n for k, v in base.items()}, "frame_id": rows["frame_id"].astype(str).tolist(),
            "candidate": [key] * n, "candidate_name": [cand["name"]] * n, "model_name": [name] * n,
            "model_version": [version] * n,
            "model_key": [FS.model_key(name, version, cand["name"], base["dag_id"], base["run_id"])] * n,
            "output_frame_id": list(output_ids) if output_ids is not None else [None] * n,
            "split": rows["split"].astype(str).tolist(), "sequence": groups["sequence"],
            "capture_time": rows["capture_time"].tolist(), "brightness_mean": rows["brightness_mean"].tolist(),
            "dominant_classes": groups["dominant_classes"], "time_bucket": groups["time_bucket"],
            "brightness_bucket": groups["brightness_bucket"], "label_fidelity": fidelity,
            "realism_distance": r["distance"], "realism_ratio": r["ratio"], "nn_real_ids": r["nn_ids"],
            "mean_abs_change": np.asarray(change, np.float64),
            "candidate_sanity": [None if sanity is None else bool(sanity)] * n,
            "_threshold": r["threshold"], **gates}


def concat(parts: list[dict]) -> dict:
    out: dict[str, list] = {}
    for part in parts:
        for k, v in part.items():
            if not k.startswith("_"):
                out.setdefault(k, []).extend(list(v))
    return out


def score_evaluation(ctx, condition: str, *, records: dict, recorders: dict, candidates: dict, source_rows,
                     source_labels, real_features, real_rows, judge: dict, eval_sha: str, out: str,
                     model_name: str) -> dict:
    """Write ``<out>/frame_scores.parquet``, the challenger's thumbnails and the index entry; return a summary."""
    files = StoreFiles(ctx.store_root)
    base = base_keys(ctx, condition, "evaluate", judge, eval_sha, files)
    labels = [np.asarray(y) for y in source_labels.numpy()] if hasattr(source_labels, "numpy") else source_labels
    groups = frame_groups(source_rows, labels)
    real_ids = real_rows["frame_id"].astype(str).tolist()
    parts = []
    for key, rec in records.items():
        cand = candidates[key]
        info = {"name": cand["name"], "version": cand["version"], "model_name": model_name if cand["learned"] else None}
        parts.append(candidate_columns(base, key, info, source_rows, groups, FS.fidelity_per_frame(rec.gen_conf),
                                       rec.features,
                                       real_features, real_ids, recorders[key].finite,
                                       recorders[key].mean_abs_change, all(rec.sanity.values())))
    table = FS.finish(concat(parts))
    url = ctx.run.write_dataframe(f"{out}/{FS.SCORES_FILE}", table)
    chal = table[table["candidate"] == "challenger"].reset_index(drop=True)
    thumbs = _keep_thumbs(files, condition, chal, recorders["challenger"].thumbs)
    ctx.run.write_bytes(f"{out}/{THUMBS_FILE}", thumbs)
    entry = {**{k: base[k] for k in ("condition", "dag_id", "run_id", "source", "scored_at", "judge_model",
                                     "judge_version", "eval_frames_sha256")},
             "scores": store_relpath(ctx, f"{out}/{FS.SCORES_FILE}"), "candidate": COUNTED["evaluate"],
             "model_key": str(chal["model_key"].iloc[0]) if len(chal) else "", "n_frames": int(len(chal))}
    history.register(files, entry)
    log.info("per-frame scores of %s: %d rows (%d candidates), challenger: %d flagged, median fidelity %.3f, "
             "median realism ratio %.2f -> %s", condition, len(table), len(records), int(chal["flagged"].sum()),
             float(chal["label_fidelity"].median()), float(chal["realism_ratio"].median()), url)
    return {"frame_scores": url, "rows": int(len(table)), "challenger_flagged": int(chal["flagged"].sum()),
            "realism_threshold": parts[0]["_threshold"], "scored_at": base["scored_at"], "table": table}


def store_relpath(ctx, relpath: str) -> str:
    """``relpath`` of this run as a path relative to the store root (what the score index names)."""
    return ctx.run.prefix[len(ctx.run.root) + 1:] + "/" + relpath


def _keep_thumbs(files: StoreFiles, condition: str, chal, thumbs: np.ndarray) -> bytes:
    hard: set[str] = set()
    try:
        found = versioning.read(files, condition)
        hard = {f["frame_id"] for f in found[1]["frames"]} if found else set()
    except Exception as exc:  # the thumbnails are for the gallery: never fail the evaluation over them
        log.warning("could not read the current hard set of %s (%s): thumbnails of the hardest frames only",
                    condition, exc)
    order = np.argsort(-chal["hardness"].to_numpy(), kind="stable")[:THUMBS_KEEP]
    keep = sorted(set(order.tolist()) | {i for i, f in enumerate(chal["frame_id"]) if f in hard})
    buf = io.BytesIO()
    ids = np.asarray(chal["frame_id"].astype(str).tolist(), dtype=str)
    np.savez_compressed(buf, frame_id=ids[keep] if len(thumbs) else ids[:0],
                        thumbs=thumbs[keep] if len(thumbs) else thumbs)
    return buf.getvalue()


def log_table(table, artifact_file: str) -> None:
    """The scores as an MLflow table (call inside the step's MLflow run).

    ``mlflow.log_table`` appends to a table the run has already: a retry, which reopens its MLflow run,
    would double every row. So a table that exists is replaced, in the same format (JSON, orient split).
    """
    import os
    import posixpath
    import tempfile

    import mlflow

    data = FS.for_mlflow(table)
    run_id = mlflow.active_run().info.run_id
    folder = posixpath.dirname(artifact_file) or None
    there = {f.path for f in mlflow.MlflowClient().list_artifacts(run_id, folder)}
    if artifact_file not in there:
        mlflow.log_table(data=data, artifact_file=artifact_file)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, posixpath.basename(artifact_file))
        data.to_json(path, orient="split", index=False, date_format="iso")
        mlflow.log_artifact(path, artifact_path=folder)
