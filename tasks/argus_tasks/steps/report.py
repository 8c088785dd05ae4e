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


THIN_CLASSES = ("lane_marking", "pole")  # the classes perception tests care about and weather (or a generator) erases


def fmt_thin(thin: dict) -> str:
    return "/".join(_fmt(thin.get(k), 2) for k in THIN_CLASSES) if thin else "-"


def fmt_rank(rho, ci=(None, None)) -> str:
    if not isinstance(rho, float) or rho != rho:
        return "-"
    lo, hi = ci
    both = isinstance(lo, float) and isinstance(hi, float) and lo == lo and hi == hi
    return f"{rho:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if both else "")


def condition_row(condition: str, outcomes) -> dict:
    train = outcomes[f"train/{condition}"]
    evaluate = outcomes[f"evaluate/{condition}"]
    promote = outcomes[f"promote/{condition}"]
    decision = promote.result if promote.status == "succeeded" else {}
    evaluated = (evaluate.result.get("metrics") or {}) if evaluate.status == "succeeded" else {}
    metrics = evaluated.get("challenger", {})
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
        "fidelity_thin": {k: (metrics.get("fidelity_per_class") or {}).get(k) for k in THIN_CLASSES},
        "class_rank_spearman": metrics.get("class_rank_spearman"),
        "class_rank_ci": (metrics.get("class_rank_spearman_lo"), metrics.get("class_rank_spearman_hi")),
        # the champion after this run, scored by this run's judge: the challenger when promoted, else the champion
        "champion_fidelity": (metrics if decision.get("promoted") else evaluated.get("champion", {})).get(
            "label_preservation"),
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
        "| condition | train | evaluate | decision | challenger | champion | class-wise gap | KID | label fidelity | "
        "fidelity lane/pole | class-rank ρ [95% CI] | champion fidelity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['condition']} | {r['train']} | {r['evaluate']} | {r['decision']} | "
            f"{_fmt(r['challenger_version'])} | {_fmt(r['champion_version'])} | {_fmt(r['classwise_gap'])} | "
            f"{_fmt(r['kid'])} | {_fmt(r['label_preservation'])} | {fmt_thin(r['fidelity_thin'])} | "
            f"{fmt_rank(r['class_rank_spearman'], r['class_rank_ci'])} | {_fmt(r['champion_fidelity'])} |"
        )
    lines += ["", "Label fidelity: the judge's mIoU on the challenger's generated frames against the source labels "
              "(per class for lane markings and poles). Class-rank ρ: Spearman correlation of the judge's per-class "
              "IoU on generated vs real frames of the condition, with its bootstrap interval by drive (does the "
              "generated weather make the same classes hard? reported, not gated).", "", "## Why"]
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
    try:
        import mlflow

        from argus_tasks.tracking import step_run

        with step_run(ctx, "report"):
            mlflow.log_text(markdown, "report.md")
            mlflow.log_metrics({k: v for k, v in cost_totals.items() if k.startswith("run_") and v is not None})
    except Exception as exc:  # the report must not be lost because MLflow is down
        log.warning("could not log the report to MLflow (%s); it is in %s", exc, url)
    failed = [w for w, o in outcomes.items() if o.status == "failed"]
    if failed:
        log.warning("steps that failed in this run: %s. First cause: %s", ", ".join(failed), first_cause(outcomes))
    return {"report": url, "rows": rows, "failed_steps": failed, "cost": cost_totals}
