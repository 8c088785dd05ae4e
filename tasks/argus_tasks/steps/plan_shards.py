"""``argus-task plan-shards --conditions fog,rain --splits test --shard-size N``: the generation run's shards.

Reads the validated source manifest of the run (:func:`argus_tasks.data.access.load_accepted`: only
frames validation accepted), takes its clear frames of ``--splits`` sorted by frame id and cuts them
into shards per condition (:mod:`argus_tasks.generation.shards`: deterministic, at most 1,000 shards in
all, the shard size grown and logged past that). Writes in the run store:

* ``plan/frames/<index>.parquet``: the frames of chunk ``index`` in order (id, split, sequence, size,
  paths, hashes), the frames of shard ``<condition>-<index>`` of every condition;
* ``plan/shards.json``: the plan (:meth:`ShardPlan.to_doc`), each shard with its chunk file and that
  file's sha256, and the source lineage (revision, commit, fingerprint, accepted manifest hash).

The result's ``shards`` list (``{"shard_id", "condition", "index"}`` each) is what the DAG maps
``generate`` over; frame lists stay in the store. A rerun on the same inputs writes the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import logging

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext
from argus_tasks.data.schema import SPLITS

HELP = "plan the shards of a generation run: clear frames of the selected splits, per condition"
log = logging.getLogger("argus.plan_shards")
PLAN_JSON = "plan/shards.json"
FRAMES_DIR = "plan/frames"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conditions", required=True, help=f"comma-separated conditions to generate ({','.join(CONDITIONS)})")
    p.add_argument("--splits", default="test", help=f"comma-separated source splits ({','.join(SPLITS)}); default test")
    p.add_argument("--shard-size", type=int, default=256, help="frames per shard (grown when the plan would pass "
                   "--max-shards)")
    p.add_argument("--max-shards", type=int, default=None,
                   help="cap on shards over all conditions (default 1000: Airflow's max_map_length is 1024)")


class _ManifestOnly:
    """A run store whose ``localize`` does not download: planning reads the manifest, never the frames."""

    def __init__(self, run):
        self._run = run

    def __getattr__(self, name):
        return getattr(self._run, name)

    def localize(self, relpath: str):
        return self._run.cache / relpath


def _selection_error(manifest, conditions, splits, lineage) -> PermanentStepError:
    counts = manifest.groupby(["condition", "split"]).size()
    clear = {s: int(counts.get(("clear", s), 0)) for s in SPLITS}
    return PermanentStepError(
        f"no clear frames in splits {', '.join(splits)} of source revision {lineage.get('dataset_rev') or '?'} "
        f"(accepted clear frames per split: {clear}; {len(manifest)} accepted frames in all): nothing to generate "
        f"for {', '.join(conditions)}. Choose splits that hold clear frames, or another dataset revision")


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import time

    from argus_tasks.data import access
    from argus_tasks.generation import shards as S

    try:
        conditions = S.parse_csv(args.conditions, CONDITIONS, "condition")
        splits = S.parse_csv(args.splits, SPLITS, "split")
    except S.PlanError as exc:
        raise PermanentStepError(str(exc)) from exc
    max_shards = args.max_shards or S.MAX_SHARDS
    started = time.perf_counter()
    manifest, _ = access.load_accepted(_ManifestOnly(ctx.run))
    lineage = access.lineage(ctx.run)
    validated = ctx.run.read_json(access.RESULT)
    rows = S.select_sources(manifest, splits)
    if rows.empty:
        raise _selection_error(manifest, conditions, splits, lineage)
    try:
        plan = S.plan_shards(rows["frame_id"].astype(str).tolist(), conditions, splits, args.shard_size, max_shards)
    except S.PlanError as exc:
        raise PermanentStepError(str(exc)) from exc
    if plan.shard_size_grown:
        log.warning("shard size grown from %d to %d frames: %d frames x %d condition(s) at %d would need %d shards, "
                    "over the cap of %d (Airflow's max_map_length); past that, see the scale-out route in "
                    "argus_tasks/generation/shards.py", plan.requested_shard_size, plan.shard_size, plan.n_frames,
                    len(conditions), plan.requested_shard_size,
                    len(conditions) * -(-plan.n_frames // plan.requested_shard_size), max_shards)
    doc = plan.to_doc()
    chunks = {}
    for index, start, stop in plan.chunks():
        data = _parquet(rows.iloc[start:stop])
        rel = f"{FRAMES_DIR}/{index:05d}.parquet"
        ctx.run.write_bytes(rel, data)
        chunks[index] = {"frames_file": rel, "frames_file_sha256": hashlib.sha256(data).hexdigest()}
    for shard in doc["shards"]:
        shard.update(chunks[shard["index"]])
    doc["source"] = {**lineage, "accepted_manifest_sha256": validated.get("accepted_manifest_sha256", "")}
    ctx.run.write_json(PLAN_JSON, doc)
    log.info("planned %d shard(s) of up to %d frames over %d clear frames of %s (revision %s) for %s in %.2fs; "
             "plan %s", len(plan.shards), plan.shard_size, plan.n_frames, ",".join(splits),
             lineage.get("dataset_rev") or "?", ",".join(conditions), time.perf_counter() - started,
             doc["plan_sha256"][:12])
    return {"shards": [s.ref() for s in plan.shards], "n_shards": len(plan.shards), "n_frames": plan.n_frames,
            "conditions": list(conditions), "splits": list(splits), "shard_size": plan.shard_size,
            "requested_shard_size": plan.requested_shard_size, "shard_size_grown": plan.shard_size_grown,
            "plan_sha256": doc["plan_sha256"], "dataset_revision": lineage.get("dataset_rev", ""),
            "plan": PLAN_JSON}


def _parquet(rows) -> bytes:
    """Deterministic bytes for the same rows (no pandas index, fixed writer settings)."""
    import io

    buf = io.BytesIO()
    rows.reset_index(drop=True).to_parquet(buf, index=False, compression="zstd")
    return buf.getvalue()
