"""The generate tests run without the per-shard MLflow run of system metrics (it costs an MLflow start-up per
shard); tests/generation/test_generate_system_metrics.py turns it on."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_shard_mlflow_runs(monkeypatch):
    monkeypatch.setenv("ARGUS_SYSTEM_METRICS", "false")
