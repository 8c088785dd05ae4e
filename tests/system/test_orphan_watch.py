"""The local runtime stops a step whose Airflow worker died (fast; no services).

A stand-in "worker" process starts a stand-in "task" process, which runs a silent step through
``run_step_process`` exactly as ``LocalStepOperator`` does. The worker is then SIGKILLed: the task
process survives it (nothing tells it), so only the orphan watch can stop the step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .procs import wait_until
from .stack import REPO

TASK = textwrap.dedent("""
    import os, sys, tempfile, logging
    sys.path.insert(0, {plugins!r})
    from argus_airflow.local_runtime import run_step_process
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    log = logging.getLogger("task")
    env = dict(os.environ, ARGUS_XCOM_RETURN=os.path.join(tempfile.mkdtemp(), "return.json"))
    step = [sys.executable, "-c", "import os, time; open({marker!r}, 'w').write(str(os.getpid())); time.sleep(120)"]
    code, _, _ = run_step_process(step, env, log, parent_pid=os.getppid())
    log.info("step exited with %s", code)
""")
WORKER = textwrap.dedent("""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", {task!r}])
    time.sleep(300)
""")


def test_a_step_is_stopped_when_the_worker_of_its_task_dies(tmp_path: Path):
    marker = tmp_path / "step.pid"
    task = TASK.format(plugins=str(REPO / "plugins"), marker=str(marker))
    worker = subprocess.Popen([sys.executable, "-c", WORKER.format(task=task)], start_new_session=True)
    try:
        step_pid = int(wait_until(lambda: marker.exists() and marker.read_text(), 60, interval_s=0.1,
                                  what="the step to start"))
        os.kill(worker.pid, signal.SIGKILL)  # the worker dies; the task process is re-parented, alive
        worker.wait(10)
        started = time.time()
        wait_until(lambda: not Path(f"/proc/{step_pid}").exists() or _zombie(step_pid), 20, interval_s=0.2,
                   what="the orphaned step to be stopped")
        assert time.time() - started < 15
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)  # the group: the task and step if still there
        except ProcessLookupError:
            pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
