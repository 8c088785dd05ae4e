"""``argus-task hard-frames --condition C``: keep the set of C's repeatedly hard frames, and its gallery.

Reads the last ``--last-n`` evaluations of C from the store's score index
(:mod:`argus_tasks.hardframes.history`: the per-frame score files that ``evaluate`` and ``check-outputs``
wrote, this run's included), selects the frames in the worst ``--fraction`` of at least ``--min-hits``
of them (:mod:`argus_tasks.hardframes.selection`), groups them by their metadata, and versions the set:
``<store>/hardsets/<C>/<sha256>.json`` plus the ``latest.json`` pointer that the next ``train`` reads
(:mod:`argus_tasks.hardframes.versioning`). Same history and settings: same version, nothing new written.

Outputs in ``hard-frames/<C>/``: ``hard_set.json`` (the set and its version), ``hard_frames.parquet``
(one row per hard frame), ``gallery/index.html`` (self-contained). In MLflow, a ``hard-frames-<C>`` run
with the settings, the tag ``argus.hard_set``, the set as a dataset input (context ``hard-set``), the
gallery and the table.

Defaults of the settings come from the step's environment: ``ARGUS_HARD_LAST_N`` (5),
``ARGUS_HARD_FRACTION`` (0.2), ``ARGUS_HARD_MIN_HITS`` (2), ``ARGUS_HARD_SCORE`` (combined).
"""

from __future__ import annotations

import argparse
import logging
import os

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "select the condition's repeatedly hard frames over the last N evaluations, version them, draw a gallery"
log = logging.getLogger("argus.hard_frames")


def _env(name: str, default, cast):
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise PermanentStepError(f"{name}={raw!r} is not a valid {cast.__name__}: fix the deployment setting") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    from argus_tasks.hardframes.groups import TIME_BUCKETS
    from argus_tasks.hardframes.selection import SCORES

    p.add_argument("--condition", required=True, choices=CONDITIONS)
    p.add_argument("--last-n", type=int, default=_env("ARGUS_HARD_LAST_N", 5, int),
                   help="evaluations to look back over (default $ARGUS_HARD_LAST_N or 5)")
    p.add_argument("--fraction", type=float, default=_env("ARGUS_HARD_FRACTION", 0.2, float),
                   help="worst fraction of each evaluation that counts as a hit (default $ARGUS_HARD_FRACTION or 0.2)")
    p.add_argument("--min-hits", type=int, default=_env("ARGUS_HARD_MIN_HITS", 2, int),
                   help="hits a frame needs to be hard (default $ARGUS_HARD_MIN_HITS or 2)")
    p.add_argument("--score", choices=SCORES, default=os.environ.get("ARGUS_HARD_SCORE") or "combined",
                   help="what ranks frames: low fidelity, low realism, or both (default combined)")
    p.add_argument("--time-bucket", choices=TIME_BUCKETS, default="week", help="capture-time grouping")
    p.add_argument("--gallery-frames", type=int, default=48, help="most frames drawn in the gallery")


def _check(args) -> None:
    if args.score not in ("combined", "fidelity", "realism"):
        raise PermanentStepError(f"ARGUS_HARD_SCORE={args.score!r}: choose combined, fidelity or realism")
    if args.last_n < 1 or args.min_hits < 1 or not 0.0 < args.fraction <= 1.0:
        raise PermanentStepError(f"--last-n {args.last_n} and --min-hits {args.min_hits} must be >= 1 and "
                                 f"--fraction {args.fraction} within (0, 1]")
    if args.min_hits > args.last_n:
        raise PermanentStepError(f"--min-hits {args.min_hits} is more than --last-n {args.last_n}: no frame could "
                                 "ever be hard; lower ARGUS_HARD_MIN_HITS or raise ARGUS_HARD_LAST_N")


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    from argus_tasks.hardframes import gallery, gallery_data, hardset, history, versioning
    from argus_tasks.hardframes.selection import select
    from argus_tasks.hardframes.storage import StoreFiles

    _check(args)
    c, out = args.condition, f"hard-frames/{args.condition}"
    files = StoreFiles(ctx.store_root)
    evaluations, scored, entries = history.load(files, c, args.last_n, args.score)
    if not evaluations:
        log.warning("no per-frame scores of %s in %s yet: the hard set is empty", c, files.url(history.INDEX))
    selection = select(evaluations, args.last_n, args.fraction, args.min_hits)
    settings = {**selection.settings, "score": args.score, "time_bucket": args.time_bucket}
    content = hardset.build(c, selection, scored, entries, settings)
    stored = versioning.publish(files, c, content, by={"dag_id": ctx.dag_id, "run_id": ctx.run_id})
    sha = stored["sha"]
    log.info("hard set of %s: %d frames (in the worst %.0f%% of >= %d of the last %d evaluations%s), version %s "
             "(%s; latest %s)", c, len(content["frames"]), 100 * args.fraction, selection.required_hits,
             len(evaluations), ", provisional" if selection.provisional else "", sha[:12],
             "new" if stored["created"] else "existed", stored["latest"])
    for g in content["groups"].get("group", [])[:5]:
        log.info("  group %-32s %3d hard of %3d scored (lift %s)", g["value"], g["n_hard"], g["n_scored"], g["lift"])

    ctx.run.write_json(f"{out}/hard_set.json", {"sha": sha, **content})
    table = _frames_table(content)
    ctx.run.write_dataframe(f"{out}/hard_frames.parquet", table)
    cards, shown = gallery_data.sections(ctx.run, c, content, args.gallery_frames)
    page = gallery.render(condition=c, sha=sha, header=_header(ctx, content, args, selection), groups={
        k: content["groups"].get(k, []) for k in ("group", "dominant_classes", "brightness_bucket", "time_bucket",
                                                  "sequence")}, sections=cards, shown=shown,
        total=len(content["frames"]))
    gallery_url = ctx.run.write_text(f"{out}/gallery/index.html", page)
    mlflow_run = _log_mlflow(ctx, c, sha, content, table, stored, out)
    return {"condition": c, "hard_set": sha, "hard_set_path": stored["path"], "created": stored["created"],
            "latest_moved": stored["latest_moved"], "latest": stored["latest"],
            "previous_latest": stored["previous_latest"], "n_frames": len(content["frames"]),
            "n_evaluations": len(evaluations), "evaluations": [e["key"] for e in content["evaluations"]],
            "provisional": selection.provisional, "required_hits": selection.required_hits, "settings": settings,
            "top_groups": content["groups"].get("group", [])[:5], "oversampled_groups": content["oversample"]["keys"],
            "gallery": gallery_url, "gallery_frames": shown, "mlflow_run_id": mlflow_run}


def _header(ctx, content: dict, args, selection) -> list[str]:
    import html

    evals = content["evaluations"]
    rule = (f"{len(content['frames'])} frames in the worst {args.fraction:.0%} (by {args.score}) of at least "
            f"{selection.required_hits} of the last {len(evals)} evaluation(s)"
            + (f" — provisional: fewer than {args.last_n} evaluations so far" if selection.provisional else ""))
    models = ", ".join(sorted({e["model_key"] for e in evals if e.get("model_key")})) or "none"
    return [html.escape(rule), html.escape(f"run {ctx.dag_id}/{ctx.run_id} · models judged: {models} · "
                                           f"{content['n_frames_scored']} frames scored")]


def _frames_table(content: dict):
    import pandas as pd

    cols = ["frame_id", "hits", "seen", "mean_hardness", "last_hardness", "sequence", "split", "dominant_classes",
            "time_bucket", "brightness_bucket", "group", "label_fidelity", "realism_ratio", "last_evaluation"]
    table = pd.DataFrame(content["frames"], columns=cols)
    table["oversampled_group"] = table["group"].isin(content["oversample"]["keys"])
    return table


def _log_mlflow(ctx, c: str, sha: str, content: dict, table, stored: dict, out: str) -> str:
    import mlflow

    from argus_tasks.hardframes.record import log_table
    from argus_tasks.steps.train import log_params_once
    from argus_tasks.tracking import step_run

    with step_run(ctx, "hard-frames", c, tags={"argus.hard_set": sha}) as mrun:
        log_params_once(mrun, {"condition": c, **{f"hard.{k}": v for k, v in content["settings"].items()}})
        mlflow.log_metrics({"hard_frames": len(content["frames"]), "evaluations": len(content["evaluations"]),
                            "frames_scored": content["n_frames_scored"]})
        log_dataset(hard_set_dataset(table, c, sha, stored["path"]))
        mlflow.log_artifacts(str(ctx.run.localize(out)), artifact_path=f"hard_frames_{c}")
        if len(table):
            log_table(table, f"hard_frames_{c}/hard_frames.json")
        return mrun.info.run_id


def log_dataset(dataset) -> None:
    """``mlflow.log_input`` with context ``hard-set``, without MLflow's schema-inference hints in the log."""
    import warnings

    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_input(dataset, context="hard-set")


def hard_set_dataset(table, condition: str, sha: str, source: str):
    """The hard set as an MLflow dataset: named by condition, digest = the version's first 16 hex digits."""
    import warnings

    import mlflow

    with warnings.catch_warnings():  # MLflow's hints on source resolution and integer columns: noise here
        warnings.simplefilter("ignore", UserWarning)
        try:
            return mlflow.data.from_pandas(table, source=source, name=f"argus-hardset-{condition}", digest=sha[:16])
        except Exception as exc:  # a source URI scheme MLflow cannot resolve: keep the dataset, drop the source
            log.debug("dataset source %s not resolvable by MLflow (%s)", source, exc)
            return mlflow.data.from_pandas(table, name=f"argus-hardset-{condition}", digest=sha[:16])
