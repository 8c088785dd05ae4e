"""A model that cannot be fetched right now is a retryable failure; one that is gone is not.

Real failures on loopback: the registered version's artifacts live behind an HTTP artifact endpoint
(what ``mlflow server --serve-artifacts`` is to the pods) that answers 503, never answers, is not
listening, or answers 404. The registry itself (sqlite) answers.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from argus_tasks.contract import EXIT_PERMANENT, EXIT_TRANSIENT, PermanentStepError, TransientStepError
from argus_tasks.models.registry_adapter import Registry
from argus_tasks.models.segmenter_registry import load_version

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/experiments/1/models/m-1/artifacts"


class Endpoint:
    """An HTTP server on 127.0.0.1 that answers every request with ``status`` (or stalls when 0)."""

    def __init__(self, status: int):
        hold = threading.Event()
        self.hold = hold

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                if status == 0:
                    hold.wait(30)
                    return
                body = b'{"error_code": "TEMPORARILY_UNAVAILABLE"}' if status == 503 else b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    import mlflow

    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries would take minutes
    mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"sqlite:///{tmp_path_factory.mktemp('load-errors') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield Registry(mlflow.MlflowClient(tracking_uri=uri))
    finally:
        mlflow.set_tracking_uri(previous)
        mp.undo()


def _version_served_at(registry, port: int, name: str) -> str:
    registry.ensure_model(name)
    return registry.client.create_model_version(name, f"http://127.0.0.1:{port}{ARTIFACTS}").version


@pytest.mark.parametrize("status", [503, 502, 0], ids=["503", "502", "timeout"])
def test_an_artifact_store_that_is_unavailable_is_a_retryable_failure(registry, status):
    endpoint = Endpoint(status)
    name = f"argus-weather-fog-{status}"
    try:
        version = _version_served_at(registry, endpoint.port, name)
        started = time.time()
        with pytest.raises(TransientStepError) as err:
            load_version(registry, name, version)
    finally:
        endpoint.close()
    assert err.value.exit_code == EXIT_TRANSIENT == 75
    assert f"{name} v{version}" in str(err.value) and "retry" in str(err.value)
    assert time.time() - started < 30


def test_an_artifact_store_that_refuses_connections_is_a_retryable_failure(registry):
    version = _version_served_at(registry, closed_port(), "argus-downstream-segmenter")
    with pytest.raises(TransientStepError, match="argus-downstream-segmenter v1"):
        load_version(registry, "argus-downstream-segmenter", version)


def test_artifacts_that_are_gone_are_a_permanent_failure(registry):
    endpoint = Endpoint(404)
    try:
        version = _version_served_at(registry, endpoint.port, "argus-weather-snow")
        with pytest.raises(PermanentStepError) as err:
            load_version(registry, "argus-weather-snow", version)
    finally:
        endpoint.close()
    assert err.value.exit_code == EXIT_PERMANENT and "404" in str(err.value)


def test_a_version_that_is_not_registered_is_a_permanent_failure(registry):
    registry.ensure_model("argus-weather-night")
    with pytest.raises(PermanentStepError, match="version 7 is not in the MLflow registry"):
        load_version(registry, "argus-weather-night", 7)
