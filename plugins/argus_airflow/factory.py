"""``heavy_step``: a :class:`StepSpec` becomes the operator of the selected runtime."""

from __future__ import annotations

from argus_airflow import settings as settings_mod
from argus_airflow.step_spec import StepSpec, contract_env, operator_defaults

MAP_INDEX_TEMPLATE = "{{ task.condition }}"
ITEM_INDEX_TEMPLATE = "{{ task.item }}"


def heavy_step(spec: StepSpec, *, mapped: bool = False, settings=None, condition=None, **overrides):
    """The operator for ``spec`` (or its ``.partial(...)`` when ``mapped``; expand over ``condition``).

    ``condition`` is the weather condition of a step inside the per-condition task group (the group's
    mapped argument); the map index is then named by it. ``overrides`` are extra BaseOperator
    arguments (trigger_rule, pool for a promotion step...).
    """
    s = settings or settings_mod.load()
    kwargs = operator_defaults(spec, s)
    kwargs.update(step_spec=spec, cmds=list(spec.command), arguments=spec.full_arguments)
    env = contract_env(s, spec)
    if mapped or condition is not None:
        kwargs["map_index_template"] = MAP_INDEX_TEMPLATE
    if condition is not None:
        kwargs["condition"] = condition
    if spec.emits_champion_moved:
        from argus_airflow.champion_assets import CHAMPION_MOVED

        kwargs["outlets"] = [CHAMPION_MOVED]
    kwargs["env_vars"] = env
    if s.kubernetes:
        from argus_airflow.pod_step import PodStepOperator

        kwargs["settings"] = s
        cls = PodStepOperator
    else:
        from argus_airflow.local_runtime import LocalStepOperator

        cls = LocalStepOperator
    kwargs.update(overrides)
    return cls.partial(**kwargs) if mapped else cls(**kwargs)
