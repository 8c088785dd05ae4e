"""docker-compose.yaml: valid against the Compose specification, internally consistent, healthy by
construction and free of committed secrets.

The Docker engine cannot run here; nothing is started. What these tests cannot show (images build,
containers become healthy) is listed in docs/deploying.md.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from . import support

COMPOSE = support.REPO / "docker-compose.yaml"
ENV_EXAMPLE = support.REPO / ".env.example"
AIRFLOW_COMMANDS = {"api-server", "scheduler", "dag-processor", "triggerer"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|ACCESS_KEY|_KEY$")


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def example_env():
    return support.read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def doc(raw, example_env):
    missing: list[str] = []
    out = support.interpolate(raw, example_env, missing)
    assert not missing, f"required variables absent from .env.example: {sorted(set(missing))}"
    return out


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def test_valid_against_compose_specification(raw, doc, compose_schema):
    validator = jsonschema.Draft201909Validator(compose_schema)
    for label, document in (("as written", raw), ("interpolated with .env.example", doc)):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, f"docker-compose.yaml ({label}) breaks the Compose spec:\n" + "\n".join(
            f"  {'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors
        )


def test_schema_check_catches_a_broken_file(raw, compose_schema):
    broken = json.loads(json.dumps(raw))
    broken["services"]["postgres"]["healthcheck"]["retries"] = "many"
    broken["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    errors = list(jsonschema.Draft201909Validator(compose_schema).iter_errors(broken))
    assert errors, "the schema accepted an invalid healthcheck and depends_on condition"


def test_the_stack_has_the_expected_services(doc):
    services = doc["services"]
    assert {"postgres", "minio", "minio-buckets", "mlflow", "airflow-init"} <= set(services)
    commands = {command_of(s)[0] for n, s in services.items() if n.startswith("airflow-") and n != "airflow-init"}
    assert commands == AIRFLOW_COMMANDS, commands
    assert "db migrate" in " ".join(command_of(services["airflow-init"]))


def test_every_referenced_service_exists_and_conditions_make_sense(doc):
    services = doc["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert dep != name
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; {dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{name} waits for {dep} to finish; {dep} is not a one-shot job"


def test_every_long_running_service_has_a_healthcheck(doc):
    for name, svc in doc["services"].items():
        if svc.get("restart") == "no":
            continue
        check = svc.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL"), f"{name}: malformed healthcheck {test}"
        for key in ("interval", "timeout"):
            assert re.fullmatch(r"\d+(ms|s|m|h)", check[key]), f"{name}: healthcheck {key}={check[key]!r}"


def test_startup_order_has_no_cycle(doc):
    services = doc["services"]
    graph = {n: set(s.get("depends_on") or {}) for n, s in services.items()}
    order: list[str] = []
    while graph:
        ready = sorted(n for n, deps in graph.items() if not deps - set(order))
        assert ready, f"dependency cycle among {sorted(graph)}"
        order += ready
        for n in ready:
            del graph[n]
    assert order.index("postgres") < order.index("airflow-init") < order.index("airflow-scheduler")


def test_no_secret_is_committed(raw, example_env):
    """Credential-like values are interpolated from .env, required (``:?``) and only placeholders in
    .env.example; .env is git-ignored."""
    for name, svc in raw["services"].items():
        for key, value in env_of(svc).items():
            # (a *_FILE is a path; ARGUS_S3_SECRET names a Kubernetes secret)
            if SECRET_KEY.search(key) and not key.endswith("_FILE") and key != "ARGUS_S3_SECRET":
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value), f"{name}.{key} is not a required variable"
    text = support.REPO.joinpath("docker-compose.yaml").read_text()
    for m in re.finditer(r"://([^:/@\s\"'$]+):([^@\s\"']+)@", text):
        assert m.group(2).startswith("${"), f"a literal password in a URL: {m.group(0)}"
    for key, value in example_env.items():
        if SECRET_KEY.search(key) or key in ("MINIO_ROOT_USER",):
            assert value.startswith("change-me"), f".env.example {key} must be a placeholder, not {value!r}"
    ignored = support.REPO.joinpath(".gitignore").read_text().split()
    assert ".env" in ignored


def test_every_variable_is_documented_in_env_example(raw, example_env):
    used = support.variables_used(raw)
    undocumented = sorted(v for v in used if v not in example_env and not _has_default(raw, v))
    assert not undocumented, f"variables without a default and absent from .env.example: {undocumented}"


def _has_default(raw, name: str) -> bool:
    return re.search(r"\$\{" + re.escape(name) + r":?-", yaml.safe_dump(raw)) is not None


def test_airflow_reaches_minio_and_mlflow_through_connections(doc):
    from airflow.models.connection import Connection

    services = doc["services"]
    env = env_of(services["airflow-scheduler"])
    aws = Connection.from_json(env["AIRFLOW_CONN_AWS_DEFAULT"], conn_id="aws_default")
    assert aws.conn_type == "aws" and aws.login and aws.password
    endpoint = urlparse(aws.extra_dejson["endpoint_url"])
    assert endpoint.hostname in services and endpoint.hostname == "minio"
    mlflow = Connection.from_json(env["AIRFLOW_CONN_MLFLOW_DEFAULT"], conn_id="mlflow_default")
    assert mlflow.host in services and mlflow.port == 5000
    assert urlparse(env["MLFLOW_TRACKING_URI"]).hostname == mlflow.host
    # the execution API URL points at the api-server service
    assert urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).hostname == "airflow-apiserver"
    assert "airflow-apiserver" in services


def test_metadata_and_mlflow_on_postgres_artifacts_on_s3(doc):
    services = doc["services"]
    init_sql = support.REPO.joinpath("docker/postgres/init-databases.sh").read_text()
    airflow_db = urlparse(env_of(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    mlflow_db = urlparse(env_of(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"])
    for url in (airflow_db, mlflow_db):
        assert url.scheme.startswith("postgresql") and url.hostname == "postgres"
        db, user = url.path.lstrip("/"), url.username
        assert f"CREATE DATABASE {db} OWNER {user};" in init_sql, f"init-databases.sh does not create {db}"
    cmd = " ".join(command_of(services["mlflow"]))
    assert "--artifacts-destination=s3://" in cmd
    assert "MLFLOW_BACKEND_STORE_URI" in env_of(services["mlflow"])
    assert env_of(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_buckets_job_creates_every_bucket_the_pipeline_uses(doc):
    services = doc["services"]
    created = set(env_of(services["minio-buckets"])["BUCKETS"].split())
    env = env_of(services["airflow-scheduler"])
    used = {urlparse(env[k]).netloc for k in ("ARGUS_STORE", "ARGUS_MLFLOW_ARTIFACTS", "ARGUS_DVC_REMOTE")}
    used.add(urlparse(next(c.split("=", 1)[1] for c in command_of(services["mlflow"])
                           if c.startswith("--artifacts-destination="))).netloc)
    assert used <= created, f"buckets used but never created: {used - created}"


def test_pools_and_runtime_switch_match_the_plugin(doc):
    from argus_airflow import settings

    s = settings.load()
    init = " ".join(command_of(doc["services"]["airflow-init"]))
    assert f"pools set {s.gpu_pool} " in init and f"pools set {s.promotion_pool} 1 " in init
    # the kubeconfig folder is mounted where docker/airflow-entrypoint.sh looks for it
    entry = support.REPO.joinpath("docker/airflow-entrypoint.sh").read_text()
    default_kubeconfig = re.search(r'KUBECONFIG:-([^}]+)\}', entry).group(1)
    mounts = [v for v in doc["services"]["airflow-scheduler"]["volumes"] if v.endswith(":ro")]
    kube = next(v for v in mounts if ".kube" in v)
    source, target, _ = kube.rsplit(":", 2)
    assert default_kubeconfig == f"{target}/config"
    default_dir = support.REPO / source
    assert default_dir.is_dir() and not (default_dir / "config").exists(), "the default kube dir must hold no kubeconfig"


def test_published_ports_are_loopback_only(doc):
    for name, svc in doc["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def _stub_bin(tmp_path, names: list[str]):
    """Executables that record their arguments (one line per call) in ``calls.log``."""
    import sys

    stub = tmp_path / "bin"
    stub.mkdir()
    log = tmp_path / "calls.log"
    for name in names:
        path = stub / name
        path.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{log}"\n')
        path.chmod(0o755)
    (stub / "python").symlink_to(sys.executable)
    return stub, log


def test_airflow_init_script_runs(doc, tmp_path):
    """The init job's script, as compose hands it to bash, with stand-ins for airflow and argus-task."""
    import os
    import subprocess

    init = doc["services"]["airflow-init"]
    assert command_of(init)[:2] == ["bash", "-ec"]
    script = command_of(init)[2].replace("/opt/airflow/auth/passwords.json", str(tmp_path / "passwords.json"))
    stub, log = _stub_bin(tmp_path, ["airflow", "argus-task"])
    password = 'p"a\\ss w$rd'
    env = {**env_of(init), "AIRFLOW_ADMIN_PASSWORD": password, "PATH": f"{stub}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-ec", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "airflow db migrate"
    assert calls[1].startswith("airflow pools set argus_gpu 4 ") and calls[2].startswith("airflow pools set argus_promotion 1 ")
    assert calls[3] == f"argus-task dataset init --registry {env['ARGUS_DATASET_REGISTRY']} --remote s3://argus-dvc/datasets"
    assert json.loads((tmp_path / "passwords.json").read_text()) == {"admin": password}
    assert oct((tmp_path / "passwords.json").stat().st_mode & 0o777) == "0o600"


def test_bucket_job_script_runs(doc, tmp_path):
    import os
    import subprocess

    job = doc["services"]["minio-buckets"]
    assert job["entrypoint"] == ["/bin/sh", "-ec"]
    stub, log = _stub_bin(tmp_path, ["mc"])
    env = {**env_of(job), "PATH": f"{stub}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-ec", command_of(job)[0]], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == f"mc alias set argus http://minio:9000 {env['MINIO_ROOT_USER']} {env['MINIO_ROOT_PASSWORD']}"
    assert [c for c in calls if c.startswith("mc mb")] == [
        f"mc mb --ignore-existing argus/{b}" for b in ("argus-runs", "argus-mlflow", "argus-dvc")]
    assert f"mc admin user add argus {env['ARGUS_S3_ACCESS_KEY']} {env['ARGUS_S3_SECRET_KEY']}" in calls
