"""``argus-task check-outputs``: the Great Expectations gate between generation and publishing.

Reads every output of the run's shard markers (:mod:`argus_tasks.generation.shard_reader`; a
planned shard without a marker fails the step: a partial run is never checked), measures each frame
against its source in the run's accepted manifest (:mod:`argus_tasks.generation.qa`: decodes at the
source's size, not blank, a plausible change from the source, the label byte-identical to the
source's, the judge segmenter's label fidelity) and runs the GX checkpoint ``argus_output_gate``
(:mod:`argus_tasks.generation.qa_gate`). Then it decides:

* every frame good: ``check-outputs/accepted.parquet`` lists them all (in ``schema.OUTPUT_MANIFEST_COLUMNS``
  plus ``run_frame_path``, ``run_label_path`` and ``shard_id``), outcome ``passed``;
* in each condition, a bad fraction at or below ``--max-bad-fraction``: the bad frames are listed
  with their reasons in ``check-outputs/flagged.parquet`` and left out of the accepted list, outcome ``flagged``;
* more bad frames in any condition, or a dataset-level failure: a permanent error naming each failed
  expectation, up to 10 example frames with their reasons, and the Data Docs page.

``check-outputs/scores.parquet`` (every frame: fidelity, change, contrast, flagged, reasons) feeds the report;
``check-outputs/frame_scores.parquet`` (and the MLflow table ``check/frame_scores.json``) are the per-frame scores
of the hard-frame flywheel (:mod:`argus_tasks.hardframes.record_generation`).
The judge is the segmenter version pinned by this run (``segmenter/result.json``), else
``--judge-version``, else the judge that evaluated the run's model versions (as export does), else
the judge's champion now; the result records which (``judge.pinned_by``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging

from argus_tasks.contract import PermanentStepError, StepContext
from argus_tasks.data.schema import GENERATED_CHANGE_RANGE, OUTPUT_CONDITIONS, OUTPUT_MANIFEST_COLUMNS

HELP = "check the generated frames with the GX output suite; flag a few bad frames or fail the run"
log = logging.getLogger("argus.check_outputs")

OUT = "check-outputs"  # the step's folder, where the CLI writes its result.json / failure.json too
RESULT, ACCEPTED, FLAGGED, SCORES = (f"{OUT}/result.json", f"{OUT}/accepted.parquet", f"{OUT}/flagged.parquet",
                                     f"{OUT}/scores.parquet")
RESOLVED = "resolve/result.json"
STALE = (RESULT, f"{OUT}/failure.json", ACCEPTED, FLAGGED, SCORES, f"{OUT}/frame_scores.parquet")
MAX_EXAMPLES = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conditions", required=True, help="comma-separated conditions whose outputs are checked")
    p.add_argument("--max-bad-fraction", type=float, default=0.05,
                   help="largest fraction of bad frames per condition that is flagged and excluded instead of "
                        "failing the run (default 0.05)")
    p.add_argument("--min-fidelity", type=float, default=0.3,
                   help="per-frame label fidelity floor: mIoU of the judge on the generated frame (default 0.3)")
    p.add_argument("--min-change", type=float, default=GENERATED_CHANGE_RANGE[0],
                   help=f"least mean absolute change from the source, RGB in [0, 1] (default {GENERATED_CHANGE_RANGE[0]})")
    p.add_argument("--max-change", type=float, default=GENERATED_CHANGE_RANGE[1],
                   help=f"largest mean absolute change from the source (default {GENERATED_CHANGE_RANGE[1]})")
    p.add_argument("--judge-version", default="",
                   help="judge segmenter version when the run pinned none (default: the judge's champion)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the judge runs")
    p.add_argument("--batch-size", type=int, default=64, help="frames per judge batch")
    p.add_argument("--workers", type=int, default=None, help="processes for the file checks (default: CPUs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1, or $ARGUS_TORCH_THREADS)")


def parse_conditions(text: str) -> list[str]:
    conditions = list(dict.fromkeys(c.strip() for c in str(text).split(",") if c.strip()))
    unknown = [c for c in conditions if c not in OUTPUT_CONDITIONS]
    if not conditions or unknown:
        raise PermanentStepError(f"--conditions {text!r}: give one or more of {', '.join(OUTPUT_CONDITIONS)}"
                                 + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return conditions


def _remove(run, relpath: str) -> None:
    """Withdraw an output of an earlier try, so a failing rerun never leaves a stale accept behind."""
    (run.cache / relpath).unlink(missing_ok=True)
    if run.remote and run.fs.exists(run.url(relpath)):
        run.fs.rm(run.url(relpath))


def _judge(ctx, version: str, models: dict[str, dict]):
    """(judge model, {"model_name", "version", "content_hash", "pinned_by"}): the segmenter this run pinned
    (``segmenter/result.json``); else ``--judge-version``; else the judge that evaluated the run's model versions
    (their ``argus.judge_version`` tag, when they agree); else the judge's champion now."""
    from argus_tasks.models.registry_adapter import CHAMPION, SEGMENTER_MODEL, Registry
    from argus_tasks.models.segmenter_registry import RESULT as PINNED
    from argus_tasks.models.segmenter_registry import load_version, pinned_segmenter

    registry = Registry()
    if ctx.run.exists(PINNED):
        model, pinned = pinned_segmenter(ctx, registry)
        return model, {"model_name": pinned.get("model_name", SEGMENTER_MODEL), "version": str(pinned["version"]),
                       "content_hash": pinned.get("content_hash", ""), "pinned_by": PINNED}
    how = "--judge-version"
    if not version:
        judged = {_judged_by(registry, m["model_name"], m["model_version"]) for m in models.values()}
        if len(judged) == 1 and None not in judged:
            version, how = judged.pop(), "the judge that evaluated the run's model versions"
    if not version:
        mv = registry.alias(SEGMENTER_MODEL, CHAMPION)
        if mv is None:
            raise PermanentStepError(f"no judge: this run pinned no segmenter ({ctx.run.url(PINNED)}), no "
                                     f"--judge-version was given and {SEGMENTER_MODEL}@{CHAMPION} does not exist; "
                                     "run `argus-task segmenter` first")
        version, how = str(mv.version), f"{SEGMENTER_MODEL}@{CHAMPION}"
    mv = registry.version(SEGMENTER_MODEL, version)
    return load_version(registry, SEGMENTER_MODEL, version), {
        "model_name": SEGMENTER_MODEL, "version": str(version),
        "content_hash": (mv.tags or {}).get("argus.content_hash", ""), "pinned_by": how}


def _judged_by(registry, name: str, version: str) -> str | None:
    """The ``argus.judge_version`` tag of a model version (None when it has none or is not registered here)."""
    try:
        return (registry.version(name, version).tags or {}).get("argus.judge_version")
    except PermanentStepError:
        return None


def one_model_per_condition(run, table) -> dict[str, dict]:
    """{condition: {"model_name", "model_version"}}: one model made all of a condition's frames, the one the run
    pinned (``resolve/result.json``, when there is one); otherwise a PermanentStepError: never mix two models."""
    pinned = (run.read_json(RESOLVED) if run.exists(RESOLVED) else {}).get("models", {})
    models = {}
    for c, group in table.groupby("condition"):
        found = sorted(set(zip(group["model_name"], group["model_version"], strict=True)))
        want = pinned.get(c)
        if len(found) > 1 or (want and found != [(want.get("model_name", found[0][0]), str(want.get("version")))]):
            raise PermanentStepError(
                f"the {c} outputs come from {', '.join(f'{n} v{v}' for n, v in found)}"
                + (f", but the run pinned {want.get('model_name', '')} v{want.get('version')} ({run.url(RESOLVED)})"
                   if want else "") + ": one dataset never mixes two models; rerun the generation of the shards "
                                      "made with another version")
        models[str(c)] = {"model_name": found[0][0], "model_version": found[0][1]}
    return models


def _flagged_table(outputs, checks, bad_rows: dict[int, list[str]]):
    import pandas as pd

    rows = sorted(bad_rows)
    pick = outputs.iloc[rows] if rows else outputs.iloc[0:0]
    return pd.DataFrame({
        "row": pd.array(rows, dtype="int64"), "frame_id": pd.array(pick["frame_id"].tolist(), dtype="string"),
        "condition": pd.array(pick["condition"].tolist(), dtype="string"),
        "source_frame_id": pd.array(pick["source_frame_id"].tolist(), dtype="string"),
        "shard_id": pd.array(pick["shard_id"].tolist(), dtype="string"),
        "output": pd.array(pick["output"].tolist(), dtype="string"),
        "label_fidelity": pd.array(checks["label_fidelity"].iloc[rows].tolist(), dtype="float64"),
        "reasons": pd.array(["; ".join(bad_rows[r]) for r in rows], dtype="string")})


def _per_condition(outputs, bad_rows, conditions) -> dict:
    bad = outputs.index.isin(list(bad_rows))
    out = {}
    for c in conditions:
        mask = (outputs["condition"] == c).to_numpy()
        n, k = int(mask.sum()), int((mask & bad).sum())
        out[c] = {"outputs": n, "flagged": k, "accepted": n - k, "bad_fraction": round(k / n, 6) if n else 1.0}
    return out


def _failure_message(n: int, gate, flagged, per: dict, limit: float, docs: str) -> str:
    lines = [f"the generated outputs failed their checks ({n} frames):"]
    if gate.dataset_failures or gate.frame_failures:
        lines.append("failed expectations:")
        lines += [f"  - {f.describe()}" for f in gate.dataset_failures + gate.frame_failures]
    for c, d in per.items():
        verdict = "above" if d["bad_fraction"] > limit else "within"
        lines.append(f"{c}: {d['flagged']} of {d['outputs']} frames bad ({d['bad_fraction']:.2%}), {verdict} "
                     f"max_bad_fraction {limit:.2%}")
    if len(flagged):
        lines.append("example frames:")
        lines += [f"  - {e}" for e in _examples(flagged)]
    lines.append(f"Data Docs: {docs}")
    lines.append("Nothing is published. Fix the generator or its settings and regenerate; for a few bad frames, "
                 "raise max_bad_fraction.")
    return "\n".join(lines)


def _examples(flagged) -> list[str]:
    return [f"{r.frame_id} ({r.condition}, source {r.source_frame_id}): {r.reasons}"
            for r in flagged.head(MAX_EXAMPLES).itertuples()]


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import pandas as pd

    from argus_tasks.data.access import PULL_JSON, load_accepted
    from argus_tasks.generation import qa
    from argus_tasks.generation.qa_gate import run_output_gate
    from argus_tasks.generation.shard_reader import read_outputs
    from argus_tasks.hardframes.record_generation import score_generation
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.steps.evaluate import resolve_device

    conditions = parse_conditions(args.conditions)
    for name, value in (("--max-bad-fraction", args.max_bad_fraction), ("--min-fidelity", args.min_fidelity)):
        if not 0.0 <= value <= 1.0:
            raise PermanentStepError(f"{name} must be within [0, 1], got {value}")
    if not 0.0 <= args.min_change < args.max_change:
        raise PermanentStepError(f"--min-change {args.min_change} must be >= 0 and below --max-change {args.max_change}")
    run = ctx.run
    for rel in STALE:
        _remove(run, rel)
    threads = set_threads(args.threads)
    manifest, data_root = load_accepted(run)
    pull = run.read_json(PULL_JSON)
    outputs = read_outputs(run, conditions)
    table = outputs.table
    empty = [c for c in conditions if not (table["condition"] == c).any()]
    if empty:
        raise PermanentStepError(f"no generated outputs for {', '.join(empty)} in the {len(outputs.planned)} shard "
                                 f"marker(s) of {run.url('generate/shards')}; conditions present: "
                                 f"{sorted(set(table['condition'])) or 'none'}. Check the plan's conditions.")
    models = one_model_per_condition(run, table)
    run_dir = run.localize("generate").parent
    log.info("checking %d generated frames (%s) from %d shards against %d accepted source frames", len(table),
             ", ".join(f"{c}={int((table['condition'] == c).sum())}" for c in conditions), len(outputs.planned),
             len(manifest))
    checks = qa.file_checks(run_dir, data_root, table, manifest, workers=args.workers)
    judge, judge_info = _judge(ctx, args.judge_version, models)
    device = resolve_device(args.device)
    checks["label_fidelity"], features = qa.label_fidelity(judge, run_dir, data_root, table, checks, manifest,
                                                           device=device, batch_size=args.batch_size, threads=threads,
                                                           with_features=True)
    generated, manifest_rows = qa.manifest_table(table, checks, manifest, pull)
    params = {"min_fidelity": args.min_fidelity, "min_change": args.min_change, "max_change": args.max_change}
    gate = run_output_gate({"generated_manifest": generated, "generated_outputs": checks}, manifest_rows,
                           run.local_dir(OUT), params=params,
                           run_name=f"{ctx.dag_id}.{ctx.run_id}.try{ctx.try_number}".replace("/", "_"))
    if gate.data_docs.parent.is_dir():
        run.publish(f"{OUT}/data_docs")
    docs = run.url(f"{OUT}/data_docs/index.html")
    flagged = _flagged_table(table, checks, gate.bad_rows)
    run.write_dataframe(FLAGGED, flagged)
    scores = pd.concat([table[["frame_id", "condition", "source_frame_id", "shard_id", "output", "model_version"]],
                        checks[["label_fidelity", "mean_abs_change", "luma_std"]]], axis=1)
    scores["flagged"] = scores.index.isin(list(gate.bad_rows))
    scores["reasons"] = ["; ".join(gate.bad_rows.get(i, [])) for i in range(len(scores))]
    run.write_dataframe(SCORES, scores)
    frame_scores = score_generation(ctx, outputs=table, checks=checks, bad_rows=gate.bad_rows, features=features,
                                    judge=judge, judge_info=judge_info, manifest=manifest, data_root=data_root,
                                    device=device, batch_size=args.batch_size, min_fidelity=args.min_fidelity,
                                    change_range=(args.min_change, args.max_change))
    per = _per_condition(table, gate.bad_rows, conditions)
    n, n_bad = len(table), len(gate.bad_rows)
    failed = bool(gate.dataset_failures) or any(d["bad_fraction"] > args.max_bad_fraction or d["accepted"] == 0
                                                for d in per.values())
    outcome = "failed" if failed else ("flagged" if n_bad else "passed")
    fidelity = checks["label_fidelity"]
    metrics = {"n_outputs": n, "flagged": n_bad, "bad_fraction": n_bad / max(n, 1), "gx_seconds": gate.seconds,
               "dataset_failures": len(gate.dataset_failures), "frame_failures": len(gate.frame_failures),
               "label_fidelity_mean": float(fidelity.mean()) if fidelity.notna().any() else float("nan"),
               "label_fidelity_min": float(fidelity.min()) if fidelity.notna().any() else float("nan"),
               **{f"{c}.{k}": float(v) for c, d in per.items() for k, v in d.items()}}
    mlflow_run = _log_mlflow(ctx, pull, outcome, gate.result_id, metrics, {**params, "conditions": ",".join(conditions),
                             "max_bad_fraction": args.max_bad_fraction, "judge_version": judge_info["version"]},
                             run.local_dir(OUT), frame_scores["table"])
    log.info("output check %s: %d frames, %d flagged; Data Docs %s", outcome, n, n_bad, docs)
    if failed:
        raise PermanentStepError(_failure_message(n, gate, flagged, per, args.max_bad_fraction, docs))

    good = [i for i, row in enumerate(manifest_rows) if row not in gate.bad_rows]
    accepted = generated.iloc[good].reset_index(drop=True)
    picked = table.iloc[[manifest_rows[i] for i in good]].reset_index(drop=True)
    accepted["run_frame_path"], accepted["run_label_path"] = picked["output"], picked["label"]
    accepted["shard_id"] = picked["shard_id"]
    url = run.write_dataframe(ACCEPTED, accepted)
    return {
        "outcome": outcome, "result_id": gate.result_id, "conditions": conditions, "n_outputs": n,
        "accepted": int(len(accepted)), "flagged": n_bad, "bad_fraction": round(n_bad / max(n, 1), 6),
        "per_condition": per, "accepted_outputs": url,
        "accepted_sha256": hashlib.sha256(run.read_bytes(ACCEPTED)).hexdigest(),
        "markers_sha256": outputs.digest, "shards": outputs.planned, "flagged_file": run.url(FLAGGED),
        "flagged_examples": _examples(flagged), "scores": run.url(SCORES), "frame_scores": frame_scores["frame_scores"], "data_docs": docs, "judge": judge_info,
        "thresholds": {**params, "max_bad_fraction": args.max_bad_fraction},
        "columns": list(OUTPUT_MANIFEST_COLUMNS), "statistics": gate.statistics, "mlflow_run_id": mlflow_run,
        "source_revision": pull.get("revision", ""), "source_commit": pull.get("commit", ""), "models": models,
    }


def _log_mlflow(ctx, pull: dict, outcome: str, result_id: str, metrics: dict, params: dict, folder,
                frame_table=None) -> str:
    import mlflow

    from argus_tasks.hardframes.record import log_table
    from argus_tasks.tracking import step_run

    tags = {"argus.dataset_rev": str(pull.get("revision", "")), "argus.dataset_commit": str(pull.get("commit", "")),
            "argus.check.outcome": outcome, "argus.gx_result_id": result_id}
    with step_run(ctx, "check-outputs", tags=tags) as mrun:
        logged = mlflow.get_run(mrun.info.run_id).data.params  # a retry reopens the run: params are immutable
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.set_tags({f"argus.rerun_param.{k}": str(v) for k, v in params.items()
                         if k in logged and logged[k] != str(v)})
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})
        if (folder / "data_docs").is_dir():
            mlflow.log_artifacts(str(folder / "data_docs"), artifact_path="data_docs")
        for name in ("flagged.parquet", "scores.parquet", "frame_scores.parquet"):
            if (folder / name).exists():
                mlflow.log_artifact(str(folder / name), artifact_path="check")
        if frame_table is not None and len(frame_table):
            log_table(frame_table, "check/frame_scores.json")
        return mrun.info.run_id
