"""The two deployment settings the system tests rely on: ARGUS_SCHEDULE and ARGUS_PARAM_DEFAULTS.

Fast (no services): the DAG file is executed in ONE subprocess once per setting, with the
variables set, as a dag-processor of such a deployment would load it.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .stack import REPO, VENV_BIN

CASES = {
    "plain": {},
    "configured": {"ARGUS_SCHEDULE": "30 5 * * *",
                   "ARGUS_PARAM_DEFAULTS": json.dumps({"conditions": ["fog"], "train_steps": 40})},
    "steps too low": {"ARGUS_PARAM_DEFAULTS": '{"train_steps": 3}'},
    "unknown condition": {"ARGUS_PARAM_DEFAULTS": '{"conditions": ["hail"]}'},
    "unknown param": {"ARGUS_PARAM_DEFAULTS": '{"no_such_param": 1}'},
    "not an object": {"ARGUS_PARAM_DEFAULTS": "[1, 2]"},
    "not json": {"ARGUS_PARAM_DEFAULTS": "{conditions: fog}"},
    "bad cron": {"ARGUS_SCHEDULE": "every tuesday"},
}
LOADER = """
import importlib.util, json, os, sys
sys.path.insert(0, "plugins")
out = {}
for name, env in json.loads(sys.argv[1]).items():
    for key in ("ARGUS_SCHEDULE", "ARGUS_PARAM_DEFAULTS"):
        os.environ.pop(key, None)
    os.environ.update(env)
    spec = importlib.util.spec_from_file_location("dag_" + str(len(out)), "dags/argus_weather_training.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        continue
    dag = module.dag
    out[name] = {"cron": dag.timetable.expression, "defaults": {k: dag.params[k] for k in dag.params}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ARGUS_SCHEDULE", "ARGUS_PARAM_DEFAULTS")}
    proc = subprocess.run([str(VENV_BIN / "python"), "-c", LOADER, json.dumps(CASES)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_without_settings_the_dag_keeps_its_twice_weekly_schedule_and_defaults(loaded):
    out = loaded["plain"]
    assert out["cron"] == "0 2 * * 1,4"
    assert out["defaults"]["conditions"] == ["fog", "rain", "snow", "night"]
    assert out["defaults"]["train_steps"] is None


def test_argus_schedule_and_param_defaults_change_what_scheduled_runs_do(loaded):
    out = loaded["configured"]
    assert out["cron"] == "30 5 * * *"
    assert out["defaults"]["conditions"] == ["fog"] and out["defaults"]["train_steps"] == 40


@pytest.mark.parametrize("case, fragment", [
    ("steps too low", "train_steps"),
    ("unknown condition", "conditions"),
    ("unknown param", "no_such_param"),
    ("not an object", "JSON object"),
    ("not json", "JSON object"),
    ("bad cron", "ARGUS_SCHEDULE='every tuesday' is not a cron expression"),
])
def test_a_bad_setting_fails_the_dag_import_with_a_message_that_names_it(loaded, case, fragment):
    assert "error" in loaded[case], loaded[case]
    assert fragment in loaded[case]["error"], loaded[case]["error"]
