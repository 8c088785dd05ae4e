"""The whole training DAG, end to end through Airflow, on tiny data, with the local runtime.

Runs ``scripts/init_local.sh`` and ``airflow dags test`` in a fresh Argus home exactly like
``make demo`` does, then checks the state left in the run folder and in MLflow: runs, registered
versions, aliases and lineage tags.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAG_ID = "argus_weather_training"
CONF = {"conditions": ["fog"], "train_steps": 30, "data_window": "all", "min_frames_per_group": 2}


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGUS_", "AIRFLOW", "MLFLOW_"))}
    env.update(ARGUS_HOME=str(home), ARGUS_RETRY_DELAY_S="1", ARGUS_RETRIES="1",
               ARGUS_DATASET_INIT_ARGS=os.environ.get("ARGUS_E2E_DATASET_ARGS", "--scale 0.25"))
    return env


def _sh(cmd: str, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f". scripts/env.sh && {cmd}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-home")
    env = _env(home)
    init = _sh("scripts/init_local.sh", env)
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
    run = _sh(f"airflow dags test {DAG_ID} 2026-11-19T02:00:00+00:00 -c '{json.dumps(CONF)}'", env)
    log = run.stdout + run.stderr
    (home / "dags-test.log").write_text(log)
    assert run.returncode == 0, log[-6000:]
    return home, env, log


def _client(home: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")


def test_every_step_ran_and_left_its_result(demo_run):
    home, _, log = demo_run
    runs = list((home / "store" / "runs" / DAG_ID).iterdir())
    assert len(runs) == 1
    run = runs[0]
    for where in ("pull", "validate", "segmenter", "train/fog", "evaluate/fog", "promote/fog", "report"):
        assert (run / where / "result.json").exists(), f"{where} left no result"
        assert not (run / where / "failure.json").exists()
    report = (run / "report" / "report.md").read_text()
    assert "| fog |" in report
    assert "running" in log and "argus-task" in log  # the local runtime ran the container command


def test_the_challenger_is_registered_with_lineage(demo_run):
    home, _, _ = demo_run
    client = _client(home)
    versions = client.search_model_versions("name='argus-weather-fog'")
    assert len(versions) == 1, "one run registers exactly one version"
    version = versions[0]
    assert client.get_model_version_by_alias("argus-weather-fog", "challenger").version == version.version
    tags = version.tags
    for key in ("argus.dag_id", "argus.run_id", "argus.try_number", "argus.map_index", "argus.git_commit",
                "argus.image"):
        assert tags.get(key), f"lineage tag {key} missing: {tags}"
    assert tags["argus.dag_id"] == DAG_ID
    assert any("fingerprint" in k for k in tags), tags
    assert any("validation" in k for k in tags), tags


def test_the_segmenter_is_registered_once_as_champion(demo_run):
    home, _, _ = demo_run
    client = _client(home)
    assert client.get_model_version_by_alias("argus-downstream-segmenter", "champion")


def test_the_promotion_decision_is_recorded(demo_run):
    home, _, _ = demo_run
    run = next((home / "store" / "runs" / DAG_ID).iterdir())
    decision = json.loads((run / "promote" / "fog" / "result.json").read_text())
    assert isinstance(decision["promoted"], bool) and decision["reasons"]
    client = _client(home)
    if decision["promoted"]:
        champion = client.get_model_version_by_alias("argus-weather-fog", "champion")
        assert champion.tags.get("argus.decision") or champion.tags
    else:
        from mlflow.exceptions import MlflowException

        with pytest.raises(MlflowException):
            client.get_model_version_by_alias("argus-weather-fog", "champion")


def test_mlflow_runs_carry_the_run_conf(demo_run):
    home, _, _ = demo_run
    client = _client(home)
    exp = client.get_experiment_by_name(f"argus/{DAG_ID}")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`argus.step` = 'train'")
    assert len(runs) == 1
    params = runs[0].data.params
    assert any(v == "30" for k, v in params.items() if "step" in k), params
