"""A thin adapter between the pipeline and the MLflow model registry.

It only moves aliases, registers versions and writes tags; every judgement is made elsewhere
(:mod:`argus_tasks.models.decision`). What it guarantees:

* **dedup by run**: :meth:`Registry.register` first looks for a version of the model tagged with
  the same identity (Airflow run id + condition); a retried step gets that version back instead
  of creating a second one;
* **serialised promotions, across deployments**: :meth:`Registry.apply_promotion` holds the
  model's lock *in the MLflow registry* (:mod:`argus_tasks.models.registry_lock`: a ticket lock
  on the registry's atomic version numbering, with a lease for dead holders), so two Airflow
  deployments or an orphaned pod sharing one registry are excluded too. Under it, it compares the
  champion it is about to replace with the champion the evaluation saw (compare-and-set): if
  another run moved it in between, nothing moves (``stale``). :meth:`Registry.move_alias`
  re-reads the alias after the move and checks the lock is still held; a move that did not
  stick, or was made after the lease was broken, is reported as ``conflict`` and a broken-lease
  move is rolled back, so a loser never leaves the alias on its version. Each champion move
  bumps the registered-model tag ``argus.champion_epoch`` (epoch, version, writer token);
  :func:`~argus_tasks.models.registry_lock.promotion_lock` (a ``flock`` next to a local store)
  is only a local fast path;
* **idempotence**: applying a decision that is already in place changes nothing and says so.

Errors: a version, model or alias that does not exist reads as None (``RESOURCE_DOES_NOT_EXIST``
or "alias ... not found" only: a proxy's 404 page is not "no champion"). Refusals that a retry
cannot fix (permission, invalid parameter) are a :class:`PermanentStepError`; everything else the
registry or its connection raises (timeouts, 5xx, connection resets, a locked database) is a
:class:`TransientStepError` naming the operation and the tracking URI (Airflow retries, exit 75).
"""

from __future__ import annotations

import json
import logging
import time

from argus_tasks.contract import PermanentStepError, StepError, TransientStepError
from argus_tasks.models.registry_lock import promotion_lock  # noqa: F401 - the local fast path, used with it

log = logging.getLogger(__name__)

SEGMENTER_MODEL = "argus-downstream-segmenter"
CHAMPION, CHALLENGER = "champion", "challenger"
MAX_TAG_CHARS = 4500
EPOCH_TAG = "argus.{alias}_epoch"
# refusals a retry cannot fix; anything else from the registry or its connection is transient
PERMANENT_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED",
                             "INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "FEATURE_DISABLED",
                             "NOT_IMPLEMENTED"})
_REGISTRY_MODULES = {"mlflow", "requests", "urllib3", "sqlalchemy", "http"}


def weather_model_name(condition: str) -> str:
    return f"argus-weather-{condition}"


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _not_found(exc: Exception) -> bool:
    code, text = error_code(exc), str(exc).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in text
                                                 and "not found" in text)


def _tag_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


def _escape(value: str) -> str:
    return str(value).replace("'", "\\'")


class Registry:
    def __init__(self, client=None):
        import mlflow

        from argus_tasks.tracking import ensure_reachable, tracking_uri

        if client is None:
            ensure_reachable()
            mlflow.set_tracking_uri(tracking_uri())
            client = mlflow.MlflowClient()
        self.client = client

    # ---- errors -------------------------------------------------------------------------------
    def classify(self, exc: BaseException, what: str) -> StepError | None:
        """The StepError for a registry failure during ``what``; None for an error of our own code."""
        if isinstance(exc, StepError):
            return exc
        if not (isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _REGISTRY_MODULES):
            return None
        uri, code = getattr(self.client, "tracking_uri", "?"), error_code(exc)
        detail = f"{type(exc).__name__}{f' {code}' if code else ''}: {str(exc)[:300]}"
        if code == "RESOURCE_DOES_NOT_EXIST":
            return PermanentStepError(f"{what} failed: it is not in the MLflow registry at {uri} ({detail}); "
                                      "re-run the step that created it")
        if code in PERMANENT_CODES:
            return PermanentStepError(f"the MLflow registry at {uri} refused {what} ({detail}); a retry cannot fix "
                                      "this: check the credentials and the registry settings")
        return TransientStepError(f"the MLflow registry at {uri} failed during {what} ({detail}); the step will be "
                                  "retried, and a retry finds what was already applied")

    def _reraise(self, exc: Exception, what: str):
        error = self.classify(exc, what)
        if error is None or error is exc:
            raise exc
        raise error from exc

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified
            self._reraise(exc, what)

    def _lookup(self, what: str, fn, *args, **kwargs):
        """``fn(...)``, or None when what it looks up does not exist."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified
            if _not_found(exc):
                return None
            self._reraise(exc, what)

    # ---- reading ------------------------------------------------------------------------------
    def version(self, name: str, version: str | int):
        return self._call(f"the lookup of {name} v{version}", self.client.get_model_version, name, str(version))

    def alias(self, name: str, alias: str):
        """The version behind ``name@alias``, or None when the model or alias does not exist."""
        return self._lookup(f"the lookup of {name}@{alias}", self.client.get_model_version_by_alias, name, alias)

    def find(self, name: str, tags: dict[str, str]):
        """The newest version of ``name`` carrying all ``tags``, or None."""
        flt = " and ".join([f"name='{_escape(name)}'"] + [f"tags.`{k}` = '{_escape(v)}'" for k, v in tags.items()])
        found = self._lookup(f"the search on {name}", self.client.search_model_versions, flt)
        return max(found, key=lambda v: int(v.version)) if found else None

    def epoch(self, name: str, alias: str = CHAMPION) -> dict:
        """The last alias move recorded on the registered model: ``{"epoch": n, "version", "token", ...}``."""
        model = self._lookup(f"the lookup of {name}", self.client.get_registered_model, name)
        raw = (model.tags or {}).get(EPOCH_TAG.format(alias=alias)) if model is not None else None
        try:
            return json.loads(raw) if raw else {"epoch": 0}
        except ValueError:
            return {"epoch": 0, "unreadable": raw}

    def lock_tickets(self, key: str, token: str | None = None) -> list:
        """Live tickets of the registry lock ``key`` (lowest first); see :mod:`registry_lock`."""
        from argus_tasks.models.registry_lock import KEY, LOCK_MODEL, TOKEN

        tags = {KEY: key, **({TOKEN: token} if token else {})}
        flt = " and ".join([f"name='{LOCK_MODEL}'"] + [f"tags.`{k}` = '{_escape(v)}'" for k, v in tags.items()])
        found = self._lookup(f"the lookup of the registry lock of {key}", self.client.search_model_versions, flt)
        return sorted(found or [], key=lambda v: int(v.version))

    def lock_ticket(self, ticket: str):
        from argus_tasks.models.registry_lock import LOCK_MODEL

        return self._lookup(f"the lookup of registry lock ticket {ticket}", self.client.get_model_version,
                            LOCK_MODEL, str(ticket))

    # ---- writing ------------------------------------------------------------------------------
    def ensure_model(self, name: str, description: str = "") -> None:
        if self._lookup(f"the lookup of {name}", self.client.get_registered_model, name) is not None:
            return
        try:
            self.client.create_registered_model(name, description=description or None)
        except Exception as exc:  # noqa: BLE001 - created meanwhile by a concurrent run: fine
            if "already exists" in str(exc).lower() or error_code(exc) == "RESOURCE_ALREADY_EXISTS":
                return
            self._reraise(exc, f"creating the registered model {name}")

    def register(self, name: str, model_uri: str, run_id: str, identity: dict[str, str],
                 tags: dict[str, str] | None = None, description: str = "") -> tuple[object, bool]:
        """(version, created). ``identity`` tags make the registration idempotent per run."""
        existing = self.find(name, identity)
        if existing is not None:
            log.info("%s version %s already registered for %s: reusing it", name, existing.version, identity)
            self.set_tags(name, existing.version, tags or {})
            return existing, False
        self.ensure_model(name, description)
        all_tags = {k: _tag_value(v) for k, v in {**(tags or {}), **identity}.items()}
        # A logged model ("models:/m-...") must be named by id: a tracking server rejects the URI alone.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        mv = self._call(f"registering a version of {name}", self.client.create_model_version, name, model_uri,
                        run_id=run_id, tags=all_tags, model_id=model_id)
        log.info("registered %s version %s from %s", name, mv.version, model_uri)
        return mv, True

    def set_tags(self, name: str, version, tags: dict) -> None:
        for key, value in tags.items():
            self._call(f"tagging {name} v{version}", self.client.set_model_version_tag, name, str(version), key,
                       _tag_value(value))

    def set_alias(self, name: str, alias: str, version) -> None:
        """Point ``name@alias`` at ``version`` (None: remove the alias). Champion moves go through
        :meth:`move_alias` under :meth:`exclusive`."""
        if version is None:
            self._call(f"removing {name}@{alias}", self.client.delete_registered_model_alias, name, alias)
        else:
            self._call(f"moving {name}@{alias} to v{version}", self.client.set_registered_model_alias, name, alias,
                       str(version))

    def exclusive(self, key: str, holder: str = ""):
        """Context manager: the registry lock of ``key`` (see :mod:`argus_tasks.models.registry_lock`)."""
        from argus_tasks.models.registry_lock import registry_lock

        return registry_lock(self, key, holder=holder)

    def move_alias(self, name: str, alias: str, version, previous, held) -> tuple[str, str]:
        """Move ``name@alias`` from ``previous`` to ``version`` under the held lock; ``(outcome, note)``.

        ``moved``: it points at ``version`` afterwards and the lock was held throughout (the move is
        recorded in ``argus.<alias>_epoch``). ``conflict``: the lock was lost first (nothing moved),
        another writer moved the alias right after us (left as it is), or the lock was lost while
        moving (the alias is put back where the last lock holder left it).
        """
        version, where = str(version), f"{name}@{alias}"
        before = self.epoch(name, alias)  # first: a holder that breaks our lease after this shows up as newer
        if not held.alive():
            return "conflict", (f"lost the registry lock of {name} (its lease was broken) before moving {where}: "
                                "nothing moved; the step decides again when rerun")
        self.set_alias(name, alias, version)
        now = self.alias(name, alias)
        now_v = str(now.version) if now is not None else None
        if now_v != version:
            return "conflict", (f"{where} points at v{now_v} right after this run moved it to v{version}: another "
                                "writer moved it outside the registry lock; left as it is")
        if not held.alive():
            last = self.epoch(name, alias)
            newer = last.get("token") not in (None, held.token, before.get("token"))
            target = str(last["version"]) if newer else previous
            self.set_alias(name, alias, target)
            return "conflict", (f"lost the registry lock of {name} while moving {where}: put it back to v{target} "
                                "(the last move made under the lock); the step decides again when rerun")
        record = {"epoch": int(before.get("epoch", 0)) + 1, "version": version, "previous": previous,
                  "token": held.token, "by": held.holder, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._call(f"recording the move of {where}", self.client.set_registered_model_tag, name,
                   EPOCH_TAG.format(alias=alias), json.dumps(record, sort_keys=True))
        return "moved", f"{where} moved v{previous} -> v{version}"

    def apply_promotion(self, name: str, challenger_version: str, expected_champion: str | None,
                        promote: bool, tags: dict, holder: str = "", audit=None) -> dict:
        """Move ``champion`` to the challenger when ``promote`` (compare-and-set), tag it either way.

        Holds the model's registry lock. Returns ``{"outcome", "applied", "already_applied",
        "previous_champion", "champion_version", "note"}``; ``outcome`` is ``moved``,
        ``already_champion``, ``not_promoted`` (tags written, nothing moved), ``stale`` (the champion
        is not the one evaluate compared with: nothing moved) or ``conflict`` (see :meth:`move_alias`).
        ``audit`` (an :class:`~argus_tasks.models.audit_trail.AuditTrail`) records the move, or the
        refusal of a stale one, in the audit log.
        """
        chal = str(challenger_version)
        expected = str(expected_champion) if expected_champion is not None else None
        with self.exclusive(name, holder) as held:
            if audit is not None:  # first: an earlier writer's interrupted move is recorded before anything else
                audit.reconcile(self, name, CHAMPION)
            current = self.alias(name, CHAMPION)
            current_v = str(current.version) if current is not None else None
            out = {"outcome": "", "applied": False, "already_applied": False, "previous_champion": current_v,
                   "champion_version": current_v, "note": ""}
            if promote and current_v == chal:
                if current.tags.get("argus.decision") != "promoted":  # a crash after the move: finish the record
                    self.set_tags(name, chal, {**tags, "argus.decision": "promoted"})
                out.update(outcome="already_champion", already_applied=True,
                           note=f"{name} v{chal} is already champion: nothing changed")
                return out
            if promote and current_v != expected:
                out.update(outcome="stale", note=(
                    f"champion of {name} moved from v{expected} (what evaluate compared with) to v{current_v} since: "
                    "not promoting on a stale comparison; re-run evaluate for this condition (then promote decides "
                    "again)"))
                self.set_tags(name, chal, {**tags, "argus.decision": "stale"})
                if audit is not None:
                    audit.refused(self, name, CHAMPION, chal, current_v, "stale", out["note"], held)
                return out
            tags = {**tags, "argus.previous_champion": current_v or "none"}
            if not promote:
                self.set_tags(name, chal, {**tags, "argus.decision": "not_promoted"})
                out.update(outcome="not_promoted", note=f"{name}@champion stays at v{current_v}" if current_v
                           else f"{name} has no champion yet, and this challenger does not become one")
                return out
            mover = audit.move if audit is not None else (lambda _r, *a: self.move_alias(*a))
            outcome, note = mover(self, name, CHAMPION, chal, current_v, held)
            now = self.alias(name, CHAMPION)
            out.update(outcome=outcome, note=note, applied=outcome == "moved",
                       champion_version=str(now.version) if now is not None else None)
            self.set_tags(name, chal, {**tags, "argus.decision": "promoted" if outcome == "moved" else outcome})
            return out


def require_version(registry: Registry, name: str, version) -> object:
    """The model version, or a PermanentStepError naming it (an upstream output that vanished)."""
    mv = registry._lookup(f"the lookup of {name} v{version}", registry.client.get_model_version, name, str(version))
    if mv is None:
        raise PermanentStepError(f"{name} version {version} is not in the MLflow registry "
                                 f"({registry.client.tracking_uri}); re-run the step that registered it")
    return mv
