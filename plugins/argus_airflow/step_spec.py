"""One declaration per heavy step, whatever runtime launches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from argus_airflow.settings import Settings

# Kubernetes PriorityClass per kind of step (see k8s/priority-classes.yaml).
PRIORITY_CLASSES = {
    "data": "argus-data",
    "training": "argus-training",
    "evaluation": "argus-evaluation",
    "promotion": "argus-data",
    "report": "argus-data",
}
# Airflow priority weights: a run's downstream steps go before another run's upstream ones, so a
# started run finishes before the next one takes the shared GPUs.
PRIORITY_WEIGHTS = {"data": 1, "training": 5, "evaluation": 8, "promotion": 10, "report": 10}


@dataclass(frozen=True)
class StepSpec:
    """A heavy step: ``argus-task <name> <arguments...>`` in the task image.

    ``arguments`` are Jinja templates rendered by Airflow (``params``, ``data_interval_start``,
    ``task.condition`` for mapped steps...). Resources are what one pod requests; ``gpus`` also
    decides the Airflow pool slots drawn from the shared GPU pool.
    """

    name: str
    arguments: tuple[str, ...] = ()
    kind: str = "data"
    gpus: int = 0
    cpu: str = "1"
    memory: str = "2Gi"
    timeout: timedelta = timedelta(hours=1)
    doc: str = ""
    command: tuple[str, ...] = ("argus-task",)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in PRIORITY_CLASSES:
            raise ValueError(f"step {self.name!r}: unknown kind {self.kind!r}; one of {sorted(PRIORITY_CLASSES)}")
        if self.gpus < 0:
            raise ValueError(f"step {self.name!r}: gpus must be >= 0")

    @property
    def full_arguments(self) -> list[str]:
        """The arguments after the entrypoint: the subcommand then its options."""
        return [self.name, *self.arguments]

    @property
    def priority_class(self) -> str:
        return PRIORITY_CLASSES[self.kind]

    @property
    def priority_weight(self) -> int:
        return PRIORITY_WEIGHTS[self.kind]

    def pool(self, settings: Settings) -> str:
        if self.gpus:
            return settings.gpu_pool
        if self.kind == "promotion":
            return settings.promotion_pool
        return "default_pool"

    @property
    def pool_slots(self) -> int:
        return max(self.gpus, 1)


def contract_env(settings: Settings, spec: StepSpec) -> dict[str, str]:
    """The env of the step contract (``argus_tasks.contract``), templated per task instance.

    Holds no secret: credentials reach pods through a Kubernetes Secret (``envFrom``) and local
    processes through the worker's own environment.
    """
    env = {
        "ARGUS_STORE": settings.store,
        "ARGUS_DATASET_REGISTRY": settings.dataset_registry,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "ARGUS_MLFLOW_ARTIFACTS": settings.mlflow_artifacts,
        "ARGUS_IMAGE": settings.image,
        "ARGUS_DAG_ID": "{{ dag.dag_id }}",
        "ARGUS_RUN_ID": "{{ run_id }}",
        "ARGUS_TASK_ID": "{{ task.task_id }}",
        "ARGUS_TRY_NUMBER": "{{ ti.try_number }}",
        "ARGUS_MAP_INDEX": "{{ ti.map_index }}",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.mlflow_conn_id:  # the Airflow connection wins over the plain setting, read at run time
        c = f"conn.get('{settings.mlflow_conn_id}')"
        env["MLFLOW_TRACKING_URI"] = f"{{{{ {c}.schema or 'http' }}}}://{{{{ {c}.host }}}}:{{{{ {c}.port or 5000 }}}}"
    if settings.dvc_remote:
        env["ARGUS_DVC_REMOTE"] = settings.dvc_remote
    env.update(spec.extra_env)
    return env


def operator_defaults(spec: StepSpec, settings: Settings) -> dict:
    """Airflow-side settings shared by both runtimes: pool, priority, retries, timeout, docs."""
    return {
        "task_id": spec.name,
        "pool": spec.pool(settings),
        "pool_slots": spec.pool_slots,
        "priority_weight": spec.priority_weight,
        "weight_rule": "absolute",
        "retries": settings.retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": spec.timeout,
        "doc_md": spec.doc or None,
    }
