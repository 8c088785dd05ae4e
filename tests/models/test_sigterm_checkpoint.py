"""SIGTERM (eviction, node drain, on_kill) saves a checkpoint before the step exits with 75.

Two real signals: one sent to this process while ``train_translator`` runs in it (fast), one sent
to a real ``argus-task train`` subprocess, whose retry then resumes from the saved step.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from argus_tasks.contract import EXIT_TRANSIENT, TransientStepError

STEPS_PER_CKPT = 4
FIRST_DEADLINE_S = 420  # start-up + data + a few steps on a slow shared core
RESUME_TIMEOUT_S = 420


def _tiny_translator():
    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import WeatherTranslator

    cfg = load_config("tiny", {"ngf": 8, "n_blocks": 1, "batch_size": 2, "nce_patches": 16, "nce_dim": 16,
                               "checkpoint_every_steps": 100, "checkpoint_every_s": 1e9, "log_every_steps": 1})
    torch.manual_seed(0)
    return WeatherTranslator(cfg, "fog")


def test_sigterm_during_training_saves_the_step_and_raises_a_transient_error(tmp_path):
    from argus_tasks.models.checkpoints import CheckpointStore
    from argus_tasks.models.trainer import train_translator
    from argus_tasks.store import RunStore

    frames = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    ckpts = CheckpointStore(RunStore(str(tmp_path), "dag", "run"), "train/fog/checkpoints")
    received = []

    def guard(*_):
        received.append("guard")

    # should the trainer not catch SIGTERM, this keeps pytest alive and the test fails on its asserts
    before = signal.signal(signal.SIGTERM, guard)
    try:
        def on_log(step, _record):
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, delivered between two steps

        with pytest.raises(TransientStepError, match=r"SIGTERM .* at step 3/50"):
            train_translator(_tiny_translator(), frames, frames, steps=50, checkpoints=ckpts, on_log=on_log)
        assert received == [], "the trainer's handler, not the previous one, took the signal"
        assert signal.getsignal(signal.SIGTERM) is guard  # restored when the loop ends
        assert ckpts.steps() == [3]  # no periodic checkpoint was due: this one is the SIGTERM's
        resumed = train_translator(_tiny_translator(), frames, frames, steps=5, checkpoints=ckpts)
        assert (resumed.resumed_from, resumed.steps) == (3, 5)
        # the handler is the caller's again once training ends
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert received == ["guard"]
    finally:
        signal.signal(signal.SIGTERM, before)


def _ckpt_steps(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in folder.rglob("step-*.pt")) if folder.is_dir() else []


def _logged_step(log_file: Path) -> int:
    found = re.findall(r" step (\d+)/\d+ ", log_file.read_text(errors="replace")) if log_file.exists() else []
    return int(found[-1]) if found else 0


@pytest.mark.slow
@pytest.mark.timeout(FIRST_DEADLINE_S + RESUME_TIMEOUT_S + 180)
def test_a_real_sigterm_to_argus_task_train_checkpoints_exits_75_and_the_retry_resumes(validated_run, steps,
                                                                                     tmp_path):
    run_id, run = validated_run
    env = {**os.environ, **steps.env(run_id), "ARGUS_XCOM_RETURN": str(tmp_path / "return.json"),
           "ARGUS_TORCH_THREADS": "1"}
    base = [sys.executable, "-m", "argus_tasks.cli", "train", "--condition", "fog", "--set",
            f"checkpoint_every_steps={STEPS_PER_CKPT}", "--set", "checkpoint_every_s=1e9",
            "--set", "log_every_steps=1"]
    ckpts = run.cache / "train/fog/checkpoints"
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as out:
        proc = subprocess.Popen(base + ["--steps", "100000"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + FIRST_DEADLINE_S
            # past the first periodic checkpoint, and two steps beyond it
            while (_logged_step(first_log) < STEPS_PER_CKPT + 2 and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.1)
            assert proc.poll() is None, f"train exited on its own (rc {proc.returncode}):\n{first_log.read_text()}"
            periodic = _ckpt_steps(ckpts)
            assert periodic and periodic[-1] % STEPS_PER_CKPT == 0, periodic
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
    text = first_log.read_text(errors="replace")
    assert rc == EXIT_TRANSIENT, f"rc {rc}:\n{text[-3000:]}"
    saved = _ckpt_steps(ckpts)
    assert saved[-1] > periodic[-1] and saved[-1] % STEPS_PER_CKPT != 0, (saved, periodic)
    failure = run.read_json("train/fog/failure.json")
    assert failure["exit_code"] == EXIT_TRANSIENT and "SIGTERM" in failure["message"]
    assert f"at step {saved[-1]}/100000" in failure["message"]
    assert not run.exists("train/fog/result.json")

    target = saved[-1] + 1
    second = subprocess.run(base + ["--steps", str(target)], env=env, capture_output=True, text=True,
                            timeout=RESUME_TIMEOUT_S)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from checkpoint at step {saved[-1]}" in second.stderr, second.stderr[-3000:]
    result = run.read_json("train/fog/result.json")
    assert (result["resumed_from_step"], result["steps"]) == (saved[-1], target)
