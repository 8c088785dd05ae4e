"""Fixtures of the system tests: ONE Argus install with live Airflow services for the whole session.

The stack (``stack.py``) runs the project's own ``scripts/init_local.sh`` on a temporary home and
starts moto S3 (the DVC remote), an MLflow server and the four Airflow services on free loopback
ports. Every test module shares it; runs use one condition and a few training steps.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .scenario import run_scenario
from .stack import DAG_ID, ArgusStack, Schedule

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "system"
# The dataset is laid out for a schedule firing about this long after the start of the session; the
# stack fixes the real tick when the Airflow services start (stack.TICK_AFTER_START).
PLANNED_LEAD = timedelta(minutes=4)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def stack(tmp_path_factory, request, artifacts):
    """The running install; the DAG is unpaused once everything is up (the schedule starts then)."""
    shutil.rmtree(artifacts / "logs", ignore_errors=True)  # logs of an earlier failed session
    started = time.time()
    planned = (datetime.now(UTC) + PLANNED_LEAD).replace(second=0, microsecond=0)
    s = ArgusStack(root=tmp_path_factory.mktemp("system"), schedule=Schedule(tick=planned))
    try:
        s.start()
        s.unpause()
    except BaseException:
        print("\n" + s.log_tails(80), file=sys.stderr)
        s.keep_logs(artifacts / "failed-setup")
        s.stop()
        raise
    print(f"\nsystem stack up in {s.timings} (home {s.home}, Airflow {s.base_url}, MLflow {s.mlflow_uri}, "
          f"schedule '{s.schedule.cron}' -> tick {s.schedule.tick.isoformat()})", file=sys.stderr)
    yield s
    failed = request.session.testsfailed
    if failed:
        print(f"\n{failed} test(s) failed; tails of the service logs:\n{s.log_tails(40)}", file=sys.stderr)
        s.keep_logs(artifacts / "logs")
    s.stop()
    s.timings["session_s"] = round(time.time() - started, 1)
    (artifacts / "timings.json").write_text(json.dumps(s.timings, indent=2))  # set-up, wall and CPU seconds
    leftovers = s.leftover_processes()
    assert not leftovers, f"processes of the test install outlived the tear-down: {leftovers}"


@pytest.fixture(scope="session")
def api(stack):
    return stack.api


@pytest.fixture(scope="session")
def mlflow_client(stack):
    return stack.mlflow_client()


@pytest.fixture(scope="session")
def dag_id() -> str:
    return DAG_ID


@pytest.fixture(scope="session")
def schedule_scenario(stack, api):
    """The scheduled runs and the backfill, with faults 2, 3 and 5 injected (scenario.py); minutes."""
    return run_scenario(stack, api)
