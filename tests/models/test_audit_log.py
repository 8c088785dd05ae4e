"""The audit log of champion moves against a real local MLflow registry (sqlite): write order, recovery, drift.

The crash itself, in a real process, is tests/models/test_audit_crash.py; here the states a crash
leaves behind are built by hand (an intent with or without the move) and reconciled.
"""

from __future__ import annotations

import json
import uuid

import pytest

from argus_tasks.models.audit_log import AuditLog, StoreFiles
from argus_tasks.models.audit_trail import AuditTrail
from argus_tasks.models.registry_adapter import CHAMPION, Registry
from argus_tasks.models.rollback_target import champion_stack, resolve_target, was_champion


@pytest.fixture(scope="module")
def registry():
    """The test session's sqlite registry (a new one runs MLflow's migrations: many seconds); models named per test."""
    import os

    import mlflow

    return Registry(mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]))


def _versions(registry, name, n):
    registry.client.create_registered_model(name)
    return [str(registry.client.create_model_version(name, f"argus-test:/{name}/{i}", await_creation_for=0).version)
            for i in range(1, n + 1)]


RUN = uuid.uuid4().hex[:6]


def _trail(store, kind="promotion", reason="because"):
    return AuditTrail(str(store), kind, {"user": "ada", "dag_run": "d/r"}, reason, {"decision": "file:///x"})


def _move(registry, trail, name, version, previous):
    with registry.exclusive(name, "test") as held:
        return trail.move(registry, name, CHAMPION, version, previous, held)


def test_each_move_appends_one_entry_in_the_store_and_in_the_registry_in_order(registry, tmp_path):
    name = f"argus-weather-fog-order-{RUN}"
    v1, v2, v3 = _versions(registry, name, 3)
    store = tmp_path / "store"
    assert _move(registry, _trail(store), name, v1, None)[0] == "moved"
    assert _move(registry, _trail(store), name, v2, v1)[0] == "moved"
    assert _move(registry, _trail(store, "rollback", "v2 blurs lanes"), name, v1, v2)[0] == "moved"
    entries = AuditLog(registry, str(store), name).entries()
    assert [(e["seq"], e["kind"], e["state"], e["from"], e["to"]) for e in entries] == [
        (1, "promotion", "committed", None, v1), (2, "promotion", "committed", v1, v2),
        (3, "rollback", "committed", v2, v1)]
    assert entries[2]["reason"] == "v2 blurs lanes" and entries[2]["who"]["user"] == "ada"
    assert entries[2]["epoch"] == 3 and entries[2]["lock_token"]
    files = sorted(p.name for p in (store / "audit" / name / CHAMPION).iterdir())
    assert files == ["000001.intent.json", "000001.json", "000002.intent.json", "000002.json", "000003.intent.json",
                     "000003.json"]
    tags = registry.client.get_registered_model(name).tags
    assert json.loads(tags["argus.audit.champion.000003"])["entry_id"] == entries[2]["entry_id"]
    assert "argus.audit.champion.pending" not in tags, "the intent is cleared once the entry is final"
    assert str(registry.alias(name, CHAMPION).version) == v1 and v3 not in {e["to"] for e in entries}


def test_an_intent_whose_move_happened_is_completed_as_committed(registry, tmp_path):
    """The state a crash between the alias move and the final write leaves: intent + moved alias."""
    name = f"argus-weather-rain-{RUN}"
    v1, v2 = _versions(registry, name, 2)
    store = tmp_path / "store"
    _move(registry, _trail(store), name, v1, None)
    log = AuditLog(registry, str(store), name)
    with registry.exclusive(name, "crashing writer") as held:
        intent = _trail(store, "rollback")._entry(log.next_seq(), name, CHAMPION, v1, v2, held, "intent")
        log.write_intent(intent)
        assert registry.move_alias(name, CHAMPION, v2, v1, held)[0] == "moved"
    assert [p["seq"] for p in log.pending()] == [2]
    with registry.exclusive(name, "next writer"):
        appended = AuditTrail(str(store), "audit", {"user": "bob"}).reconcile(registry, name, CHAMPION)
    assert [(e["seq"], e["state"], e["recovered"], e["to"]) for e in appended] == [(2, "committed", True, v2)]
    assert appended[0]["recovered_by"] == {"user": "bob"} and appended[0]["who"]["user"] == "ada"
    assert log.pending() == [] and [e["state"] for e in log.entries()] == ["committed", "committed"]


def test_an_intent_whose_move_never_happened_is_marked_aborted(registry, tmp_path):
    name = f"argus-weather-snow-{RUN}"
    v1, v2 = _versions(registry, name, 2)
    store = tmp_path / "store"
    _move(registry, _trail(store), name, v1, None)
    log = AuditLog(registry, str(store), name)
    with registry.exclusive(name, "writer dying before its move") as held:
        log.write_intent(_trail(store)._entry(log.next_seq(), name, CHAMPION, v1, v2, held, "intent"))
    assert _move(registry, _trail(store), name, v2, v1)[0] == "moved"  # the next writer reconciles first
    assert [(e["seq"], e["state"], e["to"]) for e in log.entries()] == [(1, "committed", v1), (2, "aborted", v2),
                                                                      (3, "committed", v2)]


def test_a_move_outside_argus_is_recorded_as_observed_and_the_chain_stays_continuous(registry, tmp_path):
    name = f"argus-weather-night-{RUN}"
    v1, v2, v3 = _versions(registry, name, 3)
    store = tmp_path / "store"
    _move(registry, _trail(store), name, v1, None)
    registry.client.set_registered_model_alias(name, CHAMPION, v3)  # someone in the MLflow UI
    _move(registry, _trail(store), name, v2, v3)
    entries = AuditLog(registry, str(store), name).entries()
    assert [(e["state"], e["from"], e["to"]) for e in entries] == [("committed", None, v1), ("observed", v1, v3),
                                                                  ("committed", v3, v2)]
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["from"] == before["to"], "each move starts where the previous one left the alias"


def test_a_store_that_lacks_entries_gets_them_from_the_registry(registry, tmp_path):
    """Two deployments share one registry but not a store: each store ends up with the whole log."""
    name = f"argus-weather-fog-two-stores-{RUN}"
    v1, v2 = _versions(registry, name, 2)
    _move(registry, _trail(tmp_path / "store-a"), name, v1, None)
    _move(registry, _trail(tmp_path / "store-b"), name, v2, v1)
    a, b = AuditLog(registry, str(tmp_path / "store-a"), name), AuditLog(registry, str(tmp_path / "store-b"), name)
    assert [e["seq"] for e in b.snapshot()["store"][0].values()] == [1, 2], "b copied a's entry before its own"
    with registry.exclusive(name, "a again"):
        _trail(tmp_path / "store-a").reconcile(registry, name, CHAMPION)
    assert [e["entry_id"] for e in a.entries()] == [e["entry_id"] for e in b.entries()]


def test_an_entry_is_never_rewritten_with_other_content(tmp_path):
    files = StoreFiles(str(tmp_path), "audit/m/champion")
    assert files.write_once("000001.json", b'{"a": 1}') is True
    assert files.write_once("000001.json", b'{"a": 1}') is False
    with pytest.raises(FileExistsError):
        files.write_once("000001.json", b'{"a": 2}')
    assert (tmp_path / "audit/m/champion/000001.json").read_bytes() == b'{"a": 1}'


def _e(seq, kind, frm, to, state="committed"):
    return {"seq": seq, "kind": kind, "from": frm, "to": to, "state": state, "when": f"t{seq}"}


def test_previous_walks_back_the_champion_stack_instead_of_flip_flopping():
    log = [_e(1, "promotion", None, "1"), _e(2, "promotion", "1", "2"), _e(3, "promotion", "2", "3")]
    assert champion_stack(log) == ["1", "2", "3"]
    assert resolve_target("previous", log, "3")[0] == "2"
    log.append(_e(4, "rollback", "3", "2"))
    assert champion_stack(log) == ["1", "2"] and resolve_target("previous", log, "2")[0] == "1"
    log.append(_e(5, "rollback", "2", "3"))  # forward again, by version
    assert champion_stack(log) == ["1", "2", "3"]
    log.append(_e(6, "promotion", "3", "4", state="refused"))  # refused moves do not count
    assert champion_stack(log)[-1] == "3"
    assert was_champion("3", log, {}) and was_champion("4", log, {}) is None
    assert was_champion("4", log, {"argus.decision": "promoted"})


def test_previous_without_any_recorded_move_names_what_to_do():
    from argus_tasks.contract import PermanentStepError

    with pytest.raises(PermanentStepError, match="target=N"):
        resolve_target("previous", [], "3")
    assert resolve_target("previous", [], "3", {"version": "3", "previous": "2"})[0] == "2"
