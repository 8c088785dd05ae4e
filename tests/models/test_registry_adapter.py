"""The MLflow registry adapter against a real local MLflow (sqlite store in a temp folder)."""

from __future__ import annotations

import json
import threading

import pytest

from argus_tasks.contract import TransientStepError
from argus_tasks.models.registry_adapter import CHAMPION, Registry, promotion_lock


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    import mlflow
    import torch

    from argus_tasks.models.segmenter_registry import log_torch_model

    base = tmp_path_factory.mktemp("mlflow-adapter")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("adapter", artifact_location=str(base / "artifacts"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # the registry resolves models:/ sources through the global URI
    try:
        with mlflow.start_run(experiment_id=exp) as run:
            info = log_torch_model(torch.nn.Conv2d(3, 3, 1), "m", 8)
        reg = Registry(client)
        reg.test_source = info.model_uri
        reg.test_run_id = run.info.run_id
        yield reg
    finally:
        mlflow.set_tracking_uri(previous)


def _register(reg, name, run_id, condition="fog"):
    identity = {"argus.dag_id": "d", "argus.run_id": run_id, "argus.condition": condition}
    return reg.register(name, reg.test_source, reg.test_run_id, identity, {"argus.try_number": "1"})


def test_register_deduplicates_by_run(registry):
    v1, created1 = _register(registry, "argus-weather-fog", "run-a")
    v1_again, created2 = _register(registry, "argus-weather-fog", "run-a")  # a client retry
    v2, created3 = _register(registry, "argus-weather-fog", "run-b")
    assert created1 and not created2 and created3
    assert v1.version == v1_again.version != v2.version
    versions = registry.client.search_model_versions("name='argus-weather-fog'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert registry.version("argus-weather-fog", v1.version).tags["argus.run_id"] == "run-a"


def test_promotion_is_idempotent_and_compare_and_set(registry):
    name = "argus-weather-night"
    first, _ = _register(registry, name, "run-1", "night")
    second, _ = _register(registry, name, "run-2", "night")
    third, _ = _register(registry, name, "run-3", "night")
    assert registry.alias(name, CHAMPION) is None

    out = registry.apply_promotion(name, first.version, None, True, {"argus.run_id": "run-1"})
    assert out["applied"] and out["previous_champion"] is None and out["outcome"] == "moved"
    assert registry.alias(name, CHAMPION).version == first.version
    assert registry.version(name, first.version).tags["argus.decision"] == "promoted"

    again = registry.apply_promotion(name, first.version, None, True, {})
    assert again["already_applied"] and not again["applied"] and "already champion" in again["note"]
    assert again["outcome"] == "already_champion"

    # run-2 and run-3 both evaluated against champion v1; run-3 wins the race, run-2 must not move it back
    won = registry.apply_promotion(name, third.version, first.version, True, {})
    assert won["applied"] and won["previous_champion"] == str(first.version)
    stale = registry.apply_promotion(name, second.version, first.version, True, {})
    assert not stale["applied"] and "re-run evaluate" in stale["note"] and stale["outcome"] == "stale"
    assert registry.alias(name, CHAMPION).version == third.version
    assert registry.version(name, second.version).tags["argus.decision"] == "stale"

    kept = registry.apply_promotion(name, second.version, third.version, False, {"argus.decision_reasons": ["worse"]})
    assert not kept["applied"] and registry.alias(name, CHAMPION).version == third.version
    assert kept["outcome"] == "not_promoted"
    tags = registry.version(name, second.version).tags
    assert tags["argus.decision"] == "not_promoted" and tags["argus.previous_champion"] == str(third.version)
    assert '"worse"' in tags["argus.decision_reasons"]
    # every champion move is recorded on the registered model, and no lock ticket is left behind
    epoch = json.loads(registry.client.get_registered_model(name).tags["argus.champion_epoch"])
    assert epoch["epoch"] == 2 and epoch["version"] == str(third.version) and epoch["previous"] == str(first.version)
    assert registry.lock_tickets(name) == []


def test_missing_alias_and_model_read_as_none(registry):
    assert registry.alias("argus-weather-nothing", CHAMPION) is None
    assert registry.find("argus-weather-nothing", {"argus.run_id": "x"}) is None


def test_promotion_lock_is_exclusive(tmp_path):
    """The local fast path (a flock next to a local store); the registry lock is what excludes deployments."""
    errors = []

    def contender():
        try:
            with promotion_lock(str(tmp_path), "argus-weather-fog", timeout_s=0.3, poll_s=0.05):
                pass
        except TransientStepError as exc:
            errors.append(str(exc))

    with promotion_lock(str(tmp_path), "argus-weather-fog"):
        t = threading.Thread(target=contender)
        t.start()
        t.join()
    assert errors and "another run is promoting" in errors[0]
    contender()  # released: the next one gets it at once
    assert len(errors) == 1
