"""``argus-task publish --output-dataset NAME``: the checked outputs as a new revision of an output dataset.

Refuses (exit 10, nothing published) unless the run is complete and checked: ``check-outputs``
succeeded (``check-outputs/result.json``, outcome ``passed`` or ``flagged``), its accepted list is the
one it recorded, every planned shard has its marker and the markers are the ones it checked, and the
validated source is still the run's pull. Then :class:`argus_tasks.generation.publish.OutputRegistry`
publishes the accepted frames (the registry's layout, its location and its revisions are described
there). Publishing again what the dataset already holds (a retry, a rerun) reports that revision and
changes nothing (``already_published: true``).

The MLflow run of the step records the source (revision, commit, accepted source frames) and the
output (dataset, revision, commit, frames per condition) as dataset inputs with their digests, the
models per condition, the QA figures and the published manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import warnings

from argus_tasks.contract import PermanentStepError, StepContext

HELP = "publish the checked generated frames as a new revision of an output dataset in the DVC registry"
log = logging.getLogger("argus.publish")
CHECK = "check-outputs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dataset", required=True,
                   help="output dataset name: a registry of its own under $ARGUS_OUTPUT_REGISTRY_ROOT/<name>")


def checked(run) -> dict:
    """The check-outputs result, or a PermanentStepError saying why there is nothing to publish."""
    from argus_tasks.run_outcome import step_outcome

    outcome = step_outcome(run, CHECK)
    if outcome.status != "succeeded":
        why = (f"it failed: {outcome.error.splitlines()[0] if outcome.error else 'see its log'}"
               if outcome.status == "failed" else "it has not run in this run")
        raise PermanentStepError(f"nothing published: check-outputs did not pass ({why}). A failed or partial "
                                 "generation run never publishes; fix it and rerun check-outputs.")
    result = outcome.result
    if result.get("outcome") not in ("passed", "flagged"):
        raise PermanentStepError(f"nothing published: check-outputs outcome is {result.get('outcome')!r}")
    accepted = f"{CHECK}/accepted.parquet"
    if not run.exists(accepted) or hashlib.sha256(run.read_bytes(accepted)).hexdigest() != result.get(
            "accepted_sha256"):
        raise PermanentStepError(f"nothing published: {run.url(accepted)} is missing or is not the list "
                                 "check-outputs accepted; rerun check-outputs")
    return result


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    from argus_tasks.data.access import PULL_JSON, load_accepted
    from argus_tasks.generation.publish import OutputRegistry, check_name, how_to_pull
    from argus_tasks.generation.shard_reader import read_outputs

    name = check_name(args.output_dataset)
    run = ctx.run
    check = checked(run)
    conditions = list(check["conditions"])
    outputs = read_outputs(run, conditions)  # every planned shard has its marker, or this fails
    if outputs.digest != check.get("markers_sha256"):
        raise PermanentStepError("nothing published: the shard markers changed after check-outputs checked them "
                                 "(a shard was rerun); rerun check-outputs")
    source, _ = load_accepted(run)  # the validated source is still this run's pull
    pull = run.read_json(PULL_JSON)
    accepted = run.read_dataframe(f"{CHECK}/accepted.parquet")
    if (accepted["source_commit"] != str(pull.get("commit", ""))).any():
        raise PermanentStepError("nothing published: the accepted outputs were made from another pull of the source "
                                 f"than {str(pull.get('commit'))[:12]}; rerun the generation")
    run_dir = run.localize("generate").parent
    files = {**{r: run_dir / p for r, p in zip(accepted["frame_path"], accepted["run_frame_path"], strict=True)},
             **{r: run_dir / p for r, p in zip(accepted["label_path"], accepted["run_label_path"], strict=True)}}
    models = {str(c): {"model_name": str(g["model_name"].iloc[0]), "model_versions": sorted(set(g["model_version"])),
                       "config_hashes": sorted(set(g["config_hash"])), "frames": int(len(g))}
              for c, g in accepted.groupby("condition")}
    record = {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "source_revision": str(pull.get("revision", "")),
              "source_commit": str(pull.get("commit", "")), "source_registry": str(pull.get("registry", "")),
              "models": models, "judge": check.get("judge", {}), "check_result_id": check.get("result_id", ""),
              "flagged": int(check.get("flagged", 0)), "git_commit": ctx.git_commit}
    registry = OutputRegistry(name)
    published = registry.publish(accepted, files, conditions, record)
    result = {"output_dataset": name, "registry": str(registry.path), **published,
              "how_to_pull": how_to_pull(registry.path, published["revision"], name),
              "conditions": conditions, "n_run_frames": int(len(accepted)), "models": models,
              "source_revision": record["source_revision"], "source_commit": record["source_commit"],
              "source_registry": record["source_registry"] or run.url("data")}
    used = source[source["frame_id"].isin(set(accepted["source_frame_id"]))]
    result["mlflow_run_id"] = _log_mlflow(ctx, result, check, accepted, used)
    log.info("%s %s: %s (%d frames); get it with: %s", name, published["revision"],
             "already published, nothing changed" if published["already_published"] else "published",
             published["n_frames"], result["how_to_pull"])
    return result


def _log_dataset(df, source: str, name: str, context: str, digest: str) -> None:
    import mlflow

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlflow.log_input(mlflow.data.from_pandas(df, source=source, name=name, digest=digest[:16]),
                             context=context)
    except Exception as exc:  # noqa: BLE001 - the tags below carry the same lineage
        log.warning("could not record dataset %s as an MLflow input (%s); its lineage is in the run's tags", name, exc)


def _log_mlflow(ctx, result: dict, check: dict, accepted, used_sources) -> str:
    import mlflow

    from argus_tasks.tracking import step_run

    tags = {"argus.output_dataset": result["output_dataset"], "argus.output_revision": result["revision"],
            "argus.output_commit": result["commit"], "argus.source_revision": result["source_revision"],
            "argus.source_commit": result["source_commit"], "argus.already_published": str(result["already_published"]),
            **{f"argus.model.{c}": f"{m['model_name']} v{','.join(m['model_versions'])}"
               for c, m in result["models"].items()}}
    with step_run(ctx, "publish", tags=tags) as mrun:
        logged = mlflow.get_run(mrun.info.run_id).data.params
        params = {"output_dataset": result["output_dataset"], "conditions": ",".join(result["conditions"]),
                  "source_revision": result["source_revision"]}
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.log_metrics({"n_frames": result["n_frames"], "n_run_frames": result["n_run_frames"],
                            "flagged": float(check.get("flagged", 0)), "bad_fraction": float(check.get("bad_fraction", 0)),
                            **{f"{c}.frames": m["frames"] for c, m in result["models"].items()}})
        _log_dataset(used_sources, result["source_registry"], f"source@{result['source_revision']}",
                     "source", result["source_commit"] or "0")
        _log_dataset(accepted.drop(columns=["run_frame_path", "run_label_path", "shard_id"], errors="ignore"),
                     result["registry"], f"{result['output_dataset']}@{result['revision']}", "generated",
                     result["content_sha256"] or "0")
        mlflow.log_dict({k: v for k, v in result.items() if k != "mlflow_run_id"}, "publish/result.json")
        return mrun.info.run_id
