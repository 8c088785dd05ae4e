"""The KubernetesPodOperator that runs a heavy step on the shared GPU nodes.

Imported only when a pod is launched or rendered (by :class:`~argus_airflow.pod_step.PodStepOperator`
at execute time, or by tests), never when the DAG is parsed: the Kubernetes client and provider
cost about a second of import time per parse. Every pod runs as non-root under the Pod Security
"restricted" profile, the XCom sidecar included, with a task service account that mounts no API token.
"""

from __future__ import annotations

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from argus_airflow.exit_codes import EXIT_PERMANENT
from argus_airflow.settings import Settings
from argus_airflow.step_operator import StepOperatorMixin
from argus_airflow.step_spec import StepSpec

TASK_UID = 10001  # the task image's fixed non-root user (docker/task.Dockerfile)


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
    requests = {"cpu": spec.cpu, "memory": spec.memory}
    limits = {"memory": spec.memory}
    if spec.gpus:
        requests["nvidia.com/gpu"] = str(spec.gpus)
        limits["nvidia.com/gpu"] = str(spec.gpus)
    return k8s.V1ResourceRequirements(requests=requests, limits=limits)


def pod_kwargs(spec: StepSpec, settings: Settings) -> dict:
    """KubernetesPodOperator arguments derived from the spec and the deployment settings."""
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
        do_xcom_push=True,
        reattach_on_restart=True,
        on_finish_action="delete_succeeded_pod",
        startup_timeout_seconds=900 if spec.gpus else 300,
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


def base_container_exit_code(remote_pod, container_name: str) -> int | None:
    statuses = (remote_pod.status.container_statuses if remote_pod and remote_pod.status else None) or []
    status = next((s for s in statuses if s.name == container_name), None)
    if status and status.state and status.state.terminated:
        return status.state.terminated.exit_code
    return None


class ArgusPodOperator(StepOperatorMixin, KubernetesPodOperator):
    """KubernetesPodOperator that maps the step's exit code like the local runtime does."""

    def __init__(self, *, step_spec: StepSpec, condition: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.step_spec = step_spec
        self.condition = condition

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
