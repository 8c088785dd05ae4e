"""Which version a rollback restores, and whether it may: pure functions of the audit log and version tags.

**The champion stack.** Replaying the log's moves in order gives the stack of champions a rollback
walks back through: a promotion (or any forward move) pushes its version; a rollback to a version
on the stack pops down to it (a version rolled away from is not "previous" any more), and a
rollback to a version that is not on it pushes it. ``previous`` is the entry under the top: after
v1 -> v2 -> v3 and a rollback to ``previous`` (v2), ``previous`` is v1, not v3 again, so asking
twice walks back twice instead of flip-flopping. Going forward again to v3 takes ``target=3``.

**Was it champion?** A version was champion when a committed or observed entry moved the alias to
it, or (moves made before the audit log existed) when promote tagged it ``argus.decision=promoted``
or the epoch tag names it.
"""

from __future__ import annotations

from argus_tasks.contract import PermanentStepError
from argus_tasks.models.audit_log import MOVED_STATES

PREVIOUS = "previous"
# tags that train writes on every version it registers: what a rollback needs to trace the version
REQUIRED_LINEAGE = ("argus.content_hash", "argus.dag_id", "argus.run_id", "argus.git_commit", "argus.dataset_rev",
                    "argus.dataset_fingerprint", "argus.mlflow_run_id")


def champion_stack(entries: list[dict]) -> list[str]:
    """The champions a rollback walks back through, oldest first (see the module docstring)."""
    stack: list[str] = []
    for e in entries:
        if e.get("state") not in MOVED_STATES:
            continue
        to = e.get("to")
        if to is None:
            stack.clear()
        elif e.get("kind") == "rollback" and to in stack:
            del stack[stack.index(to) + 1:]
        elif not stack or stack[-1] != to:
            stack.append(to)
    return stack


def parse_target(text: str) -> str:
    value = str(text or "").strip().lower()
    if value == PREVIOUS:
        return value
    if not value.isdigit() or int(value) < 1:
        raise PermanentStepError(f"--target {text!r} is neither 'previous' nor a version number (1, 2, ...)")
    return str(int(value))


def resolve_target(request: str, entries: list[dict], current: str | None, epoch: dict | None = None) -> tuple[str, str]:
    """``(version, how it was found)`` for ``request`` (``previous`` or a version number)."""
    if request != PREVIOUS:
        return request, f"asked for v{request}"
    stack = champion_stack(entries)
    if stack and stack[-1] == current and len(stack) >= 2:
        return stack[-2], f"the champion before v{current} in the audit log (champion stack {' -> '.join(stack)})"
    before = (epoch or {}).get("previous")
    if (epoch or {}).get("version") is not None and str(epoch["version"]) == current and before not in (None, "None"):
        return str(before), f"the previous champion recorded by the last move of v{current} (argus.champion_epoch)"
    where = f"the champion stack is {' -> '.join(stack) or 'empty'}" if stack else "the audit log has no moves"
    raise PermanentStepError(f"no champion before v{current} is recorded ({where}): give the version to restore "
                             "(target=N) instead of 'previous'")


def was_champion(version: str, entries: list[dict], tags: dict, epoch: dict | None = None) -> str | None:
    """Why ``version`` counts as a former champion, or None when nothing says it was."""
    for e in entries:
        if e.get("state") in MOVED_STATES and e.get("to") == version:
            return f"audit entry {e.get('seq')} ({e.get('kind')}, {e.get('when')}) made it champion"
    if (tags or {}).get("argus.decision") == "promoted":
        return "promote tagged it argus.decision=promoted (before the audit log)"
    epoch = epoch or {}
    if str(epoch.get("version")) == version or str(epoch.get("previous")) == version:
        return "the champion epoch tag names it"
    return None


def lineage_problems(tags: dict) -> list[str]:
    """The lineage tags a version lacks (empty when it has them all)."""
    return [f"lineage tag {key} is missing" for key in REQUIRED_LINEAGE if not str((tags or {}).get(key) or "").strip()]
