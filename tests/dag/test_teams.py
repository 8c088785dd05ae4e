"""Teams: the ``team`` Param, the GPU pools of the quotas, the routing policy and the team's env and tags."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from argus_airflow import teams

QUOTAS = {"ARGUS_TEAM_GPU_QUOTAS": "vision=2,lidar=1", "ARGUS_GPU_POOL_SLOTS": "4"}


def test_quotas_split_the_gpus_into_pools_that_add_up_to_the_shared_pool():
    plan = teams.load_plan(QUOTAS)
    assert plan.quotas == {"vision": 2, "lidar": 1}
    assert plan.pools() == [
        ("argus_gpu", 1, "Shared GPU pool: the 1 of 4 GPUs no team reserved"),
        ("argus_gpu_vision", 2, "GPU quota of team vision: 2 of 4 GPUs"),
        ("argus_gpu_lidar", 1, "GPU quota of team lidar: 1 of 4 GPUs"),
    ]
    assert sum(slots for _, slots, _ in plan.pools()) == 4
    assert plan.pool_for("vision") == "argus_gpu_vision" and plan.pool_for("radar") == "argus_gpu"
    assert teams.load_plan({}).pools()[0][:2] == ("argus_gpu", 1) and teams.load_plan({}).default_team == "default"


@pytest.mark.parametrize("env, message", [
    ({"ARGUS_TEAM_GPU_QUOTAS": "vision=2,lidar=3", "ARGUS_GPU_POOL_SLOTS": "4"}, "reserves 5 GPUs"),
    ({"ARGUS_TEAM_GPU_QUOTAS": "vision=0"}, "whole number of GPUs >= 1"),
    ({"ARGUS_TEAM_GPU_QUOTAS": "vision"}, "<team>=<GPUs>"),
    ({"ARGUS_TEAM_GPU_QUOTAS": "Vision=1"}, "is not a team name"),
    ({"ARGUS_TEAM_GPU_QUOTAS": "a=1,a=1", "ARGUS_GPU_POOL_SLOTS": "2"}, "listed twice"),
    ({"ARGUS_TEAM": "Team A"}, "ARGUS_TEAM: 'Team A' is not a team name"),
    ({"ARGUS_GPU_POOL_SLOTS": "four"}, "whole number of GPUs"),
    ({"ARGUS_TEAM_GPU_QUOTAS": "vision=2", "ARGUS_GPU_POOL_SLOTS": "2"}, "ARGUS_TEAM='default' has no quota"),
])
def test_bad_team_settings_are_refused_with_a_clear_error(env, message):
    with pytest.raises(ValueError, match=message):
        teams.load_plan(env)


def test_the_team_param_rejects_an_invalid_name(monkeypatch):
    from airflow.sdk.definitions.param import ParamValidationError

    from argus_airflow.generation_params import generation_params
    from argus_airflow.training_params import training_params

    for params in (training_params("tiny"), generation_params()):
        assert params["team"].resolve("default") == "default"
        assert params["team"].resolve("lidar-3d") == "lidar-3d"
        for bad in ("Team A", "vision;rm", "-x", "a" * 40, ""):
            with pytest.raises(ParamValidationError, match="does not match"):
                params["team"].resolve(bad)
    with pytest.raises(ValueError, match="not a valid default for 'team'"):
        training_params("tiny", {"team": "Bad Team"})
    # the quotas reserve every GPU: only the teams with a quota may run
    monkeypatch.setenv("ARGUS_TEAM_GPU_QUOTAS", "vision=2,default=2")
    monkeypatch.setenv("ARGUS_GPU_POOL_SLOTS", "4")
    param = training_params("tiny")["team"]
    assert param.resolve("vision") == "vision"
    with pytest.raises(ParamValidationError, match="is not one of"):
        param.resolve("radar")


def _ti(pool: str):
    return SimpleNamespace(pool=pool, task_id="train", task=None)


def test_the_policy_routes_gpu_task_instances_to_their_runs_team_pool():
    plan = teams.load_plan(QUOTAS)
    run = SimpleNamespace(run_id="r", conf={"team": "vision"})
    for pool, expected in (("argus_gpu", "argus_gpu_vision"), ("argus_gpu_lidar", "argus_gpu_vision"),
                           ("default_pool", "default_pool"), ("argus_promotion", "argus_promotion")):
        ti = _ti(pool)
        teams.route_to_team_pool(ti, run, plan)
        assert ti.pool == expected, pool
    ti = _ti("argus_gpu")
    teams.route_to_team_pool(ti, None, plan)  # not bound to a run yet: left alone
    assert ti.pool == "argus_gpu"
    for conf, expected in (({"team": "radar"}, "argus_gpu"), ({"team": "Bad Name"}, "argus_gpu"), ({}, "argus_gpu"),
                           (None, "argus_gpu")):
        ti = _ti("argus_gpu_vision")
        teams.route_to_team_pool(ti, SimpleNamespace(run_id="r", conf=conf), plan)
        assert ti.pool == expected, conf
    # no conf: the DAG's Param default (ARGUS_PARAM_DEFAULTS may set it), then the deployment's team
    ti = SimpleNamespace(pool="argus_gpu", task_id="train", task=SimpleNamespace(dag=SimpleNamespace(
        params={"team": "lidar"})))
    teams.route_to_team_pool(ti, SimpleNamespace(run_id="r", conf={}), plan)
    assert ti.pool == "argus_gpu_lidar"
    ti = _ti("argus_gpu")
    teams.route_to_team_pool(ti, SimpleNamespace(run_id="r", conf={}),
                             teams.load_plan({**QUOTAS, "ARGUS_TEAM": "lidar"}))
    assert ti.pool == "argus_gpu_lidar"


def test_the_policy_never_raises(monkeypatch):
    monkeypatch.setenv("ARGUS_TEAM_GPU_QUOTAS", "broken")
    ti = _ti("argus_gpu")
    teams.route_to_team_pool(ti, SimpleNamespace(run_id="r", conf={"team": "vision"}))
    assert ti.pool == "argus_gpu"


def test_airflow_loads_the_policy_from_the_plugins_folder():
    code = ("import airflow.settings as s; "
            "print(s.task_instance_mutation_hook.is_noop, "
            "[type(p).__name__ for p in s.get_policy_plugin_manager().get_plugins()])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("False"), out.stdout  # a hook is registered


def test_pools_cli_prints_what_init_pools_creates():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(teams.__file__).rsplit("/argus_airflow/", 1)[0], **QUOTAS}
    out = subprocess.run([sys.executable, "-m", "argus_airflow.teams", "pools"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [line.split("\t")[:2] for line in out.stdout.splitlines()] == [
        ["argus_gpu", "1"], ["argus_gpu_vision", "2"], ["argus_gpu_lidar", "1"]]
    bad = subprocess.run([sys.executable, "-m", "argus_airflow.teams", "pools"],
                         env={**env, "ARGUS_GPU_POOL_SLOTS": "2"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "reserves 3 GPUs" in bad.stderr


def test_the_team_reaches_the_step_env_and_every_mlflow_tag():
    import jinja2

    from argus_airflow import settings as settings_mod
    from argus_airflow.step_spec import contract_env
    from argus_airflow.training_steps import TRAIN
    from argus_tasks.contract import StepContext

    template = contract_env(settings_mod.load(), TRAIN)["ARGUS_TEAM"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    assert env.from_string(template).render(params={"team": "vision"}) == "vision"
    assert env.from_string(template).render(params={}) == "default"  # a DAG without the Param
    ctx = StepContext.from_env({"ARGUS_TEAM": "vision", "ARGUS_RUN_ID": "r"})
    assert ctx.lineage_tags()["argus.team"] == "vision"
    assert StepContext.from_env({}).lineage_tags()["argus.team"] == "default"
