"""A write the volume refuses (disk full, file-size limit, no permission) is a clear step error.

The limit is real: the child process runs with RLIMIT_FSIZE set, so the kernel refuses the write with
EFBIG exactly as it would on a full or quota-limited volume; nothing is mocked.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from argus_tasks.contract import EXIT_PERMANENT, EXIT_TRANSIENT, PermanentStepError, TransientStepError
from argus_tasks.store import write_error

LIMITED_WRITER = r"""
import io, json, resource, sys
import torch
from argus_tasks.models.checkpoints import CheckpointStore
from argus_tasks.store import RunStore
from argus_tasks.contract import StepError

run = RunStore(sys.argv[1], "dag", "run-1")
ckpts = CheckpointStore(run, "train/fog/checkpoints")
ckpts.save(100, {"model": {"w": torch.zeros(16)}})            # small: fits under the limit
limit = 256 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    ckpts.save(200, {"model": {"w": torch.zeros(1_000_000)}})  # 4 MB: refused by the kernel
except StepError as exc:
    print(json.dumps({"type": type(exc).__name__, "exit_code": exc.exit_code, "message": str(exc)}))
"""


def test_a_refused_checkpoint_write_names_the_file_and_keeps_the_previous_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, "-c", LIMITED_WRITER, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    err = json.loads(proc.stdout.strip().splitlines()[-1])
    assert err["type"] == "TransientStepError" and err["exit_code"] == EXIT_TRANSIENT
    assert "train/fog/checkpoints/step-00000200.pt" in err["message"]
    assert "File too large" in err["message"] and "retried" in err["message"]
    folder = tmp_path / "runs" / "dag" / "run-1" / "train" / "fog" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000100.pt"], "torn or temp files were left"

    import torch

    from argus_tasks.models.checkpoints import CheckpointStore
    from argus_tasks.store import RunStore

    latest = CheckpointStore(RunStore(str(tmp_path), "dag", "run-1"), "train/fog/checkpoints").load_latest()
    assert latest["step"] == 100 and torch.equal(latest["model"]["w"], torch.zeros(16))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_out_of_space_errors_are_retried(code):
    err = write_error("/store/runs/d/r/x.pt", 2_000_000, OSError(code, "no room"))
    assert isinstance(err, TransientStepError) and "/store/runs/d/r/x.pt" in str(err) and "2.0 MB" in str(err)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_access_errors_fail_at_once_and_say_who_needs_access(code):
    err = write_error("/store/runs/d/r/x.pt", 10, OSError(code, "denied"))
    assert isinstance(err, PermanentStepError) and err.exit_code == EXIT_PERMANENT
    assert "write access" in str(err) and "ARGUS_STORE" in str(err)


def test_other_os_errors_pass_through_unchanged():
    exc = OSError(errno.EIO, "I/O error")
    assert write_error("/x", 1, exc) is exc
