"""GPU time and estimated cost of each step: pool slots x duration, recorded by the CLI around every step.

The runtimes tell a step the GPU pool slots it holds (``ARGUS_GPU_SLOTS``: its ``gpus``, 0 for CPU steps) and
the deployment's price of a GPU-hour (``ARGUS_GPU_HOUR_PRICE``, unset: no cost figure). Every try of a step
adds a record to ``<step folder>/cost.json`` in the run store (failed tries too: they held the GPU as well);
a step that succeeds also logs the totals over its tries to its MLflow run as metrics ``gpu_seconds``,
``gpu_hours``, ``gpu_slots``, ``step_seconds`` and ``gpu_cost``. The duration is the step process's wall time:
the Airflow slot is also held while the task is queued and its process or pod starts (scheduler overhead).
Recording never fails a step.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)
ENV_GPU_SLOTS = "ARGUS_GPU_SLOTS"
ENV_GPU_HOUR_PRICE = "ARGUS_GPU_HOUR_PRICE"
COST_FILE = "cost.json"


def gpu_slots(environ=None) -> int:
    env = os.environ if environ is None else environ
    raw = str(env.get(ENV_GPU_SLOTS, "") or "0").strip()
    return int(raw) if raw.isdigit() else 0


def gpu_hour_price(environ=None) -> float | None:
    """The price of one GPU-hour, or None when the deployment sets none (or something that is not a number)."""
    env = os.environ if environ is None else environ
    raw = str(env.get(ENV_GPU_HOUR_PRICE, "") or "").strip()
    try:
        price = float(raw) if raw else None
    except ValueError:
        log.warning("%s=%r is not a number: no cost estimate", ENV_GPU_HOUR_PRICE, raw)
        return None
    return price if price is not None and price >= 0 else None


def cost_of(gpu_seconds: float, price: float | None) -> float | None:
    return None if price is None else round(gpu_seconds / 3600.0 * price, 6)


def totals(tries: list[dict], price: float | None) -> dict:
    """What a step cost over its tries: seconds, GPU-seconds, GPU-hours and the cost at ``price``."""
    seconds = sum(t["seconds"] for t in tries)
    gpu_seconds = sum(t["gpu_seconds"] for t in tries)
    return {"n_tries": len(tries), "step_seconds": round(seconds, 3), "gpu_seconds": round(gpu_seconds, 3),
            "gpu_hours": round(gpu_seconds / 3600.0, 6), "gpu_cost": cost_of(gpu_seconds, price),
            "gpu_hour_price": price}


def record(ctx, where: str, step: str, condition: str | None, started: float, outcome: str,
           ended: float | None = None) -> dict:
    """Add this try to ``<where>/cost.json``; on success, log the step's totals to its MLflow run.

    Returns the keys added to the step's result (``gpu_slots``, ``gpu_seconds``, ``gpu_cost``...), {} when
    nothing could be recorded.
    """
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 records for the pod (its slots are all the GPUs)
        return {}
    try:
        ended = time.time() if ended is None else ended
        slots, price = gpu_slots(), gpu_hour_price()
        seconds = max(0.0, ended - started)
        path = f"{where}/{COST_FILE}"
        doc = ctx.run.read_json(path) if ctx.run.exists(path) else {"step": where, "tries": []}
        tries = [t for t in doc.get("tries", []) if t.get("try_number") != ctx.try_number]
        tries.append({"try_number": ctx.try_number, "outcome": outcome, "gpu_slots": slots,
                      "seconds": round(seconds, 3), "gpu_seconds": round(slots * seconds, 3),
                      "started": started, "ended": ended})
        tries.sort(key=lambda t: t["try_number"])
        doc = {"step": where, "gpu_slots": slots, "tries": tries, **totals(tries, price)}
        ctx.run.write_json(path, doc)
    except Exception as exc:  # noqa: BLE001 - the store may be what failed; the step's outcome stands
        log.warning("could not record the GPU time of %s: %s", where, exc)
        return {}
    summary = {k: doc[k] for k in ("gpu_slots", "gpu_seconds", "gpu_hours", "gpu_cost")}
    log.info("step %s: %s GPU slot(s) x %.1f s = %.1f GPU-seconds this try, %.1f over %d try(s)%s", where, slots,
             seconds, slots * seconds, doc["gpu_seconds"], doc["n_tries"],
             f", estimated cost {doc['gpu_cost']:.4f} at {price}/GPU-hour" if price is not None else "")
    if outcome == "succeeded" and slots:
        _log_to_mlflow(ctx, step, condition, doc)
    return summary


def _log_to_mlflow(ctx, step: str, condition: str | None, doc: dict) -> None:
    """The totals as metrics of the step's MLflow run (the newest of this Airflow run, step and condition)."""
    try:
        import mlflow
        from mlflow.entities import Metric

        from argus_tasks.tracking import experiment_name, find_run, tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(experiment_name(ctx))
        tags = {"argus.dag_id": ctx.dag_id, "argus.run_id": ctx.run_id, "argus.step": step}
        if condition:
            tags["argus.condition"] = condition
        if ctx.map_index >= 0 and not condition:  # shards of one step: the run of this map index
            tags["argus.map_index"] = str(ctx.map_index)
        mrun = find_run(client, exp.experiment_id, tags) if exp is not None else None
        if mrun is None:
            log.info("step %s has no MLflow run (nothing logged to MLflow): its GPU time is in the run store",
                     step)
            return
        now = int(time.time() * 1000)
        values = {k: doc[k] for k in ("gpu_seconds", "gpu_hours", "gpu_slots", "step_seconds", "gpu_cost")
                  if doc[k] is not None}
        # step = the try number: the latest value (what searches read) is the total over all tries
        client.log_batch(mrun.info.run_id, metrics=[Metric(k, float(v), now, ctx.try_number)
                                                    for k, v in values.items()])
    except Exception as exc:  # noqa: BLE001 - MLflow down: the store keeps the record, the report reads it
        log.warning("could not log the GPU time of %s to MLflow: %s", step, exc)


def collect(run, wheres: list[str]) -> list[dict]:
    """The cost records of the steps ``wheres`` of a run (those that have one), in that order."""
    out = []
    for where in wheres:
        path = f"{where}/{COST_FILE}"
        try:
            if run.exists(path):
                out.append(run.read_json(path))
        except Exception as exc:  # noqa: BLE001 - a report shows what it can read
            log.warning("could not read %s: %s", path, exc)
    return out


def run_totals(records: list[dict]) -> dict:
    """The run's GPU-seconds, GPU-hours and cost over the ``records`` of its steps."""
    prices = {r.get("gpu_hour_price") for r in records} - {None}
    price = prices.pop() if len(prices) == 1 else None
    gpu_seconds = sum(r.get("gpu_seconds", 0.0) for r in records)
    return {"run_gpu_seconds": round(gpu_seconds, 3), "run_gpu_hours": round(gpu_seconds / 3600.0, 6),
            "run_gpu_cost": cost_of(gpu_seconds, price), "gpu_hour_price": price}
