"""Each generate shard gets an MLflow run with system metrics; without MLflow the shard is generated all the same."""

from __future__ import annotations

import time

import mlflow

from argus_tasks.steps import generate as generate_step

from .test_generate import env, factory, source  # noqa: F401 - the fixtures of the generate tests


def test_a_shard_logs_system_metrics_on_its_mlflow_run(env, factory, monkeypatch):  # noqa: F811
    run_id, run, _, gen = env
    monkeypatch.setenv("ARGUS_SYSTEM_METRICS", "true")
    monkeypatch.setenv("ARGUS_SYSTEM_METRICS_INTERVAL_S", "0.5")
    make = generate_step.default_runner_factory

    def slow(path, device, seed):  # long enough for a few samples
        runner = make(path, device, seed)

        def paced(*args, **kwargs):
            time.sleep(0.6)
            return runner(*args, **kwargs)
        return paced

    monkeypatch.setattr(generate_step, "default_runner_factory", slow)
    rc, result = gen("--shard-id", "fog-0000", "--batch-size", "1")
    assert rc == 0, run.read_bytes("generate/fog-0000/failure.json")
    client = mlflow.MlflowClient()
    (mrun,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`argus.run_id` = '{run_id}' and tags.`argus.shard_id` = 'fog-0000'")
    assert mrun.data.tags["argus.condition"] == "fog" and mrun.info.status == "FINISHED"
    assert mrun.data.metrics["n_written"] == result["n_written"] > 0
    assert client.get_metric_history(mrun.info.run_id, "system/cpu_utilization_percentage")


def test_a_shard_is_generated_when_mlflow_is_down(env, factory, monkeypatch):  # noqa: F811
    _, run, _, gen = env
    monkeypatch.setenv("ARGUS_SYSTEM_METRICS", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    started = time.time()
    rc, result = gen("--shard-id", "fog-0000")
    assert rc == 0, run.read_bytes("generate/fog-0000/failure.json")
    assert result["n_written"] > 0 and time.time() - started < 60
