"""How long one run of the training DAG may take: the approval window plus every step with its retries.

A pure function of the step specs and the retry settings, so the DAG's ``dagrun_timeout`` can never
again be shorter than the approval window or than training with its retries.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from argus_airflow.settings import Settings
from argus_airflow.step_spec import StepSpec, execution_timeout

APPROVAL_WINDOW = timedelta(days=2)
"""How long ``approve`` waits for a person; then it rejects (fails closed) and the report says so."""

MAX_RETRY_DELAY = timedelta(minutes=10)  # operator_defaults' max_retry_delay


def worst_case(spec: StepSpec, settings: Settings) -> timedelta:
    """Every try of ``spec`` running to its execution timeout (on Kubernetes: the wait for a node
    included), with the (capped, growing) retry delays between."""
    delay = timedelta(seconds=settings.retry_delay_s)
    delays = sum((min(delay * (2 ** i), MAX_RETRY_DELAY) for i in range(settings.retries)), timedelta())
    return execution_timeout(spec, settings) * (settings.retries + 1) + delays


def dagrun_timeout(critical_path: Iterable[StepSpec], settings: Settings,
                   approval_window: timedelta = APPROVAL_WINDOW) -> timedelta:
    """The approval window plus the worst case of each step on the longest path of one condition."""
    total = approval_window
    for spec in critical_path:
        total += worst_case(spec, settings)
    return total
