"""argus_weather_generation: wiring only. Steps live in plugins/argus_airflow, code in tasks/."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, TriggerRule, task

from argus_airflow import settings
from argus_airflow.champion_assets import CONDITIONS, champion_asset
from argus_airflow.factory import ITEM_INDEX_TEMPLATE, heavy_step
from argus_airflow.generation_params import generation_params
from argus_airflow.generation_steps import (
    CHECK,
    EXPORT,
    GENERATE,
    GENERATION_REPORT,
    PLAN,
    PUBLISH,
    PULL_SOURCE,
    RESOLVE,
)
from argus_airflow.training_steps import SEGMENTER, VALIDATE

SETTINGS = settings.load()

DOC = """
# Labelled adverse-weather datasets

Translates the clear frames of a dataset revision to fog, rain, snow or night with the **champion**,
keeps the source labels, checks the output and publishes it as a new revision of an output dataset.
Runs when a champion moves (one asset per condition) or by hand (Trigger).

pull -> validate -> segmenter (the pinned judge) -> resolve (model versions, fixed for the run) ->
export[condition] (ONNX + parity) -> plan-shards -> generate[shard] -> check-outputs -> publish ->
generation-report. A failed or partial run never publishes.
"""

with DAG(
    dag_id="argus_weather_generation",
    description="Generate labelled adverse-weather datasets with the champion generators",
    schedule=(champion_asset("fog") | champion_asset("rain") | champion_asset("snow") | champion_asset("night")),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(days=2),
    params=generation_params(),
    doc_md=DOC,
    tags=["argus", "generation", "product"],
) as dag:

    @task(task_id="select_conditions")
    def select_conditions(params=None, triggering_asset_events=None) -> list[str]:
        """The conditions whose champion moved (asset-triggered run), else the chosen ones."""
        uris = [getattr(asset, "uri", str(asset)) for asset in (triggering_asset_events or {})]
        moved = {uri.rsplit("/", 1)[-1] for uri in uris if uri.startswith("argus://champion/")}
        chosen = moved or set(params["conditions"])
        return [c for c in CONDITIONS if c in chosen]

    @task(task_id="shard_ids")
    def shard_ids(plan: dict) -> list[str]:
        """The shards to map ``generate`` over (their frame lists stay in the run store)."""
        return [s["shard_id"] for s in plan["shards"]]

    @task(task_id="run_outcome", trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def run_outcome() -> None:
        """Fails the run when any step failed (nothing was published then)."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a step of this run failed: see the report and the failed task's log")

    conditions = select_conditions()
    pull = heavy_step(PULL_SOURCE, settings=SETTINGS)
    validate = heavy_step(VALIDATE, settings=SETTINGS)
    segmenter = heavy_step(SEGMENTER, settings=SETTINGS)
    resolve = heavy_step(RESOLVE, settings=SETTINGS)
    export = heavy_step(EXPORT, mapped=True, settings=SETTINGS).expand(condition=conditions)
    plan = heavy_step(PLAN, settings=SETTINGS)
    shards = shard_ids(plan.output)
    generate = heavy_step(GENERATE, mapped=True, settings=SETTINGS,
                          map_index_template=ITEM_INDEX_TEMPLATE).expand(item=shards)
    check = heavy_step(CHECK, settings=SETTINGS)
    publish = heavy_step(PUBLISH, settings=SETTINGS)
    report = heavy_step(GENERATION_REPORT, settings=SETTINGS, trigger_rule=TriggerRule.ALL_DONE)

    conditions >> pull >> validate >> segmenter >> resolve >> export >> plan
    generate >> check >> publish >> report
    [pull, validate, segmenter, resolve, export, plan, shards, generate, check, publish, report] >> run_outcome()
