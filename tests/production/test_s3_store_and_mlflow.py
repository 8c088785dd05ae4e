"""S3 for real, through the production code paths: the run-scoped store (``RunStore`` on s3://)
and MLflow artifacts on S3 (``tracking.step_run`` with ``ARGUS_MLFLOW_ARTIFACTS=s3://...``).

The endpoint is moto's S3 server on 127.0.0.1 over HTTP (fixture ``s3_endpoint``); only the endpoint
and the credentials (AWS_* env) differ from a deployment. Every check reads back through the
plain S3 API (boto3) as well, so a silent fallback to the local disk cannot pass.
"""

from __future__ import annotations

import json
import shutil

import boto3
import pytest

from argus_tasks.contract import StepContext
from argus_tasks.store import RunStore

RUN_ID = "scheduled__2026-01-05T02:00:00+00:00"


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def s3_get(bucket: str, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    path = tmp_path / "scratch"
    monkeypatch.setenv("ARGUS_SCRATCH", str(path))
    return path


def test_step_context_on_s3_addresses_the_run_folder(s3_bucket, scratch):
    ctx = StepContext.from_env({"ARGUS_STORE": f"s3://{s3_bucket}/prod/", "ARGUS_DAG_ID": "argus_weather_training",
                                "ARGUS_RUN_ID": RUN_ID})
    store = ctx.run
    assert store.remote
    assert store.url("train/fog/result.json") == (
        f"s3://{s3_bucket}/prod/runs/argus_weather_training/{RUN_ID}/train/fog/result.json")


def test_run_store_round_trip_on_s3(s3_bucket, scratch):
    import pandas as pd

    store = RunStore(f"s3://{s3_bucket}/prod", "argus_weather_training", RUN_ID)
    prefix = f"prod/runs/argus_weather_training/{RUN_ID}/"
    store.write_json("validate/result.json", {"accepted": 42, "quarantined": 1})
    store.write_text("report/report.md", "# report\n")
    df = pd.DataFrame({"frame_id": ["a", "b"], "brightness_mean": [0.25, 0.5]})
    store.write_dataframe("data/manifest.parquet", df)

    assert s3_keys(s3_bucket) == sorted(prefix + k for k in
                                        ("validate/result.json", "report/report.md", "data/manifest.parquet"))
    assert json.loads(s3_get(s3_bucket, prefix + "validate/result.json")) == {"accepted": 42, "quarantined": 1}

    # a fresh process (another pod) with an empty scratch reads the same content back from S3
    shutil.rmtree(scratch, ignore_errors=True)
    other = RunStore(f"s3://{s3_bucket}/prod", "argus_weather_training", RUN_ID)
    assert other.exists("validate/result.json") and not other.exists("validate/missing.json")
    assert other.read_json("validate/result.json")["accepted"] == 42
    pd.testing.assert_frame_equal(other.read_dataframe("data/manifest.parquet"), df)
    assert other.list("") == ["data", "report", "validate"]
    assert other.list("nothing-here") == []

    # an overwrite replaces the object whole (a retried step rewrites its result)
    other.write_json("validate/result.json", {"accepted": 43})
    assert json.loads(s3_get(s3_bucket, prefix + "validate/result.json")) == {"accepted": 43}


def test_publish_and_localize_folders_on_s3(s3_bucket, scratch):
    store = RunStore(f"s3://{s3_bucket}", "argus_weather_training", RUN_ID)
    folder = store.local_dir("train/fog/checkpoints")
    (folder / "step-000100.pt").write_bytes(b"\x00" * 2048)
    (folder / "nested").mkdir()
    (folder / "nested" / "meta.json").write_text("{}")
    url = store.publish("train/fog/checkpoints")
    assert url == f"s3://{s3_bucket}/runs/argus_weather_training/{RUN_ID}/train/fog/checkpoints"
    # publishing again (a retry) neither duplicates nor nests the folder
    (folder / "step-000200.pt").write_bytes(b"\x01" * 10)
    store.publish("train/fog/checkpoints")
    keys = [k.split("/checkpoints/", 1)[1] for k in s3_keys(s3_bucket)]
    assert keys == ["nested/meta.json", "step-000100.pt", "step-000200.pt"]

    shutil.rmtree(scratch)
    fresh = RunStore(f"s3://{s3_bucket}", "argus_weather_training", RUN_ID)
    local = fresh.localize("train/fog/checkpoints")
    got = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert got == ["nested/meta.json", "step-000100.pt", "step-000200.pt"]
    assert (local / "step-000100.pt").read_bytes() == b"\x00" * 2048
    again = fresh.localize("train/fog/checkpoints")  # idempotent: no nested copy
    assert sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file()) == got
    single = fresh.localize("train/fog/checkpoints/nested/meta.json")
    assert single.read_text() == "{}"


def test_runs_are_isolated_on_s3(s3_bucket, scratch):
    a = RunStore(f"s3://{s3_bucket}", "argus_weather_training", "manual__1")
    b = RunStore(f"s3://{s3_bucket}", "argus_weather_training", "manual__2")
    a.write_json("pull/result.json", {"run": 1})
    assert not b.exists("pull/result.json")
    b.write_json("pull/result.json", {"run": 2})
    assert a.read_json("pull/result.json") == {"run": 1}


def test_wrong_credentials_are_an_error_not_a_silent_local_write(s3_bucket, scratch, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    import fsspec

    fsspec.config.conf.clear()
    fsspec.filesystem("s3").clear_instance_cache()
    store = RunStore(f"s3://{s3_bucket}-does-not-exist", "argus_weather_training", RUN_ID)
    with pytest.raises(Exception):  # noqa: B017 - s3fs raises FileNotFoundError or PermissionError
        store.write_json("x.json", {})
    assert s3_keys(s3_bucket) == []


# ---- MLflow artifacts on S3 ------------------------------------------------------------------------
@pytest.fixture
def mlflow_on_s3(tmp_path, s3_bucket, monkeypatch):
    """A tracking store (SQLite) whose experiments keep their artifacts in s3://<bucket>/experiments."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ARGUS_MLFLOW_ARTIFACTS", f"s3://{s3_bucket}/experiments")
    monkeypatch.setenv("ARGUS_MLFLOW_EXPERIMENT", "argus/s3-test")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield s3_bucket
    mlflow.set_tracking_uri(None)


def test_step_run_artifacts_land_on_s3_and_read_back(mlflow_on_s3, tmp_path):
    import mlflow

    from argus_tasks import tracking

    bucket = mlflow_on_s3
    ctx = StepContext(store_root=str(tmp_path / "store"), dag_id="argus_weather_training", run_id=RUN_ID,
                      task_id="evaluate", map_index=0)
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps({"kid": 0.0125}))
    with tracking.step_run(ctx, "evaluate", condition="fog") as run:
        mlflow.log_artifact(str(report), artifact_path="evaluation")
        mlflow.log_dict({"decision": "keep"}, "evaluation/decision.json")
        mlflow.log_metric("kid", 0.0125)
        run_id = run.info.run_id

    exp = mlflow.get_experiment_by_name("argus/s3-test")
    assert exp.artifact_location == f"s3://{bucket}/experiments/argus_s3-test"
    info = mlflow.get_run(run_id).info
    assert info.artifact_uri.startswith(exp.artifact_location + "/")
    keys = s3_keys(bucket, "experiments/")
    assert any(k.endswith("/artifacts/evaluation/metrics.json") for k in keys), keys
    assert any(k.endswith("/artifacts/evaluation/decision.json") for k in keys), keys

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation",
                                                dst_path=str(tmp_path / "back"))
    assert json.loads((tmp_path / "back" / "evaluation" / "metrics.json").read_text()) == {"kid": 0.0125}
    assert mlflow.artifacts.load_dict(f"{info.artifact_uri}/evaluation/decision.json") == {"decision": "keep"}
    assert local.endswith("evaluation")

    # a retried step reopens the same MLflow run (and the same S3 folder), it does not fork a new one
    with tracking.step_run(ctx, "evaluate", condition="fog") as again:
        assert again.info.run_id == run_id


def test_logged_torch_model_round_trips_through_s3(mlflow_on_s3, tmp_path):
    """A model logged by a step (MLflow 3 logged model) is stored on S3 and loads back identical."""
    import mlflow
    import torch

    from argus_tasks import tracking

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))
    ctx = StepContext(store_root=str(tmp_path / "store"), dag_id="argus_weather_training", run_id=RUN_ID,
                      task_id="train", map_index=0)
    example = torch.rand(1, 3, 8, 8)
    with tracking.step_run(ctx, "train", condition="fog"):
        # pickle: the same S3 path as MLflow's default pt2 format, without its ~10 s graph export
        info = mlflow.pytorch.log_model(model, name="generator", serialization_format="pickle",
                                        pip_requirements=["torch==2.13.0"])
    keys = s3_keys(mlflow_on_s3, f"experiments/argus_s3-test/models/{info.model_id}/artifacts/")
    assert any(k.endswith("/MLmodel") for k in keys) and any("/artifacts/data/" in k for k in keys), keys
    (tmp_path / "model").mkdir()
    loaded = mlflow.pytorch.load_model(info.model_uri, dst_path=str(tmp_path / "model"))
    with torch.no_grad():
        assert torch.allclose(model(example), loaded(example))
