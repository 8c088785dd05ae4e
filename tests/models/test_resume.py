"""A training step killed mid-way resumes from its last checkpoint (a real SIGKILL).

Written for a slow, shared machine: nothing depends on how fast the steps run. The first process
trains far more steps than it can finish and is killed once two checkpoints exist (however long
that takes, within a generous deadline); time-based checkpoints are switched off so every
checkpoint falls on a multiple of ``STEPS_PER_CKPT``. The kill may land in the middle of a
checkpoint write: that may leave an orphaned temp file, but never a torn ``step-*.pt``, and the
resume must not be disturbed by it.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

STEPS_PER_CKPT = 3
FIRST_CHECKPOINTS_DEADLINE_S = 420  # start-up + data + 6 steps; ~15 s on an idle core
RESUME_TIMEOUT_S = 420  # start-up + 2 steps + MLflow model logging and registration


def _ckpt_steps(folder: Path) -> list[int]:
    """Steps saved under ``folder`` (the checkpoints live in a sub-folder named by the reuse key)."""
    return sorted(int(p.stem.split("-")[1]) for p in folder.rglob("step-*.pt")) if folder.is_dir() else []


def _key_folder(folder: Path) -> Path:
    (only,) = {p.parent for p in folder.rglob("step-*.pt")}
    return only


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


@pytest.mark.slow
@pytest.mark.timeout(FIRST_CHECKPOINTS_DEADLINE_S + RESUME_TIMEOUT_S + 180)
def test_killed_training_resumes_from_the_saved_step(validated_run, steps, tmp_path):
    run_id, run = validated_run
    env = {**os.environ, **steps.env(run_id), "ARGUS_XCOM_RETURN": str(tmp_path / "return.json"),
           "ARGUS_TORCH_THREADS": "1"}
    base = [sys.executable, "-m", "argus_tasks.cli", "train", "--condition", "fog", "--set",
            f"checkpoint_every_steps={STEPS_PER_CKPT}", "--set", "checkpoint_every_s=1e9",
            "--set", "log_every_steps=1"]
    ckpts = run.cache / "train/fog/checkpoints"
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log1:
        proc = subprocess.Popen(base + ["--steps", "100000"], env=env, stdout=log1, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + FIRST_CHECKPOINTS_DEADLINE_S
            while len(_ckpt_steps(ckpts)) < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None, f"train exited on its own (rc {proc.returncode}):\n{_tail(first_log)}"
            assert len(_ckpt_steps(ckpts)) >= 2, (
                f"no 2 checkpoints within {FIRST_CHECKPOINTS_DEADLINE_S}s:\n{_tail(first_log)}")
            proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    saved = _ckpt_steps(ckpts)
    last = saved[-1]
    keyed = _key_folder(ckpts)
    assert all(s % STEPS_PER_CKPT == 0 for s in saved), saved
    assert not run.exists("train/fog/result.json")
    # atomic writes: whatever the kill interrupted, every visible checkpoint is whole (and only weights)
    for s in saved:
        state = torch.load(io.BytesIO((keyed / f"step-{s:08d}.pt").read_bytes()), map_location="cpu",
                           weights_only=True)
        assert state["step"] == s
    # what a kill during a write leaves behind (a partial temp file) must not disturb the resume
    (keyed / f".step-{last + STEPS_PER_CKPT:08d}.pt.torn.tmp").write_bytes(b"PK\x03\x04 torn")

    target = last + 2
    second = subprocess.run(base + ["--steps", str(target)], env=env, capture_output=True, text=True,
                            timeout=RESUME_TIMEOUT_S)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from checkpoint at step {last}" in second.stderr, second.stderr[-3000:]
    result = run.read_json("train/fog/result.json")
    assert result["resumed_from_step"] == last and result["steps"] == target
    logged = [line for line in second.stderr.splitlines() if " step " in line and "images/s" in line]
    assert logged and f"step {last + 1}/{target}" in logged[0], logged  # continues, does not restart at 1
    assert f"step {target}/{target}" in logged[-1] and len(logged) == 2, logged
