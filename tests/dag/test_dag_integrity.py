"""DAG integrity: imports, tasks and edges, one spec per heavy step, no heavy import at parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

DAG_ID = "argus_weather_training"
HEAVY = {"pull", "validate", "budget", "segmenter", "train", "evaluate", "hard-frames", "promote", "report"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags


PER_CONDITION = ("train", "evaluate", "hard-frames", "approve", "promote")


def test_tasks_and_edges(dag):
    edges = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert set(edges) == HEAVY | {"select_conditions", "approve", "run_outcome"}
    assert edges["pull"] == {"validate", "run_outcome"}
    assert edges["validate"] == {"segmenter", "train", "run_outcome"}
    assert edges["budget"] == {"segmenter", "train", "run_outcome"}, "the budget gate precedes every GPU step"
    assert edges["select_conditions"] == set(PER_CONDITION), "the group is expanded over select_conditions"
    assert edges["train"] == {"evaluate", "run_outcome"}
    assert edges["segmenter"] == {"evaluate", "run_outcome"}
    assert edges["evaluate"] == {"approve", "hard-frames", "run_outcome"}
    # the hard set feeds the next run: promote never waits for it, the report does
    assert edges["hard-frames"] == {"report", "run_outcome"}
    assert "hard-frames" not in {t.task_id for t in dag.get_task("promote").upstream_list}
    assert edges["approve"] == {"promote", "run_outcome"}
    assert edges["promote"] == {"report", "run_outcome"}
    assert edges["report"] == {"run_outcome"}
    assert edges["run_outcome"] == set()
    assert dag.get_task("run_outcome").trigger_rule == "one_failed"
    assert {t.task_id for t in dag.get_task("run_outcome").upstream_list} == HEAVY | {"approve"}
    assert dag.get_task("report").trigger_rule == "all_done"
    for task_id in ("train", "evaluate", "promote", "hard-frames"):
        assert dag.get_task(task_id).trigger_rule == "all_success", "a failed step must never let promote run"


def test_each_condition_runs_in_its_own_instance_of_one_mapped_task_group(dag):
    """Mapped tasks outside a mapped task group wait for every index upstream: evaluate[fog] for train[*]."""
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    groups = [dag.get_task(t).get_closest_mapped_task_group() for t in PER_CONDITION]
    group = groups[0]
    assert isinstance(group, MappedTaskGroup)
    assert all(g is group for g in groups), "the steps of a condition share one mapped group"
    assert list(group._expand_input.value) == ["condition"]
    assert set(group.children) == set(PER_CONDITION)
    for task_id in PER_CONDITION:
        assert not hasattr(dag.get_task(task_id), "expand_input"), f"{task_id} is mapped on its own"


def test_the_run_may_last_the_approval_window_plus_training_with_its_retries(dag):
    from argus_airflow import settings
    from argus_airflow.run_timeout import APPROVAL_WINDOW
    from argus_airflow.training_steps import TRAIN

    s = settings.load()
    train_tries = TRAIN.timeout * (s.retries + 1)
    assert dag.dagrun_timeout >= APPROVAL_WINDOW + train_tries, dag.dagrun_timeout
    assert dag.get_task("approve").response_timeout == APPROVAL_WINDOW
    assert dag.get_task("approve").defaults == ["Reject"], "no answer in time must reject (fail closed)"


def test_on_kubernetes_the_run_also_allows_every_try_to_wait_for_a_gpu(monkeypatch):
    from argus_airflow import settings
    from argus_airflow.run_timeout import APPROVAL_WINDOW, dagrun_timeout
    from argus_airflow.training_steps import TRAIN

    monkeypatch.setenv("ARGUS_RUNTIME", "kubernetes")
    s = settings.load()
    gpu_wait = timedelta(seconds=s.gpu_schedule_timeout_s)
    assert gpu_wait >= timedelta(hours=1)
    tries = s.retries + 1
    assert dagrun_timeout([TRAIN], s) >= APPROVAL_WINDOW + (TRAIN.timeout + gpu_wait) * tries


def test_every_heavy_task_comes_from_its_spec(dag):
    from argus_airflow.training_steps import HEAVY_STEPS

    specs = {s.name: s for s in HEAVY_STEPS}
    assert set(specs) == HEAVY
    for task_id in HEAVY:
        task = dag.get_task(task_id)
        kwargs = getattr(task, "partial_kwargs", None)
        spec = kwargs["step_spec"] if kwargs else task.step_spec
        cmds = kwargs["cmds"] if kwargs else task.cmds
        arguments = kwargs["arguments"] if kwargs else task.arguments
        assert spec is specs[task_id]
        assert cmds == ["argus-task"]
        assert arguments[0] == task_id, "the subcommand is the step name"
        assert list(arguments[1:]) == list(spec.arguments)


def test_mapped_steps_are_named_by_condition(dag):
    for task_id in PER_CONDITION:
        assert dag.get_task(task_id).map_index_template == "{{ task.condition }}"


def test_promotions_are_serialised_and_gpu_steps_use_the_gpu_pool(dag):
    assert dag.get_task("promote").pool == "argus_promotion"
    for task_id in ("train", "evaluate", "segmenter"):
        assert dag.get_task(task_id).pool == "argus_gpu"


def test_scheduling_policy(dag):
    assert dag.catchup is False
    assert 1 <= dag.max_active_runs <= 4
    assert dag.doc_md and "safe" in dag.doc_md.lower()


def test_next_four_runs_are_monday_and_thursday_0200_utc(dag):
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable  # as the scheduler sees it
    start = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # a Sunday
    restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
    last = None
    run_dates = []
    for _ in range(4):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        run_dates.append(info.run_after)
        assert info.data_interval.start.weekday() in (0, 3) and info.data_interval.end.weekday() in (0, 3)
        last = info.data_interval
    # the first interval after Sunday starts Monday 23rd 02:00 and its run starts when it ends
    assert [d.strftime("%a %d %H:%M") for d in run_dates] == ["Thu 26 02:00", "Mon 30 02:00", "Thu 03 02:00",
                                                             "Mon 07 02:00"]
    assert all(d.utcoffset().total_seconds() == 0 for d in run_dates)


@pytest.mark.parametrize(
    "conf, fragment",
    [
        ({"conditions": ["fog", "hail"]}, "hail"),
        ({"conditions": []}, "conditions"),
        ({"conditions": "fog"}, "conditions"),
        ({"train_steps": -5}, "train_steps"),
        ({"train_steps": 10_000_000}, "train_steps"),
        ({"model_config": "huge"}, "model_config"),
        ({"quarantine_threshold": 0.9}, "quarantine_threshold"),
    ],
)
def test_malformed_params_are_refused(dag, conf, fragment):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dag.params)
    for key, value in conf.items():
        with pytest.raises((ParamValidationError, ValueError)) as err:
            params[key] = value
            params.validate()
        assert fragment in str(err.value) or key in str(err.value)


def test_default_params_validate(dag):
    from airflow.sdk.definitions.param import ParamsDict

    resolved = ParamsDict(dag.params).validate()
    assert resolved["conditions"] == ["fog", "rain", "snow", "night"]
    assert resolved["model_config"] == "tiny"  # the local runtime's default
    assert resolved["require_approval"] is False


def test_conditions_param_renders_as_multi_select(dag):
    schema = dag.params.get_param("conditions").schema
    assert schema["type"] == "array" and schema["examples"] == ["fog", "rain", "snow", "night"]
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.description and param.schema.get("title"), f"Param {name} needs a title and a description"


PARSE_PROBE = """
import json, sys, time
sys.path.insert(0, {plugins!r})
t = time.time()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag({dags!r})
heavy = sorted(m for m in sys.modules if m.split('.')[0] in
               {{'torch', 'mlflow', 'great_expectations', 'dvc', 'argus_tasks', 'pandas', 'kubernetes'}})
print(json.dumps({{'errors': {{k: str(v) for k, v in bag.import_errors.items()}}, 'heavy': heavy}}))
"""


@pytest.mark.parametrize("runtime", ["local", "kubernetes"])
def test_no_heavy_module_is_imported_at_parse_time(runtime, tmp_path):
    import os

    code = PARSE_PROBE.format(plugins=str(REPO / "plugins"), dags=str(REPO / "dags"))
    env = {**os.environ, "ARGUS_RUNTIME": runtime}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    heavy = [m for m in report["heavy"] if not (runtime == "kubernetes" and m.startswith("kubernetes"))]
    assert not [m for m in heavy if m.split(".")[0] in {"torch", "mlflow", "great_expectations", "dvc"}], heavy
    assert not [m for m in heavy if m.startswith("argus_tasks")], "the DAG must not import the task package"


def test_exit_codes_match_the_task_contract():
    from argus_airflow import exit_codes
    from argus_tasks import contract

    assert exit_codes.EXIT_PERMANENT == contract.EXIT_PERMANENT
    assert exit_codes.EXIT_TRANSIENT == contract.EXIT_TRANSIENT
