"""The shard plan: deterministic, within Airflow's map limit at 1M frames, every frame exactly once."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pandas as pd
import pytest

from argus_tasks.contract import EXIT_PERMANENT
from argus_tasks.generation import shards as S

from .generate_support import call, new_run, small_source

CONDITIONS = ("fog", "rain", "snow", "night")


def synthetic_manifest(n_clear: int, n_other: int = 0, seed: int = 0) -> pd.DataFrame:
    """``n_clear`` clear frames over the three splits and ``n_other`` fog frames, in shuffled order."""
    rng = np.random.default_rng(seed)
    ids = np.char.add("f", np.char.zfill(np.arange(n_clear + n_other).astype(str), 8))
    cond = np.array(["clear"] * n_clear + ["fog"] * n_other)
    split = rng.choice(np.array(["train", "val", "test"]), size=len(ids), p=[0.2, 0.3, 0.5])
    order = rng.permutation(len(ids))
    return pd.DataFrame({"frame_id": ids[order], "condition": cond[order], "split": split[order]})


def covered_once(plan: S.ShardPlan, condition: str) -> bool:
    ranges = sorted((s.start, s.stop) for s in plan.shards if s.condition == condition)
    return (ranges[0][0] == 0 and ranges[-1][1] == plan.n_frames
            and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False)))


def test_a_million_frame_manifest_plans_at_most_1000_shards_covering_each_frame_once_fast():
    manifest = synthetic_manifest(1_000_000, n_other=50_000)
    started = time.perf_counter()
    rows = S.select_sources(manifest, ("train", "val", "test"))
    plan = S.plan_shards(rows["frame_id"].tolist(), CONDITIONS, ("train", "val", "test"), shard_size=64)
    doc = plan.to_doc()
    seconds = time.perf_counter() - started
    assert plan.n_frames == 1_000_000 and len(rows) == 1_000_000  # the fog frames are not sources
    assert len(plan.shards) <= S.MAX_SHARDS and doc["n_shards"] == len(plan.shards) == 4 * 250
    assert plan.shard_size_grown and plan.requested_shard_size == 64 and plan.shard_size == 4000
    for c in CONDITIONS:
        assert covered_once(plan, c), c
    assert sum(s.n_frames for s in plan.shards) == 4 * 1_000_000
    assert rows["frame_id"].is_monotonic_increasing
    assert seconds < 15, f"planning 1M frames took {seconds:.1f}s"
    # the same inputs in another row order give the same plan
    again = S.plan_shards(S.select_sources(manifest.sample(frac=1.0, random_state=3), ("train", "val", "test"))
                          ["frame_id"].tolist(), CONDITIONS, ("train", "val", "test"), shard_size=64)
    assert again.to_doc() == doc
    assert len(json.dumps([s.ref() for s in plan.shards])) < 100_000  # what goes to XCom stays small (~60 bytes a shard)


def test_the_shard_size_is_kept_when_the_plan_fits_and_ids_follow_condition_and_index():
    ids = [f"clear-{i:03d}" for i in range(10)]
    plan = S.plan_shards(ids, ("fog", "rain"), ("test",), shard_size=4)
    assert not plan.shard_size_grown and plan.shard_size == 4
    assert [s.shard_id for s in plan.shards] == ["fog-0000", "fog-0001", "fog-0002", "rain-0000", "rain-0001",
                                                 "rain-0002"]
    assert [(s.start, s.stop) for s in plan.shards[:3]] == [(0, 4), (4, 8), (8, 10)]
    assert plan.shards[0].ref() == {"shard_id": "fog-0000", "condition": "fog", "index": 0}
    # a shard's hash is its condition and its frames: another condition or frame set changes it
    assert plan.shards[0].shard_sha256 != plan.shards[3].shard_sha256
    other = S.plan_shards(ids[:3] + ["clear-003b"] + ids[3:], ("fog", "rain"), ("test",), shard_size=4)
    assert other.shards[0].shard_sha256 != plan.shards[0].shard_sha256
    assert other.to_doc()["plan_sha256"] != plan.to_doc()["plan_sha256"]


def test_the_grown_size_keeps_every_condition_under_the_cap():
    assert S.effective_shard_size(1000, 3, 1, max_shards=10) == 334  # 3 x 3 shards <= 10
    assert S.effective_shard_size(9, 3, 1, max_shards=10) == 3
    with pytest.raises(S.PlanError, match="at least 1 frame"):
        S.effective_shard_size(10, 1, 0)
    with pytest.raises(S.PlanError, match="unknown condition 'hail'"):
        S.parse_csv("fog,hail", ("fog", "rain"), "condition")
    assert S.parse_csv("rain, fog,rain", ("fog", "rain"), "condition") == ("rain", "fog")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return small_source(tmp_path_factory.mktemp("plan-source"))


def test_plan_shards_step_writes_the_plan_returns_only_refs_and_reruns_identically(source, tmp_path, monkeypatch,
                                                                                   capsys):
    store, xcom = tmp_path / "store", tmp_path / "xcom" / "return.json"
    run_id, run = new_run(source, store)
    argv = ["plan-shards", "--conditions", "fog,rain", "--splits", "test,val", "--shard-size", "3"]
    rc, result = call(monkeypatch, store, run_id, argv, xcom)
    assert rc == 0, run.read_bytes("plan-shards/failure.json")
    assert result["n_frames"] == 8 and result["n_shards"] == 6 and result["shard_size"] == 3
    assert result["shards"][:2] == [{"shard_id": "fog-0000", "condition": "fog", "index": 0},
                                    {"shard_id": "fog-0001", "condition": "fog", "index": 1}]
    doc = run.read_json("plan/shards.json")
    assert doc["plan_sha256"] == result["plan_sha256"] and doc["source"]["dataset_rev"] == "test-rev"
    fog = [s for s in doc["shards"] if s["condition"] == "fog"]
    rain = [s for s in doc["shards"] if s["condition"] == "rain"]
    assert [s["frames_file"] for s in fog] == [s["frames_file"] for s in rain] == [
        "plan/frames/00000.parquet", "plan/frames/00001.parquet", "plan/frames/00002.parquet"]
    chunks = [run.read_dataframe(s["frames_file"]) for s in fog]
    assert [len(c) for c in chunks] == [3, 3, 2] == [s["n_frames"] for s in fog]
    ids = [f for c in chunks for f in c["frame_id"]]
    manifest = run.read_dataframe("validate/accepted_manifest.parquet")
    assert ids == sorted(manifest.loc[(manifest["condition"] == "clear") & manifest["split"].isin(["test", "val"]),
                                      "frame_id"])
    files = ["plan/shards.json", *(s["frames_file"] for s in fog)]
    first = [run.read_bytes(f) for f in files]
    rc, again = call(monkeypatch, store, run_id, argv, xcom)
    assert rc == 0 and again["shards"] == result["shards"]
    assert [run.read_bytes(f) for f in files] == first
    # past the cap, the shard size grows and the log says so
    capsys.readouterr()
    rc, capped = call(monkeypatch, store, run_id, [*argv[:-2], "--shard-size", "1", "--max-shards", "4"], xcom)
    assert rc == 0 and capped["n_shards"] == 4 and capped["shard_size"] == 4 and capped["shard_size_grown"]
    assert "WARNING argus.plan_shards: shard size grown from 1 to 4 frames" in capsys.readouterr().err


def test_a_selection_without_clear_frames_fails_naming_the_splits_and_counts(source, tmp_path, monkeypatch):
    store, xcom = tmp_path / "store", tmp_path / "xcom" / "return.json"
    run_id, run = new_run(source, store)
    manifest = run.read_dataframe("validate/accepted_manifest.parquet")
    # a revision whose train split holds only fog frames
    trimmed = manifest[~((manifest["condition"] == "clear") & (manifest["split"] == "train"))]
    raw = trimmed.to_parquet(index=False)
    digest = hashlib.sha256(raw).hexdigest()
    run.write_bytes("validate/accepted_manifest.parquet", raw)
    run.write_json("validate/result.json", {**run.read_json("validate/result.json"),
                                            "accepted_manifest_sha256": digest})
    rc, _ = call(monkeypatch, store, run_id, ["plan-shards", "--conditions", "fog", "--splits", "train"], xcom)
    assert rc == EXIT_PERMANENT
    failure = run.read_json("plan-shards/failure.json")
    assert "no clear frames in splits train of source revision test-rev" in failure["message"]
    assert "'train': 0, 'val': 2, 'test': 6" in failure["message"]
    assert not run.exists("plan/shards.json")
    rc, _ = call(monkeypatch, store, run_id, ["plan-shards", "--conditions", "fog,hail"], xcom)
    assert rc == EXIT_PERMANENT and "unknown condition 'hail'" in run.read_json("plan-shards/failure.json")["message"]
