"""Helpers of the plan-shards and generate tests: a small validated source run and the steps before generate.

The resolve and export results are written directly (G1's steps make them in the pipeline): the
export's artifact is a stand-in file with its real sha256, and the runner is an eager untrained tiny
generator (:mod:`argus_tasks.generation.eager`) injected in place of ``load_runner``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argus_tasks import cli
from argus_tasks.data.fixtures import build_validated_run
from argus_tasks.store import RunStore

DAG_ID = "generation_tests"
COUNTS = {"clear": {"train": 1, "val": 2, "test": 6}, "fog": {"test": 1}}
MODEL_VERSION = "7"


def small_source(root: Path) -> Path:
    """9 clear frames (6 test, 2 val, 1 train) and one fog frame, 64 px (~1 s)."""
    from argus_tasks.data.generate import generate_dataset

    end = datetime(2026, 3, 1, tzinfo=UTC)
    generate_dataset(root, size=64, counts=COUNTS, seed=11, start=end - timedelta(days=7), end=end, workers=1)
    return Path(root)


def new_run(template: Path, store: Path, run_id: str | None = None) -> tuple[str, RunStore]:
    run_id = run_id or f"gen-{uuid.uuid4().hex[:8]}"
    return run_id, build_validated_run(template, store, DAG_ID, run_id)


def call(monkeypatch, store: Path, run_id: str, argv: list[str], xcom: Path) -> tuple[int, dict]:
    """``argus-task <argv>`` in this process against ``store``/``run_id``; (exit code, returned result)."""
    xcom.parent.mkdir(parents=True, exist_ok=True)
    xcom.unlink(missing_ok=True)
    for k, v in {"ARGUS_STORE": str(store), "ARGUS_DAG_ID": DAG_ID, "ARGUS_RUN_ID": run_id,
                 "ARGUS_XCOM_RETURN": str(xcom)}.items():
        monkeypatch.setenv(k, v)
    rc = cli.main(argv)
    return rc, (json.loads(xcom.read_text()) if xcom.exists() else {})


def write_model_results(run: RunStore, conditions=("fog",), version: str = MODEL_VERSION,
                        export_version: str | None = None) -> None:
    """``resolve/result.json`` pinning ``version`` and ``export/<c>/result.json`` with a stand-in artifact."""
    models = {c: {"model_name": f"argus-weather-{c}", "version": version, "content_hash": "c" * 64,
                  "source_uri": f"models:/argus-weather-{c}/{version}"} for c in conditions}
    run.write_json("resolve/result.json", {"models": models})
    for c in conditions:
        rel = f"export/{c}/generator.onnx"
        data = f"stand-in artifact of {c} v{version}".encode()
        run.write_bytes(rel, data)
        run.write_json(f"export/{c}/result.json", {"artifact": rel, "sha256": hashlib.sha256(data).hexdigest(),
                                                   "model_version": export_version or version})


def prepared_run(monkeypatch, template: Path, store: Path, xcom: Path, shard_size: int = 4,
                 splits: str = "test,val") -> tuple[str, RunStore, dict]:
    """A validated run with its shard plan (fog, rain) and model results: ready for generate."""
    run_id, run = new_run(template, store)
    rc, plan = call(monkeypatch, store, run_id, ["plan-shards", "--conditions", "fog,rain", "--splits", splits,
                                                 "--shard-size", str(shard_size)], xcom)
    assert rc == 0, run.read_bytes("plan-shards/failure.json")
    write_model_results(run, ("fog", "rain"))
    return run_id, run, plan


# A child process running the real CLI with the eager runner in place of load_runner (the artifact is a
# stand-in): argv = store run_id shard_id sleep_s_per_batch [extra CLI args...]
CHILD = r"""
import os, sys, time
store, run_id, shard_id, sleep_s = sys.argv[1:5]
os.environ.update({"ARGUS_STORE": store, "ARGUS_DAG_ID": "generation_tests", "ARGUS_RUN_ID": run_id,
                   "ARGUS_XCOM_RETURN": os.path.join(store, "xcom", "return.json"), "ARGUS_TORCH_THREADS": "1"})
from argus_tasks import cli
from argus_tasks.generation.eager import eager_runner, untrained_generator
from argus_tasks.steps import generate

def factory(path, device, seed):
    run = eager_runner(untrained_generator("fog"), seed=seed)
    def slow(frames):
        time.sleep(float(sleep_s))
        return run(frames)
    return slow

generate.default_runner_factory = factory
sys.exit(cli.main(["generate", "--shard-id", shard_id, *sys.argv[5:]]))
"""
