"""Per-frame statistics of a translator, recorded while the evaluation runs it.

:class:`FrameRecorder` wraps the translate function handed to
:func:`argus_tasks.models.evaluation.evaluate_candidate`: it passes every batch through unchanged and
keeps, per frame and in frame order, whether the output is finite, its mean absolute change from the
source (RGB in [0, 1]) and, when asked, a small uint8 thumbnail of the generated frame (at most
``THUMB_SIZE`` px a side) for the gallery. The generator's noise depends on a frame's place in its
batch, so a thumbnail taken here is exactly the frame that was scored; translating the frame again
later would not be.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

THUMB_SIZE = 64


class FrameRecorder:
    def __init__(self, thumbnails: bool = False, size: int = THUMB_SIZE):
        self.thumbnails, self.size = thumbnails, size
        self._finite: list[np.ndarray] = []
        self._change: list[np.ndarray] = []
        self._thumbs: list[torch.Tensor] = []

    def wrap(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        def recorded(x: torch.Tensor) -> torch.Tensor:
            y = fn(x)
            self.record(x, y)
            return y
        return recorded

    def record(self, source: torch.Tensor, generated: torch.Tensor) -> None:
        with torch.inference_mode():
            g = generated.float()
            s = source.to(g.device).float()
            finite = torch.isfinite(g).flatten(1).all(1)
            change = (g - s).abs().flatten(1).mean(1)
            change = torch.where(finite, change, torch.full_like(change, float("nan")))
            self._finite.append(finite.cpu().numpy())
            self._change.append(change.cpu().numpy().astype(np.float64))
            if self.thumbnails:
                safe = torch.nan_to_num(g, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
                if max(safe.shape[-2:]) > self.size:
                    scale = self.size / max(safe.shape[-2:])
                    safe = F.interpolate(safe, scale_factor=scale, mode="bilinear", antialias=True,
                                         align_corners=False).clamp(0, 1)
                self._thumbs.append(safe.mul(255).round().to(torch.uint8).cpu())

    @property
    def finite(self) -> np.ndarray:
        return np.concatenate(self._finite) if self._finite else np.zeros(0, bool)

    @property
    def mean_abs_change(self) -> np.ndarray:
        return np.concatenate(self._change) if self._change else np.zeros(0)

    @property
    def thumbs(self) -> np.ndarray:
        """(N, H, W, 3) uint8 thumbnails (empty when not recorded)."""
        if not self._thumbs:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        return torch.cat(self._thumbs).permute(0, 2, 3, 1).contiguous().numpy()
