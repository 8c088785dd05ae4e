"""Lineage from the contract env: the commit and the image digest, recorded only when they are real."""

from __future__ import annotations

import re

import pytest

from argus_tasks.contract import StepContext

DIGEST = "sha256:" + "9c" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tags(**env) -> dict:
    return StepContext.from_env({"ARGUS_STORE": "/tmp/s", **env}).lineage_tags()


def test_a_digest_pinned_image_records_its_digest():
    t = tags(ARGUS_IMAGE=f"registry.example.com/argus/task@{DIGEST}", ARGUS_GIT_COMMIT=COMMIT)
    assert t["argus.image_digest"] == DIGEST and re.fullmatch(r"sha256:[0-9a-f]{64}", t["argus.image_digest"])
    assert t["argus.image"] == f"registry.example.com/argus/task@{DIGEST}" and t["argus.git_commit"] == COMMIT


def test_a_tagged_image_records_the_digest_the_deployment_declares():
    t = tags(ARGUS_IMAGE="registry.example.com/argus/task:1.2", ARGUS_IMAGE_DIGEST=DIGEST)
    assert t["argus.image_digest"] == DIGEST


@pytest.mark.parametrize("env", [
    {"ARGUS_IMAGE": "argus/task:1.2"},  # a mutable tag alone: no digest to record
    {"ARGUS_IMAGE_DIGEST": "sha256:1234"},  # too short
    {"ARGUS_IMAGE_DIGEST": "md5:" + "0" * 32},
    {"ARGUS_IMAGE": f"argus/task@{DIGEST}", "ARGUS_IMAGE_DIGEST": "sha256:" + "0" * 64},  # they disagree
], ids=["tag-only", "short", "not-sha256", "disagree"])
def test_no_digest_is_recorded_unless_it_is_one(env):
    assert "argus.image_digest" not in tags(**env)


@pytest.mark.parametrize("value", ["", "unknown", "abc123", "not-a-commit", "g" * 40])
def test_a_commit_that_is_not_a_full_commit_id_is_recorded_as_unknown(value):
    assert tags(ARGUS_GIT_COMMIT=value)["argus.git_commit"] == "unknown"


def test_the_airflow_side_passes_the_digest_and_its_commit_and_refuses_malformed_ones(monkeypatch):
    from argus_airflow import settings as settings_mod
    from argus_airflow.step_spec import StepSpec, contract_env

    monkeypatch.setenv("ARGUS_TASK_IMAGE", "registry.example.com/argus/task:1.2")
    monkeypatch.setenv("ARGUS_TASK_IMAGE_DIGEST", DIGEST)
    monkeypatch.setenv("ARGUS_GIT_COMMIT", COMMIT)
    env = contract_env(settings_mod.load(), StepSpec(name="train", kind="training", gpus=1, cpu="8"))
    assert env["ARGUS_IMAGE_DIGEST"] == DIGEST and env["ARGUS_DAG_GIT_COMMIT"] == COMMIT
    assert env["ARGUS_CPU_REQUEST"] == "8"
    monkeypatch.setenv("ARGUS_TASK_IMAGE_DIGEST", "sha256:abc")
    with pytest.raises(ValueError, match="ARGUS_TASK_IMAGE_DIGEST: 'sha256:abc' is not an image digest"):
        settings_mod.load()
    monkeypatch.setenv("ARGUS_TASK_IMAGE_DIGEST", "")
    monkeypatch.setenv("ARGUS_GIT_COMMIT", "v1.2")
    with pytest.raises(ValueError, match="ARGUS_GIT_COMMIT='v1.2' is not a full git commit id"):
        settings_mod.load()
