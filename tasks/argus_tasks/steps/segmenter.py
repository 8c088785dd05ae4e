"""`argus-task segmenter`: make sure the reference segmenter exists, and pin its version for the run.

The segmenter (:mod:`argus_tasks.models.segmenter`) is trained on the accepted clear training
frames only when ``argus-downstream-segmenter@champion`` does not exist yet, or when
``--retrain`` is given. Either way it is measured on the accepted clear val+test frames of this
run and must clear ``--min-miou`` (a judge that cannot segment clear frames judges nothing).
The version used is written to ``segmenter/result.json``; evaluate reads it, so every condition
of a run uses the same version.
"""

from __future__ import annotations

import argparse
import logging
import time

from argus_tasks.contract import PermanentStepError, StepContext

HELP = "train (when missing or asked) and pin the reference segmenter of this run"
log = logging.getLogger("argus.segmenter")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retrain", action=argparse.BooleanOptionalAction, default=False,
                   help="train a new version even if a champion exists (--no-retrain: only when missing)")
    p.add_argument("--steps", type=int, default=130, help="optimiser steps when training (default 130)")
    p.add_argument("--min-miou", type=float, default=0.75, help="floor on clear val+test mIoU (default 0.75)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1, or $ARGUS_TORCH_THREADS)")


def _measure(model, frames, labels) -> dict:
    from argus_tasks.data.schema import CLASSES
    from argus_tasks.models import metrics as M
    from argus_tasks.models.segmenter import predict

    pred, _ = predict(model, frames.float() / 255.0)
    conf = M.confusion_per_frame(pred, model.map_labels(labels).numpy(), model.num_classes).sum(0)
    iou = M.iou_from_confusion(conf)
    return {"miou": M.mean_iou(conf),
            "per_class_iou": {CLASSES[i]: (None if iou[i] != iou[i] else round(float(iou[i]), 4))
                              for i in range(model.num_classes)}}


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


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import mlflow

    from argus_tasks.data.access import lineage, load_accepted
    from argus_tasks.models import frames as F
    from argus_tasks.models.registry_adapter import CHAMPION, SEGMENTER_MODEL, Registry, promotion_lock
    from argus_tasks.models.registry_lock import holder_label
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.models.segmenter import content_hash, default_device, train_segmenter
    from argus_tasks.models.segmenter_registry import LegacyPickledModel, load_version, log_torch_model
    from argus_tasks.tracking import step_run

    set_threads(args.threads)
    manifest, root = load_accepted(ctx.run)
    train_rows = F.select(manifest, "clear", ("train",))
    eval_rows = F.select(manifest, "clear", ("val", "test"))
    F.require_rows(train_rows, "clear/train (segmenter training)", manifest)
    F.require_rows(eval_rows, "clear/val+test (segmenter floor)", manifest)
    size = int(train_rows["width"].iloc[0])
    eval_x, eval_y = F.load_frames(root, eval_rows, size=size)
    registry = Registry()
    run_identity = {"argus.dag_id": ctx.dag_id, "argus.run_id": ctx.run_id}

    # the judge's champion moves under its registry lock, shared by every deployment (the flock is a local fast path)
    with (promotion_lock(ctx.store_root, SEGMENTER_MODEL),
          registry.exclusive(SEGMENTER_MODEL, holder_label(f"{ctx.dag_id}/{ctx.run_id} segmenter")) as held):
        current = registry.alias(SEGMENTER_MODEL, CHAMPION)
        current_v = str(current.version) if current is not None else None
        mine = registry.find(SEGMENTER_MODEL, run_identity) if args.retrain else None
        reuse = mine or (current if not args.retrain else None)
        if reuse is not None and mine is None:
            try:
                model = load_version(registry, SEGMENTER_MODEL, reuse.version)
            except LegacyPickledModel as exc:  # an install from before safe loading: train a new judge
                log.warning("not reusing the judge: %s. Training a new one (later comparisons use it).", exc)
                reuse = None
        elif reuse is not None:
            model = load_version(registry, SEGMENTER_MODEL, reuse.version)
        if reuse is not None:
            model = model.to(default_device())
            quality = _measure(model, eval_x, eval_y)
            log.info("using %s v%s (%s): clear mIoU %.4f on %d frames of this run", SEGMENTER_MODEL,
                     reuse.version, "registered by this run" if mine else "champion", quality["miou"], len(eval_rows))
            if quality["miou"] < args.min_miou:
                raise PermanentStepError(
                    f"{SEGMENTER_MODEL} v{reuse.version} reaches clear mIoU {quality['miou']:.3f} on this run's "
                    f"val+test frames, below the floor {args.min_miou}; run with --retrain (Param retrain_segmenter)")
            if mine is not None and current_v != str(mine.version):
                _move_champion(registry, mine.version, current_v, held, ctx)
            return {"model_name": SEGMENTER_MODEL, "version": str(reuse.version), "trained": False,
                    "content_hash": reuse.tags.get("argus.content_hash", ""), "model_uri":
                    f"models:/{SEGMENTER_MODEL}/{reuse.version}", "n_eval_frames": len(eval_rows), **quality}

        started = time.time()
        train_x, train_y = F.load_frames(root, train_rows, size=size)
        log.info("training the segmenter on %d clear frames (%d px), %d steps", len(train_rows), size, args.steps)
        model = train_segmenter(train_x.float() / 255.0, train_y, steps=args.steps, seed=args.seed)
        quality = _measure(model, eval_x, eval_y)
        digest = content_hash(model)
        log.info("segmenter trained in %.1fs: clear mIoU %.4f, content hash %s", time.time() - started,
                 quality["miou"], digest[:12])
        if quality["miou"] < args.min_miou:
            raise PermanentStepError(
                f"the freshly trained segmenter reaches clear mIoU {quality['miou']:.3f} < floor {args.min_miou} "
                f"on {len(eval_rows)} clear val+test frames (per class: {quality['per_class_iou']}); "
                "train longer (--steps) or check the labels; nothing was registered")
        with step_run(ctx, "segmenter") as mrun:
            mlflow.log_params({"steps": args.steps, "seed": args.seed, "train_frames": len(train_rows),
                               "eval_frames": len(eval_rows), "image_size": size, "width": 16})
            mlflow.log_metrics({"clear_miou": quality["miou"], "train_seconds": time.time() - started,
                                **{f"iou_{k}": v for k, v in quality["per_class_iou"].items() if v is not None}})
            info = log_torch_model(model, "segmenter", size)
            tags = {**ctx.lineage_tags(), **{f"argus.{k}": v for k, v in lineage(ctx.run).items()},
                    "argus.content_hash": digest, "argus.clear_miou": f"{quality['miou']:.4f}"}
            mv, created = registry.register(SEGMENTER_MODEL, info.model_uri, mrun.info.run_id, run_identity, tags,
                                            description="reference semantic segmenter (clear frames), judges generators")
            _move_champion(registry, mv.version, current_v, held, ctx)
        return {"model_name": SEGMENTER_MODEL, "version": str(mv.version), "trained": True, "created": created,
                "content_hash": digest, "model_uri": f"models:/{SEGMENTER_MODEL}/{mv.version}",
                "mlflow_run_id": mrun.info.run_id, "n_train_frames": len(train_rows),
                "n_eval_frames": len(eval_rows), **quality}
