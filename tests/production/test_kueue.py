"""k8s/kueue/: team GPU quotas in Kueue, consistent with themselves, with the Airflow pools and with the pods.

* every manifest is ``kueue.x-k8s.io/v1beta1``; the ResourceFlavor selects and tolerates exactly the GPU
  nodes the pods are placed on;
* every ClusterQueue is in the one cohort, covers every resource a GPU pod requests, names only flavors
  that exist, has nominal quota, borrowing and lending limits (lending at most nominal) and preemption
  (reclaim within the cohort, within the queue by priority);
* the nominal GPUs of the cohort add up to at most the pool (``requests.nvidia.com/gpu`` of
  k8s/resource-quota.yaml), and per team equal the Airflow pools of the documented plan
  (``ARGUS_GPU_POOL_SLOTS=4``, ``ARGUS_TEAM_GPU_QUOTAS=vision=2,lidar=1``);
* every GPU pod the two DAGs render, for each team of the manifests (and a 2-GPU train step), names a
  LocalQueue that exists in the pod's namespace, and fits within its team's ClusterQueue.
(The manifests were also checked once against Kueue's own CRD schemas, v1beta1; see docs/deploying.md.)
"""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from . import support
from .test_generation_pods import GenerationTI
from .test_pod_specs import PRODUCTION_ENV, heavy_tasks, render

KUEUE = support.REPO / "k8s" / "kueue"
API = "kueue.x-k8s.io/v1beta1"
COHORT = "argus-gpu-pool"
PLAN_ENV = {"ARGUS_GPU_POOL_SLOTS": "4", "ARGUS_TEAM_GPU_QUOTAS": "vision=2,lidar=1"}
POD_RESOURCES = {"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"}


def load(folder=KUEUE) -> dict[str, dict[str, dict]]:
    """``{kind: {name or namespace/name: doc}}`` of the folder's manifests."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                meta = doc["metadata"]
                key = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
                out.setdefault(doc["kind"], {})[key] = doc
    return out


DOCS = load()


def quantity(value) -> float:
    from argus_airflow.step_spec import quantity as q

    return q(str(value), "quantity")


def test_every_manifest_is_kueue_v1beta1_and_listed_in_the_kustomization():
    names = {p.name for p in KUEUE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(yaml.safe_load((KUEUE / "kustomization.yaml").read_text())["resources"]) == names
    assert set(DOCS) == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    for kind, docs in DOCS.items():
        for name, doc in docs.items():
            assert doc["apiVersion"] == API, f"{kind}/{name}"


def test_the_flavor_is_the_gpu_nodes_the_pods_land_on():
    from argus_airflow import settings as settings_mod

    s = settings_mod.load()
    key, value = s.gpu_node_selector
    (flavor,) = DOCS["ResourceFlavor"].values()
    assert flavor["spec"]["nodeLabels"] == {key: value}
    assert {"key": s.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"} in flavor["spec"]["tolerations"]


def cluster_queue_problems(cq: dict, flavors: set[str]) -> list[str]:
    """What is missing or inconsistent in one ClusterQueue."""
    name, spec, bad = cq["metadata"]["name"], cq["spec"], []
    if spec.get("cohort") != COHORT:
        bad.append(f"{name}: cohort {spec.get('cohort')!r}, not {COHORT}")
    pre = spec.get("preemption") or {}
    if pre.get("reclaimWithinCohort") not in ("Any", "LowerPriority"):
        bad.append(f"{name}: no reclaimWithinCohort preemption")
    if pre.get("withinClusterQueue") not in ("LowerPriority", "LowerOrNewerEqualPriority"):
        bad.append(f"{name}: no withinClusterQueue preemption")
    covered = set()
    for group in spec.get("resourceGroups") or []:
        covered |= set(group["coveredResources"])
        for flavor in group["flavors"]:
            if flavor["name"] not in flavors:
                bad.append(f"{name}: flavor {flavor['name']} does not exist")
            listed = {r["name"] for r in flavor["resources"]}
            if listed != set(group["coveredResources"]):
                bad.append(f"{name}/{flavor['name']}: resources {sorted(listed)} != covered")
            for r in flavor["resources"]:
                missing = {"nominalQuota", "borrowingLimit", "lendingLimit"} - set(r)
                if missing:
                    bad.append(f"{name}/{r['name']}: no {sorted(missing)}")
                elif quantity(r["lendingLimit"]) > quantity(r["nominalQuota"]):
                    bad.append(f"{name}/{r['name']}: lends more than its nominal quota")
    if not POD_RESOURCES <= covered:
        bad.append(f"{name}: does not cover {sorted(POD_RESOURCES - covered)} (a GPU pod requests them)")
    return bad


def test_every_cluster_queue_is_in_the_cohort_with_quotas_limits_and_preemption():
    flavors = set(DOCS["ResourceFlavor"])
    problems = [p for cq in DOCS["ClusterQueue"].values() for p in cluster_queue_problems(cq, flavors)]
    assert problems == []


def test_the_checker_finds_a_broken_cluster_queue():
    broken = yaml.safe_load("""
metadata: {name: x}
spec:
  cohort: elsewhere
  resourceGroups:
    - coveredResources: [nvidia.com/gpu]
      flavors:
        - name: no-such-flavor
          resources: [{name: nvidia.com/gpu, nominalQuota: "1", lendingLimit: "2", borrowingLimit: "0"}]
""")
    found = " | ".join(cluster_queue_problems(broken, {"gpu-nodes"}))
    for expected in ("cohort", "reclaimWithinCohort", "withinClusterQueue", "does not exist", "lends more",
                     "does not cover"):
        assert expected in found, expected


def nominal(cq: dict, resource: str) -> float:
    return sum(quantity(r["nominalQuota"]) for g in cq["spec"]["resourceGroups"] for f in g["flavors"]
               for r in f["resources"] if r["name"] == resource)


def limit(cq: dict, resource: str) -> float:
    """The most of ``resource`` the queue can ever be admitted: nominal plus borrowing limit."""
    return sum(quantity(r["nominalQuota"]) + quantity(r["borrowingLimit"]) for g in cq["spec"]["resourceGroups"]
               for f in g["flavors"] for r in f["resources"] if r["name"] == resource)


def test_the_cohorts_gpus_fit_the_pool_and_match_the_airflow_pools():
    from argus_airflow.teams import load_plan

    quota = yaml.safe_load((support.REPO / "k8s" / "resource-quota.yaml").read_text())
    pool = quantity(quota["spec"]["hard"]["requests.nvidia.com/gpu"])
    cqs = DOCS["ClusterQueue"]
    assert sum(nominal(cq, "nvidia.com/gpu") for cq in cqs.values()) <= pool
    plan = load_plan(PLAN_ENV)
    assert plan.gpu_slots == pool
    for team, gpus in plan.quotas.items():
        assert nominal(cqs[team], "nvidia.com/gpu") == gpus, team
    assert nominal(cqs["shared"], "nvidia.com/gpu") == plan.shared_slots


def test_every_local_queue_points_at_a_cluster_queue_that_admits_its_namespace():
    namespaces = {d["metadata"]["name"] for d in yaml.safe_load_all((support.REPO / "k8s" / "namespace.yaml")
                                                                    .read_text()) if d}
    for key, lq in DOCS["LocalQueue"].items():
        ns = lq["metadata"]["namespace"]
        assert ns in namespaces, key
        cq = DOCS["ClusterQueue"][lq["spec"]["clusterQueue"]]
        assert cq["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == ns, key


# ---- the rendered pods --------------------------------------------------------------------------
def rendered_gpu_pods(team: str, dag_file: str, train_gpus: int = 1) -> dict[str, dict]:
    from kubernetes.client import ApiClient

    mp = pytest.MonkeyPatch()
    try:
        for k, v in {**PRODUCTION_ENV, **PLAN_ENV, "ARGUS_RUNTIME": "kubernetes",
                     "ARGUS_TRAIN_GPUS": str(train_gpus)}.items():
            mp.setenv(k, v)
        spec = importlib.util.spec_from_file_location(f"kueue_{dag_file}_{team}", support.REPO / "dags" / dag_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.dag
        pods = {}
        for task_id, op in heavy_tasks(dag).items():
            if not op.step_spec.gpus:
                continue
            params = {**dag.params.dump(), "team": team}
            if dag_file == "argus_weather_generation.py":  # its own templates (shards, select_conditions)
                op.item = "fog-0000"
                op.render_template_fields({"params": params, "dag": dag, "task": op, "ti": GenerationTI(),
                                           "run_id": "manual__2026-01-05T02:00:00+00:00"})
            else:
                render(op, dag, params)
            pods[task_id] = ApiClient().sanitize_for_serialization(
                op.build_pod_operator().build_pod_request_obj(None, dry_run=True))
        return pods
    finally:
        mp.undo()


def queue_problems(pods: dict[str, dict]) -> list[str]:
    """GPU pods naming no LocalQueue, one missing from their namespace, or more than their ClusterQueue holds."""
    bad = []
    for task_id, pod in pods.items():
        queue = pod["metadata"].get("labels", {}).get("kueue.x-k8s.io/queue-name")
        lq = DOCS["LocalQueue"].get(f"{pod['metadata']['namespace']}/{queue}")
        if lq is None:
            bad.append(f"{task_id}: queue {queue!r} is not a LocalQueue of namespace {pod['metadata']['namespace']}")
            continue
        cq = DOCS["ClusterQueue"][lq["spec"]["clusterQueue"]]
        requests = pod["spec"]["containers"][0]["resources"]["requests"]
        for resource in POD_RESOURCES:
            if quantity(requests.get(resource, "0")) > limit(cq, resource):
                bad.append(f"{task_id}: requests {requests[resource]} {resource}, more than ClusterQueue "
                           f"{cq['metadata']['name']} can ever admit")
    return bad


@pytest.mark.parametrize("team", ["vision", "lidar", "default"])
def test_every_gpu_pod_of_the_training_dag_names_an_existing_local_queue(team):
    pods = rendered_gpu_pods(team, "argus_weather_training.py")
    assert {"train", "evaluate", "segmenter"} <= set(pods)
    assert queue_problems(pods) == []
    assert {p["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] for p in pods.values()} == {f"{team}-gpu"}


def test_a_two_gpu_train_pod_and_the_generation_dag_fit_their_queues():
    train2 = rendered_gpu_pods("vision", "argus_weather_training.py", train_gpus=2)
    assert train2["train"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert queue_problems(train2) == []
    generation = rendered_gpu_pods("lidar", "argus_weather_generation.py")
    assert generation, "the generation DAG has GPU steps (segmenter)"
    assert queue_problems(generation) == []


def test_a_team_without_a_local_queue_is_reported():
    found = queue_problems(rendered_gpu_pods("ghost", "argus_weather_training.py"))
    assert found and all("'ghost-gpu' is not a LocalQueue of namespace argus" in p for p in found)
