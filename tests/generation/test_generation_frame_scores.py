"""The generation QA's per-frame scores: keyed by source frame, run, model and judge; the QA's verdict; the flywheel."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from argus_tasks.models import frame_scores as FS

from .output_support import Steps, generation_run, session_base

CHECK = ["check-outputs", "--conditions", "fog,rain", "--min-fidelity", "0.3", "--workers", "1",
         "--max-bad-fraction", "0.3"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return session_base(str(tmp_path_factory.getbasetemp() / "generation-base"))


@pytest.fixture
def steps(monkeypatch, tmp_path):
    return Steps(monkeypatch, tmp_path / "store", tmp_path / "xcom" / "return.json")


def test_check_outputs_scores_every_frame_and_the_scores_feed_the_hard_set(base, steps):
    run_id, run = generation_run(base, steps.store, tamper={("fog", 2): "noise", ("rain", 5): "truncate"})
    rc, result = steps(CHECK, run_id)
    assert rc == 0, steps.failure(run_id, "check-outputs")
    table = pd.read_parquet(run.cache / "check-outputs" / FS.SCORES_FILE)
    assert list(table.columns) == list(FS.SCHEMA) and len(table) == 16
    assert {c: str(t) for c, t in table.dtypes.items()} == FS.SCHEMA
    assert (table["source"] == "generation-qa").all() and (table["run_id"] == run_id).all()
    assert set(zip(table["condition"], table["model_key"], strict=True)) == {("fog", "argus-weather-fog/3"),
                                                                ("rain", "argus-weather-rain/5")}
    assert (table["judge_version"] == result["judge"]["version"]).all()
    assert table["frame_id"].str.startswith("clear-test-").all(), "keyed by the source frame"
    # the same fidelity as the QA's own table, and its verdict
    qa = pd.read_parquet(run.cache / "check-outputs" / "scores.parquet")
    np.testing.assert_allclose(table["label_fidelity"], qa["label_fidelity"])
    assert table["flagged"].tolist() == qa["flagged"].tolist()
    fog = table[table["condition"] == "fog"].set_index("frame_id")
    noisy = "clear-test-b00-00002"
    assert fog.loc[noisy, "label_fidelity"] < fog.drop(index=noisy)["label_fidelity"].min()
    assert fog.loc[noisy, "flagged"] and not fog.loc[noisy, "fidelity_ok"]
    cut = table[(table["condition"] == "rain") & (table["frame_id"] == "clear-test-b00-00005")].iloc[0]
    assert not cut["finite"] and np.isnan(cut["label_fidelity"]) and cut["flagged"]
    assert table["realism_ratio"].isna().all(), "the source revision has no real fog/rain frames to compare with"
    assert result["frame_scores"].endswith("check-outputs/frame_scores.parquet")

    index = sorted(p.name for p in (steps.store / "frame-scores").rglob("*.json"))
    assert index == [f"generation_tests__{run_id}__generation-qa.json"] * 2
    rc, hard = steps(["hard-frames", "--condition", "fog", "--fraction", "0.2"], run_id)
    assert rc == 0, steps.failure(run_id, "hard-frames/fog")
    doc = json.loads((run.cache / "hard-frames" / "fog" / "hard_set.json").read_text())
    assert doc["frames"][0]["frame_id"] == noisy, "the destroyed frame is the hardest of the generation run"
    assert hard["evaluations"] == [f"generation_tests/{run_id}/generation-qa"]
