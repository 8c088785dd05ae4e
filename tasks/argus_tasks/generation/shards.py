"""Deterministic shard plans for the generation run: which source frames each ``generate`` task translates.

Pure functions of a manifest and the run settings, no I/O: :func:`select_sources` takes the clear frames
of the selected splits, sorted by ``frame_id``; :func:`plan_shards` cuts that list into contiguous
shards of ``shard_size`` frames, one series per condition (``fog-0000``, ``fog-0001``, ... then
``rain-0000``, ...). The same manifest and settings always give the same plan, byte for byte:

* a shard's identity is ``shard_sha256``, the sha256 of its condition and of the frame ids it holds
  (:func:`shard_sha256`); ``plan_sha256`` hashes the whole plan. ``generate`` compares a shard's hash
  with its success marker, so a marker of another plan's shard of the same name is never reused;
* every condition's shards cut the same sorted list the same way: shard ``<c>-<i>`` is chunk ``i``,
  ``[start, stop)`` of the list (:meth:`ShardPlan.chunks`). The step writes each chunk's rows once
  (``plan/frames/<i>.parquet``), so a ``generate`` task reads its own few thousand rows, never the
  whole manifest.

**The map limit.** Airflow refuses to map a task over more than ``[core] max_map_length`` items
(1024 by default), and the DAG maps ``generate`` over the shards of every condition together. The
plan therefore holds at most :data:`MAX_SHARDS` (1,000) shards in total: when ``frames / shard_size x
conditions`` would pass it, the shard size grows to ``ceil(frames / (1000 // conditions))`` and the
plan says so (``shard_size_grown``; the step logs it). A 1M-frame manifest and four conditions plan
4 x 250 shards of 4,000 frames.

**Past that: scale-out.** Growing the shards keeps the DAG within the map limit but makes each shard
long (hours at 1024x512 on one GPU, with coarse retries). The route beyond is to stop mapping
Airflow tasks per shard and hand each condition to Kubernetes as one batch job:

* one ``KubernetesJobOperator`` task per condition (the DAG then maps over conditions, 4 items) that
  submits an **Indexed Job** (``completionMode: Indexed``, ``completions`` = the condition's shard
  count, ``parallelism`` = the GPUs the team may use, ``backoffLimitPerIndex`` for per-shard retries);
  each pod runs ``argus-task generate --shard-id <condition>-$(JOB_COMPLETION_INDEX)`` against the same
  ``plan/shards.json``, so the plan is unchanged and may hold any number of shards (set
  ``max_shards`` accordingly: the cap exists only for Airflow's map);
* the Job is created suspended with the label ``kueue.x-k8s.io/queue-name: <team queue>``; **Kueue**
  admits it (unsuspends it) when the team's ClusterQueue quota of ``nvidia.com/gpu`` allows, and
  preempts or queues it by priority, so teams share the GPU pool without a home-made scheduler;
* idempotence carries over unchanged: outputs are keyed by (model version, condition, frame id,
  config hash) and each index writes its own success marker ``generate/shards/<shard_id>.json``, so
  a rerun Job redoes only the shards (and frames) that are missing. The downstream QA and publish
  steps read the markers, not XCom.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

PLAN_VERSION = "argus-shard-plan-v1"
MAX_SHARDS = 1000  # Airflow's [core] max_map_length is 1024: the mapped generate task stays under it
SOURCE_CONDITION = "clear"
# the manifest columns the plan keeps for generate (the chunk files): enough to read, write and link each frame
FRAME_COLUMNS = ("frame_id", "split", "sequence", "width", "height", "frame_path", "label_path", "frame_sha256",
                 "label_sha256")


class PlanError(ValueError):
    """Settings or a manifest that cannot be planned; the message says what to change."""


@dataclass(frozen=True)
class Shard:
    shard_id: str
    condition: str
    index: int
    start: int  # [start, stop) into the plan's frame list
    stop: int
    shard_sha256: str

    @property
    def n_frames(self) -> int:
        return self.stop - self.start

    def ref(self) -> dict:
        """What the DAG maps over (small: no frame list)."""
        return {"shard_id": self.shard_id, "condition": self.condition, "index": self.index}


@dataclass(frozen=True)
class ShardPlan:
    conditions: tuple[str, ...]
    splits: tuple[str, ...]
    n_frames: int
    requested_shard_size: int
    shard_size: int
    max_shards: int
    frames_sha256: str  # hash of the ordered frame id list
    shards: tuple[Shard, ...] = field(default=())

    def chunks(self) -> list[tuple[int, int, int]]:
        """``(index, start, stop)`` of each chunk of the frame list: shard ``<condition>-<index>`` of every condition."""
        return sorted({(s.index, s.start, s.stop) for s in self.shards})

    @property
    def shard_size_grown(self) -> bool:
        return self.shard_size != self.requested_shard_size

    def to_doc(self) -> dict:
        doc = {"version": PLAN_VERSION, "conditions": list(self.conditions), "splits": list(self.splits),
               "n_frames": self.n_frames, "requested_shard_size": self.requested_shard_size,
               "shard_size": self.shard_size, "shard_size_grown": self.shard_size_grown,
               "max_shards": self.max_shards, "frames_sha256": self.frames_sha256, "n_shards": len(self.shards),
               "shards": [{**asdict(s), "n_frames": s.n_frames} for s in self.shards]}
        doc["plan_sha256"] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        return doc


def shard_name(condition: str, index: int) -> str:
    return f"{condition}-{index:04d}"


def parse_csv(value: str | list | tuple, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``"fog,rain"`` (or a list) as a tuple in the given order, duplicates dropped; unknown names refused."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(dict.fromkeys(i.strip() for i in items if i and i.strip()))
    if not out:
        raise PlanError(f"no {what} given: choose from {', '.join(allowed)}")
    unknown = [i for i in out if i not in allowed]
    if unknown:
        raise PlanError(f"unknown {what} {', '.join(map(repr, unknown))}: choose from {', '.join(allowed)}")
    return out


def select_sources(manifest, splits: tuple[str, ...]):
    """The clear frames of ``splits``, sorted by frame id, with the :data:`FRAME_COLUMNS` only."""
    rows = manifest.loc[(manifest["condition"] == SOURCE_CONDITION) & manifest["split"].isin(list(splits)),
                        [c for c in FRAME_COLUMNS if c in manifest.columns]]
    rows = rows.sort_values("frame_id", kind="stable").reset_index(drop=True)
    if not rows["frame_id"].is_unique:
        dup = rows.loc[rows["frame_id"].duplicated(), "frame_id"].head(5).tolist()
        raise PlanError(f"frame ids repeat in the manifest (e.g. {dup}): each frame must be planned once; "
                        "fix the dataset revision")
    return rows


def frames_sha256(frame_ids: list[str]) -> str:
    h = hashlib.sha256(b"argus-frames-v1\n")
    h.update("\n".join(frame_ids).encode())
    return h.hexdigest()


def shard_sha256(condition: str, chunk_sha256: str) -> str:
    """Identity of a shard: its condition and (through ``chunk_sha256``, :func:`frames_sha256`) its frame ids."""
    return hashlib.sha256(f"argus-shard-v1\n{condition}\n{chunk_sha256}".encode()).hexdigest()


def effective_shard_size(n_frames: int, n_conditions: int, shard_size: int, max_shards: int = MAX_SHARDS) -> int:
    """``shard_size``, grown just enough that ``n_conditions`` series of shards fit in ``max_shards``."""
    if shard_size < 1:
        raise PlanError(f"shard size must be at least 1 frame, got {shard_size}")
    if n_conditions > max_shards:
        raise PlanError(f"{n_conditions} conditions need at least as many shards, over the cap of {max_shards}")
    per_condition = max_shards // n_conditions
    if math.ceil(n_frames / shard_size) <= per_condition:
        return shard_size
    return math.ceil(n_frames / per_condition)


def plan_shards(frame_ids: list[str], conditions: tuple[str, ...], splits: tuple[str, ...], shard_size: int,
                max_shards: int = MAX_SHARDS) -> ShardPlan:
    """The plan over ``frame_ids`` (already sorted, unique: :func:`select_sources`), see the module docstring."""
    n = len(frame_ids)
    if n == 0:
        raise PlanError("no frames to plan")
    size = effective_shard_size(n, len(conditions), shard_size, max_shards)
    bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
    chunk_hashes = [frames_sha256(frame_ids[a:b]) for a, b in bounds]  # shared by every condition
    shards = tuple(Shard(shard_name(c, i), c, i, a, b, shard_sha256(c, chunk_hashes[i]))
                   for c in conditions for i, (a, b) in enumerate(bounds))
    return ShardPlan(tuple(conditions), tuple(splits), n, shard_size, size, max_shards, frames_sha256(frame_ids),
                     shards)


def find_shard(doc: dict, shard_id: str) -> dict:
    """The shard ``shard_id`` of a plan document (:meth:`ShardPlan.to_doc`); PlanError naming the plan's ids."""
    for s in doc.get("shards", []):
        if s["shard_id"] == shard_id:
            return s
    names = [s["shard_id"] for s in doc.get("shards", [])]
    have = f"{names[0]} .. {names[-1]} ({len(names)} shards)" if names else "no shards"
    raise PlanError(f"shard {shard_id!r} is not in this run's plan, which holds {have} for conditions "
                    f"{', '.join(doc.get('conditions', []))}: rerun plan-shards or pass one of its shard ids")
