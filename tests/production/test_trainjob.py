"""The multi-node path: a Kubeflow Trainer TrainJob of the train step, and the TrainingRuntime it runs on.

Rendered, not run (no cluster here). The TrainJob of one condition of one run on 2 nodes x 4 GPUs:

* ``trainer.kubeflow.org/v1alpha1`` TrainJob on the namespaced runtime ``argus-torch`` of k8s/trainer/;
* numNodes 2, numProcPerNode 4, per node the requests and limits of a 4-GPU train pod;
* the task image, the command ``tini -- argus-task torchrun`` with c10d rendezvous at the master Kubeflow
  Trainer injects, and the very arguments and env the single-node train pod of the DAG gets (only the
  rank layout differs);
* the team's labels, with a Kueue queue that is a LocalQueue of the job's namespace;
* the runtime's pod: Pod Security "restricted", no API token, GPU placement, memory-backed /dev/shm, the
  S3 secret by ``envFrom`` only; the committed YAML is the renderer's output.
(Both documents were also checked once against the CRD schemas of Kubeflow Trainer v2.1.0, v2.2.1 and v2.3.0.)
"""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from . import support
from .test_kueue import DOCS as KUEUE
from .test_multi_gpu_pods import load as load_dag
from .test_pod_specs import K8S_VERSION, PRODUCTION_ENV, heavy_tasks, render, restricted_violations

RUN_ID = "scheduled__2026-01-05T02:00:00+00:00"
RUNTIME_YAML = support.REPO / "k8s" / "trainer" / "argus-torch-runtime.yaml"


@pytest.fixture(scope="module")
def rendered():
    """The TrainJob (team vision, 2 x 4 GPUs), the runtime, and the DAG's 4-GPU train pod for comparison."""
    from kubernetes.client import ApiClient

    from argus_airflow import settings as settings_mod
    from argus_airflow.trainjob import train_job, training_runtime

    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("ARGUS_TEAM_GPU_QUOTAS", "vision=2,lidar=1")
        mp.setenv("ARGUS_GPU_POOL_SLOTS", "4")
        dag = load_dag(mp, "kubernetes", 4)
        params = {**dag.params.dump(), "team": "vision"}
        op = render(heavy_tasks(dag)["train"], dag, params)
        pod = ApiClient().sanitize_for_serialization(op.build_pod_operator().build_pod_request_obj(None, dry_run=True))
        s = settings_mod.load()
        job = train_job(s, condition="fog", run_id=RUN_ID, nodes=2, gpus_per_node=4, params=params, team="vision")
        yield {"job": job, "runtime": training_runtime(s), "pod": pod, "settings": s}
    finally:
        mp.undo()


def test_the_train_job_has_the_nodes_gpus_and_resources_per_node(rendered):
    job = rendered["job"]
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["spec"]["runtimeRef"] == {"name": "argus-torch", "kind": "TrainingRuntime",
                                         "apiGroup": "trainer.kubeflow.org"}
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    pod_res = rendered["pod"]["spec"]["containers"][0]["resources"]
    assert trainer["resourcesPerNode"]["requests"] == pod_res["requests"]
    assert trainer["resourcesPerNode"]["limits"] == pod_res["limits"]
    assert trainer["resourcesPerNode"]["requests"]["nvidia.com/gpu"] == "4"
    assert len(job["metadata"]["name"]) <= 63 and job["metadata"]["namespace"] == "argus"


def test_the_train_job_runs_torchrun_with_the_train_pods_arguments_and_env(rendered):
    trainer = rendered["job"]["spec"]["trainer"]
    base = rendered["pod"]["spec"]["containers"][0]
    assert trainer["image"] == base["image"] == PRODUCTION_ENV["ARGUS_TASK_IMAGE"]
    assert trainer["command"] == ["/usr/bin/tini", "--", "argus-task", "torchrun", "--rdzv-backend=c10d",
                                  "--rdzv-endpoint=$(PET_MASTER_ADDR):$(PET_MASTER_PORT)", "--max-restarts=2",
                                  "-m", "argus_tasks"]
    # the single-node pod runs the same launcher on one node: --standalone instead of the rendezvous
    assert base["command"][:4] == trainer["command"][:4] and "--standalone" in base["command"]
    assert trainer["args"] == base["args"] and trainer["args"][:3] == ["train", "--condition", "fog"]
    job_env = {e["name"]: e["value"] for e in trainer["env"]}
    pod_env = {e["name"]: e["value"] for e in base["env"]}
    assert job_env.pop("ARGUS_MAP_INDEX") == "-1" and pod_env.pop("ARGUS_MAP_INDEX") == "0"
    assert job_env == pod_env
    assert not [k for k in job_env if any(w in k for w in ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY"))]


def test_the_train_job_is_admitted_by_its_teams_kueue_queue(rendered):
    labels = rendered["job"]["metadata"]["labels"]
    assert labels["argus.io/team"] == "vision"
    queue = labels["kueue.x-k8s.io/queue-name"]
    assert f"{rendered['job']['metadata']['namespace']}/{queue}" in KUEUE["LocalQueue"]


def test_the_runtimes_node_pod_is_restricted_placed_and_has_dev_shm(rendered):
    runtime = rendered["runtime"]
    assert (runtime["apiVersion"], runtime["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime")
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    spec = node["template"]["spec"]["template"]["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "node", "namespace": "argus"}, "spec": spec}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert restricted_violations(pod) == []
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "argus-task"
    assert spec["priorityClassName"] == "argus-training"
    key, value = rendered["settings"].gpu_node_selector
    assert spec["nodeSelector"] == {key: value}
    (container,) = spec["containers"]
    assert container["name"] == "node"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert container["envFrom"] == [{"secretRef": {"name": "argus-s3-credentials", "optional": True}}]
    assert "env" not in container


def test_the_committed_runtime_is_the_renderers_output(rendered):
    committed = yaml.safe_load(RUNTIME_YAML.read_text())
    ours = rendered["runtime"]
    ours["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0][
        "image"] = committed["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"][
        "spec"]["containers"][0]["image"]  # the TrainJob sets the image; the committed default is argus/task
    assert committed == ours, "regenerate: ARGUS_RUNTIME=kubernetes python -m argus_airflow.trainjob runtime"


def test_a_multi_node_job_needs_a_shared_store(rendered, monkeypatch):
    from argus_airflow import settings as settings_mod
    from argus_airflow.trainjob import train_job

    monkeypatch.setenv("ARGUS_STORE", "/var/lib/argus/store")
    with pytest.raises(ValueError, match="must share the run store"):
        train_job(settings_mod.load(), condition="fog", run_id=RUN_ID, nodes=2, gpus_per_node=4, params={})
