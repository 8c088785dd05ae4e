"""How the registry adapter classifies what the MLflow registry (or what sits in front of it) answers.

The answers are real HTTP answers from a loopback server standing in for a proxy or ingress in
front of MLflow: a rollout's 404 page, a 503, a reset connection, a timeout, a refusal.
"""

from __future__ import annotations

import json
import time

import pytest

from argus_tasks.contract import EXIT_PERMANENT, EXIT_TRANSIENT, PermanentStepError, TransientStepError

from .promotion_support import Proxy

NAME = "argus-weather-fog"


@pytest.fixture
def answering(monkeypatch):
    """A loopback 'registry' whose every answer comes from the test's rule (no upstream)."""
    import mlflow

    from argus_tasks.models.registry_adapter import Registry

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    servers = []

    def make(rule):
        proxy = Proxy("127.0.0.1:9")  # nothing is forwarded: the rule answers everything
        proxy.rules.append(rule)
        servers.append(proxy)
        return Registry(mlflow.MlflowClient(tracking_uri=proxy.url)), proxy.url

    yield make
    for proxy in servers:
        proxy.close()


def _json(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


def test_a_404_page_from_an_ingress_is_not_no_champion(answering):
    registry, url = answering(lambda m, p, b: ("status", 404, b"404 page not found"))
    with pytest.raises(TransientStepError) as caught:
        registry.alias(NAME, "champion")
    assert f"the lookup of {NAME}@champion" in str(caught.value) and url in str(caught.value)


def test_a_missing_alias_reads_as_none(answering):
    registry, _ = answering(lambda m, p, b: ("status", 400, _json(
        "INVALID_PARAMETER_VALUE", "Registered model alias champion not found.")))
    assert registry.alias(NAME, "champion") is None


@pytest.mark.parametrize("answer, what", [
    (("status", 503, b"upstream connect error or disconnect/reset before headers"), "a 503"),
    (("reset",), "a connection reset"),
])
def test_an_outage_during_an_alias_move_or_a_tag_write_is_retryable(answering, answer, what):
    registry, url = answering(lambda m, p, b: answer)
    with pytest.raises(TransientStepError) as move:
        registry.set_alias(NAME, "champion", "3")
    with pytest.raises(TransientStepError) as tag:
        registry.set_tags(NAME, "3", {"argus.decision": "promoted"})
    assert move.value.exit_code == tag.value.exit_code == EXIT_TRANSIENT, what
    assert f"moving {NAME}@champion to v3" in str(move.value) and url in str(move.value)
    assert f"tagging {NAME} v3" in str(tag.value)


def test_a_timeout_during_an_alias_move_is_retryable(answering):
    def slow(method, path, body):
        time.sleep(2.5)  # > MLFLOW_HTTP_REQUEST_TIMEOUT
        return ("status", 200, b"{}")

    registry, _ = answering(slow)
    with pytest.raises(TransientStepError) as caught:
        registry.set_alias(NAME, "champion", "3")
    assert "timed out" in str(caught.value).lower() or "timeout" in str(caught.value).lower()


def test_a_refusal_is_permanent_and_says_what_to_check(answering):
    registry, url = answering(lambda m, p, b: ("status", 403, _json("PERMISSION_DENIED", "user argus may not read")))
    with pytest.raises(PermanentStepError) as caught:
        registry.alias(NAME, "champion")
    assert caught.value.exit_code == EXIT_PERMANENT
    assert "PERMISSION_DENIED" in str(caught.value) and "credentials" in str(caught.value) and url in str(caught.value)
