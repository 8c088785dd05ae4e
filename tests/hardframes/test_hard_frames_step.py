"""``argus-task hard-frames`` over synthetic score histories: the set, its version, idempotent reruns, lineage."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from argus_tasks import cli
from argus_tasks.contract import PermanentStepError, StepContext
from argus_tasks.hardframes import training, versioning
from argus_tasks.hardframes.storage import StoreFiles

from .support import FRAMES, fidelity_with_worst, write_evaluation

DAG = "argus_weather_training"
STEP = ["hard-frames", "--condition", "fog", "--last-n", "5", "--fraction", "0.2", "--min-hits", "2"]


@pytest.fixture
def run_step(monkeypatch, tmp_path):
    store, xcom = tmp_path / "store", tmp_path / "xcom" / "return.json"
    xcom.parent.mkdir(parents=True)

    def go(run_id: str, argv=STEP) -> dict:
        for k, v in {"ARGUS_STORE": str(store), "ARGUS_DAG_ID": DAG, "ARGUS_RUN_ID": run_id,
                     "ARGUS_XCOM_RETURN": str(xcom)}.items():
            monkeypatch.setenv(k, v)
        xcom.unlink(missing_ok=True)
        rc = cli.main(list(argv))
        where = store / "runs" / DAG / run_id / "hard-frames" / "fog"
        assert rc == 0, (where / "failure.json").read_text()
        return json.loads(xcom.read_text())

    go.store = store
    return go


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def three_evaluations(store):
    # the 4 worst of 20 (fraction 0.2) per evaluation: frames 0-2 every time, 3/4/5 once each
    for i, extra in enumerate((3, 4, 5)):
        worst = [FRAMES[0], FRAMES[1], FRAMES[2], FRAMES[extra]]
        write_evaluation(store, DAG, f"r{i}", f"2026-03-0{i + 1}T02:00:00Z", fidelity_with_worst(worst))


def test_the_set_is_the_repeatedly_hard_frames_grouped_versioned_and_drawn(run_step):
    three_evaluations(run_step.store)
    r = run_step("r2")
    assert r["n_evaluations"] == 3 and r["provisional"] is True and r["required_hits"] == 2
    assert r["n_frames"] == 3 and r["created"] and r["latest_moved"]
    assert r["evaluations"] == [f"{DAG}/r{i}/evaluate" for i in range(3)]
    doc = json.loads((run_step.store / "runs" / DAG / "r2" / "hard-frames" / "fog" / "hard_set.json").read_text())
    assert sorted(f["frame_id"] for f in doc["frames"]) == FRAMES[:3]
    assert doc["frames"][0]["frame_id"] == FRAMES[2], "hardest first: frame 2 has the lowest fidelity"
    assert all((f["hits"], f["seen"]) == (3, 3) for f in doc["frames"])
    # grouped: frames 0-5 are "building+sky | dim"; 3 of them hard (rate 0.5 against 0.15 overall)
    assert r["oversampled_groups"] == ["building+sky | dim"]
    top = r["top_groups"][0]
    assert (top["value"], top["n_hard"], top["n_scored"], top["lift"]) == ("building+sky | dim", 3, 6, 3.333333)
    # versioned by content: the file's name is its sha256, and latest points to it
    files = StoreFiles(str(run_step.store))
    raw = files.read_bytes(versioning.set_relpath("fog", r["hard_set"]))
    assert hashlib.sha256(raw).hexdigest() == r["hard_set"]
    assert files.read_json(versioning.latest_relpath("fog"))["sha"] == r["hard_set"]
    page = Path(r["gallery"]).read_text()
    assert all(f in page for f in FRAMES[:3]) and FRAMES[5] not in page
    assert "building+sky | dim" in page and "oversampled" in page


def test_same_history_same_version_and_a_rerun_writes_nothing_new(run_step):
    three_evaluations(run_step.store)
    first = run_step("r2")
    hardsets = run_step.store / "hardsets" / "fog"
    before = snapshot(hardsets)
    again = run_step("r2")
    elsewhere = run_step("other-run")  # another run, same history and settings
    assert again["hard_set"] == elsewhere["hard_set"] == first["hard_set"]
    assert not again["created"] and not again["latest_moved"] and again["latest"] == "already latest"
    assert snapshot(hardsets) == before, "a rerun rewrote or added a file under hardsets/"

    # a new evaluation: a new version, latest moves, the old version stays readable
    write_evaluation(run_step.store, DAG, "r3", "2026-03-04T02:00:00Z", fidelity_with_worst(FRAMES[5:9]))
    newer = run_step("r3")
    assert newer["hard_set"] != first["hard_set"] and newer["created"] and newer["latest_moved"]
    assert newer["previous_latest"] == first["hard_set"]
    assert set(before) < set(snapshot(hardsets))
    assert versioning.read(StoreFiles(str(run_step.store)), "fog", first["hard_set"])[0] == first["hard_set"]


def test_the_step_reads_its_settings_from_the_environment(run_step, monkeypatch):
    three_evaluations(run_step.store)
    monkeypatch.setenv("ARGUS_HARD_MIN_HITS", "1")
    monkeypatch.setenv("ARGUS_HARD_LAST_N", "1")
    r = run_step("r2", ["hard-frames", "--condition", "fog"])
    assert r["settings"]["min_hits"] == 1 and r["settings"]["last_n"] == 1
    assert r["evaluations"] == [f"{DAG}/r2/evaluate"] and r["n_frames"] == 4


def test_an_empty_history_gives_an_empty_set_and_a_gallery_that_says_so(run_step):
    r = run_step("r0")
    assert r["n_frames"] == 0 and r["n_evaluations"] == 0
    assert "No hard frames yet" in Path(r["gallery"]).read_text()


def test_training_finds_the_set_it_is_told_to_use(run_step, monkeypatch):
    three_evaluations(run_step.store)
    first = run_step("r2")
    ctx = StepContext.from_env({"ARGUS_STORE": str(run_step.store), "ARGUS_DAG_ID": DAG, "ARGUS_RUN_ID": "next"})
    assert training.resolve(ctx, "fog", 0.0, "latest") is None, "weight 0 reads nothing"
    assert training.resolve(ctx, "fog", 2.0, "none") is None
    assert training.resolve(ctx, "rain", 2.0, "latest") is None, "no set yet: uniform, no error"
    hard = training.resolve(ctx, "fog", 2.0, "latest")
    assert hard["sha"] == first["hard_set"] and hard["weight"] == 2.0
    assert training.config_entry(hard) == {"hard_frame_weight": 2.0, "hard_set": first["hard_set"]}
    assert training.config_entry(None) == {}, "without a set the reuse key is the one of a plain run"
    assert training.tags(hard, 2.0) == {"argus.hard_set": first["hard_set"], "argus.hard_frame_weight": "2"}
    with pytest.raises(PermanentStepError, match="does not exist"):
        training.resolve(ctx, "fog", 2.0, "0" * 64)
    # an altered set file is refused, never silently used
    path = run_step.store / versioning.set_relpath("fog", first["hard_set"])
    os.chmod(path, 0o600)
    path.write_text(path.read_text().replace(FRAMES[0], FRAMES[9]))
    with pytest.raises(PermanentStepError, match="altered"):
        training.resolve(ctx, "fog", 2.0, "latest")


def test_mlflow_records_the_set_as_a_tag_and_a_dataset_input(run_step):
    import mlflow

    three_evaluations(run_step.store)
    r = run_step("r2")
    run = mlflow.MlflowClient().get_run(r["mlflow_run_id"])
    assert run.data.tags["argus.hard_set"] == r["hard_set"]
    inputs = [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs]
    assert ("argus-hardset-fog", r["hard_set"][:16]) in inputs
    assert run.data.params["hard.last_n"] == "5" and run.data.params["hard.fraction"] == "0.2"
