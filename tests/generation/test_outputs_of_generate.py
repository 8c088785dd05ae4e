"""The contract between ``generate`` and the steps after it: what plan-shards and generate really write is
checked, published and reported. Skipped where the generate step is not in the tree (before the merge)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from .output_support import Steps, session_base, translate

generate = pytest.importorskip("argus_tasks.steps.generate")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return session_base(str(tmp_path_factory.getbasetemp() / "generation-base"))


def test_what_generate_writes_is_checked_published_and_reported(base, monkeypatch, tmp_path):
    from argus_tasks.data.fixtures import build_validated_run

    from .output_support import DAG_ID

    monkeypatch.setenv("ARGUS_OUTPUT_REGISTRY_ROOT", str(tmp_path / "outputs"))
    steps = Steps(monkeypatch, tmp_path / "store", tmp_path / "xcom" / "return.json")
    run = build_validated_run(base[0], steps.store, DAG_ID, "contract")
    run.write_json("segmenter/result.json", base[1])
    rc, plan = steps(["plan-shards", "--conditions", "fog,rain", "--splits", "test", "--shard-size", "4"], "contract")
    assert rc == 0 and len(plan["shards"]) == 4
    # what resolve and export leave for generate (the artifact is a stand-in: the runner below replaces it)
    run.write_json("resolve/result.json", {"models": {c: {"model_name": f"argus-weather-{c}", "version": "7"}
                                                      for c in ("fog", "rain")}})
    for c in ("fog", "rain"):
        data = f"stand-in {c}".encode()
        run.write_bytes(f"export/{c}/generator.onnx", data)
        run.write_json(f"export/{c}/result.json", {"artifact": f"export/{c}/generator.onnx", "model_version": "7",
                                                   "sha256": hashlib.sha256(data).hexdigest()})

    def factory(path, device, seed):
        c = "fog" if "/fog/" in str(path) else "rain"
        return lambda frames: np.stack([translate(f, c) for f in frames])

    monkeypatch.setattr(generate, "default_runner_factory", factory)
    for shard in plan["shards"]:
        assert steps(["generate", "--shard-id", shard["shard_id"], "--seed", "3"], "contract")[0] == 0
    rc, check = steps(["check-outputs", "--conditions", "fog,rain", "--workers", "1"], "contract")
    assert rc == 0 and (check["outcome"], check["accepted"]) == ("passed", 16), steps.failure("contract",
                                                                                              "check-outputs")
    rc, published = steps(["publish", "--output-dataset", "weather-contract"], "contract")
    assert rc == 0 and (published["revision"], published["n_frames"]) == ("v1", 16)
    manifest = pd.read_parquet(tmp_path / "outputs" / "weather-contract" / "dataset" / "manifest.parquet")
    marker = run.read_json("generate/shards/rain-0001.json")
    row = manifest.set_index("frame_id").loc["rain-clear-test-b00-00005"]
    assert (row["source_frame_id"], row["model_version"], row["seed"], row["config_hash"]) == (
        "clear-test-b00-00005", "7", 3, marker["config_hash"])
    rc, report = steps(["generation-report", "--conditions", "fog,rain"], "contract")
    assert rc == 0 and report["failed_steps"] == [] and report["throughput"]["total"]["generated"] == 16
