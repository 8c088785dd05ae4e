"""The append-only audit log of champion alias moves: where entries live and how they are read back.

MLflow keeps no history of alias moves, so every move of ``<model>@champion`` made by Argus
(promotion, rollback, the judge's champion) is recorded here, in two places:

* the **store**: one write-once JSON file per entry, ``<store>/audit/<model>/<alias>/<seq>.json``
  (``<seq>`` is six digits), next to the intent written before the move, ``<seq>.intent.json``;
* the **MLflow registry**: the registered-model tag ``argus.audit.<alias>.<seq>`` of the model holds
  the same entry, and ``argus.audit.<alias>.pending`` the intent of a move under way. Every
  deployment sharing the registry sees them; a store that lacks an entry gets it copied over at the
  next reconcile.

Entries are only ever added (a file is never rewritten with other content; a tag of a sequence
number is written once with the final entry). Sequence numbers are allocated under the model's
registry lock (:mod:`argus_tasks.models.registry_lock`), the lock that serialises the moves
themselves, so concurrent writers never share a number.

An entry::

    {"seq": 3, "entry_id": "...", "model": "argus-weather-fog", "alias": "champion",
     "kind": "promotion" | "rollback" | "judge" | "observed",
     "state": "committed" | "aborted" | "refused" | "observed", "outcome": "moved" | "stale" | ...,
     "from": "2", "to": "3", "who": {"user", "dag_run", "approved_by", "host"}, "when": ISO time,
     "reason": "...", "evidence": {"decision", "run_folder", "mlflow_run_id", ...},
     "lock_token": "...", "epoch": 7, "note": "...", "recovered": false}

``committed``: the alias moved; ``aborted``: an intent whose move did not happen (a crash before
it, or a lost lock); ``refused``: a move that was asked for and refused before anything moved (the
champion was not the one the request was made against); ``observed``: the alias was found somewhere
no entry explains (moved outside Argus, or before the log existed). The write order and the
recovery are in :mod:`argus_tasks.models.audit_trail` and docs/rollback.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

from argus_tasks.contract import TransientStepError
from argus_tasks.store import atomic_write_bytes, is_remote, write_error

log = logging.getLogger(__name__)

ENTRY_TAG = "argus.audit.{alias}.{seq:06d}"
PENDING_TAG = "argus.audit.{alias}.pending"
_ENTRY_FILE = re.compile(r"^(\d{6})\.json$")
_INTENT_FILE = re.compile(r"^(\d{6})\.intent\.json$")
MAX_REASON_CHARS = 1000
MOVED_STATES = ("committed", "observed")  # entries after which the alias is at their "to"


def encode(entry: dict) -> str:
    return json.dumps(entry, sort_keys=True, default=str, separators=(",", ":"))


class StoreFiles:
    """Files under ``<store>/<prefix>``, outside any run folder: atomic, write-once (a local link or one PUT)."""

    def __init__(self, root: str, prefix: str):
        self.root, self.prefix = root.rstrip("/"), prefix.strip("/")
        self.remote = is_remote(self.root)
        if self.remote:
            import fsspec

            self.fs, _ = fsspec.core.url_to_fs(self.root)

    def url(self, rel: str = "") -> str:
        base = f"{self.root}/{self.prefix}"
        return f"{base}/{rel}" if rel else base

    def list(self) -> list[str]:
        if self.remote:
            if not self.fs.exists(self.url()):
                return []
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.url(), detail=False))
        folder = Path(self.url())
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def read_json(self, rel: str) -> dict:
        raw = self.fs.cat_file(self.url(rel)) if self.remote else Path(self.url(rel)).read_bytes()
        return json.loads(raw)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.url(rel)) if self.remote else Path(self.url(rel)).exists()

    def write(self, rel: str, data: bytes) -> None:
        """A file that may be replaced (the latest plot); atomic."""
        try:
            if self.remote:
                with self.fs.open(self.url(rel), "wb") as fh:
                    fh.write(data)
            else:
                atomic_write_bytes(Path(self.url(rel)), data)
        except OSError as exc:
            raise _wrap(self.url(rel), data, exc) from exc

    def write_once(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data``; False when it exists with the same bytes; FileExistsError otherwise."""
        if self.exists(rel):
            if self._read(rel) == data:
                return False
            raise FileExistsError(f"{self.url(rel)} exists with other content: audit entries are never rewritten")
        try:
            if self.remote:  # one PUT is atomic; writers of one sequence number are serialised by the registry lock
                with self.fs.open(self.url(rel), "wb") as fh:
                    fh.write(data)
                return True
            path = Path(self.url(rel))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.link(tmp, path)  # fails if the name exists: never replaces an entry
            finally:
                os.unlink(tmp)
            _fsync_dir(path.parent)
            return True
        except FileExistsError:
            raise
        except OSError as exc:
            raise _wrap(self.url(rel), data, exc) from exc

    def _read(self, rel: str) -> bytes:
        return self.fs.cat_file(self.url(rel)) if self.remote else Path(self.url(rel)).read_bytes()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _wrap(where: str, data: bytes, exc: OSError) -> Exception:
    err = write_error(where, len(data), exc)
    return err if err is not exc else TransientStepError(f"could not write the audit entry {where}: {exc}")


class AuditLog:
    """The audit log of ``model@alias``: the store's files and the registry's tags, merged by sequence number."""

    def __init__(self, registry, store_root: str, model: str, alias: str = "champion"):
        self.registry, self.model, self.alias = registry, model, alias
        self.files = StoreFiles(store_root, f"audit/{model}/{alias}")

    # ---- reading -------------------------------------------------------------------------------
    def _tags(self) -> dict:
        found = self.registry._lookup(f"the lookup of {self.model}", self.registry.client.get_registered_model,
                                      self.model)
        return dict(getattr(found, "tags", None) or {})

    def _store(self) -> tuple[dict[int, dict], dict[int, dict]]:
        finals, intents = {}, {}
        for name in self.files.list():
            for pattern, into in ((_ENTRY_FILE, finals), (_INTENT_FILE, intents)):
                m = pattern.match(name)
                if m:
                    try:
                        into[int(m.group(1))] = self.files.read_json(name)
                    except (OSError, ValueError) as exc:
                        log.warning("audit file %s is unreadable (%s): skipped", self.files.url(name), exc)
        return finals, intents

    def _registry(self) -> tuple[dict[int, dict], dict | None]:
        prefix = f"argus.audit.{self.alias}."
        finals, pending = {}, None
        for key, value in self._tags().items():
            if not key.startswith(prefix):
                continue
            try:
                entry = json.loads(value)
            except ValueError:
                log.warning("registered-model tag %s of %s is not JSON: skipped", key, self.model)
                continue
            suffix = key[len(prefix):]
            if suffix == "pending":
                pending = entry
            elif suffix.isdigit():
                finals[int(suffix)] = entry
        return finals, pending

    def snapshot(self) -> dict:
        """Everything both places hold: ``{"store": (finals, intents), "registry": (finals, pending)}``."""
        return {"store": self._store(), "registry": self._registry()}

    def entries(self, snap: dict | None = None) -> list[dict]:
        """The final entries, in sequence order (the store's copy where both hold one)."""
        snap = snap or self.snapshot()
        merged = {**snap["registry"][0], **snap["store"][0]}
        return [merged[k] for k in sorted(merged)]

    def pending(self, snap: dict | None = None) -> list[dict]:
        """Intents that have no final entry yet: a move under way, or one interrupted by a crash."""
        snap = snap or self.snapshot()
        finals = set(snap["store"][0]) | set(snap["registry"][0])
        intents = dict(snap["store"][1])
        if snap["registry"][1] is not None:
            intents.setdefault(int(snap["registry"][1]["seq"]), snap["registry"][1])
        return [intents[k] for k in sorted(intents) if k not in finals]

    def next_seq(self, snap: dict | None = None) -> int:
        snap = snap or self.snapshot()
        used = set(snap["store"][0]) | set(snap["store"][1]) | set(snap["registry"][0])
        if snap["registry"][1] is not None:
            used.add(int(snap["registry"][1]["seq"]))
        return max(used, default=0) + 1

    # ---- writing (under the model's registry lock) ----------------------------------------------
    def write_intent(self, entry: dict) -> None:
        """Before the move: the store's intent file, then the registry's pending tag."""
        self.files.write_once(f"{entry['seq']:06d}.intent.json", encode(entry).encode())
        self.registry._call(f"recording the audit intent of {self.model}@{self.alias}",
                            self.registry.client.set_registered_model_tag, self.model,
                            PENDING_TAG.format(alias=self.alias), encode(entry))

    def write_final(self, entry: dict, clear_pending: bool = True) -> None:
        """After the move: the store's entry file, the registry's entry tag, then the pending tag goes."""
        self.write_store(entry)
        self.write_registry(entry)
        if clear_pending:
            self.clear_pending(entry["seq"])

    def write_store(self, entry: dict) -> None:
        try:
            self.files.write_once(f"{entry['seq']:06d}.json", encode(entry).encode())
        except FileExistsError:
            log.warning("audit entry %s of %s@%s exists in the store with other content: kept as it is",
                        entry["seq"], self.model, self.alias)

    def write_registry(self, entry: dict) -> None:
        self.registry._call(f"recording the audit entry of {self.model}@{self.alias}",
                            self.registry.client.set_registered_model_tag, self.model,
                            ENTRY_TAG.format(alias=self.alias, seq=entry["seq"]), encode(entry))

    def clear_pending(self, seq: int) -> None:
        _, pending = self._registry()
        if pending is not None and int(pending.get("seq", -1)) == int(seq):
            self.registry._lookup(f"clearing the audit intent of {self.model}@{self.alias}",
                                  self.registry.client.delete_registered_model_tag, self.model,
                                  PENDING_TAG.format(alias=self.alias))


def last_moved(entries: list[dict]) -> dict | None:
    """The last entry after which the alias was at its ``to`` (committed or observed)."""
    moved = [e for e in entries if e.get("state") in MOVED_STATES]
    return moved[-1] if moved else None
