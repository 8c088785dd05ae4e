"""Selecting manifest rows and loading their frames into memory as tensors.

Every selection is sorted by ``frame_id``, so a frame list is the same on every run of the same
data (the frozen evaluation list is written next to the metrics, with its hash:
:func:`frame_list_sha256`). An evaluation cap keeps whole sequences (:func:`select_sequences`), so
the bootstrap by sequence still sees complete drives.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from argus_tasks.contract import PermanentStepError

log = logging.getLogger(__name__)


def select(manifest, condition: str, splits: tuple[str, ...], limit: int | None = None, seed: int = 0):
    """Rows of ``condition`` in ``splits``, sorted by frame id; a seeded subset when over ``limit``."""
    rows = manifest[(manifest["condition"] == condition) & (manifest["split"].isin(list(splits)))]
    rows = rows.sort_values("frame_id", kind="stable").reset_index(drop=True)
    if limit is not None and len(rows) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    return rows


def select_sequences(manifest, condition: str, splits: tuple[str, ...], max_frames: int | None = None,
                     seed: int = 0):
    """Rows of ``condition`` in ``splits``, sorted by frame id; over ``max_frames``, a seeded subset of whole sequences.

    Sequences are taken in a seeded random order while they fit under ``max_frames`` (the first
    one always, even when it alone is longer), so no drive is cut in half.
    """
    rows = select(manifest, condition, splits)
    if max_frames is None or len(rows) <= max_frames:
        return rows
    sizes = rows.groupby("sequence", sort=True).size()
    order = np.random.default_rng(seed).permutation(len(sizes))
    keep, total = [], 0
    for i in order:
        if keep and total + int(sizes.iloc[i]) > max_frames:
            continue
        keep.append(sizes.index[i])
        total += int(sizes.iloc[i])
    return rows[rows["sequence"].isin(keep)].reset_index(drop=True)


def sequences_of(rows) -> np.ndarray | None:
    """The ``sequence`` column as a fixed-width string array (loads without pickle), or None when any is missing."""
    if "sequence" not in rows.columns:
        return None
    seq = rows["sequence"]
    if seq.isna().any() or (seq.astype(str).str.strip() == "").any():
        return None
    return np.asarray(seq.astype(str).tolist(), dtype=str)


def frame_list_sha256(**sides) -> str:
    """sha256 of evaluation frame lists: per side (by name), the sorted (frame_id, frame_sha256, label_sha256).

    One line per frame, ``<side>\t<frame_id>\t<frame_sha256>\t<label_sha256>\n``, sides in name
    order; equal hashes mean the same frames with the same content and labels.
    """
    h = hashlib.sha256()
    for side in sorted(sides):
        rows = sides[side]
        for fid, fsha, lsha in sorted(zip(rows["frame_id"].astype(str), rows["frame_sha256"].astype(str),
                                          rows["label_sha256"].astype(str), strict=True)):
            h.update(f"{side}\t{fid}\t{fsha}\t{lsha}\n".encode())
    return h.hexdigest()


def require_rows(rows, what: str, manifest) -> None:
    if len(rows) == 0:
        counts = manifest.groupby(["condition", "split"]).size().to_dict() if len(manifest) else {}
        raise PermanentStepError(
            f"no accepted frames for {what}; accepted frames per (condition, split): {counts or 'none'}. "
            "Pull a dataset revision / data interval that has them, or lower the quarantine.")


def _resize(img: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    mode = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(img).resize((size, size), mode))


def load_frames(data_root: Path, rows, size: int | None = None, labels: bool = True,
                workers: int = 4) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 frames (N,3,H,W), uint8 labels (N,H,W) or None); resized to ``size`` when given."""
    from argus_tasks.data.access import read_frame, read_label

    records = rows.to_dict("records")

    def one(row):
        rgb = read_frame(data_root, row)
        lab = read_label(data_root, row) if labels else None
        if size is not None:
            rgb = _resize(rgb, size, nearest=False)
            lab = _resize(lab, size, nearest=True) if lab is not None else None
        return rgb, lab

    if not records:
        return torch.zeros((0, 3, size or 1, size or 1), dtype=torch.uint8), None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        loaded = list(pool.map(one, records))
    shapes = {r.shape for r, _ in loaded}
    if len(shapes) > 1:
        raise PermanentStepError(f"frames of different sizes {sorted(shapes)} in one selection; pass a size")
    frames = torch.from_numpy(np.stack([r for r, _ in loaded])).permute(0, 3, 1, 2).contiguous()
    labs = torch.from_numpy(np.stack([lab for _, lab in loaded])) if labels else None
    return frames, labs
