"""argus_weather_training on a production-like stack, for real:

* PostgreSQL from the Debian package (scripts/ensure_postgres.sh installs it when missing), one
  throw-away server on a loopback port, its roles and databases made by the compose stack's own
  docker/postgres/init-databases.sh;
* Airflow 3 with its metadata on that Postgres: ``airflow db migrate``, then the api-server, a real
  scheduler with the LocalExecutor, the dag-processor and the triggerer;
* an MLflow tracking server with its backend store on Postgres and its artifacts on S3;
* S3 (moto's server on loopback) for the run-scoped store, the MLflow artifacts and the DVC remote
  of the dataset registry; Airflow reaches it through the connections of docker-compose.yaml.

The run is triggered through the REST API v2 with a JWT from the api-server's auth endpoint (simple
auth manager), awaited, and then checked in Airflow (REST API and the ``dag_run`` table) and in
MLflow (tracking API and its Postgres tables).

When PostgreSQL cannot be had, the test is SKIPPED with the reason in the summary; with
``ARGUS_REQUIRE_POSTGRES=1`` (CI) it fails instead.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from . import pgstack, support

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

DAG_ID = "argus_weather_training"
CONDITION = "fog"
CONF = {
    "conditions": [CONDITION],
    "model_config": "tiny",
    "train_steps": 10,
    "data_window": "all",
    "dataset_rev": "v1",
    "require_approval": False,
    "min_frames_per_group": 2,
    "quarantine_threshold": 0.05,
    "min_train_frames": 4,  # the stack test's dataset is tiny: it checks the services, not the data size
    "min_eval_frames": 4,
}
BUCKETS = {"runs": "argus-runs", "mlflow": "argus-mlflow", "dvc": "argus-dvc"}
RUN_TIMEOUT_S = float(os.environ.get("ARGUS_PGSTACK_RUN_TIMEOUT_S", "1200"))


def _airflow(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(support.VENV_BIN / "airflow"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=support.REPO)
    if proc.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _compose_connections(s3_endpoint: str, mlflow_port: int) -> dict[str, str]:
    """The connections of docker-compose.yaml with the loopback endpoints of this test."""
    import yaml

    compose = yaml.safe_load((support.REPO / "docker-compose.yaml").read_text())
    env = compose["services"]["airflow-scheduler"]["environment"]
    values = {"ARGUS_S3_ACCESS_KEY": "argus-test-key", "ARGUS_S3_SECRET_KEY": "argus-test-secret",
              "AWS_DEFAULT_REGION": "us-east-1"}
    missing: list[str] = []
    aws = json.loads(support.interpolate(env["AIRFLOW_CONN_AWS_DEFAULT"], values, missing))
    assert not missing, missing
    aws["extra"]["endpoint_url"] = s3_endpoint
    mlflow = json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    mlflow.update(host="127.0.0.1", port=mlflow_port)
    return {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws), "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(mlflow)}


@pytest.fixture(scope="module")
def postgres():
    try:
        server = pgstack.Postgres.start_new()
    except pgstack.Unavailable as exc:
        message = f"POSTGRES INTEGRATION TEST NOT RUN: {exc}"
        if os.environ.get("ARGUS_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (ARGUS_REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(postgres, s3_endpoint, tmp_path_factory):
    """Everything up and healthy: databases, buckets, dataset registry, MLflow, Airflow services."""
    import boto3
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("pgstack")
    logs = root / "logs"
    logs.mkdir()
    pw = {"airflow": secrets.token_urlsafe(12), "mlflow": secrets.token_urlsafe(12),
          "admin": secrets.token_urlsafe(12)}
    postgres.create_databases(pw["airflow"], pw["mlflow"])

    s3_env = {"AWS_ENDPOINT_URL": s3_endpoint, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
              "AWS_ACCESS_KEY_ID": "argus-test-key", "AWS_SECRET_ACCESS_KEY": "argus-test-secret",
              "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="argus-test-key", aws_secret_access_key="argus-test-secret")
    for bucket in BUCKETS.values():
        s3.create_bucket(Bucket=bucket)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ARGUS_", "MLFLOW_"))}
    base_env.update(s3_env)
    base_env["PATH"] = f"{support.VENV_BIN}:{base_env['PATH']}"

    # the dataset registry, its DVC remote on S3 (in the background, while the servers start)
    registry = root / "registry"
    timings: dict[str, float] = {}
    t0 = time.time()
    with open(logs / "dataset-init.log", "wb") as init_log:
        dataset_init = subprocess.Popen(
            [str(support.VENV_BIN / "argus-task"), "dataset", "init", "--registry", str(registry),
             "--remote", f"s3://{BUCKETS['dvc']}/datasets", "--scale", "0.1", "--workers", "1"],
            env=base_env, stdout=subprocess.DEVNULL, stderr=init_log)

    services: list[pgstack.Service] = []
    try:
        # MLflow: backend store on Postgres, artifacts on S3
        mlflow_port = support.free_port()
        mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
        services.append(pgstack.start_service("mlflow", [
            str(support.VENV_BIN / "mlflow"), "server",
            "--backend-store-uri", postgres.url("mlflow", pw["mlflow"], "mlflow"),
            "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKETS['mlflow']}/proxied",
            "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
        ], base_env, logs, root))

        api_port = support.free_port()
        airflow_home = root / "airflow"
        airflow_home.mkdir()
        passwords = airflow_home / "passwords.json"
        passwords.write_text(json.dumps({"admin": pw["admin"]}))
        env = {
            **base_env,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url("airflow", pw["airflow"], "airflow"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_FOLDER": str(support.REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(support.REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(24),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(support.free_port()),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(support.free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(support.free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # only the triggered run: no scheduled run competes for the two cores
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "PYTHONPATH": str(support.REPO / "plugins"),
            "GIT_PYTHON_REFRESH": "quiet",
            # the step contract, as docker-compose.yaml sets it (loopback endpoints)
            "ARGUS_RUNTIME": "local",
            "ARGUS_HOME": str(root / "argus"),
            "ARGUS_STORE": f"s3://{BUCKETS['runs']}",
            "ARGUS_DATASET_REGISTRY": str(registry),
            "ARGUS_MLFLOW_ARTIFACTS": f"s3://{BUCKETS['mlflow']}/experiments",
            "ARGUS_SCRATCH": str(root / "scratch"),
            "ARGUS_RETRIES": "1",
            "ARGUS_RETRY_DELAY_S": "2",
            "MLFLOW_TRACKING_URI": mlflow_uri,
            **_compose_connections(s3_endpoint, mlflow_port),
        }
        started = time.time()
        _airflow(env, "db", "migrate")
        timings["airflow db migrate"] = time.time() - started
        _airflow(env, "pools", "set", "argus_gpu", "1", "Shared GPU pool: one slot per GPU")
        _airflow(env, "pools", "set", "argus_promotion", "1", "Serialises promotions")
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            services.append(pgstack.start_service(name, [str(support.VENV_BIN / "airflow"), name], env, logs, root))
        by_name = {s.name: s for s in services}
        assert dataset_init.wait(300) == 0, f"dataset init failed:\n{pgstack.tail(logs / 'dataset-init.log')}"
        timings["dataset init (S3 remote)"] = time.time() - t0
        support.wait_for_http(f"{mlflow_uri}/health", 120, "MLflow server", by_name["mlflow"].log,
                              by_name["mlflow"].proc)
        support.wait_for_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", 180, "Airflow api-server",
                              by_name["api-server"].log, by_name["api-server"].proc)
        timings["stack up"] = time.time() - t0
        api = pgstack.AirflowAPI(f"http://127.0.0.1:{api_port}", "admin", pw["admin"])
        yield {"api": api, "pg": postgres, "pw": pw, "mlflow_uri": mlflow_uri, "services": services,
               "logs": logs, "env": env, "s3": s3, "timings": timings}
    finally:
        for service in reversed(services):
            service.stop()
        if dataset_init.poll() is None:
            dataset_init.kill()


def _diagnose(stack, run_id: str) -> str:
    api = stack["api"]
    lines = []
    for ti in api.task_instances(DAG_ID, run_id):
        lines.append(f"  {ti['task_id']}[{ti.get('map_index', -1)}]: {ti['state']}")
        if ti["state"] in ("failed", "up_for_retry"):
            lines.append("    " + api.task_log(DAG_ID, run_id, ti)[-2500:].replace("\n", "\n    "))
    for service in stack["services"]:
        lines.append(f"--- {service.name} ({'up' if service.alive() else 'DOWN'}) ---\n{pgstack.tail(service.log, 15)}")
    return "\n".join(lines)


def test_training_dag_runs_on_postgres_airflow_and_mlflow(stack):
    api = stack["api"]
    started = time.time()
    dag = api.wait_for_dag(DAG_ID, 180, stack["services"])
    assert dag["dag_id"] == DAG_ID
    stack["timings"]["DAG parsed"] = time.time() - started
    status, body = api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
    assert status == 200, body

    now = datetime.now(UTC).replace(microsecond=0)
    run_id = f"pgstack__{now:%Y%m%dT%H%M%S}"
    status, body = api.post(f"/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": now.isoformat(),
                                                        "conf": CONF, "note": "postgres stack test"})
    assert status in (200, 201), f"trigger answered {status}: {body}"
    assert body["dag_run_id"] == run_id and body["conf"] == CONF

    started = time.time()
    run = api.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_S, stack["services"])
    stack["timings"]["DAG run"] = time.time() - started
    print("\nargus pgstack timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in stack["timings"].items()))
    assert run["state"] == "success", f"run ended {run['state']}:\n{_diagnose(stack, run_id)}"

    # Airflow: every task instance succeeded (the approval gate may skip when approval is off)
    tis = api.task_instances(DAG_ID, run_id)
    states = {(t["task_id"], t.get("map_index", -1)): t["state"] for t in tis}
    heavy = {"pull", "validate", "segmenter", "train", "evaluate", "promote", "report"}
    assert heavy <= {task for task, _ in states}
    bad = {k: v for k, v in states.items() if v not in ("success", "skipped")}
    assert not bad, f"task instances not successful: {bad}\n{_diagnose(stack, run_id)}"
    assert all(states[k] == "success" for k in states if k[0] in heavy)
    # ... and the metadata really is in Postgres
    pg, pw = stack["pg"], stack["pw"]
    rows = pg.query("airflow", pw["airflow"], "airflow",
                    "SELECT state, run_type FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id))
    assert rows == [("success", "manual")]

    # MLflow: the runs of this Airflow run, with lineage tags, in the Postgres-backed server
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack["mlflow_uri"])
    runs = client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`argus.run_id` = '{run_id}'", max_results=100)
    steps = {(r.data.tags.get("argus.step"), r.data.tags.get("argus.condition")) for r in runs}
    assert ("train", CONDITION) in steps and ("evaluate", CONDITION) in steps, steps
    train = next(r for r in runs if r.data.tags.get("argus.step") == "train")
    assert train.info.status == "FINISHED" and train.data.tags["argus.dag_id"] == DAG_ID
    assert train.info.artifact_uri.startswith(f"s3://{BUCKETS['mlflow']}/experiments/")
    versions = client.search_model_versions(f"name = 'argus-weather-{CONDITION}'")
    assert any(v.run_id == train.info.run_id for v in versions), "the trained generator is registered"
    count = pg.query("mlflow", pw["mlflow"], "mlflow",
                     "SELECT count(*) FROM tags WHERE key = 'argus.run_id' AND value = %s", (run_id,))
    assert count[0][0] == len(runs), "the MLflow runs live in the Postgres backend store"
    artifacts = stack["s3"].list_objects_v2(Bucket=BUCKETS["mlflow"], Prefix="experiments/").get("KeyCount", 0)
    assert artifacts > 0, "MLflow artifacts were written to S3"
    # the run-scoped store of this run is on S3
    report = stack["s3"].list_objects_v2(Bucket=BUCKETS["runs"], Prefix=f"runs/{DAG_ID}/{run_id}/report/")
    assert report.get("KeyCount", 0) > 0


def test_services_stayed_healthy(stack):
    for service in stack["services"]:
        assert service.alive(), f"{service.name} stopped:\n{pgstack.tail(service.log)}"
    assert Path(stack["logs"]).is_dir()
