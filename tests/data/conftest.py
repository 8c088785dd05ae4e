"""Fixtures of the data tests: a tiny procedural registry, and steps run through the real CLI."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from argus_tasks import cli
from argus_tasks.data.schema import CONDITIONS_ALL, SPLITS

# 3 frames per condition and split: 45 frames, enough for every check and quick to render.
TINY_COUNTS = {c: dict.fromkeys(SPLITS, 3) for c in CONDITIONS_ALL}
PERIOD_END = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD_START = PERIOD_END - timedelta(days=28)


class Steps:
    """Runs ``argus-task`` commands in this process with a given environment; returns (rc, result)."""

    def __init__(self, monkeypatch, tmp: Path, registry: Path):
        self.monkeypatch = monkeypatch
        self.tmp = tmp
        self.store = tmp / "store"
        self.env = {"ARGUS_STORE": str(self.store), "ARGUS_DAG_ID": "data_tests",
                    "ARGUS_DATASET_REGISTRY": str(registry), "ARGUS_XCOM_RETURN": str(tmp / "xcom" / "return.json"),
                    "ARGUS_WORKERS": "2"}
        (tmp / "xcom").mkdir(parents=True, exist_ok=True)

    def __call__(self, argv: list[str], run_id: str, **env) -> tuple[int, dict]:
        ret = Path(self.env["ARGUS_XCOM_RETURN"])
        ret.unlink(missing_ok=True)
        for k, v in {**self.env, "ARGUS_RUN_ID": run_id, **env}.items():
            if v is None:
                self.monkeypatch.delenv(k, raising=False)
            else:
                self.monkeypatch.setenv(k, str(v))
        rc = cli.main(argv)
        result = json.loads(ret.read_text()) if ret.exists() else {}
        return rc, result

    def run_store(self, run_id: str):
        from argus_tasks.store import RunStore

        return RunStore(str(self.store), "data_tests", run_id)

    def failure(self, run_id: str, step: str) -> str:
        return json.loads((self.run_store(run_id).cache / step / "failure.json").read_text())["message"]


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory):
    """A registry with v1 (45 procedural frames over February 2026) and its local DVC remote."""
    from argus_tasks.data.registry import Registry

    base = tmp_path_factory.mktemp("registry")
    reg = Registry(base / "registry")
    reg.init(str(base / "remote"), size=64, seed=3, counts=TINY_COUNTS, start=PERIOD_START, end=PERIOD_END, workers=2)
    return reg


@pytest.fixture
def steps(monkeypatch, tmp_path, tiny_registry):
    # a private object cache per test: transfers are counted from zero
    monkeypatch.setenv("ARGUS_SCRATCH", str(tmp_path / "scratch"))
    return Steps(monkeypatch, tmp_path, tiny_registry.path)


@pytest.fixture
def run_id():
    return f"run-{uuid.uuid4().hex[:8]}"
