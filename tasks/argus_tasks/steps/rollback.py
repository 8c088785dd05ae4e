"""``argus-task rollback --condition C --approval JSON``: restore the version that ``rollback-check`` passed.

Applies this run's ``rollback-check/<C>/result.json`` (the target and the champion it was checked
against). Under the model's registry lock, the lock every promotion takes too (and the local
``flock`` fast path), it:

* moves nothing and says so when this run's rollback was applied already (a re-run: its earlier
  result with ``already_applied: true``) or the target is champion already (``registry_outcome:
  already_champion``); neither emits an event;
* refuses (exit 10, an audit entry ``refused``) when the champion is no longer the one the check and
  the person saw: a promotion or another rollback came in between, so trigger a new rollback;
* otherwise moves ``champion`` as an audited move (:mod:`argus_tasks.models.audit_trail`): intent,
  move, final entry; ``registry_outcome: moved`` makes the operator emit the champion-moved asset
  event, so ``argus_weather_generation`` regenerates with the restored champion. A move that did not
  stick (a lost lock) is a TransientStepError: the retry decides again.

A rejection or a timed-out approval moves nothing and is recorded (exit 0, ``moved: false``). Each
call redraws the champion history and writes ``rollback/<C>/report.md`` (also in MLflow).
"""

from __future__ import annotations

import argparse
import logging

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext, TransientStepError

HELP = "move the champion alias back to the version rollback-check passed (serialised with promotions, audited)"
log = logging.getLogger("argus.rollback")
FINAL = ("moved", "already_champion")  # outcomes a rerun of the same run returns instead of deciding again


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condition", required=True, choices=CONDITIONS)
    p.add_argument("--approval", default='{"required": false}',
                   help='the approval as JSON: {"required": bool, "approved": bool, "by": str, "timed_out": bool}')


def _report(result: dict, check: dict, entries: list[dict]) -> str:
    from argus_tasks.steps.audit import _move, _who

    lines = [f"# Rollback of {result['model_name']}: {result['registry_outcome']}", "",
             f"- {result['note']}", f"- reason: {check.get('reason')}",
             f"- target: v{check['target_version']} ({check.get('how')}); champion at the check: "
             f"v{check.get('champion_at_check')}", f"- approval: {result['approval']}",
             f"- checks: {check.get('checks')}", f"- champion history: `{result.get('history_plot', '-')}`", "",
             "## Audit log (last 10)", "", "| seq | when | kind | state | move | who |", "|---|---|---|---|---|---|"]
    for e in entries[-10:]:
        lines.append(f"| {e.get('seq')} | {e.get('when')} | {e.get('kind')} | {e.get('state')} | {_move(e)} | "
                     f"{_who(e)} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import mlflow

    from argus_tasks.models.audit_log import AuditLog
    from argus_tasks.models.audit_trail import AuditTrail, who_of
    from argus_tasks.models.champion_history import refresh
    from argus_tasks.models.registry_adapter import CHAMPION, Registry, promotion_lock
    from argus_tasks.models.registry_lock import holder_label
    from argus_tasks.steps.promote import apply_approval, parse_approval
    from argus_tasks.tracking import step_run

    c, out = args.condition, f"rollback/{args.condition}"
    where = f"rollback-check/{c}/result.json"
    if not ctx.run.exists(where):
        raise PermanentStepError(f"{ctx.run.url(where)} is missing: rollback-check has not passed for {c} in this "
                                 "run, so nothing may move")
    check = ctx.run.read_json(where)
    name, target, expected = check["model_name"], str(check["target_version"]), check.get("champion_at_check")
    if ctx.run.exists(f"{out}/decision.json"):  # this run's rollback was applied: a rerun moves nothing again
        earlier = ctx.run.read_json(f"{out}/decision.json")
        if earlier.get("target_version") == target and earlier.get("registry_outcome") in FINAL:
            log.info("rollback of %s to v%s already applied by this run (%s): nothing moves", name, target,
                     earlier.get("note"))
            return {**earlier, "already_applied": True,
                    "note": f"already applied: {earlier.get('note')}; nothing moved again"}
    approval = parse_approval(args.approval)
    go, reasons, approval_state = apply_approval(True, [check["reason"]], approval)
    registry = Registry()
    approved_by = approval.get("by") if approval_state == "approved" else None
    trail = AuditTrail(ctx.store_root, "rollback", who_of(ctx, approved_by=approved_by), check["reason"],
                       {"check": check.get("check"), "run_folder": ctx.run.url(),
                        "check_mlflow_run_id": check.get("mlflow_run_id"),
                        "target_checks": check.get("checks")})
    result = {"condition": c, "model_name": name, "target_version": target, "approval": approval_state,
              "reason": check["reason"], "already_applied": False, "moved": False}
    with (promotion_lock(ctx.store_root, name),
          registry.exclusive(name, holder_label(f"{ctx.dag_id}/{ctx.run_id} rollback {c}")) as held):
        trail.reconcile(registry, name, CHAMPION)
        mv = registry.alias(name, CHAMPION)
        current = str(mv.version) if mv is not None else None
        result.update(previous_champion=current, champion_version=current)
        if current == target:
            result.update(registry_outcome="already_champion", already_applied=True,
                          note=f"{name} v{target} is already champion: nothing moved (a re-run of this rollback, or "
                               "it was restored since)")
        elif not go:
            result.update(registry_outcome="not_approved", note=f"{reasons[-1]}; {name}@champion stays at v{current}")
        elif current != expected:
            note = (f"champion of {name} moved from v{expected} (what the check and the approval saw) to v{current} "
                    f"since: nothing moved; trigger a new rollback if v{target} should still be restored")
            entry = trail.refused(registry, name, CHAMPION, target, current, "stale", note, held)
            result.update(registry_outcome="stale", note=note, audit_seq=entry["seq"])
        else:
            outcome, note = trail.move(registry, name, CHAMPION, target, current, held)
            now = registry.alias(name, CHAMPION)
            result.update(registry_outcome=outcome, note=note, moved=outcome == "moved",
                          champion_version=str(now.version) if now is not None else None,
                          audit_seq=(trail.last_entry or {}).get("seq"))
            if outcome == "moved":
                registry.set_tags(name, target, {"argus.restored_by": f"{ctx.dag_id}/{ctx.run_id}",
                                                 "argus.restored_from": current or "none"})
    log.info("rollback %s -> v%s: %s", name, target, result["note"])
    entries = AuditLog(registry, ctx.store_root, name, CHAMPION).entries()
    try:
        png, _ = refresh(registry, ctx.store_root, name, c)
        result["history_plot"] = ctx.run.write_bytes(f"{out}/champion_history.png", png)
    except Exception as exc:  # noqa: BLE001 - the alias is where it should be; a plot must not undo that
        log.warning("could not redraw the champion history of %s: %s", c, exc, exc_info=True)
        result["history_error"] = f"{type(exc).__name__}: {exc}"
    report = _report(result, check, entries)
    result["report"] = ctx.run.write_text(f"{out}/report.md", report)
    ctx.run.write_json(f"{out}/decision.json", result)
    with step_run(ctx, "rollback", c) as mrun:
        mlflow.set_tags({"argus.registry_outcome": result["registry_outcome"], "argus.rollback_target": target,
                         "argus.approval": approval_state})
        mlflow.log_text(report, f"rollback_{c}/report.md")
        mlflow.log_dict(result, f"rollback_{c}/decision.json")
        if "history_plot" in result:
            mlflow.log_artifact(str(ctx.run.localize(f"{out}/champion_history.png")), artifact_path=f"rollback_{c}")
        result["mlflow_run_id"] = mrun.info.run_id
    log.info("rollback report:\n%s", report)
    if result["registry_outcome"] == "stale":
        raise PermanentStepError(result["note"])
    if result["registry_outcome"] == "conflict":
        raise TransientStepError(f"{result['note']}; the retry decides again")
    return result
