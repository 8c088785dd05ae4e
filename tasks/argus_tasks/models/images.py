"""Sample grids for people: rows of (clear input | generated | real frame of the condition)."""

from __future__ import annotations

import io

import numpy as np
import torch


def to_uint8_hwc(frames: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) float [0,1] or uint8 -> (N,H,W,3) uint8."""
    if frames.dtype != torch.uint8:
        frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).cpu().numpy()


def grid(columns: list[torch.Tensor], scale: int = 2, pad: int = 2) -> np.ndarray:
    """A grid image with one column per tensor (same N, H, W), rows = frames; uint8 HxWx3."""
    cols = [to_uint8_hwc(c) for c in columns]
    n = min(c.shape[0] for c in cols)
    h, w = cols[0].shape[1:3]
    out = np.full((n * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
    for j, col in enumerate(cols):
        for i in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = col[i]
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
