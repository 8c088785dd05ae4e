"""Per-frame measurements of generated outputs: the ``generated_outputs`` and ``generated_manifest`` tables.

For every output (a row of :func:`argus_tasks.generation.shard_reader.read_outputs`), in parallel
over processes (:func:`argus_tasks.data.parallel.parallel_map`), each file read once:

* the source frame is in the run's accepted manifest;
* the generated frame exists, has its marker's sha256, decodes completely as 8-bit RGB and has its
  source's size; its luma contrast (``luma_std``: a blank frame has none; PNGs hold no NaN, so a
  generator that made NaN shows here as a constant frame) and its mean absolute change from the
  source (``mean_abs_change``, RGB in [0, 1]);
* the label next to it exists, has its marker's sha256 and is byte-identical to the source's label.

Then the label fidelity of every frame that decodes at its source's size, in batches on the judge's
device: the mIoU of the judge segmenter's prediction on the generated frame against the source
labels (classes present in the labels; the judge's class map applied, as in evaluate).
The thresholds are not applied here: the GX suites (:mod:`argus_tasks.data.gx_outputs`) do that.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from argus_tasks.data.gx_outputs import OUTPUT_CHECKS
from argus_tasks.data.parallel import parallel_map
from argus_tasks.data.schema import OUTPUT_MANIFEST_COLUMNS

log = logging.getLogger(__name__)
CHECK_COLUMNS = tuple(OUTPUT_CHECKS)


def _read(path) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _decode_rgb(data: bytes):
    """(uint8 HxWx3 array, None) or (None, why)."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:  # truncated, not a PNG, corrupt chunk...
        return None, f"{type(exc).__name__}: {exc}"
    if im.mode != "RGB":
        return None, f"mode {im.mode}, expected RGB"
    return np.asarray(im, dtype=np.uint8), None


def check_one(item: tuple) -> dict:
    """The file checks and statistics of one output (see the module docstring).

    A check whose prerequisite failed (the size of a frame that does not decode) is None, not
    False: it was not evaluated, and only the failure that explains the frame is reported.
    """
    from argus_tasks.data.manifest import brightness_stats

    row, out_path, label_path, out_sha, label_sha, src_frame, src_label, src_w, src_h, src_sha, made_from = item
    ok: dict[str, bool | None] = dict.fromkeys(CHECK_COLUMNS, None)
    ok["output_exists"] = ok["label_exists"] = False
    why: list[str] = []
    stats = {"width": src_w, "height": src_h, "brightness_mean": np.nan, "brightness_std": np.nan,
             "luma_std": np.nan, "mean_abs_change": np.nan}
    ok["source_known"] = src_frame is not None
    if not ok["source_known"]:
        why.append(OUTPUT_CHECKS["source_known"])
    else:
        ok["source_hash_matches"] = src_sha == made_from
        if not ok["source_hash_matches"]:
            why.append(OUTPUT_CHECKS["source_hash_matches"])
    data = _read(out_path)
    if data is None:
        why.append(OUTPUT_CHECKS["output_exists"])
    else:
        ok["output_exists"] = True
        ok["output_decodes"] = False
        ok["output_hash_matches"] = hashlib.sha256(data).hexdigest() == out_sha
        if not ok["output_hash_matches"]:
            why.append(OUTPUT_CHECKS["output_hash_matches"])
        rgb, err = _decode_rgb(data)
        if rgb is None:
            why.append(f"{OUTPUT_CHECKS['output_decodes']} ({err})")
        else:
            ok["output_decodes"] = True
            h, w = rgb.shape[:2]
            stats.update(width=w, height=h)
            mean, std = brightness_stats(rgb)
            stats.update(brightness_mean=mean, brightness_std=std, luma_std=std)
            if ok["source_known"]:
                ok["output_size_matches"] = (w, h) == (src_w, src_h)
                if not ok["output_size_matches"]:
                    why.append(f"{OUTPUT_CHECKS['output_size_matches']} ({w}x{h} vs {src_w}x{src_h})")
            source = _decode_rgb(_read(src_frame) or b"")[0] if ok["output_size_matches"] else None
            if source is not None and source.shape == rgb.shape:
                diff = np.abs(rgb.astype(np.int16) - source.astype(np.int16))
                stats["mean_abs_change"] = float(diff.mean()) / 255.0
    label = _read(label_path)
    if label is None:
        why.append(OUTPUT_CHECKS["label_exists"])
    else:
        ok["label_exists"] = True
        ok["label_hash_matches"] = hashlib.sha256(label).hexdigest() == label_sha
        if not ok["label_hash_matches"]:
            why.append(OUTPUT_CHECKS["label_hash_matches"])
        if src_label is not None:
            ok["label_identical"] = label == _read(src_label)
            if not ok["label_identical"]:
                why.append(OUTPUT_CHECKS["label_identical"])
    return {"row": row, **ok, **stats, "reason": "; ".join(why)}


def _sources(manifest) -> dict[str, dict]:
    return {str(r["frame_id"]): r for r in manifest.to_dict("records")}


def file_checks(run_dir: Path, data_root: Path, outputs, manifest, workers: int | None = None):
    """The per-output file checks and statistics (one row per row of ``outputs``), in ``outputs`` order."""
    import pandas as pd

    src = _sources(manifest)
    items = []
    for i, o in enumerate(outputs.to_dict("records")):
        s = src.get(o["source_frame_id"])
        items.append((i, str(run_dir / o["output"]), str(run_dir / o["label"]), o["output_sha256"], o["label_sha256"],
                      str(data_root / s["frame_path"]) if s else None, str(data_root / s["label_path"]) if s else None,
                      int(s["width"]) if s else -1, int(s["height"]) if s else -1, s["frame_sha256"] if s else None,
                      o["source_sha256"]))
    table = pd.DataFrame(list(parallel_map(check_one, items, workers=workers, what="generated frame checks",
                                           log_every=2000)))
    if table.empty:
        table = pd.DataFrame(columns=["row", *CHECK_COLUMNS, "width", "height", "brightness_mean", "brightness_std",
                                      "luma_std", "mean_abs_change", "reason"])
    table.insert(1, "frame_id", pd.array(outputs["frame_id"].astype(str).tolist(), dtype="string"))
    table.insert(2, "condition", pd.array(outputs["condition"].astype(str).tolist(), dtype="string"))
    table = table.astype({"row": "int64", "width": "int64", "height": "int64",
                          **dict.fromkeys(CHECK_COLUMNS, "boolean"),
                          **dict.fromkeys(("brightness_mean", "brightness_std", "luma_std", "mean_abs_change"),
                                          "float64")})
    table["reason"] = table["reason"].astype("string")
    return table


def judgeable(checks):
    """Boolean mask of the outputs that decode at their source's size (None counts as not)."""
    return (checks["output_decodes"].fillna(False) & checks["output_size_matches"].fillna(False)).to_numpy(bool)


def _judge_size(h: int, w: int) -> tuple[int, int]:
    """The judge (a UNet with three poolings) needs sides divisible by 8: the nearest smaller ones."""
    return max(8, h // 8 * 8), max(8, w // 8 * 8)


def label_fidelity(judge, run_dir: Path, data_root: Path, outputs, checks, manifest, device=None,
                   batch_size: int = 64, threads: int = 2, with_features: bool = False):
    """Per-output mIoU of ``judge`` on the generated frame against the source labels (NaN where not judged);
    ``with_features``: ``(fidelity, judge features (N, D), NaN rows where not judged)`` from the same pass."""
    import torch
    from PIL import Image

    from argus_tasks.data.access import read_label
    from argus_tasks.models import metrics as M

    src = _sources(manifest)
    fidelity = np.full(len(outputs), np.nan)
    feats = np.full((len(outputs), judge.feature_dim if with_features else 0), np.nan, np.float32)
    judged = checks.index[judgeable(checks)]
    records = outputs.to_dict("records")
    groups: dict[tuple[int, int], list[int]] = {}
    for i in judged:
        groups.setdefault((int(checks.at[i, "height"]), int(checks.at[i, "width"])), []).append(int(i))
    device = torch.device(device or "cpu")
    judge = judge.to(device).eval()
    started, done = time.time(), 0

    def load(i: int):
        with Image.open(run_dir / records[i]["output"]) as im:
            rgb = im.convert("RGB")
        lab = Image.fromarray(read_label(data_root, src[records[i]["source_frame_id"]]))
        size = _judge_size(rgb.height, rgb.width)
        if (rgb.height, rgb.width) != size:
            rgb, lab = rgb.resize(size[::-1], Image.BILINEAR), lab.resize(size[::-1], Image.NEAREST)
        return np.asarray(rgb, np.uint8), np.asarray(lab, np.uint8)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for rows in groups.values():
            for b in range(0, len(rows), batch_size):
                batch = rows[b:b + batch_size]
                loaded = list(pool.map(load, batch))
                x = torch.from_numpy(np.stack([f for f, _ in loaded])).permute(0, 3, 1, 2).float().div(255.0)
                labels = judge.map_labels(torch.from_numpy(np.stack([lab for _, lab in loaded]))).cpu().numpy()
                with torch.inference_mode():
                    x = x.to(device).contiguous(memory_format=torch.channels_last)
                    logits, f = judge.forward_with_features(x)
                    pred = logits.argmax(1).to(torch.uint8).cpu().numpy()
                if with_features:
                    feats[batch] = f.float().cpu().numpy()
                iou = M.iou_from_confusion(M.confusion_per_frame(pred, labels, judge.num_classes))
                with warnings.catch_warnings():  # a label of ignore pixels only has no classes: NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    fidelity[batch] = np.nanmean(iou, 1)
                done += len(batch)
                log.info("label fidelity: %d/%d frames (%.1f frames/s)", done, len(judged),
                         done / max(time.time() - started, 1e-9))
    return (fidelity, feats) if with_features else fidelity


def manifest_table(outputs, checks, manifest, pull: dict):
    """``(generated manifest, check rows)``: the rows ``publish`` would write, for every output that
    decodes at its source's size, in ``schema.OUTPUT_MANIFEST_COLUMNS``; and the check row of each."""
    import pandas as pd

    src = _sources(manifest)
    keep = checks.index[judgeable(checks)]
    rows = []
    for i in keep:
        o, c = outputs.iloc[int(i)], checks.iloc[int(i)]
        s = src[o["source_frame_id"]]
        tail = f"{o['condition']}/{s['split']}/{o['frame_id']}.png"
        rows.append({
            "frame_id": o["frame_id"], "split": s["split"], "condition": o["condition"], "sequence": s["sequence"],
            "capture_time": s["capture_time"], "width": int(c["width"]), "height": int(c["height"]),
            "frame_sha256": o["output_sha256"], "label_sha256": o["label_sha256"],
            "frame_path": f"frames/{tail}", "label_path": f"labels/{tail}",
            "brightness_mean": float(c["brightness_mean"]), "brightness_std": float(c["brightness_std"]),
            "source_frame_id": o["source_frame_id"], "source_frame_sha256": s["frame_sha256"],
            "source_revision": str(pull.get("revision", "")), "source_commit": str(pull.get("commit", "")),
            "model_name": o["model_name"], "model_version": o["model_version"], "seed": int(o["seed"]),
            "config_hash": o["config_hash"], "label_fidelity": float(c["label_fidelity"]),
        })
    table = pd.DataFrame(rows, columns=list(OUTPUT_MANIFEST_COLUMNS))
    for name, (dtype, _) in OUTPUT_MANIFEST_COLUMNS.items():
        table[name] = (pd.to_datetime(table[name], utc=True) if dtype.startswith("datetime64") else table[name]
                       ).astype(dtype)
    return table.reset_index(drop=True), [int(i) for i in keep]
