"""The train step's MLflow run carries MLflow's system metrics (CPU and memory here; GPU on a GPU)."""

from __future__ import annotations

import mlflow


def test_a_train_run_logs_cpu_and_memory_system_metrics(validated_run, steps, monkeypatch):
    run_id, _ = validated_run
    monkeypatch.setenv("ARGUS_SYSTEM_METRICS_INTERVAL_S", "0.5")
    rc, result = steps(["train", "--condition", "fog", "--steps", "12", "--set", "log_every_steps=4"], run_id)
    assert rc == 0, result
    client = mlflow.MlflowClient()
    cpu = client.get_metric_history(result["mlflow_run_id"], "system/cpu_utilization_percentage")
    memory = client.get_metric_history(result["mlflow_run_id"], "system/system_memory_usage_megabytes")
    assert cpu and memory, sorted(client.get_run(result["mlflow_run_id"]).data.metrics)
    assert all(0 <= m.value <= 100 * 64 for m in cpu) and all(m.value > 0 for m in memory)


def test_system_metrics_can_be_turned_off(monkeypatch):
    from argus_tasks import system_metrics

    monkeypatch.setenv("ARGUS_SYSTEM_METRICS", "false")
    assert system_metrics.run_kwargs() == {}
    monkeypatch.setenv("ARGUS_SYSTEM_METRICS", "true")
    assert system_metrics.run_kwargs() == {"log_system_metrics": True}
