"""What the two heavy-step operators have in common."""

from __future__ import annotations

from argus_airflow.exit_codes import EXIT_PERMANENT, describe
from argus_airflow.step_spec import StepSpec

STEP_TEMPLATE_FIELDS = ("condition", "item", "arguments", "env_vars")  # condition and item first: arguments use them


class StepOperatorMixin:
    """Carries the :class:`StepSpec` and, for mapped steps, the weather ``condition`` or another ``item``.

    ``condition`` is an operator argument so that ``.expand(condition=[...])`` maps a step over the
    conditions; arguments refer to it as ``{{ task.condition }}`` and it names the map index. ``item``
    does the same for other lists (the shards of a generation run: ``{{ task.item }}``).
    """

    step_spec: StepSpec
    condition: str | None
    item: str | None

    def init_step(self, step_spec: StepSpec, cmds: list[str], arguments: list[str], env_vars: dict[str, str],
                  condition: str | None, item: str | None) -> None:
        """What both runtimes' constructors set."""
        self.step_spec = step_spec
        self.cmds = cmds
        self.arguments = arguments
        self.env_vars = env_vars
        self.condition = condition
        self.item = item

    def finish(self, context, result: dict) -> dict:
        """After a successful step: emit the champion-moved asset event when the step moved a champion."""
        if self.step_spec.emits_champion_moved:
            from argus_airflow.champion_assets import emit_if_moved

            emit_if_moved(context, self.condition, result, self.log)
        return result

    def failure_exception(self, code: int, tail: list[str]) -> Exception:
        """AirflowFailException for permanent failures (no retry), AirflowException otherwise."""
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        index = self.condition or getattr(self, "item", None)
        where = self.step_spec.name + (f"[{index}]" if index else "")
        last = "\n".join(tail[-20:]) if tail else "(no output)"
        msg = f"step {where} exited with code {code}: {describe(code)}\n--- last log lines ---\n{last}"
        if code == EXIT_PERMANENT:
            return AirflowFailException(msg)
        return AirflowException(msg)
