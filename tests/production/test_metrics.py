"""Airflow's metrics reach Prometheus, and the Grafana dashboard asks for metrics that exist.

Live (``integration``): collectd's statsd receiver and Prometheus from Debian, with the committed configs
(tests/production/metrics_stack.py), then ``airflow dags test`` of a two-task DAG in a subprocess with
Airflow's own statsd settings (``AIRFLOW__METRICS__STATSD_ON``...). The task metrics must come out of the
Prometheus HTTP API under the mapped names: finished and started task instances by DAG, task and state,
operator successes, task durations; and none of collectd's raw series is left.

Static: every query of docker/grafana/dashboards/argus-pipelines.json names only metrics the mapping of
docker/prometheus/prometheus.yml produces, against the provisioned data source.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from . import metrics_stack, support

DASHBOARD = support.REPO / "docker" / "grafana" / "dashboards" / "argus-pipelines.json"
DATASOURCES = support.REPO / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
PROBE_DAG = '''
from datetime import datetime
from airflow.sdk import DAG, task

with DAG("argus_metrics_probe", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    @task
    def extract():
        return 20

    @task
    def load(x):
        return x + 1

    load(extract())
'''


def mapped_names() -> set[str]:
    """The metric names the relabelling of docker/prometheus/prometheus.yml can produce."""
    (job,) = yaml.safe_load(metrics_stack.PROMETHEUS_YML.read_text())["scrape_configs"]
    names = set()
    for rule in job["metric_relabel_configs"]:
        if rule.get("target_label") != "__name__":
            continue
        new = rule["replacement"]
        alternatives = re.search(r"\((\w+(?:\|\w+)+)\)", rule["regex"].split(";", 1)[1])
        if "${1}" in new:
            assert alternatives, f"{new}: its ${{1}} must come from an alternation"
            names |= {new.replace("${1}", alt) for alt in alternatives.group(1).split("|")}
        else:
            names.add(new)
    return names


def dashboard_metrics() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs, "the dashboard has no queries"
    return {m for e in exprs for m in re.findall(r"\b(airflow_[a-z_]+)\b", e)}


def test_the_dashboard_parses_and_queries_only_mapped_metrics():
    dash = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("finished", "duration", "gpu-pool occupancy", "queue waits"):
        assert topic in titles, topic
    produced = mapped_names()
    assert dashboard_metrics() <= produced, f"not produced by the mapping: {dashboard_metrics() - produced}"
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert {t["datasource"]["uid"] for t in panel["targets"]} == {source["uid"]}, panel["title"]


def test_the_mapping_names_the_metrics_the_pipeline_needs():
    assert {"airflow_ti_finish_total", "airflow_task_duration_seconds", "airflow_pool_slots",
            "airflow_task_queued_duration_seconds", "airflow_dagrun_duration_seconds"} <= mapped_names()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    metrics_stack.ensure_debian_packages()
    stack = metrics_stack.start_stack(tmp_path_factory.mktemp("metrics-stack"))
    yield stack
    for daemon in stack["daemons"]:
        daemon.stop()


def airflow_env(home, statsd_port: int) -> dict:
    dags, plugins = home / "dags", home / "plugins"
    dags.mkdir(parents=True)
    plugins.mkdir()
    (dags / "argus_metrics_probe.py").write_text(PROBE_DAG)
    extra = metrics_stack.statsd_pythonpath()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # what docker-compose sets (with host statsd, port 8125) when ARGUS_METRICS=True
        "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "PYTHONPATH": os.pathsep.join(p for p in (extra, env.get("PYTHONPATH", "")) if p),
    })
    return env


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_task_metrics_of_a_dag_run_reach_prometheus(stack, tmp_path):
    env = airflow_env(tmp_path / "airflow", stack["statsd_port"])
    airflow = [sys.executable, "-m", "airflow"]
    for cmd in (["db", "migrate"], ["dags", "test", "argus_metrics_probe"]):
        proc = subprocess.run([*airflow, *cmd], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"airflow {' '.join(cmd)}: {(proc.stdout + proc.stderr)[-3000:]}"
    prom = stack["prometheus"]
    finished = metrics_stack.wait_for_series(
        prom, 'airflow_ti_finish_total{dag_id="argus_metrics_probe", state="success"}')
    assert {r["metric"]["task_id"] for r in finished} == {"extract", "load"}, finished
    assert all(float(r["value"][1]) >= 1 for r in finished)
    started = metrics_stack.query(prom, 'airflow_ti_start_total{dag_id="argus_metrics_probe"}')
    assert {r["metric"]["task_id"] for r in started} == {"extract", "load"}
    assert metrics_stack.query(prom, 'airflow_ti_successes_total >= 2')
    assert metrics_stack.query(prom, 'airflow_operator_successes_total{operator=~".*PythonDecoratedOperator"}')
    durations = metrics_stack.wait_for_series(
        prom, 'max_over_time(airflow_task_duration_seconds{dag_id="argus_metrics_probe", stat="average"}[10m]) > 0')
    assert {r["metric"]["task_id"] for r in durations} == {"extract", "load"}, durations
    assert all(float(r["value"][1]) < 300 for r in durations), "durations are in seconds"
    assert metrics_stack.query(prom, '{__name__=~"collectd_.*"}') == [], "unmapped collectd series are dropped"
    assert metrics_stack.query(prom, 'count({statsd!=""})') == [], "the statsd label is dropped after mapping"


def test_compose_wires_airflow_statsd_prometheus_and_grafana_together():
    compose = yaml.safe_load((support.REPO / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert services["statsd"]["profiles"] == ["metrics"] == services["prometheus"]["profiles"]
    assert services["grafana"]["profiles"] == ["grafana"]
    env = compose["x-airflow-common"]["environment"]
    collectd = metrics_stack.COLLECTD_CONF.read_text()
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd"
    assert f'Port "{env["AIRFLOW__METRICS__STATSD_PORT"]}"' in collectd and env["AIRFLOW__METRICS__STATSD_PREFIX"] == "airflow"
    (job,) = yaml.safe_load(metrics_stack.PROMETHEUS_YML.read_text())["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "statsd" and f'Port "{port}"' in collectd
    assert "./docker/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    grafana = services["grafana"]["volumes"]
    assert "./docker/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./docker/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    assert yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_statsd_image_lints_clean():
    dockerfile = support.REPO / "docker" / "metrics" / "statsd.Dockerfile"
    proc = subprocess.run([str(support.VENV_BIN / "hadolint"), "--failure-threshold", "style", str(dockerfile)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
