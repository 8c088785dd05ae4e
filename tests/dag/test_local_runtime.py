"""The local runtime: exit codes, the return-file protocol, live logs, no orphan processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from argus_airflow.local_runtime import LocalStepOperator, run_step_process
from argus_airflow.step_spec import StepSpec


def make_operator(script: str, env: dict | None = None) -> LocalStepOperator:
    spec = StepSpec(name="probe", kind="data")
    return LocalStepOperator(
        task_id="probe",
        step_spec=spec,
        cmds=[sys.executable, "-c", textwrap.dedent(script)],
        arguments=["--flag", "value"],
        env_vars={"ARGUS_PROBE": "hello", **(env or {})},
    )


WRITE_RESULT = """
import json, os, sys
print("working on", sys.argv[1:], flush=True)
json.dump({"argv": sys.argv[1:], "probe": os.environ["ARGUS_PROBE"]}, open(os.environ["ARGUS_XCOM_RETURN"], "w"))
"""


def test_success_returns_the_return_file_and_passes_args_and_env():
    result = make_operator(WRITE_RESULT).execute(context={})
    assert result == {"argv": ["--flag", "value"], "probe": "hello"}


def test_the_return_file_lives_where_a_pod_would_have_it():
    script = "import os, json; p = os.environ['ARGUS_XCOM_RETURN']; json.dump({'p': p}, open(p, 'w'))"
    result = make_operator(script).execute(context={})
    assert result["p"].endswith("/airflow/xcom/return.json")


def test_permanent_exit_code_fails_without_retry_and_shows_the_last_lines():
    from airflow.sdk.exceptions import AirflowFailException

    script = """
    import sys
    for i in range(100):
        print(f"line {i}")
    print("manifest is missing column 'split'", file=sys.stderr)
    sys.exit(10)
    """
    with pytest.raises(AirflowFailException) as err:
        make_operator(script).execute(context={})
    message = str(err.value)
    assert "exited with code 10" in message and "not retried" in message
    assert "manifest is missing column 'split'" in message
    assert "line 99" in message and "line 3\n" not in message  # only the tail


@pytest.mark.parametrize("code", [75, 1, 137])
def test_other_exit_codes_fail_for_a_retry(code):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    with pytest.raises(AirflowException) as err:
        make_operator(f"import sys; print('mlflow down'); sys.exit({code})").execute(context={})
    assert not isinstance(err.value, AirflowFailException)
    assert f"exited with code {code}" in str(err.value) and "mlflow down" in str(err.value)


def test_exit_zero_without_a_return_file_breaks_the_contract():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="no return file"):
        make_operator("print('forgot to write the result')").execute(context={})


def test_the_log_is_streamed_while_the_step_runs():
    script = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\n"
    seen = []

    class Recorder:
        def info(self, fmt, line):
            seen.append((time.time(), line))

    env = {**os.environ, "ARGUS_XCOM_RETURN": "/nonexistent/return.json"}
    code, _, tail = run_step_process([sys.executable, "-c", script], env, Recorder())
    assert code == 0 and tail == ["tick 0", "tick 1", "tick 2"]
    assert seen[-1][0] - seen[0][0] > 0.4, "lines must arrive as they are printed, not at the end"


SPAWNER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[-1], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(path: Path, timeout: float = 20) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} was not written")


def test_killing_the_task_stops_the_whole_step_process_group(tmp_path):
    pids_file = tmp_path / "pids"
    op = make_operator(SPAWNER)
    op.arguments = [str(pids_file)]
    errors = []
    thread = threading.Thread(target=lambda: _run_catching(op, errors))
    thread.start()
    step_pid, child_pid = map(int, _wait_for(pids_file).split())
    op.on_kill()
    thread.join(30)
    assert not thread.is_alive()
    deadline = time.time() + 10
    while time.time() < deadline and (_alive(step_pid) or _alive(child_pid)):
        time.sleep(0.1)
    assert not _alive(step_pid) and not _alive(child_pid), "no step process may outlive the task"
    assert errors, "a killed step is a failure"


def _run_catching(op, errors):
    try:
        op.execute(context={})
    except Exception as exc:
        errors.append(exc)


WORKER = """
import os, sys
sys.path.insert(0, {plugins!r})
from argus_airflow.local_runtime import run_step_process
class Log:
    def info(self, *a): pass
run_step_process([sys.executable, "-c", "import time, os, sys; open(sys.argv[1], 'w').write(str(os.getpid()));"
                  " time.sleep(300)", {pids!r}], {{**os.environ, "ARGUS_XCOM_RETURN": "/nonexistent/r.json"}}, Log())
"""


def test_the_step_dies_with_a_worker_that_is_killed_outright(tmp_path):
    REPO = Path(__file__).resolve().parents[2]

    pids_file = tmp_path / "pid"
    worker = subprocess.Popen([sys.executable, "-c", WORKER.format(plugins=str(REPO / "plugins"),
                                                                   pids=str(pids_file))])
    step_pid = int(_wait_for(pids_file))
    assert _alive(step_pid)
    worker.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel must stop the step
    worker.wait(10)
    deadline = time.time() + 10
    while time.time() < deadline and _alive(step_pid):
        time.sleep(0.1)
    assert not _alive(step_pid), "the step process lingered as an orphan after its worker died"


def test_env_of_the_contract_is_templated_per_task_instance():
    from argus_airflow import settings
    from argus_airflow.step_spec import contract_env

    env = contract_env(settings.load(), StepSpec(name="train", kind="training", gpus=1))
    assert env["ARGUS_RUN_ID"] == "{{ run_id }}" and env["ARGUS_MAP_INDEX"] == "{{ ti.map_index }}"
    assert env["ARGUS_STORE"] == os.environ["ARGUS_STORE"]
    assert not any(k for k in env if "SECRET" in k or "PASSWORD" in k or k.startswith("AWS_"))
    json.dumps(env)
