"""Process helpers of the system tests: services in their own process groups, free ports, HTTP waits,
and finding the processes a test started by their environment (never by name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text[-lines:])


@dataclass
class Service:
    """One long-running process (and its children) in its own process group, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # appended: a restarted service keeps its earlier log
        log.write(f"\n===== starting {self.name}: {' '.join(self.argv)} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # the group id is the leader's pid (start_new_session)
        except ProcessLookupError:
            pass

    def stop(self, grace_s: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` to the whole group, SIGKILL to what is left after ``grace_s``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal_group(sig)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # children that outlived their leader
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def wait_http(self, url: str, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if http_ok(url):
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before {url} answered:\n"
                                   + tail(self.log_path))
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} did not answer {url} within {timeout_s:.0f}s:\n" + tail(self.log_path))


# ---- processes by environment ---------------------------------------------------------------------
def environ_of(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def cmdline_of(pid: int) -> list[str]:
    try:
        return [p.decode(errors="replace") for p in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if p]
    except OSError:
        return []


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def processes_with_env(**match: str) -> list[int]:
    """Live pids whose environment holds every ``KEY=value`` of ``match`` (our own processes only)."""
    me = os.getuid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if entry.stat().st_uid != me:
                continue
        except OSError:
            continue
        env = environ_of(pid)
        if env and all(env.get(k) == v for k, v in match.items()) and not is_zombie(pid):
            found.append(pid)
    return sorted(found)


def step_processes(home: Path, **match: str) -> list[int]:
    """``argus-task`` processes started for the Argus home ``home`` (and ``match``, e.g. ARGUS_RUN_ID)."""
    pids = processes_with_env(ARGUS_HOME=str(home), **match)
    return [p for p in pids if any("argus-task" in part for part in cmdline_of(p)[:2])]


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_until(predicate, timeout_s: float, interval_s: float = 1.0, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; that value, or TimeoutError naming ``what``."""
    deadline = time.time() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
