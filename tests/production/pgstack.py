"""The production-like stack of the Postgres integration test, as real processes on loopback:
a throw-away PostgreSQL server (Debian package), an MLflow tracking server with its backend on that
server, and Airflow (api-server, scheduler with LocalExecutor, dag-processor, triggerer) with its
metadata on it; plus a small client of Airflow's REST API v2 (JWT from the simple auth manager)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import support

ENSURE_POSTGRES = support.REPO / "scripts" / "ensure_postgres.sh"
INIT_DATABASES = support.REPO / "docker" / "postgres" / "init-databases.sh"


class Unavailable(RuntimeError):
    """PostgreSQL cannot be had on this machine (the test is skipped with this reason)."""


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---- PostgreSQL -----------------------------------------------------------------------------------
@dataclass
class Postgres:
    """A PostgreSQL server in a temporary data folder, listening on 127.0.0.1:``port`` only."""

    bindir: Path
    root: Path
    port: int
    superuser_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    run_as: str | None = None  # the OS user running the server (postgres when we are root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @classmethod
    def find_binaries(cls) -> Path:
        """The server binaries, installed by scripts/ensure_postgres.sh when missing."""
        try:
            proc = subprocess.run(["bash", str(ENSURE_POSTGRES)], capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"scripts/ensure_postgres.sh could not run: {exc}") from exc
        if proc.returncode != 0:
            raise Unavailable(f"PostgreSQL is not available: {proc.stderr.strip()[-500:]}")
        return Path(proc.stdout.strip().splitlines()[-1])

    @classmethod
    def start_new(cls) -> Postgres:
        bindir = cls.find_binaries()
        run_as = None
        if os.geteuid() == 0:  # the server refuses to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise Unavailable("running as root and there is no 'postgres' user to run the server") from exc
            run_as = "postgres"
        root = Path(tempfile.mkdtemp(prefix="argus-pg-"))  # under /tmp, reachable by the postgres user
        server = cls(bindir=bindir, root=root, port=support.free_port(), run_as=run_as)
        try:
            server._init_and_start()
        except BaseException:
            server.stop()
            raise
        return server

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def _run(self, *argv: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._cmd(*argv), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {proc.stderr[-1500:]}\n"
                               f"server log:\n{tail(self.log)}")
        return proc

    def _init_and_start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if self.run_as:
            shutil.chown(self.root, self.run_as)
            shutil.chown(pwfile, self.run_as)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        pwfile.unlink()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def psql_env(self) -> dict[str, str]:
        """Environment for psql over the server's unix socket as the superuser."""
        return {"PGHOST": str(self.root), "PGPORT": str(self.port), "PGUSER": "postgres"}

    def create_databases(self, airflow_password: str, mlflow_password: str) -> None:
        """Roles and databases of Airflow and MLflow, made by the compose stack's own init script."""
        env = {**os.environ, **self.psql_env(), "AIRFLOW_DB_PASSWORD": airflow_password,
               "MLFLOW_DB_PASSWORD": mlflow_password, "POSTGRES_USER": "postgres"}
        # psql over the unix socket (trust for local connections), as whoever runs the test
        proc = subprocess.run(["bash", str(INIT_DATABASES)], env=env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"docker/postgres/init-databases.sh failed: {proc.stderr[-1500:]}")

    def url(self, user: str, password: str, db: str) -> str:
        return f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def query(self, user: str, password: str, db: str, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname=db) as conn:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
                           capture_output=True, timeout=60, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)


# ---- long-running services ------------------------------------------------------------------------
@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 20) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


def start_service(name: str, argv: list[str], env: dict[str, str], logdir: Path, cwd: Path) -> Service:
    log = logdir / f"{name}.log"
    fh = open(log, "wb")  # noqa: SIM115 - handed to the child for its whole life
    proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    fh.close()
    return Service(name, proc, log)


# ---- Airflow REST API v2 ----------------------------------------------------------------------------------
class AirflowAPI:
    """The few calls of Airflow's public REST API v2 the test needs, authenticated by a JWT."""

    def __init__(self, base: str, username: str, password: str):
        self.base = base.rstrip("/")
        self.token = self._token(username, password)

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True, timeout: float = 30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
                return resp.status, (json.loads(raw) if raw and "json" in ctype else raw.decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def _token(self, username: str, password: str) -> str:
        status, body = self._request("POST", "/auth/token", {"username": username, "password": password}, auth=False)
        if status not in (200, 201):
            raise AssertionError(f"POST /auth/token answered {status}: {body}")
        return body["access_token"]

    def get(self, path: str):
        return self._request("GET", "/api/v2" + path)

    def patch(self, path: str, body: dict):
        return self._request("PATCH", "/api/v2" + path, body)

    def post(self, path: str, body: dict):
        return self._request("POST", "/api/v2" + path, body)

    def wait_for_dag(self, dag_id: str, timeout_s: float, services: list[Service]) -> dict:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            status, body = self.get(f"/dags/{dag_id}")
            if status == 200:
                return body
            dead = [s.name for s in services if not s.alive()]
            if dead:
                raise AssertionError(f"services stopped while waiting for the DAG: {dead}")
            time.sleep(1)
        status, errors = self.get("/importErrors")
        raise AssertionError(f"DAG {dag_id} was not parsed within {timeout_s:.0f}s; import errors: {errors}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float, services: list[Service]) -> dict:
        deadline = time.time() + timeout_s
        body: dict = {}
        while time.time() < deadline:
            status, body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            assert status == 200, f"GET dagRun answered {status}: {body}"
            if body["state"] in ("success", "failed"):
                return body
            dead = [s.name for s in services if not s.alive()]
            if dead:
                raise AssertionError(f"services stopped while the run was {body['state']}: {dead}")
            time.sleep(2)
        raise AssertionError(f"run {run_id} still {body.get('state')} after {timeout_s:.0f}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        status, body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        assert status == 200, body
        return body["task_instances"]

    def task_log(self, dag_id: str, run_id: str, ti: dict) -> str:
        try_number = max(ti.get("try_number") or 1, 1)
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{try_number}"
        if ti.get("map_index", -1) >= 0:
            path += f"?map_index={ti['map_index']}"
        status, body = self._request("GET", "/api/v2" + path)
        if isinstance(body, dict):
            content = body.get("content", body)
            if isinstance(content, list):
                return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)
            return str(content)
        return str(body)
