"""The pods of argus_weather_training, rendered without a cluster.

The DAG file is loaded twice, once per runtime (``ARGUS_RUNTIME=kubernetes`` and ``local``) with a
production-like environment. For every heavy task the Kubernetes runtime's pod is built exactly as
the KubernetesPodOperator would send it (``build_pod_request_obj``, dry run: no API client), then:

* it validates against the Kubernetes schema (kubernetes-validate, strict);
* it meets the Pod Security "restricted" profile, XCom sidecar included;
* GPU steps limit = request ``nvidia.com/gpu`` = their Airflow pool slots in ``argus_gpu``, with the
  GPU node selector and toleration of k8s/README.md; CPU steps have none of these;
* priority class, service account and namespace exist in k8s/;
* every pod requests (and is limited to) the ephemeral storage of its step; GPU pods get a
  memory-backed ``/dev/shm``;
* no secret is in the pod: credentials come only through ``envFrom`` of the named secret;
* the local runtime would run the same entrypoint, arguments and env; the step's CPU request and the
  image digest travel in that env.
"""

from __future__ import annotations

import importlib.util
import json
import re

import kubernetes_validate
import pendulum
import pytest
import yaml

from . import support

DAG_FILE = support.REPO / "dags" / "argus_weather_training.py"
K8S_VERSION = kubernetes_validate.latest_version()
SENTINEL_SECRET = "sentinel-secret-value-that-must-not-leak"
PRODUCTION_ENV = {
    "ARGUS_STORE": "s3://argus-runs",
    "ARGUS_DVC_REMOTE": "s3://argus-dvc/datasets",
    "ARGUS_DATASET_REGISTRY": "https://git.example.com/data/argus-registry.git",
    "ARGUS_MLFLOW_ARTIFACTS": "s3://argus-mlflow/experiments",
    "MLFLOW_TRACKING_URI": "http://mlflow.argus.svc.cluster.local:5000",
    "ARGUS_TASK_IMAGE": "registry.example.com/argus/task@sha256:" + "0" * 64,
    "ARGUS_K8S_NAMESPACE": "argus",
    # present in the worker's environment; must never reach a pod spec
    "AWS_ACCESS_KEY_ID": "AKIA" + "SENTINEL0000",
    "AWS_SECRET_ACCESS_KEY": SENTINEL_SECRET,
}
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)


class RenderTI:
    """The few task-instance attributes the step arguments use in their templates."""

    try_number = 1
    map_index = 0

    def xcom_pull(self, task_ids=None, map_indexes=None, **_):
        assert task_ids == "approve"
        return {"approved": True, "by": "auto"}


def load_dag(monkeypatch, runtime: str):
    for key, value in {**PRODUCTION_ENV, "ARGUS_RUNTIME": runtime}.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(f"argus_dag_{runtime}", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def heavy_tasks(dag, condition: str = "fog") -> dict:
    """``{task_id: operator}`` for every heavy task; mapped ones materialised for ``condition``."""
    from argus_airflow.step_operator import StepOperatorMixin

    fields = ("step_spec", "settings", "cmds", "arguments", "env_vars", "pool", "pool_slots")
    out = {}
    for task in dag.tasks:
        cls = getattr(task, "operator_class", type(task))
        if not (isinstance(cls, type) and issubclass(cls, StepOperatorMixin)):
            continue
        if hasattr(task, "partial_kwargs"):  # a mapped task: one expansion of it
            kw = task.partial_kwargs
            keep = {k: kw[k] for k in fields if k in kw}
            out[task.task_id] = cls(task_id=task.task_id, condition=condition, **keep)
        elif not isinstance(getattr(task, "condition", None), (str, type(None))):  # in the mapped task group
            keep = {k: getattr(task, k) for k in fields if hasattr(task, k)}
            out[task.task_id] = cls(task_id=task.task_id, condition=condition, **keep)
        else:
            out[task.task_id] = task
    return out


def render(op, dag, params: dict):
    context = {
        "params": params,
        "dag": dag,
        "run_id": "scheduled__2026-01-05T02:00:00+00:00",
        "task": op,
        "ti": RenderTI(),
        "data_interval_start": pendulum.datetime(2026, 1, 1, 2, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 1, 5, 2, tz="UTC"),
    }
    op.render_template_fields(context)
    return op


@pytest.fixture(scope="module")
def rendered():
    """Both runtimes' heavy tasks, rendered with the same params, and the pods of the Kubernetes one."""
    from kubernetes.client import ApiClient

    mp = pytest.MonkeyPatch()
    try:
        kube_dag = load_dag(mp, "kubernetes")
        local_dag = load_dag(mp, "local")
        params = kube_dag.params.dump()
        kube = {tid: render(op, kube_dag, params) for tid, op in heavy_tasks(kube_dag).items()}
        local = {tid: render(op, local_dag, params) for tid, op in heavy_tasks(local_dag).items()}
        pods = {}
        for tid, op in kube.items():
            pod = op.build_pod_operator().build_pod_request_obj(None, dry_run=True)
            pods[tid] = ApiClient().sanitize_for_serialization(pod)
        yield {"kube": kube, "local": local, "pods": pods, "settings": next(iter(kube.values())).settings}
    finally:
        mp.undo()


def k8s_docs(kind: str) -> dict[str, dict]:
    docs = {}
    for path in (support.REPO / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                docs[doc["metadata"]["name"]] = doc
    return docs


def test_every_heavy_step_is_a_pod(rendered):
    from argus_airflow.training_steps import HEAVY_STEPS

    assert set(rendered["pods"]) == {s.name for s in HEAVY_STEPS}
    assert set(rendered["local"]) == set(rendered["kube"])


# ---- Pod Security "restricted" ------------------------------------------------------------------
def restricted_violations(pod: dict) -> list[str]:
    """What in ``pod`` breaks the Pod Security Standards "restricted" profile (baseline included)."""
    spec = pod["spec"]
    bad: list[str] = []
    psc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            bad.append(f"pod: {flag}")
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            bad.append(f"volume {vol['name']}: type {sorted(kinds - ALLOWED_VOLUMES)} not allowed")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        bad.append("pod: seccomp Unconfined")
    if psc.get("runAsUser") == 0:
        bad.append("pod: runAsUser 0")
    containers = [*(spec.get("initContainers") or []), *spec["containers"], *(spec.get("ephemeralContainers") or [])]
    for c in containers:
        name = c["name"]
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            bad.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp!r}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort")
    return bad


def test_restricted_checker_catches_violations():
    pod = {"spec": {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                    "containers": [{"name": "c", "securityContext": {"privileged": True,
                                                                     "capabilities": {"add": ["SYS_ADMIN"]}}}]}}
    found = " ".join(restricted_violations(pod))
    for expected in ("hostNetwork", "hostPath", "privileged", "allowPrivilegeEscalation", "drop ALL",
                     "SYS_ADMIN", "runAsNonRoot", "seccompProfile"):
        assert expected in found, expected


@pytest.mark.parametrize("task_id", ["pull", "validate", "segmenter", "train", "evaluate", "promote", "report"])
def test_pod_validates_and_is_restricted(rendered, task_id):
    pod = rendered["pods"][task_id]
    try:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"pod of {task_id} is not a valid Pod: {exc.message} at {list(exc.path)}")
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert "airflow-xcom-sidecar" in names, "the XCom sidecar is part of the checked pod"
    assert restricted_violations(pod) == []
    assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("task_id", ["pull", "validate", "segmenter", "train", "evaluate", "promote", "report"])
def test_pod_resources_placement_and_priority(rendered, task_id):
    settings = rendered["settings"]
    op = rendered["kube"][task_id]
    spec = op.step_spec
    pod = rendered["pods"][task_id]
    base = pod["spec"]["containers"][0]
    requests, limits = base["resources"]["requests"], base["resources"].get("limits", {})
    tolerations = pod["spec"].get("tolerations") or []
    selector = pod["spec"].get("nodeSelector") or {}
    key, value = settings.gpu_node_selector
    if spec.gpus:
        assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"] == str(spec.gpus) == str(op.pool_slots)
        assert op.pool == "argus_gpu"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
        assert selector == {"argus.io/accelerator": "nvidia-gpu"} == {key: value}
    else:
        assert "nvidia.com/gpu" not in requests and "nvidia.com/gpu" not in limits
        assert not selector and not any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
        assert op.pool != "argus_gpu"
    assert "memory" in limits and "cpu" in requests and "memory" in requests
    assert pod["spec"]["priorityClassName"] == spec.priority_class
    assert spec.priority_class in k8s_docs("PriorityClass")
    assert pod["spec"]["serviceAccountName"] == "argus-task" in k8s_docs("ServiceAccount")
    assert pod["metadata"]["namespace"] == "argus" in k8s_docs("Namespace")
    assert base["image"] == PRODUCTION_ENV["ARGUS_TASK_IMAGE"]


@pytest.mark.parametrize("task_id", ["pull", "validate", "segmenter", "train", "evaluate", "promote", "report"])
def test_no_secret_in_the_pod(rendered, task_id):
    pod = rendered["pods"][task_id]
    text = json.dumps(pod)
    assert SENTINEL_SECRET not in text and PRODUCTION_ENV["AWS_ACCESS_KEY_ID"] not in text
    for container in pod["spec"]["containers"]:
        for env in container.get("env") or []:
            assert not SECRET_NAME.search(env["name"]), f"{task_id}: credential-like env {env['name']}"
            assert "valueFrom" not in env or "secretKeyRef" not in env["valueFrom"]
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", env.get("value", "")), f"{task_id}: password in {env['name']}"
    env_from = pod["spec"]["containers"][0].get("envFrom") or []
    assert [e["secretRef"]["name"] for e in env_from if "secretRef" in e] == [rendered["settings"].s3_secret]


@pytest.mark.parametrize("task_id", ["pull", "validate", "segmenter", "train", "evaluate", "promote", "report"])
def test_local_runtime_runs_the_same_command_line_and_env(rendered, task_id):
    local = rendered["local"][task_id]
    pod = rendered["pods"][task_id]
    base = pod["spec"]["containers"][0]
    image_entrypoint = support.parse_dockerfile(support.REPO / "docker" / "task.Dockerfile")[-1].last(
        "ENTRYPOINT").exec_form()
    pod_command = base.get("command") or [image_entrypoint[-1]]
    assert pod_command[-1] == image_entrypoint[-1] == "argus-task"
    assert [*pod_command, *base["args"]] == [*local.cmds, *[str(a) for a in local.arguments]]
    assert "{{" not in " ".join(base["args"]), "templates left unrendered"
    assert base["args"][0] == task_id
    pod_env = {e["name"]: e["value"] for e in base.get("env") or []}
    assert pod_env == {k: str(v) for k, v in local.env_vars.items()}


# ---- pod resources: disk, /dev/shm, the CPU request the step sees ---------------------------------
EXPECTED_DISK = {"pull": "20Gi", "validate": "20Gi", "segmenter": "20Gi", "train": "50Gi", "evaluate": "20Gi",
                 "promote": "1Gi", "report": "1Gi"}
EXPECTED_SHM = {"segmenter": "2Gi", "train": "8Gi", "evaluate": "2Gi"}


@pytest.mark.parametrize("task_id", ["pull", "validate", "segmenter", "train", "evaluate", "promote", "report"])
def test_pod_requests_its_disk_and_gpu_pods_get_a_memory_backed_dev_shm(rendered, task_id):
    spec = rendered["kube"][task_id].step_spec
    pod = rendered["pods"][task_id]
    base = pod["spec"]["containers"][0]
    res = base["resources"]
    assert res["requests"]["ephemeral-storage"] == res["limits"]["ephemeral-storage"] == spec.disk
    assert spec.disk == EXPECTED_DISK[task_id]
    shm_mounts = [m for m in base.get("volumeMounts") or [] if m["mountPath"] == "/dev/shm"]
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    if spec.gpus:
        (mount,) = shm_mounts
        assert volumes[mount["name"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": EXPECTED_SHM[task_id]}
        assert EXPECTED_SHM[task_id] == spec.shm
    else:
        assert not shm_mounts, f"{task_id} is a CPU step: no /dev/shm volume"


def test_a_dev_shm_larger_than_half_the_memory_is_refused():
    from argus_airflow.step_spec import StepSpec

    with pytest.raises(ValueError, match="/dev/shm of 6Gi .* memory limit 8Gi"):
        StepSpec(name="big", kind="evaluation", gpus=1, memory="8Gi", shm_size="6Gi")
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        StepSpec(name="bad", ephemeral_storage="lots")


@pytest.mark.parametrize("task_id", ["pull", "validate", "segmenter", "train", "evaluate", "promote", "report"])
def test_the_step_is_told_its_cpu_request_and_the_image_digest(rendered, task_id):
    spec = rendered["kube"][task_id].step_spec
    pod_env = {e["name"]: e["value"] for e in rendered["pods"][task_id]["spec"]["containers"][0].get("env") or []}
    assert pod_env["ARGUS_CPU_REQUEST"] == spec.cpu
    assert pod_env["ARGUS_CPU_REQUEST"] == rendered["pods"][task_id]["spec"]["containers"][0]["resources"][
        "requests"]["cpu"]
    assert pod_env["ARGUS_IMAGE_DIGEST"] == "sha256:" + "0" * 64 == PRODUCTION_ENV["ARGUS_TASK_IMAGE"].split("@")[1]
    assert rendered["local"][task_id].env_vars["ARGUS_CPU_REQUEST"] == spec.cpu


def test_a_step_command_other_than_the_image_entrypoint_is_the_pods_command(rendered):
    """``cmds`` is used, not ignored: torchrun (multi-GPU training) runs behind tini like the entrypoint."""
    from argus_airflow.pod_step import PodStepOperator

    train = rendered["kube"]["train"]
    cmds = ["torchrun", "--nproc-per-node=2", "-m", "argus_tasks"]
    op = PodStepOperator(task_id="train", step_spec=train.step_spec, settings=train.settings, cmds=cmds,
                         arguments=list(train.arguments), env_vars=dict(train.env_vars), condition="fog")
    base = op.build_pod_operator().build_pod_request_obj(None, dry_run=True).spec.containers[0]
    assert base.command == ["/usr/bin/tini", "--", *cmds]
    assert base.args == [str(a) for a in train.arguments]
    assert not rendered["pods"]["train"]["spec"]["containers"][0].get("command"), "the default is the entrypoint"
