"""A complete local Argus install on a temporary home, as ``make ui`` runs it, for the system tests.

:class:`ArgusStack` prepares ``<tmp>/argus`` like ``scripts/init_local.sh`` does (it runs that very
script: generated secrets, a password file, ``airflow db migrate``, the pools, the dataset registry)
and starts, each in its own process group with its log in ``<home>/logs``:

* a moto S3 server behind a switchable loopback forwarder: the DVC remote of the dataset registry;
* an MLflow tracking server over SQLite (production talks to a server too);
* the Airflow api-server, scheduler (LocalExecutor), dag-processor and triggerer.

The dataset is small and laid out in time for the schedule: five consecutive daily intervals end at
``tick``, a time a few minutes ahead that the DAG's schedule (``ARGUS_SCHEDULE``) fires at. Revision
``v<k>`` adds the frames captured in interval ``k``, so that every interval holds its own frames.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .api import AirflowApi
from .netfault import SwitchableForwarder
from .procs import Service, free_port, http_ok, kill_pids, processes_with_env, tail

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DAG_ID = "argus_weather_training"
DAY = timedelta(days=1)
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
DATA_MARGIN = timedelta(minutes=30)
# The schedule fires this long after the Airflow services start: they are up and the DAG unpaused by then.
TICK_AFTER_START = timedelta(seconds=int(os.environ.get("ARGUS_TEST_TICK_AFTER_START_S", "100")))
N_INTERVALS = 5  # three for the backfill, one for the catch-up run of the schedule, one ending at the tick
S3_BUCKET = "argus-dvc"
MLFLOW_MODE = os.environ.get("ARGUS_TEST_MLFLOW", "server")
S3_CREDENTIALS = {  # moto accepts any; these are test values, not secrets
    "AWS_ACCESS_KEY_ID": "argus-system-test",
    "AWS_SECRET_ACCESS_KEY": "argus-system-test-secret-7f3a",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Param defaults of the test deployment's scheduled runs (one condition, a few steps): ARGUS_PARAM_DEFAULTS
# Night: a few steps already change the frames enough to clear the sanity gates (fog needs many more).
SCHEDULED_DEFAULTS = {"conditions": ["night"], "train_steps": 20, "min_frames_per_group": 4}
# v1 (interval 1): the demo mix of every condition at this scale (84 clear and 24 fog train frames...)
INIT_SCALE = 0.2
# v2 adds intervals 2..5 with these frames each (whole drives of 8 frames)
# (validation wants every condition/split pair in every interval; one drive of 8 frames is enough)
INTERVAL_COUNTS = {"clear": {"train": 24, "val": 8, "test": 8},
                   **{c: {"train": 16, "val": 8, "test": 8} for c in ("night", "rain")},
                   **{c: {"train": 8, "val": 8, "test": 8} for c in ("fog", "snow")}}

def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


@dataclass
class Schedule:
    """The schedule of the test deployment: a daily cron firing at ``tick``.

    The dataset is laid out for a ``planned`` tick, with its frames at least DATA_MARGIN away from
    the interval bounds; the real tick is fixed when the services start (TICK_AFTER_START later),
    and may differ from the planned one by less than the margin.
    """

    tick: datetime
    planned: datetime | None = None

    def __post_init__(self):
        self.planned = self.planned or self.tick

    def planned_interval(self, k: int) -> tuple[datetime, datetime]:
        end = self.planned - (N_INTERVALS - k) * DAY
        return end - DAY + DATA_MARGIN, end - DATA_MARGIN

    def fire_at(self, tick: datetime) -> None:
        if abs(tick - self.planned) >= DATA_MARGIN:
            raise RuntimeError(f"the tick {tick} is too far from the one the dataset was made for ({self.planned}): "
                               "the set-up took too long")
        self.tick = tick

    @property
    def cron(self) -> str:
        return f"{self.tick.minute} {self.tick.hour} * * *"

    def interval(self, k: int) -> tuple[datetime, datetime]:
        """Interval ``k`` (1..N_INTERVALS); interval N_INTERVALS ends at the tick."""
        end = self.tick - (N_INTERVALS - k) * DAY
        return end - DAY, end


@dataclass
class ArgusStack:
    root: Path
    schedule: Schedule
    home: Path = field(init=False)
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    airflow_port: int = 0
    mlflow_port: int = 0  # what clients use: a switchable forwarder to the server's own port
    mlflow_server_port: int = 0
    mlflow_link: SwitchableForwarder | None = None
    s3: SwitchableForwarder | None = None
    api: AirflowApi | None = None
    password: str = ""
    unpaused_at: datetime | None = None
    postgres: object | None = None
    db_password: str = ""

    def __post_init__(self):
        self.home = self.root / "argus"
        self.logs = self.home / "logs"

    # ---- addresses ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def steps_tracking_uri(self) -> str:
        """What the steps log to: the server (as in production), or with ARGUS_TEST_MLFLOW=sqlite the
        database file the server serves (as ``make demo`` does)."""
        if MLFLOW_MODE == "sqlite":
            return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"
        return self.mlflow_uri

    @property
    def store(self) -> Path:
        return self.home / "store"

    @property
    def registry(self) -> Path:
        return self.home / "registry"

    def run_dir(self, run_id: str) -> Path:
        return self.store / "runs" / DAG_ID / run_id

    # ---- set-up ------------------------------------------------------------------------------------
    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ARGUS_", "AIRFLOW", "MLFLOW_", "AWS_", "PYTEST", "_OLD_VIRTUAL"))}
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        self.airflow_port, self.mlflow_port, self.mlflow_server_port = free_port(), free_port(), free_port()
        self.mlflow_link = SwitchableForwarder(self.mlflow_server_port, self.mlflow_port)
        self.mlflow_link.up()
        env.update({
            "ARGUS_HOME": str(self.home),
            "ARGUS_AIRFLOW_PORT": str(self.airflow_port),
            "ARGUS_MLFLOW_PORT": str(self.mlflow_port),
            "ARGUS_MLFLOW_UI": self.mlflow_uri,
            "MLFLOW_TRACKING_URI": self.steps_tracking_uri,
            "ARGUS_PARAM_DEFAULTS": json.dumps(SCHEDULED_DEFAULTS),
            "ARGUS_GPU_POOL_SLOTS": "2",  # two heavy steps at once: one per core of a CI runner
            "ARGUS_TORCH_THREADS": "1",
            "ARGUS_RETRY_DELAY_S": "3",
            "ARGUS_RETRIES": "6",
            "ARGUS_DVC_REMOTE_DIR": f"s3://{S3_BUCKET}/registry",
            "ARGUS_DVC_S3_ENDPOINT": self.s3.url,
            **S3_CREDENTIALS,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",  # the DAG file does not change here
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # a restarted scheduler resets the tasks of a dead one (worker crash) within ~30 s, not 5 min
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "20",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # a client of a stopped MLflow server gives up after a few seconds; Airflow retries the step
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        return env

    def _sourced_env(self, env: dict[str, str]) -> dict[str, str]:
        """The environment ``scripts/env.sh`` makes of ``env`` (secrets included once they exist)."""
        out = subprocess.run(["bash", "-c", ". scripts/env.sh && env -0"], cwd=REPO, env=env,
                             capture_output=True, check=True).stdout
        return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.time() - t0, 1)

    def sh(self, cmd: str, timeout: float = 300, check: bool = True, env: dict | None = None):
        """Run a shell command with the stack's environment (as a user who sourced scripts/env.sh)."""
        proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{cmd}` failed with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def airflow(self, *args: str, timeout: float = 120, check: bool = True):
        return self.sh(" ".join(["airflow", *(_shquote(a) for a in args)]), timeout=timeout, check=check)

    def start(self) -> ArgusStack:
        t0 = time.time()
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._start_s3()
        env = self._base_env()
        self.services["mlflow"] = self.mlflow_service(env).start()  # starts while the rest is prepared

        self._start_postgres(env)

        t = time.time()
        start, end = self.schedule.planned_interval(1)
        env["ARGUS_DATASET_INIT_ARGS"] = (f"--scale {INIT_SCALE} --seed 7 --workers 1 "
                                          f"--start {_iso(start)} --end {_iso(end)}")
        staging = self.root / "later-frames"
        gen = subprocess.Popen([str(VENV_BIN / "python"), "-c", self._generate_code(staging)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        init = self.sh("scripts/init_local.sh", env=env, timeout=600)
        (self.logs / "init_local.log").write_text(init.stdout + init.stderr)
        gen_out = gen.communicate(timeout=600)[0]
        if gen.returncode != 0:
            raise RuntimeError(f"generating the frames of the later intervals failed:\n{gen_out[-3000:]}")
        self.env = self._sourced_env(env)
        self._timed("init_local + frames", t)

        self.password = json.loads(Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())[
            "admin"]
        t = time.time()
        now = datetime.now(UTC)
        self.schedule.fire_at((now + TICK_AFTER_START + timedelta(minutes=1)).replace(second=0, microsecond=0))
        self.env["ARGUS_SCHEDULE"] = self.schedule.cron
        for name in AIRFLOW_SERVICES:  # they start while the second dataset revision is pushed
            self.services[name] = self.airflow_service(name).start()
        out = self.sh(f"argus-task dataset add-revision --registry {self.registry} --from {staging}")
        (self.logs / "dataset-revisions.log").write_text(out.stdout + out.stderr)
        self._timed("dataset revision v2", t)
        self._wait_airflow()
        self.services["mlflow"].wait_http(f"{self.mlflow_server_url}/health", 180)
        self._timed("airflow services", t)
        self.timings["total"] = round(time.time() - t0, 1)
        return self

    def _generate_code(self, staging: Path) -> str:
        """Python that renders the frames of intervals 2..N (batches 1..N-1) into ``staging``."""
        periods = [(_iso(a), _iso(b)) for a, b in (self.schedule.planned_interval(k)
                                                   for k in range(2, N_INTERVALS + 1))]
        return f"""
from datetime import datetime
from argus_tasks.data.generate import generate_dataset
for batch, (start, end) in enumerate({periods!r}, 1):
    generate_dataset({str(staging)!r}, size=64, counts={INTERVAL_COUNTS!r}, seed=7, batch=batch, workers=1,
                     start=datetime.fromisoformat(start), end=datetime.fromisoformat(end))
"""

    def _start_postgres(self, env: dict[str, str]) -> None:
        """Airflow's metadata on a throw-away PostgreSQL server (tests/production/pgstack.py), as in
        production: SQLite locks under a scheduler, an api-server and a backfill CLI writing at once."""
        from production.pgstack import Postgres, Unavailable

        t = time.time()
        try:
            self.postgres = Postgres.start_new()
        except Unavailable as exc:
            print(f"\nWARNING: no PostgreSQL ({exc}); the Airflow metadata goes to SQLite, which may report "
                  "'database is locked' under load", file=sys.stderr)
            return
        self.db_password = secrets.token_urlsafe(16)
        self.postgres.create_databases(self.db_password, secrets.token_urlsafe(16))
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.postgres.url("airflow", self.db_password, "airflow")
        self._timed("postgres", t)

    def _start_s3(self) -> None:
        moto_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARGUS_"))}
        env["ARGUS_HOME"] = str(self.home)  # marks it as ours for the leftover check
        svc = Service("moto-s3", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], env,
                      self.logs / "moto-s3.log").start()
        self.services["moto-s3"] = svc
        svc.wait_http(f"http://127.0.0.1:{moto_port}/moto-api/", 60)
        self.s3 = SwitchableForwarder(moto_port, free_port())
        self.s3.up()
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                     aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=S3_BUCKET)

    def mlflow_service(self, env: dict[str, str]) -> Service:
        db = self.home / "mlflow" / "mlflow.db"
        artifacts = self.home / "mlflow" / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        argv = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}",
                "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(self.mlflow_server_port),
                "--workers", "1"]
        env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers: not used
        return Service("mlflow", argv, env, self.logs / "mlflow.log", cwd=str(self.home))

    @property
    def mlflow_server_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_server_port}"

    def kill_mlflow(self) -> None:
        """The MLflow server dies (SIGKILL) and its address stops answering; a replacement starts
        behind the closed address at once, so that the outage lasts only as long as the test wants."""
        self.mlflow_link.down()
        self.services["mlflow"].stop(grace_s=5, sig=signal.SIGKILL)
        self.services["mlflow"] = self.mlflow_service(self.env).start()

    def mlflow_back(self) -> None:
        """Open the address again once the replacement server answers."""
        self.services["mlflow"].wait_http(f"{self.mlflow_server_url}/health", 180)
        self.mlflow_link.up()

    def registry_python(self, code: str, timeout: float = 300) -> str:
        """Run Python ``code`` with the stack's environment (the registry API needs the S3 settings)."""
        proc = subprocess.run([str(VENV_BIN / "python"), "-c", code], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"registry command failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def airflow_service(self, name: str) -> Service:
        return Service(name, [str(VENV_BIN / "airflow"), name], self.env, self.logs / f"{name}.log", cwd=str(REPO))

    def _wait_airflow(self) -> None:
        self.services["api-server"].wait_http(f"{self.base_url}/api/v2/monitor/health", 240)
        self.api = AirflowApi(self.base_url, "admin", self.password)
        deadline = time.time() + 240
        while True:
            health = self.health()
            if all(health.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "triggerer",
                                                                           "dag_processor")):
                try:
                    self.api.dag(DAG_ID)
                    break
                except Exception:  # noqa: BLE001 - not parsed yet
                    pass
            errors = self._import_errors()
            if errors:
                raise RuntimeError(f"the DAG folder has import errors: {errors}")
            dead = [s.name for s in self.services.values() if not s.alive()]
            if dead:
                raise RuntimeError(f"service(s) {dead} exited during start-up:\n"
                                   + "\n".join(tail(self.services[d].log_path, 40) for d in dead))
            if time.time() > deadline:
                raise TimeoutError(f"Airflow not ready after 240s: health {health}")
            time.sleep(1)

    def _import_errors(self) -> list:
        try:
            return self.api.import_errors()
        except Exception:  # noqa: BLE001 - api not up yet
            return []

    def health(self) -> dict:
        import requests

        try:
            return requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
        except Exception:  # noqa: BLE001
            return {}

    def unpause(self) -> None:
        self.api.set_paused(DAG_ID, False)
        self.unpaused_at = datetime.now(UTC)

    # ---- services during tests ----------------------------------------------------------------------
    def restart(self, name: str) -> Service:
        svc = self.airflow_service(name).start()
        self.services[name] = svc
        return svc

    def mlflow_client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.mlflow_uri, registry_uri=self.mlflow_uri)

    # ---- tear-down -----------------------------------------------------------------------------------
    def leftover_processes(self) -> list[int]:
        return processes_with_env(ARGUS_HOME=str(self.home))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time of each service with its finished children (the scheduler's holds every task and step)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, svc in self.services.items():
            try:
                fields = Path(f"/proc/{svc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, TypeError):
                continue
            out[name] = round(sum(int(x) for x in fields[11:15]) / tick, 1)
        return out

    def stop(self) -> None:
        self.timings["cpu_s"] = self.cpu_seconds()
        order = ("scheduler", "triggerer", "dag-processor", "api-server", "mlflow", "moto-s3")
        running = [self.services[n] for n in order if n in self.services]
        for svc in running:  # all at once, then wait: a stopping scheduler ends its task processes
            if svc.alive():
                svc.signal_group(signal.SIGTERM)
        deadline = time.time() + 20
        for svc in running:
            svc.stop(grace_s=max(0.5, deadline - time.time()))
        for link in (self.s3, self.mlflow_link):
            if link is not None:
                link.down()
        kill_pids(self.leftover_processes())  # step processes of ours that outlived everything
        if self.postgres is not None:
            self.postgres.stop()

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for name, svc in self.services.items():
            parts.append(f"----- {name} ({svc.log_path}) -----\n{tail(svc.log_path, lines)}")
        return "\n".join(parts)

    def keep_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.logs, dest / "services", dirs_exist_ok=True)
        task_logs = Path(self.env.get("AIRFLOW_HOME", self.home / "airflow")) / "logs"
        if task_logs.is_dir():
            shutil.copytree(task_logs, dest / "task-logs", dirs_exist_ok=True)


def _shquote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def python() -> str:
    return sys.executable


__all__ = ["ArgusStack", "Schedule", "DAG_ID", "DAY", "N_INTERVALS", "http_ok"]
