"""The run's team on the pods: ``argus.io/team`` everywhere, the team's Kueue queue on GPU pods, the env."""

from __future__ import annotations

import kubernetes_validate
import pytest

from .test_pod_specs import K8S_VERSION, heavy_tasks, load_dag, render


@pytest.fixture(scope="module")
def team_pods():
    from kubernetes.client import ApiClient

    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("ARGUS_TEAM_GPU_QUOTAS", "vision=2,lidar=1")
        mp.setenv("ARGUS_GPU_POOL_SLOTS", "4")
        dag = load_dag(mp, "kubernetes")
        params = {**dag.params.dump(), "team": "vision"}
        pods = {}
        for tid, op in heavy_tasks(dag).items():
            render(op, dag, params)
            pods[tid] = (op, ApiClient().sanitize_for_serialization(
                op.build_pod_operator().build_pod_request_obj(None, dry_run=True)))
        fresh = load_dag(mp, "kubernetes")  # rendering changed the operators of the first
        default = heavy_tasks(fresh)["pull"]
        render(default, fresh, fresh.params.dump())
        yield pods, default.build_pod_operator().build_pod_request_obj(None, dry_run=True).metadata.labels
    finally:
        mp.undo()


def test_every_pod_carries_the_runs_team_and_gpu_pods_its_kueue_queue(team_pods):
    pods, default_labels = team_pods
    for tid, (op, pod) in pods.items():
        labels = pod["metadata"]["labels"]
        assert labels["argus.io/team"] == "vision", tid
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or []}
        assert env["ARGUS_TEAM"] == "vision", tid
        if op.step_spec.gpus:
            assert labels["kueue.x-k8s.io/queue-name"] == "vision-gpu", tid
        else:
            assert "kueue.x-k8s.io/queue-name" not in labels, tid
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert default_labels["argus.io/team"] == "default"  # no team chosen: the deployment's default


def test_no_team_label_when_the_team_is_not_rendered():
    from argus_airflow import settings as settings_mod
    from argus_airflow.kubernetes_runtime import team_labels
    from argus_airflow.training_steps import PULL, TRAIN

    s = settings_mod.load()
    assert team_labels(TRAIN, s, "{{ params.team }}") == {}
    assert team_labels(PULL, s, "lidar") == {"argus.io/team": "lidar"}
    assert team_labels(TRAIN, s, "lidar") == {"argus.io/team": "lidar", "kueue.x-k8s.io/queue-name": "lidar-gpu"}
