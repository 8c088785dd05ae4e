"""The one read path of later steps to the run's frames: only what validation accepted.

``load_accepted(run)`` fails closed: without a successful validate result, an accepted manifest
whose hash matches that result, and a pull that is still the one that was validated, it raises a
:class:`PermanentStepError` instead of handing out frames nobody checked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from argus_tasks.contract import PermanentStepError

RESULT = "validate/result.json"
ACCEPTED = "validate/accepted_manifest.parquet"
PULL_JSON = "data/pull.json"


def load_accepted(run):
    """``(accepted manifest DataFrame, data_root Path)`` of a validated run (see the module docstring)."""
    from argus_tasks.data import manifest as mf

    missing = [p for p in (RESULT, ACCEPTED, PULL_JSON) if not run.exists(p)]
    if missing:
        raise PermanentStepError(
            f"validation output missing in {run.url()}: {', '.join(missing)}. Frames are read only after the "
            "validate step has accepted them; run (or fix) validate first.")
    result = run.read_json(RESULT)
    raw = run.read_bytes(ACCEPTED)
    if result.get("accepted_manifest_sha256") != hashlib.sha256(raw).hexdigest():
        raise PermanentStepError(f"validation output missing or stale: {run.url(ACCEPTED)} does not match the "
                                 "validate result that accepted it; rerun validate")
    pulled = run.read_json(PULL_JSON)
    if pulled.get("fingerprint") != result.get("dataset_fingerprint"):
        raise PermanentStepError("validation output missing for the current data: the pull was rerun "
                                 f"(fingerprint {str(pulled.get('fingerprint'))[:12]}) after validate accepted "
                                 f"{str(result.get('dataset_fingerprint'))[:12]}; rerun validate")
    import io

    import pandas as pd

    manifest = mf.coerce(pd.read_parquet(io.BytesIO(raw)))
    return manifest, run.localize("data")


def _open(data_root: Path, relpath: str):
    from PIL import Image

    path = Path(data_root) / relpath
    with Image.open(path) as im:
        im.load()
        return im.copy()


def read_frame(data_root: Path, row) -> np.ndarray:
    """The RGB frame of manifest ``row`` (a namedtuple, Series or dict): uint8 HxWx3."""
    return np.asarray(_open(data_root, _get(row, "frame_path")).convert("RGB"), dtype=np.uint8)


def read_label(data_root: Path, row) -> np.ndarray:
    """The label map of manifest ``row``: uint8 HxW class ids (``schema.IGNORE_ID`` = ignore)."""
    return np.asarray(_open(data_root, _get(row, "label_path")), dtype=np.uint8)


def read_depth(data_root: Path, row) -> np.ndarray | None:
    """Depth in metres (float32 HxW) of a procedural frame, or None when the dataset has no depth."""
    frame_path = str(_get(row, "frame_path"))
    rel = "depth/" + frame_path.split("/", 1)[1]
    if not (Path(data_root) / rel).exists():
        return None
    return np.asarray(_open(data_root, rel), dtype=np.float32) / 100.0


def frame_list_sha256(rows) -> str:
    """sha256 of a frame list: its frame ids with their frame and label content hashes, sorted by id.

    The same frames give the same hash whatever their order, revision or run (the evaluation set's
    identity: ``eval_set_sha256`` of the pull, recorded with the decision).
    """
    h = hashlib.sha256(b"argus-frame-list-v1\n")
    cols = [c for c in ("frame_id", "frame_sha256", "label_sha256") if c in rows.columns]
    for rec in sorted(rows[cols].astype(str).itertuples(index=False, name=None)):
        h.update(("\t".join(rec) + "\n").encode())
    return h.hexdigest()


def accepted_fingerprint(run) -> str:
    """What the later steps train and evaluate on: the pull's fingerprint and the accepted manifest.

    Both enter (a quarantine changes the accepted frames of the same pull). Call it after
    :func:`load_accepted`, which checks that the two belong together.
    """
    result = run.read_json(RESULT)
    parts = (str(result.get("dataset_fingerprint", "")), str(result.get("accepted_manifest_sha256", "")))
    if not all(parts):
        raise PermanentStepError(f"{run.url(RESULT)} lacks dataset_fingerprint or accepted_manifest_sha256; "
                                 "rerun validate")
    return hashlib.sha256(("argus-accepted-v1\n" + "\n".join(parts)).encode()).hexdigest()


def lineage(run) -> dict:
    """Dataset lineage for MLflow tags: revision, commit, fingerprint and the validation result id."""
    pulled = run.read_json(PULL_JSON) if run.exists(PULL_JSON) else {}
    validated = run.read_json(RESULT) if run.exists(RESULT) else {}
    return {
        "dataset_rev": str(pulled.get("revision", "")),
        "dataset_commit": str(pulled.get("commit", "")),
        "dataset_fingerprint": str(pulled.get("fingerprint", "")),
        "validation_result_id": str(validated.get("result_id", "")),
    }


def _get(row, key: str):
    if isinstance(row, dict):
        return row[key]
    if hasattr(row, key):
        return getattr(row, key)
    return row[key]
