"""What the two heavy-step operators have in common."""

from __future__ import annotations

from argus_airflow.exit_codes import EXIT_PERMANENT, describe
from argus_airflow.step_spec import StepSpec


class StepOperatorMixin:
    """Carries the :class:`StepSpec` and, for mapped steps, the weather ``condition``.

    ``condition`` is an operator argument so that ``.expand(condition=[...])`` maps a step over the
    conditions; arguments refer to it as ``{{ task.condition }}`` and it names the map index.
    """

    step_spec: StepSpec
    condition: str | None

    def failure_exception(self, code: int, tail: list[str]) -> Exception:
        """AirflowFailException for permanent failures (no retry), AirflowException otherwise."""
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        where = self.step_spec.name + (f"[{self.condition}]" if self.condition else "")
        last = "\n".join(tail[-20:]) if tail else "(no output)"
        msg = f"step {where} exited with code {code}: {describe(code)}\n--- last log lines ---\n{last}"
        if code == EXIT_PERMANENT:
            return AirflowFailException(msg)
        return AirflowException(msg)
