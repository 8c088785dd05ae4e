"""Where the hard-frame history comes from: the per-frame score files of past runs, through an index.

Every step that writes per-frame scores (``evaluate`` for its challenger, ``check-outputs`` per
condition) also writes one small entry, ``<store>/frame-scores/<condition>/<dag_id>__<run_id>__<source>.json``,
naming its score file (``runs/<dag_id>/<run_id>/.../frame_scores.parquet``), which candidate's rows count
(the challenger: the champion and references are re-judged in every run and would be counted twice),
the model and judge, and ``scored_at``. A retry of the same step rewrites its own entry and keeps its
first ``scored_at``, so it is still one evaluation at the same place in the history.

Why the store and not MLflow's tables: the store is where the step writes first and atomically, it is
readable when MLflow is not, and reading N entries and N Parquet files needs no search over runs; the
MLflow tables are the same rows for people in the UI. A score file whose run folder was deleted is
skipped (with a warning) and the next older evaluation takes its place.
"""

from __future__ import annotations

import io
import logging

from argus_tasks.hardframes.selection import Evaluation
from argus_tasks.hardframes.storage import StoreFiles
from argus_tasks.store import safe_component

log = logging.getLogger(__name__)
INDEX = "frame-scores"
SOURCES = ("evaluate", "generation-qa")


def entry_relpath(condition: str, dag_id: str, run_id: str, source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: one of {SOURCES}")
    return f"{INDEX}/{condition}/{safe_component(dag_id)}__{safe_component(run_id)}__{source}.json"


def scored_at(files: StoreFiles, condition: str, dag_id: str, run_id: str, source: str, now: str) -> str:
    """The ``scored_at`` of an earlier try of this evaluation, else ``now``."""
    rel = entry_relpath(condition, dag_id, run_id, source)
    return str(files.read_json(rel).get("scored_at") or now) if files.exists(rel) else now


def register(files: StoreFiles, entry: dict) -> bool:
    """Write the index entry of one evaluation; False (nothing written) when the same entry is there."""
    missing = [k for k in ("condition", "dag_id", "run_id", "source", "scores", "candidate", "scored_at")
               if not entry.get(k)]
    if missing:
        raise ValueError(f"score index entry lacks {missing}")
    rel = entry_relpath(entry["condition"], entry["dag_id"], entry["run_id"], entry["source"])
    if files.exists(rel) and files.read_json(rel) == entry:
        return False
    files.write_json(rel, entry)
    return True


def entries(files: StoreFiles, condition: str) -> list[dict]:
    """Every index entry of ``condition``, oldest first (by ``scored_at``, then key)."""
    found = []
    for name in files.list(f"{INDEX}/{condition}"):
        if name.endswith(".json") and not name.startswith("."):
            found.append(files.read_json(f"{INDEX}/{condition}/{name}"))
    return sorted(found, key=lambda e: (e["scored_at"], key_of(e)))


def key_of(entry: dict) -> str:
    return f"{entry['dag_id']}/{entry['run_id']}/{entry['source']}"


def load(files: StoreFiles, condition: str, last_n: int, score: str = "combined"):
    """``(evaluations, scored rows, entries used)`` of the ``last_n`` newest readable evaluations.

    The rows are those of the counted candidate (one per frame and evaluation) with a ``evaluation``
    column; the hardness is recomputed here with ``score`` (fidelity, realism or combined).
    """
    import pandas as pd

    from argus_tasks.hardframes.selection import hardness

    used, tables = [], []
    for entry in reversed(entries(files, condition)):
        if len(used) == last_n:
            break
        if not files.exists(entry["scores"]):
            log.warning("score file %s of evaluation %s is gone: skipped", files.url(entry["scores"]), key_of(entry))
            continue
        rows = pd.read_parquet(io.BytesIO(files.read_bytes(entry["scores"])))
        rows = rows[(rows["candidate"] == entry["candidate"]) & (rows["condition"] == condition)]
        rows = rows.drop_duplicates("frame_id").reset_index(drop=True)
        rows["hardness"] = hardness(rows["label_fidelity"], rows["realism_ratio"], rows["flagged"], score)
        rows["evaluation"] = key_of(entry)
        used.append(entry)
        tables.append(rows)
    used.reverse()
    tables.reverse()
    evaluations = [Evaluation(key_of(e), e["scored_at"], dict(zip(t["frame_id"].astype(str), t["hardness"].astype(float),
                                                                 strict=True)))
                   for e, t in zip(used, tables, strict=True)]
    scored = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return evaluations, scored, used
