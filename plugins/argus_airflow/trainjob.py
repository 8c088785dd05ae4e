"""Past one node: the train step as a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``).

One pod holds at most one node's GPUs (``ARGUS_TRAIN_GPUS``, torchrun ``--standalone``). For more, Kubeflow
Trainer runs the same task image on ``numNodes`` nodes: its torch runtime starts one pod per node (a JobSet)
and gives each torchrun its part through ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``,
``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` (torchrun reads them as its defaults). The command is the
single-node one with c10d rendezvous at the master instead of ``--standalone``; the arguments and env are
the train step's own, rendered as Airflow would for one condition of one run. Rank 0 (node 0) logs,
checkpoints and registers; every rank reads the checkpoints from the shared run store (``s3://...``).

Two documents:

* :func:`training_runtime`: the namespaced ``TrainingRuntime`` ``argus-torch`` (k8s/trainer/), which holds
  what every node's pod needs: Pod Security "restricted", the task service account without API token, GPU
  placement, the training priority class, the S3 secret through ``envFrom``, a memory-backed ``/dev/shm``;
* :func:`train_job`: the ``TrainJob`` of one run and condition: image, command, args, env, nodes, GPUs and
  resources per node, and the team's labels (``kueue.x-k8s.io/queue-name``: Kueue admits the whole job,
  all nodes at once, against the team's ClusterQueue).

``python -m argus_airflow.trainjob runtime`` prints the runtime (k8s/trainer/argus-torch-runtime.yaml is its
output); ``python -m argus_airflow.trainjob job --condition fog --run-id R --nodes 2 --gpus-per-node 8
[--team T] [--param key=json]...`` prints a TrainJob to ``kubectl apply -f -``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from types import SimpleNamespace

from argus_airflow.settings import Settings
from argus_airflow.step_spec import SHM_SIZE, contract_env, quantity
from argus_airflow.training_steps import train_step

API = "trainer.kubeflow.org/v1alpha1"
RUNTIME = "argus-torch"
NODE = "node"  # the runtime's replicated job and container Kubeflow Trainer's torch plugin fills in
MAX_GPUS_PER_NODE = 8
MAX_RESTARTS = 2
# kubelet expands $(VAR) in a container's command from its env: the master the torch plugin injects
MULTI_NODE_COMMAND = ("argus-task", "torchrun", "--rdzv-backend=c10d", "--rdzv-endpoint=$(PET_MASTER_ADDR):"
                      "$(PET_MASTER_PORT)", f"--max-restarts={MAX_RESTARTS}", "-m", "argus_tasks")


def training_runtime(settings: Settings) -> dict:
    """The TrainingRuntime every Argus TrainJob runs on (see module doc)."""
    from kubernetes.client import ApiClient

    from argus_airflow.kubernetes_runtime import (
        SHM_VOLUME,
        restricted_container_security_context,
        restricted_pod_security_context,
    )

    api = ApiClient()
    key, value = settings.gpu_node_selector
    shm = f"{int(quantity(SHM_SIZE['training'], 'shm') * MAX_GPUS_PER_NODE // 2**30)}Gi"
    pod = {
        "priorityClassName": train_step(1).priority_class,
        "serviceAccountName": settings.task_service_account,
        "automountServiceAccountToken": False,
        "securityContext": api.sanitize_for_serialization(restricted_pod_security_context()),
        "nodeSelector": {key: value},
        "tolerations": [{"key": settings.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 60,
        # a limit, not a reservation: what the ranks of a full node may put there (memory of the pod)
        "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm}}],
        "containers": [{
            "name": NODE,
            "image": settings.image,
            "securityContext": api.sanitize_for_serialization(restricted_container_security_context()),
            "envFrom": [{"secretRef": {"name": settings.s3_secret, "optional": True}}],
            "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
        }],
    }
    return {
        "apiVersion": API,
        "kind": "TrainingRuntime",
        "metadata": {"name": RUNTIME, "namespace": settings.namespace,
                     "labels": {"app.kubernetes.io/part-of": "argus-pipelines",
                                "trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},  # the TrainJob sets nodes and processes per node
            "template": {"spec": {"replicatedJobs": [{
                "name": NODE,
                "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                    # a node's pod is not restarted by its Job: torchrun restarts the ranks, Airflow the job
                    "spec": {"backoffLimit": 0, "template": {"spec": pod}},
                },
            }]}},
        },
    }


def render(template: str, context: dict) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["tojson"] = lambda v: json.dumps(v)
    return env.from_string(str(template)).render(**context)


def job_name(condition: str, run_id: str) -> str:
    """An RFC 1035 label of at most 63 characters, stable for one run and condition."""
    return f"argus-train-{condition}-{hashlib.sha1(run_id.encode()).hexdigest()[:12]}"


def train_job(settings: Settings, *, condition: str, run_id: str, nodes: int, gpus_per_node: int,
              params: dict, team: str | None = None, dag_id: str = "argus_weather_training",
              try_number: int = 1) -> dict:
    """The TrainJob of ``condition`` in run ``run_id`` on ``nodes`` x ``gpus_per_node`` GPUs."""
    from argus_airflow.kubernetes_runtime import IMAGE_ENTRYPOINT, team_labels

    if nodes < 1 or not 1 <= gpus_per_node <= MAX_GPUS_PER_NODE:
        raise ValueError(f"nodes={nodes}, gpus_per_node={gpus_per_node}: need nodes >= 1 and 1..."
                         f"{MAX_GPUS_PER_NODE} GPUs per node")
    if nodes > 1 and "://" not in settings.store:
        raise ValueError(f"ARGUS_STORE={settings.store!r} is a local folder: the nodes of a multi-node job must share "
                         "the run store (checkpoints, result), e.g. s3://argus-runs")
    spec = train_step(gpus_per_node)
    team = team or settings.teams.default_team
    name = job_name(condition, run_id)

    context = {"params": {**params, "team": team}, "run_id": run_id, "dag": {"dag_id": dag_id},
               "task": SimpleNamespace(task_id=spec.name, condition=condition),
               "ti": {"try_number": try_number, "map_index": -1}}
    try:
        args = [render(a, context) for a in spec.full_arguments]
        env = {k: render(v, context) for k, v in contract_env(settings, spec).items()}
    except Exception as exc:  # jinja2's UndefinedError: a template needs more than a run's Params
        raise ValueError(f"cannot render the train step outside Airflow: {exc} (with ARGUS_MLFLOW_CONN_ID set, "
                         "set MLFLOW_TRACKING_URI instead)") from exc
    requests = {"cpu": spec.cpu, "memory": spec.memory, "ephemeral-storage": spec.disk,
                "nvidia.com/gpu": str(gpus_per_node)}
    limits = {k: v for k, v in requests.items() if k != "cpu"}
    labels = {"app.kubernetes.io/part-of": "argus-pipelines", "argus.io/step": spec.name,
              "argus.io/condition": condition, **team_labels(spec, settings, team)}
    return {
        "apiVersion": API,
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels,
                     "annotations": {"argus.io/run-id": run_id}},
        "spec": {
            "runtimeRef": {"name": RUNTIME, "kind": "TrainingRuntime", "apiGroup": "trainer.kubeflow.org"},
            "trainer": {
                "image": settings.image,
                "command": [*IMAGE_ENTRYPOINT[:-1], *MULTI_NODE_COMMAND],
                "args": args,
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "numNodes": nodes,
                "numProcPerNode": gpus_per_node,
                "resourcesPerNode": {"requests": requests, "limits": limits},
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    import yaml

    from argus_airflow import settings as settings_mod
    from argus_airflow.training_params import training_params

    ap = argparse.ArgumentParser(prog="python -m argus_airflow.trainjob", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("runtime", help="print the TrainingRuntime argus-torch")
    job = sub.add_parser("job", help="print the TrainJob of one condition of one run")
    job.add_argument("--condition", required=True, choices=("fog", "rain", "snow", "night"))
    job.add_argument("--run-id", required=True, help="the Airflow run whose store folder the job trains in")
    job.add_argument("--nodes", type=int, required=True)
    job.add_argument("--gpus-per-node", type=int, default=MAX_GPUS_PER_NODE)
    job.add_argument("--team", default=None)
    job.add_argument("--param", action="append", default=[], metavar="KEY=JSON",
                     help="a Param of the training DAG, e.g. --param train_steps=40000 (default: the DAG's)")
    args = ap.parse_args(argv)
    s = settings_mod.load()
    if args.what == "runtime":
        doc = training_runtime(s)
    else:
        params = {k: p.value for k, p in training_params("full", s.param_defaults).items()}
        for item in args.param:
            key, _, raw = item.partition("=")
            if key not in params:
                ap.error(f"--param {key}: not a Param of argus_weather_training ({', '.join(params)})")
            params[key] = json.loads(raw)
        doc = train_job(s, condition=args.condition, run_id=args.run_id, nodes=args.nodes,
                        gpus_per_node=args.gpus_per_node, params=params, team=args.team)
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
