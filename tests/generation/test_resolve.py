"""`argus-task resolve`: each condition's model is pinned to one version at the start of a run.

Registrations here name no real artifact (resolve reads only the registry), so they cost nothing.
"""

from __future__ import annotations

import uuid

import pytest

from .export_support import local_mlflow


@pytest.fixture
def env(tmp_path):
    with local_mlflow(tmp_path) as env:
        yield env


def _version(env, name: str, tags: dict | None = None) -> str:
    run = env.client.create_run(env.experiment_id)
    env.registry.ensure_model(name)
    tags = {"argus.content_hash": f"hash-{uuid.uuid4().hex}", **(tags or {})}
    mv = env.client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags)
    return str(mv.version)


def _run_id() -> str:
    return f"gen-{uuid.uuid4().hex[:8]}"


def test_resolve_records_each_champion_and_a_rerun_keeps_it_after_a_promotion(env, capsys):
    v1, v2 = _version(env, "argus-weather-fog"), _version(env, "argus-weather-fog")
    r1 = _version(env, "argus-weather-rain")
    env.registry.set_alias("argus-weather-fog", "champion", v1)
    env.registry.set_alias("argus-weather-rain", "champion", r1)
    run_id = _run_id()
    rc, result = env.step(["resolve", "--conditions", "fog,rain"], run_id)
    assert rc == 0, env.failure(run_id, "resolve")
    fog = result["models"]["fog"]
    mv1 = env.client.get_model_version("argus-weather-fog", v1)
    assert (fog["model_name"], fog["version"], fog["content_hash"], fog["source_uri"]) == (
        "argus-weather-fog", v1, mv1.tags["argus.content_hash"], mv1.source)
    assert result["models"]["rain"]["version"] == r1 and result["reused"] is False and fog["reused"] is False
    assert env.run(run_id).read_json("resolve/result.json")["models"]["fog"]["version"] == v1

    env.registry.set_alias("argus-weather-fog", "champion", v2)  # a promotion while the run is under way
    capsys.readouterr()
    rc, again = env.step(["resolve", "--conditions", "fog,rain"], run_id)
    assert rc == 0 and again["reused"] is True
    assert again["models"]["fog"]["version"] == v1 and again["models"]["fog"]["reused"] is True
    assert again["models"]["fog"]["content_hash"] == fog["content_hash"]
    assert "reusing this run's resolution argus-weather-fog v" + v1 in capsys.readouterr().err

    other = _run_id()  # a new run sees the new champion
    rc, fresh = env.step(["resolve", "--conditions", "fog"], other)
    assert rc == 0 and fresh["models"]["fog"]["version"] == v2 and fresh["reused"] is False


def test_an_explicit_version_resolves_and_a_run_cannot_switch_it(env):
    v1, v2 = _version(env, "argus-weather-fog"), _version(env, "argus-weather-fog")
    env.registry.set_alias("argus-weather-fog", "champion", v2)
    run_id = _run_id()
    rc, result = env.step(["resolve", "--conditions", "fog", "--model-version", v1], run_id)
    assert rc == 0 and result["models"]["fog"]["version"] == v1 and result["models"]["fog"]["requested"] == v1
    rc, _ = env.step(["resolve", "--conditions", "fog"], run_id)
    assert rc == 10
    assert "cannot switch to 'champion'" in env.failure(run_id, "resolve")


def test_a_model_version_that_does_not_exist_is_refused_naming_the_versions(env):
    v1 = _version(env, "argus-weather-fog")
    env.registry.set_alias("argus-weather-fog", "champion", v1)
    run_id = _run_id()
    rc, _ = env.step(["resolve", "--conditions", "fog", "--model-version", "7"], run_id)
    assert rc == 10
    message = env.failure(run_id, "resolve")
    assert "model version 7 of argus-weather-fog does not exist" in message
    assert f"registered versions: {v1}; champion: v{v1}" in message
    assert not env.run(run_id).exists("resolve/result.json")


def test_a_condition_with_no_champion_is_refused(env):
    _version(env, "argus-weather-rain")
    run_id = _run_id()
    rc, _ = env.step(["resolve", "--conditions", "rain"], run_id)
    assert rc == 10
    message = env.failure(run_id, "resolve")
    assert "rain has no champion" in message and "it has version(s) 1, none promoted" in message
    rc, _ = env.step(["resolve", "--conditions", "snow"], run_id)
    assert rc == 10 and "no version is registered" in env.failure(run_id, "resolve")


@pytest.mark.parametrize("argv, words", [
    (["--conditions", "fog,rain", "--model-version", "2"], "give a single condition"),
    (["--conditions", "fog,hail"], "unknown hail"),
    (["--conditions", "fog", "--model-version", "latest"], "neither 'champion' nor a version number"),
])
def test_bad_requests_are_refused_before_the_registry_is_asked(env, argv, words):
    run_id = _run_id()
    rc, _ = env.step(["resolve", *argv], run_id)
    assert rc == 10 and words in env.failure(run_id, "resolve")


def test_a_version_without_a_content_hash_is_refused(env):
    v1 = _version(env, "argus-weather-fog", {"argus.content_hash": ""})
    env.registry.set_alias("argus-weather-fog", "champion", v1)
    run_id = _run_id()
    rc, _ = env.step(["resolve", "--conditions", "fog"], run_id)
    assert rc == 10 and "no argus.content_hash tag" in env.failure(run_id, "resolve")
