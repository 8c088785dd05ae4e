"""`argus-task evaluate --condition C`: measure the challenger against the real C frames.

The evaluation set is frozen per dataset revision: every clear val+test frame of the pulled
revision as sources and every C val+test frame as the real adverse frames (pull brings the
revision's val+test frames of all intervals), sorted by id. ``--max-frames`` (off by default)
caps each side to a seeded subset of whole sequences, for quick runs. Fewer than
``--min-eval-frames`` frames on a side is a PermanentStepError. The list, its hash
(``eval_frames_sha256``, :func:`argus_tasks.models.frames.frame_list_sha256`) and the judge are
written to ``evaluate/<C>/eval_frames.json``.

With the segmenter version pinned by this run (the judge), it evaluates the challenger of this
run, the current champion of ``argus-weather-<C>`` (when there is one and it is another
version), every non-learned reference calibrated on the training split, and identity
(:mod:`argus_tasks.models.evaluation`), on the GPU when there is one (``--device auto``).
Outputs in ``evaluate/<C>/``:

* ``metrics.json``: metrics, sanity gates and per-class IoUs of every candidate, the frame-list
  hash (``eval_frames_sha256``) and the judge;
* ``per_class.csv``: the per-class table;
* ``records/<candidate>.npz`` + ``records/real.npz``: per-frame confusion counts (``conf``),
  features (``features``), ``frame_id`` and ``sequence`` (bootstrap-ready: promote resamples
  whole sequences);
* ``grids/<candidate>.png``: source | generated | real samples;
* ``frame_scores.parquet`` (also the MLflow table ``evaluate_<C>/frame_scores.json``): a score per
  frame and candidate, and ``records/challenger_thumbs.npz`` (:mod:`argus_tasks.hardframes.record`).

The challenger's registered version gets the judge and the frame list as tags
(``argus.judge_model``, ``argus.judge_version``, ``argus.eval_frames_sha256``,
``argus.eval_n_source``, ``argus.eval_n_real``). A challenger that fails its sanity gates still
gets its metrics written (promote refuses it).
"""

from __future__ import annotations

import argparse
import io
import json
import logging

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "evaluate the challenger, champion, references and identity of a condition on held-out frames"
log = logging.getLogger("argus.evaluate")
EVAL_SPLITS = ("val", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condition", required=True, choices=CONDITIONS)
    p.add_argument("--seed", type=int, default=0, help="seed of generator noise, KID subsets, calibration")
    p.add_argument("--max-frames", type=int, default=None,
                   help="cap on frames per side: a seeded subset of whole sequences (default: every val+test frame)")
    p.add_argument("--min-eval-frames", type=int, default=16,
                   help="fewest evaluation frames per side (clear sources, real condition frames); below: fail")
    p.add_argument("--calibration-frames", type=int, default=64, help="training frames per side to calibrate references")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the segmenter and generators run (auto: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64, help="frames per batch through generator and segmenter")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1, or $ARGUS_TORCH_THREADS)")


def _npz(**arrays) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _read_train_result(ctx, condition):
    where = f"train/{condition}/result.json"
    if not ctx.run.exists(where):
        raise PermanentStepError(f"{ctx.run.url(where)} is missing: the train step of {condition} has not "
                                 "completed in this run, so there is no challenger to evaluate")
    result = ctx.run.read_json(where)
    for key in ("model_name", "model_version"):
        if not result.get(key):
            raise PermanentStepError(f"{ctx.run.url(where)} has no {key!r}: rerun train for {condition}")
    return result


def resolve_device(choice: str):
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise PermanentStepError("--device cuda was asked for, but torch sees no CUDA device in this pod "
                                 f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device auto")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def _revision(ctx) -> str:
    from argus_tasks.data.access import PULL_JSON

    pulled = ctx.run.read_json(PULL_JSON) if ctx.run.exists(PULL_JSON) else {}
    return str(pulled.get("revision") or pulled.get("commit") or "?")


def _require_enough(rows, full, side: str, condition: str, args, revision: str) -> None:
    """At least ``--min-eval-frames`` evaluation frames on one side, or a PermanentStepError saying what to do."""
    if len(rows) >= args.min_eval_frames:
        return
    capped = (f"; --max-frames {args.max_frames} kept {len(rows)} of its {len(full)}" if len(full) > len(rows) else "")
    raise PermanentStepError(
        f"only {len(rows)} {condition} val+test frames ({side}) to evaluate {args.condition} on in dataset revision "
        f"{revision!r}{capped}, fewer than min_eval_frames={args.min_eval_frames}: add {condition} val/test frames "
        "to the dataset (a new revision), or lower the Param min_eval_frames (--min-eval-frames) for this run")


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import mlflow
    import numpy as np
    import torch

    from argus_tasks.data.access import load_accepted
    from argus_tasks.data.schema import CLASSES
    from argus_tasks.hardframes.record import log_table, score_evaluation
    from argus_tasks.models import frames as F
    from argus_tasks.models.evaluation import evaluate_candidate, real_side
    from argus_tasks.models.frame_stats import FrameRecorder
    from argus_tasks.models.generator import translate
    from argus_tasks.models.images import grid, png_bytes
    from argus_tasks.models.references import calibrated_references
    from argus_tasks.models.registry_adapter import CHAMPION, SEGMENTER_MODEL, Registry
    from argus_tasks.models.runtime import set_threads, single_thread
    from argus_tasks.models.segmenter_registry import load_version, pinned_segmenter
    from argus_tasks.steps.train import log_params_once
    from argus_tasks.tracking import step_run

    c, out = args.condition, f"evaluate/{args.condition}"
    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    log.info("evaluate %s on %s%s, %d CPU thread(s)", c, device,
             f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "", threads)
    trained = _read_train_result(ctx, c)
    manifest, root = load_accepted(ctx.run)
    revision = _revision(ctx)
    registry = Registry()
    segmenter, pinned = pinned_segmenter(ctx, registry)
    segmenter = segmenter.to(device)
    sides = {}
    for side, cond in (("source", "clear"), ("real", c)):
        full = F.select(manifest, cond, EVAL_SPLITS)
        F.require_rows(full, f"{cond}/val+test ({side} frames of the {c} evaluation)", manifest)
        rows = F.select_sequences(manifest, cond, EVAL_SPLITS, args.max_frames, args.seed)
        _require_enough(rows, full, side, cond, args, revision)
        sides[side] = rows
    source_rows, real_rows = sides["source"], sides["real"]
    source_seq, real_seq = F.sequences_of(source_rows), F.sequences_of(real_rows)
    if source_seq is None or real_seq is None:
        log.warning("some evaluation frames have no sequence id: promote will resample frames, not drives")
    eval_sha = F.frame_list_sha256(source=source_rows, real=real_rows)
    size = int(trained.get("config", {}).get("image_size") or source_rows["width"].iloc[0])
    judge = {"model_name": pinned.get("model_name", SEGMENTER_MODEL), "version": str(pinned["version"]),
             "content_hash": pinned.get("content_hash")}
    frame_list = {"source": source_rows["frame_id"].tolist(), "real": real_rows["frame_id"].tolist(),
                  "eval_frames_sha256": eval_sha, "dataset_revision": revision, "splits": list(EVAL_SPLITS),
                  "max_frames": args.max_frames, "min_eval_frames": args.min_eval_frames,
                  "n_source_sequences": int(source_rows["sequence"].nunique()),
                  "n_real_sequences": int(real_rows["sequence"].nunique()),
                  "seed": args.seed, "size": size, "segmenter_version": judge["version"], "judge": judge}
    ctx.run.write_json(f"{out}/eval_frames.json", frame_list)
    log.info("evaluation set of %s (revision %s): %d clear frames in %d sequences, %d %s frames in %d sequences; "
             "sha256 %s", c, revision, len(source_rows), frame_list["n_source_sequences"], len(real_rows), c,
             frame_list["n_real_sequences"], eval_sha)
    src_x, src_y = F.load_frames(root, source_rows, size=size, workers=threads)
    real_x, real_y = F.load_frames(root, real_rows, size=size, workers=threads)
    real = real_side(segmenter, real_x, real_y, device=device, batch_size=args.batch_size)

    # --- the candidates: challenger, champion, references, identity
    name = trained["model_name"]
    candidates: dict[str, dict] = {}  # key -> {callable, name, version, learned, content_hash}
    challenger = load_version(registry, name, trained["model_version"]).to(device)
    candidates["challenger"] = {"fn": lambda x, g=challenger: translate(g, x, seed=args.seed),
                                "name": f"{name} v{trained['model_version']}", "version": str(trained["model_version"]),
                                "learned": True, "content_hash": trained.get("content_hash")}
    champ_mv = registry.alias(name, CHAMPION)
    champion_error = None
    if champ_mv is not None and str(champ_mv.version) != str(trained["model_version"]):
        try:
            champion = load_version(registry, name, champ_mv.version).to(device)
        except PermanentStepError as exc:
            # recorded without metrics: promote then refuses (fails closed) and says why
            champion_error = f"champion v{champ_mv.version} could not be loaded: {exc}"
            log.error("%s", champion_error)
        else:
            candidates["champion"] = {"fn": lambda x, g=champion: translate(g, x, seed=args.seed),
                                      "name": f"{name} v{champ_mv.version}", "version": str(champ_mv.version),
                                      "learned": True, "content_hash": champ_mv.tags.get("argus.content_hash")}
    cal_clear, _ = F.load_frames(root, F.select(manifest, "clear", ("train",), args.calibration_frames, args.seed),
                                 size=size, labels=False)
    cal_adv, _ = F.load_frames(root, F.select(manifest, c, ("train",), args.calibration_frames, args.seed),
                               size=size, labels=False)
    if len(cal_clear) == 0 or len(cal_adv) == 0:
        raise PermanentStepError(f"no clear/{c} training frames to calibrate the references on")
    with single_thread():  # thousands of tiny tensor ops: threads only add waiting
        refs = calibrated_references(c, cal_clear.float() / 255.0, cal_adv.float() / 255.0, seed=args.seed)
    for ref_name, ref in refs.items():
        key = ref_name if ref_name == "identity" else f"ref_{ref_name}"
        # the references draw their noise from a CPU generator: they run on the CPU (cheap image statistics)
        candidates[key] = {"fn": lambda x, r=ref: r(x.cpu(), torch.Generator().manual_seed(args.seed)),
                           "name": ref_name, "version": None, "learned": False, "content_hash": None,
                           "params": ref.to_dict()["params"]}

    records, recorders = {}, {}  # recorders: per-frame change, finiteness, the challenger's thumbnails
    for key, cand in candidates.items():
        recorders[key] = FrameRecorder(thumbnails=key == "challenger")
        rec = evaluate_candidate(cand["name"], recorders[key].wrap(cand["fn"]), segmenter, src_x, src_y, real, CLASSES, seed=args.seed,
                                 device=device, batch_size=args.batch_size)
        records[key] = rec
        m = rec.metrics
        log.info("%-22s KID %.5f  class-wise gap %.4f  aggregate gap %.4f  label preservation %.4f  sanity %s",
                 key, m["kid"], m["classwise_gap"], m["aggregate_gap"], m["label_preservation"],
                 "ok" if all(rec.sanity.values()) else f"FAILED {rec.sanity}")

    # --- artifacts
    ids = {"source": np.asarray(source_rows["frame_id"].astype(str).tolist(), dtype=str),
           "real": np.asarray(real_rows["frame_id"].astype(str).tolist(), dtype=str)}
    seqs = {"source": {} if source_seq is None else {"sequence": source_seq},
            "real": {} if real_seq is None else {"sequence": real_seq}}
    ctx.run.write_bytes(f"{out}/records/real.npz", _npz(conf=real.conf, features=real.features,
                                                        frame_id=ids["real"], **seqs["real"]))
    table_rows = ["candidate,class,iou_generated,iou_real,abs_gap"]
    metrics_doc = {"condition": c, "eval_frames_sha256": eval_sha, "dataset_revision": revision,
                   "frames": {"n_source": len(source_rows), "n_real": len(real_rows),
                              "n_source_sequences": frame_list["n_source_sequences"],
                              "n_real_sequences": frame_list["n_real_sequences"], "eval_frames_sha256": eval_sha},
                   "segmenter": {k: pinned.get(k) for k in ("model_name", "version", "content_hash", "miou")},
                   "judge": judge, "device": str(device),
                   "seed": args.seed, "challenger_version": str(trained["model_version"]),
                   "champion_version": candidates.get("champion", {}).get("version"),
                   "model_name": name, "model_config": trained.get("model_config"), "candidates": {}}
    n_grid = min(6, len(src_x), len(real_x))
    for key, rec in records.items():
        cand = candidates[key]
        ctx.run.write_bytes(f"{out}/records/{key}.npz", _npz(conf=rec.gen_conf, features=rec.features,
                                                             frame_id=ids["source"], **seqs["source"]))
        ctx.run.write_bytes(f"{out}/grids/{key}.png", png_bytes(
            grid([src_x[:n_grid], rec.samples[:n_grid], real_x[:n_grid]])))
        metrics_doc["candidates"][key] = {
            "name": cand["name"], "version": cand["version"], "learned": cand["learned"],
            "content_hash": cand["content_hash"], "metrics": rec.metrics, "sanity": rec.sanity,
            "per_class": rec.per_class, "records": f"records/{key}.npz", "grid": f"grids/{key}.png",
            **({"params": cand["params"]} if "params" in cand else {})}
        for cls, v in rec.per_class.items():
            table_rows.append(f"{key},{cls},{v['iou_generated']:.4f},{v['iou_real']:.4f},{v['abs_gap']:.4f}")
    if champion_error is not None:
        metrics_doc["champion_version"] = str(champ_mv.version)
        metrics_doc["candidates"]["champion"] = {"name": f"{name} v{champ_mv.version}",
                                                 "version": str(champ_mv.version), "learned": True,
                                                 "error": champion_error, "metrics": None, "sanity": None}
    ctx.run.write_text(f"{out}/per_class.csv", "\n".join(table_rows) + "\n")
    ctx.run.write_json(f"{out}/metrics.json", metrics_doc)
    scores = score_evaluation(ctx, c, records=records, recorders=recorders, candidates=candidates,
                              source_rows=source_rows, source_labels=src_y, real_features=real.features,
                              real_rows=real_rows, judge=judge, eval_sha=eval_sha, out=out, model_name=name)
    local = ctx.run.publish(out)

    with step_run(ctx, "evaluate", c) as mrun:
        # a rerun reopens this MLflow run, maybe against another champion: MLflow params are immutable
        log_params_once(mrun, {"condition": c, "seed": args.seed, "n_source": len(source_rows), "n_real": len(real_rows),
                           "segmenter_version": pinned["version"], "challenger_version": trained["model_version"],
                           "champion_version": metrics_doc["champion_version"] or "none",
                           "eval_frames_sha256": eval_sha, "dataset_revision": revision, "device": str(device)})
        for key, rec in records.items():
            mlflow.log_metrics({f"{key}.{k}": float(v) for k, v in rec.metrics.items()})
        mlflow.log_artifacts(str(ctx.run.localize(out)), artifact_path=f"evaluate_{c}")
        mlflow.log_text(json.dumps(metrics_doc, indent=2, default=str), f"evaluate_{c}/metrics.json")
        log_table(scores["table"], f"evaluate_{c}/frame_scores.json")

    # judge lineage on the challenger's registered version: who judged it, on which frames
    lineage = {"argus.judge_model": judge["model_name"], "argus.judge_version": judge["version"],
               "argus.eval_frames_sha256": eval_sha, "argus.eval_n_source": str(len(source_rows)),
               "argus.eval_n_real": str(len(real_rows))}
    registry.set_tags(name, trained["model_version"], lineage)
    log.info("tagged %s v%s with its judge and evaluation frames: %s", name, trained["model_version"], lineage)

    chal = records["challenger"]
    summary = {key: {k: rec.metrics[k] for k in ("kid", "classwise_gap", "aggregate_gap", "label_preservation")}
               for key, rec in records.items()}
    return {"condition": c, "challenger_version": str(trained["model_version"]), "model_name": name,
            "champion_version": metrics_doc["champion_version"], "segmenter_version": pinned["version"],
            "judge": judge, "eval_frames_sha256": eval_sha, "n_source": len(source_rows), "n_real": len(real_rows),
            "device": str(device),
            **({"champion_error": champion_error} if champion_error else {}),
            "sanity_passed": all(chal.sanity.values()), "sanity": chal.sanity, "metrics": summary,
            "metrics_file": ctx.run.url(f"{out}/metrics.json"), "artifacts": local,
            "frame_scores": scores["frame_scores"], "challenger_flagged_frames": scores["challenger_flagged"],
            "mlflow_run_id": mrun.info.run_id}
