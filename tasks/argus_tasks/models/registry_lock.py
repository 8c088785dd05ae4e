"""A lock kept in the MLflow model registry itself: the one thing every writer shares.

Two Airflow deployments, or an orphaned pod next to its retry, can share one MLflow registry but
no file system, so a ``flock`` excludes nothing between them. MLflow has no compare-and-set on
aliases or tags, but it has one atomic step: **creating a model version**. The server allocates
the number as ``max(existing) + 1`` under the database's unique key on ``(name, version)`` (a
concurrent creator that picked the same number fails and picks again), and a deleted version
keeps its row, so numbers are never reused. The lock is a ticket lock on that sequence:

1. *take a ticket*: create a version of the registered model :data:`LOCK_MODEL` tagged with the
   lock key, a unique token and the holder (``argus.lock.*``). Its number ``t`` is larger than
   every ticket that already existed, and every ticket created later is larger than ``t``;
2. *wait your turn*: the holder is the lowest live ticket of the key. Poll until no live ticket
   of the key is lower than ``t``;
3. *release*: delete the ticket (soft delete: it leaves the live set, its number stays used).

Two writers can therefore hold the same key only if one of them was declared dead: a live
ticket renews ``argus.lock.beat`` every ``lease_s / 6`` seconds from a background thread, and
a waiter that has watched a lower ticket's beat stay unchanged for ``lease_s`` deletes it as
abandoned (a holder killed with SIGKILL, a vanished pod). A holder checks :meth:`Held.alive`
before and after its writes (fencing): a ticket that was deleted means its lease was broken.

Limits: it needs a database-backed registry (``sqlite``/``postgresql``/``mysql`` backend, direct
or through ``mlflow server``): the file store does not allocate numbers atomically. A process
that stalls as a whole for longer than ``lease_s`` (or whose registry connection stays down that
long) loses the lock; it finds out at its next :meth:`Held.alive` check. A writer that does not
use this lock (an older Argus, a person in the MLflow UI) is not excluded; the post-move check
in :meth:`argus_tasks.models.registry_adapter.Registry.move_alias` detects that it moved the alias.
A deployment with ``MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX`` must let the
``argus-lock:/<key>`` source through, and the writers' MLflow user needs to create and delete
versions of :data:`LOCK_MODEL`.

:func:`promotion_lock` (a ``flock``) is kept as a local fast path in front of it, between the
processes of one machine; correctness does not depend on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from argus_tasks.contract import TransientStepError

log = logging.getLogger(__name__)

LOCK_MODEL = "argus-registry-locks"
KEY, TOKEN, HOLDER, BEAT = "argus.lock.key", "argus.lock.token", "argus.lock.holder", "argus.lock.beat"
DEFAULT_LEASE_S = 60.0
DEFAULT_TIMEOUT_S = 600.0


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise TransientStepError(f"${name}={raw!r} is not a number of seconds") from None


def holder_label(what: str = "") -> str:
    """Who holds a lock, for the logs of whoever waits: ``dag/run host pid``."""
    return f"{what} {socket.gethostname()} pid {os.getpid()}".strip()


@dataclass
class Held:
    """A held ticket. :meth:`alive` is False once another writer deleted it as abandoned."""

    registry: object  # argus_tasks.models.registry_adapter.Registry
    key: str
    ticket: str
    token: str
    holder: str
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def alive(self) -> bool:
        if self.lost:
            return False
        found = self.registry.lock_ticket(self.ticket)
        if found is None or found.tags.get(TOKEN) != self.token:
            self.lost = True
        return not self.lost

    def _beat(self, every_s: float) -> None:
        n = 0
        while not self._stop.wait(every_s):
            n += 1
            try:
                if self.registry.lock_ticket(self.ticket) is None:
                    self.lost = True
                    log.error("the registry lock %s (ticket %s) was taken away as abandoned", self.key, self.ticket)
                    return
                self.registry.client.set_model_version_tag(LOCK_MODEL, self.ticket, BEAT, str(n))
            except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the lease
                log.warning("could not renew the registry lock %s (ticket %s): %s", self.key, self.ticket, exc)


def _take_ticket(registry, key: str, token: str, holder: str) -> str:
    """Create this writer's ticket; a create whose answer was lost is found again by its token."""
    tags = {KEY: key, TOKEN: token, HOLDER: holder, BEAT: "0"}
    for attempt in range(3):
        try:
            mv = registry.client.create_model_version(LOCK_MODEL, f"argus-lock:/{key}", tags=tags,
                                                      description=f"promotion lock ticket of {key}",
                                                      await_creation_for=0)
            return str(mv.version)
        except Exception as exc:  # noqa: BLE001
            error = registry.classify(exc, f"taking the registry lock of {key}")
            if not isinstance(error, TransientStepError) or attempt == 2:
                raise error from exc
            mine = registry.lock_tickets(key, token=token)
            if mine:
                return str(mine[0].version)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def registry_lock(registry, key: str, holder: str = "", lease_s: float | None = None,
                  timeout_s: float | None = None, poll_s: float = 0.25):
    """Hold the registry lock of ``key`` (e.g. a model name); yields a :class:`Held`.

    ``lease_s`` (default ``$ARGUS_REGISTRY_LOCK_LEASE_S`` or 60) is how long a ticket may go
    without a beat before waiters take it for abandoned; ``timeout_s`` (default
    ``$ARGUS_REGISTRY_LOCK_TIMEOUT_S`` or 600) how long to wait before a TransientStepError.
    """
    lease_s = lease_s if lease_s is not None else _env_float("ARGUS_REGISTRY_LOCK_LEASE_S", DEFAULT_LEASE_S)
    timeout_s = timeout_s if timeout_s is not None else _env_float("ARGUS_REGISTRY_LOCK_TIMEOUT_S", DEFAULT_TIMEOUT_S)
    holder = holder or holder_label()
    registry.ensure_model(LOCK_MODEL, "Argus promotion locks: one version per lock ticket; do not use as a model")
    token = uuid.uuid4().hex
    ticket = _take_ticket(registry, key, token, holder)
    held = Held(registry, key, ticket, token, holder)
    beat = threading.Thread(target=held._beat, args=(max(lease_s / 6.0, 0.05),), daemon=True,
                            name=f"argus-lock-beat-{key}")
    beat.start()
    try:
        _wait_turn(registry, held, lease_s, timeout_s, poll_s)
        yield held
    finally:
        held._stop.set()
        beat.join(timeout=5)
        try:  # not found: another writer took it for abandoned (Held.alive said so)
            registry._lookup(f"releasing the registry lock of {key}", registry.client.delete_model_version,
                             LOCK_MODEL, ticket)
        except Exception as exc:  # noqa: BLE001 - the lease frees it for the next writer
            log.warning("could not release the registry lock %s (ticket %s): %s; it expires after %.0fs",
                        key, ticket, exc, lease_s)


def _wait_turn(registry, held: Held, lease_s: float, timeout_s: float, poll_s: float) -> None:
    started = time.monotonic()
    watched: dict[str, tuple[str, float]] = {}  # ticket -> (beat seen, since when)
    announced = None
    while True:
        try:
            ahead = [v for v in registry.lock_tickets(held.key) if int(v.version) < int(held.ticket)]
        except TransientStepError as exc:  # a blip while waiting: keep waiting until the deadline
            if time.monotonic() - started >= timeout_s:
                raise
            log.warning("registry lock %s: %s; polling again", held.key, exc)
            time.sleep(poll_s * 4)
            continue
        if not ahead:
            log.info("registry lock %s taken (ticket %s) after %.1fs", held.key, held.ticket,
                     time.monotonic() - started)
            return
        now = time.monotonic()
        first = min(ahead, key=lambda v: int(v.version))
        if announced != first.version:
            log.info("registry lock %s is held by %s (ticket %s): waiting", held.key, first.tags.get(HOLDER, "?"),
                     first.version)
            announced = first.version
        for v in ahead:
            beat = v.tags.get(BEAT, "")
            seen, since = watched.get(str(v.version), (None, now))
            if seen != beat:
                watched[str(v.version)] = (beat, now)
            elif now - since >= lease_s:
                log.warning("registry lock %s: ticket %s of %s has not renewed its lease for %.0fs: "
                            "taking it for abandoned", held.key, v.version, v.tags.get(HOLDER, "?"), now - since)
                with contextlib.suppress(Exception):
                    registry.client.delete_model_version(LOCK_MODEL, str(v.version))
        if now - started >= timeout_s:
            raise TransientStepError(
                f"could not take the registry lock of {held.key} within {timeout_s:.0f}s: "
                f"{first.tags.get(HOLDER, '?')} (ticket {first.version} of {LOCK_MODEL}) is promoting the same "
                "model; the step will be retried")
        time.sleep(poll_s)


# ---- the local fast path: a flock next to a local store ------------------------------------------
def lock_dir(store_root: str) -> Path:
    """Where promotion locks live: under a local store root, else in the local scratch folder."""
    from argus_tasks.store import is_remote

    if not is_remote(store_root):
        base = Path(store_root)
    else:
        base = Path(os.environ.get("ARGUS_SCRATCH") or tempfile.gettempdir()) / "argus-locks"
    return base / "locks"


@contextlib.contextmanager
def promotion_lock(store_root: str, key: str, timeout_s: float = 600.0, poll_s: float = 0.2):
    """An exclusive ``flock`` per ``key`` between the processes of one machine (one local store).

    Only a fast path in front of :func:`registry_lock`: with an ``s3://`` store it lives in the
    pod's scratch folder and excludes nothing between pods or deployments.
    """
    folder = lock_dir(store_root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.lock"
    fh = open(path, "a+")  # noqa: SIM115 - held for the duration of the context
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() >= deadline:
                    raise TransientStepError(
                        f"could not take the promotion lock {path} within {timeout_s:.0f}s: another run is "
                        "promoting the same model; the step will be retried") from None
                time.sleep(poll_s)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "since": time.time()}))
        fh.flush()
        yield path
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()
