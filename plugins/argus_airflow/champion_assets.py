"""The "champion moved" Airflow assets: one per condition, emitted only when an alias really moved.

``promote`` (and a rollback) declare the asset alias :data:`CHAMPION_MOVED` as their outlet. An alias
with no event added emits nothing, so a refused promotion or an "already applied" rerun produces no
event; a real move adds one event for that condition's asset (:func:`champion_asset`), which
``argus_weather_generation`` is scheduled on.

A try that moves the alias and then dies before Airflow records its success leaves the move without
an event (its retry sees "already applied"); the champion is still right and the generation can be
triggered by hand.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

CONDITIONS = ("fog", "rain", "snow", "night")
CHAMPION_MOVED = AssetAlias(name="argus_champion_moved")


def champion_asset(condition: str) -> Asset:
    """``argus://champion/<condition>``: the champion of ``argus-weather-<condition>`` changed."""
    return Asset(name=f"argus_champion_{condition}", uri=f"argus://champion/{condition}", group="argus")


def moved(result: dict | None) -> bool:
    """Whether a promote/rollback result is a move made by this call (not a refusal nor a rerun)."""
    return bool(result) and result.get("registry_outcome") == "moved" and not result.get("already_applied")


def emit_if_moved(context, condition: str | None, result: dict | None, log) -> bool:
    """Add the champion-moved event of ``condition`` to the task's outlet alias when ``result`` moved it."""
    if not condition or not moved(result):
        return False
    extra = {k: result.get(k) for k in ("model_name", "previous_champion", "champion_version") if k in result}
    extra["run"] = f"{context['dag'].dag_id}/{context['run_id']}"
    context["outlet_events"][CHAMPION_MOVED].add(champion_asset(condition), extra=extra)
    log.info("champion of %s moved v%s -> v%s: emitted %s", condition, extra.get("previous_champion"),
             extra.get("champion_version"), champion_asset(condition).uri)
    return True
