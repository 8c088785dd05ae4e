"""What a local step sees of the worker's environment, and the lineage it records.

A real ``LocalStepOperator`` runs a real process: the entrypoint (``ARGUS_LOCAL_ENTRYPOINT``) is a tiny
script that returns its whole environment and the lineage tags the task package derives from it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from argus_airflow.local_runtime import LocalStepOperator
from argus_airflow.step_spec import StepSpec

REPO = Path(__file__).resolve().parents[2]
FERNET = "ZmVybmV0LWtleS1vZi10aGUtd29ya2VyLTMyYnl0ZXM9"
DB_PASSWORD = "db-pw-Qx81kz"
JWT = "jwt-secret-of-the-worker-7f3a"
WORKER_SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": FERNET,
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://airflow:{DB_PASSWORD}@postgres:5432/airflow",
    "AIRFLOW__API_AUTH__JWT_SECRET": JWT,
    "AIRFLOW__API__SECRET_KEY": "api-secret-key-of-the-worker",
    "AIRFLOW_CONN_METADATA": f"postgres://airflow:{DB_PASSWORD}@postgres/airflow",
    "ARGUS_DB_PASSWORD": "argus-prefixed-password",
}
S3_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAWORKER000", "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-worker"}
PROBE = """#!{python}
import json, os, sys
from argus_tasks.contract import StepContext
ctx = StepContext.from_env()
json.dump({{"env": dict(os.environ), "argv": sys.argv[1:], "tags": ctx.lineage_tags()}},
          open(os.environ["ARGUS_XCOM_RETURN"], "w"))
"""


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """Run a step whose entrypoint returns its env; the worker's env holds Airflow's secrets."""
    script = tmp_path / "argus-task"
    script.write_text(PROBE.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("ARGUS_LOCAL_ENTRYPOINT", str(script))
    monkeypatch.delenv("ARGUS_GIT_COMMIT", raising=False)
    for name, value in {**WORKER_SECRETS, **S3_KEYS, "ARGUS_TORCH_THREADS": "1", "LC_ALL": "C.UTF-8"}.items():
        monkeypatch.setenv(name, value)

    def run(env_vars: dict | None = None, spec: StepSpec | None = None) -> dict:
        spec = spec or StepSpec(name="probe", cpu="2")
        op = LocalStepOperator(task_id="probe", step_spec=spec, cmds=list(spec.command),
                               arguments=spec.full_arguments, env_vars={"ARGUS_STORE": str(tmp_path / "store"),
                                                                        **(env_vars or {})})
        return op.execute(context={})

    return run


def test_no_secret_of_the_worker_reaches_the_step(probe):
    out = probe({"ARGUS_CPU_REQUEST": "2", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    env = out["env"]
    leaked = [name for name in WORKER_SECRETS if name in env]
    assert not leaked, f"the step inherited {leaked}"
    text = json.dumps(env)
    for value in (FERNET, DB_PASSWORD, JWT):
        assert value not in text
    assert not [k for k in env if k.startswith("AIRFLOW")], sorted(env)
    # what it needs is there: the contract, the allow-list
    assert env["ARGUS_CPU_REQUEST"] == "2" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["ARGUS_TORCH_THREADS"] == "1" and env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] and env["HOME"] and env["ARGUS_XCOM_RETURN"].endswith("/airflow/xcom/return.json")
    assert out["argv"] == ["probe"]


def test_the_object_store_credentials_reach_the_step(probe):
    """The worker holds them for its steps (store, DVC remote, MLflow artifacts on S3), as a pod's secret does."""
    env = probe({"ARGUS_STORE": "s3://argus-runs"})["env"]
    assert {k: env.get(k) for k in S3_KEYS} == S3_KEYS
    assert not [name for name in WORKER_SECRETS if name in env]


def test_a_step_records_the_commit_of_this_checkout(probe):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    out = probe()
    assert out["env"]["ARGUS_GIT_COMMIT"] == head
    assert out["tags"]["argus.git_commit"] == head
    assert "argus.image_digest" not in out["tags"], "a local venv has no image digest"


def test_a_baked_commit_and_image_digest_are_recorded(probe, monkeypatch):
    commit, digest = "a" * 40, "sha256:" + "3f" * 32
    monkeypatch.setenv("ARGUS_GIT_COMMIT", commit)  # what the Airflow image bakes in (docker/airflow.Dockerfile)
    out = probe({"ARGUS_IMAGE": f"registry.example.com/argus/task@{digest}", "ARGUS_DAG_GIT_COMMIT": commit})
    assert out["tags"]["argus.git_commit"] == commit == out["tags"]["argus.dag_git_commit"]
    assert out["tags"]["argus.image_digest"] == digest
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", out["tags"]["argus.image_digest"])
