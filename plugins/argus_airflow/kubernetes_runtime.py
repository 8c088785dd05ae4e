"""The KubernetesPodOperator that runs a heavy step on the shared GPU nodes.

Imported only when a pod is launched or rendered (by :class:`~argus_airflow.pod_step.PodStepOperator`
at execute time, or by tests), never when the DAG is parsed: the Kubernetes client and provider
cost about a second of import time per parse. Every pod runs as non-root under the Pod Security
"restricted" profile, the XCom sidecar included, with a task service account that mounts no API token.

A try's pod never outlives the try: ``on_finish_action="delete_pod"`` deletes it whatever its phase, a
pod still ``Pending`` at the schedule or start-up timeout included (its events and container states go
to the task log first, ``log_events_on_failure``), so a retry never races an earlier pod that got a GPU
late. A pod waits up to ``schedule_timeout_seconds`` to be scheduled (hours for the shared GPU pool),
then up to ``startup_timeout_seconds`` to start (image pull). ``durable`` reattaches a retry to the pod
of a try whose worker died (Airflow 3.3+: through the task state store) instead of starting a second.
"""

from __future__ import annotations

import re

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from argus_airflow.exit_codes import EXIT_PERMANENT
from argus_airflow.settings import Settings
from argus_airflow.step_operator import StepOperatorMixin
from argus_airflow.step_spec import StepSpec

TASK_UID = 10001  # the task image's fixed non-root user (docker/task.Dockerfile)
IMAGE_ENTRYPOINT = ("/usr/bin/tini", "--", "argus-task")  # the task image's ENTRYPOINT (docker/task.Dockerfile)
SHM_VOLUME = "dshm"


def restricted_container_security_context() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=TASK_UID,
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def restricted_pod_security_context() -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=TASK_UID,
        run_as_group=TASK_UID,
        fs_group=TASK_UID,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def resources(spec: StepSpec) -> k8s.V1ResourceRequirements:
    requests = {"cpu": spec.cpu, "memory": spec.memory, "ephemeral-storage": spec.disk}
    limits = {"memory": spec.memory, "ephemeral-storage": spec.disk}
    if spec.gpus:
        requests["nvidia.com/gpu"] = str(spec.gpus)
        limits["nvidia.com/gpu"] = str(spec.gpus)
    return k8s.V1ResourceRequirements(requests=requests, limits=limits)


def container_command(cmds: list[str] | None) -> list[str] | None:
    """The container command for the step's ``cmds``: None (the image's entrypoint) when that is what they
    name, else ``cmds`` behind tini, which forwards SIGTERM and reaps child processes as the entrypoint does."""
    if not cmds or list(cmds) == list(IMAGE_ENTRYPOINT[-1:]):
        return None
    return [*IMAGE_ENTRYPOINT[:-1], *cmds]


def shm_volume(spec: StepSpec) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    """A memory-backed /dev/shm of the spec's size (GPU steps), or nothing."""
    if not spec.shm:
        return [], []
    volume = k8s.V1Volume(name=SHM_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory",
                                                                                size_limit=spec.shm))
    return [volume], [k8s.V1VolumeMount(name=SHM_VOLUME, mount_path="/dev/shm")]


def pod_kwargs(spec: StepSpec, settings: Settings) -> dict:
    """KubernetesPodOperator arguments derived from the spec and the deployment settings."""
    volumes, mounts = shm_volume(spec)
    kwargs = dict(
        namespace=settings.namespace,
        image=settings.image,
        image_pull_policy="IfNotPresent",
        name=f"argus-{spec.name}",
        container_resources=resources(spec),
        priority_class_name=spec.priority_class,
        service_account_name=settings.task_service_account,
        automount_service_account_token=False,
        security_context=restricted_pod_security_context(),
        container_security_context=restricted_container_security_context(),
        xcom_sidecar_container_security_context=restricted_container_security_context(),
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.s3_secret, optional=True))],
        labels={"app.kubernetes.io/part-of": "argus-pipelines", "argus.io/step": spec.name,
                "argus.io/kind": spec.kind},
        volumes=volumes,
        volume_mounts=mounts,
        do_xcom_push=True,
        durable=True,
        on_finish_action="delete_pod",
        schedule_timeout_seconds=settings.gpu_schedule_timeout_s if spec.gpus else settings.schedule_timeout_s,
        startup_timeout_seconds=settings.startup_timeout_s,
        get_logs=True,
        log_events_on_failure=True,
        termination_grace_period=60,
    )
    if spec.gpus:
        key, value = settings.gpu_node_selector
        kwargs["node_selector"] = {key: value}
        kwargs["tolerations"] = [k8s.V1Toleration(key=settings.gpu_toleration_key, operator="Exists",
                                                  effect="NoSchedule")]
    return kwargs


def team_labels(spec: StepSpec, settings: Settings, team: str) -> dict[str, str]:
    """The pod labels of the run's team: ``argus.io/team`` on every pod and, on GPU pods, the team's Kueue
    queue (``kueue.x-k8s.io/queue-name``, ``ARGUS_KUEUE_QUEUE``), so the cluster holds the team's quota too."""
    from argus_airflow.teams import TEAM_PATTERN

    if not re.fullmatch(TEAM_PATTERN, team or ""):  # not rendered (a pod built outside a run): no team label
        return {}
    labels = {"argus.io/team": team}
    if spec.gpus and settings.kueue_queue:
        labels["kueue.x-k8s.io/queue-name"] = settings.kueue_queue.format(team=team)
    return labels


def _base_status(remote_pod, container_name: str):
    statuses = (remote_pod.status.container_statuses if remote_pod and remote_pod.status else None) or []
    return next((s for s in statuses if s.name == container_name), None)


def base_container_exit_code(remote_pod, container_name: str) -> int | None:
    status = _base_status(remote_pod, container_name)
    if status and status.state and status.state.terminated:
        return status.state.terminated.exit_code
    return None


def base_container_image_id(remote_pod, container_name: str) -> str:
    """The image the kubelet ran (``repo@sha256:...``), as the pod status reports it; "" when unknown."""
    status = _base_status(remote_pod, container_name)
    return (status.image_id or "") if status else ""


class ArgusPodOperator(StepOperatorMixin, KubernetesPodOperator):
    """KubernetesPodOperator that maps the step's exit code like the local runtime does."""

    def __init__(self, *, step_spec: StepSpec, condition: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.step_spec = step_spec
        self.condition = condition

    def execute(self, context):
        result = super().execute(context)
        self.record_image(result)
        return result

    def record_image(self, result) -> None:
        """Log the image the pod really ran and add it to the result; warn when it is not the declared digest."""
        image_id = base_container_image_id(self.remote_pod, self.base_container_name)
        if not image_id:
            return
        self.log.info("the step ran image %s", image_id)
        env = self.env_vars or []  # a dict until the pod is built, V1EnvVar objects after
        declared = env.get("ARGUS_IMAGE_DIGEST") if isinstance(env, dict) else next(
            (e.value for e in env if getattr(e, "name", None) == "ARGUS_IMAGE_DIGEST"), None)
        ran = image_id.rpartition("@")[2]
        if declared and ran.startswith("sha256:") and ran != declared:
            self.log.warning("the pod ran %s, not the declared ARGUS_IMAGE_DIGEST %s: the step's lineage names the "
                             "declared one; pin ARGUS_TASK_IMAGE by digest", ran, declared)
        if isinstance(result, dict):
            result["pod_image_id"] = image_id

    def cleanup(self, pod, remote_pod, xcom_result=None, context=None):
        from airflow.sdk.exceptions import AirflowException, AirflowSkipException

        try:
            return super().cleanup(pod, remote_pod, xcom_result=xcom_result, context=context)
        except AirflowSkipException:
            raise
        except AirflowException as exc:
            code = base_container_exit_code(remote_pod, self.base_container_name)
            if code == EXIT_PERMANENT:
                raise self.failure_exception(code, [str(exc)]) from exc
            raise
