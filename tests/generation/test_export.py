"""`argus-task export`: the resolved generator as ONNX, once per version, refused when it fails parity.

One real ``torch.onnx.export`` per module (``onnx_file``) and one through the step; the other step
tests copy that file in place of a new export (the same weights give the same graph).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from argus_tasks.models import export as E
from argus_tasks.models import parity as P
from argus_tasks.models.generator import translate
from argus_tasks.models.images import to_uint8_hwc
from argus_tasks.models.segmenter import content_hash
from argus_tasks.steps import export as export_step

from .export_support import judged_env, register, tiny_generator, validated_run


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from judged_env(tmp_path_factory.mktemp("generation"))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """The untrained fog generator (seed 0), exported once."""
    path = tmp_path_factory.mktemp("onnx") / "generator.onnx"
    generator = tiny_generator("fog")
    E.export_onnx(generator, path, {"model_name": "argus-weather-fog", "model_version": "test",
                                    "content_hash": content_hash(generator)})
    return path


def _frames(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("condition", ["fog", "rain"])
def test_the_export_module_is_the_generator_itself_given_its_noise(condition):
    """With torch's own noise stream, the wrapper (both variants) reproduces translate() bit for bit."""
    generator = tiny_generator(condition)
    x = torch.from_numpy(_frames(3, 64, 96))
    torch.manual_seed(7)  # translate draws the latent first, then the noise planes
    latent, noise = torch.randn(3, generator.latent_channels, 1, 1), torch.randn(3, generator.noise_channels, 64, 96)
    reference = to_uint8_hwc(translate(generator, x.permute(0, 3, 1, 2).float() / 255.0, seed=7))
    for exportable in (False, True):
        with torch.no_grad():
            out = E.SeededGenerator(generator, exportable=exportable)(x, noise, latent).numpy()
        assert out.dtype == np.uint8 and out.shape == (3, 64, 96, 3)
        assert np.array_equal(out, reference), f"exportable={exportable}: {np.abs(out.astype(int) - reference).max()}"
    for h in (8, 64, 100, 375):  # the symbolic-length row coordinate is torch.linspace's
        rows = E.SeededGenerator(generator, exportable=True)._rows(h, torch.zeros(1))
        assert torch.allclose(rows, torch.linspace(-1.0, 1.0, h), rtol=0, atol=1e-6) and rows[0] == -1 and rows[-1] == 1
    # uneven pooling bins (bottleneck 25x19): the symbolic-size pooling agrees with adaptive_avg_pool2d
    odd = torch.from_numpy(_frames(2, 100, 76))
    noise, latent = torch.randn(2, 1, 100, 76), torch.randn(2, 2, 1, 1)
    with torch.no_grad():
        a = E.SeededGenerator(generator, exportable=False)(odd, noise, latent).numpy().astype(int)
        b = E.SeededGenerator(generator, exportable=True)(odd, noise, latent).numpy().astype(int)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.999
    feats = torch.rand(2, 5, 25, 19)
    pooled = E.SeededGenerator(generator, exportable=True)._pool(feats, 4)
    assert torch.allclose(pooled, torch.nn.functional.adaptive_avg_pool2d(feats, 4), atol=1e-6)


def test_the_onnx_runner_matches_eager_at_any_size_and_is_seeded_per_frame(onnx_file):
    runner, eager = E.load_runner(str(onnx_file), device="cpu"), E.EagerRunner(tiny_generator("fog"), device="cpu")
    assert runner.providers == ["CPUExecutionProvider"] and runner.spec["multiple"] == 4
    for shape in ((1, 64, 64), (3, 96, 128), (2, 50, 77)):  # the last one is padded to 52x80 and cropped back
        frames = _frames(*shape)
        out, ref = runner(frames, 3), eager(frames, 3)
        assert out.dtype == np.uint8 and out.shape == (*shape, 3)
        diff = np.abs(out.astype(int) - ref.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (shape, diff.max())
    frames, seeds = _frames(4, 64, 64, seed=1), [E.frame_seed(0, f"frame-{i}") for i in range(4)]
    out = runner(frames, seeds)
    assert np.array_equal(out, runner(frames, seeds)), "the same seeds must give the same frames"
    alone = runner(frames[2:3], seeds[2:3])[0]  # a frame's output does not depend on its batch
    assert np.abs(alone.astype(int) - out[2].astype(int)).max() <= 1
    other = runner(frames, [s + 1 for s in seeds])
    assert np.abs(other.astype(int) - out.astype(int)).mean() > 0.5, "the noise must come from the seed"
    single = runner(frames[0], seeds[0:1])
    assert single.shape == (64, 64, 3)


def test_the_parity_verdict_applies_the_contract_thresholds():
    a = np.zeros(10_000, np.uint8)
    b = a.copy()
    b[:10] = 2  # 0.1 % of the values off by 2/255: exactly the allowance
    b[10:5000] = 1  # off by 1/255 is within tolerance
    good = {"kid_eager": 0.010, "kid_exported": 0.0109, "label_fidelity_eager": 0.5, "label_fidelity_exported": 0.5}
    v = P.verdict(P.pixel_figures(a, b), good)
    assert v["passed"] and v["pixel_fraction_within_1"] == 0.999 and v["max_abs_diff"] == 2, v
    b[10] = 2
    assert not P.verdict(P.pixel_figures(a, b), good)["passed"]
    b[10] = 0
    assert not P.verdict(P.pixel_figures(a, b), {**good, "kid_exported": 0.0111})["passed"]
    bad = P.verdict(P.pixel_figures(a, b), {**good, "label_fidelity_exported": float("nan")})
    assert not bad["passed"] and "label_fidelity" in bad["failures"][0]


# ---- the step -----------------------------------------------------------------------------------
def _version(env, condition="fog", seed=0) -> str:
    return register(env, tiny_generator(condition, seed), f"argus-weather-{condition}", champion=True)


def _resolved_run(env, version: str, pin_judge: bool = True) -> str:
    run_id = f"gen-{uuid.uuid4().hex[:8]}"
    validated_run(env, run_id, env.judge_version if pin_judge else None)
    rc, _ = env.step(["resolve", "--conditions", "fog", "--model-version", version], run_id)
    assert rc == 0, env.failure(run_id, "resolve")
    return run_id


def _artifact_dir(env, mv) -> Path:
    return Path(urlparse(env.client.get_run(mv.run_id).info.artifact_uri).path)


def test_export_runs_once_per_version_is_recorded_on_it_and_reused(env, capsys, monkeypatch):
    version = _version(env)
    run_id = _resolved_run(env, version)
    rc, result = env.step(["export", "--condition", "fog"], run_id)
    assert rc == 0, env.failure(run_id, "export/fog")
    assert (result["model_version"], result["format"], result["artifact"], result["reused"]) == (
        version, "onnx", "export/fog/generator.onnx", False)
    run = env.run(run_id)
    local = run.localize("export/fog/generator.onnx")
    assert E.sha256_file(local) == result["sha256"] and result["size_bytes"] == local.stat().st_size
    assert run.read_json("export/fog/result.json")["sha256"] == result["sha256"]
    parity = result["parity"]
    assert parity["passed"] and parity["pixel_fraction_within_1"] >= 0.999 and parity["n_frames"] == 8
    assert parity["kid_abs_diff"] <= 1e-3 and parity["label_fidelity_abs_diff"] <= 1e-3
    assert parity["kid_reference"] == "real fog val+test frames" and parity["frame_size"] == [64, 64]
    mv = env.client.get_model_version("argus-weather-fog", version)
    assert mv.tags[export_step.TAG_SHA] == result["sha256"] and mv.tags[export_step.TAG_FORMAT] == "onnx"
    stored = _artifact_dir(env, mv) / mv.tags[export_step.TAG_ARTIFACT]
    assert E.sha256_file(stored) == result["sha256"], "the version's run holds the artifact"
    sig = run.read_json("export/fog/signature.json")
    assert sig["inputs"][0]["dtype"] == "uint8" and sig["outputs"][0]["shape"] == ["N", "H", "W", 3]
    assert (stored.parent / "signature.json").exists()
    assert '"passed": true' in mv.tags[export_step.TAG_PARITY]
    generated = E.load_runner(str(local))(_frames(2, 48, 80), 0)  # the run-store file runs on its own
    assert generated.dtype == np.uint8 and generated.shape == (2, 48, 80, 3)

    def no_export(*a, **k):
        raise AssertionError("exported again although the version has a valid export")

    monkeypatch.setattr(E, "export_onnx", no_export)
    later = _resolved_run(env, version)
    capsys.readouterr()
    rc, again = env.step(["export", "--condition", "fog"], later)
    assert rc == 0, env.failure(later, "export/fog")
    assert again["reused"] is True and again["sha256"] == result["sha256"] and again["parity"]["passed"]
    assert "reusing its recorded export" in capsys.readouterr().err
    assert E.sha256_file(env.run(later).localize("export/fog/generator.onnx")) == result["sha256"]


def _copy_export(onnx_file, perturb=None):
    """A stand-in for export_onnx: the module's exported file, optionally with a weight perturbed."""

    def fake(generator, path, metadata=None, example_size=64):
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(onnx_file))
        if perturb:
            for init in model.graph.initializer:
                if perturb in init.name:
                    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 2.0, init.name))
        onnx.save(model, str(path))
        return {"export_s": 0.1, "size_bytes": Path(path).stat().st_size, "opset": E.OPSET,
                "sha256": E.sha256_file(path)}

    return fake


def test_an_altered_recorded_export_is_not_used_but_exported_again(env, onnx_file, monkeypatch):
    version = _version(env)
    monkeypatch.setattr(E, "export_onnx", _copy_export(onnx_file))
    first = _resolved_run(env, version)
    rc, result = env.step(["export", "--condition", "fog"], first)
    assert rc == 0, env.failure(first, "export/fog")
    mv = env.client.get_model_version("argus-weather-fog", version)
    stored = _artifact_dir(env, mv) / mv.tags[export_step.TAG_ARTIFACT]
    stored.write_bytes(stored.read_bytes() + b"tampered")
    later = _resolved_run(env, version)
    rc, again = env.step(["export", "--condition", "fog"], later)
    assert rc == 0, env.failure(later, "export/fog")
    assert again["reused"] is False and "altered" in again["reexport_reason"]
    assert again["sha256"] == result["sha256"] == E.sha256_file(stored)


def test_a_version_whose_export_fails_parity_is_refused_with_the_figures(env, onnx_file, monkeypatch):
    version = _version(env)
    monkeypatch.setattr(E, "export_onnx", _copy_export(onnx_file, perturb="pixel_head.bias"))
    run_id = _resolved_run(env, version)
    rc, _ = env.step(["export", "--condition", "fog"], run_id)
    assert rc == 10
    message = env.failure(run_id, "export/fog")
    assert f"argus-weather-fog v{version} is refused" in message and "fails the parity contract" in message
    assert "of values within 1/255" in message and "KID" in message and "label fidelity" in message
    figures = env.run(run_id).read_json("export/fog/parity.json")
    assert not figures["passed"] and figures["pixel_fraction_within_1"] < 0.999
    assert not env.run(run_id).exists("export/fog/generator.onnx")
    mv = env.client.get_model_version("argus-weather-fog", version)
    assert export_step.TAG_SHA not in mv.tags, "a refused export must not be recorded as the version's export"
    assert '"passed": false' in mv.tags[export_step.TAG_PARITY]


def test_export_needs_the_runs_resolution(env):
    run_id = f"gen-{uuid.uuid4().hex[:8]}"
    validated_run(env, run_id, env.judge_version)
    rc, _ = env.step(["export", "--condition", "fog"], run_id)
    assert rc == 10 and "run `argus-task resolve --conditions fog` first" in env.failure(run_id, "export/fog")


def test_parity_frames_missing_fail_clearly(env):
    version = _version(env)
    run_id = _resolved_run(env, version)
    shutil.rmtree(env.run(run_id).local_dir("validate"))
    rc, _ = env.step(["export", "--condition", "fog"], run_id)
    assert rc == 10 and "validation output missing" in env.failure(run_id, "export/fog")


def test_without_a_pinned_judge_parity_uses_the_judge_that_evaluated_the_version(env, onnx_file, monkeypatch):
    version = _version(env)
    monkeypatch.setattr(E, "export_onnx", _copy_export(onnx_file))
    run_id = _resolved_run(env, version, pin_judge=False)
    rc, _ = env.step(["export", "--condition", "fog"], run_id)
    assert rc == 10 and "no judge for the parity" in env.failure(run_id, "export/fog")
    env.registry.set_tags("argus-weather-fog", version, {"argus.judge_model": "argus-downstream-segmenter",
                                                         "argus.judge_version": env.judge_version})
    rc, result = env.step(["export", "--condition", "fog"], run_id)
    assert rc == 0, env.failure(run_id, "export/fog")
    assert result["parity"]["judge"] == {"model_name": "argus-downstream-segmenter", "version": env.judge_version}


def test_a_failing_rerun_withdraws_the_runs_earlier_export(env, onnx_file, monkeypatch):
    version = _version(env)
    monkeypatch.setattr(E, "export_onnx", _copy_export(onnx_file))
    run_id = _resolved_run(env, version)
    rc, _ = env.step(["export", "--condition", "fog"], run_id)
    assert rc == 0 and env.run(run_id).exists("export/fog/result.json")
    monkeypatch.setattr(E, "export_onnx", _copy_export(onnx_file, perturb="pixel_head.bias"))
    rc, _ = env.step(["export", "--condition", "fog", "--force"], run_id)
    assert rc == 10 and "fails the parity contract" in env.failure(run_id, "export/fog")
    assert not env.run(run_id).exists("export/fog/result.json")
    assert not env.run(run_id).exists("export/fog/generator.onnx")
    mv = env.client.get_model_version("argus-weather-fog", version)
    assert export_step.TAG_SHA in mv.tags, "the version keeps its earlier valid export"
    assert '"passed": true' in mv.tags[export_step.TAG_PARITY], "and the figures of that export"
