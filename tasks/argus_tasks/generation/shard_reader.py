"""Reading what the generate step left in the run: the shard plan and the per-shard success markers.

This module is the one place that knows the marker format; ``check-outputs``, ``publish`` and
``generation-report`` read the generated outputs only through :func:`read_outputs`.

The plan (``plan/shards.json``) lists the shards the run must generate::

    {"shards": [{"shard_id": "fog-00000", ...}, ...]}        (or a plain list of ids or of such objects)

A shard that finished writes its marker ``generate/shards/<shard_id>.json`` last, atomically::

    {"shard_id": "fog-00000", "condition": "fog", "model_name": "argus-weather-fog",
     "model_version": "4", "config_hash": "3f2a...", "seed": 0,
     "n_frames": 64, "n_generated": 64, "n_reused": 0, "seconds": 12.5,
     "outputs": [
       {"frame_id": "fog-clear-test-b00-00001", "source_frame_id": "clear-test-b00-00001",
        "condition": "fog", "model_version": "4", "config_hash": "3f2a...", "seed": 0,
        "output": "generate/outputs/fog/4/3f2a.../fog-clear-test-b00-00001.png",
        "output_sha256": "<64 hex>",
        "label": "generate/outputs/fog/4/3f2a.../fog-clear-test-b00-00001.label.png",
        "label_sha256": "<64 hex>"},
       ...]}

Paths are relative to the run folder. An output's ``condition``, ``model_name``, ``model_version``,
``config_hash`` and ``seed`` default to the marker's own. ``frame_id`` must be unique across the
conditions of a run (it names the frame in the published dataset). ``n_generated``, ``n_reused`` and
``seconds`` (the shard's wall time) are optional and feed the report's throughput.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from argus_tasks.contract import PermanentStepError
from argus_tasks.models.registry_adapter import weather_model_name

PLAN_FILE = "plan/shards.json"
MARKER_DIR = "generate/shards"
OUTPUT_KEYS = ("frame_id", "source_frame_id", "condition", "model_name", "model_version", "config_hash", "seed",
               "output", "output_sha256", "label", "label_sha256")
INHERITED = ("condition", "model_name", "model_version", "config_hash", "seed")


@dataclass
class Outputs:
    """The generated outputs of a run, one row per frame (``table``), and the markers they came from."""

    table: object  # pandas DataFrame: shard_id + OUTPUT_KEYS
    markers: dict[str, dict] = field(default_factory=dict)  # shard id -> marker (without "outputs")
    planned: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 over the markers' bytes, in shard order: what check-outputs validated


def marker_path(shard_id: str) -> str:
    return f"{MARKER_DIR}/{shard_id}.json"


def planned_shards(run) -> list[str]:
    """The shard ids of the run's plan (``plan/shards.json``), in plan order."""
    if not run.exists(PLAN_FILE):
        raise PermanentStepError(f"the shard plan {run.url(PLAN_FILE)} is missing: the plan step must succeed "
                                 "before the generated outputs can be checked or published")
    doc = run.read_json(PLAN_FILE)
    items = doc.get("shards") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise PermanentStepError(f"{run.url(PLAN_FILE)} holds no list of shards (key 'shards')")
    ids = [str(s.get("shard_id", "")) if isinstance(s, dict) else str(s) for s in items]
    if not ids or any(not i for i in ids):
        raise PermanentStepError(f"{run.url(PLAN_FILE)} plans no shards, or a shard without a shard_id")
    return ids


def _row(shard_id: str, marker: dict, out: dict, where: str) -> dict:
    if not isinstance(out, dict):
        raise PermanentStepError(f"{where}: an entry of 'outputs' is not an object: {out!r:.100}")
    row = {"shard_id": shard_id}
    for key in OUTPUT_KEYS:
        value = out.get(key, marker.get(key) if key in INHERITED else None)
        if key == "model_name" and value is None and row.get("condition"):
            value = weather_model_name(str(row["condition"]))
        if value is None or value == "":
            raise PermanentStepError(f"{where}: output {out.get('frame_id', '?')!r} has no {key!r} (marker format: "
                                     "argus_tasks/generation/shard_reader.py); rerun the shard")
        row[key] = value
    try:
        row["seed"] = int(row["seed"])
    except (TypeError, ValueError) as exc:
        raise PermanentStepError(f"{where}: seed {row['seed']!r} of {row['frame_id']!r} is not an integer") from exc
    for key in ("frame_id", "source_frame_id", "condition", "model_name", "model_version", "config_hash"):
        row[key] = str(row[key])
    return row


def _parse(run, shard_id: str, conditions) -> tuple[bytes, dict, list[dict]]:
    """(raw bytes, marker without its outputs, output rows of ``conditions``) of one shard's marker."""
    where = run.url(marker_path(shard_id))
    raw = run.read_bytes(marker_path(shard_id))
    try:
        marker = json.loads(raw)
    except ValueError as exc:
        raise PermanentStepError(f"{where} is not JSON ({exc}); rerun the shard") from exc
    outs = marker.get("outputs") if isinstance(marker, dict) else None
    if not isinstance(outs, list):
        raise PermanentStepError(f"{where} has no list 'outputs'; rerun the shard")
    rows = [_row(shard_id, marker, out, where) for out in outs]
    meta = {k: v for k, v in marker.items() if k != "outputs"} | {"n_outputs": len(outs)}
    return raw, meta, [r for r in rows if conditions is None or r["condition"] in conditions]


def _table(rows: list[dict]):
    import pandas as pd

    table = pd.DataFrame(rows, columns=["shard_id", *OUTPUT_KEYS])
    return table.sort_values(["condition", "frame_id"], kind="stable").reset_index(drop=True)


def read_outputs(run, conditions: list[str] | None = None) -> Outputs:
    """Every output of the plan's shards (only ``conditions`` when given).

    Fails closed (:class:`PermanentStepError`): a planned shard without a marker (the run is partial),
    an unreadable marker or an output without one of :data:`OUTPUT_KEYS`.
    """
    planned = planned_shards(run)
    missing = [s for s in planned if not run.exists(marker_path(s))]
    if missing:
        raise PermanentStepError(
            f"{len(missing)} of {len(planned)} planned shard(s) have no success marker in {run.url(MARKER_DIR)}, "
            f"e.g. {missing[:5]}: the generation is partial. Rerun (clear) the failed generate tasks; nothing "
            "is checked or published from a partial run.")
    rows, markers, digest = [], {}, hashlib.sha256(b"argus-shard-markers-v1\n")
    for shard_id in planned:
        raw, markers[shard_id], found = _parse(run, shard_id, conditions)
        digest.update(f"{shard_id}\t{hashlib.sha256(raw).hexdigest()}\n".encode())
        rows += found
    return Outputs(table=_table(rows), markers=markers, planned=planned, digest=digest.hexdigest())


def read_present(run) -> tuple[Outputs, list[str]]:
    """What the shards that finished left, whatever else failed (for the report): outputs and the problems met."""
    problems: list[str] = []
    try:
        planned = planned_shards(run)
    except PermanentStepError as exc:
        planned, problems = [], [str(exc)]
    present = [n[:-5] for n in run.list(MARKER_DIR) if n.endswith(".json") and not n.startswith(".")]
    rows, markers = [], {}
    for shard_id in sorted(set(present) | set(planned), key=lambda s: (s not in planned, s)):
        if shard_id not in present:
            problems.append(f"shard {shard_id} has no success marker")
            continue
        try:
            _, markers[shard_id], found = _parse(run, shard_id, None)
        except PermanentStepError as exc:
            problems.append(str(exc))
            continue
        rows += found
    return Outputs(table=_table(rows), markers=markers, planned=planned), problems


def shard_throughput(markers: dict[str, dict]) -> dict:
    """Frames and seconds over the shards' markers: totals, frames/s, per condition."""
    per: dict[str, dict] = {}
    for m in markers.values():
        c = str(m.get("condition", "?"))
        d = per.setdefault(c, {"shards": 0, "frames": 0, "generated": 0, "reused": 0, "seconds": 0.0})
        n = int(m.get("n_frames", m.get("n_outputs", 0)) or 0)
        d["shards"] += 1
        d["frames"] += n
        d["generated"] += int(m.get("n_generated", n) or 0)
        d["reused"] += int(m.get("n_reused", 0) or 0)
        d["seconds"] += float(m.get("seconds", 0.0) or 0.0)
    total = {k: sum(d[k] for d in per.values()) for k in ("shards", "frames", "generated", "reused", "seconds")}
    for d in (*per.values(), total):
        d["frames_per_second"] = round(d["generated"] / d["seconds"], 3) if d["seconds"] > 0 else None
        d["seconds"] = round(d["seconds"], 3)
    return {"total": total, "per_condition": per}
