"""A run folder that looks pulled and validated, made from a generated dataset folder.

For the model tests, benchmarks and local experiments that exercise ``segmenter``, ``train``,
``evaluate`` and ``promote`` without DVC and Great Expectations (the data tests cover those). The
run gets exactly what :func:`argus_tasks.data.access.load_accepted` checks: the frames under
``data/`` with ``data/pull.json``, and ``validate/result.json`` + ``validate/accepted_manifest.parquet``
(every frame accepted, outcome ``passed``). Nothing here is used by the pipeline itself.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argus_tasks.data.access import ACCEPTED, PULL_JSON, RESULT
from argus_tasks.store import RunStore

# Enough frames for the segmenter floor and a visible learning signal on fog; ~6 s to render on 2 cores.
SMALL_COUNTS = {
    "clear": {"train": 160, "val": 24, "test": 24},
    "fog": {"train": 64, "val": 24, "test": 24},
    "night": {"train": 16, "val": 8, "test": 8},
}
SMALL_PERIOD_END = datetime(2026, 3, 1, tzinfo=UTC)
SMALL_PERIOD_START = SMALL_PERIOD_END - timedelta(days=28)


def generate_small_dataset(root: Path, seed: int = 5, workers: int = 2) -> Path:
    """Render the :data:`SMALL_COUNTS` dataset (64 px) into ``root``; returns ``root``."""
    from argus_tasks.data.generate import generate_dataset

    generate_dataset(root, size=64, counts=SMALL_COUNTS, seed=seed, start=SMALL_PERIOD_START,
                     end=SMALL_PERIOD_END, workers=workers)
    return Path(root)


def build_validated_run(template: Path, store: Path | str, dag_id: str, run_id: str) -> RunStore:
    """The run ``dag_id/run_id`` in ``store`` holding the dataset folder ``template`` as pulled and validated."""
    template = Path(template)
    run = RunStore(str(store), dag_id, run_id)
    shutil.copytree(template, run.local_dir("data"), dirs_exist_ok=True)
    raw = (template / "manifest.parquet").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    run.write_json(PULL_JSON, {"revision": "test-rev", "commit": "0" * 40, "fingerprint": digest})
    run.write_bytes(ACCEPTED, raw)
    run.write_json(RESULT, {"result_id": f"test-checkpoint/{run_id}", "outcome": "passed",
                            "dataset_fingerprint": digest, "accepted_manifest_sha256": digest})
    return run
