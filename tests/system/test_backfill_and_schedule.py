"""The schedule and CLI backfills on live Airflow services, with faults injected while they run.

One scenario, shared by the tests below (runs cost minutes on 2 cores, so they are not repeated):

1. the DAG was unpaused by the stack fixture with ``ARGUS_SCHEDULE`` firing daily at ``tick``, a few
   minutes ahead: the scheduler creates the run of the latest complete interval at once (S1) and the
   next one at the tick (S2);
2. while S1 runs, the S3 endpoint of the DVC remote is taken down and ``airflow backfill create`` is
   run over the three intervals before S1's, with ``--dag-run-conf`` (fault 3: the first pulls of
   those intervals fail and are retried; fault 5: scheduled and backfill runs at once);
3. when the first backfill run's ``train`` has opened its MLflow run, the MLflow server is killed and
   stays down until a retry of that step has started and failed (fault 2), then it is restarted;
4. everything must end in success; the tests then read the evidence.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from .evidence import (
    alias_version,
    mlflow_runs,
    model_files_complete,
    parse_time,
    read_json,
    step_result,
    task_log,
    versions_of_run,
)
from .procs import wait_until
from .scenario import BACKFILL_CONF, BACKFILL_INTERVALS, CONDITION, RUN_TIMEOUT_S, iso, runs_by_interval
from .stack import DAG_ID

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

MODEL = f"argus-weather-{CONDITION}"


@pytest.fixture(scope="module")
def scenario(schedule_scenario):
    return schedule_scenario


# ---- the schedule ---------------------------------------------------------------------------------
def test_the_scheduler_creates_runs_at_the_right_logical_dates_and_intervals(scenario, api, stack):
    expected = {5} | ({4} if stack.unpaused_at < stack.schedule.tick else set())
    assert set(scenario.scheduled) == expected, (
        f"scheduled runs for intervals {sorted(scenario.scheduled)}, expected {sorted(expected)} "
        f"(unpaused {stack.unpaused_at}, tick {stack.schedule.tick})")
    for k, run_id in scenario.scheduled.items():
        run = api.run(DAG_ID, run_id)
        start, end = stack.schedule.interval(k)
        assert parse_time(run["logical_date"]) == start
        assert (parse_time(run["data_interval_start"]), parse_time(run["data_interval_end"])) == (start, end)
        assert parse_time(run["run_after"]) == end, "a run starts when its interval is over"
        assert parse_time(run["queued_at"]) >= min(end, stack.unpaused_at), "created no earlier than due"
    if 5 in scenario.scheduled and 4 in scenario.scheduled:
        tick_run = api.run(DAG_ID, scenario.scheduled[5])
        created = parse_time(tick_run["queued_at"])
        assert created >= stack.schedule.tick, "the tick's run was created before the tick"
        assert (created - stack.schedule.tick).total_seconds() < 120, f"created late: {created}"


def test_all_runs_succeed(scenario, api):
    states = {run_id: api.run(DAG_ID, run_id)["state"] for run_id in scenario.all_runs}
    assert set(states.values()) == {"success"}, {r: (s, api.states(DAG_ID, r)) for r, s in states.items()
                                                 if s != "success"}
    assert len(scenario.backfill) == 3


# ---- the backfill ---------------------------------------------------------------------------------
def test_each_run_pulls_the_training_frames_of_its_window_and_the_whole_evaluation_set(scenario, stack):
    """Scheduled runs train on every frame up to the end of their interval (data_window=cumulative, the
    default); the backfill, with data_window=interval, on its interval's frames only. Every run takes
    the revision's whole val+test set, so champion and challenger are judged on the same frames."""
    registry = pd.read_parquet(stack.registry / "dataset" / "manifest.parquet")
    registry["capture_time"] = pd.to_datetime(registry["capture_time"], utc=True)
    evaluation = set(registry.loc[registry["split"].isin(["val", "test"]), "frame_id"])
    backfill_runs = set(scenario.backfill.values())
    for run_id, k in scenario.all_runs.items():
        start, end = stack.schedule.interval(k)
        window = "interval" if run_id in backfill_runs else "cumulative"
        pulled = pd.read_parquet(stack.run_dir(run_id) / "data" / "manifest.parquet")
        captured = registry["capture_time"] < end
        if window == "interval":
            captured &= registry["capture_time"] >= start
        training = set(registry.loc[captured & (registry["split"] == "train"), "frame_id"])
        assert training, f"{run_id}: no training frames in its {window} window"
        assert set(pulled.loc[pulled["split"] == "train", "frame_id"]) == training, (
            f"{run_id} did not pull exactly the training frames of its {window} window up to {end}")
        assert set(pulled.loc[pulled["split"] != "train", "frame_id"]) == evaluation, (
            f"{run_id} did not pull the revision's whole val+test set")
        pull = step_result(stack, run_id, "pull")
        assert pull["window"] == window
        assert pull["n_frames"] == len(pulled) and pull["n_missing_files"] == 0 and pull["n_hash_mismatches"] == 0
        assert pull["n_eval_frames"] == len(evaluation)
        assert parse_time(pull["interval"]["start"]) == start and parse_time(pull["interval"]["end"]) == end
        on_disk = {p.stem for p in (stack.run_dir(run_id) / "data" / "frames").rglob("*.png")}
        assert on_disk == set(pulled["frame_id"]), f"{run_id}'s data folder holds other frames than its manifest"
    hashes = {step_result(stack, r, "pull")["eval_set_sha256"] for r in scenario.all_runs}
    assert len(hashes) == 1, "runs of one revision were judged on different evaluation frames"


def test_the_backfill_conf_reaches_the_steps_in_mlflow(scenario, stack):
    for run_id in scenario.backfill.values():
        (train,) = mlflow_runs(stack, run_id, "train", CONDITION)
        assert train.data.params["cfg.steps"] == str(BACKFILL_CONF["train_steps"])
        (promote,) = mlflow_runs(stack, run_id, "promote", CONDITION)
        assert float(promote.data.params["kid_tolerance"]) == BACKFILL_CONF["kid_tolerance"]
    for run_id in scenario.scheduled.values():  # the scheduled runs ran with the deployment's defaults
        (train,) = mlflow_runs(stack, run_id, "train", CONDITION)
        assert train.data.params["cfg.steps"] != str(BACKFILL_CONF["train_steps"])


def test_no_run_shares_or_overwrites_the_files_of_another(scenario, stack, api):
    seen: dict[tuple[int, int], str] = {}
    for run_id in scenario.all_runs:
        folder = stack.run_dir(run_id)
        ended = parse_time(api.run(DAG_ID, run_id)["end_date"]).timestamp()
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files, run_id
        for p in files:
            st = p.stat()
            assert st.st_nlink == 1, f"{p} is hard-linked: shared with another run or the cache"
            key = (st.st_dev, st.st_ino)
            assert key not in seen, f"{p} is the same file as {seen[key]}"
            seen[key] = str(p)
            assert st.st_mtime <= ended + 2, f"{p} was written after its run ended"
        train = step_result(stack, run_id, f"train/{CONDITION}")
        (mlrun,) = mlflow_runs(stack, run_id, "train", CONDITION)
        assert train["mlflow_run_id"] == mlrun.info.run_id
    versions = [step_result(stack, r, f"train/{CONDITION}")["model_version"] for r in scenario.all_runs]
    assert len(set(versions)) == len(versions), f"two runs share a registered version: {versions}"


# ---- fault 5: scheduled and backfill runs at once -------------------------------------------------
def test_fault5_scheduled_and_backfill_runs_overlapped(scenario, api):
    spans = {r: (parse_time(api.run(DAG_ID, r)["start_date"]), parse_time(api.run(DAG_ID, r)["end_date"]))
             for r in scenario.all_runs}
    s1 = min(scenario.scheduled.items())[1]
    s1_start, s1_end = spans[s1]
    assert s1_start < scenario.backfill_created_at < s1_end, "the backfill did not start while S1 ran"
    overlapping = [r for r in scenario.backfill.values() if spans[r][0] < s1_end]
    assert overlapping, "no backfill run ran at the same time as the scheduled run"


def test_fault5_every_runs_registry_version_is_intact(scenario, stack):
    for run_id in scenario.all_runs:
        train = step_result(stack, run_id, f"train/{CONDITION}")
        versions = versions_of_run(stack, MODEL, run_id)
        assert [v.version for v in versions] == [train["model_version"]], f"{run_id}: {versions}"
        assert versions[0].tags.get("argus.content_hash") == train["content_hash"]
        assert model_files_complete(stack, MODEL, train["model_version"]), f"{run_id}'s model is incomplete"


def test_fault5_promotions_were_serialised_and_one_champion_is_left(scenario, stack, api):
    promotes = []
    for run_id in scenario.all_runs:
        (ti,) = [t for t in api.task_instances(DAG_ID, run_id) if t["task_id"] == "promote"]
        decision = read_json(stack.run_dir(run_id) / "promote" / CONDITION / "decision.json")["result"]
        promotes.append((parse_time(ti["start_date"]), parse_time(ti["end_date"]), run_id, decision, ti["pool"]))
    promotes.sort(key=lambda p: p[0])
    assert {p[4] for p in promotes} == {"argus_promotion"}
    for (s1, e1, r1, *_), (s2, e2, r2, *_) in zip(promotes, promotes[1:], strict=False):
        assert e1 <= s2, f"promote of {r1} ({s1}..{e1}) overlapped promote of {r2} ({s2}..{e2})"
    # replaying the decisions in the order they ran gives the champion the registry holds: no lost update
    champion = None
    for *_, decision, _pool in promotes:
        assert decision["previous_champion"] == champion, (
            f"{decision['challenger_version']} was decided against v{decision['previous_champion']}, but the "
            f"champion then was v{champion}")
        champion = decision["champion_version"]
    assert champion is not None, "no model was ever promoted: the scenario proves nothing about champions"
    assert alias_version(stack, MODEL, "champion") == champion
    aliases = stack.mlflow_client().get_registered_model(MODEL).aliases  # one version per alias, by design
    assert aliases.get("champion") == champion, aliases


# ---- fault 3: the S3 endpoint down during pull ----------------------------------------------------
def test_fault3_pull_retried_while_s3_was_down_and_no_partial_dataset_was_used(scenario, api, stack):
    retried = []
    for run_id in scenario.backfill.values():
        tries = api.tries(DAG_ID, run_id, "pull")
        first = task_log(stack, run_id, "pull", 1)
        if len(tries) > 1 and "s3://argus-dvc" in first:
            retried.append(run_id)
            assert tries[-1]["state"] == "success"
            assert "unreachable" in first or "could not fetch" in first, first[-2000:]
            assert "will be retried" in first, "the message does not say that the step is retried"
    assert retried, "no pull was retried after the S3 endpoint went down"
    for run_id in retried:
        # validate judged exactly what the successful pull wrote: the whole interval, hashes verified
        pull = step_result(stack, run_id, "pull")
        validated = step_result(stack, run_id, "validate")
        assert validated.get("dataset_fingerprint", pull["fingerprint"]) == pull["fingerprint"]
        accepted = pd.read_parquet(stack.run_dir(run_id) / "validate" / "accepted_manifest.parquet")
        assert len(accepted) == pull["n_frames"]
        assert not [p for p in (stack.run_dir(run_id) / "data").rglob("*") if p.name.endswith(".tmp")]


# ---- fault 2: MLflow down when a step starts and in the middle of one ------------------------------
def test_fault2_mlflow_outage_names_the_uri_retries_and_leaves_one_complete_version(scenario, api, stack):
    victim = scenario.mlflow_victim
    tries = api.tries(DAG_ID, victim, "train", 0)
    assert len(tries) >= 3 and tries[-1]["state"] == "success", [(t["try_number"], t["state"]) for t in tries]
    logs = {t["try_number"]: task_log(stack, victim, "train", t["try_number"], 0) for t in tries}
    assert any(stack.mlflow_uri in text and "unreachable" in text for text in logs.values()), (
        "no try's log names the unreachable tracking URI")
    # exponential backoff: after failed try n, Airflow waits at least retry_delay * 2**(n-1)
    delay = int(stack.env["ARGUS_RETRY_DELAY_S"])
    for a, b in zip(tries, tries[1:], strict=False):
        waited = (parse_time(b["start_date"]) - parse_time(a["end_date"])).total_seconds()
        assert waited >= delay * 2 ** (a["try_number"] - 1) - 1, f"try {b['try_number']} came after {waited:.1f}s"
    versions = versions_of_run(stack, MODEL, victim)
    assert len(versions) == 1, f"half-registered or duplicate versions: {versions}"
    for alias in ("challenger", "champion"):
        version = alias_version(stack, MODEL, alias)
        if version is not None:
            assert model_files_complete(stack, MODEL, version), f"@{alias} points at an incomplete model"


# ---- reprocess ------------------------------------------------------------------------------------
def test_a_second_backfill_with_reprocess_failed_reruns_only_what_failed(scenario, api, stack):
    target = scenario.backfill[BACKFILL_INTERVALS[1]]
    others = [r for k, r in scenario.backfill.items() if r != target]
    before = {r: api.run(DAG_ID, r)["end_date"] for r in others}
    # one backfill per DAG at a time: the scheduler marks the first one complete shortly after its last run
    wait_until(lambda: all(b["completed_at"] for b in api.backfills(DAG_ID)), 120, what="the first backfill to complete")
    api.set_run_state(DAG_ID, target, "failed")  # what "Mark run as failed" in the UI does
    first, last = (stack.schedule.interval(k)[0] for k in (BACKFILL_INTERVALS[0], BACKFILL_INTERVALS[-1]))
    stack.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", iso(first), "--to-date", iso(last),
                  "--dag-run-conf", json.dumps(BACKFILL_CONF), "--reprocess-behavior", "failed")
    wait_until(lambda: api.run(DAG_ID, target)["state"] != "failed", 120, what=f"{target} to be re-queued")
    run = api.wait_run(DAG_ID, target, RUN_TIMEOUT_S)
    assert run["state"] == "success", api.states(DAG_ID, target)
    backfill_ids = {r for r in runs_by_interval(api, "backfill").values()}
    assert backfill_ids == set(scenario.backfill.values()), "the second backfill created other runs"
    for r in others:
        assert api.run(DAG_ID, r)["end_date"] == before[r], f"{r} was rerun although it had succeeded"
