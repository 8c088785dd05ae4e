"""The product, end to end through Airflow: the training run's fog champion makes a labelled fog dataset.

``argus_weather_generation`` runs in the training test's home (its fog champion, v1): resolve, export with
parity, shards, generate, the GX output gate, publish as v1 of an output dataset, report. A second run with
the same inputs publishes nothing new; a condition without a champion publishes nothing at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from .conftest import run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAG_ID = "argus_weather_generation"
CONF = {"conditions": ["fog"], "splits": ["test"], "output_dataset": "e2e-fog", "shard_size": 8,
        "min_frames_per_group": 2}


@pytest.fixture(scope="module")
def generated(demo_run):
    home, env, _ = demo_run
    first = run_dag(home, env, DAG_ID, CONF)
    second = run_dag(home, env, DAG_ID, CONF)
    runs = sorted((home / "store" / "runs" / DAG_ID).iterdir(), key=lambda p: p.stat().st_mtime)
    return home, env, runs, first, second


def _result(run: Path, step: str) -> dict:
    return json.loads((run / step / "result.json").read_text())


def test_the_champion_translates_every_clear_test_frame_into_a_published_revision(generated):
    home, _, runs, first, _ = generated
    assert "state=success" in [line for line in first.splitlines() if "DagRun Finished" in line][-1]
    run = runs[0]
    resolved = _result(run, "resolve")["models"]["fog"]
    assert resolved["version"] == "1", "the fog champion of the training run"
    source = pd.read_parquet(run / "data" / "manifest.parquet")
    clear_test = source[(source["condition"] == "clear") & (source["split"] == "test")]
    plan = _result(run, "plan-shards")
    assert plan["n_frames"] == len(clear_test) and plan["n_shards"] == -(-len(clear_test) // 8)
    published = _result(run, "publish")
    assert (published["revision"], published["n_frames"], published["already_published"]) == ("v1", len(clear_test),
                                                                                             False)
    assert _result(run, "check-outputs")["outcome"] == "passed"
    assert _result(run, "export/fog")["parity"]["passed"] is True


def test_each_published_frame_keeps_its_source_label_and_lineage(generated):
    home, _, runs, _, _ = generated
    run = runs[0]
    registry = home / "outputs" / "e2e-fog"
    out = subprocess_dvc_get(registry, run.parent.parent.parent / "e2e-fog-v1")
    manifest = pd.read_parquet(out / "manifest.parquet")
    source = pd.read_parquet(run / "data" / "manifest.parquet").set_index("frame_id")
    assert set(manifest["condition"]) == {"fog"} and set(manifest["model_version"].astype(str)) == {"1"}
    for row in manifest.itertuples():
        src = source.loc[row.source_frame_id]
        label = (out / row.label_path).read_bytes()
        assert hashlib.sha256(label).hexdigest() == src["label_sha256"], row.frame_id
        assert (out / row.frame_path).read_bytes() != (run / "data" / src["frame_path"]).read_bytes()
    assert set(manifest["source_revision"]) == {_result(run, "pull")["revision"]}


def test_a_rerun_with_the_same_inputs_publishes_nothing_new(generated):
    _, _, runs, _, second = generated
    assert "state=success" in [line for line in second.splitlines() if "DagRun Finished" in line][-1]
    again = _result(runs[1], "publish")
    assert again["already_published"] is True and again["revision"] == "v1"


def test_a_condition_without_a_champion_fails_and_publishes_nothing(generated):
    home, env, _, _, _ = generated
    log = run_dag(home, env, DAG_ID, {**CONF, "conditions": ["rain"], "output_dataset": "e2e-rain"})
    assert "state=failed" in [line for line in log.splitlines() if "DagRun Finished" in line][-1]
    run = max((home / "store" / "runs" / DAG_ID).iterdir(), key=lambda p: p.stat().st_mtime)
    failure = json.loads((run / "resolve" / "failure.json").read_text())
    assert "rain" in failure["message"] and "champion" in failure["message"], failure
    assert not (home / "outputs" / "e2e-rain").exists()


def subprocess_dvc_get(registry: Path, dest: Path) -> Path:
    """The published revision as a perception team gets it (the ``how_to_pull`` command)."""
    import subprocess

    done = subprocess.run(["dvc", "get", str(registry), "dataset", "--rev", "v1", "-o", str(dest)],
                          capture_output=True, text=True, timeout=300, cwd=registry)
    assert done.returncode == 0, done.stdout + done.stderr
    return dest


def test_the_html_report_shows_the_published_revision_its_qa_and_inlined_samples(generated):
    _, _, runs, _, _ = generated
    page = (runs[0] / "generation-report" / "index.html").read_text()
    published = _result(runs[0], "publish")
    qa = _result(runs[0], "check-outputs")
    assert "<h2>Published</h2>" in page and f"<b>{published['revision']}</b>" in page
    assert f"outcome: <b>{qa['outcome']}</b>: {qa['accepted']} accepted" in page
    assert page.count("src='data:image/png;base64,") == 2, "the fog grid and the lowest-fidelity sheet"
    assert "](grid_fog.png)" not in page, "an image left as Markdown"
