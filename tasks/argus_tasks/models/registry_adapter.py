"""A thin adapter between the pipeline and the MLflow model registry.

It only moves aliases, registers versions and writes tags; every judgement is made elsewhere
(:mod:`argus_tasks.models.decision`). What it guarantees:

* **dedup by run**: :meth:`Registry.register` first looks for a version of the model tagged with
  the same identity (Airflow run id + condition); a retried step gets that version back instead
  of creating a second one;
* **serialised promotions**: :func:`promotion_lock` holds an exclusive ``flock`` per model on the
  store's machine (released by the kernel if the holder dies, so it never goes stale), and
  :meth:`Registry.apply_promotion` compares the champion it is about to replace with the champion
  the evaluation saw (compare-and-set): if another run moved it in between, nothing moves;
* **idempotence**: applying a decision that is already in place changes nothing and says so.

MLflow being unreachable is a :class:`TransientStepError` (Airflow retries).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from argus_tasks.contract import PermanentStepError, TransientStepError

log = logging.getLogger(__name__)

SEGMENTER_MODEL = "argus-downstream-segmenter"
CHAMPION, CHALLENGER = "champion", "challenger"
MAX_TAG_CHARS = 4500


def weather_model_name(condition: str) -> str:
    return f"argus-weather-{condition}"


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "") or ""
    return code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()


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

    # ---- reading ------------------------------------------------------------------------------
    def version(self, name: str, version: str | int):
        return self.client.get_model_version(name, str(version))

    def alias(self, name: str, alias: str):
        """The version behind ``name@alias``, or None when the model or alias does not exist."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return None
            raise TransientStepError(f"MLflow registry lookup of {name}@{alias} failed: {exc}") from exc

    def find(self, name: str, tags: dict[str, str]):
        """The newest version of ``name`` carrying all ``tags``, or None."""
        flt = " and ".join([f"name='{_escape(name)}'"] + [f"tags.`{k}` = '{_escape(v)}'" for k, v in tags.items()])
        try:
            found = self.client.search_model_versions(flt)
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return None
            raise TransientStepError(f"MLflow registry search on {name} failed: {exc}") from exc
        return max(found, key=lambda v: int(v.version)) if found else None

    # ---- writing ------------------------------------------------------------------------------
    def ensure_model(self, name: str, description: str = "") -> None:
        try:
            self.client.get_registered_model(name)
        except Exception as exc:  # noqa: BLE001
            if not _not_found(exc):
                raise TransientStepError(f"MLflow registry lookup of {name} failed: {exc}") from exc
            try:
                self.client.create_registered_model(name, description=description or None)
            except Exception as exc2:  # noqa: BLE001 - created meanwhile by a concurrent run: fine
                if "already exists" not in str(exc2).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                        getattr(exc2, "error_code", "")):
                    raise

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
        mv = self.client.create_model_version(name, model_uri, run_id=run_id, tags=all_tags, model_id=model_id)
        log.info("registered %s version %s from %s", name, mv.version, model_uri)
        return mv, True

    def set_tags(self, name: str, version, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, _tag_value(value))

    def set_alias(self, name: str, alias: str, version) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def apply_promotion(self, name: str, challenger_version: str, expected_champion: str | None,
                        promote: bool, tags: dict) -> dict:
        """Move ``champion`` to the challenger when ``promote`` (compare-and-set), tag it either way.

        Returns ``{"applied": bool, "already_applied": bool, "previous_champion": str|None,
        "champion_version": str|None, "note": str}``. Call it under :func:`promotion_lock`.
        """
        current = self.alias(name, CHAMPION)
        current_v = str(current.version) if current is not None else None
        out = {"applied": False, "already_applied": False, "previous_champion": current_v,
               "champion_version": current_v, "note": ""}
        if promote and current_v == str(challenger_version):
            out.update(already_applied=True, note=f"{name} v{challenger_version} is already champion: nothing changed")
            return out
        if promote and current_v != (str(expected_champion) if expected_champion is not None else None):
            out["note"] = (f"champion of {name} moved from v{expected_champion} (what evaluate compared with) to "
                           f"v{current_v} since: not promoting on a stale comparison; re-run evaluate")
            self.set_tags(name, challenger_version, {**tags, "argus.decision": "stale"})
            return out
        tags = {**tags, "argus.previous_champion": current_v or "none",
                "argus.decision": "promoted" if promote else "not_promoted"}
        self.set_tags(name, challenger_version, tags)
        if promote:
            self.set_alias(name, CHAMPION, challenger_version)
            out.update(applied=True, champion_version=str(challenger_version),
                       note=f"{name}@champion moved v{current_v} -> v{challenger_version}")
        else:
            out["note"] = (f"{name}@champion stays at v{current_v}" if current_v
                           else f"{name} has no champion yet, and this challenger does not become one")
        return out


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
    """An exclusive lock per ``key`` (e.g. a model name) shared by every run using this store."""
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


def require_version(registry: Registry, name: str, version) -> object:
    """The model version, or a PermanentStepError naming it (an upstream output that vanished)."""
    try:
        return registry.version(name, version)
    except Exception as exc:  # noqa: BLE001
        if _not_found(exc):
            raise PermanentStepError(f"{name} version {version} is not in the MLflow registry "
                                     f"({registry.client.tracking_uri}); re-run the step that registered it") from exc
        raise TransientStepError(f"MLflow registry lookup of {name} v{version} failed: {exc}") from exc
