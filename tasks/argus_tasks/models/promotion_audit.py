"""What ``promote`` adds for the audit log and the champion history (kept out of the step's own module).

* :func:`promotion_trail`: the :class:`~argus_tasks.models.audit_trail.AuditTrail` of one promote
  (who: the DAG run, the person who triggered it and the approver when known; why: the decision's
  reasons; evidence: ``decision.json``, the run folder, the train and evaluate MLflow runs);
* :func:`record_history`: the run's history point, the regenerated plot in the store and in the run
  folder (``promote/<c>/champion_history.png``), and :func:`log_history` puts it in the MLflow run.

Neither may fail a promotion whose decision is already applied: history errors are logged and
reported in the result (``history_error``).
"""

from __future__ import annotations

import logging

from argus_tasks.models.audit_trail import AuditTrail, who_of

log = logging.getLogger(__name__)


def _mlflow_run_of(ctx, rel: str) -> str | None:
    try:
        return ctx.run.read_json(rel).get("mlflow_run_id") if ctx.run.exists(rel) else None
    except (OSError, ValueError):
        return None


def promotion_trail(ctx, condition: str, approval: dict, reasons: list[str]) -> AuditTrail:
    approved_by = approval.get("by") if approval.get("required") and approval.get("approved") is True else None
    evidence = {"decision": ctx.run.url(f"promote/{condition}/decision.json"), "run_folder": ctx.run.url(),
                "train_mlflow_run_id": _mlflow_run_of(ctx, f"train/{condition}/result.json"),
                "evaluate_mlflow_run_id": _mlflow_run_of(ctx, f"evaluate/{condition}/result.json")}
    return AuditTrail(ctx.store_root, "promotion", who_of(ctx, approved_by=approved_by), "; ".join(reasons),
                      evidence)


def record_history(ctx, registry, condition: str, doc: dict, records: dict, real: dict | None,
                   result: dict) -> dict:
    """Record this evaluation's point and redraw the plot; ``{"history_plot", "history_point"}`` or an error."""
    from argus_tasks.models.champion_history import model_point, record_point, refresh

    try:
        models = []
        for role in ("champion", "challenger"):
            entry = (doc.get("candidates") or {}).get(role)
            if entry and entry.get("metrics"):
                models.append(model_point(role, entry.get("version"), entry.get("metrics"), records.get(role), real))
        frames = doc.get("frames") or {}
        point = record_point(ctx.store_root, result["model_name"], ctx, "promote", models, {
            "judge": doc.get("judge"), "eval_frames_sha256": doc.get("eval_frames_sha256"),
            "n_source": frames.get("n_source"), "n_real": frames.get("n_real"),
            "registry_outcome": result.get("registry_outcome"), "promoted": result.get("promoted")})
        png, _ = refresh(registry, ctx.store_root, result["model_name"], condition)
        plot = ctx.run.write_bytes(f"promote/{condition}/champion_history.png", png)
        return {"history_plot": plot, "history_point": point, "audit_tail": audit_tail(registry, ctx, result)}
    except Exception as exc:  # noqa: BLE001 - the decision is applied; a missing plot must not undo that
        log.warning("could not update the champion history of %s: %s", condition, exc, exc_info=True)
        return {"history_error": f"{type(exc).__name__}: {exc}"}


def audit_tail(registry, ctx, result: dict, n: int = 3) -> list[str]:
    """The last ``n`` audit entries of the model, one line each (for the run report)."""
    from argus_tasks.models.audit_log import AuditLog
    from argus_tasks.models.audit_trail import describe_who

    lines = []
    for e in AuditLog(registry, ctx.store_root, result["model_name"]).entries()[-n:]:
        lines.append(f"#{e.get('seq')} {e.get('when')} {e.get('kind')} {e.get('state')} v{e.get('from')} -> "
                     f"v{e.get('to')} by {describe_who(e.get('who'))}")
    return lines


def log_history(ctx, rel: str, artifact_path: str) -> None:
    """Put the run folder's ``rel`` (the plot) in the active MLflow run, when it was written."""
    import mlflow

    if ctx.run.exists(rel):
        mlflow.log_artifact(str(ctx.run.localize(rel)), artifact_path=artifact_path)
