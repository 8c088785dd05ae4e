"""MLflow stopping mid-step is a retryable failure naming the tracking URI, not a crash.

The outage is real: the client talks to a loopback port where nothing listens.
"""

from __future__ import annotations

import json
import socket

import pytest

from argus_tasks.contract import EXIT_TRANSIENT
from argus_tasks.tracking import outage_error


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_mid_step_becomes_a_retryable_error_naming_the_uri(monkeypatch):
    import mlflow

    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(Exception) as caught:
        mlflow.MlflowClient(tracking_uri=uri).get_run("0" * 32)
    err = outage_error(caught.value)
    assert err is not None and err.exit_code == EXIT_TRANSIENT
    assert uri in str(err) and "retried" in str(err)


def test_other_errors_are_not_taken_for_an_outage():
    from mlflow.exceptions import MlflowException

    assert outage_error(MlflowException("RESOURCE_DOES_NOT_EXIST: run 'x' not found")) is None
    assert outage_error(ValueError("Connection refused by the user's own code")) is None
    try:
        try:
            raise MlflowException("API request to http://h/api failed with exception Max retries exceeded")
        except MlflowException as inner:
            raise RuntimeError("logging the sample grid failed") from inner
    except RuntimeError as outer:
        assert outage_error(outer) is not None, "the cause chain is followed"


STEP_THAT_LOSES_MLFLOW = '''
import mlflow

def add_arguments(parser):
    pass

def run(args, ctx):
    mlflow.MlflowClient().get_run("0" * 32)  # the tracking server is gone
'''


def test_the_cli_turns_an_outage_inside_a_step_into_exit_75_and_records_it(monkeypatch, tmp_path):
    from argus_tasks import cli

    (tmp_path / "argus_outage_step.py").write_text(STEP_THAT_LOSES_MLFLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "outage", ("argus_outage_step", True))
    uri = f"http://127.0.0.1:{_closed_port()}"
    for key, value in {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "ARGUS_STORE": str(tmp_path / "store"),
                       "ARGUS_DAG_ID": "d", "ARGUS_RUN_ID": "r",
                       "ARGUS_XCOM_RETURN": str(tmp_path / "return.json")}.items():
        monkeypatch.setenv(key, value)
    # in a step process the env is the tracking URI; in this test process an earlier test may have set one
    # with mlflow.set_tracking_uri, which would win over the env: start from the env, as a step does
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    assert cli.main(["outage"]) == EXIT_TRANSIENT
    failure = json.loads((tmp_path / "store" / "runs" / "d" / "r" / "outage" / "failure.json").read_text())
    assert failure["exit_code"] == EXIT_TRANSIENT and failure["error"] == "TransientStepError"
    assert uri in failure["message"]
