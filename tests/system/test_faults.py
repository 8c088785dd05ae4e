"""Faults injected into runs on the live Airflow services, each with its expected outcome.

Faults 2, 3 and 5 are injected into the schedule and backfill scenario (test_backfill_and_schedule).
Here, three runs go through at once (the DAG allows two active runs; the third queues):

* F, the fault run (rain, 110 steps: checkpoints at 100 and at the end), whose ``train`` is hurt three times:
  1. its process is killed after the step-100 checkpoint (fault 1); the retry resumes from step 100;
  2. as that retry resumes, the Airflow worker (scheduler and LocalExecutor: SIGKILL to the whole
     process group) is stopped (fault 8); the scheduler is restarted, resets the orphaned task and
     runs it again;
  3. that try's file-size limit is cut to 256 KiB with ``prlimit``, so writing its final
     checkpoint fails with EFBIG, a real "disk full" class of error (fault 9); the next try
     resumes from the intact step-100 checkpoint and finishes;
* AA, a rerun of the night champion's interval with its conf: an A/A challenger (fault 7);
* BAD, a run of a corrupted dataset revision (fault 4), triggered once the worker of fault 8 is back.

Then ``promote`` of the champion's run is cleared and re-run (fault 6).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import time
from datetime import timedelta
from pathlib import Path

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
from .procs import environ_of, kill_pids, step_processes, wait_until
from .scenario import CONDITION
from .stack import DAG_ID, ArgusStack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

MODEL = f"argus-weather-{CONDITION}"
# the fault run trains another condition than the champion's, so that its promotion cannot disturb the A/A run
FAULT_CONDITION = "rain"
FAULT_MODEL = f"argus-weather-{FAULT_CONDITION}"
FAULT_CONF = {"conditions": [FAULT_CONDITION], "train_steps": 110}
FSIZE_LIMIT = 256 * 1024
CORRUPT_TAG = "corrupt-1"
RUN_TIMEOUT_S = float(os.environ.get("ARGUS_TEST_RUN_TIMEOUT_S", "1500"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checkpoint(stack: ArgusStack, run_id: str, step: int) -> Path | None:
    """The step's checkpoint, in the folder of train's reuse key (``checkpoints/<key>/``), once it exists."""
    folder = stack.run_dir(run_id) / "train" / FAULT_CONDITION / "checkpoints"
    found = sorted(folder.glob(f"*/step-{step:08d}.pt"))
    return found[0] if found else None


def _resumed_at(log_text: str) -> int | None:
    """The step a try resumed from, as its log says ("resuming from checkpoint at step N")."""
    found = re.findall(r"resuming from checkpoint at step (\d+)", log_text)
    return int(found[-1]) if found else None


def trigger_on_interval(api, stack: ArgusStack, k: int, conf: dict, offset_min: int, note: str) -> str:
    """A manual run over interval ``k`` of the schedule (its logical date a few minutes into it: unique)."""
    start, end = stack.schedule.interval(k)
    return api.trigger(DAG_ID, conf, logical_date=start + timedelta(minutes=offset_min), data_interval=(start, end),
                       note=note)["dag_run_id"]


def _train_procs(stack: ArgusStack, run_id: str, after_try: int = 0) -> list[int]:
    """The run's train step processes of a try later than ``after_try``."""
    pids = step_processes(stack.home, ARGUS_RUN_ID=run_id, ARGUS_TASK_ID="train")
    return [p for p in pids if int((environ_of(p) or {}).get("ARGUS_TRY_NUMBER", "0")) > after_try]


def _try_of(pids: list[int]) -> int:
    return max(int((environ_of(p) or {}).get("ARGUS_TRY_NUMBER", "0")) for p in pids)


def make_corrupt_revision(stack: ArgusStack, tag: str) -> dict:
    """A side commit of the registry, tagged ``tag``, with 10% of its frames truncated (main untouched)."""
    import pandas as pd

    reg = stack.registry
    manifest = pd.read_parquet(reg / "dataset" / "manifest.parquet")
    victims = manifest.sample(frac=0.10, random_state=3)["frame_path"].tolist()
    script = f"""
set -e
cd {reg}
git -c user.name=t -c user.email=t@localhost checkout -q -b {tag}-branch
python - <<'PY'
from pathlib import Path
for rel in {victims!r}:
    p = Path("dataset") / rel
    data = p.read_bytes()
    p.unlink()  # a new file: the DVC cache behind the old one stays intact
    p.write_bytes(data[: len(data) // 3])
PY
dvc add -q dataset
dvc push -q
git add dataset.dvc
git -c user.name=t -c user.email=t@localhost commit -q -m "corrupted copy for the fault tests"
git -c user.name=t -c user.email=t@localhost tag -a {tag} -m {tag}
git checkout -q main
dvc checkout -q --force dataset
"""
    stack.sh(script, timeout=300)
    return {"tag": tag, "truncated": victims}


@pytest.fixture(scope="module")
def champion_run(stack, api, schedule_scenario) -> dict:
    """The champion's run (from the schedule and backfill scenario), its interval and conf."""
    version = alias_version(stack, MODEL, "champion")
    assert version, "the schedule and backfill scenario left no champion"
    mv = stack.mlflow_client().get_model_version(MODEL, version)
    run_id = mv.tags["argus.run_id"]
    run = api.run(DAG_ID, run_id)
    return {"version": version, "run_id": run_id, "run": run, "content_hash": mv.tags.get("argus.content_hash")}


class FaultLog:
    def __init__(self):
        self.events: list[tuple[str, float, dict]] = []

    def add(self, what: str, **info):
        self.events.append((what, time.time(), info))

    def get(self, what: str) -> dict:
        return next(info for w, _, info in self.events if w == what)


@pytest.fixture(scope="module")
def fault_runs(stack, api, champion_run):
    log = FaultLog()
    corrupt = make_corrupt_revision(stack, CORRUPT_TAG)
    c = champion_run["run"]
    start, end = parse_time(c["data_interval_start"]), parse_time(c["data_interval_end"])
    aa_run = api.trigger(DAG_ID, c["conf"], logical_date=start + timedelta(minutes=1), data_interval=(start, end),
                         note="A/A: the champion's interval and conf again")["dag_run_id"]
    f_run = trigger_on_interval(api, stack, 3, FAULT_CONF, 3, "fault run: kill, worker stop, file-size limit")

    # --- fault 1: kill the training process after its step-100 checkpoint
    pids = wait_until(lambda: _checkpoint(stack, f_run, 100) and _train_procs(stack, f_run), RUN_TIMEOUT_S,
                      interval_s=0.1, what="the fault run's step-100 checkpoint")
    ckpt100 = _checkpoint(stack, f_run, 100)
    killed_try = _try_of(pids)
    kill_pids(pids, signal.SIGKILL)
    log.add("killed", pids=pids, try_number=killed_try, ckpt100_sha=sha256(ckpt100))

    # --- fault 8: stop the Airflow worker (SIGKILL to the scheduler's process group) as the retry resumes
    def resuming():
        pids = _train_procs(stack, f_run, after_try=killed_try)
        return pids if pids and "resuming from checkpoint" in task_log(stack, f_run, "train", _try_of(pids), 0) \
            else None

    step_pids = wait_until(resuming, 600, interval_s=0.2, what="train's retry to resume")
    stopped_try = _try_of(step_pids)
    scheduler = stack.services["scheduler"]
    scheduler.signal_group(signal.SIGKILL)
    scheduler.stop(grace_s=1)
    stopped = time.time()
    try:
        wait_until(lambda: not _train_procs(stack, f_run), 30, interval_s=0.2, what="the orphaned step to end")
        log.add("worker_stopped", step_pids=step_pids, try_number=stopped_try,
                gone_after_s=round(time.time() - stopped, 1), orphans=[])
    except TimeoutError:
        orphans = _train_procs(stack, f_run)
        log.add("worker_stopped", step_pids=step_pids, try_number=stopped_try, gone_after_s=None, orphans=orphans)
        kill_pids(orphans)  # so that the rest of the scenario can go on; the test reports them
    stack.restart("scheduler")
    # The corrupted revision's run starts only now: a worker killed just as its validate failed could not
    # report the failure, and Airflow would rerun that orphaned try (it cannot know the failure was permanent).
    bad_run = trigger_on_interval(api, stack, 2, {"conditions": [CONDITION], "dataset_rev": CORRUPT_TAG}, 4,
                                  "a corrupted dataset revision")

    # --- fault 9: the next try may write no file over FSIZE_LIMIT: its final checkpoint (step 110) fails
    pids = wait_until(lambda: _train_procs(stack, f_run, after_try=stopped_try), 600, interval_s=0.1,
                      what="train's try after the worker stopped")
    limited_try = _try_of(pids)
    for pid in pids:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
    log.add("fsize_limited", pids=pids, try_number=limited_try)
    wait_until(lambda: not _train_procs(stack, f_run), 900, interval_s=0.5, what="the size-limited try to end")
    log.add("limited_try_ended", try_number=limited_try, ckpt100_sha=sha256(ckpt100) if ckpt100.exists() else None,
            checkpoints=sorted(p.name for p in ckpt100.parent.iterdir()))

    runs = {r: api.wait_run(DAG_ID, r, RUN_TIMEOUT_S) for r in (f_run, aa_run, bad_run)}
    return {"f": f_run, "aa": aa_run, "bad": bad_run, "runs": runs, "log": log, "corrupt": corrupt}


# ---- fault 1 ----------------------------------------------------------------------------------------
def test_fault1_killed_training_resumes_from_its_last_checkpoint(fault_runs, api, stack):
    f = fault_runs["f"]
    assert fault_runs["runs"][f]["state"] == "success", api.states(DAG_ID, f)
    killed = fault_runs["log"].get("killed")
    first = task_log(stack, f, "train", killed["try_number"], 0)
    assert "exited with -9" in first, first[-1500:]
    retry = task_log(stack, f, "train", killed["try_number"] + 1, 0)
    assert "resuming from checkpoint at step 100" in retry, retry[-3000:]
    result = step_result(stack, f, f"train/{FAULT_CONDITION}")
    last = task_log(stack, f, "train", api.tries(DAG_ID, f, "train", 0)[-1]["try_number"], 0)
    assert result["steps"] == FAULT_CONF["train_steps"] and result["resumed_from_step"] == _resumed_at(last) >= 100, (
        result)


def test_fault1_the_model_is_registered_once(fault_runs, stack):
    f = fault_runs["f"]
    versions = versions_of_run(stack, FAULT_MODEL, f)
    assert len(versions) == 1, [v.version for v in versions]
    assert model_files_complete(stack, FAULT_MODEL, versions[0].version)
    assert len(mlflow_runs(stack, f, "train", FAULT_CONDITION)) == 1, "a retry opened a second MLflow run"


# ---- fault 8 ----------------------------------------------------------------------------------------
def test_fault8_no_orphan_step_process_when_the_worker_stops(fault_runs):
    stopped = fault_runs["log"].get("worker_stopped")
    assert not stopped["orphans"], f"the step process outlived its worker by 30s: {stopped}"
    assert stopped["gone_after_s"] < 15, stopped


def test_fault8_the_retry_after_the_worker_stopped_starts_cleanly(fault_runs, api, stack):
    f = fault_runs["f"]
    after = fault_runs["log"].get("fsize_limited")["try_number"]
    assert after > fault_runs["log"].get("worker_stopped")["try_number"]
    text = task_log(stack, f, "train", after, 0)
    # the stopped try got SIGTERM from its orphan watch: it saved a checkpoint at its next step (or had no
    # new step to save), so the next try resumes there, not before the step-100 checkpoint
    assert (_resumed_at(text) or 0) >= 100, text[-3000:]
    assert api.tries(DAG_ID, f, "train", 0)[-1]["state"] == "success"
    assert not _train_procs(stack, f), "a train process of the fault run is still alive"


# ---- fault 9 ----------------------------------------------------------------------------------------
def test_fault9_a_failed_checkpoint_write_is_a_clear_error_and_the_previous_checkpoint_survives(fault_runs, stack):
    f = fault_runs["f"]
    ended = fault_runs["log"].get("limited_try_ended")
    text = task_log(stack, f, "train", ended["try_number"], 0)
    errors = [line for line in text.splitlines() if "File too large" in line or "No space" in line]
    assert errors, text[-3000:]
    # a clear error names what could not be written, not just the errno
    assert any("checkpoint" in line.lower() or ".pt" in line for line in errors), (
        f"the error does not say which checkpoint could not be written: {errors}")
    killed = fault_runs["log"].get("killed")
    assert ended["ckpt100_sha"] == killed["ckpt100_sha"], "the step-100 checkpoint changed"
    final = f"step-{FAULT_CONF['train_steps']:08d}.pt"
    assert final not in ended["checkpoints"], f"a torn {final} was left"
    assert not [n for n in ended["checkpoints"] if n.endswith(".tmp")], ended["checkpoints"]
    last = task_log(stack, f, "train", ended["try_number"] + 1, 0)
    newest_intact = max(int(n[5:13]) for n in ended["checkpoints"] if n.startswith("step-") and n.endswith(".pt"))
    assert _resumed_at(last) == newest_intact >= 100, "the retry did not resume from the newest intact checkpoint"


# ---- fault 7 ----------------------------------------------------------------------------------------
def test_fault7_a_rerun_of_the_champions_data_and_conf_is_not_promoted(fault_runs, champion_run, stack, api):
    aa = fault_runs["aa"]
    assert fault_runs["runs"][aa]["state"] == "success", api.states(DAG_ID, aa)
    pulled = step_result(stack, aa, "pull")
    original = step_result(stack, champion_run["run_id"], "pull")
    assert pulled["fingerprint"] == original["fingerprint"], "the A/A run did not see the champion's data"
    decision = read_json(stack.run_dir(aa) / "promote" / CONDITION / "decision.json")["result"]
    assert decision["previous_champion"] == champion_run["version"], "the A/A run was judged against another model"
    assert decision["promoted"] is False, decision
    assert alias_version(stack, MODEL, "champion") == champion_run["version"]
    trained = step_result(stack, aa, f"train/{CONDITION}")
    if trained["content_hash"] == champion_run["content_hash"]:
        assert any("identical" in r for r in decision["reasons"]), decision["reasons"]


def test_fault7_retraining_the_champions_data_and_conf_reproduces_its_weights(fault_runs, champion_run, stack):
    """Without this, an A/A challenger cannot be made by rerunning a run: a bit-identical model needs
    seeded initialisation (the decision's identity check by content hash is unit-tested in
    tests/models/test_decision.py)."""
    trained = step_result(stack, fault_runs["aa"], f"train/{CONDITION}")
    assert trained["content_hash"] == champion_run["content_hash"], (
        "the same data, config and seed gave other weights: training is not reproducible "
        f"({trained['content_hash'][:12]} vs the champion's {champion_run['content_hash'][:12]})")


# ---- fault 4 ----------------------------------------------------------------------------------------
def test_fault4_a_corrupted_revision_stops_the_run_at_validate(fault_runs, api, stack):
    bad = fault_runs["bad"]
    assert fault_runs["runs"][bad]["state"] == "failed"
    states = api.states(DAG_ID, bad)
    assert states["pull"] == "success" and states["validate"] == "failed", states
    tries = api.tries(DAG_ID, bad, "validate")
    assert len(tries) == 1, f"a permanent data failure was retried: {[(t['try_number'], t['state']) for t in tries]}"
    assert "step process exited with 10" in task_log(stack, bad, "validate", 1)
    for task, state in states.items():
        if task.startswith(("train", "evaluate", "approve", "promote", "segmenter")):
            assert state in ("upstream_failed", None), f"{task} was {state}"
    assert not versions_of_run(stack, MODEL, bad), "a model was registered from corrupted data"
    assert not mlflow_runs(stack, bad, "train"), "training started on corrupted data"
    assert not (stack.run_dir(bad) / "promote").exists()
    report = (stack.run_dir(bad) / "report" / "report.md").read_text()
    assert "validate" in report and "failed" in report, report
    failure = read_json(stack.run_dir(bad) / "validate" / "failure.json")["message"]
    assert failure.splitlines()[0][:60] in report, "the report does not name the cause"


# ---- fault 6 ----------------------------------------------------------------------------------------
def test_fault6_promote_rerun_after_success_moves_nothing(fault_runs, champion_run, api, stack):
    run_id = champion_run["run_id"]
    before = read_json(stack.run_dir(run_id) / "promote" / CONDITION / "decision.json")
    versions_before = {v.version: dict(v.tags) for v in stack.mlflow_client().search_model_versions(
        f"name='{MODEL}'")}
    champion_before = alias_version(stack, MODEL, "champion")
    api.clear(DAG_ID, run_id, ["promote"], include_downstream=True)
    wait_until(lambda: api.run(DAG_ID, run_id)["state"] != "success", 60, interval_s=0.5, what="the clear")
    run = api.wait_run(DAG_ID, run_id, RUN_TIMEOUT_S)
    assert run["state"] == "success", api.states(DAG_ID, run_id)
    result = step_result(stack, run_id, f"promote/{CONDITION}")
    assert result["already_applied"] is True and "already applied" in result["note"], result
    assert alias_version(stack, MODEL, "champion") == champion_before
    versions_after = {v.version: dict(v.tags) for v in stack.mlflow_client().search_model_versions(
        f"name='{MODEL}'")}
    assert set(versions_after) == set(versions_before), "a version appeared or vanished"
    for version, tags in versions_before.items():
        moved = {k for k in tags if k.startswith("argus.decision") and versions_after[version].get(k) != tags[k]}
        assert not moved, f"v{version}'s decision tags changed: {moved}"
    assert read_json(stack.run_dir(run_id) / "promote" / CONDITION / "decision.json") == before


def test_no_step_process_is_left_behind(fault_runs, stack):
    assert not step_processes(stack.home), "argus-task processes outlived their runs"
