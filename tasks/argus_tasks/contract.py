"""The step contract: what every heavy step may rely on and must honour.

A step is ``argus-task <step> [args]`` plus environment variables. It reads its inputs from and
writes its outputs to the run-scoped store (``<store>/runs/<dag_id>/<run_id>/...``) and returns a
small JSON document (ids, paths, metrics) through the XCom return file. The Kubernetes runtime and
the local runtime (``plugins/argus_airflow``) both launch exactly this command line with this env.

Exit codes are the only other channel back to Airflow:

* ``0``  success; the return file holds the result.
* ``10`` permanent failure: bad data, a broken contract, a failed quality gate. Airflow fails the
  task at once, without retry (``AirflowFailException``).
* ``75`` transient failure (``EX_TEMPFAIL``): network, storage or MLflow unreachable. Airflow
  retries with exponential backoff.
* anything else: an unexpected crash; retried like a transient failure.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_PERMANENT = 10
EXIT_TRANSIENT = 75

# Environment variables of the contract. The runtimes set them; a user running a step by hand
# may set them too (defaults make a by-hand run work against the local `.argus/` state).
ENV_STORE = "ARGUS_STORE"  # store root: a local directory or s3://bucket/prefix
ENV_DAG_ID = "ARGUS_DAG_ID"
ENV_RUN_ID = "ARGUS_RUN_ID"
ENV_TASK_ID = "ARGUS_TASK_ID"
ENV_TRY_NUMBER = "ARGUS_TRY_NUMBER"
ENV_MAP_INDEX = "ARGUS_MAP_INDEX"
ENV_XCOM_RETURN = "ARGUS_XCOM_RETURN"  # where the return JSON goes
ENV_DATASET_REGISTRY = "ARGUS_DATASET_REGISTRY"  # git URL or path of the DVC dataset registry
ENV_DVC_REMOTE = "ARGUS_DVC_REMOTE"  # optional override of the registry's default DVC remote
ENV_GIT_COMMIT = "ARGUS_GIT_COMMIT"  # commit of the step's code: baked into the task image, or the checkout's
ENV_DAG_GIT_COMMIT = "ARGUS_DAG_GIT_COMMIT"  # commit of the DAG code that launched the step (the Airflow image)
ENV_IMAGE = "ARGUS_IMAGE"  # task image reference (lineage); repo@sha256:... names its digest too
ENV_IMAGE_DIGEST = "ARGUS_IMAGE_DIGEST"  # sha256:<64 hex> of the task image, when the deployment knows it
ENV_SCRATCH = "ARGUS_SCRATCH"  # local scratch directory (cache of an s3:// store)
ENV_CPU_REQUEST = "ARGUS_CPU_REQUEST"  # the CPUs the step was given (a Kubernetes quantity: "2", "500m")
ENV_TEAM = "ARGUS_TEAM"  # the run's team (Param team): tag argus.team of every MLflow run and model version

UNKNOWN = "unknown"
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
log = logging.getLogger(__name__)

DEFAULT_XCOM_RETURN = "/airflow/xcom/return.json"  # what KubernetesPodOperator's sidecar reads
DEFAULT_STORE = ".argus/store"
DEFAULT_TEAM = "default"  # a step run by hand, outside a DAG run (the deployment default of ARGUS_TEAM)
CONDITIONS = ("fog", "rain", "snow", "night")
SOURCE_CONDITION = "clear"


class StepError(Exception):
    """A failure the step understood. Its message is shown to the user as is."""

    exit_code = 1


class PermanentStepError(StepError):
    """Bad input, broken contract or failed gate: retrying cannot help."""

    exit_code = EXIT_PERMANENT


class TransientStepError(StepError):
    """A dependency (network, storage, MLflow) is unavailable: a retry may succeed."""

    exit_code = EXIT_TRANSIENT


@dataclass(frozen=True)
class StepContext:
    """Who is running and where outputs go; built from the environment by :meth:`from_env`."""

    store_root: str
    dag_id: str
    run_id: str
    task_id: str = ""
    try_number: int = 1
    map_index: int = -1
    return_file: str = DEFAULT_XCOM_RETURN
    git_commit: str = UNKNOWN
    image: str = "local"
    dataset_registry: str = ""
    dvc_remote: str = ""
    extra: dict = field(default_factory=dict)
    image_digest: str = ""
    dag_git_commit: str = ""
    team: str = ""

    @classmethod
    def from_env(cls, environ: os._Environ | dict | None = None) -> StepContext:
        env = os.environ if environ is None else environ
        return cls(
            store_root=env.get(ENV_STORE, DEFAULT_STORE),
            dag_id=env.get(ENV_DAG_ID, "manual"),
            run_id=env.get(ENV_RUN_ID, "by-hand"),
            task_id=env.get(ENV_TASK_ID, ""),
            try_number=int(env.get(ENV_TRY_NUMBER, "1") or 1),
            map_index=int(env.get(ENV_MAP_INDEX, "-1") or -1),
            return_file=env.get(ENV_XCOM_RETURN, DEFAULT_XCOM_RETURN),
            git_commit=_commit(env, ENV_GIT_COMMIT) or UNKNOWN,
            image=env.get(ENV_IMAGE, "local"),
            dataset_registry=env.get(ENV_DATASET_REGISTRY, ""),
            dvc_remote=env.get(ENV_DVC_REMOTE, ""),
            image_digest=image_digest(env),
            dag_git_commit=_commit(env, ENV_DAG_GIT_COMMIT),
            team=str(env.get(ENV_TEAM, "") or "").strip(),
        )

    @property
    def run(self):
        """The run-scoped store of this Airflow run."""
        from argus_tasks.store import RunStore

        return RunStore(self.store_root, self.dag_id, self.run_id)

    def lineage_tags(self) -> dict[str, str]:
        """Tags that make every MLflow object traceable to the Airflow run, the code and the image."""
        tags = {
            "argus.dag_id": self.dag_id,
            "argus.run_id": self.run_id,
            "argus.task_id": self.task_id,
            "argus.try_number": str(self.try_number),
            "argus.map_index": str(self.map_index),
            "argus.git_commit": self.git_commit,
            "argus.image": self.image,
        }
        if self.image_digest:
            tags["argus.image_digest"] = self.image_digest
        if self.dag_git_commit:
            tags["argus.dag_git_commit"] = self.dag_git_commit
        tags["argus.team"] = self.team or DEFAULT_TEAM
        return tags


def _commit(env, name: str) -> str:
    """A full git commit id from ``env[name]``; "" (with a warning) when unset or not a commit id."""
    value = str(env.get(name, "") or "").strip().lower()
    if value in ("", UNKNOWN):
        return ""
    if not COMMIT.fullmatch(value):
        log.warning("%s=%r is not a full git commit id (40 hex digits): lineage records %r instead", name, value,
                    UNKNOWN)
        return ""
    return value


def image_digest(env) -> str:
    """The task image's digest, ``sha256:<64 hex>``: from ``ARGUS_IMAGE_DIGEST`` or an ``ARGUS_IMAGE`` pinned
    as ``repo@sha256:...``; "" when unknown or malformed (a malformed one is logged, never recorded)."""
    _, at, pinned = str(env.get(ENV_IMAGE, "") or "").partition("@")
    declared = str(env.get(ENV_IMAGE_DIGEST, "") or "").strip()
    found = [(name, v) for name, v in ((ENV_IMAGE_DIGEST, declared), (ENV_IMAGE, pinned if at else "")) if v]
    for name, value in found:
        if not DIGEST.fullmatch(value):
            log.warning("%s names digest %r, which is not sha256:<64 lowercase hex>: no digest recorded", name, value)
            return ""
    if len({v for _, v in found}) > 1:
        log.warning("%s=%s and the digest of %s=%s differ: no digest recorded", ENV_IMAGE_DIGEST, declared,
                    ENV_IMAGE, pinned)
        return ""
    return found[0][1] if found else ""


def cpu_budget(environ=None) -> int:
    """The CPUs this step may keep busy: ``min(ARGUS_CPU_REQUEST, os.cpu_count(), CPUs of this process's
    affinity)``, at least 1. A pod sees every CPU of its node; only its request is its own."""
    env = os.environ if environ is None else environ
    limits = [os.cpu_count() or 1]
    try:
        limits.append(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        pass
    raw = str(env.get(ENV_CPU_REQUEST, "") or "").strip()
    if raw:
        try:
            request = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
        except ValueError:
            log.warning("%s=%r is not a CPU quantity (e.g. '2', '500m'): ignored", ENV_CPU_REQUEST, raw)
        else:
            limits.append(math.floor(request))
    return max(1, min(limits))
