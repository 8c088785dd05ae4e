"""``ARGUS_TRAIN_GPUS=N`` (N > 1): the train pod runs torchrun with one rank per GPU, sized for N ranks.

The DAG is rendered as in ``test_pod_specs`` (dry-run pods, no cluster) with ``ARGUS_TRAIN_GPUS=4``:

* the container command is ``tini -- argus-task torchrun --standalone --nproc-per-node=4 --max-restarts=2
  -m argus_tasks`` and the arguments are the train step's own, so each rank runs ``python -m argus_tasks
  train ...``; the local runtime runs the very same command line;
* the pod requests and limits 4 GPUs, draws 4 slots of the GPU pool, gets 4x the CPUs and memory of the
  one-GPU step and a memory-backed ``/dev/shm`` for 4 ranks (at most half the memory);
* it still validates and meets Pod Security "restricted"; the other steps are untouched.
"""

from __future__ import annotations

import importlib.util

import kubernetes_validate
import pytest

from . import support
from .test_pod_specs import K8S_VERSION, PRODUCTION_ENV, heavy_tasks, render, restricted_violations

GPUS = 4


def load(monkeypatch, runtime: str, gpus: int):
    for key, value in {**PRODUCTION_ENV, "ARGUS_RUNTIME": runtime, "ARGUS_TRAIN_GPUS": str(gpus)}.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(f"argus_dag_{runtime}_{gpus}gpu", support.REPO / "dags" /
                                                  "argus_weather_training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture(scope="module")
def multi_gpu():
    from kubernetes.client import ApiClient

    mp = pytest.MonkeyPatch()
    try:
        kube_dag, local_dag = load(mp, "kubernetes", GPUS), load(mp, "local", GPUS)
        params = kube_dag.params.dump()
        kube = {t: render(op, kube_dag, params) for t, op in heavy_tasks(kube_dag).items()}
        local = {t: render(op, local_dag, params) for t, op in heavy_tasks(local_dag).items()}
        pods = {t: ApiClient().sanitize_for_serialization(op.build_pod_operator().build_pod_request_obj(
            None, dry_run=True)) for t, op in kube.items()}
        yield {"kube": kube, "local": local, "pods": pods}
    finally:
        mp.undo()


def test_the_train_pod_runs_torchrun_with_one_rank_per_gpu(multi_gpu):
    base = multi_gpu["pods"]["train"]["spec"]["containers"][0]
    assert base["command"] == ["/usr/bin/tini", "--", "argus-task", "torchrun", "--standalone",
                               f"--nproc-per-node={GPUS}", "--max-restarts=2", "-m", "argus_tasks"]
    assert base["args"][:3] == ["train", "--condition", "fog"]
    local = multi_gpu["local"]["train"]
    assert [*base["command"][2:], *base["args"]] == [*local.cmds, *[str(a) for a in local.arguments]]


def test_the_train_pod_is_sized_for_its_ranks(multi_gpu):
    op = multi_gpu["kube"]["train"]
    pod = multi_gpu["pods"]["train"]
    base = pod["spec"]["containers"][0]
    req, lim = base["resources"]["requests"], base["resources"]["limits"]
    assert req["nvidia.com/gpu"] == lim["nvidia.com/gpu"] == str(GPUS)
    assert op.pool_slots == GPUS and op.pool == "argus_gpu"
    assert req["cpu"] == str(8 * GPUS) and req["memory"] == lim["memory"] == f"{32 * GPUS}Gi"
    (mount,) = [m for m in base["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{8 * GPUS}Gi"}
    env = {e["name"]: e["value"] for e in base["env"]}
    assert env["ARGUS_CPU_REQUEST"] == str(8 * GPUS)


def test_the_multi_gpu_pod_is_still_valid_and_restricted(multi_gpu):
    pod = multi_gpu["pods"]["train"]
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert restricted_violations(pod) == []


def test_other_steps_keep_the_image_entrypoint(multi_gpu):
    for task_id, pod in multi_gpu["pods"].items():
        if task_id != "train":
            assert not pod["spec"]["containers"][0].get("command"), task_id


def test_train_step_sizes_and_limits():
    from argus_airflow.step_spec import StepSpec
    from argus_airflow.training_steps import TRAIN, train_step

    assert train_step(1) is TRAIN and TRAIN.command == ("argus-task",)
    two = train_step(2)
    assert (two.gpus, two.cpu, two.memory, two.shm, two.pool_slots) == (2, "16", "64Gi", "16Gi", 2)
    with pytest.raises(ValueError, match="ARGUS_TRAIN_GPUS=0"):
        train_step(0)
    # /dev/shm for the ranks never exceeds half the memory limit
    tight = StepSpec(name="t", kind="training", gpus=4, memory="40Gi")
    assert tight.shm == "20Gi"
