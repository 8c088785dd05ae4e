"""The pure parts of cost and budget: the gate's decision, per-try records, the report's cost section."""

from __future__ import annotations

import pytest

from argus_tasks import cost, cost_report
from argus_tasks.budget import StepEstimate, decide
from argus_tasks.contract import StepContext

TRAIN = StepEstimate("train[fog]", "train of fog, config tiny, 30 steps", (3600.0, 7200.0, 5400.0),
                     ("run a", "run b", "run c"))
EVAL = StepEstimate("evaluate[fog]", "evaluate of fog", (360.0,), ("run d",))
NO_EVAL = StepEstimate("evaluate[fog]", "evaluate of fog")


def test_the_budget_decision():
    assert TRAIN.gpu_seconds == 5400.0  # the median of the past runs
    assert decide([TRAIN, EVAL], None).state == "no_budget"
    over = decide([TRAIN, EVAL], 1.0)
    assert (over.state, over.allowed) == ("over", False) and over.estimate_gpu_hours == pytest.approx(1.6)
    assert "estimated at 1.6 GPU-hours, more than max_gpu_hours=1" in over.message
    assert "median of 3 past run(s) (train of fog, config tiny, 30 steps): run a; run b; run c" in over.message
    within = decide([TRAIN, EVAL], 2.0)
    assert within.allowed and within.state == "within" and "lower bound" not in within.message
    partial = decide([TRAIN, NO_EVAL], 2.0)
    assert partial.allowed and partial.missing == ("evaluate[fog]",) and "lower bound" in partial.message
    assert not decide([TRAIN, NO_EVAL], 1.0).allowed  # the known part alone is over: a missing one only adds
    none = decide([StepEstimate("train[fog]", "c"), NO_EVAL], 0.5)
    assert none.allowed and none.state == "no_history" and none.estimate_gpu_hours is None
    assert "no estimate of this run's GPU time is possible" in none.message


def test_each_try_adds_its_gpu_seconds_and_a_rerun_of_a_try_replaces_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ARGUS_GPU_SLOTS", "2")
    monkeypatch.setenv("ARGUS_GPU_HOUR_PRICE", "3.6")
    env = {"ARGUS_STORE": str(tmp_path), "ARGUS_DAG_ID": "d", "ARGUS_RUN_ID": "r"}
    for try_number, seconds, outcome in ((1, 100.0, "failed"), (2, 50.0, "interrupted"), (2, 60.0, "succeeded")):
        ctx = StepContext.from_env({**env, "ARGUS_TRY_NUMBER": str(try_number)})
        out = cost.record(ctx, "train/fog", "train", "fog", 1000.0, outcome, ended=1000.0 + seconds)
    doc = ctx.run.read_json("train/fog/cost.json")
    assert [(t["try_number"], t["gpu_seconds"]) for t in doc["tries"]] == [(1, 200.0), (2, 120.0)]
    assert doc["gpu_seconds"] == 320.0 and doc["gpu_cost"] == pytest.approx(320 / 3600 * 3.6)
    assert out == {"gpu_slots": 2, "gpu_seconds": 320.0, "gpu_hours": pytest.approx(320 / 3600, abs=1e-6),
                   "gpu_cost": pytest.approx(0.32)}
    monkeypatch.setenv("ARGUS_GPU_SLOTS", "0")
    cost.record(ctx, "pull", "pull", None, 1000.0, "succeeded", ended=1010.0)
    lines, totals = cost_report.markdown(ctx.run, ["fog"])
    assert totals["run_gpu_seconds"] == 320.0 and totals["run_gpu_cost"] == pytest.approx(0.32)
    text = "\n".join(lines)
    assert "**320.0 GPU-seconds** (0.0889 GPU-hours" in text and "estimated cost **0.3200** at 3.6" in text
    assert "| train/fog | 2 | 2 | 160.0 | 320.0 | 0.3200 |" in text and "| pull |" not in text


def test_no_price_no_cost_figure(monkeypatch):
    monkeypatch.delenv("ARGUS_GPU_HOUR_PRICE", raising=False)
    assert cost.gpu_hour_price() is None and cost.totals([], None)["gpu_cost"] is None
    monkeypatch.setenv("ARGUS_GPU_HOUR_PRICE", "cheap")
    assert cost.gpu_hour_price() is None
