"""``argus-task summary``: what the last run did, for people (``make demo`` prints it).

For each condition: the MLflow run, the registered version, the promotion decision and why, the
champion version now in the registry, and the key metrics.
"""

from __future__ import annotations

import os
from pathlib import Path

from argus_tasks.contract import CONDITIONS, DEFAULT_STORE, StepContext
from argus_tasks.run_outcome import run_outcomes
from argus_tasks.steps.report import _fmt, condition_row
from argus_tasks.store import RunStore

HELP = "print a summary of the newest (or a given) run of a DAG"


def add_arguments(parser) -> None:
    parser.add_argument("--dag-id", default="argus_weather_training")
    parser.add_argument("--run-id", default="", help="default: the newest run in the store")
    parser.add_argument("--log", default="", help="the Airflow log of the run, to point people at")


def newest_run_id(store_root: str, dag_id: str) -> str:
    runs = Path(store_root) / "runs" / dag_id
    candidates = [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else []
    if not candidates:
        raise SystemExit(f"no run of {dag_id} in {runs}: run `make demo` first")
    return max(candidates, key=lambda p: p.stat().st_mtime).name


def champion_versions() -> dict[str, str]:
    try:
        import mlflow

        client = mlflow.MlflowClient()
        out = {}
        for condition in CONDITIONS:
            try:
                out[condition] = client.get_model_version_by_alias(f"argus-weather-{condition}", "champion").version
            except Exception:
                out[condition] = "-"
        return out
    except Exception as exc:
        return {c: f"(MLflow unavailable: {exc})" for c in CONDITIONS}


def generation_summary(run_store: RunStore, run_id: str, log_path: str) -> dict:
    """What a generation run published: the revision, its frames and its QA, or why nothing was published."""
    from argus_tasks.run_outcome import step_outcome

    print(f"=== argus_weather_generation run {run_id} ===")
    resolve, check, publish = (step_outcome(run_store, w) for w in ("resolve", "check-outputs", "publish"))
    models = (resolve.result or {}).get("models", {})
    print("models: " + (", ".join(f"{c} v{m.get('version')}" for c, m in models.items()) or "-"))
    if check.status == "succeeded":
        r = check.result
        print(f"QA: {r.get('outcome')}: {r.get('accepted')} accepted, {r.get('flagged')} flagged of "
              f"{r.get('n_outputs')} frames (Data Docs {r.get('data_docs')})")
    else:
        print(f"QA: {check.status}{': ' + check.error.splitlines()[0] if check.error else ''}")
    if publish.status == "succeeded":
        r = publish.result
        again = " (already published: nothing changed)" if r.get("already_published") else ""
        print(f"published: {r.get('output_dataset')} {r.get('revision')}, {r.get('n_frames')} frames{again}")
        print(f"  get it: {r.get('how_to_pull')}")
    else:
        print(f"published: nothing ({publish.status}{': ' + publish.error.splitlines()[0] if publish.error else ''})")
    if run_store.exists("generation-report/index.html"):
        print(f"run report (open it in a browser): {run_store.url('generation-report/index.html')}")
    elif run_store.exists("generation-report/report.md"):
        print(f"report: {run_store.url('generation-report/report.md')}")
    if log_path:
        print(f"Airflow log: {log_path}")
    return {}


def run(args, ctx: StepContext) -> dict:
    store = os.environ.get("ARGUS_STORE", DEFAULT_STORE)
    run_id = args.run_id or newest_run_id(store, args.dag_id)
    run_store = RunStore(store, args.dag_id, run_id)
    if args.dag_id == "argus_weather_generation":
        return generation_summary(run_store, run_id, args.log)
    conditions = [c for c in CONDITIONS if run_store.exists(f"train/{c}") or run_store.exists(f"evaluate/{c}")]
    outcomes = run_outcomes(run_store, conditions)
    champions = champion_versions()
    print(f"=== argus_weather_training run {run_id} ===")
    for name in ("pull", "validate", "segmenter"):
        o = outcomes[name]
        extra = ""
        if name == "pull" and o.result:
            extra = f"revision {o.result.get('revision')} · {o.result.get('n_frames')} frames · " \
                    f"fingerprint {str(o.result.get('fingerprint'))[:12]}"
        if name == "validate" and o.result:
            extra = f"{o.result.get('quarantined', 0)} quarantined · Data Docs {o.result.get('data_docs')}"
        if name == "segmenter" and o.result:
            extra = f"v{o.result.get('version')} · clear mIoU {_fmt(o.result.get('miou'), 3)}"
        print(f"{name:>10}: {o.status}{' · ' + extra if extra else ''}{' · ' + o.error if o.error else ''}")
    print()
    header = f"{'condition':<9} {'mlflow run':<34} {'version':>7} {'decision':<14} {'champion':>8} " \
             f"{'cls-gap':>8} {'KID':>8} {'label':>6}"
    print(header)
    print("-" * len(header))
    for c in conditions:
        r = condition_row(c, outcomes)
        print(f"{c:<9} {str(r['mlflow_run_id'] or '-'):<34} {_fmt(r['challenger_version']):>7} "
              f"{r['decision']:<14} {str(champions.get(c, '-')):>8} {_fmt(r['classwise_gap']):>8} "
              f"{_fmt(r['kid']):>8} {_fmt(r['label_preservation'], 3):>6}")
    print()
    for c in conditions:
        r = condition_row(c, outcomes)
        print(f"  {c}: {r['decision']} — {r['reasons'] or '-'}")
    from argus_tasks.cost_report import run_cost

    totals = run_cost(run_store, conditions)[1]
    price = totals["gpu_hour_price"]
    print(f"\nGPU time: {totals['run_gpu_seconds']:.1f} GPU-seconds ({totals['run_gpu_hours']:.4f} GPU-hours)"
          + (f", estimated cost {totals['run_gpu_cost']:.4f} at {price:g}/GPU-hour" if price is not None else ""))
    if run_store.exists("report/index.html"):
        print(f"\nrun report (open it in a browser): {run_store.url('report/index.html')}")
    elif run_store.exists("report/report.md"):
        print(f"\nreport: {run_store.url('report/report.md')}")
    if args.log:
        print(f"Airflow log: {args.log}")
    return {}
