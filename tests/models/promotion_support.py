"""Helpers of the promotion tests: a live MLflow server, a fault/gating proxy in front of it, and a
run folder that is ready for ``argus-task promote`` (validated data, a train result and an
evaluation whose decision is a clear "promote").

The evaluation is written directly (evaluate itself is covered by tests/models/test_steps.py): the
challenger's generated frames look like the real adverse frames to the judge, the champion's do
not, so any sound decision policy promotes the challenger over that champion.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from argus_tasks.data.fixtures import build_validated_run
from argus_tasks.store import RunStore

N_FRAMES, N_CLASSES, N_FEATURES = 12, 4, 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_dataset(root: Path) -> Path:
    """A few 64 px frames: all that promote reads of the data is the accepted manifest."""
    from argus_tasks.data.generate import generate_dataset

    end = datetime(2026, 3, 1, tzinfo=UTC)
    generate_dataset(root, size=64, counts={"clear": {"train": 2, "val": 1, "test": 1}, "fog": {"val": 1, "test": 1}},
                     seed=3, start=end - timedelta(days=7), end=end, workers=1)
    return Path(root)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_promotion_inputs(run: RunStore, condition: str, name: str, challenger: str, champion: str | None,
                           eval_frames_sha256: str = "f" * 64, seed: int = 0) -> None:
    """``train/<c>/result.json`` naming ``challenger`` and an evaluation that compared it with ``champion``."""
    rng = np.random.default_rng(seed)
    eye = np.eye(N_CLASSES) * 100.0

    def conf(noise):  # per-frame confusion: mostly right, ``noise`` counts spread off the diagonal
        return np.stack([eye + noise * (1 - np.eye(N_CLASSES)) * rng.uniform(0.8, 1.2) for _ in range(N_FRAMES)])

    real = {"conf": conf(2.0), "features": rng.normal(0, 1, (N_FRAMES, N_FEATURES)),
            "sequence": np.repeat(np.arange(N_FRAMES // 3), 3)}
    out = f"evaluate/{condition}"
    run.write_bytes(f"{out}/records/real.npz", _npz(**real))
    good = {"kid": 0.001, "classwise_gap": 0.01, "aggregate_gap": 0.01, "label_preservation": 0.95}
    bad = {"kid": 0.08, "classwise_gap": 0.40, "aggregate_gap": 0.30, "label_preservation": 0.60}
    sanity = {"differs_from_input": True, "finite": True, "not_blank": True}
    candidates = {"challenger": (f"{name} v{challenger}", challenger, good, 2.0, 0.0)}
    if champion is not None:
        candidates["champion"] = (f"{name} v{champion}", champion, bad, 60.0, 4.0)
    doc = {"condition": condition, "model_name": name, "challenger_version": challenger,
           "champion_version": champion, "eval_frames_sha256": eval_frames_sha256, "model_config": "tiny",
           "candidates": {}}
    for key, (label, version, metrics, noise, shift) in candidates.items():
        sequence = np.repeat(np.arange(N_FRAMES // 3), 3)
        run.write_bytes(f"{out}/records/{key}.npz", _npz(
            conf=conf(noise), features=real["features"] + shift + rng.normal(0, 0.05, (N_FRAMES, N_FEATURES)),
            sequence=sequence))
        doc["candidates"][key] = {"name": label, "version": version, "metrics": metrics, "sanity": sanity,
                                  "records": f"records/{key}.npz", "content_hash": f"hash-{name}-{version}",
                                  "learned": True}
    run.write_json(f"{out}/metrics.json", doc)
    run.write_json(f"train/{condition}/result.json", {"model_name": name, "model_version": challenger,
                                                      "model_config": "tiny", "condition": condition})


def promotion_run(template: Path, store: Path, dag_id: str, run_id: str, condition: str, name: str,
                  challenger: str, champion: str | None, **kwargs) -> RunStore:
    run = build_validated_run(template, store, dag_id, run_id)
    write_promotion_inputs(run, condition, name, challenger, champion, **kwargs)
    return run


# ---- a live MLflow server -------------------------------------------------------------------------
@contextlib.contextmanager
def mlflow_server(root: Path, timeout_s: float = 120.0):
    """``mlflow server`` on a loopback port, sqlite backend and artifacts under ``root``; yields its URL."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(root / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, env={**_clean_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(root / 'mlflow-server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ARGUS_"))}


# ---- a proxy that forwards to the server, except where a rule says otherwise --------------------
# A rule sees (method, path, body) and returns None (forward), ("status", code, body) (answer that
# instead), ("reset",) (reset the connection) or ("after", fn) (forward, call fn(), then answer).
Rule = Callable[[str, str, bytes], tuple | None]


class Proxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, bytes]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.seen.append((self.command, self.path, body))
                action = None
                for rule in list(proxy.rules):
                    action = rule(self.command, self.path, body)
                    if action is not None:
                        break
                if action and action[0] == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if action and action[0] == "status":
                    self._answer(action[1], action[2], {"Content-Type": "application/json" if action[2][:1] == b"{"
                                                        else "text/plain"})
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if action and action[0] == "after":  # before the client hears the answer
                    action[1]()
                self._answer(resp.status, data, {k: v for k, v in resp.getheaders()
                                                 if k.lower() not in ("transfer-encoding", "connection",
                                                                      "content-length")})

            def _answer(self, status, data, headers):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def is_alias_read(method: str, path: str, name: str) -> bool:
    return method == "GET" and "/registered-models/alias" in path and f"name={name}&" in path + "&"


def is_alias_move(method: str, path: str, body: bytes, name: str) -> bool:
    return method == "POST" and path.endswith("/registered-models/alias") and json.loads(body or b"{}").get(
        "name") == name
