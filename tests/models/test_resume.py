"""A training step killed mid-way resumes from its last checkpoint (a real SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS_PER_CKPT = 3


def _ckpt_steps(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.pt")) if folder.is_dir() else []


@pytest.mark.slow
def test_killed_training_resumes_from_the_saved_step(validated_run, steps, tmp_path):
    run_id, run = validated_run
    env = {**os.environ, **steps.env(run_id), "ARGUS_XCOM_RETURN": str(tmp_path / "return.json"),
           "ARGUS_TORCH_THREADS": "1"}
    base = [sys.executable, "-m", "argus_tasks.cli", "train", "--condition", "fog", "--set",
            f"checkpoint_every_steps={STEPS_PER_CKPT}", "--set", "log_every_steps=1"]
    ckpts = run.cache / "train/fog/checkpoints"
    log1 = open(tmp_path / "first.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(base + ["--steps", "1000"], env=env, stdout=log1, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while len(_ckpt_steps(ckpts)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _ckpt_steps(ckpts), (tmp_path / "first.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log1.close()
    assert proc.returncode == -signal.SIGKILL
    saved = _ckpt_steps(ckpts)
    last = saved[-1]
    assert last % STEPS_PER_CKPT == 0 and not run.exists("train/fog/result.json")
    assert not list(ckpts.glob(".*.tmp"))  # atomic writes leave no torn files behind

    target = last + 2
    second = subprocess.run(base + ["--steps", str(target)], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from checkpoint at step {last}" in second.stderr
    result = run.read_json("train/fog/result.json")
    assert result["resumed_from_step"] == last and result["steps"] == target
    logged = [line for line in second.stderr.splitlines() if " step " in line and "images/s" in line]
    assert logged and f"step {last + 1}/{target}" in logged[0]  # continues, does not restart at 1
