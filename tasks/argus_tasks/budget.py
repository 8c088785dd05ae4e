"""The GPU-hour budget of a run: a pure decision over estimates from history (``max_gpu_hours``).

Each GPU step the run will take (``train[c]``, ``evaluate[c]``, ``segmenter`` when it retrains) is
estimated from the GPU-seconds of past runs of the same step (and condition and model config): the median
of the newest few, or nothing when there is no history. :func:`decide` compares the sum with the budget:

* no budget: run;
* no estimate for any step: run, and say that nothing could be estimated;
* the known estimates alone exceed the budget: stop (a missing estimate could only add to it);
* otherwise run; a partial estimate says which steps it leaves out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepEstimate:
    step: str  # "train[fog]"
    criteria: str  # what past runs had to match, for the message
    samples: tuple[float, ...] = ()  # GPU-seconds of the matching past runs, newest first
    basis: tuple[str, ...] = ()  # one line per past run used

    @property
    def gpu_seconds(self) -> float | None:
        return float(statistics.median(self.samples)) if self.samples else None

    def describe(self) -> str:
        if self.gpu_seconds is None:
            return f"{self.step}: no history ({self.criteria})"
        return (f"{self.step} {self.gpu_seconds / 3600:.4g} GPU-h = median of {len(self.samples)} past run(s) "
                f"({self.criteria}): {'; '.join(self.basis)}")


@dataclass(frozen=True)
class BudgetDecision:
    state: str  # "no_budget" | "no_history" | "within" | "over"
    allowed: bool
    budget_gpu_hours: float | None
    estimate_gpu_hours: float | None
    missing: tuple[str, ...] = ()
    message: str = ""
    estimates: tuple[StepEstimate, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"decision": self.state, "allowed": self.allowed, "budget_gpu_hours": self.budget_gpu_hours,
                "estimate_gpu_hours": self.estimate_gpu_hours, "missing_history": list(self.missing),
                "message": self.message,
                "steps": [{"step": e.step, "criteria": e.criteria, "gpu_seconds": e.gpu_seconds,
                           "samples": list(e.samples), "basis": list(e.basis)} for e in self.estimates]}


def decide(estimates: list[StepEstimate], budget_gpu_hours: float | None) -> BudgetDecision:
    """Whether the run may take its GPUs under ``budget_gpu_hours`` (None: no budget)."""
    estimates = tuple(estimates)
    if budget_gpu_hours is None:
        return BudgetDecision("no_budget", True, None, None, message="no GPU-hour budget (max_gpu_hours unset)",
                              estimates=estimates)
    known = [e for e in estimates if e.gpu_seconds is not None]
    missing = tuple(e.step for e in estimates if e.gpu_seconds is None)
    if not known:
        return BudgetDecision(
            "no_history", True, budget_gpu_hours, None, missing,
            f"no estimate of this run's GPU time is possible: no past run with GPU-seconds for "
            f"{'; '.join(e.describe() for e in estimates) or 'any step'}. Running without a budget check "
            f"(max_gpu_hours={budget_gpu_hours:g}); this run's GPU-seconds become the history of the next",
            estimates)
    hours = sum(e.gpu_seconds for e in known) / 3600.0
    basis = "; ".join(e.describe() for e in estimates)
    left_out = f" Not counted (no history): {', '.join(missing)}." if missing else ""
    if hours > budget_gpu_hours:
        return BudgetDecision(
            "over", False, budget_gpu_hours, hours, missing,
            f"over budget: this run is estimated at {hours:.4g} GPU-hours, more than max_gpu_hours="
            f"{budget_gpu_hours:g}. Estimate: {basis}.{left_out} Nothing took a GPU. Raise max_gpu_hours, or "
            "train fewer conditions or steps", estimates)
    partial = " (a lower bound)" if missing else ""
    return BudgetDecision(
        "within", True, budget_gpu_hours, hours, missing,
        f"within budget: estimated {hours:.4g} GPU-hours{partial} of max_gpu_hours={budget_gpu_hours:g}. "
        f"Estimate: {basis}.{left_out}", estimates)
