"""The end-to-end runs: ``scripts/init_local.sh`` and ``airflow dags test`` in a fresh Argus home, as ``make demo``.

``demo_run`` (session-scoped) is one training run; the generation tests run the product DAG in the same
home, with the champion it made.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "argus_weather_training"
CONF = {"conditions": ["fog", "rain"], "train_steps": 30, "data_window": "all", "min_frames_per_group": 2,
        "min_train_frames": 8}
DATASET_ARGS = '--scale 0.25 --counts {"rain":{"train":4}}'  # word-split by init_local.sh: no spaces in the JSON



def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGUS_", "AIRFLOW", "MLFLOW_"))}
    env.update(ARGUS_HOME=str(home), ARGUS_RETRY_DELAY_S="1", ARGUS_RETRIES="1",
               ARGUS_DATASET_INIT_ARGS=os.environ.get("ARGUS_E2E_DATASET_ARGS", DATASET_ARGS))
    return env


def _sh(cmd: str, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f". scripts/env.sh && {cmd}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-home")
    env = _env(home)
    init = _sh("scripts/init_local.sh", env)
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
    # as make demo runs it: the Airflow log in a file, the live progress on the terminal (scripts/dag_run.sh)
    run = _sh(f"scripts/dag_run.sh {DAG_ID} 2026-11-19T02:00:00+00:00 '{json.dumps(CONF)}' {home}/dags-test.log", env)
    (home / "progress.txt").write_text(run.stdout + run.stderr)
    log = (home / "dags-test.log").read_text()
    assert "DagRun Finished" in log, log[-6000:]
    return home, env, log



def run_dag(home: Path, env: dict, dag_id: str, conf: dict, logical_date: str = "") -> str:
    """``airflow dags test`` of ``dag_id`` with ``conf``; its whole log."""
    run = _sh(f"airflow dags test {dag_id} {logical_date} -c '{json.dumps(conf)}'", env)
    log = run.stdout + run.stderr
    assert "DagRun Finished" in log, log[-6000:]
    return log
