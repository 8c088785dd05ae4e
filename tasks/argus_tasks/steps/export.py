"""`argus-task export --condition C`: the resolved generator as an ONNX artifact, checked for parity.

The version is the one ``resolve`` recorded for this run (:func:`argus_tasks.steps.resolve.resolved_model`).
It is exported once per model version (:mod:`argus_tasks.models.export`: ``torch.onnx.export``
with ``dynamo=True``, dynamic batch, height and width; uint8 (N, H, W, 3) in, uint8 out; the noise
is an input drawn from per-frame seeds) and cached on the registry:

* the artifact and its signature are logged to the model version's own MLflow run under
  ``export/<C>/<sha256[:16]>/`` (``generator.onnx``, ``signature.json``: content-addressed, so two runs
  exporting the same version at once never leave a tag naming the other's file);
* the version is tagged ``argus.export.onnx_sha256``, ``argus.export.artifact`` (the artifact path
  in that run), ``argus.export.format`` and ``argus.export.parity`` (the figures, JSON). The sha256 tag
  is written last: it is what marks the export done.

A later export of the same version downloads the artifact and checks its sha256 against the tag
(and the content hash it was made from): it is reused (``"reused": true``, and the log says so),
or exported again when it is missing or altered.

**Parity contract**, checked on every run on this run's clear val frames (at their native size,
each frame's noise seeded from ``--seed`` and its frame id): within 1/255 per pixel on >= 99.9 % of
values, KID and label fidelity equal within 1e-3 (:mod:`argus_tasks.models.parity`), judged by the
segmenter this run pinned (``segmenter/result.json``) or, without one, by the judge that evaluated
the version (its ``argus.judge_version`` tag). A version that fails is refused (PermanentStepError
with the figures); a fresh export's figures are recorded on the version, and no artifact is
recorded as its export. A rerun first withdraws this run's earlier ``result.json`` and artifact, so
a failing rerun never leaves them looking valid.

Run store, ``export/<C>/``: ``generator.onnx``, ``signature.json``, ``parity.json`` and the step's
``result.json``: ``{"condition", "model_name", "model_version", "content_hash", "format": "onnx",
"artifact": "export/<C>/generator.onnx", "sha256", "size_bytes", "parity", "reused", ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext, TransientStepError

HELP = "export the run's resolved generator of a condition to ONNX (once per version) and check its parity"
log = logging.getLogger("argus.export")
FORMAT = "onnx"
TAG_SHA, TAG_ARTIFACT, TAG_FORMAT, TAG_PARITY = ("argus.export.onnx_sha256", "argus.export.artifact",
                                                 "argus.export.format", "argus.export.parity")
PARITY_SPLITS = ("val",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condition", required=True, choices=CONDITIONS)
    p.add_argument("--seed", type=int, default=0, help="generation seed: each frame's noise comes from it and its id")
    p.add_argument("--max-parity-frames", type=int, default=256,
                   help="cap on the clear val frames the parity is measured on (a seeded subset of whole sequences)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the eager reference and the segmenter run (auto: cuda when available); the artifact "
                        "runs on onnxruntime's CUDA provider when it has one, else on the CPU")
    p.add_argument("--batch-size", type=int, default=16, help="frames per batch of the parity runs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1, or $ARGUS_TORCH_THREADS)")
    p.add_argument("--force", action="store_true", help="export again even when the version has a valid export")


def signature(meta: dict) -> dict:
    """What the artifact takes and returns: through load_runner, uint8 HxWx3 in and out."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    frames = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "frames")])
    generated = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "generated")])
    return {
        "format": FORMAT, "runner": "argus_tasks.models.export.load_runner(path)(frames, seed)",
        "inputs": [{"name": "frames", "dtype": "uint8", "shape": ["N", "H", "W", 3], "range": [0, 255], "layout": "NHWC RGB"}],
        "outputs": [{"name": "generated", "dtype": "uint8", "shape": ["N", "H", "W", 3], "range": [0, 255]}],
        "graph_inputs": [
            {"name": "frames", "dtype": "uint8", "shape": ["N", "H", "W", 3]},
            {"name": "noise", "dtype": "float32", "shape": ["N", int(meta["noise_channels"]), "H", "W"]},
            {"name": "latent", "dtype": "float32", "shape": ["N", int(meta["latent_channels"]), 1, 1]}],
        "graph_size": {"multiple": int(meta["multiple"]), "min": int(meta["min_size"]),
                       "note": "the runner pads other sizes (reflect) and crops the output back"},
        "noise": {"protocol": meta["noise_protocol"],
                  "how": "per frame: numpy PCG64(seed) draws latent then noise, standard normal float32 "
                         "(argus_tasks.models.export.frame_inputs); frame seed = frame_seed(run seed, frame id)"},
        "mlflow_signature": ModelSignature(inputs=frames, outputs=generated).to_dict(),
        "model": {k: meta.get(k) for k in ("model_name", "model_version", "content_hash")},
    }


def _download_cached(registry, mv, tmp: Path) -> tuple[Path | None, str]:
    """(path of the version's valid cached export, why not) from its tags and its run's artifacts."""
    import mlflow

    from argus_tasks.models.export import read_metadata, sha256_file
    from argus_tasks.models.segmenter_registry import is_transient

    tags = mv.tags or {}
    expected, where = tags.get(TAG_SHA), tags.get(TAG_ARTIFACT)
    if not expected or not where or not mv.run_id:
        return None, "no export recorded on the version"
    try:
        local = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=where, dst_path=str(tmp),
                                                         tracking_uri=registry.client.tracking_uri))
    except Exception as exc:  # noqa: BLE001 - classified
        if is_transient(exc):
            raise TransientStepError(f"could not download the export of {mv.name} v{mv.version} ({where}) "
                                     f"from the model store: {type(exc).__name__}: {str(exc)[:300]}") from exc
        return None, f"its recorded artifact {where} could not be read ({type(exc).__name__}: {str(exc)[:200]})"
    actual = sha256_file(local)
    if actual != expected:
        return None, f"its artifact {where} has sha256 {actual[:12]}, the version's tag says {expected[:12]} (altered)"
    made_from = read_metadata(local).get("content_hash")
    if made_from != tags.get("argus.content_hash"):
        return None, f"its artifact was made from weights {str(made_from)[:12]}, not the version's"
    return local, ""


def _parity_frames(ctx, args):
    """(clear val frames uint8 NHWC, labels, frame ids, reference frames NHWC, labels, reference name)."""
    from argus_tasks.data.access import load_accepted
    from argus_tasks.models import frames as F

    manifest, root = load_accepted(ctx.run)
    rows = F.select(manifest, "clear", PARITY_SPLITS)
    F.require_rows(rows, "clear/val (the export's parity frames)", manifest)
    rows = F.select_sequences(manifest, "clear", PARITY_SPLITS, args.max_parity_frames, args.seed)
    if len(rows) < 2:
        raise PermanentStepError(f"only {len(rows)} clear val frame(s) to check the export's parity on (KID needs "
                                 "2 or more): pull a dataset revision with more clear val frames")
    x, y = F.load_frames(root, rows, size=None, workers=2)
    real = F.select_sequences(manifest, args.condition, ("val", "test"), args.max_parity_frames, args.seed)
    if len(real) >= 2 and set(zip(real["height"], real["width"], strict=True)) == {tuple(x.shape[2:])}:
        rx, ry = F.load_frames(root, real, size=None, workers=2)
        reference = f"real {args.condition} val+test frames"
    else:  # no real frames of the condition in this run (a pure source dataset): KID against the sources
        rx, ry, reference = x, y, "the clear parity frames themselves"
    nhwc = (x.permute(0, 2, 3, 1).contiguous().numpy(), rx.permute(0, 2, 3, 1).contiguous().numpy())
    return nhwc[0], y, rows["frame_id"].astype(str).tolist(), nhwc[1], ry, reference


def _judge(ctx, registry, mv):
    """(segmenter, its record): the judge this run pinned (``segmenter/result.json``), else the one that
    evaluated the version (its ``argus.judge_model``/``argus.judge_version`` tags, set by evaluate)."""
    from argus_tasks.models.segmenter_registry import RESULT, load_version, pinned_segmenter

    if ctx.run.exists(RESULT):
        return pinned_segmenter(ctx, registry)
    tags = mv.tags or {}
    if tags.get("argus.judge_model") and tags.get("argus.judge_version"):
        judge = {"model_name": tags["argus.judge_model"], "version": tags["argus.judge_version"]}
        log.info("no segmenter pinned in this run: judging parity with %s v%s, the judge that evaluated %s v%s",
                 judge["model_name"], judge["version"], mv.name, mv.version)
        return load_version(registry, judge["model_name"], judge["version"]), judge
    raise PermanentStepError(
        f"no judge for the parity of {mv.name} v{mv.version}: {ctx.run.url(RESULT)} is missing and the version has no "
        "argus.judge_version tag (it was never evaluated): run `argus-task segmenter` in this run before export")


def _record_export(registry, mv, condition: str, onnx_path: Path, sig: dict, sha: str, parity: dict) -> str:
    """Log the artifact to the version's run and tag the version (the sha256 tag last); the artifact path."""
    client = registry.client
    where = f"export/{condition}/{sha[:16]}"
    with tempfile.TemporaryDirectory(prefix="argus-export-log-") as tmp:
        (Path(tmp) / "signature.json").write_text(json.dumps(sig, indent=1, sort_keys=True))
        registry._call(f"logging the export of {mv.name} v{mv.version}", client.log_artifact, mv.run_id,
                       str(onnx_path), where)
        registry._call(f"logging the export signature of {mv.name} v{mv.version}", client.log_artifact, mv.run_id,
                       str(Path(tmp) / "signature.json"), where)
    artifact = f"{where}/generator.onnx"
    registry.set_tags(mv.name, mv.version, {TAG_FORMAT: FORMAT, TAG_ARTIFACT: artifact, TAG_PARITY: parity})
    registry.set_tags(mv.name, mv.version, {TAG_SHA: sha})
    return artifact


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import torch

    from argus_tasks.models.export import EagerRunner, export_onnx, frame_seed, load_runner, read_metadata, sha256_file
    from argus_tasks.models.parity import describe, measure
    from argus_tasks.models.registry_adapter import Registry, require_version
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.models.segmenter_registry import load_version
    from argus_tasks.reuse import withdraw
    from argus_tasks.steps.evaluate import resolve_device
    from argus_tasks.steps.resolve import resolved_model

    c, out = args.condition, f"export/{args.condition}"
    for stale in ("result.json", "generator.onnx"):  # a failing rerun must not leave an earlier export looking valid
        withdraw(ctx.run, f"{out}/{stale}")
    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    resolved = resolved_model(ctx.run, c)
    name, version = resolved["model_name"], str(resolved["version"])
    registry = Registry()
    mv = require_version(registry, name, version)
    if (mv.tags or {}).get("argus.content_hash") != resolved["content_hash"]:
        raise PermanentStepError(f"{name} v{version} now carries content hash "
                                 f"{str((mv.tags or {}).get('argus.content_hash'))[:12]}, not the "
                                 f"{resolved['content_hash'][:12]} this run resolved: its registration was changed; "
                                 "start a new run")
    if not mv.run_id:
        raise PermanentStepError(f"{name} v{version} has no MLflow run to hold its export: register it through train")
    generator = load_version(registry, name, version)  # checks the weights against the registered content hash
    segmenter, pinned = _judge(ctx, registry, mv)
    frames, labels, ids, reference, ref_labels, ref_name = _parity_frames(ctx, args)
    seeds = [frame_seed(args.seed, fid) for fid in ids]
    log.info("export %s v%s: parity on %d clear val frames of %s px (KID reference: %s, %d frames), judge %s v%s, "
             "eager on %s, %d CPU thread(s)", name, version, len(ids), "x".join(map(str, frames.shape[1:3])), ref_name,
             len(reference), pinned.get("model_name"), pinned.get("version"), device, threads)

    with tempfile.TemporaryDirectory(prefix="argus-export-") as tmp:
        tmp = Path(tmp)
        cached, why = (None, "--force") if args.force else _download_cached(registry, mv, tmp / "cached")
        if cached is not None:
            onnx_path, export_figures = cached, {"export_s": 0.0}
            log.info("export %s v%s: reusing its recorded export %s (sha256 %s verified): not exporting again",
                     name, version, mv.tags[TAG_ARTIFACT], mv.tags[TAG_SHA][:12])
        else:
            log.info("export %s v%s: exporting to ONNX (%s)", name, version, why)
            onnx_path = tmp / "generator.onnx"
            export_figures = export_onnx(generator, onnx_path, {"model_name": name, "model_version": version,
                                                                "content_hash": resolved["content_hash"]})
            log.info("exported in %.1fs: %.2f MB, sha256 %s", export_figures["export_s"],
                     export_figures["size_bytes"] / 1e6, export_figures["sha256"][:12])
        sha = sha256_file(onnx_path)
        runner = load_runner(str(onnx_path), device="auto", threads=threads, batch_size=args.batch_size)
        eager = EagerRunner(generator, device=str(device), batch_size=args.batch_size)
        with torch.inference_mode():
            parity = measure(eager, runner, frames, seeds, labels, segmenter.to(device), reference, ref_labels,
                             device=device, batch_size=args.batch_size, kid_seed=args.seed)
        parity.update(kid_reference=ref_name, providers=runner.providers, eager_device=str(device),
                      judge={"model_name": pinned.get("model_name"), "version": str(pinned.get("version"))})
        ctx.run.write_json(f"{out}/parity.json", parity)
        log.info("parity of %s v%s (artifact on %s): %s", name, version, ", ".join(runner.providers),
                 describe(parity))
        meta = read_metadata(onnx_path)
        sig = signature(meta)
        if not parity["passed"]:
            if not (mv.tags or {}).get(TAG_SHA):  # a recorded export keeps its figures: this run's are in parity.json
                registry.set_tags(name, version, {TAG_PARITY: {k: parity[k] for k in _TAG_KEYS if k in parity}})
            raise PermanentStepError(
                f"{name} v{version} is refused: its ONNX export (sha256 {sha[:12]}"
                f"{', the recorded one' if cached is not None else ''}) fails the parity contract with the eager "
                f"model: {'; '.join(parity['failures'])}. Figures: {describe(parity)}. Nothing is generated with it; "
                f"see {ctx.run.url(out + '/parity.json')}")
        artifact_in_run = mv.tags.get(TAG_ARTIFACT) if cached is not None else _record_export(
            registry, mv, c, onnx_path, sig, sha, {k: parity[k] for k in _TAG_KEYS if k in parity})
        data = onnx_path.read_bytes()
        ctx.run.write_json(f"{out}/signature.json", sig)
        ctx.run.write_bytes(f"{out}/generator.onnx", data)
    size = len(data)
    if cached is None:
        log.info("recorded the export on %s v%s: runs:/%s/%s, tag %s=%s", name, version, mv.run_id, artifact_in_run,
                 TAG_SHA, sha[:12])
    return {"condition": c, "model_name": name, "model_version": version, "content_hash": resolved["content_hash"],
            "format": FORMAT, "artifact": f"{out}/generator.onnx", "artifact_url": ctx.run.url(f"{out}/generator.onnx"),
            "signature": f"{out}/signature.json", "sha256": sha, "size_bytes": size,
            "mlflow_artifact": f"runs:/{mv.run_id}/{artifact_in_run}", "reused": cached is not None,
            **({} if cached is not None else {"reexport_reason": why}),
            "export_s": export_figures["export_s"], "parity": parity, "seed": args.seed}


_TAG_KEYS = ("passed", "pixel_fraction_within_1", "max_abs_diff", "mean_abs_diff", "kid_eager", "kid_exported",
             "kid_abs_diff", "label_fidelity_eager", "label_fidelity_exported", "label_fidelity_abs_diff", "n_frames",
             "frame_size", "kid_reference", "failures")
