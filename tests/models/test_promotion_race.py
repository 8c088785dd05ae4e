"""Promotions that cannot silently lose an update, against one live MLflow server.

Two "deployments" (separate stores, so separate lock folders: no shared file system, the Airflow
pool bypassed) run ``argus-task promote`` at the same time; both evaluated their challenger
against the same champion. A proxy in front of the server holds the first read of the champion
until the other promoter has reached its own critical section (its own champion read, or its
wait on the registry lock), so the two really overlap. Exactly one may move the alias.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from argus_tasks.contract import EXIT_TRANSIENT, TransientStepError

from .promotion_support import (
    Proxy,
    is_alias_move,
    is_alias_read,
    mlflow_server,
    promotion_run,
    tiny_dataset,
)

LOCK_MODEL = "argus-registry-locks"
DAG = "race_tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("race-mlflow")) as url:
        yield url


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("race-data"))


@pytest.fixture
def client(server):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=server)


def _versions(client, name: str, n: int) -> list[str]:
    client.create_registered_model(name)
    return [str(client.create_model_version(name, f"argus-test:/{name}/{i}", await_creation_for=0).version)
            for i in range(1, n + 1)]


def _alias(client, name: str, alias: str = "champion") -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - no such alias
        return None


def _live_tickets(client, key: str) -> list[str]:
    return [v.version for v in client.search_model_versions(f"name='{LOCK_MODEL}' and tags.`argus.lock.key` = '{key}'")]


class ChampionReadGate:
    """Holds the first read of ``name@champion`` until the other promoter reached its critical section."""

    def __init__(self, name: str, timeout_s: float = 30.0):
        self.name, self.timeout_s = name, timeout_s
        self.cond = threading.Condition()
        self.waiting, self.released, self.by = 0, False, None

    def _release(self, by: str) -> None:
        with self.cond:
            if not self.released:
                self.released, self.by = True, by
                self.cond.notify_all()

    def __call__(self, method, path, body):
        if self.released:
            return None
        if is_alias_read(method, path, self.name):
            with self.cond:
                self.waiting += 1
                if self.waiting >= 2:
                    self.released, self.by = True, "the other promoter's champion read"
                    self.cond.notify_all()
                elif not self.cond.wait_for(lambda: self.released, self.timeout_s):
                    self.released, self.by = True, "timeout"
        elif self.waiting and (LOCK_MODEL in path or LOCK_MODEL.encode() in body):
            self._release("the other promoter's wait on the registry lock")
        return None


def _promote(store, run_id, tracking_uri, xcom):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGUS_", "MLFLOW_"))}
    env.update({"ARGUS_STORE": str(store), "ARGUS_DAG_ID": DAG, "ARGUS_RUN_ID": run_id, "ARGUS_XCOM_RETURN": str(xcom),
                "MLFLOW_TRACKING_URI": tracking_uri, "ARGUS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"})
    return subprocess.Popen([sys.executable, "-m", "argus_tasks.cli", "promote", "--condition", "fog",
                             "--require-beat-reference", "no", "--n-boot", "200"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_deployments_promoting_at_once_leave_exactly_one_champion(server, client, template, tmp_path):
    import argus_tasks

    print("argus_tasks from", argus_tasks.__file__)
    name = "argus-weather-fog"
    champion, chal_a, chal_b = _versions(client, name, 3)
    client.set_registered_model_alias(name, "champion", champion)
    runs = {}
    for who, chal in (("a", chal_a), ("b", chal_b)):
        runs[who] = promotion_run(template, tmp_path / f"store-{who}", DAG, f"race-{who}", "fog", name, chal, champion)
    proxy = Proxy(server)
    gate = ChampionReadGate(name)
    proxy.rules.append(gate)
    try:
        procs = {who: _promote(tmp_path / f"store-{who}", f"race-{who}", proxy.url, tmp_path / f"xcom-{who}.json")
                 for who in runs}
        logs = {who: p.communicate(timeout=90)[0] for who, p in procs.items()}
    finally:
        proxy.close()
    for who, p in procs.items():
        assert p.returncode == 0, f"promote {who} exited {p.returncode}:\n{logs[who][-3000:]}"
    assert gate.by not in (None, "timeout"), f"the two promotions did not overlap (gate: {gate.by})"
    decisions = {who: run.read_json("promote/fog/decision.json") for who, run in runs.items()}
    outcomes = {who: (d["result"]["promoted"], d["result"]["note"], d.get("registry_outcome")) for who, d in decisions.items()}
    outcomes["champion now"] = _alias(client, name)
    print("gate released by", gate.by, "| outcomes", outcomes)
    winners = [who for who, d in decisions.items() if d["result"]["promoted"]]
    assert len(winners) == 1, f"both or neither promoted: {outcomes}"
    winner, loser = winners[0], ({"a", "b"} - set(winners)).pop()
    versions = {"a": chal_a, "b": chal_b}
    assert _alias(client, name) == versions[winner]
    assert decisions[winner]["registry_outcome"] == "moved" and decisions[winner]["applied_at_registry"] is True
    lost = decisions[loser]
    assert lost["registry_outcome"] in ("stale", "conflict") and lost["applied_at_registry"] is False, lost
    assert f"moved from v{champion}" in lost["result"]["note"] and "re-run evaluate" in lost["result"]["note"]
    assert client.get_model_version(name, versions[loser]).tags["argus.decision"] == lost["registry_outcome"]
    assert client.get_model_version(name, versions[winner]).tags["argus.decision"] == "promoted"
    epoch = json.loads(client.get_registered_model(name).tags["argus.champion_epoch"])
    assert epoch["version"] == versions[winner] and epoch["previous"] == champion
    assert _live_tickets(client, name) == []


def test_a_503_on_the_alias_move_is_retryable_and_moves_nothing(server, client, monkeypatch):
    import mlflow

    from argus_tasks.models.registry_adapter import Registry

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    name = "argus-weather-rain"
    champion, chal = _versions(client, name, 2)
    client.set_registered_model_alias(name, "champion", champion)
    proxy = Proxy(server)
    proxy.rules.append(lambda m, p, b: ("status", 503, b"upstream connect error") if is_alias_move(m, p, b, name)
                       else None)
    try:
        registry = Registry(mlflow.MlflowClient(tracking_uri=proxy.url))
        with pytest.raises(TransientStepError) as caught:
            registry.apply_promotion(name, chal, champion, True, {"argus.run_id": "r"})
    finally:
        proxy.close()
    assert f"moving {name}@champion to v{chal}" in str(caught.value) and proxy.url in str(caught.value)
    assert caught.value.exit_code == EXIT_TRANSIENT
    assert _alias(client, name) == champion and _live_tickets(client, name) == []
    assert "argus.decision" not in client.get_model_version(name, chal).tags


def test_a_holder_that_lost_its_lease_while_moving_puts_the_alias_back(server, client):
    """The lease of A is broken (A looked dead) while A moves: the new holder B moves to its version;
    A's late move must not stick."""
    import mlflow

    from argus_tasks.models.registry_adapter import Registry

    name = "argus-weather-snow"
    champion, chal_a, chal_b = _versions(client, name, 3)
    client.set_registered_model_alias(name, "champion", champion)
    proxy = Proxy(server)
    registry = Registry(mlflow.MlflowClient(tracking_uri=proxy.url))
    try:
        with registry.exclusive(name, "deployment A") as held:
            def b_takes_over():  # B deletes A's ticket as abandoned, takes the lock and moves the champion
                b = Registry(client)
                client.delete_model_version(LOCK_MODEL, held.ticket)
                with b.exclusive(name, "deployment B") as held_b:
                    assert b.move_alias(name, "champion", chal_b, champion, held_b)[0] == "moved"

            armed = {"done": False}

            def rule(method, path, body):  # A's last check before its move: B acts right after it
                if (not armed["done"] and method == "GET" and "model-versions/get" in path and LOCK_MODEL in path):
                    armed["done"] = True
                    return ("after", b_takes_over)
                return None

            proxy.rules.append(rule)
            outcome, note = registry.move_alias(name, "champion", chal_a, champion, held)
    finally:
        proxy.close()
    assert armed["done"]
    assert outcome == "conflict" and f"put it back to v{chal_b}" in note, note
    assert _alias(client, name) == chal_b
    assert json.loads(client.get_registered_model(name).tags["argus.champion_epoch"])["version"] == chal_b


def test_a_dead_holder_is_taken_over_after_its_lease_and_a_live_one_is_waited_for(server, client):
    from argus_tasks.models.registry_adapter import Registry

    registry = Registry(client)
    key = "argus-weather-night"
    registry.ensure_model(LOCK_MODEL)
    dead = client.create_model_version(LOCK_MODEL, f"argus-lock:/{key}", await_creation_for=0, tags={
        "argus.lock.key": key, "argus.lock.token": "killed", "argus.lock.holder": "a SIGKILLed pod",
        "argus.lock.beat": "0"})
    started = time.monotonic()
    from argus_tasks.models.registry_lock import registry_lock

    with registry_lock(registry, key, "survivor", lease_s=1.5, poll_s=0.1) as held:
        waited = time.monotonic() - started
        assert held.alive()
        assert _live_tickets(client, key) == [held.ticket]
        with pytest.raises(TransientStepError) as caught:  # a live holder is not taken over: it beats
            with registry_lock(registry, key, "latecomer", lease_s=1.5, timeout_s=3.0, poll_s=0.1):
                pass
    assert 1.5 <= waited < 15, waited
    assert "survivor" in str(caught.value) and "within 3s" in str(caught.value)
    assert dead.version not in _live_tickets(client, key) and _live_tickets(client, key) == []


def test_two_deployments_pinning_the_judge_at_once_train_and_register_it_once(server, client, template, tmp_path):
    """Both find no segmenter champion at the same moment; one trains and moves the alias, the other
    waits for the judge's registry lock and then pins that same version."""
    from argus_tasks.data.fixtures import build_validated_run
    from argus_tasks.models.registry_adapter import SEGMENTER_MODEL

    proxy = Proxy(server)
    gate = ChampionReadGate(SEGMENTER_MODEL)
    proxy.rules.append(gate)
    procs = {}
    try:
        for who in ("a", "b"):
            build_validated_run(template, tmp_path / f"store-{who}", DAG, f"judge-{who}")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGUS_", "MLFLOW_"))}
            env.update({"ARGUS_STORE": str(tmp_path / f"store-{who}"), "ARGUS_DAG_ID": DAG,
                        "ARGUS_RUN_ID": f"judge-{who}", "ARGUS_XCOM_RETURN": str(tmp_path / f"xcom-{who}.json"),
                        "MLFLOW_TRACKING_URI": proxy.url, "ARGUS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"})
            procs[who] = subprocess.Popen(
                [sys.executable, "-m", "argus_tasks.cli", "segmenter", "--steps", "1", "--min-miou", "0"], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        logs = {who: p.communicate(timeout=120)[0] for who, p in procs.items()}
    finally:
        proxy.close()
    for who, p in procs.items():
        assert p.returncode == 0, f"segmenter {who} exited {p.returncode}:\n{logs[who][-3000:]}"
    assert gate.by not in (None, "timeout"), f"the two steps did not overlap (gate: {gate.by})"
    results = {who: json.loads((tmp_path / f"xcom-{who}.json").read_text()) for who in procs}
    pinned = {who: (r["version"], r["trained"]) for who, r in results.items()}
    registered = sorted(v.version for v in client.search_model_versions(f"name='{SEGMENTER_MODEL}'"))
    print("judge: gate released by", gate.by, "| pinned (version, trained)", pinned, "| registered", registered)
    assert sorted(t for _, t in pinned.values()) == [False, True], pinned
    assert len({v for v, _ in pinned.values()}) == 1 and len(registered) == 1, (pinned, registered)
    assert _alias(client, SEGMENTER_MODEL) == registered[0]
    assert _live_tickets(client, SEGMENTER_MODEL) == []
