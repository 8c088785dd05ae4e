"""The schedule and backfill scenario shared by the system tests (see test_backfill_and_schedule.py)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime

from .evidence import mlflow_runs, parse_time, read_json
from .procs import step_processes, wait_until
from .stack import DAG_ID, N_INTERVALS, ArgusStack

CONDITION = "night"  # the condition of the scheduled runs (ARGUS_PARAM_DEFAULTS of the stack) and the backfill
# the backfill trains on the new frames of each interval only (scheduled runs: every frame up to theirs)
BACKFILL_CONF = {"conditions": [CONDITION], "train_steps": 25, "kid_tolerance": 0.15, "min_frames_per_group": 4,
                 "data_window": "interval"}
BACKFILL_INTERVALS = (1, 2, 3)
RUN_TIMEOUT_S = float(os.environ.get("ARGUS_TEST_RUN_TIMEOUT_S", "1500"))


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


class Scenario:
    """What happened, with the times the tests need."""

    def __init__(self, stack: ArgusStack):
        self.stack = stack
        self.scheduled: dict[int, str] = {}  # interval number -> run id
        self.backfill: dict[int, str] = {}
        self.backfill_created_at: datetime | None = None
        self.backfill_cli: str = ""
        self.s3_down: tuple[datetime, datetime] | None = None
        self.mlflow_down: tuple[datetime, datetime] | None = None
        self.mlflow_victim: str = ""

    @property
    def all_runs(self) -> dict[str, int]:
        return {**{r: k for k, r in self.scheduled.items()}, **{r: k for k, r in self.backfill.items()}}


def runs_by_interval(api, run_type: str) -> dict[int, str]:
    out = {}
    for run in api.runs(DAG_ID):
        if run["run_type"] != run_type or not run.get("data_interval_start"):
            continue
        out[parse_time(run["data_interval_start"])] = run["dag_run_id"]
    return out


def _interval_number(stack: ArgusStack, start: datetime) -> int | None:
    for k in range(1, N_INTERVALS + 1):
        if stack.schedule.interval(k)[0] == start:
            return k
    return None


def _task_state(api, run_id: str, task_id: str) -> str | None:
    for ti in api.task_instances(DAG_ID, run_id):
        if ti["task_id"] == task_id:
            return ti["state"]
    return None


def _pull_failed_on_s3(stack: ArgusStack, run_ids) -> bool:
    for run_id in run_ids:
        failure = stack.run_dir(run_id) / "pull" / "failure.json"
        if failure.exists() and "s3://" in read_json(failure).get("message", ""):
            return True
    return False


def _train_failed_at_start(stack: ArgusStack, run_id: str) -> bool:
    failure = stack.run_dir(run_id) / "train" / CONDITION / "failure.json"
    if not failure.exists():
        return False
    rec = read_json(failure)
    return rec.get("try_number", 1) >= 2 and stack.mlflow_uri in rec.get("message", "")


def run_scenario(stack: ArgusStack, api) -> Scenario:
    sc = Scenario(stack)
    first_scheduled = 4 if stack.unpaused_at < stack.schedule.tick else 5

    # 1. the scheduler's first run, created when the DAG was unpaused
    def scheduled_run():
        found = {_interval_number(stack, s): r for s, r in runs_by_interval(api, "scheduled").items()}
        return found.get(first_scheduled)

    sc.scheduled[first_scheduled] = wait_until(scheduled_run, 120, what="the scheduler's first run")
    s1 = sc.scheduled[first_scheduled]
    wait_until(lambda: _task_state(api, s1, "pull") == "success", 600, what=f"{s1} to pull its frames")

    # 2. S3 down, then the backfill while the scheduled run is running. S1 pulled every frame up to its
    # interval's end (cumulative window), the backfill's among them: the backfill runs as on a fresh
    # worker, whose content cache is empty, so its pulls must reach S3.
    shutil.rmtree(stack.home / "store" / "cache" / "objects", ignore_errors=True)
    stack.s3.down()
    down_at = datetime.now(UTC)
    assert api.run(DAG_ID, s1)["state"] == "running", "the scheduled run should still be running"
    first, last = (stack.schedule.interval(k)[0] for k in (BACKFILL_INTERVALS[0], BACKFILL_INTERVALS[-1]))
    sc.backfill_created_at = datetime.now(UTC)
    out = stack.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", iso(first), "--to-date",
                        iso(last), "--dag-run-conf", json.dumps(BACKFILL_CONF), "--max-active-runs", "3")
    sc.backfill_cli = out.stdout + out.stderr

    def backfill_runs():
        found = {_interval_number(stack, s): r for s, r in runs_by_interval(api, "backfill").items()}
        return found if all(k in found for k in BACKFILL_INTERVALS) else None

    sc.backfill = wait_until(backfill_runs, 60, what="the backfill's three runs")
    try:
        wait_until(lambda: _pull_failed_on_s3(stack, sc.backfill.values()), 300,
                   what="a backfill pull to fail on the unreachable S3 endpoint")
    finally:
        stack.s3.up()
        sc.s3_down = (down_at, datetime.now(UTC))

    # 3. MLflow killed while the first backfill run trains, kept down until a retry failed at its start
    victim = sc.backfill[BACKFILL_INTERVALS[0]]
    sc.mlflow_victim = victim
    wait_until(lambda: step_processes(stack.home, ARGUS_RUN_ID=victim, ARGUS_TASK_ID="train")
               and mlflow_runs(stack, victim, "train", CONDITION), 900, interval_s=0.5,
               what=f"{victim}'s train step to open its MLflow run")
    stack.kill_mlflow()
    mlflow_down = datetime.now(UTC)
    try:
        wait_until(lambda: _train_failed_at_start(stack, victim), 300, interval_s=0.5,
                   what="a retry of train to fail at its start while MLflow is down")
    finally:
        stack.mlflow_back()
        sc.mlflow_down = (mlflow_down, datetime.now(UTC))

    # 4. the tick's run, then everything to the end
    if first_scheduled == 4:
        wait_until(lambda: {_interval_number(stack, s): r for s, r in
                            runs_by_interval(api, "scheduled").items()}.get(5),
                   max(60.0, (stack.schedule.tick - datetime.now(UTC)).total_seconds() + 120),
                   what="the run the scheduler creates at the tick")
    sc.scheduled = {_interval_number(stack, s): r for s, r in runs_by_interval(api, "scheduled").items()}
    for run_id in sc.all_runs:
        api.wait_run(DAG_ID, run_id, RUN_TIMEOUT_S)
    return sc
