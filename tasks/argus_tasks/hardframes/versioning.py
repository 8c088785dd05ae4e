"""Versioned hard sets: ``<store>/hardsets/<condition>/<sha256>.json`` and the ``latest.json`` pointer.

A hard set's version is the sha256 of its canonical JSON (:func:`argus_tasks.hardframes.storage.canonical_json`):
the condition, the selection settings, the evaluations it was selected from, the frames and their
groups; nothing about who computed it or when. The same inputs therefore give the same version, and
a rerun finds the file there and writes nothing. The file is never rewritten: its name is its hash,
and :func:`read` checks it.

``latest.json`` names the newest set: ``{"sha", "path", "history_until", "updated_by", "updated_at"}``.
It is written atomically, only when the version changes, and never moved back to a set computed
from an older history (``history_until``: the newest ``scored_at`` it saw) — two runs finishing out
of order leave the newer history's set. (Two writers can still interleave between the check and the
write; the loser's set stays available by its version, and the next run's step moves the pointer on.)
"""

from __future__ import annotations

import hashlib
import time

from argus_tasks.contract import PermanentStepError
from argus_tasks.hardframes.storage import StoreFiles, canonical_json

HARDSETS = "hardsets"
FORMAT = "argus-hardset-v1"


def set_relpath(condition: str, sha: str) -> str:
    return f"{HARDSETS}/{condition}/{sha}.json"


def latest_relpath(condition: str) -> str:
    return f"{HARDSETS}/{condition}/latest.json"


def version_of(content: dict) -> str:
    return hashlib.sha256(canonical_json(content)).hexdigest()


def publish(files: StoreFiles, condition: str, content: dict, by: dict) -> dict:
    """Store ``content`` under its version and move ``latest`` to it when it is newer; say what was written."""
    if content.get("format") != FORMAT or content.get("condition") != condition:
        raise ValueError(f"not a {FORMAT} hard set of {condition}")
    sha = version_of(content)
    rel = set_relpath(condition, sha)
    created = not files.exists(rel)
    if created:
        files.write_bytes(rel, canonical_json(content))
    pointer = files.read_json(latest_relpath(condition)) if files.exists(latest_relpath(condition)) else None
    until = str(content.get("history_until") or "")
    moved, why = False, "already latest"
    if pointer is None or pointer.get("sha") != sha:
        if pointer is not None and str(pointer.get("history_until") or "") > until:
            why = (f"latest stays {str(pointer.get('sha'))[:12]}: it was selected from a newer history "
                   f"(until {pointer.get('history_until')}, this set until {until or 'none'})")
        else:
            files.write_json(latest_relpath(condition), {
                "sha": sha, "path": rel, "history_until": until, "n_frames": len(content.get("frames", [])),
                "updated_by": by, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            moved, why = True, "moved"
    return {"sha": sha, "path": files.url(rel), "relpath": rel, "created": created, "latest_moved": moved,
            "latest": why, "previous_latest": (pointer or {}).get("sha")}


def read(files: StoreFiles, condition: str, ref: str = "latest") -> tuple[str, dict] | None:
    """``(sha, content)`` of the hard set ``ref`` (``latest`` or a version); None when there is none yet.

    A named version that does not exist, or a file whose content does not hash to its name, is a
    PermanentStepError: a training run must never use another set than the one it names.
    """
    if ref == "latest":
        if not files.exists(latest_relpath(condition)):
            return None
        ref = str(files.read_json(latest_relpath(condition))["sha"])
    rel = set_relpath(condition, ref)
    if not files.exists(rel):
        raise PermanentStepError(f"hard set {ref!r} of {condition} does not exist ({files.url(rel)}); pass "
                                 "--hard-set latest or a version listed under " + files.url(f"{HARDSETS}/{condition}"))
    raw = files.read_bytes(rel)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != ref:
        raise PermanentStepError(f"hard set file {files.url(rel)} hashes to {actual[:12]}, not to its name: it was "
                                 "altered; delete it and rerun `argus-task hard-frames` for this condition")
    import json

    return ref, json.loads(raw)
