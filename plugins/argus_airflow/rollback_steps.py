"""The heavy steps of ``argus_champion_rollback``, each declared once.

``pull``/``validate`` are the generation DAG's (the whole revision, no interval) and ``segmenter``
pins the current judge without ever retraining it: a rollback is judged by the judge of today.
``rollback`` is a promotion-kind step: the 1-slot promotion pool, the registry lock, and the
champion-moved outlet (an event only on a real move).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from argus_airflow.generation_steps import PULL_SOURCE
from argus_airflow.step_spec import StepSpec
from argus_airflow.training_steps import SEGMENTER, VALIDATE

CONDITION = "{{ params.condition }}"
TRIGGERED_BY = {"ARGUS_TRIGGERED_BY": "{{ dag_run.triggering_user_name or '' }}"}  # who asked, for the audit log

# CPU steps: a rollback must not queue for the shared GPU pool; a small re-evaluation is quick on CPUs
PIN_JUDGE = dataclasses.replace(
    SEGMENTER, arguments=("--no-retrain",), gpus=0, cpu="2",
    doc="Pin the current reference segmenter (the judge) for the re-evaluation; never retrains it.")

ROLLBACK_CHECK = StepSpec(
    name="rollback-check",
    kind="evaluation",
    cpu="2",
    memory="8Gi",
    timeout=timedelta(minutes=30),
    extra_env=TRIGGERED_BY,
    arguments=("--condition", CONDITION, "--target", "{{ params.target }}", "--reason", "{{ params.reason }}",
               "{{ '--force' if params.force else '--no-force' }}", "--max-frames", "{{ params.eval_frames }}"),
    doc="Resolve the target once; check its files, lineage, that it was champion (unless force) and the sanity "
        "gates of a quick re-evaluation under the current judge. A failed check names what failed; nothing moves.",
)

ROLLBACK = StepSpec(
    name="rollback",
    kind="promotion",
    emits_champion_moved=True,
    memory="1Gi",
    timeout=timedelta(minutes=30),
    extra_env=TRIGGERED_BY,
    arguments=("--condition", CONDITION,
               "--approval", "{{ ti.xcom_pull(task_ids='approve') | tojson }}"),
    doc="Move the champion alias back under the registry lock (serialised with promotions), audited; emits the "
        "champion-moved asset event only on a real move. A rerun moves nothing and says so.",
)

ROLLBACK_STEPS = (PULL_SOURCE, VALIDATE, PIN_JUDGE, ROLLBACK_CHECK, ROLLBACK)
"""The heavy steps of the DAG, in order."""
