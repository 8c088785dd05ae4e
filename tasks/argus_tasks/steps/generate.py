"""``argus-task generate --shard-id fog-0003 --seed S --strength X``: translate one shard's frames.

Reads the run's shard plan (``plan/shards.json`` and the shard's ``plan/frames/<index>.parquet``), the
model version pinned for the condition at the start of the run (``resolve/result.json``) and its
exported artifact (``export/<condition>/result.json``: path in the run store, sha256, version; run by
:func:`argus_tasks.models.export.load_runner`). For each frame of the shard it writes the generated
frame (PNG, the source's size; ``--strength`` blends it with the source in uint8 space, 1.0 = the
model's output) and the source label, byte-identical, under
``generate/outputs/<condition>/<model_version>/<config_hash>/`` (:mod:`argus_tasks.generation.writer`),
then the success marker ``generate/shards/<shard_id>.json`` listing every output with its sha256.

Idempotent: a rerun whose complete marker still matches its files returns at once (``reused``) without
loading the model; a retried shard keeps the frames an earlier try recorded (journal or marker) whose
files still hash as recorded and generates only the others. Writes are atomic, so a killed try leaves
nothing under an output name that is not a complete output.

Fails at once (exit 10) on: a shard id not in the plan, a plan older than the validated data, no
pinned model or export for the condition, an export of another version than the pinned one, an
artifact whose bytes do not match its hash, an unwritable output folder (named), a source frame that
does not decode (frame id and file named).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import time

from argus_tasks.contract import PermanentStepError, StepContext

HELP = "generate the adverse-weather frames of one shard with the run's exported model"
log = logging.getLogger("argus.generate")
PLAN_JSON = "plan/shards.json"
RESOLVE_JSON = "resolve/result.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard-id", required=True, help="a shard of plan/shards.json, e.g. fog-0003")
    p.add_argument("--seed", type=int, default=0, help="generation seed (part of the config hash)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="blend of generated and source frame in [0, 1] (1.0: the model's output, 0.0: the source)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    p.add_argument("--batch-size", type=int, default=16, help="frames per model call")
    p.add_argument("--io-workers", type=int, default=2, help="threads reading and writing frames beside the model")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1, or $ARGUS_TORCH_THREADS)")
    p.add_argument("--progress-every-s", type=float, default=5.0, help="seconds between progress lines in the log")


def default_runner_factory(artifact_path: str, device: str, seed: int):
    """The exported model as a callable (uint8 (N,H,W,3), frame ids) -> uint8 (N,H,W,3).

    Each frame's noise is seeded by the run's seed and the frame's id (``frame_seed``), so an output
    does not depend on the batch or shard it was made in, and a regenerated frame is the same frame.
    """
    from argus_tasks.models.export import frame_seed, load_runner

    runner = load_runner(artifact_path, device=device)

    def by_frame(frames, frame_ids):
        return runner(frames, [frame_seed(seed, fid) for fid in frame_ids])

    by_frame.takes_frame_ids = True
    return by_frame


def _read(run, relpath: str, what: str) -> dict:
    if not run.exists(relpath):
        raise PermanentStepError(f"{run.url(relpath)} is missing: {what}")
    return run.read_json(relpath)


def _shard_rows(run, plan: dict, shard: dict) -> list[dict]:
    import pandas as pd

    from argus_tasks.generation.shards import frames_sha256, shard_sha256

    rel = shard["frames_file"]
    if not run.exists(rel):
        raise PermanentStepError(f"{run.url(rel)}, the frame list of shard {shard['shard_id']}, is missing: "
                                 "rerun plan-shards")
    raw = run.read_bytes(rel)
    if hashlib.sha256(raw).hexdigest() != shard.get("frames_file_sha256"):
        raise PermanentStepError(f"{run.url(rel)} does not match {run.url(PLAN_JSON)}: rerun plan-shards")
    rows = pd.read_parquet(io.BytesIO(raw)).to_dict("records")
    ids = [str(r["frame_id"]) for r in rows]
    if shard_sha256(shard["condition"], frames_sha256(ids)) != shard["shard_sha256"]:
        raise PermanentStepError(f"the frames of shard {shard['shard_id']} in {run.url(rel)} are not the planned "
                                 "ones: rerun plan-shards")
    return rows


def _check_plan_is_current(run, plan: dict) -> None:
    from argus_tasks.data.access import RESULT

    if not run.exists(RESULT):
        raise PermanentStepError(f"{run.url(RESULT)} is missing: generate reads only validated source frames; "
                                 "run pull, validate and plan-shards first")
    now = run.read_json(RESULT).get("accepted_manifest_sha256")
    planned = plan.get("source", {}).get("accepted_manifest_sha256")
    if now != planned:
        raise PermanentStepError(f"the shard plan was made from accepted manifest {str(planned)[:12]}, but validate "
                                 f"now accepts {str(now)[:12]}: rerun plan-shards")


def _model(run, condition: str) -> tuple[dict, dict]:
    resolved = _read(run, RESOLVE_JSON, "the resolve step pins each condition's model version at the start of "
                     "the run; run it first").get("models", {})
    pinned = resolved.get(condition)
    if not pinned or not pinned.get("version"):
        raise PermanentStepError(f"no model version of {condition} pinned in {run.url(RESOLVE_JSON)} (pinned: "
                                 f"{', '.join(sorted(resolved)) or 'none'}): rerun resolve with {condition}")
    where = f"export/{condition}/result.json"
    export = _read(run, where, f"the model of {condition} was not exported in this run; run export first")
    if str(export.get("model_version")) != str(pinned["version"]):
        raise PermanentStepError(f"{run.url(where)} exported version {export.get('model_version')} of "
                                 f"{pinned.get('model_name', condition)}, but this run pinned version "
                                 f"{pinned['version']}: rerun export (one dataset never mixes two models)")
    for key in ("artifact", "sha256"):
        if not export.get(key):
            raise PermanentStepError(f"{run.url(where)} has no {key!r}: rerun export for {condition}")
    return pinned, export


def _artifact(run, export: dict) -> str:
    path = run.localize(export["artifact"])
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    except OSError as exc:
        raise PermanentStepError(f"exported artifact {run.url(export['artifact'])} cannot be read: {exc}; "
                                 "rerun export") from exc
    if h.hexdigest() != export["sha256"]:
        raise PermanentStepError(f"exported artifact {run.url(export['artifact'])} has sha256 {h.hexdigest()[:12]}, "
                                 f"not the exported {export['sha256'][:12]}: rerun export")
    return str(path)


def generate(run, shard_id: str, seed: int = 0, strength: float = 1.0, runner_factory=None,
             device: str = "auto", batch_size: int = 16, io_workers: int = 2, progress_every_s: float = 5.0,
             git_commit: str = "unknown") -> dict:
    """The step's work on ``run`` (a RunStore).

    ``runner_factory(artifact_path, device, seed)`` gives the model; None: :func:`default_runner_factory`
    (the exported artifact through ``load_runner``), looked up when called so tests may replace it.
    """
    from argus_tasks.generation import writer as W
    from argus_tasks.generation.pipeline import run_shard
    from argus_tasks.generation.shards import PlanError, find_shard

    plan = _read(run, PLAN_JSON, "run plan-shards first")
    try:
        shard = find_shard(plan, shard_id)
    except PlanError as exc:
        raise PermanentStepError(str(exc)) from exc
    _check_plan_is_current(run, plan)
    c = shard["condition"]
    rows = _shard_rows(run, plan, shard)
    frame_ids = [str(r["frame_id"]) for r in rows]
    pinned, export = _model(run, c)
    version = str(pinned["version"])
    config = W.generation_config(seed, strength)
    chash = W.config_hash(config)
    out_dir = W.output_dir(c, version, chash)
    key = {"model_name": pinned.get("model_name", f"argus-weather-{c}"), "model_version": version,
           "config_hash": chash, "config": config}
    outputs = W.ShardOutputs(run, shard, key, out_dir)
    base = {"shard_id": shard_id, "condition": c, "model_version": version, "n_frames": len(rows),
            "config_hash": chash, "output_dir": out_dir, "outputs": outputs.marker}
    if outputs.marker_matches() and all(outputs.keep(f, r.get("frame_sha256")) for f, r in zip(frame_ids, rows,
                                                                                                strict=True)):
        log.info("generate %s: reused: its marker %s is complete and all %d outputs match their hashes",
                 shard_id, run.url(outputs.marker), len(rows))
        return {**base, "n_written": 0, "n_reused": len(rows), "frames_per_s": 0.0, "reused": True}
    W.check_writable(run, out_dir)
    artifact = _artifact(run, export)
    started = time.perf_counter()
    runner = (runner_factory or default_runner_factory)(artifact, device, seed)
    log.info("generate %s: %d frames of %s with %s v%s (%s, loaded in %.1fs), config %s %s -> %s",
             shard_id, len(rows), c, key["model_name"], version, export["artifact"], time.perf_counter() - started,
             chash, config, run.url(out_dir))
    stats = run_shard(run, rows, runner, outputs, config["strength"], batch_size=batch_size, io_workers=io_workers,
                      progress_every_s=progress_every_s)
    outputs.save_marker(frame_ids, {
        "artifact": export["artifact"], "artifact_sha256": export["sha256"], "plan_sha256": plan.get("plan_sha256"),
        "source": plan.get("source", {}), "git_commit": git_commit,
        "stats": {"n_written": stats.n_written, "n_reused": stats.n_reused, "seconds": round(stats.seconds, 3),
                  "frames_per_s": stats.frames_per_s}})
    log.info("generate %s: %d written, %d kept, %.2f frames/s; marker %s", shard_id, stats.n_written, stats.n_reused,
             stats.frames_per_s, run.url(outputs.marker))
    return {**base, "n_written": stats.n_written, "n_reused": stats.n_reused, "frames_per_s": stats.frames_per_s,
            "reused": False}


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.system_metrics import log_metrics_quietly, shard_run

    set_threads(args.threads)
    # the shard's MLflow run carries its system metrics (CPU, memory, GPU); best effort, see system_metrics
    with shard_run(ctx, args.shard_id, condition=args.shard_id.rpartition("-")[0] or None) as mrun:
        result = generate(ctx.run, args.shard_id, seed=args.seed, strength=args.strength, device=args.device,
                          batch_size=args.batch_size, io_workers=args.io_workers,
                          progress_every_s=args.progress_every_s, git_commit=ctx.git_commit)
        if mrun is not None:
            log_metrics_quietly({k: float(result[k]) for k in ("n_frames", "n_written", "n_reused", "frames_per_s")},
                                f"generate {args.shard_id}")
    return result
