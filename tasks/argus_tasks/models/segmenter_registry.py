"""Logging, registering and loading the reference segmenter through MLflow."""

from __future__ import annotations

import logging

import numpy as np
import torch

from argus_tasks.contract import PermanentStepError, StepContext
from argus_tasks.models.registry_adapter import SEGMENTER_MODEL, Registry, require_version

log = logging.getLogger(__name__)
RESULT = "segmenter/result.json"


def signature_for(model: torch.nn.Module, size: int, channels: int = 3):
    """An MLflow signature: float32 (N, 3, H, W) in, the model's output out."""
    from mlflow.models import infer_signature

    example = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(example)).float().numpy()
    return infer_signature(example, out)


def log_torch_model(model: torch.nn.Module, name: str, size: int):
    """Log ``model`` (pickled, with a signature) in the active MLflow run; returns the ModelInfo."""
    import mlflow.pytorch

    return mlflow.pytorch.log_model(
        model.cpu().eval(), name=name, signature=signature_for(model, size), serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


def load_version(registry: Registry, name: str, version) -> torch.nn.Module:
    import mlflow.pytorch

    mv = require_version(registry, name, version)
    try:
        model = mlflow.pytorch.load_model(f"models:/{name}/{mv.version}", map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise PermanentStepError(f"could not load {name} v{version} from the registry: {exc}") from exc
    return model.eval()


def pinned_segmenter(ctx: StepContext, registry: Registry) -> tuple[torch.nn.Module, dict]:
    """The segmenter version this run pinned (``segmenter/result.json``) and that result."""
    if not ctx.run.exists(RESULT):
        raise PermanentStepError(
            f"{ctx.run.url(RESULT)} is missing: run `argus-task segmenter` for this run before evaluate, "
            "so every condition is judged by the same pinned segmenter version.")
    pinned = ctx.run.read_json(RESULT)
    return load_version(registry, pinned.get("model_name", SEGMENTER_MODEL), pinned["version"]), pinned
