"""Models load without unpickling anything: a real local MLflow (sqlite + file artifacts), real files.

Whoever can write the artifact bucket can replace a model's files; a pod that loads the model must
not run what they put there. The payload below creates a marker file when it is unpickled: each
test asserts the load is refused and the marker never appears.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from argus_tasks.contract import PermanentStepError
from argus_tasks.models.registry_adapter import Registry
from argus_tasks.models.segmenter import UNetSegmenter, content_hash
from argus_tasks.models.segmenter_registry import load_version, log_torch_model


class Payload:
    """Unpickling this runs ``exec``: it writes ``marker``. A stand-in for any code an attacker wants to run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("safe-loading", artifact_location=str(tmp_path / "artifacts"))
    try:
        yield {"client": client, "registry": Registry(client), "exp": exp, "marker": tmp_path / "pwned"}
    finally:
        mlflow.set_tracking_uri(previous)


def _register(store, model, name="argus-downstream-segmenter", log=None):
    """Log ``model`` (with ``log``, default log_torch_model) and register it; (version, model artifact dir)."""
    import mlflow

    with mlflow.start_run(experiment_id=store["exp"]) as run:
        info = (log or log_torch_model)(model)
    mv, _ = store["registry"].register(name, info.model_uri, run.info.run_id, {"argus.run_id": run.info.run_id},
                                       {"argus.content_hash": content_hash(model)})
    folder = Path(urlparse(store["client"].get_logged_model(info.model_id).artifact_location).path)
    return mv.version, folder


def _replace_weights(folder: Path, data: bytes) -> None:
    """Write ``data`` as the weights, and its checksum in the MLmodel: the attacker controls the bucket."""
    mlmodel = (folder / "MLmodel").read_text()
    old_sha = next(line.split(":")[1].strip() for line in mlmodel.splitlines() if "weights_sha256" in line)
    (folder / "weights.pt").write_bytes(data)
    (folder / "MLmodel").write_text(mlmodel.replace(old_sha, hashlib.sha256(data).hexdigest()))


def _segmenter(seed: int) -> UNetSegmenter:
    torch.manual_seed(seed)
    return UNetSegmenter(width=4).eval()


def test_a_logged_model_is_weights_and_a_class_name_and_loads_back_identical(store):
    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import build_generator

    seg = _segmenter(0)
    version, folder = _register(store, seg, log=lambda m: log_torch_model(m, "segmenter", 16))
    assert sorted(p.name for p in folder.iterdir()) == ["MLmodel", "module.json", "weights.pt"]
    assert json.loads((folder / "module.json").read_text()) == {
        "class": "argus_tasks.models.segmenter.UNetSegmenter", "kwargs": {"num_classes": seg.num_classes, "width": 4}}
    loaded = load_version(store["registry"], "argus-downstream-segmenter", version)
    assert type(loaded) is UNetSegmenter and content_hash(loaded) == content_hash(seg)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), seg(x))

    gen = build_generator(load_config("tiny", {}), "rain")
    version, _ = _register(store, gen, "argus-weather-rain", log=lambda m: log_torch_model(m, "generator", 16))
    back = load_version(store["registry"], "argus-weather-rain", version)
    assert content_hash(back) == content_hash(gen) and back.extras == gen.extras and back.head_kind == gen.head_kind


def test_a_pickle_payload_in_the_weights_is_refused_not_executed(store):
    version, folder = _register(store, _segmenter(0), log=lambda m: log_torch_model(m, "segmenter", 16))
    payload = folder / "payload.pt"
    torch.save(Payload(store["marker"]), payload)
    _replace_weights(folder, payload.read_bytes())
    with pytest.raises(PermanentStepError, match="corrupt or unsafe") as err:
        load_version(store["registry"], "argus-downstream-segmenter", version)
    assert "Unsupported global" in str(err.value) or "weights_only" in str(err.value).lower(), err.value
    assert not store["marker"].exists(), "the payload ran while loading the model"


def test_a_pickled_model_of_the_old_format_is_refused_not_executed(store):
    """What ``log_torch_model`` wrote before: mlflow.pytorch with serialization_format="pickle"."""
    import mlflow.pytorch

    def log_pickled(model):
        return mlflow.pytorch.log_model(model, name="segmenter", serialization_format="pickle")

    version, folder = _register(store, _segmenter(0), log=log_pickled)
    (pickled,) = folder.glob("data/model.pth")
    torch.save(Payload(store["marker"]), pickled)
    with pytest.raises(PermanentStepError) as err:
        load_version(store["registry"], "argus-downstream-segmenter", version)
    assert not store["marker"].exists(), f"the payload ran while loading the model (then: {err.value})"
    assert "pickled model" in str(err.value) and "not loaded" in str(err.value), err.value


def test_a_module_file_naming_another_class_is_refused_without_importing_it(store):
    version, folder = _register(store, _segmenter(0), log=lambda m: log_torch_model(m, "segmenter", 16))
    (folder / "module.json").write_text(json.dumps({"class": "os.system", "kwargs": {"command": "true"}}))
    with pytest.raises(PermanentStepError, match="'os.system' is not one this pipeline rebuilds"):
        load_version(store["registry"], "argus-downstream-segmenter", version)


def test_weights_swapped_for_another_model_do_not_pass_the_registered_content_hash(store):
    version, folder = _register(store, _segmenter(0), log=lambda m: log_torch_model(m, "segmenter", 16))
    _, other = _register(store, _segmenter(1), "other", log=lambda m: log_torch_model(m, "segmenter", 16))
    _replace_weights(folder, (other / "weights.pt").read_bytes())
    with pytest.raises(PermanentStepError, match="do not match the registered content hash"):
        load_version(store["registry"], "argus-downstream-segmenter", version)


def test_the_stored_flavor_needs_no_pickle_to_be_read(store):
    """The MLmodel names only the state-dict flavor: no python_function / pytorch flavor that unpickles."""
    from mlflow.models import Model

    from argus_tasks.models.segmenter_registry import FLAVOR

    _, folder = _register(store, _segmenter(0), log=lambda m: log_torch_model(m, "segmenter", 16))
    model = Model.load(str(folder / "MLmodel"))
    assert set(model.flavors) == {FLAVOR}
    assert model.signature is not None and tuple(model.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 3, 16, 16)


def test_a_judge_of_the_old_pickled_format_is_replaced_not_loaded(store, steps, validated_run, monkeypatch):
    """An install from before safe loading has a pickled judge as champion: the segmenter step trains
    a new judge instead of failing every run (or unpickling the old one)."""
    import mlflow.pytorch

    def log_pickled(model):
        return mlflow.pytorch.log_model(model, name="segmenter", serialization_format="pickle")

    old, folder = _register(store, _segmenter(0), log=log_pickled)
    (pickled,) = folder.glob("data/model.pth")
    torch.save(Payload(store["marker"]), pickled)
    store["registry"].set_alias("argus-downstream-segmenter", "champion", old)
    run_id, _ = validated_run
    rc, result = steps(["segmenter", "--steps", "20", "--min-miou", "0"], run_id)
    assert rc == 0, steps.run_store(run_id).read_json("segmenter/failure.json")
    assert not store["marker"].exists(), "the old judge was unpickled"
    assert result["trained"] is True and result["version"] != str(old)
    champion = store["client"].get_model_version_by_alias("argus-downstream-segmenter", "champion")
    assert str(champion.version) == result["version"]
