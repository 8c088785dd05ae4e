"""Pictures of a generation run for people: source | generated grids, and a contact sheet of the worst frames.

Pairs are (source frame path, generated frame path), both local files; a pair whose files are missing
or do not decode is skipped (the report says how many it shows). Frames are resized to the first
pair's size so one grid holds frames of any size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _load(path: Path, size: tuple[int, int] | None) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if size is not None and rgb.size != size:
                rgb = rgb.resize(size, Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - a broken frame is left out of the picture, not fatal
        log.info("left out of the report picture: %s (%s)", path, exc)
        return None


def pairs_image(pairs: list[tuple[Path, Path]], limit: int = 8, scale: int = 2) -> tuple[bytes | None, int]:
    """(PNG of a grid with rows = pairs, columns source | generated; or None, number of rows shown)."""
    import torch

    from argus_tasks.models.images import grid, png_bytes

    sources, generated, size = [], [], None
    for src, gen in pairs:
        if len(sources) >= limit:
            break
        a = _load(src, size)
        if a is None:
            continue
        b = _load(gen, (a.shape[1], a.shape[0]))
        if b is None:
            continue
        size = size or (a.shape[1], a.shape[0])
        sources.append(a)
        generated.append(b)
    if not sources:
        return None, 0

    def tensor(frames):
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()

    return png_bytes(grid([tensor(sources), tensor(generated)], scale=scale)), len(sources)
