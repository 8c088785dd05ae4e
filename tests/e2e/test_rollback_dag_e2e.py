"""``argus_champion_rollback`` end to end through Airflow (``airflow dags test``, confirmation off).

In the training test's home: fog's champion v1 (promoted by the training run) is followed by v2 (the
same weights registered again and promoted by an audited move, as a later training run would), then
the DAG rolls fog back to ``previous``. The champion is v1 again, the audit log says who, when and
why, and the rollback emitted the champion-moved asset event that ``argus_weather_generation`` is
scheduled on.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from .conftest import run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAG_ID = "argus_champion_rollback"
NAME = "argus-weather-fog"
REASON = "e2e: v2 washes out the lane markings"


@pytest.fixture(scope="module")
def rolled_back(demo_run):
    import mlflow

    from argus_tasks.models.audit_trail import AuditTrail
    from argus_tasks.models.registry_adapter import CHAMPION, Registry

    home, env, _ = demo_run
    uri, before = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", mlflow.get_tracking_uri()
    reg = Registry(mlflow.MlflowClient(tracking_uri=uri))
    v1 = reg.alias(NAME, CHAMPION)
    assert str(v1.version) == "1", "the training run's fog champion"
    tags = {k: v for k, v in v1.tags.items() if k.startswith("argus.") and k != "argus.decision"}
    identity = {"argus.dag_id": "e2e", "argus.run_id": "later-training-run", "argus.condition": "fog"}
    mlflow.set_tracking_uri(uri)  # a version of a logged model (models:/m-...) is looked up through the global URI
    try:
        v2, _ = reg.register(NAME, v1.source, v1.run_id, identity, {**tags, **identity})
    finally:
        mlflow.set_tracking_uri(before)
    trail = AuditTrail(str(home / "store"), "promotion", {"user": "e2e", "dag_run": "e2e/later-training-run"},
                       "a later training run", {})
    with reg.exclusive(NAME, "e2e set-up") as held:
        assert trail.move(reg, NAME, CHAMPION, v2.version, "1", held)[0] == "moved"
    log = run_dag(home, env, DAG_ID, {"condition": "fog", "reason": REASON, "require_approval": False,
                                      "eval_frames": 64, "min_frames_per_group": 2})
    run = max((home / "store" / "runs" / DAG_ID).iterdir(), key=lambda p: p.stat().st_mtime)
    return home, reg, str(v2.version), run, log


def test_the_rollback_restores_the_previous_champion_and_records_it(rolled_back):
    from argus_tasks.models.audit_log import AuditLog
    from argus_tasks.models.registry_adapter import CHAMPION

    home, reg, v2, run, log = rolled_back
    assert "state=success" in [line for line in log.splitlines() if "DagRun Finished" in line][-1]
    assert str(reg.alias(NAME, CHAMPION).version) == "1"
    check = json.loads((run / "rollback-check" / "fog" / "result.json").read_text())
    assert (check["target_version"], check["champion_at_check"], check["passed"]) == ("1", v2, True)
    result = json.loads((run / "rollback" / "fog" / "result.json").read_text())
    assert (result["registry_outcome"], result["previous_champion"], result["champion_version"]) == ("moved", v2, "1")
    assert (run / "rollback" / "fog" / "champion_history.png").stat().st_size > 10_000
    entries = AuditLog(reg, str(home / "store"), NAME).entries()
    assert [(e["kind"], e["from"], e["to"]) for e in entries] == [("promotion", None, "1"), ("promotion", "1", v2),
                                                                  ("rollback", v2, "1")]
    last = entries[-1]
    assert last["reason"] == REASON and last["who"]["user"] == "dag_test"  # what `dags test` names its trigger
    assert last["who"]["dag_run"].startswith(f"{DAG_ID}/") and last["evidence"]["check"].endswith("check.json")


def test_the_rollback_emits_the_champion_moved_event_generation_is_scheduled_on(rolled_back):
    home, _, v2, _, _ = rolled_back
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    rows = db.execute("SELECT a.uri, e.source_task_id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                      "WHERE e.source_dag_id = ?", (DAG_ID,)).fetchall()
    assert [(uri, task) for uri, task, _ in rows] == [("argus://champion/fog", "rollback")], rows
    extra = json.loads(rows[0][2])
    assert (extra["previous_champion"], extra["champion_version"]) == (v2, "1")
