"""The person's confirmation of a rollback: the training DAG's HITL approval, asked about the checked target.

Same operator (:class:`argus_airflow.approval.ConditionalApprovalOperator`: returns at once when
``require_approval`` is off, defaults to Reject, a timeout rejects and says ``timed_out``); only
the question differs: what moves where, why, and what the checks found.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator

from argus_airflow.approval import ConditionalApprovalOperator

ROLLBACK_APPROVAL_WINDOW = timedelta(hours=4)
"""How long a rollback waits for its confirmation: it is urgent; no answer rejects (nothing moves)."""


def rollback_markdown(check: dict | None) -> str:
    if not check:
        return "No passed rollback check was found: confirming cannot move anything."
    m = check.get("metrics") or {}
    sanity = check.get("checks", {}).get("sanity_gates") or {}
    lines = [f"### {check.get('model_name')}: champion v{check.get('champion_at_check')} \u2192 "
             f"v{check.get('target_version')}", "",
             f"**Reason:** {check.get('reason')}", "",
             f"- target: {check.get('how')}",
             f"- was champion before: {check.get('checks', {}).get('was_champion')}",
             f"- files and lineage: {check.get('checks', {}).get('files_and_lineage')}",
             "- sanity gates under judge v{} on {} clear / {} real frames: {}".format(
                 (check.get("judge") or {}).get("version", "?"), check.get("n_source"), check.get("n_real"),
                 ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in sanity.items()) or "-"),
             "- quick re-evaluation: " + ", ".join(f"{k} {m[k]:.4f}" for k in ("kid", "classwise_gap",
                                                                               "label_preservation") if k in m), "",
             "**Approve** moves the champion alias (unless a promotion moved it since: then nothing moves). "
             "**Reject** moves nothing. Either way the answer is recorded."]
    return "\n".join(lines)


class RollbackApprovalOperator(ConditionalApprovalOperator):
    """Confirmation of one rollback, asked only when ``params.require_approval``."""

    def execute(self, context):
        if not context["params"].get("require_approval"):
            self.log.info("confirmation not required for this run (Param require_approval is off)")
            return {"required": False}
        check = context["ti"].xcom_pull(task_ids="rollback-check")
        self.condition = context["params"].get("condition")
        self.subject = f"Roll the {self.condition} champion back to v{(check or {}).get('target_version', '?')}?"
        self.body = rollback_markdown(check)
        return ApprovalOperator.execute(self, context)
