"""GPU-seconds and cost of a real train step, its team tags, and the budget gate on that history.

Through the real CLI on a small validated run, with an MLflow store of its own (the history of the gate
must be this test's alone).
"""

from __future__ import annotations

import time
import uuid

import pytest

from argus_tasks.contract import EXIT_PERMANENT

from .conftest import DAG_ID  # noqa: F401 - the run folder's DAG (the MLflow experiment argus/model_tests)

STEPS = "7"  # no other test trains 7 steps: the budget's history is this test's
TRAIN = ["train", "--condition", "night", "--steps", STEPS, "--set", "log_every_steps=7",
         "--set", "checkpoint_every_steps=7"]
PRICE = 3.0


@pytest.fixture
def own_mlflow(tmp_path, monkeypatch):
    import mlflow

    saved = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ARGUS_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(saved)


def _budget(steps, run_id: str, conditions: str, budget: str):
    return steps(["budget", "--conditions", conditions, "--model-config", "tiny", "--steps", STEPS,
                  "--max-gpu-hours", budget], run_id)


def test_gpu_seconds_cost_and_team_of_a_train_step_then_the_budget_gate(own_mlflow, steps, validated_run,
                                                                        monkeypatch):
    from argus_tasks.models.registry_adapter import Registry

    run_id, run = validated_run
    # before any history: the gate cannot estimate, says so and lets the run go on
    rc, first_gate = _budget(steps, f"gate-{uuid.uuid4().hex[:6]}", "night", "0.5")
    assert rc == 0 and first_gate["decision"] == "no_history" and first_gate["estimate_gpu_hours"] is None
    assert "no estimate of this run's GPU time is possible" in first_gate["message"]
    assert "train of night, config tiny, 7 steps" in first_gate["message"]

    for key, value in {"ARGUS_GPU_SLOTS": "2", "ARGUS_GPU_HOUR_PRICE": str(PRICE), "ARGUS_TEAM": "vision",
                       "ARGUS_TRY_NUMBER": "1", "ARGUS_MAP_INDEX": "0"}.items():
        monkeypatch.setenv(key, value)
    t0 = time.time()
    rc, trained = steps(TRAIN, run_id)
    wall = time.time() - t0
    assert rc == 0, run.read_json("train/night/failure.json")
    record = run.read_json("train/night/cost.json")
    (try1,) = record["tries"]
    assert 0.5 * wall < try1["seconds"] <= wall  # the step's own wall time (after argument parsing)
    assert try1["gpu_seconds"] == pytest.approx(2 * try1["seconds"], abs=0.01)
    assert record["gpu_cost"] == pytest.approx(record["gpu_seconds"] / 3600 * PRICE, rel=1e-3)
    assert trained["gpu_seconds"] == record["gpu_seconds"] and trained["gpu_slots"] == 2

    mrun = own_mlflow.get_run(trained["mlflow_run_id"])
    assert mrun.data.metrics["gpu_seconds"] == pytest.approx(record["gpu_seconds"])
    assert mrun.data.metrics["gpu_cost"] == pytest.approx(record["gpu_cost"])
    assert mrun.data.tags["argus.team"] == "vision"
    version = Registry(own_mlflow).version(trained["model_name"], trained["model_version"])
    assert version.tags["argus.team"] == "vision"

    # a second try (the result is reused: a few seconds) adds its GPU time to the step's total
    monkeypatch.setenv("ARGUS_TRY_NUMBER", "2")
    rc, again = steps(TRAIN, run_id)
    assert rc == 0
    record = run.read_json("train/night/cost.json")
    assert [t["try_number"] for t in record["tries"]] == [1, 2]
    assert record["gpu_seconds"] == pytest.approx(sum(t["gpu_seconds"] for t in record["tries"]), abs=0.01)
    assert own_mlflow.get_run(trained["mlflow_run_id"]).data.metrics["gpu_seconds"] == pytest.approx(
        record["gpu_seconds"])
    history_hours = record["gpu_seconds"] / 3600

    # over budget: stops, naming the estimate, its basis (the past run) and the budget
    for key in ("ARGUS_GPU_SLOTS", "ARGUS_TEAM"):
        monkeypatch.delenv(key)
    gate_run = f"gate-{uuid.uuid4().hex[:6]}"
    rc, _ = _budget(steps, gate_run, "night", "0.0000001")
    assert rc == EXIT_PERMANENT
    message = steps.run_store(gate_run).read_json("budget/failure.json")["message"]
    assert f"estimated at {history_hours:.4g} GPU-hours" in message
    assert "more than max_gpu_hours=1e-07" in message
    assert trained["mlflow_run_id"][:12] in message and run_id in message and "team vision" in message
    assert "Not counted (no history): evaluate[night]" in message

    # within budget: runs; the estimate is a lower bound while evaluate has no history
    rc, within = _budget(steps, f"gate-{uuid.uuid4().hex[:6]}", "night", "10")
    assert rc == 0 and within["decision"] == "within" and within["allowed"]
    assert within["estimate_gpu_hours"] == pytest.approx(history_hours, rel=1e-3)
    assert within["missing_history"] == ["evaluate[night]"] and "lower bound" in within["message"]
    # no budget: the gate passes without asking MLflow
    rc, none = steps(["budget", "--conditions", "night", "--max-gpu-hours", ""], f"gate-{uuid.uuid4().hex[:6]}")
    assert rc == 0 and none["decision"] == "no_budget"
