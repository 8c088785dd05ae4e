"""Live progress of a local DAG run in the terminal: ``python -m argus_airflow.demo_progress``.

``make demo`` runs its DAGs with the Airflow log in a file. This watcher reads the run's task instances
from the local metadata database (SQLite, read-only) about once a second and prints one line per step as it
starts and ends (step, condition, elapsed, outcome), the training progress lines of the step log (step n/N,
images/s, ETA), and an estimate of the time left, from the durations of the DAG's last successful run. It
only reads: the DAG run goes on if the watcher dies. Standard library only (no Airflow import: it starts in
well under a second).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DONE = {"success": "ok", "failed": "FAILED", "upstream_failed": "upstream failed", "skipped": "skipped",
        "removed": "removed"}
RUN_DONE = {"success", "failed"}
# the trainer's and the segmenter's progress lines (models/trainer.py, models/segmenter.py)
PROGRESS = re.compile(r"(?P<what>segmenter epoch \d+/\d+ step \d+/\d+|step \d+/\d+)\b.*?"
                      r"(?P<rate>[\d.]+) (?:images|it)/s.*?eta (?P<eta>\d+)s")
PROGRESS_EVERY_S = 10.0
NO_RUN_WAIT_S = 60.0  # without --pid: how long to wait for the run to appear


@dataclass(frozen=True)
class Task:
    task_id: str
    map_index: int
    label: str | None  # the condition of a mapped task (its rendered map index), None when not mapped
    state: str | None
    start: float | None  # epoch seconds
    end: float | None

    @property
    def name(self) -> str:
        short = self.task_id.rsplit(".", 1)[-1]  # "condition.train" -> "train"
        if self.map_index < 0:
            return short
        return f"{short}[{self.label or self.map_index}]"


def _epoch(value) -> float | None:
    """A timestamp of Airflow's SQLite database (UTC, naive or with an offset) as epoch seconds."""
    if not value:
        return None
    stamp = datetime.fromisoformat(str(value))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Watcher:
    """Turns snapshots of a run's task instances and new step-log lines into terminal lines (pure)."""

    def __init__(self, expected: dict[str, float] | None = None):
        self.expected = expected or {}  # task name -> seconds, from the last successful run
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.running: str | None = None
        self.last_progress = 0.0

    def update(self, tasks: list[Task], now: float) -> list[str]:
        events = []  # (when, 0 = ended / 1 = started, task, line): since the last snapshot, in time order
        for t in tasks:
            if t.start is not None and t.name not in self.started and t.state not in DONE:
                self.started.add(t.name)
                events.append((t.start, 1, t, f"  > {t.name:<28} started{self._eta_of(t)}"))
            if t.state in DONE and t.name not in self.ended:
                self.ended.add(t.name)
                took = f"{t.end - t.start:6.1f}s" if t.start is not None and t.end is not None else "     -"
                mark = "x" if t.state == "failed" else "="
                events.append((t.end if t.end is not None else now, 0, t,
                               f"  {mark} {t.name:<28} {took}  {DONE[t.state]}{self._left(tasks, now)}"))
        events.sort(key=lambda e: (e[0], e[1], e[2].name))
        for _, order, task, _ in events:
            if order == 1:
                self.running = task.name
        return [line for *_, line in events]

    def progress(self, line: str, now: float) -> str | None:
        m = PROGRESS.search(line)
        if m is None or now - self.last_progress < PROGRESS_EVERY_S:
            return None
        self.last_progress = now
        what = m["what"].removeprefix("segmenter ")
        return f"    {self.running or 'step'}: {what}, {float(m['rate']):.1f}/s, eta {clock(float(m['eta']))}"

    def _eta_of(self, task: Task) -> str:
        secs = self.expected.get(task.name)
        return f" (last run: {clock(secs)})" if secs else ""

    def _left(self, tasks: list[Task], now: float) -> str:
        if not self.expected:
            return ""
        names = {t.name: t for t in tasks}
        left = 0.0
        for name, secs in self.expected.items():
            t = names.get(name)
            if t is None or t.state is None or t.state not in DONE:
                elapsed = now - t.start if t is not None and t.start is not None else 0.0
                left += max(secs - elapsed, 0.0)
        return f"   ~{clock(left)} left" if left >= 1 else ""


class RunDatabase:
    """The task instances of one DAG run, read from Airflow's SQLite metadata database."""

    def __init__(self, path: Path):
        self.path = path

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql, args).fetchall()

    def newest_run(self, dag_id: str, since: float) -> tuple[str, str] | None:
        rows = self._query("select run_id, state, created_at from dag_run where dag_id = ? "
                           "order by id desc limit 1", (dag_id,))
        if not rows:
            return None
        run_id, state, created = rows[0]  # created_at: start_date is the logical date under `dags test`
        return (run_id, state) if (_epoch(created) or 0.0) >= since - 5 else None

    def tasks(self, dag_id: str, run_id: str) -> list[Task]:
        labels = self._conditions(dag_id, run_id)
        rows = self._query("select task_id, map_index, rendered_map_index, state, start_date, end_date "
                           "from task_instance where dag_id = ? and run_id = ?", (dag_id, run_id))
        out = []
        for task_id, idx, rendered, state, start, end in rows:
            label = rendered or (labels[idx] if 0 <= idx < len(labels) else None)
            out.append(Task(task_id, idx, label, state, _epoch(start), _epoch(end)))
        return out

    def _conditions(self, dag_id: str, run_id: str) -> list[str]:
        rows = self._query("select value from xcom where dag_id = ? and run_id = ? and task_id = "
                           "'select_conditions' and key = 'return_value'", (dag_id, run_id))
        try:
            value = json.loads(rows[0][0]) if rows else []
            return [str(v) for v in value] if isinstance(value, list) else []
        except (TypeError, ValueError):
            return []

    def expected(self, dag_id: str, except_run: str) -> dict[str, float]:
        """Step durations of the DAG's last successful run (the basis of "time left")."""
        rows = self._query("select run_id from dag_run where dag_id = ? and state = 'success' and run_id != ? "
                           "order by id desc limit 1", (dag_id, except_run))
        if not rows:
            return {}
        return {t.name: t.end - t.start for t in self.tasks(dag_id, rows[0][0])
                if t.state == "success" and t.start is not None and t.end is not None}


class LogFollower:
    """New lines of a growing log file."""

    def __init__(self, path: Path | None):
        self.path, self.offset = path, 0

    def new_lines(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        cut = chunk.rfind(b"\n") + 1
        self.offset += cut
        return chunk[:cut].decode("utf-8", "replace").splitlines()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(db: RunDatabase, dag_id: str, log: Path | None, pid: int | None, interval: float = 1.0,
          out=sys.stdout, since: float | None = None) -> str | None:
    """Print the progress of the newest run of ``dag_id`` until it ends (or ``pid`` exits); its state."""
    since = time.time() if since is None else since
    follower, watcher, run, state = LogFollower(log), None, None, None
    began = time.time()
    while True:
        alive = _alive(pid)
        try:
            if run is None and db.path.exists():
                found = db.newest_run(dag_id, since)
                if found:
                    run = found[0]
                    watcher = Watcher(db.expected(dag_id, run))
                    print(f"  {dag_id}: run {run}", file=out, flush=True)
            if run is not None and watcher is not None:
                now = time.time()
                lines = watcher.update(db.tasks(dag_id, run), now)
                lines += [p for p in (watcher.progress(line, now) for line in follower.new_lines()) if p]
                for line in lines:
                    print(f"[{clock(now - began)}]{line}", file=out, flush=True)
                state = (db.newest_run(dag_id, since) or (run, None))[1]
        except sqlite3.Error:
            pass  # the database is being written or migrated: read it again on the next tick
        if run is None and pid is None and time.time() - began > NO_RUN_WAIT_S:
            print(f"  no run of {dag_id} started after {since:.0f} in {db.path} within {NO_RUN_WAIT_S:.0f} s: "
                  "check AIRFLOW_HOME / --db and --since", file=out, flush=True)
            return None
        if state in RUN_DONE or not alive:
            if state in RUN_DONE:
                print(f"[{clock(time.time() - began)}]  {dag_id}: the run ended {state}", file=out, flush=True)
            return state
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dag-id", required=True)
    ap.add_argument("--log", type=Path, help="the run's Airflow log (for training progress lines)")
    ap.add_argument("--pid", type=int, help="stop when this process (the DAG run) exits")
    ap.add_argument("--db", type=Path,
                    default=Path(os.environ.get("AIRFLOW_HOME", "airflow")) / "airflow.db")
    ap.add_argument("--since", type=float, help="only a run started after this epoch time (default: now)")
    args = ap.parse_args(argv)
    watch(RunDatabase(args.db), args.dag_id, args.log, args.pid, since=args.since)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
