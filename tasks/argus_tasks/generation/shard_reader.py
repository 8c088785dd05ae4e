"""Reading what the generate step left in the run: the shard plan and the per-shard success markers.

This module is the one place that knows their format (written by ``plan-shards`` and ``generate``:
:mod:`argus_tasks.generation.shards`, :mod:`argus_tasks.generation.writer`); ``check-outputs``,
``publish`` and ``generation-report`` read the generated outputs only through it.

The plan, ``plan/shards.json``, lists the shards the run must generate (``shards[].shard_id`` and
``shard_sha256``, the identity of the shard's frames). A shard that finished writes its marker
``generate/shards/<shard_id>.json`` last::

    {"shard_id": "fog-0000", "condition": "fog", "shard_sha256": "...", "complete": true,
     "model_name": "argus-weather-fog", "model_version": "4", "config_hash": "3f2a...",
     "config": {"seed": 0, "strength": 1.0, ...}, "n_frames": 64,
     "stats": {"n_written": 64, "n_reused": 0, "seconds": 12.5, "frames_per_s": 5.1},
     "frames": [{"frame_id": "clear-test-b00-00001",            # the source frame
                 "output": "generate/outputs/fog/4/3f2a.../clear-test-b00-00001.png", "sha256": "...",
                 "label": "generate/outputs/fog/4/3f2a.../labels/clear-test-b00-00001.png",
                 "label_sha256": "...", "source_sha256": "..."}, ...]}

Paths are relative to the run folder. Only a marker with ``complete: true`` and the plan's
``shard_sha256`` counts (``<shard_id>.partial.json`` is a journal, never a marker). An output's
frame id in the published dataset is ``<condition>-<source frame id>`` (:func:`published_id`): one
source frame gives one frame per condition. An entry may override ``seed`` (default: the config's).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from argus_tasks.contract import PermanentStepError
from argus_tasks.models.registry_adapter import weather_model_name

PLAN_FILE = "plan/shards.json"
MARKER_DIR = "generate/shards"
COLUMNS = ("shard_id", "frame_id", "source_frame_id", "condition", "model_name", "model_version", "config_hash",
           "seed", "output", "output_sha256", "label", "label_sha256", "source_sha256")


@dataclass
class Outputs:
    """The generated outputs of a run, one row per frame (``table``: :data:`COLUMNS`), and their markers."""

    table: object  # pandas DataFrame
    markers: dict[str, dict] = field(default_factory=dict)  # shard id -> marker (without its frame list)
    planned: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 over the markers' bytes, in plan order: what check-outputs validated


def published_id(condition: str, source_frame_id: str) -> str:
    return f"{condition}-{source_frame_id}"


def marker_path(shard_id: str) -> str:
    return f"{MARKER_DIR}/{shard_id}.json"


def planned_shards(run) -> dict[str, str]:
    """The shards of the run's plan: shard id -> ``shard_sha256`` ("" when the plan names none), in plan order."""
    if not run.exists(PLAN_FILE):
        raise PermanentStepError(f"the shard plan {run.url(PLAN_FILE)} is missing: the plan step must succeed "
                                 "before the generated outputs can be checked or published")
    doc = run.read_json(PLAN_FILE)
    items = doc.get("shards") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise PermanentStepError(f"{run.url(PLAN_FILE)} plans no shards (key 'shards'); rerun plan-shards")
    planned = {str(s.get("shard_id", "")): str(s.get("shard_sha256", "")) for s in items if isinstance(s, dict)}
    if len(planned) != len(items) or "" in planned:
        raise PermanentStepError(f"{run.url(PLAN_FILE)} has a shard without a shard_id, or one twice; rerun plan-shards")
    return planned


def _row(shard_id: str, marker: dict, entry: dict, where: str) -> dict:
    if not isinstance(entry, dict):
        raise PermanentStepError(f"{where}: an entry of 'frames' is not an object: {entry!r:.100}")
    condition = str(marker.get("condition", ""))
    row = {"shard_id": shard_id, "source_frame_id": entry.get("frame_id"), "condition": condition,
           "model_name": marker.get("model_name") or (weather_model_name(condition) if condition else None),
           "model_version": marker.get("model_version"), "config_hash": marker.get("config_hash"),
           "seed": entry.get("seed", (marker.get("config") or {}).get("seed")), "output": entry.get("output"),
           "output_sha256": entry.get("sha256"), "label": entry.get("label"), "label_sha256": entry.get("label_sha256"),
           "source_sha256": entry.get("source_sha256")}
    for key, value in row.items():
        if value is None or value == "":
            raise PermanentStepError(f"{where}: frame {entry.get('frame_id', '?')!r} has no {key!r} (marker format: "
                                     "argus_tasks/generation/shard_reader.py); rerun the shard")
    try:
        row["seed"] = int(row["seed"])
    except (TypeError, ValueError) as exc:
        raise PermanentStepError(f"{where}: seed {row['seed']!r} is not an integer") from exc
    row = {k: (v if k == "seed" else str(v)) for k, v in row.items()}
    row["frame_id"] = published_id(condition, row["source_frame_id"])
    return row


def _parse(run, shard_id: str, planned_sha: str, conditions) -> tuple[bytes, dict, list[dict]]:
    """(raw bytes, marker without its frame list, output rows of ``conditions``) of one shard's marker."""
    where = run.url(marker_path(shard_id))
    raw = run.read_bytes(marker_path(shard_id))
    try:
        marker = json.loads(raw)
    except ValueError as exc:
        raise PermanentStepError(f"{where} is not JSON ({exc}); rerun the shard") from exc
    entries = marker.get("frames") if isinstance(marker, dict) else None
    if not isinstance(entries, list):
        raise PermanentStepError(f"{where} has no list 'frames'; rerun the shard")
    if marker.get("complete") is not True or (planned_sha and marker.get("shard_sha256") != planned_sha):
        raise PermanentStepError(f"{where} is not a complete marker of this plan's shard {shard_id} (complete="
                                 f"{marker.get('complete')!r}, shard_sha256 {str(marker.get('shard_sha256'))[:12]} vs "
                                 f"planned {planned_sha[:12]}); rerun the shard")
    rows = [_row(shard_id, marker, e, where) for e in entries]
    meta = {k: v for k, v in marker.items() if k != "frames"} | {"n_outputs": len(entries)}
    return raw, meta, [r for r in rows if conditions is None or r["condition"] in conditions]


def _table(rows: list[dict]):
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(["condition", "frame_id"], kind="stable").reset_index(drop=True)


def read_outputs(run, conditions: list[str] | None = None) -> Outputs:
    """Every output of the plan's shards (only ``conditions`` when given).

    Fails closed (:class:`PermanentStepError`): a planned shard without a marker (the run is partial),
    an unreadable or incomplete marker, a marker of another plan, or a frame entry lacking a field.
    """
    planned = planned_shards(run)
    missing = [s for s in planned if not run.exists(marker_path(s))]
    if missing:
        raise PermanentStepError(
            f"{len(missing)} of {len(planned)} planned shard(s) have no success marker in {run.url(MARKER_DIR)}, "
            f"e.g. {missing[:5]}: the generation is partial. Rerun (clear) the failed generate tasks; nothing "
            "is checked or published from a partial run.")
    rows, markers, digest = [], {}, hashlib.sha256(b"argus-shard-markers-v1\n")
    for shard_id, sha in planned.items():
        raw, markers[shard_id], found = _parse(run, shard_id, sha, conditions)
        digest.update(f"{shard_id}\t{hashlib.sha256(raw).hexdigest()}\n".encode())
        rows += found
    return Outputs(table=_table(rows), markers=markers, planned=list(planned), digest=digest.hexdigest())


def read_present(run) -> tuple[Outputs, list[str]]:
    """What the shards that finished left, whatever else failed (for the report): outputs and the problems met."""
    problems: list[str] = []
    try:
        planned = planned_shards(run)
    except PermanentStepError as exc:
        planned, problems = {}, [str(exc)]
    present = [n[:-5] for n in run.list(MARKER_DIR)
               if n.endswith(".json") and not n.endswith(".partial.json") and not n.startswith(".")]
    rows, markers = [], {}
    for shard_id in sorted(set(present) | set(planned), key=lambda s: (s not in planned, s)):
        if shard_id not in present:
            problems.append(f"shard {shard_id} has no success marker")
            continue
        try:
            _, markers[shard_id], found = _parse(run, shard_id, planned.get(shard_id, ""), None)
        except PermanentStepError as exc:
            problems.append(str(exc))
            continue
        rows += found
    return Outputs(table=_table(rows), markers=markers, planned=list(planned)), problems


def shard_throughput(markers: dict[str, dict]) -> dict:
    """Frames and seconds over the shards' markers (their ``stats``): totals, frames/s, per condition."""
    per: dict[str, dict] = {}
    for m in markers.values():
        stats = m.get("stats") or {}
        d = per.setdefault(str(m.get("condition", "?")),
                           {"shards": 0, "frames": 0, "generated": 0, "reused": 0, "seconds": 0.0})
        d["shards"] += 1
        d["frames"] += int(m.get("n_frames", m.get("n_outputs", 0)) or 0)
        d["generated"] += int(stats.get("n_written", 0) or 0)
        d["reused"] += int(stats.get("n_reused", 0) or 0)
        d["seconds"] += float(stats.get("seconds", 0.0) or 0.0)
    total = {k: sum(d[k] for d in per.values()) for k in ("shards", "frames", "generated", "reused", "seconds")}
    for d in (*per.values(), total):
        d["frames_per_second"] = round(d["generated"] / d["seconds"], 3) if d["seconds"] > 0 else None
        d["seconds"] = round(d["seconds"], 3)
    return {"total": total, "per_condition": per}
