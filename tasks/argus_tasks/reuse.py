"""Reuse a step's earlier result only when its data, config and code all match.

A :class:`ReuseKey` is made of three parts:

* **data**: the fingerprint of what the step reads (:func:`argus_tasks.data.access.accepted_fingerprint`);
* **config**: the step's relevant arguments and model config, as a JSON-able dict;
* **code**: the pipeline commit (``ctx.git_commit``) and a sha256 of the ``argus_tasks`` package's
  source files, so that a changed checkout changes the key even where the commit is ``unknown``.

A step stores ``key.to_dict()`` with its result (:func:`stamp`). On a rerun :func:`check` compares
the stored key with the current one: equal, the earlier result comes back marked
``"reused": {"from_try": N, "key": digest}``; different (or absent), the step recomputes, the
earlier result is withdrawn so that a failing recompute never leaves it looking valid, and the
result says ``"reused": false, "recomputed_because": "..."`` naming which of data, config and code
changed. Either way the log says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
KEY_VERSION = "argus-reuse-v1"
PARTS = ("data", "config", "code")


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def source_sha256(package_dir: str | None = None) -> str:
    """sha256 over the relative paths and bytes of every source file of the package (no caches)."""
    if package_dir is None:
        import argus_tasks

        package_dir = str(Path(argus_tasks.__file__).resolve().parent)
    root = Path(package_dir)
    h = hashlib.sha256(b"argus-source-v1\n")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix not in {".pyc", ".pyo"}):
        h.update(f"{path.relative_to(root).as_posix()}\n".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def code_identity(git_commit: str) -> dict:
    return {"git_commit": str(git_commit or "unknown"), "source_sha256": source_sha256()}


@dataclass(frozen=True)
class ReuseKey:
    data: str
    config: dict = field(default_factory=dict)
    code: dict = field(default_factory=dict)

    def parts(self) -> dict[str, str]:
        return {"data": _sha(_canonical(self.data)), "config": _sha(_canonical(self.config)),
                "code": _sha(_canonical(self.code))}

    @property
    def digest(self) -> str:
        return _sha(KEY_VERSION + "\n" + _canonical(self.parts()))

    @property
    def short(self) -> str:
        return self.digest[:16]

    def to_dict(self) -> dict:
        return {"version": KEY_VERSION, "digest": self.digest, "parts": self.parts(), "data": self.data,
                "config": self.config, "code": self.code}


def make_key(data_fingerprint: str, config: dict, git_commit: str) -> ReuseKey:
    # a JSON round trip: tuples become lists, so a key compares equal to its stored copy
    return ReuseKey(str(data_fingerprint), json.loads(_canonical(config)), code_identity(git_commit))


def _changed_keys(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if _canonical(old.get(k)) != _canonical(new.get(k))]


def differences(stored: dict | None, key: ReuseKey) -> list[str]:
    """Why ``stored`` (an earlier ``key.to_dict()``) is not ``key``: one phrase per changed part."""
    if not stored or not isinstance(stored, dict) or "parts" not in stored:
        return ["the earlier result carries no reuse key (written by older code)"]
    if stored.get("version") != KEY_VERSION:
        return [f"the earlier result's reuse key is of another version ({stored.get('version')!r})"]
    old_parts, new_parts = stored.get("parts", {}), key.parts()
    out = []
    if old_parts.get("data") != new_parts["data"]:
        out.append(f"data changed (fingerprint {str(stored.get('data'))[:12]} -> {key.data[:12]})")
    if old_parts.get("config") != new_parts["config"]:
        old_cfg = stored.get("config") if isinstance(stored.get("config"), dict) else {}
        changed = _changed_keys(_flatten(old_cfg), _flatten(key.config))
        shown = ", ".join(f"{k}: {_flatten(old_cfg).get(k)!r} -> {_flatten(key.config).get(k)!r}" for k in changed[:6])
        out.append(f"config changed ({shown or 'see the stored key'}{', ...' if len(changed) > 6 else ''})")
    if old_parts.get("code") != new_parts["code"]:
        old_code = stored.get("code") if isinstance(stored.get("code"), dict) else {}
        what = [f"{k} {str(old_code.get(k))[:12]} -> {str(key.code.get(k))[:12]}"
                for k in _changed_keys(old_code, key.code)]
        out.append(f"code changed ({', '.join(what) or 'see the stored key'})")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


@dataclass
class Verdict:
    reuse: bool
    result: dict | None
    reason: str


def check(run, result_path: str, key: ReuseKey, what: str) -> Verdict:
    """Reuse the result at ``result_path`` when its stored key is ``key``; else withdraw it and say why."""
    if not run.exists(result_path):
        reason = "no earlier result in this run"
        log.info("%s: computing (%s); reuse key %s", what, reason, key.short)
        return Verdict(False, None, reason)
    earlier = run.read_json(result_path)
    diffs = differences(earlier.get("reuse_key"), key)
    if not diffs:
        from_try = earlier.get("produced_by_try")
        log.info("%s: REUSING the result of try %s (reuse key %s: data, config and code match); nothing is "
                 "recomputed", what, from_try, key.short)
        result = {k: v for k, v in earlier.items() if k != "recomputed_because"}
        result["reused"] = {"from_try": from_try, "key": key.digest}
        return Verdict(True, result, "data, config and code match")
    reason = "; ".join(diffs)
    log.warning("%s: NOT reusing the earlier result (try %s, key %s): %s. Withdrawing it and recomputing "
                "with reuse key %s", what, earlier.get("produced_by_try"),
                str((earlier.get("reuse_key") or {}).get("digest", "none"))[:16], reason, key.short)
    withdraw(run, result_path)
    return Verdict(False, None, reason)


def stamp(result: dict, key: ReuseKey, try_number: int, reason: str) -> dict:
    """``result`` with its reuse key, the try that produced it and why it was computed."""
    return {**result, "reuse_key": key.to_dict(), "produced_by_try": int(try_number), "reused": False,
            "recomputed_because": reason}


def withdraw(run, relpath: str) -> None:
    """Delete an earlier output, so that a failing recompute never leaves it looking valid."""
    (run.cache / relpath).unlink(missing_ok=True)
    if run.remote and run.fs.exists(run.url(relpath)):
        run.fs.rm(run.url(relpath))
