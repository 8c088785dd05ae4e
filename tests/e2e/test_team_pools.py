"""GPU task instances draw from their run's team pool, through Airflow's own machinery.

A fresh Airflow home: ``airflow db migrate``, ``scripts/init_pools.sh`` (the pools of the quotas), then
``airflow dags test`` of the training DAG, the heavy steps marked successful without running
(``--mark-success-pattern``) but every task instance created, expanded and scheduled by Airflow's code,
with the cluster policy of ``plugins/airflow_local_settings.py`` applied. The pools are read back from the
metadata database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "argus_weather_training"
QUOTAS = {"ARGUS_TEAM_GPU_QUOTAS": "vision=2,lidar=1", "ARGUS_GPU_POOL_SLOTS": "4"}
ONLY_SELECT_RUNS = "(?!select_conditions$).*"  # every other task is marked successful, not run
GPU_TASKS = {"segmenter", "train", "evaluate"}
CLEAR = """
from sqlalchemy import select
from airflow.models.taskinstance import TaskInstance as TI, clear_task_instances
from airflow.utils.session import create_session
with create_session() as s:
    tis = list(s.scalars(select(TI).where(TI.task_id == "train")))
    for ti in tis:
        ti.pool = "argus_gpu"  # as the DAG declares it: clearing must route it again
    s.flush()
    clear_task_instances(tis, s)
"""


def _sh(cmd: str, env: dict, timeout: int = 300) -> str:
    proc = subprocess.run(["bash", "-c", f". scripts/env.sh && {cmd}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def _rows(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        return db.execute(sql).fetchall()


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("teams-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGUS_", "AIRFLOW", "MLFLOW_"))}
    # one deployment: its default team is lidar (the team of runs without conf), in every command below
    env.update(ARGUS_HOME=str(home), ARGUS_TEAM="lidar", **QUOTAS)
    (home / "airflow").mkdir()
    _sh("airflow db migrate >/dev/null && scripts/init_pools.sh", env)
    # a triggered run of team vision (two conditions: the mapped group is expanded)
    _sh(f"airflow dags test {DAG_ID} 2026-11-19T02:00:00+00:00 -c "
        f"'{json.dumps({'team': 'vision', 'conditions': ['fog', 'rain']})}' --mark-success-pattern '{ONLY_SELECT_RUNS}'",
        env)
    # a run without conf, like a scheduled one: the deployment's default team
    _sh(f"airflow dags test {DAG_ID} 2026-11-23T02:00:00+00:00 --mark-success-pattern '{ONLY_SELECT_RUNS}'",
        {**env, "ARGUS_PARAM_DEFAULTS": '{"conditions": ["snow"]}'})
    return home, env


def test_init_pools_creates_a_pool_per_quota_and_the_shared_rest(airflow_home):
    home, _ = airflow_home
    pools = dict(_rows(home, "select pool, slots from slot_pool"))
    assert pools == {"default_pool": 128, "argus_gpu": 1, "argus_gpu_vision": 2, "argus_gpu_lidar": 1,
                     "argus_promotion": 1}


def test_gpu_task_instances_draw_from_the_team_pool_of_their_run(airflow_home):
    home, env = airflow_home
    rows = _rows(home, "select r.conf, t.task_id, t.map_index, t.pool, t.pool_slots, t.priority_weight, t.state "
                       "from task_instance t join dag_run r on r.run_id = t.run_id and r.dag_id = t.dag_id")
    by_team: dict[str, dict] = {}
    for conf, task_id, map_index, pool, slots, weight, state in rows:
        team = "vision" if conf and b"vision" in (conf if isinstance(conf, bytes) else conf.encode()) else "lidar"
        by_team.setdefault(team, {})[(task_id, map_index)] = (pool, slots, weight, state)
    vision, lidar = by_team["vision"], by_team["lidar"]
    assert {k for k in vision if k[0] == "train"} == {("train", 0), ("train", 1)}  # expanded, one per condition
    for team, tis in (("vision", vision), ("lidar", lidar)):
        for (task_id, _), (pool, slots, _, state) in tis.items():
            if task_id in GPU_TASKS:
                assert (pool, slots) == (f"argus_gpu_{team}", 1), (team, task_id)
            else:
                assert not pool.startswith("argus_gpu"), (team, task_id, pool)
            assert state in ("success", "skipped"), (team, task_id, state)
        assert tis[("promote", 0)][0] == "argus_promotion"
        # a run's promote outranks another run's train for a free worker slot (absolute weights)
        assert tis[("promote", 0)][2] > tis[("train", 0)][2]

    # clearing (a manual re-run) resets the pool from the task and the policy routes it again
    _sh(f"python - <<'EOF'\n{CLEAR}\nEOF", env)
    pools = {p for (p,) in _rows(home, "select pool from task_instance where task_id = 'train'")}
    assert pools == {"argus_gpu_vision", "argus_gpu_lidar"}
