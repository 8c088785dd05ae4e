"""A rollback racing a promotion, and a rollback killed between its alias move and its audit write,
against one live MLflow server, with ``argus-task`` as real processes.

The race: two "deployments" (separate stores, so separate lock folders: only the registry lock can
serialise them) run ``rollback`` (v2 -> v1, checked against champion v2) and ``promote`` (v3,
evaluated against champion v2) at once; a proxy holds the first champion read until the other
process reached its critical section, so they really overlap. No update may be lost: exactly one
moves, the other is refused as stale, and the audit log shows both, in the order the lock took them.

The crash: ``ARGUS_FAULT_CRASH_AT`` makes the rollback process ``os._exit(137)`` right after the
alias move (or right after its intent), as a SIGKILL at that instant would; the next reader
(``argus-task audit``) or the rerun completes the log from the intent and the real alias.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from argus_tasks.data.fixtures import build_validated_run
from argus_tasks.models.audit_log import AuditLog
from argus_tasks.models.audit_trail import AuditTrail
from argus_tasks.models.registry_adapter import CHAMPION, Registry

from .promotion_support import Proxy, is_alias_read, mlflow_server, promotion_run, tiny_dataset
from .test_promotion_race import LOCK_MODEL, ChampionReadGate, _alias, _live_tickets, _versions

DAG = "rollback_race_tests"
# a killed holder leaves its lock ticket behind: the next writer takes it over once its lease (no beat) runs out
LEASE = {"ARGUS_REGISTRY_LOCK_LEASE_S": "3"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("rollback-mlflow")) as url:
        yield url


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("rollback-data"))


@pytest.fixture
def registry(server):
    import mlflow

    return Registry(mlflow.MlflowClient(tracking_uri=server))


class BothReadGate(ChampionReadGate):
    """Holds the first champion read until the other process read it too, or polls the registry lock twice
    (it waits behind a holder). Without the lock both read the same champion before either moves."""

    def __init__(self, name: str, timeout_s: float = 30.0):
        super().__init__(name, timeout_s)
        self.lock_polls = 0

    def __call__(self, method, path, body):
        if self.released:
            return None
        if is_alias_read(method, path, self.name):
            return super().__call__(method, path, body)
        if self.waiting and method == "GET" and "model-versions/search" in path and LOCK_MODEL in path:
            self.lock_polls += 1
            if self.lock_polls >= 2:
                self._release("the other process waiting on the registry lock")
        return None


def _setup_moves(registry, store, name, versions):
    """Audited promotions to each of ``versions`` in turn (what earlier training runs would have left)."""
    previous = None
    for v in versions:
        trail = AuditTrail(str(store), "promotion", {"user": "set-up", "dag_run": f"{DAG}/setup"}, "set-up", {})
        with registry.exclusive(name, "set-up") as held:
            assert trail.move(registry, name, CHAMPION, v, previous, held)[0] == "moved"
        previous = v


def _checked_rollback(template, store, run_id, condition, name, target, champion):
    """A run whose rollback-check passed for ``target`` against ``champion`` (the check itself: test_rollback.py)."""
    run = build_validated_run(template, store, DAG, run_id)
    run.write_json(f"rollback-check/{condition}/result.json", {
        "condition": condition, "model_name": name, "target_version": target, "champion_at_check": champion,
        "reason": f"restore v{target}: v{champion} is worse in the field", "passed": True,
        "checks": {"files_and_lineage": "ok"}, "check": run.url(f"rollback-check/{condition}/check.json")})
    return run


def _argus(argv, store, run_id, tracking_uri, xcom, stderr=subprocess.STDOUT, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGUS_", "MLFLOW_"))}
    env.update({"ARGUS_STORE": str(store), "ARGUS_DAG_ID": DAG, "ARGUS_RUN_ID": run_id, "ARGUS_XCOM_RETURN": str(xcom),
                "MLFLOW_TRACKING_URI": tracking_uri, "ARGUS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
                "MPLCONFIGDIR": str(xcom.parent / "mpl"), **env_extra})
    return subprocess.Popen([sys.executable, "-m", "argus_tasks.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


def test_a_rollback_and_a_promotion_racing_lose_no_update_and_the_log_shows_both_in_order(
        server, registry, template, tmp_path):
    name, c = "argus-weather-fog", "fog"
    v1, v2, v3 = _versions(registry.client, name, 3)
    store_a, store_b = tmp_path / "store-a", tmp_path / "store-b"
    _setup_moves(registry, store_a, name, [v1, v2])
    n_before = len(AuditLog(registry, str(store_a), name).entries())
    rollback_run = _checked_rollback(template, store_a, "race-rollback", c, name, v1, v2)
    promote_run = promotion_run(template, store_b, DAG, "race-promote", c, name, v3, v2)
    proxy = Proxy(server)
    gate = BothReadGate(name)
    proxy.rules.append(gate)
    try:
        procs = {"rollback": _argus(["rollback", "--condition", c], store_a, "race-rollback", proxy.url,
                                    tmp_path / "xcom-rollback.json"),
                 "promote": _argus(["promote", "--condition", c, "--require-beat-reference", "no", "--n-boot", "200"],
                                   store_b, "race-promote", proxy.url, tmp_path / "xcom-promote.json")}
        logs = {who: p.communicate(timeout=120)[0] for who, p in procs.items()}
    finally:
        proxy.close()
    assert gate.by not in (None, "timeout"), f"the rollback and the promotion did not overlap (gate: {gate.by})"
    entries = AuditLog(registry, str(store_a), name).entries()[n_before:]
    print("gate released by", gate.by, "| exit codes", {w: p.returncode for w, p in procs.items()},
          "| entries", [(e["seq"], e["kind"], e["state"], e["from"], e["to"]) for e in entries])
    assert len(entries) == 2, entries
    first, second = entries
    winner = first["kind"]
    assert first["state"] == "committed" and first["from"] == v2
    assert second["state"] == "refused" and second["outcome"] == "stale" and second["from"] == first["to"]
    assert {first["kind"], second["kind"]} == {"rollback", "promotion"} and first["seq"] + 1 == second["seq"]
    assert _alias(registry.client, name) == first["to"] == (v1 if winner == "rollback" else v3), "no lost update"
    codes = {w: p.returncode for w, p in procs.items()}
    if winner == "rollback":  # the promotion was judged against v2: refused, decided again after a new evaluate
        assert codes == {"rollback": 0, "promote": 0}, logs
        assert promote_run.read_json(f"promote/{c}/decision.json")["registry_outcome"] == "stale"
    else:  # the person approved v2 -> v1: a champion that moved since is not silently replaced
        assert codes == {"rollback": 10, "promote": 0}, logs
        assert "trigger a new rollback" in rollback_run.read_json(f"rollback/{c}/failure.json")["message"]
    tags = registry.client.get_registered_model(name).tags
    assert json.loads(tags[f"argus.audit.champion.{second['seq']:06d}"])["entry_id"] == second["entry_id"]
    assert _live_tickets(registry.client, name) == []


@pytest.fixture
def cli_main(monkeypatch):
    """``argus-task`` in this process (the reader and the retries; the crashing writer is a real process)."""
    import mlflow

    from argus_tasks import cli

    def main(argv, store, run_id, tracking_uri, xcom):
        for k, v in {"ARGUS_STORE": str(store), "ARGUS_DAG_ID": DAG, "ARGUS_RUN_ID": run_id,
                     "ARGUS_XCOM_RETURN": str(xcom), "MLFLOW_TRACKING_URI": tracking_uri, **LEASE}.items():
            monkeypatch.setenv(k, v)
        return cli.main(argv)

    before = mlflow.get_tracking_uri()
    yield main
    mlflow.set_tracking_uri(before)  # the steps point MLflow at this module's server, which stops with it


def test_the_audit_log_survives_a_crash_between_the_alias_move_and_its_write(server, registry, template, tmp_path,
                                                                             cli_main, capsys):
    name, c = "argus-weather-rain", "rain"
    v1, v2 = _versions(registry.client, name, 2)
    store = tmp_path / "store"
    _setup_moves(registry, store, name, [v1, v2])
    log = AuditLog(registry, str(store), name)
    n_before = len(log.entries())
    run = _checked_rollback(template, store, "crash-after-move", c, name, v1, v2)
    xcom = tmp_path / "xcom.json"

    proc = _argus(["rollback", "--condition", c], store, "crash-after-move", server, xcom,
                  ARGUS_FAULT_CRASH_AT="audit:after-move", **LEASE)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 137, out[-3000:]
    assert "fault injection: crashing at audit:after-move" in out
    assert _alias(registry.client, name) == v1, "the move happened before the crash"
    assert len(log.entries()) == n_before and [p["to"] for p in log.pending()] == [v1], "only the intent is written"
    assert not run.exists(f"rollback/{c}/decision.json")

    capsys.readouterr()
    assert cli_main(["audit", "--condition", c, "--json"], store, "reader", server, tmp_path / "x.json") == 0
    doc = json.loads(capsys.readouterr().out)
    last = doc["entries"][-1]
    assert (last["kind"], last["state"], last["recovered"], last["from"], last["to"]) == (
        "rollback", "committed", True, v2, v1)
    assert doc["pending"] == [] and doc["champion"] == v1 and last["reason"].startswith("restore v1")
    assert doc["reconciled"] and doc["reconciled"][0]["seq"] == last["seq"], "the reader completed it under the lock"

    assert cli_main(["rollback", "--condition", c], store, "crash-after-move", server, xcom) == 0  # the retry
    result = json.loads(xcom.read_text())
    assert (result["registry_outcome"], result["already_applied"]) == ("already_champion", True), result
    assert len(log.entries()) == n_before + 1, "the rerun adds nothing: the recovered entry is the move"

    # a crash after the intent, before the move: nothing moved; the rerun records that and then moves
    run2 = _checked_rollback(template, store, "crash-after-intent", c, name, v2, v1)
    proc = _argus(["rollback", "--condition", c], store, "crash-after-intent", server, xcom,
                  ARGUS_FAULT_CRASH_AT="audit:after-intent", **LEASE)
    proc.communicate(timeout=120)
    assert proc.returncode == 137 and _alias(registry.client, name) == v1
    assert cli_main(["rollback", "--condition", c], store, "crash-after-intent", server, xcom) == 0
    assert run2.read_json(f"rollback/{c}/decision.json")["registry_outcome"] == "moved"
    tail = [(e["state"], e["from"], e["to"], e["recovered"]) for e in log.entries()[-2:]]
    assert tail == [("aborted", v1, v2, True), ("committed", v1, v2, False)]
    assert _alias(registry.client, name) == v2 and _live_tickets(registry.client, name) == []
