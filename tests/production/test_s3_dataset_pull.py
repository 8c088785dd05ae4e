"""The dataset pull from an S3 DVC remote, for real: ``argus-task dataset init --remote s3://...``
pushes the demo dataset to the remote, then ``argus-task pull`` (the DAG's command line) fetches a
revision from it into a run-scoped store that is itself on S3.

Both commands run as subprocesses with the production code paths; only the endpoint and the
credentials in the environment point at the loopback S3 server (moto, real HTTP).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import boto3
import pytest

from . import support

ARGUS_TASK = str(support.VENV_BIN / "argus-task")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([ARGUS_TASK, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=support.REPO)


def keys(bucket: str, prefix: str = "") -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="module")
def s3_registry(s3_endpoint, tmp_path_factory):
    """A dataset registry whose DVC remote is s3://argus-dvc-remote/datasets (demo data, v1)."""
    mp = pytest.MonkeyPatch()
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "argus-test-key",
           "AWS_SECRET_ACCESS_KEY": "argus-test-secret", "AWS_DEFAULT_REGION": "us-east-1",
           "ARGUS_LOG_LEVEL": "INFO"}
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        mp.setenv(key, env[key])
    s3 = boto3.client("s3")
    for bucket in ("argus-dvc-remote", "argus-runs-pull"):
        s3.create_bucket(Bucket=bucket)
    registry = tmp_path_factory.mktemp("registry") / "registry"
    proc = run_cli(["dataset", "init", "--registry", str(registry), "--remote", "s3://argus-dvc-remote/datasets",
                    "--scale", "0.03", "--workers", "1"], env)
    assert proc.returncode == 0, f"dataset init on S3 failed:\n{proc.stderr[-3000:]}"
    yield {"env": env, "registry": registry, "init": proc}
    mp.undo()


def pull_env(s3_registry, tmp_path, run_id: str, scratch: str = "scratch") -> dict[str, str]:
    return {**s3_registry["env"], "ARGUS_STORE": "s3://argus-runs-pull/prod",
            "ARGUS_DATASET_REGISTRY": str(s3_registry["registry"]), "ARGUS_DAG_ID": "argus_weather_training",
            "ARGUS_RUN_ID": run_id, "ARGUS_SCRATCH": str(tmp_path / scratch),
            "ARGUS_XCOM_RETURN": str(tmp_path / f"{run_id}.json")}


def test_init_pushes_the_dataset_to_the_s3_remote(s3_registry):
    objects = keys("argus-dvc-remote", "datasets/")
    assert objects and all(k.startswith("datasets/files/md5/") for k in objects)
    assert any(k.endswith(".dir") for k in objects), "the DVC directory listing object is on S3"
    config = (s3_registry["registry"] / ".dvc" / "config").read_text()
    assert "s3://argus-dvc-remote/datasets" in config
    assert "argus-test-secret" not in config and "argus-test-key" not in config, "credentials leaked into git"


def test_pull_from_s3_remote_into_s3_store(s3_registry, tmp_path):
    env = pull_env(s3_registry, tmp_path, "scheduled__2026-01-05T02:00:00+00:00")
    proc = run_cli(["pull", "--dataset-rev", "v1", "--window", "all"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "scheduled__2026-01-05T02:00:00+00:00.json").read_text())
    assert result["n_hash_mismatches"] == 0 and result["n_missing_files"] == 0
    n = result["n_frames"]
    assert n == sum(sum(splits.values()) for splits in result["counts"].values()) > 0
    assert set(result["counts"]) == {"clear", "fog", "rain", "snow", "night"}
    assert result["transferred"] > n, "frames, labels (and depth) came from the S3 remote"

    prefix = "prod/runs/argus_weather_training/scheduled__2026-01-05T02:00:00+00:00/data/"
    stored = keys("argus-runs-pull", prefix)
    assert result["manifest"] == f"s3://argus-runs-pull/{prefix}manifest.parquet"
    assert prefix + "manifest.parquet" in stored and prefix + "pull.json" in stored
    frames = [k for k in stored if k.startswith(prefix + "frames/")]
    assert len(frames) == n

    # the bytes in the run store are the registry's bytes (manifest hashes), read through plain S3
    import io

    import pandas as pd

    s3 = boto3.client("s3")
    manifest = pd.read_parquet(io.BytesIO(s3.get_object(Bucket="argus-runs-pull", Key=prefix + "manifest.parquet")
                                          ["Body"].read()))
    row = manifest.iloc[len(manifest) // 2]
    body = s3.get_object(Bucket="argus-runs-pull", Key=prefix + row["frame_path"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == row["frame_sha256"]

    # the same revision again, for another run with the same cache: no transfer, same fingerprint
    env2 = pull_env(s3_registry, tmp_path, "manual__again")
    proc2 = run_cli(["pull", "--dataset-rev", "v1", "--window", "all"], env2)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    again = json.loads((tmp_path / "manual__again.json").read_text())
    assert again["transferred"] == 0 and again["fingerprint"] == result["fingerprint"]


def test_unreachable_s3_remote_is_a_retryable_failure_naming_it(s3_registry, tmp_path):
    env = pull_env(s3_registry, tmp_path, "manual__down", scratch="empty-scratch")
    env["ARGUS_STORE"] = str(tmp_path / "store")  # the store is fine; only the DVC remote is down
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{support.free_port()}"  # nothing listens there
    env["AWS_MAX_ATTEMPTS"] = "1"
    proc = run_cli(["pull", "--dataset-rev", "v1", "--window", "all"], env, timeout=240)
    assert proc.returncode == 75, (proc.returncode, proc.stderr[-2000:])
    assert "s3://argus-dvc-remote/datasets" in proc.stderr
