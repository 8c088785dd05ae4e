"""`argus-task segmenter`: make sure a trustworthy reference segmenter (the judge) exists, and pin it for the run.

The judge (:mod:`argus_tasks.models.segmenter`, trained as :mod:`argus_tasks.models.judge` says) learns
from the labelled training frames of every condition, clear and adverse, condition-balanced. It is
measured on the held-out (val+test) real frames of each condition of this run and must clear a floor
per condition: ``--min-miou`` on clear, ``--min-adverse-ratio`` x its clear mIoU on each adverse one.

The champion ``argus-downstream-segmenter@champion`` is reused when it was trained this way and at this
run's judge resolution; otherwise (none yet, an older clear-only judge, another resolution) a new
judge is trained, and so with ``--retrain``. Either way it must clear every floor on this run's
frames, or the step fails (PermanentStepError; a fresh judge that misses one is not registered).
Its per-condition mIoU, per-class IoU and floors are logged in MLflow (run ``segmenter``) and tagged
on the registered version. The version used is written to ``segmenter/result.json``; evaluate and
check-outputs read it, so every condition of a run is judged by the same version at its resolution.
"""

from __future__ import annotations

import argparse
import logging
import time

from argus_tasks.contract import PermanentStepError, StepContext

HELP = "train (when missing, outdated or asked) and pin the reference segmenter (the judge) of this run"
log = logging.getLogger("argus.segmenter")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retrain", action=argparse.BooleanOptionalAction, default=False,
                   help="train a new version even if a usable champion exists (--no-retrain: only when needed)")
    p.add_argument("--steps", type=int, default=400, help="optimiser steps when training (default 400)")
    p.add_argument("--min-miou", type=float, default=0.75, help="floor on clear val+test mIoU (default 0.75)")
    p.add_argument("--min-adverse-ratio", type=float, default=0.8,
                   help="floor on each adverse condition's val+test mIoU, as a fraction of the clear mIoU (default 0.8)")
    p.add_argument("--image-size", type=int, default=0,
                   help="square resolution the judge trains and judges at (default 0: the clear frames' native width)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1, or $ARGUS_TORCH_THREADS)")


def _move_champion(registry, version, previous, held, ctx) -> None:
    """Point the judge's champion at ``version`` (an audited move); a move that did not stick is retried (exit 75)."""
    from argus_tasks.contract import TransientStepError
    from argus_tasks.models.audit_trail import AuditTrail, who_of
    from argus_tasks.models.registry_adapter import CHAMPION, SEGMENTER_MODEL

    trail = AuditTrail(ctx.store_root, "judge", who_of(ctx), "a new reference segmenter (the judge) was registered",
                       {"run_folder": ctx.run.url(), "model_uri": f"models:/{SEGMENTER_MODEL}/{version}"})
    outcome, note = trail.move(registry, SEGMENTER_MODEL, CHAMPION, version, previous, held)
    log.info("%s", note)
    if outcome != "moved":
        raise TransientStepError(f"{note}; the step will be retried and pins the champion it then finds")


def _why_not_reuse(mv, size: int) -> str | None:
    """Why the registered judge ``mv`` is not one to reuse at ``size`` (None: it may be, if it clears the floors)."""
    from argus_tasks.models.judge import RECIPE

    tags = getattr(mv, "tags", None) or {}
    if tags.get("argus.judge_recipe") != RECIPE:
        return f"it was trained as {tags.get('argus.judge_recipe') or 'clear frames only (before issue 11)'}, not {RECIPE}"
    if tags.get("argus.image_size") != str(size):
        return f"it judges at {tags.get('argus.image_size')} px, this run at {size} px"
    return None


def _log_quality(mrun, params: dict, quality: dict, floors: dict, extra: dict) -> None:
    import mlflow

    from argus_tasks.steps.train import log_params_once

    log_params_once(mrun, params)
    metrics = dict(extra)
    for c, q in quality.items():
        metrics[f"miou_{c}"] = q["miou"]
        metrics[f"floor_{c}"] = floors[c]
        metrics.update({f"iou_{c}_{k}": v for k, v in q["per_class_iou"].items() if v is not None})
    metrics["clear_miou"] = quality["clear"]["miou"]
    mlflow.log_metrics(metrics)
    mlflow.log_dict({"quality": quality, "floors": floors}, "judge_quality.json")


def _result(version, trained: bool, content_hash: str, size: int, quality: dict, floors: dict, **extra) -> dict:
    from argus_tasks.models.judge import RECIPE
    from argus_tasks.models.registry_adapter import SEGMENTER_MODEL

    clear = quality["clear"]
    return {"model_name": SEGMENTER_MODEL, "version": str(version), "trained": trained, "content_hash": content_hash,
            "model_uri": f"models:/{SEGMENTER_MODEL}/{version}", "image_size": size, "recipe": RECIPE,
            "n_eval_frames": clear["n_frames"], "miou": clear["miou"], "per_class_iou": clear["per_class_iou"],
            "quality": quality, "floors": floors, **extra}


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    from argus_tasks.data.access import lineage, load_accepted
    from argus_tasks.models import frames as F
    from argus_tasks.models import judge as J
    from argus_tasks.models.registry_adapter import CHAMPION, SEGMENTER_MODEL, Registry, promotion_lock
    from argus_tasks.models.registry_lock import holder_label
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.models.segmenter import content_hash, default_device, train_segmenter
    from argus_tasks.models.segmenter_registry import LegacyPickledModel, load_version, log_torch_model
    from argus_tasks.tracking import step_run

    set_threads(args.threads)
    manifest, root = load_accepted(ctx.run)
    clear_train = F.select(manifest, "clear", J.TRAIN_SPLITS)
    F.require_rows(clear_train, "clear/train (judge training)", manifest)
    F.require_rows(F.select(manifest, "clear", J.EVAL_SPLITS), "clear/val+test (judge floor)", manifest)
    size = int(args.image_size or clear_train["width"].iloc[0])
    floors = J.JudgeFloors(min_clear_miou=args.min_miou, min_adverse_ratio=args.min_adverse_ratio)
    eval_sets = J.load_eval_sets(manifest, root, size)
    registry = Registry()
    run_identity = {"argus.dag_id": ctx.dag_id, "argus.run_id": ctx.run_id}
    params = {"steps": args.steps, "seed": args.seed, "image_size": size, "width": 16, "recipe": J.RECIPE,
              "min_clear_miou": args.min_miou, "min_adverse_ratio": args.min_adverse_ratio}

    # the judge's champion moves under its registry lock, shared by every deployment (the flock is a local fast path)
    with (promotion_lock(ctx.store_root, SEGMENTER_MODEL),
          registry.exclusive(SEGMENTER_MODEL, holder_label(f"{ctx.dag_id}/{ctx.run_id} segmenter")) as held):
        current = registry.alias(SEGMENTER_MODEL, CHAMPION)
        current_v = str(current.version) if current is not None else None
        mine = registry.find(SEGMENTER_MODEL, run_identity)  # a retry after this run registered its judge
        reuse = mine if (mine is not None or args.retrain) else current
        model = None
        if reuse is not None:
            why = None if reuse is mine else _why_not_reuse(reuse, size)
            if why is None:
                try:
                    model = load_version(registry, SEGMENTER_MODEL, reuse.version).to(default_device())
                except LegacyPickledModel as exc:  # an install from before safe loading: train a new judge
                    why = str(exc)
            if model is not None:
                quality = J.measure_conditions(model, eval_sets)
                failures = J.floor_failures(quality, floors)
                if failures:
                    raise PermanentStepError(
                        f"{SEGMENTER_MODEL} v{reuse.version} ({'registered by this run' if reuse is mine else 'champion'}) "
                        f"misses its floors on this run's val+test frames: {'; '.join(failures)}; run with --retrain "
                        "(Param retrain_segmenter), or lower the floors (Params judge_min_miou, judge_min_adverse_ratio)")
            if why is None:
                table = J.floors_table(quality, floors)
                log.info("using %s v%s (%s) at %d px: mIoU %s", SEGMENTER_MODEL, reuse.version,
                         "registered by this run" if reuse is mine else "champion", size, J.summary(quality))
                with step_run(ctx, "segmenter") as mrun:
                    _log_quality(mrun, {**params, "reused_version": reuse.version}, quality, table, {})
                if reuse is mine and current_v != str(mine.version):
                    _move_champion(registry, mine.version, current_v, held, ctx)
                return _result(reuse.version, False, reuse.tags.get("argus.content_hash", ""), size, quality, table,
                               mlflow_run_id=mrun.info.run_id)
            log.warning("not reusing %s v%s: %s. Training a new judge: from now on evaluate re-scores every "
                        "champion under it before any comparison.", SEGMENTER_MODEL, reuse.version, why)

        started = time.time()
        train_x, train_y, weights, counts = J.training_frames(manifest, root, size)
        log.info("training the judge on %d labelled frames (%s), condition-balanced, %d px, %d steps",
                 len(train_x), ", ".join(f"{c} {n}" for c, n in counts.items()), size, args.steps)
        model = train_segmenter(train_x.float() / 255.0, train_y, steps=args.steps, seed=args.seed,
                                frame_weights=weights)
        quality = J.measure_conditions(model, eval_sets)
        table = J.floors_table(quality, floors)
        digest = content_hash(model)
        log.info("judge trained in %.1fs: mIoU %s (floors %s), content hash %s", time.time() - started,
                 J.summary(quality), table, digest[:12])
        failures = J.floor_failures(quality, floors)
        if failures:
            raise PermanentStepError(
                f"the freshly trained judge misses its floors: {'; '.join(failures)} (per class: "
                f"{ {c: q['per_class_iou'] for c, q in quality.items()} }); train longer (--steps, Param "
                "judge_steps) or check the labels; nothing was registered")
        with step_run(ctx, "segmenter") as mrun:
            _log_quality(mrun, {**params, **{f"train_frames_{c}": n for c, n in counts.items()}}, quality, table,
                         {"train_seconds": time.time() - started})
            info = log_torch_model(model, "segmenter", size)
            tags = {**ctx.lineage_tags(), **{f"argus.{k}": v for k, v in lineage(ctx.run).items()},
                    "argus.content_hash": digest, "argus.clear_miou": f"{quality['clear']['miou']:.4f}",
                    "argus.judge_recipe": J.RECIPE, "argus.image_size": str(size),
                    **{f"argus.miou_{c}": f"{q['miou']:.4f}" for c, q in quality.items()}}
            mv, created = registry.register(SEGMENTER_MODEL, info.model_uri, mrun.info.run_id, run_identity, tags,
                                            description="reference semantic segmenter (the judge): trained on clear "
                                                        "and labelled adverse frames, judges generators")
            _move_champion(registry, mv.version, current_v, held, ctx)
        return _result(mv.version, True, digest, size, quality, table, created=created,
                       mlflow_run_id=mrun.info.run_id, n_train_frames=int(len(train_x)), train_frames=counts)
