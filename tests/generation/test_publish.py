"""``argus-task publish``: checked outputs become a revision of an output dataset, exactly once; nothing else does."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from argus_tasks.data.schema import OUTPUT_MANIFEST_COLUMNS
from argus_tasks.generation.publish import OutputRegistry

from .output_support import Steps, generation_run, session_base

CHECK = ["check-outputs", "--conditions", "fog,rain", "--min-fidelity", "0.3", "--max-bad-fraction", "0.2",
         "--workers", "1"]
PUBLISH = ["publish", "--output-dataset", "weather-demo"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return session_base(str(tmp_path_factory.getbasetemp() / "generation-base"))


@pytest.fixture
def steps(monkeypatch, tmp_path):
    monkeypatch.setenv("ARGUS_OUTPUT_REGISTRY_ROOT", str(tmp_path / "outputs"))
    monkeypatch.delenv("ARGUS_OUTPUT_DVC_REMOTE", raising=False)
    return Steps(monkeypatch, tmp_path / "store", tmp_path / "xcom" / "return.json")


def _revision_manifest(registry: OutputRegistry, tag: str, tmp_path) -> pd.DataFrame:
    """The manifest of ``tag`` as a reader gets it: through git and the DVC remote (dvc get)."""
    out = tmp_path / f"got-{tag}"
    subprocess.run([sys.executable, "-m", "dvc", "get", str(registry.path), "dataset/manifest.parquet", "--rev", tag,
                    "-o", str(out)], check=True, capture_output=True, text=True)
    return pd.read_parquet(out)


def test_publish_makes_a_revision_with_lineage_and_publishing_it_again_changes_nothing(base, steps, tmp_path):
    run_id, run = generation_run(base, steps.store, tamper={("fog", 2): "truncate"})
    assert steps(CHECK, run_id)[0] == 0, steps.failure(run_id, "check-outputs")
    rc, result = steps(PUBLISH, run_id)
    assert rc == 0, steps.failure(run_id, "publish")
    assert (result["output_dataset"], result["revision"], result["n_frames"], result["already_published"]) == (
        "weather-demo", "v1", 15, False)
    registry = OutputRegistry("weather-demo")
    assert registry.path == tmp_path / "outputs" / "weather-demo"
    assert registry.version_tags() == ["v1"] and registry.git("rev-list", "-n", "1", "v1") == result["commit"]

    # a perception team's view: the how_to_pull command line, through git and the DVC remote
    got = tmp_path / "pulled"
    command = result["how_to_pull"].split()
    assert command[:2] == ["dvc", "get"] and "--rev" in command
    subprocess.run([sys.executable, "-m", "dvc", *command[1:-1], str(got)], check=True, capture_output=True)
    manifest = pd.read_parquet(got / "manifest.parquet")
    assert list(manifest.columns) == list(OUTPUT_MANIFEST_COLUMNS) and len(manifest) == 15
    assert "fog-clear-test-b00-00002" not in set(manifest["frame_id"])  # flagged: excluded
    row = manifest.set_index("frame_id").loc["rain-clear-test-b00-00004"]
    assert (row["source_frame_id"], row["source_revision"], row["source_commit"], row["model_name"],
            row["model_version"], row["seed"], row["condition"], row["split"]) == (
        "clear-test-b00-00004", "test-rev", "0" * 40, "argus-weather-rain", "5", 7, "rain", "test")
    source_label = (base[0] / "labels" / "clear" / "test" / "clear-test-b00-00004.png").read_bytes()
    assert (got / row["label_path"]).read_bytes() == source_label
    generated = run.cache / "generate" / "outputs" / "rain" / "5" / row["config_hash"] / "clear-test-b00-00004.png"
    assert (got / row["frame_path"]).read_bytes() == generated.read_bytes()

    # the pipeline's own pull reads it like any dataset revision
    rc, pulled = steps(["pull", "--dataset-rev", "v1", "--window", "all"], "pull-back",
                       ARGUS_DATASET_REGISTRY=registry.path, ARGUS_SCRATCH=tmp_path / "scratch")
    assert rc == 0 and (pulled["n_frames"], pulled["counts"]) == (15, {"fog": {"test": 7}, "rain": {"test": 8}})

    # the same run again (a retry), then another run with the very same content: nothing new
    commits = registry.git("rev-list", "--count", "HEAD")
    rc, again = steps(PUBLISH, run_id)
    assert rc == 0 and (again["revision"], again["commit"], again["already_published"]) == ("v1", result["commit"], True)
    other_id, other = generation_run(base, steps.store, tamper={("fog", 2): "truncate"})
    assert steps(CHECK, other_id)[0] == 0
    rc, same = steps(PUBLISH, other_id)
    assert rc == 0 and (same["revision"], same["already_published"], same["n_frames"]) == ("v1", True, 15)
    assert registry.version_tags() == ["v1"] and registry.git("rev-list", "--count", "HEAD") == commits


def test_a_new_champion_of_one_condition_replaces_only_its_frames(base, steps, tmp_path):
    first_id, _ = generation_run(base, steps.store)
    assert steps(CHECK, first_id)[0] == 0 and steps(PUBLISH, first_id)[0] == 0
    run_id, _ = generation_run(base, steps.store, conditions=("fog",), versions={"fog": "4"})
    assert steps(["check-outputs", "--conditions", "fog", "--workers", "1"], run_id)[0] == 0
    registry = OutputRegistry("weather-demo")
    # what a publish killed half-way leaves: a changed working tree and a stray frame
    (registry.path / "argus-dataset.json").write_text("{half-written")
    (registry.dataset / "frames" / "fog" / "test" / "stray.png").write_bytes(b"not a frame")
    rc, result = steps(PUBLISH, run_id)
    assert rc == 0 and (result["revision"], result["n_frames"], result["already_published"]) == ("v2", 16, False)
    assert not registry.git("status", "--porcelain")
    v1, v2 = (_revision_manifest(registry, t, tmp_path) for t in ("v1", "v2"))
    listed = subprocess.run([sys.executable, "-m", "dvc", "ls", "-R", str(registry.path), "dataset", "--rev", "v2"],
                            check=True, capture_output=True, text=True).stdout.split()
    assert sorted(listed) == sorted(["manifest.parquet", *v2["frame_path"], *v2["label_path"]])
    assert v2.groupby("condition")["model_version"].unique().map(list).to_dict() == {"fog": ["4"], "rain": ["5"]}
    rain = ["frame_id", "frame_sha256", "label_sha256", "model_version"]
    pd.testing.assert_frame_equal(v1[v1["condition"] == "rain"][rain].reset_index(drop=True),
                                  v2[v2["condition"] == "rain"][rain].reset_index(drop=True))
    meta = json.loads(registry.git("show", "v2:argus-dataset.json"))["revisions"]["v2"]
    assert (meta["run_id"], meta["conditions_published"], meta["frames_per_condition"]) == (
        run_id, ["fog"], {"fog": 8, "rain": 8})


def test_a_failed_check_publishes_nothing(base, steps, tmp_path):
    run_id, _ = generation_run(base, steps.store, tamper={("fog", 1): "blank", ("fog", 6): "blank"})
    assert steps([*CHECK[:-4], "--max-bad-fraction", "0.1"], run_id)[0] == 10
    rc, result = steps(PUBLISH, run_id)
    assert rc == 10 and result == {}
    message = steps.failure(run_id, "publish")
    assert "nothing published: check-outputs did not pass (it failed: the generated outputs failed" in message
    assert not (tmp_path / "outputs" / "weather-demo").exists()


def test_a_partial_or_changed_generation_publishes_nothing(base, steps, tmp_path):
    run_id, run = generation_run(base, steps.store, shards_per_condition=2)
    assert steps(CHECK, run_id)[0] == 0
    marker = run.cache / "generate" / "shards" / "rain-0001.json"
    saved = marker.read_bytes()
    marker.unlink()
    assert steps(PUBLISH, run_id)[0] == 10
    assert "1 of 4 planned shard(s) have no success marker" in steps.failure(run_id, "publish")
    doc = json.loads(saved)
    doc["seconds"] = 9.0  # a rerun of the shard after the check
    marker.write_text(json.dumps(doc))
    assert steps(PUBLISH, run_id)[0] == 10
    assert "the shard markers changed after check-outputs checked them" in steps.failure(run_id, "publish")
    assert not (tmp_path / "outputs" / "weather-demo").exists()
