"""Importers of real driving datasets into our layout and manifest (``schema.py``).

* ACDC: ``rgb_anon/<condition>/<split>/<sequence>/<name>_rgb_anon.png`` with labels in
  ``gt/<condition>/<split>/<sequence>/<name>_gt_labelIds.png``. Conditions fog, night, rain and
  snow map to ours; the ``<split>_ref`` folders (daytime reference frames) become ``clear``.
* Cityscapes: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with labels in
  ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png`` (condition ``clear``, or ``--condition``
  for weather-augmented derivatives).

Both use the Cityscapes label ids, mapped to ours by :data:`CITYSCAPES_TO_OURS`; classes we do not
have (person, rider, ...) become the ignore id. Frames without a label file are skipped (our
schema requires labels) and counted. Optionally frames are centre-cropped to a square and resized.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from argus_tasks.data import manifest as mf
from argus_tasks.data.parallel import parallel_map
from argus_tasks.data.schema import CLASSES, CONDITIONS_ALL, IGNORE_ID, SPLITS

log = logging.getLogger(__name__)

# Cityscapes labelIds (0..33) -> our class ids; anything not listed is ignored.
_CS_NAMES = {
    7: "road", 8: "sidewalk",
    11: "building", 12: "building", 13: "building", 14: "building", 15: "building", 16: "building",
    17: "pole", 18: "pole", 19: "pole", 20: "pole",
    21: "vegetation", 22: "vegetation", 23: "sky",
    26: "vehicle", 27: "vehicle", 28: "vehicle", 29: "vehicle", 30: "vehicle", 31: "vehicle",
    32: "vehicle", 33: "vehicle",
}
CITYSCAPES_TO_OURS = np.full(256, IGNORE_ID, np.uint8)
for _cs_id, _name in _CS_NAMES.items():
    CITYSCAPES_TO_OURS[_cs_id] = CLASSES.index(_name)

ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


@dataclass(frozen=True)
class SourceFrame:
    image: str
    label: str
    frame_id: str
    condition: str
    split: str
    sequence: str
    capture_time: datetime


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)


def _times(paths: list[Path], captured_at: datetime | None) -> list[datetime]:
    """Capture times: the files' modification times, or ``captured_at`` + 1 s per frame."""
    if captured_at is None:
        return [_mtime(p) for p in paths]
    return [captured_at + timedelta(seconds=i) for i in range(len(paths))]


def find_acdc(src: Path, captured_at: datetime | None = None) -> tuple[list[SourceFrame], list[str]]:
    frames, skipped = [], []
    images = sorted((src / "rgb_anon").glob("*/*/*/*_rgb_anon.png"))
    if not images:
        raise FileNotFoundError(f"no ACDC frames under {src}/rgb_anon/<condition>/<split>/<sequence>/*_rgb_anon.png")
    for img, when in zip(images, _times(images, captured_at), strict=True):
        rel = img.relative_to(src / "rgb_anon")
        condition, split_dir, seq = rel.parts[0], rel.parts[1], rel.parts[2]
        if condition not in ACDC_CONDITIONS:
            skipped.append(f"{rel}: unknown ACDC condition {condition!r}")
            continue
        split = split_dir[:-4] if split_dir.endswith("_ref") else split_dir
        ours = "clear" if split_dir.endswith("_ref") else condition
        if split not in SPLITS:
            skipped.append(f"{rel}: unknown split {split_dir!r}")
            continue
        name = img.name[: -len("_rgb_anon.png")]
        label = src / "gt" / condition / split_dir / seq / f"{name}_gt_labelIds.png"
        if not label.exists():
            skipped.append(f"{rel}: no label {label.relative_to(src)}")
            continue
        frames.append(SourceFrame(str(img), str(label), _safe(f"acdc-{ours}-{split}-{name}"), ours, split,
                                  _safe(f"acdc-{condition}-{seq}"), when))
    return frames, skipped


def find_cityscapes(src: Path, condition: str = "clear",
                    captured_at: datetime | None = None) -> tuple[list[SourceFrame], list[str]]:
    if condition not in CONDITIONS_ALL:
        raise ValueError(f"unknown condition {condition!r}; choose one of {', '.join(CONDITIONS_ALL)}")
    frames, skipped = [], []
    images = sorted((src / "leftImg8bit").glob("*/*/*_leftImg8bit.png"))
    if not images:
        raise FileNotFoundError(f"no Cityscapes frames under {src}/leftImg8bit/<split>/<city>/*_leftImg8bit.png")
    for img, when in zip(images, _times(images, captured_at), strict=True):
        rel = img.relative_to(src / "leftImg8bit")
        split, city = rel.parts[0], rel.parts[1]
        if split not in SPLITS:
            skipped.append(f"{rel}: split {split!r} is not one of {SPLITS}")
            continue
        name = img.name[: -len("_leftImg8bit.png")]
        label = src / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
        if not label.exists():
            skipped.append(f"{rel}: no label {label.relative_to(src)}")
            continue
        parts = name.split("_")
        sequence = "_".join(parts[:2]) if len(parts) >= 3 else city
        frames.append(SourceFrame(str(img), str(label), _safe(f"cityscapes-{condition}-{split}-{name}"),
                                  condition, split, _safe(f"cityscapes-{sequence}"), when))
    return frames, skipped


def _square(img, size: int | None, resample):
    if not size:
        return img
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), resample)


def _convert(args: tuple[str, SourceFrame, int | None]) -> dict:
    from PIL import Image

    out, frame, size = args
    root = Path(out)
    with Image.open(frame.image) as im:
        rgb = np.asarray(_square(im.convert("RGB"), size, Image.Resampling.BILINEAR))
    with Image.open(frame.label) as lb:
        if lb.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{frame.label}: label image mode {lb.mode} is not single-channel")
        raw = np.asarray(_square(lb, size, Image.Resampling.NEAREST)).astype(np.int64)
    label = CITYSCAPES_TO_OURS[np.clip(raw, 0, 255)]
    if label.shape != rgb.shape[:2]:
        raise ValueError(f"{frame.label}: label size {label.shape[::-1]} differs from frame {rgb.shape[1::-1]}")
    tail = f"{frame.condition}/{frame.split}/{frame.frame_id}.png"
    frame_png, label_png = mf.png_bytes(rgb), mf.png_bytes(label)
    mf.write_file(root / "frames" / tail, frame_png)
    mf.write_file(root / "labels" / tail, label_png)
    mean, std = mf.brightness_stats(rgb)
    return {
        "frame_id": frame.frame_id, "split": frame.split, "condition": frame.condition,
        "sequence": frame.sequence, "capture_time": frame.capture_time,
        "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
        "frame_sha256": mf.sha256_bytes(frame_png), "label_sha256": mf.sha256_bytes(label_png),
        "frame_path": f"frames/{tail}", "label_path": f"labels/{tail}",
        "brightness_mean": mean, "brightness_std": std,
    }


def convert(frames: list[SourceFrame], out: Path, *, size: int | None = None, workers: int | None = None):
    """Write ``frames`` in our layout under ``out`` with a manifest; returns the manifest."""
    import pandas as pd

    if not frames:
        raise ValueError("nothing to import: no frame with a label was found")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(parallel_map(_convert, [(str(out), f, size) for f in frames], workers=workers,
                             what="imported frames"))
    manifest = mf.coerce(pd.DataFrame(rows)).sort_values("frame_id", kind="stable").reset_index(drop=True)
    mf.write_manifest(out, manifest)
    return manifest


def import_acdc(src, out, *, size: int | None = None, captured_at: datetime | None = None,
                workers: int | None = None) -> dict:
    frames, skipped = find_acdc(Path(src), captured_at)
    manifest = convert(frames, Path(out), size=size, workers=workers)
    return _summary("ACDC", src, out, manifest, skipped)


def import_cityscapes(src, out, *, condition: str = "clear", size: int | None = None,
                      captured_at: datetime | None = None, workers: int | None = None) -> dict:
    frames, skipped = find_cityscapes(Path(src), condition, captured_at)
    manifest = convert(frames, Path(out), size=size, workers=workers)
    return _summary("Cityscapes", src, out, manifest, skipped)


def _summary(kind, src, out, manifest, skipped) -> dict:
    for line in skipped[:20]:
        log.warning("skipped %s", line)
    counts = {f"{c}/{s}": int(n) for (c, s), n in manifest.groupby(["condition", "split"]).size().items()}
    return {"source": str(src), "out": str(out), "format": kind, "frames": int(len(manifest)),
            "counts": counts, "skipped": len(skipped), "skipped_examples": skipped[:10],
            "message": f"imported {len(manifest)} {kind} frames from {src} into {out} "
                       f"({len(skipped)} skipped)"}
