"""A try's pod never outlives the try, whatever its phase: the provider's own code paths, no cluster.

The KubernetesPodOperator of a heavy step runs its real ``execute``/``cleanup`` code with a fake
Kubernetes API client (``CoreV1Api``, the one thing there is no cluster for) whose pod never leaves
``Pending``: a GPU pod queued behind a busy pool. The try must fail, log the pod's events, and delete
that pod, so that the retry's pod is the only one (before: ``delete_succeeded_pod`` kept it, and it
later started training, unsupervised, into the same run folder).
"""

from __future__ import annotations

import dataclasses
import warnings
from unittest import mock

import pytest
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client import models as k8s

from argus_airflow import settings as settings_mod
from argus_airflow.pod_step import PodStepOperator
from argus_airflow.step_spec import StepSpec

EVENT = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available"
TRAIN = StepSpec(name="train", kind="training", gpus=1, cpu="8", memory="32Gi", arguments=("--condition", "fog"))


class TI:
    dag_id, task_id, run_id, map_index, try_number = "argus_weather_training", "train", "manual__1", 0, 1

    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def settings(monkeypatch, **overrides):
    monkeypatch.setenv("ARGUS_RUNTIME", "kubernetes")
    return dataclasses.replace(settings_mod.load(), **overrides)


def pod_operator(spec: StepSpec, s) -> object:
    step = PodStepOperator(task_id=spec.name, step_spec=spec, settings=s, cmds=list(spec.command),
                           arguments=spec.full_arguments, env_vars={"ARGUS_RUN_ID": "manual__1"})
    return step.build_pod_operator()


def task_log(capsys) -> str:
    """What the operator logged (Airflow's task logger writes to stdout outside a task runner)."""
    out = capsys.readouterr()
    return out.out + out.err


def pending_pod(name: str = "argus-train-x1y2z3", labels: dict | None = None) -> k8s.V1Pod:
    """A pod as the API returns it while no node can take it (not scheduled: no free GPU)."""
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, namespace="argus", labels=labels or {"argus.io/step": "train"}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base"), k8s.V1Container(name="airflow-xcom-sidecar")]),
        status=k8s.V1PodStatus(phase="Pending", conditions=[k8s.V1PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable")]),
    )


def fake_api(pod: k8s.V1Pod) -> mock.MagicMock:
    """A CoreV1Api that knows one pod (``pod``, forever Pending) and its FailedScheduling event."""
    api = mock.MagicMock(spec=CoreV1Api)
    api.api_client = ApiClient()
    api.read_namespaced_pod.return_value = pod
    api.list_namespaced_pod.side_effect = [k8s.V1PodList(items=[]), *[k8s.V1PodList(items=[pod])] * 10]
    api.create_namespaced_pod.return_value = pod
    api.list_namespaced_event.return_value = k8s.CoreV1EventList(items=[k8s.CoreV1Event(
        type="Warning", reason="FailedScheduling", message=EVENT, metadata=k8s.V1ObjectMeta(name="e1"),
        involved_object=k8s.V1ObjectReference(name=pod.metadata.name))])
    return api


def test_cleanup_deletes_a_failed_pod_that_never_left_pending_and_logs_its_events(monkeypatch, capsys):
    op = pod_operator(TRAIN, settings(monkeypatch))
    pod = pending_pod()
    op.client = api = fake_api(pod)
    from airflow.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException):
        op.cleanup(pod=pod, remote_pod=pod, xcom_result=None, context={"ti": TI()})
    api.delete_namespaced_pod.assert_called_once()
    assert api.delete_namespaced_pod.call_args.args[:2] == ("argus-train-x1y2z3", "argus")
    assert EVENT in task_log(capsys), "the pod's events belong in the task log"


def test_a_try_whose_gpu_pod_stays_pending_fails_at_the_schedule_timeout_and_deletes_it(monkeypatch, capsys):
    """The whole ``execute``: create, wait, time out, clean up (with a 1 s schedule timeout)."""
    op = pod_operator(TRAIN, settings(monkeypatch, gpu_schedule_timeout_s=1))
    op.startup_check_interval_seconds = 0.2
    context = {"ti": TI(), "run_id": "manual__1", "dag": None, "task_state_store": None}
    # the request as execute would build it; dry_run skips the in-cluster probe that needs a kubeconfig
    request = op.pod_request_obj = op.build_pod_request_obj(context, dry_run=True)
    pod = pending_pod(request.metadata.name, request.metadata.labels)
    op.client = api = fake_api(pod)
    with pytest.raises(Exception, match="argus-train|scheduled|failure"):
        op.execute(context)
    log = task_log(capsys)
    api.create_namespaced_pod.assert_called_once()
    assert [c.args[:2] for c in api.delete_namespaced_pod.call_args_list] == [(request.metadata.name, "argus")]
    assert EVENT in log
    assert "Waiting up to 1s to get the POD scheduled" in log


def test_gpu_pods_wait_hours_to_be_scheduled_and_minutes_to_start(monkeypatch):
    monkeypatch.delenv("ARGUS_GPU_SCHEDULE_TIMEOUT_S", raising=False)
    s = settings(monkeypatch)
    gpu = pod_operator(TRAIN, s)
    cpu = pod_operator(StepSpec(name="promote", kind="promotion", memory="1Gi"), s)
    assert gpu.schedule_timeout_seconds == 6 * 3600 and gpu.startup_timeout_seconds == 900
    assert cpu.schedule_timeout_seconds == 1800 and cpu.startup_timeout_seconds == 900
    assert gpu.on_finish_action.value == cpu.on_finish_action.value == "delete_pod"
    assert gpu.log_events_on_failure and gpu.get_logs
    monkeypatch.setenv("ARGUS_GPU_SCHEDULE_TIMEOUT_S", "7200")
    assert pod_operator(TRAIN, settings(monkeypatch)).schedule_timeout_seconds == 7200
    monkeypatch.setenv("ARGUS_GPU_SCHEDULE_TIMEOUT_S", "two hours")
    with pytest.raises(ValueError, match="ARGUS_GPU_SCHEDULE_TIMEOUT_S"):
        settings(monkeypatch)


def test_the_step_may_run_its_full_time_after_waiting_for_the_pool(monkeypatch):
    from datetime import timedelta

    from argus_airflow.step_spec import execution_timeout

    s = settings(monkeypatch, gpu_schedule_timeout_s=3 * 3600, startup_timeout_s=600)
    spec = dataclasses.replace(TRAIN, timeout=timedelta(hours=12))
    assert execution_timeout(spec, s) == timedelta(hours=15, minutes=10)
    assert execution_timeout(spec, dataclasses.replace(s, runtime="local")) == timedelta(hours=12)


def test_durable_replaces_the_deprecated_reattach_on_restart(monkeypatch):
    from airflow.exceptions import AirflowProviderDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", AirflowProviderDeprecationWarning)
        op = pod_operator(TRAIN, settings(monkeypatch))  # would raise on reattach_on_restart=...
    assert op.durable is True and op.reattach_on_restart is True


def test_the_image_the_pod_ran_is_recorded_and_checked_against_the_declared_digest(monkeypatch, capsys):
    declared, ran = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    op = pod_operator(TRAIN, settings(monkeypatch))
    op.env_vars = {"ARGUS_IMAGE_DIGEST": declared}
    op.remote_pod = k8s.V1Pod(status=k8s.V1PodStatus(phase="Succeeded", container_statuses=[k8s.V1ContainerStatus(
        name="base", image="registry.example.com/argus/task:1.2", image_id=f"registry.example.com/argus/task@{ran}",
        ready=False, restart_count=0)]))
    result = {"model_version": "3"}
    op.record_image(result)
    assert result == {"model_version": "3", "pod_image_id": f"registry.example.com/argus/task@{ran}"}
    log = task_log(capsys)
    assert f"the pod ran {ran}, not the declared ARGUS_IMAGE_DIGEST {declared}" in log
