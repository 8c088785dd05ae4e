"""Every heavy step of ``argus_weather_generation`` renders to a pod that meets the training DAG's policy.

Same renderer and checks as ``test_pod_specs`` (Pod Security "restricted", no secret in the spec, the
manifest validates against the Kubernetes schema); mapped steps are materialised for one condition or shard.
"""

from __future__ import annotations

import importlib.util

import pytest

from . import support
from .test_pod_specs import PRODUCTION_ENV, heavy_tasks, restricted_violations

DAG_FILE = support.REPO / "dags" / "argus_weather_generation.py"


class GenerationTI:
    map_index = 0
    try_number = 1

    def xcom_pull(self, task_ids=None, **_):
        return ["fog"] if task_ids == "select_conditions" else None


def render(op, dag):
    op.render_template_fields({"params": dag.params.dump(), "dag": dag, "run_id": "manual__2026-01-05T02:00:00+00:00",
                               "task": op, "ti": GenerationTI()})
    return op


@pytest.fixture(scope="module")
def pods():
    from kubernetes.client import ApiClient

    mp = pytest.MonkeyPatch()
    try:
        for key, value in {**PRODUCTION_ENV, "ARGUS_RUNTIME": "kubernetes"}.items():
            mp.setenv(key, value)
        spec = importlib.util.spec_from_file_location("argus_generation_dag_kube", DAG_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.dag
        out = {}
        for task_id, op in heavy_tasks(dag).items():
            if task_id == "generate":
                op.item = "fog-0000"
            rendered = render(op, dag)
            pod = rendered.build_pod_operator().build_pod_request_obj(None, dry_run=True)
            out[task_id] = ApiClient().sanitize_for_serialization(pod)
        yield out
    finally:
        mp.undo()


def test_every_heavy_step_of_the_product_is_a_restricted_pod_without_secrets(pods):
    from argus_airflow.generation_steps import GENERATION_STEPS
    from argus_airflow.training_steps import SEGMENTER, VALIDATE

    assert set(pods) == {s.name for s in (*GENERATION_STEPS, VALIDATE, SEGMENTER)}
    for task_id, pod in pods.items():
        assert restricted_violations(pod) == [], task_id
        env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}
        assert not [k for k in env if any(w in k for w in ("PASSWORD", "SECRET", "TOKEN", "FERNET"))], (task_id, env)


def test_mapped_steps_get_their_condition_and_shard(pods):
    args = {t: pod["spec"]["containers"][0]["args"] for t, pod in pods.items()}
    assert args["export"][:3] == ["export", "--condition", "fog"]
    assert args["generate"][:3] == ["generate", "--shard-id", "fog-0000"]
    assert args["resolve"][:3] == ["resolve", "--conditions", "fog"]
    assert "nvidia.com/gpu" not in pods["generate"]["spec"]["containers"][0]["resources"]["requests"], (
        "generate runs ONNX on the CPU: it must not hold a GPU")
