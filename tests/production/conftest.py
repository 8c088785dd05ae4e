"""Fixtures of the production-stack tests: the Compose specification schema and a real S3 endpoint
(moto in server mode) on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from . import support

# The Compose specification JSON schema ships inside the docker-compose 1.29.2 wheel
# (compose/config/compose_spec.json). It is fetched once with pip (PyPI only), checked against this
# hash and cached; no test reads it from the internet at run time otherwise.
COMPOSE_WHEEL = "docker_compose-1.29.2-py2.py3-none-any.whl"
COMPOSE_WHEEL_SHA256 = "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809"
CACHE = Path(os.environ.get("ARGUS_TEST_CACHE", Path.home() / ".cache" / "argus-tests"))


@pytest.fixture(scope="session")
def compose_schema() -> dict:
    wheel = CACHE / COMPOSE_WHEEL
    if not wheel.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "docker-compose==1.29.2", "--no-deps",
             "--only-binary=:all:", "--dest", str(CACHE)],
            capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0 or not wheel.exists():
            pytest.fail(
                "could not fetch the Compose specification schema (pip download docker-compose==1.29.2 "
                f"--no-deps failed; PyPI must be reachable once, or put {COMPOSE_WHEEL} in {CACHE}):\n"
                + proc.stderr[-2000:]
            )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == COMPOSE_WHEEL_SHA256, f"{wheel} has sha256 {digest}, expected {COMPOSE_WHEEL_SHA256}"
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read("compose/config/compose_spec.json"))


# ---- a real S3 endpoint -----------------------------------------------------------------------------
S3_KEY, S3_SECRET, S3_REGION = "argus-test-key", "argus-test-secret", "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (real HTTP on a free port), for the whole session."""
    from moto.server import ThreadedMotoServer

    port = support.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        support.wait_for_http(url + "/moto-api/", 30, "moto S3 server")
        yield url
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """The production S3 settings, pointed at the loopback endpoint: only endpoint and credentials
    differ from a deployment."""
    values = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_REGION": S3_REGION,
    }
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def s3_bucket(s3_env, request):
    """A fresh bucket on the endpoint; its name."""
    import boto3

    name = "argus-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name=S3_REGION)
    client.create_bucket(Bucket=name)
    yield name
