"""A generation run without the generator: a validated run, a pinned judge, and shard markers with real PNGs.

The "generated" frames are real transforms of the source frames (fog: a blend towards grey; rain:
darker), written in the layout and with the plan and markers that ``plan-shards`` and ``generate``
leave (:mod:`argus_tasks.generation.shard_reader` documents the format). Tests tamper with single frames to make bad outputs.
The source dataset and the judge are built once per test session (the judge: the real
``segmenter`` step, 40 steps, registered in the session's MLflow).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from argus_tasks import cli
from argus_tasks.data.fixtures import build_validated_run
from argus_tasks.store import RunStore

DAG_ID = "generation_tests"
COUNTS = {"clear": {"train": 48, "val": 8, "test": 8}}
CONFIG_HASH = "c0ffee" * 2 + "c0ff"
SEED = 7
VERSIONS = {"fog": "3", "rain": "5"}
PERIOD_END = datetime(2026, 3, 1, tzinfo=UTC)


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def translate(rgb: np.ndarray, condition: str) -> np.ndarray:
    """A plausible 'generated' frame: fog blends towards grey, rain darkens."""
    x = rgb.astype(np.float32)
    out = 0.65 * x + 0.35 * 200.0 if condition == "fog" else 0.7 * x
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


class Steps:
    """``argus-task`` commands in this process for one store (returns exit code, result)."""

    def __init__(self, monkeypatch, store: Path, xcom: Path):
        self.monkeypatch, self.store, self.xcom = monkeypatch, store, xcom
        xcom.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, argv: list[str], run_id: str, **env) -> tuple[int, dict]:
        self.xcom.unlink(missing_ok=True)
        for k, v in {"ARGUS_STORE": str(self.store), "ARGUS_DAG_ID": DAG_ID, "ARGUS_RUN_ID": run_id,
                     "ARGUS_XCOM_RETURN": str(self.xcom), **env}.items():
            self.monkeypatch.setenv(k, str(v))
        rc = cli.main(argv)
        return rc, (json.loads(self.xcom.read_text()) if self.xcom.exists() else {})

    def failure(self, run_id: str, where: str) -> str:
        return json.loads((RunStore(str(self.store), DAG_ID, run_id).cache / where / "failure.json").read_text())[
            "message"]


@functools.cache
def session_base(root: str) -> tuple[Path, dict]:
    """(source dataset folder, pinned judge result) under ``root``, built once per session."""
    from argus_tasks.data.generate import generate_dataset

    root = Path(root)
    template = root / "dataset"
    generate_dataset(template, size=64, counts=COUNTS, seed=11, start=PERIOD_END - timedelta(days=14),
                     end=PERIOD_END, workers=1)
    store = root / "store"
    run_id = f"judge-{uuid.uuid4().hex[:8]}"
    build_validated_run(template, store, DAG_ID, run_id)
    env = {"ARGUS_STORE": str(store), "ARGUS_DAG_ID": DAG_ID, "ARGUS_RUN_ID": run_id,
           "ARGUS_XCOM_RETURN": str(root / "judge-return.json"), "ARGUS_TORCH_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        rc = cli.main(["segmenter", "--steps", "40", "--min-miou", "0.4"])
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert rc == 0, (store / "runs" / DAG_ID / run_id / "segmenter" / "failure.json").read_text()
    return template, json.loads((root / "judge-return.json").read_text())


def generation_run(base: tuple[Path, dict], store: Path, conditions=("fog", "rain"), shards_per_condition: int = 1,
                   tamper: dict | None = None, versions: dict | None = None) -> tuple[str, RunStore]:
    """A validated run whose clear test frames were 'generated' into ``conditions``, markers and plan included.

    ``tamper`` maps ``(condition, index)`` to ``"truncate"`` (a PNG cut short), ``"blank"`` (one grey
    value), ``"label"`` (one label pixel changed), ``"noise"`` (random pixels: the labels are gone) or
    ``"source"`` (the marker says it was made from another version of the source frame).
    ``versions`` overrides the generator version of a condition (:data:`VERSIONS`).
    """
    import pandas as pd

    template, judge = base
    versions = {**VERSIONS, **(versions or {})}
    run_id = f"gen-{uuid.uuid4().hex[:8]}"
    run = build_validated_run(template, store, DAG_ID, run_id)
    run.write_json("segmenter/result.json", judge)
    manifest = pd.read_parquet(template / "manifest.parquet")
    sources = manifest[(manifest["condition"] == "clear") & (manifest["split"] == "test")].sort_values("frame_id")
    plan = []
    for c in conditions:
        parts = np.array_split(np.arange(len(sources)), shards_per_condition)
        for k, idx in enumerate(parts):
            shard_id, shard_sha = f"{c}-{k:04d}", hashlib.sha256(f"{c}/{k}/{run_id}".encode()).hexdigest()
            plan.append({"shard_id": shard_id, "condition": c, "index": k, "shard_sha256": shard_sha})
            frames = [_write_output(run, template, sources.iloc[int(i)], c, versions[c], int(i),
                                    (tamper or {}).get((c, int(i)))) for i in idx]
            run.write_json(f"generate/shards/{shard_id}.json", {
                "shard_id": shard_id, "condition": c, "index": k, "shard_sha256": shard_sha, "complete": True,
                "model_name": f"argus-weather-{c}", "model_version": versions[c], "config_hash": CONFIG_HASH,
                "config": {"seed": SEED, "strength": 1.0, "format": "png", "writer": "argus-generate-v1"},
                "output_dir": f"generate/outputs/{c}/{versions[c]}/{CONFIG_HASH}", "n_frames": len(frames),
                "frames": frames, "stats": {"n_written": len(frames), "n_reused": 0, "seconds": 0.5,
                                            "frames_per_s": round(len(frames) / 0.5, 3)}})
    run.write_json("plan/shards.json", {"shards": plan})
    return run_id, run


def _write_output(run: RunStore, template: Path, src, condition: str, version: str, index: int,
                  tamper: str | None) -> dict:
    from PIL import Image

    rgb = np.asarray(Image.open(template / src["frame_path"]).convert("RGB"))
    label = (template / src["label_path"]).read_bytes()
    out = translate(rgb, condition)
    if tamper == "blank":
        out = np.full_like(out, 128)
    elif tamper == "noise":
        out = np.random.default_rng(index).integers(0, 256, out.shape, dtype=np.uint8)
    data = png(out)
    if tamper == "truncate":
        data = data[: len(data) // 2]
    if tamper == "label":
        lab = np.array(Image.open(io.BytesIO(label)))
        lab[0, 0] = (int(lab[0, 0]) + 1) % 8
        label = png(lab)
    frame_id = str(src["frame_id"])  # generate names an output after its source frame
    folder = f"generate/outputs/{condition}/{version}/{CONFIG_HASH}"
    run.write_bytes(f"{folder}/{frame_id}.png", data)
    run.write_bytes(f"{folder}/labels/{frame_id}.png", label)
    return {"frame_id": frame_id, "output": f"{folder}/{frame_id}.png", "sha256": hashlib.sha256(data).hexdigest(),
            "label": f"{folder}/labels/{frame_id}.png", "label_sha256": hashlib.sha256(label).hexdigest(),
            "source_sha256": "0" * 64 if tamper == "source" else str(src["frame_sha256"])}
