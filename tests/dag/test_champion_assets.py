"""The champion-moved asset event: emitted for a real move only, through Airflow's own outlet accessors."""

from __future__ import annotations

import logging

import pytest

from argus_airflow.champion_assets import CHAMPION_MOVED, champion_asset, emit_if_moved, moved

MOVED = {"registry_outcome": "moved", "already_applied": False, "model_name": "argus-weather-fog",
         "previous_champion": "3", "champion_version": "4"}


@pytest.mark.parametrize("result, expected", [
    (MOVED, True),
    ({**MOVED, "already_applied": True}, False),  # a rerun that found its decision applied
    ({**MOVED, "registry_outcome": "not_promoted"}, False),
    ({**MOVED, "registry_outcome": "stale"}, False),
    ({**MOVED, "registry_outcome": "conflict"}, False),
    ({**MOVED, "registry_outcome": "already_champion"}, False),
    ({}, False),
    (None, False),
])
def test_only_a_move_made_by_this_call_counts(result, expected):
    assert moved(result) is expected


def _context():
    from airflow.sdk.execution_time.context import OutletEventAccessors

    class Dag:
        dag_id = "argus_weather_training"

    return {"outlet_events": OutletEventAccessors(), "dag": Dag(), "run_id": "r1"}


def test_a_move_adds_one_event_of_its_condition_to_the_alias():
    context = _context()
    assert emit_if_moved(context, "fog", MOVED, logging.getLogger("t")) is True
    events = context["outlet_events"][CHAMPION_MOVED].asset_alias_events
    assert [e.source_alias_name for e in events] == ["argus_champion_moved"]
    assert [e.dest_asset_key.uri for e in events] == [champion_asset("fog").uri] == ["argus://champion/fog"]
    assert events[0].extra == {"model_name": "argus-weather-fog", "previous_champion": "3", "champion_version": "4",
                               "run": "argus_weather_training/r1"}


def test_a_refusal_adds_nothing():
    context = _context()
    assert emit_if_moved(context, "fog", {**MOVED, "registry_outcome": "not_promoted"}, logging.getLogger("t")) is False
    assert context["outlet_events"][CHAMPION_MOVED].asset_alias_events == []


def test_promote_declares_the_alias_and_generation_listens_to_every_condition():
    from airflow.dag_processing.dagbag import DagBag

    from argus_airflow.settings import REPO_ROOT

    dags = DagBag(str(REPO_ROOT / "dags")).dags
    promote = dags["argus_weather_training"].get_task("promote")
    assert promote.outlets == [CHAMPION_MOVED]
    schedule = dags["argus_weather_generation"].timetable.asset_condition
    assert sorted(a.uri for a in schedule.objects) == sorted(f"argus://champion/{c}" for c in ("fog", "night", "rain",
                                                                                               "snow"))
