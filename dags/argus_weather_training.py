"""argus_weather_training: wiring only. Steps live in plugins/argus_airflow, code in tasks/."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, task, task_group

from argus_airflow import settings
from argus_airflow.approval import ConditionalApprovalOperator
from argus_airflow.factory import MAP_INDEX_TEMPLATE, heavy_step
from argus_airflow.run_timeout import APPROVAL_WINDOW, dagrun_timeout
from argus_airflow.training_params import training_params
from argus_airflow.training_steps import (
    BUDGET,
    EVALUATE,
    GROUP_ID,
    HARD_FRAMES,
    PROMOTE,
    PULL,
    REPORT,
    SEGMENTER,
    TRAIN,
    VALIDATE,
    train_step,
)

SETTINGS = settings.load()

DOC = """
# Weather generator training

Makes adverse-weather versions of clear driving frames. Every step below except `select_conditions`
and `approve` is a **heavy step**: the task image's `argus-task` command, run as a Kubernetes pod
(`ARGUS_RUNTIME=kubernetes`) or a local process (`ARGUS_RUNTIME=local`, the demo).

1. **pull** the frames of this run's data interval from the DVC dataset registry (revision: `dataset_rev`);
2. **validate** them with Great Expectations: a few bad frames are quarantined, more fail the run;
3. per condition, in one task group mapped over the conditions (the map index is the condition):
   **train** a generator, **evaluate** it with the reference **segmenter** against the champion and
   non-learned references, optionally wait for a person to **approve** (no answer within the approval
   window rejects), then **promote** it to the `champion` alias only if it is better with statistical
   confidence. Beside approve and promote, **hard-frames** updates the condition's set of repeatedly hard
   frames (the next run's `hard_frame_weight` oversamples it) and draws its gallery. Each condition goes
   on on its own: a failed or waiting condition holds up no other;
4. **report**: a summary table with links, whatever happened upstream; the run ends failed when any
   step of any condition failed.

**Reruns are safe.** Outputs live under `<store>/runs/<dag_id>/<run_id>/` and are written atomically;
a retried `train` resumes from its last checkpoint, a finished one returns its result, the model
registry is deduplicated by run, and a re-run `promote` sees its decision already applied and
moves nothing. Promotions are serialised by the 1-slot `argus_promotion` pool.

Backfill: `airflow backfill create --dag-id argus_weather_training --from-date 2026-01-01 --to-date 2026-01-15`.
"""

with DAG(
    dag_id="argus_weather_training",
    description="Train, evaluate and promote one adverse-weather generator per condition",
    # Mon and Thu 02:00 UTC unless the deployment sets ARGUS_SCHEDULE (a cron expression, UTC)
    schedule=CronDataIntervalTimetable(SETTINGS.schedule, timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,
    # the approval window plus every step of the longest path with all its retries
    dagrun_timeout=dagrun_timeout((PULL, VALIDATE, TRAIN, EVALUATE, PROMOTE, REPORT), SETTINGS),
    # ARGUS_PARAM_DEFAULTS (JSON) lets a deployment change what its scheduled runs do
    params=training_params("full" if SETTINGS.kubernetes else "tiny", SETTINGS.param_defaults),
    doc_md=DOC,
    tags=["argus", "training", "mlops"],
) as dag:

    @task(task_id="select_conditions")
    def select_conditions(params=None) -> list[str]:
        """The conditions to map over, in a stable order."""
        chosen = params["conditions"]
        return [c for c in ("fog", "rain", "snow", "night") if c in chosen]

    @task(task_id="run_outcome", trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def run_outcome() -> None:
        """Fails the run when any step failed. Skipped (shown pink in the grid) means that no step failed."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a step of this run failed: see the report and the failed task's log")

    pull = heavy_step(PULL, settings=SETTINGS)
    validate = heavy_step(VALIDATE, settings=SETTINGS)
    segmenter = heavy_step(SEGMENTER, settings=SETTINGS)
    budget = heavy_step(BUDGET, settings=SETTINGS)  # the GPU-hour budget gate, before any GPU step
    report = heavy_step(REPORT, settings=SETTINGS, trigger_rule=TriggerRule.ALL_DONE)
    outcome = run_outcome()

    @task_group(group_id=GROUP_ID, prefix_group_id=False)
    def per_condition(condition):
        """train -> evaluate -> approve -> promote for one condition, independent of the other conditions."""
        # ARGUS_TRAIN_GPUS > 1: torchrun, one DDP rank per GPU of the pod
        train = heavy_step(train_step(SETTINGS.train_gpus), settings=SETTINGS, condition=condition)
        evaluate = heavy_step(EVALUATE, settings=SETTINGS, condition=condition)
        approve = ConditionalApprovalOperator(task_id="approve", condition=condition,
                                              map_index_template=MAP_INDEX_TEMPLATE,
                                              response_timeout=APPROVAL_WINDOW)
        promote = heavy_step(PROMOTE, settings=SETTINGS, condition=condition)
        # the hard set feeds the next run, not this promotion: a failure there holds no better model back
        hard_frames = heavy_step(HARD_FRAMES, settings=SETTINGS, condition=condition)
        validate >> train >> evaluate >> approve >> promote >> report
        budget >> train
        evaluate >> hard_frames >> report
        segmenter >> evaluate
        [train, evaluate, hard_frames, approve, promote] >> outcome

    pull >> validate >> segmenter
    budget >> segmenter
    per_condition.expand(condition=select_conditions())
    [pull, validate, budget, segmenter, report] >> outcome
