"""argus_champion_rollback: wiring only. Steps live in plugins/argus_airflow, code in tasks/."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from argus_airflow import settings
from argus_airflow.factory import heavy_step
from argus_airflow.rollback_approval import ROLLBACK_APPROVAL_WINDOW, RollbackApprovalOperator
from argus_airflow.rollback_params import rollback_params
from argus_airflow.rollback_steps import PIN_JUDGE, PULL_SOURCE, ROLLBACK, ROLLBACK_CHECK, VALIDATE

SETTINGS = settings.load()

DOC = """
# Roll a champion back

Restores an earlier version as the `champion` of one condition, with a reason, checks and an audit trail.

pull -> validate -> segmenter (the current judge) -> **rollback-check** (the target's files and lineage, that
it was champion before unless `force`, the sanity gates of a quick re-evaluation) -> **approve** (a person
confirms when `require_approval` is on; no answer rejects) -> **rollback** (the alias moves under the registry
lock that promotions take too; an audit entry records who, when, why and the evidence; the champion-moved
asset event makes `argus_weather_generation` regenerate with the restored champion).

A failed check names what failed and nothing moves. A rerun moves nothing and says so.
`argus-task audit --condition <c>` prints the log.
"""

with DAG(
    dag_id="argus_champion_rollback",
    description="Roll one condition's champion back to an earlier version, checked, confirmed and audited",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=ROLLBACK_APPROVAL_WINDOW + timedelta(hours=4),
    params=rollback_params(),
    doc_md=DOC,
    tags=["argus", "rollback", "mlops"],
) as dag:
    pull = heavy_step(PULL_SOURCE, settings=SETTINGS)
    validate = heavy_step(VALIDATE, settings=SETTINGS)
    segmenter = heavy_step(PIN_JUDGE, settings=SETTINGS)
    check = heavy_step(ROLLBACK_CHECK, settings=SETTINGS)
    approve = RollbackApprovalOperator(task_id="approve", response_timeout=ROLLBACK_APPROVAL_WINDOW,
                                       subject="Roll the champion back?")
    # condition (templated) names the champion-moved event; not a mapped task, so no map index template
    rollback = heavy_step(ROLLBACK, settings=SETTINGS, condition="{{ params.condition }}", map_index_template=None)
    pull >> validate >> segmenter >> check >> approve >> rollback
