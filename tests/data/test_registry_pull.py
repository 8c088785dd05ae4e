"""The DVC registry and the pull step: revisions, intervals, idempotence and the errors of each."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest

from argus_tasks.contract import EXIT_OK, EXIT_PERMANENT, EXIT_TRANSIENT, PermanentStepError
from argus_tasks.data.access import load_accepted
from argus_tasks.data.registry import Registry

from .conftest import PERIOD_END, PERIOD_START, TINY_COUNTS

N_TINY = sum(sum(v.values()) for v in TINY_COUNTS.values())


def test_init_creates_v1_pushes_to_the_remote_and_is_idempotent(tiny_registry, tmp_path):
    reg = tiny_registry
    assert reg.tags() == ["v1"] and reg.is_initialised()
    remote = reg.configured_remote()
    assert sum(1 for p in __import__("pathlib").Path(remote).rglob("*") if p.is_file()) >= 3 * N_TINY
    head = reg.head()
    again = Registry(reg.path).init(remote, size=64, seed=3)
    assert again["created"] is False and "nothing to do" in again["message"]
    assert reg.head() == head and reg.tags() == ["v1"]
    assert reg.git("status", "--porcelain") == ""


def pull_args(rev="latest", start="", end="", window="interval"):
    return ["pull", "--dataset-rev", rev, "--interval-start", start, "--interval-end", end, "--window", window]


def test_pull_all_materialises_and_verifies_the_revision(steps, run_id):
    rc, result = steps(pull_args("v1", window="all"), run_id)
    assert rc == EXIT_OK
    assert result["n_frames"] == N_TINY and result["transferred"] > 3 * N_TINY - 1
    assert result["counts"]["fog"] == {"train": 3, "val": 3, "test": 3}
    data = steps.run_store(run_id).cache / "data"
    manifest = pd.read_parquet(data / "manifest.parquet")
    assert len(manifest) == N_TINY
    assert all((data / p).exists() for p in [*manifest["frame_path"], *manifest["label_path"]])
    assert (data / manifest["frame_path"][0].replace("frames/", "depth/", 1)).exists()
    pulled = json.loads((data / "pull.json").read_text())
    assert pulled["fingerprint"] == result["fingerprint"] and pulled["n_hash_mismatches"] == 0


def test_second_pull_transfers_nothing_and_gives_the_same_fingerprint(steps, run_id):
    window = pull_args("v1", PERIOD_START.isoformat(), (PERIOD_START + timedelta(days=14)).isoformat())
    rc1, first = steps(window, run_id)
    rc2, again = steps(window, run_id)  # a retry of the same run
    rc3, other = steps(window, run_id + "-b")  # another run, same revision and interval
    assert rc1 == rc2 == rc3 == EXIT_OK
    assert first["transferred"] > 0
    assert again["transferred"] == 0 and again["copied"] == 0
    assert other["transferred"] == 0 and other["copied"] > 0
    assert first["fingerprint"] == again["fingerprint"] == other["fingerprint"]


def test_interval_selects_capture_times_in_half_open_range(steps, run_id):
    start, end = PERIOD_START + timedelta(days=7), PERIOD_START + timedelta(days=21)
    rc, result = steps(pull_args("v1", start.isoformat(), end.isoformat()), run_id)
    assert rc == EXIT_OK
    manifest = pd.read_parquet(steps.run_store(run_id).cache / "data" / "manifest.parquet")
    assert len(manifest) == result["n_frames"] < N_TINY
    # training frames come from the interval only; val/test frames are the revision's frozen evaluation set
    train = manifest[manifest["split"] == "train"]
    assert 0 < len(train) == result["n_train_frames"]
    assert (train["capture_time"] >= start).all() and (train["capture_time"] < end).all()
    assert result["n_eval_frames"] == int(manifest["split"].isin(["val", "test"]).sum()) == sum(
        v["val"] + v["test"] for v in TINY_COUNTS.values())
    rc_all, everything = steps(pull_args("v1", start.isoformat(), end.isoformat(), window="all"), run_id + "-all")
    assert everything["n_frames"] == N_TINY and everything["fingerprint"] != result["fingerprint"]


def test_revision_that_does_not_exist_fails_permanently_and_lists_tags(steps, run_id):
    rc, result = steps(pull_args("v42", window="all"), run_id)
    assert rc == EXIT_PERMANENT and result == {}
    message = steps.failure(run_id, "pull")
    assert "'v42' does not exist" in message and "available tags: v1" in message
    with pytest.raises(PermanentStepError, match="validation output missing"):
        load_accepted(steps.run_store(run_id))


def test_interval_with_no_frames_fails_permanently_naming_the_interval(steps, run_id):
    assert steps(pull_args("v1", window="all"), run_id)[0] == EXIT_OK  # an earlier, good pull of this run
    rc, _ = steps(pull_args("v1", "2020-01-01T00:00:00+00:00", "2020-02-01T00:00:00+00:00"), run_id)
    assert rc == EXIT_PERMANENT
    message = steps.failure(run_id, "pull")
    assert "[2020-01-01T00:00:00+00:00, 2020-02-01T00:00:00+00:00)" in message and "no frames" in message
    assert not (steps.run_store(run_id).cache / "data" / "manifest.parquet").exists()  # withdrawn
    with pytest.raises(PermanentStepError, match="validation output missing"):
        load_accepted(steps.run_store(run_id))


def test_unreachable_dvc_remote_is_a_retryable_error_naming_it(steps, run_id, tmp_path):
    gone = tmp_path / "unmounted-remote"
    rc, _ = steps(pull_args("v1", window="all"), run_id, ARGUS_DVC_REMOTE=str(gone))
    assert rc == EXIT_TRANSIENT
    message = steps.failure(run_id, "pull")
    assert str(gone) in message and "unreachable" in message
    with pytest.raises(PermanentStepError, match="validation output missing"):
        load_accepted(steps.run_store(run_id))


def test_unreachable_s3_remote_is_a_retryable_error_naming_it(steps, run_id):
    rc, _ = steps(pull_args("v1", window="all"), run_id, ARGUS_DVC_REMOTE="s3://argus-datasets/registry",
                  ARGUS_DVC_S3_ENDPOINT="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                  AWS_DEFAULT_REGION="us-east-1")
    assert rc == EXIT_TRANSIENT
    assert "s3://argus-datasets/registry" in steps.failure(run_id, "pull")


def test_registry_that_does_not_exist_is_a_permanent_error(steps, run_id, tmp_path):
    rc, _ = steps(pull_args(window="all"), run_id, ARGUS_DATASET_REGISTRY=str(tmp_path / "nowhere"))
    assert rc == EXIT_PERMANENT and "nowhere" in steps.failure(run_id, "pull")


def test_add_revision_adds_later_frames_as_v2_and_latest_follows(tmp_path, monkeypatch):
    """On a private copy of the registry, so the session registry keeps only v1."""
    import shutil

    from .conftest import Steps

    base = tmp_path / "reg"
    reg = Registry(base / "registry")
    reg.init(str(base / "remote"), size=64, seed=4, counts={"clear": {"train": 4}, "fog": {"train": 4}},
             start=PERIOD_START, end=PERIOD_END, workers=1)
    v1 = reg.head()
    out = reg.add_revision(frames=6, workers=1, now=PERIOD_END + timedelta(days=3))
    assert out["tag"] == "v2" and out["added"] == 6 and out["frames"] == 14
    assert reg.tags() == ["v1", "v2"] and reg.head() != v1
    manifest = pd.read_parquet(reg.dataset / "manifest.parquet")
    new = manifest[manifest["frame_id"].str.contains("-b01-")]
    assert len(new) == 6 and new["capture_time"].min() > manifest[~manifest.index.isin(new.index)]["capture_time"].max()
    monkeypatch.setenv("ARGUS_SCRATCH", str(tmp_path / "scratch"))
    steps = Steps(monkeypatch, tmp_path, reg.path)
    rc1, r_v1 = steps(pull_args("v1", window="all"), "a")
    rc2, r_latest = steps(pull_args("latest", window="all"), "b")
    rc3, r_commit = steps(pull_args(v1, window="all"), "c")
    assert rc1 == rc2 == rc3 == EXIT_OK
    assert r_v1["n_frames"] == 8 and r_latest["n_frames"] == 14
    assert r_latest["commit"] == reg.head() and r_commit["fingerprint"] == r_v1["fingerprint"]
    assert r_v1["fingerprint"] != r_latest["fingerprint"]
    shutil.rmtree(base / "remote")  # every object is cached: a repeat pull needs no remote
    rc4, r_again = steps(pull_args("v2", window="all"), "d")
    assert rc4 == EXIT_OK and r_again["transferred"] == 0 and r_again["fingerprint"] == r_latest["fingerprint"]


def test_s3_remote_through_dvc_s3(tmp_path, monkeypatch):
    """init pushes to an S3 remote (a local moto server) and pull reads from it, endpoint from the env."""
    import boto3
    from moto.server import ThreadedMotoServer

    from .conftest import Steps

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "ARGUS_DVC_S3_ENDPOINT": endpoint, "ARGUS_SCRATCH": str(tmp_path / "scratch")}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="argus-data")
        reg = Registry(tmp_path / "registry")
        reg.init("s3://argus-data/registry", size=64, seed=2, counts={"clear": {"train": 3}, "fog": {"train": 3}},
                 start=PERIOD_START, end=PERIOD_END, workers=1)
        assert reg.configured_remote() == "s3://argus-data/registry"
        assert "secret" not in (reg.path / ".dvc" / "config").read_text().lower()
        assert s3.list_objects_v2(Bucket="argus-data")["KeyCount"] >= 19
        rc, result = Steps(monkeypatch, tmp_path, reg.path)(pull_args(window="all"), "s3")
        assert rc == EXIT_OK and result["n_frames"] == 6 and result["transferred"] == 19
    finally:
        server.stop()
