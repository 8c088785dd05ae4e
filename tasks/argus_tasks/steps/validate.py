"""``argus-task validate``: the Great Expectations gate between the pull and everything else.

Reads ``<run>/data/`` (the pull's manifest and files), checks every frame's files in parallel,
runs the GX checkpoint (manifest, frame checks, group sizes, brightness per condition) and decides:

* all good: ``validate/accepted_manifest.parquet`` holds every frame;
* a bad fraction at or below ``--quarantine-threshold``: the bad frames are listed with their
  reasons in ``validate/quarantine.parquet`` and left out of the accepted manifest; the run goes on;
* more bad frames, or any dataset-level failure: a permanent error naming each failing
  expectation, up to 10 example frames with their reasons, and the Data Docs page.

Later steps read frames only through :func:`argus_tasks.data.access.load_accepted`, which refuses
to work without this step's result. The outcome is logged to MLflow (Data Docs as an artifact).
"""

from __future__ import annotations

import argparse
import hashlib
import logging

from argus_tasks.contract import PermanentStepError, StepContext

HELP = "Validate the pulled frames with Great Expectations; quarantine a few bad frames or fail the run."
log = logging.getLogger(__name__)

OUT = "validate"
ACCEPTED = f"{OUT}/accepted_manifest.parquet"
QUARANTINE = f"{OUT}/quarantine.parquet"
STALE = (f"{OUT}/result.json", ACCEPTED, QUARANTINE, f"{OUT}/failure.json")
MAX_EXAMPLES = 10
NOT_REUSED = "validate always checks the pulled files anew (earlier outputs are withdrawn first)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quarantine-threshold", type=float, default=0.02,
                        help="largest fraction of bad frames that is quarantined instead of failing (default 0.02)")
    parser.add_argument("--min-frames-per-group", type=int, default=8,
                        help="fewest frames each condition/split pair must have (default 8)")
    parser.add_argument("--workers", type=int, default=None, help="processes for the frame checks (default: CPUs)")


def _remove(run, relpath: str) -> None:
    """Delete an output of an earlier try, so a failing rerun never leaves a stale accept behind."""
    (run.cache / relpath).unlink(missing_ok=True)
    if run.remote and run.fs.exists(run.url(relpath)):
        run.fs.rm(run.url(relpath))


def _quarantine_table(manifest, bad_rows: dict[int, list[str]]):
    import pandas as pd

    rows = sorted(bad_rows)

    def col(name):
        return [str(manifest[name].iloc[r]) if name in manifest.columns else "" for r in rows]

    return pd.DataFrame({
        "row": pd.array(rows, dtype="int64"), "frame_id": pd.array(col("frame_id"), dtype="string"),
        "condition": pd.array(col("condition"), dtype="string"), "split": pd.array(col("split"), dtype="string"),
        "frame_path": pd.array(col("frame_path"), dtype="string"),
        "reasons": pd.array(["; ".join(bad_rows[r]) for r in rows], dtype="string"),
    })


def _examples(quarantine) -> list[str]:
    return [f"{r.frame_id}: {r.reasons}" for r in quarantine.head(MAX_EXAMPLES).itertuples()]


def _failure_message(rev: str, n: int, gate, quarantine, threshold: float, docs: str, extra: list[str]) -> str:
    lines = [f"validation of dataset {rev} failed ({n} frames):"]
    failing = gate.dataset_failures + gate.frame_failures
    if failing:
        lines.append("failing expectations:")
        lines += [f"  - {f.describe()}" for f in failing]
    lines += [f"  - {e}" for e in extra]
    if len(quarantine):
        frac = len(quarantine) / max(n, 1)
        verdict = "above" if frac > threshold else "within"
        lines.append(f"bad frames: {len(quarantine)} of {n} ({frac:.2%}), {verdict} the quarantine threshold "
                     f"{threshold:.2%}; examples:")
        lines += [f"  - {e}" for e in _examples(quarantine)]
    lines.append(f"Data Docs: {docs}")
    lines.append("Fix the dataset (add a corrected revision) or, for a few bad frames, raise quarantine_threshold.")
    return "\n".join(lines)


def _log_mlflow(ctx, lineage: dict, outcome: str, result_id: str, metrics: dict, params: dict, docs_dir,
                quarantine_file) -> str:
    import mlflow

    from argus_tasks.tracking import step_run

    tags = {"argus.dataset_rev": lineage.get("revision", ""), "argus.dataset_commit": lineage.get("commit", ""),
            "argus.dataset_fingerprint": lineage.get("fingerprint", ""), "argus.validation.outcome": outcome}
    with step_run(ctx, "validate", tags=tags) as run:
        # a retried step reopens its MLflow run, where params are immutable: log new keys only and
        # record a changed value (a rerun with other arguments) as a tag
        logged = mlflow.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.set_tags({f"argus.rerun_param.{k}": str(v) for k, v in params.items()
                         if k in logged and logged[k] != str(v)})
        mlflow.set_tag("argus.gx_result_id", result_id)
        mlflow.log_metrics(metrics)
        if docs_dir.is_dir():
            mlflow.log_artifacts(str(docs_dir), artifact_path="data_docs")
        if quarantine_file.exists():
            mlflow.log_artifact(str(quarantine_file), artifact_path="validation")
        return run.info.run_id


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import pandas as pd

    from argus_tasks.data import manifest as mf
    from argus_tasks.data.frame_checks import check_frames
    from argus_tasks.data.gate import condition_table, group_table, run_gate

    if not 0.0 <= args.quarantine_threshold <= 1.0:
        raise PermanentStepError(f"--quarantine-threshold must be within [0, 1], got {args.quarantine_threshold}")
    run_store = ctx.run
    for rel in STALE:
        _remove(run_store, rel)
    if not run_store.exists("data/manifest.parquet") or not run_store.exists("data/pull.json"):
        raise PermanentStepError(f"pull output missing: {run_store.url('data/manifest.parquet')} or pull.json "
                                 "does not exist; the pull step must succeed before validate")
    lineage = run_store.read_json("data/pull.json")
    data_root = run_store.localize("data")
    manifest = mf.read_manifest(data_root / mf.MANIFEST_FILE)
    n = len(manifest)
    rev = f"{lineage.get('revision', '?')} ({str(lineage.get('commit', ''))[:12]})"
    log.info("validating %d frames of dataset %s (fingerprint %s); no earlier result is reused: %s", n, rev,
             str(lineage.get("fingerprint", ""))[:12], NOT_REUSED)

    frame_checks = check_frames(data_root, manifest, workers=args.workers)
    tables = {"manifest": manifest, "frame_checks": frame_checks, "groups": group_table(manifest),
              "conditions": condition_table(manifest)}
    workdir = run_store.local_dir(OUT)
    gate = run_gate(tables, workdir, min_frames=args.min_frames_per_group,
                    run_name=f"{ctx.dag_id}.{ctx.run_id}.try{ctx.try_number}".replace("/", "_").replace("\\", "_"))
    docs_url = run_store.publish(f"{OUT}/data_docs") if gate.data_docs.parent.is_dir() else ""
    docs = run_store.url(f"{OUT}/data_docs/index.html")
    quarantine = _quarantine_table(manifest, gate.bad_rows)
    run_store.write_dataframe(QUARANTINE, quarantine)
    bad_fraction = len(quarantine) / max(n, 1)

    extra: list[str] = []
    accepted = None
    if not gate.dataset_failures and bad_fraction <= args.quarantine_threshold:
        keep = ~pd.Series(range(n)).isin(list(gate.bad_rows)).to_numpy()
        accepted = mf.coerce(manifest[keep])
        # quarantine must not starve a condition/split of frames
        short = group_table(accepted)
        short = short[short["n_frames"] < args.min_frames_per_group]
        extra = [f"after quarantining {len(quarantine)} frame(s), {r.condition}/{r.split} has {r.n_frames} "
                 f"frame(s) (< min_frames_per_group {args.min_frames_per_group})" for r in short.itertuples()]
    failed = bool(gate.dataset_failures) or bad_fraction > args.quarantine_threshold or bool(extra)
    outcome = "failed" if failed else ("quarantined" if len(quarantine) else "passed")
    metrics = {"n_frames": n, "bad_frames": len(quarantine), "bad_fraction": bad_fraction,
               "accepted": 0 if failed else len(accepted), "quarantined": 0 if failed else len(quarantine),
               "dataset_failures": len(gate.dataset_failures) + len(extra),
               "frame_failures": len(gate.frame_failures), "gx_seconds": gate.seconds}
    params = {"quarantine_threshold": args.quarantine_threshold, "min_frames_per_group": args.min_frames_per_group,
              "dataset_rev": lineage.get("revision", "")}
    mlflow_run = _log_mlflow(ctx, lineage, outcome, gate.result_id, metrics, params, workdir / "data_docs",
                             workdir / "quarantine.parquet")
    log.info("validation %s: %d frames, %d bad (%.2f%%), %d dataset-level failure(s); Data Docs %s",
             outcome, n, len(quarantine), 100 * bad_fraction, metrics["dataset_failures"], docs)
    if failed:
        raise PermanentStepError(_failure_message(rev, n, gate, quarantine, args.quarantine_threshold, docs, extra))

    accepted_url = run_store.write_dataframe(ACCEPTED, accepted)
    accepted_sha = hashlib.sha256(run_store.read_bytes(ACCEPTED)).hexdigest()
    counts: dict[str, dict[str, int]] = {}
    for (c, s), k in accepted.groupby(["condition", "split"]).size().items():
        counts.setdefault(str(c), {})[str(s)] = int(k)
    return {
        "result_id": gate.result_id, "outcome": outcome, "data_docs": docs or docs_url,
        "accepted": int(len(accepted)), "quarantined": int(len(quarantine)), "bad_fraction": round(bad_fraction, 6),
        "accepted_manifest": accepted_url, "accepted_manifest_sha256": accepted_sha,
        "quarantine": run_store.url(QUARANTINE), "counts": counts,
        "quarantine_examples": _examples(quarantine),
        "dataset_rev": lineage.get("revision", ""), "dataset_commit": lineage.get("commit", ""),
        "dataset_fingerprint": lineage.get("fingerprint", ""), "statistics": gate.statistics,
        "mlflow_run_id": mlflow_run, "reused": False, "recomputed_because": NOT_REUSED,
    }
