"""MLflow system metrics of the long steps: CPU, memory, disk and network, and the GPUs when NVML is there.

MLflow samples them in a background thread of the step while its run is open (``log_system_metrics=True``;
psutil for the host, pynvml, from the ``nvidia-ml-py`` package, for GPUs) and logs them as
``system/cpu_utilization_percentage``, ``system/system_memory_usage_megabytes``, ``system/gpu_0_utilization_
percentage``... ``train`` (rank 0) and ``generate`` (one MLflow run per shard) use it.

``ARGUS_SYSTEM_METRICS=false`` turns it off (and the shards' MLflow runs with it); ``ARGUS_SYSTEM_METRICS_INTERVAL_S`` (default 10) is the sampling
interval. Without psutil it is off, with a warning.

:func:`shard_run` is the MLflow run of one generate shard. It is best effort: generation never needed MLflow,
so an unreachable tracking server costs one quick probe and a warning, never the shard.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os

log = logging.getLogger(__name__)
ENV_ON = "ARGUS_SYSTEM_METRICS"
ENV_INTERVAL = "ARGUS_SYSTEM_METRICS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0


def enabled() -> bool:
    return os.environ.get(ENV_ON, "true").strip().lower() not in {"0", "false", "no", "off"}


def run_kwargs() -> dict:
    """``mlflow.start_run`` arguments that turn system metrics on (``{}`` when they are off)."""
    if not enabled():
        return {}
    if importlib.util.find_spec("psutil") is None:
        log.warning("no psutil: MLflow system metrics are off (install psutil, pinned in requirements)")
        return {}
    import mlflow

    raw = os.environ.get(ENV_INTERVAL, "")
    try:
        interval = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %s", ENV_INTERVAL, raw, DEFAULT_INTERVAL_S)
        interval = DEFAULT_INTERVAL_S
    mlflow.set_system_metrics_sampling_interval(max(interval, 0.5))
    mlflow.set_system_metrics_samples_before_logging(1)
    return {"log_system_metrics": True}


@contextlib.contextmanager
def _quick_http():
    """A tracking server that does not answer costs seconds, not MLflow's minutes of retries."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def shard_run(ctx, shard_id: str, condition: str | None = None):
    """The MLflow run ``generate-<shard>`` of this Airflow run with system metrics (a retry reopens it), or
    None when MLflow cannot be reached or system metrics are off (the run exists for them)."""
    if not enabled():
        yield None
        return
    import mlflow

    from argus_tasks.tracking import ensure_reachable, experiment_name, find_run, use_experiment

    identity = {"argus.dag_id": ctx.dag_id, "argus.run_id": ctx.run_id, "argus.step": "generate",
                "argus.shard_id": shard_id}
    try:
        with _quick_http():
            ensure_reachable()
            experiment_id = use_experiment(experiment_name(ctx))
            previous = find_run(mlflow.MlflowClient(), experiment_id, identity)
            tags = {**ctx.lineage_tags(), **identity, **({"argus.condition": condition} if condition else {})}
            if previous is not None:
                run = mlflow.start_run(run_id=previous.info.run_id, **run_kwargs())
                mlflow.set_tags(tags)
            else:
                run = mlflow.start_run(experiment_id=experiment_id, run_name=f"generate-{shard_id}", tags=tags,
                                       **run_kwargs())
    except Exception as exc:  # noqa: BLE001 - generation goes on without its MLflow run
        log.warning("generate %s: no MLflow run (system metrics not logged): %s", shard_id, str(exc)[:300])
        yield None
        return
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        try:
            mlflow.end_run(status)
        except Exception as exc:  # noqa: BLE001 - the shard's outputs are what counts
            log.warning("generate %s: could not close MLflow run %s: %s", shard_id, run.info.run_id, str(exc)[:300])


def log_metrics_quietly(metrics: dict[str, float], what: str) -> None:
    """``mlflow.log_metrics`` that warns instead of failing (a best-effort run)."""
    import mlflow

    try:
        with _quick_http():
            mlflow.log_metrics(metrics)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: metrics not logged to MLflow: %s", what, str(exc)[:300])
