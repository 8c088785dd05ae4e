"""The optional human approval before a champion alias moves.

Airflow's ``ApprovalOperator`` (HITL) with two changes for this pipeline:

* when the run's ``require_approval`` Param is off it returns at once ("not required");
* a rejection does not skip ``promote``: ``promote`` still runs, records the rejection in the
  decision record and moves nothing, so every outcome is traceable in MLflow and the report;
* no answer within ``response_timeout`` rejects (fails closed): the scheduler's timeout sweep applies
  the default option, ``Reject``, and the result says ``timed_out`` so the report can say so.

The request shows the evaluation comparison table of this condition and where its sample grids are.
"""

from __future__ import annotations

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

KEY_METRICS = ("classwise_gap", "kid", "label_preservation", "aggregate_gap")


def comparison_markdown(condition: str, evaluation: dict | None) -> str:
    """A Markdown table of the challenger against the champion and the references."""
    if not evaluation:
        return f"No evaluation result was found for **{condition}**: approving cannot promote anything."
    rows = [{"model": name, **values} for name, values in (evaluation.get("metrics") or {}).items()]
    champion = evaluation.get("champion_version")
    against = f"champion v{champion}" if champion else "no champion yet (the first model of this condition)"
    lines = [f"### {condition}: challenger v{evaluation.get('challenger_version', '?')} vs {against}", "",
             "**Approve** lets `promote` apply its decision policy, which may still refuse the challenger; "
             "**Reject** moves nothing. Either way the answer is recorded in the decision record.", "",
             "| model | " + " | ".join(KEY_METRICS) + " |", "|---" * (len(KEY_METRICS) + 1) + "|"]
    for row in rows:
        cells = []
        for key in KEY_METRICS:
            value = row.get(key)
            cells.append(f"{value:.4f}" if isinstance(value, (int, float)) else "-")
        lines.append(f"| {row.get('model', '?')} | " + " | ".join(cells) + " |")
    lines += ["", "Lower is better for every column except label_preservation (segmenter mIoU against the source "
              "labels). Sanity gates of the challenger: "
              + ("passed." if evaluation.get("sanity_passed") else f"FAILED {evaluation.get('sanity')}."), "",
              # paths in code spans: Markdown would swallow `<model>` as an HTML tag
              f"Sample grids (clear input | generated | real {condition}): "
              f"`{evaluation.get('artifacts', '?')}/grids/<model>.png`, also in the MLflow run "
              f"`{evaluation.get('mlflow_run_id', '-')}` under `evaluate_{condition}/grids`"]
    return "\n".join(lines)


class ConditionalApprovalOperator(ApprovalOperator):
    """Approval of one condition's challenger, asked only when ``params.require_approval``."""

    template_fields = (*ApprovalOperator.template_fields, "condition")

    def __init__(self, *, condition: str | None = None, **kwargs):
        kwargs.setdefault("subject", "Promote the new weather model?")
        kwargs.setdefault("body", "")
        kwargs.setdefault("defaults", [self.REJECT])  # the answer when nobody answers in time
        super().__init__(**kwargs)
        self.condition = condition

    def execute(self, context):
        if not context["params"].get("require_approval"):
            self.log.info("approval not required for this run (Param require_approval is off)")
            return {"required": False}
        ti = context["ti"]
        evaluation = ti.xcom_pull(task_ids="evaluate", map_indexes=ti.map_index)
        self.subject = f"Promote the new {self.condition} model to champion?"
        self.body = comparison_markdown(self.condition or "?", evaluation)
        return super().execute(context)

    def execute_complete(self, context, event):
        payload = HITLOperator.execute_complete(self, context, event)
        chosen = payload["chosen_options"][0]
        user = payload.get("responded_by_user") or {}
        timed_out = bool(event.get("timedout")) and not user
        approved = chosen == self.APPROVE and not timed_out
        who = f"nobody within {self.response_timeout} (timed out)" if timed_out else (
            user.get("name") or user.get("id") or "unknown")
        self.log.info("%s: %s by %s", self.condition, "approved" if approved else "REJECTED", who)
        return {
            "required": True,
            "approved": approved,
            "timed_out": timed_out,
            "by": who,
            "at": str(payload.get("responded_at")),
        }
