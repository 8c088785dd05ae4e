"""``ARGUS_RUNTIME=local``: run a heavy step's container command as a local process.

Same command line, same env and the same return-file protocol as the pod: the step writes its JSON
result to ``$ARGUS_XCOM_RETURN`` (``/airflow/xcom/return.json`` in a pod). The log is streamed
live into the task log, exit codes map to Airflow outcomes as in the Kubernetes runtime, and the
process never outlives the task: it runs in its own process group, is killed with the group when
the task is killed, gets SIGTERM from the kernel if the task process dies, and is stopped when the
worker that supervises the task process dies.

The step sees the contract env plus an allow-list of the worker's environment (:func:`step_environment`),
never the rest of it: the worker holds Airflow's own secrets (Fernet key, metadata database URL, JWT
secret), which a step has no use for.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from airflow.sdk import BaseOperator

from argus_airflow.settings import REPO_ROOT
from argus_airflow.step_operator import STEP_TEMPLATE_FIELDS, StepOperatorMixin
from argus_airflow.step_spec import StepSpec

PR_SET_PDEATHSIG = 1
KILL_GRACE_S = 10
ORPHAN_POLL_S = 1.0

# What a step may inherit from the worker's environment, besides the contract env (by exact name or prefix).
PASS_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "TERM",
    "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "PYTHONUNBUFFERED", "PYTHONIOENCODING",
    "PYTHONUTF8", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "NUMEXPR_MAX_THREADS", "KMP_AFFINITY", "NCCL_DEBUG", "NCCL_SOCKET_IFNAME",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "GIT_PYTHON_REFRESH", "GIT_SSH_COMMAND", "GIT_TERMINAL_PROMPT", "SSH_AUTH_SOCK", "GX_ANALYTICS_ENABLED",
    "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
})
PASS_PREFIXES = ("LC_", "ARGUS_", "MLFLOW_", "DVC_", "NVIDIA_", "TORCH_")
# The object store's credentials and settings (store, DVC remote, MLflow artifacts on S3): the worker holds
# them for its steps (docker-compose.yaml); a pod gets the same keys from the Kubernetes secret.
STORE_PREFIXES = ("AWS_",)
# Never passed by prefix: names that look like a credential. MLflow's own login is passed: the step talks
# to MLflow.
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|FERNET|PRIVATE|CREDENTIAL", re.I)
MLFLOW_LOGIN = frozenset({"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"})


def step_environment(worker_env: dict[str, str], contract: dict[str, str]) -> dict[str, str]:
    """The env of a local step: the allow-listed part of ``worker_env``, then the contract env over it.

    Passed: ``PASS_NAMES``; names starting with ``PASS_PREFIXES`` unless they look like a credential
    (``CREDENTIAL_NAME``; MLflow's own login excepted); the object store's ``AWS_*``. Everything else
    (``AIRFLOW__*`` with the Fernet key, the database URL and the JWT secret, ``AIRFLOW_CONN_*``...)
    stays with the worker.
    """
    env = {}
    for name, value in worker_env.items():
        if name in PASS_NAMES or name in MLFLOW_LOGIN or name.startswith(STORE_PREFIXES):
            env[name] = value
        elif name.startswith(PASS_PREFIXES) and not CREDENTIAL_NAME.search(name):
            env[name] = value
    env.update(contract)
    return env


def resolve_entrypoint(command: str) -> str:
    """The image entrypoint as a local executable: next to this Python first, then on PATH."""
    override = os.environ.get("ARGUS_LOCAL_ENTRYPOINT")
    if override:
        return override
    beside = Path(sys.executable).parent / command
    if beside.exists():
        return str(beside)
    found = shutil.which(command)
    if not found:
        raise FileNotFoundError(
            f"cannot find the step entrypoint {command!r} next to {sys.executable} or on PATH; "
            "install the task package with `pip install -e tasks` (make demo does this)"
        )
    return found


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _stop_when_orphaned(proc: subprocess.Popen, parent_pid: int, log, done: threading.Event) -> None:
    """Stop the step once the process that started this one (the Airflow task supervisor) has died.

    When a worker dies abruptly, its task process is re-parented and may go on running, blocked on the
    step's output, until it next tries to report: the step would train on as an orphan and race the
    retry for the same run folder. Polling the parent pid closes that gap (PDEATHSIG covers only the
    death of this very process).
    """
    while not done.wait(ORPHAN_POLL_S):
        if proc.poll() is not None:
            return
        if os.getppid() != parent_pid:
            kill_process_group(proc)
            try:  # the log may be gone with the supervisor
                log.error("the Airflow worker that ran this task is gone: stopped step process group %s", proc.pid)
            except Exception:  # noqa: BLE001
                pass
            return


def run_step_process(argv: list[str], env: dict[str, str], log, cwd: str | None = None, on_start=None,
                     parent_pid: int | None = None):
    """Run ``argv``; stream its output to ``log``; return (exit code, result or None, last lines).

    The result is the JSON the step wrote to ``env['ARGUS_XCOM_RETURN']``. With ``parent_pid``, the
    step is stopped when this process's parent is no longer ``parent_pid`` (see ``_stop_when_orphaned``).
    """
    tail: collections.deque[str] = collections.deque(maxlen=50)
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    if on_start is not None:
        on_start(proc)
    done = threading.Event()
    if parent_pid is not None:
        threading.Thread(target=_stop_when_orphaned, args=(proc, parent_pid, log, done), daemon=True,
                         name="argus-orphan-watch").start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("%s", line)
        code = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:
            kill_process_group(proc)
    result = None
    ret = Path(env["ARGUS_XCOM_RETURN"])
    if code == 0 and ret.exists():
        result = json.loads(ret.read_text())
    return code, result, list(tail)



def kill_process_group(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left after ``grace_s``."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is not None:
            try:  # the leader is gone; make sure no grandchild lingers
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class LocalStepOperator(StepOperatorMixin, BaseOperator):
    """Runs ``spec.command + arguments`` locally with the step contract's env."""

    template_fields = STEP_TEMPLATE_FIELDS
    ui_color = "#d7ecff"

    def __init__(self, *, step_spec: StepSpec, cmds: list[str], arguments: list[str],
                 env_vars: dict[str, str], condition: str | None = None, item: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.init_step(step_spec, cmds, arguments, env_vars, condition, item)
        self._proc = None

    def execute(self, context):
        entry = resolve_entrypoint(self.cmds[0])
        argv = [entry, *self.cmds[1:], *[str(a) for a in self.arguments]]
        with tempfile.TemporaryDirectory(prefix="argus-step-") as tmp:
            xcom_dir = Path(tmp) / "airflow" / "xcom"
            xcom_dir.mkdir(parents=True)
            env = step_environment(dict(os.environ), {k: str(v) for k, v in self.env_vars.items()})
            env["ARGUS_XCOM_RETURN"] = str(xcom_dir / "return.json")
            if not env.get("ARGUS_GIT_COMMIT"):  # a baked image's commit, else this checkout's
                env["ARGUS_GIT_COMMIT"] = git_commit()
            self.log.info("running %s", " ".join(argv))
            started = time.time()
            code, result, tail = run_step_process(argv, env, self.log, cwd=str(REPO_ROOT),
                                                  on_start=self._remember, parent_pid=os.getppid())
            self.log.info("step process exited with %s after %.1fs", code, time.time() - started)
        if code != 0:
            raise self.failure_exception(code, tail)
        if result is None:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"step {self.step_spec.name} exited 0 but wrote no return file: the step contract is broken"
            )
        return self.finish(context, result)

    def _remember(self, proc) -> None:
        self._proc = proc

    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.log.warning("task killed: stopping step process group %s", proc.pid)
            kill_process_group(proc)
