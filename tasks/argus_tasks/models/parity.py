"""The parity contract between an exported generator and its eager PyTorch model.

On the same frames, with the same per-frame seeds (hence the same noise), the exported artifact and
the eager model must agree:

* per pixel: ``|exported - eager| <= 1`` (one level of 255) on at least 99.9 % of the values;
* KID and label fidelity, through the pinned segmenter, equal within ``1e-3``. KID is measured
  against a reference set (the real frames of the condition, or the clear frames themselves when
  the run has none), label fidelity is the segmenter's mIoU on the generated frames against the
  source labels (evaluate's ``label_preservation``).

:func:`measure` returns the figures and ``passed``; :func:`verdict` applies the thresholds to the
pixel and metric figures (pure, unit-tested on synthetic arrays).
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)
PIXEL_TOLERANCE = 1  # levels of 1/255
MIN_PIXEL_FRACTION = 0.999
METRIC_TOLERANCE = 1e-3


def pixel_figures(a: np.ndarray, b: np.ndarray) -> dict:
    """Counts of the per-value differences between two uint8 arrays of one shape."""
    if a.shape != b.shape:
        raise ValueError(f"outputs of different shapes: {a.shape} and {b.shape}")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"values": int(diff.size), "within": int((diff <= PIXEL_TOLERANCE).sum()), "exact": int((diff == 0).sum()),
            "max_abs_diff": int(diff.max(initial=0)), "sum_abs_diff": int(diff.sum())}


def merge_pixels(parts: list[dict]) -> dict:
    total = {k: sum(p[k] for p in parts) for k in ("values", "within", "exact", "sum_abs_diff")}
    total["max_abs_diff"] = max((p["max_abs_diff"] for p in parts), default=0)
    return total


def verdict(pixels: dict, metrics: dict) -> dict:
    """The contract's figures and ``passed`` from summed pixel counts and the two runs' metrics."""
    values = max(pixels["values"], 1)
    out = {"pixel_fraction_within_1": pixels["within"] / values, "pixel_fraction_exact": pixels["exact"] / values,
           "max_abs_diff": pixels["max_abs_diff"], "mean_abs_diff": pixels["sum_abs_diff"] / values,
           "values": pixels["values"],
           "thresholds": {"pixel_tolerance": PIXEL_TOLERANCE, "min_pixel_fraction": MIN_PIXEL_FRACTION,
                          "metric_tolerance": METRIC_TOLERANCE}}
    failures = []
    if pixels["values"] == 0:
        failures.append("no pixels compared")
    if out["pixel_fraction_within_1"] < MIN_PIXEL_FRACTION:
        failures.append(f"{out['pixel_fraction_within_1']:.4%} of values within {PIXEL_TOLERANCE}/255 "
                        f"(< {MIN_PIXEL_FRACTION:.1%}; max difference {pixels['max_abs_diff']}/255)")
    for name in ("kid", "label_fidelity"):
        eager, exported = metrics[f"{name}_eager"], metrics[f"{name}_exported"]
        gap = abs(exported - eager) if np.isfinite(eager) and np.isfinite(exported) else float("nan")
        out[f"{name}_eager"], out[f"{name}_exported"], out[f"{name}_abs_diff"] = eager, exported, gap
        if not gap <= METRIC_TOLERANCE:  # NaN fails too
            failures.append(f"{name} {exported:.6f} exported vs {eager:.6f} eager (|diff| {gap:.2e} > "
                            f"{METRIC_TOLERANCE:g})")
    out["passed"] = not failures
    out["failures"] = failures
    return out


def _judge(segmenter, frames_nhwc: np.ndarray, labels, device):
    """(per-frame confusions, features) of uint8 NHWC frames through the segmenter."""
    import torch

    from argus_tasks.models.evaluation import real_side

    x = torch.from_numpy(np.ascontiguousarray(frames_nhwc)).permute(0, 3, 1, 2).contiguous()
    side = real_side(segmenter, x, labels, device=device)
    return side.conf, side.features


def measure(eager, exported, frames: np.ndarray, seeds: list[int], labels, segmenter, reference: np.ndarray,
            reference_labels, device=None, batch_size: int = 16, kid_seed: int = 0) -> dict:
    """Run both runners on ``frames`` (uint8 NHWC) with ``seeds``; the contract's figures (see module doc).

    ``reference``/``reference_labels``: the frames KID is measured against (uint8 NHWC, their labels).
    """
    from argus_tasks.models import metrics as M
    from argus_tasks.models.evaluation import KID_SUBSET_SIZE, KID_SUBSETS

    started = time.perf_counter()
    pixels, confs, feats = [], {"eager": [], "exported": []}, {"eager": [], "exported": []}
    timings = {"eager": 0.0, "exported": 0.0}
    for i in range(0, len(frames), batch_size):
        batch, batch_seeds, batch_labels = frames[i:i + batch_size], seeds[i:i + batch_size], labels[i:i + batch_size]
        outs = {}
        for name, runner in (("eager", eager), ("exported", exported)):
            t = time.perf_counter()
            outs[name] = runner(batch, batch_seeds)
            timings[name] += time.perf_counter() - t
            conf, feat = _judge(segmenter, outs[name], batch_labels, device)
            confs[name].append(conf)
            feats[name].append(feat)
        pixels.append(pixel_figures(outs["exported"], outs["eager"]))
    _, ref_feats = _judge(segmenter, reference, reference_labels, device)
    kernel = M.poly_kernel(ref_feats, ref_feats)
    figures = {}
    for name in ("eager", "exported"):
        conf, feat = np.concatenate(confs[name]), np.concatenate(feats[name])
        figures[f"label_fidelity_{name}"] = M.mean_iou(conf.sum(0))
        figures[f"kid_{name}"] = M.kid(feat, ref_feats, n_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE,
                                       seed=kid_seed, kernel_bb=kernel)["kid"]
    out = verdict(merge_pixels(pixels), figures)
    n = len(frames)
    out.update(n_frames=n, n_reference=len(reference), frame_size=list(frames.shape[1:3]) if n else None,
               eager_frames_per_s=round(n / max(timings["eager"], 1e-9), 2),
               exported_frames_per_s=round(n / max(timings["exported"], 1e-9), 2),
               seconds=round(time.perf_counter() - started, 2))
    return out


def describe(figures: dict) -> str:
    """One line of the figures, for logs and error messages."""
    return (f"{figures['pixel_fraction_within_1']:.4%} of {figures['values']} values within "
            f"{PIXEL_TOLERANCE}/255 (max diff {figures['max_abs_diff']}/255, exact {figures['pixel_fraction_exact']:.2%}); "
            f"KID {figures['kid_exported']:.6f} exported vs {figures['kid_eager']:.6f} eager "
            f"(|diff| {figures['kid_abs_diff']:.2e}); label fidelity {figures['label_fidelity_exported']:.6f} vs "
            f"{figures['label_fidelity_eager']:.6f} (|diff| {figures['label_fidelity_abs_diff']:.2e}); "
            f"on {figures.get('n_frames', '?')} frames")
