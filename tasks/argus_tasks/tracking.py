"""MLflow access shared by every step: reachability, one run per step, lineage tags.

* :func:`ensure_reachable` turns "MLflow is down" into a :class:`TransientStepError` that names
  the tracking URI, so Airflow retries with backoff instead of failing the run for good.
* :func:`step_run` opens the MLflow run of a step. A retried step (same Airflow run, step and
  condition) reopens its earlier MLflow run instead of creating a second one.
"""

from __future__ import annotations

import contextlib
import logging
import os

from argus_tasks.contract import StepContext, TransientStepError

log = logging.getLogger(__name__)
DEFAULT_TRACKING_URI = "sqlite:///.argus/mlflow/mlflow.db"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def experiment_name(ctx: StepContext) -> str:
    return os.environ.get("ARGUS_MLFLOW_EXPERIMENT", f"argus/{ctx.dag_id}")


def ensure_reachable() -> None:
    """Fail with a retryable error naming the tracking URI when MLflow does not answer."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, requests errors, sqlalchemy errors
        raise TransientStepError(
            f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}: {str(exc)[:300]}). "
            "Check that it is running and that MLFLOW_TRACKING_URI is right; the step will be retried."
        ) from exc


_OUTAGE_SIGNS = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
                 "Connection aborted", "Read timed out", "RemoteDisconnected")


def outage_error(exc: BaseException) -> TransientStepError | None:
    """A retryable error naming the tracking URI when ``exc`` means MLflow stopped answering mid-step."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        from_mlflow_or_http = type(e).__module__.split(".")[0] in {"mlflow", "requests", "urllib3"}
        if from_mlflow_or_http and any(sign in str(e) for sign in _OUTAGE_SIGNS):
            return TransientStepError(
                f"MLflow tracking server {tracking_uri()} stopped answering during the step "
                f"({type(e).__name__}: {str(e)[:300]}). Nothing is registered until the step succeeds; "
                "the step will be retried and reopens its MLflow run.")
    return None


def find_run(client, experiment_id: str, tags: dict[str, str]):
    """The newest run of ``experiment_id`` carrying all ``tags``, or None."""
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=flt, max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def use_experiment(name: str) -> str:
    """Select experiment ``name``, creating it under ``$ARGUS_MLFLOW_ARTIFACTS`` when missing."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        root = os.environ.get("ARGUS_MLFLOW_ARTIFACTS", "")
        location = f"{root.rstrip('/')}/{name.replace('/', '_')}" if root else None
        try:
            client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by a parallel step
            pass
        exp = client.get_experiment_by_name(name)
    mlflow.set_experiment(experiment_id=exp.experiment_id)
    return exp.experiment_id


@contextlib.contextmanager
def step_run(ctx: StepContext, step: str, condition: str | None = None, tags: dict | None = None):
    """Open (or reopen, on a retry) the MLflow run of ``step`` for this Airflow run."""
    import mlflow

    ensure_reachable()
    experiment_id = use_experiment(experiment_name(ctx))
    identity = {"argus.dag_id": ctx.dag_id, "argus.run_id": ctx.run_id, "argus.step": step}
    if condition:
        identity["argus.condition"] = condition
    client = mlflow.MlflowClient()
    previous = find_run(client, experiment_id, identity)
    all_tags = {**ctx.lineage_tags(), **identity, **(tags or {})}
    name = f"{step}-{condition}" if condition else step
    if previous is not None:
        log.info("reopening MLflow run %s of an earlier try", previous.info.run_id)
        run = mlflow.start_run(run_id=previous.info.run_id)
        mlflow.set_tags(all_tags)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=all_tags)
    with run:
        yield run


def run_url(run) -> str:
    """A link to the run in the MLflow UI (served by `make ui` on localhost:5000)."""
    base = os.environ.get("ARGUS_MLFLOW_UI", "http://localhost:5000")
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
