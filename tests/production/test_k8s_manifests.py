"""k8s/: every manifest validates against the Kubernetes schema offline (kubernetes-validate,
strict), and the manifests agree with what the DAG's pods use (names, RBAC, priorities, GPUs)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from . import support

K8S = support.REPO / "k8s"
K8S_VERSION = kubernetes_validate.latest_version()
LAUNCHER_RULES = {
    "pods": {"create", "get", "list", "watch", "patch", "delete"},
    "pods/log": {"get"},
    "pods/exec": {"create", "get"},
    "events": {"list"},
}


def load_all() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


DOCS = load_all()


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


@pytest.mark.parametrize("source,doc", DOCS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_manifest_validates_against_kubernetes_schema(source, doc):
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{source} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_validator_rejects_a_broken_manifest():
    bad = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"},
           "automountServiceAccountToken": "no", "unexpected": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"not in kustomization: {on_disk - listed}; missing files: {listed - on_disk}"


@pytest.fixture(scope="module")
def settings():
    from argus_airflow import settings as settings_mod

    return settings_mod.load()


def test_namespace_enforces_restricted_pod_security(settings):
    (ns,) = by_kind("Namespace")
    assert ns["metadata"]["name"] == settings.namespace
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for _, doc in DOCS:
        if doc["kind"] not in ("Namespace", "PriorityClass"):
            assert doc["metadata"]["namespace"] == settings.namespace, doc["metadata"]["name"]


def test_pod_launcher_role_is_minimal():
    (role,) = by_kind("Role")
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""], "only core-group resources"
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert granted == LAUNCHER_RULES
    assert not any("*" in verbs for verbs in granted.values())
    (binding,) = by_kind("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert [s["name"] for s in binding["subjects"]] == ["airflow-pod-launcher"]
    assert not by_kind("ClusterRole") and not by_kind("ClusterRoleBinding")


def test_task_service_account_has_no_role_and_no_token(settings):
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind("ServiceAccount")}
    task = accounts[settings.task_service_account]
    assert task["automountServiceAccountToken"] is False
    bound = {s["name"] for b in by_kind("RoleBinding") for s in b["subjects"]}
    assert settings.task_service_account not in bound


def test_priority_classes_are_the_ones_the_steps_use():
    from argus_airflow.step_spec import PRIORITY_CLASSES

    classes = {pc["metadata"]["name"]: pc for pc in by_kind("PriorityClass")}
    assert set(PRIORITY_CLASSES.values()) == set(classes) == {"argus-training", "argus-evaluation", "argus-data"}
    assert classes["argus-evaluation"]["value"] > classes["argus-training"]["value"] > classes["argus-data"]["value"]
    for pc in classes.values():
        assert pc["preemptionPolicy"] == "Never" and pc["globalDefault"] is False
        assert pc["value"] < 1_000_000_000, "user classes stay below the system-* classes"


def test_gpu_quota_matches_the_pool_slots_of_compose():
    (quota,) = [q for q in by_kind("ResourceQuota") if "requests.nvidia.com/gpu" in q["spec"]["hard"]]
    gpus = int(quota["spec"]["hard"]["requests.nvidia.com/gpu"])
    slots = int(support.read_env_file(support.REPO / ".env.example")["ARGUS_GPU_POOL_SLOTS"])
    assert gpus == slots, "the GPU quota and the argus_gpu pool size must be the same number"


def test_gpu_node_label_and_taint_are_documented_as_the_pods_use_them(settings):
    readme = (K8S / "README.md").read_text()
    key, value = settings.gpu_node_selector
    assert f"kubectl label node <gpu-node> {key}={value}" in readme
    assert f"kubectl taint node <gpu-node> {settings.gpu_toleration_key}=" in readme
    assert ":NoSchedule" in readme
    assert settings.s3_secret in readme


def test_deploying_guide_names_what_the_code_uses(settings):
    from argus_airflow.step_spec import PRIORITY_CLASSES

    guide = (support.REPO / "docs" / "deploying.md").read_text()
    key, value = settings.gpu_node_selector
    names = ["aws_default", "kubernetes_default", "mlflow_default", "MLFLOW_TRACKING_URI", settings.gpu_pool,
             settings.promotion_pool, settings.s3_secret, settings.task_service_account, "airflow-pod-launcher",
             f"{key}={value}", f"{settings.gpu_toleration_key}=present:NoSchedule", "ARGUS_TASK_IMAGE",
             "@sha256:", *set(PRIORITY_CLASSES.values())]
    missing = [n for n in names if n not in guide]
    assert not missing, f"docs/deploying.md does not mention: {missing}"
