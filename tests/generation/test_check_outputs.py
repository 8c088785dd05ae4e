"""``argus-task check-outputs``: the GX output gate on real generated-like PNGs, with one bad input per test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from argus_tasks.data import gx_outputs as go
from argus_tasks.data import gx_project as gp

from .output_support import Steps, generation_run, session_base

REPO_GX = Path(__file__).resolve().parents[2] / "great_expectations"
CHECK = ["check-outputs", "--conditions", "fog,rain", "--min-fidelity", "0.3", "--workers", "1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return session_base(str(tmp_path_factory.getbasetemp() / "generation-base"))


@pytest.fixture
def steps(monkeypatch, tmp_path):
    return Steps(monkeypatch, tmp_path / "store", tmp_path / "xcom" / "return.json")


def _content(path: Path) -> list:
    suite = json.loads(path.read_text())
    return [(e["type"], json.dumps(e["kwargs"], sort_keys=True), json.dumps(e["meta"], sort_keys=True))
            for e in suite["expectations"]]


def test_committed_output_suites_match_the_schema(tmp_path):
    generated = gp.build_project(tmp_path / "gx")
    for table in go.OUTPUT_TABLES:
        name = f"{gp.suite_name(table)}.json"
        assert _content(REPO_GX / "expectations" / name) == _content(generated / "expectations" / name), (
            f"great_expectations/expectations/{name} is stale: run `python -m argus_tasks.data.gx_project`")
    checkpoint = json.loads((REPO_GX / "checkpoints" / f"{go.OUTPUT_CHECKPOINT}.json").read_text())
    assert [v["name"] for v in checkpoint["validation_definitions"]] == [
        "argus_generated_manifest_validation", "argus_generated_outputs_validation"]
    manifest = _content(REPO_GX / "expectations" / "argus_generated_manifest.json")
    typed = {json.loads(kw)["column"] for t, kw, _ in manifest if t == "expect_column_values_to_be_of_type"}
    from argus_tasks.data.schema import OUTPUT_MANIFEST_COLUMNS

    assert typed == set(OUTPUT_MANIFEST_COLUMNS)


def test_good_outputs_pass_and_a_bad_frame_and_a_changed_label_are_flagged(base, steps, tmp_path):
    run_id, run = generation_run(base, steps.store, tamper={("fog", 2): "truncate", ("rain", 5): "label",
                                                            ("rain", 0): "source"})
    rc, result = steps([*CHECK, "--max-bad-fraction", "0.3"], run_id)
    assert rc == 0, steps.failure(run_id, "check-outputs")
    assert result["outcome"] == "flagged"
    assert result["n_outputs"] == 16 and result["accepted"] == 13 and result["flagged"] == 3
    assert result["per_condition"]["fog"] == {"outputs": 8, "flagged": 1, "accepted": 7, "bad_fraction": 0.125}
    assert result["models"] == {"fog": {"model_name": "argus-weather-fog", "model_version": "3"},
                                "rain": {"model_name": "argus-weather-rain", "model_version": "5"}}
    flagged = pd.read_parquet(run.cache / "check-outputs" / "flagged.parquet").set_index("frame_id")
    assert sorted(flagged.index) == ["fog-clear-test-b00-00002", "rain-clear-test-b00-00000",
                                     "rain-clear-test-b00-00005"]
    assert flagged.loc["fog-clear-test-b00-00002", "reasons"] == (
        "generated frame PNG does not decode as 8-bit RGB (OSError: image file is truncated)")
    assert flagged.loc["rain-clear-test-b00-00005", "reasons"] == (
        "label is not byte-identical to the source frame's label")
    assert flagged.loc["rain-clear-test-b00-00000", "reasons"] == (
        "the frame was made from another version of its source frame (source sha256 differs)")
    accepted = pd.read_parquet(run.cache / "check-outputs" / "accepted.parquet")
    assert len(accepted) == 13 and not set(flagged.index) & set(accepted["frame_id"])
    row = accepted.set_index("frame_id").loc["fog-clear-test-b00-00001"]
    assert (row["source_frame_id"], row["model_version"], row["seed"], row["source_revision"]) == (
        "clear-test-b00-00001", "3", 7, "test-rev")
    assert row["frame_path"] == "frames/fog/test/fog-clear-test-b00-00001.png"
    assert 0.3 <= accepted["label_fidelity"].min() <= accepted["label_fidelity"].max() <= 1.0
    assert (run.cache / "check-outputs" / "data_docs" / "index.html").exists()
    assert result["judge"]["version"] == base[1]["version"]


def test_blank_frames_past_the_threshold_fail_the_step_naming_them(base, steps):
    run_id, run = generation_run(base, steps.store, conditions=("fog",),
                                 tamper={("fog", 1): "blank", ("fog", 6): "blank"})
    rc, result = steps(["check-outputs", "--conditions", "fog", "--max-bad-fraction", "0.1", "--workers", "1"], run_id)
    assert rc == 10 and result == {}
    message = steps.failure(run_id, "check-outputs")
    assert "fog: 2 of 8 frames bad (25.00%), above max_bad_fraction 10.00%" in message
    assert "fog-clear-test-b00-00001" in message and "fog-clear-test-b00-00006" in message
    assert "generated frame is blank" in message and "expect_column_values_to_be_between(luma_std)" in message
    assert not (run.cache / "check-outputs" / "accepted.parquet").exists()
    assert not (run.cache / "check-outputs" / "result.json").exists()


def test_a_frame_whose_labels_are_gone_fails_the_fidelity_floor(base, steps):
    run_id, run = generation_run(base, steps.store, conditions=("rain",), tamper={("rain", 3): "noise"})
    rc, result = steps(["check-outputs", "--conditions", "rain", "--min-fidelity", "0.3", "--max-bad-fraction",
                        "0.2", "--workers", "1"], run_id)
    assert rc == 0, steps.failure(run_id, "check-outputs")
    scores = pd.read_parquet(run.cache / "check-outputs" / "scores.parquet").set_index("frame_id")
    noisy = scores.loc["rain-clear-test-b00-00003"]
    assert noisy["flagged"] and noisy["label_fidelity"] < 0.3 < scores.drop(noisy.name)["label_fidelity"].min()
    assert "label fidelity below min_fidelity" in noisy["reasons"]
    assert result["flagged"] == 1 and result["accepted"] == 7


def test_without_a_pinned_judge_the_judge_champion_judges_and_the_result_says_so(base, steps):
    run_id, run = generation_run(base, steps.store, conditions=("rain",))
    (run.cache / "segmenter" / "result.json").unlink()
    rc, result = steps(["check-outputs", "--conditions", "rain", "--workers", "1"], run_id)
    assert rc == 0, steps.failure(run_id, "check-outputs")
    import mlflow

    champion = mlflow.MlflowClient().get_model_version_by_alias("argus-downstream-segmenter", "champion")
    assert result["judge"] == {"model_name": "argus-downstream-segmenter", "version": str(champion.version),
                               "content_hash": champion.tags["argus.content_hash"],
                               "pinned_by": "argus-downstream-segmenter@champion"}


def test_a_missing_or_foreign_shard_marker_fails_before_anything_is_checked(base, steps):
    run_id, run = generation_run(base, steps.store, conditions=("fog",), shards_per_condition=2)
    marker = run.cache / "generate" / "shards" / "fog-0001.json"
    saved = json.loads(marker.read_text())
    marker.unlink()
    rc, _ = steps(["check-outputs", "--conditions", "fog"], run_id)
    assert rc == 10
    message = steps.failure(run_id, "check-outputs")
    assert "1 of 2 planned shard(s) have no success marker" in message and "fog-0001" in message
    marker.write_text(json.dumps({**saved, "shard_sha256": "f" * 64}))  # a marker of another plan's shard
    assert steps(["check-outputs", "--conditions", "fog"], run_id)[0] == 10
    assert "is not a complete marker of this plan's shard fog-0001" in steps.failure(run_id, "check-outputs")


def test_outputs_of_another_model_version_than_the_pinned_one_fail(base, steps):
    run_id, run = generation_run(base, steps.store, conditions=("fog",))
    run.write_json("resolve/result.json", {"models": {"fog": {"model_name": "argus-weather-fog", "version": "4"}}})
    assert steps(["check-outputs", "--conditions", "fog"], run_id)[0] == 10
    assert ("the fog outputs come from argus-weather-fog v3, but the run pinned argus-weather-fog v4"
            in steps.failure(run_id, "check-outputs"))
