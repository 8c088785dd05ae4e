"""``argus-task rollback-check --condition C --target previous|N --reason ...``: may this version be restored?

Resolves the target once per run (``previous``: the champion before the current one, from the
audit log's champion stack, :mod:`argus_tasks.models.rollback_target`), records it in
``rollback-check/<C>/resolution.json`` (a rerun of the run, or a retry, checks the same version even
though ``previous`` would now name another one) and checks, before anything moves:

1. the target's model files are complete and load safely, its lineage tags and training run are
   there (:func:`argus_tasks.models.version_check.check_version`);
2. it was champion before (the audit log, or promote's tags for older moves), unless ``--force``;
3. a quick re-evaluation under the judge this run pinned (``segmenter``) on a small subset of the
   validated val+test frames (``--max-frames`` per side, whole drives) passes evaluate's sanity
   gates (:func:`argus_tasks.models.evaluation.evaluate_candidate`).

Every failed check is named in one PermanentStepError (exit 10), with ``check.json`` written, and
nothing moves. The result (``target_version``, ``champion_at_check``, the checks, the re-evaluation
metrics) is what the approval shows and what ``argus-task rollback`` applies. A target that is
already champion passes with ``already_champion: true`` (the rollback then moves nothing).
"""

from __future__ import annotations

import argparse
import logging

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "check that a former champion can be restored (files, lineage, was champion, sanity gates)"
log = logging.getLogger("argus.rollback_check")
EVAL_SPLITS = ("val", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condition", required=True, choices=CONDITIONS)
    p.add_argument("--target", default="previous", help="'previous' (the champion before the current one) or N")
    p.add_argument("--reason", default="", help="why the champion is rolled back (required, recorded in the audit log)")
    p.add_argument("--force", action=argparse.BooleanOptionalAction, default=False,
                   help="allow a target that was never champion")
    p.add_argument("--max-frames", type=int, default=64,
                   help="frames per side of the quick re-evaluation (whole drives; default 64: the no-collapse gate "
                        "measures a feature variance, unreliable on a handful of frames)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1, or $ARGUS_TORCH_THREADS)")


def require_reason(text: str) -> str:
    reason = " ".join(str(text or "").split())
    if not reason:
        raise PermanentStepError("--reason is empty: a rollback must say why (it is recorded in the audit log); "
                                 "give the Param reason")
    return reason


def _resolution(ctx, out: str, request: str, force: bool, entries, current, epoch) -> dict:
    from argus_tasks.models.rollback_target import resolve_target

    rel = f"{out}/resolution.json"
    if ctx.run.exists(rel):
        earlier = ctx.run.read_json(rel)
        if (earlier.get("request"), earlier.get("force")) == (request, force):
            log.info("reusing this run's resolution: %s -> v%s (%s)", request, earlier["target"], earlier["how"])
            return {**earlier, "reused": True}
        raise PermanentStepError(f"this run resolved the rollback as {earlier.get('request')!r} -> v{earlier['target']} "
                                 f"already; it cannot switch to {request!r}: trigger a new run")
    target, how = resolve_target(request, entries, current, epoch)
    doc = {"request": request, "force": force, "target": target, "how": how, "champion_at_check": current}
    ctx.run.write_json(rel, doc)
    return {**doc, "reused": False}


def _reevaluate(ctx, args, registry, model, mv) -> dict:
    """Evaluate's sanity gates (and its metrics) of ``model`` on a small validated subset, under the pinned judge."""
    import torch

    from argus_tasks.data.access import load_accepted
    from argus_tasks.data.schema import CLASSES
    from argus_tasks.models import frames as F
    from argus_tasks.models.evaluation import evaluate_candidate, real_side
    from argus_tasks.models.generator import translate
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.models.segmenter_registry import pinned_segmenter
    from argus_tasks.steps.evaluate import resolve_device

    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    manifest, root = load_accepted(ctx.run)
    segmenter, pinned = pinned_segmenter(ctx, registry)
    segmenter = segmenter.to(device)
    rows = {}
    for side, cond in (("source", "clear"), ("real", args.condition)):
        rows[side] = F.select_sequences(manifest, cond, EVAL_SPLITS, args.max_frames, args.seed)
        F.require_rows(rows[side], f"{cond}/val+test (the rollback check's {side} frames)", manifest)
    run_id = (mv.tags or {}).get("argus.mlflow_run_id")
    params = registry.client.get_run(run_id).data.params if run_id else {}
    size = int(params.get("cfg.image_size") or rows["source"]["width"].iloc[0])
    src_x, src_y = F.load_frames(root, rows["source"], size=size, workers=threads)
    real_x, real_y = F.load_frames(root, rows["real"], size=size, workers=threads)
    real = real_side(segmenter, real_x, real_y, device=device)
    model = model.to(device)
    with torch.inference_mode():
        rec = evaluate_candidate(f"v{mv.version}", lambda x: translate(model, x, seed=args.seed), segmenter, src_x,
                                 src_y, real, CLASSES, seed=args.seed, device=device)
    seqs = {side: F.sequences_of(r) for side, r in rows.items()}
    return {"sanity": rec.sanity, "passed": all(rec.sanity.values()),
            "metrics": {k: float(v) for k, v in rec.metrics.items()},
            "judge": {"model_name": pinned.get("model_name"), "version": str(pinned["version"])},
            "n_source": len(rows["source"]), "n_real": len(rows["real"]), "device": str(device),
            "record": {"conf": rec.gen_conf, "features": rec.features, "sequence": seqs["source"]},
            "real": {"conf": real.conf, "features": real.features, "sequence": seqs["real"]}}


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import mlflow

    from argus_tasks.models.champion_history import model_point, record_point
    from argus_tasks.models.registry_adapter import CHAMPION, Registry, weather_model_name
    from argus_tasks.models.rollback_target import parse_target, was_champion
    from argus_tasks.models.version_check import check_version
    from argus_tasks.steps.audit import load_log
    from argus_tasks.tracking import step_run

    c, out = args.condition, f"rollback-check/{args.condition}"
    reason, request = require_reason(args.reason), parse_target(args.target)
    registry, name = Registry(), weather_model_name(c)
    log_doc = load_log(ctx, registry, name)
    current = log_doc["champion"]
    if current is None:
        raise PermanentStepError(f"{name} has no champion: there is nothing to roll back")
    epoch = registry.epoch(name, CHAMPION)
    res = _resolution(ctx, out, request, bool(args.force), log_doc["entries"], current, epoch)
    target = res["target"]
    log.info("rollback of %s: champion v%s, target v%s (%s)", name, current, target, res["how"])
    mv, model, problems = check_version(registry, name, target)
    evidence = was_champion(target, log_doc["entries"], dict(getattr(mv, "tags", None) or {}), epoch) if mv else None
    if mv is not None and evidence is None and not args.force:
        problems.append(f"v{target} was never champion of {name} (no audit entry or promotion tag says so): set "
                        "force to restore it anyway")
    checks = {"files_and_lineage": [p for p in problems if "never champion" not in p] or "ok",
              "was_champion": evidence or ("forced" if args.force else "no")}
    sanity = None
    if not problems:
        sanity = _reevaluate(ctx, args, registry, model, mv)
        checks["sanity_gates"] = sanity["sanity"]
        if not sanity["passed"]:
            failed = sorted(g for g, ok in sanity["sanity"].items() if not ok)
            problems.append(f"v{target} fails the sanity gates under judge v{sanity['judge']['version']} on "
                            f"{sanity['n_source']} frames: {', '.join(failed)}")
    doc = {"condition": c, "model_name": name, "target_version": target, "requested": request, "how": res["how"],
           "champion_at_check": res["champion_at_check"], "already_champion": target == current,
           "reason": reason, "force": bool(args.force), "checks": checks, "problems": problems,
           "passed": not problems, "resolution_reused": res["reused"]}
    if sanity is not None:
        doc.update({k: sanity[k] for k in ("metrics", "judge", "n_source", "n_real", "device")})
    ctx.run.write_json(f"{out}/check.json", doc)
    if problems:
        raise PermanentStepError(f"rollback of {name} to v{target} refused, nothing moved: " + "; ".join(problems))
    point = model_point("rollback_target", target, sanity["metrics"], sanity["record"], sanity["real"])
    record_point(ctx.store_root, name, ctx, "rollback-check", [point],
                 {"judge": sanity["judge"], "n_source": sanity["n_source"], "n_real": sanity["n_real"]})
    with step_run(ctx, "rollback-check", c) as mrun:
        mlflow.set_tags({"argus.rollback_target": target, "argus.champion_at_check": current})
        mlflow.log_metrics({f"target.{k}": v for k, v in sanity["metrics"].items() if v == v})
        mlflow.log_dict(doc, f"rollback_check_{c}/check.json")
    log.info("rollback check of %s v%s passed: %s", name, target, checks)
    return {**doc, "check": ctx.run.url(f"{out}/check.json"), "mlflow_run_id": mrun.info.run_id}
