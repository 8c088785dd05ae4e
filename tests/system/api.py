"""A small client of the Airflow 3 REST API (``/api/v2``) with a JWT from the simple auth manager."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

TERMINAL_RUN_STATES = {"success", "failed"}


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, response: requests.Response):
        self.status = response.status_code
        self.body = response.text
        try:
            self.json = response.json()
        except ValueError:
            self.json = None
        super().__init__(f"{method} {path} -> HTTP {self.status}: {self.body[:1500]}")


def _q(value: str) -> str:
    return quote(str(value), safe="")


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.http = requests.Session()
        self._token: str | None = None

    # ---- auth -----------------------------------------------------------------------------------
    def token(self, refresh: bool = False) -> str:
        if self._token is None or refresh:
            resp = self.http.post(f"{self.base_url}/auth/token", json={"username": self.username,
                                                                       "password": self.password},
                                  timeout=self.timeout_s)
            if resp.status_code not in (200, 201):
                raise ApiError("POST", "/auth/token", resp)
            self._token = resp.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, expect=(200,), authenticated: bool = True, **kwargs) -> Any:
        url = f"{self.base_url}/api/v2{path}"
        for attempt in (1, 2):
            headers = dict(kwargs.pop("headers", {}) or {})
            if authenticated:
                headers["Authorization"] = f"Bearer {self.token(refresh=attempt == 2)}"
            resp = self.http.request(method, url, headers=headers, timeout=self.timeout_s, **kwargs)
            if resp.status_code == 401 and authenticated and attempt == 1:
                continue
            break
        if resp.status_code not in expect:
            raise ApiError(method, path, resp)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    # ---- DAGs and runs ----------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict:
        return self.get(f"/dags/{_q(dag_id)}")

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        return self.request("PATCH", f"/dags/{_q(dag_id)}", json={"is_paused": paused})

    def import_errors(self) -> list[dict]:
        return self.get("/importErrors")["import_errors"]

    def trigger(self, dag_id: str, conf: dict | None = None, *, run_id: str | None = None,
                logical_date: datetime | None = None, data_interval: tuple[datetime, datetime] | None = None,
                note: str | None = None, expect=(200,)) -> dict:
        body: dict[str, Any] = {"conf": conf or {}, "logical_date": logical_date.isoformat() if logical_date else None}
        if run_id:
            body["dag_run_id"] = run_id
        if data_interval:
            body["data_interval_start"], body["data_interval_end"] = (d.isoformat() for d in data_interval)
        if note:
            body["note"] = note
        return self.request("POST", f"/dags/{_q(dag_id)}/dagRuns", json=body, expect=expect)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def runs(self, dag_id: str, **params) -> list[dict]:
        params.setdefault("limit", 100)
        params.setdefault("order_by", "run_after")
        return self.get(f"/dags/{_q(dag_id)}/dagRuns", params=params)["dag_runs"]

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> dict:
        return self.request("PATCH", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}", json={"state": state})

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float, states=TERMINAL_RUN_STATES,
                 poll_s: float = 2.0, on_poll=None) -> dict:
        deadline = time.time() + timeout_s
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in states:
                return run
            if on_poll is not None:
                on_poll(run)
            if time.time() >= deadline:
                summary = ", ".join(f"{t['task_id']}[{t.get('rendered_map_index') or t['map_index']}]={t['state']}"
                                    for t in self.task_instances(dag_id, run_id))
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout_s:.0f}s; tasks: {summary}")
            time.sleep(poll_s)

    def backfills(self, dag_id: str) -> list[dict]:
        return self.get("/backfills", params={"dag_id": dag_id})["backfills"]

    # ---- task instances ----------------------------------------------------------------------------
    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        out = self.get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", params={"limit": 200})
        return out["task_instances"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
        base = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
        return self.get(base if map_index < 0 else f"{base}/{map_index}")

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        base = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
        path = f"{base}/tries" if map_index < 0 else f"{base}/{map_index}/tries"
        return self.get(path)["task_instances"]

    def states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """``{"task_id" or "task_id[condition]": state}`` of a run."""
        out = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"]
            if ti["map_index"] >= 0:
                key += f"[{ti.get('rendered_map_index') or ti['map_index']}]"
            out[key] = ti["state"]
        return out

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
        out = self.get(path, params={"map_index": map_index, "full_content": "true"},
                       headers={"Accept": "application/json"})
        content = out.get("content")
        if isinstance(content, list):
            lines = []
            for item in content:
                if isinstance(item, dict):
                    lines.append(" ".join(str(item.get(k, "")) for k in ("timestamp", "level", "event") if item.get(k)))
                else:
                    lines.append(str(item))
            return "\n".join(lines)
        return str(content)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1):
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}"
        out = self.get(path, params={"map_index": map_index, "deserialize": "true", "stringify": "false"})
        return out["value"]

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], *, only_failed: bool = False,
              include_downstream: bool = False) -> dict:
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": only_failed,
                "reset_dag_runs": True, "include_downstream": include_downstream, "include_upstream": False}
        return self.request("POST", f"/dags/{_q(dag_id)}/clearTaskInstances", json=body)

    # ---- human in the loop --------------------------------------------------------------------------
    def hitl_details(self, dag_id: str, run_id: str | None = None) -> list[dict]:
        params = {"dag_id": dag_id}
        if run_id:
            params["dag_run_id"] = run_id
        return self.get("/dags/~/dagRuns/~/hitlDetails", params=params)["hitl_details"]

    def respond(self, dag_id: str, run_id: str, task_id: str, map_index: int, option: str) -> dict:
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/{map_index}/hitlDetails"
        return self.request("PATCH", path, json={"chosen_options": [option], "params_input": {}})
