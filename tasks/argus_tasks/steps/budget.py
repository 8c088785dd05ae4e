"""`argus-task budget`: the GPU-hour budget gate of a training run, before any of its steps takes a GPU.

A CPU step (on Kubernetes a GPU pod would already hold its GPU). With ``--max-gpu-hours`` unset it passes
at once, without MLflow. Otherwise it estimates the run's GPU-hours from the GPU-seconds that past runs
logged to MLflow (:mod:`argus_tasks.cost`): per condition ``train`` with the same model config and steps and
``evaluate``, plus ``segmenter`` when it retrains; the decision is :func:`argus_tasks.budget.decide`. Over
budget it fails permanently with a message naming the estimate, its basis (the past runs) and the budget.
"""

from __future__ import annotations

import logging

from argus_tasks.budget import StepEstimate, decide
from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "check the run's estimated GPU-hours (from past runs in MLflow) against its budget, before any GPU"
log = logging.getLogger("argus.budget")
HISTORY = 5  # newest matching runs whose median is the estimate


def add_arguments(p) -> None:
    p.add_argument("--conditions", required=True, help="comma-separated conditions of this run")
    p.add_argument("--model-config", default="tiny")
    p.add_argument("--steps", type=int, default=0, help="train steps (0: the model config's default)")
    p.add_argument("--max-gpu-hours", default="", help="the budget in GPU-hours; empty: no budget")
    p.add_argument("--retrain-segmenter", default="false", choices=("true", "false", "True", "False"))
    p.add_argument("--history", type=int, default=HISTORY, help="past runs per step to take the median of")


def _budget(raw: str) -> float | None:
    raw = (raw or "").strip()
    if raw in ("", "None", "none"):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise PermanentStepError(f"--max-gpu-hours {raw!r} must be a number of GPU-hours >= 0, or empty for none")
    return value


def _conditions(raw: str) -> list[str]:
    chosen = [c for c in raw.split(",") if c]
    bad = sorted(set(chosen) - set(CONDITIONS))
    if bad or not chosen:
        raise PermanentStepError(f"--conditions {raw!r}: unknown or no conditions {bad}; choose from {CONDITIONS}")
    return chosen


def _past(client, experiment_id: str, ctx: StepContext, tags: dict, params: dict, n: int) -> tuple:
    """(GPU-seconds, basis lines) of the newest ``n`` finished runs matching ``tags`` and ``params``."""
    flt = [f"tags.`{k}` = '{v}'" for k, v in tags.items()] + [f"params.`{k}` = '{v}'" for k, v in params.items()]
    flt += [f"tags.`argus.run_id` != '{ctx.run_id}'", "attributes.status = 'FINISHED'", "metrics.gpu_seconds >= 0"]
    runs = client.search_runs([experiment_id], filter_string=" and ".join(flt), max_results=n,
                              order_by=["attributes.start_time DESC"])
    samples = tuple(float(r.data.metrics["gpu_seconds"]) for r in runs)
    basis = tuple(f"MLflow run {r.info.run_id[:12]} of Airflow run {r.data.tags.get('argus.run_id', '?')} "
                  f"(team {r.data.tags.get('argus.team', '?')}): {float(r.data.metrics['gpu_seconds']):.0f} GPU-s"
                  for r in runs)
    return samples, basis


def estimates(ctx: StepContext, conditions: list[str], model_config: str, steps: int, retrain_segmenter: bool,
              n: int) -> list[StepEstimate]:
    """One estimate per GPU step of the run, from the MLflow experiment of its DAG."""
    import mlflow

    from argus_tasks.models.config import ConfigError, load_config
    from argus_tasks.tracking import ensure_reachable, experiment_name

    try:
        cfg = load_config(model_config, {"steps": steps} if steps else {})
    except ConfigError as exc:
        raise PermanentStepError(f"bad model config: {exc}") from exc
    ensure_reachable()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment_name(ctx))
    wanted = []
    if retrain_segmenter:
        wanted.append(("segmenter", "segmenter", {"argus.step": "segmenter"}, {}, "past segmenter trainings"))
    for c in conditions:
        wanted.append((f"train[{c}]", "train", {"argus.step": "train", "argus.condition": c},
                       {"cfg.name": cfg.name, "cfg.steps": cfg.steps},
                       f"train of {c}, config {cfg.name}, {cfg.steps} steps"))
        wanted.append((f"evaluate[{c}]", "evaluate", {"argus.step": "evaluate", "argus.condition": c}, {},
                       f"evaluate of {c}"))
    out = []
    for label, _, tags, params, criteria in wanted:
        samples, basis = _past(client, exp.experiment_id, ctx, tags, params, n) if exp is not None else ((), ())
        out.append(StepEstimate(label, criteria, samples, basis))
    return out


def run(args, ctx: StepContext) -> dict:
    budget = _budget(args.max_gpu_hours)
    conditions = _conditions(args.conditions)
    if budget is None:
        log.info("no GPU-hour budget (Param max_gpu_hours unset): nothing to check")
        return decide([], None).to_dict()
    found = estimates(ctx, conditions, args.model_config, args.steps, args.retrain_segmenter.lower() == "true",
                      max(1, args.history))
    decision = decide(found, budget)
    if not decision.allowed:
        raise PermanentStepError(decision.message)
    (log.warning if decision.state == "no_history" else log.info)("%s", decision.message)
    return decision.to_dict()
