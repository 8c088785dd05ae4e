"""What happened in one Airflow run, read back from its run-scoped store.

Every step leaves ``result.json`` (success) or ``failure.json`` (failure, with the message) in its
folder; a step that never started leaves nothing. The report and the demo summary are built from
this alone, so they work whatever failed upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from argus_tasks.store import RunStore

PER_CONDITION_STEPS = ("train", "evaluate", "promote")


@dataclass
class StepOutcome:
    where: str
    status: str  # "succeeded" | "failed" | "not run"
    result: dict = field(default_factory=dict)
    error: str = ""


def step_outcome(run: RunStore, where: str) -> StepOutcome:
    if run.exists(f"{where}/result.json"):
        return StepOutcome(where, "succeeded", run.read_json(f"{where}/result.json"))
    if run.exists(f"{where}/failure.json"):
        failure = run.read_json(f"{where}/failure.json")
        return StepOutcome(where, "failed", failure, failure.get("message", ""))
    return StepOutcome(where, "not run")


def run_outcomes(run: RunStore, conditions: list[str]) -> dict[str, StepOutcome]:
    outcomes = {w: step_outcome(run, w) for w in ("pull", "validate", "segmenter")}
    for condition in conditions:
        for step in PER_CONDITION_STEPS:
            where = f"{step}/{condition}"
            outcomes[where] = step_outcome(run, where)
    return outcomes


def first_cause(outcomes: dict[str, StepOutcome], condition: str | None = None) -> str:
    """The earliest failure that explains why ``condition`` (or the run) went no further."""
    order = ["pull", "validate", "segmenter"]
    if condition:
        order += [f"{s}/{condition}" for s in PER_CONDITION_STEPS]
    for where in order:
        outcome = outcomes.get(where)
        if outcome and outcome.status == "failed":
            return f"{where} failed: {outcome.error.splitlines()[0] if outcome.error else 'see its log'}"
    return ""
