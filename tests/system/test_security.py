"""Security checks on the live install: logins, trigger-time validation, and no secret anywhere visible
(code, pods, a local step's environment, logs, results, MLflow records).

Pods (non-root, "restricted" profile, credentials only through ``envFrom``) are checked in depth,
for production-like settings, in ``tests/production/test_pod_specs.py``; here the pods are rendered
with this install's real environment, which holds real secrets.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from .api import AirflowApi, ApiError
from .browser import launch
from .stack import DAG_ID, REPO, VENV_BIN

pytestmark = [pytest.mark.integration]

SECRET_ENV = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
              "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module")
def secrets(stack) -> dict[str, str]:
    values = {name: stack.env[name] for name in SECRET_ENV if stack.env.get(name)}
    values["admin password"] = stack.password
    assert len(values) == len(SECRET_ENV) + 1, f"the install lacks some secrets: {sorted(values)}"
    if stack.db_password:
        values["metadata database password"] = stack.db_password
    return values


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


# ---- logins -----------------------------------------------------------------------------------------
def test_the_rest_api_refuses_requests_without_a_valid_token(stack):
    resp = requests.get(f"{stack.base_url}/api/v2/dags", timeout=10)
    assert resp.status_code in (401, 403), resp.status_code
    resp = requests.get(f"{stack.base_url}/api/v2/dags", headers={"Authorization": "Bearer not-a-token"}, timeout=10)
    assert resp.status_code in (401, 403), resp.status_code
    bad = requests.post(f"{stack.base_url}/auth/token", json={"username": "admin", "password": "wrong"}, timeout=10)
    assert bad.status_code in (401, 403), bad.status_code


@pytest.mark.browser
def test_the_web_ui_sends_a_visitor_without_a_session_to_the_login_page(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.goto(f"{stack.base_url}/dags/{DAG_ID}")
        page.wait_for_url("**/auth/login**", timeout=60_000)
        assert page.get_by_label("Password").is_visible()
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_timeout(2000)
        assert "/auth/login" in page.url, "a wrong password got in"
        browser.close()


# ---- Params are validated when a run is triggered ---------------------------------------------------
@pytest.mark.parametrize("conf, names", [
    ({"conditions": ["fog", "hail"]}, ("hail",)),
    ({"conditions": "fog"}, ("conditions", "array")),
    ({"conditions": []}, ("conditions", "non-empty", "minItems", "should be")),
    ({"conditions": ["fog", "fog"]}, ("conditions", "unique", "duplicate", "non-unique")),
    ({"train_steps": 3}, ("train_steps", "minimum", "less than")),
    ({"train_steps": 10_000_000}, ("train_steps", "maximum", "greater than")),
    ({"train_steps": "many"}, ("train_steps", "integer", "not of type")),
])
def test_malformed_params_are_refused_at_trigger_time_with_a_clear_message(api: AirflowApi, conf, names):
    before = len(api.runs(DAG_ID))
    with pytest.raises(ApiError) as err:
        api.trigger(DAG_ID, conf)
    assert 400 <= err.value.status < 500, err.value
    message = err.value.body
    assert any(n in message for n in names), f"the refusal does not say what is wrong: {message}"
    assert len(api.runs(DAG_ID)) == before, "a run was created from a refused conf"


# ---- no secret in code, pods or logs ----------------------------------------------------------------
def test_no_secret_is_written_in_dag_or_plugin_code(secrets):
    assignment = re.compile(r"""(?i)\b\w*(password|passwd|secret|token|access_key)\w*\s*[:=]\s*["'][^"'{}\s]{6,}["']""")
    offenders = []
    for path in [*(REPO / "dags").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]:
        text = path.read_text()
        offenders += [f"{path}: {m.group(0)}" for m in assignment.finditer(text)]
        offenders += [f"{path}: holds the live {name}" for name in _leaks(text, secrets)]
    assert not offenders, offenders


POD_DUMP = """
import importlib.util, json, sys
sys.path.insert(0, {plugins!r})
spec = importlib.util.spec_from_file_location("argus_dag_k8s", {dag_file!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from argus_airflow.pod_step import PodStepOperator
from kubernetes.client import ApiClient
pods = {{}}
FIELDS = ("step_spec", "settings", "cmds", "arguments", "env_vars")
for task in module.dag.tasks:
    kw = getattr(task, "partial_kwargs", None)
    if kw is not None:
        if kw.get("step_spec") is None:
            continue
        op = PodStepOperator(task_id=task.task_id, condition="fog", **{{k: kw[k] for k in FIELDS}})
    elif isinstance(task, PodStepOperator) and not isinstance(task.condition, (str, type(None))):
        # a step of the task group mapped over the conditions: one expansion of it
        op = PodStepOperator(task_id=task.task_id, condition="fog", **{{k: getattr(task, k) for k in FIELDS}})
    elif isinstance(task, PodStepOperator):
        op = task
    else:
        continue
    pod = op.build_pod_operator().build_pod_request_obj(None, dry_run=True)
    pods[task.task_id] = ApiClient().sanitize_for_serialization(pod)
print(json.dumps(pods))
"""


def test_rendered_pods_hold_no_secret_of_this_install(stack, secrets):
    """The DAG parsed with this install's environment (secrets included) and ARGUS_RUNTIME=kubernetes."""
    env = {**stack.env, "ARGUS_RUNTIME": "kubernetes"}
    code = POD_DUMP.format(plugins=str(REPO / "plugins"), dag_file=str(REPO / "dags" / "argus_weather_training.py"))
    proc = subprocess.run([str(VENV_BIN / "python"), "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pods = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"pull", "validate", "segmenter", "train", "evaluate", "promote", "report"} <= set(pods)
    text = json.dumps(pods)
    assert not _leaks(text, secrets), f"pod specs hold {_leaks(text, secrets)}"
    for task_id, pod in pods.items():
        container = pod["spec"]["containers"][0]
        names = {e["name"] for e in container.get("env") or []}
        assert not {n for n in names if re.search(r"SECRET|PASSWORD|TOKEN|FERNET|ACCESS_KEY", n)}, (task_id, names)
        assert container["securityContext"]["runAsNonRoot"] is True


LOCAL_STEP = """
import json, os, sys
sys.path.insert(0, {plugins!r})
os.environ["ARGUS_LOCAL_ENTRYPOINT"] = {probe!r}
from argus_airflow.factory import heavy_step
from argus_airflow.training_steps import PULL
op = heavy_step(PULL)
op.arguments = ["--help"]
op.env_vars = {{k: v for k, v in op.env_vars.items() if "{{{{" not in v}}  # unrendered templates
print(json.dumps(op.execute(context={{}})))
"""


def test_a_local_step_started_by_this_install_sees_none_of_its_airflow_secrets(stack, secrets, tmp_path):
    """The step's env is the contract env plus an allow-list of the worker's: not the Fernet key, the
    database URL, the JWT or API secret. (The object store's key is the step's own: it reads the store.)"""
    probe = tmp_path / "argus-task"
    probe.write_text(f"#!{VENV_BIN / 'python'}\nimport json, os\n"
                     "json.dump(dict(os.environ), open(os.environ['ARGUS_XCOM_RETURN'], 'w'))\n")
    probe.chmod(0o755)
    code = LOCAL_STEP.format(plugins=str(REPO / "plugins"), probe=str(probe))
    proc = subprocess.run([str(VENV_BIN / "python"), "-c", code], env={**stack.env, "ARGUS_RUNTIME": "local"},
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    step_env = json.loads(proc.stdout.strip().splitlines()[-1])
    assert step_env["ARGUS_STORE"] == stack.env.get("ARGUS_STORE", str(stack.store))
    airflow_secrets = {name: value for name, value in secrets.items() if name != "AWS_SECRET_ACCESS_KEY"}
    assert not _leaks(json.dumps(step_env), airflow_secrets), f"the step got {_leaks(json.dumps(step_env), secrets)}"
    assert not [k for k in step_env if k.startswith("AIRFLOW")], sorted(step_env)


def test_no_secret_appears_in_any_log_result_or_mlflow_record(stack, secrets):
    """Runs have happened by now (the modules before this one): every log and record they left."""
    files = [*Path(stack.env["AIRFLOW_HOME"], "logs").rglob("*.log"), *stack.logs.glob("*.log"),
             *stack.store.glob("runs/**/*.json"), *stack.store.glob("runs/**/*.md")]
    assert len(files) > 20, "too few logs to judge: did the runs before this module happen?"
    leaks = {}
    for path in files:
        found = _leaks(path.read_text(errors="replace"), secrets)
        if found:
            leaks[str(path)] = found
    assert not leaks, leaks
    client = stack.mlflow_client()
    exp = client.get_experiment_by_name(f"argus/{DAG_ID}")
    records = [json.dumps({"params": r.data.params, "tags": r.data.tags}) for r in client.search_runs(
        [exp.experiment_id], max_results=500)]
    records += [json.dumps(dict(v.tags)) for v in client.search_model_versions("")]
    assert not [r for r in records if _leaks(r, secrets)], "a secret is in an MLflow param or tag"
