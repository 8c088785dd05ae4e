"""``argus-task generation-report``: counts, throughput, QA, publish, pictures; and what failed, whatever failed."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from .output_support import Steps, generation_run, session_base, translate

CHECK = ["check-outputs", "--conditions", "fog,rain", "--min-fidelity", "0.3", "--workers", "1"]
REPORT = ["generation-report", "--conditions", "fog,rain", "--output-dataset", "weather-demo"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return session_base(str(tmp_path_factory.getbasetemp() / "generation-base"))


@pytest.fixture
def steps(monkeypatch, tmp_path):
    monkeypatch.setenv("ARGUS_OUTPUT_REGISTRY_ROOT", str(tmp_path / "outputs"))
    return Steps(monkeypatch, tmp_path / "store", tmp_path / "xcom" / "return.json")


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))


def test_report_of_a_published_run_with_grids_and_the_lowest_fidelity_frames(base, steps):
    run_id, run = generation_run(base, steps.store, tamper={("fog", 2): "truncate"})
    assert steps([*CHECK, "--max-bad-fraction", "0.2"], run_id)[0] == 0
    assert steps(["publish", "--output-dataset", "weather-demo"], run_id)[0] == 0
    rc, result = steps(REPORT, run_id)
    assert rc == 0 and result["failed_steps"] == [] and result["qa_outcome"] == "flagged"
    assert result["published"]["revision"] == "v1" and result["published"]["n_frames"] == 15
    assert result["throughput"]["total"] == {"shards": 2, "frames": 16, "generated": 16, "reused": 0, "seconds": 1.0,
                                             "frames_per_second": 16.0}
    report = (run.cache / "generation-report" / "report.md").read_text()
    assert "- outcome: **succeeded**" in report and "16.00 frames/s" in report
    assert "| fog | 8 | 1 | 7 | 12.50% |" in report and "`weather-demo` **v1**" in report
    assert "dvc get " in report and "![fog](grid_fog.png)" in report

    # the fog grid: 6 rows of source | generated at scale 2, the first row the first accepted fog frame
    grid = _png(run.cache / "generation-report" / "grid_fog.png")
    assert grid.shape == ((6 * 66 + 2) * 2, (2 * 66 + 2) * 2, 3)
    source = np.asarray(Image.open(base[0] / "frames" / "clear" / "test" / "clear-test-b00-00000.png").convert("RGB"))
    cell = lambda col: grid[4:132, 4 + col * 132:132 + col * 132]  # noqa: E731
    assert np.array_equal(cell(0), source.repeat(2, 0).repeat(2, 1))
    assert np.array_equal(cell(1), translate(source, "fog").repeat(2, 0).repeat(2, 1))

    # the contact sheet: the 8 lowest-fidelity frames that decode, lowest first
    scores = pd.read_parquet(run.cache / "check-outputs" / "scores.parquet")
    lowest = scores.dropna(subset=["label_fidelity"]).sort_values("label_fidelity").head(8)
    assert [w["frame_id"] for w in result["lowest_fidelity"]] == lowest["frame_id"].tolist()
    sheet = _png(run.cache / "generation-report" / "lowest_fidelity.png")
    assert sheet.shape[0] == (8 * 66 + 2) * 2
    assert f"| {lowest['frame_id'].iloc[0]} | {lowest['condition'].iloc[0]} | {lowest['label_fidelity'].iloc[0]:.3f} |" \
        in report


def test_a_failed_check_is_reported_with_its_cause_and_nothing_published(base, steps):
    run_id, run = generation_run(base, steps.store, conditions=("fog",),
                                 tamper={("fog", 1): "blank", ("fog", 6): "blank"})
    assert steps(["check-outputs", "--conditions", "fog", "--workers", "1"], run_id)[0] == 10
    assert steps(["publish", "--output-dataset", "weather-demo"], run_id)[0] == 10
    rc, result = steps(["generation-report", "--conditions", "fog"], run_id)
    assert rc == 0
    assert result["failed_steps"] == ["check-outputs", "publish"] and result["qa_outcome"] == "failed"
    assert result["first_failure"] == "check-outputs failed: the generated outputs failed their checks (8 frames):"
    report = (run.cache / "generation-report" / "report.md").read_text()
    assert "- outcome: **failed**; failed: check-outputs, publish" in report
    assert "fog: 2 of 8 frames bad (25.00%), above max_bad_fraction 5.00%" in report
    assert "- nothing published: nothing published: check-outputs did not pass" in report
    # the blank frames are the least faithful: first on the contact sheet
    assert {w["frame_id"] for w in result["lowest_fidelity"][:2]} == {"fog-clear-test-b00-00001",
                                                                       "fog-clear-test-b00-00006"}
    assert (run.cache / "generation-report" / "lowest_fidelity.png").exists()


def test_a_partial_generation_is_reported_without_any_check(base, steps):
    run_id, run = generation_run(base, steps.store, conditions=("rain",), shards_per_condition=2)
    (run.cache / "generate" / "shards" / "rain-0001.json").unlink()
    run.write_json("generate/rain-0001/failure.json", {"message": "CUDA error: out of memory\nmore", "exit_code": 1})
    rc, result = steps(["generation-report", "--conditions", "rain"], run_id)
    assert rc == 0 and result["failed_steps"] == ["generate/rain-0001"]
    report = (run.cache / "generation-report" / "report.md").read_text()
    assert "| generate/rain-0001 | failed | CUDA error: out of memory |" in report
    assert "- shards: 1 finished of 2 planned; problems: shard rain-0001 has no success marker" in report
    assert "- check-outputs did not run" in report and "publish did not run" in report
    assert result["throughput"]["total"]["frames"] == 4
    assert (run.cache / "generation-report" / "grid_rain.png").exists()
