"""The GPU time and cost of a training run, for its report and the demo summary (from the run store)."""

from __future__ import annotations

from argus_tasks import cost
from argus_tasks.run_outcome import PER_CONDITION_STEPS


def step_wheres(conditions: list[str]) -> list[str]:
    return ["budget", "pull", "validate", "segmenter"] + [f"{s}/{c}" for c in conditions for s in PER_CONDITION_STEPS]


def run_cost(run, conditions: list[str]) -> tuple[list[dict], dict]:
    """(the cost records of the run's steps, the run's totals)."""
    records = cost.collect(run, step_wheres(conditions))
    return records, cost.run_totals(records)


def _budget_line(run) -> str:
    if not run.exists("budget/result.json"):
        failure = run.read_json("budget/failure.json") if run.exists("budget/failure.json") else None
        return f"- budget: **stopped the run**: {failure.get('message', '')}" if failure else ""
    result = run.read_json("budget/result.json")
    if result.get("decision") == "no_budget":
        return "- budget: none (max_gpu_hours unset)"
    est = result.get("estimate_gpu_hours")
    est_text = "no estimate (no history)" if est is None else f"estimated {est:.4g} GPU-hours"
    return f"- budget: max_gpu_hours {result.get('budget_gpu_hours')}, {est_text} ({result.get('decision')})"


def markdown(run, conditions: list[str]) -> tuple[list[str], dict]:
    """The report's "GPU time and cost" section and the run's totals (logged as MLflow metrics)."""
    records, totals = run_cost(run, conditions)
    price = totals["gpu_hour_price"]
    cost_text = f"estimated cost **{totals['run_gpu_cost']:.4f}** at {price:g} per GPU-hour" if price is not None \
        else "no cost estimate (set ARGUS_GPU_HOUR_PRICE)"
    lines = ["", "## GPU time and cost", "",
             f"- this run: **{totals['run_gpu_seconds']:.1f} GPU-seconds** ({totals['run_gpu_hours']:.4f} GPU-hours, "
             f"GPU pool slots x step duration, over every try), {cost_text}"]
    budget = _budget_line(run)
    if budget:
        lines.append(budget)
    gpu_steps = [r for r in records if r.get("gpu_slots")]
    if gpu_steps:
        lines += ["", "| step | GPU slots | tries | seconds | GPU-seconds | cost |", "|---|---|---|---|---|---|"]
        for r in gpu_steps:
            step_cost = "-" if r.get("gpu_cost") is None else f"{r['gpu_cost']:.4f}"
            lines.append(f"| {r['step']} | {r['gpu_slots']} | {r['n_tries']} | {r['step_seconds']:.1f} | "
                         f"{r['gpu_seconds']:.1f} | {step_cost} |")
    return lines, totals
