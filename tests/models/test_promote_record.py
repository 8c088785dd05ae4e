"""``promote/<c>/decision.json`` tells what happened at the registry, and a rerun decides again
unless that was final for the same inputs. Through the real CLI, on the session's MLflow store."""

from __future__ import annotations

import json
import uuid

import pytest

from argus_tasks.contract import EXIT_PERMANENT

from .conftest import DAG_ID
from .promotion_support import promotion_run, tiny_dataset

FRAMES = "ab" * 32


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("record-data"))


@pytest.fixture
def client():
    import os

    import mlflow

    return mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def _versions(client, name: str, n: int) -> list[str]:
    client.create_registered_model(name)
    return [str(client.create_model_version(name, f"argus-test:/{name}/{i}", await_creation_for=0).version)
            for i in range(1, n + 1)]


def _promote(condition: str, *extra: str) -> list[str]:
    return ["promote", "--condition", condition, "--require-beat-reference", "no", "--n-boot", "200", *extra]


def _champion(client, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_a_stale_comparison_is_refused_on_every_rerun_and_decided_again_once_it_is_not(steps, client, template):
    name = "argus-weather-snow"
    first_champion, meanwhile, challenger = _versions(client, name, 3)
    client.set_registered_model_alias(name, "champion", first_champion)
    run_id = f"stale-{uuid.uuid4().hex[:6]}"
    run = promotion_run(template, steps.store, DAG_ID, run_id, "snow", name, challenger, first_champion,
                        eval_frames_sha256=FRAMES)
    client.set_registered_model_alias(name, "champion", meanwhile)  # another run promoted after our evaluate

    rc, first = steps(_promote("snow"), run_id)
    assert rc == 0 and first["promoted"] is False and "re-run evaluate" in first["note"], first
    rc, second = steps(_promote("snow"), run_id)  # e.g. the task cleared: it must look again, not "already applied"
    assert rc == 0 and not second["already_applied"], second["note"]
    assert second["registry_outcome"] == "stale" and "re-run evaluate" in second["note"]
    record = run.read_json("promote/snow/decision.json")
    assert record["registry_outcome"] == "stale" and record["applied_at_registry"] is False
    assert record["eval_frames_sha256"] == FRAMES == second["eval_frames_sha256"]
    assert record["inputs"]["compared_with_champion"] == first_champion
    assert _champion(client, name) == meanwhile

    client.set_registered_model_alias(name, "champion", first_champion)  # a rollback put the compared champion back
    rc, third = steps(_promote("snow"), run_id)
    assert rc == 0 and third["promoted"] is True and third["registry_outcome"] == "moved", third
    assert _champion(client, name) == challenger
    record = run.read_json("promote/snow/decision.json")
    assert record["applied_at_registry"] is True and record["registry_outcome"] == "moved"
    tags = client.get_model_version(name, challenger).tags
    assert tags["argus.decision"] == "promoted" and tags["argus.eval_frames_sha256"] == FRAMES

    rc, fourth = steps(_promote("snow"), run_id)  # final for these inputs: nothing changes
    assert rc == 0 and fourth["already_applied"] and fourth["note"].startswith("already applied")
    assert run.read_json("promote/snow/decision.json") == record


def test_an_approval_given_after_a_rejection_is_decided_again(steps, client, template):
    name = "argus-weather-rain"
    champion, challenger = _versions(client, name, 2)
    client.set_registered_model_alias(name, "champion", champion)
    run_id = f"approval-{uuid.uuid4().hex[:6]}"
    run = promotion_run(template, steps.store, DAG_ID, run_id, "rain", name, challenger, champion)
    rejected = json.dumps({"required": True, "approved": False, "by": "admin", "comment": "not yet"})
    approved = json.dumps({"required": True, "approved": True, "by": "admin", "comment": "ok now"})

    rc, first = steps(_promote("rain", "--approval", rejected), run_id)
    assert rc == 0 and first["promoted"] is False and first["approval"] == "rejected"
    rejected_record = run.read_json("promote/rain/decision.json")
    rc, again = steps(_promote("rain", "--approval", rejected), run_id)
    assert again["already_applied"] and _champion(client, name) == champion
    rc, later = steps(_promote("rain", "--approval", approved), run_id)
    assert rc == 0 and later["promoted"] is True and not later["already_applied"], later["note"]
    assert later["registry_outcome"] == "moved" and _champion(client, name) == challenger
    assert rejected_record["registry_outcome"] == "not_promoted" and rejected_record["applied_at_registry"] is True
    rc, stricter = steps(_promote("rain", "--approval", approved, "--margin", "0.001"), run_id)  # another policy
    assert rc == 0 and stricter["registry_outcome"] == "already_champion" and stricter["promoted"] is True


def test_promote_refuses_a_validation_record_that_did_not_pass(steps, client, template):
    """validate records its result only when the data passed: anything else is a broken contract,
    not a quarantine case for the decision to weigh (there is no reachable "quarantine exceeded")."""
    name = "argus-weather-night"
    champion, challenger = _versions(client, name, 2)
    client.set_registered_model_alias(name, "champion", champion)
    run_id = f"validation-{uuid.uuid4().hex[:6]}"
    run = promotion_run(template, steps.store, DAG_ID, run_id, "night", name, challenger, champion)
    result = run.read_json("validate/result.json")
    run.write_json("validate/result.json", {**result, "outcome": "failed"})
    rc, _ = steps(_promote("night"), run_id)
    assert rc == EXIT_PERMANENT
    message = run.read_json("promote/night/failure.json")["message"]
    assert "'failed'" in message and "rerun validate" in message
    assert _champion(client, name) == champion

    run.write_json("validate/result.json", {**result, "outcome": "quarantined"})  # a few frames set aside: fine
    rc, out = steps(_promote("night"), run_id)
    assert rc == 0 and out["validation"] == {"passed": True, "outcome": "quarantined",
                                              "result_id": result["result_id"]}
    assert out["promoted"] is True and _champion(client, name) == challenger
