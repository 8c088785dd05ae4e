"""promote compares only scores of this run's judge and names it in decision.json (through the real CLI)."""

from __future__ import annotations

import os
import uuid

import pytest

from argus_tasks.contract import EXIT_PERMANENT

from .conftest import DAG_ID
from .promotion_support import promotion_run, tiny_dataset


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("judge-data"))


def test_decision_names_the_judge_and_refuses_an_evaluation_by_another(steps, template):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    name = "argus-weather-fog"
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    champion, challenger = (str(client.create_model_version(name, f"argus-test:/{name}/{i}", await_creation_for=0)
                                .version) for i in (1, 2))
    client.set_registered_model_alias(name, "champion", champion)
    run_id = f"judge-{uuid.uuid4().hex[:6]}"
    run = promotion_run(template, steps.store, DAG_ID, run_id, "fog", name, challenger, champion)
    doc = run.read_json("evaluate/fog/metrics.json")
    run.write_json("evaluate/fog/metrics.json", {**doc, "judge": {"model_name": "argus-downstream-segmenter",
                                                                   "version": "4"}})
    argv = ["promote", "--condition", "fog", "--require-beat-reference", "no", "--n-boot", "200"]

    run.write_json("segmenter/result.json", {"model_name": "argus-downstream-segmenter", "version": "5"})
    rc, _ = steps(argv, run_id)  # the run's judge changed after evaluate: champion and challenger must be re-scored
    assert rc == EXIT_PERMANENT
    failure = run.read_json("promote/fog/failure.json")["message"]
    assert "scored by judge v4, but this run pins judge v5" in failure and "rerun evaluate" in failure

    run.write_json("segmenter/result.json", {"model_name": "argus-downstream-segmenter", "version": "4"})
    rc, result = steps(argv, run_id)
    assert rc == 0 and result["promoted"] is True and result["judge_version"] == "4", result
    record = run.read_json("promote/fog/decision.json")
    assert record["judge_version"] == "4" and record["inputs"]["judge_version"] == "4"
    assert record["result"]["policy"]["fidelity_margin"] == 0.03 and record["result"]["policy"]["min_fidelity"] == 0.5
    assert record["result"]["comparisons"]["gates"]["fidelity vs champion"] is True
    assert result["reasons"][-1].startswith("decided by: every gate passed")
    assert client.get_model_version(name, challenger).tags["argus.decided_with_judge"] == "4"
