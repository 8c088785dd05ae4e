"""DAG integrity of ``argus_champion_rollback``: tasks and edges, specs, the lock/pool/outlet of the move,
the confirmation, and its Params (condition and reason required)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from argus_airflow.champion_assets import CHAMPION_MOVED
from argus_airflow.rollback_approval import ROLLBACK_APPROVAL_WINDOW, RollbackApprovalOperator, rollback_markdown
from argus_airflow.settings import REPO_ROOT

DAG_ID = "argus_champion_rollback"
HEAVY = ("pull", "validate", "segmenter", "rollback-check", "rollback")
GOOD = {"condition": "fog", "reason": "v7 smears lane markings"}


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_checks_then_confirmation_then_the_move(dag):
    edges = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert edges == {"pull": {"validate"}, "validate": {"segmenter"}, "segmenter": {"rollback-check"},
                     "rollback-check": {"approve"}, "approve": {"rollback"}, "rollback": set()}
    for task_id in ("rollback-check", "approve", "rollback"):
        assert dag.get_task(task_id).trigger_rule == "all_success", "a failed check must never let anything move"
    assert dag.schedule is None and dag.max_active_runs == 1 and dag.catchup is False


def test_every_heavy_task_comes_from_its_spec_and_the_judge_is_never_retrained(dag):
    from argus_airflow.rollback_steps import ROLLBACK_STEPS

    specs = {s.name: s for s in ROLLBACK_STEPS}
    assert set(specs) == set(HEAVY)
    for task_id in HEAVY:
        task = dag.get_task(task_id)
        assert task.step_spec is specs[task_id] and task.cmds == ["argus-task"]
        assert task.arguments == [task_id, *specs[task_id].arguments]
    assert dag.get_task("segmenter").arguments == ["segmenter", "--no-retrain"]
    assert dag.get_task("rollback-check").env_vars["ARGUS_TRIGGERED_BY"] == "{{ dag_run.triggering_user_name or '' }}"


def test_the_move_is_serialised_with_promotions_and_emits_the_champion_moved_event(dag):
    rollback, promote = dag.get_task("rollback"), _training_dag().get_task("promote")
    assert rollback.pool == promote.pool == "argus_promotion"
    assert rollback.outlets == promote.outlets == [CHAMPION_MOVED]
    assert rollback.step_spec.emits_champion_moved and rollback.condition == "{{ params.condition }}"
    assert "condition" in rollback.template_fields and rollback.map_index_template is None


def _training_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(REPO_ROOT / "dags")).dags["argus_weather_training"]


def test_a_confirmation_that_nobody_gives_rejects(dag):
    approve = dag.get_task("approve")
    assert isinstance(approve, RollbackApprovalOperator)
    assert approve.defaults == ["Reject"] and approve.response_timeout == ROLLBACK_APPROVAL_WINDOW
    assert dag.dagrun_timeout >= ROLLBACK_APPROVAL_WINDOW + timedelta(hours=1)
    off = approve.execute({"params": {"require_approval": False}, "ti": None})
    assert off == {"required": False}


def test_the_confirmation_shows_the_move_the_reason_and_the_checks():
    body = rollback_markdown({"model_name": "argus-weather-fog", "champion_at_check": "7", "target_version": "5",
                              "reason": "lanes vanish", "how": "the champion before v7", "n_source": 16,
                              "n_real": 16, "judge": {"version": "2"},
                              "checks": {"was_champion": "audit entry 3", "files_and_lineage": "ok",
                                         "sanity_gates": {"finite_in_range": True, "no_collapse": True}},
                              "metrics": {"kid": 0.01, "classwise_gap": 0.1, "label_preservation": 0.5}})
    assert "v7 \u2192 v5" in body and "lanes vanish" in body and "audit entry 3" in body
    assert "no_collapse ok" in body and "judge v2" in body
    assert "cannot move anything" in rollback_markdown(None)


def test_params_require_a_condition_and_a_reason(dag):
    from airflow.sdk.definitions.param import ParamsDict

    resolved = ParamsDict(copy.deepcopy(dag.params))  # setting a value mutates the shared Param
    for key, value in GOOD.items():
        resolved[key] = value
    resolved = resolved.validate()
    assert (resolved["target"], resolved["require_approval"], resolved["force"]) == ("previous", True, False)
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.description and param.schema.get("title"), f"Param {name} needs a title and a description"


@pytest.mark.parametrize("conf, fragment", [
    ({"condition": "fog"}, "reason"),
    ({"reason": "x"}, "condition"),
    ({**GOOD, "reason": "   "}, "reason"),
    ({**GOOD, "condition": "hail"}, "condition"),
    ({**GOOD, "target": "latest"}, "target"),
    ({**GOOD, "target": "-1"}, "target"),
])
def test_malformed_params_are_refused(dag, conf, fragment):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(copy.deepcopy(dag.params))
    with pytest.raises((ParamValidationError, ValueError)) as err:
        for key, value in conf.items():
            params[key] = value
        params.validate()
    assert fragment in str(err.value)


def test_the_check_arguments_render_with_the_params(dag):
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined)
    task = dag.get_task("rollback-check")
    params = {"condition": "rain", "target": "3", "reason": "bad night frames", "force": True, "eval_frames": 12}
    rendered = [env.from_string(a).render(params=params) for a in task.arguments]
    assert rendered == ["rollback-check", "--condition", "rain", "--target", "3", "--reason", "bad night frames",
                        "--force", "--max-frames", "12"]
