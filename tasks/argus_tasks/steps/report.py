"""``argus-task report``: the run's summary table and links, as Markdown (store + MLflow + log).

Runs whatever happened upstream (trigger rule ``all_done``) and succeeds whenever it could write
the report; the DAG's ``run_outcome`` task is what marks a run with a failed step as failed.
"""

from __future__ import annotations

import logging

from argus_tasks.contract import StepContext
from argus_tasks.hardframes.report import report_lines
from argus_tasks.run_outcome import first_cause, run_outcomes

HELP = "write the run's summary report (Markdown) to the store, MLflow and the log"
log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--conditions", required=True, help="comma-separated conditions of this run")


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def condition_row(condition: str, outcomes) -> dict:
    train = outcomes[f"train/{condition}"]
    evaluate = outcomes[f"evaluate/{condition}"]
    promote = outcomes[f"promote/{condition}"]
    decision = promote.result if promote.status == "succeeded" else {}
    metrics = (evaluate.result.get("metrics") or {}).get("challenger", {}) if evaluate.status == "succeeded" else {}
    if promote.status == "succeeded":
        verdict = "PROMOTED" if decision.get("promoted") else "not promoted"
        reasons = "; ".join(decision.get("reasons", []))
    else:
        verdict = f"no decision ({promote.status})"
        reasons = first_cause(outcomes, condition) or "an upstream step did not run"
    return {
        "condition": condition,
        "train": train.status,
        "evaluate": evaluate.status,
        "decision": verdict,
        "reasons": reasons,
        "challenger_version": train.result.get("model_version") if train.result else None,
        "champion_version": decision.get("champion_version"),
        "classwise_gap": metrics.get("classwise_gap"),
        "kid": metrics.get("kid"),
        "label_preservation": metrics.get("label_preservation"),
        "mlflow_run_id": train.result.get("mlflow_run_id") if train.result else None,
        "history_plot": decision.get("history_plot"), "audit_tail": decision.get("audit_tail") or [],
    }


def render_markdown(ctx: StepContext, outcomes, rows: list[dict]) -> str:
    pull = outcomes["pull"].result if outcomes["pull"].status == "succeeded" else {}
    validate = outcomes["validate"]
    lines = [
        f"# argus_weather_training report: `{ctx.run_id}`",
        "",
        f"- dataset revision: `{pull.get('revision', '-')}` (commit `{str(pull.get('commit', '-'))[:12]}`), "
        f"fingerprint `{str(pull.get('fingerprint', '-'))[:16]}`, frames: {pull.get('n_frames', '-')}",
        f"- validation: **{validate.status}**"
        + (f", {validate.result.get('quarantined', 0)} frame(s) quarantined, Data Docs: "
           f"{validate.result.get('data_docs', '-')}" if validate.status == "succeeded" else "")
        + (f": {validate.error}" if validate.status == "failed" else ""),
        f"- code: `{ctx.git_commit}`, image `{ctx.image}`",
        "",
        "| condition | train | evaluate | decision | challenger | champion | class-wise gap | KID | label pres. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['condition']} | {r['train']} | {r['evaluate']} | {r['decision']} | "
            f"{_fmt(r['challenger_version'])} | {_fmt(r['champion_version'])} | {_fmt(r['classwise_gap'])} | "
            f"{_fmt(r['kid'])} | {_fmt(r['label_preservation'])} |"
        )
    lines += ["", "## Why"]
    for r in rows:
        lines.append(f"- **{r['condition']}**: {r['reasons'] or '-'}")
    lines += ["", "## Champion history and audit log (`argus-task audit --condition <c>`)"]
    for r in rows:  # the plot of every evaluation so far, promotions and rollbacks marked; the last alias moves
        lines.append(f"- **{r['condition']}**: `{r['history_plot'] or '-'}`"
                     + "".join(f"\n  - {line}" for line in r["audit_tail"]))
    lines += report_lines(ctx.run, [r["condition"] for r in rows])
    lines += ["", f"Run folder: `{ctx.run.url()}`"]
    return "\n".join(lines) + "\n"


def run(args, ctx: StepContext) -> dict:
    conditions = [c for c in args.conditions.split(",") if c]
    outcomes = run_outcomes(ctx.run, conditions)
    rows = [condition_row(c, outcomes) for c in conditions]
    markdown = render_markdown(ctx, outcomes, rows)
    from argus_tasks import cost_report

    cost_lines, cost_totals = cost_report.markdown(ctx.run, conditions)
    markdown += "\n".join(cost_lines) + "\n"
    url = ctx.run.write_text("report/report.md", markdown)
    log.info("run report (%s):\n%s", url, markdown)
    from argus_tasks import run_report_html

    page = run_report_html.render(run_report_html.gather(ctx, outcomes, rows, cost_lines))
    html_url = ctx.run.write_text("report/index.html", page)
    log.info("HTML run report: %s", html_url)
    try:
        import mlflow

        from argus_tasks.tracking import step_run

        with step_run(ctx, "report"):
            mlflow.log_text(markdown, "report.md")
            mlflow.log_text(page, "report.html")
            mlflow.log_metrics({k: v for k, v in cost_totals.items() if k.startswith("run_") and v is not None})
    except Exception as exc:  # the report must not be lost because MLflow is down
        log.warning("could not log the report to MLflow (%s); it is in %s", exc, url)
    failed = [w for w, o in outcomes.items() if o.status == "failed"]
    if failed:
        log.warning("steps that failed in this run: %s. First cause: %s", ", ".join(failed), first_cause(outcomes))
    return {"report": url, "html_report": html_url, "rows": rows, "failed_steps": failed, "cost": cost_totals}
