"""train reuses an earlier result only for the same data, config and code, and warm-starts on request.

Through the real CLI on a small validated run (MLflow: the session's sqlite store). "New data" is a
new accepted manifest written the way pull + validate leave it (the data tests cover those steps).
"""

from __future__ import annotations

import hashlib
import io

from argus_tasks.contract import EXIT_PERMANENT
from argus_tasks.data.access import ACCEPTED, PULL_JSON, RESULT

CONDITION = "night"  # the fog model belongs to test_steps; nobody else trains night
TRAIN = ["train", "--condition", CONDITION, "--steps", "4", "--set", "log_every_steps=2",
         "--set", "checkpoint_every_steps=2"]


def revalidate(run, manifest, revision: str) -> str:
    """Make ``manifest`` the run's pulled and accepted data (what a new pull + validate leaves)."""
    buf = io.BytesIO()
    manifest.to_parquet(buf, index=False)
    raw = buf.getvalue()
    digest = hashlib.sha256(raw).hexdigest()
    run.write_json(PULL_JSON, {"revision": revision, "commit": "1" * 40, "fingerprint": digest})
    run.write_bytes(ACCEPTED, raw)
    run.write_json(RESULT, {"result_id": f"test/{revision}", "outcome": "passed", "dataset_fingerprint": digest,
                            "accepted_manifest_sha256": digest})
    return digest


def test_train_reuses_only_its_own_key_and_recomputes_for_new_data(steps, validated_run):
    from argus_tasks.models.registry_adapter import Registry

    run_id, run = validated_run
    rc, first = steps(TRAIN, run_id)
    assert rc == 0, run.read_json(f"train/{CONDITION}/failure.json")
    rc, again = steps(TRAIN, run_id)  # same data, config and code: the earlier result comes back
    assert rc == 0
    assert again["model_version"] == first["model_version"] and again["train_seconds"] == first["train_seconds"]

    # a new pull (fewer night frames): the model of the old data must not be reused
    manifest = run.read_dataframe(ACCEPTED)
    night_train = manifest[(manifest["condition"] == CONDITION) & (manifest["split"] == "train")]
    revalidate(run, manifest.drop(night_train.index[:4]), "test-rev-2")
    rc, fresh = steps(TRAIN, run_id)
    assert rc == 0, run.read_json(f"train/{CONDITION}/failure.json")
    assert fresh["model_version"] != first["model_version"] and fresh["registered_new_version"]
    assert fresh["train_frames"][CONDITION] == len(night_train) - 4
    assert fresh["resumed_from_step"] == 0 and fresh["steps"] == 4  # not resumed from the old data's checkpoints

    # ... and each result says whether it was reused, and why not
    key1 = first["reuse_key"]["digest"]
    assert first["reused"] is False and first["recomputed_because"] == "no earlier result in this run"
    assert again["reused"] == {"from_try": 1, "key": key1}
    assert fresh["reused"] is False and fresh["recomputed_because"].startswith("data changed"), fresh
    assert fresh["reuse_key"]["digest"] != key1
    assert fresh["checkpoints"] != first["checkpoints"] and not run.exists(first["checkpoints"])
    reg = Registry()
    versions = reg.client.search_model_versions(
        f"name='argus-weather-{CONDITION}' and tags.`argus.run_id` = '{run_id}'")
    assert sorted(v.tags["argus.reuse_key"] for v in versions) == sorted([key1, fresh["reuse_key"]["digest"]])
    assert fresh["mlflow_run_id"] != first["mlflow_run_id"]  # lineage: one MLflow run per key

    # a retry of the new key that lost its result resumes its own checkpoints and dedups its version
    (run.cache / f"train/{CONDITION}/result.json").unlink()
    rc, retried = steps(TRAIN, run_id)
    assert rc == 0 and retried["resumed_from_step"] == 4 and retried["model_version"] == fresh["model_version"]
    assert not retried["registered_new_version"] and retried["mlflow_run_id"] == fresh["mlflow_run_id"]

    # data that cannot be trained on: the earlier result is withdrawn, not left looking valid
    revalidate(run, manifest.drop(night_train.index), "test-rev-3")
    rc, _ = steps(TRAIN, run_id)
    assert rc == EXIT_PERMANENT
    assert not run.exists(f"train/{CONDITION}/result.json")


def test_a_changed_config_is_recomputed_and_says_which_key(steps, validated_run):
    run_id, run = validated_run
    rc, first = steps(TRAIN, run_id)
    assert rc == 0
    rc, longer = steps(TRAIN + ["--set", "lr=5e-4"], run_id)
    assert rc == 0 and longer["reused"] is False
    assert "config changed (model_config.lr: 0.001 -> 0.0005)" in longer["recomputed_because"], longer
    assert longer["resumed_from_step"] == 0 and longer["model_version"] != first["model_version"]


def test_init_from_champion_warm_starts_and_is_recorded(steps, validated_run, dataset_template, model_store):
    import mlflow

    from argus_tasks.data.fixtures import build_validated_run
    from argus_tasks.models.registry_adapter import CHAMPION, Registry

    from .conftest import DAG_ID

    reg = Registry()
    name = f"argus-weather-{CONDITION}"
    if reg.alias(name, CHAMPION) is not None:
        reg.client.delete_registered_model_alias(name, CHAMPION)
    run_id, run = validated_run
    rc, scratch = steps(TRAIN + ["--init-from", "champion"], run_id)
    assert rc == 0, run.read_json(f"train/{CONDITION}/failure.json")
    assert (scratch["init_from"], scratch["init_from_requested"], scratch["init_from_version"]) == (
        "scratch", "champion", None)
    reg.set_alias(name, CHAMPION, scratch["model_version"])

    other = f"{run_id}-warm"
    build_validated_run(dataset_template, model_store, DAG_ID, other)
    # lr 0: Adam moves nothing, so the trained generator is exactly the champion's when warm-started
    rc, warm = steps(TRAIN + ["--init-from", "champion", "--set", "lr=0"], other)
    assert rc == 0
    assert (warm["init_from"], warm["init_from_version"]) == ("champion", scratch["model_version"])
    assert warm["content_hash"] == scratch["content_hash"]
    assert warm["reuse_key"]["config"]["init_from_version"] == scratch["model_version"]
    tags = reg.version(name, warm["model_version"]).tags
    assert (tags["argus.init_from"], tags["argus.init_from_version"]) == ("champion", scratch["model_version"])
    params = mlflow.get_run(warm["mlflow_run_id"]).data.params
    assert (params["init_from"], params["init_from_version"]) == ("champion", scratch["model_version"])
    # from scratch with lr 0 the weights stay at the seeded initialisation: another generator
    build_validated_run(dataset_template, model_store, DAG_ID, f"{other}-cold")
    rc, cold = steps(TRAIN + ["--set", "lr=0"], f"{other}-cold")
    assert rc == 0 and cold["init_from"] == "scratch" and cold["content_hash"] != scratch["content_hash"]


def test_too_few_train_frames_fail_before_training(steps, validated_run):
    run_id, run = validated_run
    rc, _ = steps(TRAIN + ["--min-train-frames", "17"], run_id)  # the fixture has 16 night train frames
    assert rc == EXIT_PERMANENT
    message = run.read_json(f"train/{CONDITION}/failure.json")["message"]
    assert message.startswith(f"too few frames to train {CONDITION}: 16 accepted {CONDITION}/train frame(s)")
    assert not run.list(f"train/{CONDITION}/checkpoints")
