"""Data-parallel training under real torchrun: 2 ranks on the CPU (gloo), the train step's own CLI.

``argus-task torchrun --standalone --nproc-per-node=2 --max-restarts=1 -m argus_tasks train ...`` is the
command a train step with ``gpus: 2`` runs in its pod (``plugins/argus_airflow/training_steps.py``), here
as a process. Tiny config, 8 steps: the time goes to the start-up of the ranks (imports, frames) and to
the registration, not to training.

* 2 ranks train, rank 0 registers exactly one version, and both ranks end with the same weights (each
  rank hashes its own generator; the result lists the hashes by rank);
* rank 1 dies (``os._exit``) after step 5 on torchrun's first attempt only (``ARGUS_FAULT_EXIT_AT``):
  torchrun restarts both ranks, both resume from the checkpoint of step 4, and the run still registers
  exactly one version;
* a rank's permanent failure (exit 10) is the launcher's exit code, where torchrun alone exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from argus_tasks.torchrun import exit_code

TIMEOUT_S = 420  # ~60 s on an idle 2-core machine; several times that when the machine is shared
TORCHRUN = ["--standalone", "--nproc-per-node=2", "--max-restarts=1", "-m", "argus_tasks"]
TRAIN = ["train", "--condition", "fog", "--steps", "8", "--set", "checkpoint_every_steps=2",
         "--set", "checkpoint_every_s=1e9", "--set", "log_every_steps=2"]


def launch(steps, run_id: str, tmp_path: Path, argv: list[str], **extra_env) -> tuple[int, dict, str]:
    """Run ``argus-task torchrun <argv>`` as the pod would; (exit code, result, launcher log)."""
    ret = tmp_path / "return.json"
    env = {**os.environ, **steps.env(run_id), "ARGUS_XCOM_RETURN": str(ret), "ARGUS_TORCH_THREADS": "1",
           **extra_env}
    proc = subprocess.run([sys.executable, "-m", "argus_tasks", "torchrun", *argv], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    log = proc.stdout + proc.stderr
    (tmp_path / "torchrun.log").write_text(log)
    return proc.returncode, (json.loads(ret.read_text()) if ret.exists() else {}), log


def versions_of(run_id: str) -> list:
    import mlflow

    client = mlflow.MlflowClient()
    return client.search_model_versions(f"name='argus-weather-fog' and tags.`argus.run_id` = '{run_id}'")


def test_the_launcher_exit_code_is_the_ranks_not_torchruns():
    assert exit_code({0: 10, 1: -15}) == 10
    assert exit_code({1: 75}) == 75
    assert exit_code({0: 75, 1: 10}) == 10
    assert exit_code({1: 3}) == 1
    assert exit_code({0: -9}) == 1


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_two_ranks_train_register_one_version_and_end_with_the_same_weights(validated_run, steps, tmp_path):
    run_id, run = validated_run
    code, result, log = launch(steps, run_id, tmp_path, [*TORCHRUN, *TRAIN])
    assert code == 0, log[-4000:]
    assert result["world_size"] == 2 and result["steps"] == 8 and result["resumed_from_step"] == 0
    hashes = result["rank_content_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1] == result["content_hash"], hashes
    (version,) = versions_of(run_id)
    assert str(version.version) == result["model_version"]
    assert version.tags["argus.content_hash"] == result["content_hash"]
    assert json.loads(run.read_bytes("train/fog/result.json"))["model_version"] == result["model_version"]
    assert "rank 1 of 2" in log and "rank 0 of 2" in log and "backend gloo" in log


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_a_rank_killed_mid_way_is_restarted_by_torchrun_and_resumes_from_the_last_checkpoint(
        validated_run, steps, tmp_path):
    run_id, _ = validated_run
    code, result, log = launch(steps, run_id, tmp_path, [*TORCHRUN, *TRAIN], ARGUS_FAULT_EXIT_AT="1:5")
    assert code == 0, log[-4000:]
    assert "rank 1 exits at step 5" in log, "the fault was not injected"
    assert "restart 1" in log, "torchrun did not restart the ranks"
    # both ranks of the restart resume from the checkpoint of step 4 (written before rank 1 died at step 5)
    assert log.count("resuming from checkpoint at step 4") == 2, log[-4000:]
    assert result["resumed_from_step"] == 4 and result["steps"] == 8
    hashes = result["rank_content_hashes"]
    assert hashes[0] == hashes[1] == result["content_hash"]
    assert len(versions_of(run_id)) == 1, "a restart must not register a second version"


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_a_permanent_failure_of_the_ranks_is_the_launchers_exit_code(steps, tmp_path):
    """No validated data in this run: every rank fails with exit 10 (torchrun alone would exit 1)."""
    code, result, log = launch(steps, "run-without-data", tmp_path,
                               ["--standalone", "--nproc-per-node=2", "--max-restarts=0", "-m", "argus_tasks", *TRAIN])
    assert code == 10, log[-4000:]
    assert result == {}
    assert "PermanentStepError" in log or "RankFailure" in log
