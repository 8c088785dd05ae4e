"""Logging, registering and loading models (the segmenter, the generators) through MLflow, safely.

A model is stored as an MLflow model of flavor ``argus_torch_state_dict``: the weights as a torch
state dict (``weights.pt``, loaded with ``torch.load(weights_only=True)``: tensors only, no
arbitrary objects), ``module.json`` naming the class (one of :data:`REBUILDERS`) and its constructor
arguments, and the signature for browsing in the MLflow UI. Loading rebuilds the module from its
class and arguments and loads the weights into it (strict): nothing stored in the bucket is ever
unpickled or imported, so whoever can write the bucket cannot run code in a pod. A version's
``argus.content_hash`` tag (in the registry database, not the bucket) is checked against the loaded
weights. Versions logged before (a pickled ``pytorch`` flavor) are refused with a clear error.

Load failures are classified: a missing or corrupt model is a :class:`PermanentStepError`; the
network, a timeout or a 5xx answer of the store or registry is a :class:`TransientStepError`
(exit 75, retried).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

from argus_tasks.contract import PermanentStepError, StepContext, TransientStepError
from argus_tasks.models.registry_adapter import SEGMENTER_MODEL, Registry, require_version

log = logging.getLogger(__name__)
RESULT = "segmenter/result.json"
FLAVOR = "argus_torch_state_dict"
WEIGHTS, MODULE = "weights.pt", "module.json"


def _unet_kwargs(m) -> dict:
    return {"num_classes": int(m.num_classes), "width": int(m.enc1[0].out_channels)}


def _generator_kwargs(m) -> dict:
    from argus_tasks.models.networks import ResBlock

    return {"ngf": int(m.encoder[0][1].out_channels), "n_blocks": sum(isinstance(b, ResBlock) for b in m.encoder),
            "n_down": len(m.decoder), "head": m.head_kind, "extras": list(m.extras),
            "airlight_grid": int(m.airlight_grid), "noise_channels": int(m.noise_channels),
            "coord_channels": int(m.coord_channels), "latent_channels": int(m.latent_channels),
            "strength_spread": float(m.strength_spread)}


# The only classes a stored model may name: class path -> the constructor arguments of an instance.
REBUILDERS = {
    "argus_tasks.models.segmenter.UNetSegmenter": _unet_kwargs,
    "argus_tasks.models.networks.WeatherGenerator": _generator_kwargs,
}


def module_spec(model: torch.nn.Module) -> dict:
    """``{"class": ..., "kwargs": {...}}`` that rebuilds ``model``; class None when it is not rebuildable."""
    path = f"{type(model).__module__}.{type(model).__qualname__}"
    if path not in REBUILDERS:
        return {"class": None, "kwargs": {}}
    return {"class": path, "kwargs": REBUILDERS[path](model)}


def rebuild(spec: dict) -> torch.nn.Module:
    """An untrained module of ``spec``'s class; only :data:`REBUILDERS` classes are imported."""
    path = spec.get("class") if isinstance(spec, dict) else None
    if path not in REBUILDERS:
        raise ValueError(f"class {path!r} is not one this pipeline rebuilds ({sorted(REBUILDERS)})")
    kwargs = spec.get("kwargs")
    if not isinstance(kwargs, dict):
        raise ValueError(f"constructor arguments must be an object, got {type(kwargs).__name__}")
    module_name, _, cls_name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), cls_name)(**kwargs)


def signature_for(model: torch.nn.Module, size: int, channels: int = 3):
    """An MLflow signature: float32 (N, 3, H, W) in, the model's output out."""
    from mlflow.models import infer_signature

    example = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(example)).float().numpy()
    return infer_signature(example, out)


def _save_model(path, mlflow_model, module: torch.nn.Module, signature=None, **_):
    """The flavor's ``save_model`` (called by ``mlflow.models.Model.log``)."""
    folder = Path(path)
    folder.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, folder / WEIGHTS)
    spec = module_spec(module)
    if spec["class"] is None:
        log.warning("%s is not in REBUILDERS: its weights are logged, but load_version cannot rebuild it",
                    type(module).__qualname__)
    else:  # what load_version will do, now: never register a model that cannot be loaded back
        rebuild(spec).load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    (folder / MODULE).write_text(json.dumps(spec, indent=1, sort_keys=True))
    mlflow_model.signature = signature
    mlflow_model.add_flavor(FLAVOR, weights=WEIGHTS, module=MODULE, torch_version=torch.__version__.split("+")[0],
                            weights_sha256=hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest())
    mlflow_model.save(str(folder / "MLmodel"))


def log_torch_model(model: torch.nn.Module, name: str, size: int):
    """Log ``model`` (state dict + rebuild spec, with a signature) in the active MLflow run; returns the ModelInfo."""
    from mlflow.models import Model

    model = model.cpu().eval()
    flavor = types.SimpleNamespace(__name__=FLAVOR, save_model=_save_model)
    return Model.log(None, flavor, name=name, module=model, signature=signature_for(model, size))


def load_version(registry: Registry, name: str, version) -> torch.nn.Module:
    """The registered ``name`` v``version``, rebuilt from its weights, on the CPU, in eval mode."""
    import mlflow

    mv = require_version(registry, name, version)
    where = f"{name} v{mv.version}"
    with tempfile.TemporaryDirectory(prefix="argus-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp, tracking_uri=registry.client.tracking_uri))
        except Exception as exc:  # noqa: BLE001 - classified below
            raise load_error(where, exc) from exc
        model = _read_model(local, where)
    expected = (getattr(mv, "tags", None) or {}).get("argus.content_hash")
    if expected:
        from argus_tasks.models.segmenter import content_hash

        if content_hash(model) != expected:
            raise PermanentStepError(f"{where}: the stored weights do not match the registered content hash "
                                     f"{expected[:12]}: the artifact was changed or corrupted; re-register the model")
    return model.eval()


class LegacyPickledModel(PermanentStepError):
    """A version logged in the pickled format of before safe loading: refused, never unpickled."""


def _read_model(folder: Path, where: str) -> torch.nn.Module:
    """Rebuild the model in a downloaded model folder; PermanentStepError when it is corrupt or unsafe."""
    from mlflow.models import Model

    try:
        flavors = Model.load(str(folder / "MLmodel")).flavors
    except Exception as exc:  # noqa: BLE001
        raise PermanentStepError(f"{where}: no readable MLmodel in its artifacts ({exc})") from exc
    if FLAVOR not in flavors:
        raise LegacyPickledModel(
            f"{where} is stored as {sorted(flavors)} (a pickled model, as logged before safe loading): it is not "
            "loaded, since unpickling runs whatever the file holds. Train or register it again (a new run logs "
            "the state-dict format), or, if you trust the artifact, re-log it with log_torch_model.")
    conf = flavors[FLAVOR]
    try:
        weights = folder / conf["weights"]
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if conf.get("weights_sha256") and digest != conf["weights_sha256"]:
            raise ValueError(f"{conf['weights']} has sha256 {digest[:12]}, its MLmodel says {conf['weights_sha256'][:12]}")
        spec = json.loads((folder / conf["module"]).read_text())
        model = rebuild(spec)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("the weights file is not a state dict of tensors")
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refused, bad JSON, wrong shapes, missing files
        raise PermanentStepError(f"{where}: the stored model is corrupt or unsafe and was not loaded "
                                 f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    return model


# ---- what a failure to fetch a model means ---------------------------------------------------------
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset({"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling",
                                "ThrottlingException", "RequestLimitExceeded"})
TRANSIENT_BOTOCORE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                                "ConnectionClosedError", "ProxyConnectionError", "ConnectionError"})
TRANSIENT_MLFLOW_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"})


def _status(exc) -> tuple[int | None, str | None]:
    """(HTTP status, S3 error code) of an HTTP error (requests) or a botocore ClientError."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode"), response.get("Error", {}).get("Code")
    return getattr(response, "status_code", None), None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the network, a timeout or a 5xx/429 answer: a retry may help."""
    import requests
    import urllib3

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        kind = type(seen)
        if isinstance(seen, (ConnectionError, TimeoutError)):  # resets, refusals, socket timeouts
            return True
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                             requests.exceptions.ChunkedEncodingError, urllib3.exceptions.MaxRetryError,
                             urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError)):
            return True
        if kind.__module__.startswith("botocore") and kind.__name__ in TRANSIENT_BOTOCORE:
            return True
        status, s3_code = _status(seen)
        if status in TRANSIENT_STATUS or s3_code in TRANSIENT_S3_CODES:
            return True
        if getattr(seen, "error_code", None) in TRANSIENT_MLFLOW_CODES:
            return True
        if kind.__module__.startswith("sqlalchemy") and kind.__name__ == "OperationalError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def load_error(where: str, exc: BaseException):
    """TransientStepError when ``exc`` is worth a retry, else PermanentStepError (missing, refused, corrupt)."""
    detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    if is_transient(exc):
        return TransientStepError(f"could not fetch {where} from the model store (a retry may succeed): {detail}")
    return PermanentStepError(f"could not load {where} from the registry: {detail}")


def pinned_segmenter(ctx: StepContext, registry: Registry) -> tuple[torch.nn.Module, dict]:
    """The segmenter version this run pinned (``segmenter/result.json``) and that result."""
    if not ctx.run.exists(RESULT):
        raise PermanentStepError(
            f"{ctx.run.url(RESULT)} is missing: run `argus-task segmenter` for this run before evaluate, "
            "so every condition is judged by the same pinned segmenter version.")
    pinned = ctx.run.read_json(RESULT)
    return load_version(registry, pinned.get("model_name", SEGMENTER_MODEL), pinned["version"]), pinned
