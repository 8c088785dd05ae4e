"""Deployment settings, read from the environment when the DAG is parsed (cheap: env reads only).

Local defaults point at the embedded state in ``<repo>/.argus`` so that ``make demo`` needs no
configuration; production sets the variables in the Airflow image or docker-compose ``.env``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from argus_airflow import teams as teams_mod

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = ("local", "kubernetes")
DEFAULT_SCHEDULE = "0 2 * * 1,4"  # Mon and Thu 02:00 UTC
# How long a pod may wait to be scheduled: a GPU pod queues for a GPU of the shared, contended pool (hours),
# a CPU pod for a node (minutes). Separate from the start-up timeout (image pull and container start).
DEFAULT_GPU_SCHEDULE_TIMEOUT_S = 6 * 3600
DEFAULT_SCHEDULE_TIMEOUT_S = 30 * 60
DEFAULT_STARTUP_TIMEOUT_S = 15 * 60  # the task image is large (CUDA + torch): a cold node pulls for minutes
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value else default


@dataclass(frozen=True)
class Settings:
    runtime: str
    home: Path
    store: str
    dataset_registry: str
    dvc_remote: str
    mlflow_tracking_uri: str
    mlflow_artifacts: str
    image: str
    namespace: str
    task_service_account: str
    s3_secret: str
    gpu_node_selector: tuple[str, str]
    gpu_toleration_key: str
    gpu_pool: str
    promotion_pool: str
    train_gpus: int
    retry_delay_s: int
    retries: int
    schedule: str = DEFAULT_SCHEDULE
    mlflow_conn_id: str = ""
    param_defaults: dict = field(default_factory=dict)
    gpu_schedule_timeout_s: int = DEFAULT_GPU_SCHEDULE_TIMEOUT_S
    schedule_timeout_s: int = DEFAULT_SCHEDULE_TIMEOUT_S
    startup_timeout_s: int = DEFAULT_STARTUP_TIMEOUT_S
    image_digest: str = ""  # sha256:<64 hex> of the task image, when known (lineage)
    git_commit: str = ""  # commit of this Airflow deployment's DAGs and plugins (baked into its image)
    teams: teams_mod.TeamPlan = field(default_factory=teams_mod.TeamPlan)  # default team, GPU quotas, their pools
    kueue_queue: str = "{team}-gpu"  # Kueue LocalQueue of a GPU pod (label kueue.x-k8s.io/queue-name); "" = none

    @property
    def kubernetes(self) -> bool:
        return self.runtime == "kubernetes"


def load() -> Settings:
    runtime = _env("ARGUS_RUNTIME", "local")
    if runtime not in RUNTIMES:
        raise ValueError(f"ARGUS_RUNTIME={runtime!r} is not one of {RUNTIMES}; set it to 'local' or 'kubernetes'")
    home = Path(_env("ARGUS_HOME", str(REPO_ROOT / ".argus"))).resolve()
    selector = _env("ARGUS_GPU_NODE_SELECTOR", "argus.io/accelerator=nvidia-gpu")
    key, _, value = selector.partition("=")
    image = _env("ARGUS_TASK_IMAGE", "argus/task:0.1.0" if runtime == "kubernetes" else "local-venv")
    return Settings(
        runtime=runtime,
        home=home,
        store=_env("ARGUS_STORE", str(home / "store")),
        dataset_registry=_env("ARGUS_DATASET_REGISTRY", str(home / "registry")),
        dvc_remote=_env("ARGUS_DVC_REMOTE", ""),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"),
        mlflow_artifacts=_env("ARGUS_MLFLOW_ARTIFACTS", str(home / "mlflow" / "artifacts")),
        # lineage of local runs names the local venv instead of an image they did not use
        image=image,
        namespace=_env("ARGUS_K8S_NAMESPACE", "argus"),
        task_service_account=_env("ARGUS_TASK_SERVICE_ACCOUNT", "argus-task"),
        s3_secret=_env("ARGUS_S3_SECRET", "argus-s3-credentials"),
        gpu_node_selector=(key, value),
        gpu_toleration_key=_env("ARGUS_GPU_TOLERATION_KEY", "nvidia.com/gpu"),
        gpu_pool=_env("ARGUS_GPU_POOL", "argus_gpu"),
        promotion_pool=_env("ARGUS_PROMOTION_POOL", "argus_promotion"),
        train_gpus=int(_env("ARGUS_TRAIN_GPUS", "1")),
        retry_delay_s=int(_env("ARGUS_RETRY_DELAY_S", "30")),
        retries=int(_env("ARGUS_RETRIES", "3")),
        schedule=_cron("ARGUS_SCHEDULE", DEFAULT_SCHEDULE),
        mlflow_conn_id=_env("ARGUS_MLFLOW_CONN_ID", ""),
        param_defaults=_json_object("ARGUS_PARAM_DEFAULTS"),
        gpu_schedule_timeout_s=_seconds("ARGUS_GPU_SCHEDULE_TIMEOUT_S", DEFAULT_GPU_SCHEDULE_TIMEOUT_S),
        schedule_timeout_s=_seconds("ARGUS_SCHEDULE_TIMEOUT_S", DEFAULT_SCHEDULE_TIMEOUT_S),
        startup_timeout_s=_seconds("ARGUS_STARTUP_TIMEOUT_S", DEFAULT_STARTUP_TIMEOUT_S),
        image_digest=image_digest(image, _env("ARGUS_TASK_IMAGE_DIGEST", "")),
        git_commit=_commit("ARGUS_GIT_COMMIT"),
        teams=teams_mod.load_plan(),
        kueue_queue=_kueue_queue(),
    )


def _kueue_queue() -> str:
    value = os.environ.get("ARGUS_KUEUE_QUEUE", "{team}-gpu").strip()
    if value and "{team}" not in value:
        raise ValueError(f"ARGUS_KUEUE_QUEUE={value!r} must name the team's queue with {{team}} (e.g. "
                         "'{team}-gpu'), or be empty for no Kueue queue label")
    return value


def image_digest(image: str, declared: str) -> str:
    """The task image's digest: from ``repo@sha256:...`` or ``ARGUS_TASK_IMAGE_DIGEST``; "" when unknown."""
    _, at, in_ref = image.partition("@")
    for name, value in (("ARGUS_TASK_IMAGE", in_ref if at else ""), ("ARGUS_TASK_IMAGE_DIGEST", declared.strip())):
        if value and not DIGEST.fullmatch(value):
            raise ValueError(f"{name}: {value!r} is not an image digest; expected sha256:<64 lowercase hex> "
                             "(what `docker buildx imagetools inspect` or `crane digest` prints)")
    if at and declared.strip() and in_ref != declared.strip():
        raise ValueError(f"ARGUS_TASK_IMAGE names digest {in_ref} but ARGUS_TASK_IMAGE_DIGEST says {declared}; "
                         "set one of them, or make them agree")
    return in_ref if at else declared.strip()


def _commit(name: str) -> str:
    """A full git commit id from env ``name`` ("" when unset); a clear error when it is something else."""
    value = _env(name, "").strip()
    if value and not COMMIT.fullmatch(value):
        raise ValueError(f"{name}={value!r} is not a full git commit id; build the image with "
                         "--build-arg ARGUS_GIT_COMMIT=$(git rev-parse HEAD) (40 hex digits)")
    return value


def _seconds(name: str, default: int) -> int:
    raw = _env(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be a whole number of seconds > 0 (default {default})")
    return value


def _cron(name: str, default: str) -> str:
    """The cron expression in env ``name``; a clear error naming the variable when it is not one."""
    from croniter import croniter  # already loaded by Airflow's cron timetables

    value = _env(name, default).strip()
    if not croniter.is_valid(value):
        raise ValueError(f"{name}={value!r} is not a cron expression (e.g. {default!r}: minute hour day month "
                         "weekday, UTC)")
    return value


def _json_object(name: str) -> dict:
    """The JSON object in env ``name`` ({} when unset); a clear error when it is not one."""
    raw = _env(name, "{}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be a JSON object, e.g. '{{\"conditions\": [\"fog\"]}}': {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(value).__name__}: {raw}")
    return value
