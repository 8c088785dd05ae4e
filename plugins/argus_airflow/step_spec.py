"""One declaration per heavy step, whatever runtime launches it."""

from __future__ import annotations

import re
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
# Local disk (ephemeral-storage request = limit) per kind of step, unless the spec says otherwise: data
# steps cache frames and Data Docs, training holds frames plus checkpoints, evaluation frames and grids.
EPHEMERAL_STORAGE = {"data": "20Gi", "training": "50Gi", "evaluation": "20Gi", "promotion": "1Gi", "report": "1Gi"}
# Memory-backed /dev/shm of GPU steps, per GPU (NCCL's intra-node buffers and data loaders, per rank; the
# container default is 64 MiB). It counts against the memory limit, so it stays at most half of it.
SHM_SIZE = {"training": "8Gi", "evaluation": "2Gi"}
# torchrun restarts every rank from the last checkpoint this often before the step fails (then Airflow retries).
TORCHRUN_MAX_RESTARTS = 2
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
          "Ti": 2**40}


def quantity(value: str, what: str) -> float:
    """A Kubernetes quantity ("500m", "2", "8Gi") as a number; a clear error naming ``what`` otherwise."""
    m = _QUANTITY.fullmatch(str(value).strip())
    if not m:
        raise ValueError(f"{what}: {value!r} is not a Kubernetes quantity (e.g. '2', '500m', '8Gi')")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class StepSpec:
    """A heavy step: ``argus-task <name> <arguments...>`` in the task image.

    ``arguments`` are Jinja templates rendered by Airflow (``params``, ``data_interval_start``,
    ``task.condition`` for mapped steps...). Resources are what one pod requests; ``gpus`` also
    decides the Airflow pool slots drawn from the shared GPU pool. ``ephemeral_storage`` (local disk)
    and ``shm_size`` (memory-backed ``/dev/shm`` of GPU pods) default by kind. ``command`` is the
    image's entrypoint program (``argus-task``) in both runtimes; another command (``torchrun ...``)
    becomes the pod's container command.
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
    ephemeral_storage: str = ""  # request = limit; "" -> EPHEMERAL_STORAGE of the kind
    shm_size: str = ""  # memory-backed /dev/shm; "" -> SHM_SIZE of the kind for GPU steps, none otherwise
    emits_champion_moved: bool = False  # a promote/rollback step: emit the champion asset event on a real move

    def __post_init__(self):
        if self.kind not in PRIORITY_CLASSES:
            raise ValueError(f"step {self.name!r}: unknown kind {self.kind!r}; one of {sorted(PRIORITY_CLASSES)}")
        if self.gpus < 0:
            raise ValueError(f"step {self.name!r}: gpus must be >= 0")
        if quantity(self.cpu, f"step {self.name!r} cpu") <= 0:
            raise ValueError(f"step {self.name!r}: cpu must be > 0, got {self.cpu!r}")
        memory = quantity(self.memory, f"step {self.name!r} memory")
        quantity(self.disk, f"step {self.name!r} ephemeral_storage")
        if self.shm_size and quantity(self.shm_size, f"step {self.name!r} shm_size") > memory / 2:
            raise ValueError(f"step {self.name!r}: /dev/shm of {self.shm} is memory and counts against the memory "
                             f"limit {self.memory}; keep it at most half of it (raise memory or lower shm_size)")

    @property
    def disk(self) -> str:
        """The ephemeral-storage request and limit of the pod."""
        return self.ephemeral_storage or EPHEMERAL_STORAGE[self.kind]

    @property
    def shm(self) -> str:
        """Size of the memory-backed /dev/shm, or "" for none (the runtime's default). Unless set, a GPU
        step gets its kind's size, at most half its memory."""
        if self.shm_size or not self.gpus:
            return self.shm_size
        per_gpu = SHM_SIZE.get(self.kind, "1Gi")
        wanted = quantity(per_gpu, "shm") * self.gpus  # one rank per GPU
        half = quantity(self.memory, "memory") / 2
        if self.gpus == 1 and wanted <= half:
            return per_gpu
        size = min(wanted, half)
        return f"{int(size // 2**30)}Gi" if size % 2**30 == 0 else f"{int(size // 2**20)}Mi"

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


def torchrun_command(gpus: int, max_restarts: int = TORCHRUN_MAX_RESTARTS) -> tuple[str, ...]:
    """The command of a step with ``gpus`` ranks on one node: torchrun through ``argus-task torchrun`` (the
    image's entrypoint program; it keeps the step's exit codes), one rank per GPU, restarted from the last
    checkpoint up to ``max_restarts`` times; each rank runs ``python -m argus_tasks <step> ...``."""
    if gpus < 2:
        raise ValueError(f"torchrun is for 2 or more GPUs, got {gpus}")
    return ("argus-task", "torchrun", "--standalone", f"--nproc-per-node={gpus}", f"--max-restarts={max_restarts}",
            "-m", "argus_tasks")


def contract_env(settings: Settings, spec: StepSpec) -> dict[str, str]:
    """The env of the step contract (``argus_tasks.contract``), templated per task instance.

    Holds no secret: credentials reach pods through a Kubernetes Secret (``envFrom``) and local
    processes through the allow-listed part of the worker's environment
    (:func:`argus_airflow.local_runtime.step_environment`). ``ARGUS_CPU_REQUEST`` tells the step the CPUs
    it was given; ``ARGUS_IMAGE_DIGEST`` and ``ARGUS_DAG_GIT_COMMIT`` are lineage, when the deployment knows them.
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
        # the run's team (Param ``team``; a DAG without it: the deployment's default team)
        "ARGUS_TEAM": "{{ params.team | default('" + settings.teams.default_team + "') }}",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.mlflow_conn_id:  # the Airflow connection wins over the plain setting, read at run time
        c = f"conn.get('{settings.mlflow_conn_id}')"
        env["MLFLOW_TRACKING_URI"] = f"{{{{ {c}.schema or 'http' }}}}://{{{{ {c}.host }}}}:{{{{ {c}.port or 5000 }}}}"
    if settings.dvc_remote:
        env["ARGUS_DVC_REMOTE"] = settings.dvc_remote
    # the CPUs the step may use (its request), whatever the node has: threads and workers are bounded by it
    env["ARGUS_CPU_REQUEST"] = spec.cpu
    # the GPU pool slots it holds and their price: its GPU-seconds and cost estimate (argus_tasks.cost)
    env["ARGUS_GPU_SLOTS"] = str(spec.pool_slots if spec.gpus else 0)
    if settings.gpu_hour_price:
        env["ARGUS_GPU_HOUR_PRICE"] = settings.gpu_hour_price
    if settings.image_digest:
        env["ARGUS_IMAGE_DIGEST"] = settings.image_digest
    if settings.git_commit:  # the DAG code's commit; the step's own code commit is ARGUS_GIT_COMMIT
        env["ARGUS_DAG_GIT_COMMIT"] = settings.git_commit
    env.update(spec.extra_env)
    return env


def execution_timeout(spec: StepSpec, settings: Settings) -> timedelta:
    """The step's run time, plus the time its pod may wait for a node (GPU pods queue for the shared pool)."""
    if not settings.kubernetes:
        return spec.timeout
    wait = settings.gpu_schedule_timeout_s if spec.gpus else settings.schedule_timeout_s
    return spec.timeout + timedelta(seconds=wait + settings.startup_timeout_s)


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
        "execution_timeout": execution_timeout(spec, settings),
        "doc_md": spec.doc or None,
    }
