"""An audited alias move: the write order around :meth:`Registry.move_alias`, and the recovery after a crash.

Everything below runs while the model's registry lock is held (the lock that serialises every
champion move of Argus, :mod:`argus_tasks.models.registry_lock`):

1. **reconcile**: finish whatever an earlier writer left behind (below);
2. **intent**: take the next sequence number; write ``<seq>.intent.json`` to the store, then the
   registry's ``argus.audit.<alias>.pending`` tag. Either write failing stops here: nothing moved;
3. **move**: :meth:`Registry.move_alias` (the alias, the post-move check, the epoch tag
   ``argus.<alias>_epoch`` carrying this lock holder's token);
4. **final**: ``<seq>.json`` in the store, the registry tag ``argus.audit.<alias>.<seq>``, then the
   pending tag is deleted.

A crash (SIGKILL, an evicted pod, a lost node) can stop it anywhere, which leaves one of:

* nothing written (before 2): nothing moved, nothing to record;
* an intent without a move (between 2 and 3, or the move failed): reconcile finds the alias still
  where the intent found it and the epoch tag without the intent's token: the entry is appended
  as ``aborted``;
* an intent and a move (between 3 and 4, or inside 3 after the alias was set): reconcile finds
  the alias at the intent's ``to``, or the epoch tag carrying the intent's lock token: the entry is
  appended as ``committed`` with ``recovered: true`` and who recovered it;
* a final entry in one place only (inside 4): reconcile copies it to the other.

Reconcile runs at the start of every audited operation (promote, rollback, the judge's move) and in
``argus-task audit`` when it finds an intent or drift, always under the lock. It also appends an
``observed`` entry when the alias is found where no entry puts it (moved in the MLflow UI, or set
before the log existed), so the log's chain ``from -> to`` always ends at the real alias.

Test hook: ``ARGUS_FAULT_CRASH_AT=audit:after-intent`` or ``audit:after-move`` ends the process with
``os._exit(137)`` at that point, as a SIGKILL would (tests/models/test_audit_crash.py).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field

from argus_tasks.models.audit_log import MAX_REASON_CHARS, AuditLog, last_moved

log = logging.getLogger(__name__)
CRASH_ENV = "ARGUS_FAULT_CRASH_AT"
TRIGGERED_BY_ENV = "ARGUS_TRIGGERED_BY"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def crash_point(name: str) -> None:
    """Die here, like a SIGKILL, when ``$ARGUS_FAULT_CRASH_AT`` names this point (tests only)."""
    if os.environ.get(CRASH_ENV) == name:
        log.error("fault injection: crashing at %s", name)
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stderr.flush()
        os._exit(137)


def who_of(ctx, approved_by: str | None = None, user: str | None = None) -> dict:
    """Who moves the alias: the person (trigger or approval) when known, and the DAG run always."""
    user = user or os.environ.get(TRIGGERED_BY_ENV) or None
    return {"user": user, "dag_run": f"{ctx.dag_id}/{ctx.run_id}", "task": ctx.task_id or None,
            "try": ctx.try_number, "approved_by": approved_by, "host": socket.gethostname()}


def describe_who(who: dict | None) -> str:
    who = who or {}
    parts = [p for p in (who.get("user"), f"approved by {who['approved_by']}" if who.get("approved_by") else None,
                         who.get("dag_run")) if p]
    return ", ".join(parts) or "unknown"


@dataclass
class AuditTrail:
    """What an audited move records about itself: kind, who, why and where the evidence is."""

    store_root: str
    kind: str  # promotion | rollback | judge
    who: dict
    reason: str = ""
    evidence: dict = field(default_factory=dict)
    last_entry: dict | None = None

    def log(self, registry, model: str, alias: str) -> AuditLog:
        return AuditLog(registry, self.store_root, model, alias)

    def _entry(self, seq: int, model: str, alias: str, frm, to, held, state: str, **extra) -> dict:
        return {"seq": seq, "entry_id": uuid.uuid4().hex, "model": model, "alias": alias, "kind": self.kind,
                "state": state, "from": None if frm is None else str(frm), "to": None if to is None else str(to),
                "who": self.who, "when": now(), "reason": (self.reason or "")[:MAX_REASON_CHARS],
                "evidence": self.evidence, "lock_token": getattr(held, "token", None), "recovered": False, **extra}

    # ---- recovery ------------------------------------------------------------------------------
    def reconcile(self, registry, model: str, alias: str) -> list[dict]:
        """Complete interrupted intents, copy entries one place lacks, record drift; returns what it appended."""
        audit = self.log(registry, model, alias)
        snap = audit.snapshot()
        current = registry.alias(model, alias)
        current_v = str(current.version) if current is not None else None
        epoch = registry.epoch(model, alias)
        appended = []
        for intent in audit.pending(snap):
            by_token = intent.get("lock_token") and epoch.get("token") == intent.get("lock_token")
            moved = bool(by_token) or (current_v == intent.get("to") and intent.get("to") != intent.get("from"))
            final = {**intent, "state": "committed" if moved else "aborted",
                     "outcome": "moved" if moved else "not_moved", "recovered": True, "recovered_at": now(),
                     "recovered_by": self.who,
                     "note": (f"completed after a crash between the alias move and the audit write: {model}@{alias} "
                              f"is at v{current_v}" if moved else
                              f"the writer stopped before its move took effect: {model}@{alias} stayed at "
                              f"v{current_v}")}
            if moved and by_token:
                final["epoch"] = epoch.get("epoch")
            audit.write_final(final)
            appended.append(final)
            log.warning("audit %s@%s: recovered entry %d (%s v%s -> v%s): %s", model, alias, final["seq"],
                        final["state"], final["from"], final["to"], final["note"])
        snap = audit.snapshot()
        (store_finals, _), (reg_finals, pending) = snap["store"], snap["registry"]
        for seq in sorted(set(reg_finals) - set(store_finals)):
            audit.write_store(reg_finals[seq])
        for seq in sorted(set(store_finals) - set(reg_finals)):
            audit.write_registry(store_finals[seq])
        if pending is not None and int(pending.get("seq", -1)) in (set(store_finals) | set(reg_finals)):
            audit.clear_pending(int(pending["seq"]))
        last = last_moved(audit.entries())
        last_to = last["to"] if last else None
        if current_v != last_to:
            seq = audit.next_seq()
            entry = self._entry(seq, model, alias, last_to, current_v, None, "observed", outcome="found",
                                note=(f"{model}@{alias} was found at v{current_v} where no audit entry puts it: moved "
                                      "outside Argus's registry lock (the MLflow UI, another tool) or before the "
                                      "audit log existed"), epoch_record=epoch)
            entry.update(kind="observed", who={"user": None, "dag_run": None, "observed_by": self.who},
                         reason="", evidence={"epoch_tag": epoch})
            audit.write_final(entry, clear_pending=False)
            appended.append(entry)
            log.warning("audit %s@%s: %s", model, alias, entry["note"])
        return appended

    # ---- the audited operations ----------------------------------------------------------------
    def move(self, registry, model: str, alias: str, version, previous, held) -> tuple[str, str]:
        """``Registry.move_alias`` between an intent and a final entry (see the module docstring)."""
        audit = self.log(registry, model, alias)
        self.reconcile(registry, model, alias)
        intent = self._entry(audit.next_seq(), model, alias, previous, version, held, "intent")
        audit.write_intent(intent)
        crash_point("audit:after-intent")
        outcome, note = registry.move_alias(model, alias, version, previous, held)
        crash_point("audit:after-move")
        final = {**intent, "state": "committed" if outcome == "moved" else "aborted", "outcome": outcome,
                 "note": note, "committed_at": now()}
        if outcome == "moved":
            final["epoch"] = registry.epoch(model, alias).get("epoch")
        audit.write_final(final)
        self.last_entry = final
        log.info("audit %s@%s entry %d: %s %s v%s -> v%s (%s)", model, alias, final["seq"], self.kind,
                 final["state"], final["from"], final["to"], describe_who(self.who))
        return outcome, note

    def refused(self, registry, model: str, alias: str, version, current, outcome: str, note: str, held) -> dict:
        """Record a move that was asked for and refused before anything moved (e.g. a stale comparison)."""
        audit = self.log(registry, model, alias)
        self.reconcile(registry, model, alias)
        entry = self._entry(audit.next_seq(), model, alias, current, version, held, "refused", outcome=outcome,
                            note=note)
        audit.write_final(entry, clear_pending=False)
        self.last_entry = entry
        return entry
