"""Rolling a champion back (and forward again) through the real CLI, on the session's MLflow store.

One generator is trained (12 steps, night: the model of test_train_reuse, which resets its champion
itself); two more versions are registered with the same files and lineage, and the champion is moved
v_a -> v_b -> v_c by audited moves, as three promotions would. Then ``rollback-check`` +
``rollback`` run as the DAG runs them.
"""

from __future__ import annotations

import json
import uuid

import pytest

from argus_tasks.contract import EXIT_PERMANENT
from argus_tasks.models.audit_log import AuditLog
from argus_tasks.models.audit_trail import AuditTrail
from argus_tasks.models.registry_adapter import CHAMPION, Registry

from .conftest import DAG_ID

C = "night"
NAME = f"argus-weather-{C}"
TRAIN = ["train", "--condition", C, "--steps", "12", "--set", "log_every_steps=6", "--set", "checkpoint_every_steps=12"]
REASON = "v_c blurs the lane markings at dusk"


def _check(target: str, reason: str = REASON, *extra: str) -> list[str]:
    return ["rollback-check", "--condition", C, "--target", target, "--reason", reason, "--max-frames", "8", *extra]


def _champion(reg) -> str:
    return str(reg.alias(NAME, CHAMPION).version)


def _new_run(steps, dataset_template):
    from argus_tasks.data.fixtures import build_validated_run

    run_id = f"rb-{uuid.uuid4().hex[:8]}"
    build_validated_run(dataset_template, steps.store, DAG_ID, run_id)
    rc, _ = steps(["segmenter"], run_id)  # pins the session's judge, as the DAG's segmenter step does
    assert rc == 0
    return run_id, steps.run_store(run_id)


def _copy(reg, mv, label: str, drop: tuple[str, ...] = (), source: str | None = None):
    tags = {k: v for k, v in mv.tags.items() if k.startswith("argus.") and k not in drop
            and k not in ("argus.decision", "argus.previous_champion")}
    identity = {"argus.dag_id": DAG_ID, "argus.run_id": f"{mv.tags['argus.run_id']}-{label}", "argus.condition": C}
    version, _ = reg.register(NAME, source or mv.source, mv.run_id, identity, {**tags, **identity})
    return str(version.version)


@pytest.fixture(scope="module")
def history(session_segmenter, dataset_template, model_store, tmp_path_factory):
    """(v_a, v_b, v_c, a version without weights or data lineage); champion v_c after three audited moves."""
    from .conftest import Steps

    mp = pytest.MonkeyPatch()
    steps = Steps(mp, model_store, tmp_path_factory.mktemp("rb-xcom") / "return.json")
    try:
        run_id, run = _new_run(steps, dataset_template)
        rc, trained = steps(TRAIN, run_id)
        assert rc == 0, run.read_json(f"train/{C}/failure.json")
        reg = Registry()
        mv = reg.version(NAME, trained["model_version"])
        v_a, v_b, v_c = str(mv.version), _copy(reg, mv, "b"), _copy(reg, mv, "c")
        broken = _broken_copy(reg, mv, tmp_path_factory.mktemp("rb-broken"))
        current = reg.alias(NAME, CHAMPION)
        previous = str(current.version) if current is not None else None
        for version in (v_a, v_b, v_c):
            trail = AuditTrail(str(model_store), "promotion", {"user": "test", "dag_run": f"{DAG_ID}/setup"},
                               "test set-up", {})
            with reg.exclusive(NAME, "test set-up") as held:
                assert trail.move(reg, NAME, CHAMPION, version, previous, held)[0] == "moved"
            previous = version
        yield {"a": v_a, "b": v_b, "c": v_c, "broken": broken, "steps": steps, "store": model_store}
    finally:
        mp.undo()


def _broken_copy(reg, mv, tmp) -> str:
    """The same model with its weights file deleted, registered without its dataset fingerprint."""
    from pathlib import Path

    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}/{mv.version}", dst_path=str(tmp)))
    (local / "weights.pt").unlink()
    exp = reg.client.get_run(mv.run_id).info.experiment_id
    with mlflow.start_run(experiment_id=exp, run_name="broken-copy") as r:
        mlflow.log_artifacts(str(local), artifact_path="generator")
    return _copy(reg, mv, "broken", drop=("argus.dataset_fingerprint",), source=f"runs:/{r.info.run_id}/generator")


def _entries(store):
    return AuditLog(Registry(), str(store), NAME).entries()


def test_roll_back_then_forward_again_and_a_rerun_moves_nothing(history, dataset_template, capsys):
    steps, store, reg = history["steps"], history["store"], Registry()
    v_a, v_b, v_c = history["a"], history["b"], history["c"]
    assert _champion(reg) == v_c
    run_id, run = _new_run(steps, dataset_template)
    rc, check = steps(_check("previous"), run_id)
    assert rc == 0, run.read_json(f"rollback-check/{C}/failure.json")
    assert (check["target_version"], check["champion_at_check"], check["passed"]) == (v_b, v_c, True)
    assert check["checks"]["files_and_lineage"] == "ok" and "audit entry" in check["checks"]["was_champion"]
    assert all(check["checks"]["sanity_gates"].values()) and check["n_source"] <= 8
    assert check["judge"]["version"] == history["steps"].run_store(run_id).read_json("segmenter/result.json")["version"]

    rc, back = steps(["rollback", "--condition", C], run_id)
    assert rc == 0, run.read_json(f"rollback/{C}/failure.json")
    assert (back["registry_outcome"], back["already_applied"], back["previous_champion"], back["champion_version"]) == (
        "moved", False, v_c, v_b)
    assert _champion(reg) == v_b
    last = _entries(store)[-1]
    assert (last["kind"], last["state"], last["from"], last["to"], last["reason"]) == ("rollback", "committed", v_c,
                                                                                     v_b, REASON)
    assert last["who"]["dag_run"] == f"{DAG_ID}/{run_id}" and last["evidence"]["check"] == check["check"]
    assert run.exists(f"rollback/{C}/champion_history.png") and run.exists(f"rollback/{C}/report.md")
    assert run.read_bytes(f"rollback/{C}/champion_history.png")[:8] == b"\x89PNG\r\n\x1a\n"

    n = len(_entries(store))
    rc, again = steps(["rollback", "--condition", C], run_id)  # the task cleared, or a retry
    assert rc == 0 and again["already_applied"] is True and "nothing moved again" in again["note"]
    assert _champion(reg) == v_b and len(_entries(store)) == n, "a rerun moves nothing and records nothing"
    from argus_airflow.champion_assets import moved

    assert moved(back) is True and moved(again) is False, "only the real move emits the champion-moved event"

    # forward again, to the version rolled away from: it was champion before, so no force is needed
    fwd_id, fwd_run = _new_run(steps, dataset_template)
    rc, fwd_check = steps(_check(v_c, "the lane blur came from the viewer, not v_c"), fwd_id)
    assert rc == 0, fwd_run.read_json(f"rollback-check/{C}/failure.json")
    rc, forward = steps(["rollback", "--condition", C], fwd_id)
    assert rc == 0 and forward["registry_outcome"] == "moved" and _champion(reg) == v_c
    tail = [(e["kind"], e["from"], e["to"]) for e in _entries(store)[-2:]]
    assert tail == [("rollback", v_c, v_b), ("rollback", v_b, v_c)]
    # the rerun of the first rollback, after the champion came back: it still moves nothing
    rc, stale_rerun = steps(["rollback", "--condition", C], run_id)
    assert rc == 0 and stale_rerun["already_applied"] and _champion(reg) == v_c

    from argus_tasks import cli

    capsys.readouterr()
    assert cli.main(["audit", "--condition", C]) == 0
    printed = capsys.readouterr().out
    assert f"{NAME}@champion: now v{v_c}" in printed
    assert f"v{v_c} -> v{v_b}" in printed and f"v{v_b} -> v{v_c}" in printed and REASON[:40] in printed
    assert cli.main(["audit", "--condition", C, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    seqs = [e["seq"] for e in doc["entries"]]
    assert seqs == sorted(seqs) and doc["champion"] == v_c and doc["pending"] == []
    assert v_a in {e["to"] for e in doc["entries"]}


def test_a_rollback_to_an_incomplete_version_is_refused_naming_what_is_missing(history, dataset_template):
    steps, store, reg = history["steps"], history["store"], Registry()
    before, n = _champion(reg), len(_entries(store))
    run_id, run = _new_run(steps, dataset_template)
    rc, _ = steps(_check(history["broken"], "try the broken copy", "--force"), run_id)
    assert rc == EXIT_PERMANENT
    message = run.read_json(f"rollback-check/{C}/failure.json")["message"]
    assert "model file weights.pt is missing" in message, message
    assert "lineage tag argus.dataset_fingerprint is missing" in message and "nothing moved" in message
    assert run.read_json(f"rollback-check/{C}/check.json")["passed"] is False
    rc, _ = steps(["rollback", "--condition", C], run_id)  # the DAG would not run it; by hand it refuses too
    assert rc == EXIT_PERMANENT and "rollback-check has not passed" in run.read_json(f"rollback/{C}/failure.json")[
        "message"]
    assert _champion(reg) == before and len(_entries(store)) == n


def test_a_version_that_was_never_champion_needs_force_and_a_reason(history, dataset_template):
    steps, reg = history["steps"], Registry()
    mv = reg.version(NAME, history["a"])
    never = _copy(reg, mv, f"never-{uuid.uuid4().hex[:4]}")
    run_id, run = _new_run(steps, dataset_template)
    rc, _ = steps(_check(never, "   "), run_id)
    assert rc == EXIT_PERMANENT and "--reason is empty" in run.read_json(f"rollback-check/{C}/failure.json")["message"]
    rc, _ = steps(_check(never), run_id)
    assert rc == EXIT_PERMANENT
    assert f"v{never} was never champion" in run.read_json(f"rollback-check/{C}/failure.json")["message"]
    other, _ = _new_run(steps, dataset_template)
    rc, forced = steps(_check(never, REASON, "--force"), other)
    assert rc == 0 and forced["checks"]["was_champion"] == "forced" and forced["target_version"] == never


def test_promote_records_the_move_its_history_point_and_redraws_the_plot(history, dataset_template):
    """A promotion (evaluate's records written directly, as in the race tests) after the rollbacks above."""
    from argus_tasks.models.champion_history import load_points

    from .promotion_support import promotion_run

    steps, store, reg = history["steps"], history["store"], Registry()
    champion = _champion(reg)
    challenger = _copy(reg, reg.version(NAME, history["a"]), f"promoted-{uuid.uuid4().hex[:4]}")
    run_id = f"rb-promote-{uuid.uuid4().hex[:6]}"
    run = promotion_run(dataset_template, store, DAG_ID, run_id, C, NAME, challenger, champion)
    rc, result = steps(["promote", "--condition", C, "--require-beat-reference", "no", "--n-boot", "200"], run_id)
    assert rc == 0 and result["promoted"] and result["registry_outcome"] == "moved", result.get("note")
    last = _entries(store)[-1]
    assert (last["kind"], last["state"], last["from"], last["to"]) == ("promotion", "committed", champion, challenger)
    assert last["evidence"]["decision"] == run.url(f"promote/{C}/decision.json")
    assert "beats" in last["reason"] and last["who"]["dag_run"] == f"{DAG_ID}/{run_id}"
    assert run.read_bytes(f"promote/{C}/champion_history.png")[:4] == b"\x89PNG"
    assert result["history_plot"] == run.url(f"promote/{C}/champion_history.png") and result["audit_tail"]
    points = load_points(str(store), NAME)
    mine = [p for p in points if p["dag_run"] == f"{DAG_ID}/{run_id}"]
    assert len(mine) == 1 and [m["role"] for m in mine[0]["models"]] == ["champion", "challenger"]
    for m in mine[0]["models"]:
        for metric in ("kid", "classwise_gap", "label_preservation"):
            iv = m["intervals"][metric]
            assert iv["lo"] <= iv["point"] <= iv["hi"], (m["role"], metric, iv)
    assert any(p["source"] == "rollback-check" for p in points), "the rollback checks' targets are on the plot too"
