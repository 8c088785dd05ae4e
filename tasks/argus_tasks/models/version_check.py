"""Is a registered generator version complete? Its files, its lineage and its source run, each problem named.

What a rollback checks before it restores a version (``argus-task rollback-check``): the version is
registered; its model folder downloads and holds ``MLmodel`` with the safe state-dict flavor and the
files that flavor names (weights, module spec), which rebuild into the model whose content hash the
version carries (:mod:`argus_tasks.models.segmenter_registry`, the same safe loading as every other
step); the lineage tags that ``train`` writes are there
(:data:`argus_tasks.models.rollback_target.REQUIRED_LINEAGE`) and its MLflow training run exists.
A registry or store that does not answer is a :class:`TransientStepError` (retried), not a problem
of the version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from argus_tasks.contract import PermanentStepError, TransientStepError
from argus_tasks.models.rollback_target import lineage_problems


def check_version(registry, name: str, version: str) -> tuple[object | None, object | None, list[str]]:
    """``(model version, loaded model or None, problems)``; no problems means it can be restored."""
    import mlflow

    from argus_tasks.models.segmenter import content_hash
    from argus_tasks.models.segmenter_registry import FLAVOR, _read_model, load_error

    mv = registry._lookup(f"the lookup of {name} v{version}", registry.client.get_model_version, name, str(version))
    if mv is None:
        return None, None, [f"{name} v{version} is not in the MLflow registry"]
    tags = dict(getattr(mv, "tags", None) or {})
    problems = lineage_problems(tags)
    run_id = tags.get("argus.mlflow_run_id") or getattr(mv, "run_id", "")
    if run_id:
        found = registry._lookup(f"the lookup of MLflow run {run_id}", registry.client.get_run, run_id)
        if found is None:
            problems.append(f"its training run {run_id} is not in MLflow")
    where, model = f"{name} v{version}", None
    with tempfile.TemporaryDirectory(prefix="argus-check-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp,
                                                             tracking_uri=registry.client.tracking_uri))
        except Exception as exc:  # noqa: BLE001 - classified
            error = load_error(where, exc)
            if isinstance(error, TransientStepError):
                raise error from exc
            return mv, None, problems + [f"its model files cannot be downloaded ({str(exc)[:200]})"]
        if not (local / "MLmodel").is_file():
            return mv, None, problems + [f"model file MLmodel is missing from {mv.source}"]
        from mlflow.models import Model

        try:
            flavor = Model.load(str(local / "MLmodel")).flavors.get(FLAVOR)
        except Exception as exc:  # noqa: BLE001
            return mv, None, problems + [f"MLmodel is unreadable ({str(exc)[:200]})"]
        if flavor is None:
            return mv, None, problems + [f"it is not stored in the safe {FLAVOR} format (a pickled model)"]
        missing = [f"model file {flavor.get(key, key)} is missing" for key in ("weights", "module")
                   if not (local / str(flavor.get(key, ""))).is_file()]
        if missing:
            return mv, None, problems + missing
        try:
            model = _read_model(local, where)
        except PermanentStepError as exc:
            return mv, None, problems + [str(exc)]
    expected = tags.get("argus.content_hash")
    if expected and content_hash(model) != expected:
        problems.append(f"its weights do not match the registered content hash {expected[:12]}")
    return mv, model.eval(), problems
