"""Reading back what runs left behind: run folders, task logs, MLflow runs and registry versions."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from .stack import DAG_ID, ArgusStack

EXPERIMENT = f"argus/{DAG_ID}"


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def step_result(stack: ArgusStack, run_id: str, where: str) -> dict:
    return read_json(stack.run_dir(run_id) / where / "result.json")


def task_log(stack: ArgusStack, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
    """The Airflow task log of one try (the file the UI shows), as plain text."""
    base = Path(stack.env["AIRFLOW_HOME"]) / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        base = base / f"map_index={map_index}"
    path = base / f"attempt={try_number}.log"
    if not path.exists():
        return ""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(raw)
        except ValueError:
            lines.append(raw)
            continue
        lines.append(str(rec.get("event", "")))
        if rec.get("error_detail"):
            lines.append(json.dumps(rec["error_detail"])[:4000])
    return "\n".join(lines)


def all_task_logs(stack: ArgusStack) -> list[Path]:
    return sorted((Path(stack.env["AIRFLOW_HOME"]) / "logs").rglob("*.log"))


def mlflow_runs(stack: ArgusStack, run_id: str, step: str, condition: str | None = None):
    client = stack.mlflow_client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    flt = f"tags.`argus.run_id` = '{run_id}' and tags.`argus.step` = '{step}'"
    if condition:
        flt += f" and tags.`argus.condition` = '{condition}'"
    return client.search_runs([exp.experiment_id], filter_string=flt)


def versions_of_run(stack: ArgusStack, model: str, run_id: str):
    client = stack.mlflow_client()
    return client.search_model_versions(f"name='{model}' and tags.`argus.run_id` = '{run_id}'")


def alias_version(stack: ArgusStack, model: str, alias: str) -> str | None:
    try:
        return str(stack.mlflow_client().get_model_version_by_alias(model, alias).version)
    except Exception:  # noqa: BLE001 - no such alias (or model)
        return None


def model_files_complete(stack: ArgusStack, model: str, version: str) -> bool:
    """The registered version is READY and its artifacts hold a complete model: MLmodel, the state dict and the
    module spec that rebuilds it (the safe-loading format of ``segmenter_registry``)."""
    import mlflow.artifacts

    client = stack.mlflow_client()
    if client.get_model_version(model, version).status != "READY":
        return False
    uri = client.get_model_version_download_uri(model, version)
    try:
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=stack.mlflow_uri))
    except Exception:  # noqa: BLE001 - missing artifacts
        return False
    from argus_tasks.models.segmenter_registry import MODULE, WEIGHTS

    weights = path / WEIGHTS
    return (path / "MLmodel").is_file() and (path / MODULE).is_file() and weights.is_file() and \
        weights.stat().st_size > 0
