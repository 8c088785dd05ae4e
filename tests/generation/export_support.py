"""Shared pieces of the resolve and export tests: a local sqlite MLflow, tiny registered models, a small run.

Every model here is untrained (seeded initial weights): parity and resolution do not need a
generator that learned anything. The test modules make their fixtures from these (no conftest here, so that
other tests of this folder can have their own).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from argus_tasks import cli
from argus_tasks.store import RunStore

DAG_ID = "generation_tests"
COUNTS = {"clear": {"train": 2, "val": 8, "test": 2}, "fog": {"train": 2, "val": 4, "test": 4}}


class Env:
    """One sqlite MLflow + store; runs ``argus-task`` in this process. (exit code, result, stderr)."""

    def __init__(self, root: Path, client, registry, experiment_id: str):
        self.root, self.client, self.registry, self.experiment_id = root, client, registry, experiment_id
        self.store = root / "store"
        self.xcom = root / "xcom" / "return.json"
        self.xcom.parent.mkdir(parents=True, exist_ok=True)
        self.dataset: Path | None = None

    def env(self, run_id: str) -> dict:
        return {"ARGUS_STORE": str(self.store), "ARGUS_DAG_ID": DAG_ID, "ARGUS_RUN_ID": run_id,
                "ARGUS_XCOM_RETURN": str(self.xcom), "MLFLOW_TRACKING_URI": self.client.tracking_uri}

    def step(self, argv: list[str], run_id: str) -> tuple[int, dict]:
        self.xcom.unlink(missing_ok=True)
        saved = {k: os.environ.get(k) for k in self.env(run_id)}
        os.environ.update(self.env(run_id))
        try:
            rc = cli.main(argv)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return rc, (json.loads(self.xcom.read_text()) if self.xcom.exists() else {})

    def run(self, run_id: str) -> RunStore:
        return RunStore(str(self.store), DAG_ID, run_id)

    def failure(self, run_id: str, where: str) -> str:
        return self.run(run_id).read_json(f"{where}/failure.json")["message"]


@contextlib.contextmanager
def local_mlflow(root: Path):
    """A sqlite MLflow under ``root`` as the tracking URI (env and mlflow's global), restored after."""
    import mlflow

    from argus_tasks.models.registry_adapter import Registry

    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved_env, saved_uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("generation-tests", artifact_location=str(root / "artifacts"))
    try:
        yield Env(root, client, Registry(client), exp)
    finally:
        mlflow.set_tracking_uri(saved_uri)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def tiny_generator(condition: str = "fog", seed: int = 0):
    import torch

    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import build_generator

    torch.manual_seed(seed)
    return build_generator(load_config("tiny"), condition).eval()


def register(env: Env, model, name: str, champion: bool = False, size: int = 16) -> str:
    """Log ``model`` the way train does (state dict + content hash) and register it; its version."""
    import mlflow

    from argus_tasks.models.segmenter import content_hash
    from argus_tasks.models.segmenter_registry import log_torch_model

    with mlflow.start_run(experiment_id=env.experiment_id) as run:
        info = log_torch_model(model, "model", size)
    mv, _ = env.registry.register(name, info.model_uri, run.info.run_id, {"argus.test_run": run.info.run_id},
                                  {"argus.content_hash": content_hash(model)})
    if champion:
        env.registry.set_alias(name, "champion", mv.version)
    return str(mv.version)


def dataset(env: Env) -> Path:
    if env.dataset is None:
        from argus_tasks.data.fixtures import SMALL_PERIOD_END, SMALL_PERIOD_START
        from argus_tasks.data.generate import generate_dataset

        env.dataset = env.root / "dataset"
        generate_dataset(env.dataset, size=64, counts=COUNTS, seed=5, start=SMALL_PERIOD_START, end=SMALL_PERIOD_END,
                         workers=1)
    return env.dataset


def validated_run(env: Env, run_id: str, segmenter_version: str | None) -> RunStore:
    """A pulled + validated run of the small dataset, with the judge pinned in ``segmenter/result.json``
    (none when ``segmenter_version`` is None)."""
    from argus_tasks.data.fixtures import build_validated_run

    run = build_validated_run(dataset(env), env.store, DAG_ID, run_id)
    if segmenter_version is None:
        return run
    mv = env.client.get_model_version("argus-downstream-segmenter", segmenter_version)
    run.write_json("segmenter/result.json", {"model_name": "argus-downstream-segmenter", "version": segmenter_version,
                                             "content_hash": mv.tags["argus.content_hash"]})
    return run


def judged_env(root: Path):
    """An MLflow + store under ``root`` with an untrained judge registered (as the segmenter step would).

    A generator: use it in a fixture with ``yield from``.
    """
    import torch

    from argus_tasks.models.segmenter import UNetSegmenter

    with local_mlflow(root) as env:
        torch.manual_seed(0)
        env.judge_version = register(env, UNetSegmenter(width=4).eval(), "argus-downstream-segmenter", champion=True)
        yield env
