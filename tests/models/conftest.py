"""Fixtures of the model tests: a small validated run built from the procedural scenes.

The run folder is what ``pull`` + ``validate`` leave behind, written directly from a generated
dataset (:mod:`argus_tasks.data.fixtures`) so the model tests do not depend on DVC and Great
Expectations (the data tests cover those). Steps run through the real CLI (``argus_tasks.cli.main``).
Helpers shared with benchmarks live in that module: never import from a conftest.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from argus_tasks import cli
from argus_tasks.data.fixtures import build_validated_run, generate_small_dataset
from argus_tasks.store import RunStore

DAG_ID = "model_tests"
SEGMENTER_TEST_STEPS = "80"  # under the production default (130): clear mIoU ~0.86 here, floor 0.75


class Steps:
    """Runs ``argus-task`` commands in this process for one store; returns (exit code, result)."""

    def __init__(self, monkeypatch, store: Path, xcom: Path):
        self.monkeypatch, self.store, self.xcom = monkeypatch, store, xcom
        xcom.parent.mkdir(parents=True, exist_ok=True)

    def env(self, run_id: str) -> dict:
        return {"ARGUS_STORE": str(self.store), "ARGUS_DAG_ID": DAG_ID, "ARGUS_RUN_ID": run_id,
                "ARGUS_XCOM_RETURN": str(self.xcom)}

    def __call__(self, argv: list[str], run_id: str) -> tuple[int, dict]:
        self.xcom.unlink(missing_ok=True)
        for k, v in self.env(run_id).items():
            self.monkeypatch.setenv(k, v)
        rc = cli.main(argv)
        return rc, (json.loads(self.xcom.read_text()) if self.xcom.exists() else {})

    def run_store(self, run_id: str) -> RunStore:
        return RunStore(str(self.store), DAG_ID, run_id)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The test machine is shared: one torch thread avoids OpenMP spin-waiting on small tensors."""
    import os

    import torch

    before = (os.environ.get("ARGUS_TORCH_THREADS"), torch.get_num_threads())
    os.environ["ARGUS_TORCH_THREADS"] = os.environ.get("ARGUS_MODEL_TEST_THREADS", "1")
    torch.set_num_threads(int(os.environ["ARGUS_TORCH_THREADS"]))
    yield
    torch.set_num_threads(before[1])
    if before[0] is None:
        os.environ.pop("ARGUS_TORCH_THREADS", None)
    else:
        os.environ["ARGUS_TORCH_THREADS"] = before[0]


@pytest.fixture(scope="session")
def dataset_template(tmp_path_factory) -> Path:
    return generate_small_dataset(tmp_path_factory.mktemp("model-dataset"))


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-store")


@pytest.fixture
def steps(monkeypatch, model_store, tmp_path) -> Steps:
    return Steps(monkeypatch, model_store, tmp_path / "xcom" / "return.json")


@pytest.fixture
def validated_run(dataset_template, model_store):
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    return run_id, build_validated_run(dataset_template, model_store, DAG_ID, run_id)


@pytest.fixture(scope="session")
def session_segmenter(dataset_template, model_store):
    """The reference segmenter, trained and registered once per test session (as in production)."""
    import os

    run_id = f"seg-{uuid.uuid4().hex[:8]}"
    build_validated_run(dataset_template, model_store, DAG_ID, run_id)
    env = {"ARGUS_STORE": str(model_store), "ARGUS_DAG_ID": DAG_ID, "ARGUS_RUN_ID": run_id,
           "ARGUS_XCOM_RETURN": str(model_store / "seg-return.json")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        # --retrain: a judge that another test folder registered in the session's MLflow (the generation
        # tests train a 40-step one) must not become the model tests' judge
        rc = cli.main(["segmenter", "--steps", SEGMENTER_TEST_STEPS, "--retrain"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert rc == 0, (model_store / "runs" / DAG_ID / run_id / "segmenter" / "failure.json").read_text()
    return json.loads((model_store / "seg-return.json").read_text())
