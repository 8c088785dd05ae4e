"""The metrics stack of docker-compose (profile ``metrics``) as local processes, for tests/production/test_metrics.py.

collectd (statsd receiver, docker/metrics/collectd.conf) and Prometheus (docker/prometheus/prometheus.yml) from
Debian's packages, on free loopback ports, with the committed configs and only ports, paths and intervals
replaced. Missing packages are installed (``apt-get``, as root: CI and the dev machines are); a machine where
that fails fails the test with apt's reason, it never skips. The Python ``statsd`` client Airflow needs is the
pin of requirements.txt: from the venv, or installed into the test cache when the venv predates the pin.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from . import support

DEBIAN_PACKAGES = ("collectd-core", "libprotobuf-c1", "libmicrohttpd12", "prometheus")
COLLECTD_CONF = support.REPO / "docker" / "metrics" / "collectd.conf"
PROMETHEUS_YML = support.REPO / "docker" / "prometheus" / "prometheus.yml"
CACHE = Path(os.environ.get("ARGUS_TEST_CACHE", Path.home() / ".cache" / "argus-tests"))


def missing_packages(names=DEBIAN_PACKAGES) -> list[str]:
    missing = []
    for name in names:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
        if proc.returncode != 0 or "install ok installed" not in proc.stdout:
            missing.append(name)
    return missing


def ensure_debian_packages() -> None:
    """Install what the stack needs from Debian; fail (never skip) with apt's own words when that fails."""
    missing = missing_packages()
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"the metrics test needs Debian's {' '.join(missing)} and `{' '.join(cmd)}` failed "
                        f"({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}. Install them as root "
                        "(.ci/run does) and rerun.")
    still = missing_packages()
    if still:
        pytest.fail(f"apt-get installed nothing for {still}")


def statsd_pythonpath() -> str:
    """A folder to put on PYTHONPATH so that Airflow can import ``statsd`` ("" when the venv has it)."""
    if importlib.util.find_spec("statsd") is not None:
        return ""
    pin = support.read_pins(support.REPO / "requirements.txt").get("statsd")
    assert pin, "requirements.txt pins no statsd (Airflow's statsd client)"
    target = CACHE / f"pylib-statsd-{pin}"
    if not (target / "statsd").is_dir():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                               f"statsd=={pin}"], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"pip could not install statsd=={pin} for the metrics test: {proc.stderr[-2000:]}")
    return str(target)


def collectd_config(statsd_port: int, metrics_port: int, workdir: Path, interval_s: int = 2) -> str:
    """docker/metrics/collectd.conf on loopback ports, with a short interval and paths in ``workdir``."""
    text = COLLECTD_CONF.read_text()
    subs = [(r'Host "0\.0\.0\.0"', 'Host "127.0.0.1"'), (r'Port "8125"', f'Port "{statsd_port}"'),
            (r'Port "9103"', f'Port "{metrics_port}"'), (r"(?m)^Interval \d+", f"Interval {interval_s}"),
            (r'BaseDir "[^"]*"', f'BaseDir "{workdir}"'), (r'PIDFile "[^"]*"', f'PIDFile "{workdir / "collectd.pid"}"')]
    for pattern, new in subs:
        text, n = re.subn(pattern, new, text)
        assert n == 1, f"{COLLECTD_CONF}: expected one {pattern!r}"
    return text


def prometheus_config(target: str, scrape_s: int = 1) -> str:
    """docker/prometheus/prometheus.yml scraping ``target`` every ``scrape_s`` seconds; the mapping as committed."""
    doc = yaml.safe_load(PROMETHEUS_YML.read_text())
    doc["global"]["scrape_interval"] = f"{scrape_s}s"
    (job,) = doc["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    return yaml.safe_dump(doc, sort_keys=False)


class Daemon:
    """A process of the stack: its own session, its log in a file, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], log: Path):
        self.name, self.log = name, log
        self.handle = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.handle.close()


def start_stack(workdir: Path) -> dict:
    """collectd and Prometheus on free loopback ports; ``{"statsd_port", "prometheus", "daemons"}``."""
    workdir.mkdir(parents=True, exist_ok=True)
    statsd_port, metrics_port, prom_port = support.free_port(), support.free_port(), support.free_port()
    conf = workdir / "collectd.conf"
    conf.write_text(collectd_config(statsd_port, metrics_port, workdir))
    daemons = [Daemon("collectd", [shutil.which("collectd") or "/usr/sbin/collectd", "-f", "-C", str(conf)],
                      workdir / "collectd.log")]
    try:
        support.wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics", 30, "collectd write_prometheus",
                              daemons[0].log, daemons[0].proc)
        prom_yml = workdir / "prometheus.yml"
        prom_yml.write_text(prometheus_config(f"127.0.0.1:{metrics_port}"))
        daemons.append(Daemon("prometheus", [shutil.which("prometheus") or "/usr/bin/prometheus",
                                             f"--config.file={prom_yml}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                             f"--web.listen-address=127.0.0.1:{prom_port}"], workdir / "prometheus.log"))
        url = f"http://127.0.0.1:{prom_port}"
        support.wait_for_http(url + "/-/ready", 60, "Prometheus", daemons[1].log, daemons[1].proc)
    except BaseException:
        for d in daemons:
            d.stop()
        raise
    return {"statsd_port": statsd_port, "prometheus": url, "daemons": daemons}


def query(prometheus: str, promql: str) -> list[dict]:
    """The instant vector of ``promql`` (Prometheus HTTP API)."""
    import json
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{prometheus}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for_series(prometheus: str, promql: str, timeout_s: float = 30) -> list[dict]:
    deadline = time.time() + timeout_s
    while True:
        result = query(prometheus, promql)
        if result or time.time() > deadline:
            return result
        time.sleep(1)
