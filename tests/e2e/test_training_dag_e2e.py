"""The whole training DAG, end to end through Airflow, on tiny data, with the local runtime.

Runs ``scripts/init_local.sh`` and ``airflow dags test`` in a fresh Argus home exactly like
``make demo`` does, then checks the state left in the run folder and in MLflow: runs, registered
versions, aliases and lineage tags.

The run has two conditions and one of them cannot train: the dataset holds only 4 rain training
frames, below the run's ``min_train_frames``. Each condition runs in its own instance of the
per-condition task group, so fog is still trained, evaluated and promoted; the report names the
failed condition and the run ends failed.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAG_ID = "argus_weather_training"


def _client(home: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")


def _run_dir(home: Path) -> Path:
    runs = list((home / "store" / "runs" / DAG_ID).iterdir())
    assert len(runs) == 1
    return runs[0]


def test_every_step_of_the_good_condition_ran_and_left_its_result(demo_run):
    home, _, log = demo_run
    run = _run_dir(home)
    for where in ("pull", "validate", "segmenter", "train/fog", "evaluate/fog", "hard-frames/fog", "promote/fog",
                  "report"):
        assert (run / where / "result.json").exists(), f"{where} left no result"
        assert not (run / where / "failure.json").exists()
    assert "running" in log and "argus-task" in log  # the local runtime ran the container command


def test_the_failed_condition_stops_alone_and_the_run_ends_failed(demo_run):
    home, _, log = demo_run
    run = _run_dir(home)
    failure = json.loads((run / "train" / "rain" / "failure.json").read_text())
    assert "too few frames to train rain: 4" in failure["message"], failure
    for where in ("evaluate/rain", "promote/rain"):
        assert not (run / where).exists(), f"{where} ran after train[rain] failed"
    report = (run / "report" / "report.md").read_text()
    assert "| fog | succeeded | succeeded | PROMOTED |" in report, report
    assert "| rain | failed | not run | no decision (not run) |" in report, report
    assert "**rain**: train/rain failed: too few frames to train rain" in report, report
    assert "- **fog**: hard set `" in report and "hard-frames/fog/gallery/index.html" in report, report
    assert "- **rain**: not run" in report, report
    finished = [line for line in log.splitlines() if "DagRun Finished" in line]
    assert finished and "state=failed" in finished[-1], finished


def test_the_challenger_is_registered_with_lineage(demo_run):
    home, _, _ = demo_run
    client = _client(home)
    # the rollback e2e (run earlier in the session) registers copies of fog under other run ids
    challenger = client.get_model_version_by_alias("argus-weather-fog", "challenger")
    versions = [v for v in client.search_model_versions("name='argus-weather-fog'")
                if v.tags.get("argus.run_id") == challenger.tags.get("argus.run_id")]
    assert len(versions) == 1, "one run registers exactly one version"
    version = versions[0]
    assert client.get_model_version_by_alias("argus-weather-fog", "challenger").version == version.version
    tags = version.tags
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", tags["argus.git_commit"]), tags["argus.git_commit"]
    assert tags["argus.git_commit"] == head, "lineage names another commit than the checkout that ran"
    assert tags["argus.image"] == "local-venv"
    assert tags["argus.dag_id"] == DAG_ID
    assert tags["argus.run_id"] == _run_dir(home).name
    assert tags["argus.try_number"] == "1"
    assert tags["argus.map_index"] == "0", "fog is the first condition of the mapped task group"
    assert re.fullmatch(r"[0-9a-f]{64}", tags["argus.dataset_fingerprint"]), tags
    pulled = json.loads((_run_dir(home) / "pull" / "result.json").read_text())
    assert tags["argus.dataset_fingerprint"] == pulled["fingerprint"]
    assert any("validation" in k for k in tags), tags


def test_the_segmenter_is_registered_once_as_champion(demo_run):
    home, _, _ = demo_run
    client = _client(home)
    assert client.get_model_version_by_alias("argus-downstream-segmenter", "champion")


def test_the_first_fog_model_clears_the_floors_and_becomes_champion(demo_run):
    """Seeded training on seeded data: 30 steps already beat the identity floor by a wide margin."""
    home, _, _ = demo_run
    decision = json.loads((_run_dir(home) / "promote" / "fog" / "result.json").read_text())
    assert decision["promoted"] is True, decision["reasons"]
    assert decision["challenger_version"] == "1" and decision["champion_version"] == "1"
    assert decision["previous_champion"] is None
    assert any("beats identity" in r for r in decision["reasons"]), decision["reasons"]
    client = _client(home)
    champion = client.get_model_version_by_alias("argus-weather-fog", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["argus.decision"] == "promoted"
    assert not client.search_model_versions("name='argus-weather-rain'"), "a rain model was registered"


def test_mlflow_runs_carry_the_run_conf(demo_run):
    home, _, _ = demo_run
    client = _client(home)
    exp = client.get_experiment_by_name(f"argus/{DAG_ID}")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`argus.step` = 'train'")
    assert len(runs) == 1
    params = runs[0].data.params
    assert any(v == "30" for k, v in params.items() if "step" in k), params


def test_only_the_real_champion_move_emits_an_asset_event(demo_run):
    """fog's alias moved: one event on argus://champion/fog from promote[fog]; rain never promoted: none."""
    import sqlite3

    home, _, _ = demo_run
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    rows = db.execute("SELECT a.uri, e.source_task_id, e.source_map_index, e.extra FROM asset_event e "
                      "JOIN asset a ON a.id = e.asset_id WHERE e.source_dag_id = ?", (DAG_ID,)).fetchall()
    assert [(uri, task, index) for uri, task, index, _ in rows] == [("argus://champion/fog", "promote", 0)], rows
    extra = json.loads(rows[0][3])
    assert (extra["champion_version"], extra["previous_champion"]) == ("1", None), extra


def test_the_terminal_showed_each_step_start_and_end_with_its_outcome_and_training_progress(demo_run):
    """scripts/dag_run.sh (what make demo runs) printed the run live: read from Airflow's own database."""
    import sqlite3

    home, _, _ = demo_run
    shown = (home / "progress.txt").read_text().splitlines()
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        tis = db.execute("select task_id, map_index, state from task_instance where dag_id = ? and run_id = "
                         "(select run_id from dag_run where dag_id = ? order by id limit 1)",
                         (DAG_ID, DAG_ID)).fetchall()  # the demo run (other e2e tests run more DAGs here)
    ended = {}
    for line in shown:
        m = re.match(r"\[\d+:\d\d\]  ([=x]) (\S+)\s+[\d.]+s  (.+?)(?:   ~.*)?$", line)
        if m:
            ended[m[2]] = m[3]
    outcome = {"success": "ok", "failed": "FAILED", "upstream_failed": "upstream failed", "skipped": "skipped"}
    conditions = ("fog", "rain")  # the run's conf: map index 0 is fog, 1 is rain
    expected = {(f"{t}[{conditions[i]}]" if i >= 0 else t): outcome[s] for t, i, s in tis}
    assert ended == expected, shown
    started = [i for i, line in enumerate(shown) if re.search(r"> train\[fog\] +started", line)]
    done = [i for i, line in enumerate(shown) if re.search(r"= train\[fog\] ", line)]
    progress = [i for i, line in enumerate(shown) if re.search(r"train\[fog\]: step \d+/30, [\d.]+/s, eta", line)]
    assert started and done and progress and started[0] < progress[0] < done[0], shown
