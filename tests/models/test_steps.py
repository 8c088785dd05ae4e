"""segmenter -> train -> evaluate -> promote through the real CLI on a small validated run.

MLflow is the session's local sqlite store (set up by the root conftest).
"""

from __future__ import annotations

import json

import pytest

from argus_tasks.contract import EXIT_PERMANENT
from argus_tasks.steps.promote import apply_approval

TRAIN = ["train", "--condition", "fog", "--steps", "12", "--set", "log_every_steps=4", "--set",
         "checkpoint_every_steps=6"]


def test_segmenter_clears_its_floor_and_is_registered_once(session_segmenter, steps, validated_run):
    from argus_tasks.models.registry_adapter import CHAMPION, SEGMENTER_MODEL, Registry

    assert session_segmenter["trained"] and session_segmenter["miou"] >= 0.75, session_segmenter
    assert set(session_segmenter["per_class_iou"]) >= {"road", "vehicle", "lane_marking", "pole"}
    reg = Registry()
    champion = reg.alias(SEGMENTER_MODEL, CHAMPION)
    assert str(champion.version) == session_segmenter["version"]
    assert champion.tags["argus.content_hash"] == session_segmenter["content_hash"]
    # another run reuses it: no training, same pinned version
    run_id, run = validated_run
    rc, again = steps(["segmenter"], run_id)
    assert rc == 0 and not again["trained"] and again["version"] == session_segmenter["version"]
    assert run.read_json("segmenter/result.json")["version"] == session_segmenter["version"]


def test_train_evaluate_promote(session_segmenter, steps, validated_run):
    from argus_tasks.models.registry_adapter import CHALLENGER, Registry

    run_id, run = validated_run
    assert steps(["segmenter"], run_id)[0] == 0
    rc, trained = steps(TRAIN, run_id)
    assert rc == 0 and trained["steps"] == 12 and trained["registered_new_version"]
    reg = Registry()
    name, version = trained["model_name"], trained["model_version"]
    assert name == "argus-weather-fog" and str(reg.alias(name, CHALLENGER).version) == version
    tags = reg.version(name, version).tags
    for key in ("argus.dataset_rev", "argus.dataset_fingerprint", "argus.validation_result_id", "argus.git_commit",
                "argus.image", "argus.dag_id", "argus.run_id", "argus.try_number", "argus.map_index"):
        assert tags.get(key) not in (None, ""), key
    assert tags["argus.dataset_rev"] == "test-rev"
    assert run.exists("train/fog/samples/grid.png") and run.list("train/fog/checkpoints")

    # a completed step returns its result without training
    rc, again = steps(TRAIN, run_id)
    assert rc == 0 and again["model_version"] == version and again["train_seconds"] == trained["train_seconds"]
    # a retry that lost its result (crash after registering) resumes at the end and reuses the version
    (run.cache / "train/fog/result.json").unlink()
    rc, retried = steps(TRAIN, run_id)
    assert rc == 0 and retried["resumed_from_step"] == 12 and retried["model_version"] == version
    assert not retried["registered_new_version"]
    assert len(reg.client.search_model_versions(f"name='{name}' and tags.`argus.run_id` = '{run_id}'")) == 1

    rc, ev = steps(["evaluate", "--condition", "fog", "--max-frames", "32"], run_id)
    assert rc == 0, run.read_json("evaluate/fog/failure.json")
    doc = run.read_json("evaluate/fog/metrics.json")
    assert {"challenger", "identity", "ref_uniform_haze", "ref_koschmieder_fog"} <= set(doc["candidates"])
    assert doc["segmenter"]["version"] == session_segmenter["version"]
    frames = run.read_json("evaluate/fog/eval_frames.json")
    assert len(frames["source"]) == 32 and frames["source"] == sorted(frames["source"])
    for key, entry in doc["candidates"].items():
        assert run.exists(f"evaluate/fog/{entry['records']}") and run.exists(f"evaluate/fog/{entry['grid']}"), key
        assert set(entry["metrics"]) >= {"kid", "classwise_gap", "aggregate_gap", "label_preservation"}
    assert not doc["candidates"]["identity"]["sanity"]["differs_from_input"]  # identity changes nothing
    assert "lane_marking" in run.read_bytes("evaluate/fog/per_class.csv").decode()

    approval = json.dumps({"required": True, "approved": False, "by": "admin", "comment": "not today"})
    rc, first = steps(["promote", "--condition", "fog", "--approval", approval, "--n-boot", "200"], run_id)
    assert rc == 0 and isinstance(first["promoted"], bool) and first["reasons"]
    decision = run.read_json("promote/fog/decision.json")
    assert decision["result"]["challenger_version"] == version
    # rejected or refused: nothing moved (other tests of the session may have made a fog champion before),
    # and the version carries the decision
    assert not first["promoted"] and first["champion_version"] == first["previous_champion"]
    assert first["champion_version"] != version
    assert reg.version(name, version).tags["argus.decision"] == "not_promoted"
    rc, second = steps(["promote", "--condition", "fog", "--approval", approval, "--n-boot", "200"], run_id)
    assert rc == 0 and second["already_applied"] and "already applied" in second["note"]


def test_missing_upstream_outputs_are_permanent_errors(session_segmenter, steps, validated_run, tmp_path):
    run_id, run = validated_run
    rc, _ = steps(["evaluate", "--condition", "fog"], run_id)
    assert rc == EXIT_PERMANENT and "train step of fog has not completed" in run.read_json(
        "evaluate/fog/failure.json")["message"]
    rc, _ = steps(["promote", "--condition", "fog"], run_id)
    assert rc == EXIT_PERMANENT and "train did not complete" in run.read_json("promote/fog/failure.json")["message"]
    rc, _ = steps(["train", "--condition", "rain", "--steps", "2"], "a-run-that-was-never-validated")
    msg = steps.run_store("a-run-that-was-never-validated").read_json("train/rain/failure.json")["message"]
    assert rc == EXIT_PERMANENT and "validation output missing" in msg
    rc, _ = steps(["train", "--condition", "rain", "--steps", "2"], run_id)  # no rain frames in this dataset
    assert rc == EXIT_PERMANENT and "rain/train" in run.read_json("train/rain/failure.json")["message"]
    rc, _ = steps(["train", "--condition", "fog", "--set", "stepz=3"], run_id)
    assert rc == EXIT_PERMANENT and "stepz" in run.read_json("train/fog/failure.json")["message"]


@pytest.mark.parametrize("decision, approval, expected, state", [
    (True, {"required": False}, True, "not_required"),
    (True, {"required": True, "approved": True, "by": "ana"}, True, "approved"),
    (True, {"required": True, "approved": False, "by": "admin", "comment": "no"}, False, "rejected"),
    (True, {"required": True}, False, "missing"),
    (False, {"required": True, "approved": True}, False, "not_asked"),
])
def test_human_approval(decision, approval, expected, state):
    promote, reasons, got_state = apply_approval(decision, ["policy says so"], approval)
    assert (promote, got_state) == (expected, state)
    assert reasons[0] == "policy says so"
    if state == "rejected":
        assert "rejected" in reasons[-1] and "admin" in reasons[-1]
